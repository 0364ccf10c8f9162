"""Quantized KV caches (Q8_0, Q4_0: llama.cpp's -ctk/-ctv) in the op harness, on every
backend this machine has: the cache write gives exactly the blocks ggml's reference
quantizer (gguf-py's numpy port) makes of the same keys and values, and attention over
such a cache is the f32 attention over its dequantized rows (CUDA's flash attention, which
takes batches of tokens, rounds them to f16 as it does every cache: its own bound). Caches
travel as uint8 arrays of whole rows (n_head_kv * head_dim / 32 blocks of 34 or 18 bytes)."""
from __future__ import annotations

import os

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import quants

from test_backend_ops import FLASH_TOL, attention_reference, flash_backend, input_case, input_reference  # noqa: F401

QTYPES = {"q8_0": Q.Q8_0, "q4_0": Q.Q4_0}


def quantize(x, cache):
    """Rows of float values -> uint8 rows of blocks."""
    return np.ascontiguousarray(quants.quantize(np.asarray(x, np.float32), QTYPES[cache]))


def dequantize(b, cache):
    return quants.dequantize(b, QTYPES[cache]).astype(np.float32)


def quantized_case(rng, rows, width, cache):
    k = rng.standard_normal((rows, width)).astype(np.float32)
    v = rng.standard_normal((rows, width)).astype(np.float32)
    return quantize(k, cache), quantize(v, cache)


# rows of 1 to 24 blocks: CUDA copies rows through shared memory in pieces of 16, 8 or 4 bytes
# where they divide a row (a head's slice starting 0-14 bytes past a piece) and reads them
# directly where none does (an odd number of blocks)
KV_SHAPES = [(4, 4, 32), (3, 1, 32), (4, 2, 32), (8, 2, 64), (6, 3, 96), (8, 8, 96), (4, 1, 128), (2, 2, 256)]


@pytest.mark.parametrize("cache", ["q8_0", "q4_0"])
@pytest.mark.parametrize("n_head,n_head_kv,hd", KV_SHAPES)
@pytest.mark.parametrize("pos0,n_tok,t0", [(0, 1, 0), (0, 9, 0), (7, 1, 0), (3, 40, 0), (300, 1, 0), (20, 12, 11),
                                           (0, 70, 30)])
@pytest.mark.parametrize("window", [0, 5])
def test_attention_quantized_cache(backend, cache, n_head, n_head_kv, hd, pos0, n_tok, t0, window):
    rng = np.random.default_rng(pos0 * 31 + n_tok + hd + window)
    y, ref = attention_case(backend, rng, cache, n_head, n_head_kv, hd, pos0, n_tok, t0, window)
    tol = FLASH_TOL if takes_flash(backend, n_tok - t0, hd) else 2e-5
    assert np.allclose(y, ref, rtol=tol / 2, atol=tol), np.max(np.abs(y - ref))


def attention_case(backend, rng, cache, n_head, n_head_kv, hd, pos0, n_tok, t0, window):
    """The backend's attention of step tokens t0.. over a random quantized cache, and the reference
    over its dequantized rows."""
    kq, vq = quantized_case(rng, pos0 + n_tok + 2, n_head_kv * hd, cache)
    q = (rng.standard_normal((n_tok - t0, n_head * hd)) * 2).astype(np.float32)
    scale = 1 / np.sqrt(hd)
    y = backend.attention(q, kq, vq, pos0, n_tok, t0, n_head, n_head_kv, scale, window, cache_type=cache)
    ref = attention_reference(q, dequantize(kq, cache), dequantize(vq, cache), pos0 + t0, n_head, n_head_kv, scale,
                              window)
    return y, ref


def takes_flash(backend, n_q, hd):
    """CUDA's flash attention takes batches from PHICPP_CUDA_FLASH_MIN tokens (default 16) over a
    quantized cache too, for head sizes of whole blocks up to 128."""
    flash_min = int(os.environ.get("PHICPP_CUDA_FLASH_MIN", "16"))
    return backend.name == "cuda" and hd in (32, 64, 96, 128) and 0 < flash_min <= n_q


@pytest.mark.parametrize("cache", ["q8_0", "q4_0"])
@pytest.mark.parametrize("n_head,n_head_kv,hd", [(4, 4, 32), (3, 1, 32), (6, 2, 64), (8, 8, 96), (6, 3, 96),
                                                 (4, 1, 128)])
@pytest.mark.parametrize("pos0,n_tok,t0,window", [(0, 2, 0, 0), (0, 64, 0, 0), (37, 130, 0, 0), (5, 129, 60, 0),
                                                  (0, 300, 0, 48), (90, 77, 0, 5), (0, 140, 0, 64)])
def test_cuda_flash_attention_quantized_cache(flash_backend, cache, n_head, n_head_kv, hd, pos0, n_tok, t0, window):
    """Flash attention over blocks copied in pieces of 16, 8 or 4 bytes or read directly (odd
    rows), partial 64-key blocks, windows, chunks after earlier tokens."""
    rng = np.random.default_rng(hd * 7 + pos0 + n_tok + window)
    y, ref = attention_case(flash_backend, rng, cache, n_head, n_head_kv, hd, pos0, n_tok, t0, window)
    assert np.allclose(y, ref, rtol=FLASH_TOL / 2, atol=FLASH_TOL), np.max(np.abs(y - ref))


@pytest.mark.parametrize("cache", ["q8_0", "q4_0"])
@pytest.mark.parametrize("n_head,n_head_kv,hd,n_rot", [(4, 4, 32, 32), (6, 2, 96, 96), (3, 1, 128, 96),
                                                       (2, 2, 64, 32)])
@pytest.mark.parametrize("pos0,n", [(0, 1), (0, 7), (13, 1), (5, 33)])
@pytest.mark.parametrize("qk_norm", [False, True])
def test_attention_input_quantized_cache(backend, cache, n_head, n_head_kv, hd, n_rot, pos0, n, qk_norm):
    rng = np.random.default_rng(pos0 * 100 + n + hd)
    q, k, v, _, _, inv_freq, norms = input_case(rng, n, n_head, n_head_kv, hd, n_rot, 1, np.float32, qk_norm)
    rows = pos0 + n + 3
    kc, vc = quantized_case(rng, rows, n_head_kv * hd, cache)
    q2, k2, kc2, vc2 = backend.attention_input(q, k, v, kc, vc, pos0, n_head, n_head_kv, n_rot, inv_freq,
                                               mscale=1.25, qk_norm=norms, cache_type=cache)
    qr, kr = input_reference(q, k, n_head, n_head_kv, hd, pos0, inv_freq, 1.25, norms)
    tol = 2e-6 * (pos0 + n + 1) + 1e-6
    assert np.allclose(k2, kr, rtol=0, atol=tol * np.abs(kr).max())
    # the blocks the reference quantizer makes of the rotated keys (as the op returns them) and the values
    assert np.array_equal(kc2[pos0:pos0 + n], quantize(k2, cache))
    assert np.array_equal(vc2[pos0:pos0 + n], quantize(v, cache))
    untouched = np.r_[0:pos0, pos0 + n:rows]
    assert np.array_equal(kc2[untouched], kc[untouched]) and np.array_equal(vc2[untouched], vc[untouched])


@pytest.mark.parametrize("cache", ["q8_0", "q4_0"])
@pytest.mark.parametrize("n_head,n_head_kv,hd,n_rot", [(4, 4, 32, 32), (6, 2, 96, 96), (3, 1, 128, 96),
                                                       (8, 8, 64, 64), (8, 8, 96, 96), (3, 1, 32, 32)])
@pytest.mark.parametrize("pos0,n", [(0, 1), (13, 1), (40, 1), (300, 1), (5, 6)])
@pytest.mark.parametrize("window", [0, 7])
def test_attention_after_input_quantized_cache(backend, cache, n_head, n_head_kv, hd, n_rot, pos0, n, window):
    """A layer's input step and attention in one step (on CUDA one launch for one token): the
    new rows are written as blocks and read back as what they hold, like every older row."""
    rng = np.random.default_rng(pos0 * 7 + n + hd + window)
    q, k, v, _, _, inv_freq, norms = input_case(rng, n, n_head, n_head_kv, hd, n_rot, 1, np.float32, True)
    rows = pos0 + n + 2
    kc, vc = quantized_case(rng, rows, n_head_kv * hd, cache)
    scale = 1 / np.sqrt(hd)
    y, kc2, vc2 = backend.attention_input(q, k, v, kc, vc, pos0, n_head, n_head_kv, n_rot, inv_freq, mscale=1.1,
                                          qk_norm=norms, attend=(scale, window), cache_type=cache)
    qr, kr = input_reference(q, k, n_head, n_head_kv, hd, pos0, inv_freq, 1.1, norms)
    # the new keys within half a step of their blocks (Q4_0: a whole step at the clamped end of its
    # codes, -8..7), plus the step's own rounding to f16 times the largest code (the op's rotation
    # differs from the reference in ulps)
    qmax, off = (127, 0.5) if cache == "q8_0" else (8, 1.0)
    step = np.abs(kr).reshape(n, -1, 32).max(axis=2, keepdims=True) / qmax
    new_k = dequantize(kc2[pos0:pos0 + n], cache).reshape(n, -1, 32)
    assert np.all(np.abs(new_k - kr.reshape(n, -1, 32)) <= (off + qmax * 2.0 ** -11) * step * 1.01 + 1e-5)
    assert np.array_equal(vc2[pos0:pos0 + n], quantize(v, cache))
    untouched = np.r_[0:pos0, pos0 + n:rows]
    assert np.array_equal(kc2[untouched], kc[untouched]) and np.array_equal(vc2[untouched], vc[untouched])
    ref = attention_reference(qr.astype(np.float32), dequantize(kc2, cache), dequantize(vc2, cache), pos0, n_head,
                              n_head_kv, scale, window)
    assert np.allclose(y, ref, rtol=1e-4, atol=1e-4), np.max(np.abs(y - ref))


@pytest.mark.parametrize("cache", ["q8_0", "q4_0"])
def test_quantized_cache_edge_blocks(backend, cache):
    """Blocks where the rounding rules show: ties of magnitude (Q4_0 takes the first, with its
    sign), all zeros, values at exact halves of a step, one large value among tiny ones."""
    blocks = [np.zeros(32), np.r_[3.0, -3.0, np.zeros(30)], np.r_[-3.0, 3.0, np.zeros(30)],
              np.r_[np.zeros(31), -5.0], np.arange(32) - 15.5,
              np.r_[127.0, np.arange(31) - 15.5],  # Q8_0: a step of 1, every value at a half
              np.r_[-8.0, np.arange(31) % 16 - 7.5],  # Q4_0: the same
              np.r_[1e4, np.full(31, 1e-3)], np.r_[1e-30, -2e-30, np.zeros(30)], np.full(32, -0.75)]
    fill = np.random.default_rng(1).standard_normal((16 - len(blocks), 32)) * 50
    x = np.concatenate([np.array(blocks), fill]).astype(np.float32)
    width = x.size // 4  # 4 rows of 4 heads of 32
    x = x.reshape(4, width)
    nan = np.full((4, 4 * 32), np.nan, np.float32)
    kc = np.zeros((4, quantize(x[:1], cache).shape[1]), np.uint8)
    _, _, k2, v2 = backend.attention_input(nan, x, x, kc, kc.copy(), 0, 4, width // 32, 0, np.zeros(0, np.float32),
                                           cache_type=cache)
    assert np.array_equal(k2, quantize(x, cache)) and np.array_equal(v2, quantize(x, cache))


def test_quantized_cache_errors(backend):
    q = np.zeros((1, 2 * 32), np.float32)
    kc = np.zeros((4, 34), np.uint8)
    with pytest.raises(ValueError, match="cache_type must be"):
        backend.attention(q, kc, kc, 0, 1, 0, 2, 1, 1.0, cache_type="q5_0")
    with pytest.raises(ValueError, match="C-contiguous"):
        backend.attention(q, kc[:, :30].copy(), kc[:, :30].copy(), 0, 1, 0, 2, 1, 1.0, cache_type="q8_0")
    with pytest.raises(ValueError, match="uint8"):
        backend.attention(q, kc.astype(np.float32), kc.astype(np.float32), 0, 1, 0, 2, 1, 1.0, cache_type="q8_0")
    # heads of 16: a row of two heads is one block, a head no whole block
    with pytest.raises(ValueError, match="multiple of 32"):
        backend.attention(np.zeros((1, 4 * 16), np.float32), kc, kc, 0, 1, 0, 4, 2, 1.0, cache_type="q8_0")
