#!/usr/bin/env bash
# The test suite against an AddressSanitizer + UndefinedBehaviorSanitizer build
# of the extension (CPU backend; gcc's runtimes). Any sanitizer report fails the
# run, whatever the tests say.
#   tools/sanitize.sh [pytest args...]      (default: tests/)
# Needs cmake, ninja and pybind11 for the Python that runs it (PYTHON, default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
b=build/asan
if [ ! -f "$b/build.ninja" ]; then
  cmake -S . -B "$b" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPHICPP_CUDA=OFF \
    "-DCMAKE_CXX_FLAGS=-fsanitize=address,undefined -fno-omit-frame-pointer" \
    "-DCMAKE_SHARED_LINKER_FLAGS=-fsanitize=address,undefined" \
    -Dpybind11_DIR="$("$py" -m pybind11 --cmakedir)" -DPython_EXECUTABLE="$(command -v "$py")" >/dev/null
fi
ninja -j"${JOBS:-$(nproc)}" -C "$b" _core >/dev/null
pkg=$b/py/phicpp
mkdir -p "$pkg"
find "$pkg" -maxdepth 1 -type l -delete
for f in python/phicpp/*; do
  case "$f" in *_core*.so) continue ;; esac
  ln -sf "$PWD/$f" "$pkg/"
done
cp -f "$b"/_core*.so "$pkg/"

logs=$(mktemp -d)
# libstdc++ goes in with the runtimes: loaded later (by the extension), its
# __cxa_throw escapes ASan's interceptor and the first C++ exception aborts
pre="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so) $(gcc -print-file-name=libubsan.so)"
set +e
# (Python itself leaks by design: leak checking off; every process the tests start inherits this)
LD_PRELOAD="$pre" ASAN_OPTIONS="detect_leaks=0:log_path=$logs/asan" \
  UBSAN_OPTIONS="print_stacktrace=1:log_path=$logs/ubsan" PYTHONPATH="$b/py" \
  "$py" -m pytest -q -p no:cacheprovider "${@:-tests}"
rc=$?
set -e
if ls "$logs"/* > /dev/null 2>&1; then
  echo "sanitizer reports:"
  head -60 "$logs"/*
  exit 1
fi
echo "sanitizers: no report"
exit $rc
