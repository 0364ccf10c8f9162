"""phicpp: a fast engine for Microsoft's Phi language models, from GGUF files."""
import os as _os
import sys as _sys
import typing as _typing


def _find_cublaslt() -> None:
    """Point the CUDA backend at the NVIDIA cuBLAS wheel's libcublasLt (the `cublas`
    extra, or the copy PyTorch installs), which it loads when a GPU model is made and
    uses for prompt processing; without one it uses its own GEMM. Only a path is looked
    up here: nothing is loaded on import."""
    if _os.environ.get("PHICPP_CUDA_CUBLASLT"):
        return
    for base in _sys.path:
        for sub in ("nvidia/cu13/lib/libcublasLt.so.13", "nvidia/cublas/lib/libcublasLt.so.13",
                    "nvidia/cublas/lib/libcublasLt.so.12"):
            path = _os.path.join(base or ".", sub)
            if _os.path.isfile(path):
                _os.environ["PHICPP_CUDA_CUBLASLT"] = path
                return


_find_cublaslt()

# The public names load on first use (PEP 562), so that `import phicpp.cli` is click alone:
# `phicpp --help` answers at once, and a Ctrl-C while a command starts lands where the
# command line turns it into "interrupted" rather than inside numpy's import.
_PUBLIC = {
    "ContextOverflowError": "_core", "GGUFError": "_core", "PhicppError": "_core",
    "UnsupportedError": "_core", "GGUFFile": "_core", "GGUFTensorInfo": "_core",
    "ConvertError": "convert", "convert_hf_to_gguf": "convert",
    "Model": "model", "Tokenizer": "tokenizer", "Sampler": "sampling",
}
__all__ = sorted(_PUBLIC)
__version__ = "0.1.0"

if _typing.TYPE_CHECKING:  # what type checkers and editors see; at run time __getattr__ below
    from ._core import ContextOverflowError, GGUFError, GGUFFile, GGUFTensorInfo, PhicppError, UnsupportedError
    from .convert import ConvertError, convert_hf_to_gguf
    from .model import Model
    from .sampling import Sampler
    from .tokenizer import Tokenizer


def __getattr__(name: str):
    import importlib
    import importlib.util
    module = _PUBLIC.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f".{module}", __name__), name)
    elif not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f".{name}", __name__)  # a submodule (phicpp._core, ...) as before
    else:
        raise AttributeError(f"module 'phicpp' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
