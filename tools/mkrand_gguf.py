#!/usr/bin/env python3
"""Write a GGUF with the real shapes and metadata of a Phi model and random weights.

For speed measurements and quantization comparisons only: the weights are
N(0, 0.02) noise, norms are 1 (+ N(0, 0.01)). The tokenizer metadata is copied
from a vocab-only GGUF (llama.cpp's ggml-vocab-phi-3.gguf: tests/data/).
Tensors are drawn and written one at a time, so a file larger than memory (a
Phi-3.5-MoE shape) can be written; the draws follow the tensors' order, so a
seed gives the same file as ../shared/tools/mkrand_gguf.py (which this extends
with the phimoe shapes) for the shapes both have.

usage: mkrand_gguf.py SHAPE VOCAB_GGUF OUT [--layers N] [--experts N] [--jitter J] [--dtype f16|f32] [--seed S]
  SHAPE: phi2 (Phi-2 2.7B) | phi3 (Phi-3-mini 3.8B) | phi4-mini (its attention: 24 heads,
         8 KV, rotary 0.75; Phi-3 vocab) | phi3-medium (Phi-3-medium 14B: 40 heads / 10 KV
         of 128) | phi3-1b (16 layers of 2048) | phi2-tiny | phi3-tiny
         | phimoe (Phi-3.5-MoE: 32 layers of 4096, 16 experts of FF 6400, 32 heads / 8 KV)
         | phimoe-tiny (rows of whole K-quant blocks, 8 heads / 2 KV, 8 experts)
The phimoe files carry what phicpp's converter writes for Phi-3.5-MoE (LayerNorms
and attention with biases, output bias, router in F32, the router jitter key),
without LongRoPE (not what these files measure).
"""
from __future__ import annotations

import argparse

import gguf
import numpy as np
from gguf import GGUFReader, GGUFWriter

SHAPES = {
    "phi2": dict(arch="phi2", n_embd=2560, n_layer=32, n_head=32, n_head_kv=32, n_ff=10240, n_vocab=51200, n_ctx=2048, rot=0.4),
    "phi3": dict(arch="phi3", n_embd=3072, n_layer=32, n_head=32, n_head_kv=32, n_ff=8192, n_vocab=32064, n_ctx=4096, rot=1.0),
    "phi4-mini": dict(arch="phi3", n_embd=3072, n_layer=32, n_head=24, n_head_kv=8, n_ff=8192, n_vocab=32064, n_ctx=4096, rot=0.75),
    "phi3-medium": dict(arch="phi3", n_embd=5120, n_layer=40, n_head=40, n_head_kv=10, n_ff=17920, n_vocab=32064, n_ctx=4096,
                        rot=1.0),
    "phi3-1b": dict(arch="phi3", n_embd=2048, n_layer=16, n_head=16, n_head_kv=16, n_ff=5632, n_vocab=32064, n_ctx=4096, rot=1.0),
    "phi2-tiny": dict(arch="phi2", n_embd=256, n_layer=4, n_head=4, n_head_kv=4, n_ff=1024, n_vocab=51200, n_ctx=2048, rot=0.4),
    "phi3-tiny": dict(arch="phi3", n_embd=256, n_layer=4, n_head=4, n_head_kv=4, n_ff=512, n_vocab=32064, n_ctx=4096, rot=1.0),
    "phimoe": dict(arch="phimoe", n_embd=4096, n_layer=32, n_head=32, n_head_kv=8, n_ff=6400, n_vocab=32064, n_ctx=4096,
                   rot=1.0, n_expert=16),
    "phimoe-tiny": dict(arch="phimoe", n_embd=256, n_layer=8, n_head=8, n_head_kv=2, n_ff=512, n_vocab=32064, n_ctx=4096,
                        rot=1.0, n_expert=8),
}
PHIMOE_JITTER_KEY = "phicpp.phimoe.router_jitter_noise"  # (phicpp.convert.PHIMOE_JITTER_KEY; this tool runs without phicpp)


def copy_tokenizer(reader: GGUFReader, w: GGUFWriter, n_vocab: int) -> None:
    f = reader.fields
    tokens = [t if isinstance(t, str) else bytes(t).decode("utf-8", "replace") for t in f["tokenizer.ggml.tokens"].contents()]
    types = f["tokenizer.ggml.token_type"].contents() if "tokenizer.ggml.token_type" in f else [1] * len(tokens)
    scores = f["tokenizer.ggml.scores"].contents() if "tokenizer.ggml.scores" in f else None
    while len(tokens) < n_vocab:  # pad like the HF converter does
        tokens.append(f"[PAD{len(tokens)}]")
        types.append(gguf.TokenType.UNUSED)
        if scores is not None:
            scores.append(-10000.0)
    w.add_tokenizer_model(f["tokenizer.ggml.model"].contents())
    if "tokenizer.ggml.pre" in f:
        w.add_tokenizer_pre(f["tokenizer.ggml.pre"].contents())
    w.add_token_list(tokens[:n_vocab])
    w.add_token_types(types[:n_vocab])
    if scores is not None:
        w.add_token_scores(scores[:n_vocab])
    if "tokenizer.ggml.merges" in f:
        w.add_token_merges(f["tokenizer.ggml.merges"].contents())
    for key, fn in (("bos_token_id", w.add_bos_token_id), ("eos_token_id", w.add_eos_token_id),
                    ("unknown_token_id", w.add_unk_token_id), ("padding_token_id", w.add_pad_token_id)):
        if "tokenizer.ggml." + key in f:
            fn(int(f["tokenizer.ggml." + key].contents()))
    if "tokenizer.chat_template" in f:
        w.add_chat_template(f["tokenizer.chat_template"].contents())


def tensor_plan(s: dict) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, numpy shape, kind) of every tensor in file order; kind: "w" (weight
    noise), "norm" (1 + noise, F32), "vec" (bias noise, F32), "f32w" (weight noise kept F32)."""
    arch, E, L, H, HKV, F, V = s["arch"], s["n_embd"], s["n_layer"], s["n_head"], s["n_head_kv"], s["n_ff"], s["n_vocab"]
    hd = E // H
    out = [("token_embd.weight", (V, E), "w")]
    for i in range(L):
        p = f"blk.{i}."
        out.append((p + "attn_norm.weight", (E,), "norm"))
        if arch == "phi2":
            out.append((p + "attn_norm.bias", (E,), "vec"))
            for n in ("q", "k", "v"):
                rows = H * hd if n == "q" else HKV * hd
                out += [(p + f"attn_{n}.weight", (rows, E), "w"), (p + f"attn_{n}.bias", (rows,), "vec")]
            out += [(p + "attn_output.weight", (E, E), "w"), (p + "attn_output.bias", (E,), "vec"),
                    (p + "ffn_up.weight", (F, E), "w"), (p + "ffn_up.bias", (F,), "vec"),
                    (p + "ffn_down.weight", (E, F), "w"), (p + "ffn_down.bias", (E,), "vec")]
        elif arch == "phi3":
            out += [(p + "attn_qkv.weight", (E + 2 * HKV * hd, E), "w"), (p + "attn_output.weight", (E, E), "w"),
                    (p + "ffn_norm.weight", (E,), "norm"), (p + "ffn_up.weight", (2 * F, E), "w"),
                    (p + "ffn_down.weight", (E, F), "w")]
        else:  # phimoe: experts stacked as [expert, rows, cols] (ggml {cols, rows, expert})
            X = s["n_expert"]
            out.append((p + "attn_norm.bias", (E,), "vec"))
            for n in ("q", "k", "v"):
                rows = H * hd if n == "q" else HKV * hd
                out += [(p + f"attn_{n}.weight", (rows, E), "w"), (p + f"attn_{n}.bias", (rows,), "vec")]
            out += [(p + "attn_output.weight", (E, E), "w"), (p + "attn_output.bias", (E,), "vec"),
                    (p + "ffn_norm.weight", (E,), "norm"), (p + "ffn_norm.bias", (E,), "vec"),
                    (p + "ffn_gate_inp.weight", (X, E), "f32w"),
                    (p + "ffn_gate_exps.weight", (X, F, E), "w"), (p + "ffn_up_exps.weight", (X, F, E), "w"),
                    (p + "ffn_down_exps.weight", (X, E, F), "w")]
    out.append(("output_norm.weight", (E,), "norm"))
    if arch in ("phi2", "phimoe"):
        out += [("output_norm.bias", (E,), "vec"), ("output.bias", (V,), "vec")]
    out.append(("output.weight", (V, E), "w"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("shape", choices=sorted(SHAPES))
    ap.add_argument("vocab")
    ap.add_argument("out")
    ap.add_argument("--layers", type=int)
    ap.add_argument("--experts", type=int, help="phimoe shapes: experts per layer")
    ap.add_argument("--jitter", type=float, default=0.01, help="phimoe shapes: SparseMixer's router jitter (Phi-3.5-MoE's 0.01)")
    ap.add_argument("--dtype", default="f16", choices=["f16", "f32"])
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    s = dict(SHAPES[a.shape])
    if a.layers:
        s["n_layer"] = a.layers
    if a.experts:
        s["n_expert"] = a.experts
    arch, E, H = s["arch"], s["n_embd"], s["n_head"]
    dt = np.float16 if a.dtype == "f16" else np.float32
    rng = np.random.default_rng(a.seed)

    w = GGUFWriter(a.out, arch)
    w.add_name(f"random-{a.shape}")
    w.add_context_length(s["n_ctx"])
    w.add_embedding_length(E)
    w.add_feed_forward_length(s["n_ff"])
    w.add_block_count(s["n_layer"])
    w.add_head_count(H)
    w.add_head_count_kv(s["n_head_kv"])
    w.add_rope_dimension_count((int(s["rot"] * E) // H) & ~1)  # RoPE rotates pairs: even
    w.add_rope_freq_base(10000.0)
    w.add_file_type(1 if a.dtype == "f16" else 0)
    if arch == "phi2":
        w.add_layer_norm_eps(1e-5)
        w.add_add_bos_token(False)
    else:
        w.add_layer_norm_rms_eps(1e-5)
        w.add_rope_scaling_orig_ctx_len(s["n_ctx"])
        w.add_sliding_window(2047 if arch == "phi3" else 0)
    if arch == "phimoe":
        w.add_expert_count(s["n_expert"])
        w.add_expert_used_count(2)
        w.add_float32(PHIMOE_JITTER_KEY, a.jitter)
    copy_tokenizer(GGUFReader(a.vocab), w, s["n_vocab"])

    plan = tensor_plan(s)
    for name, shape, kind in plan:
        t = np.dtype(dt if kind == "w" else np.float32)
        w.add_tensor_info(name, shape, t, int(np.prod(shape)) * t.itemsize)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for name, shape, kind in plan:
        if kind in ("w", "f32w"):
            data = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(dt if kind == "w" else np.float32)
        else:
            data = (1.0 if kind == "norm" else 0.0) + rng.standard_normal(shape, dtype=np.float32) * 0.01
            data = data.astype(np.float32)
        w.write_tensor_data(data)
    w.close()


if __name__ == "__main__":
    main()
