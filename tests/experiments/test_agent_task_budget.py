"""Issue 16: an experiment whose task runs an agent keeps the experiment's budget, as the
prompt grids do: with a budget of about half the grid's cost it stops at the budget with
nothing over spent, every agent call is in the call log, and a rerun counts what was spent.

The agent opens its own run scope (its trace's run id) inside the experiment's; its calls
must still count against the experiment's budget and be found under the experiment."""

from __future__ import annotations

import pytest

import aillm_lab as al
from aillm_lab.testing import ScriptedModel

CAPITALS = {"France": "Paris", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo",
            "Peru": "Lima"}
ROWS = [{"country": c, "answer": a} for c, a in CAPITALS.items()] * 2
PRICES = {"scripted:priced": {"input": 10_000, "output": 10_000}}  # $0.01 a token


def knows(messages, request):
    text = messages[-1].text
    return next(a for c, a in CAPITALS.items() if c in text)


async def agent_task(item, model, lab):
    """An agent config as the experiment's task: one model call per cell (a final answer)."""
    agent = al.Agent(model=model, lab=lab, max_steps=2, params={"max_tokens": 5},
                     save=False, progress=False)
    run = await agent.arun(f"Capital of {item['country']}?")
    return run.output


def _experiment(lab, model, budget):
    return al.Experiment(name="agent-budget", dataset=ROWS, task=agent_task, models=[model],
                         scorers=[al.scorers.exact("answer")], budget_usd=budget,
                         concurrency=2, lab=lab)


def test_an_agent_task_stops_at_the_experiments_budget_with_nothing_over_spent(make_lab):
    full_model = ScriptedModel(knows, name="priced")
    with al.Lab(home=make_lab().settings.home / "full", prices=PRICES) as full_lab:
        full = _experiment(full_lab, full_model, None).run(progress=False)
        assert full.status == "completed" and full.n_done == 10
        grid_cost = full_lab.calls()["cost_usd"].sum()
    assert grid_cost > 0 and len(full_model.requests) == 10

    budget = grid_cost / 2
    model = ScriptedModel(knows, name="priced")
    lab = make_lab(prices=PRICES)
    run = _experiment(lab, model, budget).run(progress=False)
    calls = lab.calls()
    assert run.status == "budget" and "budget_usd" in run.message
    assert 0 < run.n_done < 10 and run.n_errors == 0
    assert calls["cost_usd"].sum() <= budget  # every agent call of the run, all charged
    assert len(model.requests) == (calls["status"] == "ok").sum()  # none sent past it
    assert run.cost_usd <= budget

    again = _experiment(lab, model, budget).run(progress=False)  # counts the earlier spend
    assert again.status == "budget" and again.sent == 0
    assert lab.calls()["cost_usd"].sum() <= budget


def test_the_manifest_keeps_the_runs_spend_across_resumes(make_lab):
    """``spent_usd`` in the manifest is what the run's own budget saw (nested runs' calls
    included, once the gateway charges them up the chain), added up over resumes; a rerun's
    budget starts from it."""
    model = ScriptedModel(knows, name="priced")
    lab = make_lab(prices=PRICES)

    def grid(budget):
        return al.Experiment(name="spend", dataset=ROWS, prompts=["Capital of {country}?"],
                             models=[model], params={"max_tokens": 5}, budget_usd=budget,
                             lab=lab)

    first = grid(0.2).run(progress=False)
    assert first.status == "budget"
    spent = lab.calls()["cost_usd"].sum()
    assert first.manifest["spent_usd"] == pytest.approx(spent) and 0 < spent <= 0.2
    done = grid(5.0).run(progress=False)
    assert done.status == "completed" and done.sent == 10 - first.n_done
    total = lab.calls()["cost_usd"].sum()
    assert done.manifest["spent_usd"] == pytest.approx(total) and total > spent
