#!/usr/bin/env bash
# Build llama.cpp's CPU tools in a scratch directory, as the side-by-side
# reference for phicpp (speed, logits parity, quantization).
#
# llama.cpp is NEVER a dependency of phicpp and none of its code enters this
# repo: we fetch it the sanctioned way (the llama-cpp-python sdist from PyPI,
# which vendors llama.cpp under vendor/llama.cpp) and build it outside the repo.
#
# usage: tools/llamacpp.sh SCRATCH_DIR [JOBS]
#   SCRATCH_DIR  e.g. /work/scratch; gets dl/, src/, and the build in
#                src/llama_cpp_python-$VER/vendor/llama.cpp/build
#   JOBS         parallel compile jobs (default 2; the dev machine has 2 cores)
# env: LLAMACPP_PY_VERSION (default 0.3.36, which vendors ggml-org/llama.cpp@0c1e57098)
#
# Binaries end up in $SCRATCH_DIR/bin (symlinks): llama-bench, llama-completion,
# llama-simple, llama-perplexity, llama-quantize, llama-tokenize,
# llama-eval-callback, and llamacpp-logits (our tools/llamacpp_logits.cpp,
# compiled against their libllama) when that file exists.
set -euo pipefail

SCRATCH=${1:?usage: tools/llamacpp.sh SCRATCH_DIR [JOBS]}
JOBS=${2:-2}
VER=${LLAMACPP_PY_VERSION:-0.3.36}
REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$SCRATCH"/dl "$SCRATCH"/src "$SCRATCH"/bin
SCRATCH=$(cd "$SCRATCH" && pwd)

SDIST="$SCRATCH/dl/llama_cpp_python-$VER.tar.gz"
# 1. download. --no-build-isolation: otherwise pip builds the sdist's build
# requirements (scikit-build-core, and cmake FROM SOURCE because of
# --no-binary :all:) just to read metadata, which takes tens of minutes here.
if [ ! -f "$SDIST" ]; then
    python -m pip download --no-deps --no-binary :all: --no-build-isolation \
        "llama-cpp-python==$VER" -d "$SCRATCH/dl"
fi
gzip -t "$SDIST"

# 2. unpack
SRC="$SCRATCH/src/llama_cpp_python-$VER/vendor/llama.cpp"
if [ ! -d "$SRC" ]; then
    tar -xzf "$SDIST" -C "$SCRATCH/src"
fi
# The sdist has no .git; take the commit from the sdist's changelog so
# llama-bench reports it (build_commit) instead of "unknown".
COMMIT=$(sed -n "/^## \[$VER\]/,/^## \[/p" "$SCRATCH/src/llama_cpp_python-$VER/CHANGELOG.md" \
         | grep -o 'llama.cpp@[0-9a-f]*' | head -1 | cut -d@ -f2)
COMMIT=${COMMIT:-unknown}
echo "llama-cpp-python $VER vendors llama.cpp@$COMMIT"

# 3. configure: CPU only, native ISA (the reference on the machine we run on),
# Release. Server/UI/tests/openssl off: not needed and slow to build.
BUILD="$SRC/build"
source "$REPO_ROOT/tools/llamacpp_gcc_flags.sh"  # (its AMX path under GCC 12)
cmake -S "$SRC" -B "$BUILD" "${LLAMA_GCC_FLAGS[@]}" \
    -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=ON -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF \
    -DBUILD_SHARED_LIBS=ON \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_BUILD_UI=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_COMMIT="$COMMIT" -DLLAMA_BUILD_NUMBER=0

# 4. build only the tools we use.
TARGETS=(llama-bench llama-completion llama-simple llama-perplexity
         llama-quantize llama-tokenize llama-eval-callback)
nice -n 10 cmake --build "$BUILD" -j "$JOBS" --target "${TARGETS[@]}"
for t in "${TARGETS[@]}"; do
    ln -sf "$BUILD/bin/$t" "$SCRATCH/bin/$t"
done

# 5. our own logits dumper (our code, their library), if present.
LOGITS_SRC="$REPO_ROOT/tools/llamacpp_logits.cpp"
if [ -f "$LOGITS_SRC" ]; then
    nice -n 10 g++ -O2 -std=c++17 "$LOGITS_SRC" \
        -I"$SRC/include" -I"$SRC/ggml/include" \
        -L"$BUILD/bin" -lllama -lggml -lggml-base \
        -Wl,-rpath,"$BUILD/bin" \
        -o "$SCRATCH/bin/llamacpp-logits"
fi
ls -l "$SCRATCH/bin"
