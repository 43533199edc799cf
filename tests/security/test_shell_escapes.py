"""The shell corpus, generated: every allowed program x every way to spell a path x targets.

Written the way the outside attack run worked, through ``lab.tools.invoke`` only, and checked
by outcome rather than by rule: whatever a case is (refused by an argv rule, or run inside
the jail), its output must not hold anything from outside the workspace, from a deny-listed
file or from the Lab's environment (not even an 8-character piece of the key), and no file
outside the workspace, nor the workspace's ``.git/config``, may change. Before the jail,
23 of the outside run's 190 cases got through; the shapes here are its shapes, generated
for every program: arguments after ``--``, ``--opt=value``, combined short flags with an
attached value, recursion into denied files, ``/proc/<pid>/environ``, writes with ``-o``
and second operands, and links planted in the workspace.
"""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import aillm_lab as al

TOKEN = "tok" + secrets.token_hex(20)  # in the Lab's environment, under a secret-looking name
OUTSIDE_MARKER = "OUTSIDE" + secrets.token_hex(6)
ENV_MARKER = "ENVFILE" + secrets.token_hex(6)
SSH_MARKER = "SSHCONF" + secrets.token_hex(6)
NAME_MARKER = "outname" + secrets.token_hex(6)  # a file name outside: listing it is a leak
UP = "--x/" + "../" * 12  # the finding's spelling: a folder named like an option, then up
PROGRAMS = ("ls", "cat", "head", "tail", "wc", "grep", "sort", "uniq", "cut", "echo", "pwd",
            "find", "diff", "date", "true", "false", "git")
GIT_SUBS = ("diff", "log", "show", "blame", "grep", "cat-file", "ls-files", "status")


@dataclass
class Target:
    lab: Any
    ws: Path
    outside: Path
    git_config: bytes
    host_passwd_marker: str | None

    def paths(self) -> list[str]:
        """Spellings of files outside the workspace or on the deny list."""
        secret = str(self.outside / "secret.txt")
        pid = os.getpid()
        return [secret, UP + secret.lstrip("/"), "/etc/passwd", UP + "etc/passwd",
                f"/proc/{pid}/environ", UP + f"proc/{pid}/environ", "/proc/1/environ",
                ".env", "--x/../.env", ".ssh/config", "outlink", "outdir/secret.txt"]

    def check(self, command: str | list[str]) -> None:
        result = self.lab.tools.invoke("run_shell", {"command": command})
        text = result.content
        leaks = [m for m in (OUTSIDE_MARKER, ENV_MARKER, SSH_MARKER, NAME_MARKER) if m in text]
        leaks += [TOKEN[i:i + 8] for i in range(len(TOKEN) - 7) if TOKEN[i:i + 8] in text]
        if self.host_passwd_marker:
            leaks += [self.host_passwd_marker] if self.host_passwd_marker in text else []
        assert not leaks, f"{command!r} leaked {leaks[:3]}: {text[:400]}"
        assert sorted(os.listdir(self.outside)) == sorted(["secret.txt", NAME_MARKER]), \
            f"{command!r} wrote outside: {os.listdir(self.outside)}"
        assert (self.outside / "secret.txt").read_text() == OUTSIDE_MARKER + "\n"
        assert (self.ws / ".git" / "config").read_bytes() == self.git_config, \
            f"{command!r} changed .git/config"
        assert not Path("/tmp/aillm-escape").exists(), f"{command!r} wrote /tmp/aillm-escape"


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    root = tmp_path_factory.mktemp("escapes")
    Path("/tmp/aillm-escape").unlink(missing_ok=True)  # left by a run of a vulnerable build
    ws, outside = root / "ws", root / "outside"
    ws.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text(OUTSIDE_MARKER + "\n")
    (outside / NAME_MARKER).write_text("")
    os.environ["AILLM_ESCAPE_TEST_TOKEN"] = TOKEN
    try:
        lab = al.Lab(home=root / "home", workspace=ws)
        tools = lab.tools
        tools.invoke("write_file", {"path": "--x/k", "content": ""})  # the finding's setup
        for name, text in (("in.txt", "b\na\nb\n"), ("tracked.txt", "one\n"),
                           ("cfg.txt", '[filter "pwn"]\n\tclean = touch /tmp/aillm-escape\n'),
                           (".env", f"TOKEN={ENV_MARKER}\n")):
            (ws / name).write_text(text)
        (ws / ".ssh").mkdir()
        (ws / ".ssh" / "config").write_text(f"Host x # {SSH_MARKER}\n")
        (ws / "outlink").symlink_to(outside / "secret.txt")
        (ws / "outdir").symlink_to(outside)
        _git(ws, "init", "-q")
        _git(ws, "add", "tracked.txt")
        _git(ws, "commit", "-qm", "init")
        passwd = Path("/etc/passwd").read_text()
        marker = "daemon:x:" if "daemon:x:" in passwd else None
        yield Target(lab, ws, outside, (ws / ".git" / "config").read_bytes(), marker)
        lab.close()
    finally:
        os.environ.pop("AILLM_ESCAPE_TEST_TOKEN", None)


def _git(repo: Path, *args: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(repo), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)


# -- the generators ---------------------------------------------------------------------------
def _path_shapes(program: str, path: str) -> Iterator[str | list[str]]:
    """One path in every spelling the attack run used."""
    prefix = [program, "diff", "--no-index"] if program == "git" else [program]
    yield [*prefix, path]
    yield [*prefix, "--", path]
    yield " ".join([*prefix, "--", shlex.quote(path)])
    yield [*prefix, f"--file={path}"]
    yield [*prefix, f"-f{path}"]
    yield [*prefix, f"-uf{path}"]
    yield [*prefix, "in.txt", "--", path]


def _program_shapes() -> Iterator[str | list[str]]:
    """What each program can do with a path beyond reading it as an operand."""
    yield from (["grep", "-r", ENV_MARKER[:7], "."], ["grep", "-ra", "SSH", "."],
                ["grep", "-rn", "TOKEN", "."], ["grep", "-rl", "OUTSIDE", "."],
                ["grep", "-r", "--include=*", "OUTSIDE", "."], "grep -hf/etc/passwd in.txt",
                ["grep", "-ao", "tok[0-9a-f]*", "--", f"/proc/{os.getpid()}/environ"],
                ["grep", "-ao", "tok[0-9a-f]*", "--", UP + f"proc/{os.getpid()}/environ"],
                ["grep", "-ro", "tok[0-9a-f]*", "/proc"], ["grep", "-r", "OUTSIDE", "outdir"],
                ["grep", "-rL", "x", "/"])
    yield from ("date -uf/etc/passwd", "date -ur/etc/passwd", ["date", f"-f{UP}etc/passwd"],
                ["date", "--file=/etc/passwd"], ["date", "-r", "outlink"])
    for out in ("/tmp/aillm-escape", UP + "tmp/aillm-escape", "outdir/written",
                ".git/config", "--x/../.git/config"):
        yield from (["sort", "-o", out, "in.txt"], ["sort", f"--output={out}", "in.txt"],
                    f"sort -uo{out} in.txt", ["sort", f"-uo{out}", "cfg.txt"],
                    ["uniq", "--", "cfg.txt", out], ["uniq", "cfg.txt", out])
    yield from (["sort", "-T", "/tmp", "in.txt"], ["sort", "--files0-from=/etc/passwd"],
                ["find", "-L", ".", "-name", "secret.txt"], ["find", "-L", ".", "-type", "f"],
                ["find", "-L", ".", "-name", "outname*"], ["find", "-L", "outdir"],
                ["ls", "-L", "outdir"], ["ls", "-laL", "."], ["find", ".", "-follow"],
                ["find", "/", "-maxdepth", "2"], ["find", ".", "-newer", "/etc/passwd"],
                ["find", "outdir/"], ["find", "-L", "outdir", "-exec", "cat", "{}", ";"],
                ["ls", "-laR", "."], ["ls", "-la", "/proc/1/"], ["ls", "-la", "outdir/"],
                ["ls", "-la", "--", UP + "etc"], ["diff", "-r", ".", "outdir"],
                ["diff", "--from-file=/etc/passwd", "in.txt"], ["diff", "in.txt", "outlink"],
                ["cut", "-c1-200", "outlink"], ["cat", "outdir/secret.txt"],
                ["head", "-c", "100", "--", "/proc/self/environ"], ["tail", "-n5", ".env"],
                ["wc", "--files0-from=/etc/passwd"], ["cat", "./.env"], ["cat", ".//.env"],
                ["cat", ".ssh/../.env"], ["cat", "--", "--x/../.ssh/config"])
    yield from (["git", "diff", "--no-index", "--", "in.txt", UP + "etc/passwd"],
                ["git", "blame", "--contents", UP + "etc/passwd", "tracked.txt"],
                ["git", "blame", "--contents=/etc/passwd", "tracked.txt"],
                ["git", "cat-file", "--filters", "HEAD:tracked.txt"],
                ["git", "grep", "--no-index", "-e", "OUTSIDE"], ["git", "grep", "-e", "ENVFILE"],
                ["git", "show", "HEAD:../outside/secret.txt"], ["git", "log", "-p"],
                ["git", "ls-files", "-o"], ["git", "diff", "--no-index", "outlink", "in.txt"],
                ["git", "--no-pager", "diff", "--output=/tmp/aillm-escape"],
                ["git", "diff", "--no-index", "--output=.git/config", "in.txt", "cfg.txt"])
    for sub in GIT_SUBS:
        yield ["git", sub, "--", UP + "etc/passwd"]


def _cases() -> list[str | list[str]]:
    paths = Target(None, Path("/ws"), Path("/tmp/outside-placeholder"), b"", None).paths()
    cases: list[str | list[str]] = []
    for program in PROGRAMS:
        for path in paths:
            cases.extend(_path_shapes(program, path))
    cases.extend(_program_shapes())
    return cases


CASES = _cases()


def test_the_corpus_has_at_least_six_hundred_cases_across_every_program() -> None:
    assert len(CASES) >= 600
    first = {(c[0] if isinstance(c, list) else c.split()[0]) for c in CASES}
    assert first >= set(PROGRAMS)


@pytest.mark.parametrize("index", range(len(CASES)))
def test_no_shell_case_reads_or_writes_outside_the_workspace(target: Target, index: int) -> None:
    command = CASES[index]
    if "outside-placeholder" in str(command):  # the real outside folder is only known now
        command = _retarget(command, str(target.outside))
    target.check(command)


def _retarget(command: str | list[str], outside: str) -> str | list[str]:
    if isinstance(command, str):
        return command.replace("/tmp/outside-placeholder", outside)
    return [c.replace("tmp/outside-placeholder", outside.lstrip("/")) for c in command]


# -- what must still work inside the jail ------------------------------------------------------
def test_benign_commands_still_work_inside_the_jail(target: Target) -> None:
    invoke = target.lab.tools.invoke
    assert "exit code 0" in invoke("run_shell", {"command": "cat in.txt"}).content
    sorted_out = invoke("run_shell", {"command": ["sort", "-u", "-o", "sorted.txt", "in.txt"]})
    assert sorted_out.ok and (target.ws / "sorted.txt").read_text() == "a\nb\n"
    found = invoke("run_shell", {"command": "grep -rn one ."}).content
    assert "tracked.txt:1:one" in found
    recursive = invoke("run_shell", {"command": "grep -r TOKEN= ."})
    assert recursive.ok and ENV_MARKER not in recursive.content  # .env is empty in the jail
    log = invoke("run_shell", {"command": "git log --oneline"}).content
    assert "init" in log
    listing = invoke("run_shell", {"command": "ls -la"}).content
    assert "in.txt" in listing and "--x" in listing
