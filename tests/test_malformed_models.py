"""Malformed model metadata fed to phicpp.Model and phicpp.Tokenizer: every hostile value
of every key the loaders read (missing, wrong type, zero, negative, huge, NaN) either
loads a model that runs, or raises a typed error (GGUFError, UnsupportedError) whose
message names the key. Also: the inputs the fuzz targets found (tests/data/fuzz/), and
files claiming huge arrays, counts and layers, opened in a process whose address space
is capped, so an allocation sized by a header instead of the file fails the test.
"""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGUFValueType as VT

import phicpp

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "tools" / "fuzz_seeds" / "model"   # tiny complete models (tools/make_fuzz_seeds.py)
FUZZ_FOUND = Path(__file__).parent / "data" / "fuzz"
TYPED = (phicpp.GGUFError, phicpp.UnsupportedError)


def rewrite(src: Path, dst: Path, changes: dict, tensors: dict | None = None) -> Path:
    """src with metadata keys replaced ((value, type) or (value, ARRAY, element type)) or
    removed (None); tensors copied byte for byte, except those in `tensors`: replaced
    ((data, raw type)) or left out (None)."""
    tensors = tensors or {}
    r = gguf.GGUFReader(str(src))
    arch = r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(str(dst), arch)
    for key, field in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or key in changes:
            continue
        vtype = field.types[0]
        w.add_key_value(key, field.contents(), vtype, sub_type=field.types[-1] if vtype == VT.ARRAY else None)
    for key, change in changes.items():
        if change is not None:
            value, vtype, *sub = change
            w.add_key_value(key, value, vtype, sub_type=sub[0] if sub else None)
    for t in r.tensors:
        if t.name in tensors and tensors[t.name] is None:
            continue
        data, raw = tensors.get(t.name, (np.asarray(t.data), t.tensor_type))  # (quantized: rows of bytes)
        w.add_tensor(t.name, data, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


def loads_or_names(path: Path, key: str) -> str:
    """'loaded' after a model (and its tokenizer) loaded and ran, or 'refused' after a typed
    error naming key; anything else fails."""
    try:
        m = phicpp.Model(path, n_ctx=16, n_threads=1)
        m.eval([0, m.n_vocab - 1])
        phicpp.Tokenizer.from_gguf(path).tokenize("ab c", add_special=True)
        return "loaded"
    except TYPED as e:
        assert key in str(e), f"{key!r} not named in: {e}"
        return "refused"


INT_KEYS = ["embedding_length", "block_count", "attention.head_count", "attention.head_count_kv",
            "feed_forward_length", "context_length", "attention.key_length", "attention.value_length",
            "rope.dimension_count", "attention.sliding_window", "rope.scaling.original_context_length"]
HOSTILE_INTS = [None, ("x", VT.STRING), (0, VT.UINT32), (-1, VT.INT32), (2**31 - 1, VT.INT32), (2**32 - 1, VT.UINT32),
                (2**40, VT.UINT64), (-(2**63), VT.INT64), (3, VT.UINT8), (7, VT.UINT32), ([8], VT.ARRAY, VT.UINT32)]
REQUIRED = {"embedding_length", "block_count", "attention.head_count", "feed_forward_length", "context_length"}


@pytest.mark.parametrize("arch", ["phi3", "phi2", "phimoe"])
@pytest.mark.parametrize("key", INT_KEYS)
def test_hostile_config_integers(tmp_path, arch, key):
    full = f"{arch}.{key}"
    outcomes = []
    for i, value in enumerate(HOSTILE_INTS):
        outcomes.append(loads_or_names(rewrite(SEEDS / f"{arch}.gguf", tmp_path / f"{i}.gguf", {full: value}), full))
    if key in REQUIRED:
        assert outcomes[0] == "refused"  # missing
    assert outcomes[1] == "refused"      # a string where a number belongs


@pytest.mark.parametrize("arch,key,bad", [("phi3", "phi3.attention.layer_norm_rms_epsilon", [0.0]),
                                          ("phi2", "phi2.attention.layer_norm_epsilon", [0.0]),
                                          ("phi3", "phi3.rope.freq_base", [0.0]),
                                          ("phimoe", "phicpp.phimoe.router_jitter_noise", [])])
def test_hostile_config_floats(tmp_path, arch, key, bad):
    for i, v in enumerate([math.nan, math.inf, -1.0] + bad):
        assert loads_or_names(rewrite(SEEDS / f"{arch}.gguf", tmp_path / f"{i}.gguf", {key: (v, VT.FLOAT32)}),
                              key) == "refused", v
    assert loads_or_names(rewrite(SEEDS / f"{arch}.gguf", tmp_path / "s.gguf", {key: ("1e-5", VT.STRING)}),
                          key) == "refused"


@pytest.mark.parametrize("key,value", [("phimoe.expert_count", (1, VT.UINT32)),
                                       ("phimoe.expert_count", (2**30, VT.UINT32)),
                                       ("phimoe.expert_used_count", (1, VT.UINT32)),
                                       ("phimoe.expert_used_count", None)])
def test_hostile_expert_counts(tmp_path, key, value):
    assert loads_or_names(rewrite(SEEDS / "phimoe.gguf", tmp_path / "m.gguf", {key: value}), key) == "refused"


TOKENIZER_CASES = [
    ("tokenizer.ggml.model", None),
    ("tokenizer.ggml.model", ("bert", VT.STRING)),
    ("tokenizer.ggml.model", (3, VT.UINT32)),
    ("tokenizer.ggml.tokens", None),
    ("tokenizer.ggml.tokens", ([1, 2, 3], VT.ARRAY, VT.UINT32)),
    ("tokenizer.ggml.tokens", (["a", "a", "b"], VT.ARRAY, VT.STRING)),
    ("tokenizer.ggml.scores", ([0.0], VT.ARRAY, VT.FLOAT32)),
    ("tokenizer.ggml.scores", (["x"], VT.ARRAY, VT.STRING)),
    ("tokenizer.ggml.token_type", ([1, 1], VT.ARRAY, VT.INT32)),
    ("tokenizer.ggml.token_type", (["x"], VT.ARRAY, VT.STRING)),
    ("tokenizer.ggml.bos_token_id", ("x", VT.STRING)),
    ("tokenizer.ggml.add_bos_token", ("yes", VT.STRING)),
]


@pytest.mark.parametrize("arch", ["phi3", "phi2"])
@pytest.mark.parametrize("key,value", TOKENIZER_CASES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(TOKENIZER_CASES)])
def test_hostile_tokenizer_metadata(tmp_path, arch, key, value):
    path = rewrite(SEEDS / f"{arch}.gguf", tmp_path / "t.gguf", {key: value})
    with pytest.raises(TYPED, match=key.replace(".", r"\.")):
        phicpp.Tokenizer.from_gguf(path)


def test_tokenizer_values_that_load(tmp_path):
    """Special ids past the vocab are ignored (as llama.cpp), odd token types are 'undefined',
    merges of unknown tokens never apply: tokenizing still works."""
    for arch, changes in [("phi3", {"tokenizer.ggml.bos_token_id": (2**31 - 1, VT.UINT32),
                                    "tokenizer.ggml.eos_token_id": (-5, VT.INT32),
                                    "tokenizer.ggml.add_bos_token": (False, VT.BOOL),
                                    "tokenizer.ggml.token_type": ([99] * 29, VT.ARRAY, VT.INT32)}),
                          ("phi2", {"tokenizer.ggml.merges": (["Ġ", "zz qq", "a b c", ""], VT.ARRAY, VT.STRING)})]:
        t = phicpp.Tokenizer.from_gguf(rewrite(SEEDS / f"{arch}.gguf", tmp_path / f"{arch}.gguf", changes))
        ids = t.tokenize("ab abc", add_special=True)
        assert all(0 <= i < t.n_vocab for i in ids)
        t.detokenize(ids)


def test_phi2_without_merges_is_refused(tmp_path):
    path = rewrite(SEEDS / "phi2.gguf", tmp_path / "t.gguf", {"tokenizer.ggml.merges": None})
    with pytest.raises(phicpp.GGUFError, match="tokenizer.ggml.merges"):
        phicpp.Tokenizer.from_gguf(path)


def test_block_count_beyond_the_tensors_is_refused_first(tmp_path):
    path = rewrite(SEEDS / "phi3.gguf", tmp_path / "m.gguf", {"phi3.block_count": (2**28, VT.UINT32)})
    with pytest.raises(phicpp.GGUFError, match="'phi3.block_count' = 268435456 but the file has only 10 tensors"):
        phicpp.Model(path)


def test_missing_and_misshapen_tensors_are_named(tmp_path):
    # (without the fused qkv the loader looks for separate q, k and v)
    for drop, missing in [("token_embd.weight", "token_embd.weight"), ("blk.0.attn_qkv.weight", "blk.0.attn_q.weight"),
                          ("output_norm.weight", "output_norm.weight")]:
        rewrite(SEEDS / "phi3.gguf", tmp_path / "m.gguf", {}, tensors={drop: None})
        with pytest.raises(phicpp.GGUFError, match=f"'{missing}' is missing"):
            phicpp.Model(tmp_path / "m.gguf")
    # a head count that does not fit the tensors: the tensor and both shapes are named
    path = rewrite(SEEDS / "phi3.gguf", tmp_path / "h.gguf", {"phi3.attention.head_count_kv": (4, VT.UINT32)})
    with pytest.raises(phicpp.GGUFError, match=r"tensor 'blk\.0\.attn_qkv\.weight' has shape \[32, 64\], expected "
                       r"\[32, 96\] .*phi3\.attention\.head_count_kv = 4"):
        phicpp.Model(path)


def test_a_type_without_arithmetic_is_refused_at_load(tmp_path):
    # GGUF has types phicpp cannot compute with (IQ2_XXS, TQ1_0, ... in llama.cpp's files;
    # I8 here, whose block fits the seed's 32 columns): the load names the tensor and its
    # type, before any token (the CLI prints nothing else)
    name = "blk.0.attn_output.weight"
    ne0, ne1 = (int(n) for n in next(t for t in gguf.GGUFReader(str(SEEDS / "phi3.gguf")).tensors
                                     if t.name == name).shape)
    rewrite(SEEDS / "phi3.gguf", tmp_path / "q.gguf", {},
            tensors={name: (np.ones((ne1, ne0), np.int8), gguf.GGMLQuantizationType.I8)})
    with pytest.raises(phicpp.UnsupportedError, match=r"tensor 'blk\.0\.attn_output\.weight' is i8, a type "
                       r"phicpp cannot compute with \(it reads f32, f16, .*q4_0"):
        phicpp.Model(tmp_path / "q.gguf")
    r = subprocess.run([sys.executable, "-m", "phicpp", "generate", "-m", str(tmp_path / "q.gguf"), "-p", "hi"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and r.stdout == "" and r.stderr.count("\n") == 1 and "is i8" in r.stderr, r


@pytest.mark.parametrize("path", sorted(FUZZ_FOUND.glob("model-*.gguf")), ids=lambda p: p.name)
def test_inputs_the_model_fuzzer_found(path):
    """Each crashed tools/fuzz_model.cpp once (see tests/data/fuzz/README.md); now a typed
    error or a model that runs."""
    try:
        m = phicpp.Model(path, n_threads=1, n_batch=8)
        m.eval([0, m.n_vocab // 2, m.n_vocab - 1])
    except TYPED:
        pass
    try:
        t = phicpp.Tokenizer.from_gguf(path)
        t.detokenize(t.tokenize("<|user|>\nab  abc \xe9\u2581!<s>", add_special=True, parse_special=True))
    except TYPED:
        pass


# ---------------------------------------------------------------- allocation bounded by the file

CAPPED = r"""
import resource, sys
import phicpp
phicpp.Model, phicpp.Tokenizer, phicpp.GGUFFile  # (the package loads them on first use: before the cap)
# room for what is mapped and loaded already plus 32 MiB: a header-sized allocation fails
with open("/proc/self/status") as f:
    vm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (vm + (32 << 20), resource.RLIM_INFINITY))
for path in sys.argv[1:]:
    for name, open_ in (("file", phicpp.GGUFFile), ("tokenizer", phicpp.Tokenizer.from_gguf),
                        ("model", lambda p: phicpp.Model(p, n_threads=1))):
        try:
            open_(path)  # (the reader and the tokenizer may accept a file only its model breaks)
        except (phicpp.GGUFError, phicpp.UnsupportedError) as e:
            pass
        else:
            if name == "model":
                raise SystemExit(f"{path}: loaded")
print("ok")
"""


def _huge_claims(tmp_path: Path) -> list[Path]:
    """Small files whose headers claim arrays, counts, tensors and layers of gigabytes."""
    seed = (SEEDS / "phi3.gguf").read_bytes()
    files = []

    def put(name: str, data: bytes):
        files.append(tmp_path / name)
        files[-1].write_bytes(data)

    head = b"GGUF" + (3).to_bytes(4, "little")
    put("n_tensors.gguf", head + (2**40).to_bytes(8, "little") + (0).to_bytes(8, "little") + bytes(64))
    put("n_kv.gguf", head + (0).to_bytes(8, "little") + (2**40).to_bytes(8, "little") + bytes(64))

    def kv(key: bytes, vtype: int, payload: bytes) -> bytes:
        return len(key).to_bytes(8, "little") + key + vtype.to_bytes(4, "little") + payload

    one = (0).to_bytes(8, "little") + (1).to_bytes(8, "little")
    put("u8_array.gguf", head + one + kv(b"tokenizer.ggml.token_type", 9, (0).to_bytes(4, "little") +
                                         (2**40).to_bytes(8, "little")) + bytes(256))
    put("str_array.gguf", head + one + kv(b"tokenizer.ggml.tokens", 9, (8).to_bytes(4, "little") +
                                          (2**35).to_bytes(8, "little")) + bytes(256))
    put("nested_array.gguf", head + one + kv(b"x", 9, (9).to_bytes(4, "little") + (2**33).to_bytes(8, "little")) +
        bytes(4096))
    put("string.gguf", head + one + kv(b"general.name", 8, (2**45).to_bytes(8, "little")) + bytes(64))
    tensor = (b"\x11\0\0\0\0\0\0\0token_embd.weight" + (2).to_bytes(4, "little") + (2**20).to_bytes(8, "little") +
              (2**20).to_bytes(8, "little") + (0).to_bytes(4, "little") + (0).to_bytes(8, "little"))
    put("tensor.gguf", head + (1).to_bytes(8, "little") + (0).to_bytes(8, "little") + tensor + bytes(64))
    put("layers.gguf", rewrite(SEEDS / "phi3.gguf", tmp_path / "l.gguf",
                               {"phi3.block_count": (2**28, VT.UINT32)}).read_bytes())
    put("experts.gguf", rewrite(SEEDS / "phimoe.gguf", tmp_path / "e.gguf",
                                {"phimoe.expert_count": (2**28, VT.UINT32)}).read_bytes())
    put("key_length.gguf", rewrite(SEEDS / "phi3.gguf", tmp_path / "k.gguf",
                                   {"phi3.attention.key_length": (2**28, VT.UINT32),
                                    "phi3.attention.value_length": (2**28, VT.UINT32)}).read_bytes())
    put("ff.gguf", rewrite(SEEDS / "phi3.gguf", tmp_path / "f.gguf",
                           {"phi3.feed_forward_length": (2**28, VT.UINT32)}).read_bytes())
    assert max(p.stat().st_size for p in files) < 2 * len(seed)
    return files


def test_huge_claims_fail_typed_without_allocating(tmp_path):
    files = _huge_claims(tmp_path)
    r = subprocess.run([sys.executable, "-c", CAPPED, *map(str, files)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr
