"""A workflow read from text is data someone else may have written: it imports nothing by
itself. A ``call:`` "module:function" (or an ``agent:`` "module:Class") from YAML or JSON is
a ConfigError naming the step, the call and the fix, unless the caller passes the functions
it trusts (``functions={"name": fn}``) or opts in with ``allow_imports=True``; workflows
built in Python with callables are unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import aillm_lab as al
from aillm_lab.errors import ConfigError


@pytest.fixture
def lab(tmp_path, runner):
    lab = al.Lab(al.LabSettings(home=tmp_path / "home"), runner=runner)
    yield lab
    lab.close()


def _planted(mark: Path) -> str:
    return f"""
name: innocent
steps:
  - id: s
    call: os:system
    args: {{command: "touch {mark}"}}
"""


def test_a_yaml_call_to_an_arbitrary_function_is_refused_and_runs_nothing(tmp_path, lab):
    mark = tmp_path / "MARK"
    path = tmp_path / "flows" / "nightly.yaml"
    path.parent.mkdir()
    path.write_text(_planted(mark), encoding="utf-8")
    for load in (lambda: al.Workflow.from_yaml(path), lambda: al.Workflow.from_yaml(str(path)),
                 lambda: al.Workflow.from_yaml(_planted(mark)),
                 lambda: al.WorkflowAgent(path, lab=lab).run({})):
        with pytest.raises(ConfigError) as info:
            load()
        message = str(info.value)
        assert "step 's'" in message and "'os:system'" in message
        assert "functions=" in message and "allow_imports=True" in message
        assert info.value.fields == ("steps.s.call",)
    assert not mark.exists()


def test_a_json_workflow_through_from_dict_is_refused_too(tmp_path):
    data = json.loads(json.dumps({"steps": [{"id": "r", "call": "pathlib:Path.read_text",
                                             "args": {"self": "/etc/hostname"}}]}))
    with pytest.raises(ConfigError, match="'pathlib:Path.read_text'") as info:
        al.Workflow.from_dict(data)
    assert info.value.fields == ("steps.r.call",)


def test_the_functions_the_caller_passes_are_the_ones_a_yaml_call_names(lab):
    seen: list[str] = []

    def fetch(topic: str) -> list[str]:
        seen.append(topic)
        return [f"{topic}.md"]

    text = """
inputs: [topic]
steps:
  - {id: fetch, call: fetch, args: {topic: "{{ inputs.topic }}"}}
  - {id: count, call: "mod:count", args: {files: "{{ steps.fetch.output }}"}}
outputs: {n: "{{ steps.count.output }}"}
"""
    wf = al.Workflow.from_yaml(text, functions={"fetch": fetch,
                                                  "mod:count": lambda files: len(files)})
    run = al.WorkflowAgent(wf, lab=lab, checkpoint=False).run({"topic": "owls"})
    assert run.status == "completed", run.error
    assert run.outputs == {"n": 1} and seen == ["owls"]
    with pytest.raises(ConfigError, match=r"functions given: \['fetch'\]") as info:
        al.Workflow.from_yaml(text, functions={"fetch": fetch})
    assert info.value.fields == ("steps.count.call",)


def test_allow_imports_opts_in_to_the_module_function_names(tmp_path, lab):
    mark = tmp_path / "MARK"
    wf = al.Workflow.from_yaml(_planted(mark), allow_imports=True)
    run = al.WorkflowAgent(wf, lab=lab, checkpoint=False).run({})
    assert run.status == "completed", run.error
    assert mark.exists()


def test_an_agent_class_named_by_a_file_is_refused_but_the_builtin_names_are_not():
    text = """
steps:
  - {id: a, agent: "os:system", task: "hi"}
"""
    with pytest.raises(ConfigError, match="'os:system'") as info:
        al.Workflow.from_yaml(text)
    assert info.value.fields == ("steps.a.agent",)
    assert "allow_imports=True" in str(info.value)
    assert al.Workflow.from_yaml("steps:\n  - {id: a, agent: react, task: hi}\n")


def test_python_built_workflows_with_callables_are_unchanged(lab):
    wf = al.Workflow(steps=[{"id": "a", "call": lambda: 2},
                            {"id": "b", "call": lambda x: x * 21,
                             "args": {"x": "{{ steps.a.output }}"}}])
    run = al.WorkflowAgent(wf, lab=lab, checkpoint=False).run({})
    assert run.status == "completed" and run.outputs == {"b": 42}


@pytest.mark.parametrize("bad", [{"f": "not callable"}, {1: len}])
def test_functions_must_map_names_to_callables(bad):
    with pytest.raises(ConfigError) as info:
        al.Workflow.from_yaml("steps:\n  - {id: a, call: f}\n", functions=bad)
    assert info.value.fields == ("functions",)


def test_allow_imports_must_be_a_bool():
    with pytest.raises(ConfigError) as info:
        al.Workflow.from_yaml("steps:\n  - {id: a, call: 'os:getcwd'}\n", allow_imports="yes")
    assert info.value.fields == ("allow_imports",)
