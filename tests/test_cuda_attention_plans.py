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
    # the one-row decode kernel (f16 cache): a split for every key or two (some CTAs get
    # none), and off (those shapes through the tile kernel)
    "decode-many-splits": {"DECODE_KEYS": "1"},
    "decode-many-splits-fenced": {"DECODE_KEYS": "1", "DECODE_WORDS": "0"},  # blocks combined after fences
    "decode-off": {"DECODE": "0"},
}


def _cuda_backend(tuning, monkeypatch):
    """A CUDA backend made under one of ATTN_TUNINGS (its knobs are read when it is made)."""
    from phicpp import _core as C

    if not C.cuda_available():
        pytest.skip("no CUDA device")
    for key, value in ATTN_TUNINGS[tuning].items():
        monkeypatch.setenv("PHICPP_CUDA_ATTN_" + key, value)
    return C.Backend("cuda")


@pytest.fixture(params=sorted(ATTN_TUNINGS))
def tuned_backend(request, monkeypatch):
    return _cuda_backend(request.param, monkeypatch)


SHAPES = [(4, 4, 96), (8, 2, 64), (2, 2, 20), (3, 1, 128), (2, 2, 128), (3, 3, 40), (2, 2, 80)]
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


def decode_case(seed, n_head, n_head_kv, hd, pos0, n_tok):
    """A step's queries (n_tok rows after pos0) and an f16 cache holding its keys and values, and the scale."""
    rng = np.random.default_rng(seed)
    rows = pos0 + n_tok
    q = (rng.standard_normal((n_tok, n_head * hd)) * 2).astype(np.float32)
    k = rng.standard_normal((rows, n_head_kv * hd)).astype(np.float16)
    v = rng.standard_normal((rows, n_head_kv * hd)).astype(np.float16)
    return q, k, v, 1 / np.sqrt(hd)


@pytest.fixture(params=["default", "decode-many-splits", "decode-many-splits-fenced"])
def decode_backend(request, monkeypatch):
    return _cuda_backend(request.param, monkeypatch)


@pytest.mark.parametrize("n_head,n_head_kv,hd", [(4, 4, 96), (2, 2, 64), (3, 3, 40), (2, 2, 128), (8, 2, 64),
                                                (6, 2, 128), (3, 1, 128)])
@pytest.mark.parametrize("pos0,n_tok,window", [(0, 9, 0), (100, 40, 0), (120, 30, 0), (2000, 24, 0), (3000, 20, 100)])
def test_rows_alone_equal_one_row_each(decode_backend, n_head, n_head_kv, hd, pos0, n_tok, window):
    """Row-invariant batches: each query row of a step gives exactly the bits it gives as the one
    row of its own step, including where the rows' key blocks change size within the step
    (decode-many-splits: blocks grow from one key as a row's keys pass 132, 264, 528...), with
    and without GQA."""
    q, k, v, scale = decode_case(pos0 + hd + n_tok + n_head_kv, n_head, n_head_kv, hd, pos0, n_tok)
    decode_backend.set_row_invariant(True)
    try:
        y = decode_backend.attention(q, k, v, pos0, n_tok, 0, n_head, n_head_kv, scale, window)
    finally:
        decode_backend.set_row_invariant(False)
    for t in range(n_tok):
        one = decode_backend.attention(q[t:t + 1], k, v, pos0, n_tok, t, n_head, n_head_kv, scale, window)
        assert np.array_equal(y[t:t + 1], one), (t, np.max(np.abs(y[t] - one[0])))
    ref = attention_reference(q, k, v, pos0, n_head, n_head_kv, scale, window)
    assert np.allclose(y, ref, rtol=1e-5, atol=2e-5), np.max(np.abs(y - ref))


@pytest.mark.parametrize("n_head,n_head_kv,hd", [(4, 4, 96), (3, 3, 40), (6, 2, 128)])
@pytest.mark.parametrize("pos0,n_tok,window", [(0, 3, 0), (300, 4, 0), (3000, 2, 0), (3000, 2, 100)])
def test_block_combines_give_the_same_bits(monkeypatch, n_head, n_head_kv, hd, pos0, n_tok, window):
    """The decode kernel's key blocks combined through marked words (the default) and through
    fenced floats (PHICPP_CUDA_ATTN_DECODE_WORDS=0) give the same bits, one row or a batch."""
    words = _cuda_backend("decode-many-splits", monkeypatch)
    fenced = _cuda_backend("decode-many-splits-fenced", monkeypatch)
    q, k, v, scale = decode_case(pos0 + hd, n_head, n_head_kv, hd, pos0, n_tok)
    for be in (words, fenced):
        be.set_row_invariant(True)
    ys = [be.attention(q, k, v, pos0, n_tok, 0, n_head, n_head_kv, scale, window) for be in (words, fenced)]
    assert np.array_equal(ys[0], ys[1]), np.max(np.abs(ys[0] - ys[1]))
    for t in range(n_tok):  # again (the words are cleared for the next launch), a row alone
        a, b = (be.attention(q[t:t + 1], k, v, pos0, n_tok, t, n_head, n_head_kv, scale, window) for be in (words, fenced))
        assert np.array_equal(a, b) and np.array_equal(a, ys[0][t:t + 1])
    ref = attention_reference(q, k, v, pos0, n_head, n_head_kv, scale, window)
    assert np.allclose(ys[0], ref, rtol=1e-5, atol=2e-5), np.max(np.abs(ys[0] - ref))


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
        if p["decode"]:
            # the one-row kernel: a tile per query head, CTAs of 8 warps, blocks of keys (a power of
            # two of them, at most twice as many as the keys need, about four CTAs a SM)
            assert cache == "f16" and n_q == 1 and hd % 8 == 0, (kv_len, p)
            assert p["tiles"] == n_head and p["q_rows"] == 1 and p["cta_smem"] <= per_cta, (kv_len, p)
            assert p["warps"] == 8 and p["splits"] & (p["splits"] - 1) == 0, (kv_len, p)
            assert p["splits"] == 1 or p["block_keys"] * p["splits"] < 2 * kv_len, (kv_len, p)
            assert p["tiles"] * p["splits"] <= 8 * sms, (kv_len, p)
            continue
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
    p = plan_of("H100-H200", shape, cache, 1, 3072, decode=False)
    assert (p["splits"] * p["warps"], p["warps"], p["stages"]) == (splits_times_warps, warps, stages), p


@pytest.mark.parametrize("shape", sorted(PHI_SHAPES))
@pytest.mark.parametrize("cache", ["f32", "f16", "q8_0"])
@pytest.mark.parametrize("n_q", [1, 2])
def test_plan_picks_the_decode_kernel(shape, cache, n_q):
    """The one-row kernel takes exactly the steps of one token over an f16 cache (decode of every
    Phi model, with or without GQA), unless turned off."""
    n_head, n_head_kv, hd = PHI_SHAPES[shape]
    if cache == "q8_0" and hd % 32:
        pytest.skip("quantized caches hold heads of whole 32-value blocks")
    want = cache == "f16" and n_q == 1
    for kv_len in (1, 65, 3072):
        assert plan_of("H100-H200", shape, cache, n_q, kv_len)["decode"] == want
        assert not plan_of("H100-H200", shape, cache, n_q, kv_len, decode=False)["decode"]
        assert not plan_of("H100-H200", shape, cache, n_q, kv_len, decode=False, rows_alone=True)["decode"]


def test_decode_plan_grows_with_the_keys():
    """Phi-3-mini's decode plan: blocks of 256 keys, as many CTAs a head as blocks (rounded up to a
    power of two) while the 32 heads' blocks fit four a SM; past that, larger blocks."""
    got = {n: plan_of("H100-H200", "phi-3-mini", "f16", 1, n) for n in (1, 129, 256, 257, 1000, 4096, 4097, 32768)}
    assert {n: (p["splits"], p["block_keys"]) for n, p in got.items()} == {
        1: (1, 256), 129: (1, 256), 256: (1, 256), 257: (2, 256), 1000: (4, 256), 4096: (16, 256),
        4097: (16, 512), 32768: (16, 2048)}
    # a sliding window bounds a row's keys; the knob sets the block
    assert plan_of("H100-H200", "phi-3-mini", "f16", 1, 32768, window=2047)["block_keys"] == 256
    assert plan_of("H100-H200", "phi-3-mini", "f16", 1, 1000, decode_keys=128)["splits"] == 8


@pytest.mark.parametrize("shape", sorted(PHI_SHAPES))
def test_rows_alone_take_the_decode_kernel(shape):
    """Row-invariant batches give each row its own decode step's bits: several rows over an f16
    cache then take the decode kernel too, a tile a row and query head, with the last row's blocks."""
    n_head, n_head_kv, hd = PHI_SHAPES[shape]
    p = plan_of("H100-H200", shape, "f16", 5, 300, rows_alone=True)
    assert p["decode"]
    assert (p["tiles"], p["splits"], p["block_keys"]) == (5 * n_head, 2, 256), p
    assert not plan_of("H100-H200", shape, "f16", 5, 300)["decode"]
