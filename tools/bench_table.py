"""The table of tools/gpu_bench.sh: per file, the median over rounds of each
engine's mean t/s for each test (tg128, pp512, pp4096, ...), their ratio,
and the share of the GPU's peak memory bandwidth decode reaches (the bytes a
token reads x tokens/s).

    python tools/bench_table.py bench.jsonl [--peak-tbs 4.8] [--sizes MODELS_DIR]

A token reads every tensor, except in a mixture of experts: there only
expert_used_count of expert_count experts' rows (`*_exps` tensors). With
--sizes, the GGUF files FILE.gguf found there give those bytes; without it
(or a file it cannot read) the share is of all tensor bytes.
"""
from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

ORDER = ["phi3-f16", "phi3-q8_0", "phi3-q4_k_m", "phi3-q4_0", "phi2-f16", "phi2-q8_0", "phi2-q4_k_m", "phi2-q4_0"]


def token_bytes(path: Path) -> int | None:
    """Bytes of the tensors a decode token reads from a GGUF file (experts: the used share)."""
    try:
        import gguf

        r = gguf.GGUFReader(str(path))
    except Exception:  # (no gguf package, or not a GGUF file: the caller falls back)
        return None
    arch = r.fields.get("general.architecture")
    name = bytes(arch.parts[arch.data[0]]).decode() if arch else ""

    def key(k: str) -> int | None:
        f = r.fields.get(f"{name}.{k}")
        return int(f.parts[f.data[0]][0]) if f else None

    n_exp, n_used = key("expert_count"), key("expert_used_count")
    share = n_used / n_exp if n_exp and n_used else 1.0
    return int(sum(t.n_bytes * (share if "_exps" in t.name else 1.0) for t in r.tensors))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("jsonl")
    ap.add_argument("--peak-tbs", type=float, default=4.8, help="peak memory bandwidth, TB/s (H200: 4.8)")
    ap.add_argument("--sizes", help="folder of the FILE.gguf files: the bytes a token reads (MoE: its experts only)")
    a = ap.parse_args()
    ts = defaultdict(list)
    size = {}
    for line in open(a.jsonl, encoding="utf-8"):
        if not line.strip():
            continue
        r = json.loads(line)
        test = f"pp{r['n_prompt']}" if r.get("n_prompt") and not r.get("n_gen") else f"tg{r.get('n_gen')}"
        ts[r["file"], r["engine"], test].append(float(r["avg_ts"]))
        if r["engine"] == "phicpp":
            size[r["file"]] = int(r["model_size"])
    med = {k: statistics.median(v) for k, v in ts.items()}
    read = dict(size)  # bytes a decode token reads
    if a.sizes:
        for f in size:
            b = token_bytes(Path(a.sizes) / f"{f}.gguf")
            if b:
                read[f] = b
    tests = sorted({k[2] for k in ts}, key=lambda t: (t[:2] != "tg", int(t[2:] or 0)))  # tg first, then pp by length
    head = "| file | size GB |"
    rule = "|---|---:|"
    for t in tests:
        head += f" {t} phicpp | {t} llama.cpp | ratio |" + (" HBM share (phicpp / llama.cpp) |" if t.startswith("tg") else "")
        rule += "---:|---:|---:|" + ("---:|" if t.startswith("tg") else "")
    print(head)
    print(rule)
    files = [f for f in ORDER if f in size] + sorted(f for f in size if f not in ORDER)

    def fmt(v, d=0):
        return f"{v:.{d}f}" if v is not None else "-"

    def ratio(x, y):
        return f"{x / y:.2f}" if x and y else "-"

    for f in files:
        def share(v):
            return f"{100 * read[f] * v / (a.peak_tbs * 1e12):.0f}%" if v else "-"

        row = f"| {f} | {size[f] / 1e9:.2f} |"
        for t in tests:
            p, l = med.get((f, "phicpp", t)), med.get((f, "llama.cpp", t))
            row += f" {fmt(p)} | {fmt(l)} | {ratio(p, l)} |" + (f" {share(p)} / {share(l)} |" if t.startswith("tg") else "")
        print(row)
    n = max((len(v) for v in ts.values()), default=0)
    print(f"\nmedian of {n} round(s) of each engine's mean over 3 repetitions; HBM share = bytes a token reads "
          f"(all tensor bytes; a mixture of experts' used experts only) x t/s / {a.peak_tbs} TB/s")


if __name__ == "__main__":
    main()
