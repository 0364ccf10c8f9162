"""Block formats against gguf-py (the `gguf` package): our quantizers bit for
bit where gguf implements one, our dequantizers bit for bit on every type
(on blocks from our quantizer and on random bytes), plus error bounds and edge
values for the K-quant quantizers gguf-py does not implement."""
import zlib

import numpy as np
import pytest
from gguf import GGMLQuantizationType as GT
from gguf import quants as gq

from phicpp import _core as C

GGUF_QUANTIZES = ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "bf16"]
KQUANTS = ["q2_K", "q3_K", "q4_K", "q5_K", "q6_K"]
ALL_WEIGHT_TYPES = ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0"] + KQUANTS
DEQUANT_TYPES = ALL_WEIGHT_TYPES + ["iq4_nl", "iq4_xs", "bf16", "f16"]


def seed(*parts):
    return zlib.crc32(repr(parts).encode())


def gtype(name):
    return GT[name.upper()]


def block_size(name):
    return C.type_info(name)[1]


def sample(kind, rows, K, rng):
    if kind == "normal":
        return rng.standard_normal((rows, K)).astype(np.float32)
    if kind == "zeros":
        return np.zeros((rows, K), np.float32)
    if kind == "negative":
        return -np.abs(rng.standard_normal((rows, K))).astype(np.float32) - 0.1
    if kind == "positive":
        return np.abs(rng.standard_normal((rows, K))).astype(np.float32) + 0.5
    if kind == "huge":  # scales still fit in fp16
        return (rng.standard_normal((rows, K)) * 2000).astype(np.float32)
    if kind == "tiny":  # fp16 subnormal scales
        return (rng.standard_normal((rows, K)) * 1e-6).astype(np.float32)
    if kind == "small":  # small weights whose K-quant scales are still normal fp16
        return (rng.standard_normal((rows, K)) * 1e-2).astype(np.float32)
    if kind == "mixed":  # zero blocks, constant blocks, one outlier per row
        x = rng.standard_normal((rows, K)).astype(np.float32)
        x[:, :32] = 0
        x[:, 32:64] = 0.75
        x[np.arange(rows), rng.integers(64, K, rows)] = 50
        return x
    if kind == "ties":  # values on rounding boundaries
        return (rng.integers(-16, 17, (rows, K)) / 4).astype(np.float32)
    raise ValueError(kind)


KINDS = ["normal", "zeros", "negative", "positive", "huge", "tiny", "mixed", "ties"]


@pytest.mark.parametrize("typ", GGUF_QUANTIZES)
@pytest.mark.parametrize("kind", KINDS)
def test_quantize_matches_gguf_bit_for_bit(typ, kind):
    rng = np.random.default_rng(seed(typ, kind))
    rows, K = 7, 256 * 3
    x = sample(kind, rows, K, rng)
    ours = C.quantize(x, typ)
    ref = gq.quantize(x, gtype(typ))
    assert ours.shape == ref.shape
    assert np.array_equal(ours, ref.reshape(ours.shape))


QUANTIZE_TYPES = ALL_WEIGHT_TYPES + ["bf16", "f16"]  # every type `phicpp quantize` writes, and the floats


def test_type_lists_are_what_the_build_offers():
    """The lists above are the README's, not read from the code under test: a type that
    loses its quantizer or dequantizer fails here instead of leaving the suite."""
    assert sorted(C.quant_types()) == sorted(QUANTIZE_TYPES + ["f32", "q8_1", "q8_K"])
    assert sorted(C.dequant_types()) == sorted(DEQUANT_TYPES + ["f32", "q8_1", "q8_K"])


@pytest.mark.parametrize("typ", QUANTIZE_TYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_dequantize_matches_gguf_on_our_blocks(typ, kind):
    rng = np.random.default_rng(seed(typ, kind, 1))
    rows, K = 5, 256 * 2
    x = sample(kind, rows, K, rng)
    q = C.quantize(x, typ)
    ours = C.dequantize(q, typ, [rows, K])
    ref = gq.dequantize(q, gtype(typ)).reshape(rows, K)
    assert np.array_equal(ours.view(np.uint32), ref.astype(np.float32).view(np.uint32))


def random_blocks(typ, rows, K, rng):
    """Random bytes with every fp16 field replaced by a finite random value."""
    _, bs, ts = C.type_info(typ)
    raw = rng.integers(0, 256, (rows, K // bs, ts), dtype=np.uint8)
    # fp16 field offsets per block (the rest are quants and packed scales)
    fp16_fields = {"q4_0": [0], "q4_1": [0, 2], "q5_0": [0], "q5_1": [0, 2], "q8_0": [0], "iq4_nl": [0],
                   "q2_K": [80, 82], "q3_K": [108], "q4_K": [0, 2], "q5_K": [0, 2], "q6_K": [208], "iq4_xs": [0]}
    for off in fp16_fields.get(typ, []):
        h = (rng.standard_normal(raw.shape[:2]) * 0.01).astype(np.float16)
        raw[:, :, off:off + 2] = h.view(np.uint8).reshape(rows, K // bs, 2)
    if typ in ("f16", "bf16"):
        v = rng.standard_normal((rows, K)).astype(np.float32)
        return (v.astype(np.float16).view(np.uint8) if typ == "f16" else C.quantize(v, "bf16")).reshape(rows, -1)
    return raw.reshape(rows, -1)


@pytest.mark.parametrize("typ", DEQUANT_TYPES)
def test_dequantize_matches_gguf_on_random_bytes(typ):
    rng = np.random.default_rng(11)
    rows, K = 9, 256 * 3
    q = random_blocks(typ, rows, K, rng)
    ours = C.dequantize(q, typ, [rows, K])
    ref = gq.dequantize(q, gtype(typ)).reshape(rows, K).astype(np.float32)
    assert np.array_equal(ours.view(np.uint32), ref.view(np.uint32))


# Relative RMS error bounds of quantize -> dequantize on gaussian data
# (llama.cpp's own numbers are ~ these; a broken scale search blows past them).
RMSE_BOUNDS = {"q2_K": 0.40, "q3_K": 0.20, "q4_K": 0.10, "q5_K": 0.05, "q6_K": 0.025,
               "q4_0": 0.12, "q4_1": 0.10, "q5_0": 0.06, "q5_1": 0.05, "q8_0": 0.008}


@pytest.mark.parametrize("typ", ALL_WEIGHT_TYPES)
@pytest.mark.parametrize("kind", ["normal", "negative", "positive", "huge", "small", "mixed"])
def test_roundtrip_error_is_bounded(typ, kind):
    rng = np.random.default_rng(seed(typ, kind, 2))
    rows, K = 11, 256 * 4
    x = sample(kind, rows, K, rng)
    y = C.dequantize(C.quantize(x, typ), typ, [rows, K])
    assert np.all(np.isfinite(y))
    err = np.sqrt(np.mean((y - x) ** 2)) / np.sqrt(np.mean(x ** 2))
    # (1e-6-sized weights would get fp16-subnormal or zero scales: a property of
    # the formats, as in llama.cpp, so the bound is checked on normal ranges only)
    bound = RMSE_BOUNDS[typ] * (2 if kind == "mixed" else 1)
    assert err < bound, err


@pytest.mark.parametrize("typ", ALL_WEIGHT_TYPES + ["bf16", "f16"])
def test_zero_rows_roundtrip_to_zero(typ):
    x = np.zeros((3, 512), np.float32)
    assert np.array_equal(C.dequantize(C.quantize(x, typ), typ, [3, 512]), x)


def test_row_length_errors():
    with pytest.raises(ValueError):
        C.quantize(np.zeros((2, 100), np.float32), "q4_0")
    with pytest.raises(ValueError):
        C.quantize(np.zeros((2, 128), np.float32), "q4_K")
    with pytest.raises(ValueError):
        C.dequantize(np.zeros(10, np.uint8), "q8_0", [1, 32])
    with pytest.raises(ValueError):
        C.quantize(np.zeros((2, 32), np.float32), "q9_9")
    with pytest.raises(C.UnsupportedError):
        C.quantize(np.zeros((2, 32), np.float32), "iq4_nl")
