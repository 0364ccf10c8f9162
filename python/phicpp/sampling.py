"""Token sampling (C++ core): llama.cpp's default chain and each filter on its own.

    s = Sampler(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, seed=42)
    token = s.sample(logits, history)      # logits: float32 [n_vocab]; history: recent token ids

The chain is llama.cpp's: penalties -> top_k -> top_p -> min_p -> temperature -> dist,
with its defaults and its "off" values (top_k <= 0, top_p >= 1, min_p <= 0,
repeat_penalty 1). temperature <= 0 or top_k == 1 is greedy (argmax). The RNG is
PCG32 with floats built from raw bits, so a seed gives the same tokens on every
platform. Ties between equal logits go to the lower token id.

The filters (penalties, top_k, top_p, min_p, temperature, softmax, dist) take a
candidate list as `logits` (+ optional `ids`, default 0..n-1) and return
`(ids, logits, probs)` as the C++ leaves them; they exist for tests and tinkering.
"""
from __future__ import annotations

import math
import numbers
import os
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from . import _core

__all__ = ["Sampler", "SamplingParams", "random_seed", "penalties", "top_k", "top_p", "min_p",
           "temperature", "softmax", "greedy", "dist"]


def random_seed() -> int:
    """A fresh 32-bit seed (what seed=None / -1 picks; report it to make a run repeatable)."""
    return int.from_bytes(os.urandom(4), "little")


@dataclass
class SamplingParams:
    """The sampler settings, with llama.cpp's defaults."""
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    min_keep: int = 0

    def validate(self) -> "SamplingParams":
        """Raise ValueError naming the first bad setting."""
        def finite(name: str, v: float) -> None:
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        for name in ("temperature", "top_p", "min_p", "repeat_penalty", "presence_penalty", "frequency_penalty"):
            finite(name, getattr(self, name))
        if not 0.0 <= self.top_p <= 1.0:
            raise ValueError(f"top_p must be in [0, 1], got {self.top_p}")
        if not 0.0 <= self.min_p <= 1.0:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p}")
        if self.repeat_penalty <= 0:
            raise ValueError(f"repeat_penalty must be > 0, got {self.repeat_penalty}")
        if self.repeat_last_n < -1:
            raise ValueError(f"repeat_last_n must be -1 (whole context), 0 (off) or more, got {self.repeat_last_n}")
        if self.min_keep < 0:
            raise ValueError(f"min_keep must be >= 0, got {self.min_keep}")
        for name in ("top_k", "repeat_last_n", "min_keep"):  # (the C++ sampler takes 32-bit ints)
            v = getattr(self, name)
            if not isinstance(v, numbers.Integral) or isinstance(v, bool) or not -2**31 <= v < 2**31:
                raise ValueError(f"{name} must be an integer below 2**31, got {v!r}")
        if self.seed is not None and self.seed != -1 and not 0 <= int(self.seed) < 2**64:
            raise ValueError(f"seed must be in [0, 2**64) or -1 for random, got {self.seed}")
        return self


class Sampler:
    """llama.cpp's default sampler chain with a seeded, platform-independent RNG."""

    def __init__(self, temperature: float = 0.8, top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05,
                 repeat_penalty: float = 1.0, repeat_last_n: int = 64, presence_penalty: float = 0.0,
                 frequency_penalty: float = 0.0, seed: int | None = None, min_keep: int = 0):
        p = SamplingParams(temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, presence_penalty,
                           frequency_penalty, seed, min_keep).validate()
        self.seed = random_seed() if seed is None or seed == -1 else int(seed)
        p.seed = self.seed
        self.params = p
        self._s = _core.Sampler(temperature=p.temperature, top_k=p.top_k, top_p=p.top_p, min_p=p.min_p,
                                repeat_penalty=p.repeat_penalty, repeat_last_n=p.repeat_last_n,
                                presence_penalty=p.presence_penalty, frequency_penalty=p.frequency_penalty,
                                min_keep=p.min_keep, seed=self.seed)
        self._empty = np.zeros(0, dtype=np.int32)

    @classmethod
    def from_params(cls, p: SamplingParams) -> "Sampler":
        return cls(**asdict(p))

    @property
    def is_greedy(self) -> bool:
        return self._s.is_greedy

    def sample(self, logits: np.ndarray, history: Sequence[int] | np.ndarray | None = None) -> int:
        """One token id from a float32 logits row. Only the last repeat_last_n entries of
        `history` matter; pass a numpy int32 array (a view is fine) to avoid any copy."""
        if history is None or len(history) == 0:
            return self._s.sample(logits, self._empty)
        n = self.params.repeat_last_n
        if n >= 0 and len(history) > n:
            history = history[len(history) - n:]
        return self._s.sample(logits, history)

    def reseed(self, seed: int) -> None:
        self.seed = int(seed)
        self._s.reseed(self.seed)

    def __repr__(self) -> str:
        return f"Sampler({', '.join(f'{k}={v!r}' for k, v in asdict(self.params).items())})"


# ---------------------------------------------------------------- filters, one at a time
def _f32(x) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def _ids(ids):
    return None if ids is None else np.ascontiguousarray(ids, dtype=np.int32)


def penalties(logits, history, last_n: int = 64, repeat: float = 1.0, freq: float = 0.0, presence: float = 0.0,
              ids=None):
    return _core.sampling_penalties(_f32(logits), np.asarray(history, dtype=np.int32), last_n, repeat, freq,
                                    presence, _ids(ids), False)


def top_k(logits, k: int, ids=None, sorted: bool = False):
    return _core.sampling_top_k(_f32(logits), k, _ids(ids), sorted)


def top_p(logits, p: float, min_keep: int = 0, ids=None, sorted: bool = False):
    return _core.sampling_top_p(_f32(logits), p, min_keep, _ids(ids), sorted)


def min_p(logits, p: float, min_keep: int = 0, ids=None, sorted: bool = False):
    return _core.sampling_min_p(_f32(logits), p, min_keep, _ids(ids), sorted)


def temperature(logits, t: float, ids=None):
    return _core.sampling_temperature(_f32(logits), t, _ids(ids), False)


def softmax(logits, ids=None):
    return _core.sampling_softmax(_f32(logits), _ids(ids))


def greedy(logits, ids=None) -> int:
    return _core.sampling_greedy(_f32(logits), _ids(ids))


def dist(logits, seed: int, ids=None):
    """(chosen id, (ids, logits, probs)) from one draw of a fresh RNG seeded with `seed`."""
    return _core.sampling_dist(_f32(logits), seed, _ids(ids))
