"""AgentRun is data: JSON round-trip, DataFrame, notebook views, saved runs, fork, streaming."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from _agent_tools import add, call, shout

import aillm_lab as al
from aillm_lab.agents import list_runs, load_run
from aillm_lab.testing import ScriptedModel

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")


def two_tool_run(make_lab) -> tuple[al.Lab, al.AgentRun]:
    model = ScriptedModel([call("add", a=2, b=3), call("shout", "c2", text="<b>five</b>"),
                           "FIVE"])
    lab = make_lab(model)
    return lab, al.ReActAgent(tools=[add, shout], lab=lab).run("add, then shout")


def test_a_run_round_trips_through_json(make_lab):
    _, run = two_tool_run(make_lab)
    again = al.AgentRun.model_validate_json(run.model_dump_json())
    assert again == run
    assert again.steps[0].tool_calls[0].arguments == {"a": 2, "b": 3}
    assert again.usage == run.usage and again.cost_usd == run.cost_usd


def test_to_pandas_has_one_row_per_step(make_lab):
    _, run = two_tool_run(make_lab)
    frame = run.to_pandas()
    assert list(frame["step"]) == [0, 1, 2]
    assert list(frame["tool_calls"]) == [["add(a=2, b=3)"], ["shout(text='<b>five</b>')"], []]
    assert list(frame["input_tokens"]) == [s.usage.input_tokens for s in run.steps]
    assert {"cost_usd", "latency_s", "output_tokens", "error"} <= set(frame.columns)


def test_the_notebook_view_has_collapsible_escaped_steps_and_a_text_fallback(make_lab):
    _, run = two_tool_run(make_lab)
    page = run._repr_html_()
    assert page.count("<details>") == 3 and "completed" in page
    assert "&lt;b&gt;five&lt;/b&gt;" in page and "<b>five</b>" not in page
    text = str(run)
    assert "shout" in text and "output: FIVE" in text
    assert repr(run).startswith(f"<AgentRun {run.id} completed steps=3")


def test_a_finished_run_is_saved_and_another_process_lists_and_reloads_it(make_lab):
    lab, run = two_tool_run(make_lab)
    assert list(lab.runs()["id"]) == [run.id] == list(list_runs(lab)["id"])
    assert lab.load_run(run.id) == run == load_run(lab, run.id)
    script = ("import sys, aillm_lab as al; lab = al.Lab(home=sys.argv[1]); "
              "r = lab.load_run(sys.argv[2]); print(lab.runs()['id'].tolist()); "
              "print(r.model_dump_json()); lab.close()")
    out = subprocess.run([sys.executable, "-c", script, str(lab.settings.home), run.id],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert json.loads(out[0].replace("'", '"')) == [run.id]
    assert al.AgentRun.model_validate_json(out[1]) == run
    with pytest.raises(LookupError, match=r"lab\.runs\(\)"):
        lab.load_run("agent-nope")


def test_fork_replays_the_first_steps_without_calls_and_continues_live(make_lab):
    first = ScriptedModel([call("add", "a0", a=1, b=1), call("add", "a1", a=2, b=2),
                           call("add", "a2", a=3, b=3), "A says 6"], name="a")
    lab = make_lab(first)
    agent = al.ReActAgent(tools=[add], lab=lab)
    run = agent.run("add things")
    assert run.status == "completed" and len(run.steps) == 4
    audited = len(lab.audit())
    second = ScriptedModel([call("add", "b2", a=10, b=10), "B says 20"], name="b")

    forked = run.fork(step=2, model=second)

    assert forked.status == "completed" and forked.output == "B says 20"
    assert forked.forked_from == f"{run.id}@2" and forked.id != run.id
    assert [s.replayed for s in forked.steps] == [True, True, False, False]
    assert [s.model for s in forked.steps] == ["scripted:a", "scripted:a", "scripted:b",
                                               "scripted:b"]
    # steps 0-1 made no model calls: the call log has only the two live ones for this run
    calls = lab.calls()
    assert list(calls[calls["run_id"] == forked.id]["model"]) == ["scripted:b", "scripted:b"]
    # ... and no tool calls: the audit grew by the one live tool call
    assert len(lab.audit()) == audited + 1
    # the live part started from the recorded history of steps 0-1
    assert second.requests[0].messages == run.steps[2].messages
    assert forked.cost_usd == 0.0 and forked.usage.input_tokens == sum(
        s.usage.input_tokens for s in forked.steps[2:])


def test_a_reloaded_run_forks_with_the_agent_given(make_lab):
    lab, run = two_tool_run(make_lab)
    again = load_run(lab, run.id)
    with pytest.raises(LookupError, match="agent="):
        al.AgentRun.model_validate_json(run.model_dump_json()).fork(step=1)
    agent = al.ReActAgent(tools=[add, shout], lab=lab)
    forked = again.fork(step=2, model=ScriptedModel(["five!"]), agent=agent)
    assert forked.output == "five!" and len(forked.steps) == 3


def test_fork_at_a_step_that_does_not_exist_is_refused(make_lab):
    _, run = two_tool_run(make_lab)
    with pytest.raises(ValueError, match="steps 0..2"):
        run.fork(step=7)


def test_stream_yields_events_in_order_and_ends_with_the_run(make_lab):
    model = ScriptedModel([call("add", a=2, b=3), "The answer is 5"])
    agent = al.ReActAgent(tools=[add], lab=make_lab(model))
    events = list(agent.stream("2+3"))
    kinds = [e.type for e in events]
    squeezed = [k for i, k in enumerate(kinds) if i == 0 or k != kinds[i - 1]]
    assert squeezed == ["step_start", "tool_call", "tool_result", "step_start", "token",
                        "final"]
    assert "".join(e.text for e in events if e.type == "token") == "The answer is 5"
    assert events[2].tool_result.content == "5" and events[1].tool_call.name == "add"
    final = events[-1].run
    assert final.status == "completed" and final.output == "The answer is 5"
    assert [e.step for e in events if e.type == "step_start"] == [0, 1]


def test_a_stream_that_stops_early_says_error_before_final(make_lab):
    model = ScriptedModel(lambda messages, request: call("add", a=1, b=1))
    events = list(al.ReActAgent(tools=[add], lab=make_lab(model), max_steps=1).stream("x"))
    assert [e.type for e in events][-2:] == ["error", "final"]
    assert events[-1].run.status == "max_steps"


def test_astream_works_from_a_foreign_loop(make_lab):
    import asyncio

    model = ScriptedModel([call("add", a=2, b=3), "5"])
    agent = al.ReActAgent(tools=[add], lab=make_lab(model))

    async def main() -> list[al.AgentEvent]:
        return [e async for e in agent.astream("2+3")]

    events = asyncio.run(main())
    assert events[-1].type == "final" and events[-1].run.output == "5"
