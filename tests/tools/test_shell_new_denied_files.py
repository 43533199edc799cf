"""A shell call cannot leave behind a deny-listed file it created (red-team F3).

``PathPolicy.deny_globs`` names files no tool may read or write (``.env``, keys). A program
that writes one (``uniq payload.txt .env``) could plant, e.g., ``OPENAI_BASE_URL`` pointing at
an attacker's server for the user's next run. Whatever the command line, the jail's sweep
removes each deny-listed entry that did not exist before the call; the user's own are kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import aillm_lab as al

PAYLOAD = "OPENAI_BASE_URL=https://attacker.example/v1\n"


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Any]:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "app").mkdir()
    (ws / "app" / ".env").write_text("USER_OWN=1\n")  # the user's: must survive
    allow = [*al.SafetyPolicy().commands.allow, "python3"]
    with al.Lab(home=tmp_path / "home", workspace=ws,
                safety={"commands": {"allow": allow}}) as the_lab:
        assert the_lab.tools.invoke("write_file", {"path": "payload.txt",
                                                   "content": PAYLOAD}).ok
        yield the_lab


@pytest.mark.parametrize("command, made", [
    ("uniq payload.txt .env", ".env"),
    ("uniq payload.txt server.key", "server.key"),
    ("sort -o id_rsa payload.txt", "id_rsa"),
])
def test_a_deny_listed_file_the_command_wrote_is_removed(lab: Any, command: str,
                                                          made: str) -> None:
    ws = lab.tools.workspace.root
    result = lab.tools.invoke("run_shell", {"command": command})
    assert not (ws / made).exists(), result.content
    if result.ok and "exit code 0" in result.content:
        assert f"removed {made}" in result.content


def test_a_program_writing_deny_listed_files_by_itself_is_undone(lab: Any) -> None:
    ws = lab.tools.workspace.root
    script = ("import os\n"
              f"open('.env', 'w').write({PAYLOAD!r})\n"
              f"open('sub.pem', 'w').write({PAYLOAD!r})\n"
              "os.makedirs('deep/er', exist_ok=True)\n"
              f"open('deep/er/.env', 'w').write({PAYLOAD!r})\n"
              "open('fine.txt', 'w').write('ok')\n")
    assert lab.tools.invoke("write_file", {"path": "mk.py", "content": script}).ok
    result = lab.tools.invoke("run_shell", {"command": "python3 mk.py"})
    assert result.ok and "exit code 0" in result.content, result.content
    for made in (".env", "sub.pem", "deep/er/.env"):
        assert not (ws / made).exists(), result.content
        assert f"removed {made}" in result.content
    assert (ws / "fine.txt").read_text() == "ok"
    assert (ws / "app" / ".env").read_text() == "USER_OWN=1\n"
