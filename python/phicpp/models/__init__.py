"""Models shipped inside the package.

phi-tiny-code-f16.gguf is a 10.5M-parameter phi2-architecture model trained by
tools/train_tiny.py on the Python standard library and on documentation shipped in
installed packages (see MODEL_CARD.md here, MIT license in LICENSE). It is what
`phicpp generate` and `phicpp chat` load when no -m/--model is given.

    from phicpp.models import default_model_path
    path = default_model_path()      # pathlib.Path of the shipped GGUF
"""
from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL_NAME = "phi-tiny-code-f16.gguf"
_HERE = Path(__file__).resolve().parent


def default_model_path() -> Path:
    """Path of the GGUF shipped with the package; FileNotFoundError if the install lacks it."""
    path = _HERE / DEFAULT_MODEL_NAME
    if not path.is_file():
        raise FileNotFoundError(f"the shipped model {DEFAULT_MODEL_NAME} is missing from {_HERE}; "
                                "reinstall phicpp or pass -m MODEL.gguf")
    return path


def default_model_notice() -> str:
    """The one line the CLI prints when it falls back to the shipped model."""
    return f"no -m given: using the built-in tiny code model {DEFAULT_MODEL_NAME} (see phicpp/models/MODEL_CARD.md)"
