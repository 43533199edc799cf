"""Running one program for a tool: found on a fixed PATH, confined, capped, killed on time.

Shared by the Shell and Git tools (each checks its own arguments first). With a ``Jail``
the program runs in its namespaces (see ``jail.py``); without one it runs as a plain child
in its own session. Either way: a fixed five-variable environment plus what the tool adds,
no stdin, output capped at the policy's bytes, and a timeout, an output flood or a
cancellation kills the program and everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel, Field

from aillm_lab.errors import AillmError, SafetyViolation
from aillm_lab.tools.policy import CommandPolicy

if TYPE_CHECKING:
    from aillm_lab.tools.jail import Jail

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
_FLOOD_BYTES = 1 << 20  # output read and discarded past the cap before the group is killed
_REAP_S = 2.0  # how long pipes may stay open after the kill (a process that left the group)
_PROGRAM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_ENV_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


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
    confined: bool = Field(default=False, description="ran inside the OS jail")
    removed: list[str] = Field(default_factory=list,
                               description="traps the jail removed after the call")

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
        lines += [f"[{note}]" for note in self.removed]
        return "\n".join(lines)


def resolve_program(name: str, policy: CommandPolicy) -> str:
    """The executable for an allowlisted program name, found on ``SAFE_PATH`` only."""
    if _ENV_ASSIGNMENT.match(name):
        raise SafetyViolation("command.shell_syntax", f"{name!r} is an environment assignment, "
                              f"which needs a shell; the environment is fixed, so pass a "
                              f"single program and its arguments, e.g. ['ls', '-la']")
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
                      timeout_s: float | None = None, env: Mapping[str, str] | None = None,
                      jail: Jail | None = None, writable: bool = True,
                      protect_git: str = "all") -> CommandResult:
    """Start ``argv`` (program by allowlisted name) and collect its capped output.

    Arguments are not checked here (the tools do that); ``env`` adds to ``safe_env``. With
    ``jail``, the program runs confined on the jail's runner loop (``writable``: may the
    workspace change; ``protect_git``: see ``Jail.spawn``); a jail that is unavailable here
    raises ``CommandError`` rather than running unconfined behind the caller's back.
    """
    exe = resolve_program(argv[0], policy)
    timeout = policy.timeout_s if timeout_s is None else min(float(timeout_s), policy.timeout_s)
    if timeout <= 0:
        raise CommandError(f"timeout_s must be > 0, got {timeout_s!r}")
    env = dict(env or {})
    full_env = safe_env(env.pop("HOME", str(cwd)), env)
    if argv[0] in ("python", "python3"):  # Python finds its prefix (stdlib) from argv[0]
        argv = [exe, *argv[1:]]
    if jail is None:
        return await _run(list(argv), exe, Path(cwd), full_env, policy, timeout, None,
                          writable, protect_git)
    if not await jail.available():
        raise CommandError(f"OS confinement is unavailable here ({jail.why}), so "
                           f"{argv[0]!r} was not run")
    return await jail.runner.arun(_run(list(argv), exe, Path(cwd), full_env, policy, timeout,
                                       jail, writable, protect_git))


async def _run(argv: list[str], exe: str, cwd: Path, env: dict[str, str],
               policy: CommandPolicy, timeout: float, jail: Jail | None, writable: bool,
               protect_git: str) -> CommandResult:
    if jail is None:
        return await _supervised(argv, exe, cwd, env, policy, timeout, None, writable,
                                 protect_git)
    async with jail.lock:
        result = await _supervised(argv, exe, cwd, env, policy, timeout, jail, writable,
                                   protect_git)
        if writable:
            result.removed = await jail.sweep(git_made=argv[0] == "git")
        jail.done()
        return result


async def _supervised(argv: list[str], exe: str, cwd: Path, env: dict[str, str],
                      policy: CommandPolicy, timeout: float, jail: Jail | None, writable: bool,
                      protect_git: str) -> CommandResult:
    start = time.monotonic()
    proc: _Process
    try:
        if jail is not None:
            limits = {"memory_mb": policy.memory_mb, "max_processes": policy.max_processes,
                      "max_file_mb": policy.max_file_mb}
            proc = await jail.spawn(argv, exe, cwd=cwd, env=env, writable=writable,
                                    protect_git=protect_git, git=argv[0] == "git",
                                    limits=limits, tmp_mb=policy.tmp_mb)
        else:
            proc = _Plain(await asyncio.create_subprocess_exec(
                exe, *argv[1:], cwd=str(cwd), env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                start_new_session=True))
    except OSError as exc:  # not executable, cwd gone, too many processes
        raise CommandError(f"could not start {argv[0]!r} in {cwd}: {exc}") from exc
    capture = _Capture(policy.max_output_bytes)
    try:
        exit_code, timed_out = await _supervise(proc, capture, timeout)
    finally:
        proc.kill()
    return CommandResult(argv=argv, exit_code=exit_code, stdout=capture.text("stdout"),
                         stderr=capture.text("stderr"), timed_out=timed_out,
                         truncated=capture.truncated, duration_s=time.monotonic() - start,
                         confined=jail is not None)


# -- supervision ------------------------------------------------------------------------------
class _Process(Protocol):
    stdout: asyncio.StreamReader | None
    stderr: asyncio.StreamReader | None

    @property
    def returncode(self) -> int | None: ...
    async def wait(self) -> int: ...
    def kill(self) -> None: ...
    def close_pipes(self) -> None: ...


class _Plain:
    """An unconfined child in its own session: killing it kills its process group."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.stdout, self.stderr = proc.stdout, proc.stderr

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    async def wait(self) -> int:
        return await self.proc.wait()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def close_pipes(self) -> None:
        transport = getattr(self.proc, "_transport", None)  # Process has no public close()
        if transport is not None:
            transport.close()


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


async def _supervise(proc: _Process, capture: _Capture, timeout: float) -> tuple[int, bool]:
    """Wait for exit and EOF, killing the program on a timeout or an output flood."""
    readers = [asyncio.create_task(_drain(proc.stdout, "stdout", capture)),
               asyncio.create_task(_drain(proc.stderr, "stderr", capture))]

    async def finish() -> int:
        code = await proc.wait()
        proc.kill()  # background children end with the call
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
            proc.kill()
            try:
                await asyncio.wait_for(asyncio.shield(main), _REAP_S)
            except TimeoutError:  # a process that left our session still holds the pipes
                await _reaped(proc)
                _close(proc, [main, *readers])
        if main.done() and not main.cancelled():
            return main.result(), timed_out
        return (-signal.SIGKILL if proc.returncode is None else proc.returncode), timed_out
    finally:
        flood.cancel()
        if not main.done():  # cancelled from outside: kill, reap, then let go of the pipes
            proc.kill()
            with contextlib.suppress(Exception):
                await _reaped(proc)
            _close(proc, [main, *readers])
        elif not isinstance(proc, _Plain):
            proc.close_pipes()  # a jailed call's pipes are ours to close


async def _reaped(proc: _Process) -> None:
    """Wait for a killed program's exit, but never forever: a supervisor that lost track of
    it (a launcher gone) must still return the call."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(proc.wait()), 5 * _REAP_S)


def _close(proc: _Process, tasks: list[asyncio.Task[object]]) -> None:
    for task in tasks:
        task.cancel()
    proc.close_pipes()


__all__ = ["SAFE_PATH", "CommandError", "CommandResult", "resolve_program", "run_command",
           "safe_env"]
