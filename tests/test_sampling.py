"""The C++ sampler against numpy references: every filter on odd sizes, ties and edge
values, the PCG32 stream against a pure-Python PCG32, and the whole chain token for token."""
from __future__ import annotations

import numpy as np
import pytest

from phicpp import _core, sampling
from phicpp.sampling import Sampler

MASK64 = (1 << 64) - 1


# ---------------------------------------------------------------- references
class PyPCG32:
    """pcg32 (XSH-RR), fixed stream, seeded like pcg32_srandom_r."""
    INC = 1442695040888963407

    def __init__(self, seed: int):
        self.state = 0
        self.next()
        self.state = (self.state + seed) & MASK64
        self.next()

    def next(self) -> int:
        old = self.state
        self.state = (old * 6364136223846793005 + self.INC) & MASK64
        xs = (((old >> 18) ^ old) >> 27) & 0xFFFFFFFF
        rot = old >> 59
        return ((xs >> rot) | (xs << ((32 - rot) & 31))) & 0xFFFFFFFF

    def next_double(self) -> float:
        a, b = self.next() >> 5, self.next() >> 6
        return (a * 67108864 + b) / 9007199254740992.0


def order(ids, logits):
    """Descending logit, lower id first among equals."""
    return np.lexsort((ids, -logits.astype(np.float64)))


def ref_penalties(logits, history, last_n, repeat, freq, presence):
    out = logits.astype(np.float32).copy()
    if last_n == 0 or (repeat == 1 and freq == 0 and presence == 0):
        return out
    window = history if last_n < 0 else history[max(0, len(history) - last_n):]
    ids, counts = np.unique(np.asarray(window, dtype=np.int64), return_counts=True)
    for t, c in zip(ids, counts):
        x = out[t]
        x = x * np.float32(repeat) if x <= 0 else x / np.float32(repeat)
        out[t] = np.float32(x - (np.float32(c) * np.float32(freq) + np.float32(presence)))
    return out


def ref_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max())
    return e / e.sum()


def make_logits(rng, n, ties=False):
    x = rng.normal(0, 3, n).astype(np.float32)
    if ties:  # force many equal logits, including at the top
        x = np.round(x).astype(np.float32)
    return x


SIZES = [1, 2, 3, 7, 33, 1025, 5003]


# ---------------------------------------------------------------- rng
@pytest.mark.parametrize("seed", [0, 1, 42, 2**32 - 1, 2**64 - 1])
def test_rng_matches_pure_python_pcg32(seed):
    ref = PyPCG32(seed)
    assert list(_core.rng_draws(seed, 50)) == [ref.next() for _ in range(50)]
    ref = PyPCG32(seed)
    got = _core.rng_draws(seed, 50, as_double=True)
    assert list(got) == [ref.next_double() for _ in range(50)]
    assert np.all((got >= 0) & (got < 1))


def test_rng_doubles_are_uniform():
    u = _core.rng_draws(7, 100_000, as_double=True)
    hist, _ = np.histogram(u, bins=10, range=(0, 1))
    assert np.all(np.abs(hist - 10_000) < 500)


# ---------------------------------------------------------------- filters
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("ties", [False, True])
def test_top_k(n, ties):
    rng = np.random.default_rng(n)
    x = make_logits(rng, n, ties)
    ids = np.arange(n, dtype=np.int32)
    for k in [-1, 0, 1, 2, 5, n - 1, n, n + 3]:
        got_ids, got_logits, _ = sampling.top_k(x, k)
        if k <= 0:
            assert list(got_ids) == list(ids)  # off: untouched
            continue
        want = order(ids, x)[: min(k, n)]
        assert list(got_ids) == list(want), k
        np.testing.assert_array_equal(got_logits, x[want])


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("ties", [False, True])
def test_top_p(n, ties):
    rng = np.random.default_rng(100 + n)
    x = make_logits(rng, n, ties)
    ids = np.arange(n)
    o = order(ids, x)
    cum = np.cumsum(ref_softmax(x)[o])
    for p in [0.0, 0.1, 0.5, 0.9, 0.95, 0.999, 1.0]:
        for min_keep in [0, 1, 3]:
            got_ids, _, got_p = sampling.top_p(x, p, min_keep)
            if p >= 1.0:
                assert len(got_ids) == n
                continue
            keep = n
            for i in range(n):
                if cum[i] >= p and i + 1 >= min_keep:
                    keep = i + 1
                    break
            if np.any(np.abs(cum[max(0, keep - 2): keep + 1] - p) < 1e-5):
                continue  # float32 vs float64 running sums may disagree right at p
            assert list(got_ids) == list(o[:keep]), (p, min_keep)
            np.testing.assert_allclose(got_p, ref_softmax(x)[o[:keep]], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("presorted", [False, True])
def test_min_p(n, presorted):
    rng = np.random.default_rng(200 + n)
    x = make_logits(rng, n)
    ids = np.arange(n, dtype=np.int32)
    if presorted:  # the sorted code path (as after top_k)
        o = order(ids, x)
        x, ids = x[o], ids[o]
    for p in [0.0, 0.01, 0.05, 0.3, 0.9, 1.0]:
        for min_keep in [0, 1, 4]:
            got_ids, got_logits, _ = sampling.min_p(x, p, min_keep, ids=ids, sorted=presorted)
            if p <= 0:
                assert len(got_ids) == n
                continue
            thr = np.float32(x.max()) + np.float32(np.log(np.float32(p)))
            kept = x >= thr
            o = order(ids, x)
            if kept.sum() >= max(min_keep, 1):
                want = set(ids[kept].tolist())
            else:  # too few: the min_keep best
                want = set(ids[o[: min(min_keep, n)]].tolist())
            assert set(got_ids.tolist()) == want, (p, min_keep)
            if presorted:
                assert list(got_ids) == sorted(want, key=lambda t: list(ids).index(t))


@pytest.mark.parametrize("n", SIZES)
def test_temperature(n):
    rng = np.random.default_rng(300 + n)
    x = make_logits(rng, n)
    for t in [0.1, 0.7, 1.0, 2.5]:
        _, got, _ = sampling.temperature(x, t)
        np.testing.assert_allclose(got, x / np.float32(t), rtol=1e-6)
    xt = np.round(x)  # ties at the top: the lower id survives
    for t in [0.0, -1.0]:
        _, got, _ = sampling.temperature(xt, t)
        best = int(order(np.arange(n), xt)[0])
        assert np.isfinite(got).sum() == 1 and np.isfinite(got[best])
        assert sampling.greedy(xt) == best


@pytest.mark.parametrize("n", SIZES)
def test_softmax(n):
    x = make_logits(np.random.default_rng(400 + n), n)
    _, _, p = sampling.softmax(x)
    np.testing.assert_allclose(p, ref_softmax(x), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("n", [1, 2, 7, 33, 1025])
def test_penalties(n):
    rng = np.random.default_rng(500 + n)
    x = make_logits(rng, n)
    x[0] = 0.0  # logit exactly 0 counts as "<= 0": multiplied
    hist = rng.integers(0, n, 150).astype(np.int32)
    hist[-3:] = 0
    for last_n in [-1, 0, 1, 10, 64, 1000]:
        for repeat, freq, presence in [(1.0, 0, 0), (1.3, 0, 0), (0.8, 0, 0), (1.1, 0.5, 0.25), (1.0, 0, 1.5)]:
            got_ids, got, _ = sampling.penalties(x, hist, last_n, repeat, freq, presence)
            want = ref_penalties(x, hist, last_n, repeat, freq, presence)
            assert list(got_ids) == list(range(n))
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
            # the same on a shuffled candidate list (the lookup path)
            perm = rng.permutation(n).astype(np.int32)
            ids2, got2, _ = sampling.penalties(x[perm], hist, last_n, repeat, freq, presence, ids=perm)
            np.testing.assert_allclose(got2, want[ids2], rtol=1e-6, atol=1e-6)


def test_penalties_ignore_out_of_range_history():
    x = np.ones(5, dtype=np.float32)
    _, got, _ = sampling.penalties(x, [7, -1, 2], 64, 2.0, 0, 0)
    np.testing.assert_allclose(got, [1, 1, 0.5, 1, 1])


def test_dist_frequencies_follow_softmax():
    x = np.array([1.0, 0.0, 2.0, -1.0, 0.5], dtype=np.float32)
    counts = np.zeros(5)
    for seed in range(20000):
        counts[sampling.dist(x, seed)[0]] += 1
    np.testing.assert_allclose(counts / counts.sum(), ref_softmax(x), atol=0.015)


def test_dist_never_picks_minus_inf():
    x = np.array([-np.inf, 0.0, -np.inf, 0.0], dtype=np.float32)
    for seed in range(500):
        assert sampling.dist(x, seed)[0] in (1, 3)


# ---------------------------------------------------------------- the chain
def ref_chain(x, hist, p: sampling.SamplingParams, u: float) -> int:
    """The default chain in numpy, given the RNG's first double u."""
    ids = np.arange(len(x))
    lg = ref_penalties(x, np.asarray(hist), p.repeat_last_n, p.repeat_penalty, p.frequency_penalty,
                       p.presence_penalty)
    if p.temperature <= 0 or p.top_k == 1:
        return int(order(ids, lg)[0])
    if p.top_k > 0 or p.top_p < 1:  # top_k and top_p leave the candidates sorted; otherwise id order
        o = order(ids, lg)
        if p.top_k > 0:
            o = o[: p.top_k]
        ids, lg = ids[o], lg[o]
    if p.top_p < 1:
        cum = np.cumsum(ref_softmax(lg))
        keep = next((i + 1 for i in range(len(cum)) if cum[i] >= p.top_p and i + 1 >= p.min_keep), len(cum))
        ids, lg = ids[:keep], lg[:keep]
    if p.min_p > 0:  # a stable filter (enough survive in every case tested here)
        keep = lg >= lg.max() + np.float32(np.log(np.float32(p.min_p)))
        ids, lg = ids[keep], lg[keep]
    lg = lg / np.float32(p.temperature)
    w = np.exp((lg - lg.max()).astype(np.float32)).astype(np.float64)
    i = int(np.searchsorted(np.cumsum(w), w.sum() * u))
    return int(ids[min(i, len(ids) - 1)])


@pytest.mark.parametrize("cfg", [
    dict(),
    dict(temperature=1.5, top_k=0, top_p=0.9, min_p=0.0),
    dict(temperature=0.7, top_k=10, top_p=1.0, min_p=0.1, repeat_penalty=1.3, repeat_last_n=16),
    dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, presence_penalty=0.5, frequency_penalty=0.3),
])
def test_chain_matches_reference(cfg):
    rng = np.random.default_rng(7)
    mism = 0
    for trial in range(150):
        n = int(rng.integers(50, 3000))
        x = make_logits(rng, n)
        hist = rng.integers(0, n, 40).astype(np.int32)
        seed = int(rng.integers(0, 2**63))
        s = Sampler(seed=seed, **cfg)
        got = s.sample(x, hist)
        u = _core.rng_draws(seed, 2, as_double=True)[0]
        want = ref_chain(x, hist, s.params, u)
        mism += got != want
    assert mism <= 1  # a float32 running sum may land on the other side of a boundary, rarely


def test_top_k_1_and_temperature_0_are_greedy():
    rng = np.random.default_rng(11)
    for _ in range(50):
        x = make_logits(rng, 1000, ties=True)
        hist = rng.integers(0, 1000, 30)
        want = int(np.argmax(x))  # numpy's argmax also takes the first (lowest) index
        assert Sampler(top_k=1, seed=1).sample(x) == want
        assert Sampler(temperature=0, seed=2).sample(x) == want
        assert Sampler(temperature=-1, top_k=0, seed=3).sample(x) == want
        pen = ref_penalties(x, hist, 64, 1.5, 0, 0)
        assert Sampler(top_k=1, repeat_penalty=1.5).sample(x, hist) == int(np.argmax(pen))


def test_same_seed_same_tokens():
    rng = np.random.default_rng(3)
    rows = [make_logits(rng, 500) for _ in range(30)]

    def run(seed):
        s = Sampler(temperature=1.2, top_k=0, top_p=0.98, min_p=0.0, seed=seed)
        return [s.sample(r) for r in rows]

    assert run(1234) == run(1234)
    assert run(1234) != run(4321)
    s = Sampler(seed=5)
    a = [s.sample(r) for r in rows]
    s.reseed(5)
    assert [s.sample(r) for r in rows] == a


def test_random_seed_is_reported():
    s = Sampler(seed=None)
    again = Sampler(seed=s.seed, temperature=1.0)
    assert 0 <= s.seed < 2**32 and again.seed == s.seed


def test_history_as_list_or_array_and_window():
    x = np.full(10, 0.5, dtype=np.float32)
    x[3] = 1.0  # penalized: 1 / 100 < 0.5
    # token 3 repeated long ago (outside the window) is not penalized
    s = Sampler(top_k=1, repeat_penalty=100.0, repeat_last_n=2)
    assert s.sample(x, [3, 1, 2]) == 3
    assert s.sample(x, np.array([1, 3], dtype=np.int32)) == 0
    assert s.sample(x, []) == 3


@pytest.mark.parametrize("bad", [
    dict(top_p=1.5), dict(min_p=-0.1), dict(repeat_penalty=0.0), dict(repeat_last_n=-5),
    dict(temperature=float("nan")), dict(seed=-7),
])
def test_bad_settings_raise_value_error(bad):
    with pytest.raises(ValueError):
        Sampler(**bad)


def test_bad_logits_raise():
    s = Sampler()
    with pytest.raises(ValueError):
        s.sample(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(ValueError):
        s.sample(np.zeros(0, dtype=np.float32))


@pytest.mark.parametrize("params", [dict(temperature=0), dict(temperature=0, repeat_penalty=1.3),
                                    dict(temperature=0.8, top_k=0, top_p=1.0, min_p=0.0),
                                    dict(temperature=0.8, top_k=40)])
def test_nan_logits(params):
    """NaNs are never picked: greedy skips them wherever they are (index 0 too); a row of
    nothing but NaN is an error, not token 0."""
    s = Sampler(**params, seed=1)
    row = np.full(37, np.nan, dtype=np.float32)
    row[[5, 20]] = [1.0, 3.0]
    hist = np.array([5], dtype=np.int32)
    if params["temperature"] == 0:
        assert s.sample(row, hist) == 20
    else:
        assert all(s.sample(row, hist) in (5, 20) for _ in range(20))
    with pytest.raises(ValueError, match="NaN"):
        s.sample(np.full(37, np.nan, dtype=np.float32), hist)
