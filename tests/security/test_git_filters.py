"""Git drivers (filters, textconv, external diff) never run a command outside the workspace.

Finding 6 of the outside attack run: overwrite ``.git/config`` through an unchecked shell
write, point ``*.txt`` at a ``filter`` in ``.gitattributes``, change a tracked file, and the
read-only, auto-approved ``git_diff`` ran the filter's command on the host. Here the whole
sequence is tried through ``lab.tools.invoke``, with every shell spelling of the write, and
then with a repository whose config already holds the drivers (as a cloned or prepared repo
would): after every git tool and every ``run_shell git ...``, no file may appear outside the
workspace, and no driver may have run at all (drivers are switched off, and the jail would
contain one that was not).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import aillm_lab as al

READ_TOOLS: list[tuple[str, dict[str, object]]] = [
    ("git_status", {}), ("git_diff", {}), ("git_diff", {"path": "a.txt"}),
    ("git_diff", {"staged": True}), ("git_log", {}), ("git_show", {}),
    ("git_show", {"rev": "HEAD:a.txt"}), ("git_branch", {})]
WRITE_TOOLS: list[tuple[str, dict[str, object]]] = [
    ("git_add", {"paths": ["a.txt", "b.md"]}), ("git_commit", {"message": "change"}),
    ("git_create_branch", {"name": "side"})]
SHELL_GIT = ["git diff", "git diff --stat", "git show HEAD", "git log -p", "git status",
             "git cat-file --filters HEAD:a.txt", "git cat-file --textconv HEAD:a.txt",
             "git blame a.txt", "git grep -e two", "git diff --cached", "git log --stat -p"]


def _git(repo: Path, *args: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(repo), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)


def _drivers(marker_outside: Path, marker_inside: Path) -> str:
    """Every kind of driver, each touching a file outside and one inside the workspace.

    Git runs driver values through ``sh -c``; the value is quoted in the file because ``;``
    starts a comment in git's config syntax.
    """
    cmd = f"touch {marker_outside} {marker_inside}"
    return (f'[filter "pwn"]\n\tclean = "{cmd}; cat"\n\tsmudge = "{cmd}; cat"\n'
            f'\trequired = true\n[filter "pwp"]\n\tprocess = "{cmd}; cat"\n'
            f'[diff "pwn"]\n\ttextconv = "{cmd}; cat"\n\tcommand = "{cmd}; true"\n'
            f'[merge "pwn"]\n\tdriver = "{cmd}; true"\n'
            f'[diff]\n\texternal = "{cmd}; true"\n'
            f'[core]\n\tfsmonitor = "{cmd}; true"\n\tpager = "{cmd}; cat"\n'
            f'\thooksPath = hooks\n[alias]\n\tst = "!{cmd}"\n')


ATTRIBUTES = "*.txt filter=pwn diff=pwn merge=pwn\n*.md filter=pwp diff=pwn\n"


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[tuple[object, Path, Path]]:
    ws, outside = tmp_path / "ws", tmp_path / "outside"
    ws.mkdir()
    outside.mkdir()
    (ws / "a.txt").write_text("one\n")
    (ws / "b.md").write_text("one\n")
    _git(ws, "init", "-q")
    _git(ws, "add", "a.txt", "b.md")
    _git(ws, "commit", "-qm", "init")
    with al.Lab(home=tmp_path / "home", workspace=ws) as lab:
        lab.tools.approver = lambda request: True  # the git write tools ask by default
        yield lab, ws, outside


def _all_git_calls(lab: object, tools: list[tuple[str, dict[str, object]]]) -> list[str]:
    outputs = []
    for name, args in tools:
        outputs.append(lab.tools.invoke(name, args).content)  # type: ignore[attr-defined]
    for command in SHELL_GIT:
        outputs.append(lab.tools.invoke("run_shell",  # type: ignore[attr-defined]
                                        {"command": command}).content)
    return outputs


def test_the_attack_sequence_cannot_plant_a_filter(repo: tuple[object, Path, Path]) -> None:
    lab, ws, outside = repo
    invoke = lab.tools.invoke  # type: ignore[attr-defined]
    pwned = outside / "PWNED"
    config = (ws / ".git" / "config").read_bytes()
    invoke("write_file", {"path": "cfg.txt", "content": _drivers(pwned, ws / "pwned")})
    for command in (["uniq", "--", "cfg.txt", "--x/../.git/config"], "sort -uo.git/config cfg.txt",
                    ["sort", "-o", ".git/config", "cfg.txt"], ["uniq", "cfg.txt", ".git/config"],
                    ["sort", "--output=.git/config", "cfg.txt"], ["sort", "-o.git/config",
                                                                   "cfg.txt"]):
        invoke("run_shell", {"command": command})
    refused = invoke("write_file", {"path": ".git/config", "content": "x"})
    assert not refused.ok and refused.rule is not None
    assert (ws / ".git" / "config").read_bytes() == config  # no spelling reached it
    assert invoke("write_file", {"path": ".gitattributes", "content": ATTRIBUTES}).ok
    assert invoke("write_file", {"path": "a.txt", "content": "two\n"}).ok
    assert invoke("write_file", {"path": "b.md", "content": "two\n"}).ok
    _all_git_calls(lab, READ_TOOLS + WRITE_TOOLS)
    assert not pwned.exists() and os.listdir(outside) == []
    assert not (ws / "pwned").exists()


def test_a_repository_that_already_names_drivers_never_runs_them(
        repo: tuple[object, Path, Path]) -> None:
    lab, ws, outside = repo
    pwned, inside = outside / "PWNED", ws / "pwned"
    with open(ws / ".git" / "config", "a") as f:
        f.write(_drivers(pwned, inside))
    (ws / ".gitattributes").write_text(ATTRIBUTES)
    (ws / "a.txt").write_text("two\n")
    (ws / "b.md").write_text("two\n")
    outputs = _all_git_calls(lab, READ_TOOLS + WRITE_TOOLS)
    assert not pwned.exists() and os.listdir(outside) == []
    assert not inside.exists(), "a driver ran (inside the jail, but it should not run at all)"
    assert any("two" in out for out in outputs)  # the diff was still shown, as plain text
    log = lab.tools.invoke("git_log", {}).content  # type: ignore[attr-defined]
    assert "change" in log  # git_commit worked with the drivers switched off


def test_hooks_in_the_repository_never_run(repo: tuple[object, Path, Path]) -> None:
    lab, ws, outside = repo
    hook = f"#!/bin/sh\ntouch {outside / 'HOOKED'} {ws / 'hooked'}\n"
    for name in ("pre-commit", "post-commit", "commit-msg", "post-checkout",
                 "reference-transaction"):
        path = ws / ".git" / "hooks" / name
        path.write_text(hook)
        path.chmod(0o755)
    (ws / "a.txt").write_text("three\n")
    _all_git_calls(lab, READ_TOOLS + WRITE_TOOLS)
    assert os.listdir(outside) == [] and not (ws / "hooked").exists()
