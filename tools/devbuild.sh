#!/usr/bin/env bash
# Incremental developer build without pip: tools/devbuild.sh [NAME [CMAKE_ARG...]]
# Builds into build/NAME (default "dev") and lays out an importable package in
# build/NAME/py (symlinks to python/phicpp plus the fresh _core), so several
# developers can build side by side:  PYTHONPATH=build/NAME/py pytest tests/...
# CMAKE_ARGs (e.g. compiler flags) go to the first configure of build/NAME.
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:-dev}
shift $(( $# > 0 ? 1 : 0 ))
bdir=build/$name
if [ ! -f "$bdir/build.ninja" ]; then
  cmake -S . -B "$bdir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPHICPP_CUDA=${PHICPP_CUDA:-OFF} \
    -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)" "$@" >/dev/null
fi
log=$(ninja -j"${JOBS:-2}" -C "$bdir" _core 2>&1) || { echo "$log" >&2; exit 1; }
pkg="$bdir/py/phicpp"
mkdir -p "$pkg"
# mirror the Python sources (new files appear, removed ones vanish)
find "$pkg" -maxdepth 1 -type l -delete
for f in python/phicpp/*; do
  case "$f" in *_core*.so) continue ;; esac
  ln -sf "$PWD/$f" "$pkg/"
done
cp -f "$bdir"/_core*.so "$pkg/"
echo "$bdir/py"
