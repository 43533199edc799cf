"""Issue 16's grid: 3 models (two scripted, one OpenAI through the fake server) × 2 prompts ×
20 items completes, every call in the call log under the run id; and with a budget of half
the cost it stops at the budget with nothing over spent."""

from __future__ import annotations

import pytest

import aillm_lab as al
from aillm_lab.testing import FakeOpenAI, ScriptedModel

KEY = "sk-test-NEVER-STORE-0123456789abcdef"
ROWS = [{"n": i, "answer": str(i * i)} for i in range(20)]
PROMPTS = ["What is {n} squared?", "Compute {n} * {n}. Reply with the number only."]


def square_of_last_number(text: str) -> str:
    n = int(next(w for w in text.replace("*", " ").replace("?", " ").split() if w.isdigit()))
    return str(n * n)


def _grid(lab, server, **overrides):
    right = ScriptedModel(lambda m, r: square_of_last_number(m[-1].text), name="right")
    off = ScriptedModel(lambda m, r: "1", name="off")
    spec = {"name": "squares", "dataset": ROWS, "prompts": PROMPTS,
            "models": [right, off, f"openai:gpt-4o-mini@{server.url}"],
            "scorers": [al.scorers.exact("answer"), al.scorers.numeric("answer"),
                        al.scorers.cost()],
            "params": {"max_tokens": 16}, "lab": lab, "concurrency": 8}
    return al.Experiment(**{**spec, **overrides})


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    handler = lambda body: square_of_last_number(body["messages"][-1]["content"])  # noqa: E731
    with FakeOpenAI(handler=handler) as fake:
        yield fake


def test_the_grid_completes_through_every_adapter_under_one_run_id(make_lab, server):
    lab = make_lab()
    run = _grid(lab, server).run(progress=False)
    assert run.status == "completed" and run.n_done == 120 and run.n_errors == 0
    assert len(server.requests) == 40
    calls = lab.calls()
    mine = calls[calls["run_id"] == run.run_id]
    assert len(mine) == 120 and (mine["status"] == "ok").all()
    assert mine.groupby("model").size().to_dict() == {
        "openai:gpt-4o-mini": 40, "scripted:off": 40, "scripted:right": 40}
    summary = run.summary().set_index(["model", "prompt_index"])
    openai = f"openai:gpt-4o-mini@{server.url}"
    assert summary["exact"].to_dict() == {
        (openai, 0): 1.0, (openai, 1): 1.0,
        ("scripted:off", 0): 0.05, ("scripted:off", 1): 0.05,  # "1" is 1 * 1, right once
        ("scripted:right", 0): 1.0, ("scripted:right", 1): 1.0}
    assert summary.loc[(openai, 0), "cost_usd"] > 0
    assert mine["cost_usd"].sum() == pytest.approx(run.cost_usd)


def test_a_budget_of_half_the_cost_stops_there_with_nothing_over_spent(tmp_path, server):
    with al.Lab(home=tmp_path / "full") as lab:
        full_cost = _grid(lab, server).run(progress=False).cost_usd
    assert full_cost > 0
    budget = full_cost / 2
    with al.Lab(home=tmp_path / "half") as lab:
        run = _grid(lab, server, budget_usd=budget).run(progress=False)
        calls = lab.calls()
    assert run.status == "budget" and run.n_errors == 0
    assert run.cost_usd <= budget and calls["cost_usd"].sum() <= budget
    assert run.n_done < 120 and "of 120 cells done" in run.message
    assert (calls["status"] == "ok").sum() == run.n_done  # a refused call is never sent
