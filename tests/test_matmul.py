"""CPU matmul kernels against a float64 numpy reference, on every ISA this
machine runs, at odd shapes (rows not a multiple of 16 or of the 4-row tile,
token counts 1..9 around the tile widths, K with a tail after the SIMD width)."""
import numpy as np
import pytest

from phicpp import _core as C

ISAS = C.available_isas()
FLOAT_TYPES = ["f32", "f16", "bf16"]


def encode_float(w, typ):
    if typ == "f32":
        return w.astype(np.float32).view(np.uint8).reshape(w.shape[0], -1)
    if typ == "f16":
        return w.astype(np.float16).view(np.uint8).reshape(w.shape[0], -1)
    return C.quantize(w.astype(np.float32), "bf16")


def reference(w_bytes, typ, shape, x, bias=None):
    w = C.dequantize(w_bytes, typ, list(shape)).astype(np.float64)
    y = x.astype(np.float64) @ w.T
    if bias is not None:
        y += bias
    return y


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("typ", FLOAT_TYPES)
@pytest.mark.parametrize("rows,K", [(1, 8), (3, 13), (17, 64), (37, 101), (70, 256)])
@pytest.mark.parametrize("n", [1, 2, 3, 5, 9])
def test_float_matmul_matches_reference(isa, typ, rows, K, n):
    rng = np.random.default_rng(rows * 1000 + K + n)
    w = encode_float(rng.standard_normal((rows, K)).astype(np.float32), typ)
    x = rng.standard_normal((n, K)).astype(np.float32)
    bias = rng.standard_normal(rows).astype(np.float32)
    y = C.matmul(w, typ, (rows, K), x, bias=bias, isa=isa)
    ref = reference(w, typ, (rows, K), x, bias)
    assert y.shape == (n, rows)
    scale = np.abs(x).astype(np.float64) @ np.abs(C.dequantize(w, typ, [rows, K])).T.astype(np.float64) + 1
    assert np.all(np.abs(y - ref) <= 1e-6 * scale), np.max(np.abs(y - ref) / scale)


@pytest.mark.parametrize("isa", ISAS)
def test_f32_relative_error_at_model_size(isa):
    rng = np.random.default_rng(7)
    K, rows = 3072, 67
    w = rng.standard_normal((rows, K)).astype(np.float32)
    x = rng.standard_normal((4, K)).astype(np.float32)
    y = C.matmul(encode_float(w, "f32"), "f32", (rows, K), x, isa=isa, n_threads=2)
    ref = x.astype(np.float64) @ w.T.astype(np.float64)
    rel = np.abs(y - ref) / (np.abs(x).astype(np.float64) @ np.abs(w).T.astype(np.float64))
    assert rel.max() < 2e-6


@pytest.mark.parametrize("typ", FLOAT_TYPES)
def test_threads_give_identical_results(typ):
    rng = np.random.default_rng(3)
    rows, K = 133, 320
    w = encode_float(rng.standard_normal((rows, K)).astype(np.float32), typ)
    x = rng.standard_normal((6, K)).astype(np.float32)
    y1 = C.matmul(w, typ, (rows, K), x, n_threads=1)
    y2 = C.matmul(w, typ, (rows, K), x, n_threads=2)
    assert np.array_equal(y1, y2)


def test_isa_selection_and_errors():
    assert C.cpu_isa() in ISAS
    assert ISAS[0] == "scalar"
    before = C.cpu_isa()
    with pytest.raises(ValueError):
        C.set_isa("sse9")
    if "avx512" not in ISAS:
        with pytest.raises(C.UnsupportedError):
            C.set_isa("avx512")
        with pytest.raises(C.UnsupportedError):
            C.matmul(np.zeros((1, 32), np.uint8), "f32", (1, 8), np.zeros((1, 8), np.float32), isa="avx512")
    assert C.cpu_isa() == before
    C.set_isa("scalar")
    assert C.cpu_isa() == "scalar"
    C.set_isa("auto")
    assert C.cpu_isa() == ISAS[-1]


def test_bad_shapes_are_errors():
    with pytest.raises(ValueError):
        C.matmul(np.zeros((2, 32), np.uint8), "f32", (2, 8), np.zeros((1, 7), np.float32))
    with pytest.raises(ValueError):
        C.matmul(np.zeros((2, 31), np.uint8), "f32", (2, 8), np.zeros((1, 8), np.float32))
