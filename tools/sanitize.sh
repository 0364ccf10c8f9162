#!/usr/bin/env bash
# The test suite against an AddressSanitizer + UndefinedBehaviorSanitizer build
# of the extension (CPU backend; gcc's runtimes; float-cast-overflow too, which
# gcc leaves out of "undefined": a NaN cast to an integer is what the fuzzers
# found). Any sanitizer report fails the run, whatever the tests say.
#   tools/sanitize.sh [pytest args...]      (default: tests/)
# Needs cmake, ninja and pybind11 for the Python that runs it (PYTHON, default python3);
# builds into build/asan with tools/devbuild.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
pkg=$(JOBS=${JOBS:-$(nproc)} tools/devbuild.sh asan -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  "-DCMAKE_CXX_FLAGS=-fsanitize=address,undefined,float-cast-overflow -fno-omit-frame-pointer" \
  "-DCMAKE_SHARED_LINKER_FLAGS=-fsanitize=address,undefined,float-cast-overflow" \
  -Dpybind11_DIR="$("$py" -m pybind11 --cmakedir)" -DPython_EXECUTABLE="$(command -v "$py")")

logs=$(mktemp -d)
# libstdc++ goes in with the runtimes: loaded later (by the extension), its
# __cxa_throw escapes ASan's interceptor and the first C++ exception aborts
pre="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so) $(gcc -print-file-name=libubsan.so)"
set +e
# (Python itself leaks by design: leak checking off; every process the tests start inherits this)
LD_PRELOAD="$pre" ASAN_OPTIONS="detect_leaks=0:log_path=$logs/asan" \
  UBSAN_OPTIONS="print_stacktrace=1:log_path=$logs/ubsan" PYTHONPATH="$pkg" \
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
