"""The git tools: names and risks, argument validation, identity and config isolation."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aillm_lab.errors import SafetyViolation
from aillm_lab.tools.base import RiskLevel
from aillm_lab.tools.git import (
    DEFAULT_IDENTITY,
    HARDENING,
    check_branch,
    check_rev,
    git_env,
    git_tools,
    harden_shell_argv,
)
from aillm_lab.tools.paths import Workspace
from aillm_lab.tools.policy import CommandPolicy
from aillm_lab.tools.shell import CommandError, shell_tools
from conftest import dev_policy

GIT_ENV = {"PATH": "/usr/bin:/bin", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, env={**GIT_ENV, "HOME": str(repo)},
                          check=True, capture_output=True, text=True).stdout


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    """A workspace that is itself a repository with one commit."""
    root = tmp_path / "ws"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "a.txt").write_text("one\n")
    git(root, "add", "a.txt")
    git(root, "commit", "-q", "-m", "first")
    return Workspace(root)


def call(ws: Workspace, tool: str, /, policy: CommandPolicy | None = None, **args: Any) -> str:
    tools = {t.name: t for t in git_tools(ws, policy or dev_policy())
             + shell_tools(ws, policy or dev_policy())}
    return asyncio.run(tools[tool].acall(args))


def test_git_tools_have_the_documented_names_and_risks(ws: Workspace) -> None:
    risks = {t.name: t.risk for t in git_tools(ws, dev_policy())}
    assert risks == {"git_status": RiskLevel.READ, "git_diff": RiskLevel.READ,
                     "git_log": RiskLevel.READ, "git_show": RiskLevel.READ,
                     "git_branch": RiskLevel.READ, "git_create_branch": RiskLevel.WRITE,
                     "git_add": RiskLevel.WRITE,
                     "git_commit": RiskLevel.WRITE}


def test_every_git_tool_takes_a_repo_argument(ws: Workspace) -> None:
    for tool in git_tools(ws, dev_policy()):
        assert tool.spec.parameters["properties"]["repo"]["default"] == "."


def test_git_must_be_in_the_allowlist(ws: Workspace) -> None:
    with pytest.raises(SafetyViolation) as caught:
        call(ws, "git_status", dev_policy(allow=["ls"]))
    assert caught.value.rule == "command.not_allowed"


@pytest.mark.parametrize("rev", ["HEAD", "HEAD~2", "main^", "abc1234", "v1.0", "main:a.txt",
                                 "HEAD@{1}", "origin/main", "HEAD..main"])
def test_ordinary_revisions_are_accepted(rev: str) -> None:
    assert check_rev(rev) == rev


@pytest.mark.parametrize("rev", ["-p", "--output=/tmp/x", "HEAD --stat", "a\nb", "", "x" * 300,
                                 "HEAD;id", "$(id)"])
def test_option_like_or_odd_revisions_are_refused(rev: str) -> None:
    with pytest.raises(SafetyViolation) as caught:
        check_rev(rev)
    assert caught.value.rule == "git.bad_revision"


@pytest.mark.parametrize("name", ["feature/login", "fix-1", "v2.0_rc+1"])
def test_ordinary_branch_names_are_accepted(name: str) -> None:
    assert check_branch(name) == name


@pytest.mark.parametrize("name", ["-D", "--force", "a..b", "x.lock", "a b", "a//b", "dir/", ""])
def test_bad_branch_names_are_refused(name: str) -> None:
    with pytest.raises(SafetyViolation) as caught:
        check_branch(name)
    assert caught.value.rule == "git.bad_branch"


def test_commit_uses_the_fixed_identity_not_the_callers_config(
        ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    leaked = tmp_path / "gitconfig"
    leaked.write_text("[user]\n\tname = Leaked User\n\temail = leaked@example.com\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(leaked))
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Leaked Author")
    (ws.root / "a.txt").write_text("two\n")
    call(ws, "git_add", paths=["a.txt"])
    assert "exit code 0" in call(ws, "git_commit", message="second")
    author = git(ws.root, "log", "-1", "--format=%an <%ae>|%cn <%ce>").strip()
    name, email = DEFAULT_IDENTITY
    assert author == f"{name} <{email}>|{name} <{email}>"


def test_identity_can_be_chosen_when_building_the_tools(ws: Workspace) -> None:
    tools = {t.name: t for t in git_tools(ws, dev_policy(), identity=("Ada", "ada@x.org"))}
    (ws.root / "b.txt").write_text("b\n")
    asyncio.run(tools["git_add"].acall({"paths": ["b.txt"]}))
    asyncio.run(tools["git_commit"].acall({"message": "add b"}))
    assert git(ws.root, "log", "-1", "--format=%an <%ae>").strip() == "Ada <ada@x.org>"


def test_commit_message_that_looks_like_an_option_is_kept_literally(ws: Workspace) -> None:
    (ws.root / "a.txt").write_text("three\n")
    call(ws, "git_add", paths=["a.txt"])
    call(ws, "git_commit", message="--amend")
    assert git(ws.root, "log", "--format=%s").splitlines() == ["--amend", "first"]


def test_empty_commit_message_is_a_command_error(ws: Workspace) -> None:
    with pytest.raises(CommandError, match="message"):
        call(ws, "git_commit", message="  ")


def test_empty_paths_and_bad_max_count_are_command_errors(ws: Workspace) -> None:
    with pytest.raises((CommandError, ValueError), match="paths"):
        call(ws, "git_add", paths=[])
    with pytest.raises((CommandError, ValueError), match="max_count"):
        call(ws, "git_log", max_count=0)


def test_repo_that_is_not_a_folder_is_a_command_error(ws: Workspace) -> None:
    with pytest.raises(CommandError, match="not a folder"):
        call(ws, "git_status", repo="a.txt")


def test_nested_repository_is_used_through_the_repo_argument(ws: Workspace) -> None:
    sub = ws.root / "sub"
    sub.mkdir()
    git(sub, "init", "-q", "-b", "trunk")
    assert "## No commits yet on trunk" in call(ws, "git_status", repo="sub")


def test_git_env_isolates_config_and_stops_discovery_at_the_workspace(ws: Workspace) -> None:
    env = git_env(ws)
    assert env["GIT_CONFIG_NOSYSTEM"] == "1" and env["GIT_CONFIG_GLOBAL"] == "/dev/null"
    assert env["GIT_TERMINAL_PROMPT"] == "0" and env["HOME"] == str(ws.root)
    assert env["GIT_CEILING_DIRECTORIES"] == str(ws.root.parent)
    assert "core.hooksPath=/dev/null" in HARDENING and "core.fsmonitor=false" in HARDENING


def test_run_shell_git_gets_the_same_hardening(ws: Workspace) -> None:
    argv, env = harden_shell_argv(["diff", "--stat"], ws, dev_policy())
    assert argv[:len(HARDENING) + 1] == ["git", *HARDENING]
    args = argv[len(HARDENING) + 1:]
    assert args[:4] == ["diff", "--no-ext-diff", "--no-textconv", "--stat"]
    # then one exclusion per deny glob, so committed secrets stay out of the diff
    assert ":(exclude,top,glob,icase)**/.env" in args[4:]
    assert args[4] == "--ignore-submodules=dirty"  # after the caller's options: it wins
    assert all(a.startswith(":(exclude,top,glob,icase)") for a in args[5:])
    assert env == git_env(ws) and "GIT_LITERAL_PATHSPECS" not in env


def test_run_shell_git_commit_does_not_run_hooks(ws: Workspace) -> None:
    hook = ws.root / ".git" / "hooks" / "pre-commit"
    hook.write_text(f"#!/bin/sh\ntouch {ws.root / 'hooked'}\n")
    hook.chmod(0o755)
    (ws.root / "a.txt").write_text("four\n")
    call(ws, "run_shell", command="git add a.txt")
    out = call(ws, "run_shell", command="git commit -m 'via shell'")
    assert "exit code 0" in out and not (ws.root / "hooked").exists()


def test_run_shell_git_diff_ignores_a_configured_external_diff(ws: Workspace) -> None:
    with (ws.root / ".git" / "config").open("a") as cfg:
        cfg.write(f"[diff]\n\texternal = {sys.executable} -c \"open('{ws.root}/ext','w')\"\n")
    (ws.root / "a.txt").write_text("five\n")
    out = call(ws, "run_shell", command="git diff")
    assert "+five" in out and not (ws.root / "ext").exists()


def test_git_options_before_the_subcommand_are_limited(ws: Workspace) -> None:
    assert "exit code 0" in call(ws, "run_shell", command="git --no-pager log --oneline")
    assert "git version" in call(ws, "run_shell", command="git --version")
    with pytest.raises(SafetyViolation) as caught:
        call(ws, "run_shell", command="git --bare log")
    assert caught.value.rule == "command.denied_argument"
    with pytest.raises(CommandError, match="subcommand"):
        call(ws, "run_shell", command="git --no-pager")


def test_git_subcommands_come_from_the_policy(ws: Workspace) -> None:
    policy = dev_policy(git_subcommands=["status"])
    assert "exit code 0" in call(ws, "run_shell", policy, command="git status")
    with pytest.raises(SafetyViolation) as caught:
        call(ws, "run_shell", policy, command="git log")
    assert caught.value.rule == "command.git_subcommand" and "status" in caught.value.detail
