"""Several tool calls in one turn run concurrently: two async tools that each wait for the
other finish only if both run at once (a sequential loop fails them on a timeout, it does
not hang)."""

from __future__ import annotations

import asyncio

import pytest
from _agent_tools import call

import aillm_lab as al
from aillm_lab.testing import ScriptedModel

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")
WAIT_S = 10.0  # generous: run together, each waits microseconds


def meeting_tools() -> tuple[al.Tool, al.Tool]:
    """Tools ``a`` and ``b``: each says it arrived, then waits for the other to arrive."""
    arrived = {"a": asyncio.Event(), "b": asyncio.Event()}

    async def meet(me: str, other: str) -> str:
        arrived[me].set()
        try:
            await asyncio.wait_for(arrived[other].wait(), WAIT_S)
        except TimeoutError:
            raise RuntimeError(f"{me} waited {WAIT_S} s for {other}: not concurrent") from None
        return f"{me} met {other}"

    @al.tool
    async def a() -> str:
        """Meet b."""
        return await meet("a", "b")

    @al.tool
    async def b() -> str:
        """Meet a."""
        return await meet("b", "a")

    return a, b


def test_two_tool_calls_of_one_turn_run_at_the_same_time(make_lab):
    model = ScriptedModel([[call("a", "c1"), call("b", "c2")], "they met"])
    run = al.ReActAgent(tools=list(meeting_tools()), lab=make_lab(model)).run("meet")
    assert run.status == "completed" and run.output == "they met"
    results = run.steps[0].tool_results
    assert [(r.call_id, r.ok, r.content) for r in results] == [
        ("c1", True, "a met b"), ("c2", True, "b met a")]  # in call order, not finish order
    assert [m.tool_call_id for m in run.steps[0].observations] == ["c1", "c2"]
