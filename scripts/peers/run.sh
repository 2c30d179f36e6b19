#!/usr/bin/env bash
# Peer comparison (not part of CI): PyTorch's CPU scaled_dot_product_attention against
# `pagedattn bench kernels`, same grid, element type and threads, in one sitting.
#
#   scripts/peers/run.sh [--quick] [--dtype f32|f16|bf16] [--threads N]
#
# PyTorch goes into a throwaway virtual environment (default: a temporary directory;
# set PEERS_VENV to reuse one). PyPI's Linux torch wheel declares the CUDA runtime
# libraries as dependencies and loads them at import, so they are installed too, even
# though nothing here runs on a GPU.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${PEERS_VENV:-$(mktemp -d)/venv}"
out="${PEERS_OUT:-$(mktemp -d)}"
mkdir -p "$out"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip setuptools
  "$venv/bin/pip" install --quiet torch numpy
fi
cargo build --release -p pagedattn --manifest-path "$root/Cargo.toml"
"$root/target/release/pagedattn" bench kernels "$@" --json "$out/pagedattn.json"
"$venv/bin/python" "$root/scripts/peers/sdpa_bench.py" --json "$out/pagedattn.json" --out "$out/sdpa.json"
echo "results: $out/pagedattn.json $out/sdpa.json"
