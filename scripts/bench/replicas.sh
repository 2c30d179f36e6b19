#!/usr/bin/env bash
# One replica with 2 threads against 2 replicas with 1 thread each behind HAProxy
# (deploy/haproxy/haproxy.cfg via scripts/replicas.sh), on the same workloads and the same
# total KV memory, in one sitting, alternated ROUNDS times:
#   burst: 32 ShareGPT-like requests at once (throughput)
#   rate:  64 Alpaca-like requests at 4 per second, Poisson (TTFT / TPOT under load)
#   lone:  scripts/bench/lone-short.jsonl, 20 short requests 0.5 s apart, against one
#          replica directly and through HAProxy: what the proxy adds to time to first token
# Default server settings (native weights, prefix caching on). JSON per run in $OUT
# (default target/bench-replicas) and one summary line per run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
ROUNDS="${ROUNDS:-2}"
OUT="${OUT:-target/bench-replicas}"
export PORT="${PORT:-8100}" STATS_PORT="${STATS_PORT:-8504}" RUN_DIR="$OUT/run"
mkdir -p "$OUT"
cargo build --release -p pagedattn >/dev/null
bin=target/release/pagedattn
export PAGEDATTN_BIN="$bin"
bash scripts/fetch-model.sh >/dev/null
trap 'scripts/replicas.sh stop >/dev/null 2>&1 || true' EXIT

summary() { # json, label
    python3 - "$1" "$2" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
p = d["policies"][0]
t, o = p["ttft_ms"], p["tpot_ms"]
print(f"{sys.argv[2]:<22} out {p['output_tokens_per_s']:7.1f} tok/s  TTFT p50 {t['p50']:7.1f} p99 {t['p99']:7.1f} ms  TPOT p50 {o['p50']:6.1f} p99 {o['p99']:6.1f} ms  failed {p['failed_requests']}")
PY
}

run() { # label, url, flags...
    local label="$1" url="$2"
    shift 2
    "$bin" bench serve --backend openai --url "$url" --quiet --json "$OUT/$label.json" "$@" >/dev/null
    summary "$OUT/$label.json" "$label"
}

workloads() { # tag, url
    run "$1-burst" "$2" --workload sharegpt-like --requests 32 --rate inf --seed 1
    run "$1-rate" "$2" --workload alpaca-like --requests 64 --rate 4 --seed 2
}

for round in $(seq 1 "$ROUNDS"); do
    echo "== round $round"
    # 1 replica x 2 threads, 512 MiB of KV; the lone requests directly and through HAProxy.
    THREADS=2 KV_BUDGET=512MiB scripts/replicas.sh start 1 >/dev/null
    workloads "r$round-1x2" "http://127.0.0.1:$PORT"
    run "r$round-lone-direct" "http://127.0.0.1:$((PORT + 1))" --load-workload scripts/bench/lone-short.jsonl
    run "r$round-lone-haproxy" "http://127.0.0.1:$PORT" --load-workload scripts/bench/lone-short.jsonl
    scripts/replicas.sh stop >/dev/null
    # 2 replicas x 1 thread, 256 MiB of KV each.
    THREADS=1 KV_BUDGET=256MiB scripts/replicas.sh start 2 >/dev/null
    workloads "r$round-2x1" "http://127.0.0.1:$PORT"
    scripts/replicas.sh stop >/dev/null
done
