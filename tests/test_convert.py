"""phicpp convert: HF checkpoint folder -> GGUF with llama.cpp's names, keys, types and vocab.

Expected names/keys are written out here from llama.cpp's conventions (gguf-py
constants, convert_hf_to_gguf.py Phi2Model/Phi3MiniModel), not read back from our
own output; values are checked against the safetensors the HF model saved.
"""
from __future__ import annotations

import json
import os
import math
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

import llamacpp_ref
import reftok
from phicpp.cli import main as cli_main
from phicpp.convert import ConvertError, convert_hf_to_gguf, read_hparams

F32, F16, BF16 = gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16
WEIGHT_TYPE = {"f32": F32, "f16": F16, "bf16": BF16}
FILE_TYPE = {"f32": 0, "f16": 1, "bf16": 32}   # llama_ftype: ALL_F32, MOSTLY_F16, MOSTLY_BF16

# ----------------------------------------------------------------------------- llama.cpp's layout

PHI2_BLOCK = ["attn_norm.weight", "attn_norm.bias", "attn_q.weight", "attn_q.bias", "attn_k.weight", "attn_k.bias",
              "attn_v.weight", "attn_v.bias", "attn_output.weight", "attn_output.bias",
              "ffn_up.weight", "ffn_up.bias", "ffn_down.weight", "ffn_down.bias"]
PHI2_GLOBAL = ["token_embd.weight", "output_norm.weight", "output_norm.bias", "output.weight", "output.bias"]
PHI3_BLOCK = ["attn_norm.weight", "attn_qkv.weight", "attn_output.weight", "ffn_norm.weight",
              "ffn_up.weight", "ffn_down.weight"]
PHI3_GLOBAL = ["token_embd.weight", "output_norm.weight", "output.weight"]

GENERAL_KEYS = {"general.architecture", "general.type", "general.name", "general.size_label",
                "general.file_type", "general.quantization_version"}
PHI2_KEYS = {f"phi2.{k}" for k in ("context_length", "embedding_length", "feed_forward_length", "block_count",
                                    "attention.head_count", "attention.head_count_kv",
                                    "attention.layer_norm_epsilon", "rope.dimension_count")}
PHI3_KEYS = {f"phi3.{k}" for k in ("context_length", "rope.scaling.original_context_length", "embedding_length",
                                    "feed_forward_length", "block_count", "attention.head_count",
                                    "attention.head_count_kv", "attention.layer_norm_rms_epsilon",
                                    "rope.dimension_count", "rope.freq_base", "attention.sliding_window")}
# add_bos/add_eos False: a ByteLevel post-processor adds neither (current gguf-py writes it explicitly)
BPE_KEYS = {"tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
            "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token"}
SPM_KEYS = {"tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.scores",
            "tokenizer.ggml.token_type", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id",
            "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token", "tokenizer.chat_template"}
# general.* keys gguf-py's model-card heuristics may add from a folder name
OPTIONAL_GENERAL = {"general.basename", "general.finetune", "general.version", "general.size_label"}

# HF tensor -> GGUF tensor, per architecture (the mapping llama.cpp's tensor_mapping.py encodes)
HF_TO_GGUF_PHI2 = {"model.embed_tokens": "token_embd", "model.final_layernorm": "output_norm", "lm_head": "output",
                   "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
                   "self_attn.v_proj": "attn_v", "self_attn.dense": "attn_output", "mlp.fc1": "ffn_up",
                   "mlp.fc2": "ffn_down", "self_attn.q_layernorm": "attn_q_norm",
                   "self_attn.k_layernorm": "attn_k_norm"}
HF_TO_GGUF_PHI3 = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output",
                   "input_layernorm": "attn_norm", "self_attn.qkv_proj": "attn_qkv", "self_attn.o_proj": "attn_output",
                   "post_attention_layernorm": "ffn_norm", "mlp.gate_up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def hf_to_gguf_name(arch: str, hf: str) -> str:
    table = HF_TO_GGUF_PHI2 if arch == "phi2" else HF_TO_GGUF_PHI3
    stem, kind = hf.rsplit(".", 1)
    if stem.startswith("model.layers."):
        _, _, i, rest = stem.split(".", 3)
        return f"blk.{i}.{table[rest]}.{kind}"
    return f"{table[stem]}.{kind}"


def arch_of(kind: str) -> str:
    return "phi2" if kind in ("phi1_5", "phi2", "phi_qkln") else "phi3"


def expected_tensors(kind: str, cfg: dict) -> set[str]:
    arch, n = arch_of(kind), cfg["num_hidden_layers"]
    block, glob = (PHI2_BLOCK, PHI2_GLOBAL) if arch == "phi2" else (PHI3_BLOCK, PHI3_GLOBAL)
    names = set(glob) | {f"blk.{i}.{b}" for i in range(n) for b in block}
    if cfg.get("qk_layernorm"):
        names |= {f"blk.{i}.attn_{q}_norm.{w}" for i in range(n) for q in "qk" for w in ("weight", "bias")}
    if cfg.get("tie_word_embeddings"):
        names -= {"output.weight"}   # llama.cpp writes none; the loader reuses token_embd
    if (cfg.get("rope_parameters") or {}).get("rope_type") == "longrope":
        names |= {"rope_factors_long.weight", "rope_factors_short.weight"}
    return names


# GGUFReader needs seconds of CPU for a 50k-token vocab; the suite reads ~40 files, so it
# uses this small reader, checked against gguf.GGUFReader in test_reader_agrees_with_gguf_reader.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


@dataclass
class Tensor:
    name: str
    tensor_type: gguf.GGMLQuantizationType
    shape: list[int]          # ggml order, fastest dimension first
    raw: bytes


@dataclass
class Gguf:
    kv: dict
    tensors: dict
    path: Path | None = None


def read_gguf(path) -> Gguf:
    buf = Path(path).read_bytes()
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from(fmt, buf, pos)[0]
        pos += struct.calcsize(fmt)
        return v

    def string():
        nonlocal pos
        n = take("<Q")
        pos += n
        return buf[pos - n:pos].decode("utf-8")

    def value(typ):
        nonlocal pos
        if typ == 8:
            return string()
        if typ != 9:
            return take(_SCALARS[typ])
        et, n = take("<I"), take("<Q")
        if et == 8:  # strings: tight loop, this is most of a vocab-heavy file
            out, unpack = [], struct.Struct("<Q").unpack_from
            for _ in range(n):
                (k,) = unpack(buf, pos)
                out.append(buf[pos + 8:pos + 8 + k].decode("utf-8"))
                pos += 8 + k
            return out
        if et in _SCALARS:
            dt = np.dtype(_SCALARS[et])
            arr = np.frombuffer(buf, dtype=dt, count=n, offset=pos)
            pos += n * dt.itemsize
            return arr.tolist()
        return [value(et) for _ in range(n)]

    assert buf[:4] == b"GGUF" and struct.unpack_from("<I", buf, 4)[0] == 3
    pos = 8
    n_tensors, n_kv = take("<Q"), take("<Q")
    kv = {}
    for _ in range(n_kv):
        k = string()
        kv[k] = value(take("<I"))
    infos = []
    for _ in range(n_tensors):
        name = string()
        dims = [take("<Q") for _ in range(take("<I"))]
        infos.append((name, gguf.GGMLQuantizationType(take("<I")), dims, take("<Q")))
    align = kv.get("general.alignment", 32)
    base = (pos + align - 1) // align * align
    tensors = {}
    for name, typ, dims, off in infos:
        bs, ts = gguf.GGML_QUANT_SIZES[typ]
        nbytes = int(np.prod(dims)) // bs * ts
        tensors[name] = Tensor(name, typ, dims, buf[base + off: base + off + nbytes])
    return Gguf(kv, tensors, Path(path))


def fields(r: Gguf) -> dict:
    return r.kv


def tensors(r: Gguf) -> dict:
    return r.tensors


def ggml_shape(t) -> list[int]:
    return [int(x) for x in t.shape]


def as_f32(t: Tensor) -> np.ndarray:
    """Tensor data as float32 in numpy (row-major) shape."""
    shape = tuple(reversed(ggml_shape(t)))
    if t.tensor_type == BF16:
        raw = np.frombuffer(t.raw, dtype=np.uint16)
        return (raw.astype(np.uint32) << 16).view(np.float32).reshape(shape)
    dt = {F32: np.float32, F16: np.float16}[t.tensor_type]
    return np.frombuffer(t.raw, dtype=dt).astype(np.float32).reshape(shape)


@pytest.mark.parametrize("kind,outtype", [("phi4", "f32"), ("phi4_mini", "bf16")])
def test_reader_agrees_with_gguf_reader(converted, kind, outtype):
    _, mine = converted(kind, outtype)
    path = mine.path
    ref = gguf.GGUFReader(path)
    ref_kv = {k: v.contents() for k, v in ref.fields.items() if not k.startswith("GGUF.")}
    assert ref_kv.keys() == mine.kv.keys()
    for k, v in ref_kv.items():
        assert mine.kv[k] == (pytest.approx(v) if isinstance(v, float) else v), k
    assert [t.name for t in ref.tensors] == list(mine.tensors)
    for t in ref.tensors:
        m = mine.tensors[t.name]
        assert (m.tensor_type, ggml_shape(m)) == (t.tensor_type, [int(x) for x in t.shape])
        assert m.raw == t.data.tobytes()


@pytest.fixture(scope="module")
def converted(tiny_model, module_tmp):
    """converted(kind, outtype) -> (TinyModel, Gguf), each converted once per module."""
    done = {}
    out_dir = module_tmp("gguf")

    def get(kind: str, outtype: str):
        if (kind, outtype) not in done:
            m = tiny_model(kind)
            path = convert_hf_to_gguf(m.path, out_dir / f"{kind}-{outtype}.gguf", outtype)
            done[(kind, outtype)] = (m, read_gguf(path))
        return done[(kind, outtype)]

    return get


KINDS = ["phi1_5", "phi2", "phi_qkln", "phi3_mini", "phi3_128k", "phi3_medium", "phi3_swa", "phi4", "phi4_mini"]

# ----------------------------------------------------------------------------- tensors


# every kind in f32; f16 and bf16 (the same type rules for every kind) on one of each family shape
MATRIX = [(k, "f32") for k in KINDS] + [(k, t) for k in ("phi_qkln", "phi3_128k", "phi4_mini") for t in ("f16", "bf16")]


@pytest.mark.parametrize("kind,outtype", MATRIX)
def test_tensor_names_shapes_types_values(converted, kind, outtype):
    m, r = converted(kind, outtype)
    cfg = m.config
    ts = tensors(r)
    assert set(ts) == expected_tensors(kind, cfg)
    hf = load_file(str(m.path / "model.safetensors"))
    arch = arch_of(kind)
    for hf_name, w in hf.items():
        name = hf_to_gguf_name(arch, hf_name)
        if name == "output.weight" and cfg.get("tie_word_embeddings"):
            continue
        t = ts[name]
        assert ggml_shape(t) == list(reversed(w.shape)), name       # ggml order: fastest dim first
        one_d = w.dim() == 1
        assert t.tensor_type == (F32 if one_d else WEIGHT_TYPE[outtype]), name
        got = as_f32(t)
        w32 = w.float()
        if t.tensor_type == F32:
            ref = w32.numpy()
        elif t.tensor_type == F16:
            ref = w32.half().float().numpy()
        else:
            ref = w32.bfloat16().float().numpy()   # torch rounds to nearest even, as ggml does
        np.testing.assert_array_equal(got, ref, err_msg=name)


@pytest.mark.parametrize("kind", ["phi3_128k", "phi4_mini"])
def test_longrope_factors_and_attn_factor(converted, kind):
    m, r = converted(kind, "f16")
    rp = m.config["rope_parameters"]
    ts = tensors(r)
    for which in ("long", "short"):
        t = ts[f"rope_factors_{which}.weight"]
        assert t.tensor_type == F32
        np.testing.assert_array_equal(as_f32(t), np.asarray(rp[f"{which}_factor"], dtype=np.float32))
    f = fields(r)
    n_ctx, orig = m.config["max_position_embeddings"], rp["original_max_position_embeddings"]
    assert f["phi3.context_length"] == n_ctx and f["phi3.rope.scaling.original_context_length"] == orig
    want = math.sqrt(1 + math.log(n_ctx / orig) / math.log(orig))   # llama.cpp's / transformers' LongRoPE mscale
    assert f["phi3.rope.scaling.attn_factor"] == pytest.approx(want, rel=1e-6)

# ----------------------------------------------------------------------------- metadata


@pytest.mark.parametrize("kind", KINDS)
def test_metadata_keys_and_values(converted, kind):
    m, r = converted(kind, "f32")
    f, cfg, arch = fields(r), m.config, arch_of(kind)
    rp = cfg["rope_parameters"]
    spm = kind.startswith("phi3")
    want = GENERAL_KEYS | (PHI2_KEYS if arch == "phi2" else PHI3_KEYS) | (SPM_KEYS if spm else BPE_KEYS)
    if arch == "phi2":
        want |= {"tokenizer.ggml.unknown_token_id"}
    if rp.get("rope_type") == "longrope":
        want |= {"phi3.rope.scaling.attn_factor"}
    if kind in ("phi4", "phi4_mini"):
        want |= {"tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id", "tokenizer.chat_template"}
    assert want <= set(f), want - set(f)
    assert set(f) - want <= OPTIONAL_GENERAL, set(f) - want

    head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    rot = rp.get("partial_rotary_factor", 1.0)
    # llama.cpp's formula; our configs make it agree with transformers' int(rot * head_dim)
    rope_dims = int(rot * cfg["hidden_size"]) // cfg["num_attention_heads"]
    assert rope_dims == int(rot * head_dim)
    assert f["general.architecture"] == arch
    assert f["general.type"] == "model"
    assert f["general.file_type"] == 0
    assert f["general.quantization_version"] == 2
    a = arch
    assert f[f"{a}.context_length"] == cfg["max_position_embeddings"]
    assert f[f"{a}.embedding_length"] == cfg["hidden_size"]
    assert f[f"{a}.feed_forward_length"] == cfg["intermediate_size"]
    assert f[f"{a}.block_count"] == cfg["num_hidden_layers"]
    assert f[f"{a}.attention.head_count"] == cfg["num_attention_heads"]
    assert f[f"{a}.attention.head_count_kv"] == cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    assert f[f"{a}.rope.dimension_count"] == rope_dims
    if arch == "phi2":
        assert f["phi2.attention.layer_norm_epsilon"] == pytest.approx(cfg["layer_norm_eps"])
        assert f["tokenizer.ggml.add_bos_token"] is False   # Phi2Model.set_gguf_parameters
    else:
        assert f["phi3.attention.layer_norm_rms_epsilon"] == pytest.approx(cfg["rms_norm_eps"])
        assert f["phi3.rope.freq_base"] == rp["rope_theta"]
        assert f["phi3.attention.sliding_window"] == (cfg.get("sliding_window") or 0)
        assert f["phi3.rope.scaling.original_context_length"] == cfg.get(
            "original_max_position_embeddings", rp.get("original_max_position_embeddings"))


def test_file_type_per_outtype(converted):
    for outtype, ft in FILE_TYPE.items():
        _, r = converted("phi3_128k", outtype)
        assert fields(r)["general.file_type"] == ft


def test_transformers4_config_layout_gives_same_metadata(tiny_model, copy_model, tmp_path):
    """rope_scaling + top-level rope_theta/partial_rotary_factor (transformers 4.x) == rope_parameters (5.x)."""
    m = tiny_model("phi4_mini")
    d = copy_model(m.path)
    cfg = json.loads((d / "config.json").read_text())
    rp = cfg.pop("rope_parameters")
    cfg["rope_theta"] = rp.pop("rope_theta")
    cfg["partial_rotary_factor"] = rp.pop("partial_rotary_factor")
    cfg["original_max_position_embeddings"] = rp.pop("original_max_position_embeddings")
    rp["type"] = rp.pop("rope_type")
    cfg["rope_scaling"] = rp
    (d / "config.json").write_text(json.dumps(cfg))
    def non_general(path):
        return {k: v for k, v in fields(read_gguf(path)).items() if not k.startswith("general.")}

    a = non_general(convert_hf_to_gguf(m.path, tmp_path / "a.gguf"))
    b = non_general(convert_hf_to_gguf(d, tmp_path / "b.gguf"))
    assert a["phi3.rope.dimension_count"] == 12 and "phi3.rope.scaling.attn_factor" in a
    assert a == b

# ----------------------------------------------------------------------------- tokenizer


def test_phi3_spm_vocab_matches_llamacpp_fixture(converted):
    m, r = converted("phi3_mini", "f32")
    f = fields(r)
    tokens, scores, types = reftok.phi3_vocab()     # llama.cpp's own conversion of the real tokenizer
    n_real = 32011
    assert f["tokenizer.ggml.model"] == "llama" and f["tokenizer.ggml.pre"] == "default"
    assert f["tokenizer.ggml.tokens"][:n_real] == tokens[:n_real]
    assert f["tokenizer.ggml.scores"][:n_real] == pytest.approx(scores[:n_real])
    assert f["tokenizer.ggml.token_type"][:n_real] == types[:n_real]
    # padding rows as current llama.cpp writes them (the fixture predates UNUSED)
    assert f["tokenizer.ggml.tokens"][n_real:] == [f"[PAD{i}]" for i in range(n_real, 32064)]
    assert set(f["tokenizer.ggml.token_type"][n_real:]) == {gguf.TokenType.UNUSED}
    assert set(f["tokenizer.ggml.scores"][n_real:]) == {-10000.0}
    assert (f["tokenizer.ggml.bos_token_id"], f["tokenizer.ggml.eos_token_id"]) == (1, 32000)
    assert (f["tokenizer.ggml.unknown_token_id"], f["tokenizer.ggml.padding_token_id"]) == (0, 32000)
    assert f["tokenizer.ggml.add_bos_token"] is True and f["tokenizer.ggml.add_eos_token"] is False
    assert f["tokenizer.chat_template"] == reftok.PHI35_TEMPLATE.read_text(encoding="utf-8")


def test_phi2_bpe_vocab_matches_gpt2_fixture(converted):
    m, r = converted("phi2", "f32")
    f = fields(r)
    tokens, merges = reftok.gpt2_vocab()
    assert f["tokenizer.ggml.model"] == "gpt2"
    # the probe-text hash of our CodeGen-style tokenizer equals microsoft/phi-2's in llama.cpp
    assert f["tokenizer.ggml.pre"] == "phi-2"
    assert f["tokenizer.ggml.tokens"][:50257] == tokens
    assert f["tokenizer.ggml.merges"] == merges
    types = f["tokenizer.ggml.token_type"]
    assert types[:50256] == [gguf.TokenType.NORMAL] * 50256
    assert types[50256] == gguf.TokenType.CONTROL                   # <|endoftext|>
    ws = reftok.CODEGEN_WHITESPACE
    # added tokens keep their raw text (llama.cpp matches USER_DEFINED tokens before byte-level BPE)
    assert f["tokenizer.ggml.tokens"][50257:50257 + len(ws)] == ws
    assert types[50257:50257 + len(ws)] == [gguf.TokenType.USER_DEFINED] * len(ws)
    assert f["tokenizer.ggml.tokens"][50295:] == [f"[PAD{i}]" for i in range(50295, 51200)]
    assert set(types[50295:]) == {gguf.TokenType.UNUSED}
    assert f["tokenizer.ggml.bos_token_id"] == f["tokenizer.ggml.eos_token_id"] == 50256


def test_plain_gpt2_tokenizer_detected_as_gpt2(tiny_model, copy_model, tmp_path):
    d = copy_model(tiny_model("phi1_5").path)
    shutil.copyfile(reftok.gpt2_tokenizer_json(), d / "tokenizer.json")    # no CodeGen whitespace tokens
    f = fields(read_gguf(convert_hf_to_gguf(d, tmp_path / "o.gguf")))
    assert f["tokenizer.ggml.pre"] == "gpt-2"


@pytest.mark.parametrize("kind,pre,eos", [("phi4", "dbrx", "<|im_end|>"), ("phi4_mini", "gpt-4o", "<|endoftext|>")])
def test_trained_bpe_vocabs(converted, kind, pre, eos):
    m, r = converted(kind, "f32")
    f = fields(r)
    tj = json.loads((m.path / "tokenizer.json").read_text(encoding="utf-8"))
    assert f["tokenizer.ggml.model"] == "gpt2" and f["tokenizer.ggml.pre"] == pre
    toks = f["tokenizer.ggml.tokens"]
    assert len(toks) == m.config["vocab_size"]
    for t, i in tj["model"]["vocab"].items():
        assert toks[i] == t
    for at in tj["added_tokens"]:
        assert toks[at["id"]] == at["content"]
        assert f["tokenizer.ggml.token_type"][at["id"]] == gguf.TokenType.CONTROL
    assert f["tokenizer.ggml.merges"] == [" ".join(mg) if isinstance(mg, list) else mg for mg in tj["model"]["merges"]]
    special = m.tokenizer.special
    assert f["tokenizer.ggml.bos_token_id"] == special["<|endoftext|>"]
    assert f["tokenizer.ggml.eos_token_id"] == special[eos]
    assert f["tokenizer.chat_template"] == m.tokenizer.chat_template
    n = m.tokenizer.n_tokens
    assert toks[n:] == [f"[PAD{i}]" for i in range(n, len(toks))]


def test_pre_tokenizer_fallback_by_regex(tiny_model, copy_model, tmp_path):
    """Unknown hash (a vocab we changed) -> pick tokenizer.ggml.pre by the regex; unknown regex -> error."""
    d = copy_model(tiny_model("phi4").path)
    tj = json.loads((d / "tokenizer.json").read_text())
    tj["model"]["vocab"]["zzzz_new"] = tj["model"]["vocab"].pop(next(iter(tj["model"]["vocab"])))
    (d / "tokenizer.json").write_text(json.dumps(tj))
    assert fields(read_gguf(convert_hf_to_gguf(d, tmp_path / "a.gguf")))["tokenizer.ggml.pre"] == "dbrx"
    tj["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\w+|\s+"
    (d / "tokenizer.json").write_text(json.dumps(tj))
    with pytest.raises(ConvertError, match="pre-tokenizer"):
        convert_hf_to_gguf(d, tmp_path / "b.gguf")
    assert not list(tmp_path.glob("b.gguf*")) and not list(tmp_path.glob(".b.gguf*"))

# ----------------------------------------------------------------------------- checkpoint formats


def test_sharded_bf16_and_bin_checkpoints_convert_identically(converted, copy_model, tmp_path):
    base, ref = converted("phi3_medium", "f32")
    ref = tensors(ref)

    # shard by hand the way save_pretrained(max_shard_size=...) does: files + weight_map index
    sharded = copy_model(base.path, "sharded")
    sd = load_file(str(sharded / "model.safetensors"))
    (sharded / "model.safetensors").unlink()
    names = sorted(sd)
    parts = [names[: len(names) // 2], names[len(names) // 2:]]
    weight_map = {}
    for i, part in enumerate(parts):
        fname = f"model-{i + 1:05d}-of-{len(parts):05d}.safetensors"
        save_file({n: sd[n] for n in part}, str(sharded / fname))
        weight_map.update({n: fname for n in part})
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    got = tensors(read_gguf(convert_hf_to_gguf(sharded, tmp_path / "sharded.gguf", "f32")))
    for name, t in ref.items():
        np.testing.assert_array_equal(as_f32(got[name]), as_f32(t), err_msg=name)

    binary = copy_model(base.path, "bin")
    (binary / "model.safetensors").unlink()
    torch.save(sd, binary / "pytorch_model.bin")
    got = tensors(read_gguf(convert_hf_to_gguf(binary, tmp_path / "bin.gguf", "f32")))
    for name, t in ref.items():
        np.testing.assert_array_equal(as_f32(got[name]), as_f32(t), err_msg=name)

    # a bf16 checkpoint: f32 output holds exactly the bf16 values; bf16 output the same bits
    b16 = copy_model(base.path, "b16")
    save_file({k: v.bfloat16() for k, v in sd.items()}, str(b16 / "model.safetensors"))
    for outtype in ("f32", "bf16"):
        got = tensors(read_gguf(convert_hf_to_gguf(b16, tmp_path / f"b16-{outtype}.gguf", outtype)))
        for hf_name, w in sd.items():
            name = hf_to_gguf_name("phi3", hf_name)
            np.testing.assert_array_equal(as_f32(got[name]), w.bfloat16().float().numpy(), err_msg=name)

# ----------------------------------------------------------------------------- errors


def _edit_config(d: Path, **changes) -> None:
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(changes)
    (d / "config.json").write_text(json.dumps(cfg))


def _break(case: str, d: Path) -> None:
    if case == "arch":
        _edit_config(d, architectures=["LlamaForCausalLM"])
    elif case == "config":
        (d / "config.json").unlink()
    elif case == "weights":
        (d / "model.safetensors").unlink()
    elif case == "tokenizer":
        (d / "tokenizer.json").unlink()
        (d / "tokenizer.model").unlink()
    elif case == "extra_tensor":
        sd = load_file(str(d / "model.safetensors"))
        sd["model.layers.0.self_attn.rotary_bogus.weight"] = torch.zeros(3)
        save_file(sd, str(d / "model.safetensors"))
    elif case == "shape":
        _edit_config(d, intermediate_size=100)
    elif case == "missing_tensor":
        sd = load_file(str(d / "model.safetensors"))
        del sd["model.layers.1.mlp.down_proj.weight"]
        save_file(sd, str(d / "model.safetensors"))
    elif case == "truncated":
        data = (d / "model.safetensors").read_bytes()
        (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif case == "missing_shard":
        (d / "model.safetensors.index.json").write_text(json.dumps(
            {"weight_map": {"model.norm.weight": "model-00002-of-00002.safetensors"}}))
    elif case == "rope_type":
        _edit_config(d, rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0})
    else:
        raise AssertionError(case)


ERROR_CASES = {  # case -> words the one-line message must contain
    "arch": "unsupported architecture LlamaForCausalLM",
    "config": "missing config.json",
    "weights": "missing weights",
    "tokenizer": "missing tokenizer",
    "extra_tensor": "unexpected tensor 'model.layers.0.self_attn.rotary_bogus.weight'",
    "shape": "expected [",
    "missing_tensor": "blk.1.ffn_down.weight",
    "truncated": "model.safetensors",
    "missing_shard": "model-00002-of-00002.safetensors",
    "rope_type": "unsupported rope type 'yarn'",
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_errors_are_one_line_and_leave_no_file(tiny_model, copy_model, tmp_path, case):
    d = copy_model(tiny_model("phi3_mini").path)
    _break(case, d)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(ConvertError) as e:
        convert_hf_to_gguf(d, out_dir / "m.gguf")
    assert ERROR_CASES[case] in str(e.value)
    assert "\n" not in str(e.value)
    assert list(out_dir.iterdir()) == []

    res = CliRunner().invoke(cli_main, ["convert", str(d), "-o", str(out_dir / "m.gguf")])
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and ERROR_CASES[case] in lines[0]
    assert list(out_dir.iterdir()) == []


_PHI3_CONFIG = {  # a Phi-3.5-mini-shaped config.json, scaled down
    "architectures": ["Phi3ForCausalLM"], "hidden_size": 96, "num_attention_heads": 6, "num_key_value_heads": 2,
    "intermediate_size": 192, "num_hidden_layers": 2, "vocab_size": 320, "max_position_embeddings": 4096,
    "original_max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "sliding_window": 262,
    "tie_word_embeddings": False, "partial_rotary_factor": 0.75,
    "rope_scaling": {"type": "longrope", "long_factor": [1.5] * 6, "short_factor": [1.0] * 6},
}

# key -> a bad value; each must be refused naming the key, never converted into a
# file the loader refuses nor raised as a Python error from int()/float()/struct
_BAD_CONFIG_VALUES = [
    ("hidden_size", 96.5), ("hidden_size", "96"), ("hidden_size", True), ("hidden_size", -96),
    ("num_attention_heads", 0), ("num_key_value_heads", -2), ("num_key_value_heads", 0), ("num_key_value_heads", 2.5),
    ("intermediate_size", [192]), ("num_hidden_layers", 0), ("vocab_size", "x"),
    ("max_position_embeddings", -1), ("max_position_embeddings", 2 ** 32),
    ("original_max_position_embeddings", 2 ** 40), ("sliding_window", -1), ("sliding_window", "x"),
    ("rms_norm_eps", 0.0), ("rms_norm_eps", -1e-5), ("rms_norm_eps", float("nan")), ("rms_norm_eps", "1e-5"),
    ("rope_theta", 0), ("rope_theta", -1.0), ("rope_theta", [10000.0]), ("rope_theta", float("inf")),
    ("partial_rotary_factor", 5.0), ("partial_rotary_factor", "half"), ("partial_rotary_factor", 0.0),
    ("tie_word_embeddings", "false"), ("rope_scaling", [1, 2]), ("rope_scaling", "longrope"),
    ("long_factor", None), ("long_factor", [1.5] * 5), ("long_factor", [1.5] * 5 + [float("nan")]),
    ("short_factor", [1.0] * 5 + [-1.0]), ("short_factor", "x"),
    # past what the file's 32-bit floats and ints hold
    ("rms_norm_eps", 1e-46), ("rms_norm_eps", 10 ** 400), ("rope_theta", 1e39), ("long_factor", [1e39] * 6),
    ("attention_factor", 1e39), ("model_type", ["phi3"]),
    ("original_max_position_embeddings", 1),  # LongRoPE's attention factor divides by its log
]


@pytest.mark.parametrize("key,value", _BAD_CONFIG_VALUES, ids=[f"{k}={v!r}" for k, v in _BAD_CONFIG_VALUES])
def test_config_values_checked_before_conversion(key, value):
    cfg = json.loads(json.dumps(_PHI3_CONFIG))
    hp = read_hparams(cfg)  # the base config converts
    assert (hp.n_ctx, hp.n_ctx_orig, hp.rope_dims, hp.sliding_window) == (4096, 512, 12, 262)
    if key in ("long_factor", "short_factor", "attention_factor"):
        cfg["rope_scaling"][key] = value
    elif key == "model_type":
        del cfg["architectures"]
        cfg[key] = value
    else:
        cfg[key] = value
    with pytest.raises(ConvertError) as e:
        read_hparams(cfg)
    assert (key in str(e.value) or key == "model_type") and "\n" not in str(e.value) and len(str(e.value)) < 200


def test_config_integral_floats_and_null_optionals_accepted():
    cfg = dict(_PHI3_CONFIG, hidden_size=96.0, sliding_window=None, num_key_value_heads=None, rope_scaling=None)
    hp = read_hparams(cfg)
    assert (hp.n_embd, hp.sliding_window, hp.n_head_kv, hp.n_ctx_orig) == (96, 0, 6, 512)
    assert isinstance(hp.n_embd, int)


def test_config_bad_architectures_entry_is_a_clear_error(tiny_model, copy_model, tmp_path):
    d = copy_model(tiny_model("phi3_mini").path)
    _edit_config(d, architectures=[None], sliding_window=-5)
    res = CliRunner().invoke(cli_main, ["convert", str(d), "-o", str(tmp_path / "m.gguf")])
    assert res.exit_code == 1 and res.output.startswith("error: unsupported architecture None")
    _edit_config(d, architectures=["Phi3ForCausalLM"])
    res = CliRunner().invoke(cli_main, ["convert", str(d), "-o", str(tmp_path / "m.gguf")])
    assert res.exit_code == 1 and res.output.strip() == "error: config.json: sliding_window = -5 is out of range [0, 268435456]"
    # counts that would size lists past the checkpoint (2**28 layers took minutes and gigabytes)
    _edit_config(d, sliding_window=None, num_hidden_layers=2 ** 28)
    res = CliRunner().invoke(cli_main, ["convert", str(d), "-o", str(tmp_path / "m.gguf")])
    assert res.exit_code == 1 and "num_hidden_layers = 268435456 but the checkpoint holds only" in res.output
    _edit_config(d, num_hidden_layers=2, bos_token_id=-1)
    res = CliRunner().invoke(cli_main, ["convert", str(d), "-o", str(tmp_path / "m.gguf")])
    assert res.exit_code == 1 and res.output.startswith("error: special token ids") and "Traceback" not in res.output
    assert not (tmp_path / "m.gguf").exists()


def test_output_into_folder_and_config_without_architectures(tiny_model, copy_model, tmp_path):
    d = copy_model(tiny_model("phi4").path, "phi4-hf")
    cfg = json.loads((d / "config.json").read_text())
    del cfg["architectures"]                       # model_type "phi3" still identifies it
    (d / "config.json").write_text(json.dumps(cfg))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    path = convert_hf_to_gguf(d, out_dir, "f32")
    assert path == out_dir / "phi4-hf-f32.gguf" and path.is_file()
    assert read_gguf(path).kv["general.architecture"] == "phi3"


def test_output_has_the_mode_of_a_new_file(tiny_model, tmp_path):
    """Written through a private temporary file, the result still gets 0666 & ~umask, as
    any new file (and as llama.cpp's converter writes it), not the temporary's 0600."""
    old = os.umask(0o022)
    try:
        path = convert_hf_to_gguf(tiny_model("phi2").path, tmp_path / "m.gguf", "f16")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_missing_folder(tmp_path):
    with pytest.raises(ConvertError, match="not a folder"):
        convert_hf_to_gguf(tmp_path / "nope")


def test_failure_while_writing_leaves_no_partial_file(tiny_model, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = gguf.GGUFWriter.write_tensor_data

    def flaky(self, tensor, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full (simulated)")
        return real(self, tensor, *a, **k)

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensor_data", flaky)
    out = tmp_path / "m.gguf"
    out.write_bytes(b"old")  # an older file of that name must survive a failed conversion
    with pytest.raises(OSError, match="disk full"):
        convert_hf_to_gguf(tiny_model("phi2").path, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"]
    assert out.read_bytes() == b"old"

# ----------------------------------------------------------------------------- CLI


def test_cli_convert_default_output_and_module_entry(tiny_model, copy_model, tmp_path):
    d = copy_model(tiny_model("phi3_swa").path, "phi3-swa-hf")
    res = CliRunner().invoke(cli_main, ["convert", str(d), "--outtype", "bf16"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "phi3-swa-hf-bf16.gguf"
    assert out.is_file() and f"wrote {out}" in res.output
    f = fields(read_gguf(out))
    assert f["general.file_type"] == 32 and f["phi3.attention.sliding_window"] == 16

    # python -m phicpp: one error line, exit 1, no traceback
    p = subprocess.run([sys.executable, "-m", "phicpp", "convert", str(tmp_path / "missing")],
                       capture_output=True, text=True)
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == [f"error: not a folder: {tmp_path / 'missing'}"]


def test_chat_template_from_jinja_file_and_progress_bar(tiny_model, copy_model, tmp_path, monkeypatch):
    """transformers 5 saves the template as chat_template.jinja; the CLI draws a progress bar on request."""
    m = tiny_model("phi4")
    d = copy_model(m.path)
    tc = json.loads((d / "tokenizer_config.json").read_text())
    (d / "chat_template.jinja").write_text(tc.pop("chat_template"))
    (d / "tokenizer_config.json").write_text(json.dumps(tc))
    monkeypatch.setenv("PHICPP_PROGRESS", "1")
    res = CliRunner().invoke(cli_main, ["convert", str(d), "-o", str(tmp_path / "t.gguf")])
    assert res.exit_code == 0, res.output
    assert "converting" in res.output and f"{len(read_gguf(tmp_path / 't.gguf').tensors)}/" in res.output
    assert fields(read_gguf(tmp_path / "t.gguf"))["tokenizer.chat_template"] == m.tokenizer.chat_template

# ----------------------------------------------------------------------------- against llama.cpp itself

@pytest.mark.slow
@pytest.mark.parametrize("kind,outtype,pre", [("phi2", "bf16", "-"), ("phi3_128k", "f16", "-"),
                                              ("phi3_medium", "f32", "-"), ("phi4", "bf16", "dbrx"),
                                              ("phi4_mini", "f16", "gpt-4o"), ("phimoe", "f16", "-"),
                                              ("phimoe_128k", "bf16", "-")])
def test_identical_to_llamacpp_converter(tiny_model, copy_model, tmp_path, kind, outtype, pre):
    """Byte-for-byte the same KV pairs and tensors as llama.cpp's convert_hf_to_gguf.py (order aside;
    for phimoe, beside our phicpp.* keys, which llama.cpp's converter does not write).
    Opt-in: PHICPP_LLAMACPP_SRC=<llama.cpp source dir> (e.g. the one tools/llamacpp.sh unpacks)."""
    if not llamacpp_ref.HAS_SRC:
        pytest.skip("set PHICPP_LLAMACPP_SRC to a llama.cpp source tree to compare with its converter")
    m = tiny_model(kind)
    path = llamacpp_ref.as_published_phimoe(copy_model(m.path)) if kind.startswith("phimoe") else m.path
    ref_path = llamacpp_ref.convert(path, tmp_path / "llamacpp.gguf", outtype, pre)
    ours, ref = read_gguf(convert_hf_to_gguf(path, tmp_path / "ours.gguf", outtype)), read_gguf(ref_path)
    assert {k: v for k, v in ours.kv.items() if not k.startswith("phicpp.")} == ref.kv
    assert ours.tensors.keys() == ref.tensors.keys()
    for name, t in ref.tensors.items():
        assert (ours.tensors[name].tensor_type, ours.tensors[name].shape) == (t.tensor_type, t.shape), name
        assert ours.tensors[name].raw == t.raw, name
