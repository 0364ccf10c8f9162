"""`phicpp info`: what a GGUF holds: header, metadata (long values abbreviated), tensors by type."""
from __future__ import annotations

from collections import defaultdict
from typing import Iterator

import numpy as np

from ._core import GGUFFile

MAX_ITEMS = 5       # array elements shown before "..."
MAX_STR = 72        # characters of a string value shown


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


def human_count(n: int) -> str:
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return str(n)


def _short_str(s: str) -> str:
    r = repr(s)
    return r if len(r) <= MAX_STR else f"{r[:MAX_STR]}... ({len(s)} chars)"


def format_value(v) -> str:
    """A metadata value on one line: long strings cut, arrays as their first items and length."""
    if isinstance(v, str):
        return _short_str(v)
    if isinstance(v, np.ndarray):
        items = [repr(x.item()) for x in v[:MAX_ITEMS]]
        n = len(v)
    elif isinstance(v, list):
        items = [_short_str(x) if isinstance(x, str) else format_value(x) for x in v[:MAX_ITEMS]]
        n = len(v)
    else:
        return repr(v)
    more = ", ..." if n > MAX_ITEMS else ""
    return f"[{', '.join(items)}{more}] ({n} items)" if n > MAX_ITEMS else f"[{', '.join(items)}]"


def describe(path: str, show_tensors: bool = False) -> Iterator[str]:
    g = GGUFFile(path)
    tensors = g.tensors
    md = g.metadata
    yield f"file:      {g.path} ({human_bytes(g.file_size)})"
    yield f"format:    GGUF v{g.version}, {len(md)} metadata keys, {len(tensors)} tensors, alignment {g.alignment}"
    arch = md.get("general.architecture")
    if arch is not None:
        yield f"arch:      {arch}" + (f" ({md['general.name']})" if "general.name" in md else "")
    yield ""
    yield "metadata:"
    width = max((len(k) for k in md), default=0)
    for k, v in md.items():
        yield f"  {k:<{width}} {g.metadata_type(k):<15} = {format_value(v)}"
    yield ""
    by_type: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for t in tensors:
        e = by_type[t.type]
        e[0] += 1
        e[1] += t.n_elements
        e[2] += t.nbytes
    yield "tensors by type:"
    tot = [len(tensors), sum(t.n_elements for t in tensors), sum(t.nbytes for t in tensors)]
    for ty, (n, el, nb) in sorted(by_type.items(), key=lambda kv: -kv[1][2]):
        yield (f"  {ty:<8} {n:5d} tensors {human_count(el):>10} params {human_bytes(nb):>12}"
               f"  ({8 * nb / max(el, 1):.2f} bits/weight)")
    yield (f"  {'total':<8} {tot[0]:5d} tensors {human_count(tot[1]):>10} params {human_bytes(tot[2]):>12}"
           f"  ({8 * tot[2] / max(tot[1], 1):.2f} bits/weight)")
    if show_tensors:
        yield ""
        yield "tensors:"
        nw = max((len(str(t.name)) for t in tensors), default=0)
        for t in tensors:
            shape = "x".join(str(d) for d in t.shape)
            yield f"  {str(t.name):<{nw}} {t.type:<8} {shape:<20} {human_bytes(t.nbytes):>12}"
