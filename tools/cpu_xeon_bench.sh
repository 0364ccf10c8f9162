#!/usr/bin/env bash
# Quantized CPU prefill on a Xeon with AMX (the lent GPU machine's 16-core
# host; Python 3.12, no network there): the AMX op tests, then pp128 / pp512
# side by side with llama.cpp (its AMX path on, GGML_NATIVE) at 4 and 16
# threads. One step per call, each within the device's 10-minute limit:
#
#   tools/cpu_xeon_bench.sh prepare   # HERE, on the dev machine: llama.cpp's source (pruned, ~10 MB) into
#                                     # .bench/llama.cpp.tar.gz and the gguf package into .devdeps/ (both git-ignored)
#   then on the device, with carry [".bench", ".devdeps"]:
#   tools/cpu_xeon_bench.sh build     # phicpp (build/xeon) + llama-bench, llama-quantize; CPU flags; AMX op tests
#   tools/cpu_xeon_bench.sh models    # Phi-3-mini random F16 -> Q4_0, Q4_K_M, Q8_0 in build/models (LAYERS=n: fewer layers)
#   tools/cpu_xeon_bench.sh bench     # pp128 and pp512 at 4 and 16 threads, engines alternated, ratios
#   tools/cpu_xeon_bench.sh decode    # tg32 of the quantized files (and pp128 of phi3-f16 if `models` kept it: KEEP_F16=1)
#   tools/cpu_xeon_bench.sh all       # build + models + bench in one call (likely past 10 minutes: prefer steps)
# Estimated on the 16-core host: build 2-4 min, models 3-6 min (full Phi-3-mini;
# LAYERS=8 for less), bench ~7 min for both thread counts (THREADS=4 or
# THREADS=16 runs one; ROUNDS=1 halves it).
#
# What "build" checks before anything is timed: available_isas() lists "amx"
# (cpuid AMX-TILE/INT8, XCR0 tile state, arch_prctl permission granted); if it
# does not, the bench still runs (the AVX-512 VNNI int8 GEMM) and says so.
# The AMX op tests are the int8 GEMM's cases of tests/test_gemm_i8.py,
# tests/test_matmul.py, tests/test_repack.py and tests/test_backend_ops.py
# parametrized with isa="amx" (against float64 numpy references, odd shapes,
# every weight type), plus the model-level logits test (int8 vs f32 GEMM).
set -euo pipefail
cd "$(dirname "$0")/.."
step=${1:-all}
shift || true
LLAMA_TGZ=.bench/llama.cpp.tar.gz
LLAMA_SRC=build/llama.cpp-src
LB=${LB:-build/llamacpp-xeon}
# LLAMA_BIN=dir: llama-bench and llama-quantize built elsewhere (for this CPU's
# flags: GGML_NATIVE=OFF with AVX512/VNNI/BF16 and AMX_TILE/INT8/BF16 on);
# PY_BUILD=dir: an importable phicpp (e.g. `python` with the extension that
# tools/device_build.sh leaves there). Either one skips that build.
LLAMA_BIN=${LLAMA_BIN:-$LB/bin}
# .llx/llama-bench.xz and .llx/llama-quantize.xz (git-ignored; carried): that pair built on
# the dev machine (`cmake -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=OFF` with AVX/AVX2/AVX-VNNI/
# FMA/F16C/BMI2 and AVX512/VBMI/VNNI/BF16 on, AMX off: its AMX build made by GCC 12 died on the
# device host, docs/BENCHMARKS.md), unpacked into LLAMA_BIN instead of building there
if [ "$LLAMA_BIN" = $LB/bin ] && [ -f .llx/llama-bench.xz ] && [ ! -x $LB/bin/llama-bench ]; then
  mkdir -p $LB/bin
  for t in llama-bench llama-quantize; do xz -dc .llx/$t.xz > $LB/bin/$t && chmod +x $LB/bin/$t; done
fi
MODELS=${MODELS:-build/models}
py=${PY_BUILD:-build/xeon/py}
[ -d .devdeps ] && pyp="$py:$PWD/.devdeps" || pyp=$py
ROUNDS=${ROUNDS:-2}
THREADS=${THREADS:-"4 16"}

prepare() {
  local src=${LLAMA_SOURCE:-/work/scratch/llsrv/llama_cpp_python-0.3.36/vendor/llama.cpp}
  mkdir -p .bench .devdeps
  # the CPU backend and the tools only: no docs, models, tests, GPU backends
  tar -C "$src" -czf $LLAMA_TGZ --exclude=./docs --exclude=./models --exclude=./media --exclude=./benches \
    --exclude=./tests --exclude=./examples --exclude=./tools/server/public --exclude=./.git --exclude=./build \
    --exclude='./ggml/src/ggml-cuda' --exclude='./ggml/src/ggml-vulkan' --exclude='./ggml/src/ggml-sycl' \
    --exclude='./ggml/src/ggml-opencl' --exclude='./ggml/src/ggml-hexagon' --exclude='./ggml/src/ggml-metal' \
    --exclude='./ggml/src/ggml-et' --exclude='./ggml/src/ggml-cann' --exclude='./ggml/src/ggml-musa' \
    --exclude='./ggml/src/ggml-webgpu' --exclude='./ggml/src/ggml-zdnn' .
  local gg
  gg=$(python3 -c 'import gguf, os; print(os.path.dirname(gguf.__file__))')
  rm -rf .devdeps/gguf && cp -r "$gg" .devdeps/
  ls -la $LLAMA_TGZ; du -sh .devdeps
}

build() {
  lscpu | grep -E "Model name|^CPU\(s\)|Thread|L2|L3" || true
  grep -o -w 'avx512f\|avx512_vnni\|avx512_bf16\|avx_vnni\|amx_tile\|amx_int8\|amx_bf16' /proc/cpuinfo | sort -u | tr '\n' ' '
  echo; uname -r
  [ "$py" = build/xeon/py ] && JOBS=$(nproc) tools/devbuild.sh xeon >/dev/null
  if [ "$LLAMA_BIN" = $LB/bin ] && [ ! -x $LB/bin/llama-bench ]; then
    if [ ! -d $LLAMA_SRC ]; then mkdir -p $LLAMA_SRC && tar -C $LLAMA_SRC -xzf $LLAMA_TGZ; fi
    source tools/llamacpp_gcc_flags.sh  # (its AMX path under GCC 12)
    cmake -S $LLAMA_SRC -B $LB -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_TESTS=OFF \
      -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
      -DGGML_NATIVE=ON "${LLAMA_GCC_FLAGS[@]}" >/dev/null
    echo "llama.cpp: gcc $(${CC:-gcc} -dumpversion), GGML_NATIVE=ON ${LLAMA_GCC_FLAGS[*]}"
    ninja -C $LB llama-bench llama-quantize | tail -1
  fi
  # the OS side of AMX on its own (ENOSPC: a thread's signal stack is too small for the tile state)
  python3 -c "import ctypes, os; libc = ctypes.CDLL(None, use_errno=True); r = libc.syscall(158, 0x1023, 18); \
print('arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA):', 'granted' if r == 0 else os.strerror(ctypes.get_errno()))"
  PYTHONPATH=$pyp python3 -c "from phicpp import _core as C; print('isas:', C.available_isas(), \
'auto:', C.Backend('cpu').variant)"
  PYTHONPATH=$pyp python3 -m pytest -q -p no:cacheprovider tests/test_gemm_i8.py tests/test_matmul.py \
    tests/test_repack.py tests/test_backend_ops.py -k "amx or model_logits or isas_offered" 2>&1 | tail -3
}

models() {
  mkdir -p $MODELS
  local f16=$MODELS/phi3-f16.gguf layers=()
  [ -n "${LAYERS:-}" ] && layers=(--layers "$LAYERS")
  [ -f $f16 ] || PYTHONPATH=$pyp python3 tools/mkrand_gguf.py phi3 tests/data/ggml-vocab-phi-3.gguf $f16 "${layers[@]}"
  for q in Q4_0 Q4_K_M Q8_0; do
    out=$MODELS/phi3-${q,,}.gguf
    [ -f "$out" ] || $LLAMA_BIN/llama-quantize $f16 "$out" $q "$(nproc)" >/dev/null 2>&1
  done
  [ -n "${KEEP_F16:-}" ] || rm -f $f16
  ls -la $MODELS
}

decode() {
  # tg32 (decode) of each file, and pp128 of the F16 one (kept by `KEEP_F16=1 ... models`), llama-bench and
  # `phicpp bench` alternated per file and thread count, -r 2 each; medians and phicpp / llama.cpp ratios
  PYTHONPATH=$pyp python3 - "$LLAMA_BIN/llama-bench" "$ROUNDS" "$THREADS" \
    ${FILES:-$(ls $MODELS/phi3-q4_0.gguf $MODELS/phi3-q4_k_m.gguf $MODELS/phi3-q8_0.gguf $MODELS/phi3-f16.gguf 2>/dev/null)} <<'EOF'
import json, os, statistics, subprocess, sys
lb, rounds, threads, files = sys.argv[1], int(sys.argv[2]), [int(t) for t in sys.argv[3].split()], sys.argv[4:]
def test(f):  # (llama-bench -p, -n) and the label
    return ("128", "0", "pp128") if "f16" in os.path.basename(f) else ("0", "32", "tg32")
def run(side, f, t):
    p, n, _ = test(f)
    cmd = ([lb, "-m", f] if side == "llama.cpp" else [sys.executable, "-m", "phicpp", "bench", "-m", f, "--device", "cpu"])
    out = subprocess.run(cmd + ["-t", str(t), "-p", p, "-n", n, "-r", "2", "-o", "json"], check=True,
                         capture_output=True, text=True).stdout
    return [float(x) for r in json.loads(out) for x in r["samples_ts"]]
print("| threads | file | test | llama.cpp | phicpp | ratio |")
print("|---|---|---|---|---|---|")
for t in threads:
    for f in files:
        acc = {"llama.cpp": [], "phicpp": []}
        for r in range(rounds):
            for side in (["llama.cpp", "phicpp"] if r % 2 == 0 else ["phicpp", "llama.cpp"]):
                try:
                    acc[side] += run(side, f, t)
                except subprocess.CalledProcessError as e:
                    print(f"  {side} {f} t={t} FAILED rc={e.returncode}: {e.stderr[-300:]}", flush=True)
        lm = statistics.median(acc["llama.cpp"]) if acc["llama.cpp"] else float("nan")
        qm = statistics.median(acc["phicpp"]) if acc["phicpp"] else float("nan")
        print(f"| {t} | {os.path.basename(f)} | {test(f)[2]} | {lm:.2f} | {qm:.2f} | **{qm / lm:.2f}** |", flush=True)
EOF
}

bench() {
  # llama-bench and `phicpp bench` alternated per file and thread count (order
  # swapped each round), -r 2 each; medians and phicpp / llama.cpp ratios
  # FILES: other GGUF files than the three of `models` (e.g. on the dev machine)
  PYTHONPATH=$pyp python3 - "$LLAMA_BIN/llama-bench" "$ROUNDS" "$THREADS" \
    ${FILES:-$MODELS/phi3-q4_0.gguf $MODELS/phi3-q4_k_m.gguf $MODELS/phi3-q8_0.gguf} <<'EOF'
import json, os, statistics, subprocess, sys, time
lb, rounds, threads, files = sys.argv[1], int(sys.argv[2]), [int(t) for t in sys.argv[3].split()], sys.argv[4:]
from phicpp import _core as C
print("isas:", C.available_isas(), "| auto:", C.Backend("cpu").variant, "| loadavg", os.getloadavg()[0])
def samples(out):
    return {t["n_prompt"]: [float(x) for x in t["samples_ts"]] for t in json.loads(out)}
def llama(f, t):
    out = subprocess.run([lb, "-m", f, "-t", str(t), "-p", "128,512", "-n", "0", "-r", "2", "-o", "json"],
                         check=True, capture_output=True, text=True).stdout
    return samples(out)
def phicpp(f, t):
    res = {}
    for p in (128, 512):
        out = subprocess.run([sys.executable, "-m", "phicpp", "bench", "-m", f, "-t", str(t), "-p", str(p),
                              "-n", "0", "-r", "2", "-o", "json", "--device", "cpu"],
                             check=True, capture_output=True, text=True).stdout
        res.update(samples(out))
    return res
rows = []
for t in threads:
    for f in files:
        acc = {"llama.cpp": {128: [], 512: []}, "phicpp": {128: [], 512: []}}
        for r in range(rounds):
            for side in (["llama.cpp", "phicpp"] if r % 2 == 0 else ["phicpp", "llama.cpp"]):
                t0 = time.time()
                try:
                    got = llama(f, t) if side == "llama.cpp" else phicpp(f, t)
                except subprocess.CalledProcessError as e:
                    print(f"  {side} {f} t={t} FAILED rc={e.returncode}: {e.stderr[-500:]}", flush=True)
                    continue
                for p in (128, 512):
                    acc[side][p] += got.get(p, [])
                print(f"  t={t} {os.path.basename(f)} {side}: pp128 {statistics.median(got[128]):.1f} "
                      f"pp512 {statistics.median(got[512]):.1f} ({time.time() - t0:.0f} s, load {os.getloadavg()[0]:.1f})",
                      flush=True)
        rows.append((t, os.path.basename(f), acc))
print()
print("| threads | file | llama.cpp pp128 | phicpp pp128 | ratio | llama.cpp pp512 | phicpp pp512 | ratio |")
print("|---|---|---|---|---|---|---|---|")
for t, f, acc in rows:
    cells = []
    for p in (128, 512):
        l, q = acc["llama.cpp"][p], acc["phicpp"][p]
        lm = statistics.median(l) if l else float("nan")
        qm = statistics.median(q) if q else float("nan")
        cells += [f"{lm:.1f}", f"{qm:.1f}", f"**{qm / lm:.2f}**"]
    print(f"| {t} | {f} | " + " | ".join(cells) + " |")
EOF
}

case "$step" in
prepare) prepare ;;
build) build ;;
models) models ;;
bench) bench ;;
decode) decode ;;
all) build; models; bench ;;
*) echo "unknown step $step (prepare, build, models, bench, decode, all)" >&2; exit 2 ;;
esac
