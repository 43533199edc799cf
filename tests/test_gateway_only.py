"""Every model call goes through the Lab's gateway: nothing outside ``llm/`` and the Lab
resolves a model string itself (that would skip limits, retries, budgets and the call log)."""

from __future__ import annotations

import ast
from pathlib import Path

import aillm_lab

PACKAGE = Path(aillm_lab.__file__).parent
# the registry itself, the one owner that wraps models, and the public re-export (no call)
ALLOWED = {"llm", "core/lab.py", "__init__.py"}


def _resolvers(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module == "aillm_lab.llm.registry":
            found += [f"imports {a.name}" for a in node.names if a.name in ("resolve",
                                                                           "registry")]
        if (isinstance(node, ast.Attribute) and node.attr == "resolve"
                and isinstance(node.value, ast.Name) and node.value.id == "registry"):
            found.append("calls registry.resolve")
    return found


def test_no_module_outside_llm_and_the_lab_resolves_a_model_for_its_own_calls() -> None:
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.split("/")[0] in ALLOWED or rel in ALLOWED:
            continue
        if found := _resolvers(path.read_text()):
            offenders[rel] = found
    assert offenders == {}


def test_the_check_sees_a_resolver() -> None:
    assert _resolvers("from aillm_lab.llm.registry import resolve\n") == ["imports resolve"]
    assert _resolvers("registry.resolve('scripted:echo')\n") == ["calls registry.resolve"]
    assert _resolvers("from aillm_lab.llm.types import Message\n") == []
