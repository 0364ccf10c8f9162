"""Benchmark the CPU matmul kernels at Phi-3-mini shapes.

Through the op-test harness (a CPU backend of the ISA; Q4_0 weights are
repacked on every call, as the backend does at load). Decode (n=1) is reported in GB/s of weight streamed (memory-bound), prefill
(n tokens) in GFLOP/s. Usage:
  PYTHONPATH=$(tools/devbuild.sh quant) python tools/bench_matmul.py [--types f16,q4_K] [--threads 2]
"""
import argparse
import time

import numpy as np

from phicpp import _core as C

SHAPES = {  # name: (rows = output dim, K = input dim)
    "qkv": (9216, 3072),
    "gate_up": (16384, 3072),
    "down": (3072, 8192),
    "cached": (1024, 3072),  # ~1.7 MB at 4.5 bits: in cache, the kernel's own speed
}


def make_weight(typ, rows, K, rng):
    w = (rng.standard_normal((rows, K)) * 0.02).astype(np.float32)
    if typ == "f32":
        return w.view(np.uint8).reshape(rows, -1)
    if typ == "f16":
        return w.astype(np.float16).view(np.uint8).reshape(rows, -1)
    # quantize in slabs to bound memory
    return np.concatenate([C.quantize(w[i:i + 2048], typ, n_threads=2) for i in range(0, rows, 2048)])


def bench(fn, min_time):
    fn()  # warm-up
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= min_time and n >= 2:
            return dt / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--types", default="f32,f16,bf16,q8_0,q4_0,q4_K,q6_K,q5_K")
    ap.add_argument("--shapes", default="qkv,gate_up,down")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prefill", type=int, default=64, help="tokens for the prefill case (0: skip)")
    ap.add_argument("--isa", default=None)
    ap.add_argument("--min-time", type=float, default=0.5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    supported = set(C.matmul_types())
    be = C.Backend("cpu", isa=args.isa or "auto", n_threads=args.threads)
    print(f"isa={be.variant} threads={args.threads}")
    print(f"{'type':6} {'shape':8} {'MB':>7} {'decode ms':>10} {'GB/s':>7} {'prefill ms':>11} {'GFLOP/s':>8}")
    for typ in args.types.split(","):
        if typ not in supported:
            print(f"{typ:6} (no kernel)")
            continue
        for name in args.shapes.split(","):
            rows, K = SHAPES[name]
            w = make_weight(typ, rows, K, rng)
            x1 = rng.standard_normal((1, K)).astype(np.float32)
            t = bench(lambda: be.matmul(w, typ, (rows, K), x1), args.min_time)
            line = f"{typ:6} {name:8} {w.nbytes / 1e6:7.1f} {t * 1e3:10.3f} {w.nbytes / t / 1e9:7.2f}"
            if args.prefill:
                xn = rng.standard_normal((args.prefill, K)).astype(np.float32)
                tp = bench(lambda: be.matmul(w, typ, (rows, K), xn),
                           args.min_time)
                line += f" {tp * 1e3:11.2f} {2 * rows * K * args.prefill / tp / 1e9:8.1f}"
            print(line, flush=True)
            del w


if __name__ == "__main__":
    main()
