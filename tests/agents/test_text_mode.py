"""TextTools: tool calls written as text by models without native tool calling."""

from __future__ import annotations

import pytest
from _agent_tools import add, call, shout

import aillm_lab as al
from aillm_lab.agents.text_mode import TextTools, parse_tool_calls
from aillm_lab.llm.types import Completion, Message, ToolSpec
from aillm_lab.testing import ScriptedModel

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")

ADD = ToolSpec(name="add", description="Add two integers.",
               parameters={"type": "object", "properties": {"a": {"type": "integer"},
                                                            "b": {"type": "integer"}},
                           "required": ["a", "b"]})


def calls_in(text: str) -> list[tuple[str, dict]]:
    return [(c.name, c.arguments) for c in TextTools().calls(Completion(text=text))]


def test_a_call_in_a_json_fence_is_parsed():
    text = 'I will add them.\n```json\n{"tool": "add", "arguments": {"a": 2, "b": 3}}\n```'
    assert calls_in(text) == [("add", {"a": 2, "b": 3})]


def test_a_bare_call_with_prose_around_it_is_parsed():
    text = 'First I call {"tool": "add", "arguments": {"a": 2, "b": 3}} and then I wait.'
    assert calls_in(text) == [("add", {"a": 2, "b": 3})]


@pytest.mark.parametrize("text", [
    '{"tool": "add", "arguments": {"a": 2, "b": 3,}}',           # trailing comma
    "{'tool': 'add', 'arguments': {'a': 2, 'b': 3}}",             # single quotes
    '```json\n{"tool": "add", "arguments": {"a": 2, "b": 3}\n```',  # a brace missing
    '{"tool": "add", "arguments": "{\\"a\\": 2, \\"b\\": 3}"}',   # arguments as a string
])
def test_slightly_malformed_json_is_repaired(text):
    assert calls_in(text) == [("add", {"a": 2, "b": 3})]


def test_two_calls_in_one_reply_are_both_parsed_in_order():
    fenced = ('```json\n{"tool": "add", "arguments": {"a": 1, "b": 2}}\n```\nand\n'
              '```json\n{"tool": "shout", "arguments": {"text": "hi"}}\n```')
    listed = ('[{"tool": "add", "arguments": {"a": 1, "b": 2}}, '
              '{"tool": "shout", "arguments": {"text": "hi"}}]')
    for text in (fenced, listed):
        assert calls_in(text) == [("add", {"a": 1, "b": 2}), ("shout", {"text": "hi"})]
    ids = [c.id for c in parse_tool_calls(listed)]
    assert len(set(ids)) == 2


@pytest.mark.parametrize("text", [
    "The answer is 5.",
    "See [1] and [2] for details.",
    '{"name": "Ada", "age": 36}',          # JSON data in an answer, naming no tool
    '```json\n{"result": 5}\n```',
    '{"tool": 5, "arguments": {}}',          # a tool name that is not a string
    "{{{",
])
def test_a_reply_that_names_no_tool_is_no_call(text):
    assert calls_in(text) == []


def test_arguments_that_are_not_an_object_become_a_call_the_toolset_refuses(make_lab):
    assert calls_in('{"tool": "add", "arguments": "two and three"}') == [
        ("add", {"_raw": "two and three"})]
    model = ScriptedModel(['{"tool": "add", "arguments": "two and three"}',
                           '{"tool": "add", "arguments": {"a": 2, "b": 3}}', "It is 5."])
    run = al.ReActAgent(tools=[add], lab=make_lab(model), tool_mode=TextTools()).run("2+3")
    first = run.steps[0].tool_results[0]
    assert not first.ok and "not valid JSON" in first.content
    assert "not valid JSON" in model.requests[1].messages[-1].text  # fed back to the model
    assert run.status == "completed" and run.output == "It is 5."


def test_the_request_has_no_tools_and_describes_them_in_the_system_text():
    messages, tools = TextTools().request(
        [Message.system("Be brief."), Message.user("2+3?")], [ADD])
    assert tools is None
    assert [m.role for m in messages] == ["system", "user"]
    system = messages[0].text
    assert system.startswith("Be brief.")
    assert "- add: Add two integers." in system
    assert '"required":["a","b"]' in system  # the JSON schema, verbatim
    assert '{"tool": "TOOL_NAME", "arguments": {...}}' in system


def test_without_a_system_message_one_is_added_and_without_tools_none_is():
    messages, _ = TextTools().request([Message.user("hi")], [ADD])
    assert [m.role for m in messages] == ["system", "user"]
    plain, tools = TextTools().request([Message.user("hi")], [])
    assert plain == [Message.user("hi")] and tools is None


def test_tool_results_become_user_text_and_native_calls_are_shown_as_json():
    history = [Message.system("s"), Message.user("task"),
               Message.assistant("", [call("add", "c1", a=2, b=3), call("shout", "c2",
                                                                         text="x")]),
               Message.tool("5", "c1", name="add"), Message.tool("X", "c2", name="shout")]
    messages, _ = TextTools().request(history, [ADD])
    assert all(m.role != "tool" and not m.tool_calls for m in messages)
    assert [m.role for m in messages] == ["system", "user", "assistant", "user"]
    assert parse_tool_calls(messages[2].text)[1].arguments == {"text": "x"}
    assert messages[3].text == "Result of tool add: 5\nResult of tool shout: X"


def test_a_native_call_from_the_model_is_taken_as_it_is():
    completion = Completion(text="", tool_calls=[call("add", a=1, b=1)])
    assert TextTools().calls(completion) == [call("add", a=1, b=1)]


def test_react_in_text_mode_uses_two_tools_and_answers(make_lab):
    model = ScriptedModel([
        'I need the sum first.\n```json\n{"tool": "add", "arguments": {"a": 2, "b": 3}}\n```',
        'Now shout it: {"tool": "shout", "arguments": {"text": "five"}}',
        "2 + 3 = 5, loudly: FIVE"])
    lab = make_lab(model)
    run = al.ReActAgent(tools=[add, shout], lab=lab, tool_mode=TextTools()).run(
        "add 2 and 3, then shout 'five'")
    assert run.status == "completed" and run.output == "2 + 3 = 5, loudly: FIVE"
    assert [r.content for s in run.steps for r in s.tool_results] == ["5", "FIVE"]
    assert all(r.name for s in run.steps for r in s.tool_results)
    assert all(req.tools == [] or req.tools is None for req in model.requests)
    last = model.requests[-1].messages
    assert [m.role for m in last] == ["system", "user", "assistant", "user", "assistant",
                                      "user"]
    assert "- shout: Upper-case a text." in last[0].text
    assert last[2].text.startswith("I need the sum first.")  # what the model wrote
    assert [last[3].text, last[5].text] == ["Result of tool add: 5",
                                            "Result of tool shout: FIVE"]
    assert list(lab.audit()["tool"]) == ["add", "shout"]  # through the guard, audited


def test_an_unknown_tool_written_as_text_is_fed_back(make_lab):
    model = ScriptedModel(['{"tool": "multiply", "arguments": {"a": 2, "b": 3}}',
                           '{"tool": "add", "arguments": {"a": 2, "b": 3}}', "5"])
    run = al.ReActAgent(tools=[add], lab=make_lab(model), tool_mode=TextTools()).run("2+3")
    assert "Unknown tool 'multiply'" in run.steps[0].tool_results[0].content
    assert "Unknown tool 'multiply'" in model.requests[1].messages[-1].text
    assert run.status == "completed" and run.output == "5"


class TextOnly(ScriptedModel):
    """A model that says it has no native tool calling."""

    supports_tools = False


def test_a_model_without_tool_calling_gets_the_text_protocol_by_default(make_lab):
    model = TextOnly(['```json\n{"tool": "add", "arguments": {"a": 2, "b": 3}}\n```',
                      "2 + 3 = 5"], name="text-only")
    run = al.ReActAgent(tools=[add], lab=make_lab(model)).run("add 2 and 3")
    assert all(r.tools == [] for r in model.requests)  # never sent tools=
    assert "add" in model.requests[0].messages[0].text  # described in the system text
    assert run.steps[0].tool_results[0].content == "5"
    assert run.status == "completed" and run.output == "2 + 3 = 5"


def test_a_model_with_tool_calling_keeps_native_calls(make_lab):
    model = ScriptedModel([call("add", a=2, b=3), "5"])
    al.ReActAgent(tools=[add], lab=make_lab(model)).run("add 2 and 3")
    assert [t.name for t in model.requests[0].tools] == ["add"]


def test_the_agents_wrapping_modes_fall_back_to_text_too():
    from aillm_lab.agents.code_writer import _SubmitAware
    from aillm_lab.agents.data_analysis import SqlBlocks
    from aillm_lab.agents.modes import NativeTools

    for wrapper in (_SubmitAware, SqlBlocks):  # CodeWriter's and DataAnalysis's modes
        mode = wrapper(NativeTools())
        text = mode.for_model(TextOnly(name="t"))
        assert isinstance(text, wrapper) and isinstance(text.inner, TextTools)
        assert mode.for_model(ScriptedModel(name="n")) is mode


def test_data_analysis_with_a_text_only_model_sends_no_tools(make_lab):
    import pandas as pd

    model = TextOnly(["```sql\nSELECT sum(x) AS total FROM t\n```", "The total is 6."],
                     name="text-only")
    run = al.DataAnalysisAgent(lab=make_lab(model)).run(
        "What is the total?", data={"t": pd.DataFrame({"x": [1, 2, 3]})})
    assert all(r.tools == [] for r in model.requests)
    assert run.status == "completed" and run.output.frame["total"].tolist() == [6]
