"""AgentRun is data: JSON round-trip, DataFrame, notebook views, saved runs, fork, streaming."""

from __future__ import annotations

import json
import re
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
    assert list(frame["tool_results"]) == [["5"], ["<B>FIVE</B>"], []]


def test_to_pandas_cuts_a_long_tool_result_and_keeps_each_result_of_a_turn(make_lab):
    @al.tool
    def long_text(n: int) -> str:
        """A text of n characters."""
        return "x" * n

    model = ScriptedModel([[call("long_text", "c1", n=1000), call("long_text", "c2", n=3)],
                           "done"])
    run = al.ReActAgent(tools=[long_text], lab=make_lab(model)).run("long")
    first = run.to_pandas()["tool_results"][0]
    assert first == ["x" * 197 + "...", "xxx"]
    assert run.steps[0].tool_results[0].content == "x" * 1000  # the trace keeps it whole


def hand_made_run() -> al.AgentRun:
    """A two-step run with known tokens, cost and latency: a turn that only calls a tool,
    then the answer."""
    asked = [al.Message.system("You add."), al.Message.user("2 + 3?")]
    first = al.AgentStep(
        index=0, model="scripted:x", messages=asked,
        completion=al.Completion(tool_calls=[call("add", a=2, b=3)]),
        tool_results=[al.ToolResult(name="add", call_id="c1", content="5")],
        observations=[al.Message.tool("5", "c1", name="add")],
        usage=al.Usage(input_tokens=12, output_tokens=7), cost_usd=0.0123, latency_s=1.5)
    second = al.AgentStep(
        index=1, model="scripted:x", messages=first.history(),
        completion=al.Completion(text="It is 5."),
        usage=al.Usage(input_tokens=30, output_tokens=4), cost_usd=0.002, latency_s=0.25)
    return al.AgentRun(agent="ReActAgent", task="2 + 3?", status="completed",
                       output="It is 5.", steps=[first, second], latency_s=1.75)


def test_each_step_is_a_collapsible_block_with_its_tokens_cost_and_latency():
    page = hand_made_run()._repr_html_()
    assert "2 steps · 53 tokens · $0.0143 · 1.75 s" in page  # the run's totals
    blocks = re.findall(r"<details><summary>(.*?)</summary>(.*?)</details>", page, re.S)
    assert [summary for summary, _ in blocks] == [
        "step 0 · 1 tool calls · 12→7 tokens · $0.01230 · 1.50 s",
        "step 1 · 0 tool calls · 30→4 tokens · $0.00200 · 0.25 s"]
    first, second = (body for _, body in blocks)
    assert first.endswith("<small>12 in / 7 out tokens · $0.0123 · 1.50 s</small>")
    assert second.endswith("<small>30 in / 4 out tokens · $0.0020 · 0.25 s</small>")
    assert "<code>add({&quot;a&quot;: 2, &quot;b&quot;: 3})</code>" in first
    assert "<pre>5</pre>" in first and "It is 5." in second


def test_a_turn_that_only_called_tools_shows_its_calls_not_an_empty_block():
    page = hand_made_run()._repr_html_()
    second = page.split("<details>")[2]
    sent = re.findall(r"<div><b>(\w+)</b>(.*?)</div>(?=<div><b>)", second,
                      re.S)
    assert [role for role, _ in sent] == ["user", "assistant", "tool"]
    assistant = dict(sent)["assistant"]
    assert "<pre></pre>" not in page
    assert "→ <code>add({&quot;a&quot;: 2, &quot;b&quot;: 3})</code>" in assistant
    assert dict(sent)["tool"].startswith(" (add): <pre>5</pre>")


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
