"""Shared pytest fixtures (keep small and generic).

tiny_model(kind, dtype=torch.float32) -> hfmodels.TinyModel
    a tiny random HF checkpoint folder (see tests/hfmodels.py), built once and cached on
    disk across sessions; read-only, copy it (copy_model) before editing its files.
tiny_gguf(kind, outtype="f16") -> Path
    that checkpoint converted by phicpp, once a session; read-only.
module_tmp(name) -> Path
    a new folder for a module-scoped fixture's files, removed when the module's tests end
    (the suite would otherwise hold a few GB of models until the run ends).
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/ helpers: hfmodels, reftok


@pytest.fixture(scope="session")
def tiny_model():
    import torch

    import hfmodels

    built: dict = {}

    def get(kind: str, dtype=torch.float32):
        if (kind, dtype) not in built:
            built[(kind, dtype)] = hfmodels.cached_tiny(kind, dtype)
        return built[(kind, dtype)]

    return get


@pytest.fixture(scope="session")
def tiny_gguf(tiny_model, tmp_path_factory):
    import phicpp

    made: dict = {}

    def get(kind: str, outtype: str = "f16") -> Path:
        if (kind, outtype) not in made:
            out = tmp_path_factory.mktemp("gguf") / f"{kind}-{outtype}.gguf"
            made[(kind, outtype)] = phicpp.convert_hf_to_gguf(tiny_model(kind).path, out, outtype)
        return made[(kind, outtype)]

    return get


@pytest.fixture(scope="session")
def bundled_f16(tmp_path_factory) -> str:
    """The bundled (Q8_0) model with its weights in F16 (`phicpp quantize ... F16`): a model
    whose matmuls agree to rounding between paths and devices, which tests that compare prefill
    with decode or the CPU with the GPU need (Q8_0 weights would add each path's own activation
    rounding, ~1% of a logit), and the reference quantized types are measured from."""
    from phicpp.models import default_model_path
    from phicpp.quantize import quantize_gguf

    out = tmp_path_factory.mktemp("bundled") / "bundled-f16.gguf"
    quantize_gguf(default_model_path(), out, "F16")
    return str(out)


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory):
    root = tmp_path_factory.mktemp("module")

    def make(name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=name, dir=root))

    yield make
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def copy_model(tmp_path):
    """copy_model(src_dir) -> a private, editable copy of a checkpoint folder under tmp_path."""
    def copy(src: Path, name: str = "model") -> Path:
        dst = tmp_path / name
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".*"))
        return dst

    return copy


def _backend_specs():
    """(device, isa) of every backend this machine runs: the CPU at each ISA, and CUDA with a GPU."""
    from phicpp import _core as C

    specs = [("cpu", isa) for isa in C.available_isas()]
    if C.cuda_available():
        specs.append(("cuda", "auto"))
    return specs


@pytest.fixture(scope="session", params=_backend_specs(),
                ids=lambda s: "cuda" if s[0] == "cuda" else f"cpu-{s[1]}")
def backend(request):
    """A phicpp._core.Backend: the op-test harness runs each case on every backend there is."""
    from phicpp import _core as C

    device, isa = request.param
    return C.Backend(device, isa=isa, n_threads=2)
