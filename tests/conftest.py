"""Shared pytest fixtures (keep small and generic).

tiny_model(kind, dtype=torch.float32) -> hfmodels.TinyModel
    a tiny random HF checkpoint folder (see tests/hfmodels.py), built once and cached on
    disk across sessions; read-only, copy it (copy_model) before editing its files.
"""
from __future__ import annotations

import shutil
import sys
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


@pytest.fixture
def copy_model(tmp_path):
    """copy_model(src_dir) -> a private, editable copy of a checkpoint folder under tmp_path."""
    def copy(src: Path, name: str = "model") -> Path:
        dst = tmp_path / name
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".*"))
        return dst

    return copy
