"""Durable workflows: a run SIGKILLed in a subprocess after its third step is checkpointed
resumes without running steps 1-3 again (their side-effect counters prove it) and ends with
the outputs of an uninterrupted run; a step whose inputs changed runs again; checkpoints are
rows in lab.db, each committed when its step finishes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _workflow_funcs import DAG, counts

import aillm_lab as al

HERE = Path(__file__).parent
TEXT = "durable workflows resume where they stopped"
CHILD = """
import sys
import aillm_lab as al
home, flow, run_id, text, counters, hold = sys.argv[1:]
lab = al.Lab(home=home)
run = al.WorkflowAgent(al.Workflow.from_yaml(flow, allow_imports=True), lab=lab).run(
    inputs={"text": text, "counters": counters, "hold": hold}, run_id=run_id)
print(run.status)
"""


def _flow(path: Path) -> al.Workflow:
    """The test's own file: it may import the step functions it names."""
    return al.Workflow.from_yaml(path, allow_imports=True)


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    path = tmp_path / "flow.yaml"
    path.write_text(DAG, encoding="utf-8")
    return path


@pytest.fixture
def open_lab(runner):
    labs: list[al.Lab] = []

    def make(home: Path) -> al.Lab:
        lab = al.Lab(al.LabSettings(home=home), runner=runner)
        labs.append(lab)
        return lab

    yield make
    for lab in labs:
        lab.close()


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AILLM_") and k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    return env


def _completed(home: Path, run_id: str) -> set[str]:
    db = home / "lab.db"
    if not db.exists():
        return set()
    try:
        with sqlite3.connect(f"{db.absolute().as_uri()}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT step FROM workflow_steps WHERE run_id = ? AND "
                                "status = 'completed'", (run_id,)).fetchall()
    except sqlite3.OperationalError:  # the table is not there yet
        return set()
    return {r[0] for r in rows}


def _wait(what, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not what():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_a_run_killed_after_step_three_resumes_without_rerunning_steps_one_to_three(
        tmp_path, flow, open_lab):
    home, counters, hold = tmp_path / "home", tmp_path / "counters", tmp_path / "hold"
    counters.mkdir()
    hold.write_text("hold the second level until the kill")
    script = tmp_path / "child.py"
    script.write_text(CHILD, encoding="utf-8")
    errors = tmp_path / "child.err"
    with errors.open("wb") as err:
        child = subprocess.Popen(
            [sys.executable, str(script), str(home), str(flow), "nightly-1", TEXT,
             str(counters), str(hold)], env=_env(), stdout=subprocess.DEVNULL, stderr=err)
    try:
        _wait(lambda: _completed(home, "nightly-1") >= {"load", "upper", "lengths"}
              and {"joined", "total"} & set(counts(counters)) or child.poll() is not None)
        assert child.poll() is None, errors.read_text()
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    assert _completed(home, "nightly-1") == {"load", "upper", "lengths"}
    before = counts(counters)
    assert before["load"] == before["upper"] == before["lengths"] == 1
    assert "report" not in before

    hold.unlink()  # the resumed run's second level does not wait
    lab = open_lab(home)
    run = al.WorkflowAgent(_flow(flow), lab=lab).run(
        inputs={"text": TEXT, "counters": str(counters), "hold": str(hold)},
        run_id="nightly-1")
    assert run.status == "completed" and run.resumed
    assert run.restored == ["load", "upper", "lengths"]
    assert run.executed == ["joined", "total", "report"]
    after = counts(counters)
    assert after["load"] == after["upper"] == after["lengths"] == 1  # not run again
    assert after["report"] == 1

    fresh_counters = tmp_path / "fresh"
    fresh_counters.mkdir()
    fresh = al.WorkflowAgent(_flow(flow), lab=open_lab(tmp_path / "other")
                             ).run(inputs={"text": TEXT, "counters": str(fresh_counters),
                                           "hold": str(hold)}, run_id="nightly-1")
    assert fresh.status == "completed" and not fresh.resumed
    assert set(counts(fresh_counters).values()) == {1}
    assert run.outputs == fresh.outputs == {
        "report": {"joined": "DURABLE-WORKFLOWS-RESUME-WHERE-THEY-STOPPED", "total": 38,
                   "first": "durable"},
        "summary": "durable: 38 letters"}
    assert [s.output for s in run.steps] == [s.output for s in fresh.steps]


def test_a_step_whose_inputs_changed_runs_again_and_the_rest_are_restored(
        tmp_path, flow, open_lab):
    counters = tmp_path / "counters"
    counters.mkdir()
    agent = al.WorkflowAgent(_flow(flow), lab=open_lab(tmp_path / "home"))
    inputs = {"text": "one two three", "counters": str(counters)}
    first = agent.run(inputs, run_id="r")
    assert first.executed == ["load", "upper", "lengths", "joined", "total", "report"]
    again = agent.run(inputs, run_id="r")
    assert again.restored == [s.id for s in again.steps] and again.executed == []
    assert again.outputs == first.outputs
    # the same words upper-cased: load's output changes, so upper and lengths run again;
    # their outputs do not change, so joined and total are restored; report reads load's
    # first word, which changed, so it runs again
    changed = agent.run({**inputs, "text": "ONE TWO THREE"}, run_id="r")
    assert changed.executed == ["load", "upper", "lengths", "report"]
    assert changed.restored == ["joined", "total"]
    assert changed.outputs["summary"] == "ONE: 11 letters"
    assert counts(counters) == {"joined": 1, "lengths": 2, "load": 2, "report": 2,
                                "total": 1, "upper": 2}


def test_each_finished_step_is_a_committed_row_in_lab_db_with_its_hash_and_attempts(
        tmp_path, flow, open_lab):
    home, counters = tmp_path / "home", tmp_path / "counters"
    counters.mkdir()
    lab = open_lab(home)
    run = al.WorkflowAgent(_flow(flow), lab=lab).run(
        {"text": "a bb", "counters": str(counters)}, run_id="rows")
    with sqlite3.connect(home / "lab.db") as conn:  # another connection sees every row
        steps = conn.execute("SELECT step, status, attempts, input_hash, output FROM "
                             "workflow_steps WHERE run_id = 'rows' ORDER BY step").fetchall()
        state = conn.execute("SELECT workflow, status, outputs FROM workflow_runs WHERE "
                             "run_id = 'rows'").fetchone()
    assert [(s[0], s[1], s[2]) for s in steps] == [
        (sid, "completed", 1) for sid in sorted(s.id for s in run.steps)]
    assert {s[0]: s[3] for s in steps} == {s.id: s.input_hash for s in run.steps}
    assert state[0] == "six-steps" and state[1] == "completed"
    assert '"total": 3' in state[2]


def test_a_run_id_of_another_workflow_is_refused_by_name(tmp_path, flow, open_lab):
    lab = open_lab(tmp_path / "home")
    counters = tmp_path / "c"
    counters.mkdir()
    al.WorkflowAgent(_flow(flow), lab=lab).run(
        {"text": "x", "counters": str(counters)}, run_id="shared")
    other = al.Workflow(name="other", steps=[{"id": "a", "call": "_workflow_funcs:counts",
                                              "args": {"counters": str(counters)}}])
    with pytest.raises(al.ConfigError, match="run_id 'shared' belongs to workflow "
                                             "'six-steps'") as info:
        al.WorkflowAgent(other, lab=lab).run(run_id="shared")
    assert info.value.fields == ("run_id",)
