"""phicpp: a fast engine for Microsoft's Phi language models, from GGUF files."""
from ._core import (  # noqa: F401
    ContextOverflowError,
    GGUFError,
    PhicppError,
    UnsupportedError,
)

__version__ = "0.1.0"
