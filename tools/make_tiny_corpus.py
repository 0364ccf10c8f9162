#!/usr/bin/env python3
"""Build the text corpus for the shipped tiny Phi model (tools/train_tiny.py).

Only text that already exists offline on this machine is used, nothing from a hub:
  * the Python standard library's own sources (with their docstrings), tests included,
    and, with --pydoc-topics, its pydoc topics (the text that `help("for")` prints);
  * documentation shipped inside installed packages: *.rst / *.md / *.txt files and
    the long descriptions in *.dist-info/METADATA under site-packages.

The build is deterministic for a given Python installation: files are visited in
sorted order, exact duplicates are dropped, and each file lands in the train or the
held-out split by a seeded hash of its path (never by position), so the split of a
file does not depend on which other files exist.

Output (in --out):
  train.txt, heldout.txt   documents joined by the separator <|endoftext|>
  manifest.tsv             split, bytes, sha256 and source path of every kept file
  corpus.json              counts, the Python that produced it, the options used
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import sysconfig
from pathlib import Path

EOT = "<|endoftext|>"

# stdlib folders that are data tables rather than code someone would write
# (codec charmaps, the pickled pydoc topic dump, 2to3's deliberately broken inputs).
STDLIB_SKIP_PARTS = {"site-packages", "dist-packages", "encodings", "pydoc_data", "__pycache__"}
STDLIB_SKIP_PREFIXES = ("lib2to3/tests/data/", "test/encoded_modules/", "test/tokenizedata/")

# dist-info files that are machine-readable lists, not documentation
DOC_SKIP_NAMES = {"top_level.txt", "entry_points.txt", "dependency_links.txt", "namespace_packages.txt",
                  "RECORD", "WHEEL", "INSTALLER", "REQUESTED", "SOURCES.txt", "requires.txt",
                  "not-zip-safe", "api_tests.txt", "direct_url.json"}
DOC_SKIP_PARTS = {"tests", "test", "testing", "data_files", "__pycache__"}


def looks_like_source_text(text: str) -> bool:
    """Reject generated tables and blobs: long lines, escape-heavy strings, NULs."""
    if "\x00" in text or not text.strip():
        return False
    lines = text.splitlines()
    long_lines = sum(1 for ln in lines if len(ln) > 200)
    if long_lines > 0.02 * len(lines) + 1:
        return False
    escapes = text.count("\\x") + text.count("\\u")
    return escapes <= 0.002 * len(text) + 20


def is_library_source(rel: str) -> bool:
    """stdlib modules proper (documented library code), as opposed to their test suites."""
    parts = rel.split("/")
    return rel.endswith(".py") and parts[0] == "stdlib" and not any(
        p in ("test", "tests", "idle_test") or p.startswith("test_") for p in parts[1:])


def looks_like_prose(text: str) -> bool:
    """Documentation must be mostly words: rejects number tables shipped as .txt."""
    if len(text) < 200 or "\x00" in text:
        return False
    letters = sum(ch.isalpha() for ch in text)
    return letters >= 0.5 * len(text) and looks_like_source_text(text)


def read_text(path: Path) -> str | None:
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return text.replace("\r\n", "\n").replace("\r", "\n").replace(EOT, "")


def metadata_description(text: str) -> str:
    """The body of a METADATA file (after the RFC-822 headers) is the package's README."""
    head, sep, body = text.partition("\n\n")
    return body if sep else ""


def split_of(relpath: str, seed: int, heldout_percent: float) -> str:
    h = hashlib.sha256(f"{seed}:{relpath}".encode()).digest()
    bucket = int.from_bytes(h[:8], "little") / 2**64 * 100.0
    return "heldout" if bucket < heldout_percent else "train"


def stdlib_documents(max_file_bytes: int):
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if set(path.relative_to(root).parts) & STDLIB_SKIP_PARTS or rel.startswith(STDLIB_SKIP_PREFIXES):
            continue
        if path.stat().st_size > max_file_bytes:
            continue
        text = read_text(path)
        if text is not None and looks_like_source_text(text):
            yield "stdlib/" + rel, text


def pydoc_topic_documents():
    """The language reference and tutorial-like topics that `help()` shows (pydoc_data/topics.py):
    one document per topic. The file itself is one huge dict literal, so it is read as data."""
    import ast

    path = Path(sysconfig.get_paths()["stdlib"]) / "pydoc_data" / "topics.py"
    if not path.is_file():
        return
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "topics":
            topics = ast.literal_eval(node.value)
            for name in sorted(topics):
                text = topics[name].replace(EOT, "")
                if text.strip():
                    yield f"stdlib/pydoc_data/topics.py#{name}", text


def package_of(rel: Path) -> str:
    """Group docs by distribution so one big package cannot dominate (e.g. awscli's 6000 pages)."""
    top = rel.parts[0]
    for suffix in (".dist-info", ".egg-info", ".data"):
        if top.endswith(suffix):
            top = top[: -len(suffix)].split("-")[0]
    return top.lower().replace("-", "_")


def doc_documents(max_file_bytes: int, per_package_bytes: int):
    roots = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    used: dict[str, int] = {}
    for root in map(Path, roots):
        if not root.is_dir():
            continue
        candidates = [p for ext in ("rst", "md", "txt") for p in root.rglob("*." + ext)]
        candidates += list(root.glob("*.dist-info/METADATA"))
        for path in sorted(set(candidates)):
            rel = path.relative_to(root)
            if path.name in DOC_SKIP_NAMES or set(rel.parts[:-1]) & DOC_SKIP_PARTS:
                continue
            if not path.is_file() or path.stat().st_size > max_file_bytes:
                continue
            text = read_text(path)
            if text is None:
                continue
            if path.name == "METADATA":
                text = metadata_description(text)
            if not looks_like_prose(text):
                continue
            pkg = package_of(rel)
            if used.get(pkg, 0) + len(text) > per_package_bytes:
                continue
            used[pkg] = used.get(pkg, 0) + len(text)
            yield "site-packages/" + rel.as_posix(), text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--heldout-percent", type=float, default=2.0)
    ap.add_argument("--max-file-bytes", type=int, default=400_000)
    ap.add_argument("--doc-bytes-per-package", type=int, default=500_000)
    ap.add_argument("--no-docs", action="store_true", help="stdlib sources only")
    ap.add_argument("--repeat-library", type=int, default=1,
                    help="write stdlib library (non-test) files N times into train.txt, to weight clean code up")
    ap.add_argument("--pydoc-topics", action="store_true",
                    help="also the pydoc topics (tried for run 2, see MODEL_CARD.md; the shipped model has none)")
    args = ap.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    splits: dict[str, list[str]] = {"train": [], "heldout": []}
    manifest = []
    sources = [stdlib_documents(args.max_file_bytes)]
    if args.pydoc_topics:
        sources.append(pydoc_topic_documents())
    if not args.no_docs:
        sources.append(doc_documents(args.max_file_bytes, args.doc_bytes_per_package))
    counts: dict[str, dict[str, int]] = {}
    for source in sources:
        for rel, text in source:
            digest = hashlib.sha256(text.encode()).hexdigest()
            if digest in seen:
                continue
            seen.add(digest)
            split = split_of(rel, args.seed, args.heldout_percent)
            repeat = args.repeat_library if split == "train" and is_library_source(rel) else 1
            splits[split].extend([text] * repeat)
            manifest.append(f"{split}\t{len(text.encode())}\t{digest}\t{rel}")
            kind = rel.split("/", 1)[0] + ("/py" if rel.endswith(".py") else "/doc")
            c = counts.setdefault(f"{split}:{kind}", {"files": 0, "bytes": 0})
            c["files"] += 1
            c["bytes"] += len(text.encode())

    for split, docs in splits.items():
        (args.out / f"{split}.txt").write_text(EOT.join(docs), encoding="utf-8")
    (args.out / "manifest.tsv").write_text("\n".join(manifest) + "\n", encoding="utf-8")
    info = {
        "python": sys.version,
        "platform": platform.platform(),
        "stdlib": sysconfig.get_paths()["stdlib"],
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "counts": counts,
        "sha256": {s: hashlib.sha256((args.out / f"{s}.txt").read_bytes()).hexdigest() for s in splits},
    }
    (args.out / "corpus.json").write_text(json.dumps(info, indent=1) + "\n")
    for key in sorted(counts):
        print(f"{key:28s} {counts[key]['files']:6d} files {counts[key]['bytes'] / 1e6:8.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
