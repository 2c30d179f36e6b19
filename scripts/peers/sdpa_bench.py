"""Time PyTorch's scaled_dot_product_attention (CPU) on the grid of a
`pagedattn bench kernels --json` report, with the same shapes, element type and thread
count, and print the ratio against pagedattn's paged kernel.

Decode: q is [batch, heads, 1, head_dim] against K/V [batch, kv_heads, context, head_dim]
(no mask: the new token sees the whole context). Prefill: q, K and V all have `context`
tokens and `is_causal=True`. Like pagedattn, points whose working set is not far beyond the
last-level cache rotate among several input sets, so decode reads DRAM.
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def time_point(r, dtype, llc_bytes, budget_s):
    b, ctx, h, kvh, d = r["batch"], r["context"], r["num_heads"], r["num_kv_heads"], r["head_dim"]
    decode = r["phase"] == "decode"
    q_len = 1 if decode else ctx
    elem = torch.tensor([], dtype=dtype).element_size()
    ws = 2 * b * ctx * kvh * d * elem
    sets = 1
    if decode and ws >= 4 << 20:
        sets = max(1, min(64, -(-int(llc_bytes * 2.5) // ws)))
    gen = torch.Generator().manual_seed(0)
    inputs = []
    for _ in range(sets):
        q = torch.rand(b, h, q_len, d, generator=gen).mul_(2).sub_(1).to(dtype)
        k = torch.rand(b, kvh, ctx, d, generator=gen).mul_(2).sub_(1).to(dtype)
        v = torch.rand(b, kvh, ctx, d, generator=gen).mul_(2).sub_(1).to(dtype)
        inputs.append((q, k, v))
    gqa = kvh != h

    def call(i):
        q, k, v = inputs[i % sets]
        t = time.perf_counter()
        F.scaled_dot_product_attention(q, k, v, is_causal=not decode, enable_gqa=gqa)
        return time.perf_counter() - t

    first = max(call(i) for i in range(3))
    reps = max(5, min(2000, int(budget_s / max(first, 1e-6))))
    times = sorted(call(i + 1) * 1e3 for i in range(reps))
    return statistics.median(times), times[0], times[-1]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", required=True, help="report of `pagedattn bench kernels --json`")
    ap.add_argument("--out", help="write the peer results here as JSON")
    ap.add_argument("--budget-ms", type=float, default=300)
    args = ap.parse_args()
    report = json.load(open(args.json))
    m = report["machine"]
    torch.set_num_threads(m["threads"])
    llc = int(m.get("llc_mib", 256) * (1 << 20))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {m['cpu']}")
    print(f"{'phase':<7} {'dtype':>5} {'batch':>5} {'context':>7} {'kvh':>4} | {'sdpa ms':>9} {'min':>8} {'max':>8} | {'paged ms':>9} | {'sdpa/paged':>10}")
    rows = []
    for r in report["results"]:
        dtype = DTYPES[r["dtype"]]
        med, lo, hi = time_point(r, dtype, llc, args.budget_ms / 1e3)
        ratio = med / r["paged_ms"]
        rows.append({**{k: r[k] for k in ("phase", "dtype", "batch", "context", "num_heads", "num_kv_heads", "head_dim")},
                     "sdpa_ms": med, "sdpa_min_ms": lo, "sdpa_max_ms": hi, "paged_ms": r["paged_ms"], "sdpa_over_paged": ratio})
        print(f"{r['phase']:<7} {r['dtype']:>5} {r['batch']:>5} {r['context']:>7} {r['num_kv_heads']:>4} | {med:>9.3f} {lo:>8.3f} {hi:>8.3f} | {r['paged_ms']:>9.3f} | {ratio:>10.2f}")
    if args.out:
        json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(), "results": rows}, open(args.out, "w"), indent=2)


if __name__ == "__main__":
    main()
