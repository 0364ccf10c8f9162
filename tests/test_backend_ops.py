"""Every op of the backend seam, on every backend this machine has (the CPU at
each ISA it runs, and CUDA where there is a GPU), against float64 numpy
references: the same cases for each, so a second backend is tested exactly
like the first (llama.cpp's test-backend-ops, for phicpp's ops).

Bounds are what the seam promises, not what one backend happens to reach:
- f32 weights: products as exact as f32 arithmetic (relative to each token's
  largest activation);
- f16 and bf16 weights: activations may be rounded to f16 (as llama.cpp's
  cuBLAS path does; the CPU keeps f32);
- quantized weights: as exact as activations rounded to 8 bits per block of at
  most 256 (what decode on every backend does; prefill may do better);
- norms, activations, rotary, attention: f32 arithmetic.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from phicpp import _core as C

FLOAT_TYPES = ["f32", "f16", "bf16"]
# every weight type the README promises to run, not filtered by what the build offers
QUANT_TYPES = ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_K", "q3_K", "q4_K", "q5_K", "q6_K", "iq4_nl", "iq4_xs"]
NO_QUANTIZER = ("iq4_nl", "iq4_xs")  # read and run only
EDGE = np.array([0.0, -0.0, 1e-30, -1e-30, 1e-6, -1e-6, 0.5, -0.5, 3.0, -3.0, 10.0, -10.0, 20.0, -20.0,
                 100.0, -100.0, 1e4, -1e4, 3.4e38, -3.4e38], np.float32)


# ---------------------------------------------------------------- helpers
def block_size(typ):
    return C.type_info(typ)[1]


def make_weight(typ, rows, K, rng, scale=1.0):
    """Bytes of a weight [rows, K] of `typ` and its float64 values."""
    w = (rng.standard_normal((rows, K)) * scale).astype(np.float32)
    if typ == "f32":
        raw = w.view(np.uint8).reshape(rows, -1)
    elif typ == "f16":
        raw = w.astype(np.float16).view(np.uint8).reshape(rows, -1)
    elif typ not in NO_QUANTIZER:
        raw = C.quantize(w, typ)
    else:  # iq4 formats: random blocks with sane fp16 scales
        _, bs, ts = C.type_info(typ)
        raw = rng.integers(0, 256, (rows, K // bs, ts), dtype=np.uint8)
        d = (rng.standard_normal((rows, K // bs)) * 0.05 * scale).astype(np.float16)
        raw[:, :, 0:2] = d.view(np.uint8).reshape(rows, K // bs, 2)
        raw = raw.reshape(rows, -1)
    return raw, C.dequantize(raw, typ, [rows, K]).astype(np.float64)


def act_step(x, typ):
    """The activations' rounding a backend may do for this weight type: none for
    f32, to f16 for f16/bf16 (half an f16 ulp), to 8 bits per block of at most
    256 (half a step) for quantized types."""
    if typ == "f32":
        return np.zeros_like(x, dtype=np.float64)
    if typ in FLOAT_TYPES:
        return np.abs(x.astype(np.float64)) * 2.0 ** -11 + 2.0 ** -25
    n, K = x.shape
    pad = (-K) % 256
    a = np.abs(np.pad(x.astype(np.float64), ((0, 0), (0, pad)))).reshape(n, -1, 256).max(axis=2)
    return (np.repeat(a, 256, axis=1)[:, :K] / 127) * 0.5 + 1e-30


def layer_norm_ref(x, w, b, eps):
    x = x.astype(np.float64)
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps) * w
    return y + b if b is not None else y


def rms_norm_ref(x, w, eps):
    x = x.astype(np.float64)
    return x / np.sqrt((x ** 2).mean(axis=-1, keepdims=True) + eps) * w


def gelu_tanh_ref(x):
    x = x.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        y = 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))
    return np.where(np.isfinite(y), y, np.where(x > 0, x, 0.0))  # x**3 overflow in float64 is not ours


def silu_ref(g):
    g = g.astype(np.float64)
    with np.errstate(over="ignore"):
        return g / (1.0 + np.exp(-g))


def swiglu_ref_bound(g, u, bound_g, bound_u):
    """silu(g) * u, and how far a backend may be from it when g and u may be
    off by bound_g and bound_u: d(silu(g) u) = silu'(g) u dg + silu(g) du,
    |silu'| <= 1.1, plus f32 rounding."""
    ref = silu_ref(g) * u
    return ref, 1.1 * np.abs(u) * bound_g + np.abs(silu_ref(g)) * bound_u + 3e-6 * np.abs(ref) + 1e-7


def attention_reference(q, k, v, pos0, n_head, n_head_kv, scale, window=0):
    """q [n, n_head*hd] for positions pos0.., caches [>= pos0+n, n_head_kv*hd]."""
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


def rope_reference(x, n_heads, hd, positions, inv_freq, mscale):
    """NeoX rotary of the first n_rot dims of each head, angles in f32 like transformers."""
    y = x.astype(np.float64).copy()
    half = len(inv_freq)
    for t, pos in enumerate(positions):
        theta = (np.float32(pos) * inv_freq.astype(np.float32)).astype(np.float64)
        c, s = np.cos(theta) * mscale, np.sin(theta) * mscale
        for h in range(n_heads):
            a = x[t, h * hd:h * hd + half].astype(np.float64)
            b = x[t, h * hd + half:h * hd + 2 * half].astype(np.float64)
            y[t, h * hd:h * hd + half] = a * c - b * s
            y[t, h * hd + half:h * hd + 2 * half] = b * c + a * s
    return y


# ---------------------------------------------------------------- matmul
MATMUL_SHAPES = [(1, 1), (3, 2), (17, 1), (37, 3), (70, 2), (130, 1)]  # (rows, blocks of 256 or 160)
TOKENS = [1, 2, 3, 5, 8, 9, 17, 40]


def matmul_case(typ, rows, blocks, n, seed):
    rng = np.random.default_rng(seed)
    if typ in FLOAT_TYPES:
        K = 613 if blocks > 1 else 40 + blocks  # odd K: tails after every vector width
    else:
        K = 256 * blocks if block_size(typ) == 256 else 160 * blocks
    raw, w = make_weight(typ, rows, K, rng)
    x = rng.standard_normal((n, K)).astype(np.float32)
    return raw, w, x, rng


def product_bound(step, x, w):
    """How far x . w^T may be off: activations rounded by up to `step`
    (act_step), plus f32 rounding."""
    return step @ np.abs(w).T + 2e-6 * (np.abs(x) @ np.abs(w).T + 1)


def check_matmul(y, ref, w, x_used, typ, extra=0.0):
    """|y - ref| within f32 rounding plus the 8-bit activation bound."""
    bound = product_bound(act_step(x_used, typ), x_used, w) + extra
    err = np.abs(y - ref)
    assert y.shape == ref.shape
    assert np.all(np.isfinite(y))
    assert np.all(err <= bound), f"max excess {np.max(err - bound):.3g} (err {err.max():.3g})"


@pytest.mark.parametrize("typ", FLOAT_TYPES + QUANT_TYPES)
@pytest.mark.parametrize("rows,blocks", MATMUL_SHAPES)
@pytest.mark.parametrize("n", TOKENS)
def test_matmul(backend, typ, rows, blocks, n):
    raw, w, x, rng = matmul_case(typ, rows, blocks, n, rows * 1000 + blocks * 10 + n)
    bias = rng.standard_normal(rows).astype(np.float32)
    y = backend.matmul(raw, typ, (rows, w.shape[1]), x, bias=bias)
    check_matmul(y, x.astype(np.float64) @ w.T + bias, w, x, typ)


@pytest.fixture
def exact(backend):
    """The backend with exact activations on for one test (Backend.set_exact_activations)."""
    backend.set_exact_activations(True)
    yield backend
    backend.set_exact_activations(False)


@pytest.mark.parametrize("typ", ["f16", "bf16"])
@pytest.mark.parametrize("n", [1, 9, 40])
def test_matmul_exact_activations(exact, typ, n):
    """With exact activations on, float weights' products are f32-accurate on every
    path (the GPU's prefill GEMM then meets the activations' f16 low parts too): the
    bound of f32 weights, with activations of a wide range."""
    raw, w, x, rng = matmul_case(typ, 70, 3, n, 900 + n)
    x = x * np.exp(rng.uniform(-4, 4, x.shape[1])).astype(np.float32)
    y = exact.matmul(raw, typ, (70, w.shape[1]), x)
    check_matmul(y, x.astype(np.float64) @ w.T, w, x, "f32")


@pytest.mark.parametrize("typ", FLOAT_TYPES + QUANT_TYPES)
@pytest.mark.parametrize("layout,shape", [("rows", "short"), ("preferred", "short"), ("preferred", "long")])
def test_matmul_row_invariant(backend, typ, layout, shape):
    """With row invariance on, every row of a matmul of n rows equals the same row alone,
    bit for bit, whatever n (a sequence decoded beside others gets the tokens it gets alone).
    Long rows (several KB, as in the models) are summed in segments; one token and a few
    go through different GPU kernels, which must agree to the bit."""
    seed = len(typ) * 31 + len(layout) + len(shape)
    if shape == "short":
        rows = 70
        raw, w, x, rng = matmul_case(typ, rows, 3, 13, seed)
    else:
        rows = 300
        rng = np.random.default_rng(seed)
        K = 4096 if typ in FLOAT_TYPES else (6144 if block_size(typ) == 256 else 7680)
        raw, w = make_weight(typ, rows, K, rng)
        x = rng.standard_normal((13, K)).astype(np.float32)
    bias = rng.standard_normal(rows).astype(np.float32)
    rearrange = layout == "preferred"
    backend.set_row_invariant(True)
    try:
        alone = np.concatenate([backend.matmul(raw, typ, (rows, w.shape[1]), x[t:t + 1], bias=bias,
                                               rearrange=rearrange) for t in range(13)])
        for n in (2, 5, 8, 9, 13):
            y = backend.matmul(raw, typ, (rows, w.shape[1]), x[:n], bias=bias, rearrange=rearrange)
            assert np.array_equal(y, alone[:n]), f"n={n}: rows differ from alone"
        if shape == "long":
            check_matmul(alone, x.astype(np.float64) @ w.T + bias, w, x, typ)
    finally:
        backend.set_row_invariant(False)


@pytest.mark.parametrize("typ", ["f32", "f16", "q8_0", "q4_0", "q4_K", "q6_K"])
@pytest.mark.parametrize("norm", ["layer", "rms"])
@pytest.mark.parametrize("n", [1, 3, 8, 19])
def test_matmul_with_input_norm(backend, typ, norm, n):
    raw, w, x, rng = matmul_case(typ, 21, 2, n, n * 7 + len(norm))
    K = w.shape[1]
    x = x * 3 + 1.5  # a mean and a scale for the norm to remove
    nw = (1 + 0.2 * rng.standard_normal(K)).astype(np.float32)
    nb = (0.1 * rng.standard_normal(K)).astype(np.float32) if norm == "layer" else None
    y = backend.matmul(raw, typ, (21, K), x, norm=norm, norm_w=nw, norm_b=nb, eps=1e-5)
    xn = layer_norm_ref(x, nw, nb, 1e-5) if norm == "layer" else rms_norm_ref(x, nw, 1e-5)
    check_matmul(y, xn @ w.T, w, xn, typ)


@pytest.mark.parametrize("typ", ["q8_0", "q4_0", "q5_0", "q4_1", "q3_K", "q4_K", "q5_K", "q6_K", "iq4_xs", "f16"])
@pytest.mark.parametrize("n", [1, 3, 8, 9, 33])
def test_matmul_chain_equals_matmuls_alone(backend, typ, n):
    """Matmuls in a chain as a block runs them (an add into the residual, then an RMSNorm'd
    gate|up with SwiGLU, the down projection's add, an RMSNorm'd qkv), each reading the one
    before's output in one step, give bit for bit what each gives alone on the same input:
    a backend may hold work back between ops, reuse a converted input or hand an output on
    in another form, but not change a matmul's arithmetic."""
    bs = block_size(typ)
    E, F, Q = (256, 512, 40) if bs == 256 else (96, 160, 40)  # (96, 160: odd multiples of 32)
    rng = np.random.default_rng(n * 31 + bs)
    ws = [make_weight(typ, rows, K, rng, scale=0.3)[0] for rows, K in ((E, E), (2 * F, E), (E, F), (Q, E))]
    nw1 = (1 + 0.3 * rng.standard_normal(E)).astype(np.float32)
    nw3 = (1 + 0.3 * rng.standard_normal(E)).astype(np.float32)
    x = rng.standard_normal((n, E)).astype(np.float32)
    r0 = (3 * rng.standard_normal((n, E))).astype(np.float32)
    r2 = (3 * rng.standard_normal((n, E))).astype(np.float32)
    links = [(ws[0], typ, (E, E), "none", None, "add", r0), (ws[1], typ, (2 * F, E), "rms", nw1, "swiglu", None),
             (ws[2], typ, (E, F), "none", None, "add", r2), (ws[3], typ, (Q, E), "rms", nw3, "store", None)]
    chain = backend.matmul_chain(x, links)
    alone = [backend.matmul(ws[0], typ, (E, E), x, epilogue="add", y0=r0),
             backend.matmul(ws[1], typ, (2 * F, E), chain[0], norm="rms", norm_w=nw1, epilogue="swiglu"),
             backend.matmul(ws[2], typ, (E, F), chain[1], epilogue="add", y0=r2),
             backend.matmul(ws[3], typ, (Q, E), chain[2], norm="rms", norm_w=nw3)]
    for i, (c, a) in enumerate(zip(chain, alone)):
        assert np.all(np.isfinite(a)) and np.abs(a).max() > 0
        assert np.array_equal(c, a), f"link {i}: {np.count_nonzero(c != a)} of {a.size} differ"


@pytest.mark.parametrize("typ", ["f32", "f16", "bf16", "q8_0", "q4_0", "q5_1", "q4_K", "q6_K", "iq4_xs"])
@pytest.mark.parametrize("epilogue", ["add", "gelu", "swiglu"])
@pytest.mark.parametrize("n", [1, 2, 9, 33])
def test_matmul_epilogues(backend, typ, epilogue, n):
    rows = 46
    raw, w, x, rng = matmul_case(typ, rows, 2, n, n * 13 + len(epilogue))
    bias = (0.5 * rng.standard_normal(rows)).astype(np.float32)
    p = x.astype(np.float64) @ w.T + bias
    mag_bound = product_bound(act_step(x, typ), x, w)
    if epilogue == "add":
        y0 = rng.standard_normal((n, rows)).astype(np.float32) * 10
        y = backend.matmul(raw, typ, (rows, w.shape[1]), x, bias=bias, epilogue="add", y0=y0)
        check_matmul(y, p + y0, w, x, typ, extra=1e-6 * np.abs(y0))
        return
    y = backend.matmul(raw, typ, (rows, w.shape[1]), x, bias=bias, epilogue=epilogue)
    if epilogue == "gelu":
        ref = gelu_tanh_ref(p)
        bound = 1.2 * mag_bound + 3e-6 * np.abs(ref) + 1e-7
    else:
        ff = rows // 2
        ref, bound = swiglu_ref_bound(p[:, :ff], p[:, ff:], mag_bound[:, :ff], mag_bound[:, ff:])
    assert y.shape == ref.shape
    err = np.abs(y - ref)
    assert np.all(err <= bound), f"max excess {np.max(err - bound):.3g}"


@pytest.mark.parametrize("n", [1, 3, 8])
def test_activation_edge_values(backend, n):
    """gelu and swiglu on exact inputs (an f32 identity weight passes x through):
    huge, tiny and signed-zero values stay finite and accurate. (Few tokens: in a
    prefill GEMM, values far below a token's largest may be rounded relative to it.)"""
    K = 40
    eye = np.eye(K, dtype=np.float32)
    rng = np.random.default_rng(n)
    x = (rng.standard_normal((n, K)) * 4).astype(np.float32)
    x[0, :len(EDGE)] = EDGE
    g = backend.matmul(eye.view(np.uint8).reshape(K, -1), "f32", (K, K), x, epilogue="gelu")
    ref = gelu_tanh_ref(x)
    assert np.all(np.isfinite(g))
    # torch's formula cancels in 1 + tanh(u) for x < 0: allow that (~1e-7 |x|)
    assert np.all(np.abs(g - ref) <= 2e-6 * np.abs(ref) + 1e-7 * np.minimum(np.abs(x), 1e3) + 1e-30)
    x[0, :K // 2] = EDGE[:K // 2]  # the gate's edges, short of values whose silu(g) * u overflows
    x[0, 16:K // 2] = rng.standard_normal(K // 2 - 16)
    s = backend.matmul(eye.view(np.uint8).reshape(K, -1), "f32", (K, K), x, epilogue="swiglu")
    gate, up = x[:, :K // 2].astype(np.float64), x[:, K // 2:].astype(np.float64)
    ref = silu_ref(gate) * up
    assert np.all(np.isfinite(s))
    assert np.all(np.abs(s - ref) <= 2e-6 * np.abs(ref) + 1e-30 + 1e-7 * np.abs(up) * (np.abs(gate) > 80))


@pytest.mark.parametrize("typ", ["f16", "q8_0", "q4_K"])
def test_matmul_edge_activations(backend, typ):
    rng = np.random.default_rng(2)
    raw, w = make_weight(typ, 20, 512, rng)
    for x in [np.zeros((3, 512), np.float32), np.full((3, 512), -2.5, np.float32),
              (rng.standard_normal((3, 512)) * 1e4).astype(np.float32),
              (rng.standard_normal((11, 512)) * 1e4).astype(np.float32)]:
        y = backend.matmul(raw, typ, (20, 512), x)
        check_matmul(y, x.astype(np.float64) @ w.T, w, x, typ)


@pytest.mark.parametrize("typ", ["f32", "f16", "q8_0", "q4_K"])
@pytest.mark.parametrize("n", [3, 20])
def test_matmul_token_ranges(backend, typ, n):
    """Tokens of very different sizes in one batch (1e-30 .. 1e30 for float
    weights; for quantized ones the range of 8-bit blocks with fp16 scales, as
    in GGML): each is multiplied as accurately as at unit scale."""
    rng = np.random.default_rng(n)
    raw, w = make_weight(typ, 24, 512, rng)
    exps = np.resize([-30, -12, 0, 5, 12, 30] if typ in FLOAT_TYPES else [-2, 0, 1, 3, 5], n)
    x = (rng.standard_normal((n, 512)) * 10.0 ** exps[:, None]).astype(np.float32)
    y = backend.matmul(raw, typ, (24, 512), x)
    ref = x.astype(np.float64) @ w.T
    mag = np.abs(x).astype(np.float64) @ np.abs(w).T
    bound = act_step(x, typ) @ np.abs(w).T + 2e-6 * mag
    assert np.all(np.isfinite(y))
    assert np.all(np.abs(y - ref) <= bound), np.max(np.abs(y - ref) / mag)


def test_matmul_model_sized(backend):
    """Phi-3-mini's down projection shape (K = 8192), one token and a prompt."""
    rng = np.random.default_rng(5)
    for typ in ["f16", "q4_0", "q6_K"]:
        raw, w = make_weight(typ, 96, 8192, rng, scale=0.02)
        for n in (1, 24):
            x = rng.standard_normal((n, 8192)).astype(np.float32)
            check_matmul(backend.matmul(raw, typ, (96, 8192), x), x.astype(np.float64) @ w.T, w, x, typ)


def check_many_pairs(backend, typ, rows):
    """A matmul of rows (even) by 256, launched again and again (one token,
    eight, one: a launch must not depend on what the one before left), then as
    a SwiGLU (a gate row and its up row a pair), every output checked each time."""
    rng = np.random.default_rng(len(typ) + rows)
    K = 256
    raw, w = make_weight(typ, rows, K, rng)
    for n in (1, 8, 1):
        x = rng.standard_normal((n, K)).astype(np.float32)
        check_matmul(backend.matmul(raw, typ, (rows, K), x), x.astype(np.float64) @ w.T, w, x, typ)
    x = rng.standard_normal((1, K)).astype(np.float32)
    p = x.astype(np.float64) @ w.T
    mb = product_bound(act_step(x, typ), x, w)
    ff = rows // 2
    ref, bound = swiglu_ref_bound(p[:, :ff], p[:, ff:], mb[:, :ff], mb[:, ff:])
    y = backend.matmul(raw, typ, (rows, K), x, epilogue="swiglu")
    assert y.shape == ref.shape
    assert np.all(np.abs(y - ref) <= bound)


@pytest.mark.parametrize("typ", ["q4_0", "q8_0", "q4_K", "q6_K"])
@pytest.mark.parametrize("rows", [20002, 9218])
def test_matmul_more_pairs_than_warps(backend, typ, rows):
    """Many more pairs of rows than a GPU has warps in one wave (10,001 or
    4,609 pairs, about Phi-3-mini's qkv): the decode kernels' warps take
    several in turn, the last round partial."""
    check_many_pairs(backend, typ, rows)


def cuda_backend_with(monkeypatch, **env):
    """A new CUDA backend made with the given PHICPP_CUDA_* knobs set (read as
    it is made), or the test skipped where there is no GPU."""
    from phicpp import _core as C

    if not C.cuda_available():
        pytest.skip("no CUDA device")
    for key, value in env.items():
        monkeypatch.setenv("PHICPP_CUDA_" + key, value)
    return C.Backend("cuda")


@pytest.mark.parametrize("balance", ["1", "0"])
@pytest.mark.parametrize("rows", [4226, 9218, 20002])
def test_cuda_matmul_fewer_warps_fuller_rounds(monkeypatch, balance, rows):
    """Q4_K's pipelined decode matmuls run as few warps a CTA as keep their
    rounds of tasks (the default, PHICPP_CUDA_MV_BALANCE=1): on 132 SMs 2,113
    pairs take 2 rounds of 9 warps a CTA, 4,609 take 3 of 12, 10,001 keep 5 of
    16 (other SM counts give other splits); with the knob off, 16 warps."""
    check_many_pairs(cuda_backend_with(monkeypatch, MV_BALANCE=balance), "q4_K", rows)


@pytest.mark.parametrize("typ", ["q4_0", "q8_0", "q4_K", "q5_K", "q6_K", "iq4_xs"])
@pytest.mark.parametrize("rows", [37, 130])
@pytest.mark.parametrize("n", [1, 2, 8])
def test_matmul_long_rows_few_pairs(backend, typ, rows, n):
    """Decode shapes with long rows and few of them (odd counts: a last row alone):
    fewer pairs of rows than the GPU has warps, so most warps have none."""
    rng = np.random.default_rng(rows * 10 + n + len(typ))
    K = 2048 if block_size(typ) == 256 else 2080
    raw, w = make_weight(typ, rows, K, rng)
    x = rng.standard_normal((n, K)).astype(np.float32)
    bias = rng.standard_normal(rows).astype(np.float32)
    y = backend.matmul(raw, typ, (rows, K), x, bias=bias)
    check_matmul(y, x.astype(np.float64) @ w.T + bias, w, x, typ)


@pytest.mark.parametrize("exact_x", [False, True])
@pytest.mark.parametrize("K", [24, 360, 1032])
@pytest.mark.parametrize("n", [9, 70])
def test_matmul_f16_rows_of_16_bytes(backend, K, n, exact_x):
    """F16 rows that are 16-byte multiples: the GPU's prefill GEMM copies them with
    cp.async, through 2 or 3 k-steps in shared memory (PHICPP_CUDA_GEMM_STAGES); K from less
    than one 64-wide step to many with a partial last one, partial row and token tiles."""
    rng = np.random.default_rng(K + n)
    raw, w = make_weight("f16", 130, K, rng)
    x = rng.standard_normal((n, K)).astype(np.float32)
    backend.set_exact_activations(exact_x)
    try:
        y = backend.matmul(raw, "f16", (130, K), x)
    finally:
        backend.set_exact_activations(False)
    check_matmul(y, x.astype(np.float64) @ w.T, w, x, "f32" if exact_x else "f16")


def test_matmul_errors(backend):
    with pytest.raises(ValueError, match=r"x must be \[n, 8\]"):
        backend.matmul(np.zeros((2, 32), np.uint8), "f32", (2, 8), np.zeros((1, 7), np.float32))
    with pytest.raises(ValueError, match="62 bytes, expected 64"):
        backend.matmul(np.zeros((2, 31), np.uint8), "f32", (2, 8), np.zeros((1, 8), np.float32))
    with pytest.raises(ValueError, match="unknown epilogue"):
        backend.matmul(np.zeros((2, 32), np.uint8), "f32", (2, 8), np.zeros((1, 8), np.float32), epilogue="relu6")


# ---------------------------------------------------------------- get_rows
@pytest.mark.parametrize("typ", FLOAT_TYPES + QUANT_TYPES)
def test_get_rows(backend, typ):
    rng = np.random.default_rng(len(typ))
    K = 613 if typ in FLOAT_TYPES else 2 * block_size(typ) * (1 if block_size(typ) == 256 else 5)
    raw, w = make_weight(typ, 29, K, rng)
    ids = [0, 28, 5, 5, 17]
    y = backend.get_rows(raw, typ, (29, K), ids)
    assert np.allclose(y, w[ids], rtol=1e-6, atol=1e-7 * np.abs(w).max())


# ---------------------------------------------------------------- attention input (qk norm, rotary, cache)
def input_case(rng, n, n_head, n_head_kv, hd, n_rot, rows, dt, qk_norm):
    """q, k, v of n tokens, caches of `rows` rows, rotary frequencies and optional QK-norm vectors."""
    q = rng.standard_normal((n, n_head * hd)).astype(np.float32)
    k = rng.standard_normal((n, n_head_kv * hd)).astype(np.float32)
    v = rng.standard_normal((n, n_head_kv * hd)).astype(np.float32)
    kc = rng.standard_normal((rows, n_head_kv * hd)).astype(dt)
    vc = rng.standard_normal((rows, n_head_kv * hd)).astype(dt)
    inv_freq = (1.0 / (10000.0 ** (np.arange(0, n_rot, 2) / n_rot))).astype(np.float32)
    norms = None
    if qk_norm:
        norms = tuple((1 + 0.3 * rng.standard_normal(hd)).astype(np.float32) if i % 2 == 0 else
                      (0.1 * rng.standard_normal(hd)).astype(np.float32) for i in range(4)) + (1e-5,)
    return q, k, v, kc, vc, inv_freq, norms


def input_reference(q, k, n_head, n_head_kv, hd, pos0, inv_freq, mscale, norms):
    """q and k after the QK-norm (when norms) and the rotary, in float64."""
    n = q.shape[0]
    qr, kr = q.astype(np.float64), k.astype(np.float64)
    if norms is not None:
        qr = layer_norm_ref(q.reshape(n, n_head, hd), norms[0], norms[1], norms[4]).reshape(n, -1)
        kr = layer_norm_ref(k.reshape(n, n_head_kv, hd), norms[2], norms[3], norms[4]).reshape(n, -1)
    positions = range(pos0, pos0 + n)
    return (rope_reference(qr, n_head, hd, positions, inv_freq, mscale),
            rope_reference(kr, n_head_kv, hd, positions, inv_freq, mscale))


@pytest.mark.parametrize("cache", ["f32", "f16"])
@pytest.mark.parametrize("n_head,n_head_kv,hd,n_rot", [(4, 4, 16, 16), (4, 4, 20, 8), (6, 2, 96, 96),
                                                       (3, 1, 128, 96), (2, 2, 80, 32)])
@pytest.mark.parametrize("pos0,n", [(0, 1), (0, 7), (13, 1), (5, 33)])
@pytest.mark.parametrize("qk_norm", [False, True])
def test_attention_input(backend, cache, n_head, n_head_kv, hd, n_rot, pos0, n, qk_norm):
    rng = np.random.default_rng(pos0 * 100 + n + hd)
    dt = np.float32 if cache == "f32" else np.float16
    q, k, v, kc, vc, inv_freq, norms = input_case(rng, n, n_head, n_head_kv, hd, n_rot, pos0 + n + 3, dt, qk_norm)
    q2, k2, kc2, vc2 = backend.attention_input(q, k, v, kc, vc, pos0, n_head, n_head_kv, n_rot, inv_freq,
                                               mscale=1.25, qk_norm=norms)
    qr, kr = input_reference(q, k, n_head, n_head_kv, hd, pos0, inv_freq, 1.25, norms)
    rows = kc.shape[0]
    # angles reach ~pos: sin/cos of them are good to a few f32 ulps of the angle
    tol = 2e-6 * (pos0 + n + 1) + 1e-6
    assert np.allclose(q2, qr, rtol=0, atol=tol * np.abs(qr).max())
    assert np.allclose(k2, kr, rtol=0, atol=tol * np.abs(kr).max())
    # the cache holds k and v at their positions (rounded as the cache type rounds) and nothing else moved
    assert np.array_equal(kc2[pos0:pos0 + n], k2.astype(dt))
    assert np.array_equal(vc2[pos0:pos0 + n], v.astype(dt))
    untouched = np.r_[0:pos0, pos0 + n:rows]
    assert np.array_equal(kc2[untouched], kc[untouched]) and np.array_equal(vc2[untouched], vc[untouched])


def test_kv_cache_f16_rounding(backend):
    """The cache write rounds to f16 exactly as numpy does, special values included."""
    rng = np.random.default_rng(4)
    special = np.array([0.0, -0.0, 65504.0, 65520.0, -65520.0, 1e-8, -6e-8, 6.1e-5, 5.96e-8, 2.98e-8,
                        np.inf, -np.inf, 1.0009765625, 1.00048828125, 1.00146484375, 7.0], np.float32)
    x = np.concatenate([special, (rng.standard_normal(1024 - 16) * 100).astype(np.float32)]).reshape(4, 256)
    nan = np.full((4, 256), np.nan, np.float32)
    kc = np.zeros((4, 256), np.float16)
    _, _, k2, v2 = backend.attention_input(nan[:, :128].copy(), x, nan, kc, kc.copy(), 0, 1, 2, 0,
                                           np.zeros(0, np.float32))
    with np.errstate(over="ignore"):  # 65520 rounds to inf in fp16, as it should
        want = x.astype(np.float16)
    assert np.array_equal(k2.view(np.uint16), want.view(np.uint16))
    assert np.all(np.isnan(v2))


@pytest.mark.parametrize("cache", ["f32", "f16"])
@pytest.mark.parametrize("n_head,n_head_kv,hd,n_rot", [(4, 4, 16, 16), (6, 2, 96, 96), (3, 1, 128, 96),
                                                       (2, 2, 80, 32), (5, 5, 20, 8), (2, 1, 200, 100)])
@pytest.mark.parametrize("pos0,n", [(0, 1), (13, 1), (40, 1), (300, 1), (5, 6)])
@pytest.mark.parametrize("qk_norm,window", [(False, 0), (True, 0), (False, 7)])
def test_attention_after_input(backend, cache, n_head, n_head_kv, hd, n_rot, pos0, n, qk_norm, window):
    """The input step and the attention of one step, as a layer issues them (the CUDA backend runs a
    one-token step's pair as one launch): the output, and the cache holding the new keys."""
    rng = np.random.default_rng(pos0 * 7 + n + hd + window)
    dt = np.float32 if cache == "f32" else np.float16
    q, k, v, kc, vc, inv_freq, norms = input_case(rng, n, n_head, n_head_kv, hd, n_rot, pos0 + n + 2, dt, qk_norm)
    rows = kc.shape[0]
    scale = 1 / np.sqrt(hd)
    y, kc2, vc2 = backend.attention_input(q, k, v, kc, vc, pos0, n_head, n_head_kv, n_rot, inv_freq, mscale=1.1,
                                          qk_norm=norms, attend=(scale, window))
    qr, kr = input_reference(q, k, n_head, n_head_kv, hd, pos0, inv_freq, 1.1, norms)
    tol = 2e-6 * (pos0 + n + 1) + 1e-6
    new_k = kc2[pos0:pos0 + n].astype(np.float64)
    assert np.allclose(new_k, kr, rtol=0, atol=(tol + (2e-3 if dt == np.float16 else 0)) * np.abs(kr).max())
    assert np.array_equal(vc2[pos0:pos0 + n], v.astype(dt))
    untouched = np.r_[0:pos0, pos0 + n:rows]
    assert np.array_equal(kc2[untouched], kc[untouched]) and np.array_equal(vc2[untouched], vc[untouched])
    # the attention over the cache as written, with the rotated queries
    ref = attention_reference(qr.astype(np.float32), kc2, vc2, pos0, n_head, n_head_kv, scale, window)
    assert np.allclose(y, ref, rtol=1e-4, atol=1e-4), np.max(np.abs(y - ref))


# ---------------------------------------------------------------- attention
@pytest.mark.parametrize("cache", ["f32", "f16"])
@pytest.mark.parametrize("n_head,n_head_kv,hd", [(4, 4, 16), (8, 2, 20), (6, 3, 96), (4, 1, 128), (2, 2, 200)])
@pytest.mark.parametrize("pos0,n_tok,t0", [(0, 1, 0), (0, 9, 0), (7, 1, 0), (3, 40, 0), (300, 1, 0), (20, 12, 11),
                                           (0, 70, 30)])
@pytest.mark.parametrize("window", [0, 5])
def test_attention(backend, cache, n_head, n_head_kv, hd, pos0, n_tok, t0, window):
    rng = np.random.default_rng(pos0 * 31 + n_tok + hd + window)
    dt = np.float32 if cache == "f32" else np.float16
    rows = pos0 + n_tok + 2
    k = rng.standard_normal((rows, n_head_kv * hd)).astype(dt)
    v = rng.standard_normal((rows, n_head_kv * hd)).astype(dt)
    n_q = n_tok - t0
    q = (rng.standard_normal((n_q, n_head * hd)) * 2).astype(np.float32)
    scale = 1 / np.sqrt(hd)
    y = backend.attention(q, k, v, pos0, n_tok, t0, n_head, n_head_kv, scale, window)
    ref = attention_reference(q, k, v, pos0 + t0, n_head, n_head_kv, scale, window)
    tol = FLASH_TOL if takes_flash(backend, cache, n_q, hd) else 2e-5
    assert np.allclose(y, ref, rtol=tol / 2, atol=tol), np.max(np.abs(y - ref))


# CUDA's flash attention (f16 queries and probabilities on tensor cores) takes
# batches from PHICPP_CUDA_FLASH_MIN tokens (default 16; 0: never) over an f16
# cache, for head sizes that are multiples of 16 up to 128.
FLASH_HD = (16, 32, 48, 64, 80, 96, 112, 128)
FLASH_TOL = 4e-3  # values ~N(0, 1): f16 probabilities and queries, a few units of 2^-11


def takes_flash(backend, cache, n_q, hd):
    flash_min = int(os.environ.get("PHICPP_CUDA_FLASH_MIN", "16"))
    return (backend.name == "cuda" and cache == "f16" and hd in FLASH_HD and flash_min > 0
            and n_q >= flash_min)


@pytest.fixture
def flash_backend(monkeypatch):
    """A CUDA backend whose every batch of 2 or more tokens takes flash attention."""
    return cuda_backend_with(monkeypatch, FLASH_MIN="2")


@pytest.mark.parametrize("hd", FLASH_HD)
@pytest.mark.parametrize("n_head,n_head_kv", [(4, 4), (6, 2)])
@pytest.mark.parametrize("pos0,n_tok,t0,window", [(0, 2, 0, 0), (0, 64, 0, 0), (0, 200, 0, 0), (37, 130, 0, 0),
                                                  (5, 129, 60, 0), (0, 300, 0, 48), (90, 77, 0, 5),
                                                  (250, 65, 1, 2047), (0, 140, 0, 64)])
def test_cuda_flash_attention(flash_backend, hd, n_head, n_head_kv, pos0, n_tok, t0, window):
    """Causal, GQA, windows shorter and longer than a 64-key block, partial tiles, a
    chunk after earlier tokens (pos0) and queries from inside the step (t0)."""
    rng = np.random.default_rng(hd * 7 + pos0 + n_tok + window)
    rows = pos0 + n_tok + 3
    k = rng.standard_normal((rows, n_head_kv * hd)).astype(np.float16)
    v = rng.standard_normal((rows, n_head_kv * hd)).astype(np.float16)
    n_q = n_tok - t0
    q = (rng.standard_normal((n_q, n_head * hd)) * 2).astype(np.float32)
    scale = 1 / np.sqrt(hd)
    y = flash_backend.attention(q, k, v, pos0, n_tok, t0, n_head, n_head_kv, scale, window)
    ref = attention_reference(q, k, v, pos0 + t0, n_head, n_head_kv, scale, window)
    assert np.allclose(y, ref, rtol=FLASH_TOL / 2, atol=FLASH_TOL), np.max(np.abs(y - ref))


def test_cuda_flash_attention_sharp_and_flat_scores(flash_backend):
    """Scores far apart (one key takes all the weight, in f32 softmax arithmetic) and
    all equal (the mean of the values), with large query and key magnitudes."""
    hd, n = 64, 96
    k = np.zeros((n, hd), np.float16)
    k[::3] = 30.0  # every third key scores 30 * 30 * hd * scale with a query of 30s
    v = np.tile(np.arange(n, dtype=np.float16)[:, None], (1, hd))
    q = np.full((n, hd), 30.0, np.float32)
    y = flash_backend.attention(q, k, v, 0, n, 0, 1, 1, 1 / np.sqrt(hd), 0)
    ties = np.array([np.mean(np.arange(0, t + 1, 3)) for t in range(n)])
    assert np.all(np.isfinite(y))
    assert np.allclose(y[:, 0], ties, rtol=1e-3), (y[:5, 0], ties[:5])
    y = flash_backend.attention(np.zeros((n, hd), np.float32), k, v, 0, n, 0, 1, 1, 1.0, 0)
    assert np.allclose(y[:, 0], np.arange(n) / 2, rtol=1e-3)


@pytest.mark.parametrize("n_head,n_head_kv,n_tok,window", [(8, 2, 1, 0), (8, 2, 3, 0), (12, 3, 1, 0), (4, 4, 9, 0),
                                                           (8, 2, 5, 7)])
def test_cpu_attention_same_bits_at_any_thread_count(n_head, n_head_kv, n_tok, window):
    """The CPU deals attention as blocks of queries that share a KV head, smaller blocks where
    there are more threads than blocks; a query's sums do not depend on its block, so every
    thread count gives the same bits (as one query at a time would)."""
    rng = np.random.default_rng(n_head * 100 + n_tok)
    hd, pos0 = 96, 40
    k = rng.standard_normal((pos0 + n_tok, n_head_kv * hd)).astype(np.float16)
    v = rng.standard_normal((pos0 + n_tok, n_head_kv * hd)).astype(np.float16)
    q = rng.standard_normal((n_tok, n_head * hd)).astype(np.float32)
    for isa in [i for i in C.available_isas() if i != "scalar"]:
        outs = [C.Backend("cpu", isa=isa, n_threads=t).attention(q, k, v, pos0, n_tok, 0, n_head, n_head_kv,
                                                                  1 / np.sqrt(hd), window) for t in (1, 2, 5, 16)]
        assert all(np.array_equal(outs[0], o) for o in outs[1:]), isa


def test_attention_extreme_scores_stay_finite(backend):
    q = np.full((1, 16), 1e3, np.float32)
    k = np.concatenate([np.full((1, 16), 1e3), np.full((1, 16), -1e3), np.full((1, 16), 1e3)]).astype(np.float32)
    v = np.array([[1.0] * 16, [2.0] * 16, [3.0] * 16], np.float32)
    y = backend.attention(q, k, v, 2, 1, 0, 1, 1, 1.0)
    assert np.all(np.isfinite(y))
    assert np.allclose(y, 2.0)  # the two 1e3 keys tie, the -1e3 one vanishes


def test_attention_errors(backend):
    q = np.zeros((1, 8), np.float32)
    kv = np.zeros((1, 8), np.float32)
    with pytest.raises(ValueError):
        backend.attention(q, kv, kv, 1, 1, 0, 1, 1, 1.0)  # cache shorter than pos0 + n_tok
    with pytest.raises(ValueError):
        backend.attention(q, kv.astype(np.float64), kv, 0, 1, 0, 1, 1, 1.0)
    with pytest.raises(ValueError):
        backend.attention(q, kv, kv, 0, 1, 0, 3, 2, 1.0)


# ---------------------------------------------------------------- mixture of experts
def sparsemixer_reference(scores, jitter):
    """transformers' `sparsemixer` at inference (Phi-3.5-MoE), in float64: ids [n, 2]
    with the lower id first and their weights."""
    s = scores.astype(np.float64)
    n, X = s.shape
    ids = np.zeros((n, 2), np.int32)
    wts = np.zeros((n, 2))
    for t in range(n):
        row, taken = s[t].copy(), None
        for k in range(2):
            cand = row if taken is None else np.where(np.arange(X) == taken, -np.inf, row)
            best = int(np.argmax(cand))  # (the first of equal scores, as torch.max on the CPU)
            m = cand[best]
            factor = np.maximum(np.abs(row), m)
            with np.errstate(invalid="ignore", divide="ignore"):
                masked = (m - row) / factor > 2 * jitter
            gates = np.where(masked | (np.arange(X) == taken), -np.inf, cand)
            e = np.exp(gates - m)
            ids[t, k], wts[t, k] = best, e[best] / e.sum()
            taken = best
        if ids[t, 1] < ids[t, 0]:
            ids[t], wts[t] = ids[t, ::-1].copy(), wts[t, ::-1].copy()
    return ids, wts


@pytest.mark.parametrize("X", [2, 5, 16])
@pytest.mark.parametrize("jitter", [0.0, 0.01, 0.3])
def test_route_top2(backend, X, jitter):
    rng = np.random.default_rng(X * 100 + int(jitter * 100))
    scores = rng.standard_normal((37, X)).astype(np.float32)
    scores[3] = 0.0                         # all equal: the first two, by index
    scores[4, :] = -1.0
    scores[4, X - 1] = 1.0                  # one far ahead: its weight 1 within the window
    scores[5] = np.abs(scores[5]) * 1e-3    # close scores: most within the window
    ids, wts = backend.route_top2(scores, jitter)
    ref_ids, ref_w = sparsemixer_reference(scores, jitter)
    assert np.array_equal(ids, ref_ids)
    assert np.allclose(wts, ref_w, rtol=2e-6, atol=1e-7)


def test_route_top2_masks_unlike_softmax(backend):
    """Within the window every expert counts; outside it none does (plain top-2 softmax
    weighs the best by all experts)."""
    scores = np.array([[2.0, 1.9, -3.0, 0.0]], np.float32)
    ids, wts = backend.route_top2(scores, 0.01)
    assert ids.tolist() == [[0, 1]]
    assert wts[0, 0] == pytest.approx(1.0) and wts[0, 1] == pytest.approx(1.0)  # each alone in its window
    ids, wts = backend.route_top2(scores, 10.0)  # every expert in the window: plain softmax
    e = np.exp(scores[0].astype(np.float64) - 2.0)
    assert wts[0, 0] == pytest.approx(e[0] / e.sum(), rel=1e-5)
    assert wts[0, 1] == pytest.approx(e[1] / e[1:].sum(), rel=1e-5)


def expert_weights(typ, X, rows, K, rng, scale=1.0):
    made = [make_weight(typ, rows, K, rng, scale) for _ in range(X)]
    return [m[0] for m in made], [m[1] for m in made]


def expert_K(typ, blocks):
    if typ in FLOAT_TYPES:
        return 613 if blocks > 1 else 64  # odd: the scalar path; 64: 16-byte vectors
    return 256 * blocks if block_size(typ) == 256 else 160 * blocks


def random_picks(rng, n, X):
    ids = np.sort(np.stack([rng.choice(X, 2, replace=False) for _ in range(n)]), axis=1).astype(np.int32)
    return ids, rng.uniform(0.1, 1.0, (n, 2)).astype(np.float32)


MOE_TYPES = ["f32", "f16", "bf16", "q8_0", "q4_0", "q5_1", "q4_K", "q5_K", "q6_K", "q3_K", "iq4_xs"]


@pytest.mark.parametrize("typ", MOE_TYPES)
# up to 8: a GPU's decode kernels; 11, 150: grouped by expert (150: experts with more
# than one GPU tile of 64 picks)
@pytest.mark.parametrize("n", [1, 3, 8, 11, 150])
def test_experts_swiglu(backend, typ, n):
    rng = np.random.default_rng(len(typ) * 17 + n)
    check_experts_swiglu(backend, typ, rng, n, 5, random_picks(rng, n, 5)[0])


def check_experts_swiglu(backend, typ, rng, n, X, ids, bound_as=None):
    ff, K = 37, expert_K(typ, 2 if n % 2 else 1)
    graw, gw = expert_weights(typ, X, ff, K, rng)
    uraw, uw = expert_weights(typ, X, ff, K, rng)
    x = (rng.standard_normal((n, K)) * 2 + 0.7).astype(np.float32)
    nw = (1 + 0.2 * rng.standard_normal(K)).astype(np.float32)
    nb = (0.1 * rng.standard_normal(K)).astype(np.float32)
    h = backend.experts_swiglu(graw, uraw, typ, (ff, K), x, ids, norm="layer", norm_w=nw, norm_b=nb, eps=1e-5)
    xn = layer_norm_ref(x, nw, nb, 1e-5)
    assert h.shape == (2 * n, ff) and np.all(np.isfinite(h))
    for t in range(n):
        for j in range(2):
            e = ids[t, j]
            step = act_step(xn[t:t + 1], bound_as or typ)[0]
            ref, bound = swiglu_ref_bound(xn[t] @ gw[e].T, xn[t] @ uw[e].T, product_bound(step, xn[t], gw[e]),
                                          product_bound(step, xn[t], uw[e]))
            err = np.abs(h[2 * t + j] - ref)
            assert np.all(err <= bound), f"token {t} pick {j}: max excess {np.max(err - bound):.3g}"


@pytest.mark.parametrize("typ", MOE_TYPES)
@pytest.mark.parametrize("n", [1, 2, 8, 13, 150])
def test_experts_down_add(backend, typ, n):
    rng = np.random.default_rng(len(typ) * 19 + n)
    check_experts_down_add(backend, typ, rng, n, 4, *random_picks(rng, n, 4))


def check_experts_down_add(backend, typ, rng, n, X, ids, wts, bound_as=None):
    E, ff = 45, expert_K(typ, 1)
    draw, dw = expert_weights(typ, X, E, ff, rng)
    h = rng.standard_normal((2 * n, ff)).astype(np.float32)
    x0 = (rng.standard_normal((n, E)) * 5).astype(np.float32)
    x = backend.experts_down_add(draw, typ, (E, ff), h, ids, wts, x0)
    assert x.shape == (n, E) and np.all(np.isfinite(x))
    for t in range(n):
        ref, bound = x0[t].astype(np.float64), 1e-6 * np.abs(x0[t]) + 1e-7
        for j in range(2):
            e, w, hv = ids[t, j], float(wts[t, j]), h[2 * t + j]
            ref = ref + w * (hv @ dw[e].T)
            bound = bound + w * (act_step(hv[None], bound_as or typ)[0] @ np.abs(dw[e]).T
                                 + 2e-6 * (np.abs(hv) @ np.abs(dw[e]).T + 1))
        err = np.abs(x[t] - ref)
        assert np.all(err <= bound), f"token {t}: max excess {np.max(err - bound):.3g}"


@pytest.mark.parametrize("typ", ["f16", "bf16"])
def test_experts_exact_activations(exact, typ):
    """Exact activations on: float experts are f32-accurate on every path, also a
    prompt's grouped GEMM on the GPU (a tiny F16 Phi-3.5-MoE needs it to stay within
    2e-3 of transformers there)."""
    rng = np.random.default_rng(11)
    n = 70
    check_experts_swiglu(exact, typ, rng, n, 5, random_picks(rng, n, 5)[0], bound_as="f32")
    check_experts_down_add(exact, typ, rng, n, 4, *random_picks(rng, n, 4), bound_as="f32")


@pytest.mark.parametrize("typ", ["f16", "q4_K", "q8_0"])
def test_experts_skewed_groups(backend, typ):
    """Most tokens pick the same two of 16 experts (several GPU tiles each), a few pick
    others, most experts none: every grouping edge at once."""
    rng = np.random.default_rng(7)
    n, X = 203, 16
    ids = np.tile(np.array([[0, 15]], np.int32), (n, 1))
    ids[::17] = [3, 9]
    ids[5] = [14, 15]
    wts = rng.uniform(0.1, 1.0, (n, 2)).astype(np.float32)
    check_experts_swiglu(backend, typ, rng, n, X, ids)
    check_experts_down_add(backend, typ, rng, n, X, ids, wts)


def test_experts_errors(backend):
    rng = np.random.default_rng(0)
    raw, _ = expert_weights("f32", 3, 4, 8, rng)
    x = np.zeros((1, 8), np.float32)
    with pytest.raises(ValueError, match="out of range"):
        backend.experts_swiglu(raw, raw, "f32", (4, 8), x, np.array([[0, 3]], np.int32))
    with pytest.raises(ValueError, match="at least two"):
        backend.experts_swiglu(raw[:1], raw[:1], "f32", (4, 8), x, np.array([[0, 0]], np.int32))
    with pytest.raises(ValueError, match="h must be"):
        backend.experts_down_add(raw, "f32", (4, 8), np.zeros((1, 8), np.float32), np.array([[0, 1]], np.int32),
                                 np.ones((1, 2), np.float32), np.zeros((1, 4), np.float32))
