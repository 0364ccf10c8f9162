"""GGUF files written by `phicpp convert` run in llama.cpp, which then agrees
with phicpp: the same greedy continuation and close logits.

Needs llama.cpp's tools built by tools/llamacpp.sh (never a dependency):
set PHICPP_LLAMACPP_BIN to the folder holding `llamacpp-logits`; skipped
otherwise. Greedy agreement is checked by teacher forcing: phicpp generates
greedily, llama.cpp evaluates prompt + continuation in one batch, and its
argmax at every position must be phicpp's next token. Phi-3.5-MoE is the
exception: llama.cpp computes another function there (its norm and routing),
and the last test shows that the routing is then all that differs.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import llamacpp_ref
import phicpp
from phicpp.convert import convert_hf_to_gguf

pytestmark = pytest.mark.skipif(not llamacpp_ref.HAS_BIN,
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

    ref = llamacpp_ref.logits(path, seq, N_CTX)
    assert ref.shape[0] == len(seq)
    ours_all = phicpp.Model(path, n_ctx=N_CTX, n_threads=2, kv_type="f16").eval(seq, all_logits=True)
    # greedy: llama.cpp's choice after every prefix is phicpp's next token
    ref_next = ref[n_prompt - 1:-1].argmax(axis=1)
    assert list(ref_next) == seq[n_prompt:], f"{kind}: llama.cpp's greedy path diverges"
    err = np.abs(ours_all[:, :ref.shape[1]] - ref).max() / np.abs(ref).max()
    assert err < 5e-3, f"{kind} {outtype}: logits differ by {err:.2e} of the largest"


N_GEN_MOE = 24


def test_phimoe_differs_from_llamacpp_by_its_routing_only(tiny_model, copy_model, tmp_path, monkeypatch):
    """llama.cpp runs phimoe through its Phi-3 graph, which departs from the model
    (transformers' PhimoeForCausalLM, which phicpp follows: tests/test_phimoe.py) twice:
    - RMSNorm (then the norms' biases) where the model has LayerNorm;
    - softmax over every expert, the best two, their weights renormalized to sum 1
      (build_moe_ffn with norm_w), where the model routes by SparseMixer.
    Both routings pick the same two experts, the two highest scores (SparseMixer's first
    pick is the argmax, its second the argmax of the rest), but not the same weights:
    llama.cpp's are sigmoid(+-(s1 - s2)), the second at most 1/2; SparseMixer's second is a
    softmax over the runner-up's window among the rest, at least 1/(n_expert - 1) and 1 when
    it is alone there (with 2 experts, always). They meet only where the scores happen to
    balance exactly, never as functions of the input, so no configuration of the router
    makes the two engines compute the same model, and the comparison goes through
    transformers. On a checkpoint whose
    residual stream has zero mean in every row (hfmodels' phimoe_centered: LayerNorm =
    RMSNorm there), llama.cpp on our file, and on its own converter's file when
    PHICPP_LLAMACPP_SRC is set, makes the greedy tokens and logits of transformers with
    llama.cpp's routing patched in; phicpp on the same files equals transformers as is.
    Controls: the experts picked are the same under both routings at every token and layer;
    the two routings' logits differ; without the centering llama.cpp leaves
    transformers-with-its-routing (the norm matters)."""
    import torch
    import transformers.models.phimoe.modeling_phimoe as mp

    import hfmodels

    sparsemixer, llama_routing = mp.sparsemixer, llamacpp_ref.softmax_top2_routing

    def forward(hf, tokens, routing):
        monkeypatch.setattr(mp, "sparsemixer", routing)
        with torch.no_grad():
            return hf(torch.tensor([list(tokens)], dtype=torch.long)).logits[0].numpy()

    def rel(a, b):
        return float(np.abs(a - b).max() / np.abs(b).max())

    tiny = tiny_model("phimoe_centered")
    hf = hfmodels.load_hf(tiny.path)
    prompt = np.random.default_rng(12).integers(0, tiny.tokenizer.n_tokens, N_PROMPT).tolist()
    seq = list(prompt)  # transformers' greedy continuation under llama.cpp's routing
    for _ in range(N_GEN_MOE):
        seq.append(int(forward(hf, seq, llama_routing)[-1].argmax()))
    as_llamacpp, as_model = forward(hf, seq, llama_routing), forward(hf, seq, sparsemixer)
    assert rel(as_model, as_llamacpp) > 0.05  # the routing matters on these tokens

    picks = []

    def both(scores, jitter_eps, training, top_k=2):
        w, idx = sparsemixer(scores, jitter_eps, training, top_k)
        picks.append((idx, llama_routing(scores)[1]))
        return w, idx

    forward(hf, seq, both)
    assert len(picks) == tiny.config["num_hidden_layers"]
    assert all(torch.equal(a, b) for a, b in picks), "the routings picked different experts"

    files = {"phicpp's": convert_hf_to_gguf(tiny.path, tmp_path / "ours.gguf", "f32")}
    if llamacpp_ref.HAS_SRC:
        published = llamacpp_ref.as_published_phimoe(copy_model(tiny.path))
        files["llama.cpp's"] = llamacpp_ref.convert(published, tmp_path / "theirs.gguf", "f32")
    for who, path in files.items():
        for step in (False, True):  # llama.cpp's prompt path, then its one-token path
            got = llamacpp_ref.logits(path, seq, N_CTX, step=step)
            assert list(got[N_PROMPT - 1:-1].argmax(axis=1)) == seq[N_PROMPT:], f"{who} file, step={step}"
            print(f"{who} file, step={step}: llama.cpp vs transformers with its routing {rel(got, as_llamacpp):.1e}, "
                  f"with the model's {rel(got, as_model):.2f}")
            assert rel(got, as_llamacpp) < 5e-3, f"{who} file, step={step}: {rel(got, as_llamacpp):.2e}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (llama.cpp's file has no router jitter: the published 0.01, as here)
            ours = phicpp.Model(path, n_ctx=N_CTX, n_threads=2, kv_type="f32").eval(seq, all_logits=True)
        assert rel(ours, as_model) <= 1e-4, f"phicpp on {who} file"

    plain = tiny_model("phimoe")
    got = llamacpp_ref.logits(convert_hf_to_gguf(plain.path, tmp_path / "plain.gguf", "f32"), seq, N_CTX)
    assert rel(got, forward(hfmodels.load_hf(plain.path), seq, llama_routing)) > 0.05
