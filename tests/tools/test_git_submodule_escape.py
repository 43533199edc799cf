"""A repository planted in the workspace cannot make the read-only git tools run its programs.

The attack (red-team F1): a nested repository, committed as a gitlink, names a clean filter in
its own ``.git/config``; ``git status`` / ``git diff`` of the outer repository recursed into it
and ran the filter inside the jail, where it read the user's ``.git/config`` (a remote token)
and committed ``.env``. Two layers are checked here: git never recurses into a submodule's
work tree for the read tools, and inside the jail git can start no program but git itself.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import aillm_lab as al
from aillm_lab.tools.git import run_git
from aillm_lab.tools.jail import Jail
from aillm_lab.tools.paths import Workspace
from aillm_lab.tools.policy import CommandPolicy

GIT_ENV = {"PATH": "/usr/bin:/bin", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
TOKEN = "ghp_" + "T0KEN" * 8
SECRET = "sk-live-USERSECRET-0123456789"
MARK = "FILTER-RAN"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, env={**GIT_ENV, "HOME": str(repo)},
                          check=True, capture_output=True, text=True).stdout


def plant_evil(outer: Path, ws: Path, *, gitmodules: bool = False) -> None:
    """``outer`` gets a nested repository ``sub`` (a gitlink) whose config names a filter
    that prints the user's secrets; its index is left stale, as after unpacking an archive."""
    sub = outer / "sub"
    sub.mkdir(parents=True)
    (sub / "data.txt").write_text("hello\n")
    (sub / ".gitattributes").write_text("* filter=x diff=x\n")
    git(sub, "init", "-q", "-b", "main")
    git(sub, "add", "-A")
    git(sub, "commit", "-q", "-m", "s")
    payload = ("sh -c 'echo FILTER-$(echo RAN) >&2; "  # the mark only if it runs
               f"cat {ws}/.git/config >&2; "
               f"git --git-dir={ws}/.git cat-file -p HEAD:.env | base64 -w0 >&2; cat'")
    git(sub, "config", "filter.x.clean", payload)
    git(sub, "config", "diff.x.textconv", payload)
    if not (outer / ".git").exists():
        (outer / "README").write_text("evil\n")
        git(outer, "init", "-q", "-b", "main")
        git(outer, "add", "README")
    if gitmodules:  # per-submodule settings win over diff.ignoreSubmodules from -c
        (outer / ".gitmodules").write_text('[submodule "sub"]\n\tpath = sub\n\turl = ./sub\n'
                                           "\tignore = none\n")
        git(outer, "add", ".gitmodules")
    git(outer, "add", "sub")
    git(outer, "commit", "-q", "-m", "e")
    stamp = os.stat(sub / "data.txt").st_mtime_ns + 2_000_000_000
    os.utime(sub / "data.txt", ns=(stamp, stamp))


def user_repo(ws: Path) -> None:
    (ws / ".env").write_text(f"OPENAI_API_KEY={SECRET}\n")
    (ws / "README.md").write_text("user project\n")
    git(ws, "init", "-q", "-b", "main")
    git(ws, "add", "-A")
    git(ws, "commit", "-q", "-m", "init")
    git(ws, "remote", "add", "origin", f"https://user:{TOKEN}@github.com/u/p.git")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Any]:
    ws = tmp_path / "ws"
    ws.mkdir()
    user_repo(ws)
    with al.Lab(home=tmp_path / "home", workspace=ws) as the_lab:
        yield the_lab


def clean(result: Any) -> str:
    text = str(result.content)
    for leak in (MARK, TOKEN, SECRET, "REDACTED", "T0KEN"):
        assert leak not in text, text
    return text


@pytest.mark.parametrize("gitmodules", [False, True])
@pytest.mark.parametrize("tool", ["git_status", "git_diff"])
def test_a_planted_submodules_filter_never_runs_in_the_read_tools(
        lab: Any, tool: str, gitmodules: bool) -> None:
    ws = lab.tools.workspace.root
    plant_evil(ws / "vendor" / "evil", ws, gitmodules=gitmodules)
    result = lab.tools.invoke(tool, {"repo": "vendor/evil"})
    assert result.ok, result.content
    assert "exit code 0" in clean(result)


def test_run_shell_git_in_a_repo_holding_a_planted_submodule_runs_no_filter(lab: Any) -> None:
    ws = lab.tools.workspace.root
    plant_evil(ws, ws, gitmodules=True)  # the user's own repository gets the gitlink
    for command in ("git status", "git diff", "git diff --ignore-submodules=none",
                    "git status --ignore-submodules=none"):
        clean(lab.tools.invoke("run_shell", {"command": command}))
    text = clean(lab.tools.invoke("git_status", {}))
    assert "## main" in text


def test_a_changed_submodule_commit_is_still_reported(lab: Any) -> None:
    ws = lab.tools.workspace.root
    plant_evil(ws / "vendor" / "evil", ws)
    sub = ws / "vendor" / "evil" / "sub"
    (sub / "data.txt").write_text("changed\n")
    git(sub, "-c", "filter.x.clean=cat", "commit", "-q", "-am", "next")
    assert " M sub" in clean(lab.tools.invoke("git_status", {"repo": "vendor/evil"}))
    diff = clean(lab.tools.invoke("git_diff", {"repo": "vendor/evil"}))
    assert "Subproject commit" in diff


@pytest.mark.parametrize("setting", [
    "alias.pwn=!echo PWNED-BY-ALIAS", "alias.pwn=!sh -c 'echo PWNED-BY-ALIAS'",
    "alias.pwn=!base64 /dev/null"])
def test_in_the_jail_git_can_start_no_program_but_git(tmp_path: Path, setting: str) -> None:
    """Whatever config planted the command, the kernel refuses to execute it (Landlock):
    this holds with every argument and config check out of the way."""
    root = tmp_path / "ws"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    ws = Workspace(root)
    jail = Jail(ws)
    policy = CommandPolicy()
    try:
        if not jail.runner.run(jail.available()):
            pytest.skip(f"no OS jail here: {jail.why}")
        pwn = jail.runner.run(run_git(["-c", setting, "pwn"], cwd=root, ws=ws, policy=policy,
                                      jail=jail))
        builtin = jail.runner.run(run_git(["-c", "alias.st=status --short --branch", "st"],
                                          cwd=root, ws=ws, policy=policy, jail=jail))
    finally:
        jail.close()
    assert not pwn.ok and "PWNED" not in pwn.stdout, pwn
    assert "Permission denied" in pwn.stderr, pwn.stderr
    assert builtin.ok and "## " in builtin.stdout, builtin  # git's own commands still run


def test_git_tools_still_work_on_an_ordinary_repository(lab: Any) -> None:
    ws = lab.tools.workspace.root
    (ws / "README.md").write_text("changed\n")
    assert " M README.md" in clean(lab.tools.invoke("git_status", {}))
    assert "+changed" in clean(lab.tools.invoke("git_diff", {}))
    assert "init" in clean(lab.tools.invoke("git_log", {}))
    assert "README.md" in clean(lab.tools.invoke("git_show", {"rev": "HEAD"}))
