"""GGUF files written by `phicpp convert` run in llama.cpp, which then agrees
with phicpp: the same greedy continuation and close logits.

Needs llama.cpp's tools built by tools/llamacpp.sh (never a dependency):
set PHICPP_LLAMACPP_BIN to the folder holding `llamacpp-logits`; skipped
otherwise. Greedy agreement is checked by teacher forcing: phicpp generates
greedily, llama.cpp evaluates prompt + continuation in one batch, and its
argmax at every position must be phicpp's next token.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import phicpp
from phicpp.convert import convert_hf_to_gguf

BIN = os.environ.get("PHICPP_LLAMACPP_BIN")
pytestmark = pytest.mark.skipif(not BIN or not (Path(BIN) / "llamacpp-logits").exists(),
                                reason="set PHICPP_LLAMACPP_BIN to llama.cpp's tools (tools/llamacpp.sh)")

# qk_layernorm and Phi-3's sliding window are things llama.cpp does not do, so
# those variants are compared with transformers only (test_model_parity.py).
KINDS = ["phi1_5", "phi2", "phi3_mini", "phi3_medium", "phi3_128k", "phi4", "phi4_mini"]
# llama.cpp pads n_ctx up to a multiple of 256 and picks LongRoPE's factors
# from the padded size (256 > the tiny models' original 64: the long ones);
# phicpp picks them by the sequence's length, as transformers does, so the
# LongRoPE kinds get a prompt past 64 tokens: both engines then use the long set.
N_PROMPT, N_GEN, N_CTX = 24, 32, 256
LONG_PROMPT = {"phi3_128k": 72, "phi4_mini": 72}


def llamacpp_logits(path: Path, tokens: np.ndarray, tmp: Path) -> np.ndarray:
    out = tmp / "logits.npy"
    subprocess.run([str(Path(BIN) / "llamacpp-logits"), "-m", str(path), "--tokens", ",".join(map(str, tokens)),
                    "--ctx", str(N_CTX), "-t", "2", "--npy", str(out), "--top", "0"],
                   check=True, capture_output=True, timeout=300)
    return np.load(out)


@pytest.mark.parametrize("outtype", ["f32", "f16"])
@pytest.mark.parametrize("kind", KINDS)
def test_llamacpp_runs_our_gguf_with_the_same_greedy_tokens(tiny_model, tmp_path, kind, outtype):
    tiny = tiny_model(kind)
    path = convert_hf_to_gguf(tiny.path, tmp_path / f"{kind}.gguf", outtype)
    rng = np.random.default_rng(11)
    n_prompt = LONG_PROMPT.get(kind, N_PROMPT)
    prompt = rng.integers(0, tiny.tokenizer.n_tokens, n_prompt).astype(np.int32)

    m = phicpp.Model(path, n_ctx=N_CTX, n_threads=2, kv_type="f16")  # llama.cpp's default cache type
    seq = list(prompt)
    logits = m.eval(prompt)
    for _ in range(N_GEN):
        nxt = int(np.argmax(logits))
        seq.append(nxt)
        logits = m.eval([nxt])

    ref = llamacpp_logits(path, np.array(seq, dtype=np.int32), tmp_path)
    assert ref.shape[0] == len(seq)
    ours_all = phicpp.Model(path, n_ctx=N_CTX, n_threads=2, kv_type="f16").eval(seq, all_logits=True)
    # greedy: llama.cpp's choice after every prefix is phicpp's next token
    ref_next = ref[n_prompt - 1:-1].argmax(axis=1)
    assert list(ref_next) == seq[n_prompt:], f"{kind}: llama.cpp's greedy path diverges"
    err = np.abs(ours_all[:, :ref.shape[1]] - ref).max() / np.abs(ref).max()
    assert err < 5e-3, f"{kind} {outtype}: logits differ by {err:.2e} of the largest"


def test_llamacpp_runs_our_phimoe_file(tiny_model, tmp_path):
    """llama.cpp loads our Phi-3.5-MoE file (same names, stacked experts, keys)
    and runs it. Its logits are not ours: it routes by softmax top-2, the model
    by SparseMixer (tests/test_phimoe.py shows that difference in transformers);
    with the routing set aside, its attention and experts must agree, so the
    first token (whose attention is the value row alone) is checked loosely."""
    tiny = tiny_model("phimoe")
    path = convert_hf_to_gguf(tiny.path, tmp_path / "phimoe.gguf", "f32")
    tokens = np.random.default_rng(12).integers(0, tiny.tokenizer.n_tokens, N_PROMPT).astype(np.int32)
    ref = llamacpp_logits(path, tokens, tmp_path)
    assert ref.shape == (N_PROMPT, tiny.config["vocab_size"]) and np.all(np.isfinite(ref))
    ours = phicpp.Model(path, n_ctx=N_CTX, n_threads=2).eval(tokens, all_logits=True)
    assert np.corrcoef(ours[0], ref[0])[0, 1] > 0.5
