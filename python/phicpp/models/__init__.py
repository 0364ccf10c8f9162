"""Models shipped inside the package.

phi-tiny-code-q8_0.gguf is a 23.2M-parameter phi2-architecture (Phi-1-style) model in
Q8_0, trained by tools/train_tiny.py on Python (the standard library, installed packages,
small textbook-like libraries) and synthetic exercises (tools/make_exercises.py); see
MODEL_CARD.md here, MIT license in LICENSE. It is what `phicpp generate`, `phicpp chat`
and `phicpp serve` load when no -m/--model is given.

    from phicpp.models import default_model_path
    path = default_model_path()      # pathlib.Path of the shipped GGUF
"""
from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL_NAME = "phi-tiny-code-q8_0.gguf"
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
