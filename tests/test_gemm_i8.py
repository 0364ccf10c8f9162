"""The int8 prefill GEMM (gemm_i8_x86_impl.h; AMX: kernels_amx.cpp) beyond
test_matmul.py's shapes: extreme codes and activations (maddubs saturation on
AVX2, code 255 with vpdpbusd / AMX), zero and non-finite activation blocks,
every path's choice per ISA, and whole models against the f32 GEMM.

Every case runs on each ISA this machine offers (available_isas(): "amx" where
the CPU and the OS allow it, or in a PHICPP_AMX_EMULATE=ON test build)."""
import os
import subprocess
import sys

import numpy as np
import pytest

from phicpp import _core as C
from test_matmul import ISAS, QUANT_TYPES, act_tol, make_quant_weight, matmul, prefill_acts, quant_reference
from test_quant import RMSE_BOUNDS

SIMD_ISAS = ISAS[1:] or [pytest.param(None, marks=pytest.mark.skip(reason="no SIMD ISA on this machine"))]

@pytest.mark.parametrize("isa", SIMD_ISAS)
def test_paths_per_isa(isa):
    """Which prefill kernels each type gets: the int8 GEMM for every quantized
    type (AVX2: not Q4_0 repacked; AMX: the bf16 tile GEMM instead), the f32
    GEMM for float weights; decode (n < gemm_min_tokens) always the row kernels."""
    n = C.gemm_min_tokens()
    for typ in QUANT_TYPES:
        want = "bf16" if isa == "amx" else "i8"
        assert C.matmul_prefill_path(typ, (64, 256), n, isa=isa) == want, typ
        assert C.matmul_prefill_path(typ, (64, 256), n - 1, isa=isa) == "rows", typ
    for typ in ("f32", "f16", "bf16"):
        assert C.matmul_prefill_path(typ, (64, 256), n, isa=isa) == "f32"
    # Q4_0 repacked: AVX2 keeps its interleaved row kernel (measured faster there)
    x8 = "rows" if isa == "avx2" else "bf16" if isa == "amx" else "i8"
    assert C.matmul_prefill_path("q4_0", (64, 256), n, layout="q4_0_x8", isa=isa) == x8
    assert C.matmul_prefill_path("q4_0", (64, 256), n, isa="scalar") == "rows"


def extreme_weight(typ, rows, K, rng):
    """Weights whose codes sit at their format's ends: a row of +-1 quantizes to
    the largest codes of either sign (Q4_0: 0 and 15 after the offset, Q8_0:
    +-127, Q6_K: 0 and 63), mixed with random rows."""
    w = rng.standard_normal((rows, K)).astype(np.float32)
    w[::2] = np.where(rng.random((len(w[::2]), K)) < 0.5, -1.0, 1.0)
    w[1::4] = 1.0
    if typ in ("iq4_nl", "iq4_xs"):
        return make_quant_weight(typ, rows, K, rng)
    return C.quantize(w, typ)


@pytest.mark.parametrize("isa", SIMD_ISAS)
@pytest.mark.parametrize("typ", QUANT_TYPES)
def test_extreme_codes_and_activations(isa, typ):
    """Largest weight codes against activations at +-127 (every activation of a
    block the same magnitude), zero tokens, a token of 1e4-sized values and
    one whose blocks alternate zero and full: exact integer sums, no saturation."""
    rng = np.random.default_rng(3)
    rows, n = 37, 21
    K = 512 if typ.endswith("_K") or typ == "iq4_xs" else 32 * 13
    w = extreme_weight(typ, rows, K, rng)
    x = np.where(rng.random((n, K)) < 0.5, -1.0, 1.0).astype(np.float32)
    x[3] = 0.0
    x[4] = 1.0
    x[5] = -1.0
    x[6] = rng.standard_normal(K) * 1e4
    x[7] = x[0] * np.repeat(np.arange(K // 32) % 2, 32)
    y = matmul(w, typ, (rows, K), x, isa=isa, n_threads=2)
    acts = prefill_acts(isa, typ, n)
    ref, mag = quant_reference(w, typ, rows, K, x, acts=acts)
    assert np.all(np.isfinite(y))
    assert np.all(np.abs(y - ref) <= act_tol(acts) * (mag + 1)), np.max(np.abs(y - ref) / (mag + 1))
    assert np.all(y[3] == 0.0)


@pytest.mark.parametrize("isa", SIMD_ISAS)
def test_q8_0_code_minus_128(isa):
    """Q8_0's codes as a file may hold them, -128 included (quantizers write
    -127..127). AVX2 multiplies these formats' signed codes as |w| = 128 by
    the activations with w's sign (maddubs' pair sums 2 * 128 * 127 stay
    below 2^15; VNNI and AMX take w + 128): exact against the dequantized
    weights, with activations at +-127."""
    rng = np.random.default_rng(5)
    rows, K, n = 19, 32 * 9, 13
    w = np.frombuffer(C.quantize(rng.standard_normal((rows, K)).astype(np.float32), "q8_0"), np.uint8).copy()
    blocks = w.reshape(rows, K // 32, 34)
    blocks[::2, :, 2:] = 0x80  # every code -128
    blocks[1::4, ::2, 2::2] = 0x80
    x = np.where(rng.random((n, K)) < 0.5, -1.0, 1.0).astype(np.float32)
    x[2] = rng.standard_normal(K)
    y = matmul(w, "q8_0", (rows, K), x, isa=isa, n_threads=2)
    acts = prefill_acts(isa, "q8_0", n)
    ref, mag = quant_reference(w, "q8_0", rows, K, x, acts=acts)
    assert np.all(np.abs(y - ref) <= act_tol(acts) * (mag + 1)), np.max(np.abs(y - ref) / (mag + 1))


@pytest.mark.parametrize("isa", SIMD_ISAS)
def test_non_finite_activations_stay_in_their_token(isa):
    """A NaN in one token's activations (a broken model) codes as -128 in the
    int8 GEMM, as the scalar quantizer does; the other tokens are untouched."""
    rng = np.random.default_rng(4)
    rows, K, n = 20, 256, 17
    w = C.quantize(rng.standard_normal((rows, K)).astype(np.float32), "q4_K")
    x = rng.standard_normal((n, K)).astype(np.float32)
    clean = matmul(w, "q4_K", (rows, K), x, isa=isa)
    x[9, 5] = np.nan
    y = matmul(w, "q4_K", (rows, K), x, isa=isa)
    keep = np.arange(n) != 9
    assert np.array_equal(y[keep], clean[keep])


@pytest.mark.parametrize("isa", SIMD_ISAS)
@pytest.mark.parametrize("typ", ["q4_0", "q4_K", "q6_K", "q8_0"])
def test_threads_and_token_counts_agree(isa, typ):
    """A token's result does not depend on the thread count, and the tokens of a
    partial last tile (n not a multiple of 8 / 16) equal those of a full call."""
    rng = np.random.default_rng(6)
    rows, K, n = 101, 768, 35
    w = make_quant_weight(typ, rows, K, rng)
    x = rng.standard_normal((n, K)).astype(np.float32)
    y1 = matmul(w, typ, (rows, K), x, isa=isa, n_threads=1)
    y2 = matmul(w, typ, (rows, K), x, isa=isa, n_threads=2)
    assert np.array_equal(y1, y2)
    if C.matmul_prefill_path(typ, (rows, K), 9, isa=isa) in ("i8", "bf16"):
        y9 = matmul(w, typ, (rows, K), x[:9], isa=isa, n_threads=2)
        assert np.array_equal(y9, y2[:9])  # tokens are independent lanes of the same arithmetic


LOGITS_SCRIPT = """
import sys, numpy as np, phicpp
m = phicpp.Model(sys.argv[1], n_ctx=128, n_threads=2)
rng = np.random.default_rng(0)
prompt = [int(t) for t in rng.integers(1, m.n_vocab, 40)]
np.save(sys.argv[2], np.asarray(m.eval(prompt, all_logits=True)))
"""


@pytest.mark.skipif(len(ISAS) < 2, reason="no SIMD ISA: no GEMM")
@pytest.mark.parametrize("mix", ["Q4_0", "Q4_K_M", "Q8_0"])
def test_model_logits_against_the_f32_gemm(tmp_path, mix):
    """The bundled model quantized, a 40-token prompt: every position's logits
    from the int8 GEMM (AMX: the bf16 one) against the f32 GEMM
    (PHICPP_GEMM_I8=0 PHICPP_GEMM_BF16=0, file layout). The int8 path rounds
    activations to Q8_0 before every matmul (the bf16 one both operands to
    bf16, about a fifth of that), so the two
    differ by about one Q8_0 rounding: relative RMS within twice the bound the
    quantization tests allow Q8_0 (test_quant.py; measured 2026-12-01 on Zen 5:
    0.003-0.007), and no farther from the unquantized model than the f32 GEMM
    is plus that bound."""
    from phicpp.models import default_model_path
    q = tmp_path / f"{mix}.gguf"
    subprocess.run([sys.executable, "-m", "phicpp", "quantize", str(default_model_path()), str(q), mix,
                    "--allow-requantize"],
                   check=True, capture_output=True)
    outs = {}
    for name, model, env in [("i8", q, {}), ("f32", q, {"PHICPP_GEMM_I8": "0", "PHICPP_GEMM_BF16": "0", "PHICPP_REPACK": "0"}),
                             ("base", default_model_path(), {})]:
        out = tmp_path / f"{name}.npy"
        subprocess.run([sys.executable, "-c", LOGITS_SCRIPT, str(model), str(out)], check=True,
                       env=dict(os.environ, **env))
        outs[name] = np.load(out)
    i8, f32, base = outs["i8"], outs["f32"], outs["base"]
    assert i8.shape == f32.shape and np.all(np.isfinite(i8))

    def rel(a, b):
        return np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b ** 2))

    bound = 2 * RMSE_BOUNDS["q8_0"]
    assert rel(i8, f32) < bound, rel(i8, f32)
    assert rel(i8, base) < rel(f32, base) + bound, (rel(i8, base), rel(f32, base))
    assert np.mean(i8.argmax(1) == f32.argmax(1)) >= 0.9
