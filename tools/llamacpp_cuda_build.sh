#!/usr/bin/env bash
# Build llama.cpp's llama-bench with CUDA (sm_90a) here, where there is no GPU,
# to carry to the device instead of spending device minutes compiling it:
#   tools/llamacpp_cuda_build.sh SCRATCH      -> SCRATCH/llama-bench.xz.aa, .ab (two ~21 MB parts)
# SCRATCH/llama.cpp must hold the source (../shared/tools/prep_llamacpp_bench.sh SCRATCH lays it out:
# llama.cpp 0c1e57098 from the llama-cpp-python 0.3.36 sdist). cuBLAS headers and libraries come
# from PyPI's nvidia-cublas wheel (link time only; the device's cuBLAS 13 is used at run time); the
# driver library is a stub with the symbols ggml-cuda takes from it (the real libcuda.so.1 loads at
# run time). ggml is linked statically. On two cores the build takes about an hour.
# The parts must travel in two device calls of one warm machine (the limit on what a call carries is
# 64 MiB): the first copies part .aa to /tmp, the second joins them (see tools/gpu_bench.sh).
set -euo pipefail
S=$(cd "${1:?usage: tools/llamacpp_cuda_build.sh SCRATCH}" && pwd)
[ -d "$S/llama.cpp" ] || { echo "no $S/llama.cpp: run ../shared/tools/prep_llamacpp_bench.sh $S" >&2; exit 1; }
mkdir -p "$S/cublas" "$S/stub"
if [ ! -f "$S/cublas/nvidia/cu13/lib/libcublas.so" ]; then
  (cd "$S/cublas" && pip download -q --no-deps --only-binary=:all: nvidia-cublas && unzip -q -o nvidia_cublas-*.whl)
  (cd "$S/cublas/nvidia/cu13/lib" && ln -sf libcublas.so.13 libcublas.so && ln -sf libcublasLt.so.13 libcublasLt.so)
fi
CB=$S/cublas/nvidia/cu13
# a first stub without symbols lets cmake configure; the real one is made from what ggml-cuda needs
[ -f "$S/stub/libcuda.so" ] || { echo "void phicpp_stub(void){}" > "$S/stub/stub.c";
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 "$S/stub/stub.c" -o "$S/stub/libcuda.so"; }
cmake -S "$S/llama.cpp" -B "$S/build" -G Ninja -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a -DLLAMA_CURL=OFF \
  -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF \
  -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=OFF -DLLAMA_BUILD_COMMIT=0c1e57098 \
  -DCUDA_cuda_driver_LIBRARY="$S/stub/libcuda.so" -DCUDA_cublas_LIBRARY="$CB/lib/libcublas.so" \
  -DCUDA_cublasLt_LIBRARY="$CB/lib/libcublasLt.so" -DCMAKE_CUDA_FLAGS="-I$CB/include" -DCMAKE_CXX_FLAGS="-I$CB/include" \
  -DCMAKE_EXE_LINKER_FLAGS="-static-libstdc++ -static-libgcc" > "$S/cmake.log"
ninja -C "$S/build" -j"${JOBS:-2}" ggml-cuda > "$S/build.log"
nm -u "$S/build/ggml/src/ggml-cuda/libggml-cuda.a" 2>/dev/null | grep -o " cu[A-Z][A-Za-z0-9_]*" | sort -u \
  | while read -r s; do echo "void $s(void){}"; done > "$S/stub/stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 "$S/stub/stub.c" -o "$S/stub/libcuda.so"
ninja -C "$S/build" -j"${JOBS:-2}" llama-bench >> "$S/build.log"
cp "$S/build/bin/llama-bench" "$S/llama-bench" && strip "$S/llama-bench"
xz -T2 -6 -f -k "$S/llama-bench"
split -b 21000000 "$S/llama-bench.xz" "$S/llama-bench.xz."
ls -la "$S"/llama-bench.xz.*
