"""The table of tools/gpu_bench.sh: per file, the median over rounds of each
engine's mean t/s for pp512 and tg128, their ratio, and the share of the
GPU's peak memory bandwidth decode reaches (tensor bytes x tokens/s).

    python tools/bench_table.py bench.jsonl [--peak-tbs 4.8]
"""
from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict

ORDER = ["phi3-f16", "phi3-q8_0", "phi3-q4_k_m", "phi3-q4_0", "phi2-f16", "phi2-q8_0", "phi2-q4_k_m", "phi2-q4_0"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("jsonl")
    ap.add_argument("--peak-tbs", type=float, default=4.8, help="peak memory bandwidth, TB/s (H200: 4.8)")
    ap.add_argument("--sizes", help="(unused: sizes come from the results)")
    a = ap.parse_args()
    ts = defaultdict(list)
    size = {}
    for line in open(a.jsonl, encoding="utf-8"):
        if not line.strip():
            continue
        r = json.loads(line)
        test = "pp" if r.get("n_prompt") and not r.get("n_gen") else "tg"
        ts[r["file"], r["engine"], test].append(float(r["avg_ts"]))
        if r["engine"] == "phicpp":
            size[r["file"]] = int(r["model_size"])
    med = {k: statistics.median(v) for k, v in ts.items()}
    print(f"| file | size GB | tg128 phicpp | tg128 llama.cpp | ratio | HBM share (phicpp / llama.cpp) "
          f"| pp512 phicpp | pp512 llama.cpp | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    files = [f for f in ORDER if f in size] + sorted(f for f in size if f not in ORDER)
    for f in files:
        gb = size[f] / 1e9
        tg_p, tg_l = med.get((f, "phicpp", "tg")), med.get((f, "llama.cpp", "tg"))
        pp_p, pp_l = med.get((f, "phicpp", "pp")), med.get((f, "llama.cpp", "pp"))

        def fmt(v, d=0):
            return f"{v:.{d}f}" if v is not None else "-"

        def ratio(x, y):
            return f"{x / y:.2f}" if x and y else "-"

        def share(v):
            return f"{100 * size[f] * v / (a.peak_tbs * 1e12):.0f}%" if v else "-"

        print(f"| {f} | {gb:.2f} | {fmt(tg_p)} | {fmt(tg_l)} | {ratio(tg_p, tg_l)} | {share(tg_p)} / {share(tg_l)} "
              f"| {fmt(pp_p)} | {fmt(pp_l)} | {ratio(pp_p, pp_l)} |")
    n = max((len(v) for v in ts.values()), default=0)
    print(f"\nmedian of {n} round(s) of each engine's mean over 3 repetitions; HBM share = tensor bytes x t/s "
          f"/ {a.peak_tbs} TB/s")


if __name__ == "__main__":
    main()
