"""A sync tool runs in the loop's default executor through ``in_worker``, a leaner hop than
``run_in_executor``: the same threads, the value or the exception back on the loop, and a
cancelled caller that neither waits for the worker nor gets a late result."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import aillm_lab as al
from aillm_lab.tools.base import in_worker

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")


def test_the_value_and_the_error_come_back_from_a_worker_thread():
    async def main() -> tuple[int, int, int]:
        loop_thread = threading.get_ident()
        await asyncio.get_running_loop().run_in_executor(None, int)  # the executor exists
        value = await in_worker(lambda: 6 * 7)
        worker = await in_worker(threading.get_ident)
        with pytest.raises(ZeroDivisionError):
            await in_worker(lambda: 1 // 0)
        return value, worker, loop_thread

    value, worker, loop_thread = asyncio.run(main())
    assert value == 42 and worker != loop_thread


def test_without_a_default_executor_yet_it_makes_one_like_run_in_executor():
    async def main() -> int:
        assert getattr(asyncio.get_running_loop(), "_default_executor", None) is None
        return await in_worker(lambda: threading.get_ident())

    assert asyncio.run(main()) != threading.get_ident()


def test_a_cancelled_caller_returns_at_once_and_the_late_result_is_dropped():
    finished = threading.Event()

    def slow() -> str:
        time.sleep(0.3)
        finished.set()
        return "late"

    async def main() -> float:
        await asyncio.get_running_loop().run_in_executor(None, int)
        task = asyncio.ensure_future(in_worker(slow))
        await asyncio.sleep(0.05)
        start = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        waited = time.monotonic() - start
        await asyncio.to_thread(finished.wait, 5)
        await asyncio.sleep(0.05)  # the late hand-over runs on the loop without error
        return waited

    assert asyncio.run(main()) < 0.2
    assert finished.is_set()


def test_an_agent_s_sync_tool_runs_off_the_loop_and_an_inline_one_on_it(make_lab):
    from _agent_tools import call

    from aillm_lab.testing import ScriptedModel

    seen: dict[str, int] = {}

    @al.tool
    def where() -> str:
        """Which thread runs me."""
        seen["worker"] = threading.get_ident()
        return "here"

    @al.tool(inline=True)
    def here() -> str:
        """Which thread runs me, inline."""
        seen["inline"] = threading.get_ident()
        return "there"

    lab = make_lab(ScriptedModel([[call("where", "a"), call("here", "b")], "done"]))
    run = al.ReActAgent(tools=[where, here], lab=lab, save=False).run("where?")
    assert run.status == "completed"
    assert [r.content for r in run.steps[0].tool_results] == ["here", "there"]
    assert seen["inline"] == lab.runner._thread.ident != seen["worker"]
