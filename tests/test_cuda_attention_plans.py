"""CUDA's one-token attention under every shape its plan can take. The plan spreads a tile's
keys over the warps of a CTA and over CTAs (`PHICPP_CUDA_ATTN_*`, read when a backend is
made); the tunings here force each way it can go on any GPU: two chunk buffers per warp
(the next 32 keys in flight), one buffer, a warp per CTA, and more CTAs per tile than a warp
has lanes (the last CTA's combine then loops over them, and some get no key at all).
Decode at long positions, windows, GQA, f32/f16/Q8_0 caches, the input step fused or not."""
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
