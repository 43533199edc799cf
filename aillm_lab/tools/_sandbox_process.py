"""The sandbox worker process as the parent sees it: start, framed calls, kill.

Private to ``PythonSandbox``. Frames are a 4-byte big-endian length and a JSON body on the
worker's stdout; stderr is kept only as a tail for diagnostics. ``kill`` takes the whole
process group, so anything the code started dies with the worker.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import struct
import sys
from pathlib import Path
from typing import Any

from aillm_lab.errors import AillmError

_START_TIMEOUT_S = 30.0
_STDERR_TAIL = 16_384


class SandboxUnavailable(AillmError, RuntimeError):
    """The sandbox cannot run here (Windows) or its worker failed to start."""


class Worker:
    """One worker process and the protocol that reads its frames."""

    def __init__(self, transport: asyncio.SubprocessTransport, proto: WorkerProtocol) -> None:
        self.transport, self.proto = transport, proto
        self.pid: int = transport.get_pid()
        self.protections: dict[str, Any] = {}

    @classmethod
    async def start(cls, script: Path, cfg: dict[str, Any], env: dict[str, str],
                    max_frame: int) -> Worker:
        """Run ``script`` isolated (``-I -B``) in its own session; wait for its ready frame."""
        loop = asyncio.get_running_loop()
        args = [sys.executable, "-I", "-B", str(script), json.dumps(cfg)]
        transport, proto = await loop.subprocess_exec(
            lambda: WorkerProtocol(max_frame), *args, env=env, cwd=cfg["workdir"],
            start_new_session=True, close_fds=True)
        worker = cls(transport, proto)
        try:
            ready = await asyncio.wait_for(proto.frames.get(), _START_TIMEOUT_S)
        except TimeoutError:
            ready = None
        if not ready or ready.get("op") != "ready":
            await worker.kill()
            raise SandboxUnavailable(f"the sandbox worker did not start ({ready!r}); its "
                                     f"stderr said: {worker.stderr_tail()[-2000:] or 'nothing'}")
        worker.protections = ready.get("protections", {})
        return worker

    @property
    def alive(self) -> bool:
        return self.transport.get_returncode() is None and not self.proto.eof

    @property
    def returncode(self) -> int | None:
        return self.transport.get_returncode()

    def stderr_tail(self) -> str:
        return bytes(self.proto.stderr).decode("utf-8", "replace")

    async def call(self, request: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        """Send one request; the reply, ``{"op": "eof"}`` if the worker died, None on timeout."""
        body = json.dumps(request).encode("utf-8")
        stdin = self.transport.get_pipe_transport(0)
        assert isinstance(stdin, asyncio.WriteTransport)
        stdin.write(struct.pack(">I", len(body)) + body)
        try:
            reply = await asyncio.wait_for(self.proto.frames.get(), timeout)
        except TimeoutError:
            return None
        if reply is None:  # EOF: give the exit status a moment to arrive
            await wait_event(self.proto.exited, 2.0)
            return {"op": "eof"}
        return reply

    async def kill(self) -> None:
        """SIGKILL the whole process group (anything the code started dies too)."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        await wait_event(self.proto.exited, 5.0)
        self.transport.close()


class WorkerProtocol(asyncio.SubprocessProtocol):
    """Splits stdout into frames and keeps the tail of stderr for diagnostics."""

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self.frames: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.buffer = bytearray()
        self.stderr = bytearray()
        self.exited = asyncio.Event()
        self.eof = False

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 2:
            self.stderr += data
            del self.stderr[:-_STDERR_TAIL]
            return
        if self.eof:
            return
        self.buffer += data
        while len(self.buffer) >= 4:
            size = struct.unpack(">I", self.buffer[:4])[0]
            if size > self.max_frame:
                self._broken("oversized frame")
                return
            if len(self.buffer) < 4 + size:
                return
            body, self.buffer = bytes(self.buffer[4:4 + size]), self.buffer[4 + size:]
            try:
                self.frames.put_nowait(json.loads(body))
            except ValueError:
                self._broken("unreadable frame")
                return

    def _broken(self, why: str) -> None:
        self.eof = True
        self.buffer.clear()
        self.frames.put_nowait({"op": f"protocol error: {why}"})

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1 and not self.eof:
            self.eof = True
            self.frames.put_nowait(None)

    def process_exited(self) -> None:
        self.exited.set()


async def wait_event(event: asyncio.Event, timeout: float) -> None:
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        pass


__all__ = ["SandboxUnavailable", "Worker", "wait_event"]
