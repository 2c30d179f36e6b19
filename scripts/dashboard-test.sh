#!/usr/bin/env bash
# The dashboard (`GET /dashboard`) in a real browser: headless Chromium loads the page from
# `pagedattn serve` (the real SmolLM2 model, a 64 MiB KV pool of 182 blocks) while a small
# workload runs (prefix-shared requests and forked samples), and the test reads the page as
# the browser rendered it (its DOM after the scripts ran):
#
#  1. while requests run: the page is live, the grid has one cell per block (as many as
#     /metrics' pagedattn:kv_blocks_total), running requests are listed, and a screenshot is
#     saved ($OUT/dashboard.png; UPDATE_DOCS=1 copies it to docs/dashboard.png);
#  2. once the server is idle: every counter on the page equals its /metrics figure;
#  3. with the state endpoint unreachable, the page says so;
#  4. a pool of over 100,000 blocks (one token each, 2.4 GB of KV) is drawn in at most
#     16,384 cells, and its state answers quickly.
#
# Not part of .ci/run (Chromium is a large install). Run: bash scripts/dashboard-test.sh
# (installs Debian's chromium with apt-get when missing and run as root). On 127.0.0.1 only;
# about a minute.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
OUT="${OUT:-target/dashboard-test}"
mkdir -p "$OUT"

# shellcheck source=scripts/lib/ensure-package.sh
source scripts/lib/ensure-package.sh
ensure_package chromium chromium
ensure_package curl curl
bin="${PAGEDATTN_BIN:-target/release/pagedattn}"
[[ -x "$bin" ]] || cargo build --release -p pagedattn
bash scripts/fetch-model.sh >/dev/null

log="$OUT/server.log"
server="" load=""
cleanup() {
    if [[ -n "$load" ]]; then kill "$load" 2>/dev/null || true; fi
    if [[ -n "$server" ]]; then kill "$server" 2>/dev/null || true; fi
}
trap cleanup EXIT
fail() { echo "dashboard-test: FAILED: $*" >&2; tail -n 20 "$log" >&2; exit 1; }

# Starts `pagedattn serve` with the given flags on a free port; sets `server` and `url`.
serve() {
    "$bin" serve --port 0 --shutdown-grace 2 "$@" >"$log" 2>&1 &
    server=$!
    url=""
    for _ in $(seq 1 600); do
        url="$(grep -o 'serving on http://[0-9.:]*' "$log" | head -n1 | sed 's/serving on //' || true)"
        [[ -n "$url" ]] && curl -fsS -m 2 -o /dev/null "$url/health" 2>/dev/null && return 0
        kill -0 "$server" 2>/dev/null || fail "the server exited"
        sleep 0.1
    done
    fail "the server did not come up in 60 s"
}
serve --kv-budget 64MiB --max-model-len 2048

# The page as the browser left it after `budget` ms of (virtual) time.
dom() { # url, budget ms
    timeout 60 chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars \
        --window-size=1400,1100 --virtual-time-budget="$2" --dump-dom "$1" 2>/dev/null
}
# A figure of /metrics (label sets summed).
# shellcheck source=scripts/lib/metric.sh
source scripts/lib/metric.sh
metric() { metric_sum "$url" "$1"; }
# What the page shows: attribute `$2` of the element with id `$1`.
attr() { { grep -o "id=\"$1\"[^>]*" | grep -o "$2=\"[^\"]*\"" | head -n1 | cut -d'"' -f2; } || true; }

echo "== 1. live, under load"
"$bin" bench serve --backend openai --url "$url" --quiet --workload prefix-shared \
    --prefix-len 64 --prefix-groups 3 --requests 40 --rate 4 --seed 5 >"$OUT/load.txt" 2>&1 &
load=$!
forks=()
for _ in 1 2 3; do
    curl -fsS -m 120 -o /dev/null "$url/v1/completions" -H 'content-type: application/json' \
        -d '{"prompt": "Write a story about a dragon who learns to", "max_tokens": 200, "n": 3, "temperature": 1.0, "ignore_eos": true}' &
    forks+=($!)
done
sleep 4
page="$(dom "$url/dashboard" 3000)"
grep -q '<body data-state="live"' <<<"$page" || fail "the page is not live"
cells="$(attr pool data-cells <<<"$page")"
blocks="$(attr pool data-blocks <<<"$page")"
total="$(metric pagedattn:kv_blocks_total)"
echo "grid: $cells cells for $blocks blocks; /metrics: $total blocks"
[[ "$cells" == "$blocks" && "$blocks" == "$total" ]] || fail "grid $cells cells, $blocks blocks, /metrics $total"
rows="$(grep -o '<tr><td>' <<<"$page" | wc -l)"
running="$(attr c-num_requests_running data-value <<<"$page")"
echo "running on the page: $running; request rows: $rows"
((running >= 1 && rows >= 1)) || fail "no running request shown"
samples="$(attr s-out_tps data-samples <<<"$page")"
echo "time series: $samples samples"
((samples >= 4)) || fail "the time series has $samples samples after 4 s"
timeout 60 chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars \
    --window-size=1400,1100 --virtual-time-budget=12000 --screenshot="$OUT/dashboard.png" \
    "$url/dashboard" 2>/dev/null
[[ -s "$OUT/dashboard.png" ]] || fail "no screenshot"
echo "screenshot: $OUT/dashboard.png"
[[ "${UPDATE_DOCS:-0}" == 1 ]] && cp "$OUT/dashboard.png" docs/dashboard.png

echo "== 2. counters equal /metrics once idle"
wait "$load" || fail "the workload failed: $(cat "$OUT/load.txt")"
load=""
for f in "${forks[@]}"; do wait "$f" || fail "a forked request failed"; done
for _ in $(seq 1 100); do
    [[ "$(metric vllm:num_requests_running)" == 0 && "$(metric vllm:num_requests_waiting)" == 0 ]] && break
    sleep 0.1
done
sleep 0.5 # one picture interval
page="$(dom "$url/dashboard" 1500)"
for pair in num_requests_running:vllm:num_requests_running \
    num_requests_waiting:vllm:num_requests_waiting \
    kv_blocks_used:pagedattn:kv_blocks_used \
    kv_blocks_cached_free:pagedattn:kv_blocks_cached_free \
    kv_cow_copies:pagedattn:kv_cow_copies_total \
    prefix_cache_hits:vllm:prefix_cache_hits_total \
    num_preemptions:vllm:num_preemptions_total \
    generation_tokens:vllm:generation_tokens_total; do
    key="${pair%%:*}" name="${pair#*:}"
    shown="$(attr "c-$key" data-value <<<"$page")"
    want="$(metric "$name")"
    printf '%-24s page %-8s /metrics %s\n' "$key" "$shown" "$want"
    if [[ -z "$shown" ]] || ! python3 -c 'import sys; sys.exit(float(sys.argv[1]) != float(sys.argv[2]))' "$shown" "$want"; then
        fail "$key: the page shows '$shown', /metrics $name says $want"
    fi
done
(($(metric pagedattn:kv_cow_copies_total | cut -d. -f1) >= 1)) || fail "no copy-on-write happened"

echo "== 3. the state endpoint unreachable"
curl -fsS -m 5 "$url/dashboard" >"$OUT/dashboard.html"
page="$(dom "file://$(cd "$OUT" && pwd)/dashboard.html" 1500)"
grep -q '<body data-state="unreachable"' <<<"$page" || fail "the page does not say the server is unreachable"
grep -q 'The server is unreachable' <<<"$page" || fail "no message"
echo "the page says: $(grep -o 'unreachable ([^)]*)' <<<"$page" | head -n1)"

kill -TERM "$server"
wait "$server" || fail "the server did not stop cleanly"

echo "== 4. 100,000 blocks"
serve --kv-budget 2400MB --block-size 1 --max-model-len 2048
curl -fsS -m 120 -o /dev/null "$url/v1/completions" -H 'content-type: application/json' \
    -d '{"prompt": "Tell me a long story about the sea", "max_tokens": 300, "n": 2, "temperature": 1.0, "ignore_eos": true}' &
forks=($!)
sleep 2
took="$(curl -fsS -m 10 -o /dev/null -w '%{time_total}' "$url/dashboard/state?cells=16384")"
page="$(dom "$url/dashboard" 3000)"
cells="$(attr pool data-cells <<<"$page")"
blocks="$(attr pool data-blocks <<<"$page")"
echo "grid: $cells cells for $blocks blocks; /dashboard/state with 16,384 cells answered in ${took} s"
grep -q '<body data-state="live"' <<<"$page" || fail "the large page is not live"
((blocks >= 100000 && cells >= 1 && cells <= 16384)) || fail "grid $cells cells for $blocks blocks"
wait "${forks[0]}" || fail "the request on the large pool failed"
kill -TERM "$server"
wait "$server" || fail "the large server did not stop cleanly"
echo "dashboard-test: all passed"
