#!/usr/bin/env python3
"""Throughput and latency of an OpenAI-compatible server under 1, 2, 4, 8 concurrent streams.

    python tools/serve_bench.py --phicpp MODEL.gguf [--llama-server BIN] [-np 8] [-t THREADS]

starts `phicpp serve` (and llama-server with --parallel, when given) on free loopback
ports, then for each concurrency level sends streaming /v1/completions requests (greedy,
a fixed prompt length, max_tokens with ignore_eos, as llama-server's extension) and
reports aggregate completion tokens/s, time to first token and inter-token latency
percentiles. With both servers the engines alternate level by level (same window).
--url URL measures an already running server instead.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc, timeout: float = 120) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url} did not come up")


async def one_request_async(client, url: str, prompt: str, max_tokens: int) -> dict:
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True, "ignore_eos": True,
            "cache_prompt": False}
    t0 = time.perf_counter()
    stamps, tokens = [], 0
    async with client.stream("POST", url + "/v1/completions", json=body, timeout=600) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ev = json.loads(line[6:])
            if ev.get("choices") and ev["choices"][0].get("text"):
                stamps.append(time.perf_counter())
            if ev.get("usage"):
                tokens = ev["usage"]["completion_tokens"]
    tokens = tokens or len(stamps)
    return {"ttft": stamps[0] - t0 if stamps else float("nan"),
            "itl": [b - a for a, b in zip(stamps, stamps[1:])], "tokens": tokens, "t": time.perf_counter() - t0}


def run_level_async(url: str, conc: int, n_req: int, prompt: str, max_tokens: int) -> list:
    """The level's requests from one event loop (lighter on the CPU than a thread per stream)."""
    import asyncio

    async def go():
        sem = asyncio.Semaphore(conc)
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=conc)) as client:
            async def one(i):
                async with sem:
                    try:
                        return await one_request_async(client, url, prompt + f" {i}", max_tokens)
                    except httpx.HTTPError as e:  # counted, and said: a server that drops requests fails here
                        print(f"request {i} to {url} failed: {type(e).__name__}: {e}", file=sys.stderr)
                        return {"ttft": float("nan"), "itl": [], "tokens": 0, "t": 0.0, "failed": True}
            return await asyncio.gather(*(one(i) for i in range(n_req)))
    return asyncio.run(go())


def level(url: str, conc: int, n_req: int, prompt: str, max_tokens: int) -> dict:
    t0 = time.perf_counter()
    res = run_level_async(url, conc, n_req, prompt, max_tokens)
    wall = time.perf_counter() - t0
    itl = sorted(x for r in res for x in r["itl"])
    ttft = sorted(r["ttft"] for r in res if not r.get("failed"))

    def pct(v, p):
        return v[min(len(v) - 1, int(p / 100 * len(v)))] * 1000 if v else float("nan")
    return {"concurrency": conc, "requests": n_req, "failed": sum(1 for r in res if r.get("failed")),
            "tokens": sum(r["tokens"] for r in res), "wall_s": wall,
            "tok_s": sum(r["tokens"] for r in res) / wall, "ttft_p50_ms": pct(ttft, 50), "ttft_p90_ms": pct(ttft, 90),
            "itl_p50_ms": pct(itl, 50), "itl_p90_ms": pct(itl, 90), "itl_p99_ms": pct(itl, 99),
            "itl_mean_ms": statistics.fmean(itl) * 1000 if itl else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phicpp", help="GGUF to serve with phicpp serve")
    ap.add_argument("--llama-server", help="llama-server binary to compare with (same GGUF)")
    ap.add_argument("--url", help="measure this running server instead")
    ap.add_argument("-np", "--parallel", type=int, default=8)
    ap.add_argument("-c", "--ctx-per-seq", type=int, default=512)
    ap.add_argument("-t", "--threads", type=int, default=os.cpu_count())
    ap.add_argument("--levels", default="1,2,4,8")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--requests", type=int, default=0, help="per level (default: 2 x concurrency, at least 4)")
    ap.add_argument("--prompt", default="def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n")
    ap.add_argument("--json", help="write every result here")
    a = ap.parse_args()

    servers, procs = [], []
    try:
        if a.url:
            servers.append(("server", a.url, None))
        if a.phicpp:
            port = free_port()
            p = subprocess.Popen([sys.executable, "-m", "phicpp", "serve", "-m", a.phicpp, "--port", str(port),
                                  "-np", str(a.parallel), "-c", str(a.ctx_per_seq * a.parallel), "-t", str(a.threads),
                                  "--device", "cpu"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            procs.append(p)
            servers.append(("phicpp", f"http://127.0.0.1:{port}", p))
        if a.llama_server:
            port = free_port()
            p = subprocess.Popen([a.llama_server, "-m", a.phicpp, "--port", str(port), "--parallel", str(a.parallel),
                                  "-c", str(a.ctx_per_seq * a.parallel), "-t", str(a.threads), "--no-webui"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            procs.append(p)
            servers.append(("llama-server", f"http://127.0.0.1:{port}", p))
        for _, url, p in servers:
            wait_up(url, p)
            run_level_async(url, 1, 1, a.prompt, 8)  # warm up
        rows = []
        for conc in (int(x) for x in a.levels.split(",")):
            for name, url, _ in servers:
                n = a.requests or max(4, 2 * conc)
                r = {"engine": name, **level(url, conc, n, a.prompt, a.max_tokens)}
                rows.append(r)
                print(f"{name:13s} c={conc}: {r['tok_s']:8.1f} tok/s ({r['failed']} failed)  TTFT p50/p90 {r['ttft_p50_ms']:.0f}/"
                      f"{r['ttft_p90_ms']:.0f} ms  ITL p50/p90/p99 {r['itl_p50_ms']:.1f}/{r['itl_p90_ms']:.1f}/"
                      f"{r['itl_p99_ms']:.1f} ms", flush=True)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(rows, f, indent=1)
        print("\n| engine | streams | tok/s | x one stream | TTFT p50 / p90 ms | ITL p50 / p90 / p99 ms |")
        print("|---|---:|---:|---:|---|---|")
        for name, _, _ in servers:
            base = next(r["tok_s"] for r in rows if r["engine"] == name)
            for r in (r for r in rows if r["engine"] == name):
                print(f"| {name} | {r['concurrency']} | {r['tok_s']:.1f} | {r['tok_s'] / base:.2f} | "
                      f"{r['ttft_p50_ms']:.0f} / {r['ttft_p90_ms']:.0f} | {r['itl_p50_ms']:.1f} / "
                      f"{r['itl_p90_ms']:.1f} / {r['itl_p99_ms']:.1f} |")
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
