"""Hugging Face Phi checkpoint folder -> GGUF, named exactly as llama.cpp names it.

    convert_hf_to_gguf(hf_dir, out_path=None, outtype="f16", progress=None) -> Path

Supported: PhiForCausalLM (Phi-1, 1.5, 2; GGUF arch "phi2"), Phi3ForCausalLM
(Phi-3/3.5 mini & medium, 4K and 128K LongRoPE, Phi-4, Phi-4-mini; arch "phi3") and
PhimoeForCausalLM (Phi-3.5-MoE; arch "phimoe").
Tensor names, metadata keys and tokenizer layout follow llama.cpp's
convert_hf_to_gguf.py (classes Phi2Model, Phi3MiniModel and PhiMoeModel), so files
load in both engines. What transformers' Phimoe uses and llama.cpp's converter drops
(the router's jitter, LongRoPE's short/long mscale) travels in phicpp.* keys. Where we deliberately differ it is to stay correct on configs llama.cpp's
converter mishandles, and every such place says so (search "llama.cpp writes").

The file is written through gguf.GGUFWriter into a temporary name next to the
output and renamed only once complete: a failed conversion leaves nothing behind.
Tensors are streamed (memory-mapped in, converted, written) one at a time.
"""
from __future__ import annotations

import json
import math
import os
import re
import struct
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import gguf
import numpy as np

try:  # conversion errors are PhicppErrors when the compiled core is present
    from ._core import PhicppError as _ErrorBase
except ImportError:  # pragma: no cover - converter used without the extension
    _ErrorBase = Exception


class ConvertError(_ErrorBase):
    """A checkpoint that cannot be converted: the message says what and where."""


OUTTYPES = {  # --outtype -> (GGML type of 2-D weights, general.file_type)
    "f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "bf16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
}

# =============================================================================== checkpoint

# safetensors dtype name -> (numpy dtype of the stored bits, how to widen to float32)
_ST_DTYPES: dict[str, tuple[type, Callable[[np.ndarray], np.ndarray]]] = {
    "F32": (np.float32, lambda a: a),
    "F16": (np.float16, lambda a: a.astype(np.float32)),
    # bf16 is the top half of an IEEE float32: shift into place, exact
    "BF16": (np.uint16, lambda a: (a.astype(np.uint32) << 16).view(np.float32)),
    "F64": (np.float64, lambda a: a.astype(np.float32)),
}


@dataclass
class TensorRef:
    """One tensor of a checkpoint: its shape/dtype now, its float32 data on demand."""
    name: str
    shape: tuple[int, ...]
    dtype: str
    file: str
    load: Callable[[], np.ndarray]   # -> float32 ndarray of `shape`


def _safetensors_index(path: Path) -> dict[str, TensorRef]:
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise ConvertError(f"{path.name}: truncated safetensors file")
            (n,) = struct.unpack("<Q", raw)
            size = path.stat().st_size
            if n > size - 8:
                raise ConvertError(f"{path.name}: safetensors header length {n} exceeds the file size")
            header = json.loads(f.read(n))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConvertError(f"{path.name}: cannot read safetensors header: {e}") from None
    base = 8 + n
    refs = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        dt = meta.get("dtype")
        if dt not in _ST_DTYPES:
            raise ConvertError(f"{path.name}: tensor {name!r} has unsupported dtype {dt}")
        shape = tuple(int(s) for s in meta["shape"])
        start, end = (int(o) for o in meta["data_offsets"])
        np_dt, widen = _ST_DTYPES[dt]
        count = int(np.prod(shape, dtype=np.int64))
        if end - start != count * np.dtype(np_dt).itemsize or base + end > size:
            raise ConvertError(f"{path.name}: tensor {name!r} data range does not fit its shape/file")

        def load(path=path, off=base + start, np_dt=np_dt, count=count, shape=shape, widen=widen):
            a = np.memmap(path, dtype=np_dt, mode="r", offset=off, shape=(count,)) if count else np.zeros(0, np_dt)
            return np.ascontiguousarray(widen(np.asarray(a))).reshape(shape).astype(np.float32, copy=False)

        refs[name] = TensorRef(name, shape, dt, path.name, load)
    return refs


def _torch_bin_index(path: Path) -> dict[str, TensorRef]:
    try:
        import torch
    except ImportError:
        raise ConvertError(f"{path.name}: reading pytorch_model*.bin needs torch; "
                           "install torch or convert the checkpoint to safetensors") from None
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # torch raises many kinds for corrupt files
        raise ConvertError(f"{path.name}: cannot load: {e}") from None
    refs = {}
    for name, t in sd.items():
        if not hasattr(t, "shape"):
            continue
        refs[name] = TensorRef(name, tuple(t.shape), str(t.dtype).replace("torch.", ""), path.name,
                               lambda t=t: t.detach().to(torch.float32).numpy())
    return refs


def _shards(folder: Path, index_name: str, single: str, prefix: str, suffix: str) -> tuple[list[Path], set[str]]:
    """Weight files of one format, and the tensor names its index promises (empty if no index)."""
    index = folder / index_name
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            files = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise ConvertError(f"{index_name}: cannot read weight_map: {e}") from None
        missing = [f for f in files if not (folder / f).is_file()]
        if missing:
            raise ConvertError(f"missing weight file(s) listed in {index_name}: {', '.join(missing)}")
        return [folder / f for f in files], set(weight_map)
    if (folder / single).is_file():
        return [folder / single], set()
    return sorted(p for p in folder.iterdir() if p.name.startswith(prefix) and p.name.endswith(suffix)), set()


def open_checkpoint(folder: str | Path) -> dict[str, TensorRef]:
    """Index every tensor of the checkpoint in `folder` (safetensors preferred over .bin)."""
    folder = Path(folder)
    files, listed = _shards(folder, "model.safetensors.index.json", "model.safetensors", "model", ".safetensors")
    reader = _safetensors_index
    if not files:
        files, listed = _shards(folder, "pytorch_model.bin.index.json", "pytorch_model.bin", "pytorch_model", ".bin")
        reader = _torch_bin_index
    if not files:
        raise ConvertError(f"missing weights: {folder} has no model*.safetensors or pytorch_model*.bin")
    refs: dict[str, TensorRef] = {}
    for f in files:
        for name, ref in reader(f).items():
            if name in refs:
                raise ConvertError(f"tensor {name!r} appears in both {refs[name].file} and {f.name}")
            refs[name] = ref
    absent = sorted(listed - set(refs))
    if absent:
        raise ConvertError(f"the weight index lists tensors that no shard holds: {', '.join(absent[:5])}"
                           + (" ..." if len(absent) > 5 else ""))
    return refs


# =============================================================================== config

def _load_json(path: Path, what: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ConvertError(f"missing {what}: {path}") from None
    except (OSError, ValueError) as e:
        raise ConvertError(f"cannot read {what} {path}: {e}") from None
    if not isinstance(data, dict):
        raise ConvertError(f"{path}: expected a JSON object")
    return data


@dataclass
class HParams:
    """What the GGUF needs from config.json, across transformers 4.x and 5.x layouts."""
    arch: str                    # "phi2" | "phi3" | "phimoe"
    n_vocab: int
    n_embd: int
    n_ff: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ctx: int
    n_ctx_orig: int
    rope_dims: int
    rope_theta: float
    rope: dict                   # rope parameters (rope_type, long_factor, ...)
    norm_eps: float
    qk_layernorm: bool
    tied: bool
    sliding_window: int
    n_expert: int = 0            # phimoe: experts per layer, experts per token, router jitter
    n_expert_used: int = 0
    router_jitter: float = 0.0
    attn_bias: bool = False      # phimoe: q/k/v/o biases, lm_head bias
    lm_head_bias: bool = False

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


def _rope_params(cfg: dict) -> dict:
    """Merged rope settings: transformers 5 `rope_parameters`, older `rope_scaling` +
    top-level rope_theta/partial_rotary_factor (the same merge llama.cpp does)."""
    rp = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if isinstance(rp, dict) and "full_attention" in rp:  # per-layer-type layout: phi uses one kind
        rp = rp["full_attention"]
    if not isinstance(rp, dict):
        raise ConvertError(f"config.json: rope_parameters / rope_scaling = {_shown(rp)} is not an object")
    rp = dict(rp)
    for key in ("rope_theta", "partial_rotary_factor", "original_max_position_embeddings"):
        if key not in rp and cfg.get(key) is not None:
            rp[key] = cfg[key]
    if "rope_type" not in rp and rp.get("type") is not None:
        rp["rope_type"] = rp["type"]
    return rp


# The loader's bound on every size (csrc/model/config.cpp kMaxDim): a config past it
# would convert to a file that phicpp then refuses, so refuse it here.
_MAX_DIM = 1 << 28


def _need(cfg: dict, *keys: str) -> Any:
    for k in keys:
        if cfg.get(k) is not None:
            return cfg[k]
    raise ConvertError(f"config.json lacks {' / '.join(keys)}")


def _shown(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:32] + "..."


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int(v: Any, key: str, lo: int = 1, hi: int = _MAX_DIM) -> int:
    """A config size: an integer (4096.0 passes, 96.5 and "96" do not) in [lo, hi]."""
    if not _is_number(v) or (isinstance(v, float) and not v.is_integer()):
        raise ConvertError(f"config.json: {key} = {_shown(v)} is not an integer")
    if not lo <= v <= hi:
        raise ConvertError(f"config.json: {key} = {_shown(int(v))} is out of range [{lo}, {hi}]")
    return int(v)


def _float(v: Any, key: str, allow_zero: bool = False) -> float:
    """A config scale: a number that stays finite and positive (or zero where allow_zero) as
    the 32-bit float GGUF stores (1e39 would overflow it, 1e-46 round to zero)."""
    try:
        with np.errstate(over="ignore"):
            f32 = float(np.float32(v)) if _is_number(v) and math.isfinite(v) and v >= 0 else math.nan
    except OverflowError:  # an int past any float
        f32 = math.nan
    if not math.isfinite(f32) or (f32 == 0 and not (allow_zero and v == 0)):
        raise ConvertError(f"config.json: {key} = {_shown(v)} is not a {'non-negative' if allow_zero else 'positive'} "
                           f"finite number (as a 32-bit float)")
    return float(v)


def _bool(cfg: dict, key: str, default: bool = False) -> bool:
    v = cfg.get(key)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise ConvertError(f"config.json: {key} = {_shown(v)} is not true or false")
    return v


def _factors(rp: dict, key: str, n: int) -> list[float]:
    """A LongRoPE factor list: n positive finite numbers."""
    v = rp.get(key)
    if not isinstance(v, list) or len(v) != n:
        got = f"{len(v)} entries" if isinstance(v, list) else repr(v)
        raise ConvertError(f"LongRoPE {key} must have rope_dims/2 = {n} entries (got {got})")
    return [_float(x, f"{key}[{i}]") for i, x in enumerate(v)]


ARCHITECTURES = {"PhiForCausalLM": "phi2", "Phi3ForCausalLM": "phi3", "PhimoeForCausalLM": "phimoe",
                 "PhiMoEForCausalLM": "phimoe"}  # (the published checkpoint's own spelling)
_MODEL_TYPES = {"phi": "PhiForCausalLM", "phi3": "Phi3ForCausalLM", "phimoe": "PhimoeForCausalLM"}


def read_hparams(cfg: dict) -> HParams:
    """config.json's settings, each checked for type and range before anything is written."""
    archs = cfg.get("architectures") or []
    if isinstance(archs, str):
        archs = [archs]
    if not isinstance(archs, list):
        raise ConvertError(f"config.json: architectures = {_shown(archs)} is not a list of names")
    archs = [str(a) for a in archs]
    if not archs and isinstance(cfg.get("model_type"), str) and cfg["model_type"] in _MODEL_TYPES:
        # (hand-written configs may omit architectures)
        archs = [_MODEL_TYPES[cfg["model_type"]]]
    known = [a for a in archs if a in ARCHITECTURES]
    if not known:
        raise ConvertError(f"unsupported architecture {', '.join(archs) or '(none in config.json)'}; "
                           f"supported: {', '.join(ARCHITECTURES)}")
    arch = ARCHITECTURES[known[0]]
    rp = _rope_params(cfg)
    n_embd = _int(_need(cfg, "hidden_size", "n_embd"), "hidden_size")
    n_head = _int(_need(cfg, "num_attention_heads", "n_head"), "num_attention_heads")
    if n_embd % n_head:
        raise ConvertError(f"hidden_size {n_embd} is not a multiple of num_attention_heads {n_head}")
    n_ctx = _int(_need(cfg, "max_position_embeddings", "n_positions"), "max_position_embeddings")
    # transformers rotates int(partial_rotary_factor * head_dim) dims; llama.cpp writes
    # int(partial_rotary_factor * n_embd) // n_head, the same number for every real Phi.
    rot = _float(rp.get("partial_rotary_factor", 1.0), "partial_rotary_factor")
    rope_dims = int(rot * (n_embd // n_head))
    if rope_dims % 2 or rope_dims <= 0 or rope_dims > n_embd // n_head:
        raise ConvertError(f"partial_rotary_factor {rot} gives {rope_dims} rotary dims per head of "
                           f"{n_embd // n_head}; need a positive even count at most the head size")
    rope_type = str(rp.get("rope_type") or "default").lower()
    if rope_type not in ("default", "longrope", "su"):
        raise ConvertError(f"unsupported rope type {rope_type!r} (supported: default, longrope)")
    if rope_type != "default":
        # transformers needs both lists for LongRoPE; without them it would not run this config
        rp["long_factor"] = _factors(rp, "long_factor", rope_dims // 2)
        rp["short_factor"] = _factors(rp, "short_factor", rope_dims // 2)
        for key in ("attention_factor", "short_mscale", "long_mscale"):
            if rp.get(key) is not None:
                rp[key] = _float(rp[key], key)
    if arch == "phi2":
        eps = _float(_need(cfg, "layer_norm_eps", "layer_norm_epsilon"), "layer_norm_eps")
        # llama.cpp writes 4 * n_embd here; every real Phi-1/1.5/2 has intermediate_size == 4 * n_embd
        n_ff = _int(cfg.get("intermediate_size") or cfg.get("n_inner") or 4 * n_embd, "intermediate_size")
    else:
        eps = _float(_need(cfg, "rms_norm_eps"), "rms_norm_eps")
        n_ff = _int(_need(cfg, "intermediate_size"), "intermediate_size")
    n_kv = cfg.get("num_key_value_heads")  # (null: one per query head, as transformers reads it)
    n_head_kv = n_head if n_kv is None else _int(n_kv, "num_key_value_heads")
    if n_head % n_head_kv:
        raise ConvertError(f"num_attention_heads {n_head} is not a multiple of num_key_value_heads {n_head_kv}")
    moe = {}
    if arch == "phimoe":
        moe = dict(n_expert=_int(_need(cfg, "num_local_experts"), "num_local_experts"),
                   n_expert_used=_int(_need(cfg, "num_experts_per_tok"), "num_experts_per_tok"),
                   router_jitter=_float(cfg.get("router_jitter_noise") or 0.0, "router_jitter_noise", allow_zero=True),
                   attn_bias=_bool(cfg, "attention_bias"), lm_head_bias=_bool(cfg, "lm_head_bias"))
        if moe["n_expert_used"] != 2 or moe["n_expert"] < 2:
            raise ConvertError(f"Phi-MoE routes each token to 2 experts (SparseMixer); this config has "
                               f"num_experts_per_tok={moe['n_expert_used']} of num_local_experts={moe['n_expert']}")
    n_ctx_orig = _int(rp["original_max_position_embeddings"], "original_max_position_embeddings") \
        if rp.get("original_max_position_embeddings") else n_ctx
    if rope_type != "default" and n_ctx > n_ctx_orig and n_ctx_orig < 2 and rp.get("attention_factor") is None:
        # LongRoPE's attention factor divides by log(original context)
        raise ConvertError(f"config.json: LongRoPE needs original_max_position_embeddings >= 2 "
                           f"(got {n_ctx_orig}) or an explicit attention_factor")
    return HParams(**moe,
        arch=arch, n_vocab=_int(_need(cfg, "vocab_size"), "vocab_size"), n_embd=n_embd, n_ff=n_ff,
        n_layer=_int(_need(cfg, "num_hidden_layers", "n_layer"), "num_hidden_layers"), n_head=n_head,
        n_head_kv=n_head_kv, n_ctx=n_ctx,
        n_ctx_orig=n_ctx_orig,
        rope_dims=rope_dims, rope_theta=_float(rp.get("rope_theta", 10000.0), "rope_theta"), rope=rp, norm_eps=eps,
        qk_layernorm=_bool(cfg, "qk_layernorm"), tied=_bool(cfg, "tie_word_embeddings"),
        sliding_window=_int(cfg.get("sliding_window") or 0, "sliding_window", lo=0))


# =============================================================================== tensor names

# HF name -> GGUF name (llama.cpp gguf-py names); *_LAYER keys are the part after "model.layers.N."
PHI2_GLOBAL = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.final_layernorm.weight": "output_norm.weight",
    "model.final_layernorm.bias": "output_norm.bias",
    "lm_head.weight": "output.weight",
    "lm_head.bias": "output.bias",
}
PHI2_LAYER = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.dense": "attn_output",
    "self_attn.q_layernorm": "attn_q_norm",   # qk_layernorm=True only (llama.cpp's phi2 has no such tensors)
    "self_attn.k_layernorm": "attn_k_norm",
    "mlp.fc1": "ffn_up",
    "mlp.fc2": "ffn_down",
}
PHI3_GLOBAL = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
PHI3_LAYER = {
    "input_layernorm": "attn_norm",
    "self_attn.qkv_proj": "attn_qkv",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_up_proj": "ffn_up",          # gate and up stacked, as llama.cpp's phi3 expects
    "mlp.down_proj": "ffn_down",
}
PHIMOE_GLOBAL = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "model.norm.bias": "output_norm.bias",
    "lm_head.weight": "output.weight",
    "lm_head.bias": "output.bias",
}
PHIMOE_LAYER = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "block_sparse_moe.gate": "ffn_gate_inp",
}
# expert N's w1 (gate), w3 (up), w2 (down), stacked over N into one 3-D tensor each
PHIMOE_EXPERTS = {"w1": "ffn_gate_exps", "w3": "ffn_up_exps", "w2": "ffn_down_exps"}
_EXPERT_RE = re.compile(r"^model\.layers\.(\d+)\.block_sparse_moe\.experts\.(\d+)\.(w[123])\.weight$")
# buffers some checkpoints carry that are recomputed at load time
SKIPPED = re.compile(r"(\.rotary_emb\.inv_freq|\.attention\.masked_bias|\.attention\.bias)$")
_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)\.(weight|bias)$")


def gguf_name(hp: HParams, hf_name: str) -> str | None:
    """GGUF name for a HF tensor name, or None when the name is not part of the architecture."""
    glob, layer = {"phi2": (PHI2_GLOBAL, PHI2_LAYER), "phi3": (PHI3_GLOBAL, PHI3_LAYER),
                   "phimoe": (PHIMOE_GLOBAL, PHIMOE_LAYER)}[hp.arch]
    if hf_name in glob:
        return glob[hf_name]
    m = _LAYER_RE.match(hf_name)
    if m and m.group(2) in layer and int(m.group(1)) < hp.n_layer:
        return f"blk.{int(m.group(1))}.{layer[m.group(2)]}.{m.group(3)}"
    return None


def expected_shapes(hp: HParams) -> dict[str, tuple[int, ...]]:
    """Every tensor the GGUF must hold, with its numpy (row-major) shape; optional ones
    (output.* when embeddings are tied) are listed by `optional_tensors`."""
    E, F, V, hd = hp.n_embd, hp.n_ff, hp.n_vocab, hp.head_dim
    kv = hp.n_head_kv * hd
    s: dict[str, tuple[int, ...]] = {"token_embd.weight": (V, E)}
    if hp.arch == "phi2":
        for i in range(hp.n_layer):
            b = f"blk.{i}."
            s.update({b + "attn_norm.weight": (E,), b + "attn_norm.bias": (E,),
                      b + "attn_q.weight": (E, E), b + "attn_q.bias": (E,),
                      b + "attn_k.weight": (kv, E), b + "attn_k.bias": (kv,),
                      b + "attn_v.weight": (kv, E), b + "attn_v.bias": (kv,),
                      b + "attn_output.weight": (E, E), b + "attn_output.bias": (E,),
                      b + "ffn_up.weight": (F, E), b + "ffn_up.bias": (F,),
                      b + "ffn_down.weight": (E, F), b + "ffn_down.bias": (E,)})
            if hp.qk_layernorm:
                for n in ("attn_q_norm", "attn_k_norm"):
                    s.update({b + n + ".weight": (hd,), b + n + ".bias": (hd,)})
    elif hp.arch == "phimoe":
        X = hp.n_expert
        for i in range(hp.n_layer):
            b = f"blk.{i}."
            s.update({b + "attn_norm.weight": (E,), b + "attn_norm.bias": (E,),
                      b + "attn_q.weight": (E, E), b + "attn_k.weight": (kv, E), b + "attn_v.weight": (kv, E),
                      b + "attn_output.weight": (E, E)})
            if hp.attn_bias:
                s.update({b + "attn_q.bias": (E,), b + "attn_k.bias": (kv,), b + "attn_v.bias": (kv,),
                          b + "attn_output.bias": (E,)})
            s.update({b + "ffn_norm.weight": (E,), b + "ffn_norm.bias": (E,), b + "ffn_gate_inp.weight": (X, E),
                      b + "ffn_gate_exps.weight": (X, F, E), b + "ffn_up_exps.weight": (X, F, E),
                      b + "ffn_down_exps.weight": (X, E, F)})
    else:
        for i in range(hp.n_layer):
            b = f"blk.{i}."
            s.update({b + "attn_norm.weight": (E,), b + "attn_qkv.weight": (E + 2 * kv, E),
                      b + "attn_output.weight": (E, E), b + "ffn_norm.weight": (E,),
                      b + "ffn_up.weight": (2 * F, E), b + "ffn_down.weight": (E, F)})
    s["output_norm.weight"] = (E,)
    if hp.arch in ("phi2", "phimoe"):
        s["output_norm.bias"] = (E,)
    s["output.weight"] = (V, E)
    if hp.arch == "phi2" or hp.lm_head_bias:
        s["output.bias"] = (V,)
    return s


def optional_tensors(hp: HParams) -> set[str]:
    # llama.cpp writes no output.weight when the checkpoint has no lm_head (tied embeddings,
    # e.g. Phi-4-mini); its loader then reuses token_embd.
    return {"output.weight"} if hp.tied else set()


# =============================================================================== metadata

PHIMOE_JITTER_KEY = "phicpp.phimoe.router_jitter_noise"
PHIMOE_SHORT_MSCALE_KEY = "phicpp.phimoe.rope.short_mscale"
PHIMOE_LONG_MSCALE_KEY = "phicpp.phimoe.rope.long_mscale"

def _rope_factors(hp: HParams) -> tuple[list[tuple[str, np.ndarray]], float | None]:
    """LongRoPE: the (long, short) factor tensors and rope.scaling.attn_factor, as llama.cpp
    derives them; ([], None) for plain RoPE."""
    rp = hp.rope
    if str(rp.get("rope_type", "")).lower() not in ("longrope", "su"):
        return [], None
    long_f, short_f = rp["long_factor"], rp["short_factor"]  # checked by read_hparams
    scale = hp.n_ctx / hp.n_ctx_orig
    if rp.get("attention_factor") is not None:
        # transformers uses an explicit attention_factor as is; llama.cpp's converter ignores it
        attn = float(rp["attention_factor"])
    else:
        attn = math.sqrt(1 + math.log(scale) / math.log(hp.n_ctx_orig)) if scale > 1.0 else 1.0
    return ([("rope_factors_long.weight", np.asarray(long_f, dtype=np.float32)),
             ("rope_factors_short.weight", np.asarray(short_f, dtype=np.float32))], attn)


def _write_hparams(w: gguf.GGUFWriter, hp: HParams, file_type: gguf.LlamaFileType, attn_factor: float | None) -> None:
    w.add_context_length(hp.n_ctx)
    if hp.arch in ("phi3", "phimoe"):
        w.add_rope_scaling_orig_ctx_len(hp.n_ctx_orig)
    w.add_embedding_length(hp.n_embd)
    w.add_feed_forward_length(hp.n_ff)
    w.add_block_count(hp.n_layer)
    w.add_head_count(hp.n_head)
    w.add_head_count_kv(hp.n_head_kv)
    if hp.arch == "phi2":
        w.add_layer_norm_eps(hp.norm_eps)
    else:
        w.add_layer_norm_rms_eps(hp.norm_eps)
    w.add_rope_dimension_count(hp.rope_dims)
    # llama.cpp's Phi2Model writes no freq_base (its loader defaults to 10000); we add it only
    # when a checkpoint uses another theta, so that such files stay correct.
    if hp.arch in ("phi3", "phimoe") or hp.rope_theta != 10000.0:
        w.add_rope_freq_base(hp.rope_theta)
    w.add_file_type(file_type)
    if hp.arch in ("phi3", "phimoe"):
        # 0 marks "no sliding window" (Phi-4), as llama.cpp writes it
        w.add_sliding_window(hp.sliding_window)
        if attn_factor is not None:
            w.add_rope_scaling_attn_factors(attn_factor)
    if hp.arch == "phimoe":
        w.add_expert_count(hp.n_expert)
        w.add_expert_used_count(hp.n_expert_used)
        # transformers routes with SparseMixer, whose masks depend on the jitter
        # (llama.cpp keeps no such key: its phimoe routes by plain softmax top-2)
        w.add_float32(PHIMOE_JITTER_KEY, hp.router_jitter)
        rp = hp.rope
        if str(rp.get("rope_type", "")).lower() in ("longrope", "su") and rp.get("short_mscale") is not None:
            # transformers' Phimoe scales cos/sin by short_mscale up to the original
            # context and by long_mscale past it (and rotates with the short factors
            # throughout); llama.cpp applies rope.scaling.attn_factor instead
            w.add_float32(PHIMOE_SHORT_MSCALE_KEY, float(rp["short_mscale"]))
            long_mscale = rp.get("long_mscale")
            w.add_float32(PHIMOE_LONG_MSCALE_KEY, float(rp["short_mscale"] if long_mscale is None else long_mscale))


def _write_general(w: gguf.GGUFWriter, hf_dir: Path, name: str | None) -> None:
    w.add_type(gguf.GGUFType.MODEL)
    total, shared, expert, n_expert = w.get_total_parameter_count()
    try:  # model-card / folder-name heuristics of gguf-py, as llama.cpp uses them
        meta = gguf.Metadata.load(None, hf_dir, name, total)
    except Exception:  # a malformed README must not block a conversion
        meta = gguf.Metadata(name=name)
    if meta.name is None:
        meta.name = hf_dir.name
    if meta.size_label is None and total > 0:
        meta.size_label = gguf.size_label(total, shared, expert, n_expert)
    meta.set_gguf_meta_model(w)


# =============================================================================== tokenizer

_CHKTXT = ('\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ '
           '🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ '
           '------======= нещо на Български \'\'\'\'\'\'```````""""......!!!!!!?????? I\'ve been \'told he\'s there, '
           '\'RE you sure? \'M not sure I\'ll make it, \'D you like some tea? We\'Ve a\'lL')
# llama.cpp's get_vocab_base_pre: sha256 of the token ids of _CHKTXT -> tokenizer.ggml.pre (the ones Phi models hit)
_KNOWN_PRE_HASHES = {
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",   # openai-community/gpt2
    "fcace8b9cac38ce847670c970cd5892031a753a1ef381abd1d9af00f713da085": "phi-2",   # microsoft/phi-2
    "a8594e3edff7c29c003940395316294b2c623e09894deebbc65f33f1515df79e": "dbrx",    # cl100k (databricks/dbrx-base)
    "ccc2ef013c104be7bae2965776d611e1d7a8a2a9c547dd93a682c9a9fc80352e": "gpt-4o",  # o200k (Xenova/gpt-4o)
}
# Fallback when the hash is unknown (our test tokenizers, fine-tunes with extra tokens):
# recognise the pre-tokenizer regex. llama.cpp maps gpt-2/phi-2 to the same GPT-2 regex,
# dbrx to the cl100k regex, gpt-4o to the o200k regex.
_CL100K_MARK = r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_O200K_MARK = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"


def _pre_tokenizer_regexes(node: Any) -> Iterable[tuple[str, Any]]:
    if isinstance(node, dict):
        yield node.get("type", ""), node
        for v in node.values():
            yield from _pre_tokenizer_regexes(v)
    elif isinstance(node, list):
        for v in node:
            yield from _pre_tokenizer_regexes(v)


def detect_bpe_pre(tokenizer_json: dict, tokenizer_path: Path) -> str:
    """tokenizer.ggml.pre as llama.cpp chooses it: by the hash of a probe text's token ids
    when `tokenizers` is installed and the hash is known, else by the pre-tokenizer regex."""
    try:
        from tokenizers import Tokenizer
        ids = Tokenizer.from_file(str(tokenizer_path)).encode(_CHKTXT).ids
        pre = _KNOWN_PRE_HASHES.get(sha256(str(ids).encode()).hexdigest())
        if pre:
            return pre
    except Exception:  # tokenizers missing or unable to load: fall back to the regex
        pass
    regexes, byte_level_regex = [], False
    for typ, node in _pre_tokenizer_regexes(tokenizer_json.get("pre_tokenizer")):
        if typ == "Split" and isinstance(node.get("pattern"), dict):
            regexes.append(node["pattern"].get("Regex") or node["pattern"].get("String") or "")
        if typ == "ByteLevel" and node.get("use_regex", True):
            byte_level_regex = True
    if any(_O200K_MARK in r for r in regexes):
        return "gpt-4o"
    if any(_CL100K_MARK in r for r in regexes):
        return "dbrx"
    if not regexes and byte_level_regex:
        return "gpt-2"
    raise ConvertError(f"{tokenizer_path.name}: unrecognised BPE pre-tokenizer "
                       f"({regexes[0][:60] + '...' if regexes else 'no regex'}); supported: GPT-2, cl100k, o200k")


def _looks_special(tok: str) -> bool:
    # llama.cpp's does_token_look_special, reduced to the forms Phi vocabularies use
    return tok.startswith("<|") and tok.endswith("|>")


def _write_bpe_vocab(w: gguf.GGUFWriter, hf_dir: Path, hp: HParams) -> None:
    path = hf_dir / "tokenizer.json"
    tj = _load_json(path, "tokenizer file (tokenizer.json)")
    model = tj.get("model") or {}
    if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise ConvertError(f"{path.name}: expected a BPE model with a vocab")
    vocab: dict[str, int] = dict(model["vocab"])
    added = {t["content"]: t for t in tj.get("added_tokens", [])}
    for content, t in added.items():
        vocab[content] = int(t["id"])
    if vocab and max(vocab.values()) >= hp.n_vocab:
        raise ConvertError(f"{path.name}: token id {max(vocab.values())} does not fit vocab_size {hp.n_vocab}")
    by_id = {i: t for t, i in vocab.items()}
    tokens, types = [], []
    for i in range(hp.n_vocab):  # ids the tokenizer leaves unused pad the embedding rows
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        t = by_id[i]
        tokens.append(t)
        if t in added:
            special = added[t].get("special") or _looks_special(t)
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(detect_bpe_pre(tj, path))
    w.add_token_list(tokens)
    w.add_token_types(types)
    merges = _merges_as_strings(model.get("merges") or [])
    if not merges:
        raise ConvertError(f"{path.name}: BPE tokenizer without merges")
    w.add_token_merges(merges)
    special = _special_vocab(hf_dir, len(tokens), load_merges=False)
    post = tj.get("post_processor") or {}
    if any(p.get("type") == "ByteLevel" for p in post.get("processors", [post])):
        # a ByteLevel post-processor adds no BOS/EOS; newer gguf-py (llama.cpp's) says so explicitly
        special.add_special_token.setdefault("bos", False)
        special.add_special_token.setdefault("eos", False)
    if hp.arch == "phi2":  # Phi2Model.set_gguf_parameters: add_add_bos_token(False)
        special.add_special_token.setdefault("bos", False)
    special.add_to_gguf(w, quiet=True)


def _merges_as_strings(merges: list) -> list[str]:
    """tokenizer.json merges ("a b" strings, or [a, b] pairs since transformers 4.45) as the
    "a b" strings GGUF stores; spaces inside a pair part become U+0120+... like gguf.SpecialVocab
    encodes them (done here because SpecialVocab's per-character loop costs seconds per 50k merges)."""
    if merges and isinstance(merges[0], str):
        return list(merges)
    out = []
    for pair in merges:
        if not (isinstance(pair, list) and len(pair) == 2):
            raise ConvertError("tokenizer.json: unknown merges format")
        a, b = pair
        if " " in a or " " in b:
            a, b = a.replace(" ", chr(ord(" ") + 256)), b.replace(" ", chr(ord(" ") + 256))
        out.append(f"{a} {b}")
    return out


def _read_sentencepiece(path: Path) -> list[tuple[str, float, int]]:
    try:
        from sentencepiece import SentencePieceProcessor
    except ImportError:
        raise ConvertError("converting a SentencePiece tokenizer (tokenizer.model) needs the "
                           "'sentencepiece' package") from None
    sp = SentencePieceProcessor()
    try:
        sp.LoadFromFile(str(path))
    except (OSError, RuntimeError) as e:
        raise ConvertError(f"{path.name}: not a SentencePiece model: {e}") from None
    out = []
    for i in range(sp.vocab_size()):
        typ = gguf.TokenType.NORMAL
        if sp.IsUnknown(i):
            typ = gguf.TokenType.UNKNOWN
        elif sp.IsControl(i):
            typ = gguf.TokenType.CONTROL
        elif sp.IsUnused(i):
            typ = gguf.TokenType.UNUSED
        elif sp.IsByte(i):
            typ = gguf.TokenType.BYTE
        out.append((sp.IdToPiece(i), sp.GetScore(i), typ))
    return out


def _write_spm_vocab(w: gguf.GGUFWriter, hf_dir: Path, hp: HParams) -> None:
    """Phi-3's SentencePiece vocab, laid out as llama.cpp's Phi3MiniModel.set_vocab does."""
    path = hf_dir / "tokenizer.model"
    if not path.is_file():
        raise ConvertError(f"missing tokenizer file: {path}")
    n = hp.n_vocab
    tokens = [f"[PAD{i}]".encode() for i in range(n)]
    scores = [-10000.0] * n
    types = [gguf.TokenType.UNUSED] * n
    pieces = _read_sentencepiece(path)
    if len(pieces) > n:
        raise ConvertError(f"{path.name} has {len(pieces)} pieces, more than vocab_size {n}")
    for i, (piece, score, typ) in enumerate(pieces):
        tokens[i], scores[i], types[i] = piece.encode("utf-8"), score, typ

    def set_added(tid: int, content: str, special: bool | None) -> None:
        if 0 <= tid < n:
            tokens[tid], scores[tid] = content.encode("utf-8"), -1000.0
            types[tid] = gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED

    if (hf_dir / "added_tokens.json").is_file():
        for content, tid in _load_json(hf_dir / "added_tokens.json", "added_tokens.json").items():
            set_added(int(tid), content, False)
    if (hf_dir / "tokenizer_config.json").is_file():
        tc = _load_json(hf_dir / "tokenizer_config.json", "tokenizer_config.json")
        for tid, t in (tc.get("added_tokens_decoder") or {}).items():
            set_added(int(tid), t["content"], t.get("special"))
    if (hf_dir / "tokenizer.json").is_file():
        for t in _load_json(hf_dir / "tokenizer.json", "tokenizer.json").get("added_tokens", []):
            set_added(int(t["id"]), t["content"], t.get("special"))
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    _special_vocab(hf_dir, n).add_to_gguf(w, quiet=True)


def _special_vocab(hf_dir: Path, n_vocab: int, **kw) -> gguf.SpecialVocab:
    """BOS/EOS/... ids and flags from the checkpoint's configs (ids past the vocabulary are
    skipped with a warning, as llama.cpp's converter does)."""
    try:
        return gguf.SpecialVocab(hf_dir, n_vocab=n_vocab, **kw)
    except (ValueError, TypeError, OverflowError) as e:
        raise ConvertError(f"special token ids in {hf_dir.name}'s config files: {e}") from None


def _write_vocab(w: gguf.GGUFWriter, hf_dir: Path, hp: HParams) -> None:
    tc = {}
    if (hf_dir / "tokenizer_config.json").is_file():
        tc = _load_json(hf_dir / "tokenizer_config.json", "tokenizer_config.json")
    has_json, has_model = (hf_dir / "tokenizer.json").is_file(), (hf_dir / "tokenizer.model").is_file()
    if not has_json and not has_model:
        raise ConvertError(f"missing tokenizer file: {hf_dir} has neither tokenizer.json nor tokenizer.model")
    # Phi-2 always uses GPT-2 BPE; Phi-3 family: GPT2Tokenizer (Phi-4, Phi-4-mini) -> BPE, else SentencePiece
    if hp.arch == "phi2" or tc.get("tokenizer_class") == "GPT2Tokenizer" or not has_model:
        _write_bpe_vocab(w, hf_dir, hp)
    else:
        _write_spm_vocab(w, hf_dir, hp)


# =============================================================================== conversion

class _Stacked:
    """Experts' matrices stacked into one [n_expert, rows, cols] tensor, loaded one at a time."""

    def __init__(self, name: str, refs: list[TensorRef]):
        self.name, self.refs = name, refs
        self.shape = (len(refs), *refs[0].shape)
        self.file = refs[0].file

    def load(self) -> np.ndarray:
        out = np.empty(self.shape, dtype=np.float32)
        for i, r in enumerate(self.refs):
            out[i] = r.load()
        return out


@dataclass
class _Planned:
    name: str                      # GGUF name
    shape: tuple[int, ...]         # numpy shape
    qtype: gguf.GGMLQuantizationType
    load: Callable[[], np.ndarray]  # -> float32


def _plan_tensors(hp: HParams, refs: dict[str, TensorRef], weight_type: gguf.GGMLQuantizationType) -> list[_Planned]:
    # every layer and every expert has tensors of its own: counts past the checkpoint's
    # tensors are refused before any per-layer list is built from them
    for key, count in (("num_hidden_layers", hp.n_layer), ("num_local_experts", hp.n_expert)):
        if count > len(refs):
            raise ConvertError(f"config.json: {key} = {count} but the checkpoint holds only {len(refs)} tensors")
    want = expected_shapes(hp)
    got: dict[str, TensorRef] = {}
    experts: dict[str, dict[int, TensorRef]] = {}  # GGUF name -> expert index -> its matrix
    for hf_name, ref in refs.items():
        if SKIPPED.search(hf_name):
            continue
        m = _EXPERT_RE.match(hf_name) if hp.arch == "phimoe" else None
        if m:
            layer, xid, w_name = int(m.group(1)), int(m.group(2)), m.group(3)
            name = f"blk.{layer}.{PHIMOE_EXPERTS[w_name]}.weight"
            if name not in want or xid >= hp.n_expert or tuple(ref.shape) != want[name][1:]:
                raise ConvertError(f"unexpected tensor {hf_name!r} (shape {list(ref.shape)}) in {ref.file} "
                                   f"for {hp.n_expert} experts of shape {list(want.get(name, (0,))[1:])}")
            experts.setdefault(name, {})[xid] = ref
            continue
        name = gguf_name(hp, hf_name)
        if name is None or name not in want:
            raise ConvertError(f"unexpected tensor {hf_name!r} (shape {list(ref.shape)}) in {ref.file} "
                               f"for architecture {hp.arch}")
        if tuple(ref.shape) != want[name]:
            raise ConvertError(f"tensor {hf_name!r} in {ref.file} has shape {list(ref.shape)}, "
                               f"expected {list(want[name])} from config.json")
        got[name] = ref
    for name, by_id in experts.items():
        if len(by_id) != hp.n_expert:
            lost = sorted(set(range(hp.n_expert)) - set(by_id))
            raise ConvertError(f"checkpoint lacks expert(s) {lost[:4]} of {name}")
        got[name] = _Stacked(name, [by_id[i] for i in range(hp.n_expert)])
    missing = [n for n in want if n not in got and n not in optional_tensors(hp)]
    if missing:
        raise ConvertError(f"checkpoint lacks {len(missing)} tensor(s) for {hp.arch}: {', '.join(missing[:4])}"
                           + (" ..." if len(missing) > 4 else ""))
    factors, _ = _rope_factors(hp)
    plan = [_Planned(n, a.shape, gguf.GGMLQuantizationType.F32, lambda a=a: a) for n, a in factors]
    for name in want:  # fixed order: embeddings, blocks by layer, output
        if name in got:
            # like llama.cpp: 1-D tensors (norms, biases) and *_norm.weight stay F32
            f32 = len(want[name]) <= 1 or name.endswith("_norm.weight") or not name.endswith(".weight") \
                or name.endswith("ffn_gate_inp.weight")  # the router, as llama.cpp keeps it
            plan.append(_Planned(name, want[name], gguf.GGMLQuantizationType.F32 if f32 else weight_type,
                                 got[name].load))
    return plan


def _encode(data: np.ndarray, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    data = np.ascontiguousarray(data, dtype=np.float32)
    if qtype == gguf.GGMLQuantizationType.F32:
        return data
    if qtype == gguf.GGMLQuantizationType.F16:
        return data.astype(np.float16)
    return gguf.quants.quantize(data, qtype)  # BF16: round-to-nearest-even, as llama.cpp


def _nbytes(shape: tuple[int, ...], qtype: gguf.GGMLQuantizationType) -> tuple[tuple[int, ...], np.dtype, int]:
    """(array shape, array dtype, byte size) of the encoded tensor as GGUFWriter wants them."""
    n = int(np.prod(shape, dtype=np.int64))
    if qtype == gguf.GGMLQuantizationType.F32:
        return shape, np.dtype(np.float32), 4 * n
    if qtype == gguf.GGMLQuantizationType.F16:
        return shape, np.dtype(np.float16), 2 * n
    byte_shape = gguf.quant_shape_to_byte_shape(shape, qtype)
    return byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape, dtype=np.int64))


def default_output_path(hf_dir: Path, outtype: str) -> Path:
    return hf_dir.parent / f"{hf_dir.name}-{outtype}.gguf"


def convert_hf_to_gguf(hf_dir: str | os.PathLike, out_path: str | os.PathLike | None = None,
                       outtype: str = "f16", *, name: str | None = None,
                       progress: Callable[[str, int], None] | None = None) -> Path:
    """Convert the Hugging Face checkpoint folder `hf_dir` into a GGUF file.

    outtype: "f32" | "f16" | "bf16" for 2-D weights (1-D tensors always F32).
    progress: called as progress(tensor_name, index) after each tensor is written.
    Returns the output path (default: HF_DIR-OUTTYPE.gguf next to the folder).
    Raises ConvertError with a one-line message on any problem; no file is left behind.
    """
    hf_dir = Path(hf_dir)
    if outtype not in OUTTYPES:
        raise ConvertError(f"unknown outtype {outtype!r}; choose one of {', '.join(OUTTYPES)}")
    weight_type, file_type = OUTTYPES[outtype]
    hp, plan = _prepare(hf_dir, weight_type)
    out = Path(out_path) if out_path is not None else default_output_path(hf_dir, outtype)
    if out.is_dir():
        out = out / default_output_path(hf_dir, outtype).name

    w = gguf.GGUFWriter(path=None, arch=hp.arch)
    for t in plan:
        shape, dtype, nbytes = _nbytes(t.shape, t.qtype)
        w.add_tensor_info(t.name, shape, dtype, nbytes, raw_dtype=t.qtype)
    _, attn_factor = _rope_factors(hp)
    _write_general(w, hf_dir, name)
    _write_hparams(w, hp, file_type, attn_factor)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _write_vocab(w, hf_dir, hp)

    out.parent.mkdir(parents=True, exist_ok=True)
    with gguf_output(w, out) as tmp:
        w.write_header_to_file(path=tmp)
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for i, t in enumerate(plan):
            data = t.load()
            if data.shape != t.shape:  # only a corrupt .bin could get here
                raise ConvertError(f"tensor {t.name} loaded with shape {list(data.shape)}, expected {list(t.shape)}")
            w.write_tensor_data(_encode(data, t.qtype))
            if progress is not None:
                progress(t.name, i)
    return out


@contextmanager
def gguf_output(w: gguf.GGUFWriter, out: str | os.PathLike) -> Iterator[Path]:
    """A fresh temporary file beside `out` for `w` to write (a user's own OUT.tmp is never
    touched). When the block completes, `w` is closed and the file renamed to `out` with a
    new file's mode; when it raises (SIGTERM included, see cli), closed and removed."""
    out = Path(out)
    folder = out.absolute().parent
    try:
        fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=folder)
    except OSError as e:  # (named by the output and its folder, not by the temporary name)
        error = OSError(f"cannot write {out}: {folder}: {e.strerror}")
        error.errno = e.errno
        raise error from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        w.close()
        os.chmod(tmp, _new_file_mode())  # mkstemp made it 0600; a plain new file gets 0666 & ~umask
        os.replace(tmp, out)
    except BaseException:
        try:
            w.close()
        except Exception:
            pass
        tmp.unlink(missing_ok=True)
        raise


def _new_file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _prepare(hf_dir: Path, weight_type: gguf.GGMLQuantizationType) -> tuple[HParams, list[_Planned]]:
    """Validate folder, config and weights (names, shapes, completeness) before writing anything."""
    if not hf_dir.is_dir():
        raise ConvertError(f"not a folder: {hf_dir}")
    hp = read_hparams(_load_json(hf_dir / "config.json", "config.json"))
    return hp, _plan_tensors(hp, open_checkpoint(hf_dir), weight_type)


def tensor_count(hf_dir: str | os.PathLike) -> int:
    """How many tensors the GGUF of `hf_dir` will hold (for progress bars); validates like a conversion."""
    return len(_prepare(Path(hf_dir), gguf.GGMLQuantizationType.F16)[1])
