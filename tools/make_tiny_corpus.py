#!/usr/bin/env python3
"""Build the text corpus for the shipped tiny Phi model (tools/train_tiny.py).

Only text that already exists offline on this machine is used, nothing from a hub:
  * the Python standard library's own sources (with their docstrings), tests included,
    and, with --pydoc-topics, its pydoc topics (the text that `help("for")` prints);
  * documentation shipped inside installed packages: *.rst / *.md / *.txt files and
    the long descriptions in *.dist-info/METADATA under site-packages;
  * with --packages, the Python sources (*.py) of every installed distribution whose
    metadata names an open-source license (not a proprietary or LicenseRef- one), at most
    --code-bytes-per-package of each (so that a few big packages cannot drown the rest), generated files (protobuf stubs, "do not edit"
    headers, data tables) skipped;
  * with --wheels DIR, the *.py files of the wheels in DIR (e.g. textbook-like code
    fetched with `pip download` on a machine that reaches PyPI), --repeat-wheels times;
  * with --functions N, every short documented top-level function of the train split's
    Python files once more as a document of its own, N times: what a function-writing
    prompt looks like, where whole files mostly open with a licence, a module docstring
    and imports (on two small models trained alike, the probability of an indented body
    line after a task's signature and docstring went 0.69 -> 0.88 with them).

The build is deterministic for a given Python installation: files are visited in
sorted order, exact duplicates are dropped, and each file lands in the train or the
held-out split by a seeded hash of its path (never by position), so the split of a
file does not depend on which other files exist.

Output (in --out):
  train.txt, heldout.txt   documents joined by the separator <|endoftext|>
  manifest.tsv             split, bytes, sha256 and source path of every kept file
  textbook.txt             the train split's --wheels files and the --functions documents,
                           once each (for train_tiny.py's annealing phase)
  licenses.tsv             each distribution that contributed code or docs: name, version,
                           license as its metadata states it, files and bytes kept
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


def installed_file_licenses() -> dict[str, str]:
    """{resolved path: the license its distribution states} for every file an installed
    distribution lists in its RECORD."""
    import importlib.metadata as md

    owner: dict[str, str] = {}
    for d in md.distributions():
        lic = license_of(d.metadata)
        for f in d.files or []:
            owner[str(Path(d.locate_file(f)).resolve())] = lic
    return owner


def doc_documents(max_file_bytes: int, per_package_bytes: int, file_licenses: dict[str, str] | None = None,
                  roots: list[Path] | None = None):
    """Documentation shipped in site-packages (or roots): a file only when the distribution
    that installed it states an open-source license (file_licenses, by resolved path)."""
    if roots is None:
        roots = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    if file_licenses is None:
        file_licenses = installed_file_licenses()
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
            if not is_open_license(file_licenses.get(str(path.resolve()), "")):
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


GENERATED_MARKERS = ("do not edit", "autogenerated", "auto-generated", "automatically generated",
                     "generated by", "generated from", "@generated")


def looks_generated(rel: str, text: str) -> bool:
    """Machine-written sources: protobuf/grpc stubs, files that say so in their first lines."""
    name = rel.rsplit("/", 1)[-1]
    if name.endswith(("_pb2.py", "_pb2_grpc.py", "_pb2.pyi")):
        return True
    head = "\n".join(text.splitlines()[:12]).lower()
    return any(m in head for m in GENERATED_MARKERS)


def license_of(meta) -> str:
    """The license a distribution's metadata states: License-Expression, a short License
    field, or its "License ::" classifiers; "" when it states none."""
    unknown = {"", "unknown", "none", "n/a"}
    expr = (meta.get("License-Expression") or "").strip()
    if expr.lower() not in unknown:
        return expr
    field = (meta.get("License") or "").strip()
    if field.lower() not in unknown and len(field) <= 80 and "\n" not in field:
        return field
    classifiers = [c.split("::")[-1].strip() for c in (meta.get_all("Classifier") or []) if c.startswith("License ::")]
    return " / ".join(classifiers)


def is_open_license(lic: str) -> bool:
    """Whether a stated license may go into the training text: any but a proprietary one or a
    custom LicenseRef-... (run 9's corpus took 13 files of cuda-bindings, NVIDIA Software
    License, before this check)."""
    return bool(lic) and "proprietary" not in lic.lower() and "licenseref-" not in lic.lower()


def _usable_license(licenses: dict, name: str, version: str, lic: str) -> bool:
    """Register a distribution the corpus skips for its license (none, or not open)."""
    if not lic:
        _register(licenses, name, version, "(none stated: skipped)")
    elif not is_open_license(lic):
        _register(licenses, name, version, f"{lic} (not an open-source license: skipped)")
    return is_open_license(lic)


def distribution_code(dist_name: str, version: str, files, max_file_bytes: int, per_package_bytes: int):
    """(rel, text) for the .py files of one distribution, in sorted order, up to its byte budget.
    files: (relative posix path, reader) pairs."""
    used = 0
    for rel, read in sorted(files, key=lambda f: f[0]):
        if not rel.endswith(".py") or "__pycache__" in rel or ".dist-info/" in rel:
            continue
        raw = read()
        if raw is None or len(raw) > max_file_bytes:
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            continue
        text = text.replace("\r\n", "\n").replace("\r", "\n").replace(EOT, "")
        if not looks_like_source_text(text) or looks_generated(rel, text):
            continue
        if used + len(text) > per_package_bytes:
            continue
        used += len(text)
        yield f"{dist_name}-{version}/{rel}", text


def installed_code_documents(max_file_bytes: int, per_package_bytes: int, licenses: dict):
    """The .py files of every installed distribution (importlib.metadata), sorted by name."""
    import importlib.metadata as md

    dists = {}
    for d in md.distributions():
        name = (d.metadata.get("Name") or "").strip()
        if name and name.lower() not in dists:
            dists[name.lower()] = d
    for key in sorted(dists):
        d = dists[key]
        name, version, lic = d.metadata["Name"], d.version, license_of(d.metadata)
        if not _usable_license(licenses, name, version, lic):
            continue

        def reader(f, d=d):
            def read():
                try:
                    return Path(d.locate_file(f)).read_bytes()
                except OSError:
                    return None
            return read
        files = [(str(f), reader(f)) for f in (d.files or [])]
        yield from _counted(name, version, lic, licenses,
                            distribution_code(name, version, files, max_file_bytes, per_package_bytes))


def wheel_code_documents(folder: Path, max_file_bytes: int, per_package_bytes: int, licenses: dict):
    """The .py files of the wheels in a folder, with the license their METADATA states."""
    import email
    import zipfile

    for wheel in sorted(folder.glob("*.whl")):
        with zipfile.ZipFile(wheel) as z:
            meta_name = next((n for n in z.namelist() if n.endswith(".dist-info/METADATA")), None)
            if meta_name is None:
                continue
            meta = email.message_from_bytes(z.read(meta_name))
            name, version, lic = meta["Name"], meta["Version"], license_of(meta)
            if not _usable_license(licenses, name, version, lic):
                continue
            files = [(n, (lambda n=n: z.read(n))) for n in z.namelist()]
            yield from _counted(name, version, lic, licenses,
                                distribution_code(name, version, files, max_file_bytes, per_package_bytes))


def _register(licenses: dict, name: str, version: str, lic: str) -> None:
    """A distribution's licenses.tsv entry, keyed as its documents' paths begin; main()
    counts its files once they survive deduplication."""
    licenses[f"{name}-{version}"] = {"name": name, "version": version, "license": lic, "files": 0, "bytes": 0}


def _counted(name: str, version: str, lic: str, licenses: dict, docs):
    _register(licenses, name, version, lic)
    yield from docs


def documented_functions(text: str, max_chars: int = 1500, max_statements: int = 12) -> list[str]:
    """The top-level functions of a Python source that have a docstring and a body besides
    it of 1..max_statements statements, undecorated, at most max_chars each, as source."""
    import ast
    import warnings
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (invalid escape sequences in old sources)
            tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    out = []
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef) or node.decorator_list or ast.get_docstring(node) is None:
            continue
        if not 1 <= len(node.body) - 1 <= max_statements:
            continue
        source = ast.get_source_segment(text, node)
        if source and len(source) <= max_chars:
            out.append(source + "\n")
    return out


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
    ap.add_argument("--packages", action="store_true",
                    help="also the .py sources of every installed distribution that states a license")
    ap.add_argument("--code-bytes-per-package", type=int, default=8_000_000)
    ap.add_argument("--wheels", type=Path, help="also the .py files of the wheels in this folder")
    ap.add_argument("--repeat-wheels", type=int, default=1, help="write the --wheels files N times into train.txt")
    ap.add_argument("--functions", type=int, default=0,
                    help="write each short documented top-level function of the train split's .py files "
                         "N more times into train.txt as a document of its own")
    ap.add_argument("--exercises", type=int, default=0,
                    help="also N synthetic textbook exercises (tools/make_exercises.py, seeded by --seed) in "
                         "train.txt and textbook.txt")
    ap.add_argument("--pydoc-topics", action="store_true",
                    help="also the pydoc topics (tried for run 2, see MODEL_CARD.md; the shipped model has none)")
    args = ap.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    splits: dict[str, list[str]] = {"train": [], "heldout": []}
    textbook: list[str] = []
    functions: list[str] = []
    manifest = []
    licenses: dict[str, dict] = {}
    # (kind, documents); earlier sources win exact duplicates (stdlib before a vendored copy)
    sources = [("stdlib", stdlib_documents(args.max_file_bytes))]
    if args.wheels:
        sources.append(("wheels", wheel_code_documents(args.wheels, args.max_file_bytes,
                                                       args.code_bytes_per_package, licenses)))
    if args.packages:
        sources.append(("packages", installed_code_documents(args.max_file_bytes, args.code_bytes_per_package,
                                                             licenses)))
    if args.pydoc_topics:
        sources.append(("stdlib", pydoc_topic_documents()))
    if not args.no_docs:
        sources.append(("site-packages", doc_documents(args.max_file_bytes, args.doc_bytes_per_package)))
    counts: dict[str, dict[str, int]] = {}
    for source_kind, source in sources:
        for rel, text in source:
            encoded = text.encode()
            digest = hashlib.sha256(encoded).hexdigest()
            if digest in seen:
                continue
            seen.add(digest)
            split = split_of(rel, args.seed, args.heldout_percent)
            repeat = args.repeat_library if split == "train" and is_library_source(rel) else 1
            if source_kind == "wheels" and split == "train":
                repeat = args.repeat_wheels
                textbook.append(text)
            nbytes = len(encoded)
            dist = licenses.get(rel.split("/", 1)[0])
            if dist is not None:
                dist["files"] += 1
                dist["bytes"] += nbytes
            splits[split].extend([text] * repeat)
            if args.functions and split == "train" and rel.endswith(".py"):
                functions.extend(documented_functions(text))
            manifest.append(f"{split}\t{nbytes}\t{digest}\t{rel}")
            kind = source_kind + ("/py" if rel.endswith(".py") else "/doc")
            c = counts.setdefault(f"{split}:{kind}", {"files": 0, "bytes": 0})
            c["files"] += 1
            c["bytes"] += nbytes

    if functions:
        # once each (a function copied between packages is one document), in a seeded order
        unique = sorted(set(functions), key=lambda f: hashlib.sha256(f"{args.seed}:{f}".encode()).hexdigest())
        splits["train"].extend(unique * args.functions)
        textbook.extend(unique)
        counts["train:functions"] = {"files": len(unique), "bytes": sum(len(f.encode()) for f in unique)}
    if args.exercises:
        from make_exercises import exercises  # (tools/, beside this file)

        made = exercises(args.exercises, args.seed)
        splits["train"].extend(made)
        textbook.extend(made)
        counts["train:exercises"] = {"files": len(made), "bytes": sum(len(e.encode()) for e in made)}
    for split, docs in splits.items():
        (args.out / f"{split}.txt").write_text(EOT.join(docs), encoding="utf-8")
    if textbook:
        (args.out / "textbook.txt").write_text(EOT.join(textbook), encoding="utf-8")
    (args.out / "manifest.tsv").write_text("\n".join(manifest) + "\n", encoding="utf-8")
    (args.out / "licenses.tsv").write_text("name\tversion\tlicense\tfiles\tbytes\n" + "".join(
        f"{e['name']}\t{e['version']}\t{e['license']}\t{e['files']}\t{e['bytes']}\n"
        for _, e in sorted(licenses.items(), key=lambda kv: kv[0].lower())),
        encoding="utf-8")
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
