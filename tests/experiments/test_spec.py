"""The spec: datasets in every accepted shape, errors that name the field, deterministic ids."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import aillm_lab as al
from aillm_lab.testing import ScriptedModel

ROWS = [{"question": "capital of France?", "answer": "Paris"},
        {"question": "capital of Italy?", "answer": "Rome"}]


def _exp(**overrides):
    spec = {"name": "caps", "dataset": ROWS, "prompts": ["Q: {question}\nA:"],
            "models": ["scripted:a"], "scorers": [al.scorers.exact("answer")]}
    return al.Experiment(**{**spec, **overrides})


def test_a_dataframe_a_jsonl_and_a_csv_give_the_same_rows_as_the_list(tmp_path, make_lab):
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in ROWS) + "\n")
    csv = tmp_path / "rows.csv"
    pd.DataFrame(ROWS).to_csv(csv, index=False)
    lab = make_lab()
    ids = set()
    for source in (ROWS, pd.DataFrame(ROWS), jsonl, str(csv)):
        exp = _exp(dataset=source)
        assert exp.dataset == ROWS
        ids.add(exp.run_id(exp.cells(lab)))
    assert len(ids) == 1  # the same rows are the same run, whatever file they came from


def test_numpy_values_in_a_dataframe_become_plain_json():
    exp = _exp(dataset=pd.DataFrame({"question": ["a", "b"], "answer": [1, 2]}))
    assert exp.dataset == [{"question": "a", "answer": 1}, {"question": "b", "answer": 2}]
    assert type(exp.dataset[0]["answer"]) is int


@pytest.mark.parametrize(("overrides", "field", "says"), [
    ({"prompts": ["Q: {query}"]}, "prompts", "{query}"),
    ({"prompts": ["JSON: {\"a\": 1} {question}"]}, "prompts", "{{"),
    ({"scorers": [al.scorers.exact("gold")]}, "scorers", "'gold'"),
    ({"scorers": [al.scorers.exact(), al.scorers.exact()]}, "scorers", "appear twice"),
    ({"scorers": [al.scorers.exact(name="output")]}, "scorers", "another name"),
    ({"scorers": [lambda output: 1.0]}, "scorers", "(output, item)"),
    ({"dataset": []}, "dataset", "no rows"),
    ({"dataset": ["just a string"]}, "dataset", "dataset[0]"),
    ({"dataset": 42}, "dataset", "list of dicts"),
    ({"models": [3]}, "models", "provider:model"),
    ({"concurrency": 0}, "concurrency", "greater than or equal to 1"),
    ({"budget_usd": -1}, "budget_usd", "greater than or equal to 0"),
])
def test_a_bad_spec_is_refused_before_anything_runs_naming_the_field(overrides, field, says):
    with pytest.raises(al.ConfigError) as info:
        _exp(**overrides)
    assert field in info.value.fields[0] and says in str(info.value)


def test_a_bad_jsonl_line_and_a_missing_file_are_named(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(ROWS[0]) + "\n{not json\n")
    with pytest.raises(al.ConfigError, match="line 2"):
        _exp(dataset=bad)
    with pytest.raises(al.ConfigError, match="not a file"):
        _exp(dataset=tmp_path / "missing.jsonl")
    with pytest.raises(al.ConfigError, match="neither .jsonl nor .csv"):
        (tmp_path / "rows.txt").write_text("x")
        _exp(dataset=tmp_path / "rows.txt")


def _wide(**overrides):
    grid = {"models": ["scripted:a", ScriptedModel(name="b")],
            "prompts": ["{question}", "Q {question}"], "epochs": 2, "samples": 3}
    return _exp(**{**grid, **overrides})


def test_cell_ids_are_deterministic_distinct_and_change_with_what_shapes_the_answer(make_lab):
    lab = make_lab()
    exp = _wide()
    cells = exp.cells(lab)
    assert len(cells) == 2 * 2 * 2 * 3 * 2
    assert len({c.cell_id for c in cells}) == len(cells)
    assert [c.cell_id for c in _wide().cells(lab)] == [c.cell_id for c in cells]
    # each sample of each epoch gets its own seed, so sampling models answer anew
    assert len({c.params.seed for c in cells}) == 2 * 3
    base = exp.run_id(cells)
    for change in ({"system": "be brief"}, {"params": {"temperature": 0.5}}, {"seed": 1},
                   {"dataset": [*ROWS, {"question": "x", "answer": "y"}]},
                   {"models": ["scripted:a", ScriptedModel(name="c")]},
                   {"prompts": ["{question}", "Q: {question}"]}):
        other = _wide(**change)
        assert other.run_id(other.cells(lab)) != base, change
    # a scorer, the budget and the concurrency do not change what is asked
    same = _wide(scorers=[], budget_usd=1.0, concurrency=2)
    assert same.run_id(same.cells(lab)) == base
    assert base.startswith("caps-")


def test_identical_rows_are_separate_items():
    exp = _exp(dataset=[ROWS[0], ROWS[0], ROWS[1]])
    from aillm_lab.experiments.spec import item_ids

    ids = item_ids(exp.dataset)
    assert len(set(ids)) == 3 and ids[1].startswith(ids[0])


def test_a_model_or_prompt_given_twice_is_refused(make_lab):
    lab = make_lab()
    with pytest.raises(al.ConfigError, match="appear more than once") as info:
        _exp(models=[ScriptedModel(name="x"), ScriptedModel(name="x")]).cells(lab)
    assert info.value.fields == ("models",)
    with pytest.raises(al.ConfigError, match="appear more than once") as info:
        _exp(prompts=["{question}", "{question}"]).cells(lab)
    assert info.value.fields == ("prompts",)
