#!/usr/bin/env bash
# In-process vs through HTTP, in one sitting: the same workload through `pagedattn bench
# serve` (the engine in the benchmark's process, paged policy) and through `pagedattn serve`
# driven by `bench serve --backend openai`, with the same engine settings (KV budget, block
# size, max model length, batch limits, bf16 weights and K/V, no prefix caching), alternating
# the two PAIRS times. Workloads: the default burst (16 ShareGPT-like requests) and 20 lone
# short requests (16 prompt + 16 output tokens, one every 0.5 s: no overlap), whose TTFT
# shows what the HTTP path adds. Results: JSON per run in $OUT (default target/serve-http)
# and a summary line per run. WORKLOADS=burst or WORKLOADS=lone runs one of the two.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
PAIRS="${PAIRS:-2}"
OUT="${OUT:-target/serve-http}"
PORT="${PORT:-8031}"
mkdir -p "$OUT"
cargo build --release -p pagedattn >/dev/null
bin=target/release/pagedattn
bash scripts/fetch-model.sh >/dev/null

# SmolLM2-135M, bf16 K/V: 30 layers x 3 KV heads x 64 x 2 (K, V) x 2 bytes = 23040 B/token;
# the benchmark's default budget is 3 x max-model-len (2048) tokens.
budget=$((3 * 2048 * 23040))
engine_flags=(--max-model-len 2048 --block-size 16 --max-num-seqs 256 --max-num-batched-tokens 2048)

serve() {
    "$bin" serve --port "$PORT" --kv-budget "$budget" "${engine_flags[@]}" \
        --weights bf16 --kv-dtype bf16 --prefix-caching false --shutdown-grace 5 \
        >"$OUT/server.log" 2>&1 &
    server=$!
    for _ in $(seq 1 600); do
        python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
            "http://127.0.0.1:$PORT/health" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "serve-http: the server did not come up" >&2
    exit 1
}
stop() { kill -TERM "$server"; wait "$server"; }

run_pair() { # name, workload flags...
    local name=$1; shift
    echo "== $name, in-process"
    "$bin" bench serve --quiet --policies paged --kv-budget "$budget" "${engine_flags[@]}" \
        --weights bf16 --kv-dtype bf16 "$@" --json "$OUT/$name-inprocess-$i.json"
    echo "== $name, through HTTP"
    serve
    "$bin" bench serve --quiet --backend openai --url "http://127.0.0.1:$PORT" \
        --max-model-len 2048 "$@" --json "$OUT/$name-http-$i.json"
    stop
}

for i in $(seq 1 "$PAIRS"); do
    case "${WORKLOADS:-burst,lone}" in *burst*) run_pair burst ;; esac
    case "${WORKLOADS:-burst,lone}" in *lone*) run_pair lone --load-workload scripts/bench/lone-short.jsonl ;; esac
done
# One line per run: workload, side, pair, output tokens/s, TTFT p50 ms.
python3 - "$OUT" <<'PY'
import glob, json, os, sys
for f in sorted(glob.glob(os.path.join(sys.argv[1], "*-*-*.json"))):
    p = json.load(open(f))["policies"][0]
    print(f"{os.path.basename(f)[:-5]:24} out tok/s {p['output_tokens_per_s']:7.1f}  TTFT p50 {p['ttft_ms']['p50']:8.1f} ms  p90 {p['ttft_ms']['p90']:8.1f} ms")
PY
