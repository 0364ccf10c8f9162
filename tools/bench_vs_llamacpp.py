#!/usr/bin/env python3
"""Side-by-side speed of phicpp and llama.cpp on the same GGUF files.

For each file, runs llama-bench and phicpp's benchmark alternately, ROUNDS
times, in the same time window: the shared dev machine's speed drifts with
host load (memory bandwidth flips between ~40 and ~75 GB/s), so numbers taken
minutes apart are not comparable, and alternating cancels most of the drift.
Reports medians over all repetitions, ratios (phicpp / llama.cpp; > 1 means
phicpp is faster), and decode's effective bandwidth (bytes a token reads x
tokens/s: the file's bytes, or for a MoE file those of everything but the
experts plus n_expert_used / n_expert of the experts') against the
streaming-read bandwidth measured by tools/membw.c in the same rounds.

What is measured matches llama-bench exactly:
  pp{P}: P random tokens as one batch from an empty cache (logits of the last
         token only), tokens/s = P / time.
  tg{N}: N single-token decode steps from an empty cache, logits every step,
         tokens/s = N / time.
Each side gets one untimed warm-up first (llama-bench does the same).

usage:
  tools/bench_vs_llamacpp.py FILE.gguf [FILE.gguf ...] [-p 128] [-n 32] [-t 2]
      [-r 3] [--rounds 3] [--llama-bench PATH] [--side both|llamacpp|phicpp]
      [--json raw.json]
The markdown table goes to stdout (progress to stderr), ready for
docs/BENCHMARKS.md.

The phicpp side is `python -m phicpp bench ... -o json` (a fresh process per
round, as llama-bench is), found through the caller's PYTHONPATH:
  PYTHONPATH=$(tools/devbuild.sh NAME) tools/bench_vs_llamacpp.py FILES...
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SCRATCH = Path(os.environ.get("PHICPP_SCRATCH", "/work/scratch"))


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- llama.cpp

def llamacpp_side(llama_bench: str, model: str, n_prompt: int, n_gen: int,
                  threads: int, reps: int) -> dict:
    """Run llama-bench once (pp and tg tests, `reps` repetitions each)."""
    cmd = [llama_bench, "-m", model, "-t", str(threads), "-p", str(n_prompt),
           "-n", str(n_gen), "-r", str(reps), "-o", "json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    res = {**parse_bench_json(out), "cmd": " ".join(cmd)}
    for t in json.loads(out):
        res["build_commit"] = t.get("build_commit")
        res["cpu_info"] = t.get("cpu_info")
        res["model_type"] = t.get("model_type")
        res["model_size"] = t.get("model_size")
    return res


# ------------------------------------------------------------------- phicpp

def parse_bench_json(text: str) -> dict:
    """pp/tg tokens/s samples from llama-bench's JSON; `phicpp bench -o json`
    writes the same fields (n_prompt, n_gen, samples_ts)."""
    res = {"pp": [], "tg": []}
    for t in json.loads(text):
        key = "pp" if t["n_prompt"] > 0 and t["n_gen"] == 0 else "tg"
        res[key] += [float(x) for x in t["samples_ts"]]
    return res


def phicpp_side(model: str, n_prompt: int, n_gen: int, threads: int, reps: int) -> dict:
    """`python -m phicpp bench` in a fresh process (as llama-bench is), with
    the caller's PYTHONPATH (e.g. PYTHONPATH=$(tools/devbuild.sh NAME))."""
    cmd = [sys.executable, "-m", "phicpp", "bench", "-m", model, "-t", str(threads),
           "-p", str(n_prompt), "-n", str(n_gen), "-r", str(reps), "-o", "json"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"phicpp side failed ({' '.join(cmd)}):\n{p.stderr[-3000:]}")
    return parse_bench_json(p.stdout)


# ------------------------------------------------------------ memory bandwidth

def build_membw(scratch: Path) -> str | None:
    exe = scratch / "bin" / "membw"
    src = REPO / "tools" / "membw.c"
    if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
        exe.parent.mkdir(parents=True, exist_ok=True)
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            return None
        subprocess.run([cc, "-O2", "-march=native", "-pthread", str(src), "-o", str(exe)], check=True)
    return str(exe)


def membw_samples(exe: str, threads: int, runs: int = 5) -> tuple[list[float], list[float]]:
    """(GB/s per run, CPU share % per run); a share well below 100 means the
    threads were descheduled and the GB/s says more about the host's load."""
    out = subprocess.run([exe, str(threads), "1024", str(runs)], check=True,
                         capture_output=True, text=True).stdout
    runs_ = re.findall(r"^run\s+\d+:\s+([\d.]+) GB/s.*cpu\s+(\d+)%", out, re.M)
    return [float(g) for g, _ in runs_], [float(c) for _, c in runs_]


def bytes_per_token(model: str) -> int:
    """The bytes of tensor data a decode step reads: all of a dense file's; of a MoE
    file, the experts' stacked tensors (*_exps) count n_expert_used / n_expert."""
    from gguf import GGUFReader

    r = GGUFReader(model)
    arch = r.fields["general.architecture"].contents()
    total = sum(int(t.n_bytes) for t in r.tensors)
    if f"{arch}.expert_count" not in r.fields:
        return total
    share = r.fields[f"{arch}.expert_used_count"].contents() / r.fields[f"{arch}.expert_count"].contents()
    experts = sum(int(t.n_bytes) for t in r.tensors if "_exps." in t.name)
    return int(total - experts * (1 - share))


# ------------------------------------------------------------------ report

def machine() -> str:
    model = platform.processor() or "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        m = re.search(r"^Model name:\s*(.+)$", out, re.M)
        model = m.group(1).strip() if m else model
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs"


def med(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def fmt(x: float | None, nd: int = 2) -> str:
    return "—" if x is None else f"{x:.{nd}f}"


def ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or b is None or b == 0 else f"{a / b:.2f}"


def table(rows: list[dict], n_prompt: int, n_gen: int) -> str:
    pp, tg = f"pp{n_prompt}", f"tg{n_gen}"
    head = (f"| model | file GB | read per token GB | llama.cpp {pp} t/s | phicpp {pp} t/s | {pp} ratio "
            f"| llama.cpp {tg} t/s | phicpp {tg} t/s | {tg} ratio "
            f"| {tg} eff. GB/s llama.cpp / phicpp | membw GB/s (med) |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        gb = r["bytes"] / 1e9
        lpp, ppp = med(r["llamacpp"]["pp"]), med(r["phicpp"]["pp"])
        ltg, ptg = med(r["llamacpp"]["tg"]), med(r["phicpp"]["tg"])
        active = r["active_bytes"] / 1e9
        eff = lambda t: None if t is None else active * t  # noqa: E731
        bw = med(r["membw"])
        lines.append(
            f"| {r['name']} | {gb:.2f} | {active:.2f} | {fmt(lpp)} | {fmt(ppp)} | {ratio(ppp, lpp)} "
            f"| {fmt(ltg)} | {fmt(ptg)} | {ratio(ptg, ltg)} "
            f"| {fmt(eff(ltg), 1)} / {fmt(eff(ptg), 1)} | {fmt(bw, 1)} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("-p", "--n-prompt", type=int, default=128)
    ap.add_argument("-n", "--n-gen", type=int, default=32)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-r", "--reps", type=int, default=3, help="repetitions per run (llama-bench -r)")
    ap.add_argument("--rounds", type=int, default=3, help="alternations of the two sides per file")
    ap.add_argument("--side", choices=["both", "llamacpp", "phicpp"], default="both")
    ap.add_argument("--llama-bench", default=str(DEFAULT_SCRATCH / "bin" / "llama-bench"))
    ap.add_argument("--no-membw", action="store_true", help="skip the bandwidth runs")
    ap.add_argument("--json", help="also write every raw sample here")
    a = ap.parse_args()

    membw = None if a.no_membw else build_membw(DEFAULT_SCRATCH)
    started = datetime.datetime.now(datetime.timezone.utc)
    rows, commit = [], None
    for model in a.models:
        row = {"name": Path(model).name, "bytes": os.path.getsize(model), "active_bytes": bytes_per_token(model),
               "llamacpp": {"pp": [], "tg": []}, "phicpp": {"pp": [], "tg": []},
               "membw": [], "membw_cpu": [], "load": []}
        for rnd in range(a.rounds):
            # swap the order every round so neither side always runs first
            order = ["llamacpp", "phicpp"] if rnd % 2 == 0 else ["phicpp", "llamacpp"]
            for side in order:
                if a.side not in ("both", side):
                    continue
                row["load"].append(os.getloadavg()[0])
                log(f"[{row['name']}] round {rnd + 1}/{a.rounds}: {side} (load {row['load'][-1]:.1f})")
                # one failing file or side must not lose the whole table
                try:
                    if side == "llamacpp":
                        r = llamacpp_side(a.llama_bench, model, a.n_prompt, a.n_gen, a.threads, a.reps)
                        commit = r.get("build_commit")
                    else:
                        r = phicpp_side(model, a.n_prompt, a.n_gen, a.threads, a.reps)
                except (subprocess.CalledProcessError, RuntimeError, ValueError) as e:
                    log(f"    FAILED: {e}")
                    continue
                row[side]["pp"] += r["pp"]
                row[side]["tg"] += r["tg"]
                log(f"    pp {fmt(med(r['pp']))} t/s   tg {fmt(med(r['tg']))} t/s")
            if membw:
                gbs, cpu = membw_samples(membw, a.threads)
                row["membw"] += gbs
                row["membw_cpu"] += cpu
                log(f"    membw {fmt(med(gbs), 1)} GB/s at {fmt(med(cpu), 0)}% CPU")
        rows.append(row)

    print(f"machine: {machine()}; date: {started:%Y-%m-%d %H:%M} UTC; "
          f"llama.cpp build {commit or '?'}; threads {a.threads}, "
          f"{a.rounds} rounds x {a.reps} reps per side, medians")
    print(f"command: tools/bench_vs_llamacpp.py {' '.join(sys.argv[1:])}")
    loads = [x for r in rows for x in r["load"]]
    cpus = [x for r in rows for x in r["membw_cpu"]]
    print(f"host load (1-min loadavg at each run): {min(loads):.1f}-{max(loads):.1f}"
          + (f"; membw threads got {min(cpus):.0f}-{max(cpus):.0f}% of their CPUs" if cpus else "")
          + (" -- CONTENDED, numbers unreliable" if max(loads) > 1.5 * (os.cpu_count() or 1) else ""))
    print()
    print(table(rows, a.n_prompt, a.n_gen))
    if a.json:
        Path(a.json).write_text(json.dumps({"started": started.isoformat(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
