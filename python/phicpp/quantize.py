"""Quantize a GGUF file the way llama-quantize does (without an importance matrix).

    quantize_gguf("phi3-f16.gguf", "phi3-Q4_K_M.gguf", "Q4_K_M", n_threads=2)

The mix (which tensor gets which type) follows llama.cpp's
llama_tensor_get_type: output.weight is bumped to Q6_K, attn_v / attn_qkv /
ffn_down get more bits by layer position in the _M / _S mixes, 1-D tensors
(norms, biases) and MoE routers keep their type. MoE files: stacked experts
([n_expert, rows, cols]) take the rules of their dense counterpart
(ffn_down_exps those of ffn_down, by its layer), and a model of exactly 8
experts gets llama.cpp's Mixtral rules (attn_v and attn_k in Q8_0, attn_output
in Q5_K for the 2- to 4-bit K mixes). Rows are quantized in C++ with the reference
quantizers (bit-compatible with ggml's) on several threads, and the file is
written under a fresh temporary name beside the output and renamed at the end.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np
from gguf import GGMLQuantizationType as QT
from gguf import GGUFReader, GGUFValueType, GGUFWriter, LlamaFileType

from . import _core
from .convert import gguf_output
from .progress import progress_bar

QK_K = 256


@dataclass(frozen=True)
class Mix:
    base: QT              # default type of 2-D weights
    ftype: LlamaFileType  # written to general.file_type


MIXES = {
    "Q4_0": Mix(QT.Q4_0, LlamaFileType.MOSTLY_Q4_0),
    "Q4_1": Mix(QT.Q4_1, LlamaFileType.MOSTLY_Q4_1),
    "Q5_0": Mix(QT.Q5_0, LlamaFileType.MOSTLY_Q5_0),
    "Q5_1": Mix(QT.Q5_1, LlamaFileType.MOSTLY_Q5_1),
    "Q8_0": Mix(QT.Q8_0, LlamaFileType.MOSTLY_Q8_0),
    "Q2_K": Mix(QT.Q2_K, LlamaFileType.MOSTLY_Q2_K),
    "Q3_K_M": Mix(QT.Q3_K, LlamaFileType.MOSTLY_Q3_K_M),
    "Q4_K_S": Mix(QT.Q4_K, LlamaFileType.MOSTLY_Q4_K_S),
    "Q4_K_M": Mix(QT.Q4_K, LlamaFileType.MOSTLY_Q4_K_M),
    "Q5_K_S": Mix(QT.Q5_K, LlamaFileType.MOSTLY_Q5_K_S),
    "Q5_K_M": Mix(QT.Q5_K, LlamaFileType.MOSTLY_Q5_K_M),
    "Q6_K": Mix(QT.Q6_K, LlamaFileType.MOSTLY_Q6_K),
}
# llama-quantize's F16 target: every weight it would quantize in F16, no per-tensor rules (it
# applies them only to quantized defaults); from a quantized file it dequantizes.
MIXES["F16"] = Mix(QT.F16, LlamaFileType.MOSTLY_F16)
MIXES["Q4_K"] = MIXES["Q4_K_M"]  # llama-quantize's aliases
MIXES["Q5_K"] = MIXES["Q5_K_M"]
MIXES["Q3_K"] = MIXES["Q3_K_M"]

# llama.cpp's fallback when a row is not a multiple of 256 (convert_incompatible_tensor).
# Q2_K/Q3_K fall back to IQ4_NL there; we have no IQ4_NL quantizer, so Q4_0 (same size).
K_FALLBACK = {QT.Q2_K: QT.Q4_0, QT.Q3_K: QT.Q4_0, QT.Q4_K: QT.Q5_0, QT.Q5_K: QT.Q5_1, QT.Q6_K: QT.Q8_0}
K_TYPES = set(K_FALLBACK)

# Tensors llama.cpp never quantizes even when 2-D.
_KEEP = re.compile(r"(_norm\.weight|ffn_gate_inp\.weight|position_embd|token_types|rope_freqs|\.bias)$")


class QuantizeError(ValueError):
    pass


def _use_more_bits(i_layer: int, n_layer: int) -> bool:
    return i_layer < n_layer // 8 or i_layer >= 7 * n_layer // 8 or (i_layer - n_layer // 8) % 3 == 2


@dataclass
class _State:
    n_layer: int
    n_attention_wv: int
    n_gqa: int
    has_output: bool
    n_expert: int = 0  # 0: dense
    i_attention_wv: int = 0


def _is_attn_v(name: str) -> bool:
    return "attn_v.weight" in name or "attn_qkv.weight" in name


def _layer(name: str) -> int:
    m = re.match(r"blk\.(\d+)\.", name)
    return int(m.group(1)) if m else 0


def tensor_type(mix_name: str, name: str, ncols: int, st: _State) -> QT:
    """The type llama.cpp's llama_tensor_get_type picks for a 2-D weight (no imatrix)."""
    mix = MIXES[mix_name]
    f = mix.ftype
    t = mix.base
    if t == QT.F16:
        return t
    if name == "output.weight" or (not st.has_output and name == "token_embd.weight"):
        if ncols % _core.type_info(t.name)[1] != 0:
            t = QT.Q8_0
        elif t != QT.Q8_0:
            t = QT.Q6_K
    elif name == "token_embd.weight":
        pass
    elif _is_attn_v(name):
        # llama.cpp counts a fused qkv (Phi-3) as an attn_v tensor, so it gets
        # the attn_v bumps; its separate attn_qkv rule is unreachable.
        i = st.i_attention_wv
        if f == LlamaFileType.MOSTLY_Q2_K:
            t = QT.Q4_K if st.n_gqa >= 4 else QT.Q3_K
        elif f == LlamaFileType.MOSTLY_Q3_K_M:
            t = QT.Q5_K if i < 2 else QT.Q4_K
        elif f in (LlamaFileType.MOSTLY_Q4_K_M, LlamaFileType.MOSTLY_Q5_K_M) and _use_more_bits(i, st.n_attention_wv):
            t = QT.Q6_K
        elif f == LlamaFileType.MOSTLY_Q4_K_S and i < 4:
            t = QT.Q5_K
        if st.n_expert == 8:
            t = QT.Q8_0  # llama.cpp: "for the 8-expert model, bumping this to Q8_0 trades just ~128MB"
        st.i_attention_wv += 1
    elif "attn_k.weight" in name:
        if st.n_expert == 8:
            t = QT.Q8_0
    elif "ffn_down" in name:
        i, n = _layer(name), st.n_layer
        if f == LlamaFileType.MOSTLY_Q2_K:
            t = QT.Q3_K
        elif f == LlamaFileType.MOSTLY_Q3_K_M:
            t = QT.Q5_K if i < n // 16 else QT.Q4_K  # arch != FALCON
        elif f == LlamaFileType.MOSTLY_Q4_K_M:
            if _use_more_bits(i, n):
                t = QT.Q6_K
        elif f == LlamaFileType.MOSTLY_Q5_K_M and _use_more_bits(i, n):
            t = QT.Q6_K
        elif f == LlamaFileType.MOSTLY_Q4_K_S and i < n // 8:
            t = QT.Q5_K
    elif "attn_output.weight" in name:
        if st.n_expert == 8:
            if f in (LlamaFileType.MOSTLY_Q2_K, LlamaFileType.MOSTLY_Q3_K_M, LlamaFileType.MOSTLY_Q4_K_S,
                     LlamaFileType.MOSTLY_Q4_K_M):
                t = QT.Q5_K
        elif f == LlamaFileType.MOSTLY_Q2_K:
            t = QT.Q3_K
        elif f == LlamaFileType.MOSTLY_Q3_K_M:
            t = QT.Q4_K
    # rows that do not fit the block size fall back as llama.cpp does
    if t in K_TYPES and ncols % QK_K != 0:
        t = K_FALLBACK[t]
    if ncols % _core.type_info(t.name)[1] != 0:
        t = QT.F16
    return t


def _should_quantize(name: str, shape) -> bool:
    return len(shape) >= 2 and name.endswith(".weight") and not _KEEP.search(name)


def _copy_metadata(reader: GGUFReader, writer: GGUFWriter, ftype: LlamaFileType) -> None:
    skip = {"general.architecture", "general.file_type", "general.quantization_version", "general.alignment"}
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name in skip:
            continue
        vtype = field.types[0]
        sub = field.types[1] if vtype == GGUFValueType.ARRAY and len(field.types) > 1 else None
        writer.add_key_value(field.name, field.contents(), vtype, sub)
    writer.add_uint32("general.quantization_version", 2)
    writer.add_uint32("general.file_type", int(ftype))


def _field_int(reader: GGUFReader, key: str, default: int) -> int:
    f = reader.fields.get(key)
    return int(f.contents()) if f is not None else default


_FLOAT_TYPES = (QT.F32, QT.F16, QT.BF16)


def _as_f32(t) -> np.ndarray:
    """A tensor of the input file as float32 [rows, ncols]."""
    ncols = int(t.shape[0])
    qt = QT(int(t.tensor_type))
    if qt == QT.F32:
        return np.asarray(t.data, dtype=np.float32).reshape(-1, ncols)
    if qt == QT.F16:
        return np.asarray(t.data).view(np.float16).astype(np.float32).reshape(-1, ncols)
    raw = np.ascontiguousarray(np.asarray(t.data).view(np.uint8))
    rows = int(np.prod(t.shape[1:])) if len(t.shape) > 1 else 1
    return _core.dequantize(raw.reshape(-1), qt.name.lower(), [rows, ncols])


def quantize_gguf(src: str | os.PathLike, dst: str | os.PathLike, mix: str, n_threads: int = 0,
                  allow_requantize: bool = False) -> dict[str, int]:
    """Quantize GGUF `src` into `dst` with llama.cpp's mix `mix` (e.g. "Q4_K_M").
    Returns {type name: tensor count} of the written file.

    As llama-quantize: a tensor already of its target type is copied as it is, and one of
    another quantized type is requantized only with allow_requantize (its rounding would
    add to the first one's; the F16 target, which only dequantizes, needs no flag)."""
    mix = mix.strip().upper()
    if mix not in MIXES:
        raise QuantizeError(f"unknown quantization type {mix!r}; expected one of {', '.join(sorted(MIXES))}")
    n_threads = n_threads or os.cpu_count() or 1
    _core.GGUFFile(os.fspath(src))  # our validating reader first: a broken file gets its clear error here
    reader = GGUFReader(src)
    arch_field = reader.fields.get("general.architecture")
    if arch_field is None:
        raise QuantizeError(f"{src}: no general.architecture")
    arch = arch_field.contents()
    n_head = _field_int(reader, f"{arch}.attention.head_count", 1)
    names = [t.name for t in reader.tensors]
    st = _State(
        n_layer=_field_int(reader, f"{arch}.block_count", 1),
        n_attention_wv=sum(_is_attn_v(n) for n in names),
        n_gqa=n_head // max(1, _field_int(reader, f"{arch}.attention.head_count_kv", n_head)),
        has_output="output.weight" in names,
        n_expert=_field_int(reader, f"{arch}.expert_count", 0),
    )

    # decide every tensor's type first: the header lists them all before the data
    plan = []
    for t in reader.tensors:
        shape = [int(d) for d in t.shape]  # GGML order: ne0 (row length) first
        have = QT(int(t.tensor_type))
        want = tensor_type(mix, t.name, shape[0], st) if _should_quantize(t.name, shape) else have
        if want != have and have not in _FLOAT_TYPES and want != QT.F16 and not allow_requantize:
            raise QuantizeError(f"{src}: {t.name} is already {have.name}; requantizing it to {want.name} adds a "
                                "second rounding to the first (quantize the F16/F32 file instead, or pass "
                                "--allow-requantize)")
        plan.append((t, None if want == have else want))  # None: copied unchanged

    writer = GGUFWriter(None, arch=arch)
    with gguf_output(writer, dst) as tmp:
        _copy_metadata(reader, writer, MIXES[mix].ftype)
        counts: dict[str, int] = {}
        for t, qt in plan:
            ne = [int(d) for d in t.shape]
            out_type = QT(int(t.tensor_type)) if qt is None else qt
            rows = int(np.prod(ne[1:])) if len(ne) > 1 else 1
            nbytes = int(t.n_bytes) if qt is None else rows * _core.type_info(qt.name.lower())[2] * ne[0] // _core.type_info(qt.name.lower())[1]
            # add_tensor_info takes the numpy-order shape of the element grid
            writer.add_tensor_info(t.name, list(reversed(ne)), np.dtype(np.float32), nbytes, raw_dtype=out_type)
            counts[out_type.name] = counts.get(out_type.name, 0) + 1
        writer.write_header_to_file(path=tmp)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        with progress_bar(f"quantizing to {mix}", total=len(plan)) as step:
            for t, qt in plan:
                if qt is None:
                    data = np.ascontiguousarray(np.asarray(t.data)).view(np.uint8).reshape(-1)
                elif qt == QT.F16:
                    data = _as_f32(t).astype(np.float16).view(np.uint8).reshape(-1)
                else:
                    data = _core.quantize(_as_f32(t), qt.name.lower(), n_threads=n_threads).reshape(-1)
                writer.write_tensor_data(data)
                step(f"{t.name} -> {(qt or QT(int(t.tensor_type))).name}")
    return counts
