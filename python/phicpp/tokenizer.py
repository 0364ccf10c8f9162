"""Tokenizers read from a GGUF's tokenizer.ggml.* metadata (C++ core).

Tokenization matches the Hugging Face tokenizer the file came from, and
llama.cpp's token for token wherever llama.cpp does too: SentencePiece ("llama"
model: Phi-3/3.5) and byte-level BPE ("gpt2" model: Phi-1/1.5/2 with the GPT-2
pre-tokenizer, Phi-4 with cl100k's "dbrx", Phi-4-mini with o200k's "gpt-4o").
Where llama.cpp departs (it approximates o200k's regex, so marks and case
changes in non-ASCII words split differently; it strips only ASCII whitespace
beside special tokens; it strips after Phi-3's chat tokens only when the model's
name says "phi3"), phicpp follows Hugging Face.

    tok = Tokenizer.from_gguf("phi-3-mini.gguf")
    ids = tok.tokenize("<|user|>\\nHi<|end|>", parse_special=True)
    text = tok.detokenize(ids)

Text may be `str` or UTF-8 `bytes`. Invalid UTF-8 in `bytes` is handled as
llama.cpp does: SentencePiece keeps such bytes through its <0xNN> byte tokens
(so they survive a round trip); byte-level BPE decodes each bad byte as U+FFFD
(so it comes back as "\\ufffd"). A `str` with lone surrogates is encoded with
"surrogatepass" and treated like any other bytes; nothing here raises on odd text.
"""
from __future__ import annotations

import os
from typing import Iterable

from . import _core

__all__ = ["Tokenizer", "StreamDecoder"]


def _opt(i: int) -> int | None:
    return None if i < 0 else i


def _as_bytes(text: str | bytes) -> bytes:
    if isinstance(text, str):
        return text.encode("utf-8", "surrogatepass")
    if isinstance(text, (bytes, bytearray, memoryview)):
        return bytes(text)
    raise TypeError(f"text must be str or bytes, not {type(text).__name__}")


class Tokenizer:
    """A tokenizer built from GGUF metadata; thread-safe, releases the GIL while tokenizing."""

    def __init__(self, core: "_core.Tokenizer"):
        self._t = core

    @classmethod
    def from_gguf(cls, path: str | os.PathLike) -> "Tokenizer":
        """Read the tokenizer of any GGUF (a vocab-only file is enough)."""
        return cls(_core.Tokenizer.from_gguf(os.fspath(path)))

    # ------------------------------------------------------------------ encode / decode
    def tokenize(self, text: str | bytes, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids of `text`. add_special: BOS/EOS as the GGUF says (tokenizer.ggml.add_bos_token...).
        parse_special: control-token text such as "<|user|>" becomes that single token."""
        return self._t.tokenize(_as_bytes(text), add_special, parse_special)

    encode = tokenize

    def detokenize_bytes(self, ids: Iterable[int], special: bool = False, remove_special: bool = False) -> bytes:
        """Bytes of `ids` as llama.cpp's llama_detokenize: control tokens render only with
        special=True; SentencePiece drops the prefix space of the first token. Unlike llama.cpp,
        GPT-2-style BPE gets no clean-up of spaces (" ." stays " ."): transformers decodes BPE
        vocabs without it, and the text tokenized comes back unchanged."""
        return self._t.detokenize(list(ids), remove_special, special)

    def detokenize(self, ids: Iterable[int], special: bool = False, remove_special: bool = False) -> str:
        """As detokenize_bytes, decoded as UTF-8 with errors='replace'."""
        return self.detokenize_bytes(ids, special, remove_special).decode("utf-8", "replace")

    decode = detokenize

    def token_to_piece(self, id: int, special: bool = True) -> bytes:
        """The bytes one token stands for (SentencePiece's U+2581 as a space, <0xNN> as the byte)."""
        return self._t.token_to_piece(id, special)

    def token_text(self, id: int) -> str:
        """The token's text as stored in the vocabulary."""
        return self._t.token_text(id).decode("utf-8", "replace")

    def token_id(self, text: str | bytes) -> int | None:
        """Id of the token whose vocabulary text is exactly `text`, or None."""
        return _opt(self._t.text_to_token(_as_bytes(text)))

    def stream_decoder(self, special: bool = False) -> "StreamDecoder":
        return StreamDecoder(self, special)

    # ------------------------------------------------------------------ vocabulary facts
    @property
    def n_vocab(self) -> int:
        return self._t.n_vocab

    @property
    def model(self) -> str:
        """tokenizer.ggml.model: 'llama' (SentencePiece) or 'gpt2' (byte-level BPE)."""
        return self._t.model

    @property
    def pre(self) -> str:
        """tokenizer.ggml.pre (BPE pre-tokenizer name)."""
        return self._t.pre

    @property
    def bos_id(self) -> int | None:
        return _opt(self._t.bos_id)

    @property
    def eos_id(self) -> int | None:
        return _opt(self._t.eos_id)

    @property
    def eot_id(self) -> int | None:
        return _opt(self._t.eot_id)

    @property
    def unk_id(self) -> int | None:
        return _opt(self._t.unk_id)

    @property
    def pad_id(self) -> int | None:
        return _opt(self._t.pad_id)

    @property
    def add_bos(self) -> bool:
        return self._t.add_bos

    @property
    def add_eos(self) -> bool:
        return self._t.add_eos

    @property
    def eog_ids(self) -> list[int]:
        """End-of-generation tokens (EOS, EOT and tokens such as <|end|>, <|endoftext|>, <|im_end|>)."""
        return list(self._t.eog_ids)

    end_ids = eog_ids

    def is_eog(self, id: int) -> bool:
        return self._t.is_eog(id)

    def __len__(self) -> int:
        return self.n_vocab

    def __repr__(self) -> str:
        return f"Tokenizer(model={self.model!r}, pre={self.pre!r}, n_vocab={self.n_vocab})"


class StreamDecoder:
    """Ids in, whole UTF-8 text out: a character split over byte tokens is held back until it
    completes; flush() returns the rest (an incomplete tail as U+FFFD). Joined output equals
    the concatenated pieces decoded with errors='replace' (no prefix strip)."""

    def __init__(self, tokenizer: Tokenizer, special: bool = False):
        self._d = _core.StreamDecoder(tokenizer._t, special)

    def push(self, id: int) -> str:
        return self._d.push(id)

    def flush(self) -> str:
        return self._d.flush()

    def reset(self) -> None:
        self._d.reset()

    @property
    def pending_bytes(self) -> int:
        return self._d.pending_bytes
