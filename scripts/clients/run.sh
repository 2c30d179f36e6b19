#!/usr/bin/env bash
# Runs the official `openai` Python client against `pagedattn serve` on 127.0.0.1 (the real
# SmolLM2 model, fetched by scripts/fetch-model.sh): builds the binary if needed, creates a
# virtual environment with the pinned client (scripts/clients/requirements.txt), starts the
# server on a free port, runs test_openai_client.py, then stops the server with SIGTERM and
# checks that it exits 0. Bounded: the server gets 60 s to come up, the tests 300 s.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

bin="${PAGEDATTN_BIN:-target/release/pagedattn}"
[[ -x "$bin" ]] || cargo build --release -p pagedattn
venv="${PAGEDATTN_CLIENT_VENV:-target/venv-clients}"
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r scripts/clients/requirements.txt

log="$(mktemp)"
# bf16 weights: the checks compare answers ("Paris") and streamed vs whole greedy output.
# With the default native weights SmolLM2's Q4_1 file answers that question wrongly (so does
# llama.cpp on the same file), and a prompt prefix taken from the cache can change a greedy
# continuation (docs/SERVER.md).
"$bin" serve --port 0 --kv-budget 512MiB --shutdown-grace 5 --weights bf16 >"$log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; rm -f "$log"; }
trap cleanup EXIT

url=""
for _ in $(seq 1 600); do
    url="$(grep -o 'serving on http://[0-9.:]*' "$log" | head -n1 | sed 's/serving on //' || true)"
    if [[ -n "$url" ]] && "$venv/bin/python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/health", timeout=2)' "$url" 2>/dev/null; then break; fi
    if ! kill -0 "$pid" 2>/dev/null; then cat "$log" >&2; echo "clients: the server exited" >&2; exit 1; fi
    url=""
    sleep 0.1
done
[[ -n "$url" ]] || { cat "$log" >&2; echo "clients: the server did not come up in 60 s" >&2; exit 1; }

PAGEDATTN_URL="$url" timeout 300 "$venv/bin/python" scripts/clients/test_openai_client.py

kill -TERM "$pid"
status=0
timeout 30 tail --pid="$pid" -f /dev/null || { echo "clients: the server did not stop within 30 s of SIGTERM" >&2; exit 1; }
wait "$pid" || status=$?
if [[ "$status" != 0 ]]; then cat "$log" >&2; echo "clients: the server exited $status after SIGTERM" >&2; exit 1; fi
echo "clients: the server stopped cleanly on SIGTERM"
