"""tools/make_tiny_corpus.py's pieces that decide what the bundled model learns from."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import make_tiny_corpus as corpus  # noqa: E402

SOURCE = '''"""A module docstring."""
import os


def add(a, b):
    """Return the sum of a and b."""
    return a + b


def stub(x):
    """Only a docstring: nothing to learn a body from."""


@cache
def decorated(n):
    """Decorated: its meaning depends on the decorator."""
    return n


def undocumented(n):
    return n


class Box:
    def method(self):
        """A method: not a standalone function."""
        return 1


def long_body(xs):
    """Too many statements."""
''' + "".join(f"    x{i} = {i}\n" for i in range(20)) + '''    return xs


def clamp(x, lo, hi):
    """Clamp x to [lo, hi].

    Two lines of docs.
    """
    if x < lo:
        return lo
    return min(x, hi)
'''


def test_documented_functions_are_the_short_top_level_ones():
    found = corpus.documented_functions(SOURCE)
    assert [f.split("(")[0] for f in found] == ["def add", "def clamp"]
    assert found[0] == 'def add(a, b):\n    """Return the sum of a and b."""\n    return a + b\n'
    assert found[1].endswith("    return min(x, hi)\n")
    for f in found:
        compile(f, "f", "exec")


def test_documented_functions_limits_and_bad_sources():
    assert corpus.documented_functions(SOURCE, max_chars=60) == []
    assert [f.split("(")[0] for f in corpus.documented_functions(SOURCE, max_statements=25)] == \
        ["def add", "def long_body", "def clamp"]
    assert corpus.documented_functions("def broken(:\n    pass\n") == []
    assert corpus.documented_functions("") == []


def test_only_open_licenses_go_into_the_text():
    for lic in ("MIT", "Apache-2.0", "BSD-3-Clause AND 0BSD", "Python Software Foundation License", "MPL-2.0"):
        assert corpus.is_open_license(lic), lic
    for lic in ("", "LicenseRef-NVIDIA-Proprietary", "LicenseRef-NVIDIA-SOFTWARE-LICENSE", "Other/Proprietary License"):
        assert not corpus.is_open_license(lic), lic
    seen: dict = {}
    assert not corpus._usable_license(seen, "cuda-bindings", "13.3.1", "LicenseRef-NVIDIA-SOFTWARE-LICENSE")
    assert "skipped" in seen["cuda-bindings-13.3.1"]["license"]


def test_documentation_only_from_openly_licensed_distributions(tmp_path):
    prose = "This package does useful things. It has a clear and readable guide for its users.\n" * 5
    for pkg in ("open_pkg", "closed_pkg", "orphan_pkg"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "GUIDE.md").write_text(prose.replace("package", pkg))
    owners = {str((tmp_path / "open_pkg" / "GUIDE.md").resolve()): "MIT",
              str((tmp_path / "closed_pkg" / "GUIDE.md").resolve()): "LicenseRef-NVIDIA-Proprietary"}
    docs = list(corpus.doc_documents(100_000, 100_000, file_licenses=owners, roots=[tmp_path]))
    assert [rel for rel, _ in docs] == ["site-packages/open_pkg/GUIDE.md"]
    assert "open_pkg" in docs[0][1]
