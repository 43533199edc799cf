"""LLM-as-judge: graded through the Lab under the run id, resumed without asking again, and
a judge that cannot answer is its score's error, not the run's end."""

from __future__ import annotations

import pytest

import aillm_lab as al
from aillm_lab.testing import ScriptedModel

ROWS = [{"country": c, "answer": a} for c, a in
        [("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid")]]


def grader(messages, request):
    """Grades 8 when the reference appears in the graded answer, else 2."""
    text = messages[-1].text
    reference = text.split("The reference answer:\n")[1].split("\n")[0]
    graded = text.split("<<<\n")[1].split("\n>>>")[0]
    return {"score": 8 if reference in graded else 2, "reason": "compared to the reference"}


def _exp(lab, scorers, answers="Rome"):
    return al.Experiment(name="judged", dataset=ROWS, prompts=["Capital of {country}?"],
                         models=[ScriptedModel(lambda m, r: answers, name="rome")],
                         scorers=scorers, lab=lab)


def test_the_judge_grades_each_cell_through_the_gateway_under_the_run_id(make_lab):
    judge_model = ScriptedModel(grader, name="judge")
    lab = make_lab()
    rubric = "Is the capital right?"
    run = _exp(lab, [al.scorers.judge(rubric, judge_model, reference="answer")]).run(
        progress=False)
    assert run.results()["judge"].tolist() == [0.2, 0.8, 0.2]
    assert len(judge_model.requests) == 3
    asked = judge_model.requests[0].messages[-1].text
    assert rubric in asked and "France" in asked and "Paris" in asked
    calls = lab.calls()
    mine = calls[calls["run_id"] == run.run_id]
    assert mine.groupby("model").size().to_dict() == {"scripted:judge": 3, "scripted:rome": 3}
    again = _exp(lab, [al.scorers.judge(rubric, judge_model, reference="answer")]).run(
        progress=False)
    assert again.sent == 0 and len(judge_model.requests) == 3  # scores are kept too


def test_a_judge_added_later_grades_the_stored_cells_only(make_lab):
    judge_model = ScriptedModel(grader, name="judge")
    lab = make_lab()
    first = _exp(lab, [al.scorers.exact("answer")]).run(progress=False)
    later = _exp(lab, [al.scorers.exact("answer"),
                       al.scorers.judge("right?", judge_model, reference="answer")]).run(
        progress=False)
    assert later.run_id == first.run_id and later.sent == 0
    assert len(judge_model.requests) == 3 and later.results()["judge"].notna().all()
    calls = lab.calls()
    assert (calls[calls["model"] == "scripted:judge"]["run_id"] == first.run_id).all()


def test_a_judge_that_never_answers_json_is_an_error_row(make_lab):
    judge_model = ScriptedModel(lambda m, r: "I refuse to grade", name="judge")
    run = _exp(make_lab(), [al.scorers.exact("answer"),
                            al.scorers.judge("right?", judge_model)]).run(progress=False)
    scores = run.scores()
    judged = scores[scores["scorer"] == "judge"]
    assert judged["value"].isna().all() and judged["error"].str.len().gt(0).all()
    assert run.results()["exact"].tolist() == [0.0, 1.0, 0.0]  # the rest is scored


def test_a_judge_needs_a_rubric_and_a_scale_and_is_not_called_by_hand():
    with pytest.raises(al.ConfigError, match="rubric is empty"):
        al.scorers.judge("  ")
    with pytest.raises(al.ConfigError, match="high > low"):
        al.scorers.judge("ok?", scale=(5, 5))
    with pytest.raises(TypeError, match="calls a model"):
        al.scorers.judge("ok?")("x", {})
