"""Several sequences in one model: decode_batch gives every row exactly the logits the same
sequence gets alone (batch invariance), and the per-sequence caches stay apart."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import phicpp
from phicpp import _core
from phicpp.quantize import quantize_gguf

KINDS = ["phi3_mini", "phi2", "phi3_medium", "phi_qkln", "phi3_swa", "phimoe"]


def _devices():
    """(device, isa): the CPU at every ISA this machine runs, and CUDA with a GPU."""
    out = [("cpu", isa) for isa in _core.available_isas()]
    if _core.cuda_available():
        out.append(("cuda", "auto"))
    return out


@pytest.fixture(scope="module")
def ggufs(tiny_gguf, module_tmp):
    d = module_tmp("batch")
    out = {kind: tiny_gguf(kind) for kind in KINDS}
    for mix in ("Q4_0", "Q8_0", "Q4_K_M"):
        q = d / f"phi3_mini-{mix.lower()}.gguf"
        quantize_gguf(out["phi3_mini"], q, mix, n_threads=2)
        out[f"phi3_mini-{mix.lower()}"] = q
    return out


def _prompts(n_vocab, k, rng):
    return [rng.integers(1, n_vocab, size=int(rng.integers(1, 40))).tolist() for _ in range(k)]


@pytest.mark.parametrize("device,isa", _devices(), ids=lambda v: str(v))
@pytest.mark.parametrize("kind", KINDS + ["phi3_mini-q4_0", "phi3_mini-q8_0", "phi3_mini-q4_k_m"])
def test_decode_batch_equals_alone(ggufs, kind, device, isa):
    rng = np.random.default_rng(len(kind))
    n_seq = 11  # past the 8 rows where a lone matmul would switch kernels
    batched = _core.Model(str(ggufs[kind]), n_ctx=96, n_threads=2, device=device, isa=isa, n_seq=n_seq)
    alone = _core.Model(str(ggufs[kind]), n_ctx=96, n_threads=2, device=device, isa=isa)
    prompts = _prompts(batched.n_vocab, n_seq, rng)
    last = []
    for s, p in enumerate(prompts):
        last.append(batched.eval(np.array(p, np.int32), False, s))
    toks = [int(np.argmax(x)) for x in last]
    ref_tokens = {s: [] for s in range(n_seq)}
    # alone: each sequence by itself, greedy, 6 steps
    for s, p in enumerate(prompts):
        alone.reset()
        logits = alone.eval(np.array(p, np.int32), False, 0)
        assert np.array_equal(logits, last[s])
        t = int(np.argmax(logits))
        for _ in range(6):
            ref_tokens[s].append(t)
            logits = alone.eval(np.array([t], np.int32), False, 0)
            t = int(np.argmax(logits))
        ref_tokens[s].append(t)
        ref_tokens[s].append(logits)
    # batched: a changing set of sequences each step (some sit out), same tokens
    pos = [0] * n_seq
    for step in range(10):
        active = [s for s in range(n_seq) if pos[s] < 6 and (step + s) % 3 != 0]
        if not active:
            continue
        out = batched.batch(np.array(active, np.int32), 1, np.array([toks[s] for s in active], np.int32))
        for i, s in enumerate(active):
            assert toks[s] == ref_tokens[s][pos[s]], (s, step)
            pos[s] += 1
            toks[s] = int(np.argmax(out[i]))
            if pos[s] == 6:
                assert np.array_equal(out[i], ref_tokens[s][7]), f"sequence {s}: logits differ from alone"
    for s in range(n_seq):
        if pos[s] == 6:
            assert toks[s] == ref_tokens[s][6]
        assert batched.n_past_of(s) == len(prompts[s]) + pos[s]


def test_decode_batch_errors(ggufs):
    m = phicpp.Model(ggufs["phi3_mini"], n_ctx=8, n_threads=1, n_seq=3)
    with pytest.raises(ValueError):
        m.decode_batch([0, 0], [1, 2])  # one sequence twice
    with pytest.raises(ValueError):
        m.decode_batch([3], [1])  # no such sequence
    with pytest.raises(ValueError):
        m.eval([1], seq=-1)
    m.eval([1] * 8, seq=1)
    with pytest.raises(phicpp.ContextOverflowError):
        m.decode_batch([0, 1], [1, 2])  # sequence 1 is full
    assert m.n_past_of(0) == 0 and m.n_past_of(1) == 8  # nothing advanced
    m.reset(1)
    assert m.n_past_of(1) == 0
    with pytest.raises(ValueError):
        phicpp.Model(ggufs["phi3_mini"], n_seq=0)


def test_model_shared_by_threads(ggufs):
    """Threads on different sequences of one Model get what each gets alone."""
    m = phicpp.Model(ggufs["phi3_mini"], n_ctx=64, n_threads=2, n_seq=4)
    ref = phicpp.Model(ggufs["phi3_mini"], n_ctx=64, n_threads=2)
    prompts = [[1, 2, 3], [5, 6], [7, 8, 9, 10], [11]]

    def greedy(model, seq, prompt, out):
        logits = model.eval(prompt, seq=seq)
        toks = []
        for _ in range(8):
            t = int(np.argmax(logits))
            toks.append(t)
            logits = model.eval([t], seq=seq)
        out[seq] = toks

    want = {}
    for s, p in enumerate(prompts):
        ref.reset()
        one: dict = {}
        greedy(ref, 0, p, one)
        want[s] = one[0]
    got: dict = {}
    threads = [threading.Thread(target=greedy, args=(m, s, p, got)) for s, p in enumerate(prompts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == want


@pytest.mark.parametrize("device,isa", _devices(), ids=lambda v: str(v))
@pytest.mark.parametrize("kind", ["phi3_mini", "phi2", "phi3_mini-q4_0", "phi3_mini-q4_k_m", "phimoe"])
def test_prompt_chunks_beside_decodes_equal_one_token_at_a_time(ggufs, kind, device, isa):
    """batch(): a prompt in chunks of any size next to other sequences' decode tokens gives
    exactly the logits of feeding it one token at a time alone."""
    rng = np.random.default_rng(3)
    m = _core.Model(str(ggufs[kind]), n_ctx=96, n_threads=2, device=device, isa=isa, n_seq=3)
    ref = _core.Model(str(ggufs[kind]), n_ctx=96, n_threads=2, device=device, isa=isa)
    prompt = rng.integers(1, m.n_vocab, size=23).astype(np.int32)
    want = [ref.eval(prompt[i:i + 1], False, 0) for i in range(len(prompt))]
    for s in (1, 2):
        m.eval(np.array([5, 6, 7], np.int32), False, s)
    i = 0
    for chunk in (1, 9, 4, 9):
        others = [1, 2] if chunk != 4 else [2]
        out = m.batch(np.array([0] + others, np.int32), chunk,
                      np.concatenate([prompt[i:i + chunk], np.array([8] * len(others), np.int32)]))
        i += chunk
        assert np.array_equal(out[0], want[i - 1]), f"after {i} prompt tokens"
    assert m.n_past_of(0) == len(prompt) and m.n_past_of(1) == 3 + 3 and m.n_past_of(2) == 3 + 4


@pytest.mark.parametrize("n_threads", [2, 3, 4])
def test_worker_thread_exception_reaches_the_caller(n_threads):
    """An error on any thread of the CPU pool (the caller's share or a worker's) is raised to
    the caller once every thread has finished; the process lives and the pool keeps working."""
    for thrower in range(n_threads):
        caught, ran = _core._threadpool_throw(n_threads, thrower, 5)
        assert caught == 5 and ran == n_threads
