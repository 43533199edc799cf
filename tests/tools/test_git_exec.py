"""Git's exec allowlist is applied by the jail launcher itself, not by a guard interpreter.

The launcher's call process sets a Landlock rule set (``_landlock.confine_exec``) right
before it ``exec``s git, so a git call starts git and nothing else: no Python interpreter per
call, and a program that a planted setting names (here ``core.fsmonitor``) still cannot run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aillm_lab.tools import _landlock, git_exec
from aillm_lab.tools import jail as jail_module
from aillm_lab.tools.git import run_git
from aillm_lab.tools.jail import Jail
from aillm_lab.tools.paths import Workspace
from aillm_lab.tools.policy import CommandPolicy
from aillm_lab.tools.process import run_command

GIT_ENV = {"PATH": "/usr/bin:/bin", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
MARK = "PLANTED-PROGRAM-RAN"
needs_landlock = pytest.mark.skipif(not _landlock.abi(), reason="this kernel has no Landlock")


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, env={**GIT_ENV, "HOME": str(repo)}, check=True,
                   capture_output=True)


@pytest.fixture
def repo_jail(tmp_path: Path) -> Iterator[tuple[Workspace, Jail]]:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "README.md").write_text("hello\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init")
    (root / "README.md").write_text("changed\n")
    ws = Workspace(root)
    jail = Jail(ws)
    try:
        if not jail.runner.run(jail.available()):
            pytest.skip(f"no OS jail here: {jail.why}")
        yield ws, jail
    finally:
        jail.close()


def sent_requests(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every request the jail sends its launcher, recorded on the way out."""
    sent: list[dict[str, Any]] = []
    run = jail_module._Connection.run

    async def spy(self: Any, request: dict[str, Any]) -> Any:
        sent.append(request)
        return await run(self, request)

    monkeypatch.setattr(jail_module._Connection, "run", spy)
    return sent


def test_a_git_call_starts_git_itself_with_its_allowlist_and_no_interpreter(
        repo_jail: tuple[Workspace, Jail], monkeypatch: pytest.MonkeyPatch) -> None:
    ws, jail = repo_jail
    sent = sent_requests(monkeypatch)
    result = jail.runner.run(run_git(["status", "--short"], cwd=ws.root, ws=ws,
                                     policy=CommandPolicy(), jail=jail))
    assert result.ok and " M README.md" in result.stdout, result
    assert sent and all(r["argv"][0] == "git" for r in sent)
    python = {sys.executable, os.path.realpath(sys.executable)}
    for request in sent:
        assert request["exe"].endswith("/git") and not python & {request["exe"], *request["argv"]}
        assert "-c" not in request["argv"][:2]  # no ``python -I -S -B -c <guard>`` in front
        assert request["exec_allow"] == list(git_exec.allowed_exec(request["exe"]))
    assert os.path.realpath(sent[0]["exe"]) in sent[0]["exec_allow"]


def test_programs_other_than_git_get_no_exec_allowlist(
        repo_jail: tuple[Workspace, Jail], monkeypatch: pytest.MonkeyPatch) -> None:
    ws, jail = repo_jail
    sent = sent_requests(monkeypatch)
    result = jail.runner.run(run_command(["ls"], cwd=ws.root, policy=CommandPolicy(),
                                         jail=jail))
    assert result.ok and "README.md" in result.stdout, result
    assert [r["exec_allow"] for r in sent] == [None]


@needs_landlock
@pytest.mark.parametrize("how", ["program", "shell"])
def test_a_planted_fsmonitor_cannot_run_while_git_status_still_works(
        repo_jail: tuple[Workspace, Jail], how: str) -> None:
    """``core.fsmonitor`` given after the hardening overrides wins over it: only the
    kernel's allowlist stands between git and the planted program (the workspace is not
    mounted noexec, so without it the program would run)."""
    ws, jail = repo_jail
    planted = ws.root / "fsmon"
    run_it = "echo PLANTED-PROGRAM-$(echo RAN) >&2"  # prints MARK only if it runs
    planted.write_text(f"#!/bin/sh\n{run_it}\n")
    planted.chmod(0o755)
    setting = str(planted) if how == "program" else run_it
    result = jail.runner.run(run_git(["-c", f"core.fsmonitor={setting}", "status", "--short"],
                                     cwd=ws.root, ws=ws, policy=CommandPolicy(), jail=jail))
    assert MARK not in result.stdout + result.stderr, result
    assert "Permission denied" in result.stderr, result.stderr
    assert " M README.md" in result.stdout, result  # git's own work goes on


@needs_landlock
def test_git_still_runs_its_own_helpers_behind_the_allowlist(
        repo_jail: tuple[Workspace, Jail]) -> None:
    """``git gc`` starts ``git pack-refs``, ``git reflog`` and ``git repack`` as child
    processes from its exec-path: the allowlist must let them through."""
    ws, jail = repo_jail
    policy = CommandPolicy()
    gc = jail.runner.run(run_git(["gc", "--quiet"], cwd=ws.root, ws=ws, policy=policy,
                                 jail=jail, write=True))
    assert gc.ok, gc
    log = jail.runner.run(run_git(["log", "--oneline"], cwd=ws.root, ws=ws, policy=policy,
                                  jail=jail))
    assert log.ok and "init" in log.stdout, log


@needs_landlock
def test_confine_exec_lets_a_process_execute_only_the_listed_files() -> None:
    code = ("import os, subprocess, sys\n"
            "from aillm_lab.tools import _landlock\n"
            "assert _landlock.confine_exec([*sys.argv[1:], '/no/such/path'])\n"
            "assert subprocess.run(['/bin/true']).returncode == 0\n"
            "os.execv('/bin/sh', ['sh', '-c', 'echo ran'])\n")
    allowed = git_exec.allowed_exec("/bin/true")  # the file and its dynamic loader
    done = subprocess.run([sys.executable, "-c", code, *allowed], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0 and "ran" not in done.stdout, done
    assert "PermissionError" in done.stderr, done.stderr


def test_doctor_reads_the_abi_from_the_shared_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_landlock, "abi", lambda: 0)
    ok, text = git_exec.exec_guard_status()
    assert not ok and text.startswith("off (this kernel has no Landlock)")
    monkeypatch.setattr(_landlock, "abi", lambda: 3)
    ok, text = git_exec.exec_guard_status()
    assert ok and text.startswith("on (Landlock ABI 3)")


@needs_landlock
def test_an_allowlist_the_kernel_refuses_stops_git_from_starting(
        repo_jail: tuple[Workspace, Jail], monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail closed: a rule the kernel rejects (a namespace file is no path it can allow)
    must not leave git running without its allowlist."""
    ws, jail = repo_jail
    monkeypatch.setattr(jail_module, "allowed_exec", lambda exe: ("/proc/self/ns/mnt",))
    result = jail.runner.run(run_git(["status", "--short"], cwd=ws.root, ws=ws,
                                     policy=CommandPolicy(), jail=jail, drivers=False))
    assert result.exit_code == 127 and "README" not in result.stdout, result
    assert "could not start" in result.stderr and "landlock_add_rule" in result.stderr, result
