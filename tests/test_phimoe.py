"""Phi-3.5-MoE (arch phimoe) against transformers' PhimoeForCausalLM on tiny
random checkpoints: SparseMixer routing (not softmax top-2), several expert
counts and jitter values, GQA, biases, LongRoPE as transformers' Phimoe applies
it (short factors throughout, short/long mscale by length); F32 and F16, a
prompt then decode steps. Also: the converter's stacked experts and metadata,
files without the jitter key (llama.cpp's converter), quantized files. The
parity tests run on every device there is.

Error measure as tests/test_model_parity.py: max |ours - ref| / max |ref|.
The KV cache is f32 here whatever the weights: routing is discontinuous (a
score that crosses a SparseMixer window moves a whole expert's weight), and an
f16 cache's rounding is enough to tip a near-tie of these random routers (it
does at one position of the prompts below), which a bound on logits cannot
absorb; transformers' reference keeps its cache in f32 too.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

import hfmodels
import llamacpp_ref
import phicpp
from phicpp import convert as conv
from phicpp.quantize import MIXES, quantize_gguf

TOL = {"f32": 1e-4, "f16": 2e-3}
DEVICES = ["cpu"] + (["cuda"] if phicpp._core.cuda_available() else [])


def rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def hf_model(path, outtype: str):
    model = hfmodels.load_hf(path, torch.float32)
    if outtype == "f16":  # the weights the F16 file holds (the router stays F32, as llama.cpp keeps it)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.ndim >= 2 and "router" not in name:
                    p.copy_(p.half().float())
    return model


def hf_logits(model, tokens) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([list(tokens)], dtype=torch.long)).logits[0].float().numpy()


@pytest.fixture(scope="module")
def moe(tiny_model, tiny_gguf):
    return lambda kind, outtype="f32": (tiny_model(kind), tiny_gguf(kind, outtype))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("outtype", ["f32", "f16"])
@pytest.mark.parametrize("kind", ["phimoe", "phimoe_wide"])
def test_prefill_then_decode_matches_transformers(moe, kind, outtype, device):
    # (On the GPU an F16 file needs the model's exact activations: with the prefill
    # GEMM's f16-rounded ones it was 2.0e-3 to 5.7e-3 from transformers at every step,
    # and 0.12 over a whole prompt where a pick changed; H200, 2026-12-02.)
    tiny, path = moe(kind, outtype)
    rng = np.random.default_rng(5)
    tokens = rng.integers(0, tiny.tokenizer.n_tokens, 40).astype(np.int32)
    ref = hf_logits(hf_model(tiny.path, outtype), tokens)
    m = phicpp.Model(path, n_ctx=128, n_threads=2, kv_type="f32", device=device)
    assert m.arch == "phimoe" and m.n_expert == tiny.config["num_local_experts"]
    errs = [rel_err(m.eval(tokens[:24]), ref[23])]
    errs += [rel_err(m.eval(tokens[i:i + 1]), ref[i]) for i in range(24, 40)]
    assert max(errs) <= TOL[outtype], np.round(errs, 7)
    m.reset()
    assert rel_err(m.eval(tokens, all_logits=True), ref) <= TOL[outtype]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("outtype", ["f32", "f16"])
def test_longrope_mscale_across_the_original_length(moe, outtype, device):
    """transformers' Phimoe rotates with the short factors at every length and
    scales by short_mscale up to original_max_position_embeddings (64 here),
    long_mscale past it: decode from 50 to 80 tokens equals a fresh forward of
    every prefix, and so does growing again after truncating below 64."""
    tiny, path = moe("phimoe_128k", outtype)
    hf = hf_model(tiny.path, outtype)
    rng = np.random.default_rng(8)
    tokens = rng.integers(0, tiny.tokenizer.n_tokens, 80).astype(np.int32)
    m = phicpp.Model(path, n_ctx=128, n_threads=2, kv_type="f32", device=device)
    errs = [rel_err(m.eval(tokens[:50]), hf_logits(hf, tokens[:50])[-1])]
    for n in range(51, 81, 3):
        got = m.eval(tokens[m.n_past:n])
        errs.append(rel_err(got, hf_logits(hf, tokens[:n])[-1]))
    m.truncate(40)
    errs.append(rel_err(m.eval(tokens[40:60]), hf_logits(hf, tokens[:60])[-1]))
    assert max(errs) <= TOL[outtype], np.round(errs, 7)


def test_sparsemixer_is_not_softmax_top2(moe, monkeypatch):
    """The routing matters: transformers with softmax top-2 routing gives other
    logits, far outside the tolerance; phicpp matches SparseMixer's."""
    tiny, path = moe("phimoe")
    tokens = np.random.default_rng(3).integers(0, tiny.tokenizer.n_tokens, 30).astype(np.int32)
    hf = hf_model(tiny.path, "f32")
    ref = hf_logits(hf, tokens)
    import transformers.models.phimoe.modeling_phimoe as mp
    monkeypatch.setattr(mp, "sparsemixer", llamacpp_ref.softmax_top2_routing)
    other = hf_logits(hf, tokens)
    ours = phicpp.Model(path, n_ctx=64, n_threads=2).eval(tokens, all_logits=True)
    assert rel_err(other, ref) > 100 * TOL["f32"]
    assert rel_err(ours, ref) <= TOL["f32"]


def test_router_jitter_travels_in_the_file(tiny_model, copy_model, tmp_path, monkeypatch):
    """The jitter changes the routing; the converter stores it (phicpp key, as
    llama.cpp's converter keeps none); a file without it gets the published
    0.01 and a warning."""
    tiny = tiny_model("phimoe")
    src = copy_model(tiny.path)
    cfg = json.loads((src / "config.json").read_text())
    cfg["router_jitter_noise"] = 0.5
    (src / "config.json").write_text(json.dumps(cfg))
    wide = phicpp.convert_hf_to_gguf(src, tmp_path / "j05.gguf", "f32")
    assert gguf.GGUFReader(wide).fields[conv.PHIMOE_JITTER_KEY].contents() == pytest.approx(0.5)
    tokens = np.random.default_rng(4).integers(0, tiny.tokenizer.n_tokens, 30).astype(np.int32)
    ours = phicpp.Model(wide, n_ctx=64, n_threads=2)
    assert ours.router_jitter == pytest.approx(0.5)
    ref = hf_logits(hf_model(src, "f32"), tokens)
    assert rel_err(ours.eval(tokens, all_logits=True), ref) <= TOL["f32"]
    narrow = phicpp.Model(phicpp.convert_hf_to_gguf(tiny.path, tmp_path / "j001.gguf", "f32"), n_ctx=64)
    assert rel_err(narrow.eval(tokens, all_logits=True), ref) > 100 * TOL["f32"]

    # no key (as llama.cpp's converter writes): the published default, said once
    monkeypatch.setattr(conv, "PHIMOE_JITTER_KEY", "test.not_read")
    bare = phicpp.convert_hf_to_gguf(tiny.path, tmp_path / "bare.gguf", "f32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = phicpp.Model(bare, n_ctx=64, n_threads=2)
    assert len([w for w in caught if "router jitter" in str(w.message)]) == 1
    assert m.router_jitter == pytest.approx(0.01)
    narrow.reset()  # (this checkpoint's own jitter is the published 0.01: the same model)
    assert np.array_equal(m.eval(tokens, all_logits=True), narrow.eval(tokens, all_logits=True))


def test_converter_stacks_the_experts_as_llama_cpp(moe):
    tiny, path = moe("phimoe_wide", "f16")
    r = gguf.GGUFReader(path)
    assert r.fields["general.architecture"].contents() == "phimoe"
    assert r.fields["phimoe.expert_count"].contents() == 6
    assert r.fields["phimoe.expert_used_count"].contents() == 2
    t = {x.name: x for x in r.tensors}
    E, F = tiny.config["hidden_size"], tiny.config["intermediate_size"]
    assert list(t["blk.0.ffn_gate_exps.weight"].shape) == [E, F, 6]
    assert list(t["blk.0.ffn_up_exps.weight"].shape) == [E, F, 6]
    assert list(t["blk.1.ffn_down_exps.weight"].shape) == [F, E, 6]
    assert t["blk.0.ffn_gate_inp.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    assert t["blk.0.ffn_gate_exps.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    for name in ("attn_norm.bias", "ffn_norm.bias", "attn_q.bias", "attn_output.bias"):
        assert "blk.0." + name in t
    assert "output.bias" in t and "output_norm.bias" in t
    # expert 3's gate rows are the checkpoint's experts.3.w1
    from safetensors import safe_open
    with safe_open(str(tiny.path / "model.safetensors"), "pt") as f:
        w1 = f.get_tensor("model.layers.0.block_sparse_moe.experts.3.w1.weight").numpy()
    got = np.asarray(t["blk.0.ffn_gate_exps.weight"].data)[3].astype(np.float32)
    np.testing.assert_array_equal(got, w1.astype(np.float16).astype(np.float32))


def test_missing_expert_is_a_conversion_error(tiny_model, copy_model):
    src = copy_model(tiny_model("phimoe").path)
    from safetensors.torch import load_file, save_file
    sd = load_file(str(src / "model.safetensors"))
    del sd["model.layers.1.block_sparse_moe.experts.2.w3.weight"]
    save_file(sd, str(src / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(phicpp.PhicppError, match="expert"):
        phicpp.convert_hf_to_gguf(src, src.parent / "x.gguf", "f32")


@pytest.mark.parametrize("mix", ["Q8_0", "Q4_0", "Q4_K_M"])
def test_quantized_experts_run(moe, tmp_path, mix):
    """`phicpp quantize` quantizes the stacked experts (router and norms kept),
    and the quantized model runs close to the F32 one."""
    tiny, path = moe("phimoe")
    q = tmp_path / f"moe-{mix}.gguf"
    types = quantize_gguf(path, q, mix, n_threads=2)
    assert "F32" in types and len(types) >= 2
    t = {x.name: x for x in gguf.GGUFReader(q).tensors}
    assert t["blk.0.ffn_gate_inp.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    assert t["blk.0.ffn_down_exps.weight"].tensor_type != gguf.GGMLQuantizationType.F32
    tokens = np.random.default_rng(6).integers(0, tiny.tokenizer.n_tokens, 24).astype(np.int32)
    ref = phicpp.Model(path, n_ctx=64, n_threads=2).eval(tokens, all_logits=True)
    got = phicpp.Model(q, n_ctx=64, n_threads=2).eval(tokens, all_logits=True)
    assert np.all(np.isfinite(got))
    # (a router's near-tie may flip a pick: a loose bound, on the whole sequence)
    assert np.sqrt(np.mean((got - ref) ** 2)) <= 0.5 * np.sqrt(np.mean(ref ** 2))


MKRAND = Path(__file__).resolve().parents[1] / "tools" / "mkrand_gguf.py"
VOCAB = Path(__file__).parent / "data" / "ggml-vocab-phi-3.gguf"


@pytest.fixture(scope="module")
def moe_blocks(module_tmp):
    """A random Phi-3.5-MoE-shaped F32 file whose rows are whole K-quant blocks
    (tools/mkrand_gguf.py phimoe-tiny: hidden 256, expert FF 512), 2 layers of 2
    experts and router jitter 0: SparseMixer then gives both experts weight 1 at
    every token whatever the scores (the best masks the other out of its window, and
    the second is alone among the rest), so the block is continuous in its input and
    what quantized weights change is the kernels' doing, not a routing flip (with more
    experts, 8-bit activations tip near-ties: single steps then move by ~0.2)."""
    out = module_tmp("moe") / "moe-f32.gguf"
    subprocess.run([sys.executable, str(MKRAND), "phimoe-tiny", str(VOCAB), str(out), "--layers", "2",
                    "--experts", "2", "--jitter", "0", "--dtype", "f32", "--seed", "3"], check=True, capture_output=True)
    return out


def dequantized_copy(src: Path, dst: Path) -> Path:
    """src with every tensor in F32 (the values the quantized blocks hold)."""
    from phicpp.quantize import _as_f32, _copy_metadata

    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(str(dst), arch=r.fields["general.architecture"].contents())
    _copy_metadata(r, w, gguf.LlamaFileType.ALL_F32)
    for t in r.tensors:
        w.add_tensor(t.name, _as_f32(t).reshape([int(d) for d in reversed(t.shape)]))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


# every quantized mix (not the aliases, nor F16, which quantizes nothing)
@pytest.mark.parametrize("mix", sorted(m for m in MIXES if m not in ("Q3_K", "Q4_K", "Q5_K", "F16")))
def test_every_quantized_mix_runs_the_experts(moe_blocks, tmp_path, mix):
    """Each mix of `phicpp quantize` quantizes the stacked experts in its own type
    and the CPU runs them: prompt and decode steps equal the same model with the
    quantized values in F32, up to the kernels' 8-bit activations (a prompt through
    the GEMM, 5 tokens through the row kernels, then one token at a time)."""
    q = tmp_path / f"moe-{mix}.gguf"
    quantize_gguf(moe_blocks, q, mix, n_threads=2)
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(q).tensors}
    assert all(types[f"blk.{i}.ffn_{w}_exps.weight"] not in (gguf.GGMLQuantizationType.F32,
                                                             gguf.GGMLQuantizationType.F16)
               for i in range(2) for w in ("gate", "up", "down"))
    ref_path = dequantized_copy(q, tmp_path / "deq.gguf")
    tokens = np.random.default_rng(6).integers(0, 32000, 40).astype(np.int32)
    got, ref = (phicpp.Model(p, n_ctx=64, n_threads=2, kv_type="f32") for p in (q, ref_path))
    errs = [rel_err(got.eval(tokens[a:b], all_logits=True), ref.eval(tokens[a:b], all_logits=True))
            for a, b in ((0, 24), (24, 29))]
    errs += [rel_err(got.eval(tokens[i:i + 1]), ref.eval(tokens[i:i + 1])) for i in range(29, 40)]
    print(f"{mix}: {max(errs):.1e}")
    assert max(errs) <= 3e-2, np.round(errs, 4)
