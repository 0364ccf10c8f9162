"""tools/eval_code.py: its tasks tell right bodies from wrong ones, and its harness cuts
and runs completions as documented."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import eval_code  # noqa: E402
from code_tasks import HELDOUT_TASKS, TASK_SETS, TASKS  # noqa: E402

ALL_TASKS = [t for tasks in TASK_SETS.values() for t in tasks]


def test_enough_distinct_tasks():
    assert len(TASKS) >= 20 and len(HELDOUT_TASKS) >= 20
    names = [t.name for t in ALL_TASKS]
    assert len(set(names)) == len(names)  # distinct across the sets too
    for t in ALL_TASKS:
        compile(t.prompt + t.solution, t.name, "exec")  # the prompt is a function head
        assert f"def {t.name}(" in t.prompt, t.name


def test_every_reference_body_passes():
    results = eval_code.evaluate(lambda stem: next("\n" + t.solution for t in ALL_TASKS if t.stem == stem),
                                 ALL_TASKS)
    failed = [(r["task"], r["error"]) for r in results if not r["passed"]]
    assert not failed


@pytest.mark.parametrize("wrong", ["    return None\n", "    pass\n", "    return 0\n"])
def test_wrong_bodies_fail(wrong):
    passed = [r["task"] for r in eval_code.evaluate(lambda stem: "\n" + wrong, ALL_TASKS) if r["passed"]]
    assert not passed


def test_the_completion_ends_with_the_function():
    text = "\n    return a + b\n\n\nprint(add(1, 2))\nimport os\n"
    assert eval_code.function_body(text) == "\n    return a + b\n"
    # blank lines and nested blocks stay; a decorator or a comment at column 0 ends it
    text = "\n    if a:\n\n        return 1\n    return 2\n# done\n"
    assert eval_code.function_body(text) == "\n    if a:\n\n        return 1\n    return 2\n"


def test_the_model_continues_the_prompt_without_its_last_newline():
    """A bare final newline is a token boundary that code tokenizers (newline merged with
    the indentation after it) only train on before column 0: the model would end the
    function there."""
    seen = []
    eval_code.evaluate(lambda stem: seen.append(stem) or "\n    return 0\n", TASKS[:2])
    assert seen == [t.prompt[:-1] for t in TASKS[:2]]
    assert all(s.endswith('"""') for s in seen)


def test_a_looping_completion_times_out_and_fails():
    task = TASKS[0]
    passed, error = eval_code.run_task(task, "\n    while True:\n        pass\n", timeout_s=1.0)
    assert not passed and "timed out" in error


def test_the_shipped_model_runs_through_the_harness():
    """The harness drives the real engine (greedy, cut, run); the score is the model card's business."""
    from phicpp.models import default_model_path
    complete = eval_code.model_completer(str(default_model_path()), max_tokens=24, threads=0)
    results = eval_code.evaluate(complete, TASKS[:3])
    assert [r["task"] for r in results] == [t.name for t in TASKS[:3]]
    assert all(r["completion"] and isinstance(r["passed"], bool) for r in results)


def test_names_in_corpus_counts_definitions_only(tmp_path):
    corpus = tmp_path / "train.txt"
    corpus.write_text("def add(a, b):\n    return a + b\nx = add(1, 2)\ndef add_all(xs): pass\n"
                      "class A:\n    def fizzbuzz(self): pass\n")
    seen = eval_code.names_in_corpus(corpus, TASKS)
    assert seen["add"] == 1 and seen["fizzbuzz"] == 1 and seen["fibonacci"] == 0
