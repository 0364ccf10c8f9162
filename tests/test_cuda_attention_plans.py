"""CUDA's one-token attention under every shape its plan can take. The plan spreads a tile's
keys over the warps of a CTA and over CTAs (`PHICPP_CUDA_ATTN_*`, read when a backend is
made); the tunings here force each way it can go on any GPU: two chunk buffers per warp
(the next 32 keys in flight), one buffer, a warp per CTA, and more CTAs per tile than a warp
has lanes (the last CTA's combine then loops over them, and some get no key at all).
Decode at long positions, windows, GQA, f32/f16/Q8_0 caches, the input step fused or not.
Below them, the plan itself for four GPUs and every Phi shape, which needs a CUDA build but
no GPU."""
from __future__ import annotations

import numpy as np
import pytest

from test_backend_kv_quant import dequantize, quantized_case
from test_backend_ops import attention_reference, input_case, input_reference

ATTN_TUNINGS = {
    "default": {},
    "double-buffered": {"STAGES": "2", "CTA_SMEM_KB": "64"},
    "single-buffered": {"STAGES": "1"},
    "many-splits": {"CTA_WARPS": "1", "STAGES": "2"},
    "two-warp-ctas": {"WARPS_PER_SM": "16", "CTA_WARPS": "2", "STAGES": "2"},
}


@pytest.fixture(params=sorted(ATTN_TUNINGS))
def tuned_backend(request, monkeypatch):
    from phicpp import _core as C

    if not C.cuda_available():
        pytest.skip("no CUDA device")
    for key, value in ATTN_TUNINGS[request.param].items():
        monkeypatch.setenv("PHICPP_CUDA_ATTN_" + key, value)
    return C.Backend("cuda")


SHAPES = [(4, 4, 96), (8, 2, 64), (2, 2, 20), (3, 1, 128)]
POSITIONS = [(31, 0), (64, 0), (1000, 0), (3000, 0), (3000, 100), (4100, 2047)]


@pytest.mark.parametrize("cache", ["f32", "f16", "q8_0"])
@pytest.mark.parametrize("n_head,n_head_kv,hd", SHAPES)
@pytest.mark.parametrize("pos0,window", POSITIONS)
def test_attention_one_token(tuned_backend, cache, n_head, n_head_kv, hd, pos0, window):
    if cache == "q8_0" and hd % 32:
        pytest.skip("quantized caches hold heads of whole 32-value blocks")
    rng = np.random.default_rng(pos0 + hd + window)
    rows, width = pos0 + 3, n_head_kv * hd
    q = (rng.standard_normal((1, n_head * hd)) * 2).astype(np.float32)
    scale = 1 / np.sqrt(hd)
    if cache == "q8_0":
        k, v = quantized_case(rng, rows, width, cache)
        y = tuned_backend.attention(q, k, v, pos0, 1, 0, n_head, n_head_kv, scale, window, cache_type=cache)
        k, v = dequantize(k, cache), dequantize(v, cache)
    else:
        dt = np.float32 if cache == "f32" else np.float16
        k = rng.standard_normal((rows, width)).astype(dt)
        v = rng.standard_normal((rows, width)).astype(dt)
        y = tuned_backend.attention(q, k, v, pos0, 1, 0, n_head, n_head_kv, scale, window)
    ref = attention_reference(q, k, v, pos0, n_head, n_head_kv, scale, window)
    assert np.allclose(y, ref, rtol=1e-5, atol=2e-5), np.max(np.abs(y - ref))


@pytest.mark.parametrize("cache", ["f16", "q8_0"])
@pytest.mark.parametrize("n_head,n_head_kv,hd", SHAPES)
@pytest.mark.parametrize("pos0,window", POSITIONS)
def test_attention_after_input_one_token(tuned_backend, cache, n_head, n_head_kv, hd, pos0, window):
    """The input step inside the attention launch: the token's own row is written by the warp
    whose keys hold it, in whichever chunk buffer that is."""
    if cache == "q8_0" and hd % 32:
        pytest.skip("quantized caches hold heads of whole 32-value blocks")
    rng = np.random.default_rng(pos0 * 3 + hd + window)
    q, k, v, kc, vc, inv_freq, norms = input_case(rng, 1, n_head, n_head_kv, hd, hd, pos0 + 2, np.float16, False)
    kwargs = {}
    if cache == "q8_0":
        kc, vc = quantized_case(rng, pos0 + 2, n_head_kv * hd, cache)
        kwargs["cache_type"] = cache
    scale = 1 / np.sqrt(hd)
    y, kc2, vc2 = tuned_backend.attention_input(q, k, v, kc, vc, pos0, n_head, n_head_kv, hd, inv_freq, mscale=1.0,
                                                qk_norm=norms, attend=(scale, window), **kwargs)
    qr, _ = input_reference(q, k, n_head, n_head_kv, hd, pos0, inv_freq, 1.0, norms)
    if cache == "q8_0":
        kc2, vc2 = dequantize(kc2, cache), dequantize(vc2, cache)
    ref = attention_reference(qr.astype(np.float32), kc2, vc2, pos0, n_head, n_head_kv, scale, window)
    tol = 1e-4 + 2e-7 * pos0  # (the rotation's angles in f32 at long positions)
    assert np.allclose(y, ref, rtol=tol, atol=tol), np.max(np.abs(y - ref))


# ---------------------------------------------------------------- the plan itself (no device needed)
# The plan depends on the device's SM count and shared memory; CUDA builds expose it, so these run
# wherever the backend is compiled (CI too) for the GPUs phicpp builds for, and every Phi shape.
DEVICES = {  # SMs, the shared memory a CTA may opt into, an SM's
    "H100-H200": (132, 232448, 233472),
    "A100": (108, 166912, 167936),
    "RTX-4090": (128, 101376, 102400),
    "A10": (72, 101376, 102400),
}
PHI_SHAPES = {  # query heads, KV heads, head size
    "phi-1.5": (32, 32, 64), "phi-2": (32, 32, 80), "phi-3-mini": (32, 32, 96), "phi-3-medium": (40, 10, 128),
    "phi-4-mini": (24, 8, 128), "phi-3.5-moe": (32, 8, 128), "bundled": (6, 6, 64),
}
KV_LENS = [1, 2, 31, 32, 33, 100, 1000, 3072, 4096, 32768, 131072]


def plan_of(device, shape, cache, n_q, kv_len, **tuning):
    from phicpp import _core as C

    if not hasattr(C, "cuda_attention_plan"):
        pytest.skip("this build has no CUDA backend")
    sms, per_cta, per_sm = DEVICES[device]
    n_head, n_head_kv, hd = PHI_SHAPES[shape]
    return C.cuda_attention_plan(n_q, n_head, n_head_kv, hd, kv_len, cache, sm_count=sms, smem_per_cta=per_cta,
                                 smem_per_sm=per_sm, **tuning)


@pytest.mark.parametrize("device", sorted(DEVICES))
@pytest.mark.parametrize("shape", sorted(PHI_SHAPES))
@pytest.mark.parametrize("cache", ["f32", "f16", "q8_0", "q4_0"])
@pytest.mark.parametrize("n_q", [1, 3, 16])
def test_plan_fits_the_device(device, shape, cache, n_q):
    """Every plan launches (a CTA's shared memory within the device's limit), its grid fits the SMs in
    one wave once keys are split, no tile has as many warps again as its chunks, and two chunk buffers
    are kept only for rows copied as they are used and warps with more than one chunk."""
    sms, per_cta, per_sm = DEVICES[device]
    n_head, n_head_kv, hd = PHI_SHAPES[shape]
    if cache.startswith("q") and hd % 32:
        pytest.skip("quantized caches hold heads of whole 32-value blocks")
    for kv_len in KV_LENS:
        p = plan_of(device, shape, cache, n_q, kv_len)
        s, chunks = p["splits"] * p["warps"], (kv_len + 31) // 32
        rows = n_q * n_head // n_head_kv  # a KV head's query rows
        assert p["q_rows"] == min(8, rows) and p["tiles"] == n_head_kv * -(-rows // 8)
        assert p["cta_smem"] <= per_cta, (kv_len, p)
        assert s & (s - 1) == 0 and p["warps"] <= 8, (kv_len, p)
        if s > 1:
            assert s < 2 * chunks, (kv_len, p)
            ctas_per_sm = per_sm // (p["cta_smem"] + 1024)
            assert p["tiles"] * p["splits"] <= sms * ctas_per_sm, (kv_len, p)
        if p["stages"] == 2:
            assert cache in ("f16", "f32") and hd % (8 if cache == "f16" else 4) == 0 and chunks > s, (kv_len, p)


@pytest.mark.parametrize("device", sorted(DEVICES))
@pytest.mark.parametrize("shape", ["phi-3-mini", "phi-4-mini", "bundled"])
@pytest.mark.parametrize("cache", ["f16", "q8_0"])
def test_plan_changes_rarely_as_the_context_grows(device, shape, cache):
    """A recorded decode step replays while its plan holds: as the context grows a token at a time
    the plan changes a few times per doubling of the keys, not with every chunk."""
    plans = [tuple(sorted(plan_of(device, shape, cache, 1, n).items())) for n in range(1, 8193)]
    changes = sum(a != b for a, b in zip(plans, plans[1:]))
    assert changes <= 3 * 8 + 2, changes  # 8 doublings from one chunk to 256


@pytest.mark.parametrize("shape,cache,splits_times_warps,warps,stages", [
    ("phi-3-mini", "f16", 32, 8, 2), ("phi-3-mini", "q8_0", 16, 4, 1), ("phi-4-mini", "f16", 64, 8, 1),
    ("phi-3-medium", "f16", 64, 8, 1)])
def test_plan_measured_on_the_h200(shape, cache, splits_times_warps, warps, stages):
    """The plans docs/BENCHMARKS.md measured at 3072 keys (H200, 2026-12-04): a change to the plan
    that moves them should come with new measurements."""
    p = plan_of("H100-H200", shape, cache, 1, 3072)
    assert (p["splits"] * p["warps"], p["warps"], p["stages"]) == (splits_times_warps, warps, stages), p


@pytest.mark.parametrize("shape", ["phi-3-mini", "phi-3-medium", "bundled"])
@pytest.mark.parametrize("n_q", [1, 5])
def test_plan_of_a_sliding_window(shape, n_q):
    """Phi-3-mini-4k's window of 2047: past it a tile reads window + n_q - 1 keys however long the
    context, so the plan is that length's and stops changing (no new recorded steps)."""
    window = 2047
    at_window = plan_of("H100-H200", shape, "f16", n_q, window + n_q - 1)
    for kv_len in (window + n_q, 3000, 4096, 131072):
        assert plan_of("H100-H200", shape, "f16", n_q, kv_len, window=window) == at_window
    assert plan_of("H100-H200", shape, "f16", n_q, 1000, window=window) == plan_of("H100-H200", shape, "f16", n_q, 1000)
