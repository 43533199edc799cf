"""The local runner: every cell through the Lab's gateway under one run id, errors isolated,
resumable (the call log and the scripted models' request counts prove nothing is re-sent),
and stopped cleanly by a budget."""

from __future__ import annotations

import asyncio
import os

import pandas as pd
import pytest

import aillm_lab as al
from aillm_lab.testing import ScriptedModel

CAPITALS = {"France": "Paris", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo",
            "Peru": "Lima"}
ROWS = [{"country": c, "answer": a} for c, a in CAPITALS.items()]
PROMPTS = ["Capital of {country}?", "Q: what is the capital city of {country}?\nA:"]


def knows(messages, request):
    """A model that knows every capital."""
    text = messages[-1].text
    return next(a for c, a in CAPITALS.items() if c in text)


def _grid(lab, models, **overrides):
    spec = {"name": "capitals", "dataset": ROWS, "prompts": PROMPTS, "models": models,
            "scorers": [al.scorers.exact("answer"), al.scorers.contains("answer"),
                        al.scorers.latency()], "lab": lab, "concurrency": 4}
    return al.Experiment(**{**spec, **overrides})


def _mine(lab, run):
    calls = lab.calls()
    return calls[calls["run_id"] == run.run_id]


def test_a_grid_runs_every_cell_through_the_gateway_under_one_run_id(make_lab):
    good = ScriptedModel(knows, name="good")
    rome = ScriptedModel(lambda m, r: "Rome", name="rome")
    lab = make_lab()
    run = _grid(lab, [good, rome]).run(progress=False)
    assert run.status == "completed" and run.sent == 20 and run.n_done == 20
    assert len(good.requests) == 10 and len(rome.requests) == 10
    results = run.results()
    assert len(results) == 20 and results["cell_id"].is_unique
    assert set(results.columns) >= {"country", "answer", "output", "exact", "contains",
                                    "latency"}
    assert (results["input"] == [p.format(**r) for p in PROMPTS for r in ROWS] * 2).all()
    by_model = results.groupby("model")["exact"].mean().to_dict()
    assert by_model == {"scripted:good": 1.0, "scripted:rome": 0.2}
    calls = _mine(lab, run)
    assert len(calls) == 20 and (calls["status"] == "ok").all()
    summary = run.summary()
    assert len(summary) == 4 and (summary["cells"] == 5).all()
    rome_rows = summary[summary["model"] == "scripted:rome"]
    assert (rome_rows["exact"] == 0.2).all()
    assert (rome_rows["exact_lo"] <= 0.2).all() and (rome_rows["exact_hi"] >= 0.2).all()


def test_running_the_same_spec_again_sends_nothing_even_from_a_new_lab(make_lab, tmp_path):
    first = ScriptedModel(knows, name="good")
    lab = make_lab()
    run = _grid(lab, [first]).run(progress=False)
    before = run.results()
    again = _grid(lab, [first]).run(progress=False)
    assert again.sent == 0 and len(first.requests) == 10 and again.run_id == run.run_id
    pd.testing.assert_frame_equal(again.results(), before)
    lab.close()
    # a kernel restart: a new Lab on the same home, a fresh model object of the same id
    fresh = ScriptedModel(knows, name="good")
    lab2 = al.Lab(home=tmp_path / "home")
    try:
        resumed = _grid(lab2, [fresh]).run(progress=False)
        assert resumed.sent == 0 and fresh.requests == []
        pd.testing.assert_frame_equal(resumed.results(), before)
        assert len(_mine(lab2, run)) == 10  # the call log holds the first run's calls only
    finally:
        lab2.close()


def test_a_failed_cell_is_a_row_with_its_error_and_only_it_is_sent_again(make_lab):
    failures = {"Spain": 1}

    def flaky(messages, request):
        text = messages[-1].text
        if "Spain" in text and failures["Spain"] > 0:
            failures["Spain"] -= 1
            raise al.BadRequest("the server did not like Spain")
        return knows(messages, request)

    model = ScriptedModel(flaky, name="flaky")
    lab = make_lab()
    exp = _grid(lab, [model], prompts=PROMPTS[:1])
    run = exp.run(progress=False)
    assert run.status == "completed" and run.n_done == 4 and run.n_errors == 1
    failed = run.results().set_index("country").loc["Spain"]
    assert "BadRequest" in failed["error"] and pd.isna(failed["output"])
    assert pd.isna(failed["exact"])  # a failed cell is not scored as wrong, it has no score
    again = exp.run(progress=False)
    assert again.sent == 1 and len(model.requests) == 6
    assert again.n_errors == 0 and again.results()["exact"].tolist() == [1.0] * 5


def test_a_budget_stops_the_run_cleanly_nothing_overspent_and_a_bigger_one_goes_on(make_lab):
    model = ScriptedModel(knows, name="priced")
    lab = make_lab(prices={"scripted:priced": {"input": 10_000, "output": 10_000}})
    full = _grid(lab, [model], params={"max_tokens": 5}, budget_usd=None)
    per_cell = 0.06  # ~5 input + 1 output words at $0.01 a token; the test reads real costs
    budget = 0.5
    run = full.model_copy(update={"budget_usd": budget}).run(progress=False)
    assert run.status == "budget"
    assert 0 < run.n_done < 10 and run.n_errors == 0
    assert "of 10 cells done" in run.message and "budget_usd" in run.message
    calls = _mine(lab, run)
    assert calls["cost_usd"].sum() <= budget and run.cost_usd <= budget
    assert calls["cost_usd"].sum() == pytest.approx(run.cost_usd)
    assert len(model.requests) == run.n_done  # a refused call never reached the model
    assert run.cost_usd > budget - 2 * per_cell * 2  # it spent most of it before stopping
    # the same spec with a larger budget goes on from there: no cell is sent twice
    done = full.model_copy(update={"budget_usd": 5.0}).run(progress=False)
    assert done.status == "completed" and done.run_id == run.run_id
    assert done.sent == 10 - run.n_done and len(model.requests) == 10
    ok = _mine(lab, done)
    assert (ok["status"] == "ok").sum() == 10


def test_a_budget_counts_what_earlier_runs_of_the_spec_spent(make_lab):
    model = ScriptedModel(knows, name="priced")
    lab = make_lab(prices={"scripted:priced": {"input": 10_000, "output": 10_000}})
    exp = _grid(lab, [model], params={"max_tokens": 5}, budget_usd=0.3)
    first = exp.run(progress=False)
    second = exp.run(progress=False)  # the same budget is already (nearly) used up
    assert first.status == second.status == "budget"
    assert second.sent == 0 and second.cost_usd <= 0.3


def test_concurrency_bounds_the_cells_in_flight(make_lab):
    live = {"now": 0, "max": 0}

    async def slow(messages, request):
        live["now"] += 1
        live["max"] = max(live["max"], live["now"])
        await asyncio.sleep(0.02)
        live["now"] -= 1
        return "x"

    lab = make_lab(limits={"scripted:slow": {"concurrency": 50}})  # the gateway's is 4
    run = _grid(lab, [ScriptedModel(slow, name="slow")], concurrency=6).run(progress=False)
    assert run.n_done == 10 and live["max"] == 6


def test_epochs_and_samples_are_separate_cells_with_their_own_seed(make_lab):
    model = ScriptedModel(knows, name="good")
    lab = make_lab()
    run = _grid(lab, [model], prompts=PROMPTS[:1], epochs=2, samples=2, seed=7).run(
        progress=False)
    assert run.n_done == 20 and len(model.requests) == 20
    assert sorted({r.params.seed for r in model.requests}) == [7, 8, 9, 10]
    results = run.results()
    assert sorted(results.groupby(["epoch", "sample"]).size().tolist()) == [5, 5, 5, 5]


def test_the_manifest_records_spec_versions_seed_and_prices_and_the_folder_reloads(make_lab):
    lab = make_lab()
    run = _grid(lab, [ScriptedModel(knows, name="good")], seed=3).run(progress=False)
    assert run.folder == lab.settings.home / "experiments" / run.run_id
    manifest = run.manifest
    assert manifest["spec"]["models"] == ["scripted:good"] and manifest["seed"] == 3
    assert manifest["spec"]["prompts"] == PROMPTS and manifest["spec"]["n_items"] == 5
    assert manifest["spec"]["scorers"] == ["exact", "contains", "latency"]
    assert manifest["packages"]["pandas"] == pd.__version__ and "python" in manifest
    assert "prices" in manifest and manifest["status"] == "completed"
    reloaded = al.ExperimentRun.load(run.folder)
    pd.testing.assert_frame_equal(reloaded.results(), run.results())
    assert (run.folder / "cells").is_dir() and (run.folder / "scores").is_dir()


def test_the_manifest_git_sha_comes_from_a_git_that_gets_no_api_key(make_lab, tmp_path,
                                                                      monkeypatch):
    bin_dir, dump = tmp_path / "fake-bin", tmp_path / "git-env.txt"
    bin_dir.mkdir()
    (bin_dir / "git").write_text(f'#!/bin/sh\nenv > "{dump}"\necho 0123abcd\n')
    (bin_dir / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-NEVER-IN-A-CHILD-0123456789")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_NEVERINACHILD0123456789")
    run = _grid(make_lab(), [ScriptedModel(knows, name="good")]).run(progress=False)
    assert run.manifest["git_sha"] == "0123abcd"  # our git ran and answered
    seen = dump.read_text()
    assert "NEVER-IN-A-CHILD" not in seen and "NEVERINACHILD" not in seen
    assert "GIT_TERMINAL_PROMPT=0" in seen


def test_a_scorer_added_later_scores_the_stored_cells_without_a_call(make_lab):
    model = ScriptedModel(knows, name="good")
    lab = make_lab()
    _grid(lab, [model], scorers=[al.scorers.exact("answer")]).run(progress=False)

    def short(output, item):
        return len(output) <= 5

    run = _grid(lab, [model], scorers=[al.scorers.exact("answer"), short]).run(progress=False)
    assert run.sent == 0 and len(model.requests) == 10
    assert run.results()["short"].tolist() == [float(len(a) <= 5) for a in CAPITALS.values()] * 2


def test_a_scorer_that_raises_is_its_own_error_row_and_the_run_goes_on(make_lab):
    def broken(output, item):
        raise KeyError("oops")

    run = _grid(make_lab(), [ScriptedModel(knows, name="good")],
                scorers=[broken, al.scorers.exact("answer")]).run(progress=False)
    scores = run.scores()
    assert scores[scores["scorer"] == "broken"]["error"].str.contains("KeyError").all()
    assert run.results()["exact"].tolist() == [1.0] * 10


def test_arun_works_under_asyncio_run_and_the_sync_door_inside_a_loop(make_lab):
    lab = make_lab()
    exp = _grid(lab, [ScriptedModel(knows, name="good")])

    async def main():
        awaited = await exp.arun(progress=False)
        inside = exp.run(progress=False)  # the sync door inside a running loop, as in Jupyter
        return awaited, inside

    awaited, inside = asyncio.run(main())
    assert awaited.n_done == inside.n_done == 10 and inside.sent == 0


def test_list_runs_shows_every_run_under_the_home_newest_first(make_lab):
    from aillm_lab.experiments.results import list_runs

    lab = make_lab()
    assert list_runs(lab.settings.home).empty
    first = _grid(lab, [ScriptedModel(knows, name="good")]).run(progress=False)
    second = _grid(lab, [ScriptedModel(knows, name="good")], name="other",
                   prompts=PROMPTS[:1]).run(progress=False)
    runs = list_runs(lab.settings.home)
    assert runs["run_id"].tolist() == [second.run_id, first.run_id]
    assert runs["cells"].tolist() == [5, 10] and (runs["status"] == "completed").all()
    assert runs["models"].iloc[0] == ["scripted:good"]


def test_a_cancelled_run_keeps_what_finished_and_a_rerun_sends_only_the_rest(make_lab):
    answered = []
    four = asyncio.Event()  # set on the runner loop, where the test's main runs too

    async def slow(messages, request):
        await asyncio.sleep(0.05)
        answered.append(messages[-1].text)
        if len(answered) >= 4:
            four.set()
        return knows(messages, request)

    lab = make_lab()
    exp = _grid(lab, [ScriptedModel(slow, name="slow")], concurrency=2)

    async def main():
        task = asyncio.ensure_future(exp.arun(progress=False))
        await four.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    lab.runner.run(main())  # on the runner loop, so the cancel unwinds before it returns
    kept = al.ExperimentRun.load(lab.settings.home / "experiments" / exp.run_id(exp.cells()))
    assert kept.status == "cancelled" and 4 <= kept.n_done < 10
    done_before = len(answered)
    rerun = exp.run(progress=False)
    assert rerun.status == "completed" and rerun.n_done == 10
    assert rerun.sent == 10 - kept.n_done and len(answered) == done_before + rerun.sent


def test_a_task_function_runs_per_cell_with_its_calls_tagged_and_resumed(make_lab):
    model = ScriptedModel(knows, name="good")

    async def two_steps(item, model, lab):
        if item["country"] == "Peru":
            raise ValueError("no Peru today")
        first = await lab.acomplete(f"Capital of {item['country']}?", model)
        second = await lab.acomplete(f"Repeat: {first.text} of {item['country']}", model)
        return {"capital": second.text}

    lab = make_lab()
    exp = al.Experiment(name="chain", dataset=ROWS, task=two_steps, models=[model],
                        scorers=[al.scorers.json_valid(), al.scorers.contains("answer")],
                        lab=lab)
    run = exp.run(progress=False)
    results = run.results().set_index("country")
    assert results.loc["France", "output"] == '{"capital": "Paris"}'
    assert results.loc["France", "prompt"].endswith("two_steps")
    assert results.loc["France", "contains"] == 1.0 and results.loc["France", "json_valid"] == 1
    assert "no Peru today" in results.loc["Peru", "error"] and run.n_done == 4
    assert len(_mine(lab, run)) == 8 and len(model.requests) == 8
    again = exp.run(progress=False)
    assert again.sent == 1 and len(model.requests) == 8  # only Peru again, failing first


def test_prompts_and_task_are_one_or_the_other():
    with pytest.raises(al.ConfigError, match="exactly one") as info:
        al.Experiment(name="x", dataset=ROWS, models=["scripted:a"])
    assert info.value.fields[0] == "prompts"
    with pytest.raises(al.ConfigError, match="exactly one"):
        al.Experiment(name="x", dataset=ROWS, prompts=PROMPTS, task=lambda i, m, lab: "",
                      models=["scripted:a"])
    with pytest.raises(al.ConfigError, match="not a function"):
        al.Experiment(name="x", dataset=ROWS, task="solve", models=["scripted:a"])


def test_results_follow_the_grid_order_models_first_as_given(make_lab):
    models = [ScriptedModel(knows, name="zeta"), ScriptedModel(knows, name="alpha")]
    run = _grid(make_lab(), models, epochs=2).run(progress=False)
    results = run.results()
    keys = list(zip(results["model"], results["prompt_index"], results["epoch"],
                    results["item_index"], strict=True))
    assert keys == [(f"scripted:{m}", p, e, i) for m in ("zeta", "alpha") for p in (0, 1)
                    for e in (0, 1) for i in range(5)]


def test_a_task_run_stops_at_its_budget_and_a_rerun_counts_the_earlier_spend(make_lab):
    model = ScriptedModel(knows, name="priced")
    lab = make_lab(prices={"scripted:priced": {"input": 10_000, "output": 10_000}})

    async def ask(item, model, lab):
        return (await lab.acomplete(f"Capital of {item['country']}?", model,
                                    max_tokens=5)).text

    exp = al.Experiment(name="budgeted-task", dataset=ROWS * 2, task=ask, models=[model],
                        budget_usd=0.2, lab=lab)
    first = exp.run(progress=False)
    assert first.status == "budget" and 0 < first.n_done < 10
    spent = _mine(lab, first)["cost_usd"].sum()
    assert 0 < spent <= 0.2
    second = exp.run(progress=False)  # the task cells carry no cost; the call log does
    assert second.status == "budget" and second.sent == 0
    assert _mine(lab, second)["cost_usd"].sum() <= 0.2


def test_a_failing_disk_ends_the_run_with_error_and_the_journal_keeps_the_cells(
        make_lab, monkeypatch):
    from aillm_lab.experiments import store

    model = ScriptedModel(knows, name="good")
    lab = make_lab()
    exp = _grid(lab, [model])
    real = store.write_part

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "write_part", full_disk)
    with pytest.raises(OSError, match="No space left"):
        exp.run(progress=False)
    folder = lab.settings.home / "experiments" / exp.run_id(exp.cells())
    failed = al.ExperimentRun.load(folder)
    assert failed.status == "error" and "journal" in failed.message
    assert failed.n_done == 10  # read back from the journal
    monkeypatch.setattr(store, "write_part", real)
    again = exp.run(progress=False)
    assert again.sent == 0 and len(model.requests) == 10 and again.status == "completed"
    assert again.results()["exact"].tolist() == [1.0] * 10
    assert list(folder.glob("journal/*.jsonl")) == []  # the orphan was folded into parts


def test_a_run_shows_its_status_and_summary_in_a_notebook(make_lab):
    run = _grid(make_lab(), [ScriptedModel(knows, name="good")], name="<caps>").run(
        progress=False)
    shown = run._repr_html_()
    assert "&lt;caps&gt;" in shown and "completed, 10/10 cells, 0 errors" in shown
    assert "<table" in shown and "exact_lo" in shown and "scripted:good" in shown
