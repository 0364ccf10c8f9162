"""phicpp.Model's contract on bad input: typed errors, and a cache left exactly as it was."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import phicpp


@pytest.fixture(scope="module")
def gguf(tiny_gguf):
    return tiny_gguf("phi3_mini")


@pytest.fixture
def model(gguf):
    return phicpp.Model(gguf, n_ctx=32, n_threads=1)


def test_errors_leave_the_cache_as_it_was(gguf, model):
    ref = phicpp.Model(gguf, n_ctx=32, n_threads=1)
    model.eval([1, 2, 3])
    ref.eval([1, 2, 3])
    bad = [
        ([4, model.n_vocab], ValueError),      # an id past the vocabulary
        ([4, -1], ValueError),                  # a negative id
        ([5] * 30, phicpp.ContextOverflowError),  # more than the context holds
        ([], ValueError),                       # nothing to evaluate
    ]
    for tokens, err in bad:
        with pytest.raises(err):
            model.eval(tokens)
        assert model.n_past == 3
    # the next evaluation sees exactly the three cached tokens
    assert np.array_equal(model.eval([4]), ref.eval([4]))


def test_gpu_layers_without_a_gpu_run_on_the_cpu(gguf):
    # llama-cpp-python's n_gpu_layers=-1 (and llama.cpp's -ngl 99) on a machine without a GPU
    # run on the CPU with a warning; device="cuda" asks for the GPU outright and is refused
    if phicpp._core.cuda_available():
        pytest.skip("a GPU is here: n_gpu_layers puts the model on it (test_cuda.py)")
    why = phicpp._core.cuda_unavailable_reason()
    assert why
    with pytest.warns(UserWarning, match=r"n_gpu_layers=-1 asks for the GPU, but .*: running on the CPU"):
        m = phicpp.Model(gguf, n_ctx=16, n_threads=1, n_gpu_layers=-1)
    assert m.device == "cpu" and m.eval([1, 2]).shape == (m.n_vocab,)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert phicpp.Model(gguf, n_ctx=16, n_threads=1, n_gpu_layers=0).device == "cpu"
    with pytest.raises(phicpp.UnsupportedError, match="device 'cuda' requested, but"):
        phicpp.Model(gguf, n_ctx=16, n_threads=1, device="cuda")


def test_bad_construction_values(gguf):
    for kw in ({"device": "tpu"}, {"kv_type": "q3"}, {"n_ctx": -1}, {"n_threads": -2}, {"n_batch": 0},
               {"n_seq": 0}, {"n_seq": 100000}, {"n_threads": 10**6}):
        with pytest.raises(ValueError):
            phicpp.Model(gguf, **kw)
    with pytest.raises(ValueError, match="top_k"):
        phicpp.Sampler(top_k=2**40)


def test_token_ids_are_not_cast_silently(model):
    """Ids a cast to int32 would change (floats truncated, 64-bit values wrapped) are refused."""
    for bad, err in (([1.5, 2.7], TypeError), (np.array([2**32 + 5]), ValueError),
                     (np.array([2**63], dtype=np.uint64), ValueError), ([True], TypeError)):
        with pytest.raises(err):
            model.eval(bad)
    with pytest.raises(ValueError):
        model.decode_batch([0], np.array([2**40]))
    assert model.eval(np.array([5], dtype=np.int64)).shape == (model.n_vocab,)


def test_a_context_larger_than_the_host_is_refused_up_front(gguf, tiny_gguf):
    # 2e9 positions of even a tiny model's KV cache are terabytes: under
    # overcommit the allocation itself would succeed and the process be killed
    # once the cache was written, so the model refuses it with the numbers
    phi2 = tiny_gguf("phi2")
    with pytest.raises(phicpp.PhicppError, match=r"KV cache for n_ctx 2000000000 needs \d+ MiB .* host has \d+ MiB"):
        phicpp.Model(phi2, n_ctx=2_000_000_000, n_threads=1)
    phicpp.Model(phi2, n_ctx=4096, n_threads=1)  # (an ordinary one still loads)
    # a sliding-window model keeps only window + a batch of positions on the CPU: any context fits
    m = phicpp.Model(gguf, n_ctx=2_000_000_000, n_threads=1)
    assert m.eval([1, 2, 3]).shape == (m.n_vocab,)


def test_truncate_and_sequence_bounds(model):
    model.eval([1, 2, 3, 4])
    with pytest.raises(ValueError):
        model.truncate(5)
    with pytest.raises(ValueError):
        model.truncate(-1)
    with pytest.raises(ValueError):
        model.eval([1], seq=1)  # one sequence only
    model.truncate(2)
    assert model.n_past == 2


def test_missing_and_broken_files(tmp_path, gguf):
    with pytest.raises(FileNotFoundError):
        phicpp.Model(tmp_path / "nope.gguf")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(gguf.read_bytes()[: gguf.stat().st_size // 2])
    with pytest.raises(phicpp.GGUFError):
        phicpp.Model(cut)


def test_errors_from_one_thread_leave_anothers_tokens_alone(gguf):
    """Two threads on one Model and sequence: one only makes failing calls (bad ids,
    overflows), the other evaluates; the cache ends up holding exactly the good tokens."""
    import threading

    m = phicpp.Model(gguf, n_ctx=32, n_threads=2)
    good = [[3, 4], [5], [6, 7, 8], [9]] * 4
    failures = []

    def feed():
        for t in good:
            m.eval(t)

    def spoil():
        for i in range(200):
            try:
                m.eval([1, m.n_vocab + i] if i % 2 else [2] * 40)
            except (ValueError, phicpp.ContextOverflowError):
                failures.append(i)

    threads = [threading.Thread(target=feed), threading.Thread(target=spoil)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(failures) == 200
    flat = [x for t in good for x in t]
    assert m.n_past == len(flat)
    ref = phicpp.Model(gguf, n_ctx=32, n_threads=2)
    for t in good:  # (the same calls: a prefill of all of them at once takes other kernels)
        ref.eval(t)
    assert np.array_equal(m.eval([10]), ref.eval([10]))


def test_close_and_context_manager(gguf):
    """close() drops the core model (weights, caches) at once; any later use is a ValueError."""
    with phicpp.Model(gguf, n_ctx=32, n_threads=1) as m:
        first = m.eval([1, 2, 3])
        stream = m.generate([1, 2, 3], max_tokens=8, temperature=0)
        next(stream)
        assert not m.closed and "closed" not in repr(m)
    assert m.closed and "closed" in repr(m)
    for use in (lambda: m.eval([1]), lambda: m.n_past, lambda: m.reset(), lambda: next(stream),
                lambda: m.n_vocab, lambda: m.decode_batch([0], [1])):
        with pytest.raises(ValueError, match="closed"):
            use()
    m.close()  # twice: nothing to do
    again = phicpp.Model(gguf, n_ctx=32, n_threads=1)
    assert np.array_equal(again.eval([1, 2, 3]), first)


def test_a_stream_stops_when_its_cache_is_changed(model):
    """A generation whose cache another call changes between two of its tokens raises,
    instead of continuing after someone else's tokens."""
    stream = model.generate([1, 2, 3], max_tokens=8, temperature=0, ignore_eos=True)
    next(stream)
    model.reset()
    with pytest.raises(RuntimeError, match="cache changed"):
        list(stream)
    stream = model.generate([1, 2, 3], max_tokens=8, temperature=0, ignore_eos=True)
    next(stream)
    model.eval([5])
    with pytest.raises(RuntimeError, match="cache changed"):
        list(stream)
    # changes that leave the length as it was count too
    stream = model.generate([1, 2, 3], max_tokens=8, temperature=0, ignore_eos=True)
    next(stream)
    n = model.n_past
    model.truncate(0)
    model.eval(list(range(7, 7 + n)))
    with pytest.raises(RuntimeError, match="cache changed"):
        list(stream)
    a = model.generate([1, 2, 3], max_tokens=4, temperature=0, ignore_eos=True)
    b = model.generate([4, 5, 6], max_tokens=4, temperature=0, ignore_eos=True)
    next(a), next(b)
    with pytest.raises(RuntimeError, match="cache changed"):
        list(a)


def test_prompt_reuse_notices_a_cache_changed_to_the_same_length(model, gguf):
    """A generation reuses the cache only if nothing else changed it since: a cache reset and
    refilled with other tokens of the same length is rebuilt, not taken for the prompt's."""
    fresh = phicpp.Model(gguf, n_ctx=32, n_threads=1)
    want = fresh.generate([1, 2, 3, 4], max_tokens=6, temperature=0, ignore_eos=True, stream=False)
    model.generate([1, 2, 3], max_tokens=1, temperature=0, ignore_eos=True, stream=False)
    n = model.n_past
    model.reset()
    model.eval(list(range(9, 9 + n)))
    assert model.generate([1, 2, 3, 4], max_tokens=6, temperature=0, ignore_eos=True, stream=False) == want
