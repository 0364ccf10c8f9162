"""phicpp.quantize.quantize_gguf: llama.cpp's tensor-type mixes, metadata copy,
and data equal to our (ggml-compatible) quantizers' output."""
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT
from gguf import GGUFReader, GGUFWriter
from gguf import quants as gq

from phicpp import _core as C
from phicpp.quantize import QuantizeError, quantize_gguf, tensor_type, _State

N_LAYER = 8


def write_source(path, rng):
    w = GGUFWriter(str(path), arch="phi3")
    w.add_block_count(N_LAYER)
    w.add_uint32("phi3.attention.head_count", 4)
    w.add_uint32("phi3.attention.head_count_kv", 4)
    w.add_string("general.name", "tiny")
    w.add_array("tokenizer.ggml.tokens", ["a", "b", "<s>"])
    w.add_array("tokenizer.ggml.scores", [0.0, -1.0, -2.5])
    w.add_uint32("general.file_type", 1)
    tensors = {"token_embd.weight": rng.standard_normal((40, 256)).astype(np.float16),
               "output_norm.weight": np.ones(256, np.float32),
               "output.weight": rng.standard_normal((40, 256)).astype(np.float16)}
    for i in range(N_LAYER):
        tensors[f"blk.{i}.attn_norm.weight"] = rng.standard_normal(256).astype(np.float32)
        tensors[f"blk.{i}.attn_qkv.weight"] = rng.standard_normal((48, 256)).astype(np.float16)
        tensors[f"blk.{i}.attn_output.weight"] = rng.standard_normal((16, 256)).astype(np.float32)
        tensors[f"blk.{i}.ffn_up.weight"] = rng.standard_normal((32, 256)).astype(np.float16)
        tensors[f"blk.{i}.ffn_down.weight"] = rng.standard_normal((16, 96)).astype(np.float16)  # 96: no K-quant
    for name, arr in tensors.items():
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return tensors


def read_types(path):
    r = GGUFReader(str(path))
    return r, {t.name: QT(int(t.tensor_type)) for t in r.tensors}


def test_q4_k_m_mix_and_data(tmp_path):
    rng = np.random.default_rng(0)
    src, dst = tmp_path / "f16.gguf", tmp_path / "q4km.gguf"
    tensors = write_source(src, rng)
    counts = quantize_gguf(src, dst, "Q4_K_M", n_threads=2)
    assert not (tmp_path / "q4km.gguf.tmp").exists()
    r, types = read_types(dst)
    assert types["output.weight"] == QT.Q6_K
    assert types["token_embd.weight"] == QT.Q4_K
    assert types["output_norm.weight"] == QT.F32 and types["blk.0.attn_norm.weight"] == QT.F32
    for i in range(N_LAYER):
        # a fused qkv follows llama.cpp's attn_v rule: Q6_K on the use_more_bits layers
        assert types[f"blk.{i}.attn_qkv.weight"] == (QT.Q6_K if i in (0, 3, 6, 7) else QT.Q4_K)
        assert types[f"blk.{i}.ffn_up.weight"] == QT.Q4_K
        assert types[f"blk.{i}.attn_output.weight"] == QT.Q4_K
        # ffn_down rows of 96 cannot be K-quants: Q6_K -> Q8_0, Q4_K -> Q5_0 (use_more_bits layers 0, 3, 6, 7)
        assert types[f"blk.{i}.ffn_down.weight"] == (QT.Q8_0 if i in (0, 3, 6, 7) else QT.Q5_0)
    assert sum(counts.values()) == len(tensors)
    f = r.fields
    assert f["general.file_type"].contents() == 15
    assert f["general.quantization_version"].contents() == 2
    assert f["general.name"].contents() == "tiny"
    assert f["tokenizer.ggml.tokens"].contents() == ["a", "b", "<s>"]
    assert f["tokenizer.ggml.scores"].contents() == [0.0, -1.0, -2.5]
    assert f["phi3.block_count"].contents() == N_LAYER
    # data, checked by the gguf package (quantize_gguf calls C.quantize: comparing with that
    # would test the function with itself): bit for bit with gguf's quantizer where it has
    # one, else gguf's dequantizer of the stored blocks is the source within the type's error
    for t in r.tensors:
        src_arr = tensors[t.name].astype(np.float32)
        qt = types[t.name]
        data = np.asarray(t.data)
        if qt == QT.F32:
            assert np.array_equal(data.reshape(src_arr.shape), src_arr)
            continue
        try:
            expect = gq.quantize(src_arr, qt)
        except NotImplementedError:  # K-quants: the gguf package only dequantizes them
            back = gq.dequantize(data.view(np.uint8), qt).reshape(src_arr.shape)
            err = np.sqrt(np.mean((back - src_arr) ** 2) / np.mean(src_arr ** 2))
            assert err < {QT.Q4_K: 0.1, QT.Q6_K: 0.025}[qt], (t.name, err)
            continue
        assert np.array_equal(data.view(np.uint8).reshape(-1), expect.view(np.uint8).reshape(-1)), t.name


@pytest.mark.parametrize("mix", ["Q4_0", "Q8_0", "Q6_K", "Q5_K_S", "Q3_K_M", "Q2_K"])
def test_other_mixes_produce_loadable_files(tmp_path, mix):
    rng = np.random.default_rng(1)
    src, dst = tmp_path / "f16.gguf", tmp_path / f"{mix}.gguf"
    tensors = write_source(src, rng)
    quantize_gguf(src, dst, mix, n_threads=1)
    r, types = read_types(dst)
    assert types["output.weight"] == (QT.Q8_0 if mix == "Q8_0" else QT.Q6_K)
    for t in r.tensors:
        a = tensors[t.name].astype(np.float32)
        if a.ndim == 1:
            continue
        d = C.dequantize(np.asarray(t.data).view(np.uint8).reshape(-1), types[t.name].name.lower(), list(a.shape))
        err = np.sqrt(np.mean((d - a) ** 2))
        assert err < 0.6, (t.name, types[t.name], err)


def test_requantize_a_quantized_file(tmp_path):
    rng = np.random.default_rng(2)
    src, mid, dst = tmp_path / "f16.gguf", tmp_path / "q8.gguf", tmp_path / "q4.gguf"
    write_source(src, rng)
    quantize_gguf(src, mid, "Q8_0")
    with pytest.raises(QuantizeError, match="allow-requantize"):  # as llama-quantize, only when asked
        quantize_gguf(mid, dst, "Q4_0")
    assert not dst.exists() and not Path(str(dst) + ".tmp").exists()
    quantize_gguf(mid, dst, "Q4_0", allow_requantize=True)
    _, types = read_types(dst)
    assert types["blk.0.ffn_up.weight"] == QT.Q4_0


def test_a_tensor_already_of_its_target_type_is_copied(tmp_path):
    """Q8_0 again from a Q8_0 file: every tensor's bytes as they were (no second rounding),
    and no flag needed."""
    rng = np.random.default_rng(4)
    src, mid, dst = tmp_path / "f16.gguf", tmp_path / "q8.gguf", tmp_path / "again.gguf"
    write_source(src, rng)
    quantize_gguf(src, mid, "Q8_0")
    quantize_gguf(mid, dst, "Q8_0")
    for a, b in zip(GGUFReader(mid).tensors, GGUFReader(dst).tensors):
        assert a.name == b.name and int(a.tensor_type) == int(b.tensor_type)
        assert np.array_equal(np.asarray(a.data), np.asarray(b.data)), a.name


def test_f16_target_dequantizes_every_weight(tmp_path):
    """llama-quantize's F16 type: the weights a mix would quantize become F16 (the output and
    embedding too, no bumps), norms and biases keep their type, the values those of the source."""
    rng = np.random.default_rng(3)
    src, mid, dst = tmp_path / "f16.gguf", tmp_path / "q8.gguf", tmp_path / "back.gguf"
    write_source(src, rng)
    quantize_gguf(src, mid, "Q8_0")
    quantize_gguf(mid, dst, "F16")
    r_mid, r_dst = GGUFReader(mid), GGUFReader(dst)
    assert r_dst.fields["general.file_type"].contents() == 1  # MOSTLY_F16
    for a, b in zip(r_mid.tensors, r_dst.tensors):
        assert a.name == b.name
        if QT(int(a.tensor_type)) == QT.Q8_0:
            assert QT(int(b.tensor_type)) == QT.F16, b.name
            want = gq.dequantize(a.data, QT.Q8_0).astype(np.float16)
            assert np.array_equal(np.asarray(b.data).reshape(want.shape), want), b.name
        else:
            assert QT(int(b.tensor_type)) == QT(int(a.tensor_type)), b.name


def test_mix_rules_match_llama_cpp():
    st = _State(n_layer=32, n_attention_wv=32, n_gqa=1, has_output=True)
    # Q4_K_M attn_v: use_more_bits(i, 32) -> layers 0-3, 28-31 and every third in between
    got = [tensor_type("Q4_K_M", f"blk.{i}.attn_v.weight", 3072, st) for i in range(32)]
    more = [i for i, t in enumerate(got) if t == QT.Q6_K]
    assert more == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
    st = _State(n_layer=32, n_attention_wv=0, n_gqa=1, has_output=True)
    assert tensor_type("Q4_K_S", "blk.3.ffn_down.weight", 8192, st) == QT.Q5_K
    assert tensor_type("Q4_K_S", "blk.4.ffn_down.weight", 8192, st) == QT.Q4_K
    assert tensor_type("Q3_K_M", "blk.1.ffn_down.weight", 8192, st) == QT.Q5_K
    assert tensor_type("Q3_K_M", "blk.2.ffn_down.weight", 8192, st) == QT.Q4_K
    assert tensor_type("Q2_K", "blk.2.attn_output.weight", 3072, st) == QT.Q3_K
    assert tensor_type("Q5_K_M", "blk.2.attn_qkv.weight", 3072, st) == QT.Q6_K
    assert tensor_type("Q2_K", "blk.2.attn_qkv.weight", 3072, st) == QT.Q3_K
    assert tensor_type("Q4_0", "output.weight", 3072, st) == QT.Q6_K
    assert tensor_type("Q4_0", "token_embd.weight", 3072, st) == QT.Q4_0
    no_out = _State(n_layer=32, n_attention_wv=0, n_gqa=1, has_output=False)
    assert tensor_type("Q4_K_M", "token_embd.weight", 3072, no_out) == QT.Q6_K


def test_moe_mix_rules_match_llama_cpp():
    """llama.cpp's rules for MoE files (llama_tensor_get_type): stacked experts follow
    their dense counterparts by layer; a model of exactly 8 experts (Mixtral) gets
    attn_v and attn_k in Q8_0 and attn_output in Q5_K for the 2- to 4-bit K mixes;
    16 experts (Phi-3.5-MoE) get the dense rules. Checked against llama-quantize itself
    on 8- and 16-expert files by tests/test_llamacpp_quant.py (opt-in)."""
    def st(n_expert):
        return _State(n_layer=32, n_attention_wv=32, n_gqa=4, has_output=True, n_expert=n_expert)

    eight, sixteen = st(8), st(16)
    assert [tensor_type("Q4_0", f"blk.{i}.attn_v.weight", 4096, eight) for i in range(3)] == [QT.Q8_0] * 3
    assert [tensor_type("Q4_K_M", f"blk.{i}.attn_v.weight", 4096, sixteen) for i in range(5)] == \
        [QT.Q6_K] * 4 + [QT.Q4_K]
    assert tensor_type("Q4_K_M", "blk.4.attn_k.weight", 4096, eight) == QT.Q8_0
    assert tensor_type("Q4_K_M", "blk.4.attn_k.weight", 4096, sixteen) == QT.Q4_K
    assert tensor_type("Q4_K_M", "blk.4.attn_output.weight", 4096, eight) == QT.Q5_K
    assert tensor_type("Q5_K_M", "blk.4.attn_output.weight", 4096, eight) == QT.Q5_K  # (its default)
    assert tensor_type("Q3_K_M", "blk.4.attn_output.weight", 4096, eight) == QT.Q5_K
    assert tensor_type("Q3_K_M", "blk.4.attn_output.weight", 4096, sixteen) == QT.Q4_K
    assert tensor_type("Q6_K", "blk.4.attn_output.weight", 4096, eight) == QT.Q6_K
    for moe in (eight, sixteen):
        assert tensor_type("Q4_K_M", "blk.3.ffn_down_exps.weight", 6400, moe) == QT.Q6_K   # use_more_bits(3, 32)
        assert tensor_type("Q4_K_M", "blk.4.ffn_down_exps.weight", 6400, moe) == QT.Q4_K
        assert tensor_type("Q2_K", "blk.4.ffn_down_exps.weight", 6400, moe) == QT.Q3_K
        assert tensor_type("Q4_K_M", "blk.4.ffn_gate_exps.weight", 4096, moe) == QT.Q4_K
        assert tensor_type("Q8_0", "blk.4.ffn_up_exps.weight", 4096, moe) == QT.Q8_0
    assert tensor_type("Q2_K", "blk.9.attn_v.weight", 4096, sixteen) == QT.Q4_K  # n_gqa 4


def test_unknown_mix_is_an_error(tmp_path):
    with pytest.raises(QuantizeError):
        quantize_gguf(tmp_path / "x.gguf", tmp_path / "y.gguf", "Q7_X")
