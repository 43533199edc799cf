"""``Jail``: run the Shell and Git tools' programs where no path outside the workspace exists.

Why OS confinement and not more argument checks: an attack run found 23 ways past the argv
rules (``--``, combined short flags, recursion into denied files, ``/proc/<pid>/environ``,
git filters). A rule list has to recognise every attack; a namespace does not. Each program
runs in its own user, mount, PID, network, IPC and UTS namespaces (``_jail_launcher.py``
builds them), sees the system folders read-only, the workspace (read-only unless the call
writes), a fresh ``/proc`` of its own processes, an empty ``/tmp``, no network, an
environment of a few fixed variables and no capabilities. Deny-listed files (``.env``,
keys) are hidden behind empty read-only files, and every ``.git`` folder is read-only, so
no tool can plant a git filter or hook (``jail_scan``; its ``sweep`` removes what a writable
call left for later). Git itself may execute only git's own files (``git_exec``).

Where the kernel refuses namespaces (macOS, some containers) ``available`` is False and
``why`` says what failed; the Shell tool then asks for approval on every call.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

from aillm_lab.runtime import Lifecycle, LoopRunner, get_runner
from aillm_lab.tools.git_exec import allowed_exec
from aillm_lab.tools.jail_scan import Protected, ProtectedScan, Snapshot, sweep
from aillm_lab.tools.paths import Workspace

SYSTEM_BINDS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
                "/etc/alternatives", "/etc/ld.so.cache", "/etc/localtime")
_LAUNCHER = Path(__file__).with_name("_jail_launcher.py")
_START_TIMEOUT_S = 20.0
IDLE_S = 30.0  # a launcher nobody used for this long is stopped (started again on demand)
_MAX_MSG = 1 << 16


class Jail(Lifecycle):
    """One launcher process per workspace, on the runner loop, started on first use.

    ``extra_binds`` are more read-only folders programs need (an interpreter's prefix).
    """

    def __init__(self, ws: Workspace, *, extra_binds: tuple[str, ...] = (),
                 runner: LoopRunner | None = None) -> None:
        self.ws = ws
        self.runner = runner if runner is not None else get_runner()
        self.binds = tuple(dict.fromkeys((*SYSTEM_BINDS, *extra_binds)))
        self.why: str | None = None  # set when confinement is unavailable here
        self._conn: _Connection | None = None
        self._starting: asyncio.Lock | None = None
        self._lock: asyncio.Lock | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._scan = ProtectedScan(ws)
        self.before = Snapshot()

    def __repr__(self) -> str:
        state = ("unavailable: " + self.why) if self.why else (
            "running" if self._conn else "not started")
        return f"<Jail {str(self.ws.root)!r} {state}>"

    async def available(self) -> bool:
        """Start the launcher if needed; False (with ``why``) where the OS cannot confine."""
        return await self.runner.arun(self._ensure()) is not None

    @property
    def lock(self) -> asyncio.Lock:
        """Held for a whole call: the jail runs one program at a time per workspace.

        Why: the files to hide are found by a scan just before the call's mounts are
        placed; a program running at the same time could rename folders in between and
        move a secret out from under its mount. One at a time, with every process of a
        call dead before the next starts, nothing else changes the workspace meanwhile.
        """
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def spawn(self, argv: list[str], exe: str, *, cwd: Path, env: dict[str, str],
                    writable: bool, protect_git: str = "all", git: bool = False,
                    limits: dict[str, int] | None = None, tmp_mb: int = 64) -> JailedProcess:
        """Start ``exe`` with ``argv`` confined; call from the runner loop, holding ``lock``.

        ``protect_git``: ``"all"`` makes every ``.git`` read-only; ``"config"`` only their
        config, hooks and info (for git's own writes: index, objects, refs). Programs other
        than ``git`` (``git=False``) see every ``.git/config`` empty: remote URLs carry
        tokens, and only git needs to read it. Git (``git=True``) may execute git's own
        files and nothing else: the launcher applies ``git_exec.allowed_exec`` (Landlock)
        just before it starts git.
        """
        conn = await self._ensure()
        if conn is None:
            raise RuntimeError(f"OS confinement is unavailable: {self.why}")
        if self._idle is not None:
            self._idle.cancel()
        if self._scan.warm:  # a stat per folder: cheaper than a thread hop
            protected = self._scan.scan(protect_git, git=git)
        else:  # the first listing of a large workspace must not stall the loop
            protected = await asyncio.to_thread(self._scan.scan, protect_git, git=git)
        self.before = self._scan.last
        request = {"op": "run", "argv": argv, "exe": exe, "cwd": str(cwd), "env": env,
                   "writable": writable, "hide": protected.hide,
                   "readonly": protected.readonly, "tmp_mb": tmp_mb, "limits": limits or {},
                   "exec_allow": list(allowed_exec(exe)) if git else None}
        return await conn.run(request)

    async def sweep(self, *, git_made: bool = False) -> list[str]:
        """After a writable call (under ``lock``): remove the traps it left
        (``jail_scan.sweep``)."""
        await asyncio.to_thread(self._scan.scan)
        return await asyncio.to_thread(functools.partial(
            sweep, self.ws, self.before, self._scan.last, git_made=git_made))

    def done(self) -> None:
        """A call ended (under ``lock``): stop the launcher if no call follows for a while.

        Why: a Lab, a notebook or a test that never closes its tools would otherwise keep
        two launcher processes for as long as the Python process lives.
        """
        if self._idle is not None:
            self._idle.cancel()
        loop = asyncio.get_running_loop()
        self._idle = loop.call_later(IDLE_S, lambda: loop.create_task(self._close_idle()))

    async def _close_idle(self) -> None:
        if self.lock.locked() or self._conn is None:
            return
        conn, self._conn = self._conn, None
        await conn.aclose()

    async def aclose(self) -> None:
        """Stop the launcher (it kills whatever still runs); idempotent."""
        conn, self._conn = self._conn, None
        if self._idle is not None:
            self._idle.cancel()
        if conn is not None:
            await self.runner.arun(conn.aclose())

    async def _ensure(self) -> _Connection | None:
        if self._conn is not None and self._conn.alive:
            return self._conn
        if self.why is not None:
            return None
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._conn is None or not self._conn.alive:
                try:
                    self._conn = await _Connection.start(self.ws.root, self.binds)
                except _Unavailable as exc:
                    self.why = str(exc)
                    return None
        return self._conn


def confinement_status(workspace: Path, runner: LoopRunner | None = None) -> tuple[bool, str]:
    """Whether programs can be jailed here, in words (``aillm-lab doctor`` prints it)."""
    workspace.mkdir(parents=True, exist_ok=True)
    jail = Jail(Workspace(workspace), runner=runner)
    try:
        ok = jail.runner.run(jail.available())
    finally:
        jail.close()
    if ok:
        return True, ("OS jail (user, mount, PID and network namespaces): programs see only "
                      "the workspace")
    return False, (f"unavailable ({jail.why}); run_shell asks for approval on every call")


class JailedProcess:
    """A confined program as the supervisor sees it: two pipes, an exit status, a kill."""

    def __init__(self, conn: _Connection, call_id: int, stdout: asyncio.StreamReader,
                 stderr: asyncio.StreamReader, transports: list[asyncio.BaseTransport]) -> None:
        self.conn, self.call_id = conn, call_id
        self.stdout, self.stderr = stdout, stderr
        self.exited: asyncio.Future[int] = conn.loop.create_future()
        self._transports = transports

    @property
    def returncode(self) -> int | None:
        return self.exited.result() if self.exited.done() else None

    async def wait(self) -> int:
        return await asyncio.shield(self.exited)

    def kill(self) -> None:
        """Kill the program and everything it started (its PID namespace ends with it)."""
        if not self.exited.done():
            self.conn.send({"op": "kill", "id": self.call_id})

    def close_pipes(self) -> None:
        for transport in self._transports:
            transport.close()


class _Unavailable(Exception):
    pass


class _Connection:
    """The socket to one launcher; exits arrive as messages, matched to calls by id."""

    def __init__(self, proc: asyncio.subprocess.Process, sock: socket.socket) -> None:
        self.proc, self.sock = proc, sock
        self.loop = asyncio.get_running_loop()
        self.calls: dict[int, JailedProcess] = {}
        self.next_id = 0
        self.alive = True
        self.ready: asyncio.Future[dict[str, Any]] = self.loop.create_future()
        self.loop.add_reader(sock.fileno(), self._on_message)

    @classmethod
    async def start(cls, workspace: Path, binds: tuple[str, ...]) -> _Connection:
        if not sys.platform.startswith("linux"):
            raise _Unavailable(f"OS confinement uses Linux namespaces; this is {sys.platform}")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        cfg = {"workspace": str(workspace), "binds": list(binds),
               "tmp_binds": [b for b in binds if b.startswith("/tmp/")]}
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-S", "-B", str(_LAUNCHER), json.dumps(cfg),
                str(theirs.fileno()), pass_fds=(theirs.fileno(),), env={},
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            ours.close()
            raise _Unavailable(f"the jail launcher could not start: {exc}") from None
        finally:
            theirs.close()
        conn = cls(proc, ours)
        try:
            first = await asyncio.wait_for(asyncio.shield(conn.ready), _START_TIMEOUT_S)
        except (TimeoutError, ConnectionError) as exc:
            err = await _stderr_tail(proc)
            await conn.aclose()
            raise _Unavailable(f"the jail launcher did not start ({exc!r}): {err}") from None
        if first.get("op") != "ready":
            await conn.aclose()
            raise _Unavailable(str(first.get("why", first)))
        return conn

    async def run(self, request: dict[str, Any]) -> JailedProcess:
        """Send one ``run`` request with its output pipes; the call is registered (and its
        pipes are read) before the request leaves, so a program that exits at once cannot
        have its exit message arrive for a call nobody waits on yet."""
        if not self.alive:
            raise ConnectionError("the jail launcher exited")
        self.next_id += 1
        call_id = self.next_id
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        readers, transports = [], []
        try:
            for fd in (out_r, err_r):
                reader = asyncio.StreamReader(limit=1 << 20)
                transport, _ = await self.loop.connect_read_pipe(
                    lambda r=reader: asyncio.StreamReaderProtocol(r), os.fdopen(fd, "rb", 0))
                readers.append(reader)
                transports.append(transport)
            proc = JailedProcess(self, call_id, readers[0], readers[1], transports)
            self.calls[call_id] = proc
            socket.send_fds(self.sock, [json.dumps({**request, "id": call_id}).encode()],
                            [out_w, err_w])
        except BaseException:
            self.calls.pop(call_id, None)
            for transport in transports:
                transport.close()
            for fd in (out_r, err_r)[len(transports):]:
                os.close(fd)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        return proc

    def send(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            self.sock.send(json.dumps(message).encode())

    def _on_message(self) -> None:
        try:
            data = self.sock.recv(_MAX_MSG)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._lost()
            return
        message = json.loads(data)
        if not self.ready.done():
            self.ready.set_result(message)
            return
        proc = self.calls.pop(message.get("id", -1), None)
        if proc is not None and not proc.exited.done():
            proc.exited.set_result(int(message["status"]))

    def _lost(self) -> None:
        """The launcher is gone: every call in flight ends as killed."""
        if not self.alive:
            return
        self.alive = False
        self.loop.remove_reader(self.sock.fileno())
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("the jail launcher exited"))
        for proc in self.calls.values():
            if not proc.exited.done():
                proc.exited.set_result(-9)
        self.calls.clear()

    async def aclose(self) -> None:
        self._lost()
        self.sock.close()
        if self.proc.returncode is None:
            try:
                await asyncio.wait_for(self.proc.wait(), 5.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()


async def _stderr_tail(proc: asyncio.subprocess.Process) -> str:
    if proc.stderr is None:
        return ""
    with contextlib.suppress(TimeoutError):
        data = await asyncio.wait_for(proc.stderr.read(8192), 1.0)
        return data.decode("utf-8", "replace").strip()[-2000:] or "no output"
    return "no output"


__all__ = ["SYSTEM_BINDS", "Jail", "JailedProcess", "Protected", "Snapshot",
           "confinement_status", "sweep"]
