"""The C++ GGUF reader against the `gguf` package: files written with GGUFWriter
(every value type, arrays of each, nested arrays, non-ASCII strings, custom
alignment, f32/f16/bf16/quantized tensors) and the real llama.cpp vocab files
must read back exactly as GGUFReader reads them."""
from __future__ import annotations

import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as VT
from gguf import quants

import phicpp

HERE = Path(__file__).parent


def vocab_files() -> list[Path]:
    local = sorted((HERE / "data").glob("ggml-vocab-*.gguf"))
    if local:
        return local
    return sorted((HERE.parents[1] / "shared" / "fixtures" / "vocab").glob("ggml-vocab-*.gguf"))


# ---------------------------------------------------------------- comparison with GGUFReader

def reader_type_name(types: list[VT]) -> str:
    name = types[-1].name.lower()
    for t in reversed(types[:-1]):
        assert t == VT.ARRAY
        name = f"array[{name}]"
    return name


def assert_same_as_reader(path: Path) -> phicpp.GGUFFile:
    """Everything GGUFReader sees in `path`, our reader sees identically."""
    r = gguf.GGUFReader(path)
    f = phicpp.GGUFFile(path)
    assert f.path == str(path)
    assert f.file_size == path.stat().st_size
    assert f.data_offset == r.data_offset
    assert f.alignment == r.alignment
    assert f.version == int(r.fields["GGUF.version"].parts[-1][0])

    ours = f.metadata
    theirs = {k: v for k, v in r.fields.items() if not k.startswith("GGUF.")}
    assert list(ours) == list(theirs), "keys or their order differ"
    for key, field in theirs.items():
        assert f.metadata_type(key) == reader_type_name(field.types), key
        want, got = field.contents(), ours[key]
        if len(field.types) > 2:  # nested array: GGUFReader cannot decode it; checked elsewhere
            continue
        if field.types[0] == VT.ARRAY and field.types[-1] != VT.STRING:
            assert isinstance(got, np.ndarray), key
            assert got.dtype == field.parts[field.data[0]].dtype if field.data else True, key
            np.testing.assert_array_equal(got, np.asarray(want, dtype=got.dtype), err_msg=key)
        elif field.types[0] in (VT.FLOAT32, VT.FLOAT64):
            assert got == want or (np.isnan(got) and np.isnan(want)), key
        else:
            assert got == want and type(got) is type(want), key

    assert len(f.tensors) == len(r.tensors)
    for t, rt in zip(f.tensors, r.tensors):
        assert t.name == rt.name
        assert t.type_id == int(rt.tensor_type)
        assert t.type == phicpp_type_name(rt.tensor_type)
        assert list(t.shape) == [int(d) for d in rt.shape]
        assert t.offset == rt.data_offset
        assert t.rel_offset == rt.data_offset - r.data_offset
        assert t.nbytes == rt.n_bytes
        assert t.n_elements == rt.n_elements
        assert t.offset % f.alignment == 0
        view = f.tensor_data(t.name)
        assert not view.flags.writeable
        assert view.tobytes() == rt.data.tobytes()
    return f


def phicpp_type_name(t: Q) -> str:
    # llama.cpp's names: lower case except the K of k-quants
    name = t.name.lower()
    return name[:-2] + "_K" if name.endswith("_k") else name


# ---------------------------------------------------------------- synthetic files

NESTED = [[1, 2, 3], [4], [5, 6]]
SCALARS = [  # (key, writer method, value, expected type name)
    ("t.u8", "add_uint8", 200, "uint8"),
    ("t.i8", "add_int8", -100, "int8"),
    ("t.u16", "add_uint16", 60000, "uint16"),
    ("t.i16", "add_int16", -30000, "int16"),
    ("t.u32", "add_uint32", 4_000_000_000, "uint32"),
    ("t.i32", "add_int32", -2_000_000_000, "int32"),
    ("t.u64", "add_uint64", 2**64 - 1, "uint64"),
    ("t.i64", "add_int64", -(2**63), "int64"),
    ("t.f32", "add_float32", 1.5, "float32"),
    ("t.f64", "add_float64", 1e300, "float64"),
    ("t.bool_t", "add_bool", True, "bool"),
    ("t.bool_f", "add_bool", False, "bool"),
    ("t.str", "add_string", "héllo wörld ✓ 🙂 日本語", "string"),
    ("t.empty_str", "add_key_value", "", "string"),  # add_string would skip it
]
ARRAYS = [  # (key, values, element type)
    ("a.u8", [0, 1, 255], VT.UINT8),
    ("a.i8", [-128, 0, 127], VT.INT8),
    ("a.u16", [0, 65535], VT.UINT16),
    ("a.i16", [-32768, 32767], VT.INT16),
    ("a.u32", [0, 2**32 - 1, 7], VT.UINT32),
    ("a.i32", [-(2**31), 2**31 - 1], VT.INT32),
    ("a.u64", [0, 2**64 - 1], VT.UINT64),
    ("a.i64", [-(2**63), 2**63 - 1], VT.INT64),
    ("a.f32", [0.5, -1.25, 3e38], VT.FLOAT32),
    ("a.f64", [0.1, -1e-300], VT.FLOAT64),
    ("a.bool", [True, False, True], VT.BOOL),
    ("a.str", ["a", "", "ünïcödé", "<0x0A>", "▁the"], VT.STRING),
]


def write_file(path: Path, alignment: int | None = None, tensors: bool = True) -> dict:
    """A file with every value type and a few tensors; returns the tensors written."""
    w = gguf.GGUFWriter(path, "phi3")
    if alignment is not None:
        w.add_custom_alignment(alignment)
    for key, method, value, _ in SCALARS:
        if method == "add_key_value":
            w.add_key_value(key, value, VT.STRING)
        else:
            getattr(w, method)(key, value)
    for key, values, vt in ARRAYS:
        w.add_key_value(key, values, VT.ARRAY, sub_type=vt)
    w.add_key_value("a.nested", NESTED, VT.ARRAY)
    written = {}
    if tensors:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((3, 64)).astype(np.float32)
        written = {
            "w.f32": (x, Q.F32),
            "w.f16": (rng.standard_normal((2, 3, 5)).astype(np.float16), Q.F16),
            "w.vec": (rng.standard_normal(7).astype(np.float32), Q.F32),
            "w.4d": (rng.standard_normal((2, 1, 3, 4)).astype(np.float32), Q.F32),
            "w.i32": (np.arange(-5, 6, dtype=np.int32), Q.I32),
            "w.bf16": (quants.quantize(x, Q.BF16), Q.BF16),
            "w.q8_0": (quants.quantize(x, Q.Q8_0), Q.Q8_0),
            "w.q4_0": (quants.quantize(x, Q.Q4_0), Q.Q4_0),
            # gguf-py cannot quantize q4_K; a reader only needs well-sized blocks
            "blk.0.attn_q.weight": (rng.integers(0, 256, (2, 144), dtype=np.uint8), Q.Q4_K),
        }
        for name, (data, qt) in written.items():
            raw = qt if data.dtype == np.uint8 else None
            w.add_tensor(name, data, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return written


@pytest.fixture(scope="module")
def sample(module_tmp) -> tuple[Path, dict]:
    path = module_tmp("gguf") / "sample.gguf"
    return path, write_file(path)


def test_every_value_type_reads_back(sample):
    path, _ = sample
    f = assert_same_as_reader(path)
    md = f.metadata
    assert md["general.architecture"] == "phi3"
    for key, _, value, tname in SCALARS:
        assert f.metadata_type(key) == tname
        if tname == "float32":
            assert md[key] == pytest.approx(value)
        else:
            assert md[key] == value and type(md[key]) is type(value), key
    dtypes = {VT.UINT8: np.uint8, VT.INT8: np.int8, VT.UINT16: np.uint16, VT.INT16: np.int16,
              VT.UINT32: np.uint32, VT.INT32: np.int32, VT.UINT64: np.uint64,
              VT.INT64: np.int64, VT.FLOAT32: np.float32, VT.FLOAT64: np.float64,
              VT.BOOL: np.bool_}
    for key, values, vt in ARRAYS:
        got = md[key]
        assert f.metadata_type(key) == f"array[{vt.name.lower()}]"
        if vt == VT.STRING:
            assert got == values
        else:
            assert got.dtype == dtypes[vt], key
            np.testing.assert_array_equal(got, np.array(values, dtype=dtypes[vt]))
    assert f.metadata_type("a.nested") == "array[array[int32]]"
    got = md["a.nested"]
    assert [list(x) for x in got] == NESTED
    assert all(x.dtype == np.int32 for x in got)


def test_tensors_read_back(sample):
    path, written = sample
    f = phicpp.GGUFFile(path)
    by_name = {t.name: t for t in f.tensors}
    assert list(by_name) == list(written)
    for name, (data, qt) in written.items():
        t = by_name[name]
        assert t.type_id == int(qt)
        view = f.tensor_data(name)
        if data.dtype == np.uint8:  # block formats: rows of bytes; bf16 comes as uint16
            assert view.tobytes() == data.tobytes()
            assert t.nbytes == data.nbytes
            elems_per_row = t.shape[0]
            bs, ts = gguf.GGML_QUANT_SIZES[qt]
            assert data.shape[-1] == elems_per_row // bs * ts
            assert tuple(reversed(t.shape[1:])) == data.shape[:-1]
        else:
            assert t.shape == tuple(reversed(data.shape))
            assert view.dtype == data.dtype and view.shape == data.shape
            np.testing.assert_array_equal(view, data)
    with pytest.raises(ValueError):  # read-only: it is the mapping itself
        f.tensor_data("w.f32")[0, 0] = 1.0
    with pytest.raises(KeyError):
        f.tensor_data("nope")


def test_views_outlive_the_file_object(sample):
    path, written = sample
    view = phicpp.GGUFFile(path).tensor_data("w.f32")  # the GGUFFile is only referenced by the view
    import gc

    gc.collect()
    np.testing.assert_array_equal(view, written["w.f32"][0])


@pytest.mark.parametrize("alignment", [1, 8, 64, 4096])
def test_custom_alignment(tmp_path, alignment):
    path = tmp_path / f"align{alignment}.gguf"
    write_file(path, alignment=alignment)
    f = assert_same_as_reader(path)
    assert f.alignment == alignment
    assert f.metadata["general.alignment"] == alignment
    assert f.data_offset % alignment == 0
    assert all(t.offset % alignment == 0 for t in f.tensors)


def test_no_tensors(tmp_path):
    path = tmp_path / "meta_only.gguf"
    write_file(path, tensors=False)
    f = assert_same_as_reader(path)
    assert f.tensors == []


@pytest.mark.parametrize("path", vocab_files(), ids=lambda p: p.name)
def test_real_vocab_files(path):
    f = assert_same_as_reader(path)
    md = f.metadata
    tokens = md["tokenizer.ggml.tokens"]
    assert len(tokens) == len(md["tokenizer.ggml.token_type"]) > 30000
    assert f.get_str_array("tokenizer.ggml.tokens") == tokens
    np.testing.assert_array_equal(f.get_int_array("tokenizer.ggml.token_type"),
                                  md["tokenizer.ggml.token_type"])
    if "tokenizer.ggml.scores" in md:
        np.testing.assert_array_equal(np.array(f.get_f32_array("tokenizer.ggml.scores"),
                                               dtype=np.float32), md["tokenizer.ggml.scores"])
    assert f.get_int("tokenizer.ggml.eos_token_id") == md["tokenizer.ggml.eos_token_id"]


def test_vocab_sizes_known():
    files = {p.name: p for p in vocab_files()}
    assert set(files) >= {"ggml-vocab-phi-3.gguf", "ggml-vocab-gpt-2.gguf"}
    assert len(phicpp.GGUFFile(files["ggml-vocab-phi-3.gguf"]).metadata["tokenizer.ggml.tokens"]) == 32064
    assert len(phicpp.GGUFFile(files["ggml-vocab-gpt-2.gguf"]).get_str_array("tokenizer.ggml.tokens")) == 50257


# ---------------------------------------------------------------- typed getters (the C++ API)

def test_typed_getters(sample):
    path, _ = sample
    f = phicpp.GGUFFile(path)
    # any integer type whose value fits
    assert f.get_int("t.u8") == 200
    assert f.get_int("t.i8") == -100
    assert f.get_int("t.u32") == 4_000_000_000
    assert f.get_int("t.i64") == -(2**63)
    with pytest.raises(phicpp.GGUFError, match=r"t\.u64.*does not fit"):
        f.get_int("t.u64")  # 2**64 - 1
    with pytest.raises(phicpp.GGUFError, match=r"sample\.gguf.*'t\.f32'.*expected an integer, found float32"):
        f.get_int("t.f32")
    with pytest.raises(phicpp.GGUFError, match="expected an integer, found bool"):
        f.get_int("t.bool_t")
    # any number as f64
    assert f.get_f64("t.f32") == 1.5
    assert f.get_f64("t.f64") == 1e300
    assert f.get_f64("t.i16") == -30000.0
    with pytest.raises(phicpp.GGUFError, match="expected a number, found string"):
        f.get_f64("t.str")
    assert f.get_bool("t.bool_t") is True and f.get_bool("t.bool_f") is False
    with pytest.raises(phicpp.GGUFError, match="expected a bool"):
        f.get_bool("t.u8")
    assert f.get_string("t.str") == "héllo wörld ✓ 🙂 日本語"
    assert f.get_string("t.empty_str") == ""
    with pytest.raises(phicpp.GGUFError, match=r"sample\.gguf.*'missing\.key' is missing"):
        f.get_string("missing.key")
    with pytest.raises(phicpp.GGUFError, match="missing"):
        f.get_int("missing.key")
    assert f.opt_int("missing.key") is None and f.opt_f64("missing.key") is None
    assert f.opt_int("t.u16") == 60000
    # arrays: empty when absent, an error for the wrong element type
    assert f.get_str_array("missing.key") == [] and f.get_int_array("missing.key") == []
    assert f.get_str_array("a.str") == ["a", "", "ünïcödé", "<0x0A>", "▁the"]
    assert f.get_int_array("a.i8") == [-128, 0, 127]
    assert f.get_int_array("a.u32") == [0, 2**32 - 1, 7]
    with pytest.raises(phicpp.GGUFError, match="does not fit"):
        f.get_int_array("a.u64")
    assert f.get_f32_array("a.f32") == pytest.approx([0.5, -1.25, 3e38])
    assert f.get_f32_array("a.i16") == [-32768.0, 32767.0]
    with pytest.raises(phicpp.GGUFError, match="expected an array of string, found array of int32"):
        f.get_str_array("a.i32")
    with pytest.raises(phicpp.GGUFError, match="expected an array of integers"):
        f.get_int_array("a.f32")
    with pytest.raises(phicpp.GGUFError, match="expected an array of numbers, found string"):
        f.get_f32_array("t.str")


def test_path_like_and_repr(sample):
    path, _ = sample
    f = phicpp.GGUFFile(path)  # a pathlib.Path
    assert f.path == str(path)
    assert "sample.gguf" in repr(f) and "9 tensors" in repr(f)
    assert "q8_0" in repr(f.tensors[6])


# ---------------------------------------------------------------- hand-built files (beyond GGUFWriter)

def gguf_bytes(kvs: bytes = b"", n_kv: int = 0, tensors: bytes = b"", n_tensors: int = 0,
               version: int = 3, data: bytes = b"", alignment: int = 32) -> bytes:
    head = b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv) + kvs + tensors
    pad = (-len(head)) % alignment
    return head + b"\0" * pad + data


def gstr(s: bytes) -> bytes:
    return struct.pack("<Q", len(s)) + s


def test_empty_arrays_and_deep_nesting(tmp_path):
    # GGUFWriter refuses empty arrays; llama.cpp and we accept them
    kv = gstr(b"e.num") + struct.pack("<IIQ", 9, 6, 0)
    kv += gstr(b"e.str") + struct.pack("<IIQ", 9, 8, 0)
    kv += gstr(b"e.nest") + struct.pack("<IIQ", 9, 9, 1) + struct.pack("<IQ", 4, 0)
    p = tmp_path / "empty.gguf"
    p.write_bytes(gguf_bytes(kv, 3))
    f = phicpp.GGUFFile(p)
    assert f.metadata["e.num"].shape == (0,) and f.metadata["e.num"].dtype == np.float32
    assert f.metadata["e.str"] == []
    assert len(f.metadata["e.nest"]) == 1 and f.metadata["e.nest"][0].dtype == np.uint32
    assert f.get_f32_array("e.num") == []


def test_nesting_depth_limit(tmp_path):
    def nested(depth: int) -> bytes:
        body = gstr(b"deep") + struct.pack("<I", 9)
        for _ in range(depth - 1):
            body += struct.pack("<IQ", 9, 1)
        return body + struct.pack("<IQ", 4, 1) + struct.pack("<I", 42)

    ok = tmp_path / "ok.gguf"
    ok.write_bytes(gguf_bytes(nested(8), 1))
    v = phicpp.GGUFFile(ok).metadata["deep"]
    for _ in range(7):
        v = v[0]
    assert list(v) == [42]
    bad = tmp_path / "deep.gguf"
    bad.write_bytes(gguf_bytes(nested(100_000), 1))
    with pytest.raises(phicpp.GGUFError, match="nested deeper"):
        phicpp.GGUFFile(bad)


def test_v2_accepted(tmp_path):
    p = tmp_path / "v2.gguf"
    p.write_bytes(gguf_bytes(gstr(b"k") + struct.pack("<IB", 0, 7), 1, version=2))
    f = phicpp.GGUFFile(p)
    assert f.version == 2 and f.metadata == {"k": 7}


def test_invalid_utf8_in_strings_is_allowed(tmp_path):
    p = tmp_path / "bytes.gguf"
    p.write_bytes(gguf_bytes(gstr(b"k") + struct.pack("<I", 8) + gstr(b"\xff\xfeok"), 1))
    assert phicpp.GGUFFile(p).metadata["k"] == "\ufffd\ufffdok"


def test_int_typed_alignment_accepted(tmp_path):
    # llama.cpp requires u32; a positive value of another integer type is harmless
    kv = gstr(b"general.alignment") + struct.pack("<IQ", 10, 64)
    p = tmp_path / "al.gguf"
    p.write_bytes(gguf_bytes(kv, 1, alignment=64))
    f = phicpp.GGUFFile(p)
    assert f.alignment == 64 and f.data_offset == 64
