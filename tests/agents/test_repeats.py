"""A model that repeats a call is stuck: the repeat is not run again, and it is asked to
answer; ``tool_choice="required"`` forces the first call only (as the OpenAI Agents SDK's
``reset_tool_choice``)."""

from __future__ import annotations

import pytest
from _agent_tools import call
from pydantic import BaseModel

import aillm_lab as al
from aillm_lab.testing import ScriptedModel

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")


def counting_tool() -> tuple[al.Tool, list[str]]:
    seen: list[str] = []

    @al.tool
    def lookup(key: str) -> str:
        """Look a key up."""
        seen.append(key)
        return f"value of {key}"

    return lookup, seen


def test_a_repeated_call_is_not_run_again_and_gets_the_earlier_result(make_lab):
    lookup, seen = counting_tool()
    model = ScriptedModel([call("lookup", "c1", key="x"), call("lookup", "c2", key="x"),
                           "the value of x"])
    lab = make_lab(model)
    run = al.ReActAgent(tools=[lookup], lab=lab).run("look up x")
    assert seen == ["x"]  # the tool ran once
    first, repeat = run.steps[0].tool_results[0], run.steps[1].tool_results[0]
    assert first.ok and first.content == "value of x"
    assert not repeat.ok and repeat.rule == "agent.repeat"
    assert repeat.content.startswith("value of x\n") and "not run again" in repeat.content
    # the model read the earlier result, and its next turn could only answer
    assert model.requests[2].messages[-1].text == repeat.content
    assert [r.params.tool_choice for r in model.requests] == ["auto", "auto", "none"]
    assert run.status == "completed" and run.output == "the value of x"
    # the guard audited one call: a repeat never reaches the tool
    assert len(lab.audit().query("tool == 'lookup'")) == 1


def test_different_arguments_are_not_a_repeat(make_lab):
    lookup, seen = counting_tool()
    model = ScriptedModel([call("lookup", "c1", key="x"), call("lookup", "c2", key="y"), "ok"])
    run = al.ReActAgent(tools=[lookup], lab=make_lab(model)).run("look up x and y")
    assert seen == ["x", "y"] and all(s.tool_results[0].ok for s in run.steps[:2])
    assert [r.params.tool_choice for r in model.requests] == ["auto", "auto", "auto"]


def test_repeats_count_as_failed_calls_so_a_stuck_model_ends_with_error(make_lab):
    lookup, seen = counting_tool()
    model = ScriptedModel(lambda messages, request: call("lookup", key="x"), name="stuck")
    run = al.ReActAgent(tools=[lookup], lab=make_lab(model), max_steps=20,
                        max_repairs=2).run("look up x")
    assert seen == ["x"]
    assert run.status == "error" and "3 times in a row" in run.error
    assert len(run.steps) == 4  # the call, then max_repairs + 1 repeats


def test_allow_repeats_runs_the_same_call_again(make_lab):
    lookup, seen = counting_tool()
    model = ScriptedModel([call("lookup", "c1", key="x"), call("lookup", "c2", key="x"), "ok"])
    run = al.ReActAgent(tools=[lookup], lab=make_lab(model), allow_repeats=True).run("poll x")
    assert seen == ["x", "x"] and run.steps[1].tool_results[0].ok
    assert [r.params.tool_choice for r in model.requests] == ["auto", "auto", "auto"]


def test_required_tool_choice_holds_until_a_tool_ran_then_turns_auto(make_lab):
    lookup, _ = counting_tool()
    model = ScriptedModel([call("nope", "c1"), call("lookup", "c2", key="x"), "done"])
    run = al.ReActAgent(tools=[lookup], lab=make_lab(model),
                        params={"tool_choice": "required"}).run("look up x")
    # an unknown tool is no tool run: the choice stays required until lookup succeeded
    assert [r.params.tool_choice for r in model.requests] == ["required", "required", "auto"]
    assert run.status == "completed" and run.output == "done"


def test_required_tool_choice_holds_throughout_with_an_output_model(make_lab):
    class Answer(BaseModel):
        value: str

    lookup, _ = counting_tool()
    model = ScriptedModel([call("lookup", "c1", key="x"),
                           call("final_answer", "c2", value="value of x")])
    run = al.ReActAgent(tools=[lookup], lab=make_lab(model), output=Answer,
                        params={"tool_choice": "required"}).run("look up x")
    assert [r.params.tool_choice for r in model.requests] == ["required", "required"]
    assert run.output == Answer(value="value of x")
