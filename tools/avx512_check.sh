#!/usr/bin/env bash
# Kernel tests on a machine with AVX-512 (the dev machine has none): builds
# the extension in build/avx512 and runs the kernel tests, which cover every
# ISA the machine offers (scalar, avx2, avx512) against their references.
# Needs cmake, ninja, pybind11, numpy and pytest; no torch, no network. A host
# without the `gguf` package can get a copy carried in .devdeps/ (git-ignored):
#   mkdir -p .devdeps && cp -r "$(python3 -c 'import gguf,os;print(os.path.dirname(gguf.__file__))')" .devdeps/
set -euo pipefail
cd "$(dirname "$0")/.."
grep -o -w 'avx512f\|avx512_vnni\|avx512_bf16' /proc/cpuinfo | sort -u | tr '\n' ' '; echo
py=$(tools/devbuild.sh avx512)
[ -d .devdeps ] && py="$py:$PWD/.devdeps"
PYTHONPATH=$py python3 -c "from phicpp import _core as C; print('isas:', C.available_isas())"
PYTHONPATH=$py python3 -m pytest -q -p no:cacheprovider tests/test_matmul.py tests/test_backend_ops.py tests/test_repack.py tests/test_quant.py -k "not cuda" "$@"
