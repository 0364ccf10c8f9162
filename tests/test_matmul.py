"""CPU matmul kernels against a float64 numpy reference, on every ISA this
machine runs (one CPU backend per ISA), at odd shapes (rows not a multiple
of 16 or of the 4-row tile, token counts 1..9 around the tile widths, K with
a tail after the SIMD width), with the CPU's own paths in mind: 8-bit
activations below gemm_min_tokens; above it, f32 activations in the f32 GEMM,
or activations in Q8_0 blocks in the int8 GEMM (C.matmul_prefill_path says
which a type gets on an ISA).
test_backend_ops.py runs the seam's cases on every backend."""
import threading

import numpy as np
import pytest

from phicpp import _core as C

ISAS = C.available_isas()
FLOAT_TYPES = ["f32", "f16", "bf16"]
_BACKENDS = {}


def cpu(isa="auto", n_threads=1):
    """One CPU backend per (ISA, threads), kept for the module."""
    key = (isa, n_threads)
    if key not in _BACKENDS:
        _BACKENDS[key] = C.Backend("cpu", isa=isa, n_threads=n_threads)
    return _BACKENDS[key]


def matmul(w, typ, shape, x, bias=None, isa="auto", n_threads=1, layout="rows"):
    """The kernels of `layout` as given (the backend rearranges nothing)."""
    return cpu(isa, n_threads).matmul(w, typ, shape, x, bias=bias, layout=layout, rearrange=False)


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
    y = matmul(w, typ, (rows, K), x, bias=bias, isa=isa)
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
    y = matmul(encode_float(w, "f32"), "f32", (rows, K), x, isa=isa, n_threads=2)
    ref = x.astype(np.float64) @ w.T.astype(np.float64)
    rel = np.abs(y - ref) / (np.abs(x).astype(np.float64) @ np.abs(w).T.astype(np.float64))
    assert rel.max() < 2e-6


@pytest.mark.parametrize("typ", FLOAT_TYPES)
def test_threads_give_identical_results(typ):
    rng = np.random.default_rng(3)
    rows, K = 133, 320
    w = encode_float(rng.standard_normal((rows, K)).astype(np.float32), typ)
    x = rng.standard_normal((6, K)).astype(np.float32)
    y1 = matmul(w, typ, (rows, K), x, n_threads=1)
    y2 = matmul(w, typ, (rows, K), x, n_threads=2)
    assert np.array_equal(y1, y2)


def test_isa_selection_and_errors():
    assert ISAS[0] == "scalar"
    assert cpu("auto").variant == ISAS[-1] or cpu("auto").variant in ISAS  # PHICPP_ISA may pick a weaker one
    assert [C.Backend("cpu", isa=i).variant for i in ISAS] == ISAS
    with pytest.raises(ValueError, match="unknown ISA 'sse9'"):
        C.Backend("cpu", isa="sse9")
    if "avx512" not in ISAS:
        with pytest.raises(C.UnsupportedError):
            C.Backend("cpu", isa="avx512")


def test_backends_of_different_isas_run_side_by_side():
    """Each backend owns its ISA: two threads with different ones never see each other's."""
    rng = np.random.default_rng(9)
    w = C.quantize(rng.standard_normal((64, 512)).astype(np.float32), "q4_K")
    x = rng.standard_normal((3, 512)).astype(np.float32)
    expect = {isa: C.Backend("cpu", isa=isa).matmul(w, "q4_K", (64, 512), x) for isa in ISAS}
    got = {isa: [] for isa in ISAS}

    def run(isa):
        be = C.Backend("cpu", isa=isa)
        for _ in range(30):
            got[isa].append(be.matmul(w, "q4_K", (64, 512), x))

    threads = [threading.Thread(target=run, args=(isa,)) for isa in ISAS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for isa in ISAS:
        assert all(np.array_equal(y, expect[isa]) for y in got[isa]), isa


def test_bad_shapes_are_errors():
    # the messages carry the numbers (formatted without iostreams: see core/error.h)
    with pytest.raises(ValueError, match=r"x must be \[n, 8\]"):
        matmul(np.zeros((2, 32), np.uint8), "f32", (2, 8), np.zeros((1, 7), np.float32))
    with pytest.raises(ValueError, match="62 bytes, expected 64"):
        matmul(np.zeros((2, 31), np.uint8), "f32", (2, 8), np.zeros((1, 8), np.float32))
    with pytest.raises(ValueError, match="row length 33 .* block size 32"):
        C.quantize(np.zeros((1, 33), np.float32), "q4_0")


# ---------------------------------------------------------------- quantized weights
# every weight type the README promises to run (not filtered by what the build offers:
# a type that loses its kernel must fail here, not leave the suite)
QUANT_TYPES = ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_K", "q3_K", "q4_K", "q5_K", "q6_K", "iq4_nl", "iq4_xs"]
NO_QUANTIZER = ("iq4_nl", "iq4_xs")  # read and run only
ACT_TYPE = {"q4_0": "q8_0", "q5_0": "q8_0", "q8_0": "q8_0", "iq4_nl": "q8_0", "q4_1": "q8_1", "q5_1": "q8_1"}


def make_quant_weight(typ, rows, K, rng):
    if typ not in NO_QUANTIZER:
        return C.quantize(rng.standard_normal((rows, K)).astype(np.float32), typ)
    # iq4 formats: random blocks with sane fp16 scales
    _, bs, ts = C.type_info(typ)
    raw = rng.integers(0, 256, (rows, K // bs, ts), dtype=np.uint8)
    raw[:, :, 0:2] = (rng.standard_normal((rows, K // bs)) * 0.05).astype(np.float16).view(np.uint8).reshape(rows, K // bs, 2)
    return raw.reshape(rows, -1)


def uses_gemm(isa, n):
    """SIMD ISAs multiply n >= gemm_min_tokens() tokens (prefill) with a GEMM;
    fewer tokens (decode) go through the row kernels. The scalar path is
    always the row kernels."""
    return isa != "scalar" and n >= C.gemm_min_tokens()


def prefill_acts(isa, typ, n, layout="rows"):
    """The activations a matmul of n tokens multiplies: "f32" (f32 GEMM),
    "q8_0" (int8 GEMM: Q8_0 blocks for every weight type), "bf16" (AMX-BF16
    GEMM: activations and dequantized weights rounded to bf16) or the type's
    own activation type (row kernels)."""
    path = C.matmul_prefill_path(typ, (8, 256), n, layout=layout, isa=isa)
    return {"f32": "f32", "i8": "q8_0", "bf16": "bf16"}.get(path, ACT_TYPE.get(typ, "q8_K"))


def bf16_round(a):
    """a rounded to bf16 (nearest, ties to even), as float64."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    return u.astype(np.uint32).view(np.float32).astype(np.float64)


def act_tol(acts):
    """Bound on |y - ref| / (mag + 1) against quant_reference with these
    activations: the integer dots are exact, only f32 scale products and sums
    round (Q8_1's fp16 s = d*sum(q) adds ~1e-3 relative of the min term). The
    bf16 GEMM's operands are the reference's exactly, except where a weight's
    f32 value (its scale times code plus min, in another order than the
    reference dequantizer) lands a last bit apart at a bf16 rounding tie: one
    bf16 step (2^-8 relative) of one term."""
    return {"f32": 2e-6, "q8_1": 2e-3, "bf16": 1e-4}.get(acts, 2e-5)


def quant_reference(w, typ, rows, K, x, f32_activations=False, acts=None):
    """float64 product of the dequantized weight with the activations as the
    kernels see them (quantized to Q8_0 / Q8_1 / Q8_K, then dequantized, or
    as they are for the f32 GEMM); `acts` names them ("f32", "q8_0", ...),
    default the type's decode activations (or f32 with f32_activations)."""
    act = acts or ("f32" if f32_activations else ACT_TYPE.get(typ, "q8_K"))
    wd = C.dequantize(w, typ, [rows, K]).astype(np.float64)
    if act == "f32":
        xq = x.astype(np.float64)
    elif act == "bf16":
        xq, wd = bf16_round(x), bf16_round(wd)
    else:
        xq = C.dequantize(C.quantize(x, act), act, list(x.shape)).astype(np.float64)
    return xq @ wd.T, np.abs(xq) @ np.abs(wd).T


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("typ", QUANT_TYPES)
@pytest.mark.parametrize("rows,blocks", [(1, 1), (5, 3), (17, 2), (37, 1)])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 9])
def test_quant_matmul_matches_reference(isa, typ, rows, blocks, n):
    bs = 256 if typ.endswith("_K") or typ == "iq4_xs" else 32
    K = bs * blocks if bs == 256 else 32 * 5 * blocks
    rng = np.random.default_rng(rows * 100 + blocks * 10 + n)
    w = make_quant_weight(typ, rows, K, rng)
    x = rng.standard_normal((n, K)).astype(np.float32)
    bias = rng.standard_normal(rows).astype(np.float32)
    y = matmul(w, typ, (rows, K), x, bias=bias, isa=isa)
    acts = prefill_acts(isa, typ, n)
    ref, mag = quant_reference(w, typ, rows, K, x, acts=acts)
    tol = act_tol(acts) * (mag + 1)
    assert np.all(np.abs(y - (ref + bias)) <= tol), np.max(np.abs(y - ref - bias) / (mag + 1))


# where each K-quant block keeps its fp16 scale(s) d (and dmin): byte offsets
KQUANT_FP16_AT = {"q2_K": (80, 82), "q3_K": (108,), "q4_K": (0, 2), "q5_K": (0, 2), "q6_K": (208,)}


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("typ", sorted(KQUANT_FP16_AT))
@pytest.mark.parametrize("n", [1, 3, 9])
def test_kquant_blocks_of_random_bytes(isa, typ, n):
    """K-quant blocks of random bytes but for sane fp16 scales: every value of
    the packed sub-block scales and mins (the quantizer's blocks rarely set the
    top bits of Q4_K/Q5_K's 6-bit scales of sub-blocks 4-7, or give Q3_K's the
    full signed range) and of the code bits; decode (one token), the few-token
    tiles and the GEMM against the float64 reference."""
    rng = np.random.default_rng(len(typ) * 10 + n)
    _, bs, ts = C.type_info(typ)
    rows, nb = 24, 3
    raw = rng.integers(0, 256, (rows, nb, ts), dtype=np.uint8)
    for at in KQUANT_FP16_AT[typ]:
        raw[:, :, at:at + 2] = rng.uniform(0.001, 0.01, (rows, nb)).astype(np.float16).view(np.uint8).reshape(rows, nb, 2)
    w = raw.reshape(rows, -1)
    K = nb * bs
    x = rng.standard_normal((n, K)).astype(np.float32)
    y = matmul(w, typ, (rows, K), x, isa=isa)
    acts = prefill_acts(isa, typ, n)
    ref, mag = quant_reference(w, typ, rows, K, x, acts=acts)
    assert np.all(np.abs(y - ref) <= act_tol(acts) * (mag + 1)), np.max(np.abs(y - ref) / (mag + 1))


def odd_case(typ, rows, n, rng):
    """Weights of `typ` (rows x K), n tokens' activations and a bias, K spanning several
    256-column blocks with a short last block (and a tail for float types)."""
    if typ in FLOAT_TYPES:
        K = 613
        w = encode_float(rng.standard_normal((rows, K)).astype(np.float32), typ)
    else:
        K = 768 if typ.endswith("_K") or typ == "iq4_xs" else 32 * 19
        w = make_quant_weight(typ, rows, K, rng)
    x = rng.standard_normal((n, K)).astype(np.float32)
    bias = rng.standard_normal(rows).astype(np.float32)
    return w, K, x, bias


@pytest.mark.parametrize("isa", ISAS[1:])
@pytest.mark.parametrize("typ", FLOAT_TYPES + QUANT_TYPES)
@pytest.mark.parametrize("rows,n", [(6, 8), (47, 9), (49, 16), (97, 23), (100, 40), (13, 130),
                                    (12, 17), (95, 33), (193, 47)])
def test_gemm_path_matches_reference(isa, typ, rows, n):
    """The prefill GEMM: rows around the micro-panels (6 rows AVX2, 12 AVX-512)
    and row blocks (48, 96), tokens around the tiles (8, 16) and their pairs,
    K spanning several 256-column blocks with a short last block (and a tail
    for float types)."""
    rng = np.random.default_rng(rows * 7 + n)
    w, K, x, bias = odd_case(typ, rows, n, rng)
    y = matmul(w, typ, (rows, K), x, bias=bias, isa=isa, n_threads=2)
    acts = "f32" if typ in FLOAT_TYPES else prefill_acts(isa, typ, n)
    ref, mag = quant_reference(w, typ, rows, K, x, acts=acts)
    tol = act_tol(acts)
    assert np.all(np.abs(y - (ref + bias)) <= tol * (mag + 1)), np.max(np.abs(y - ref - bias) / (mag + 1))
    # one token at a time through the same call gives the decode kernels: same numbers for floats
    if typ in FLOAT_TYPES:
        y1 = np.concatenate([matmul(w, typ, (rows, K), x[t:t + 1], bias=bias, isa=isa) for t in range(n)])
        assert np.allclose(y, y1, rtol=1e-5, atol=1e-5 * (np.abs(y).max() + 1))


# (without a SIMD ISA the case is a visible skip, not a loop over nothing)
SIMD_ISAS = ISAS[1:] or [pytest.param(None, marks=pytest.mark.skip(reason="no SIMD ISA on this machine"))]


def test_types_tested_are_the_types_offered():
    assert sorted(C.matmul_types()) == sorted(FLOAT_TYPES + QUANT_TYPES)


def test_isas_offered_are_the_cpus():
    """available_isas() against /proc/cpuinfo: a detection that misses AVX2 or AVX-512
    would otherwise only shrink the ISA-parametrized tests."""
    try:
        flags = set(next(l for l in open("/proc/cpuinfo") if l.startswith("flags")).split())
    except (OSError, StopIteration):
        pytest.skip("no /proc/cpuinfo flags")
    avx2 = {"avx2", "fma", "f16c"} <= flags
    avxvnni = avx2 and "avx_vnni" in flags
    avx512 = avx2 and {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "avx512_bf16"} <= flags
    expect = ["scalar"] + ["avx2"] * avx2 + ["avxvnni"] * avxvnni + ["avx512"] * avx512
    # AMX also needs the OS to grant the tile data (arch_prctl), which cpuinfo does not show:
    # with the flags it may be offered or not, without them only by an emulating test build
    amx = avx512 and ({"amx_tile", "amx_int8"} <= flags or C.amx_emulated)
    assert ISAS == expect or (amx and ISAS == expect + ["amx"]), (ISAS, expect)
    if C.amx_emulated:
        assert ISAS[-1] == "amx"


@pytest.mark.parametrize("isa", SIMD_ISAS)
@pytest.mark.parametrize("typ", QUANT_TYPES)
def test_quant_simd_paths_agree_with_scalar(typ, isa):
    rng = np.random.default_rng(1)
    rows, K = 45, 768
    w = make_quant_weight(typ, rows, K, rng)
    x = rng.standard_normal((7, K)).astype(np.float32) * 3
    ref = matmul(w, typ, (rows, K), x, isa="scalar")
    y = matmul(w, typ, (rows, K), x, isa=isa, n_threads=2)
    assert np.allclose(y, ref, rtol=1e-4, atol=1e-3 * np.abs(ref).max()), isa


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("typ", ["q8_0", "q4_K"])
def test_quant_edge_activations(typ, isa):
    """Zero, constant and 1e4-sized activations against the float64 reference (every
    ISA, the scalar one included: it is not its own reference)."""
    rng = np.random.default_rng(2)
    rows, K = 20, 512
    w = make_quant_weight(typ, rows, K, rng)
    for x in [np.zeros((3, K), np.float32), np.full((3, K), -2.5, np.float32),
              (rng.standard_normal((3, K)) * 1e4).astype(np.float32)]:
        y = matmul(w, typ, (rows, K), x, isa=isa)
        acts = prefill_acts(isa, typ, 3)
        ref, mag = quant_reference(w, typ, rows, K, x, acts=acts)
        assert np.all(np.isfinite(y))
        assert np.all(np.abs(y - ref) <= act_tol(acts) * (mag + 1)), np.max(np.abs(y - ref) / (mag + 1))


def _q8_0_unit_rows(K):
    """Q8_0 weights whose row r is the unit vector e_r (d = 1, code 1 at r): W x reads back
    each activation's code times its block's scale, exactly (one nonzero product a row)."""
    w = np.zeros((K, K // 32, 34), np.uint8)
    r = np.arange(K)
    w[r, r // 32, :2] = np.frombuffer(np.float16(1.0).tobytes(), np.uint8)
    w[r, r // 32, 2 + r % 32] = 1
    return w.reshape(K, -1)


def _q8_0_activations_reference(x):
    """ggml's x86 activation quantizer, as the scalar path computes it: amax over the block
    without NaN, d = fp16(amax / 127), codes x * (127 / amax) rounded half to even, -128 for
    what is no number in [-128, 127]."""
    out = np.empty_like(x)
    for b in range(x.size // 32):
        blk = x[32 * b:32 * b + 32]
        amax = np.float32(np.nanmax(np.abs(blk))) if not np.all(np.isnan(blk)) else np.float32(0)
        d = np.float32(np.float16(amax / np.float32(127)))
        with np.errstate(over="ignore", invalid="ignore"):  # a subnormal block's 127 / amax is inf
            scale = np.float32(127) / amax if amax != 0 else np.float32(0)
            codes = np.rint(blk * scale)
        codes[~(np.abs(codes + 0.5) <= 127.5)] = -128  # NaN, and the inf of a subnormal block's 127 / amax
        out[32 * b:32 * b + 32] = d * codes
    return out


@pytest.mark.parametrize("isa", ISAS)
def test_q8_0_activation_codes_every_isa(isa):
    """One token's Q8_0 activations, read back through unit weights: every ISA gives the
    reference's scales and codes bit for bit (ties to even, zero blocks, NaN, subnormal,
    large and mixed blocks; a scale past fp16's range would make every row NaN), so a
    matmul's 8-bit inputs never depend on the ISA."""
    K = 32 * 9
    rng = np.random.default_rng(7)
    ties = np.array([127, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -126.5, 3.5] + [0.25] * 22, np.float32)
    blocks = [rng.standard_normal(32) * 3, ties, np.zeros(32), rng.standard_normal(32) * 1e6,
              np.full(32, 1e-40), np.r_[np.nan, rng.standard_normal(31)], np.full(32, np.nan),
              np.r_[-7.0, np.full(31, 7.0)], rng.standard_normal(32) * 1e-3]
    x = np.concatenate(blocks).astype(np.float32)[None, :]
    y = matmul(_q8_0_unit_rows(K), "q8_0", (K, K), x, isa=isa)
    assert np.array_equal(y[0], _q8_0_activations_reference(x[0]))


TOKEN_INVARIANT_DECODE = FLOAT_TYPES + ["q8_0", "q5_0", "q4_1", "q5_1", "q2_K", "q3_K", "q5_K", "iq4_xs"]


@pytest.mark.parametrize("isa", SIMD_ISAS)
@pytest.mark.parametrize("typ", FLOAT_TYPES + QUANT_TYPES)
def test_decode_walks_give_the_same_bits(isa, typ, monkeypatch):
    """Decode walks a thread's rows one after another or four side by side, as the CPU
    reads faster (PHICPP_DECODE_STREAMS=1|4, for a backend made after it is set): every
    row gets the same arithmetic either way, over two threads' chunks with tails (203
    rows). Where a format's decode runs the few-token tiles (token-invariant), a token
    alone also gives the bits of its row in a call of three."""
    rows, n = 203, 3
    rng = np.random.default_rng(sum(map(ord, typ)))
    w, K, x, bias = odd_case(typ, rows, n, rng)
    ys = []
    for streams in ["1", "4"]:
        monkeypatch.setenv("PHICPP_DECODE_STREAMS", streams)
        be = C.Backend("cpu", isa=isa, n_threads=2)
        one = [be.matmul(w, typ, (rows, K), x[t:t + 1], bias=bias, layout="rows", rearrange=False)
               for t in range(n)]
        ys.append(np.concatenate(one))
        if typ in TOKEN_INVARIANT_DECODE:
            many = be.matmul(w, typ, (rows, K), x, bias=bias, layout="rows", rearrange=False)
            assert np.array_equal(ys[-1], many), (streams, np.max(np.abs(ys[-1] - many)))
    assert np.array_equal(ys[0], ys[1]), np.max(np.abs(ys[0] - ys[1]))
    acts = "f32" if typ in FLOAT_TYPES else prefill_acts(isa, typ, 1)
    ref, mag = quant_reference(w, typ, rows, K, x, acts=acts)
    assert np.all(np.abs(ys[0] - (ref + bias)) <= act_tol(acts) * (mag + 1))


@pytest.mark.parametrize("isa", SIMD_ISAS)
@pytest.mark.parametrize("typ", ["iq4_xs", "q5_K", "q8_0"])
def test_row_invariant_call_of_many_token_blocks(isa, typ):
    """Row invariance on (no GEMM) with more tokens than one token block holds (the kernels
    take tokens in blocks whose activations fit in L2: 2000 short rows make two or more):
    every token's row equals the token alone, bit for bit, and the reference."""
    rng = np.random.default_rng(len(typ))
    rows, K, n = 6, 256, 2000
    w = make_quant_weight(typ, rows, K, rng)
    x = rng.standard_normal((n, K)).astype(np.float32)
    bias = rng.standard_normal(rows).astype(np.float32)
    be = C.Backend("cpu", isa=isa, n_threads=2)
    be.set_row_invariant(True)
    many = be.matmul(w, typ, (rows, K), x, bias=bias, layout="rows", rearrange=False)
    alone = np.concatenate([be.matmul(w, typ, (rows, K), x[t:t + 1], bias=bias, layout="rows", rearrange=False)
                            for t in range(0, n, 97)])
    assert np.array_equal(many[::97], alone)
    acts = prefill_acts(isa, typ, 1)
    ref, mag = quant_reference(w, typ, rows, K, x, acts=acts)
    assert np.all(np.abs(many - (ref + bias)) <= act_tol(acts) * (mag + 1))
