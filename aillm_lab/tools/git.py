"""The Git tools: status, diff, log, show, branch, add and commit on repositories in the workspace.

Why the hardening: git runs other programs on request of its configuration (hooks,
fsmonitor, pagers, external diff, textconv, credential helpers, transports), and reads
options from anything that starts with ``-``. So every call runs the git CLI through
``run_command`` with no system or global config, hooks pointed at ``/dev/null``, those
settings overridden on the command line, repository discovery stopped at the workspace,
``--end-of-options`` before revisions and ``--`` before ``:(literal)`` pathspecs, and a
fixed identity for commits. A repository whose git data lives outside the workspace is
refused; ``git_paths`` keeps deny-listed files out of what git prints from history.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from aillm_lab.errors import SafetyViolation
from aillm_lab.tools.base import RiskLevel, Tool
from aillm_lab.tools.git_paths import (
    CONTENT_READS,
    check_objects,
    exclude_pathspecs,
    guard_read,
    object_refs,
)
from aillm_lab.tools.jail import Jail
from aillm_lab.tools.paths import Workspace
from aillm_lab.tools.policy import CommandPolicy
from aillm_lab.tools.process import CommandError, CommandResult, run_command

DEFAULT_IDENTITY = ("AILLM Lab agent", "agent@aillm-lab.invalid")
# Settings that would start a program, each neutralised on the command line (which wins
# over the repository's own config).
HARDENING: tuple[str, ...] = (
    "--no-pager",
    "-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", "-c", "core.pager=cat",
    "-c", "core.sshCommand=false", "-c", "core.askPass=", "-c", "credential.helper=",
    "-c", "protocol.allow=never", "-c", "commit.gpgSign=false", "-c", "tag.gpgSign=false",
    "-c", "gpg.program=false", "-c", "gpg.ssh.program=false", "-c", "gpg.x509.program=false",
    "-c", "safe.bareRepository=explicit", "-c", "color.ui=false",
    # inline submodule diffs would skip the deny-list exclusions (git_paths)
    "-c", "diff.submodule=short",
    # never into a submodule's work tree: its own config (filters, fsmonitor) would apply
    # there, and a planted one names anything; a changed submodule commit still shows
    "-c", "submodule.recurse=false", "-c", "status.submoduleSummary=false",
    "-c", "diff.ignoreSubmodules=dirty")
# The same on the command line of the subcommands that look at work trees: a submodule's
# own ``ignore`` setting (.gitmodules) wins over the config above, this flag over both.
NO_SUBMODULE_WORKTREES = "--ignore-submodules=dirty"
_WORKTREE_READS = frozenset({"status", "diff"})
# Not --literal-pathspecs: it would turn the deny-list exclusions into names matching nothing.
_GLOBAL_OPTIONS = frozenset({"--no-pager", "-P", "--no-replace-objects", "--no-optional-locks",
                             "--version"})
READ_SUBCOMMANDS = frozenset({"status", "diff", "log", "show", "rev-parse", "ls-files",
                              "ls-tree", "cat-file", "blame", "grep", "describe", "shortlog",
                              "version", None})
_DIFFING = frozenset({"diff", "show", "log"})
_REV = re.compile(r"[A-Za-z0-9_./~^@{}:+-]{1,256}")
_BRANCH = re.compile(r"[A-Za-z0-9_./+-]{1,200}")
_MAX_MESSAGE_CHARS = 20_000
_MAX_POINTER_BYTES = 4096  # a .git file or commondir holds one path
_DRIVER_KEYS = r"^(filter|diff|merge)\..+\.[a-z]+$"
_DRIVER_SETTINGS = {"filter": ("clean=", "smudge=", "process=", "required=false"),
                    "diff": ("textconv=", "command="), "merge": ("driver=",)}


def git_tools(ws: Workspace, policy: CommandPolicy, *,
              identity: tuple[str, str] = DEFAULT_IDENTITY, jail: Jail | None = None
              ) -> list[Tool]:
    """The git tools bound to one workspace; ``identity`` is (name, email) for commits.

    Git runs in ``jail`` (one is made for ``ws`` if not given): read tools see the whole
    workspace read-only, write tools may change it but never ``.git/config``, hooks or info.
    """
    git = _Git(ws, policy, identity, jail if jail is not None else Jail(ws))

    async def git_status(repo: str = ".") -> str:
        """Show the current branch and the changed, staged and untracked files.

        Args:
            repo: the repository folder, relative to the workspace.
        """
        return await git.run(repo, ["status", "--short", "--branch", NO_SUBMODULE_WORKTREES,
                                    "--"], read=True)

    async def git_diff(path: str | None = None, staged: bool = False, repo: str = ".") -> str:
        """Show uncommitted changes as a unified diff.

        Args:
            path: only this file or folder (relative to the workspace).
            staged: show what is staged for the next commit instead of unstaged changes.
            repo: the repository folder, relative to the workspace.
        """
        args = ["--no-ext-diff", "--no-textconv", NO_SUBMODULE_WORKTREES,
                *(["--staged"] if staged else [])]
        return await git.run(repo, ["diff", *args, "--", *git.paths([path] if path else [])],
                             read=True)

    async def git_log(max_count: Annotated[int, Field(ge=1, le=1000)] = 20,
                      repo: str = ".") -> str:
        """List recent commits, newest first: short hash, date, author and subject.

        Args:
            max_count: how many commits to list.
            repo: the repository folder, relative to the workspace.
        """
        if not 1 <= max_count <= 1000:  # until Tool keeps Annotated constraints
            raise CommandError(f"max_count must be between 1 and 1000, got {max_count}")
        return await git.run(repo, ["log", f"--max-count={max_count}", "--date=short",
                                    "--format=%h %ad %an: %s"])

    async def git_show(rev: str = "HEAD", repo: str = ".") -> str:
        """Show one commit (message, file stats and patch), or a file at a revision.

        Args:
            rev: a commit, branch, tag or 'REV:path', e.g. 'HEAD~1' or 'main:README.md'.
            repo: the repository folder, relative to the workspace.
        """
        return await git.run(repo, ["show", "--no-ext-diff", "--no-textconv", "--stat", "--patch",
                                    "--end-of-options", check_rev(rev), "--"], read=True)

    async def git_branch(repo: str = ".") -> str:
        """List the branches, marking the current one.

        Args:
            repo: the repository folder, relative to the workspace.
        """
        return await git.run(repo, ["branch", "--list", "-v"])

    async def git_create_branch(name: str, repo: str = ".") -> str:
        """Create a branch at HEAD (no checkout).

        Args:
            name: the new branch's name, e.g. 'feature/parser'.
            repo: the repository folder, relative to the workspace.
        """
        return await git.run(repo, ["branch", "--end-of-options", check_branch(name)],
                             write=True)

    async def git_add(paths: Annotated[list[str], Field(min_length=1)], repo: str = ".") -> str:
        """Stage files for the next commit.

        Args:
            paths: files or folders relative to the workspace, e.g. ['src/app.py'].
            repo: the repository folder, relative to the workspace.
        """
        if not paths:
            raise CommandError("paths is empty; name the files to stage, e.g. ['src/app.py']")
        return await git.run(repo, ["add", "--", *git.paths(paths)], write=True)

    async def git_commit(message: str, repo: str = ".") -> str:
        """Commit what is staged, with the lab's fixed author identity.

        Args:
            message: the commit message: a short subject line, then details if useful.
            repo: the repository folder, relative to the workspace.
        """
        return await git.run(repo, ["commit", "--no-verify", "--no-gpg-sign",
                                    f"--message={check_message(message)}"], write=True)

    read, write = RiskLevel.READ, RiskLevel.WRITE
    return [Tool(git_status, risk=read), Tool(git_diff, risk=read), Tool(git_log, risk=read),
            Tool(git_show, risk=read), Tool(git_branch, risk=read),
            Tool(git_create_branch, risk=write), Tool(git_add, risk=write),
            Tool(git_commit, risk=write)]


def check_rev(rev: str) -> str:
    """A revision that git cannot mistake for an option."""
    if rev.startswith("-") or not _REV.fullmatch(rev):
        raise SafetyViolation("git.bad_revision", f"revision {rev[:80]!r} is not allowed: use a "
                              f"commit hash, branch, tag or expression like 'HEAD~2' or "
                              f"'main:path/file' (no spaces, not starting with '-')")
    return rev


def check_branch(name: str) -> str:
    """A branch name that is not an option and has no characters git would refuse anyway."""
    if (name.startswith("-") or not _BRANCH.fullmatch(name) or ".." in name
            or name.endswith((".lock", "/", ".")) or "//" in name):
        raise SafetyViolation("git.bad_branch", f"branch name {name[:80]!r} is not allowed: use "
                              f"letters, digits and . _ / + -, not starting with '-', "
                              f"e.g. 'feature/login'")
    return name


def check_message(message: str) -> str:
    if not message.strip():
        raise CommandError("message is empty; describe the change in a short subject line")
    if len(message) > _MAX_MESSAGE_CHARS or "\x00" in message:
        raise SafetyViolation("git.bad_message", f"the commit message must be under "
                              f"{_MAX_MESSAGE_CHARS} characters with no NUL bytes")
    return message


def git_env(ws: Workspace, identity: tuple[str, str] = DEFAULT_IDENTITY) -> dict[str, str]:
    """Environment on top of ``safe_env``: no system/global config, no prompts, no walking up.

    Pathspec magic stays on (no ``GIT_LITERAL_PATHSPECS``): the deny-list exclusions are
    magic pathspecs, and the tools mark their own paths ``:(literal)``.
    """
    name, email = identity
    env = {"HOME": str(ws.root), "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null",
           "GIT_TERMINAL_PROMPT": "0", "GIT_PAGER": "cat", "GIT_EDITOR": ":",
           "GIT_SEQUENCE_EDITOR": ":", "GIT_OPTIONAL_LOCKS": "0",
           "GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
           "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}
    if ws.root.parent != ws.root:
        env["GIT_CEILING_DIRECTORIES"] = str(ws.root.parent)
    return env


def check_repo(folder: Path, ws: Workspace) -> Path | None:
    """The top folder of the repository holding ``folder`` (None: none up to the root).

    Refuses (``git.outside_workspace``) git data that leaves the workspace. This runs on the
    host, before any jail, so a ``.git`` file and ``commondir`` are read only as regular files
    opened without following links, at most 4 KiB, first line only; a link, FIFO or device is
    refused unread. Messages name the workspace entry, never what it holds: the content may
    be a file from outside that a planted link pointed at.
    """
    for parent in (folder, *folder.parents):
        try:
            st = os.lstat(parent / ".git")
        except FileNotFoundError:
            if parent == ws.root:
                return None
            continue
        gitdir = parent / ".git"
        if stat.S_ISREG(st.st_mode):
            line = _pointer(parent, ".git", ws)
            if not line.startswith("gitdir:"):
                return parent  # not a gitfile: git itself refuses it
            gitdir = _inside(parent, line[len("gitdir:"):].strip(), ws.relative(gitdir), ws)
        elif not stat.S_ISDIR(st.st_mode):
            raise _outside(ws, parent, ws.relative(gitdir), "is a symbolic link or special "
                           "file, not a folder or a gitfile")
        if os.path.lexists(gitdir / "commondir"):
            common = _pointer(gitdir, "commondir", ws)
            _inside(gitdir, common, ws.relative(gitdir / "commondir"), ws)
        return parent
    return None


def harden_shell_argv(args: list[str], ws: Workspace,
                      policy: CommandPolicy) -> tuple[list[str], dict[str, str]]:
    """``run_shell git ...``: allowlisted subcommand, hardened argv and environment, and the
    deny-list checks and exclusions of ``git_paths.guard_read`` (object ids are checked by
    ``run_shell_git``, which may run git)."""
    sub = next((a for a in args if not a.startswith("-")), None)
    for arg in args[:args.index(sub) if sub else len(args)]:
        if arg not in _GLOBAL_OPTIONS:
            raise SafetyViolation("command.denied_argument",
                                  f"git option {arg!r} before the subcommand is not allowed; "
                                  f"allowed there: {', '.join(sorted(_GLOBAL_OPTIONS))}")
    if sub is None and "--version" not in args:
        raise CommandError("git needs a subcommand, e.g. 'git status'")
    if sub is not None and sub not in policy.git_subcommands:
        raise SafetyViolation("command.git_subcommand",
                              f"'git {sub}' is not allowed from run_shell (allowed: "
                              f"{', '.join(policy.git_subcommands)}); use the git_* tools "
                              f"for writes, which ask for approval")
    top = check_repo(ws.root, ws)
    if sub is not None:
        at = args.index(sub) + 1
        rest = guard_read(sub, args[at:], ws, top=ws.relative(top or ws.root), cwd=".")
        # the repository's diff.external / textconv would start programs
        extra = ["--no-ext-diff", "--no-textconv"] if sub in _DIFFING else []
        args = [*args[:at], *extra, *_last_option(rest, sub, len(args) - at)]
    return ["git", *HARDENING, *args], git_env(ws)


class _Git:
    """Runs hardened git commands in a repository folder of one workspace."""

    def __init__(self, ws: Workspace, policy: CommandPolicy, identity: tuple[str, str],
                 jail: Jail) -> None:
        self.ws, self.policy, self.identity, self.jail = ws, policy, identity, jail

    def locate(self, repo: str) -> tuple[Path, str]:
        """The ``repo`` folder, and its repository's top folder relative to the workspace."""
        folder = self.ws.resolve(repo)
        if not folder.is_dir():
            raise CommandError(f"repo {repo!r} is not a folder in the workspace; give the "
                               f"repository's folder relative to it, e.g. '.'")
        return folder, self.ws.relative(check_repo(folder, self.ws) or folder)

    def paths(self, paths: list[str]) -> list[str]:
        """Absolute paths inside the workspace, passed after ``--`` as literal pathspecs."""
        return [":(literal)" + str(self.ws.resolve(p)) for p in paths]

    async def run(self, repo: str, args: list[str], *, write: bool = False,
                  read: bool = False) -> str:
        """``git args``; ``read``: with the deny-list checks and exclusions of ``git_paths``,
        otherwise exclusions only after a ``--`` (a deny-listed file is never staged: the
        jail shows it empty)."""
        folder, top = self.locate(repo)
        sub, rest = args[0], args[1:]
        if read:
            rest = guard_read(sub, rest, self.ws, top=top, cwd=self.ws.relative(folder))
            await check_objects(sub, object_refs(sub, rest), lambda name: object_type(
                name, cwd=folder, ws=self.ws, policy=self.policy, jail=self.jail))
        elif "--" in rest:
            rest = [*rest, *exclude_pathspecs(self.ws, top)]
        result = await run_git([sub, *rest], cwd=folder, ws=self.ws, policy=self.policy,
                               jail=self.jail, write=write, identity=self.identity)
        return result.render()


async def run_git(args: list[str], *, cwd: Path, ws: Workspace, policy: CommandPolicy,
                  jail: Jail | None, write: bool = False, timeout_s: float | None = None,
                  identity: tuple[str, str] = DEFAULT_IDENTITY, drivers: bool = True
                  ) -> CommandResult:
    """Hardened git: ``HARDENING`` plus every filter/diff/merge driver the repository's
    config names switched off, confined in ``jail`` (None: unconfined, approval asked).

    ``drivers=False`` skips looking the drivers up, for commands that never run one.
    """
    env = git_env(ws, identity)
    kwargs: dict[str, Any] = dict(cwd=cwd, policy=policy, env=env, jail=jail,
                                  writable=write, protect_git="config" if write else "all")
    overrides: list[str] = []
    if drivers:
        found = await run_command(
            ["git", *HARDENING, "config", "-z", "--name-only", "--get-regexp", _DRIVER_KEYS],
            **{**kwargs, "writable": False, "protect_git": "all"})
        overrides = driver_overrides(found.stdout)
    return await run_command(["git", *HARDENING, *overrides, *args], timeout_s=timeout_s,
                             **kwargs)


async def object_type(name: str, *, cwd: Path, ws: Workspace, policy: CommandPolicy,
                      jail: Jail | None) -> str | None:
    """``git cat-file -t name``, read-only and jailed like every read: None if no object."""
    result = await run_git(["cat-file", "-t", "--end-of-options", name], cwd=cwd, ws=ws,
                           policy=policy, jail=jail, drivers=False)
    return result.stdout.strip() if result.ok else None


async def run_shell_git(argv: list[str], *, ws: Workspace, policy: CommandPolicy,
                        jail: Jail | None, timeout_s: float | None = None) -> CommandResult:
    """``run_shell git ...`` after ``harden_shell_argv``: objects named by id are checked
    first (``git_paths.check_objects``); ``.git`` stays read-only unless the policy allows a
    writing subcommand (its config, hooks and info stay read-only even then)."""
    args = argv[len(HARDENING) + 1:]
    sub = next((a for a in args if not a.startswith("-")), None)
    if sub in CONTENT_READS:
        refs = object_refs(sub, args[args.index(sub) + 1:])
        await check_objects(sub, refs, lambda name: object_type(
            name, cwd=ws.root, ws=ws, policy=policy, jail=jail))
    return await run_git(args, cwd=ws.root, ws=ws, policy=policy, jail=jail,
                         write=sub not in READ_SUBCOMMANDS, timeout_s=timeout_s)


def _last_option(args: list[str], sub: str, given: int) -> list[str]:
    """``args`` (the first ``given`` from the caller, then exclusions) with
    ``NO_SUBMODULE_WORKTREES`` after every option the caller gave, for ``status``/``diff``
    (the last one wins): before ``--`` or ``--end-of-options``, else before the exclusions."""
    if sub not in _WORKTREE_READS:
        return args
    at = next((i for i, a in enumerate(args[:given]) if a in ("--", "--end-of-options")),
              given)
    return [*args[:at], NO_SUBMODULE_WORKTREES, *args[at:]]


def driver_overrides(names: str) -> list[str]:
    """``-c`` settings that empty every driver command found (``git config -z --name-only``).

    Why: a ``.gitattributes`` line can point any file at a driver, and a driver is a shell
    command; emptied, git falls back to plain text (filters, diffs) or its own merge.
    """
    out: list[str] = []
    for key in dict.fromkeys(n for n in names.split("\0") if n):
        section, _, rest = key.partition(".")
        sub = rest.rpartition(".")[0]
        if "=" in sub or "\n" in sub:
            raise SafetyViolation("git.untrusted_driver", f"the repository's config names a "
                                  f"{section} driver {sub[:60]!r} that cannot be switched off "
                                  f"safely; remove it from .git/config")
        for setting in _DRIVER_SETTINGS.get(section.lower(), ()):
            out += ["-c", f"{section}.{sub}.{setting}"]
    return out


def _pointer(folder: Path, name: str, ws: Workspace) -> str:
    """The first line of ``folder/name``: a regular file, opened without following links."""
    entry = ws.relative(folder / name)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            fd = os.open(name, flags, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        why = "is a symbolic link" if exc.errno == errno.ELOOP else "cannot be opened"
        raise _outside(ws, folder, entry, why) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _outside(ws, folder, entry, "is not a regular file")
        data = os.read(fd, _MAX_POINTER_BYTES + 1)
    finally:
        os.close(fd)
    line, newline, _ = data.partition(b"\n")
    if len(data) > _MAX_POINTER_BYTES and not newline:
        raise _outside(ws, folder, entry, f"is longer than {_MAX_POINTER_BYTES} bytes")
    try:
        return line.decode("utf-8").rstrip("\r")
    except UnicodeDecodeError:
        raise _outside(ws, folder, entry, "is not UTF-8 text") from None


def _inside(folder: Path, pointer: str, entry: str, ws: Workspace) -> Path:
    """Where ``pointer`` (read from ``entry``) leads: a folder in the workspace, no links."""
    target = os.path.normpath(os.path.join(folder, pointer))
    if ("\0" in pointer or not ws.contains(target)
            or os.path.realpath(target) != target or not os.path.isdir(target)):
        raise _outside(ws, folder, entry, "points to git data outside the workspace, through "
                       "a symbolic link, or at no folder")
    return Path(target)


def _outside(ws: Workspace, folder: Path, entry: str, why: str) -> SafetyViolation:
    repo = ws.relative(folder.parent if folder.name == ".git" else folder)
    return SafetyViolation("git.outside_workspace", f"the repository at {repo!r} cannot be "
                           f"used: {entry!r} {why}; git data must be a folder inside the "
                           f"workspace, so use a repository created inside it (git init)")


__all__ = ["DEFAULT_IDENTITY", "HARDENING", "NO_SUBMODULE_WORKTREES", "READ_SUBCOMMANDS",
           "check_branch", "check_message", "check_repo", "check_rev", "driver_overrides",
           "git_env", "git_tools", "harden_shell_argv", "object_type", "run_git",
           "run_shell_git"]
