"""Reference Hugging Face tokenizers for the Phi families, built offline.

No hub access: every tokenizer here is rebuilt from data in the repo's shared
fixtures (llama.cpp's vocab-only GGUFs) or trained on text that ships with Python.
Each `write_*` function writes the files a Hugging Face checkpoint folder would
hold (tokenizer.json, tokenizer_config.json, and tokenizer.model for SentencePiece)
and returns the id layout the model config needs. Results are cached on disk
(see `cache_dir`), so only the first call in a fresh cache is slow (~seconds).

    phi2       GPT-2 byte-level BPE (50257 tokens, 50000 merges) + CodeGen's 38
               whitespace added tokens, as Phi-1/1.5/2 ship it (vocab_size 51200).
    phi3       Llama-2 SentencePiece BPE (32000 pieces, byte fallback) + Phi-3's
               added tokens <|endoftext|>=32000 ... <|user|>=32010, Phi-3.5 chat template.
    phi4       small byte-level BPE trained with the cl100k pre-tokenizer regex,
               Phi-4 special tokens (<|im_start|>, <|im_sep|>, <|im_end|> ...).
    phi4_mini  small byte-level BPE trained with the o200k regex, Phi-4-mini's
               special tokens (<|system|>, <|user|>, <|assistant|>, <|end|> ...).

Other helpers: `vocab_tests(name)` reads llama.cpp's tokenizer test vectors,
`gpt2_vocab()` / `phi3_vocab()` read the fixture GGUFs.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf

# The fixtures this module reads are copied into tests/data (with their provenance
# in its README.md), so the tests need nothing outside the repository;
# PHICPP_FIXTURES may point at a shared fixtures folder (vocab/, templates/) instead.
DATA = Path(__file__).parent / "data"
FIXTURES = Path(os.environ["PHICPP_FIXTURES"]) if os.environ.get("PHICPP_FIXTURES") else None
VOCAB_DIR = FIXTURES / "vocab" if FIXTURES else DATA
PHI35_TEMPLATE = (FIXTURES / "templates" if FIXTURES else DATA) / "microsoft-Phi-3.5-mini-instruct.jinja"

# Bump when a builder changes so stale caches are not reused.
_CACHE_VERSION = "3"

# The pre-tokenizer regexes of OpenAI's cl100k_base (Phi-4) and o200k_base (Phi-4-mini),
# as their Hugging Face tokenizer.json files carry them.
CL100K_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
O200K_REGEX = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

PHI4_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if (message['role'] == 'system') %}"
    "{{'<|im_start|>system<|im_sep|>' + message['content'] + '<|im_end|>'}}"
    "{% elif (message['role'] == 'user') %}{{'<|im_start|>user<|im_sep|>' + message['content'] + '<|im_end|>'}}"
    "{% elif (message['role'] == 'assistant') %}{{'<|im_start|>assistant<|im_sep|>' + message['content'] + '<|im_end|>'}}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant<|im_sep|>' }}{% endif %}"
)
PHI4_MINI_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' and 'tools' in message and message['tools'] is not none %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|tool|>' + message['tools'] + '<|/tool|>' + '<|end|>' }}"
    "{% else %}{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% else %}{{ eos_token }}{% endif %}"
)


@dataclass
class TokenizerInfo:
    """What a model config needs to know about a written tokenizer."""
    kind: str
    n_tokens: int                 # ids 0..n_tokens-1 are used by the tokenizer
    vocab_size: int               # embedding rows: n_tokens padded up
    bos_token_id: int | None
    eos_token_id: int | None
    pad_token_id: int | None
    special: dict[str, int] = field(default_factory=dict)   # content -> id of added tokens
    chat_template: str | None = None


# ----------------------------------------------------------------------------- cache

def cache_dir() -> Path:
    """Per-user cache for built tokenizers (override with PHICPP_TEST_CACHE)."""
    base = os.environ.get("PHICPP_TEST_CACHE") or os.path.join(tempfile.gettempdir(), f"phicpp-test-cache-{os.getuid()}")
    d = Path(base) / f"reftok-v{_CACHE_VERSION}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _cached(name: str, build) -> Path:
    """Build folder `name` once with build(tmpdir); concurrent builders race safely via rename."""
    target = cache_dir() / name
    if (target / ".done").is_file():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=name + ".", dir=cache_dir()))
    try:
        build(tmp)
        (tmp / ".done").write_text("ok")
        try:
            tmp.rename(target)
        except OSError:  # somebody else finished first
            pass
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _copy_files(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and not f.name.startswith("."):
            shutil.copyfile(f, dst / f.name)


# ----------------------------------------------------------------------------- fixtures

def _read_strings(reader: gguf.GGUFReader, key: str) -> list[str]:
    return [str(s) for s in reader.fields[key].contents()]


def _cached_json(name: str, build) -> Any:
    """build() once, kept as JSON in the cache (GGUFReader takes seconds on a 50k vocab)."""
    path = cache_dir() / f"{name}.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    data = build()
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)
    return data


def gpt2_vocab() -> tuple[list[str], list[str]]:
    """(tokens, merges) of the GPT-2 BPE from llama.cpp's ggml-vocab-gpt-2.gguf."""
    def build():
        r = gguf.GGUFReader(VOCAB_DIR / "ggml-vocab-gpt-2.gguf")
        return [_read_strings(r, "tokenizer.ggml.tokens"), _read_strings(r, "tokenizer.ggml.merges")]
    tokens, merges = _cached_json("gpt2_vocab", build)
    return tokens, merges


def phi3_vocab() -> tuple[list[str], list[float], list[int]]:
    """(tokens, scores, token_types) of llama.cpp's ggml-vocab-phi-3.gguf (32064 entries)."""
    def build():
        r = gguf.GGUFReader(VOCAB_DIR / "ggml-vocab-phi-3.gguf")
        f = r.fields
        return [_read_strings(r, "tokenizer.ggml.tokens"), [float(x) for x in f["tokenizer.ggml.scores"].contents()],
                [int(x) for x in f["tokenizer.ggml.token_type"].contents()]]
    tokens, scores, types = _cached_json("phi3_vocab", build)
    return tokens, scores, types


def vocab_tests(name: str) -> list[tuple[str, list[int]]]:
    """llama.cpp's tokenizer test vectors for VOCAB_DIR/ggml-vocab-{name}.gguf.{inp,out}:
    (text, ids) pairs, ids as llama.cpp tokenizes with add_special=false, parse_special=false."""
    inp = (VOCAB_DIR / f"ggml-vocab-{name}.gguf.inp").read_text(encoding="utf-8")
    out = (VOCAB_DIR / f"ggml-vocab-{name}.gguf.out").read_text(encoding="utf-8")
    texts = inp.split("\n__ggml_vocab_test__\n")
    if texts and texts[-1].endswith("\n__ggml_vocab_test__"):
        texts[-1] = texts[-1][: -len("\n__ggml_vocab_test__")]
    ids = [[int(t) for t in line.split()] for line in out.split("\n")]
    ids = ids[: len(texts)]
    return list(zip(texts, ids))


# ----------------------------------------------------------------------------- phi2 (GPT-2 BPE)

# CodeGen (and so Phi-1/1.5/2) adds runs of spaces (31..2) and of tabs (9..2) as tokens 50257..50294.
CODEGEN_WHITESPACE = [" " * n for n in range(31, 1, -1)] + ["\t" * n for n in range(9, 1, -1)]


def _gpt2_tokenizer(whitespace_tokens: bool):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    tokens, merges = gpt2_vocab()
    vocab = {t: i for i, t in enumerate(tokens)}
    bpe = models.BPE(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges])
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=False)])
    if whitespace_tokens:
        tok.add_tokens([AddedToken(w, normalized=True, special=False) for w in CODEGEN_WHITESPACE])
    return tok


def gpt2_tokenizer():
    """Plain GPT-2 byte-level BPE as a `tokenizers.Tokenizer` (no Phi-2 additions)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(gpt2_tokenizer_json()))


def gpt2_tokenizer_json() -> Path:
    """Cached tokenizer.json of the plain GPT-2 BPE (openai-community/gpt2's layout)."""
    return _cached("gpt2", lambda d: _gpt2_tokenizer(whitespace_tokens=False).save(str(d / "tokenizer.json"))) \
        / "tokenizer.json"


def _build_phi2(d: Path) -> None:
    tok = _gpt2_tokenizer(whitespace_tokens=True)
    tok.save(str(d / "tokenizer.json"))
    cfg = {
        "add_prefix_space": False,
        "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        "clean_up_tokenization_spaces": True, "model_max_length": 2048,
        "tokenizer_class": "CodeGenTokenizer",
    }
    (d / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))


def write_phi2_tokenizer(dst: Path) -> TokenizerInfo:
    """Phi-1/1.5/2 tokenizer (CodeGen flavour of GPT-2 BPE) into folder dst."""
    _copy_files(_cached("phi2", _build_phi2), Path(dst))
    return TokenizerInfo("phi2", n_tokens=50257 + len(CODEGEN_WHITESPACE), vocab_size=51200,
                         bos_token_id=50256, eos_token_id=50256, pad_token_id=None,
                         special={"<|endoftext|>": 50256})


# ----------------------------------------------------------------------------- phi3 (SentencePiece)

PHI3_ADDED = [  # (id, content, special) as in microsoft/Phi-3-mini-4k-instruct's tokenizer.json
    (32000, "<|endoftext|>", True), (32001, "<|assistant|>", True), (32002, "<|placeholder1|>", True),
    (32003, "<|placeholder2|>", True), (32004, "<|placeholder3|>", True), (32005, "<|placeholder4|>", True),
    (32006, "<|system|>", True), (32007, "<|end|>", True), (32008, "<|placeholder5|>", True),
    (32009, "<|placeholder6|>", True), (32010, "<|user|>", True),
]

# sentencepiece_model.proto enums / field numbers (written by hand: protobuf is not installed)
_SP_NORMAL, _SP_UNKNOWN, _SP_CONTROL, _SP_BYTE = 1, 2, 3, 6
_SP_MODEL_BPE = 2


def _pb_varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _pb_key(field_no: int, wire: int) -> bytes:
    return _pb_varint((field_no << 3) | wire)


def _pb_bytes(field_no: int, data: bytes) -> bytes:
    return _pb_key(field_no, 2) + _pb_varint(len(data)) + data


def _pb_int(field_no: int, v: int) -> bytes:
    return _pb_key(field_no, 0) + _pb_varint(v)


def _pb_float(field_no: int, v: float) -> bytes:
    return _pb_key(field_no, 5) + struct.pack("<f", v)


def spm_model_proto(pieces: list[tuple[str, float, int]]) -> bytes:
    """Serialize a Llama-style SentencePiece BPE ModelProto (byte fallback, dummy prefix,
    identity normalizer) from (piece, score, type) triples."""
    out = bytearray()
    for piece, score, typ in pieces:
        sp = _pb_bytes(1, piece.encode("utf-8")) + _pb_float(2, score)
        if typ != _SP_NORMAL:
            sp += _pb_int(3, typ)
        out += _pb_bytes(1, sp)
    trainer = (_pb_int(3, _SP_MODEL_BPE) + _pb_int(4, len(pieces)) + _pb_int(35, 1)  # byte_fallback
               + _pb_int(40, 0) + _pb_int(41, 1) + _pb_int(42, 2) + _pb_int(43, -1))  # unk/bos/eos/pad ids
    normalizer = (_pb_bytes(1, b"identity") + _pb_int(3, 1) + _pb_int(4, 0) + _pb_int(5, 1))
    out += _pb_bytes(2, trainer) + _pb_bytes(3, normalizer)
    return bytes(out)


def _phi3_pieces() -> list[tuple[str, float, int]]:
    tokens, scores, _ = phi3_vocab()
    pieces = []
    for i in range(32000):
        if i == 0:
            typ = _SP_UNKNOWN
        elif i in (1, 2):
            typ = _SP_CONTROL
        elif 3 <= i <= 258:
            typ = _SP_BYTE
        else:
            typ = _SP_NORMAL
        # the GGUF overrides the scores of <unk>/<s>/</s> with -1000 (added tokens); the .model has 0
        pieces.append((tokens[i], 0.0 if i < 3 else scores[i], typ))
    return pieces


def _spm_merges(pieces: list[tuple[str, float, int]]) -> list[tuple[str, str]]:
    """HF's SentencePiece->BPE merge list (transformers' generate_merges with vocab scores):
    every split of a piece into two pieces, highest piece score first, so that merge ranks
    follow SentencePiece's score order (e.g. '▁▁', score -1e9, merges last)."""
    vocab = {p: i for i, (p, _, _) in enumerate(pieces)}
    merges = []
    for piece, score, _ in pieces:
        local = [(piece[:k], piece[k:]) for k in range(1, len(piece)) if piece[:k] in vocab and piece[k:] in vocab]
        local.sort(key=lambda lr: (vocab[lr[0]], vocab[lr[1]]))
        merges.extend((score, l, r) for l, r in local)
    merges.sort(key=lambda m: (m[0], len(m[1]), len(m[2])), reverse=True)
    return [(l, r) for _, l, r in merges]


def _build_phi3(d: Path) -> None:
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors

    pieces = _phi3_pieces()
    (d / "tokenizer.model").write_bytes(spm_model_proto(pieces))

    # tokenizer.json the way transformers converts a legacy Llama SentencePiece model
    vocab = {p: i for i, (p, _, _) in enumerate(pieces)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=_spm_merges(pieces), unk_token="<unk>",
                               byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<unk>", "<s>")])
    tok.add_tokens([AddedToken("</s>", special=False, normalized=False, rstrip=True)])
    for _id, content, special in PHI3_ADDED:
        at = AddedToken(content, special=special, normalized=False, rstrip=True)
        if special:
            tok.add_special_tokens([at])
        else:
            tok.add_tokens([at])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)])
    tok.save(str(d / "tokenizer.json"))
    got = {c: tok.token_to_id(c) for _, c, _ in PHI3_ADDED}
    assert got == {c: i for i, c, _ in PHI3_ADDED}, got

    decoder = {"0": ("<unk>", True), "1": ("<s>", True), "2": ("</s>", False)}
    decoder.update({str(i): (c, s) for i, c, s in PHI3_ADDED})
    cfg = {
        "add_bos_token": True, "add_eos_token": False,
        "added_tokens_decoder": {
            k: {"content": c, "lstrip": False, "normalized": False, "rstrip": k not in ("0", "1"),
                "single_word": False, "special": s}
            for k, (c, s) in decoder.items()},
        "bos_token": "<s>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "unk_token": "<unk>",
        "chat_template": PHI35_TEMPLATE.read_text(encoding="utf-8"),
        "clean_up_tokenization_spaces": False, "legacy": False, "model_max_length": 131072,
        "padding_side": "left", "sp_model_kwargs": {}, "use_default_system_prompt": False,
        "tokenizer_class": "LlamaTokenizer",
    }
    (d / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False))


def write_phi3_tokenizer(dst: Path) -> TokenizerInfo:
    """Phi-3/3.5 tokenizer (tokenizer.model + tokenizer.json + tokenizer_config.json) into dst."""
    _copy_files(_cached("phi3", _build_phi3), Path(dst))
    return TokenizerInfo("phi3", n_tokens=32011, vocab_size=32064, bos_token_id=1, eos_token_id=32000,
                         pad_token_id=32000, special={c: i for i, c, _ in PHI3_ADDED},
                         chat_template=PHI35_TEMPLATE.read_text(encoding="utf-8"))


def phi3_spm_model() -> Path:
    """Path of the cached Phi-3 tokenizer.model (SentencePiece ModelProto)."""
    return _cached("phi3", _build_phi3) / "tokenizer.model"


# ----------------------------------------------------------------------------- phi4 / phi4-mini (trained BPE)

def _training_text() -> list[str]:
    """Deterministic offline corpus: a fixed list of Python stdlib sources."""
    root = Path(os.__file__).parent
    names = ["os.py", "json/decoder.py", "json/encoder.py", "textwrap.py", "string.py", "shutil.py",
             "argparse.py", "dataclasses.py", "difflib.py", "tempfile.py", "pathlib.py", "random.py"]
    texts = []
    for n in names:
        p = root / n
        if p.is_file():
            texts.append(p.read_text(encoding="utf-8", errors="replace"))
    texts.append("Hello world! Ünïcödé text, 数字 123456, emojis 🦙🚀 and ‘quotes’ — done.\n" * 20)
    return texts


PHI4_SPECIAL = ["<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|im_start|>",
                "<|im_end|>", "<|im_sep|>"]
PHI4_MINI_SPECIAL = ["<|endoftext|>", "<|assistant|>", "<|end|>", "<|user|>", "<|system|>", "<|tool|>",
                     "<|/tool|>", "<|tool_call|>", "<|/tool_call|>", "<|tool_response|>", "<|tag|>"]


def _train_bpe(regex: str, vocab_size: int, special: list[str]):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator(_training_text(), trainer=trainer)
    n = tok.get_vocab_size()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in special])
    return tok, n


def _build_trained(d: Path, regex: str, special: list[str], cfg: dict) -> None:
    tok, _ = _train_bpe(regex, 3000, special)
    tok.save(str(d / "tokenizer.json"))
    ids = {s: tok.token_to_id(s) for s in special}
    cfg = dict(cfg)
    cfg["added_tokens_decoder"] = {str(i): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                                            "single_word": False, "special": True} for s, i in ids.items()}
    (d / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))


def _build_phi4(d: Path) -> None:
    _build_trained(d, CL100K_REGEX, PHI4_SPECIAL, {
        "bos_token": "<|endoftext|>", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "add_prefix_space": False, "clean_up_tokenization_spaces": False,
        "model_max_length": 16384, "tokenizer_class": "GPT2Tokenizer", "chat_template": PHI4_CHAT_TEMPLATE})


def _build_phi4_mini(d: Path) -> None:
    _build_trained(d, O200K_REGEX, PHI4_MINI_SPECIAL, {
        "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "add_prefix_space": False, "clean_up_tokenization_spaces": False,
        "model_max_length": 131072, "tokenizer_class": "GPT2Tokenizer", "chat_template": PHI4_MINI_CHAT_TEMPLATE})


def _trained_info(kind: str, d: Path, special: list[str], eos: str) -> TokenizerInfo:
    tj = json.loads((d / "tokenizer.json").read_text(encoding="utf-8"))
    ids = {t["content"]: t["id"] for t in tj["added_tokens"]}
    n = max(ids.values()) + 1
    cfg = json.loads((d / "tokenizer_config.json").read_text(encoding="utf-8"))
    return TokenizerInfo(kind, n_tokens=n, vocab_size=(n + 127) // 128 * 128,
                         bos_token_id=ids["<|endoftext|>"], eos_token_id=ids[eos], pad_token_id=ids["<|endoftext|>"],
                         special={s: ids[s] for s in special}, chat_template=cfg["chat_template"])


def write_phi4_tokenizer(dst: Path) -> TokenizerInfo:
    """Small Phi-4-style tokenizer (cl100k regex, ~3000 BPE tokens + Phi-4 special tokens) into dst."""
    _copy_files(_cached("phi4", _build_phi4), Path(dst))
    return _trained_info("phi4", Path(dst), PHI4_SPECIAL, "<|im_end|>")


def write_phi4_mini_tokenizer(dst: Path) -> TokenizerInfo:
    """Small Phi-4-mini-style tokenizer (o200k regex, ~3000 BPE tokens + its special tokens) into dst."""
    _copy_files(_cached("phi4_mini", _build_phi4_mini), Path(dst))
    return _trained_info("phi4_mini", Path(dst), PHI4_MINI_SPECIAL, "<|endoftext|>")


WRITERS = {"phi2": write_phi2_tokenizer, "phi3": write_phi3_tokenizer,
           "phi4": write_phi4_tokenizer, "phi4_mini": write_phi4_mini_tokenizer}


def write_tokenizer(kind: str, dst: Path) -> TokenizerInfo:
    """Write tokenizer `kind` (phi2 | phi3 | phi4 | phi4_mini) into folder dst."""
    return WRITERS[kind](Path(dst))


if __name__ == "__main__":  # python tests/reftok.py OUTDIR: write all four for inspection
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "reftok-out")
    for k in WRITERS:
        info = write_tokenizer(k, out / k)
        print(k, info.n_tokens, info.vocab_size, hashlib.sha256((out / k / "tokenizer.json").read_bytes()).hexdigest()[:12])
