"""phicpp: a fast engine for Microsoft's Phi language models, from GGUF files."""
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
