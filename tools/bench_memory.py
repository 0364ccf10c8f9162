#!/usr/bin/env python3
"""Resident memory of a loaded model against its budget.

    python tools/bench_memory.py MODEL.gguf [--n-ctx 4096] [--threads 2]

Budget (issue 3): file size + KV cache + 100 MiB. Prints VmRSS after
loading, and after a first 128-token prefill (which maps every weight in),
with the budget, as one markdown row for docs/BENCHMARKS.md.
"""
import argparse
import os

import numpy as np

import phicpp

MiB = 1 << 20


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--n-ctx", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    base = rss_bytes()  # the interpreter, numpy and the extension
    m = phicpp.Model(a.model, n_ctx=a.n_ctx, n_threads=a.threads)
    loaded = rss_bytes() - base
    m.eval(np.arange(1, 129, dtype=np.int32) % m.n_vocab)
    after = rss_bytes() - base
    size = os.path.getsize(a.model)
    budget = size + m.kv_cache_bytes + 100 * MiB
    print(f"| {os.path.basename(a.model)} | {size / MiB:.0f} | {m.kv_cache_bytes / MiB:.0f} | "
          f"{loaded / MiB:.0f} | {after / MiB:.0f} | {budget / MiB:.0f} | "
          f"{'ok' if after <= budget else 'OVER'} |")


if __name__ == "__main__":
    main()
