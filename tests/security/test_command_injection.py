"""Command-injection payloads against run_shell and the git tools.

Each payload is either refused with the SafetyViolation rule that should catch it (so the
test fails if that defence is removed), or runs harmlessly with its text taken literally.
After every payload the host is checked: a sentinel outside the workspace is unchanged and
no marker file the payload tries to create exists, inside or outside the workspace.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aillm_lab.errors import SafetyViolation
from aillm_lab.tools.git import git_tools
from aillm_lab.tools.paths import Workspace
from aillm_lab.tools.shell import shell_tools
from conftest import dev_policy

SENTINEL = "do not touch\n"
EVIL = ("import pathlib, sys\n"
        "for p in sys.argv[1:] or ['pwned']:\n    pathlib.Path(p).write_text('x')\n")


@dataclass
class Box:
    ws: Path
    outside: Path
    tools: dict[str, Any]

    def call(self, tool: str, /, **args: Any) -> str:
        return asyncio.run(self.tools[tool].acall(args))

    def shell(self, command: str | list[str]) -> str:
        return self.call("run_shell", command=_fill(command, self.outside))

    def assert_unharmed(self) -> None:
        assert (self.outside / "sentinel.txt").read_text() == SENTINEL
        for marker in (self.ws / "pwned", self.outside / "pwned", self.ws / "repo" / "pwned"):
            assert not marker.exists(), f"{marker} was created"


def _fill(command: str | list[str], outside: Path) -> str | list[str]:
    if isinstance(command, str):
        return command.replace("@OUT@", str(outside))
    return [c.replace("@OUT@", str(outside)) for c in command]


def _git(repo: Path, *args: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(repo), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)


@pytest.fixture(scope="module")
def shared_box(tmp_path_factory: pytest.TempPathFactory) -> Box:
    """For payloads that must change nothing (each test checks that they did not)."""
    return _make_box(tmp_path_factory.mktemp("injection"))


@pytest.fixture
def box(tmp_path: Path) -> Box:
    """For tests that change the repository themselves."""
    return _make_box(tmp_path)


def _make_box(tmp_path: Path) -> Box:
    ws, outside = tmp_path / "ws", tmp_path / "outside"
    ws.mkdir()
    outside.mkdir()
    (outside / "sentinel.txt").write_text(SENTINEL)
    (outside / "evil.py").write_text(EVIL)
    (ws / "evil.py").write_text(EVIL)
    (ws / "notes.txt").write_text("apple\nbanana\n")
    (ws / ".env").write_text("API_KEY=sk-secret\n")
    (ws / "link_out").symlink_to(outside)
    (ws / "link_sentinel").symlink_to(outside / "sentinel.txt")
    repo = ws / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "a.txt").write_text("one\n")
    _git(repo, "add", "a.txt")
    _git(repo, "commit", "-q", "-m", "first")
    policy = dev_policy()
    workspace = Workspace(ws)
    tools = {t.name: t for t in shell_tools(workspace, policy) + git_tools(workspace, policy)}
    return Box(ws, outside, tools)


REFUSED: list[tuple[str | list[str], str]] = [
    # chaining, pipes, redirections, substitution: only a shell understands them
    ("echo hi; python evil.py", "command.shell_syntax"),
    ("echo hi;python evil.py", "command.shell_syntax"),
    ("echo hi && python evil.py", "command.shell_syntax"),
    ("false || python evil.py", "command.shell_syntax"),
    ("cat notes.txt | python evil.py", "command.shell_syntax"),
    ("echo owned > pwned", "command.shell_syntax"),
    ("echo owned >> pwned", "command.shell_syntax"),
    ("echo owned>pwned", "command.shell_syntax"),
    ("cat < notes.txt", "command.shell_syntax"),
    ("ls 2>/dev/null", "command.shell_syntax"),
    ("ls &> pwned", "command.shell_syntax"),
    ("python evil.py &", "command.shell_syntax"),
    ("(python evil.py)", "command.shell_syntax"),
    ("echo $(python evil.py)", "command.shell_syntax"),
    ('echo "$(python evil.py)"', "command.shell_syntax"),
    ("echo `python evil.py`", "command.shell_syntax"),
    ("echo ${HOME}", "command.shell_syntax"),
    ("echo $HOME", "command.shell_syntax"),
    ("echo hi\npython evil.py", "command.shell_syntax"),
    ("echo hi\r\npython evil.py", "command.shell_syntax"),
    ("echo 'hi'\npython evil.py", "command.shell_syntax"),
    ("echo hi # ; python evil.py", "command.shell_syntax"),
    (["echo", "hi", ";", "python", "evil.py"], "command.shell_syntax"),
    (["echo", "hi", "&&", "python", "evil.py"], "command.shell_syntax"),
    (["cat", "notes.txt", "|", "sh"], "command.shell_syntax"),
    (["echo", "x", ">", "pwned"], "command.shell_syntax"),
    (["echo", "x", ">pwned"], "command.shell_syntax"),
    (["echo", "x", "2>&1"], "command.shell_syntax"),
    (["echo", "$(python evil.py)"], "command.shell_syntax"),
    (["echo", "`python evil.py`"], "command.shell_syntax"),
    # environment and PATH tricks
    ("PATH=/tmp:$PATH ls", "command.shell_syntax"),
    ("PATH=@OUT@ ls", "command.shell_syntax"),
    ("LD_PRELOAD=@OUT@/x.so ls", "command.shell_syntax"),
    (["PATH=/tmp", "ls"], "command.shell_syntax"),
    # programs that are shells, wrappers or paths
    ("env X=1 sh", "command.not_allowed"),
    ("sh -c 'python evil.py'", "command.not_allowed"),
    ("bash -c 'python evil.py'", "command.not_allowed"),
    ("xargs python evil.py", "command.not_allowed"),
    ("nohup python evil.py", "command.not_allowed"),
    ("timeout 5 python evil.py", "command.not_allowed"),
    ("sudo ls", "command.not_allowed"),
    ("perl -e 'print 1'", "command.not_allowed"),
    ("/bin/sh -c 'python evil.py'", "command.program_path"),
    ("/usr/bin/python3 evil.py", "command.program_path"),
    ("./evil.py", "command.program_path"),
    ("../outside/evil.py", "command.program_path"),
    ("bin/ls", "command.program_path"),
    ("\uff43\uff41\uff54 notes.txt", "command.program_path"),  # full-width 'cat'
    ("c\u0430t notes.txt", "command.program_path"),  # Cyrillic 'a'
    # arguments that start code
    ("python -c \"open('pwned', 'w')\"", "command.denied_argument"),
    ("python3 -c 'import os'", "command.denied_argument"),
    ("python -Sc \"open('pwned', 'w')\"", "command.denied_argument"),
    ("python -W ignore -c 1", "command.denied_argument"),
    ("python -m http.server", "command.denied_argument"),
    ("find . -exec python evil.py \\;", "command.denied_argument"),
    ("find . -execdir python evil.py +", "command.denied_argument"),
    ("find . -ok python evil.py \\;", "command.denied_argument"),
    ("find . -delete", "command.denied_argument"),
    ("find . -fprint pwned", "command.denied_argument"),
    ("find . -fprintf pwned %p", "command.denied_argument"),
    ("find . -files0-from list.bin", "command.denied_argument"),
    ("sort --compress-program=python -S 1K notes.txt", "command.denied_argument"),
    ("sort --compress=python notes.txt", "command.denied_argument"),
    ("sort --files0-from=list.bin", "command.denied_argument"),
    ("wc --files0-from=list.bin", "command.denied_argument"),
    ("grep -R root link_out", "command.denied_argument"),
    ("grep -rnR root .", "command.denied_argument"),
    ("date -s not-a-date", "command.denied_argument"),
    ("date --set=not-a-date", "command.denied_argument"),
    # git option injection and config that runs programs
    ("git -c core.pager='python evil.py' log", "command.denied_argument"),
    ("git -c alias.x='!python evil.py' x", "command.denied_argument"),
    ("git --upload-pack='python evil.py' fetch origin", "command.denied_argument"),
    ("git --upload-pa=python fetch origin", "command.denied_argument"),
    ("git --exec-path=@OUT@ status", "command.denied_argument"),
    ("git -C @OUT@ status", "command.denied_argument"),
    ("git --git-dir=@OUT@/.git status", "command.denied_argument"),
    ("git --work-tree=@OUT@ status", "command.denied_argument"),
    ("git log --output=pwned", "command.denied_argument"),
    ("git log --output=@OUT@/pwned", "command.denied_argument"),
    ("git grep -O'python evil.py' apple", "command.denied_argument"),
    ("git grep --open-files-in-pager=python apple", "command.denied_argument"),
    ("git diff --ext-diff", "command.denied_argument"),
    ("git init --template=tpl again", "command.denied_argument"),
    ("git --namespace=x log", "command.denied_argument"),
    ("git config alias.x '!python evil.py'", "command.git_subcommand"),
    ("git config core.fsmonitor 'python evil.py'", "command.git_subcommand"),
    ("git clone ext::python%20evil.py cloned", "command.git_subcommand"),
    ("git filter-branch --tree-filter 'python evil.py' HEAD", "command.git_subcommand"),
    ("git bisect run python evil.py", "command.git_subcommand"),
    ("git submodule update", "command.git_subcommand"),
    ("git difftool -y", "command.git_subcommand"),
    ("git help -w log", "command.git_subcommand"),
    # paths that leave the workspace
    ("cat /etc/passwd", "path.outside"),
    ("cat /etc/*", "path.outside"),
    ("cat ../*", "path.outside"),
    ("cat ../outside/sentinel.txt", "path.outside"),
    ("ls -la /", "path.outside"),
    ("head -c 10 /dev/zero", "path.outside"),
    ("grep -r root /etc", "path.outside"),
    ("find / -name passwd", "path.outside"),
    ("diff /etc/hostname notes.txt", "path.outside"),
    ("python @OUT@/evil.py", "path.outside"),
    ("python ../outside/evil.py @OUT@/pwned", "path.outside"),
    ("sort -o@OUT@/pwned notes.txt", "path.outside"),
    ("sort --output=@OUT@/pwned notes.txt", "path.outside"),
    ("git log -- /etc/passwd", "path.outside"),
    ("cat link_sentinel", "path.symlink_escape"),
    ("ls link_out", "path.symlink_escape"),
    ("cat .env", "path.denied"),
    ("cat ~/.ssh/id_rsa", "path.denied"),
    # malformed input
    ("cat notes.txt\x00/etc/passwd", "command.bad_argument"),
    ("echo " + "A" * 100_000, "command.too_long"),
    (["echo", *["x"] * 2_000], "command.too_long"),
]

LITERAL: list[tuple[str, str]] = [
    ("echo '$(python evil.py)'", "$(python evil.py)"),
    ("echo 'a; python evil.py > pwned'", "a; python evil.py > pwned"),
    ("echo \\; python evil.py", "; python evil.py"),
    ("echo 'x' '&&' 'y'", "x && y"),
    ("ls *", "cannot access '*'"),
    ("cat ~/notes.txt", "No such file"),
    ("cat notes.txt\uff1bpython evil.py", "No such file"),  # full-width ';' is a letter
    ("echo \"it's `quoted`\"".replace("`", "'"), "it's 'quoted'"),
]


def _id(payload: str | list[str]) -> str:
    text = payload if isinstance(payload, str) else " ".join(payload)
    return text[:40].encode("unicode_escape").decode()


def test_there_are_at_least_sixty_payloads() -> None:
    assert len(REFUSED) + len(LITERAL) + len(GIT_TOOL_REFUSED) >= 60


@pytest.mark.parametrize(("command", "rule"), REFUSED, ids=[_id(c) for c, _ in REFUSED])
def test_injection_payload_is_refused_by_its_rule(shared_box: Box, command: str | list[str],
                                                  rule: str) -> None:
    with pytest.raises(SafetyViolation) as caught:
        shared_box.shell(command)
    assert caught.value.rule == rule
    assert caught.value.detail  # a reason the model can read
    shared_box.assert_unharmed()


@pytest.mark.parametrize(("command", "expected"), LITERAL, ids=[_id(c) for c, _ in LITERAL])
def test_quoted_metacharacters_are_passed_literally_and_do_nothing(shared_box: Box, command: str,
                                                                   expected: str) -> None:
    out = shared_box.shell(command)
    assert expected in out
    shared_box.assert_unharmed()


GIT_TOOL_REFUSED: list[tuple[str, dict[str, Any], str]] = [
    ("git_show", {"rev": "--output=@OUT@/pwned"}, "git.bad_revision"),
    ("git_show", {"rev": "--output=pwned"}, "git.bad_revision"),
    ("git_show", {"rev": "HEAD; python evil.py"}, "git.bad_revision"),
    ("git_show", {"rev": "HEAD\n--output=pwned"}, "git.bad_revision"),
    ("git_create_branch", {"name": "--set-upstream-to=x"}, "git.bad_branch"),
    ("git_create_branch", {"name": "-D"}, "git.bad_branch"),
    ("git_create_branch", {"name": "a..b"}, "git.bad_branch"),
    ("git_diff", {"path": "/etc/passwd"}, "path.outside"),
    ("git_diff", {"path": "../outside/sentinel.txt"}, "path.outside"),
    ("git_add", {"paths": ["/etc/passwd"]}, "path.outside"),
    ("git_add", {"paths": ["link_sentinel"]}, "path.symlink_escape"),
    ("git_status", {"repo": "../outside"}, "path.outside"),
    ("git_log", {"repo": "/"}, "path.outside"),
]


@pytest.mark.parametrize(("tool", "args", "rule"), GIT_TOOL_REFUSED,
                         ids=[f"{t}-{_id(str(a))}" for t, a, _ in GIT_TOOL_REFUSED])
def test_git_tool_injection_is_refused(shared_box: Box, tool: str, args: dict[str, Any],
                                       rule: str) -> None:
    args = {k: _fill(v, shared_box.outside) if isinstance(v, str | list) else v
            for k, v in args.items()}
    with pytest.raises(SafetyViolation) as caught:
        shared_box.call(tool, **args)
    assert caught.value.rule == rule
    shared_box.assert_unharmed()


def test_option_looking_git_add_path_is_a_literal_pathspec(box: Box) -> None:
    out = box.call("git_add", paths=["repo/--chmod=+x"], repo="repo")
    assert "did not match any files" in out
    box.assert_unharmed()


def test_repository_hooks_never_run(box: Box) -> None:
    repo = box.ws / "repo"
    for hook in ("pre-commit", "commit-msg", "post-commit", "post-checkout"):
        script = repo / ".git" / "hooks" / hook
        script.write_text(f"#!/bin/sh\ntouch {repo / 'pwned'}\n")
        script.chmod(0o755)
    (repo / "a.txt").write_text("two\n")
    box.call("git_add", paths=["repo/a.txt"], repo="repo")
    assert "exit code 0" in box.call("git_commit", message="second", repo="repo")
    assert "exit code 0" in box.call("git_create_branch", name="topic", repo="repo")
    box.assert_unharmed()


def test_malicious_repository_config_cannot_start_programs(box: Box) -> None:
    repo = box.ws / "repo"
    evil = f"{sys.executable} {box.ws / 'evil.py'} {repo / 'pwned'}"
    with (repo / ".git" / "config").open("a") as cfg:
        cfg.write(f"[core]\n\tfsmonitor = {evil}\n\tpager = {evil}\n\tsshCommand = {evil}\n"
                  f"[diff]\n\texternal = {evil}\n[alias]\n\tst = !{evil}\n")
    (repo / "a.txt").write_text("changed\n")
    for tool in ("git_status", "git_diff", "git_log", "git_show"):
        box.call(tool, repo="repo")
    box.assert_unharmed()


def test_repository_whose_git_dir_is_outside_is_refused(box: Box) -> None:
    _git(box.outside, "init", "-q")
    trojan = box.ws / "trojan"
    trojan.mkdir()
    (trojan / ".git").write_text(f"gitdir: {box.outside / '.git'}\n")
    with pytest.raises(SafetyViolation) as caught:
        box.call("git_log", repo="trojan")
    assert caught.value.rule == "git.outside_workspace"
    (box.ws / ".git").write_text(f"gitdir: {box.outside / '.git'}\n")
    with pytest.raises(SafetyViolation) as caught:
        box.shell("git status")
    assert caught.value.rule == "git.outside_workspace"
    box.assert_unharmed()


def test_workspace_inside_another_repository_does_not_reach_it(tmp_path: Path) -> None:
    parent = tmp_path / "parent"
    parent.mkdir()
    _git(parent, "init", "-q")
    ws = parent / "ws"
    ws.mkdir()
    tools = {t.name: t for t in git_tools(Workspace(ws), dev_policy())}
    out = asyncio.run(tools["git_status"].acall({}))
    assert "not a git repository" in out
