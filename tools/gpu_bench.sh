#!/usr/bin/env bash
# Issue 13's side-by-side benchmark, in one device call: phicpp against
# llama.cpp (0c1e57098, the copy in llama-cpp-python 0.3.36, CUDA, sm_90a) on
# the eight random-weight files (Phi-3-mini and Phi-2: F16, Q8_0, Q4_K_M,
# Q4_0; FILES may add phimoe-q4_k_m, phimoe-q8_0: Phi-3.5-MoE's width, MOE_LAYERS
# layers), `phicpp bench -ngl 99` and `llama-bench -ngl 99 -fa 1` alternately
# per file, pp512 (PP: more prompt lengths) and tg128, ROUNDS rounds; then where a decode step's time
# goes (Nsight Compute) on two files.
#
# On the device (repo root), carrying the extension, .bench (mkrand_gguf.py,
# vocab/) and .devdeps (gguf) as tools/gpu_check.sh describes, and either
#   LLAMA_BENCH=/path/to/llama-bench   a prebuilt one (libcublas, libcudart found on the machine), or
#   LLAMA_SRC=.bench/llama.cpp         its source (../shared/tools/prep_llamacpp_bench.sh lays it out), built here:
#   bash tools/gpu_bench.sh
# The 2026-12-01 and 2026-12-03 runs used a llama-bench built on the dev machine by
# tools/llamacpp_cuda_build.sh (41 MB compressed, carried in two calls of one
# warm machine, the repository's own 26 MB counting against the 64 MiB: the
# first call, with the extension and `tools/gpu_check.sh tests`, copied part
# .aa to /tmp and started `gpu_bench.sh prep` under setsid; the second carried
# part .ab, then (a call that named only that part found no usable .devdeps)
# .devdeps with the extension again); the LLAMA_SRC path follows ../shared/tools/llamacpp_cuda_bench.sh
# and has not been run.
# The files are made with `phicpp quantize`, whose output is byte-identical to
# llama-quantize's for these mixes (tests/test_llamacpp_quant.py). Results:
# $OUT/bench.md (table), $OUT/bench.json (every sample), $OUT/profile-*.txt.
# `bash tools/gpu_bench.sh prep` only makes the files (e.g. started with setsid
# in an earlier call of the same warm machine, while it runs tests).
set -u
cd "$(dirname "$0")/.."
WHAT=${1:-all}
OUT=${OUT:-/tmp/gpu_bench}
ROUNDS=${ROUNDS:-2}
PP=${PP:-512}  # prompt lengths, comma-separated (e.g. 512,4096)
FILES=${FILES:-phi3-f16 phi3-q8_0 phi3-q4_k_m phi3-q4_0 phi2-f16 phi2-q8_0 phi2-q4_k_m phi2-q4_0}
want() { case " $FILES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
M=${MODELS:-/tmp/m}
L=/tmp/gpu_logs
mkdir -p "$OUT" "$M" "$L"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH=$PWD/python${PYTHONPATH:+:$PYTHONPATH}
[ -d .devdeps ] && export PYTHONPATH=$PYTHONPATH:$PWD/.devdeps
T0=$(date +%s)
log() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/bench-log.txt"; }
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv,noheader
  git log --oneline -1 2>/dev/null; date -u; } | tee "$OUT/bench-log.txt"

# ---- phicpp
if ! python3 -c "import phicpp._core as C; assert C.cuda_available()" 2> "$L/import.log"; then
  log "building phicpp"
  rm -f python/phicpp/_core*.so
  cmake -S . -B /tmp/phib -G Ninja -DCMAKE_BUILD_TYPE=Release -DPHICPP_CUDA=ON -DPHICPP_CUDA_ARCHS=90a \
    -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)" > "$L/build.log" 2>&1 \
    && ninja -C /tmp/phib -j"$(nproc)" _core >> "$L/build.log" 2>&1 && cp /tmp/phib/_core*.so python/phicpp/ \
    || { tail -30 "$L/build.log"; exit 1; }
fi

# ---- models, made while llama.cpp builds (after any earlier call's prep has finished)
while pgrep -f "mkrand_gguf|phicpp quantize" > /dev/null && [ "$WHAT" != prep ]; do sleep 2; done
gen() {  # name vocab [mkrand_gguf.py options]: $M/name-f16.gguf
  local name=$1 vocab=$2
  shift 2
  [ -f $M/$name-f16.gguf ] || { python3 tools/mkrand_gguf.py "${SHAPE:-$name}" .bench/vocab/$vocab $M/$name-f16.tmp \
    --dtype f16 "$@" > "$L/gen-$name.log" 2>&1 && mv $M/$name-f16.tmp $M/$name-f16.gguf; }
}
G1=; G2=; G3=
case " $FILES" in *" phi3-"*) gen phi3 ggml-vocab-phi-3.gguf & G1=$! ;; esac
case " $FILES" in *" phi2-"*) gen phi2 ggml-vocab-gpt-2.gguf & G2=$! ;; esac
# Phi-3.5-MoE at full width, MOE_LAYERS (2) of its 32 layers: ~5.7 GB in F16
case " $FILES" in *" phimoe-"*) SHAPE=phimoe gen phimoe ggml-vocab-phi-3.gguf --layers "${MOE_LAYERS:-2}" & G3=$! ;; esac

prepare() {
  wait $G1 $G2 $G3 2>/dev/null
  for a in phi3 phi2 phimoe; do
    want $a-f16 || want $a-q8_0 || want $a-q4_k_m || want $a-q4_0 || continue
    [ -f $M/$a-f16.gguf ] || { log "no $a-f16.gguf: $(tail -2 "$L/gen-$a.log")"; continue; }
    for q in Q8_0 Q4_K_M Q4_0; do
      want $a-$(echo $q | tr A-Z a-z) || continue
      f=$M/$a-$(echo $q | tr A-Z a-z).gguf
      [ -f $f ] || { python3 -m phicpp quantize $M/$a-f16.gguf $f.tmp $q -t "$(nproc)" > "$L/quant.log" 2>&1 \
        && mv $f.tmp $f; } || log "quantize $a $q failed: $(tail -2 "$L/quant.log")"
    done
  done
  log "files ready: $(ls $M/*.gguf | xargs -n1 basename | tr '\n' ' ')"
}
if [ "$WHAT" = prep ]; then prepare; exit 0; fi

# ---- llama.cpp
LB=${LLAMA_BENCH:-}
if [ -z "$LB" ] && [ -n "${LLAMA_SRC:-}" ]; then
  log "building llama.cpp"
  # cuBLAS and the driver library where the image keeps them, when the toolkit has no copy
  hints=()
  if ! ls /usr/local/cuda/lib64/libcublas.so > /dev/null 2>&1; then
    cb=$(find /usr /opt $(python3 -c 'import site; print(" ".join(site.getsitepackages()))') -name 'libcublas.so*' 2>/dev/null | head -1)
    inc=$(find /usr /opt $(python3 -c 'import site; print(" ".join(site.getsitepackages()))') -name cublas_v2.h 2>/dev/null | head -1)
    [ -n "$cb" ] && hints+=(-DCUDA_cublas_LIBRARY=$cb -DCUDA_cublasLt_LIBRARY=$(ls $(dirname $cb)/libcublasLt.so* | head -1)
      -DCMAKE_CUDA_FLAGS=-I$(dirname $inc) -DCMAKE_CXX_FLAGS=-I$(dirname $inc))
  fi
  drv=$(find /usr/local/nvidia /usr/lib /usr/lib64 /usr/local -name 'libcuda.so.1' 2>/dev/null | head -1)
  [ -n "$drv" ] && hints+=(-DCUDA_cuda_driver_LIBRARY=$drv)
  cmake -S "$LLAMA_SRC" -B /tmp/llb -G Ninja -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a -DLLAMA_CURL=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF \
    -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_COMMIT=0c1e57098 "${hints[@]}" > "$L/llama-cmake.log" 2>&1 \
    && ninja -C /tmp/llb -j"$(nproc)" llama-bench > "$L/llama-build.log" 2>&1 && LB=/tmp/llb/bin/llama-bench \
    || { tail -20 "$L/llama-cmake.log" "$L/llama-build.log"; log "llama.cpp build failed"; }
fi
if [ -n "$LB" ]; then  # its CUDA libraries: wherever the machine keeps them
  roots="/usr/local /usr/lib /opt $(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null)"
  for lib in libcublas.so.13 libcublasLt.so.13 libcudart.so.13 libgomp.so.1; do
    d=$(dirname "$(find $roots -name $lib 2>/dev/null | head -1)" 2>/dev/null)
    [ -n "$d" ] && [ "$d" != . ] && export LD_LIBRARY_PATH=$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  done
  "$LB" --help > /dev/null 2> "$L/llama-bench.err" || { log "llama-bench does not run: $(tail -2 "$L/llama-bench.err")"; LB=; }
fi

prepare

# ---- side by side, alternating
: > "$OUT/bench.jsonl"
for r in $(seq 1 "$ROUNDS"); do
  for a in phi3 phi2 phimoe; do for q in f16 q8_0 q4_k_m q4_0; do
    f=$M/$a-$q.gguf; [ -f $f ] && want $a-$q || continue
    python3 -m phicpp bench -m $f -ngl 99 -p "$PP" -n 128 -r 3 -o json 2> "$L/phicpp-bench.err" \
      | python3 -c "import json,sys; [print(json.dumps(dict(x, engine='phicpp', file='$a-$q', round=$r))) for x in json.load(sys.stdin)]" \
      >> "$OUT/bench.jsonl" || log "phicpp bench $a-$q failed: $(tail -2 "$L/phicpp-bench.err")"
    if [ -n "$LB" ]; then
      "$LB" -m $f -ngl 99 -fa 1 -p "$PP" -n 128 -r 3 -o json 2> "$L/llama-bench.err" \
        | python3 -c "import json,sys; [print(json.dumps(dict(x, engine='llama.cpp', file='$a-$q', round=$r))) for x in json.load(sys.stdin)]" \
        >> "$OUT/bench.jsonl" || log "llama-bench $a-$q failed: $(tail -2 "$L/llama-bench.err")"
    fi
    log "round $r $a-$q"
  done; done
done
python3 tools/bench_table.py "$OUT/bench.jsonl" --sizes $M > "$OUT/bench.md"
cat "$OUT/bench.md"

# ---- where a decode step goes
if command -v ncu > /dev/null && [ "${PROFILE:-1}" = 1 ]; then
  for f in phi3-q4_0 phi3-f16; do
    [ -f $M/$f.gguf ] || continue
    wall=$(python3 tools/gpu_profile.py $M/$f.gguf 2>&1 | grep -o "wall [0-9.]*" | cut -d' ' -f2)
    timeout 240 ncu --clock-control none --profile-from-start off --metrics gpu__time_duration.sum --csv \
      python3 tools/gpu_profile.py $M/$f.gguf --profile --steps 1 > "$L/ncu-$f.csv" 2> "$L/ncu.err"
    python3 tools/gpu_profile.py --summarize "$L/ncu-$f.csv" --steps 1 ${wall:+--wall-ms $wall} > "$OUT/profile-$f.txt"
    cat "$OUT/profile-$f.txt"
  done
  if [ "${DETAIL:-0}" = 1 ]; then  # the matvec kernels up close: bandwidth, occupancy, stalls
    for f in phi3-f16 phi3-q4_0; do
      [ -f $M/$f.gguf ] || continue
      timeout 120 ncu --clock-control none --profile-from-start off -k regex:matvec --launch-count 4 \
        --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section WarpStateStats \
        --section LaunchStats python3 tools/gpu_profile.py $M/$f.gguf --profile --steps 1 > "$L/detail-$f.txt" 2>&1
      grep -E "matvec|Duration|Memory Throughput|DRAM Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Block Limit|Stall|Warp Cycles Per Issued|Grid Size|Waves Per SM|Dynamic Shared" \
        "$L/detail-$f.txt" | head -80 > "$OUT/detail-$f.txt"
    done
  fi
fi
log "done"
