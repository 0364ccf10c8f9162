#!/usr/bin/env bash
# One device call: the extension (carried, or built here), the CUDA tests
# (every op-harness case on the GPU, model parity with transformers on the
# GPU, test_cuda.py) and a quick decode/prefill benchmark on a random-weight
# Phi-3-mini in F16 and Q4_0.
#
# Here (dev machine), once:
#   tools/device_build.sh /path/to/python3.12           # python/phicpp/_core.cpython-312-*.so
#   mkdir -p .bench/vocab .devdeps && cp ../shared/tools/mkrand_gguf.py .bench/ \
#     && cp ../shared/fixtures/vocab/ggml-vocab-{phi-3,gpt-2}.gguf .bench/vocab/ \
#     && cp -r "$(python3 -c 'import gguf,os;print(os.path.dirname(gguf.__file__))')" .devdeps/
# then on the device (carry python/phicpp/_core.cpython-312-x86_64-linux-gnu.so, .bench, .devdeps):
#   bash tools/gpu_check.sh [tests|bench|all]
# Logs land in $OUT; the last lines printed are the summary.
set -u
cd "$(dirname "$0")/.."
WHAT=${1:-all}
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
L=/tmp/gpu_logs  # every log; $OUT gets the summary and the few that explain it (the device tool returns 8 files)
mkdir -p $L
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
T0=$(date +%s)
log() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/summary.txt"; }

{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv
  python3 --version; nproc; git log --oneline -1 2>/dev/null
} > "$L/env.txt" 2>&1
cat "$L/env.txt" | tee "$OUT/summary.txt"
export PYTHONPATH=$PWD/python${PYTHONPATH:+:$PYTHONPATH}
[ -d .devdeps ] && export PYTHONPATH=$PYTHONPATH:$PWD/.devdeps

# ---- the extension
if ! python3 -c "import phicpp._core as C; assert C.cuda_available()" 2> "$L/import.log"; then
  log "carried extension does not import ($(tail -1 "$L/import.log")): building here"
  rm -f python/phicpp/_core*.so
  cmake -S . -B /tmp/phib -G Ninja -DCMAKE_BUILD_TYPE=Release -DPHICPP_CUDA=ON -DPHICPP_CUDA_ARCHS=90a \
    -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)" > "$L/build.log" 2>&1 \
    && ninja -C /tmp/phib -j16 _core >> "$L/build.log" 2>&1 && cp /tmp/phib/_core*.so python/phicpp/ \
    || { tail -40 "$L/build.log"; log "build failed"; exit 1; }
  log "built"
fi
python3 -c "import phicpp._core as C; b = C.Backend('cuda'); print('backend:', b.variant)" | tee -a "$OUT/summary.txt"

# ---- a random-weight Phi-3-mini for the benchmark, made while the tests run
M=/tmp/m
mkdir -p $M
if [ "$WHAT" != tests ] && [ ! -f $M/phi3-f16.gguf ]; then
  ( python3 .bench/mkrand_gguf.py phi3 .bench/vocab/ggml-vocab-phi-3.gguf $M/phi3-f16.gguf.tmp --dtype f16 \
      > "$L/mkrand.log" 2>&1 && mv $M/phi3-f16.gguf.tmp $M/phi3-f16.gguf ) &
  GEN=$!
fi

# ---- tests
if [ "$WHAT" != bench ]; then
  run_tests() {  # name, pytest args...
    local name=$1; shift
    timeout 420 python3 -m pytest -q -p no:cacheprovider -o addopts="" --tb=short "$@" > "$L/$name.log" 2>&1
    log "$name: $(grep -E '^[0-9]+ (passed|failed)|passed|failed|error' "$L/$name.log" | tail -1)"
    grep -E "^(FAILED|ERROR)" "$L/$name.log" | head -15 | tee -a "$OUT/summary.txt"
    { echo "===== $name"; grep -E "^E |^FAILED|Error|error" "$L/$name.log" | head -150; } >> "$OUT/tests.log"
  }
  run_tests ops tests/test_backend_ops.py -k cuda --maxfail=40
  # the F16 prefill GEMM double-buffered (PHICPP_CUDA_GEMM_STAGES=2; default 3 k-steps in flight)
  PHICPP_CUDA_GEMM_STAGES=2 run_tests ops-stages2 tests/test_backend_ops.py -k "cuda and (matmul or experts)" --maxfail=10
  # Q4_K's decode matmuls without the pipelined loads (PHICPP_CUDA_MV_PIPE=0: the kernel every other format runs)
  PHICPP_CUDA_MV_PIPE=0 run_tests ops-nopipe tests/test_backend_ops.py -k "cuda and (matmul or epilogues) and q4_K" --maxfail=10
  # every prefill matmul through cuBLASLt where the device has it (from 9 tokens: by default F16 from 9, quantized from 64)
  PHICPP_CUDA_LT_MIN_F16=9 PHICPP_CUDA_LT_MIN_QUANT=9 run_tests ops-lt tests/test_backend_ops.py \
    -k "cuda and matmul and not exact" --maxfail=10
  run_tests cuda tests/test_cuda.py --maxfail=20
  PHICPP_CUDA_LT_MIN_QUANT=9 run_tests cuda-lt tests/test_cuda.py -k "quantized_logits or greedy" --maxfail=10
  run_tests parity tests/test_model_parity.py tests/test_phimoe.py -k cuda --maxfail=40
  # attention of every batch of 2 tokens or more through flash attention (by default from 16)
  PHICPP_CUDA_FLASH_MIN=2 run_tests parity-flash tests/test_model_parity.py -k "cuda and f16" --maxfail=10
  PHICPP_CUDA_LT_MIN_F16=9 PHICPP_CUDA_LT_MIN_QUANT=9 run_tests parity-lt tests/test_model_parity.py -k cuda --maxfail=10
  run_tests batch tests/test_batch.py -k cuda --maxfail=10
  if [ "${DIAG:-0}" = 1 ]; then
    timeout 300 python3 tools/gpu_diag.py > "$OUT/diag.txt" 2> "$L/diag.err"
    log "diag: $(wc -l < "$OUT/diag.txt") lines"; grep -v "^$" "$OUT/diag.txt" | tail -20 >> "$OUT/summary.txt"
  fi
  if command -v compute-sanitizer > /dev/null && [ "${SANITIZE:-1}" = 1 ]; then
    timeout 240 compute-sanitizer --tool memcheck --print-limit 20 python3 -m pytest -q -p no:cacheprovider -o addopts="" \
      tests/test_backend_ops.py -k "cuda and (epilogues or test_attention or flash_attention_sharp or get_rows or model_sized or long or experts_skewed)" -x \
      > "$L/memcheck.log" 2>&1
    log "memcheck: $(grep -E 'ERROR SUMMARY|passed|failed' "$L/memcheck.log" | tail -2 | tr '\n' ' ')"
  fi
fi

# ---- quick benchmark: phicpp bench on the GPU, and where a decode step's time goes (ncu)
if [ "$WHAT" != tests ]; then
  [ -n "${GEN:-}" ] && wait $GEN
  if [ -f $M/phi3-f16.gguf ]; then
    for q in ${QUANTS:-Q4_0 Q8_0}; do
      f=$M/phi3-$(echo $q | tr A-Z a-z).gguf
      [ -f $f ] || python3 -m phicpp quantize $M/phi3-f16.gguf $f $q -t 16 > "$L/quant.log" 2>&1
    done
    log "files: $(ls -la $M | tail -n +2 | awk '{print $NF, $5}' | tr '\n' ' ')"
    for f in $(ls $M/*.gguf | xargs -n1 basename | sed 's/.gguf//'); do
      for cfg in ${CONFIGS:-default PHICPP_CUDA_PDL=0 PHICPP_CUDA_MV_CTAS=8}; do
        env $( [ $cfg = default ] || echo $cfg | tr , " " ) python3 -m phicpp bench -m $M/$f.gguf -ngl 99 \
          ${BENCH_ARGS:--p 512 -n 128} -r 3 > "$L/bench.log" 2>&1
        log "$f $cfg: $(grep -E '\| *(pp|tg)[0-9]+ ' "$L/bench.log" | awk -F'|' '{print $7 $8}' | tr -s ' ' | tr '\n' ';')"
      done
    done
    if command -v ncu > /dev/null && [ "${PROFILE:-}" != none ]; then
      for f in ${PROFILE:-phi3-q4_0 phi3-f16}; do
        wall=$(python3 tools/gpu_profile.py $M/$f.gguf ${PROFILE_ARGS:-} 2>&1 | tee -a "$OUT/summary.txt" | grep -o "wall [0-9.]*" | cut -d' ' -f2)
        timeout 240 ncu --clock-control none --profile-from-start off --metrics gpu__time_duration.sum --csv \
          python3 tools/gpu_profile.py $M/$f.gguf ${PROFILE_ARGS:-} --profile --steps 1 > "$L/ncu-$f.csv" 2> "$L/ncu.err"
        python3 tools/gpu_profile.py --summarize "$L/ncu-$f.csv" --steps 1 ${wall:+--wall-ms $wall} > "$OUT/profile-$f.txt" 2>&1
        log "profile $f:"; tail -14 "$OUT/profile-$f.txt" | tee -a "$OUT/summary.txt"
      done
    fi
  else
    log "no model file: $(tail -3 "$L/mkrand.log")"
  fi
fi
log "done"
