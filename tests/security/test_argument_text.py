"""Arguments that are not valid UTF-8 text are refused by the guard, and audited.

Finding 8 of the outside attack run: ``{"path": "\\udcff"}`` made ``invoke`` raise
``UnicodeEncodeError`` from the audit writer, so the model got no result and the audit no
row. Every built-in tool that takes text is tried here, with the bad text in a value, in a
list item and in a key.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import aillm_lab as al

BAD = "\udcff"
CALLS: list[tuple[str, dict[str, Any]]] = [
    ("read_file", {"path": BAD}), ("read_file", {"path": "a" + BAD + ".txt"}),
    ("write_file", {"path": "ok.txt", "content": "x" + BAD}),
    ("list_dir", {"path": BAD}), ("glob_files", {"pattern": "*" + BAD}),
    ("search_text", {"pattern": BAD}),
    ("run_shell", {"command": ["echo", BAD]}), ("run_shell", {"command": "echo " + BAD}),
    ("git_show", {"rev": BAD}), ("git_add", {"paths": ["a.txt", BAD]}),
    ("sql_query", {"sql": "select '" + BAD + "'"}), ("run_python", {"code": "x = '" + BAD + "'"}),
    ("fetch_url", {"url": "http://example.com/" + BAD}), ("read_file", {BAD: "a.txt"}),
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("text")
    with al.Lab(home=root / "home") as the_lab:
        yield the_lab


def test_the_calls_name_real_tools(lab: Any) -> None:
    names = set(lab.tools.names())
    assert {name for name, _ in CALLS} <= names, {name for name, _ in CALLS} - names


@pytest.mark.parametrize(("name", "arguments"), CALLS, ids=[f"{n}-{i}" for i, (n, _) in
                                                            enumerate(CALLS)])
def test_text_that_is_not_utf8_is_refused_with_its_rule_and_audited(
        lab: Any, name: str, arguments: dict[str, Any]) -> None:
    before = len(lab.tools.audit())
    result = lab.tools.invoke(name, arguments)
    assert not result.ok and result.rule == "arguments.invalid_text", result.content
    assert "not valid UTF-8" in result.content and "\\udcff" in result.content
    audit = lab.tools.audit()
    assert len(audit) == before + 1
    row = audit.iloc[-1]
    assert row["tool"] == name and row["decision"] == "refused"
    assert row["rule"] == "arguments.invalid_text"


def test_valid_non_ascii_text_is_still_accepted(lab: Any, tmp_path: Path) -> None:
    result = lab.tools.invoke("write_file", {"path": "ünïcode-é.txt", "content": "日本語 ✓"})
    assert result.ok, result.content
    assert lab.tools.invoke("read_file", {"path": "ünïcode-é.txt"}).content == "日本語 ✓"
