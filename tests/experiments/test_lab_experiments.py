"""lab.experiments(): the experiment runs saved under the Lab's home, as a DataFrame."""

from __future__ import annotations

import pytest

import aillm_lab as al
from aillm_lab.testing import ScriptedModel

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")


def test_lab_experiments_lists_the_runs_saved_under_its_home(make_lab):
    lab = make_lab(ScriptedModel(lambda messages, request: "Paris", name="x"))
    assert lab.experiments().empty
    exp = al.Experiment(name="capitals", dataset=[{"q": "France?", "answer": "Paris"}],
                        prompts=["Capital of {q}"], models=["scripted:x"],
                        scorers=[al.scorers.exact("answer")], lab=lab)
    run = exp.run(progress=False)
    listed = lab.experiments()
    assert list(listed["run_id"]) == [run.run_id] and list(listed["name"]) == ["capitals"]
