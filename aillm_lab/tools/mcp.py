"""``mcp_tools``: the tools (and resources) of an MCP server over stdio, as ``Tool``s.

    with al.mcp_tools(["python", "server.py"]) as tools: ...
    async with al.mcp_tools(["python", "server.py"]) as tools: ...
    async with await al.amcp_tools(["python", "server.py"]) as tools: ...  # on the runner loop

``mcp_tools`` starts the server and returns its tools, ready to call; the block (or
``tools.close()``) stops it. The start is a sync call, so in async code it holds the
calling loop for the seconds a server takes to start; ``amcp_tools`` awaits it instead
(and is the only form that works on the runner loop itself).

Why one owner task: the official ``mcp`` SDK keeps its connection in anyio task groups and
cancel scopes, which must be entered and left by the same task. A ``with`` block in a cell
enters and leaves in two different runner calls, so neither may own the connection. Instead
one task on the runner loop opens the ``mcp.Client``, lists the tools, then waits to be told
to stop and leaves the ``async with`` itself. Calls from any task or thread hop onto the
runner loop and share the session.

The server process ends with the block: on a normal exit, on an exception, on cancellation
(Ctrl-C in a cell, ``task.cancel()``) and when the runner closes (kernel shutdown, atexit).
The SDK closes the server's stdin, waits, then kills its whole process group, so nothing
the server started is left behind. The server inherits only the SDK's short list of safe
environment variables (``PATH``, ``HOME``, ...) plus ``env=``: no API key reaches it.

Each ``Tool`` validates its arguments against the server's input schema and, like every
tool, runs through the Safety Guard and the audit when an agent or ``Toolbox`` calls it.
A tool that reports an error raises ``ToolError`` with the server's text. If the server
has resources, ``read_resource`` is one more tool, and ``tools.read_resource(uri)`` reads
one from your code. Default risk is ``execute``: the server runs code of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import signal
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from aillm_lab.errors import ToolError
from aillm_lab.runtime import Lifecycle, LoopRunner, get_runner, sync_twin
from aillm_lab.tools.base import RiskLevel, Tool
from aillm_lab.tools.schema_tool import SchemaTool, tool_name

log = logging.getLogger(__name__)
_STDERR_TAIL = 2000
_GROUP_GRACE_S = 2.0
_CLAIMED: set[int] = set()  # server pids an MCPServer owns (two may start at once)


class MCPTools(list[Tool], Lifecycle):
    """The server's tools (a plain list of ``Tool``), plus its resources; closing it (or
    leaving its ``with`` block) stops the server.

    ``resources`` lists what the server offers (uri, name, description, mime type);
    ``read_resource(uri)`` returns its text. Valid until closed.
    """

    def __init__(self, tools: list[Tool], server: MCPServer) -> None:
        super().__init__(tools)
        self.server = server

    @property
    def runner(self) -> LoopRunner:
        return self.server.runner

    @property
    def resources(self) -> list[dict[str, Any]]:
        return list(self.server.resources)

    async def aread_resource(self, uri: str) -> str:
        """The text of the resource at ``uri``."""
        return await self.server.aread_resource(uri)

    async def aclose(self) -> None:
        """Stop the server (and what it started); idempotent."""
        await self.server.aclose()

    read_resource = sync_twin(aread_resource)


def mcp_tools(command: Sequence[str] | str, *, env: dict[str, str] | None = None,
              cwd: str | None = None, prefix: str = "", risk: RiskLevel | str = "execute",
              timeout_s: float = 60.0, runner: LoopRunner | None = None) -> MCPTools:
    """Start the MCP server ``command`` (a list, or a string split like a shell) and return
    its tools; use them in ``with``/``async with``, which stops the server at the end.

    ``prefix`` goes before every tool name (two servers may both have ``search``);
    ``timeout_s`` bounds the start and each request. A failed start raises ``ToolError``
    with the end of the server's stderr.
    """
    return MCPServer(command, env=env, cwd=cwd, prefix=prefix, risk=risk, timeout_s=timeout_s,
                     runner=runner).open()


async def amcp_tools(command: Sequence[str] | str, *, env: dict[str, str] | None = None,
                     cwd: str | None = None, prefix: str = "",
                     risk: RiskLevel | str = "execute", timeout_s: float = 60.0,
                     runner: LoopRunner | None = None) -> MCPTools:
    """``mcp_tools`` for async code: the start is awaited, not waited for."""
    return await MCPServer(command, env=env, cwd=cwd, prefix=prefix, risk=risk,
                           timeout_s=timeout_s, runner=runner).aopen()


class MCPServer(Lifecycle):
    """One stdio MCP server process and its session: ``aopen`` starts it and returns its
    ``MCPTools``, ``aclose`` (or closing the tools) stops it."""

    def __init__(self, command: Sequence[str] | str, *, env: dict[str, str] | None = None,
                 cwd: str | None = None, prefix: str = "", risk: RiskLevel | str = "execute",
                 timeout_s: float = 60.0, runner: LoopRunner | None = None) -> None:
        argv = shlex.split(command) if isinstance(command, str) else [str(c) for c in command]
        if not argv:
            raise ValueError("mcp_tools: give the server's command, e.g. "
                             "['python', 'server.py']")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s={timeout_s}: give a positive number of seconds")
        self.command, self.env, self.cwd = argv, env, cwd
        self.prefix, self.risk, self.timeout_s = prefix, RiskLevel(risk), timeout_s
        self.runner = runner if runner is not None else get_runner()
        self.tools: MCPTools | None = None
        self.resources: list[dict[str, Any]] = []
        self.pid: int | None = None
        self._client: Any = None
        self._owner: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        self._ready: asyncio.Future[MCPTools] | None = None
        self._scope: Any = None

    def __repr__(self) -> str:
        state = f"{len(self.tools)} tools" if self.tools is not None else "closed"
        return f"<MCPServer {self.name!r} {state}>"

    @property
    def name(self) -> str:
        """The command as one line (cut at 200 characters), for messages."""
        text = " ".join(self.command)
        return text if len(text) <= 200 else text[:197] + "..."

    # -- lifecycle -----------------------------------------------------------------------
    async def aopen(self) -> MCPTools:
        """Start the server, list its tools and resources; the tools, ready to call."""
        return await self.runner.arun(self._open())

    async def aclose(self) -> None:
        """Stop the server and wait until its process is gone; idempotent."""
        await self.runner.arun(self._close())

    open = sync_twin(aopen)

    async def _open(self) -> MCPTools:
        if self.tools is not None:
            return self.tools
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[MCPTools] = loop.create_future()
        self._ready, self._stop = ready, asyncio.Event()
        self._owner = asyncio.ensure_future(self._own(ready))
        self.runner.on_close(self._close)
        try:
            async with asyncio.timeout(self.timeout_s):
                return await asyncio.shield(ready)
        except TimeoutError:
            await self._close()
            raise ToolError(f"MCP server {self.name!r} did not answer within {self.timeout_s:g}"
                            f" s (timeout_s); check the command runs an MCP stdio server"
                            ) from None
        except BaseException:
            await self._close()
            raise

    async def _close(self) -> None:
        self.runner.off_close(self._close)
        owner, self._owner = self._owner, None
        if owner is None:
            return
        if self._stop is not None:
            self._stop.set()
        if self._scope is not None and self.tools is None:
            self._scope.cancel()  # still starting: stop the handshake (anyio-level, shielded
            #                       shutdown inside the SDK still runs)
        await asyncio.shield(_settled(owner))
        if self._ready is not None and self._ready.done() and not self._ready.cancelled():
            self._ready.exception()  # retrieved: a failed start was already raised
        self.tools, self._client, self._scope, self._ready = None, None, None, None

    async def _own(self, ready: asyncio.Future[MCPTools]) -> None:
        """The owner task: open the client, publish the tools, wait for stop, close."""
        import anyio
        from mcp import Client, StdioServerParameters, stdio_client

        params = StdioServerParameters(command=self.command[0], args=self.command[1:],
                                       env=self.env, cwd=self.cwd)
        # the server's stderr goes to a file of ours: a notebook's sys.stderr may have no
        # file descriptor, and its tail explains a failed start
        before = _child_pids()
        with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as errlog:
            try:
                with anyio.CancelScope() as scope:
                    self._scope = scope
                    async with Client(stdio_client(params, errlog=errlog),
                                      read_timeout_seconds=self.timeout_s,
                                      mode="legacy") as client:
                        self._client = client
                        self.pid = _server_pid(before, self.command)
                        tools = await self._list(client)
                        if not ready.done():
                            ready.set_result(tools)
                        assert self._stop is not None
                        await self._stop.wait()
            except Exception as exc:
                if not ready.done():
                    ready.set_exception(_start_error(self.name, exc, errlog))
                else:
                    log.warning("MCP server %r ended with %s: %s", self.name,
                                type(exc).__name__, exc)
            finally:
                self._client = None
                if self.pid is None:  # it failed before we saw it: find it now
                    self.pid = _server_pid(before, self.command)
                await _end_group(self.pid)
                _CLAIMED.discard(self.pid)
                self.pid = None
                if not ready.done():
                    ready.set_exception(ToolError(
                        f"MCP server {self.name!r} stopped before it was ready"))

    async def _list(self, client: Any) -> MCPTools:
        listed: list[Any] = []
        cursor = None
        while True:
            page = await client.list_tools(cursor=cursor)
            listed += page.tools
            cursor = page.next_cursor
            if not cursor:
                break
        tools: list[Tool] = [self._tool(t) for t in listed]
        capabilities = client.server_capabilities
        if capabilities is not None and capabilities.resources is not None:
            page = await client.list_resources()
            self.resources = [{"uri": str(r.uri), "name": r.name,
                               "description": r.description or "", "mime_type": r.mime_type}
                              for r in page.resources]
            tools.append(self._resource_tool())
        names = [t.name for t in tools]
        if twice := sorted({n for n in names if names.count(n) > 1}):
            raise ToolError(f"MCP server {self.name!r} has tools that share the names "
                            f"{twice} once made valid for model APIs; use prefix=")
        self.tools = MCPTools(tools, self)
        return self.tools

    # -- tools ---------------------------------------------------------------------------
    def _tool(self, listed: Any) -> Tool:
        remote = listed.name
        schema = dict(listed.input_schema or {"type": "object", "properties": {}})
        schema.pop("title", None)
        schema.setdefault("properties", {})

        async def run(arguments: dict[str, Any]) -> str:
            return await self.runner.arun(self._call(remote, arguments))

        return SchemaTool(run, name=tool_name(remote, self.prefix),
                          description=listed.description or listed.title or remote,
                          parameters=schema, risk=self.risk)

    def _resource_tool(self) -> Tool:
        uris = [r["uri"] for r in self.resources]
        shown = "\n".join(f"- {r['uri']}: {r['description'] or r['name']}"
                          for r in self.resources[:50])
        schema = {"type": "object", "properties": {"uri": {
            "type": "string", "description": "the resource's URI"}}, "required": ["uri"],
            "additionalProperties": False}
        if uris:
            schema["properties"]["uri"]["examples"] = uris[:20]

        async def run(arguments: dict[str, Any]) -> str:
            return await self.aread_resource(arguments["uri"])

        return SchemaTool(run, name=tool_name("read_resource", self.prefix),
                          description=f"Read a resource of the MCP server by URI.\n{shown}",
                          parameters=schema, risk=self.risk)

    async def aread_resource(self, uri: str) -> str:
        """The text of one resource (binary parts are described, not decoded)."""
        return await self.runner.arun(self._read(uri))

    read_resource = sync_twin(aread_resource)

    async def _call(self, name: str, arguments: dict[str, Any]) -> str:
        result = await self._session().call_tool(name, arguments,
                                                 read_timeout_seconds=self.timeout_s)
        text = _render(result.content, result.structured_content)
        if result.is_error:
            raise ToolError(text or f"MCP tool {name!r} reported an error without text")
        return text

    async def _read(self, uri: str) -> str:
        result = await self._session().read_resource(uri)
        parts = []
        for item in result.contents:
            text = getattr(item, "text", None)
            parts.append(text if text is not None else
                         f"[binary resource {item.uri} ({item.mime_type or 'unknown type'})]")
        return "\n".join(parts)

    def _session(self) -> Any:
        if self._client is None:
            raise ToolError(f"MCP server {self.name!r} is not running (its tools were "
                            f"closed): use them inside `with al.mcp_tools(...) as tools:`")
        return self._client


def _render(content: Sequence[Any], structured: Any) -> str:
    """A result's blocks as text: text as is, other blocks described in one line."""
    parts: list[str] = []
    for block in content:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind in {"image", "audio"}:
            parts.append(f"[{kind} {getattr(block, 'mime_type', '')}]")
        elif kind == "resource":
            resource = block.resource
            parts.append(getattr(resource, "text", None) or f"[resource {resource.uri}]")
        else:
            parts.append(f"[{kind or type(block).__name__}]")
    if not parts and structured is not None:
        return json.dumps(structured)
    return "\n".join(parts)


def _start_error(name: str, exc: BaseException, errlog: Any) -> ToolError:
    """Why the server did not start: the SDK's error and the end of the server's stderr."""
    why = "; ".join(f"{type(e).__name__}: {e}" for e in _leaves(exc))
    tail = ""
    with contextlib.suppress(OSError, ValueError):
        errlog.flush()
        errlog.seek(0)
        tail = errlog.read()[-_STDERR_TAIL:].strip()
    shown = f"\nits stderr ends with:\n{tail}" if tail else ""
    return ToolError(f"MCP server {name!r} failed to start ({why}); check the command and "
                     f"that it serves MCP over stdio{shown}")


def _child_pids() -> set[int]:
    import psutil

    return {c.pid for c in psutil.Process().children()}


def _server_pid(before: set[int], command: list[str]) -> int | None:
    """The pid of the server just started: a new child of ours that leads its own session
    (the SDK starts it with ``start_new_session``), preferring one running ``command``."""
    import psutil

    if not hasattr(os, "getsid"):  # Windows: the SDK's job object ends the tree there
        return None
    found: list[tuple[bool, int]] = []
    for child in psutil.Process().children():
        if child.pid in before or child.pid in _CLAIMED:
            continue
        try:
            if os.getsid(child.pid) != child.pid:
                continue
            same = child.cmdline()[1:] == command[1:]
        except (OSError, psutil.Error):
            continue
        found.append((not same, child.pid))
    if not found:
        return None
    pid = min(found)[1]
    _CLAIMED.add(pid)
    return pid


async def _end_group(pgid: int | None) -> None:
    """Stop what the server left in its process group once the SDK has ended the server:
    it only kills the tree when the server does not exit by itself, so a child the server
    started would otherwise outlive it. TERM, then KILL after ``_GROUP_GRACE_S``."""
    if pgid is None or not hasattr(os, "killpg"):
        return
    for sig, wait in ((signal.SIGTERM, _GROUP_GRACE_S), (signal.SIGKILL, _GROUP_GRACE_S)):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return  # the group is empty: nothing is left
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            if not _group_alive(pgid):
                return


def _group_alive(pgid: int) -> bool:
    """Whether a process other than a zombie is still in the group."""
    import psutil

    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (OSError, psutil.Error):
            continue
    return False


def _leaves(exc: BaseException) -> list[BaseException]:
    """The real errors inside (nested) exception groups, as the task groups raise them."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


async def _settled(task: asyncio.Task[None]) -> None:
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task

__all__ = ["MCPServer", "MCPTools", "amcp_tools", "mcp_tools"]
