#!/usr/bin/env bash
# Tests of two pagedattn replicas behind HAProxy (deploy/haproxy/haproxy.cfg, started by
# scripts/replicas.sh), on 127.0.0.1 only, bounded in requests and time:
#
#  1. balance: a workload through HAProxy completes without a failure and both replicas
#     serve part of it;
#  2. failover: replica 1 is killed (SIGKILL) mid-run: the requests it was streaming end
#     with an error (no hang), nothing else fails, new requests go to replica 2; started
#     again, replica 1 takes traffic again;
#  3. prefix affinity: the prefix-shared workload (8 conversations) with an X-Session-Id
#     header gets a prefix-cache hit rate through HAProxy within 10% of one replica's;
#     without the header (least outstanding requests) it gets less.
#
# Needs haproxy (installed with apt-get when missing and possible) and the release binary
# (built when missing). Prints each measured figure; exits non-zero on the first failure.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# shellcheck source=scripts/lib/ensure-package.sh
source scripts/lib/ensure-package.sh
ensure_package haproxy haproxy
ensure_package curl curl
bin="${PAGEDATTN_BIN:-target/release/pagedattn}"
[[ -x "$bin" ]] || cargo build --release -p pagedattn

# Free ports: HAProxy on PORT, replicas on PORT + 1 and + 2, stats on STATS_PORT. Drawn
# below the kernel's ephemeral range (outgoing connections take ports from there), and not
# used by any socket, listening or not.
pick_port() {
    local p low
    low="$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)"
    for _ in $(seq 1 50); do
        p=$((10000 + RANDOM % (low - 10010)))
        ss -tan | awk '{print $4}' | grep -Eq ":($p|$((p + 1))|$((p + 2))|$((p + 3)))\$" || { echo "$p"; return; }
    done
    echo "replicas-test: no free port" >&2
    exit 1
}
export PORT="${PORT:-$(pick_port)}"
export STATS_PORT=$((PORT + 3))
export RUN_DIR="${RUN_DIR:-$(mktemp -d)}"
export THREADS=1 KV_BUDGET=256MiB PAGEDATTN_BIN="$bin"
out="$RUN_DIR/out"
mkdir -p "$out"

cleanup() { scripts/replicas.sh stop >/dev/null 2>&1 || true; }
trap cleanup EXIT
fail() {
    echo "replicas-test: FAILED: $*" >&2
    for f in "$RUN_DIR"/*.log; do echo "--- $f" >&2; tail -n 20 "$f" >&2; done
    exit 1
}

# Sum of a metric's samples (all label sets) on the replica at PORT + $1.
# shellcheck source=scripts/lib/metric.sh
source scripts/lib/metric.sh
metric() { metric_sum "http://127.0.0.1:$((PORT + $1))" "$2"; } # replica, name
served() { metric "$1" vllm:request_success_total; }
# Requests HAProxy has sent to replica $1 (both backends; sessions less those that could
# not connect and went to another replica), from its stats page.
forwarded() {
    curl -fsS -m 5 "http://127.0.0.1:$STATS_PORT/stats;csv" |
        awk -F, -v r="r$1" '$2 == r { s += $8 - $17 } END { print s + 0 }'
}
# Requests replica $1 finished, from its log (which outlives a killed replica).
finished_in_log() { grep -c "request finished" "$RUN_DIR/r$1.log" || true; }
# `failed_requests` of a `bench serve --json` report.
failed() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["policies"][0]["failed_requests"])' "$1"; }

bench() { # json, extra flags...
    local json="$1"
    shift
    timeout 300 "$bin" bench serve --backend openai --url "http://127.0.0.1:$PORT" --quiet \
        --request-timeout 120 --json "$json" "$@"
}

scripts/replicas.sh start 2

echo "== 1. balance"
b1=$(served 1) b2=$(served 2)
bench "$out/balance.json" --workload alpaca-like --requests 24 --rate 12 --seed 1 >"$out/balance.txt" ||
    fail "bench serve through HAProxy"
[[ "$(failed "$out/balance.json")" == 0 ]] || fail "requests failed: $(cat "$out/balance.txt")"
d1=$(($(served 1) - b1)) d2=$(($(served 2) - b2))
echo "replica 1 served $d1, replica 2 served $d2 of 24"
((d1 + d2 == 24 && d1 > 0 && d2 > 0)) || fail "traffic not shared: $d1 + $d2"

echo "== 2. failover"
b2=$(served 2) f1=$(forwarded 1) l1=$(finished_in_log 1)
bench "$out/failover.json" --workload alpaca-like --requests 40 --rate 6 --seed 2 \
    >"$out/failover.txt" 2>"$out/failover.err" &
run=$!
# Kill replica 1 while it streams at least two requests (waiting at most 10 s for that).
sleep 2
held=0
for _ in $(seq 1 200); do
    held=$(metric 1 vllm:num_requests_running)
    ((held >= 2)) && break
    sleep 0.05
done
scripts/replicas.sh kill 1
killed_at=$(date +%s.%N)
wait "$run" || fail "the run did not finish cleanly after the kill: $(cat "$out/failover.err")"
took=$(python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 1))" "$killed_at" "$(date +%s.%N)")
nfail=$(failed "$out/failover.json")
# What replica 1 was holding when it died: sent to it by HAProxy, never finished there.
cut=$(($(forwarded 1) - f1 - ($(finished_in_log 1) - l1)))
d2=$(($(served 2) - b2))
echo "replica 1 was holding $cut requests when killed; $nfail requests failed; replica 2 finished $d2; the run ended ${took} s after the kill"
((nfail <= cut)) || fail "$nfail failures, more than replica 1 held ($cut)"
((held < 2 || nfail >= 1)) || fail "replica 1 was streaming $held requests, yet none failed"
if ((nfail > 0)); then
    grep -m 3 "failed" "$out/failover.err" || true
fi
[[ -z "$(grep -m1 'request timeout' "$out/failover.err" || true)" ]] || fail "a request hung until its timeout"
((d2 + nfail + ($(finished_in_log 1) - l1) == 40)) || fail "requests unaccounted for: replica 2 finished $d2"
# After one health-check interval (fall 2 x 1 s) new requests all go to replica 2.
sleep 2
b2=$(served 2)
bench "$out/after-kill.json" --workload alpaca-like --requests 8 --rate inf --seed 3 >/dev/null ||
    fail "requests after the kill"
[[ "$(failed "$out/after-kill.json")" == 0 ]] || fail "requests failed after replica 1 was marked down"
(($(served 2) - b2 == 8)) || fail "requests after the kill did not all go to replica 2"
scripts/replicas.sh restart 1
sleep 3 # rise 2 x inter 1 s
b1=$(served 1)
bench "$out/back.json" --workload alpaca-like --requests 16 --rate 8 --seed 4 >/dev/null ||
    fail "requests after the restart"
[[ "$(failed "$out/back.json")" == 0 ]] || fail "requests failed after the restart"
back=$(($(served 1) - b1))
echo "restarted replica 1 served $back of 16"
((back > 0)) || fail "the restarted replica took no traffic"

echo "== 3. prefix affinity"
hit_rate() { # hits before, queries before, hits after, queries after
    python3 -c 'import sys; h0,q0,h1,q1=map(float,sys.argv[1:]); print(f"{(h1-h0)/max(q1-q0,1):.3f}")' "$@"
}
prefix_run() { # name, url, extra flags...
    local name="$1" url="$2"
    shift 2
    local h0 q0
    h0=$(($(metric 1 vllm:prefix_cache_hits_total) + $(metric 2 vllm:prefix_cache_hits_total)))
    q0=$(($(metric 1 vllm:prefix_cache_queries_total) + $(metric 2 vllm:prefix_cache_queries_total)))
    timeout 300 "$bin" bench serve --backend openai --url "$url" --quiet --request-timeout 120 \
        --json "$out/$name.json" --workload prefix-shared --prefix-len 256 --prefix-groups 8 \
        --requests 32 --rate 6 "$@" >/dev/null || fail "prefix run $name"
    [[ "$(failed "$out/$name.json")" == 0 ]] || fail "requests failed in the $name run"
    local h1 q1
    h1=$(($(metric 1 vllm:prefix_cache_hits_total) + $(metric 2 vllm:prefix_cache_hits_total)))
    q1=$(($(metric 1 vllm:prefix_cache_queries_total) + $(metric 2 vllm:prefix_cache_queries_total)))
    hit_rate "$h0" "$q0" "$h1" "$q1"
}
# Each run draws its own prefixes (its own seed), so no run finds another's in a cache.
single=$(prefix_run single "http://127.0.0.1:$((PORT + 1))" --seed 11)
affinity=$(prefix_run affinity "http://127.0.0.1:$PORT" --seed 12 --session-header X-Session-Id)
spread=$(prefix_run spread "http://127.0.0.1:$PORT" --seed 13)
echo "prefix-cache hit rate: one replica $single, HAProxy with X-Session-Id $affinity, HAProxy without it $spread"
python3 -c 'import sys; s,a,r=map(float,sys.argv[1:]); sys.exit(0 if abs(a-s) <= 0.1*s and r < a else 1)' \
    "$single" "$affinity" "$spread" || fail "affinity: want |$affinity - $single| <= 10% of $single and $spread < $affinity"

echo "replicas-test: all passed"
