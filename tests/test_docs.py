"""The repository explains itself: no file points outside it, and ARCHITECTURE.md cannot rot.

ARCHITECTURE.md names the tests that guard each invariant; if one is renamed or deleted, the
last test here fails and says which citation went stale.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARCHITECTURE = REPO / "ARCHITECTURE.md"
TEXT_SUFFIXES = (".py", ".md", ".toml", ".ipynb", ".yml", ".txt", ".cfg")
# Spelled as patterns so this file does not match itself.
OUTSIDE = re.compile(r"\.\./shared/|/work/share[d]\b|\bDESIGN\.md\b|\bSTYLE\.md\b")
CITATION = re.compile(r"\btests/[\w/.-]+?\.py(?:::(\w+))?")


def _tracked_text_files() -> list[Path]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True,
                         capture_output=True).stdout.decode()
    return [REPO / name for name in out.split("\0")
            if name.endswith(TEXT_SUFFIXES) and (REPO / name).is_file()]


def test_no_tracked_file_refers_to_a_document_outside_the_repository() -> None:
    files = _tracked_text_files()
    assert any(f.name == "README.md" for f in files)
    offenders = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            match = OUTSIDE.search(line)
            if match:
                offenders.append(f"{path.relative_to(REPO)}:{number}: {match.group()}")
    assert offenders == [], "these refer to documents outside the repository"


def test_architecture_md_exists_and_the_readme_links_to_it() -> None:
    assert ARCHITECTURE.is_file()
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert re.search(r"\]\(ARCHITECTURE\.md(#[^)]*)?\)", readme), \
        "README.md should link to ARCHITECTURE.md"


def _defined_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return {node.name for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def test_every_test_cited_in_architecture_md_exists() -> None:
    citations = CITATION.finditer(ARCHITECTURE.read_text(encoding="utf-8"))
    cited = sorted({(m.group().split("::")[0], m.group(1)) for m in citations},
                   key=lambda c: (c[0], c[1] or ""))
    assert len(cited) >= 20, "ARCHITECTURE.md should name the tests behind its invariants"
    stale = []
    names: dict[str, set[str]] = {}
    for file, test in cited:
        path = REPO / file
        if not path.is_file():
            stale.append(f"{file}: no such file")
            continue
        if test is not None:
            defined = names.setdefault(file, _defined_names(path))
            if test not in defined:
                stale.append(f"{file}::{test}: no such test")
    assert stale == []


# a private module or method, a repr hook called by hand, or an import from anywhere but
# the package itself (``import aillm_lab as al``) and its testing aids
PRIVATE_USE = re.compile(r"aillm_lab(?:\.\w+)*\._\w+|\.(?!_repr_html_\b)_[a-z]\w*\(|"
                         r"\._repr_\w+_\(\)|from aillm_lab\.(?!testing\b)\w+|"
                         r"import aillm_lab\.(?!testing\b)")


def test_notebooks_use_only_public_names() -> None:
    """Notebooks are the user's view: no private module, function or repr hook is called."""
    import json

    offenders = []
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        for index, cell in enumerate(cells):
            if cell["cell_type"] != "code":
                continue
            for line in "".join(cell["source"]).splitlines():
                if PRIVATE_USE.search(line):
                    offenders.append(f"{path.name} cell {index}: {line.strip()}")
    assert offenders == []


def test_the_private_name_check_catches_what_it_is_for() -> None:
    for line in ("from aillm_lab.db._x import y", "hits._repr_html_()", "mem._store(1)",
                 "import aillm_lab.tools._jail_launcher",
                 "from aillm_lab.db import SqliteVersionWarning"):
        assert PRIVATE_USE.search(line), line
    for line in ("from aillm_lab.testing import ScriptedModel", "lab.calls()",
                 "al.SqliteVersionWarning", "x = obj.__class__"):
        assert not PRIVATE_USE.search(line), line
