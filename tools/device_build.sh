#!/usr/bin/env bash
# Build the extension for the device machine's Python (3.12) here, where nvcc
# and the compilers are, so a device call spends no time compiling:
#   tools/device_build.sh /path/to/python3.12   -> python/phicpp/_core.cpython-312-*.so (git-ignored)
# Carry that file with the call (device `carry`). It needs glibc 2.34 and
# libstdc++ GLIBCXX_3.4.30 (GCC 12) there; the CUDA runtime is linked
# statically. tools/gpu_check.sh builds on the device when the carried file
# does not import there.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:?usage: tools/device_build.sh PYTHON3.12}
bdir=build/device
if [ ! -f "$bdir/build.ninja" ]; then
  cmake -S . -B "$bdir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPHICPP_CUDA=ON -DPHICPP_CUDA_ARCHS="${PHICPP_CUDA_ARCHS:-90a}" \
    -DPython_EXECUTABLE="$py" -Dpybind11_DIR="$("$py" -m pybind11 --cmakedir)" >/dev/null
fi
ninja -j"${JOBS:-2}" -C "$bdir" _core > "$bdir/ninja.log" || { tail -30 "$bdir/ninja.log"; exit 1; }
cp -f "$bdir"/_core*.so python/phicpp/
ls python/phicpp/_core*.so
