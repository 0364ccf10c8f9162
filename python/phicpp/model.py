"""The Python face of a loaded model: a thin layer over the C++ core."""
from __future__ import annotations

import threading
import warnings
from typing import Sequence

import numpy as np

from . import _core


def device_for_gpu_layers(n_gpu_layers: int) -> str:
    """The device llama.cpp's -ngl / llama-cpp-python's n_gpu_layers picks: 0 the CPU, any
    other value the GPU, and (as there) the CPU with a warning where no GPU can be used."""
    if n_gpu_layers == 0:
        return "cpu"
    why = _core.cuda_unavailable_reason()
    if why:
        warnings.warn(f"n_gpu_layers={n_gpu_layers} asks for the GPU, but {why}: running on the CPU", stacklevel=3)
        return "cpu"
    return "cuda"


def _ids(values, name: str) -> np.ndarray:
    """Token or sequence ids as int32, refusing what a cast would silently change
    (floats truncated, values past 32 bits wrapped)."""
    a = np.asarray(values)
    if a.dtype == np.int32:  # (what a decode loop passes: nothing to check or convert)
        return a
    if a.size == 0:
        return np.zeros(a.shape, np.int32)
    if a.dtype.kind not in "iu":  # (signed or unsigned integers; bool is kind "b")
        raise TypeError(f"{name} must be integers, got an array of {a.dtype}")
    if a.size <= 64:  # (a few ids, as a decode step has, are cheaper to bound in Python than by numpy's reductions)
        ids = a.ravel().tolist()
        lo, hi = min(ids), max(ids)
    else:
        lo, hi = int(a.min()), int(a.max())
    if lo < -2**31 or hi >= 2**31:
        raise ValueError(f"{name} out of range: {lo} .. {hi}")
    return a.astype(np.int32)


class Model:
    """A Phi model loaded from a GGUF file.

    >>> m = Model("phi-3-mini.gguf", n_ctx=4096, n_threads=2)
    >>> logits = m.eval([1, 450, 4996])   # logits of the last token, shape [n_vocab]
    >>> g = Model("phi-3-mini.gguf", device="cuda")   # or "auto": the GPU when there is one

    device: "cpu", "cuda" or "auto". n_gpu_layers (llama-cpp-python's spelling), when
    given, chooses instead: 0 the CPU, anything else the GPU (phicpp puts the whole
    model on one device), or the CPU with a warning where there is no GPU to use, as
    llama-cpp-python runs n_gpu_layers=-1 on a machine without one. progress: called as
    progress(bytes_loaded, bytes_total) while the weights load (uploads to a GPU take a
    while). n_seq: how many sequences (KV caches of n_ctx tokens each) the model holds at
    once; eval(seq=...) continues one, decode_batch() one token of several in one forward
    pass (as a server does).

    Threads: every call into the model takes the model's lock, so several Python threads
    may share one Model; each call's tokens go in whole, but calls of different threads
    interleave, so threads that generate at the same time use different sequences.
    """

    def __init__(self, path: str, n_ctx: int = 0, n_threads: int = 0, n_batch: int = 512,
                 device: str = "cpu", kv_type: str = "auto", n_gpu_layers: int | None = None,
                 progress=None, n_seq: int = 1):
        if n_gpu_layers is not None:
            device = device_for_gpu_layers(n_gpu_layers)
        self._lock = threading.RLock()
        self._versions: dict[int, int] = {}  # seq -> calls that changed its cache (see cache_version)
        self._m = _core.Model(str(path), n_ctx=n_ctx, n_threads=n_threads, n_batch=n_batch,
                              device=device, kv_type=kv_type, progress=progress, n_seq=n_seq)
        self.path = str(path)
        self._metadata = None
        self._tokenizer = None
        for note in self._m.load_notes:
            warnings.warn(note, stacklevel=2)

    # ---- evaluation
    def eval(self, tokens: Sequence[int], all_logits: bool = False, seq: int = 0) -> np.ndarray:
        """Evaluate tokens after those already cached (in sequence seq). Returns the logits
        of the last token ([n_vocab]) or of every token ([n, n_vocab]) with all_logits."""
        with self._lock:
            out = self._m.eval(_ids(tokens, "tokens"), all_logits, seq)
            self._changed((seq,))
            return out

    def decode_batch(self, seqs: Sequence[int], tokens: Sequence[int]) -> np.ndarray:
        """One token for each of several different sequences in one forward pass (token i
        continues sequence seqs[i]); logits [n, n_vocab], each row exactly as eval([token],
        seq=...) alone would give it."""
        with self._lock:
            seqs = _ids(seqs, "seqs")
            out = self._m.batch(seqs, 1, _ids(tokens, "tokens"))
            self._changed(seqs)
            return out

    def batch(self, seqs: Sequence[int], first_count: int, tokens: Sequence[int]) -> np.ndarray:
        """first_count tokens of sequence seqs[0] (a prompt chunk), then one token of each
        other sequence, in one forward pass; logits of each sequence's last token
        [len(seqs), n_vocab]. Row-invariant like decode_batch: a prompt fed this way, in
        any chunks, gives what eval of it one token at a time gives."""
        with self._lock:
            seqs = _ids(seqs, "seqs")
            out = self._m.batch(seqs, first_count, _ids(tokens, "tokens"))
            self._changed(seqs)
            return out

    def reset(self, seq: int = 0) -> None:
        """Empty the KV cache (of sequence seq)."""
        with self._lock:
            self._m.reset(seq)
            self._changed((seq,))

    def truncate(self, n: int, seq: int = 0) -> None:
        """Keep only the first n cached tokens (of sequence seq)."""
        with self._lock:
            self._m.truncate(n, seq)
            self._changed((seq,))

    def cache_version(self, seq: int = 0) -> int:
        """A number that changes whenever a call changes sequence seq's cache: a caller that
        keeps track of what the cache holds (a generation, a chat) can tell whether anyone
        else has used it since, whatever the length now."""
        return self._versions.get(int(seq), 0)

    def _changed(self, seqs) -> None:
        for seq in set(int(x) for x in seqs):
            self._versions[seq] = self._versions.get(seq, 0) + 1

    def n_past_of(self, seq: int) -> int:
        """Tokens cached for sequence seq."""
        return self._m.n_past_of(seq)

    # ---- properties
    n_past = property(lambda self: self._m.n_past)
    n_seq = property(lambda self: self._m.n_seq)
    n_ctx = property(lambda self: self._m.n_ctx)
    n_vocab = property(lambda self: self._m.n_vocab)
    n_ctx_train = property(lambda self: self._m.n_ctx_train)
    arch = property(lambda self: self._m.arch)
    n_expert = property(lambda self: self._m.n_expert)            # phimoe: experts per layer (else 0)
    router_jitter = property(lambda self: self._m.router_jitter)  # phimoe: SparseMixer's jitter
    device = property(lambda self: self._m.device)
    device_name = property(lambda self: self._m.device_variant)  # the CPU's ISA, or the GPU's name
    kv_type = property(lambda self: self._m.kv_type)
    kv_cache_bytes = property(lambda self: self._m.kv_cache_bytes)

    @property
    def metadata(self) -> dict:
        """The GGUF metadata as a dict."""
        if self._metadata is None:
            self._metadata = _core.GGUFFile(self.path).metadata
        return self._metadata

    # ---- text in, text out (the sampling/CLI helper's additions; see generate.py, chat.py)
    @property
    def tokenizer(self):
        """The phicpp.tokenizer.Tokenizer of this GGUF, built on first use."""
        if self._tokenizer is None:
            from .tokenizer import Tokenizer
            self._tokenizer = Tokenizer.from_gguf(self.path)
        return self._tokenizer

    def tokenize(self, text: str | bytes, add_special: bool = True, parse_special: bool = False) -> list[int]:
        return self.tokenizer.tokenize(text, add_special, parse_special)

    def detokenize(self, ids: Sequence[int], special: bool = False) -> str:
        return self.tokenizer.detokenize(ids, special)

    def generate(self, prompt, **kwargs):
        """Continue a prompt (text or ids): an iterator of text pieces, or with stream=False the
        text. Keywords: max_tokens=128, temperature=0.8, top_k=40, top_p=0.95, min_p=0.05,
        repeat_penalty=1.0, repeat_last_n=64, presence_penalty=0, frequency_penalty=0, seed=None,
        stop=[...], stream=True, ignore_eos=False. After it ends, self.last_run holds the
        finish reason, tokens and timings."""
        from .generate import generate
        return generate(self, prompt, **kwargs)

    def create_completion(self, prompt, **kwargs):
        """OpenAI-shaped "text_completion" dict (or stream=True: chunks), as llama-cpp-python."""
        from .generate import create_completion
        return create_completion(self, prompt, **kwargs)

    __call__ = create_completion  # llm(prompt, max_tokens=..., stop=[...], echo=True), as llama-cpp-python

    def create_chat_completion(self, messages: list[dict], **kwargs):
        """OpenAI-shaped "chat.completion" dict (or stream=True: "chat.completion.chunk"s), as
        llama-cpp-python; the chat template comes from the GGUF (built-in Phi-3/Phi-4 fallbacks)."""
        from .chat import create_chat_completion
        return create_chat_completion(self, messages, **kwargs)

    # ---- lifetime
    def close(self) -> None:
        """Free the weights, KV caches and device memory now, not when the object is collected
        (as llama-cpp-python's Llama.close). Later calls raise ValueError; closing twice is fine.
        `with Model(...) as m:` closes on leaving the block."""
        with self._lock:
            self._m = _ClosedModel()

    @property
    def closed(self) -> bool:
        return isinstance(self._m, _ClosedModel)

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return f"phicpp.Model({self.path!r}, closed)"
        return f"phicpp.Model({self.path!r}, arch={self.arch}, n_ctx={self.n_ctx}, device={self.device})"


class _ClosedModel:
    """What a closed Model holds instead of its core model: every use is a clear error."""

    def __getattr__(self, name: str):
        raise ValueError("this phicpp.Model is closed")
