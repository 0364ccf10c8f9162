"""LongRoPE as transformers computes it: the short factors while the whole sequence fits in the
original context, the long ones for every position once it does not; crossing the boundary (and
back, after truncate) re-rotates the cached keys, so every step equals a fresh forward pass."""
from __future__ import annotations

import numpy as np
import pytest

import phicpp
from phicpp import _core
from test_model_parity import TOL, hf_logits, rel_err

DEVICES = ["cpu"] + (["cuda"] if _core.cuda_available() else [])
ORIG = 64  # original_max_position_embeddings of the tiny phi3_128k


@pytest.fixture(scope="module")
def longrope(tiny_model, tiny_gguf):
    return tiny_model("phi3_128k"), {outtype: tiny_gguf("phi3_128k", outtype) for outtype in ("f32", "f16")}


def prefix_refs(tiny, tokens, outtype, lengths):
    """The last logits of a fresh transformers forward over each prefix."""
    return {n: hf_logits(tiny, tokens[:n], outtype)[-1] for n in lengths}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("outtype", ["f32", "f16"])
def test_decode_across_the_boundary_and_back(longrope, outtype, device):
    tiny, paths = longrope
    rng = np.random.default_rng(11)
    tokens = rng.integers(0, tiny.tokenizer.n_tokens, 96).astype(np.int32)
    kv = "f32" if outtype == "f32" else "f16"
    m = phicpp.Model(paths[outtype], n_ctx=128, n_threads=2, kv_type=kv, device=device)
    grow = list(range(57, 73)) + [90]           # one token at a time across 64, then a jump
    back = list(range(50, 60)) + [70]           # after truncating to 49: below, then across again
    refs = prefix_refs(tiny, tokens, outtype, set(grow + back + [56, 49]))
    errs = {56: rel_err(m.eval(tokens[:56]), refs[56])}
    n = 56
    for target in grow:
        errs[target] = rel_err(m.eval(tokens[n:target]), refs[target])
        n = target
    m.truncate(48)
    n = 48
    for target in [49] + back:
        errs[("back", target)] = rel_err(m.eval(tokens[n:target]), refs[target])
        n = target
    bad = {k: v for k, v in errs.items() if v > TOL[outtype]}
    assert not bad, f"{outtype} {device}: errors above {TOL[outtype]}: {bad}"


@pytest.mark.parametrize("device", DEVICES)
def test_batched_sequences_cross_on_their_own(longrope, device):
    """Two sequences in one batch, one past the original context and one not: each gets its own
    factor set (and equals decoding it alone)."""
    tiny, paths = longrope
    rng = np.random.default_rng(5)
    a = rng.integers(0, tiny.tokenizer.n_tokens, 70).astype(np.int32)
    b = rng.integers(0, tiny.tokenizer.n_tokens, 20).astype(np.int32)
    m = phicpp.Model(paths["f32"], n_ctx=128, n_threads=2, device=device, n_seq=2)
    m.eval(a[:62], seq=0)
    m.eval(b[:10], seq=1)
    ref_a = prefix_refs(tiny, a, "f32", range(63, 71))
    ref_b = prefix_refs(tiny, b, "f32", range(11, 19))
    for i in range(8):
        out = m.decode_batch([0, 1], [a[62 + i], b[10 + i]])
        assert rel_err(out[0], ref_a[63 + i]) <= TOL["f32"], f"sequence 0 at {63 + i}"
        assert rel_err(out[1], ref_b[11 + i]) <= TOL["f32"], f"sequence 1 at {11 + i}"


# ---------------------------------------------------------------- sliding window
@pytest.mark.parametrize("isa", ["scalar", "auto"])
@pytest.mark.parametrize("kv", ["f32", "f16"])
def test_sliding_window_cache_is_a_ring_of_the_window(tiny_model, tiny_gguf, kv, isa):
    """A windowed model (window 16 here) keeps only window + one step of keys per
    layer on the CPU, as a ring: its cache is that size whatever n_ctx, and its
    logits past several windows (prompt chunks of 8, then single tokens, then a
    truncate and more) equal transformers' forward over the whole sequence."""
    tiny, path = tiny_model("phi3_swa"), tiny_gguf("phi3_swa", "f32")
    window = tiny.config["sliding_window"]
    tokens = np.random.default_rng(9).integers(0, tiny.tokenizer.n_tokens, 100).astype(np.int32)
    ref = hf_logits(tiny, tokens, "f32")
    n_batch = 8
    m = _core.Model(str(path), n_ctx=512, n_batch=n_batch, n_threads=2, kv_type=kv, isa=isa)
    full = phicpp.Model(path, n_ctx=512, n_threads=2, kv_type=kv, device="cpu")
    row = m.kv_cache_bytes // (window + n_batch)
    assert m.kv_cache_bytes == row * (window + n_batch) and full.kv_cache_bytes == row * 512
    tol = TOL["f32"] if kv == "f32" else TOL["f16"]
    logits = m.eval(tokens[:40], True, 0)
    assert rel_err(logits, ref[:40]) <= tol
    errs = [rel_err(m.eval(tokens[i:i + 1], False, 0), ref[i]) for i in range(40, 80)]
    m.truncate(70)  # back into ring rows already reused: positions 70.. are written again
    errs += [rel_err(m.eval(tokens[i:i + 1], False, 0), ref[i]) for i in range(70, 100)]
    assert max(errs) <= tol, np.round(errs, 7)
