"""MCP servers over stdio as tools: a real server (``mcp_notes_server.py``, written with the
``mcp`` SDK's server side) is started as a subprocess; its two tools and its resource are
listed and called through the Safety Guard and audited; the server (and anything it
started) is gone after a normal exit, an error, a cancellation and a runner shutdown."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import psutil
import pytest

import aillm_lab as al
from aillm_lab.errors import ToolError
from aillm_lab.runtime import LoopRunner, get_runner
from aillm_lab.tools.base import ValidationError
from aillm_lab.tools.mcp import MCPServer, amcp_tools

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")

SERVER = [sys.executable, str(Path(__file__).with_name("mcp_notes_server.py"))]
SPAWNING = [*SERVER, "--spawn"]  # the server starts a sleeping child of its own


def _children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if p.is_running()
            and p.status() != psutil.STATUS_ZOMBIE]


def _servers() -> list[psutil.Process]:
    """Our descendants that are the test server or its sleeping child."""
    found = []
    for proc in _children():
        try:
            line = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        if "mcp_notes_server.py" in line or "time.sleep(600)" in line:
            found.append(proc)
    return found


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Those of ``procs`` still running, wherever they were reparented to."""
    alive = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.NoSuchProcess:
            continue
    return alive


def test_both_tools_are_listed_and_called_through_the_guard_and_audited(make_lab):
    lab = make_lab()
    with al.mcp_tools(SPAWNING, runner=lab.runner) as tools:
        assert [t.name for t in tools] == ["add", "shout", "read_resource"]
        add, shout = tools[0], tools[1]
        assert add.spec.description == "Add two integers."
        assert add.spec.parameters["required"] == ["a", "b"]
        assert add.risk is al.RiskLevel.EXECUTE
        started = _servers()
        assert len(started) == 2  # the server and its child
        guard = lab.tools.guard
        assert lab.runner.run(guard.call(add, {"a": 2, "b": 3})).content == "5"
        assert lab.runner.run(guard.call(shout, {"text": "hi"})).content == "HI"
        failed = lab.runner.run(guard.invoke(shout, {"text": "boom"}))
        assert not failed.ok and "shout" in failed.content
        bad = lab.runner.run(guard.invoke(add, {"a": "two", "b": 3}))
        assert not bad.ok and "Invalid arguments for tool 'add'" in bad.content
        assert tools.resources == [{"uri": "notes://today", "name": "today",
                                    "description": "today's note", "mime_type": "text/plain"}]
        assert tools.read_resource("notes://today") == "buy milk"
        read = lab.runner.run(guard.call(tools[2], {"uri": "notes://today"}))
        assert read.content == "buy milk"
        lab.tools.add(add)  # or register it: the Toolbox's doors use the same guard
        assert lab.tools.call("add", a=20, b=22).content == "42"
    assert _servers() == [] and _alive(started) == []
    audit = lab.audit()
    assert list(audit["tool"]) == ["add", "shout", "shout", "add", "read_resource", "add"]
    assert list(audit["decision"]) == ["allowed", "allowed", "error", "error", "allowed",
                                       "allowed"]
    assert set(audit["risk"]) == {"execute"}


def test_async_with_yields_the_tools_and_stops_the_server_on_an_error():
    started: list[psutil.Process] = []

    async def main() -> list[str]:
        async with al.mcp_tools(SPAWNING) as tools:
            started.extend(_servers())
            names = [t.name for t in tools]
            assert await tools[0].acall({"a": 20, "b": 22}) == "42"
            raise KeyError("the cell failed")
        return names

    with pytest.raises(KeyError):
        asyncio.run(main())
    assert len(started) == 2 and _alive(started) == []


def test_a_cancelled_block_leaves_no_process_behind():
    started: list[psutil.Process] = []

    async def main() -> None:
        ready = asyncio.Event()

        async def hold() -> None:
            async with al.mcp_tools(SPAWNING):
                ready.set()
                await asyncio.sleep(600)

        task = asyncio.create_task(hold())
        await asyncio.wait_for(ready.wait(), 120)
        started.extend(_servers())
        assert len(started) == 2
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert _alive(started) == []


def test_the_runner_closing_stops_an_open_server_like_a_kernel_shutdown():
    runner = LoopRunner(name="mcp-test-runner")
    server = MCPServer(SPAWNING, runner=runner)
    try:
        tools = server.open()
        started = _servers()
        assert tools[1].name == "shout" and len(started) == 2
    finally:
        runner.close()  # what atexit does when the kernel shuts down
    assert _alive(started) == []
    assert server.tools is None


def test_a_command_that_is_not_an_mcp_server_fails_with_its_stderr():
    crash = [sys.executable, "-c", "import sys; print('no server here', file=sys.stderr); "
             "sys.exit(3)"]
    with pytest.raises(ToolError, match="failed to start") as info, al.mcp_tools(crash):
        pass
    assert "no server here" in str(info.value)
    assert not [p for p in _children() if "no server here" in " ".join(p.cmdline())]


def test_tools_called_after_the_block_say_the_server_is_not_running():
    async def on_the_runner_loop() -> al.Tool:  # where only the awaited start works
        async with await amcp_tools(SERVER) as tools:
            assert await tools[0].acall({"a": 1, "b": 1}) == "2"
            return tools[0]

    add = get_runner().run(on_the_runner_loop())
    assert _servers() == []
    with pytest.raises(ToolError, match="not running"):
        asyncio.run(add.acall({"a": 1, "b": 2}))
    with pytest.raises(ValidationError, match="b"):
        add.validate({"a": 1})


def test_bad_options_are_refused_before_anything_starts():
    with pytest.raises(ValueError, match="command"):
        MCPServer([])
    with pytest.raises(ValueError, match="timeout_s"):
        al.mcp_tools(SERVER, timeout_s=0)
    assert _servers() == []
    assert MCPServer("python  server.py --x 'a b'").command == ["python", "server.py", "--x",
                                                               "a b"]
