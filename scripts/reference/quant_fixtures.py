#!/usr/bin/env python3
"""Writes crates/kernels/tests/fixtures/quant_blocks.json: GGML quantized blocks written
and dequantized by an independent implementation (the `gguf` Python package), for the
kernels' layout tests.

    python3 -m venv /tmp/gguf-env && /tmp/gguf-env/bin/pip install gguf numpy
    /tmp/gguf-env/bin/python scripts/reference/quant_fixtures.py

Q4_0, Q4_1 and Q8_0 blocks come from `gguf.quants.quantize` on normal samples; the
package has no quantizer for the k-quants, so their blocks are random bytes with finite
f16 scales of a weight's size (every code and scale byte pattern is a valid block).
Every type's values are `gguf.quants.dequantize` of the bytes.
"""
import json
import pathlib

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

ROWS = 2
OUT = pathlib.Path(__file__).resolve().parents[2] / "crates/kernels/tests/fixtures/quant_blocks.json"


def k_blocks(rng, t, cols):
    bb = {T.Q4_K: 144, T.Q5_K: 176, T.Q6_K: 210}[t]
    b = rng.integers(0, 256, size=(ROWS, cols // 256, bb), dtype=np.uint8)
    def f16(lo, hi):
        return rng.uniform(lo, hi, size=(ROWS, cols // 256)).astype(np.float16).view(np.uint8).reshape(ROWS, cols // 256, 2)
    if t == T.Q6_K:
        b[:, :, 208:210] = f16(0.0, 0.001)
    else:
        b[:, :, 0:2] = f16(0.0, 0.002)
        b[:, :, 2:4] = f16(0.0, 0.002)
    return b.reshape(ROWS, -1)


def main():
    rng = np.random.default_rng(2026)
    cases = []
    for t, cols in [(T.Q4_0, 64), (T.Q4_1, 64), (T.Q8_0, 64), (T.Q4_K, 256), (T.Q5_K, 256), (T.Q6_K, 512)]:
        if t in (T.Q4_0, T.Q4_1, T.Q8_0):
            x = (rng.standard_normal((ROWS, cols)) * 0.05).astype(np.float32)
            blocks = quants.quantize(x, t)
        else:
            blocks = k_blocks(rng, t, cols)
        values = quants.dequantize(blocks, t).astype(np.float32)
        assert values.shape == (ROWS, cols)
        cases.append({
            "type": t.name,
            "rows": ROWS,
            "cols": cols,
            "bytes": bytes(blocks.reshape(-1)).hex(),
            "values": [float(v) for v in values.reshape(-1)],
        })
    OUT.write_text(json.dumps({"writer": "gguf (Python)", "cases": cases}) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
