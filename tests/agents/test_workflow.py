"""Workflow specs: YAML and Python build the same validated DAG; a cycle, a dangling
reference, an unknown input, bad YAML and bad fields are ConfigErrors naming the step and
the field; templates are references walked over data, never code."""

from __future__ import annotations

import pytest

import aillm_lab as al
from aillm_lab.agents.workflow_template import TemplateError, compile_condition, compile_template
from aillm_lab.errors import ConfigError

GOOD = """
name: demo
inputs: {topic: null, n: 2}
steps:
  - id: draft
    llm: "Write {{ inputs.n }} facts about {{ inputs.topic }}."
  - id: count
    call: _workflow_funcs:counts
    args: {counters: "{{ steps.draft.output.text }}"}
    needs: [draft]
    retry: {attempts: 3, backoff_s: 0.5}
    timeout_s: 10
    when: "{{ steps.draft.status }} == 'completed'"
"""


def _error(yaml_text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        al.Workflow.from_yaml(yaml_text, allow_imports=True)
    return info.value


def test_yaml_and_python_build_the_same_validated_workflow():
    wf = al.Workflow.from_yaml(GOOD, allow_imports=True)  # a file this test wrote
    same = al.Workflow(name="demo", inputs={"topic": None, "n": 2}, steps=[
        {"id": "draft", "llm": "Write {{ inputs.n }} facts about {{ inputs.topic }}."},
        {"id": "count", "call": "_workflow_funcs:counts",
         "args": {"counters": "{{ steps.draft.output.text }}"}, "needs": ["draft"],
         "retry": {"attempts": 3, "backoff_s": 0.5}, "timeout_s": 10,
         "when": "{{ steps.draft.status }} == 'completed'"}])
    assert wf == same
    assert [s.kind for s in wf.steps] == ["llm", "call"]
    assert wf.needs("count") == ["draft"] and wf.order() == ["draft", "count"]
    assert wf.step("count").retry.delay(1) == 0.5 and wf.step("count").retry.delay(2) == 1.0
    assert wf.bind({"topic": "owls"}) == {"topic": "owls", "n": 2}


def test_a_yaml_file_path_is_read(tmp_path):
    path = tmp_path / "flow.yaml"
    path.write_text(GOOD, encoding="utf-8")
    assert (al.Workflow.from_yaml(path, allow_imports=True)
            == al.Workflow.from_yaml(str(path), allow_imports=True))


def test_a_cycle_is_a_config_error_naming_its_steps():
    error = _error("""
steps:
  - {id: a, call: "_workflow_funcs:counts", args: {counters: "{{ steps.c.output }}"}}
  - {id: b, call: "_workflow_funcs:counts", args: {counters: "{{ steps.a.output }}"}}
  - {id: c, call: "_workflow_funcs:counts", needs: [b]}
""")
    assert "form a cycle" in str(error)
    assert set(error.fields) == {"steps.a", "steps.b", "steps.c"}


def test_a_step_that_refers_to_itself_is_a_cycle():
    error = _error("""
steps:
  - {id: loop, llm: "again: {{ steps.loop.output.text }}"}
""")
    assert "step 'loop' refers to its own output" in str(error)
    assert error.fields == ("steps.loop.llm",)


def test_an_unknown_step_reference_is_a_config_error_naming_the_step_and_field():
    error = _error("""
steps:
  - {id: fetch, tool: read_file, args: {path: notes.txt}}
  - {id: summarize, llm: "Summarize {{ steps.fetsh.output.text }}"}
""")
    assert str(error) == ("step 'summarize' refers to {{ steps.fetsh.output.text }} in llm, "
                          "but there is no step 'fetsh' (steps: fetch, summarize).")
    assert error.fields == ("steps.summarize.llm",)


def test_an_unknown_needs_entry_is_dangling():
    error = _error("""
steps:
  - {id: a, llm: hi, needs: [ghost]}
""")
    assert "no step 'ghost'" in str(error) and error.fields == ("steps.a.needs",)


def test_an_undeclared_input_reference_is_a_config_error_naming_it():
    error = _error("""
inputs: [topic]
steps:
  - {id: a, llm: "about {{ inputs.topik }}"}
""")
    assert "declares no input 'topik'" in str(error) and error.fields == ("steps.a.llm",)


def test_outputs_are_checked_like_steps():
    error = _error("""
steps:
  - {id: a, llm: hi}
outputs: {x: "{{ steps.b.output }}"}
""")
    assert "outputs refers to {{ steps.b.output }}" in str(error)
    assert error.fields == ("outputs",)


def test_bad_yaml_is_a_config_error_with_the_line():
    error = _error("steps:\n  - id: a\n    llm: [unclosed\n")
    assert "not valid YAML at line" in str(error) and error.fields == ("yaml",)
    assert "a mapping" in str(_error("- just\n- a list\n"))


def test_a_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no such workflow file"):
        al.Workflow.from_yaml(tmp_path / "nope.yaml")


@pytest.mark.parametrize(("step", "field", "says"), [
    ({"id": "a", "call": "_workflow_funcs:counts", "retry": {"attempts": 0}},
     "steps.a.retry.attempts", "greater than or equal to 1"),
    ({"id": "a", "llm": "x", "timeout_s": -1}, "steps.a.timeout_s", "greater than 0"),
    ({"id": "a", "llm": "x", "params": {"temperature": "hot"}}, "steps.a.params.temperature",
     "valid number"),
    ({"id": "a", "llm": "x", "colour": "red"}, "steps.a.colour", "Extra inputs"),
    ({"id": "a", "llm": "x", "tool": "read_file"}, "steps.a", "exactly one of llm:"),
    ({"id": "bad id", "llm": "x"}, "steps.bad id.id", "pattern"),
    ({"llm": "x"}, "steps.[0].id", "required"),
])
def test_a_bad_field_is_a_config_error_naming_the_step_and_field(step, field, says):
    with pytest.raises(ConfigError) as info:
        al.Workflow(steps=[step])
    assert info.value.fields == (field,)
    assert says in str(info.value) and field in str(info.value)


def test_workflow_level_fields_are_named_too():
    with pytest.raises(ConfigError) as info:
        al.Workflow(steps=[{"id": "a", "llm": "x"}], max_concurrency=0, budget_usd=-1)
    assert set(info.value.fields) == {"max_concurrency", "budget_usd"}
    with pytest.raises(ConfigError) as info:
        al.Workflow(steps=[])
    assert info.value.fields == ("steps",)


def test_duplicate_ids_an_unimportable_call_and_an_unknown_agent_are_named():
    with pytest.raises(ConfigError, match="step id 'a' is used twice") as info:
        al.Workflow(steps=[{"id": "a", "llm": "x"}, {"id": "a", "llm": "y"}])
    assert info.value.fields == ("steps.a.id",)
    with pytest.raises(ConfigError, match="cannot be imported") as info:
        al.Workflow(steps=[{"id": "f", "call": "no_such_module_here:fn"}])
    assert info.value.fields == ("steps.f.call",)
    with pytest.raises(ConfigError, match="is not one of") as info:
        al.Workflow(steps=[{"id": "g", "agent": "wizard", "task": "x"}])
    assert info.value.fields == ("steps.g.agent",)


def test_inputs_are_bound_against_the_declaration():
    wf = al.Workflow(inputs=["topic"], steps=[{"id": "a", "llm": "{{ inputs.topic }}"}])
    with pytest.raises(ConfigError, match="needs input 'topic'") as info:
        wf.bind({})
    assert info.value.fields == ("inputs.topic",)
    with pytest.raises(ConfigError, match="takes no input 'topik'"):
        wf.bind({"topic": "x", "topik": "y"})


@pytest.mark.parametrize("text", [
    "{{ __import__('os').system('true') }}", "{{ inputs.x + 1 }}", "{{ inputs.x() }}",
    "{{ steps['a'] }}", "{{ os.environ }}", "{{ steps.a }}", "{{ inputs.x", "x }}",
])
def test_a_template_is_a_reference_never_an_expression(text):
    with pytest.raises(TemplateError):
        compile_template(text)


def test_templates_walk_keys_and_indexes_and_keep_the_type_of_a_lone_reference():
    context = {"inputs": {"n": 3, "tags": ["a", "b"]},
               "steps": {"s": {"output": {"rows": [{"name": "x"}]}, "status": "completed"}}}
    assert compile_template("{{ inputs.n }}").render(context) == 3
    assert compile_template("{{inputs.tags}}").render(context) == ["a", "b"]
    assert compile_template("n={{ inputs.n }} {{ inputs.tags }}").render(context) == \
        'n=3 ["a", "b"]'
    assert compile_template("{{ steps.s.output.rows.0.name }}").render(context) == "x"
    with pytest.raises(TemplateError, match="has no key 'nme'"):
        compile_template("{{ steps.s.output.rows.0.nme }}").render(context)
    with pytest.raises(TemplateError, match="not an index"):
        compile_template("{{ inputs.tags.5 }}").render(context)


def test_conditions_compare_a_reference_with_a_literal_only():
    context = {"inputs": {"label": "spam", "n": 3, "dry": False}, "steps": {}}
    holds = {"{{ inputs.label }} == 'spam'": True, "{{ inputs.label }} != \"spam\"": False,
             "{{ inputs.n }} >= 3": True, "{{ inputs.label }} in ['ham', 'eggs']": False,
             "{{ inputs.label }} not in ['ham']": True, "not {{ inputs.dry }}": True,
             "{{ inputs.dry }} == false": True, "{{ inputs.n }}": True}
    for text, expected in holds.items():
        condition = compile_condition(text)
        assert condition.holds(context) is expected, text
    for bad in ["{{ inputs.n }} == __import__('os')", "{{ inputs.n }} + 1",
                "inputs.n == 1", "{{ inputs.n }} == len([1])"]:
        with pytest.raises(TemplateError):
            compile_condition(bad)
