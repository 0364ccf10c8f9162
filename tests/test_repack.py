"""The repacked weight layouts of csrc/quant/repack.h. The interleaved Q4_0 x8 layout the CPU backend
gives Q4_0 matmul weights at load: its bytes against a numpy rendering of the
documented layout, its kernels (decode, few-token and GEMM paths, every ISA)
against the file-layout kernels and the float64 reference, and a whole model
repacked against the same model unrepacked; a model too large to copy into the
memory the host has left, loaded with its weights mapped instead. The planar layout the CUDA backend
gives every block format: its bytes against a numpy rendering."""
import os
import subprocess
import sys

import numpy as np
import pytest

from phicpp import _core as C
from test_matmul import ISAS, matmul, prefill_acts, quant_reference, uses_gemm

BLOCK = 18  # bytes of a Q4_0 block: fp16 d + 16 bytes of nibbles


def numpy_repack(w, rows, K):
    """quant/repack.h, written out: groups of 8 rows, records per block of
    d[8] then qs[quad j][row r][4 bytes]."""
    nb = K // 32
    blocks = w.reshape(rows // 8, 8, nb, BLOCK)  # group, row in group, block, bytes
    d = blocks[:, :, :, 0:2].transpose(0, 2, 1, 3).reshape(rows // 8, nb, 16)
    qs = blocks[:, :, :, 2:].reshape(rows // 8, 8, nb, 4, 4)  # group, row, block, quad, byte
    qs = qs.transpose(0, 2, 3, 1, 4).reshape(rows // 8, nb, 128)
    return np.concatenate([d, qs], axis=2).reshape(rows, -1)


def q4_0_weight(rows, K, rng):
    return C.quantize(rng.standard_normal((rows, K)).astype(np.float32), "q4_0")


@pytest.mark.parametrize("rows,K", [(8, 32), (16, 96), (40, 3072)])
def test_layout_bytes(rows, K):
    w = q4_0_weight(rows, K, np.random.default_rng(rows + K))
    packed = C.repack_weight(w, "q4_0", (rows, K), "q4_0_x8")
    assert packed.size == w.size
    assert np.array_equal(packed.reshape(rows, -1), numpy_repack(w, rows, K))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("rows,K", [(8, 32), (24, 96), (56, 160), (104, 608), (1064, 64)])
@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 9, 17])
def test_matmul_matches_file_layout_and_reference(isa, rows, K, n):
    """Decode (n=1), a few tokens (looped inside each 8-row group) and
    prefill (n >= 8: the int8 GEMM unpacking the interleaved bytes, on AVX2
    and AVX-512); rows span several threads' chunks and GEMM row blocks.
    1064 rows: two threads' chunks of 48 rows, where decode takes four 8-row
    groups at once and then two one by one."""
    rng = np.random.default_rng(rows * 31 + K + n)
    w = q4_0_weight(rows, K, rng)
    x = rng.standard_normal((n, K)).astype(np.float32)
    bias = rng.standard_normal(rows).astype(np.float32)
    packed = C.repack_weight(w, "q4_0", (rows, K), "q4_0_x8")
    y = matmul(packed, "q4_0", (rows, K), x, bias=bias, isa=isa, n_threads=2, layout="q4_0_x8")
    y_rows = matmul(w, "q4_0", (rows, K), x, bias=bias, isa=isa, n_threads=2)
    path = C.matmul_prefill_path("q4_0", (rows, K), n, layout="q4_0_x8", isa=isa)
    assert (path == "rows") == (not uses_gemm(isa, n) or C.matmul_prefill_path("q4_0", (8, 32), 8, layout="q4_0_x8",
                                                                             isa=isa) == "rows")
    acts = prefill_acts(isa, "q4_0", n, layout="q4_0_x8")
    ref, mag = quant_reference(w, "q4_0", rows, K, x, acts=acts)
    if path == C.matmul_prefill_path("q4_0", (rows, K), n, isa=isa):
        # same path: the integer block sums are exact, only the f32 scaling and summation order differ
        assert np.all(np.abs(y - y_rows) <= 1e-5 * (mag + 1)), np.max(np.abs(y - y_rows) / (mag + 1))
    else:
        # the file layout takes another path (other activations): each against its own reference
        acts_rows = prefill_acts(isa, "q4_0", n)
        ref_rows, _ = quant_reference(w, "q4_0", rows, K, x, acts=acts_rows)
        tol_rows = 2e-6 if acts_rows == "f32" else 2e-3
        assert np.all(np.abs(y_rows - (ref_rows + bias)) <= tol_rows * (mag + 1))
    # the reference quantizes activations with ggml's reference arithmetic, the
    # kernels with its x86 one (127/amax): an activation code may differ by one
    tol = 2e-6 if acts == "f32" else 2e-3
    assert np.all(np.abs(y - (ref + bias)) <= tol * (mag + 1)), np.max(np.abs(y - ref - bias) / (mag + 1))


@pytest.mark.parametrize("isa", ISAS)
def test_decode_prefetch_distance_changes_nothing(isa, monkeypatch):
    """The interleaved decode's prefetch distance (a choice per CPU: none on Zen 4, 2 KiB
    elsewhere; PHICPP_Q4X8_PREFETCH for a backend made after it is set) and its walk (one
    group after another or four side by side: PHICPP_DECODE_STREAMS=1|4) move no bit of the
    result, for the four-group streams and the single groups after them (1064 rows: 133 groups
    of 8 over two threads, four at a time, then one by one), and prefetches past the matrix's
    end harmlessly."""
    rows, K = 1064, 608
    rng = np.random.default_rng(11)
    w = q4_0_weight(rows, K, rng)
    x = rng.standard_normal((1, K)).astype(np.float32)
    bias = rng.standard_normal(rows).astype(np.float32)
    packed = C.repack_weight(w, "q4_0", (rows, K), "q4_0_x8")
    ys = []
    for streams in ["1", "4"]:
        monkeypatch.setenv("PHICPP_DECODE_STREAMS", streams)
        for distance in ["0", "2048", "1048576"]:
            monkeypatch.setenv("PHICPP_Q4X8_PREFETCH", distance)
            be = C.Backend("cpu", isa=isa, n_threads=2)
            ys.append(be.matmul(packed, "q4_0", (rows, K), x, bias=bias, layout="q4_0_x8", rearrange=False))
    assert all(np.array_equal(ys[0], y) for y in ys[1:])
    ref = matmul(w, "q4_0", (rows, K), x, bias=bias, isa=isa, n_threads=2)
    assert np.allclose(ys[0], ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("isa", ISAS)
def test_extreme_weights_and_activations(isa):
    """Nibbles all 0 or all 15 against activations at +-127 after quantization:
    the largest block sums the int16 accumulation can meet."""
    rows, K = 16, 256
    rng = np.random.default_rng(5)
    w = q4_0_weight(rows, K, rng).reshape(rows, K // 32, BLOCK)
    w[:8, :, 2:] = 0x00   # q - 8 = -8 everywhere
    w[8:, :, 2:] = 0xFF   # q - 8 = +7 everywhere
    w = w.reshape(rows, -1)
    for x in [np.full((1, K), 3.0, np.float32), np.full((1, K), -1e4, np.float32),
              np.where(rng.random((2, K)) < 0.5, -1.0, 1.0).astype(np.float32)]:
        packed = C.repack_weight(w, "q4_0", (rows, K), "q4_0_x8")
        y = matmul(packed, "q4_0", (rows, K), x, isa=isa, layout="q4_0_x8")
        ref = matmul(w, "q4_0", (rows, K), x, isa="scalar")
        assert np.allclose(y, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_preferred_layout_and_errors():
    simd = [i for i in ISAS if i != "scalar"]
    for isa in simd:
        assert C.preferred_layout("q4_0", (64, 96), isa=isa) == "q4_0_x8"
        assert C.preferred_layout("q4_0", (60, 96), isa=isa) == "rows"  # not whole groups of 8
        assert C.preferred_layout("q8_0", (64, 96), isa=isa) == "rows"
    assert C.preferred_layout("q4_0", (64, 96), isa="scalar") == "rows"
    w = q4_0_weight(12, 64, np.random.default_rng(0))
    with pytest.raises(ValueError):
        C.repack_weight(w, "q4_0", (12, 64), "q4_0_x8")
    with pytest.raises(ValueError):
        C.repack_weight(w, "q4_0", (12, 64), "q9_x3")
    with pytest.raises(ValueError):
        C.repack_weight(np.zeros(12 * 68, np.uint8), "q8_0", (12, 64), "q4_0_x8")
    with pytest.raises(ValueError):
        matmul(w, "q4_0", (12, 64), np.zeros((1, 64), np.float32), layout="q4_0_x8")


LOGITS_SCRIPT = """
import sys, numpy as np, phicpp
m = phicpp.Model(sys.argv[1], n_ctx=64, n_threads=2)
prompt = list(range(1, 20))
pre = m.eval(prompt)                      # prefill: the GEMM path or the row kernel
one = m.eval([7])                         # decode: one token
np.save(sys.argv[2], np.concatenate([np.asarray(pre).reshape(-1), np.asarray(one).reshape(-1)]))
"""


def _logits_with_and_without_repack(model, tmp_path):
    """LOGITS_SCRIPT's logits of `model` in a process with PHICPP_REPACK=1, then =0."""
    outs = []
    for repack in ["1", "0"]:
        out = tmp_path / f"logits_{repack}.npy"
        env = dict(os.environ, PHICPP_REPACK=repack)
        subprocess.run([sys.executable, "-c", LOGITS_SCRIPT, str(model), str(out)], check=True, env=env)
        outs.append(np.load(out))
    return outs


@pytest.mark.skipif(len(ISAS) < 2, reason="no SIMD ISA: nothing is repacked")
def test_model_repacked_equals_file_layout(tmp_path):
    """A Q4_0 model loaded with repacking (the default) gives the logits of
    the same model run in the file layout (PHICPP_REPACK=0)."""
    from phicpp.models import default_model_path
    q = tmp_path / "q4_0.gguf"
    subprocess.run([sys.executable, "-m", "phicpp", "quantize", str(default_model_path()), str(q), "Q4_0",
                    "--allow-requantize"],
                   check=True, capture_output=True)
    a, b = _logits_with_and_without_repack(q, tmp_path)
    assert a.shape == b.shape and np.all(np.isfinite(a))
    n_vocab = a.size // 2
    scale = np.max(np.abs(b))
    # prefill: where both layouts take the same path (the int8 GEMM on AVX2 and
    # AVX-512), only the f32 summation order may differ
    same_path = C.matmul_prefill_path("q4_0", (256, 256), 19, layout="q4_0_x8") == \
        C.matmul_prefill_path("q4_0", (256, 256), 19)
    tol = 1e-4 if same_path else 3e-2
    assert np.max(np.abs(a[:n_vocab] - b[:n_vocab])) <= tol * scale, np.max(np.abs(a[:n_vocab] - b[:n_vocab]))
    # decode: the interleaved and the file-layout row kernels (8-bit activations
    # both) agree to ~2e-7 of a matmul's scale (summation order), yet this
    # model's decode step after the same cache ends 0.13 apart on a scale of
    # 18.7 (measured 2026-12-01, prefill logits bit-identical). Both layouts
    # are as far from the F16 model (decode: 0.070 and 0.069 of the logit
    # scale, the Q4_0 noise) and each matmul agrees alone, so this reads as
    # summation order amplified by 8 layers of 8-bit re-quantization, not a
    # wrong kernel; the bound for decode stays the one the old mixed paths had
    assert np.max(np.abs(a[n_vocab:] - b[n_vocab:])) <= 3e-2 * scale, np.max(np.abs(a[n_vocab:] - b[n_vocab:]))
    assert np.argmax(a[:n_vocab]) == np.argmax(b[:n_vocab]) and np.argmax(a[n_vocab:]) == np.argmax(b[n_vocab:])


PLANAR = {"q4_0": (2, 16), "q4_1": (4, 16), "q5_0": (6, 16), "q5_1": (8, 16), "q8_0": (2, 32), "iq4_nl": (2, 16),
          "q2_K": (16, 64), "q3_K": (0, 96), "q4_K": (16, 128), "q5_K": (16, 160), "q6_K": (0, 192),
          "iq4_xs": (8, 128)}


@pytest.mark.parametrize("typ", sorted(PLANAR))
@pytest.mark.parametrize("rows", [1, 3, 8])
def test_planar_layout_bytes(typ, rows):
    """Every block's quant bits (16-byte multiples) in a first plane, block after
    block; the rest of each block, in its byte order, in a second plane."""
    _, bs, ts = C.type_info(typ)
    off, nbits = PLANAR[typ]
    assert C.planar_split(typ) == (off, nbits) and nbits % 16 == 0
    K = bs * 3
    rng = np.random.default_rng(rows)
    w = rng.integers(0, 256, (rows, 3 * ts), dtype=np.uint8)
    blocks = w.reshape(rows * 3, ts)
    expect = np.concatenate([blocks[:, off:off + nbits].reshape(-1),
                             np.concatenate([blocks[:, :off], blocks[:, off + nbits:]], axis=1).reshape(-1)])
    assert np.array_equal(C.repack_weight(w, typ, (rows, K), "planar"), expect)


def test_planar_has_no_float_layout():
    with pytest.raises(ValueError, match="no planar layout"):
        C.repack_weight(np.zeros((2, 64), np.uint8), "f16", (2, 32), "planar")


def test_model_copied_equals_mapped(tmp_path):
    """The shipped model (Q8_0: no interleaved layout) with its matmul weights copied
    into the backend's memory at load (the default) gives bit for bit the logits of
    the same weights read in place from the file mapping (PHICPP_REPACK=0)."""
    from phicpp.models import default_model_path
    copied, mapped = _logits_with_and_without_repack(default_model_path(), tmp_path)
    assert np.all(np.isfinite(copied)) and np.abs(copied).max() > 0
    assert np.array_equal(copied, mapped)


# ---------------------------------------------------------------- copies that do not fit

SEED_PHI3 = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools", "fuzz_seeds", "model", "phi3.gguf")


def _sparse_phi3(path, n_ff, n_layer):
    """The phi3 seed model (tools/make_fuzz_seeds.py) with feed_forward_length n_ff and its one
    layer repeated n_layer times: the FFN weights (Q8_0, 102 bytes per unit of n_ff a layer) a
    hole of zeros in a sparse file, every other tensor copied. Returns the file's size."""
    import gguf
    from gguf import GGUFValueType as VT
    r = gguf.GGUFReader(SEED_PHI3)
    w = gguf.GGUFWriter(str(path), "phi3")
    changed = {"phi3.feed_forward_length": n_ff, "phi3.block_count": n_layer}
    for key, field in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        vtype = field.types[0]
        w.add_key_value(key, changed.get(key, field.contents()), vtype,
                        sub_type=field.types[-1] if vtype == VT.ARRAY else None)
    big = {"ffn_up.weight": lambda ne: [ne[0], 2 * n_ff], "ffn_down.weight": lambda ne: [n_ff, ne[1]]}
    tensors = []  # (name, the seed's tensor, shape)
    for t in r.tensors:
        ne = [int(v) for v in t.shape]
        grow = next((f for suffix, f in big.items() if t.name.endswith(suffix)), None)
        names = [t.name.replace("blk.0.", f"blk.{i}.") for i in range(n_layer)] if t.name.startswith("blk.0.") \
            else [t.name]
        tensors += [(name, t, grow(ne) if grow else ne) for name in names]
    for name, t, ne in tensors:
        block, size = gguf.GGML_QUANT_SIZES[t.tensor_type]
        w.add_tensor_info(name, list(reversed(ne)), np.float32, int(np.prod(ne)) // block * size,
                          raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    pad = lambda n: (n + 31) // 32 * 32  # (the writer's data alignment)
    total = pad(os.path.getsize(path)) + sum(pad(ti.nbytes) for ti in w.tensors[0].values())
    os.truncate(path, total)  # the FFN bytes: a hole, never written
    placed = {t.name: t.data_offset for t in gguf.GGUFReader(str(path)).tensors}
    with open(path, "r+b") as f:
        for name, t, _ in tensors:
            if not any(name.endswith(s) for s in big):
                f.seek(placed[name])
                f.write(np.asarray(t.data).tobytes())
    return total


LOAD_CAPPED = r"""
import resource, sys
import phicpp
phicpp.Model  # (the package loads it on first use: before the cap)
# room for the file's mapping and 1 GiB more: copying its weights would fail here
# (an error, not the OOM killer) where the backend did not decide to keep them mapped
with open("/proc/self/status") as f:
    vm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (vm + int(sys.argv[2]) + (1 << 30), resource.RLIM_INFINITY))
m = phicpp.Model(sys.argv[1], n_ctx=16, n_batch=1, n_threads=1, device="cpu")
with open("/proc/self/status") as f:
    print(next(int(l.split()[1]) >> 10 for l in f if l.startswith("VmRSS:")))
"""


def test_weights_beyond_host_memory_stay_mapped(tmp_path):
    # a model larger than the memory the host has left loads with its matmul weights
    # mapped (read from the file as needed), where copying them would get the process killed
    if not os.path.exists("/proc/meminfo"):
        pytest.skip("no /proc/meminfo")
    with open("/proc/meminfo") as f:
        info = {l.split(":")[0]: int(l.split()[1]) for l in f if l.split()[1:2] and l.split()[1].isdigit()}
    if "MemAvailable" not in info:
        pytest.skip("no MemAvailable")
    avail_kb = info["MemAvailable"] + info.get("SwapFree", 0)  # (what host_memory_available counts)
    probe = tmp_path / "probe"
    probe.touch()
    os.truncate(probe, 64 << 20)
    if os.stat(probe).st_blocks * 512 >= (64 << 20):
        pytest.skip("this file system has no sparse files")
    n_ff = 2**22  # (428 MB of FFN weights a layer; a step's buffers stay small)
    n_layer = -(-2 * avail_kb * 1024 // (102 * n_ff))  # twice what is available
    if n_layer > 2048:
        pytest.skip("the host has more memory than this file claims")
    path = tmp_path / "big.gguf"
    size = _sparse_phi3(path, n_ff, n_layer)
    env = dict(os.environ, PHICPP_REPACK="1")
    r = subprocess.run([sys.executable, "-c", LOAD_CAPPED, str(path), str(size)], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert int(r.stdout.split()[-1]) < 1024, f"{r.stdout.split()[-1]} MiB resident after load"
    assert "read from the file as needed" in r.stderr, r.stderr[-2000:]  # and the user is told why
