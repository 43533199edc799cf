"""An agent made with ``lab=None`` runs on ``al.default_lab()`` (its gateway, guard and home);
``tools=lab.tools`` gives it the Lab's built-in tools, and built-in names mix with
``@al.tool`` functions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _agent_tools import add, call

import aillm_lab as al
from aillm_lab.core import lab as lab_module
from aillm_lab.testing import ScriptedModel

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")


@pytest.fixture
def default_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh ``al.default_lab()`` on its own home, closed after the test."""
    home = tmp_path / "default_home"
    monkeypatch.setenv("AILLM_HOME", str(home))
    monkeypatch.setattr(lab_module, "_lab", None)
    try:
        yield home
    finally:
        if lab_module._lab is not None:
            lab_module._lab.close()


@pytest.mark.parametrize("agent_class", ["ReActAgent", "CodeWriterAgent", "ResearchAgent",
                                         "DataAnalysisAgent"])
def test_an_agent_without_a_lab_uses_the_default_lab(default_home, agent_class):
    agent = getattr(al, agent_class)(model="scripted:echo")
    assert agent.lab is al.default_lab()
    assert al.default_lab().settings.home == default_home


def test_a_run_without_a_lab_goes_through_the_default_labs_gateway_guard_and_home(
        default_home):
    agent = al.ReActAgent(tools=[add], model=ScriptedModel([call("add", a=1, b=2), "3"]))
    run = agent.run("1 + 2")
    assert run.status == "completed" and run.output == "3"
    lab = al.default_lab()
    assert list(lab.runs()["id"]) == [run.id]
    assert (default_home / "runs" / f"{run.id}.agent.json").is_file()
    calls = lab.calls()
    assert list(calls["run_id"]) == [run.id, run.id]
    audit = lab.audit()
    assert list(audit["tool"]) == ["add"] and list(audit["decision"]) == ["allowed"]


def test_tools_lab_tools_gives_the_builtin_tools_through_the_guard(make_lab):
    lab = make_lab(ScriptedModel([call("read_file", path="notes.txt"), "It says hello."]))
    (lab.tools.workspace.root / "notes.txt").write_text("hello from the workspace")
    agent = al.ReActAgent(tools=lab.tools, lab=lab)
    assert {"read_file", "write_file", "run_shell", "sql_query"} <= set(agent.tools.names())
    run = agent.run("What does notes.txt say?")
    assert run.status == "completed" and run.output == "It says hello."
    [result] = run.steps[0].tool_results
    assert result.ok and "hello from the workspace" in result.content
    assert list(lab.audit()["tool"]) == ["read_file"]


def test_builtin_names_and_own_tools_mix(make_lab):
    lab = make_lab(ScriptedModel([[call("add", "c1", a=2, b=3),
                                   call("read_file", "c2", path="notes.txt")], "5, hi"]))
    (lab.tools.workspace.root / "notes.txt").write_text("hi")
    run = al.ReActAgent(tools=[add, "read_file"], lab=lab).run("add and read")
    assert run.status == "completed"
    assert [(r.name, r.ok) for r in run.steps[0].tool_results] == [("add", True),
                                                                   ("read_file", True)]
    assert sorted(lab.audit()["tool"]) == ["add", "read_file"]
