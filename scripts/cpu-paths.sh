#!/usr/bin/env bash
# Prints the kernel code paths this machine's CPU has, comma-separated, as the kernels
# name them (pagedattn_kernels::Cpu): derived from /proc/cpuinfo independently of the
# kernels' own detection, for PAGEDATTN_EXPECT_PATHS. A test that skips a path named
# there fails, so a machine never passes while testing less than it has.
set -euo pipefail

case "$(uname -m)" in
    aarch64 | arm64)
        echo "neon,scalar"
        exit 0
        ;;
    x86_64) ;;
    *)
        echo "scalar"
        exit 0
        ;;
esac

flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
has() { [[ "$flags" == *" $1 "* ]]; }

paths=()
if has avx2 && has fma && has f16c; then
    if has avx512f && has avx512bw && has avx512vl; then
        vnni=false
        bf16=false
        has avx512_vnni && vnni=true
        has avx512_bf16 && bf16=true
        $vnni && $bf16 && paths+=("avx512+vnni+bf16")
        $vnni && paths+=("avx512+vnni")
        $bf16 && paths+=("avx512+bf16")
        paths+=("avx512")
    fi
    paths+=("avx2")
fi
paths+=("scalar")
(
    IFS=,
    echo "${paths[*]}"
)
