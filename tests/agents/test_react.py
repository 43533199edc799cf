"""ReActAgent end to end with scripted models: tools, repairs, the guard and the audit."""

from __future__ import annotations

import pytest
from _agent_tools import add, call, shout
from pydantic import BaseModel

import aillm_lab as al
from aillm_lab.testing import ScriptedModel

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")


def test_a_task_that_needs_two_different_tools_completes_with_the_answer(make_lab):
    model = ScriptedModel([call("add", a=2, b=3), call("shout", "c2", text="five"),
                           "2 + 3 = 5, loudly: FIVE"])
    lab = make_lab(model)
    run = al.ReActAgent(tools=[add, shout], lab=lab).run("add 2 and 3, then shout 'five'")
    assert run.status == "completed" and run.error is None
    assert run.output == "2 + 3 = 5, loudly: FIVE"
    assert [[c.name for c in s.tool_calls] for s in run.steps] == [["add"], ["shout"], []]
    assert [r.content for s in run.steps for r in s.tool_results] == ["5", "FIVE"]
    # the observation reached the model as a tool message answering its call
    last = model.requests[-1].messages
    assert [(m.role, m.text, m.tool_call_id) for m in last if m.role == "tool"] == [
        ("tool", "5", "c1"), ("tool", "FIVE", "c2")]
    assert {s.name for s in model.requests[0].tools} == {"add", "shout"}
    calls = lab.calls()
    assert list(calls[calls["run_id"] == run.id]["model"]) == ["scripted:scripted"] * 3
    audit = lab.audit()
    assert list(audit["tool"]) == ["add", "shout"]
    assert run.usage.input_tokens == sum(s.usage.input_tokens for s in run.steps) > 0


def test_several_tool_calls_in_one_turn_all_run_and_are_answered_in_order(make_lab):
    model = ScriptedModel([[call("add", "x", a=1, b=1), call("shout", "y", text="hi")], "ok"])
    run = al.ReActAgent(tools=[add, shout], lab=make_lab(model)).run("both")
    assert [r.content for r in run.steps[0].tool_results] == ["2", "HI"]
    assert [m.tool_call_id for m in run.steps[0].observations] == ["x", "y"]


def test_a_plain_function_and_a_built_in_name_are_tools_too(make_lab):
    def double(n: int) -> int:
        """Double a number."""
        return 2 * n

    lab = make_lab(ScriptedModel([call("double", n=4), call("write_file", "c2",
                                  path="out.txt", content="8"), "done"]))
    run = al.ReActAgent(tools=[double, "write_file"], lab=lab).run("double 4, save it")
    assert run.status == "completed"
    assert run.steps[0].tool_results[0].content == "8"
    assert run.steps[1].tool_results[0].ok, run.steps[1].tool_results[0].content
    assert (lab.settings.workspace_path / "out.txt").read_text() == "8"


def test_bad_arguments_come_back_as_an_observation_and_the_model_repairs_the_call(make_lab):
    model = ScriptedModel([call("add", a="two", b=3), call("add", "c2", a=2, b=3), "5"])
    run = al.ReActAgent(tools=[add], lab=make_lab(model)).run("2+3")
    first = run.steps[0].tool_results[0]
    assert not first.ok and "Invalid arguments for tool 'add'" in first.content
    assert "a:" in model.requests[1].messages[-1].text  # the model read what to fix
    assert run.steps[1].tool_results[0].content == "5"
    assert run.status == "completed" and run.output == "5"


def test_unparseable_json_arguments_are_reported_as_such(make_lab):
    model = ScriptedModel([call("add", _raw="{a: 2, b"), call("add", "c2", a=2, b=3), "5"])
    run = al.ReActAgent(tools=[add], lab=make_lab(model)).run("2+3")
    assert "not valid JSON" in run.steps[0].tool_results[0].content
    assert run.status == "completed"


def test_an_unknown_tool_is_an_observation_naming_the_tools_there_are(make_lab):
    model = ScriptedModel([call("multiply", a=2, b=3), call("add", "c2", a=2, b=3), "5"])
    run = al.ReActAgent(tools=[add], lab=make_lab(model)).run("2+3")
    result = run.steps[0].tool_results[0]
    assert not result.ok and "Unknown tool 'multiply'" in result.content
    assert "add" in result.content
    assert run.status == "completed"


def test_a_tool_that_raises_is_an_observation_and_is_audited_as_an_error(make_lab):
    @al.tool
    def explode(x: int) -> int:
        """Always fails."""
        raise ValueError(f"cannot handle {x}")

    lab = make_lab(ScriptedModel([call("explode", x=1), "it failed, sorry"]))
    run = al.ReActAgent(tools=[explode], lab=lab).run("try")
    result = run.steps[0].tool_results[0]
    assert not result.ok and "ValueError: cannot handle 1" in result.content
    assert run.status == "completed" and run.output == "it failed, sorry"
    assert list(lab.audit()["decision"]) == ["error"]


def test_a_safety_violation_is_fed_back_visible_in_the_trace_and_the_audit(make_lab):
    lab = make_lab(ScriptedModel([call("read_file", path="/etc/passwd"),
                                  "I may not read that file."]))
    run = al.ReActAgent(tools=["read_file"], lab=lab).run("read /etc/passwd")
    result = run.steps[0].tool_results[0]
    assert not result.ok and result.rule is not None
    assert "Refused by the safety policy" in result.content
    assert "root:" not in result.content
    assert run.steps[0].observations[0].text == result.content
    assert run.status == "completed"
    audit = lab.audit()
    assert list(audit["tool"]) == ["read_file"] and list(audit["decision"]) == ["refused"]


def test_repairs_are_bounded_a_model_that_keeps_failing_ends_with_error(make_lab):
    model = ScriptedModel(lambda messages, request: call("nope"))
    run = al.ReActAgent(tools=[add], lab=make_lab(model), max_repairs=2).run("loop")
    assert run.status == "error" and "3 times in a row" in run.error
    assert len(run.steps) == 3


def test_an_empty_reply_is_repaired_not_taken_as_the_answer(make_lab):
    run = al.ReActAgent(tools=[add], lab=make_lab(ScriptedModel(["", "42"]))).run("q")
    assert run.output == "42" and run.steps[0].observations[0].role == "user"


class Sum(BaseModel):
    total: int
    explanation: str


def test_output_is_a_validated_model_and_a_bad_final_answer_is_repaired(make_lab):
    model = ScriptedModel([call("add", a=2, b=3),
                           call("final_answer", "f1", total="five", explanation="x"),
                           call("final_answer", "f2", total=5, explanation="2+3")])
    run = al.ReActAgent(tools=[add], lab=make_lab(model), output=Sum).run("2+3")
    assert run.status == "completed"
    assert run.output == Sum(total=5, explanation="2+3")
    bad = run.steps[1].tool_results[0]
    assert not bad.ok and "does not match the required schema" in bad.content
    assert "final_answer" in {t.name for t in model.requests[0].tools}
    assert "final_answer" in model.requests[0].messages[0].text


def test_output_given_as_json_text_is_accepted(make_lab):
    model = ScriptedModel(['{"total": 4, "explanation": "2+2"}'])
    run = al.ReActAgent(tools=[add], lab=make_lab(model), output=Sum).run("2+2")
    assert run.output == Sum(total=4, explanation="2+2")


def test_tools_must_be_a_list_of_tools(make_lab):
    lab = make_lab(ScriptedModel(["x"]))
    with pytest.raises(al.ConfigError):
        al.ReActAgent(tools=add, lab=lab)
    with pytest.raises(al.ConfigError):
        al.ReActAgent(tools=[42], lab=lab)
    with pytest.raises(al.ConfigError):
        al.ReActAgent(tools=["no_such_builtin"], lab=lab)
