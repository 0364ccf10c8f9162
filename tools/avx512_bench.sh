#!/usr/bin/env bash
# CPU speed side by side with llama.cpp on a host with AVX-512 (the device
# machine's CPU; the dev machine has none), 2 threads pinned to 2 cores, as the
# issue-5 benchmark does on the dev machine. One step per call, so each fits
# the device's 10-minute limit:
#   tools/avx512_bench.sh build    # phicpp (build/avx512) + llama-bench, llama-quantize; kernel tests
#   tools/avx512_bench.sh models   # full-size random Phi-3-mini F16, Q8_0, Q4_0 in build/models
#   tools/avx512_bench.sh bench [bench_vs_llamacpp.py args...]
# Inputs that are not in the repository (nothing is downloaded there):
#   LLAMA_SRC  llama.cpp source tree (default .bench/llama.cpp: the one vendored
#              by `pip download --no-deps --no-binary :all: llama-cpp-python`)
#   SHARED     the shared folder with tools/mkrand_gguf.py and fixtures/vocab
#              (default ../shared, else .bench/shared)
#   .devdeps   a copy of the `gguf` package when the host has none (see avx512_check.sh)
#   LLAMA_CPU_FLAGS  llama.cpp's CPU flags (default -DGGML_NATIVE=ON). On a host with AMX,
#              "$AVX512_NO_AMX" builds the AVX-512 VNNI/BF16 kernels an AMD Zen 4/5 would run.
set -euo pipefail
cd "$(dirname "$0")/.."
step=${1:-build}
shift || true
LLAMA_SRC=${LLAMA_SRC:-.bench/llama.cpp}
SHARED=${SHARED:-$( [ -d ../shared ] && echo ../shared || echo .bench/shared )}
LB=build/llamacpp
MODELS=build/models
CORES=${CORES:-2,3}
py=build/avx512/py
AVX512_NO_AMX="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON \
  -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF"
[ "${LLAMA_CPU_FLAGS:-}" = no-amx ] && LLAMA_CPU_FLAGS=$AVX512_NO_AMX
[ -d .devdeps ] && pyp="$py:$PWD/.devdeps" || pyp=$py

case "$step" in
build)
  lscpu | grep -E "Model name|^CPU\(s\)|L2|L3" || true
  grep -o -w 'avx512f\|avx512_vnni\|avx512_bf16\|amx_int8' /proc/cpuinfo | sort -u | tr '\n' ' '; echo
  JOBS=$(nproc) tools/devbuild.sh avx512 >/dev/null
  source tools/llamacpp_gcc_flags.sh  # (its AMX path under GCC 12)
  cmake -S "$LLAMA_SRC" -B $LB -G Ninja -DCMAKE_BUILD_TYPE=Release "${LLAMA_GCC_FLAGS[@]}" -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_CURL=OFF \
    -DLLAMA_OPENSSL=OFF ${LLAMA_CPU_FLAGS:--DGGML_NATIVE=ON} >/dev/null
  ninja -C $LB llama-bench llama-quantize | tail -1
  PYTHONPATH=$pyp python3 -c "from phicpp import _core as C; print('isas:', C.available_isas())"
  PYTHONPATH=$pyp python3 -m pytest -q -p no:cacheprovider tests/test_matmul.py tests/test_repack.py 2>&1 | tail -2
  ;;
models)
  mkdir -p $MODELS
  f16=$MODELS/phi3-f16.gguf
  [ -f $f16 ] || PYTHONPATH=$pyp python3 "$SHARED/tools/mkrand_gguf.py" phi3 "$SHARED/fixtures/vocab/ggml-vocab-phi-3.gguf" $f16
  for q in Q8_0 Q4_0; do
    out=$MODELS/phi3-${q,,}.gguf
    [ -f "$out" ] || $LB/bin/llama-quantize $f16 "$out" $q "$(nproc)" >/dev/null 2>&1
  done
  ls -la $MODELS
  ;;
bench)
  # both sides and their threads on the same two cores
  PHICPP_SCRATCH=$PWD/build/scratch PYTHONPATH=$pyp taskset -c "$CORES" python3 tools/bench_vs_llamacpp.py \
    --llama-bench $LB/bin/llama-bench "$@"
  ;;
*) echo "unknown step $step" >&2; exit 2 ;;
esac
