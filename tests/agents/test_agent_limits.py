"""Every limit ends a run cleanly with its status and the partial trace, never a bare error."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from _agent_tools import add, call, slow

import aillm_lab as al
from aillm_lab.testing import ScriptedModel

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")


def forever(name: str, **arguments: object) -> ScriptedModel:
    """A model that calls ``name`` on every turn and never answers."""
    counter = iter(range(10_000))
    return ScriptedModel(lambda messages, request: call(name, f"c{next(counter)}", **arguments),
                         name="loop")


def test_the_step_limit_ends_the_run_with_max_steps_and_every_step_kept(make_lab):
    run = al.ReActAgent(tools=[add], lab=make_lab(forever("add", a=1, b=1)),
                        max_steps=3, allow_repeats=True).run("never ends")
    assert run.status == "max_steps" and "3 steps" in run.error
    assert len(run.steps) == 3 and all(s.tool_results[0].content == "2" for s in run.steps)
    assert run.output is None


def test_a_budget_that_runs_out_mid_run_stops_with_budget_and_never_overspends(make_lab):
    budget = 5.0
    model = ScriptedModel(lambda messages, request: call("add", a=1, b=1), name="priced")
    lab = make_lab(model, prices={"scripted:priced": {"input": 10_000, "output": 10_000}})
    agent = al.ReActAgent(tools=[add], lab=lab, max_steps=50, max_cost_usd=budget,
                          params={"max_tokens": 50}, allow_repeats=True)
    run = agent.run("spend")
    assert run.status == "budget" and "max_cost_usd=5.0" in run.error
    live = [s for s in run.steps if s.completion is not None]
    assert 1 <= len(live) < 50  # it worked, then the gateway refused the next call
    assert run.steps[-1].completion is None and run.steps[-1].error == run.error
    assert 0 < run.cost_usd <= budget
    calls = lab.calls()
    mine = calls[calls["run_id"] == run.id]
    assert mine["cost_usd"].sum() <= budget
    assert mine["cost_usd"].sum() == pytest.approx(run.cost_usd)
    assert len(mine[mine["status"] == "ok"]) == len(live)


def test_the_time_limit_ends_the_run_with_timeout_promptly(make_lab):
    lab = make_lab(ScriptedModel([call("slow", seconds=30)]))
    started = time.monotonic()
    run = al.ReActAgent(tools=[slow], lab=lab, max_seconds=0.5).run("wait")
    assert time.monotonic() - started < 2.0
    assert run.status == "timeout" and "max_seconds" in run.error
    assert len(run.steps) == 1 and run.steps[0].tool_calls[0].name == "slow"


def test_cancel_from_another_thread_returns_the_partial_run_within_a_second(make_lab):
    lab = make_lab(ScriptedModel([call("add", a=1, b=2), call("slow", "c2", seconds=30)]))
    agent = al.ReActAgent(tools=[add, slow], lab=lab)
    asked = []
    timer = threading.Timer(0.5, lambda: asked.append((time.monotonic(), agent.cancel())))
    timer.start()
    run = agent.run("wait")
    returned = time.monotonic()
    timer.join()
    assert asked[0][1] == 1  # one run was in flight
    assert returned - asked[0][0] < 1.0
    assert run.status == "cancelled" and "agent.cancel()" in run.error
    assert run.steps[0].tool_results[0].content == "3"  # the work before is kept
    assert agent.last_run is run


def test_agent_run_works_inside_a_coroutine_under_asyncio_run(make_lab):
    lab = make_lab(ScriptedModel([call("add", a=2, b=2), "4"]))
    agent = al.ReActAgent(tools=[add], lab=lab)

    async def main() -> al.AgentRun:
        return agent.run("2+2")  # the sync door, on a thread whose loop is running

    run = asyncio.run(main())
    assert run.status == "completed" and run.output == "4"


def test_arun_is_the_async_twin_from_a_foreign_loop(make_lab):
    lab = make_lab(ScriptedModel([call("add", a=2, b=2), "4"]))
    run = asyncio.run(al.ReActAgent(tools=[add], lab=lab).arun("2+2"))
    assert run.status == "completed" and run.output == "4"


def test_task_cancel_marks_the_run_cancelled_keeps_it_and_propagates(make_lab):
    lab = make_lab(ScriptedModel([call("slow", seconds=30)]))
    agent = al.ReActAgent(tools=[slow], lab=lab)

    async def main() -> None:
        task = asyncio.create_task(agent.arun("wait"))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    deadline = time.monotonic() + 2.0  # the runner side unwinds on its own loop
    while agent.last_run.status == "running" and time.monotonic() < deadline:
        time.sleep(0.02)
    run = agent.last_run
    assert run.status == "cancelled" and len(run.steps) == 1


def test_a_model_error_ends_the_run_with_error_and_the_trace(make_lab):
    lab = make_lab(ScriptedModel([call("add", a=1, b=1), RuntimeError("model fell over")]))
    run = al.ReActAgent(tools=[add], lab=lab).run("x")
    assert run.status == "error" and "model fell over" in run.error
    assert len(run.steps) == 2 and run.steps[0].tool_results[0].content == "2"


def test_bad_limits_are_refused_at_construction(make_lab):
    lab = make_lab(ScriptedModel(["x"]))
    with pytest.raises(ValueError, match="max_steps"):
        al.ReActAgent(lab=lab, max_steps=0)
    with pytest.raises(ValueError, match="max_seconds"):
        al.ReActAgent(lab=lab, max_seconds=0)
