"""Where phicpp looks for cuBLASLt (the NVIDIA cuBLAS wheel's libcublasLt, which the
CUDA backend loads at run time for prompt processing): found on sys.path at import,
handed to the backend in PHICPP_CUDA_CUBLASLT, never loaded on import."""
from __future__ import annotations

import os
import subprocess
import sys


def _import_and_report(tmp_path, env_extra, sub):
    site = tmp_path / "site"
    lib = site / sub
    lib.parent.mkdir(parents=True)
    lib.write_bytes(b"not a library")
    env = {k: v for k, v in os.environ.items() if k != "PHICPP_CUDA_CUBLASLT"}
    env.update(env_extra)
    # first on sys.path, as an installed wheel would be found before one further down
    # (the device machine has PyTorch's real cuBLAS wheel on its path too)
    code = (f"import sys; sys.path.insert(0, {str(site)!r}); import phicpp, os; "
            "print(os.environ.get('PHICPP_CUDA_CUBLASLT', ''))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip(), str(lib)


def test_the_cublas_wheel_on_sys_path_is_found(tmp_path):
    found, lib = _import_and_report(tmp_path, {}, "nvidia/cu13/lib/libcublasLt.so.13")
    assert found == lib


def test_a_path_set_by_the_user_wins(tmp_path):
    found, _ = _import_and_report(tmp_path, {"PHICPP_CUDA_CUBLASLT": "0"}, "nvidia/cu13/lib/libcublasLt.so.13")
    assert found == "0"


def test_nothing_found_leaves_it_unset(tmp_path):
    found, _ = _import_and_report(tmp_path, {}, "nvidia/other/lib/libcublasLt.so.13")
    assert found == "" or "nvidia" in found and "other" not in found  # (a real wheel on this machine may be found)
