"""CPU attention and activation kernels: every ISA against a float64 numpy
reference (and so against each other), at odd head sizes, GQA, sliding
windows, a cache prefix (pos0 > 0), f32 and f16 caches, and edge values."""
import numpy as np
import pytest

from phicpp import _core as C

ISAS = C.available_isas()


def attention_reference(q, k, v, pos0, n_head, n_head_kv, scale, window=0):
    n_tok = q.shape[0]
    hd = q.shape[1] // n_head
    group = n_head // n_head_kv
    k = k.astype(np.float64)
    v = v.astype(np.float64)
    out = np.zeros((n_tok, n_head * hd))
    for t in range(n_tok):
        pos = pos0 + t
        lo = max(0, pos - window + 1) if window > 0 else 0
        for h in range(n_head):
            kvh = h // group
            qh = q[t, h * hd:(h + 1) * hd].astype(np.float64) * scale
            s = k[lo:pos + 1, kvh * hd:(kvh + 1) * hd] @ qh
            w = np.exp(s - s.max())
            w /= w.sum()
            out[t, h * hd:(h + 1) * hd] = w @ v[lo:pos + 1, kvh * hd:(kvh + 1) * hd]
    return out


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("cache", ["float32", "float16"])
@pytest.mark.parametrize("n_head,n_head_kv,hd", [(4, 4, 16), (6, 2, 13), (2, 1, 80), (3, 3, 96), (2, 2, 7), (1, 1, 128),
                                                  (2, 1, 200)])
@pytest.mark.parametrize("pos0,n_tok,window", [(0, 1, 0), (0, 37, 0), (11, 1, 0), (5, 19, 0), (3, 30, 9)])
def test_attention_matches_reference(isa, cache, n_head, n_head_kv, hd, pos0, n_tok, window):
    rng = np.random.default_rng(n_head * 1000 + hd * 10 + pos0 + n_tok)
    q = rng.standard_normal((n_tok, n_head * hd)).astype(np.float32)
    k = (rng.standard_normal((pos0 + n_tok + 3, n_head_kv * hd)) * 2).astype(cache)
    v = rng.standard_normal((pos0 + n_tok + 3, n_head_kv * hd)).astype(cache)
    scale = 1.0 / np.sqrt(hd)
    y = C.cpu_attention(q, k, v, pos0, n_head, n_head_kv, scale, window, isa=isa, n_threads=2)
    ref = attention_reference(q, k, v, pos0, n_head, n_head_kv, scale, window)
    assert np.abs(y - ref).max() < 2e-5 * max(1.0, np.abs(ref).max())


@pytest.mark.parametrize("isa", ISAS)
def test_attention_extreme_scores_stay_finite(isa):
    # one key dominating by ~1e3 in the exponent: softmax must saturate, not overflow
    rng = np.random.default_rng(5)
    hd = 24
    q = (rng.standard_normal((3, hd)) * 30).astype(np.float32)
    k = (rng.standard_normal((3, hd)) * 30).astype(np.float32)
    v = rng.standard_normal((3, hd)).astype(np.float32)
    y = C.cpu_attention(q, k, v, 0, 1, 1, 1.0, isa=isa)
    ref = attention_reference(q, k, v, 0, 1, 1, 1.0)
    assert np.all(np.isfinite(y))
    assert np.allclose(y, ref, atol=1e-5)


def test_attention_thread_counts_agree():
    rng = np.random.default_rng(9)
    q = rng.standard_normal((21, 4 * 32)).astype(np.float32)
    k = rng.standard_normal((21, 2 * 32)).astype(np.float16)
    v = rng.standard_normal((21, 2 * 32)).astype(np.float16)
    a = C.cpu_attention(q, k, v, 0, 4, 2, 0.2, n_threads=1)
    b = C.cpu_attention(q, k, v, 0, 4, 2, 0.2, n_threads=2)
    assert np.array_equal(a, b)


def test_attention_bad_arguments_are_errors():
    q = np.zeros((2, 8), np.float32)
    kv = np.zeros((2, 8), np.float32)
    with pytest.raises(ValueError):
        C.cpu_attention(q, kv, kv, 1, 1, 1, 1.0)  # cache shorter than pos0 + n_tok
    with pytest.raises(ValueError):
        C.cpu_attention(q, kv.astype(np.float64), kv, 0, 1, 1, 1.0)
    with pytest.raises(ValueError):
        C.cpu_attention(q, kv, kv, 0, 3, 2, 1.0)


EDGE = np.array([0.0, -0.0, 1e-30, -1e-30, 1.0, -1.0, 3.0, -3.0, 10.0, -10.0, 20.0, -20.0, 50.0, -50.0,
                 100.0, -100.0, 1e4, -1e4, 3.4e38, -3.4e38], np.float32)


def gelu_tanh_ref(x):
    x = x.astype(np.float64)
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def silu_ref(g):
    g = g.astype(np.float64)
    with np.errstate(over="ignore"):
        return g / (1.0 + np.exp(-g))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n", [1, 7, 8, 9, 31, 1000])
def test_gelu_tanh_matches_reference(isa, n):
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * 4).astype(np.float32)
    x[: min(n, len(EDGE))] = EDGE[: min(n, len(EDGE))]
    y = C.cpu_activation("gelu_tanh", x, isa=isa)
    with np.errstate(over="ignore", invalid="ignore"):
        ref = gelu_tanh_ref(x)
    ref = np.where(np.isfinite(ref), ref, np.where(x > 0, x, 0.0))  # x**3 overflow in float64 is not ours
    assert np.all(np.isfinite(y))
    # the scalar reference is torch's formula, whose 1 + tanh(u) cancels for x < 0: allow
    # that absolute error (~1e-7 |x|); the AVX2 form x * sigmoid(2u) does not cancel
    tol = 2e-6 * np.abs(ref) + 1e-7 * np.minimum(np.abs(x), 1e3) + 1e-30
    assert np.all(np.abs(y - ref) <= tol), np.max(np.abs(y - ref) - tol)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("rows,ff", [(1, 1), (1, 8), (3, 13), (2, 100), (5, 8192 // 16)])
def test_swiglu_matches_reference(isa, rows, ff):
    rng = np.random.default_rng(rows * 31 + ff)
    x = (rng.standard_normal((rows, 2 * ff)) * 5).astype(np.float32)
    x[0, : min(ff, 16)] = EDGE[: min(ff, 16)]  # edge values in the gate
    y = C.cpu_activation("swiglu", x, isa=isa)
    g, u = x[:, :ff], x[:, ff:]
    ref = silu_ref(g) * u
    assert np.all(np.isfinite(y))
    assert np.all(np.abs(y - ref) <= 2e-6 * np.abs(ref) + 1e-30 + 1e-7 * np.abs(u) * (np.abs(g) > 80)), \
        np.max(np.abs(y - ref))


def test_unknown_activation_is_an_error():
    with pytest.raises(ValueError):
        C.cpu_activation("relu6", np.zeros(3, np.float32))


@pytest.mark.parametrize("isa", ISAS)
def test_kv_cache_f16_conversion_matches_numpy(isa):
    rng = np.random.default_rng(4)
    special = np.array([0.0, -0.0, 65504.0, 65520.0, -65520.0, 1e-8, -6e-8, 6.1e-5, 5.96e-8, 2.98e-8,
                        np.inf, -np.inf, 1.0009765625, 1.00048828125, 1.00146484375], np.float32)
    x = np.concatenate([special, (rng.standard_normal(1003) * 100).astype(np.float32)])
    y = C.cpu_f32_to_f16(x, isa=isa)
    assert np.array_equal(y, x.astype(np.float16).view(np.uint16))
    nan = C.cpu_f32_to_f16(np.full(9, np.nan, np.float32), isa=isa).view(np.float16)
    assert np.all(np.isnan(nan))
