# Sourced by the scripts that build llama.cpp's CPU backend for a side-by-side
# run (tools/llamacpp.sh, cpu_xeon_bench.sh, avx512_bench.sh): sets the array
# LLAMA_GCC_FLAGS, CMake arguments to pass to its configure.
#
# GCC 12 drops the stores that fill ggml's AMX tile configuration (its
# _tile_loadconfig builtin does not say it reads that memory): on a CPU with
# AMX, ldtilecfg then loads stack garbage and llama.cpp's quantized prefill
# dies (SIGSEGV or SIGILL; docs/BENCHMARKS.md). Dead-store elimination off
# keeps them; GCC 13 and later compile it as written, and get nothing here.
LLAMA_GCC_FLAGS=()
if [ "$(${CC:-gcc} -dumpversion | cut -d. -f1)" -lt 13 ]; then
    LLAMA_GCC_FLAGS=(-DCMAKE_C_FLAGS="-fno-dse -fno-tree-dse" -DCMAKE_CXX_FLAGS="-fno-dse -fno-tree-dse")
fi
