"""Perplexity as llama-perplexity computes it: against a float64 numpy reference of the same
method, and (when llama.cpp's tools are built, see tools/llamacpp.sh) against llama-perplexity
itself on the same GGUF and text, within 0.5%."""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import phicpp
from phicpp.perplexity import perplexity, token_nll

LLAMA_PPL = Path(os.environ.get("PHICPP_LLAMACPP_BIN", "/work/scratch/bin")) / "llama-perplexity"


def sample_text() -> str:
    """Some ordinary English and code: the license text of this Python, else a generated one."""
    import sysconfig
    lic = Path(sysconfig.get_paths()["stdlib"]) / "LICENSE.txt"
    if lic.is_file():
        return lic.read_text(encoding="utf-8", errors="replace")[:9000]
    words = "the model reads a file of text and counts how well it predicts each next token".split()
    rng = np.random.default_rng(0)
    return " ".join(rng.choice(words, 3000))


@pytest.fixture(scope="module")
def ggufs(tiny_model, module_tmp):
    d = module_tmp("ppl")
    out = {}
    for kind in ("phi3_mini", "phi2"):
        out[kind] = d / f"{kind}.gguf"
        phicpp.convert_hf_to_gguf(tiny_model(kind).path, out[kind], "f16")
    return out


@pytest.fixture(scope="module")
def text_file(module_tmp):
    p = module_tmp("ppltext") / "text.txt"
    p.write_text(sample_text(), encoding="utf-8")
    return p


def reference_ppl(path, text: str, n_ctx: int) -> tuple[float, list[float]]:
    """The llama-perplexity method, independently: whole chunks with every logit, float64 log-softmax."""
    m = phicpp.Model(path, n_ctx=n_ctx, n_threads=1)
    tok = m.tokenizer
    ids = tok.tokenize(text, add_special=True)
    first, nll, count, running = n_ctx // 2, 0.0, 0, []
    for i in range(len(ids) // n_ctx):
        chunk = list(ids[i * n_ctx:(i + 1) * n_ctx])
        orig = list(chunk)
        if tok.add_bos:
            chunk[0] = tok.bos_id
        m.reset()
        logits = m.eval(chunk, all_logits=True).astype(np.float64)
        for j in range(first, n_ctx - 1):
            row = logits[j]
            lse = row.max() + math.log(np.exp(row - row.max()).sum())
            nll += lse - row[orig[j + 1]]
            count += 1
        running.append(math.exp(nll / count))
    return math.exp(nll / count), running


@pytest.mark.parametrize("kind", ["phi3_mini", "phi2"])
def test_matches_reference_method(kind, ggufs, text_file):
    text = text_file.read_text(encoding="utf-8")
    n_ctx = 64
    m = phicpp.Model(ggufs[kind], n_ctx=n_ctx, n_threads=1)
    r = perplexity(m, text, n_ctx)
    want, running = reference_ppl(ggufs[kind], text, n_ctx)
    assert r.count == r.n_chunks * (n_ctx - n_ctx // 2 - 1)
    assert r.ppl == pytest.approx(want, rel=1e-4)
    np.testing.assert_allclose(r.running, running, rtol=1e-4)
    assert r.ppl_err > 0


def test_token_nll_matches_log_softmax():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, (7, 33)).astype(np.float32)
    tgt = rng.integers(0, 33, 7)
    x = logits.astype(np.float64)
    ref = -(x[np.arange(7), tgt] - (x.max(1) + np.log(np.exp(x - x.max(1, keepdims=True)).sum(1))))
    np.testing.assert_allclose(token_nll(logits, tgt), ref, rtol=1e-5)


def test_too_short_text_is_a_clear_error(ggufs):
    m = phicpp.Model(ggufs["phi2"], n_ctx=64, n_threads=1)
    with pytest.raises(ValueError, match="at least 128 tokens"):
        perplexity(m, "too short", 64)


@pytest.mark.skipif(not LLAMA_PPL.exists(), reason="llama.cpp's llama-perplexity is not built (tools/llamacpp.sh)")
@pytest.mark.parametrize("kind", ["phi3_mini", "phi2"])
def test_matches_llama_perplexity(kind, ggufs, text_file):
    def final(out: str) -> float:
        return float(re.search(r"Final estimate: PPL = ([0-9.]+)", out).group(1))

    ours = subprocess.run([sys.executable, "-m", "phicpp", "perplexity", "-m", str(ggufs[kind]), "-f", str(text_file),
                           "-c", "64", "-t", "1"], capture_output=True, text=True, check=True)
    theirs = subprocess.run([str(LLAMA_PPL), "-m", str(ggufs[kind]), "-f", str(text_file), "-c", "64", "-t", "1"],
                            capture_output=True, text=True, check=True)
    a, b = final(ours.stdout), final(theirs.stdout + theirs.stderr)
    assert a == pytest.approx(b, rel=0.005), (a, b)
    # the running estimates agree chunk by chunk too
    ra = [float(x) for x in re.findall(r"\[\d+\]([0-9.]+),", ours.stdout)]
    rb = [float(x) for x in re.findall(r"\[\d+\]([0-9.]+),", theirs.stdout + theirs.stderr)]
    assert len(ra) == len(rb) > 1
    np.testing.assert_allclose(ra, rb, rtol=0.005)
