"""The Shell tool: run one allowlisted program with arguments in the workspace, never a shell.

Why no shell: every injection trick (``;``, ``&&``, ``$( )``, redirections, ``PATH=``) needs
one to interpret it. A command is an argv list, or a string split like POSIX ``shlex``
would; anything that only a shell would understand is refused with a message saying what
to send instead. Globs (``*.py``), variables and ``~`` are not expanded: arguments reach the
program literally, so ``find . -name '*.py'`` works and ``cat *.py`` looks for a file
named ``*.py``.

The program is found by name on a fixed PATH (never the caller's), runs in its own session
with the workspace as its cwd and HOME, a five-variable environment, no stdin, capped
output and a timeout that kills its whole process group. No process outlives the call,
except one that deliberately leaves its session (use the Python sandbox for untrusted code).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, Field, PositiveFloat

from aillm_lab.errors import AillmError, SafetyViolation
from aillm_lab.tools.base import RiskLevel, Tool
from aillm_lab.tools.paths import Workspace
from aillm_lab.tools.policy import CommandPolicy

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
MAX_ARGV_CHARS = 65_536  # all arguments together; Linux allows 128 KiB for a single one
MAX_ARGS = 1_000
_FLOOD_BYTES = 1 << 20  # output read and discarded past the cap before the group is killed
_REAP_S = 2.0  # how long pipes may stay open after the kill (a process that left the group)
_PROGRAM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_ENV_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_OPERATORS = frozenset({";", ";;", "&", "&&", "||", "|", "|&", "(", ")"})
_REDIRECTION = re.compile(r"\d*(>>?|<<?<?|>&|<&|&>>?|>\|)\S*")
_SHELL_HINT = ("pass a single program and its arguments, e.g. ['grep', '-n', 'TODO', 'app.py'] "
               "or \"grep -n TODO app.py\"; run several commands as several calls, and write "
               "files with the file tools instead of redirections")


class CommandError(AillmError, ValueError):
    """The command could not be understood or started (bad quoting, program not installed)."""


class CommandResult(BaseModel):
    """What a finished (or killed) program left behind; ``render()`` is what the model reads."""

    argv: list[str]
    exit_code: int = Field(description="negative: killed by that signal number")
    stdout: str = ""
    stderr: str = ""
    timed_out: bool = False
    truncated: bool = Field(default=False, description="output went past max_output_bytes")
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def render(self) -> str:
        """Exit code first, then the output, then any note on timeouts or truncation."""
        lines = [f"exit code {self.exit_code} ({self.duration_s:.2f} s)"]
        if self.stdout:
            lines += ["--- stdout ---", self.stdout.rstrip("\n")]
        if self.stderr:
            lines += ["--- stderr ---", self.stderr.rstrip("\n")]
        if self.timed_out:
            lines.append(f"[timed out after {self.duration_s:.1f} s: the program and its "
                         f"children were killed; ask for a longer timeout_s or do less]")
        if self.truncated:
            lines.append("[output truncated at the byte cap; narrow the command, e.g. with "
                         "head, grep or a path, to see the rest]")
        return "\n".join(lines)


def shell_tools(ws: Workspace, policy: CommandPolicy) -> list[Tool]:
    """The ``run_shell`` tool bound to one workspace and one command policy."""

    async def run_shell(command: str | list[str], timeout_s: PositiveFloat | None = None) -> str:
        """Run one program with its arguments in the workspace (no shell: no pipes,
        redirections, variables or glob expansion; arguments are passed literally).

        Args:
            command: the program and its arguments, as a list or one string quoted like a
                POSIX shell would quote it, e.g. "grep -rn 'def main' src".
            timeout_s: seconds before the program and its children are killed (at most
                the policy's limit).
        """
        argv, env = check_command(command, ws, policy)
        result = await run_command(argv, cwd=ws.root, policy=policy, timeout_s=timeout_s,
                                   env=env)
        return result.render()

    allowed = ", ".join(policy.allow)
    description = (f"Run one allowlisted program ({allowed}) with arguments in the workspace; "
                   f"no shell, so no pipes, redirections, variables or glob expansion. "
                   f"Returns the exit code, stdout and stderr.")
    return [Tool(run_shell, name="run_shell", description=description, risk=RiskLevel.EXECUTE)]


def parse_command(command: str | Sequence[str]) -> list[str]:
    """The argv for a string or list, refusing what only a shell would understand."""
    if isinstance(command, str):
        _refuse_shell_syntax(command)
        try:
            argv = shlex.split(command, posix=True)
        except ValueError as exc:  # "No closing quotation"
            raise CommandError(f"command {command[:200]!r} cannot be split: {exc}; "
                               f"check its quotes") from None
    else:
        argv = [str(a) for a in command]
        for token in argv:
            _refuse_shell_token(token)
    if not argv:
        raise CommandError("command is empty; give a program name and its arguments, "
                           "e.g. 'ls -la'")
    return argv


def check_command(command: str | Sequence[str], ws: Workspace,
                  policy: CommandPolicy) -> tuple[list[str], dict[str, str]]:
    """Parse and check a command; returns the argv to run and any extra environment.

    Raises ``SafetyViolation`` for anything the policy refuses, so the model learns why.
    """
    argv = parse_command(command)
    _check_size(argv)
    program, args = argv[0], argv[1:]
    resolve_program(program, policy)
    for token in args:
        _check_denied(program, token, policy)
        _check_paths(token, ws)
    if program == "git":
        from aillm_lab.tools import git  # git.py imports this module

        return git.harden_shell_argv(args, ws, policy)
    return argv, {"HOME": str(ws.root)}


def resolve_program(name: str, policy: CommandPolicy) -> str:
    """The executable for an allowlisted program name, found on ``SAFE_PATH`` only."""
    if _ENV_ASSIGNMENT.match(name):
        raise SafetyViolation("command.shell_syntax", f"{name!r} is an environment assignment, "
                              f"which needs a shell; the environment is fixed, so "
                              f"{_SHELL_HINT}")
    if not _PROGRAM.fullmatch(name):
        raise SafetyViolation("command.program_path", f"program {name!r} must be a plain ASCII "
                              f"name from the allowlist, not a path (e.g. 'ls', not '/bin/ls')")
    if name not in policy.allow:
        raise SafetyViolation("command.not_allowed", f"program {name!r} is not allowed; "
                              f"allowed programs: {', '.join(policy.allow) or 'none'}")
    if name in ("python", "python3"):
        return sys.executable  # the lab's own interpreter, whatever PATH says
    found = shutil.which(name, path=SAFE_PATH)
    if found is None:
        raise CommandError(f"program {name!r} is allowed but not installed on {SAFE_PATH}; "
                           f"install it or remove it from CommandPolicy.allow")
    return found


def safe_env(home: str | Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The whole environment a program gets: nothing is inherited from ``os.environ``."""
    env = {"PATH": SAFE_PATH, "HOME": str(home), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
           "TERM": "dumb"}
    env.update(extra or {})
    return env


async def run_command(argv: Sequence[str], *, cwd: str | Path, policy: CommandPolicy,
                      timeout_s: float | None = None,
                      env: Mapping[str, str] | None = None) -> CommandResult:
    """Start ``argv`` (program by allowlisted name) and collect its capped output.

    Arguments are not checked here (use ``check_command``); ``env`` adds to ``safe_env``.
    The process gets its own session; on a timeout, an output flood, cancellation or its
    own exit, the whole process group is killed and reaped.
    """
    exe = resolve_program(argv[0], policy)
    timeout = policy.timeout_s if timeout_s is None else min(float(timeout_s), policy.timeout_s)
    if timeout <= 0:
        raise CommandError(f"timeout_s must be > 0, got {timeout_s!r}")
    env = dict(env or {})
    start = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            exe, *argv[1:], cwd=str(cwd), env=safe_env(env.pop("HOME", str(cwd)), env),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True)
    except OSError as exc:  # not executable, cwd gone, too many processes
        raise CommandError(f"could not start {argv[0]!r} in {cwd}: {exc}") from exc
    capture = _Capture(policy.max_output_bytes)
    try:
        exit_code, timed_out = await _supervise(proc, capture, timeout)
    finally:
        _kill_group(proc.pid)
    return CommandResult(argv=list(argv), exit_code=exit_code, stdout=capture.text("stdout"),
                         stderr=capture.text("stderr"), timed_out=timed_out,
                         truncated=capture.truncated, duration_s=time.monotonic() - start)


# -- checks -----------------------------------------------------------------------------------
def _refuse_shell_syntax(command: str) -> None:
    """Scan a command string like a shell would, refusing the parts only a shell runs."""
    if "\n" in command or "\r" in command:
        _shell_syntax("a newline (two commands in one)")
    quote: str | None = None
    i = 0
    while i < len(command):
        ch, nxt = command[i], command[i + 1:i + 2]
        if quote == "'":
            quote = None if ch == "'" else quote
        elif ch == "\\":
            i += 1  # the next character is literal (outside single quotes)
        elif ch == '"':
            quote = None if quote == '"' else '"'
        elif ch == "'" and quote is None:
            quote = "'"
        elif ch == "`" or (ch == "$" and nxt in ("(", "{")):
            _shell_syntax(f"command or parameter substitution {ch + nxt!r}")
        elif ch == "$" and (nxt.isalpha() or nxt == "_"):
            _shell_syntax("a variable ($NAME); variables are not expanded")
        elif quote is None and ch in ";&|<>()":
            _shell_syntax(f"the shell operator {ch!r}")
        i += 1


def _refuse_shell_token(token: str) -> None:
    """List form: an argument that is a shell operator or substitution is a mistake."""
    if token in _OPERATORS or _REDIRECTION.fullmatch(token):
        _shell_syntax(f"the shell operator {token!r}")
    if "$(" in token or "`" in token:
        _shell_syntax(f"command substitution in {token!r}")


def _shell_syntax(what: str) -> None:
    raise SafetyViolation("command.shell_syntax",
                          f"the command contains {what}, which needs a shell, and commands "
                          f"run without one; {_SHELL_HINT}")


def _check_size(argv: list[str]) -> None:
    if len(argv) > MAX_ARGS or sum(len(a) for a in argv) > MAX_ARGV_CHARS:
        raise SafetyViolation("command.too_long", f"the command has {len(argv)} arguments and "
                              f"{sum(len(a) for a in argv)} characters; the limits are "
                              f"{MAX_ARGS} and {MAX_ARGV_CHARS}: put long input in a file")
    for token in argv:
        if "\x00" in token:
            raise SafetyViolation("command.bad_argument",
                                  f"argument {token[:40]!r} contains a NUL byte; remove it")


def _check_denied(program: str, token: str, policy: CommandPolicy) -> None:
    """Exact match, ``--opt=value``, an abbreviated long option, or a combined short flag."""
    for denied in policy.deny_args.get(program, []):
        name = token.split("=", 1)[0]
        hit = token == denied or name == denied
        if denied.startswith("--") and name.startswith("--") and len(name) > 3:
            hit = hit or denied.startswith(name)  # git and getopt accept '--upload-pa'
        if (len(denied) == 2 and denied[0] == "-" and not token.startswith("--")
                and re.match(r"-[A-Za-z]*?" + re.escape(denied[1]), token)):
            hit = True  # '-Sc' is '-S -c', and '-Ocmd' is '-O cmd'
        if hit:
            raise SafetyViolation("command.denied_argument",
                                  f"argument {token!r} is not allowed for {program} "
                                  f"(denied: {', '.join(policy.deny_args[program])})")


def _check_paths(token: str, ws: Workspace) -> None:
    """Arguments that name paths must stay in the workspace (``ws.resolve`` decides)."""
    candidates = [token]
    if token.startswith("-"):
        candidates = [token.split("=", 1)[1]] if "=" in token else []
        if not candidates and not token.startswith("--") and len(token) > 2:
            candidates = [token[2:]]  # an attached value, as in '-o/tmp/x'
    elif "=" in token:
        candidates.append(token.split("=", 1)[1])
    for cand in candidates:
        if cand and (cand.startswith("/") or ".." in PurePosixPath(cand).parts
                     or os.path.lexists(ws.root / cand)):
            try:
                ws.resolve(cand)
            except SafetyViolation as exc:
                raise SafetyViolation(exc.rule, f"{exc.detail} (arguments that look like paths "
                                      f"are checked; if {token!r} is a pattern rather than a "
                                      f"path, write it without a leading '/' or '..')") from None


# -- process supervision ----------------------------------------------------------------------
class _Capture:
    """Keeps the first ``limit`` bytes of stdout and stderr together; counts the rest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen = 0
        self.kept: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        self.flood = asyncio.Event()

    def add(self, stream: str, chunk: bytes) -> None:
        room = self.limit - sum(len(b) for b in self.kept.values())
        if room > 0:
            self.kept[stream] += chunk[:room]
        self.seen += len(chunk)
        if self.seen > self.limit + max(self.limit, _FLOOD_BYTES):
            self.flood.set()

    @property
    def truncated(self) -> bool:
        return self.seen > sum(len(b) for b in self.kept.values())

    def text(self, stream: str) -> str:
        return self.kept[stream].decode("utf-8", errors="replace")


async def _drain(reader: asyncio.StreamReader | None, stream: str, capture: _Capture) -> None:
    while reader is not None and (chunk := await reader.read(65_536)):
        capture.add(stream, chunk)


async def _supervise(proc: asyncio.subprocess.Process, capture: _Capture,
                     timeout: float) -> tuple[int, bool]:
    """Wait for exit and EOF, killing the group on a timeout or an output flood."""
    readers = [asyncio.create_task(_drain(proc.stdout, "stdout", capture)),
               asyncio.create_task(_drain(proc.stderr, "stderr", capture))]

    async def finish() -> int:
        code = await proc.wait()
        _kill_group(proc.pid)  # background children end with the call
        await asyncio.gather(*readers)
        return code

    main = asyncio.create_task(finish())
    flood = asyncio.create_task(capture.flood.wait())
    timed_out = False
    try:
        done, _ = await asyncio.wait({main, flood}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if main not in done:
            timed_out = flood not in done
            _kill_group(proc.pid)
            try:
                await asyncio.wait_for(asyncio.shield(main), _REAP_S)
            except TimeoutError:  # a process that left our session still holds the pipes
                await proc.wait()
                _close_pipes(proc, [main, *readers])
        if main.done() and not main.cancelled():
            return main.result(), timed_out
        return (-signal.SIGKILL if proc.returncode is None else proc.returncode), timed_out
    finally:
        flood.cancel()
        if not main.done():  # cancelled from outside: kill, reap, then let go of the pipes
            _kill_group(proc.pid)
            with contextlib.suppress(Exception):
                await asyncio.shield(proc.wait())
            _close_pipes(proc, [main, *readers])


def _close_pipes(proc: asyncio.subprocess.Process, tasks: list[asyncio.Task[object]]) -> None:
    for task in tasks:
        task.cancel()
    transport = getattr(proc, "_transport", None)  # Process has no public close()
    if transport is not None:
        transport.close()


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


__all__ = ["SAFE_PATH", "CommandError", "CommandResult", "check_command", "parse_command",
           "resolve_program", "run_command", "safe_env", "shell_tools"]
