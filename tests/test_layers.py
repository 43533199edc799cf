"""Data flows one way: ``ui → core/agents → tools/rag/memory → llm → runtime``.

Every ``import`` of the package's own modules (at the top or inside a function) is read with
``ast``; a module may import its own folder, a layer below it, and the modules beside the
chain (``config``, ``errors``, ``db``). The few crossings ARCHITECTURE.md describes are
listed here with their reason, so a new one is a visible decision.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import aillm_lab

PACKAGE = Path(aillm_lab.__file__).parent
RANK = {"cli": 6, "testing": 6, "ui": 5, "core": 4, "agents": 4, "experiments": 4,
        "tools": 3, "rag": 3, "memory": 3, "llm": 2, "runtime": 1}
BESIDE = {"config", "config_errors", "errors", "db", "display"}  # any layer may use them
ALLOWED = {
    ("config", "tools"): "settings embed SafetyPolicy, which is data only (tools/policy.py)",
    ("db", "runtime"): "LabDB's connection lives on the runner loop",
    ("memory", "rag"): "memory's default embedder is RAG's (rag/embeddings.py)",
    ("core", "agents"): "the Lab lists and reloads the agent runs saved under its home",
    ("core", "experiments"): "the Lab lists the experiment runs saved under its home",
}


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "aillm_lab" else None


def _imports(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
    return found


def crossings() -> list[str]:
    """Every import that goes up the chain or sideways into another folder of its layer."""
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        source = _part(module)
        if source is None or source == "__init__":
            continue
        for target, line in _imports(path):
            dest = _part(target)
            if dest is None or dest == source or dest in BESIDE or dest == "__init__":
                continue
            if (source, dest) in ALLOWED:
                continue
            if source in BESIDE or RANK.get(dest, 0) >= RANK.get(source, 0):
                bad.append(f"{path.relative_to(PACKAGE)}:{line} imports {target}")
    return bad


def test_no_module_imports_from_a_layer_above_it_or_beside_it() -> None:
    assert crossings() == []


def test_the_layer_check_sees_an_upward_import(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "aillm_lab"
    (fake / "llm").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "llm" / "bad.py").write_text("def f():\n    from aillm_lab.core.lab import Lab\n")
    (fake / "rag").mkdir()
    (fake / "rag" / "side.py").write_text("import aillm_lab.tools.base\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert crossings() == ["llm/bad.py:2 imports aillm_lab.core.lab",
                           "rag/side.py:1 imports aillm_lab.tools.base"]


def test_test_file_names_are_unique() -> None:
    """pytest imports test modules by their base name (rootdir mode, no __init__.py): two
    tests/**/test_x.py stop the whole run at collection, which a run of one folder misses."""
    tests = Path(__file__).parent
    seen: dict[str, Path] = {}
    clashes = []
    for path in sorted(tests.rglob("test_*.py")):
        if path.name in seen:
            clashes.append(f"{seen[path.name].relative_to(tests)} and {path.relative_to(tests)}")
        seen.setdefault(path.name, path)
    conftests = sorted(p.relative_to(tests.parent) for p in tests.rglob("conftest.py"))
    assert clashes == [], "rename one of each pair"
    assert len(conftests) <= 1, conftests  # tests/conftest.py: a second shadows its imports
