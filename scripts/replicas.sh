#!/usr/bin/env bash
# N pagedattn replicas on this machine behind HAProxy (deploy/haproxy/haproxy.cfg), for
# trying the multi-replica setup and for its tests (scripts/replicas-test.sh).
#
#   scripts/replicas.sh start [N]      N replicas (default 2) and HAProxy; returns once all
#                                      answer /health through HAProxy
#   scripts/replicas.sh stop           stops HAProxy and every replica (SIGTERM)
#   scripts/replicas.sh kill I         kills replica I (1-based) with SIGKILL, as a crash
#   scripts/replicas.sh restart I      starts replica I again and waits for its /health
#   scripts/replicas.sh status         the replicas' state as HAProxy sees it
#
# Environment: PORT (HAProxy's, default 8000; replica I listens on PORT + I), STATS_PORT
# (HAProxy's stats page, default 8404), THREADS (threads per replica, default 1), MODEL
# (default: the README's SmolLM2 file), KV_BUDGET (per replica, default 256MiB),
# SERVE_FLAGS (more `pagedattn serve` flags), PAGEDATTN_BIN (default
# target/release/pagedattn, built if missing), RUN_DIR (pids, logs and the rendered
# configuration; default target/replicas). Everything listens on 127.0.0.1 only.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

PORT="${PORT:-8000}"
STATS_PORT="${STATS_PORT:-8404}"
THREADS="${THREADS:-1}"
KV_BUDGET="${KV_BUDGET:-256MiB}"
SERVE_FLAGS="${SERVE_FLAGS:-}"
RUN_DIR="${RUN_DIR:-target/replicas}"
bin="${PAGEDATTN_BIN:-target/release/pagedattn}"

die() { echo "replicas: $*" >&2; exit 1; }

healthy() { curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$1/health" 2>/dev/null; }

wait_healthy() { # port, seconds, what, pid (optional: give up at once if it exits)
    local i
    for i in $(seq 1 $(($2 * 10))); do
        healthy "$1" && return 0
        if [[ -n "${4:-}" ]] && ! kill -0 "$4" 2>/dev/null; then
            die "$3 exited before answering /health on 127.0.0.1:$1 (logs in $RUN_DIR)"
        fi
        sleep 0.1
    done
    die "$3 did not answer /health on 127.0.0.1:$1 within $2 s (logs in $RUN_DIR)"
}

start_replica() { # index
    local i="$1" model_flag=()
    [[ -n "${MODEL:-}" ]] && model_flag=(--model "$MODEL")
    # shellcheck disable=SC2086 # SERVE_FLAGS is a list of flags
    "$bin" serve "${model_flag[@]}" --host 127.0.0.1 --port $((PORT + i)) \
        --threads "$THREADS" --kv-budget "$KV_BUDGET" --served-model-name pagedattn \
        $SERVE_FLAGS >"$RUN_DIR/r$i.log" 2>&1 &
    echo $! >"$RUN_DIR/r$i.pid"
}

# The checked-in configuration for N replicas: ports moved, each backend's `server`
# lines repeated once per replica.
render() { # n
    awk -v n="$1" -v port="$PORT" -v stats="$STATS_PORT" '
        /^[[:space:]]*bind 127\.0\.0\.1:8000/ { sub(/:8000/, ":" port) }
        /^[[:space:]]*bind 127\.0\.0\.1:8404/ { sub(/:8404/, ":" stats) }
        /^[[:space:]]*server r1 / {
            for (i = 1; i <= n; i++) {
                line = $0
                gsub(/r1/, "r" i, line)
                sub(/127\.0\.0\.1:8001/, "127.0.0.1:" (port + i), line)
                print line
            }
            next
        }
        /^[[:space:]]*server r[0-9]+ / { next }
        { print }
    ' deploy/haproxy/haproxy.cfg
}

cmd="${1:-}"
case "$cmd" in
start)
    n="${2:-2}"
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "start: N must be a positive integer, not '$n'"
    command -v haproxy >/dev/null || die "haproxy is not installed (Debian: apt-get install haproxy)"
    [[ -x "$bin" ]] || cargo build --release -p pagedattn
    mkdir -p "$RUN_DIR"
    [[ -f "$RUN_DIR/haproxy.pid" ]] && kill -0 "$(cat "$RUN_DIR/haproxy.pid")" 2>/dev/null &&
        die "already running (scripts/replicas.sh stop first)"
    rm -f "$RUN_DIR"/r*.pid
    echo "$n" >"$RUN_DIR/count"
    for i in $(seq 1 "$n"); do start_replica "$i"; done
    for i in $(seq 1 "$n"); do wait_healthy $((PORT + i)) 180 "replica $i" "$(cat "$RUN_DIR/r$i.pid")"; done
    render "$n" >"$RUN_DIR/haproxy.cfg"
    haproxy -c -q -f "$RUN_DIR/haproxy.cfg" || die "the rendered configuration is invalid"
    haproxy -db -f "$RUN_DIR/haproxy.cfg" >"$RUN_DIR/haproxy.log" 2>&1 &
    echo $! >"$RUN_DIR/haproxy.pid"
    wait_healthy "$PORT" 30 "HAProxy" "$(cat "$RUN_DIR/haproxy.pid")"
    echo "replicas: $n replicas ($THREADS thread(s) each) behind http://127.0.0.1:$PORT; stats at http://127.0.0.1:$STATS_PORT/stats"
    ;;
stop)
    for f in "$RUN_DIR"/haproxy.pid "$RUN_DIR"/r*.pid; do
        [[ -f "$f" ]] || continue
        kill -TERM "$(cat "$f")" 2>/dev/null || true
    done
    for f in "$RUN_DIR"/haproxy.pid "$RUN_DIR"/r*.pid; do
        [[ -f "$f" ]] || continue
        timeout 40 tail --pid="$(cat "$f")" -f /dev/null 2>/dev/null || kill -KILL "$(cat "$f")" 2>/dev/null || true
        rm -f "$f"
    done
    echo "replicas: stopped"
    ;;
kill)
    i="${2:-}"
    [[ -f "$RUN_DIR/r$i.pid" ]] || die "kill: no replica '$i'"
    kill -KILL "$(cat "$RUN_DIR/r$i.pid")" 2>/dev/null || true
    echo "replicas: killed replica $i"
    ;;
restart)
    i="${2:-}"
    [[ -f "$RUN_DIR/r$i.pid" ]] || die "restart: no replica '$i'"
    kill -0 "$(cat "$RUN_DIR/r$i.pid")" 2>/dev/null && die "restart: replica $i is running"
    start_replica "$i"
    wait_healthy $((PORT + i)) 180 "replica $i" "$(cat "$RUN_DIR/r$i.pid")"
    echo "replicas: replica $i is back"
    ;;
status)
    curl -fsS -m 2 "http://127.0.0.1:$STATS_PORT/stats;csv" |
        awk -F, 'NR == 1 || $2 ~ /^r[0-9]+$/ { print $1, $2, $18, $5, $8 }' | column -t
    ;;
*)
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
    [[ -z "$cmd" || "$cmd" == help || "$cmd" == -h ]] || exit 2
    ;;
esac
