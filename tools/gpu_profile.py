"""Where a decode step's time goes on the GPU: per-kernel durations from
Nsight Compute for a few decode steps, summed by kernel, against the step's
wall time measured without the profiler. With --prefill N, the same for the
evaluation of an N-token prompt (a "step" is then one prompt).

    python tools/gpu_profile.py MODEL.gguf            # wall time per step only
    ncu --clock-control none --profile-from-start off --metrics gpu__time_duration.sum --csv \\
        python tools/gpu_profile.py MODEL.gguf --profile > ncu.csv
    python tools/gpu_profile.py --summarize ncu.csv [--steps 2] [--wall-ms X]
"""
from __future__ import annotations

import argparse
import csv
import ctypes
import io
import re
import sys
import time
from collections import defaultdict


def profiled(step, steps: int) -> None:
    """steps calls of step() inside the profiler's range (ncu --profile-from-start off)."""
    cuda = ctypes.CDLL("libcuda.so.1")
    cuda.cuProfilerStart()
    for _ in range(steps):
        step()
    cuda.cuProfilerStop()


def run_prefill(path: str, profile: bool, steps: int, n: int) -> None:
    import numpy as np

    import phicpp

    m = phicpp.Model(path, n_ctx=n, n_batch=n, device="cuda")
    prompt = np.random.default_rng(0).integers(0, m.n_vocab, n).astype(np.int32)
    m.eval(prompt)  # workspaces sized, cuBLASLt plans made
    m.reset()

    def prefill():
        m.eval(prompt)
        m.reset()

    if profile:
        profiled(prefill, steps)
        return
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        m.eval(prompt)
        times.append(time.perf_counter() - t0)
        m.reset()
    dt = sorted(times)[len(times) // 2]
    print(f"wall {dt * 1e3:.3f} ms per {n}-token prompt ({n / dt:.0f} t/s)")


def run(path: str, profile: bool, steps: int, ctx: int, kv_type: str = "auto") -> None:
    import numpy as np

    import phicpp

    m = phicpp.Model(path, n_ctx=ctx + 128, device="cuda", kv_type=kv_type)
    rng = np.random.default_rng(0)
    m.eval(rng.integers(0, m.n_vocab, ctx).astype(np.int32))
    for _ in range(4):  # record the step (CUDA graph) before measuring
        m.eval([int(rng.integers(0, m.n_vocab))])
    if profile:
        profiled(lambda: m.eval([int(rng.integers(0, m.n_vocab))]), steps)
        return
    t0 = time.perf_counter()
    n = 64
    for _ in range(n):
        m.eval([int(rng.integers(0, m.n_vocab))])
    dt = (time.perf_counter() - t0) / n
    print(f"wall {dt * 1e3:.3f} ms per decode step at position ~{ctx} ({1 / dt:.1f} t/s)")


def summarize(csv_path: str, steps: int, wall_ms: float | None) -> None:
    text = open(csv_path, encoding="utf-8", errors="replace").read()
    start = text.find('"ID"')
    rows = list(csv.DictReader(io.StringIO(text[start:])))
    by = defaultdict(lambda: [0, 0.0])
    total = 0.0
    for r in rows:
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        name = re.sub(r"\(.*", "", r["Kernel Name"]).strip()
        unit = r.get("Metric Unit", "nsecond")
        v = float(r["Metric Value"].replace(",", ""))
        ns = v * {"nsecond": 1, "usecond": 1e3, "msecond": 1e6, "second": 1e9}.get(unit, 1)
        by[name][0] += 1
        by[name][1] += ns
        total += ns
    print(f"{'kernel':60} {'calls/step':>10} {'us/step':>9} {'us/call':>8} {'share':>6}")
    for name, (cnt, ns) in sorted(by.items(), key=lambda kv: -kv[1][1]):
        print(f"{name[:60]:60} {cnt / steps:10.1f} {ns / steps / 1e3:9.1f} {ns / cnt / 1e3:8.2f} {ns / total:6.1%}")
    k_ms = total / steps / 1e6
    line = f"kernels: {k_ms:.3f} ms per step"
    if wall_ms:
        line += f"; wall {wall_ms:.3f} ms: {wall_ms - k_ms:.3f} ms between kernels or on the host"
    print(line)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--prefill", type=int, default=0, help="profile the evaluation of a prompt of this many tokens")
    ap.add_argument("--kv-type", default="auto", help="decode: the KV cache type (f16, q8_0, q4_0...)")
    ap.add_argument("--summarize")
    ap.add_argument("--wall-ms", type=float)
    a = ap.parse_args()
    if a.summarize:
        summarize(a.summarize, a.steps, a.wall_ms)
    elif a.model and a.prefill:
        run_prefill(a.model, a.profile, a.steps, a.prefill)
    elif a.model:
        run(a.model, a.profile, a.steps, a.ctx, a.kv_type)
    else:
        sys.exit("give a model, or --summarize CSV")
