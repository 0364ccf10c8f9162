#!/usr/bin/env python3
"""Seed inputs for the fuzz targets (tools/fuzz_*.cpp), written with the gguf package.

    python tools/make_fuzz_seeds.py seeds   # tools/fuzz_seeds/{model,tokenizer}/ (in the repo)
    python tools/make_fuzz_seeds.py vocabs DIR   # the tokenizer target's vocab files (not in the repo)

model/: complete tiny models, a few KB each, so that a mutation reaches the model
loader rather than the reader: phi3 (SentencePiece vocab with scores, token types,
byte tokens, a control and a user-defined token; GQA, LongRoPE factors, a sliding
window; Q8_0/Q4_0/F16/F32 tensors), phi2 (gpt2 BPE with merges, separate q/k/v and
QK-LayerNorm, biases), phimoe (two experts, stacked expert tensors).
tokenizer/: texts from the tokenizer test vectors (tests/data/*.inp), one per file.
vocabs DIR: ggml-vocab-phi-3.gguf and ggml-vocab-gpt-2.gguf copied, and the gpt-2
vocab under the cl100k-style ("llama-bpe") and o200k-style ("gpt-4o") pre-tokenizers
that Phi-4 and Phi-4-mini use (their own vocabs are not in the fixtures).
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import gguf

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "tools" / "fuzz_seeds"
rng = np.random.default_rng(19)


def _tensor(w: gguf.GGUFWriter, name: str, ne0: int, ne1: int = 1, qtype=gguf.GGMLQuantizationType.F32,
            n: int = 0):
    shape = (n, ne1, ne0) if n else ((ne1, ne0) if ne1 > 1 or name.endswith("_exps.weight") else (ne0,))
    a = rng.normal(0, 0.1, size=shape).astype(np.float32)
    if name.endswith("norm.weight"):
        a += 1.0
    if qtype == gguf.GGMLQuantizationType.F32:
        w.add_tensor(name, a)
    elif qtype == gguf.GGMLQuantizationType.F16:
        w.add_tensor(name, a.astype(np.float16))
    else:
        w.add_tensor(name, gguf.quants.quantize(a, qtype), raw_dtype=qtype)


def _spm_vocab(w: gguf.GGUFWriter, name: str):
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in (0x0A, 0x20, 0xC3, 0xA9, 0xE2, 0x96, 0x81, 0xFF)]
    tokens += ["▁", "a", "b", "c", "▁a", "▁b", "ab", "▁ab", "bc", "abc", "▁abc", "é", "▁é", "▁▁", "<|user|>",
               "<|assistant|>", "<|end|>", "<|endoftext|>"]
    types = [2, 3, 3] + [6] * 8 + [1] * 14 + [4, 4, 3, 3]
    scores = [0.0] * 11 + [-float(i) for i in range(14)] + [0.0] * 4
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(27)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_chat_template("{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + '<|end|>\n' }}"
                        "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}")
    return len(tokens)


def _bpe_vocab(w: gguf.GGUFWriter):
    tokens = ["!", "a", "b", "c", "Ġ", "Ċ", "Ã", "©", "Ġa", "Ġb", "ab", "Ġab", "abc", "Ġabc", "Ã©", "ĠĠ",
              "<|endoftext|>", "<|im_start|>", "<|im_sep|>", "<|im_end|>"]
    merges = ["Ġ a", "Ġ b", "a b", "Ġa b", "ab c", "Ġab c", "Ã ©", "Ġ Ġ"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types([1] * 16 + [3, 3, 3, 3])
    w.add_token_merges(merges)
    w.add_bos_token_id(16)
    w.add_eos_token_id(16)
    return len(tokens)


def write_phi3(path: Path):
    w = gguf.GGUFWriter(str(path), "phi3")
    w.add_name("Phi3 fuzz seed")
    E, H, KV, D, F, L, CTX = 32, 4, 2, 8, 64, 1, 64
    w.add_context_length(CTX)
    w.add_uint32("phi3.rope.scaling.original_context_length", 32)
    w.add_embedding_length(E)
    w.add_feed_forward_length(F)
    w.add_block_count(L)
    w.add_head_count(H)
    w.add_head_count_kv(KV)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(6)
    w.add_rope_freq_base(10000.0)
    w.add_sliding_window(8)
    n_vocab = _spm_vocab(w, "phi3")
    Q8, Q4, F16 = gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.Q4_0, gguf.GGMLQuantizationType.F16
    _tensor(w, "token_embd.weight", E, n_vocab, Q8)
    _tensor(w, "output_norm.weight", E)
    _tensor(w, "rope_factors_long.weight", 3)
    _tensor(w, "rope_factors_short.weight", 3)
    for i in range(L):
        p = f"blk.{i}."
        _tensor(w, p + "attn_norm.weight", E)
        _tensor(w, p + "ffn_norm.weight", E)
        _tensor(w, p + "attn_qkv.weight", E, H * D + 2 * KV * D, F16)
        _tensor(w, p + "attn_output.weight", H * D, E, Q4)
        _tensor(w, p + "ffn_up.weight", E, 2 * F, Q8)
        _tensor(w, p + "ffn_down.weight", F, E, Q8)
    _finish(w)


def write_phi2(path: Path):
    w = gguf.GGUFWriter(str(path), "phi2")
    E, H, D, F, L = 16, 2, 8, 32, 2
    w.add_context_length(64)
    w.add_embedding_length(E)
    w.add_feed_forward_length(F)
    w.add_block_count(L)
    w.add_head_count(H)
    w.add_head_count_kv(H)
    w.add_layer_norm_eps(1e-5)
    w.add_rope_dimension_count(4)
    n_vocab = _bpe_vocab(w)
    F16 = gguf.GGMLQuantizationType.F16
    _tensor(w, "token_embd.weight", E, n_vocab, F16)
    _tensor(w, "output_norm.weight", E)
    _tensor(w, "output_norm.bias", E)
    _tensor(w, "output.weight", E, n_vocab, F16)
    _tensor(w, "output.bias", n_vocab)
    for i in range(L):
        p = f"blk.{i}."
        _tensor(w, p + "attn_norm.weight", E)
        _tensor(w, p + "attn_norm.bias", E)
        for x in "qkv":
            _tensor(w, p + f"attn_{x}.weight", E, H * D)
            _tensor(w, p + f"attn_{x}.bias", H * D)
        if i == 0:
            for x in "qk":
                _tensor(w, p + f"attn_{x}_norm.weight", D)
                _tensor(w, p + f"attn_{x}_norm.bias", D)
        _tensor(w, p + "attn_output.weight", H * D, E)
        _tensor(w, p + "attn_output.bias", E)
        _tensor(w, p + "ffn_up.weight", E, F, F16)
        _tensor(w, p + "ffn_up.bias", F)
        _tensor(w, p + "ffn_down.weight", F, E)
        _tensor(w, p + "ffn_down.bias", E)
    _finish(w)


def write_phimoe(path: Path):
    w = gguf.GGUFWriter(str(path), "phimoe")
    E, H, KV, D, F, L, X = 16, 2, 1, 8, 16, 1, 3
    w.add_context_length(64)
    w.add_uint32("phimoe.rope.scaling.original_context_length", 32)
    w.add_embedding_length(E)
    w.add_feed_forward_length(F)
    w.add_block_count(L)
    w.add_head_count(H)
    w.add_head_count_kv(KV)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(D)
    w.add_expert_count(X)
    w.add_expert_used_count(2)
    w.add_float32("phicpp.phimoe.router_jitter_noise", 0.01)
    w.add_float32("phicpp.phimoe.rope.short_mscale", 1.1)
    w.add_float32("phicpp.phimoe.rope.long_mscale", 1.2)
    n_vocab = _spm_vocab(w, "phimoe")
    _tensor(w, "token_embd.weight", E, n_vocab)
    _tensor(w, "output_norm.weight", E)
    _tensor(w, "output_norm.bias", E)
    _tensor(w, "output.weight", E, n_vocab)
    _tensor(w, "output.bias", n_vocab)
    _tensor(w, "rope_factors_long.weight", D // 2)
    _tensor(w, "rope_factors_short.weight", D // 2)
    for i in range(L):
        p = f"blk.{i}."
        for n in ("attn_norm", "ffn_norm"):
            _tensor(w, p + n + ".weight", E)
            _tensor(w, p + n + ".bias", E)
        _tensor(w, p + "attn_q.weight", E, H * D)
        _tensor(w, p + "attn_k.weight", E, KV * D)
        _tensor(w, p + "attn_v.weight", E, KV * D)
        _tensor(w, p + "attn_q.bias", H * D)
        _tensor(w, p + "attn_output.weight", H * D, E)
        _tensor(w, p + "attn_output.bias", E)
        _tensor(w, p + "ffn_gate_inp.weight", E, X)
        _tensor(w, p + "ffn_gate_exps.weight", E, F, n=X)
        _tensor(w, p + "ffn_up_exps.weight", E, F, n=X)
        _tensor(w, p + "ffn_down_exps.weight", F, E, n=X)
    _finish(w)


def _finish(w: gguf.GGUFWriter):
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_seeds():
    (SEEDS / "model").mkdir(parents=True, exist_ok=True)
    write_phi3(SEEDS / "model" / "phi3.gguf")
    write_phi2(SEEDS / "model" / "phi2.gguf")
    write_phimoe(SEEDS / "model" / "phimoe.gguf")
    out = SEEDS / "tokenizer"
    out.mkdir(parents=True, exist_ok=True)
    texts = (ROOT / "tests" / "data" / "ggml-vocab-phi-3.gguf.inp").read_text(encoding="utf-8")
    texts = [t.strip("\n") for t in texts.split("__ggml_vocab_test__")]
    texts = [t for t in texts if t] + ["<|user|>\nhi<|end|>\n<|assistant|>", "\xff\xfe bad \xc3"]
    for i, t in enumerate(texts):
        # first byte: which tokenizer and flags (tools/fuzz_tokenizer.cpp); the rest: the text
        (out / f"{i:02d}.txt").write_bytes(bytes([i % 16]) + t.encode("utf-8", "surrogateescape"))


def write_vocabs(out: Path):
    out.mkdir(parents=True, exist_ok=True)
    data = ROOT / "tests" / "data"
    shutil.copy(data / "ggml-vocab-phi-3.gguf", out / "spm-phi3.gguf")
    shutil.copy(data / "ggml-vocab-gpt-2.gguf", out / "bpe-gpt2.gguf")
    src = gguf.GGUFReader(str(data / "ggml-vocab-gpt-2.gguf"))
    for pre, name in (("llama-bpe", "bpe-cl100k.gguf"), ("gpt-4o", "bpe-o200k.gguf")):
        w = gguf.GGUFWriter(str(out / name), "phi3")
        for key, field in src.fields.items():
            if key.startswith("GGUF.") or key == "general.architecture":
                continue
            value = field.contents()
            if key == "tokenizer.ggml.pre":
                value = pre
            vtype = field.types[0]
            sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            w.add_key_value(key, value, vtype, sub_type=sub)
        _finish(w)


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "seeds":
        write_seeds()
    elif len(sys.argv) == 3 and sys.argv[1] == "vocabs":
        write_vocabs(Path(sys.argv[2]))
    else:
        sys.exit(__doc__)
