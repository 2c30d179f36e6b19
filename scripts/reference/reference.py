"""Independent float32 reference for the SmolLM2 GGUF model, used to build the Rust tests' fixture.

Dequantizes the GGUF with the `gguf` package (llama.cpp's own Python reader), builds the
tokenizer from the file's metadata with the `tokenizers` package, and runs the Llama forward
pass in plain numpy float32 without any KV cache: every prompt is one full causal pass.
Writes, per prompt, the token ids and the top-20 logits at every position, plus a short greedy
continuation. Usage (see README.md in this folder):

    python reference.py MODEL.gguf OUT.json
"""

import json
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

PROMPTS = [
    "The capital of France is",
    "In 1969, 3 astronauts flew 384400 km to the Moon.",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):\n    if n < 2:\n        return n",
]
TOP_K = 20
GREEDY_STEPS = 6
CONTROL = 3  # llama.cpp token type for control (special) tokens


def field(reader, key):
    return reader.fields[key].contents()


def build_tokenizer(reader):
    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in field(reader, "tokenizer.ggml.merges")]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab, merges))
    # The "smollm" pre-tokenizer: digits one at a time, then the GPT-2 byte-level regex.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types) if ty == CONTROL]
    )
    return tok


def tensor(reader, name):
    t = next(t for t in reader.tensors if t.name == name)
    w = dequantize(t.data, t.tensor_type).astype(np.float32)
    shape = [int(d) for d in reversed(t.shape)]  # GGUF lists the fastest dimension first
    return w.reshape(shape)


class Model:
    def __init__(self, reader):
        g = lambda k: field(reader, "llama." + k)  # noqa: E731
        self.layers = int(g("block_count"))
        self.heads = int(g("attention.head_count"))
        self.kv_heads = int(g("attention.head_count_kv"))
        self.hidden = int(g("embedding_length"))
        self.head_dim = self.hidden // self.heads
        self.theta = float(g("rope.freq_base"))
        self.eps = float(g("attention.layer_norm_rms_epsilon"))
        self.embed = tensor(reader, "token_embd.weight")
        self.norm = tensor(reader, "output_norm.weight")
        names = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"]
        self.blocks = [{n: tensor(reader, f"blk.{i}.{n}.weight") for n in names} for i in range(self.layers)]

    def rms(self, x, w):
        return (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w).astype(np.float32)

    def rope(self, x, n):
        # GGUF's converter permutes Q/K rows, so the rotation pairs are adjacent: (2i, 2i+1).
        d = self.head_dim
        inv = self.theta ** (-np.arange(0, d, 2, dtype=np.float64) / d)
        ang = np.arange(n, dtype=np.float64)[:, None] * inv[None, :]
        cos, sin = np.cos(ang).astype(np.float32)[:, None, :], np.sin(ang).astype(np.float32)[:, None, :]
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = a * sin + b * cos
        return out

    def logits(self, ids):
        n, d = len(ids), self.head_dim
        x = self.embed[ids]
        mask = np.triu(np.full((n, n), -np.inf, dtype=np.float32), 1)
        group = self.heads // self.kv_heads
        for blk in self.blocks:
            h = self.rms(x, blk["attn_norm"])
            q = self.rope((h @ blk["attn_q"].T).reshape(n, self.heads, d), n)
            k = self.rope((h @ blk["attn_k"].T).reshape(n, self.kv_heads, d), n)
            v = (h @ blk["attn_v"].T).reshape(n, self.kv_heads, d)
            out = np.empty((n, self.heads, d), dtype=np.float32)
            for hd in range(self.heads):
                kv = hd // group
                s = (q[:, hd, :] @ k[:, kv, :].T) / np.float32(np.sqrt(d)) + mask
                p = np.exp(s - s.max(axis=-1, keepdims=True))
                p /= p.sum(axis=-1, keepdims=True)
                out[:, hd, :] = p @ v[:, kv, :]
            x = x + out.reshape(n, -1) @ blk["attn_output"].T
            h = self.rms(x, blk["ffn_norm"])
            gate, up = h @ blk["ffn_gate"].T, h @ blk["ffn_up"].T
            x = x + ((gate / (1.0 + np.exp(-gate))) * up) @ blk["ffn_down"].T
        return self.rms(x, self.norm) @ self.embed.T


def main():
    path, out_path = sys.argv[1], sys.argv[2]
    reader = GGUFReader(path)
    tok = build_tokenizer(reader)
    model = Model(reader)
    cases = []
    for prompt in PROMPTS:
        ids = tok.encode(prompt, add_special_tokens=False).ids
        logits = model.logits(ids)
        top = []
        for row in logits:
            idx = np.argsort(-row, kind="stable")[:TOP_K]
            top.append([[int(i), round(float(row[i]), 5)] for i in idx])
        seq = list(ids)
        for _ in range(GREEDY_STEPS):
            seq.append(int(np.argmax(model.logits(seq)[-1])))
        greedy = seq[len(ids):]
        cases.append({"prompt": prompt, "ids": ids, "top": top, "greedy": greedy, "greedy_text": tok.decode(greedy)})
        print(repr(prompt), ids, "->", repr(tok.decode(greedy)), file=sys.stderr)
    with open(out_path, "w") as f:
        json.dump({"model": path.rsplit("/", 1)[-1], "top_k": TOP_K, "cases": cases}, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
