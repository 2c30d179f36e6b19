"""Small models of each supported family, in both file formats, with reference logits.

For each family (llama, llama3 with RoPE frequency scaling, qwen2 with Q/K/V biases) this
writes, under OUT/<family>/:

  model.gguf               the weights as llama.cpp's converter lays them out (gguf package)
  hf/config.json           the same weights as a Hugging Face directory
  hf/model.safetensors
  reference.safetensors    tokens [64] and float32 logits [64, vocab] at every position,
                           plus `logits_without`: the logits without the family's feature
                           (wrong RoPE layout, no scaling, no biases), so a test can show
                           the feature matters

The forward pass is plain numpy in float64, written from the published formulas
(transformers' modeling_llama / modeling_qwen2: rotate-half RoPE, `_compute_llama3_parameters`
for the scaling), not from the Rust code. Weights are drawn with a fixed seed and rounded to
float16 so both files hold exactly the values the reference uses. Usage:

    python families.py crates/model/tests/fixtures/families
"""

import json
import os
import sys

import numpy as np
from gguf import GGUFWriter
from safetensors.numpy import save_file

VOCAB, HIDDEN, HEADS, KV_HEADS, HEAD_DIM, FFN, LAYERS = 128, 64, 4, 2, 16, 96, 2
SEQ = 64
CONTEXT = 128

FAMILIES = {
    "llama": dict(arch="llama", theta=10000.0, eps=1e-5, tied=False, bias=False, scaling=None, pre="gpt2"),
    "llama3": dict(
        arch="llama",
        theta=10000.0,
        eps=1e-5,
        tied=True,
        bias=False,
        # Bands chosen so a 64-token test crosses all three: wavelengths 6.3 (kept),
        # 19.9 and 62.8 (smoothed), 199 and up (divided by 8).
        scaling=dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=64),
        pre="llama-bpe",
    ),
    "qwen2": dict(arch="qwen2", theta=1000000.0, eps=1e-6, tied=True, bias=True, scaling=None, pre="qwen2"),
}


def f16(a):
    return a.astype(np.float16).astype(np.float64)


def make_weights(rng, fam):
    w = {}
    qd, kvd = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM

    def mat(rows, cols):
        return f16(rng.standard_normal((rows, cols)) / np.sqrt(cols))

    def norm(n):
        return f16(1.0 + rng.uniform(-0.2, 0.2, n))

    w["model.embed_tokens.weight"] = f16(rng.standard_normal((VOCAB, HIDDEN)))
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm(HIDDEN)
        w[p + "self_attn.q_proj.weight"] = mat(qd, HIDDEN)
        w[p + "self_attn.k_proj.weight"] = mat(kvd, HIDDEN)
        w[p + "self_attn.v_proj.weight"] = mat(kvd, HIDDEN)
        if fam["bias"]:
            w[p + "self_attn.q_proj.bias"] = f16(rng.standard_normal(qd) * 0.5)
            w[p + "self_attn.k_proj.bias"] = f16(rng.standard_normal(kvd) * 0.5)
            w[p + "self_attn.v_proj.bias"] = f16(rng.standard_normal(kvd) * 0.5)
        w[p + "self_attn.o_proj.weight"] = mat(HIDDEN, qd)
        w[p + "post_attention_layernorm.weight"] = norm(HIDDEN)
        w[p + "mlp.gate_proj.weight"] = mat(FFN, HIDDEN)
        w[p + "mlp.up_proj.weight"] = mat(FFN, HIDDEN)
        w[p + "mlp.down_proj.weight"] = mat(HIDDEN, FFN)
    w["model.norm.weight"] = norm(HIDDEN)
    if not fam["tied"]:
        w["lm_head.weight"] = mat(VOCAB, HIDDEN)
    return w


def inv_freq(fam, scaled=True):
    """transformers' default RoPE frequencies, adjusted by `_compute_llama3_parameters`."""
    inv = 1.0 / fam["theta"] ** (np.arange(0, HEAD_DIM, 2, dtype=np.float64) / HEAD_DIM)
    s = fam["scaling"]
    if s is None or not scaled:
        return inv
    factor, low, high, old = s["factor"], s["low_freq_factor"], s["high_freq_factor"], s["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old / low, old / high
    wavelen = 2 * np.pi / inv
    out = np.where(wavelen > low_wavelen, inv / factor, inv)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * out / factor + smooth * out
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, out)


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x, inv, adjacent=False):
    """x: [heads, seq, head_dim]; rotate-half (Hugging Face), or adjacent pairs."""
    pos = np.arange(x.shape[1], dtype=np.float64)
    ang = np.outer(pos, inv)  # [seq, head_dim / 2]
    cos, sin = np.cos(ang), np.sin(ang)
    if adjacent:
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = a * sin + b * cos
        return out
    half = HEAD_DIM // 2
    a, b = x[..., :half], x[..., half:]
    return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)


def forward(w, fam, tokens, scaled=True, bias=True, adjacent=False):
    eps, n = fam["eps"], len(tokens)
    inv = inv_freq(fam, scaled)
    x = w["model.embed_tokens.weight"][tokens]
    mask = np.triu(np.full((n, n), -np.inf), 1)
    group = HEADS // KV_HEADS
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        proj = {}
        for name in "qkv":
            y = h @ w[p + f"self_attn.{name}_proj.weight"].T
            if bias and (p + f"self_attn.{name}_proj.bias") in w:
                y = y + w[p + f"self_attn.{name}_proj.bias"]
            proj[name] = y.reshape(n, -1, HEAD_DIM).transpose(1, 0, 2)  # [heads, seq, d]
        q = rope(proj["q"], inv, adjacent)
        k = np.repeat(rope(proj["k"], inv, adjacent), group, axis=0)
        v = np.repeat(proj["v"], group, axis=0)
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(HEAD_DIM) + mask
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        att = (scores / scores.sum(-1, keepdims=True)) @ v
        x = x + att.transpose(1, 0, 2).reshape(n, -1) @ w[p + "self_attn.o_proj.weight"].T
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        g = h @ w[p + "mlp.gate_proj.weight"].T
        u = h @ w[p + "mlp.up_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ w[p + "mlp.down_proj.weight"].T
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return rms_norm(x, w["model.norm.weight"], eps) @ head.T


def permute(m, heads):
    """llama.cpp's converter: within each head, rows (i, i + d/2) become (2i, 2i + 1)."""
    return m.reshape(heads, 2, m.shape[0] // heads // 2, *m.shape[1:]).swapaxes(1, 2).reshape(m.shape)


GGUF_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def byte_chars():
    """GPT-2's byte-to-character map."""
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def write_gguf(path, w, fam):
    arch = fam["arch"]
    g = GGUFWriter(path, arch)
    g.add_block_count(LAYERS)
    g.add_context_length(CONTEXT)
    g.add_embedding_length(HIDDEN)
    g.add_feed_forward_length(FFN)
    g.add_head_count(HEADS)
    g.add_head_count_kv(KV_HEADS)
    g.add_rope_dimension_count(HEAD_DIM)
    g.add_rope_freq_base(fam["theta"])
    g.add_layer_norm_rms_eps(fam["eps"])
    chars = byte_chars()
    g.add_tokenizer_model("gpt2")
    g.add_tokenizer_pre(fam["pre"])
    # Byte tokens and one merge (the gguf package leaves an empty merge list out).
    g.add_token_list([chars[b] for b in range(VOCAB - 1)] + [chars[32] + "t"])
    g.add_token_types([1] * VOCAB)
    g.add_token_merges([chars[32] + " t"])
    g.add_bos_token_id(1)
    g.add_eos_token_id(2)
    g.add_add_bos_token(fam["pre"] == "llama-bpe")

    def put(name, a):
        g.add_tensor(name, a.astype(np.float16 if a.ndim == 2 else np.float32))

    put("token_embd.weight", w["model.embed_tokens.weight"])
    for i in range(LAYERS):
        for hf, gg in GGUF_NAMES.items():
            key = f"model.layers.{i}.{hf}"
            if key not in w:
                continue
            a = w[key]
            if arch == "llama" and hf.startswith(("self_attn.q_proj", "self_attn.k_proj")):
                a = permute(a, HEADS if "q_proj" in hf else KV_HEADS)
            put(f"blk.{i}.{gg}", a)
    put("output_norm.weight", w["model.norm.weight"])
    if "lm_head.weight" in w:
        put("output.weight", w["lm_head.weight"])
    if fam["scaling"] is not None:
        # As llama.cpp's converter writes Llama 3.1's rule: one divisor per frequency.
        put("rope_freqs.weight", (inv_freq(fam, False) / inv_freq(fam)).astype(np.float32))
    g.write_header_to_file()
    g.write_kv_data_to_file()
    g.write_tensors_to_file()
    g.close()


def write_hf(dir, w, fam):
    os.makedirs(dir, exist_ok=True)
    model_type = "qwen2" if fam["arch"] == "qwen2" else "llama"
    config = {
        "architectures": ["Qwen2ForCausalLM" if model_type == "qwen2" else "LlamaForCausalLM"],
        "model_type": model_type,
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "intermediate_size": FFN,
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "num_key_value_heads": KV_HEADS,
        "max_position_embeddings": CONTEXT,
        "rms_norm_eps": fam["eps"],
        "rope_theta": fam["theta"],
        "tie_word_embeddings": fam["tied"],
        "vocab_size": VOCAB,
        "torch_dtype": "float16",
    }
    if model_type == "qwen2":
        config.update(use_sliding_window=False, sliding_window=CONTEXT, max_window_layers=LAYERS)
    if fam["scaling"] is not None:
        config["rope_scaling"] = dict(rope_type="llama3", **fam["scaling"])
    with open(os.path.join(dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    save_file({k: v.astype(np.float16) for k, v in w.items()}, os.path.join(dir, "model.safetensors"))


def main(out):
    for seed, (name, fam) in enumerate(FAMILIES.items()):
        rng = np.random.default_rng(1000 + seed)
        w = make_weights(rng, fam)
        tokens = rng.integers(0, VOCAB, SEQ)
        logits = forward(w, fam, tokens)
        if fam["scaling"] is not None:
            without = forward(w, fam, tokens, scaled=False)
        elif fam["bias"]:
            without = forward(w, fam, tokens, bias=False)
        else:
            without = forward(w, fam, tokens, adjacent=True)
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        write_gguf(os.path.join(d, "model.gguf"), w, fam)
        write_hf(os.path.join(d, "hf"), w, fam)
        save_file(
            {
                "tokens": tokens.astype(np.int64),
                "logits": logits.astype(np.float32),
                "logits_without": without.astype(np.float32),
            },
            os.path.join(d, "reference.safetensors"),
        )
        print(f"{name}: |logits| max {np.abs(logits).max():.2f}, feature changes them by up to {np.abs(logits - without).max():.2f}")


if __name__ == "__main__":
    main(sys.argv[1])
