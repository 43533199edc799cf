"""``PythonSandbox``: run model-written Python in a separate, limited worker process.

Why a process and not ``exec`` in ours: smolagents' in-process executor was escaped
(CVE-2025-9959). The boundary is the operating system; the audit hook only explains.

The boundary, in layers:

* a persistent worker (``python -I -B _sandbox_worker.py``, started on the runner loop in
  its own session) with an environment built from nothing (no key or token of ours: only
  PATH, HOME=workdir, LANG, TMPDIR, MPLBACKEND=Agg, thread caps), a private temporary folder
  as cwd and HOME, and stdin/stdout pipes carrying length-prefixed JSON. The worker is run
  by path, so it never imports ``aillm_lab`` or reads our settings;
* resource limits the worker sets on itself before any user code (``setrlimit`` in the
  child rather than ``preexec_fn``, which can deadlock a threaded parent): RLIMIT_AS
  (``memory_mb``), RLIMIT_CPU (``cpu_s``, re-armed before each call, since the kernel counts
  a process's whole life), RLIMIT_NOFILE, RLIMIT_NPROC, RLIMIT_FSIZE and RLIMIT_CORE 0.
  RLIMIT_NPROC counts every process and thread *of the user*, so in a container where all
  runs as one uid the worker shares that budget with everything else there; it is set to
  the uid's current tasks plus ``max_processes``, and root is not counted at all, so the
  seccomp filter is what actually stops forks;
* a wall-clock timeout (``wall_s`` or per call) that SIGKILLs the whole process group; the
  next call starts a fresh worker and its result says that earlier variables are gone;
* on Linux, a new network namespace (inside a new user namespace when possible, so even a
  root worker holds capabilities only there and cannot raise its hard limits), Landlock
  (read-only on the interpreter's folders and system libraries, read-write on the sandbox
  folders, nothing else; no TCP; no signals out) and seccomp (no exec, fork, ptrace,
  namespace, ownership or xattr changes, no signals to other processes, and with the
  network off no ``socket``/``connect``, since a netns does not hide Unix sockets on disk).
  Known gap: code that got past the hook could still ``chmod`` files its uid owns, which
  neither Landlock nor seccomp can check by path.

Defence in depth: an audit hook refuses sockets, subprocesses, ``ctypes``, heap walking,
new audit hooks, raising limits, links, and files outside the sandbox folder (reads are
also allowed under Python's own folders, so imports work; /etc, /proc and home folders are
not readable, /etc/passwd included). Its refusals are readable ``PermissionError``s the
model can act on, and each is listed in ``SandboxResult.refused``. It is not a boundary:
Python code in the same process can race it (e.g. mutate a path object from a thread).

What each platform gets: Linux with user namespaces, Landlock (>= 5.13) and seccomp: all
of the above (``protections`` says which layers a session got). Linux without them: the
process, limits, whatever of netns/Landlock/seccomp exists, and the hook. macOS: the
process, limits and the hook only, so do not run untrusted code there. Windows: not
supported (``SandboxUnavailable``).

Between calls nothing runs: a call returns once the Python threads its code started have
ended; threads still running a second after the code finished get the worker stopped (its
variables are lost, and the result says so), since a thread cannot be killed on its own.

Disk: each file is capped by RLIMIT_FSIZE, and the sandbox folders together (workdir and
temporary folder, plus files the worker deleted but holds open) by ``max_disk_mb``. Their
size is measured every 0.1 s while code runs and once after; past the quota the worker is
stopped, the files this call created are removed, and the call is refused
(``code.disk_quota``). A fast burst can overshoot by what the disk writes in 0.1 s before
it is stopped. Why not a size-limited tmpfs: it would live in the worker's own mount
namespace, out of your sight and gone with the worker, while the workdir's files are meant
to be yours and to survive timeouts and resets. A folder that already holds more than the
quota when a call starts may not grow during it.

Files written to the workdir survive timeouts and ``reset()``; ``close()`` removes the
temporary folder (a ``workdir`` you pass in is yours and is kept).
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, PositiveFloat

from aillm_lab.errors import SafetyViolation, ToolError
from aillm_lab.runtime import Lifecycle, LoopRunner, get_runner, sync_twin
from aillm_lab.tools._sandbox_disk import Usage, remove_new_files, usage
from aillm_lab.tools._sandbox_process import SandboxUnavailable, Worker
from aillm_lab.tools.base import RiskLevel, Tool
from aillm_lab.tools.policy import CodePolicy

_WORKER = Path(__file__).with_name("_sandbox_worker.py")
_MAX_FILES = 1_000  # files listed in a result
_MAX_SANDBOX_FILES = 10_000  # files the sandbox folders may hold (a scan must stay cheap)
_DISK_POLL_S = 0.1
_MiB = 1024 * 1024
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# read-only system folders the interpreter and C extensions load from (Python's own
# folders are added by the worker itself), plus harmless machine facts libraries probe
# (duckdb reads /proc/self/cgroup); secrets live elsewhere (/etc, /root, /home, /proc/<pid>)
_SYSTEM_READ = ("/usr/lib", "/usr/lib64", "/usr/local/lib", "/lib", "/lib64", "/usr/share",
                "/etc/ld.so.cache", "/etc/localtime", "/etc/mime.types", "/dev/urandom",
                "/dev/zero", "/proc/self", "/sys/fs/cgroup", "/sys/devices/system/cpu")


class SandboxFile(BaseModel):
    """A file the call created or changed in the sandbox folder."""

    name: str = Field(description="path relative to the sandbox folder")
    size: int


class SandboxResult(BaseModel):
    """Everything one ``run`` produced, including why it stopped if it did not finish."""

    ok: bool = True
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: int = Field(default=0, description="bytes of stdout not kept")
    stderr_truncated: int = Field(default=0, description="bytes of stderr not kept")
    value: str | None = Field(default=None, description="repr of the last expression")
    error: str | None = Field(default=None, description="traceback text")
    files: list[SandboxFile] = Field(default_factory=list)
    figures: list[str] = Field(default_factory=list, description="PNG images, base64")
    duration_s: float = 0.0
    timed_out: bool = False
    killed_by: str | None = Field(default=None, description="signal that ended the worker")
    memory_error: bool = False
    restarted: bool = Field(default=False, description="a fresh worker ran this call")
    threads_left: int = Field(default=0, description="threads still running after the "
                              "code ended; the worker was then stopped")
    refused: list[str] = Field(default_factory=list,
                               description="'rule (event)' for each operation the hook refused")
    notes: list[str] = Field(default_factory=list)

    def figure_png(self, index: int = 0) -> bytes:
        """The PNG bytes of one figure."""
        return base64.b64decode(self.figures[index])

    def to_text(self) -> str:
        """What the model reads: output, value, error, files and what happened."""
        parts: list[str] = []
        for name, text, cut in (("stdout", self.stdout, self.stdout_truncated),
                                ("stderr", self.stderr, self.stderr_truncated)):
            if text or cut:
                parts.append(f"[{name}]\n{text.rstrip()}")
                if cut:
                    parts.append(f"[{name} truncated: {cut} more bytes not shown]")
        if self.value is not None:
            parts.append(f"[value]\n{self.value}")
        if self.error:
            parts.append(f"[error]\n{self.error.rstrip()}")
        if self.files:
            parts.append("[files] " + ", ".join(f"{f.name} ({f.size} bytes)"
                                                for f in self.files))
        if self.figures:
            parts.append(f"[figures] {len(self.figures)} figure(s) returned as PNG")
        parts += [f"[note] {n}" for n in self.notes]
        return "\n".join(parts) if parts else "(no output)"


class PythonSandbox(Lifecycle):
    """A persistent, limited Python worker: variables survive between calls until reset.

    ``run``/``arun`` execute code; ``tools()`` gives the model ``run_python``. Files written
    to ``workdir`` survive resets and timeouts; ``close()`` removes the temporary folder.
    """

    def __init__(self, policy: CodePolicy | None = None, *, workdir: Path | str | None = None,
                 runner: LoopRunner | None = None, audit_hook: bool = True) -> None:
        """``audit_hook=False`` leaves only the OS layers: for testing them, not for use."""
        if sys.platform.startswith("win"):
            raise SandboxUnavailable("PythonSandbox needs Linux or macOS (it relies on "
                                     "POSIX process groups and resource limits); run the "
                                     "lab in WSL or a Linux container on Windows.")
        self.policy = policy or CodePolicy()
        self.runner = runner or get_runner()
        given = None if workdir is None else _check_workdir(Path(workdir))
        self._root = Path(tempfile.mkdtemp(prefix="aillm-sandbox-"))
        self.workdir = given or (self._root / "work").resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._tmp = self._root / "tmp"
        self._tmp.mkdir()
        self._worker: Worker | None = None
        self._lock: asyncio.Lock | None = None
        self._lost_state = False  # a worker existed and died, so the next one starts empty
        self._closed = False
        self._audit_hook = audit_hook
        self.runner.on_close(self.aclose)  # at exit the runner removes the folder too
        self.protections: dict[str, Any] | None = None

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._worker else "idle"
        return f"<PythonSandbox {state} workdir={str(self.workdir)!r}>"

    @property
    def pid(self) -> int | None:
        """The worker's process id (None when no worker is running)."""
        return self._worker.pid if self._worker else None

    # -- running code ----------------------------------------------------------------------
    async def arun(self, code: str, timeout_s: float | None = None) -> SandboxResult:
        """Run ``code`` in the worker; its last expression's repr is the result's value.

        Args:
            code: Python source; state persists from earlier calls.
            timeout_s: wall-clock limit for this call (default ``policy.wall_s``).
        """
        if not isinstance(code, str):
            raise ToolError(f"code must be a str of Python source, got {type(code).__name__}")
        wall = self.policy.wall_s if timeout_s is None else timeout_s
        if not isinstance(wall, int | float) or not 0 < wall < float("inf"):
            raise ToolError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
        return await self.runner.arun(self._arun(code, float(wall)))

    run = sync_twin(arun)

    async def _arun(self, code: str, wall: float) -> SandboxResult:
        if self._closed:
            raise ToolError("this PythonSandbox is closed; create a new one")
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            restarted = False
            if self._worker is None or not self._worker.alive:
                restarted = await self._start()
            assert self._worker is not None
            before = await asyncio.to_thread(_snapshot, self.workdir)
            start_usage = await asyncio.to_thread(self._usage, None)
            start = time.perf_counter()
            call = asyncio.ensure_future(self._worker.call(
                {"op": "run", "code": code, "max_output": self.policy.max_output_bytes}, wall))
            over = await self._watch_disk(call, start_usage)
            reply = call.result()
            elapsed = time.perf_counter() - start
            if over is not None:
                result = await self._quota_result(reply, over, start_usage, elapsed)
            else:
                result = await self._result(reply, wall, elapsed)
                await self._stop_stray_threads(result)
            after = await asyncio.to_thread(_snapshot, self.workdir)
            result.files = [SandboxFile(name=k, size=v[0]) for k, v in sorted(after.items())
                            if before.get(k) != v]
            if restarted:
                result.restarted = True
                result.notes.insert(0, "a fresh worker ran this call: variables from earlier "
                                       "calls are gone (files in the sandbox folder remain)")
            return result

    async def _stop_stray_threads(self, result: SandboxResult) -> None:
        """Threads that outlive their call would run unseen between calls: stop them."""
        if result.threads_left:
            await self._kill()
            result.notes.append(
                f"{result.threads_left} thread(s) the code started were still running a "
                f"second after it ended, so the worker was stopped: variables are gone (files "
                f"remain). Join your threads (thread.join(), or 'with ThreadPoolExecutor()') "
                f"before the code ends")

    # -- disk quota ------------------------------------------------------------------------
    def _usage(self, stop_after: int | None) -> Usage:
        pid = self._worker.pid if self._worker is not None else None
        return usage((self.workdir, self._tmp), pid, stop_after)

    async def _watch_disk(self, call: asyncio.Future[Any], start: Usage) -> Usage | None:
        """Measure the sandbox folders while ``call`` runs (and once after); past the quota,
        stop the worker and return the usage that broke it."""
        quota = max(self.policy.max_disk_mb * _MiB, start.size)
        max_files = max(_MAX_SANDBOX_FILES, start.files)
        try:
            while True:
                done, _ = await asyncio.wait({call}, timeout=_DISK_POLL_S)
                now = await asyncio.to_thread(self._usage, max_files)
                if now.size > quota or now.files > max_files:
                    await self._kill()  # its pending call then ends with "eof"
                    await call
                    return now
                if done:
                    return None
        finally:
            call.cancel()  # only if we were cancelled; a finished call ignores it

    async def _quota_result(self, reply: dict[str, Any] | None, over: Usage,
                            start: Usage, elapsed: float) -> SandboxResult:
        removed = await asyncio.to_thread(remove_new_files, (self.workdir, self._tmp),
                                          start.paths)
        result = (_from_reply(reply) if reply is not None and reply.get("op") == "result"
                  else SandboxResult(duration_s=elapsed, killed_by="SIGKILL"))
        what = (f"{over.files} files" if over.files > max(_MAX_SANDBOX_FILES, start.files)
                else f"{over.size / _MiB:.0f} MB")
        shown = ", ".join(removed[:10]) + (f" and {len(removed) - 10} more"
                                           if len(removed) > 10 else "")
        result.ok = False
        result.refused = [*result.refused, "code.disk_quota (write)"]
        result.error = (
            f"the sandbox folder may hold {self.policy.max_disk_mb} MB and "
            f"{_MAX_SANDBOX_FILES} files (CodePolicy.max_disk_mb), and this call took it to "
            f"{what}: the worker was stopped (variables are gone) and the files this call "
            f"created were removed ({shown or 'none'}). Write less: aggregate, sample or "
            f"compress, and os.remove() files you no longer need.")
        return result

    async def _result(self, reply: dict[str, Any] | None, wall: float,
                      elapsed: float) -> SandboxResult:
        worker = self._worker
        assert worker is not None
        if reply is not None and reply.get("op") == "result":
            return _from_reply(reply)
        timed_out = reply is None and worker.alive
        broken = reply is not None and reply.get("op") != "eof"
        await self._kill()
        result = SandboxResult(ok=False, duration_s=elapsed, timed_out=timed_out)
        if timed_out:
            result.killed_by = "SIGKILL"
            result.notes.append(f"timed out after {wall:g} s of wall time: the worker was "
                                f"killed; the next call starts a fresh one, so variables "
                                f"from earlier calls are gone")
            return result
        code = worker.returncode
        result.killed_by = _signal_name(-code) if code is not None and code < 0 else None
        why = _death_reason(result.killed_by, self.policy)
        result.memory_error = "memory" in why
        result.error = (f"the sandbox worker died ({why}); the next call starts a fresh one, "
                        f"so variables from earlier calls are gone")
        if broken:
            assert reply is not None
            result.error = f"the sandbox worker broke the protocol ({reply.get('op')}); " \
                           "it was stopped and the next call starts a fresh one"
        tail = worker.stderr_tail()
        if tail.strip():
            result.stderr = tail
        return result

    # -- lifecycle -------------------------------------------------------------------------
    async def areset(self) -> None:
        """Stop the worker, so the next call starts with no variables (files stay)."""
        await self.runner.arun(self._kill())

    reset = sync_twin(areset)

    async def aclose(self) -> None:
        """Stop the worker and remove the temporary folder; idempotent."""
        if self._closed:
            return
        self._closed = True
        self.runner.off_close(self.aclose)  # closed now: the runner need not keep us
        await self.runner.arun(self._kill())
        self._remove_dirs()

    def _remove_dirs(self) -> None:
        shutil.rmtree(self._root, ignore_errors=True)  # a caller's workdir is not in it

    async def _start(self) -> bool:
        """Start a worker; True when it replaces one that held state."""
        cfg = {"workdir": str(self.workdir), "network": self.policy.network,
               "audit_hook": self._audit_hook,
               "read_roots": list(_SYSTEM_READ),
               "write_roots": [str(self.workdir), str(self._tmp.resolve()), os.devnull],
               "limits": self.policy.model_dump(include={
                   "memory_mb", "cpu_s", "max_open_files", "max_processes", "max_file_mb"})}
        # no single file may be larger than the whole quota
        cfg["limits"]["max_file_mb"] = min(self.policy.max_file_mb, self.policy.max_disk_mb)
        max_frame = 4 * self.policy.max_output_bytes + 64 * 1024 * 1024  # + figures
        env = _scrubbed_env(self.workdir, self._tmp)
        self._worker = await Worker.start(_WORKER, cfg, env, max_frame)
        self.protections = self._worker.protections
        lost, self._lost_state = self._lost_state, False
        return lost

    async def _kill(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            self._lost_state = True
            await worker.kill()

    # -- tools -----------------------------------------------------------------------------
    def tools(self) -> list[Tool]:
        """``run_python`` for agents (risk ``execute``); it returns readable text."""
        sandbox = self

        async def run_python(code: str,
                             timeout_s: PositiveFloat | None = None) -> str:
            """Run Python in a sandbox (no network, files only in its folder) and return
            stdout, the last expression's value, errors, files created and figures. Variables
            persist between calls.

            Args:
                code: Python source; end with an expression to see its value.
                timeout_s: seconds before the run is stopped (capped by the policy).
            """
            if timeout_s is not None and not 0 < timeout_s < float("inf"):
                return f"[error] timeout_s must be a positive number of seconds, got {timeout_s}"
            wall = sandbox.policy.wall_s if timeout_s is None else min(timeout_s,
                                                                       sandbox.policy.wall_s)
            result = await sandbox.arun(code, wall)
            if result.refused:  # the guard audits it as refused, with the rule
                rule = result.refused[0].split(" (", 1)[0]
                raise SafetyViolation(rule, result.to_text())
            return result.to_text()

        return [Tool(run_python, name="run_python", risk=RiskLevel.EXECUTE)]


# -- helpers ------------------------------------------------------------------------------
def _scrubbed_env(workdir: Path, tmp: Path) -> dict[str, str]:
    """Built from nothing, so no key or token of ours reaches the sandbox."""
    (tmp / "mpl").mkdir(exist_ok=True)
    return {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "USER": "sandbox",
            "LOGNAME": "sandbox", "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8", "TMPDIR": str(tmp), "MPLBACKEND": "Agg",
            "MPLCONFIGDIR": str(tmp / "mpl"), "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _check_workdir(path: Path) -> Path:
    """The sandbox may write anywhere below its workdir, so keep code we run out of it."""
    path = path.expanduser().resolve()
    protected = {Path(sys.prefix), Path(sys.base_prefix), Path(__file__).parents[1],
                 Path.home()}
    for p in protected:
        p = p.resolve()
        if path == p or path in p.parents:
            raise ToolError(f"workdir={str(path)!r} contains {str(p)!r}, which the sandbox "
                            f"could then rewrite; pass a dedicated folder (or none, for a "
                            f"temporary one)")
    return path


def _from_reply(reply: dict[str, Any]) -> SandboxResult:
    result = SandboxResult(
        ok=reply.get("error") is None, threads_left=int(reply.get("threads_left", 0)),
        stdout=reply.get("stdout", ""),
        stderr=reply.get("stderr", ""), stdout_truncated=int(reply.get("stdout_dropped", 0)),
        stderr_truncated=int(reply.get("stderr_dropped", 0)), value=reply.get("value"),
        error=reply.get("error"), duration_s=float(reply.get("duration_s", 0.0)),
        memory_error=bool(reply.get("memory_error")), refused=list(reply.get("refused", [])))
    figures = [f for f in reply.get("figures", []) if isinstance(f, str)]
    result.figures = [f for f in figures if base64.b64decode(f)[:8] == _PNG_MAGIC]
    if result.memory_error:
        result.notes.append("the code ran out of memory (limit: the policy's memory_mb)")
    if result.refused and result.error:
        result.notes.append("the sandbox refused: " + ", ".join(sorted(set(result.refused))))
    return result


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Relative path -> (size, mtime_ns) of regular files; links are never followed."""
    found: dict[str, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            found[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns)
            if len(found) >= _MAX_FILES:
                return found
        dirnames.sort()
    return found


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def _death_reason(sig: str | None, policy: CodePolicy) -> str:
    if sig == "SIGXCPU":
        return f"CPU limit of {policy.cpu_s} s exceeded"
    if sig == "SIGKILL":
        return f"killed, probably for memory (limit {policy.memory_mb} MB) or by the system"
    if sig == "SIGSEGV":
        return f"segmentation fault, often memory exhaustion (limit {policy.memory_mb} MB)"
    return f"exited by {sig}" if sig else "exited"


__all__ = ["PythonSandbox", "SandboxFile", "SandboxResult", "SandboxUnavailable"]
