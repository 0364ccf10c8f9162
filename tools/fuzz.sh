#!/usr/bin/env bash
# Runs one libFuzzer target under ASan + UBSan for a given time:
#   tools/fuzz.sh TARGET SECONDS [LIBFUZZER_ARG...]     TARGET: gguf | model | tokenizer
# Builds build/fuzz with clang (-DPHICPP_FUZZ=ON; needs clang, cmake, ninja and
# pybind11 for PYTHON), nice'd, JOBS=2. The corpus grows in build/fuzz/corpus/TARGET,
# seeded from tools/fuzz_seeds/TARGET; a crash, leak, timeout (10 s) or an
# allocation over the limits below is written to build/fuzz/crashes/TARGET-* and
# fails the run. The inputs and time are in libFuzzer's final stats.
# Limits: inputs of at most 64 KiB (-max_len), no single allocation over
# 64 MiB (-malloc_limit_mb), RSS at most 1 GiB.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: tools/fuzz.sh gguf|model|tokenizer SECONDS [LIBFUZZER_ARG...]}
seconds=${2:?usage: tools/fuzz.sh TARGET SECONDS}
shift 2
py=${PYTHON:-python3}
b=build/fuzz
if [ ! -f "$b/build.ninja" ]; then
  CC=clang CXX=clang++ cmake -S . -B "$b" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPHICPP_CUDA=OFF \
    -DPHICPP_FUZZ=ON "-DCMAKE_CXX_FLAGS=-fsanitize=fuzzer-no-link,address,undefined \
-fno-sanitize-recover=all -fno-omit-frame-pointer" \
    -Dpybind11_DIR="$("$py" -m pybind11 --cmakedir)" -DPython_EXECUTABLE="$(command -v "$py")" > /dev/null
fi
log=$(nice -n 19 ninja -j"${JOBS:-2}" -C "$b" "fuzz_$target" 2>&1) || { echo "$log" >&2; exit 1; }
if [ "$target" = tokenizer ] && [ ! -f "$b/vocabs/bpe-o200k.gguf" ]; then
  "$py" tools/make_fuzz_seeds.py vocabs "$b/vocabs"
fi
mkdir -p "$b/corpus/$target" "$b/crashes"
PHICPP_FUZZ_VOCABS="$b/vocabs" nice -n 19 "$b/fuzz_$target" -max_total_time="$seconds" -timeout=10 \
  -max_len=65536 -malloc_limit_mb=64 -rss_limit_mb=1024 -print_final_stats=1 \
  -artifact_prefix="$b/crashes/$target-" "$@" "$b/corpus/$target" "tools/fuzz_seeds/$target"
