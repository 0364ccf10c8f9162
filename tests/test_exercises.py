"""tools/make_exercises.py: every synthetic exercise is correct code, none repeats a prompt
of the evaluation (tools/code_tasks.py), and none teaches a held-out task's skill."""
from __future__ import annotations

import ast
import copy
import itertools
import random
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import code_tasks  # noqa: E402
import make_exercises as ex  # noqa: E402


def _define(source: str, name: str):
    scope: dict = {}
    exec(compile(source, f"<{name}>", "exec"), scope)  # noqa: S102 (our own generated code)
    return scope[name]


@pytest.mark.parametrize("fi", range(len(ex.FAMILIES)))
def test_every_body_agrees_with_the_reference(fi):
    """Each name x argument names x body of a family, on each of its examples."""
    fam = ex.FAMILIES[fi]
    assert len(fam.examples) >= 2 and fam.names and fam.docs and fam.bodies
    for name, args, body in itertools.product(fam.names, fam.args, fam.bodies):
        text = ex.render(fam, name, args, fam.docs[0], body, random.Random(0), asserts=False)
        tree = ast.parse(text)
        fn_name = tree.body[0].name
        fn = _define(text, fn_name)
        for example in fam.examples:
            want = fam.ref(*copy.deepcopy(example))
            got = fn(*copy.deepcopy(example))
            assert got == want and type(got) is type(want), (text, example, got, want)


def test_rendered_exercises_run_and_are_reproducible():
    docs = ex.exercises(4000, seed=7)
    assert docs == ex.exercises(4000, seed=7)
    assert docs != ex.exercises(4000, seed=8)
    with_asserts = 0
    for text in docs:
        tree = ast.parse(text)
        assert isinstance(tree.body[0], ast.FunctionDef) and ast.get_docstring(tree.body[0])
        exec(compile(text, "<exercise>", "exec"), {})  # its asserts hold  # noqa: S102
        with_asserts += "\nassert " in text
    assert 0.5 < with_asserts / len(docs) < 0.9
    # every family shows up under several surfaces
    assert len({t.split("(")[0] for t in docs}) > 2 * len(ex.FAMILIES)


def test_no_exercise_repeats_an_evaluation_prompt():
    """The evaluation's skills overlap with a first course's; its wording must not appear:
    no signature-and-docstring of any family equals a task's prompt, and no docstring
    equals a task's."""
    tasks = code_tasks.TASKS + code_tasks.HELDOUT_TASKS
    prompts = {t.prompt for t in tasks}
    task_docs = {ast.get_docstring(ast.parse(t.prompt + "    pass\n").body[-1]) for t in tasks}
    for fam in ex.FAMILIES:
        for name, args, doc in itertools.product(fam.names, fam.args, fam.docs):
            text = ex.render(fam, name, args, doc, fam.bodies[0], random.Random(0), asserts=False)
            header = text[:text.index('"""', text.index('"""') + 3) + 4]
            assert header not in prompts, header
            assert ex._fmt(doc, args) not in task_docs, doc


def test_no_family_is_named_like_an_evaluation_task():
    """A skill may be taught, but under other names: pass@1 then measures whether the model
    writes a function from its name and docstring, not whether it recalls an exercise."""
    task_names = {t.name for t in code_tasks.TASKS + code_tasks.HELDOUT_TASKS}
    for fam in ex.FAMILIES:
        assert not task_names & set(fam.names), fam.names


def _arity(task) -> int:
    fn = next(n for n in ast.parse(task.prompt + "    pass\n").body if isinstance(n, ast.FunctionDef))
    return len(fn.args.args)


def _passes_with(task, ref) -> bool:
    """Whether task's asserts hold with ref standing in for its function (at most 0.2 s:
    a reference may loop on arguments outside its family's domain)."""
    scope = {"math": __import__("math"), task.name: lambda *a: ref(*copy.deepcopy(a))}

    def give_up(*_):
        raise TimeoutError

    old = signal.signal(signal.SIGALRM, give_up)
    signal.setitimer(signal.ITIMER_REAL, 0.2)
    try:
        exec(compile(task.tests, f"<{task.name}>", "exec"), scope)  # noqa: S102 (our own asserts)
        return True
    except BaseException:  # a failed assert, a type error, a time-out: not the task's function
        return False
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _twins(task, families) -> list[str]:
    """The families whose reference passes task's tests (first names)."""
    n = _arity(task)
    return [f.names[0] for f in families if len(f.args[0]) == n and _passes_with(task, f.ref)]


def test_no_family_solves_a_heldout_task():
    """The held-out set measures skills the curriculum does not teach: no family's reference,
    under any name, passes a held-out task's tests (the taught set is the opposite: nearly
    every task there has such a family)."""
    taught = [t.name for t in code_tasks.TASKS if _twins(t, ex.FAMILIES)]
    assert len(taught) > len(code_tasks.TASKS) // 2  # the check itself finds what it looks for
    for task in code_tasks.HELDOUT_TASKS:
        found = _twins(task, ex.FAMILIES)
        assert not found, (task.name, found)


def test_each_left_out_grid_cell_is_a_heldout_task():
    """The grids leave out only what they must: each cell of exercise_grids.LEFT_OUT, put
    back, solves a held-out task (and the cells that do are exactly those)."""
    import exercise_grids as grids
    every_cell = grids.grid_families(ex.F, left_out=set())
    solved = {(task.name, cell) for task in code_tasks.HELDOUT_TASKS for cell in _twins(task, every_cell)}
    assert len({cell for _, cell in solved}) == len(grids.LEFT_OUT)
    assert {task for task, _ in solved} == code_tasks.GRID_CELL_TASKS  # what eval_code.py reports apart
    assert len(every_cell) - len(grids.LEFT_OUT) == len(grids.grid_families(ex.F))
