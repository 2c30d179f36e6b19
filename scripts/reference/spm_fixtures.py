#!/usr/bin/env python3
"""Writes the SentencePiece tokenizer fixtures under crates/model/tests/fixtures/tokenizers/:
two vocab-only GGUF files with `tokenizer.ggml.model = "llama"` and `spm.json`, the token
ids and decoded text that the Hugging Face `tokenizers` library gives for a corpus of
tricky strings with each of them.

The vocabulary is trained here with the `sentencepiece` package (BPE, byte fallback,
identity normalization, whitespace-only pieces allowed: Llama 2's trainer settings) on a
small corpus written below, so it has multi-character pieces with "▁" prefixes, the 256
byte tokens, control tokens and a user-defined token. The GGUF files carry the pieces,
scores and token types as llama.cpp's converter writes them:

- `spm.gguf`: the trained scores, token types, BOS/EOS/UNK ids, a Llama 2 chat template;
  `add_bos_token` and `add_space_prefix` absent (both default to true for this model).
- `spm-ties.gguf`: the same pieces with scores rounded so that groups of merges tie (the
  merge order then rests on the converter's tie-breaks), `add_space_prefix = false`,
  `add_bos_token = false`, no token types and no special-token ids (the defaults apply).

The reference tokenizer is built from the same pieces and scores the way transformers'
`LlamaConverter` builds a legacy Llama tokenizer.json: BPE with merges derived from the
vocabulary and scores (`generate_merges`, re-implemented below), byte fallback, fused unk;
normalizer Prepend("▁") (with the space prefix) then Replace(" ", "▁"); decoder
Replace("▁", " "), ByteFallback, Fuse, Strip(" ", 1, 0) (with the space prefix); control
and unknown tokens special, user-defined tokens added. Without token types, the UNK, BOS
and EOS tokens are the special ones (transformers' GGUF converter does this).

    python3 -m venv /tmp/spm-env && /tmp/spm-env/bin/pip install numpy gguf tokenizers sentencepiece
    /tmp/spm-env/bin/python scripts/reference/spm_fixtures.py
"""
import io
import json
import math
import pathlib

import gguf
import sentencepiece as spm
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers

OUT = pathlib.Path(__file__).resolve().parents[2] / "crates/model/tests/fixtures/tokenizers"

USER_DEFINED = ["<|user|>"]
CONTROL = ["<|im_start|>"]

TRAINING_TEXT = """\
The quick brown fox jumps over the lazy dog. The dog sleeps in the sun.
Paris is the capital of France, and Berlin is the capital of Germany.
What is the capital of Italy? The capital of Italy is Rome.
[INST] Tell me a story about a dragon. [/INST] Once upon a time, there was a dragon.
[INST] What is two plus two? [/INST] Two plus two is four.
I'm sure you're right; they've said it's fine, and we'd agree. Don't worry, it'll work.
Numbers like 1, 12, 123 and 2024 appear in the text: 3.14159 and 42 too.
The model reads tokens, one at a time, and writes the next token after the last one.
    Indented code lines start with four spaces, and some with eight spaces.
        def main(): return 0
Tabs\tseparate\tcolumns\tin\tthis\tline.
Café, naïve, résumé, façade: accents appear in borrowed words. Straße, Ørsted.
你好，世界。你好！
Hello world! Hello again, world. Say hello to the world.
The server streams tokens to the client as the model generates them, one by one.
A paged cache stores keys and values in blocks, and the scheduler fills the batch.
"""

CORPUS = [
    "",
    " ",
    "\n",
    "Hello world",
    "Hello, world! How are you today?",
    " leading space",
    "trailing space ",
    "  two leading spaces",
    "   multiple   spaces   between   words   ",
    "tabs\tand\nnew\r\nlines\n\n\n",
    "numbers 1 12 123 1234 12345 3.14159 -42",
    "contractions: I'm you're he'll they've it's we'd DON'T",
    "CJK: 你好，世界。日本語のテキスト",
    "emoji: 👋🏽 🇫🇷 ❤️ family 👨‍👩‍👧",
    "Ünïcödé àccents ß ø café naïve Ørsted",
    "<s>[INST] What is the capital of France? [/INST]",
    "text with </s> in the middle</s>",
    "<unk> and <|user|> tokens<|user|>x <|im_start|>system",
    "a<s>b<s> <s>",
    "▁ literal metaspace ▁▁",
    "<0x41> is a byte token written as text",
    "mixed: foo_bar-baz/qux.py:12:34",
    "punctuation!!! ...?? (a) [b] {c} <d> @#$%^&*",
    "\u0000 nul \u0007 bell \u00ad soft hyphen \u200b zero width",
    "\U0001F980",
    # Merges that compete with tied scores in spm-ties.gguf (see TIE_PIECES).
    "qjzx",
    "ywkv",
    "zfz",
]

# Pieces appended to spm-ties.gguf, whose merges tie so that the converter's tie-breaks
# decide: "qjzx" is qjz+x (the longer left part first), "ywkv" y+wkv (then the longer
# right part), "zfz" z+fz (then the vocabulary's order). "qj" and "kv" merge first.
TIE_PIECES = [("qj", 1.0), ("kv", 1.0), ("zx", -1000.0), ("qjz", -1000.0), ("yw", -1000.0),
              ("wkv", -1000.0), ("fz", -1000.0), ("zf", -1000.0)]

LLAMA2_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% else %}"
    "{{ ' ' + message['content'] + eos_token }}{% endif %}{% endfor %}"
)

# llama.cpp's token types.
NORMAL, UNKNOWN, CONTROL_TYPE, USER_DEFINED_TYPE, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def train():
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TRAINING_TEXT.splitlines() * 4),
        model_writer=model,
        model_type="bpe",
        vocab_size=640,
        hard_vocab_limit=False,
        byte_fallback=True,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        character_coverage=1.0,
        user_defined_symbols=USER_DEFINED,
        control_symbols=CONTROL,
        num_threads=1,
        minloglevel=2,
    )
    return spm.SentencePieceProcessor(model_proto=model.getvalue())


def pieces(sp):
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        piece = sp.id_to_piece(i)
        tokens.append(piece)
        scores.append(sp.get_score(i))
        if sp.is_unknown(i):
            types.append(UNKNOWN)
        elif sp.is_control(i):
            types.append(CONTROL_TYPE)
        elif sp.is_byte(i):
            types.append(BYTE)
        elif sp.is_unused(i):
            types.append(UNUSED)
        elif piece in USER_DEFINED:
            types.append(USER_DEFINED_TYPE)
        else:
            types.append(NORMAL)
    return tokens, scores, types


def generate_merges(vocab, vocab_scores):
    """transformers' `generate_merges`: every split of every piece into two pieces of the
    vocabulary is a merge, ranked by the merged piece's score (highest first), then by the
    lengths of the left and right parts (longest first); ties keep the vocabulary's order,
    and one piece's splits are ordered by the ids of their parts."""
    merges = []
    for merge, piece_score in dict(vocab_scores).items():
        local = []
        for index in range(1, len(merge)):
            piece_l, piece_r = merge[:index], merge[index:]
            if piece_l in vocab and piece_r in vocab:
                local.append((piece_l, piece_r, piece_score))
        local = sorted(local, key=lambda x: (vocab[x[0]], vocab[x[1]]))
        merges.extend(local)
    merges = sorted(merges, key=lambda val: (val[2], len(val[0]), len(val[1])), reverse=True)
    return [(val[0], val[1]) for val in merges]


def reference(tokens, scores, types, unk, specials, add_space_prefix):
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = generate_merges(vocab, list(zip(tokens, scores)))
    tok = Tokenizer(models.BPE(vocab, merges, unk_token=tokens[unk], fuse_unk=True, byte_fallback=True))
    norm = [normalizers.Prepend("▁")] if add_space_prefix else []
    tok.normalizer = normalizers.Sequence(norm + [normalizers.Replace(" ", "▁")])
    dec = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if add_space_prefix:
        dec.append(decoders.Strip(" ", 1, 0))
    tok.decoder = decoders.Sequence(dec)
    tok.add_special_tokens([AddedToken(tokens[i], normalized=False, special=True) for i in specials])
    if types is not None:
        tok.add_tokens([
            AddedToken(t, normalized=False, special=False)
            for t, ty in zip(tokens, types) if ty == USER_DEFINED_TYPE
        ])
    return tok, len(merges)


def cases(tok, tokens):
    out = []
    for text in CORPUS:
        ids = tok.encode(text, add_special_tokens=False).ids
        case = {"text": text, "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False)}
        if any(tokens[i].startswith("<0x") for i in ids):
            # Every prefix of the ids: some cut a character written as byte tokens.
            case["prefix_decodes"] = [tok.decode(ids[:k], skip_special_tokens=False) for k in range(len(ids) + 1)]
        out.append(case)
    return out


def write_gguf(path, tokens, scores, types, meta):
    w = gguf.GGUFWriter(str(path), "llama")
    # A few hyperparameters, so that llama.cpp accepts the vocab-only file.
    w.add_context_length(256)
    w.add_embedding_length(64)
    w.add_block_count(1)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    if types is not None:
        w.add_token_types(types)
    for key, value in meta.items():
        if isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        else:
            w.add_string(key, value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    sp = train()
    tokens, scores, types = pieces(sp)
    multi = sum(1 for t in tokens if t.startswith("▁") and len(t) > 2)
    assert multi > 50 and sum(t.startswith("<0x") for t in tokens) == 256, "vocabulary too poor"
    unk, bos, eos = sp.unk_id(), sp.bos_id(), sp.eos_id()
    assert (unk, bos, eos) == (0, 1, 2)

    # Rounded scores: merges within a group of ten tie; and the pieces of TIE_PIECES.
    tie_tokens = tokens + [p for p, _ in TIE_PIECES]
    tie_scores = [float(math.floor(s / 10.0) * 10.0) if t == NORMAL else s for s, t in zip(scores, types)]
    tie_scores += [s for _, s in TIE_PIECES]
    files = {
        "spm.gguf": dict(
            tokens=tokens, scores=scores, types=types, add_space_prefix=True,
            meta={
                "tokenizer.ggml.bos_token_id": bos,
                "tokenizer.ggml.eos_token_id": eos,
                "tokenizer.ggml.unknown_token_id": unk,
                "tokenizer.chat_template": LLAMA2_TEMPLATE,
            },
        ),
        "spm-ties.gguf": dict(
            tokens=tie_tokens, scores=tie_scores, types=None, add_space_prefix=False,
            meta={"tokenizer.ggml.add_space_prefix": False, "tokenizer.ggml.add_bos_token": False},
        ),
    }
    fixture = {"writer": "tokenizers (Python) %s, sentencepiece %s" % (
        __import__("tokenizers").__version__, spm.__version__), "files": {}}
    for name, f in files.items():
        toks = f["tokens"]
        write_gguf(OUT / name, toks, f["scores"], f["types"], f["meta"])
        # Without token types, UNK, BOS and EOS are the special tokens.
        if f["types"] is None:
            specials = [unk, bos, eos]
        else:
            specials = [i for i, t in enumerate(f["types"]) if t in (UNKNOWN, CONTROL_TYPE)]
        tok, n_merges = reference(toks, f["scores"], f["types"], unk, specials, f["add_space_prefix"])
        fixture["files"][name] = {"vocab_size": len(toks), "merges": n_merges, "cases": cases(tok, toks)}
        print(f"{name}: {len(toks)} tokens, {n_merges} merges, {(OUT / name).stat().st_size} bytes")

    ties = {c["text"]: c["ids"] for c in fixture["files"]["spm-ties.gguf"]["cases"]}
    for text, want in [("qjzx", ["qjz", "x"]), ("ywkv", ["y", "wkv"]), ("zfz", ["z", "fz"])]:
        got = [tie_tokens[i] for i in ties[text]]
        assert got == want, f"{text}: {got}, not {want}: the tie-breaks are not exercised"

    # The sentencepiece library itself, for information: where it and the converted
    # tokenizer disagree (control tokens written in the text, which it does not parse).
    ref = fixture["files"]["spm.gguf"]["cases"]
    differ = [c["text"] for c in ref if sp.encode(c["text"]) != c["ids"]]
    print(f"sentencepiece differs from the converted tokenizer on {len(differ)} of {len(ref)}: {differ}")

    path = OUT / "spm.json"
    path.write_text(json.dumps(fixture, ensure_ascii=False, indent=0) + "\n")
    print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
