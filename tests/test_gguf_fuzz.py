"""Corrupt GGUF files must end in a clean phicpp.GGUFError, never a crash.

Everything runs in-process on purpose: a read outside the mapping or a wild
allocation would kill the test run, which is the failure we look for. Each
case starts from a small valid file, damages it (truncation, byte flips,
patched counts/lengths/dims/offsets/alignment, duplicates), and then either
loads cleanly (and every value and tensor byte is touched) or raises GGUFError.
"""
from __future__ import annotations

import itertools
import os
import random
import re
import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as VT
from gguf import quants

import phicpp

# ---------------------------------------------------------------- a small valid file and its layout


def build_valid(path: Path) -> bytes:
    w = gguf.GGUFWriter(path, "phi2")
    w.add_uint32("phi2.block_count", 2)
    w.add_float32("phi2.attention.layer_norm_epsilon", 1e-5)
    w.add_bool("tokenizer.ggml.add_bos_token", True)
    w.add_string("general.name", "tïny")
    w.add_array("tokenizer.ggml.tokens", ["a", "bc", "<s>", "▁x"])
    w.add_array("tokenizer.ggml.scores", [0.0, -1.0, -2.5, 3.0])
    w.add_key_value("t.nested", [[1, 2], [3]], VT.ARRAY)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 64)).astype(np.float32)
    w.add_tensor("token_embd.weight", x)
    w.add_tensor("blk.0.attn_q.weight", quants.quantize(x, Q.Q8_0), raw_dtype=Q.Q8_0)
    w.add_tensor("output_norm.weight", x[0].astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.read_bytes()


class Field:
    def __init__(self, name: str, offset: int, size: int, kind: str):
        self.name, self.offset, self.size, self.kind = name, offset, size, kind

    def __repr__(self) -> str:
        return f"{self.name}@{self.offset}+{self.size}"


def layout(data: bytes) -> tuple[list[Field], int]:
    """Every field of the header, in order, and where the header ends."""
    fields: list[Field] = []
    pos = 0

    def take(name: str, fmt: str, kind: str):
        nonlocal pos
        size = struct.calcsize("<" + fmt)
        (v,) = struct.unpack_from("<" + fmt, data, pos)
        fields.append(Field(name, pos, size, kind))
        pos += size
        return v

    def string(name: str) -> bytes:
        nonlocal pos
        n = take(name + ".len", "Q", "strlen")
        fields.append(Field(name + ".bytes", pos, n, "strbytes"))
        pos += n
        return data[pos - n:pos]

    scalar_fmt = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "B", 10: "Q",
                  11: "q", 12: "d"}

    def value(name: str, vtype: int) -> None:
        if vtype == VT.STRING:
            string(name)
        elif vtype == VT.ARRAY:
            et = take(name + ".elem_type", "I", "vtype")
            n = take(name + ".count", "Q", "count")
            for i in range(n):
                value(f"{name}[{i}]", et)
        else:
            take(name, scalar_fmt[vtype], "scalar")

    take("magic", "I", "magic")
    take("version", "I", "version")
    n_tensors = take("n_tensors", "Q", "count")
    n_kv = take("n_kv", "Q", "count")
    for i in range(n_kv):
        key = string(f"kv{i}.key").decode()
        vt = take(f"kv{i}.type", "I", "vtype")
        value(f"kv{i}:{key}", vt)
    for i in range(n_tensors):
        string(f"t{i}.name")
        nd = take(f"t{i}.n_dims", "I", "n_dims")
        for d in range(nd):
            take(f"t{i}.ne{d}", "Q", "dim")
        take(f"t{i}.type", "I", "ttype")
        take(f"t{i}.offset", "Q", "offset")
    return fields, pos


@pytest.fixture(scope="module")
def valid(module_tmp) -> bytes:
    return build_valid(module_tmp("fuzzsrc") / "valid.gguf")


class Opener:
    """Writes each case to its own file (a file must never change under a live
    mapping) and checks the outcome."""

    def __init__(self, root: Path):
        self.root = root
        self.n = 0
        self.loaded = 0
        self.rejected = 0

    def open(self, data: bytes):
        self.n += 1
        p = self.root / f"case{self.n}.gguf"
        p.write_bytes(data)
        try:
            return phicpp.GGUFFile(p)
        finally:
            p.unlink()

    def check(self, data: bytes) -> str | None:
        """Loads cleanly (then touches everything) or raises GGUFError; returns the error."""
        try:
            f = self.open(data)
        except phicpp.GGUFError as e:
            self.rejected += 1
            msg = str(e)
            assert "GGUF file '" in msg, msg
            # and names the field: which header part, key (by number and name) or tensor
            assert NAMES_A_FIELD.match(msg.split("': ", 1)[1]), msg
            return msg
        self.loaded += 1
        touch_everything(f)
        return None

    def reject(self, data: bytes, *fragments: str) -> str:
        with pytest.raises(phicpp.GGUFError) as ei:
            self.open(data)
        msg = str(ei.value)
        for frag in fragments:
            assert frag in msg, f"{frag!r} not in {msg!r}"
        return msg


NAMES_A_FIELD = re.compile(r"(magic|version|tensor count|metadata key/value count|metadata key #\d+|"
                           r"metadata 'general\.alignment'|tensor #\d+|tensor '|data section)")


def touch_everything(f) -> None:
    md = f.metadata
    for k, v in md.items():
        if "\ufffd" not in k:  # a key of invalid UTF-8 is shown with replacements
            f.metadata_type(k)
        if isinstance(v, np.ndarray):
            v.sum()
    for i, t in enumerate(f.tensors):
        view = f.tensor_data(i if "\ufffd" in t.name else t.name)
        assert view.nbytes == t.nbytes
        assert t.offset + t.nbytes <= f.file_size
        bytes(memoryview(np.ascontiguousarray(view)).cast("B"))  # read every byte


@pytest.fixture
def opener(tmp_path) -> Opener:
    return Opener(tmp_path)


def patch(data: bytes, field: Field, value: int, fmt: str | None = None) -> bytes:
    fmt = fmt or {1: "B", 2: "H", 4: "I", 8: "Q"}[field.size]
    b = bytearray(data)
    struct.pack_into(fmt if fmt[0] in "<>" else "<" + fmt, b, field.offset, value)
    return bytes(b)


def find(fields: list[Field], name: str) -> Field:
    return next(f for f in fields if f.name == name)


# ---------------------------------------------------------------- sanity of the harness


def test_valid_file_loads(valid, opener):
    assert opener.check(valid) is None
    fields, end = layout(valid)
    f = opener.open(valid)
    assert len(f.tensors) == 3 and f.data_offset == (end + 31) // 32 * 32


# ---------------------------------------------------------------- truncation


def test_truncate_at_every_field_boundary(valid, opener):
    fields, end = layout(valid)
    cuts = sorted({f.offset for f in fields} | {f.offset + f.size for f in fields})
    for cut in cuts:
        if cut >= len(valid):
            continue
        msg = opener.check(valid[:cut])
        assert msg is not None, f"truncated at {cut} but loaded"
        assert "truncated" in msg or "left in the file" in msg or "run past" in msg, msg


def test_truncate_at_every_header_byte(valid, opener):
    _, end = layout(valid)
    for cut in range(0, end + 40):
        assert opener.check(valid[:cut]) is not None, cut


def test_truncate_inside_data(valid, opener):
    _, end = layout(valid)
    for cut in range(end + 40, len(valid), 7):
        opener.reject(valid[:cut], "run past")
    opener.reject(valid[:-1], "tensor 'output_norm.weight' data", "run past")


def test_empty_and_tiny_files(opener):
    for data in [b"", b"G", b"GGUF", b"GGUF\x03\0\0\0", b"GGUF\x03\0\0\0" + b"\0" * 15]:
        opener.reject(data, "truncated")
    # the smallest valid file: no tensors, no metadata
    f = opener.open(b"GGUF" + struct.pack("<IQQ", 3, 0, 0))
    assert f.metadata == {} and f.tensors == []


# ---------------------------------------------------------------- random damage


def test_random_byte_flips(valid, opener):
    rng = random.Random(1234)
    _, end = layout(valid)
    for i in range(400):
        b = bytearray(valid)
        for _ in range(rng.choice([1, 1, 2, 4, 8])):
            pos = rng.randrange(end if rng.random() < 0.9 else len(b))
            b[pos] = rng.randrange(256) if rng.random() < 0.5 else b[pos] ^ (1 << rng.randrange(8))
        opener.check(bytes(b))
    assert opener.loaded + opener.rejected == 400
    assert opener.rejected > 100  # most header damage must be caught


def test_random_field_values(valid, opener):
    """Every numeric header field set to hostile values."""
    fields, _ = layout(valid)
    hostile = [0, 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1, len(valid),
               len(valid) + 1, len(valid) // 2]
    for field in fields:
        if field.kind in ("strbytes", "scalar") or field.size not in (4, 8):
            continue
        for v in hostile:
            opener.check(patch(valid, field, v % (1 << (8 * field.size))))


# ---------------------------------------------------------------- targeted corruption with precise messages


def test_bad_magic_and_versions(valid, opener):
    fields, _ = layout(valid)
    opener.reject(b"GGML" + valid[4:], "magic", "GGML", "not a GGUF file")
    opener.reject(b"\x00\xff\x10\x80" + valid[4:], "magic", "not a GGUF file")
    ver = find(fields, "version")
    opener.reject(patch(valid, ver, 1), "GGUF v1")
    opener.reject(patch(valid, ver, 4), "version: expected 2 or 3, found 4")
    opener.reject(patch(valid, ver, 0), "version: expected 2 or 3, found 0")
    opener.reject(patch(valid, ver, 3, ">I"), "big-endian")


def test_big_endian_writer_output(tmp_path, opener):
    p = tmp_path / "be.gguf"
    w = gguf.GGUFWriter(p, "phi2", endianess=gguf.GGUFEndian.BIG)
    w.add_uint32("x", 1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    opener.reject(p.read_bytes(), "big-endian")


def test_huge_counts_rejected_before_allocating(valid, opener):
    fields, _ = layout(valid)
    opener.reject(patch(valid, find(fields, "n_kv"), 2**63), "metadata key/value count", "cannot fit")
    opener.reject(patch(valid, find(fields, "n_tensors"), 2**40), "tensor count", "cannot fit")
    tokens = next(f for f in fields if f.name.endswith("tokenizer.ggml.tokens.count"))
    opener.reject(patch(valid, tokens, 2**61), "'tokenizer.ggml.tokens' array count",
                  "elements of string")
    scores = next(f for f in fields if f.name.endswith("tokenizer.ggml.scores.count"))
    opener.reject(patch(valid, scores, 2**62 + 1), "'tokenizer.ggml.scores' array count")
    name_len = next(f for f in fields if f.name.endswith("general.name.len"))
    opener.reject(patch(valid, name_len, 2**64 - 1), "'general.name' string length")
    key_len = find(fields, "kv3.key.len")
    opener.reject(patch(valid, key_len, 10**12), "metadata key #3 string length",
                  "expected at most")
    tname = find(fields, "t1.name.len")
    opener.reject(patch(valid, tname, 2**50), "tensor #1 name string length")
    # a nested array's inner count
    inner = next(f for f in fields if f.name.endswith("t.nested[1].count"))
    opener.reject(patch(valid, inner, 2**60), "'t.nested'[1] array count")


def test_bad_value_types(valid, opener):
    fields, _ = layout(valid)
    opener.reject(patch(valid, find(fields, "kv2.type"), 13), "metadata key #2", "type", "found 13")
    elem = next(f for f in fields if f.name.endswith("tokenizer.ggml.scores.elem_type"))
    opener.reject(patch(valid, elem, 99), "'tokenizer.ggml.scores' array element type", "found 99")


def test_bad_tensor_infos(valid, opener):
    fields, _ = layout(valid)
    # tensor 0: token_embd.weight f32 [64, 2]; tensor 1: q8_0 [64, 2]; tensor 2: f16 [64]
    opener.reject(patch(valid, find(fields, "t0.n_dims"), 5),
                  "tensor #0 'token_embd.weight' n_dims", "at most 4, found 5")
    opener.reject(patch(valid, find(fields, "t0.ne1"), 0),
                  "'token_embd.weight' dims", "positive", "found 0")
    opener.reject(patch(valid, find(fields, "t0.ne1"), 2**63), "positive int64")
    opener.reject(patch(valid, find(fields, "t0.ne0"), 2**62), "'token_embd.weight'")
    # element count overflow across dims
    v = patch(valid, find(fields, "t0.ne0"), 2**40)
    opener.reject(patch(v, find(fields, "t0.ne1"), 2**40), "element count overflows")
    # bytes overflow even though elements fit
    opener.reject(patch(valid, find(fields, "t0.ne0"), 2**62), "overflow")
    opener.reject(patch(valid, find(fields, "t1.type"), 4), "'blk.0.attn_q.weight' type",
                  "unknown GGML type id 4")
    opener.reject(patch(valid, find(fields, "t1.type"), 2**31), "unknown GGML type id")
    opener.reject(patch(valid, find(fields, "t1.ne0"), 48),
                  "'blk.0.attn_q.weight' dims", "not a whole number of blocks", "q8_0 block size 32")
    # q8_0 -> q4_K: 64 is not a multiple of 256
    opener.reject(patch(valid, find(fields, "t1.type"), int(Q.Q4_K)), "block size 256")
    # type changed to one with bigger rows: data runs past the end
    opener.reject(patch(valid, find(fields, "t2.type"), int(Q.F64)),
                  "'output_norm.weight' data", "run past")
    off = find(fields, "t2.offset")
    (cur,) = struct.unpack_from("<Q", valid, off.offset)
    opener.reject(patch(valid, off, cur + 1), "'output_norm.weight' offset",
                  "multiple of the alignment 32", f"found {cur + 1}")
    opener.reject(patch(valid, off, cur + 32 * 1000), "run past")
    opener.reject(patch(valid, off, 2**64 - 32), "run past")


def test_duplicate_keys(valid, opener):
    # overwrite one key's bytes with another key of the same length
    fields, _ = layout(valid)
    keys = [f for f in fields if f.name.endswith(".key.bytes")]
    a, c = next((a, c) for a, c in itertools.combinations(keys, 2) if a.size == c.size)
    b = bytearray(valid)
    b[c.offset:c.offset + c.size] = valid[a.offset:a.offset + a.size]
    opener.reject(bytes(b), "duplicate key", "first seen as key #")


def test_duplicate_tensor_names(tmp_path, opener):
    kv = b""
    ti = b""
    for name in [b"a.weight", b"b.weight", b"a.weight"]:
        ti += struct.pack("<Q", len(name)) + name + struct.pack("<IQIQ", 1, 8, 0, 0)
    head = b"GGUF" + struct.pack("<IQQ", 3, 3, 0) + kv + ti
    data = head + b"\0" * ((-len(head)) % 32) + b"\0" * 32
    opener.reject(data, "tensor #2 'a.weight' name", "duplicate tensor name", "tensor #0")


def test_bad_alignment(tmp_path, opener):
    def file_with(alignment_kv: bytes) -> bytes:
        ti = struct.pack("<Q", 1) + b"w" + struct.pack("<IQIQ", 1, 8, 0, 0)
        head = b"GGUF" + struct.pack("<IQQ", 3, 1, 1) + alignment_kv + ti
        return head + b"\0" * ((-len(head)) % 64) + b"\0" * 64

    key = struct.pack("<Q", 17) + b"general.alignment"
    assert opener.open(file_with(key + struct.pack("<II", 4, 64))).alignment == 64
    for bad in [0, 3, 48, 2**31 + 1]:
        opener.reject(file_with(key + struct.pack("<II", 4, bad)), "'general.alignment'",
                      "power of two", f"found {bad}")
    opener.reject(file_with(key + struct.pack("<IQ", 10, 2**40)), "power of two up to 2^32")
    opener.reject(file_with(key + struct.pack("<Ii", 5, -32)), "found -32")
    opener.reject(file_with(key + struct.pack("<If", 6, 32.0)), "expected an unsigned integer, found float32")
    opener.reject(file_with(key + struct.pack("<IQ", 8, 2) + b"32"), "found string")


def test_non_utf8_names_in_errors(opener):
    # a duplicate key of raw bytes: the message escapes them instead of failing to decode
    key = struct.pack("<Q", 3) + b"\xff\xc3("
    kv = (key + struct.pack("<IB", 0, 1)) * 2
    msg = opener.reject(b"GGUF" + struct.pack("<IQQ", 3, 0, 2) + kv, "duplicate key")
    assert "\\xff\\xc3(" in msg


# ---------------------------------------------------------------- not files


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="nope.gguf"):
        phicpp.GGUFFile("/nonexistent/dir/nope.gguf")
    with pytest.raises(FileNotFoundError):
        phicpp.GGUFFile(Path("/nonexistent.gguf"))


def test_directory(tmp_path):
    with pytest.raises(phicpp.GGUFError, match="is a directory"):
        phicpp.GGUFFile(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads anything")
def test_unreadable(tmp_path):
    p = tmp_path / "secret.gguf"
    p.write_bytes(b"GGUF")
    p.chmod(0)
    with pytest.raises(phicpp.PhicppError, match="Permission denied"):
        phicpp.GGUFFile(p)
