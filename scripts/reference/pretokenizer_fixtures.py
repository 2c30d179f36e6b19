#!/usr/bin/env python3
"""Writes crates/model/tests/fixtures/pretokenizers.json: token ids that the Hugging Face
`tokenizers` library gives for a corpus of tricky strings, with SmolLM2's vocabulary and
merges (read from the GGUF file with the `gguf` package) under each GGUF pre-tokenizer the
model crate implements, configured as the families' own tokenizer.json files configure
them, and for the strings with multi-byte characters the decode of every prefix of the
ids (some cut a character). The Rust tests build the same tokenizers from the GGUF
metadata and must agree.

    python3 -m venv /tmp/gguf-env && /tmp/gguf-env/bin/pip install gguf numpy tokenizers
    /tmp/gguf-env/bin/python scripts/reference/pretokenizer_fixtures.py models/SmolLM2-135M-Instruct.Q4_1.gguf
"""
import json
import pathlib
import sys

from gguf import GGUFReader
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

OUT = pathlib.Path(__file__).resolve().parents[2] / "crates/model/tests/fixtures/pretokenizers.json"

# The split patterns of llama.cpp's `llama-bpe` (Llama 3) and `qwen2` pre-tokenizers, as
# those models' tokenizer.json files state them.
PATTERNS = {
    "llama-bpe": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "qwen2": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
}

CORPUS = [
    "Hello world",
    "  leading and trailing spaces  ",
    "tabs\tand\nnew\r\nlines\n\n\n",
    "numbers 1 12 123 1234 12345 3.14159 -42",
    "contractions: I'm you're he'll they've it's we'd DON'T",
    "CJK: 你好，世界。日本語のテキスト",
    "emoji: 👋🏽 🇫🇷 ❤️ family 👨‍👩‍👧",
    "punctuation!!! ...?? (a) [b] {c} <d> @#$%^&*",
    "mixed: foo_bar-baz/qux.py:12:34",
    "   multiple   spaces   between   words   ",
    "Ünïcödé àccents ß ø",
]


def field(reader, key):
    f = reader.fields[key]
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]


def main():
    reader = GGUFReader(sys.argv[1])
    tokens = field(reader, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in field(reader, "tokenizer.ggml.merges")]
    vocab = {t: i for i, t in enumerate(tokens)}
    cases = {}
    for name, pattern in PATTERNS.items():
        tok = Tokenizer(models.BPE(vocab, merges))
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ])
        tok.decoder = decoders.ByteLevel()
        cases[name] = []
        for t in CORPUS:
            ids = tok.encode(t, add_special_tokens=False).ids
            case = {"text": t, "ids": ids}
            if not t.isascii():
                # Every prefix of the ids: some cut a multi-byte character.
                case["prefix_decodes"] = [tok.decode(ids[:k]) for k in range(len(ids) + 1)]
            cases[name].append(case)
    OUT.write_text(json.dumps({"writer": "tokenizers (Python)", "cases": cases}, ensure_ascii=False) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
