#!/usr/bin/env python3
"""pass@1 of a code model on short function-writing tasks (tools/code_tasks.py).

For each task the model continues the prompt (a signature and a docstring, without its
last newline: code_tasks.Task.stem says why) greedily; the completion is cut where the
function ends (the first line back at column 0), and stem + completion + the task's
asserts run in a fresh `python -I` with a time and memory limit. A task passes when that
process exits 0. pass@1 = passed / tasks, given for each of code_tasks.py's sets: "taught"
(skills the bundled model's exercises teach under other names) and "held-out" (skills no
exercise teaches: the figure for generalisation).

    PYTHONPATH=build/dev/py python tools/eval_code.py                  # the shipped model
    PYTHONPATH=build/dev/py python tools/eval_code.py -m model.gguf --show --json out.json
    PYTHONPATH=build/dev/py python tools/eval_code.py --set held-out

With --corpus TRAIN.txt it also says which tasks' function names are defined in the
training text (`def name(`), and gives pass@1 on the tasks whose names are not: those
the model cannot have seen under their own name.

Only code the model wrote runs, each task in its own process, with a CPU-time and an
address-space limit and a wall-clock timeout; still, run it on models you trust as much
as any other code you execute.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from code_tasks import GRID_CELL_TASKS, TASK_SETS, TASKS, Task  # noqa: E402

# Generation stops here (a new top-level statement); the cut below is the rule itself.
STOPS = ["\ndef ", "\nclass ", "\nif ", "\nprint(", "\n#", "\n@", "\nimport ", "\nfrom ", "\nassert "]


def function_body(completion: str) -> str:
    """The completion up to the first non-empty line that starts at column 0."""
    lines = completion.split("\n")
    kept = [lines[0]]  # the rest of the docstring's last line (usually empty)
    for line in lines[1:]:
        if line.strip() and not line[0].isspace():
            break
        kept.append(line)
    return "\n".join(kept).rstrip() + "\n"


def _limits(cpu_s: int, mem_bytes: int) -> Callable[[], None]:
    def apply() -> None:
        import resource
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
        resource.setrlimit(resource.RLIMIT_AS, (mem_bytes, mem_bytes))
        os.setsid()
    return apply


def run_task(task: Task, body: str, timeout_s: float = 5.0) -> tuple[bool, str]:
    """Run the task's stem + body (what followed the stem) + tests in a fresh interpreter:
    (passed, last line of stderr)."""
    source = task.stem + body + "\n\n" + task.tests
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "task.py"
        path.write_text(source, encoding="utf-8")
        # the task is plain Python: no preloaded libraries (a sanitizer runtime preloaded into the
        # test run cannot reserve its shadow memory under the address-space limit)
        env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
        try:
            proc = subprocess.run([sys.executable, "-I", str(path)], cwd=d, capture_output=True, text=True, env=env,
                                  timeout=timeout_s, preexec_fn=_limits(int(timeout_s) + 1, 1 << 30))
        except subprocess.TimeoutExpired:
            return False, f"timed out after {timeout_s:g} s"
    err = proc.stderr.strip().splitlines()
    return proc.returncode == 0, (err[-1] if err else "")


def evaluate(complete: Callable[[str], str], tasks: Iterable[Task] = TASKS, timeout_s: float = 5.0) -> list[dict]:
    """complete(text) -> the model's continuation of a task's stem (Task.stem says why not
    the prompt); one result dict per task."""
    results = []
    for task in tasks:
        t0 = time.perf_counter()
        completion = complete(task.stem)
        body = function_body(completion)
        passed, error = run_task(task, body, timeout_s)
        results.append({"task": task.name, "passed": passed, "error": error, "completion": body,
                        "seconds": round(time.perf_counter() - t0, 3)})
    return results


def names_in_corpus(corpus: Path, tasks: Iterable[Task]) -> dict[str, int]:
    """How often each task's function is defined (`def name(`) in a training text."""
    import re
    from collections import Counter
    text = corpus.read_text(encoding="utf-8", errors="replace")
    # one pass over the text (a pattern per task took minutes over a 230 MB corpus)
    defined = Counter(re.findall(r"\bdef (\w+)\(", text))
    return {t.name: defined[t.name] for t in tasks}


def model_completer(path: str, max_tokens: int, threads: int) -> Callable[[str], str]:
    import phicpp
    model = phicpp.Model(path, n_ctx=1024, n_threads=threads)

    def complete(prompt: str) -> str:
        model.reset()
        return model.generate(prompt, max_tokens=max_tokens, temperature=0.0, stop=STOPS, stream=False)
    return complete


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", help="GGUF file (default: the model shipped with phicpp)")
    ap.add_argument("-n", "--max-tokens", type=int, default=192, help="tokens per completion (default 192)")
    ap.add_argument("-t", "--threads", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds per task's tests (default 5)")
    ap.add_argument("--set", choices=["all", *TASK_SETS], default="all", help="which tasks (default: all sets)")
    ap.add_argument("--task", action="append", help="run only these tasks (repeatable)")
    ap.add_argument("--show", action="store_true", help="print every completion")
    ap.add_argument("--json", help="write the per-task results here")
    ap.add_argument("--corpus", type=Path, help="training text: report which task names it defines")
    args = ap.parse_args()

    path = args.model
    if path is None:
        from phicpp.models import default_model_path
        path = str(default_model_path())
    sets = {k: v for k, v in TASK_SETS.items() if args.set in ("all", k)}
    set_of = {t.name: k for k, v in sets.items() for t in v}
    tasks = [t for v in sets.values() for t in v if not args.task or t.name in args.task]
    if not tasks:
        ap.error(f"no such task; the tasks are: {', '.join(set_of)}")
    results = evaluate(model_completer(path, args.max_tokens, args.threads), tasks, args.timeout)
    for r in results:
        r["set"] = set_of[r["task"]]
        print(f"{'PASS' if r['passed'] else 'fail'}  {r['task']:<24} {r['error'][:80]}")
        if args.show:
            print("    | " + r["completion"].rstrip().replace("\n", "\n    | "))
    # each set, then the held-out set's two parts (code_tasks.GRID_CELL_TASKS and the others)
    groups = {k: [r for r in results if r["set"] == k] for k in sets}
    groups["held-out: grid cells"] = [r for r in groups.get("held-out", []) if r["task"] in GRID_CELL_TASKS]
    groups["held-out: other"] = [r for r in groups.get("held-out", []) if r["task"] not in GRID_CELL_TASKS]
    by_set = {}
    for k, rs in groups.items():
        if rs:
            by_set[k] = {"passed": sum(r["passed"] for r in rs), "tasks": len(rs)}
            print(f"pass@1 {k:<9} {by_set[k]['passed']}/{len(rs)} = {by_set[k]['passed'] / len(rs):.3f}")
    passed = sum(r["passed"] for r in results)
    print(f"pass@1 {passed}/{len(results)} = {passed / len(results):.3f}  ({Path(path).name}, greedy, "
          f"{args.max_tokens} tokens at most)")
    if args.corpus:
        seen = names_in_corpus(args.corpus, tasks)
        for r in results:
            r["defined_in_corpus"] = seen[r["task"]]
        unseen = [r for r in results if not r["defined_in_corpus"]]
        print(f"defined in {args.corpus.name}: {', '.join(f'{n} ({c})' for n, c in seen.items() if c) or 'none'}")
        if unseen:
            print(f"pass@1 on the {len(unseen)} tasks whose names it does not define: "
                  f"{sum(r['passed'] for r in unseen)}/{len(unseen)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": str(path), "max_tokens": args.max_tokens, "passed": passed,
                                               "tasks": len(results), "by_set": by_set,
                                               "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
