# shellcheck shell=bash
# Sourced by test scripts: `ensure_package CMD PACKAGE` installs Debian's PACKAGE with
# apt-get when the command CMD is missing (as root; refreshing the package lists if the
# install fails from them), or stops with a message naming the package.
ensure_package() {
    command -v "$1" >/dev/null && return 0
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q "$2" >/dev/null 2>&1 ||
            { apt-get update -q >/dev/null && apt-get install -y -q "$2" >/dev/null; }
    fi
    command -v "$1" >/dev/null || { echo "$1 is not installed (apt-get install $2)" >&2; exit 1; }
}
