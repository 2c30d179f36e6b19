"""One line per run of a peer comparison: server, pair, output tokens/s, TTFT p50/p90,
TPOT p50, failed requests, and the output tokens counted (output tokens/s x duration),
from the `bench serve --json` reports OUT/NAME-PAIR.json.

    python3 scripts/peers/summarize.py OUT PAIRS NAME...
"""

import json
import os
import sys

out, pairs, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
width = max(len(n) for n in names + ["server"])
print(f"{'server':{width}} pair | out tok/s | TTFT p50 ms  p90 ms | TPOT p50 ms | failed | out tokens")
for i in range(1, pairs + 1):
    for name in names:
        path = os.path.join(out, f"{name}-{i}.json")
        if not os.path.exists(path):
            print(f"{name:{width}} {i:4} | no report")
            continue
        p = json.load(open(path))["policies"][0]
        print(
            f"{name:{width}} {i:4} | {p['output_tokens_per_s']:9.1f} | {p['ttft_ms']['p50']:11.0f} "
            f"{p['ttft_ms']['p90']:7.0f} | {p['tpot_ms']['p50']:11.1f} | {p['failed_requests']:6} | "
            f"{p['output_tokens_per_s'] * p['duration_s']:10.0f}"
        )
