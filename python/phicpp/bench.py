"""`phicpp bench`: llama-bench's tests and table, so the numbers line up with llama.cpp's.

As llama-bench (tools/llama-bench/llama-bench.cpp) defines them:
  ppN  prefill of N random tokens (BOS first when the vocab adds one) into an empty cache,
       in batches of n_batch; t/s = N / seconds
  tgN  N single-token decode steps starting from an empty cache (BOS first, then random
       tokens); t/s = N / seconds
  ... @ dD  the same after D tokens already in the cache (llama-bench's -d, n_depth): the
       cache is cleared and D random tokens prefilled, untimed, before every repetition
Each test clears the cache before every repetition, runs one untimed warm-up, and
reports the mean and sample standard deviation of t/s over the repetitions.
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from ._core import GGUFFile


@dataclass
class BenchResult:
    model_filename: str
    model_type: str
    model_size: int         # bytes of tensor data
    model_n_params: int
    backend: str
    n_threads: int
    n_batch: int
    n_prompt: int
    n_gen: int
    n_depth: int = 0
    samples_ns: list[int] = field(default_factory=list)

    @property
    def test(self) -> str:
        if self.n_prompt and not self.n_gen:
            name = f"pp{self.n_prompt}"
        elif self.n_gen and not self.n_prompt:
            name = f"tg{self.n_gen}"
        else:
            name = f"pp{self.n_prompt}+tg{self.n_gen}"
        return f"{name} @ d{self.n_depth}" if self.n_depth else name

    @property
    def samples_ts(self) -> list[float]:
        n = self.n_prompt + self.n_gen
        return [n * 1e9 / ns for ns in self.samples_ns]

    @property
    def avg_ts(self) -> float:
        return statistics.fmean(self.samples_ts) if self.samples_ns else 0.0

    @property
    def stddev_ts(self) -> float:
        return statistics.stdev(self.samples_ts) if len(self.samples_ns) > 1 else 0.0

    def as_json(self) -> dict:
        d = asdict(self)
        ns = self.samples_ns
        d.update(avg_ns=int(statistics.fmean(ns)) if ns else 0,
                 stddev_ns=int(statistics.stdev(ns)) if len(ns) > 1 else 0,
                 avg_ts=self.avg_ts, stddev_ts=self.stddev_ts, samples_ts=self.samples_ts)
        return d


def model_facts(path: str) -> tuple[str, int, int]:
    """(llama.cpp-style description "phi3 4M F16", tensor bytes, parameter count)."""
    g = GGUFFile(path)
    size = sum(t.nbytes for t in g.tensors)
    n_params = sum(t.n_elements for t in g.tensors)
    md = g.metadata
    arch = md.get("general.architecture", "?")
    scale = f"{n_params / 1e9:.0f}B" if n_params >= 1e9 else f"{n_params / 1e6:.0f}M"
    return f"{arch} {scale} {file_type_name(md.get('general.file_type'))}", size, n_params


def file_type_name(ft) -> str:
    if ft is None:
        return "?"
    try:
        from gguf import LlamaFileType
        return LlamaFileType(int(ft)).name.replace("MOSTLY_", "").replace("ALL_", "")
    except (ImportError, ValueError):
        return f"type {ft}"


def _random_tokens(rng: np.random.Generator, n: int, n_vocab: int, bos: int | None) -> np.ndarray:
    toks = rng.integers(0, n_vocab, n, dtype=np.int32)
    if bos is not None and n:
        toks[0] = bos
    return toks


def run_prompt(model, toks: np.ndarray) -> None:
    model.eval(toks)  # the model splits into n_batch pieces itself


def run_gen(model, toks: np.ndarray) -> None:
    for t in toks:
        model.eval(np.array([t], dtype=np.int32))


def bench(model, n_prompt: list[int], n_gen: list[int], reps: int, n_threads: int, n_batch: int,
          warmup: bool = True, progress=None, n_depth: list[int] | None = None) -> list[BenchResult]:
    tok = model.tokenizer
    bos = tok.bos_id if tok.add_bos else None
    desc, size, n_params = model_facts(model.path)
    rng = np.random.default_rng(1)
    depths = n_depth or [0]
    tests = [(p, 0, d) for d in depths for p in n_prompt if p > 0] + [(0, g, d) for d in depths for g in n_gen if g > 0]
    results = []
    for p, g, d in tests:
        if d < 0:
            raise ValueError(f"a depth must be >= 0, got {d}")
        if d + p + g > model.n_ctx:
            raise ValueError(f"test pp{p}/tg{g} at depth {d} needs {d + p + g} tokens but the context holds "
                             f"{model.n_ctx}; raise -c/--ctx-size")
        r = BenchResult(model.path, desc, size, n_params, model.device.upper(), n_threads, n_batch, p, g, d)
        fn, n = (run_prompt, p) if p else (run_gen, g)

        def prepare() -> np.ndarray:
            """An empty cache, then d tokens already in it (untimed), as llama-bench's n_depth."""
            model.reset()
            if d:
                model.eval(_random_tokens(rng, d, model.n_vocab, bos))
            return _random_tokens(rng, n, model.n_vocab, None if d else bos)

        if warmup:
            fn(model, prepare())
        for i in range(reps):
            toks = prepare()
            t0 = time.perf_counter_ns()
            fn(model, toks)
            r.samples_ns.append(time.perf_counter_ns() - t0)
            if progress:
                progress(r, i)
        model.reset()
        results.append(r)
    return results


def markdown_header() -> str:
    return ("| model                          |       size |     params | backend    | threads |"
            "            test |                  t/s |\n"
            "| ------------------------------ | ---------: | ---------: | ---------- | ------: |"
            " --------------: | -------------------: |")


def markdown_row(r: BenchResult) -> str:
    size = (f"{r.model_size / 2**20:.2f} MiB" if r.model_size < 2**30 else f"{r.model_size / 2**30:.2f} GiB")
    params = (f"{r.model_n_params / 1e6:.2f} M" if r.model_n_params < 1e9 else f"{r.model_n_params / 1e9:.2f} B")
    ts = f"{r.avg_ts:.2f} ± {r.stddev_ts:.2f}"
    return (f"| {r.model_type:<30} | {size:>10} | {params:>10} | {r.backend:<10} | {r.n_threads:>7} | "
            f"{r.test:>15} | {ts:>20} |")


def to_json(results: list[BenchResult]) -> str:
    return json.dumps([r.as_json() for r in results], indent=2)
