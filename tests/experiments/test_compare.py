"""``al.compare``: a planted difference is found, identical runs differ in nothing, and wins
follow each metric's direction."""

from __future__ import annotations

import numpy as np
import pytest

import aillm_lab as al
from aillm_lab.experiments.stats import bootstrap_mean_ci
from aillm_lab.testing import ScriptedModel

ROWS = [{"question": f"what is {i} + {i}?", "answer": str(2 * i), "i": i} for i in range(20)]


def right_on(indices, name):
    """A model that answers item i right when i is in ``indices``, else wrong."""
    def reply(messages, request):
        i = int(messages[-1].text.split()[2])
        return str(2 * i) if i in indices else "no idea"

    return ScriptedModel(reply, name=name)


def _run(lab, name, model, **overrides):
    spec = {"name": name, "dataset": ROWS, "prompts": ["{question}"], "models": [model],
            "scorers": [al.scorers.exact("answer"), al.scorers.cost()], "lab": lab}
    return al.Experiment(**{**spec, **overrides}).run(progress=False)


def test_a_planted_difference_is_found_with_its_wins_and_losses(make_lab):
    lab = make_lab()
    weak = _run(lab, "weak", right_on(set(range(6)), "weak"))          # 6 of 20 right
    strong = _run(lab, "strong", right_on(set(range(2, 20)), "strong"))  # 18 of 20 right
    table = al.compare(weak, strong).set_index("metric")
    exact = table.loc["exact"]
    assert exact["n"] == 20
    assert exact["mean_a"] == pytest.approx(0.3) and exact["mean_b"] == pytest.approx(0.9)
    assert exact["diff"] == pytest.approx(0.6)
    assert 0 < exact["ci_low"] < 0.6 < exact["ci_high"] <= 1.0
    assert bool(exact["significant"])
    assert (exact["wins"], exact["losses"], exact["ties"]) == (14, 2, 4)
    # and the other way round: the same difference, negative
    back = al.compare(strong, weak).set_index("metric").loc["exact"]
    assert back["diff"] == pytest.approx(-0.6) and back["ci_high"] < 0
    assert (back["wins"], back["losses"]) == (2, 14)
    assert table.attrs["run_a"] == weak.run_id and table.attrs["run_b"] == strong.run_id


def test_two_identical_runs_show_no_difference(make_lab):
    lab = make_lab()
    first = _run(lab, "first", right_on(set(range(0, 20, 2)), "same"))
    second = _run(lab, "second", right_on(set(range(0, 20, 2)), "same"))
    assert first.run_id != second.run_id
    table = al.compare(first, second).set_index("metric")
    for metric in ("exact", "cost"):
        row = table.loc[metric]
        assert row["diff"] == 0 and row["ci_low"] == 0 and row["ci_high"] == 0
        assert not row["significant"] and row["ties"] == 20 and row["wins"] == 0


def test_equal_accuracy_on_different_items_is_not_significant(make_lab):
    lab = make_lab()
    evens = _run(lab, "evens", right_on(set(range(0, 20, 2)), "evens"))
    odds = _run(lab, "odds", right_on(set(range(1, 20, 2)), "odds"))
    row = al.compare(evens, odds).set_index("metric").loc["exact"]
    assert row["diff"] == 0 and row["ci_low"] < 0 < row["ci_high"]
    assert not row["significant"] and (row["wins"], row["losses"]) == (10, 10)


def test_lower_cost_wins_and_unknown_metrics_are_refused(make_lab):
    lab = make_lab(prices={"scripted:dear": {"input": 100, "output": 100},
                           "scripted:cheap": {"input": 1, "output": 1}})
    everything = set(range(20))
    dear = _run(lab, "dear", right_on(everything, "dear"))
    cheap = _run(lab, "cheap", right_on(everything, "cheap"))
    row = al.compare(dear, cheap).set_index("metric").loc["cost"]
    assert not row["higher_is_better"]
    assert row["diff"] < 0 and row["wins"] == 20 and bool(row["significant"])
    with pytest.raises(ValueError, match="not scored in both runs"):
        al.compare(dear, cheap, metrics=["bleu"])
    assert list(al.compare(dear, cheap, metrics=["exact"])["metric"]) == ["exact"]


def test_the_bootstrap_interval_holds_the_mean_and_is_reproducible():
    values = np.array([0, 1, 1, 0, 1, 1, 1, 0, 1, 1], dtype=float)
    mean, lo, hi = bootstrap_mean_ci(values, seed=1)
    assert mean == pytest.approx(0.7) and lo < 0.7 < hi and 0 <= lo and hi <= 1
    assert bootstrap_mean_ci(values, seed=1) == (mean, lo, hi)
    wider = bootstrap_mean_ci(values, confidence=0.99, seed=1)
    assert wider[1] <= lo and wider[2] >= hi
    assert bootstrap_mean_ci(np.array([0.5]), seed=0) == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        bootstrap_mean_ci(values, confidence=95)
