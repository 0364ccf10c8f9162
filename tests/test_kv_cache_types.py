"""Quantized KV caches (kv_type q8_0 / q4_0, llama.cpp's -ctk/-ctv): the
shipped model (head size 64) with its weights in F16 (conftest's bundled_f16: then
prefill and decode matmuls agree to the last bits and what differs is the cache) against
its f32-cache logits, prefill against token-by-token decode over the same quantized
cache, the memory they take, and the clear errors where they do not apply. Perplexity and
speed per type are in docs/BENCHMARKS.md."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import phicpp
from phicpp.models import default_model_path

# relative RMS of the logits against the f32 cache: rounding to 8 bits per 32
# values moves them ~0.4%, to 4 bits ~6% (measured 0.37% and 5.5%)
BOUND = {"f16": 1e-3, "q8_0": 0.02, "q4_0": 0.15}
BLOCK_BYTES = {"f16": 64, "q8_0": 34, "q4_0": 18}  # per 32 values


@pytest.fixture(scope="module")
def tokens():
    return np.random.default_rng(0).integers(10, 5000, 120).astype(np.int32)


@pytest.fixture(scope="module")
def ref(bundled_f16, tokens):
    return phicpp.Model(bundled_f16, n_ctx=160, kv_type="f32", n_threads=2).eval(tokens, all_logits=True)


def rms(d, ref):
    return float(np.sqrt(np.mean(d.astype(np.float64) ** 2)) / np.sqrt(np.mean(ref.astype(np.float64) ** 2)))


@pytest.mark.parametrize("kv", ["f16", "q8_0", "q4_0"])
def test_quantized_cache_logits(bundled_f16, tokens, ref, kv):
    m = phicpp.Model(bundled_f16, n_ctx=160, kv_type=kv, n_threads=2)
    assert m.kv_type == kv.upper() or m.kv_type == kv
    prefill = m.eval(tokens, all_logits=True)
    assert rms(prefill - ref, ref) <= BOUND[kv]
    # one token at a time over the same kind of cache: the matmuls' last-bit differences between
    # prefill and decode move a few values across a rounding step of the cache (measured max
    # 1e-4, 2.2e-3 and 1.8e-2 of the largest logit)
    m.reset()
    decode = np.stack([m.eval([t]) for t in tokens])
    assert float(np.abs(decode - prefill).max() / np.abs(prefill).max()) <= 0.2 * BOUND[kv] + 1e-3
    # and the memory: a block of 32 values in 34 (q8_0) or 18 (q4_0) bytes instead of 64
    f16 = phicpp.Model(bundled_f16, n_ctx=160, kv_type="f16", n_threads=2).kv_cache_bytes
    assert m.kv_cache_bytes * BLOCK_BYTES["f16"] == f16 * BLOCK_BYTES[kv]


@pytest.mark.skipif(not phicpp._core.cuda_available(), reason="no CUDA device")
@pytest.mark.parametrize("kv", ["q8_0", "q4_0"])
def test_quantized_cache_on_gpu(bundled_f16, tokens, ref, kv):
    """The same on the CUDA backend: within the cache type's bound of the CPU's f32-cache logits, and
    decode over the cache prefill wrote agrees with prefill as on the CPU."""
    m = phicpp.Model(bundled_f16, n_ctx=160, kv_type=kv, device="cuda")
    prefill = m.eval(tokens, all_logits=True)
    assert rms(prefill - ref, ref) <= BOUND[kv]
    m.reset()
    m.eval(tokens[:100])  # prefill, then the rest one token at a time
    decode = np.stack([m.eval([t]) for t in tokens[100:]])
    assert float(np.abs(decode - prefill[100:]).max() / np.abs(prefill).max()) <= 0.2 * BOUND[kv] + 1e-3
    cpu = phicpp.Model(bundled_f16, n_ctx=160, kv_type=kv, n_threads=2)
    assert m.kv_cache_bytes == cpu.kv_cache_bytes


@pytest.mark.parametrize("kv", ["q8_0", "q4_0"])
def test_quantized_cache_in_a_sliding_window_ring(tiny_gguf, kv):
    """A sliding-window model (window 16, heads of 32) over 60 tokens: on the CPU its cache is a
    ring of window + batch rows (24 here), quantized rows as f32 ones. Prefill (8 tokens a pass)
    and decode against the f32 cache's logits and each other."""
    path = str(tiny_gguf("phi3_swa_hd32", "f32"))
    tokens = np.random.default_rng(0).integers(10, 5000, 60).astype(np.int32)
    ref = phicpp.Model(path, n_ctx=128, kv_type="f32", n_threads=2).eval(tokens, all_logits=True)
    m = phicpp.Model(path, n_ctx=128, n_batch=8, kv_type=kv, n_threads=2)  # a ring of 16 + 8 rows
    whole = phicpp.Model(path, n_ctx=128, n_batch=8, kv_type="f16", n_threads=2).kv_cache_bytes
    assert m.kv_cache_bytes * BLOCK_BYTES["f16"] == whole * BLOCK_BYTES[kv]
    assert whole == 2 * 2 * (16 + 8) * 64 * 2  # layers, k and v, rows, kv width, f16 bytes
    prefill = m.eval(tokens, all_logits=True)
    m.reset()
    decode = np.stack([m.eval([t]) for t in tokens])
    assert rms(prefill - ref, ref) <= BOUND[kv]
    assert float(np.abs(decode - prefill).max() / np.abs(prefill).max()) <= 1e-4


def test_quantized_cache_needs_whole_blocks_per_head(tiny_gguf):
    # the tiny Phi-3 checkpoints have heads of 16
    with pytest.raises(ValueError, match="multiple of 32"):
        phicpp.Model(str(tiny_gguf("phi3_mini")), n_ctx=64, kv_type="q8_0")
    with pytest.raises(ValueError, match="kv_type must be"):
        phicpp.Model(str(default_model_path()), n_ctx=64, kv_type="q5_0")


def test_cli_cache_type_flags():
    run = lambda *a: subprocess.run([sys.executable, "-m", "phicpp", "generate", "-p", "def f(x):", "-n", "8",
                                     "--temp", "0", "-t", "1", "--device", "cpu", *a],
                                    capture_output=True, text=True, timeout=120)
    plain, q8 = run(), run("-ctk", "q8_0", "-ctv", "q8_0")
    assert plain.returncode == 0 and q8.returncode == 0, q8.stderr
    assert q8.stdout.strip()
    bad = run("-ctk", "q8_0", "-ctv", "f16")
    assert bad.returncode == 2 and "one type" in bad.stderr and "Traceback" not in bad.stderr
