"""phicpp: a fast engine for Microsoft's Phi language models, from GGUF files."""
import os as _os
import sys as _sys


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
from ._core import (  # noqa: F401
    ContextOverflowError,
    GGUFError,
    PhicppError,
    UnsupportedError,
)
from ._core import GGUFFile, GGUFTensorInfo  # noqa: F401
from .convert import ConvertError, convert_hf_to_gguf  # noqa: F401,E402

from .model import Model  # noqa: F401,E402
from .tokenizer import Tokenizer  # noqa: F401,E402
from .sampling import Sampler  # noqa: F401,E402

__version__ = "0.1.0"
