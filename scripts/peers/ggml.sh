#!/usr/bin/env bash
# Peer comparison (not part of CI): ggml's CPU flash attention (ggml_flash_attn_ext, the
# kernel llama.cpp runs) against `pagedattn bench kernels`, decode grid, same element type
# and threads, in one sitting: ggml, then pagedattn, then ggml again.
#
#   scripts/peers/ggml.sh [--dtype f32|f16|bf16] [--threads N]
#
# ggml comes from the llama.cpp sources vendored in PyPI's llama-cpp-python source
# package (pinned below), built CPU-only with `-march=native` (cmake from PyPI if missing).
# Set PEERS_GGML to reuse a build directory.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
version=0.3.36
dtype=f32
threads=$(nproc)
while [ $# -gt 0 ]; do
  case "$1" in
    --dtype) dtype="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    *) echo "ggml.sh: unknown argument $1 (use --dtype f32|f16|bf16, --threads N)" >&2; exit 2 ;;
  esac
done
work="${PEERS_GGML:-$(mktemp -d)}"
out="${PEERS_OUT:-$(mktemp -d)}"
mkdir -p "$work" "$out"
ggml="$work/llama_cpp_python-$version/vendor/llama.cpp/ggml"
if [ ! -f "$ggml/build/src/libggml-cpu.a" ]; then
  if [ ! -d "$ggml" ]; then
    # The source package of this one package (`--no-binary :all:` would also rebuild
    # pip's build tools, cmake included, from source).
    python3 -m pip download --quiet --no-deps --no-binary llama-cpp-python \
      "llama-cpp-python==$version" -d "$work"
    tar xzf "$work/llama_cpp_python-$version.tar.gz" -C "$work"
  fi
  command -v cmake >/dev/null || python3 -m pip install --quiet cmake
  # The vendored copy lacks the pkg-config template the standalone build configures.
  touch "$ggml/ggml.pc.in"
  cmake -S "$ggml" -B "$ggml/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DGGML_OPENMP=OFF -DGGML_CCACHE=OFF -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF \
    -DBUILD_SHARED_LIBS=OFF >/dev/null
  cmake --build "$ggml/build" -j "$(nproc)" >/dev/null
fi
gcc -O2 -march=native -I"$ggml/include" "$root/scripts/peers/ggml_fa_bench.c" \
  "$ggml/build/src/libggml.a" "$ggml/build/src/libggml-cpu.a" "$ggml/build/src/libggml-base.a" \
  -lstdc++ -lm -lpthread -o "$work/ggml_fa_bench"
cargo build --release -p pagedattn --manifest-path "$root/Cargo.toml"
llc_mib=$(( $(getconf LEVEL3_CACHE_SIZE 2>/dev/null || echo 0) / 1048576 ))
[ "$llc_mib" -gt 0 ] || llc_mib=256
"$work/ggml_fa_bench" "$threads" "$dtype" "$llc_mib" > "$out/ggml-before.txt"
"$root/target/release/pagedattn" bench kernels --dtype "$dtype" --threads "$threads" \
  --json "$out/pagedattn.json" > "$out/pagedattn.txt"
"$work/ggml_fa_bench" "$threads" "$dtype" "$llc_mib" > "$out/ggml-after.txt"
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
def load(name):
    rows = {}
    for line in open(f"{out}/{name}"):
        f = line.split()
        rows[(int(f[0]), int(f[1]), int(f[2]))] = float(f[3])
    return rows
before, after = load("ggml-before.txt"), load("ggml-after.txt")
print("batch context kv_heads | paged ms contiguous ms | ggml ms (before / after) | paged / ggml")
faster = total = 0
for r in json.load(open(f"{out}/pagedattn.json"))["results"]:
    key = (r["batch"], r["context"], r["num_kv_heads"])
    if r["phase"] != "decode" or key not in before:
        continue
    g = (before[key] + after[key]) / 2
    total += 1
    faster += r["paged_ms"] <= g
    print(f"{key[0]:5} {key[1]:7} {key[2]:8} | {r['paged_ms']:8.3f} {r['contiguous_ms']:13.3f} | "
          f"{before[key]:8.3f} / {after[key]:8.3f} | {r['paged_ms'] / g:6.2f}")
print(f"paged at or below the mean of the two ggml runs at {faster} of {total} points")
PY
echo "results: $out"
