"""Logits of phicpp against transformers on tiny random checkpoints of every
Phi variant, converted with `phicpp convert` to F32 and F16.

Error measure: max |phicpp - reference| / max |reference| over the compared
logits (relative to the logits' scale; per-element relative error is
meaningless for logits near zero). Bars from DEVELOPERS.md: F32 <= 1e-4,
F16 <= 2e-3. The F16 reference is transformers run in float32 on the same
weights rounded to float16, i.e. the checkpoint the F16 file holds.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import hfmodels
import phicpp
from phicpp import _core

DEVICES = ["cpu"] + (["cuda"] if _core.cuda_available() else [])
PROMPT = 40
STEPS = 20
TOL = {"f32": 1e-4, "f16": 2e-3}
KINDS = hfmodels.KINDS


def rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def hf_logits(tiny, tokens: np.ndarray, outtype: str) -> np.ndarray:
    model = hfmodels.load_hf(tiny.path, torch.float32)
    if outtype == "f16":
        with torch.no_grad():
            for p in model.parameters():
                if p.ndim == 2:  # the converter keeps 1-D tensors in F32
                    p.copy_(p.half().float())
    with torch.no_grad():
        out = model(torch.tensor(tokens[None, :], dtype=torch.long))
    return out.logits[0].float().numpy()


@pytest.fixture(scope="module")
def gguf_of(tiny_model, tiny_gguf):
    """gguf_of(kind, outtype) -> (the tiny checkpoint, its converted GGUF)."""
    return lambda kind, outtype: (tiny_model(kind), tiny_gguf(kind, outtype))


def n_ctx_for(tiny, n_tokens: int) -> int:
    # LongRoPE: transformers uses the short factors while the sequence stays
    # within original_max_position_embeddings; phicpp decides by n_ctx.
    orig = (tiny.config.get("rope_scaling") or tiny.config.get("rope_parameters") or {}).get(
        "original_max_position_embeddings") or tiny.config.get("original_max_position_embeddings")
    return orig if orig and n_tokens <= orig else max(128, n_tokens)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("outtype", ["f32", "f16"])
@pytest.mark.parametrize("kind", KINDS)
def test_prefill_then_decode_matches_transformers(gguf_of, kind, outtype, device):
    tiny, path = gguf_of(kind, outtype)
    rng = np.random.default_rng(1234)
    tokens = rng.integers(0, tiny.tokenizer.n_tokens, PROMPT + STEPS).astype(np.int32)
    ref = hf_logits(tiny, tokens, outtype)

    m = phicpp.Model(path, n_ctx=n_ctx_for(tiny, PROMPT + STEPS), n_threads=2, kv_type=outtype, device=device)
    errs = [rel_err(m.eval(tokens[:PROMPT]), ref[PROMPT - 1])]
    for i in range(PROMPT, PROMPT + STEPS):
        errs.append(rel_err(m.eval(tokens[i:i + 1]), ref[i]))
    assert m.n_past == PROMPT + STEPS
    assert max(errs) <= TOL[outtype], f"{kind} {outtype}: errors per step {np.round(errs, 7)}"

    # all-logits prefill of the whole sequence agrees with the reference at every position
    m.reset()
    all_logits = m.eval(tokens, all_logits=True)
    assert all_logits.shape == (PROMPT + STEPS, m.n_vocab)
    assert rel_err(all_logits, ref) <= TOL[outtype]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["phi2", "phi3_medium", "phi3_swa"])
def test_prompt_longer_than_the_batch_matches_transformers(gguf_of, kind, device):
    """A prompt of 70 tokens in batches of 24 (24, 24, 22: each batch attends to the
    cache the batches before wrote; on the GPU the batches take flash attention),
    F16 weights and cache, every position's logits against transformers."""
    tiny, path = gguf_of(kind, "f16")
    rng = np.random.default_rng(77)
    tokens = rng.integers(0, tiny.tokenizer.n_tokens, 70).astype(np.int32)
    ref = hf_logits(tiny, tokens, "f16")
    m = phicpp.Model(path, n_ctx=128, n_batch=24, n_threads=2, kv_type="f16", device=device)
    assert rel_err(m.eval(tokens, all_logits=True), ref) <= TOL["f16"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["phi3_128k", "phi4_mini"])
def test_longrope_long_factors(gguf_of, kind, device):
    """A sequence longer than the original context: transformers switches to
    the long factors, and so does phicpp when n_ctx exceeds that length."""
    tiny, path = gguf_of(kind, "f32")
    rng = np.random.default_rng(7)
    tokens = rng.integers(0, tiny.tokenizer.n_tokens, 90).astype(np.int32)
    ref = hf_logits(tiny, tokens, "f32")
    m = phicpp.Model(path, n_ctx=256, n_threads=2, device=device)
    assert rel_err(m.eval(tokens, all_logits=True), ref) <= TOL["f32"]


@pytest.mark.parametrize("device", DEVICES)
def test_sliding_window_is_applied(gguf_of, device):
    """phi3_swa's window (16) is shorter than the prompt: dropping the window
    must change the logits, so a match above means the window was used."""
    tiny, path = gguf_of("phi3_swa", "f32")
    assert tiny.config["sliding_window"] < PROMPT
    rng = np.random.default_rng(3)
    tokens = rng.integers(0, tiny.tokenizer.n_tokens, PROMPT).astype(np.int32)
    ref = hf_logits(tiny, tokens, "f32")
    m = phicpp.Model(path, n_ctx=128, n_threads=1, device=device)
    ours = m.eval(tokens)
    assert rel_err(ours, ref[-1]) <= TOL["f32"]
    # without the window transformers gives visibly different logits
    model = hfmodels.load_hf(tiny.path, torch.float32)
    model.config.sliding_window = None
    with torch.no_grad():
        full = model(torch.tensor(tokens[None, :], dtype=torch.long)).logits[0, -1].numpy()
    assert rel_err(ours, full) > 1e-2


def test_thread_counts_agree(gguf_of):
    tiny, path = gguf_of("phi3_medium", "f32")
    tokens = np.arange(1, 30, dtype=np.int32)
    outs = [phicpp.Model(path, n_ctx=64, n_threads=t).eval(tokens) for t in (1, 2, 3)]
    for o in outs[1:]:
        assert rel_err(o, outs[0]) < 1e-6


@pytest.mark.parametrize("device", DEVICES)
def test_batch_size_does_not_change_logits(gguf_of, device):
    tiny, path = gguf_of("phi2", "f32")
    tokens = np.arange(3, 50, dtype=np.int32)
    a = phicpp.Model(path, n_ctx=64, n_batch=512, device=device).eval(tokens, all_logits=True)
    b = phicpp.Model(path, n_ctx=64, n_batch=7, device=device).eval(tokens, all_logits=True)
    assert rel_err(b, a) < 1e-5
