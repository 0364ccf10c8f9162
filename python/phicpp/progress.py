"""A rich progress bar for long CLI steps (tensor conversion, model loading).

    with progress_bar("converting", total=n) as step:
        for name in names:
            ...
            step(name)          # advance by one, show `name` as the current item

Draws to stderr and only when stderr is a terminal (or PHICPP_PROGRESS=1), so
pipes, logs and tests see no escape codes.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Callable, Iterator


def _enabled() -> bool:
    forced = os.environ.get("PHICPP_PROGRESS")
    if forced is not None:
        return forced not in ("", "0")
    return sys.stderr.isatty()


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[..., None]]:
    """Yield step(item="", advance=1); a no-op callable when progress display is off."""
    if not _enabled():
        yield lambda *a, **k: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("{task.fields[item]}"))
    with Progress(*columns, console=Console(stderr=True), transient=False) as prog:
        task = prog.add_task(description, total=total, item="")

        def step(item: str = "", advance: int = 1) -> None:
            prog.update(task, advance=advance, item=item)

        yield step
