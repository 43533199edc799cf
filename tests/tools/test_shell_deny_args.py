"""run_shell cannot create a deny-listed file: its names are refused whether or not they exist.

Finding F3 of the red-team run: ``write_file('.env')`` was refused, but ``uniq payload.txt
.env`` and ``uniq payload.txt server.key`` created the files, because an argument was checked
against the deny list only when it was absolute, held ``..`` or already existed. Now every
argument that could name a file (operands, ``-o FILE``, ``--output=FILE``, ``-oFILE``) is
matched against ``PathPolicy.deny_globs`` by name; only the arguments a program reads as a
pattern (grep's pattern, find's ``-name``) are exempt.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import aillm_lab as al


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Any]:
    with al.Lab(home=tmp_path / "home") as the_lab:
        root = the_lab.tools.workspace.root
        (root / "payload.txt").write_text("OPENAI_BASE_URL=https://attacker.example/v1\n")
        (root / "app").mkdir()
        (root / "app" / "notes.txt").write_text("TODO: ship\nsee .env.example\n")
        yield the_lab


@pytest.mark.parametrize(("command", "created"), [
    ("uniq payload.txt .env", ".env"),
    ("uniq payload.txt server.key", "server.key"),
    ("uniq payload.txt ./.env", ".env"),
    ("uniq payload.txt app/.env", "app/.env"),
    ("uniq payload.txt new/dir/.env", "new/dir/.env"),
    ("uniq payload.txt SERVER.KEY", "SERVER.KEY"),
    ("uniq payload.txt cert.pem", "cert.pem"),
    ("uniq payload.txt id_rsa", "id_rsa"),
    ("uniq payload.txt .ssh/authorized_keys", ".ssh/authorized_keys"),
    ("sort -o .env payload.txt", ".env"),
    ("sort -o.env payload.txt", ".env"),
    ("sort --output=server.key payload.txt", "server.key"),
    ("sort -uo.env payload.txt", ".env"),
    (["uniq", "--", "payload.txt", ".env"], ".env"),
])
def test_a_new_deny_listed_file_cannot_be_named_to_run_shell(lab: Any, command: Any,
                                                              created: str) -> None:
    result = lab.tools.invoke("run_shell", {"command": command})
    assert not result.ok and result.rule == "path.denied", result.content
    assert "matches the deny list" in result.content
    assert not (lab.tools.workspace.root / created).exists()


def test_the_refusal_says_the_name_counts_even_for_a_new_file(lab: Any) -> None:
    result = lab.tools.invoke("run_shell", {"command": "uniq payload.txt .env"})
    assert "whether or not it exists" in result.content and "pick another name" in result.content


def test_write_file_and_run_shell_refuse_the_same_names(lab: Any) -> None:
    for name in (".env", "server.key", "app/.env"):
        assert lab.tools.invoke("write_file", {"path": name, "content": "x"}).rule == "path.denied"
        refused = lab.tools.invoke("run_shell", {"command": ["uniq", "payload.txt", name]})
        assert refused.rule == "path.denied"


@pytest.mark.parametrize("command", [
    "grep -rn TODO .",
    "grep -rn .env app",                      # a pattern, not a file
    "grep -e .env -rn app",
    "grep -rn --regexp=.env app",
    "grep -rn --exclude=.env --include=*.txt TODO .",
    "find . -name .env",
    "find . -name '*.key' -o -iname '*.pem'",
    "uniq payload.txt out.txt",
    "sort -o sorted.txt payload.txt",
    "cut -d= -f1 payload.txt",
    "echo .env server.key",
    "ls -la app",
])
def test_patterns_and_ordinary_names_still_run(lab: Any, command: str) -> None:
    result = lab.tools.invoke("run_shell", {"command": command})
    assert result.ok, result.content
    assert "exit code" in result.content


def test_grep_reading_patterns_from_a_deny_listed_file_is_refused(lab: Any) -> None:
    result = lab.tools.invoke("run_shell", {"command": "grep -f .env -rn app"})
    assert result.rule == "path.denied", result.content


def test_a_denied_folder_cannot_be_named_as_a_new_target(lab: Any) -> None:
    result = lab.tools.invoke("run_shell", {"command": "sort -o .ssh/config payload.txt"})
    assert result.rule == "path.denied"
    assert not (lab.tools.workspace.root / ".ssh").exists()
