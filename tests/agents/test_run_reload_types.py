"""A reloaded run's structured output is its type again (``CodeResult``, ``AnalysisResult``,
``ResearchAnswer``, an ``output=`` model), in the same process and in another, so a reloaded
run equals the saved one; and a type name read from a file never makes foreign code run."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from _agent_tools import call
from bokeh.plotting import figure
from pydantic import BaseModel

import aillm_lab as al
from aillm_lab.agents.code_writer import CodeResult
from aillm_lab.agents.data_analysis import AnalysisResult
from aillm_lab.agents.research import ResearchAnswer
from aillm_lab.agents.run import output_class
from aillm_lab.testing import ScriptedModel

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")

TESTS = "from solution import add\n\n\ndef test_small():\n    assert add(2, 3) == 5\n"
RIGHT = "```python\ndef add(a, b):\n    return a + b\n```"
SQL = "SELECT region, SUM(amount) AS total FROM sales GROUP BY region ORDER BY region"
SALES = pd.DataFrame({"region": ["North", "South", "North", "East"],
                      "amount": [100, 70, 80, 60]})
RELOAD = """
import sys, aillm_lab as al
lab = al.Lab(home=sys.argv[1])
for run_id in sys.argv[2:]:
    run = lab.load_run(run_id)
    kind = type(run.output)
    print(f"{kind.__module__}:{kind.__qualname__}")
    print(run.model_dump_json())
lab.close()
"""


class Verdict(BaseModel):
    """An ``output=`` model of the user's, defined at a module's top level."""

    answer: int
    sure: bool = True


def reload_elsewhere(lab: al.Lab, *run_ids: str) -> list[tuple[str, str]]:
    """(output type, run JSON) of each run as a fresh Python process reloads it."""
    done = subprocess.run([sys.executable, "-c", RELOAD, str(lab.settings.home), *run_ids],
                          capture_output=True, text=True, check=True, timeout=120)
    lines = done.stdout.splitlines()[-2 * len(run_ids):]
    return list(zip(lines[::2], lines[1::2], strict=True))


def four_runs(make_lab, tmp_path: Path) -> tuple[al.Lab, list[al.AgentRun]]:
    """A run of each agent whose output is a model, all saved under one home."""
    lab = make_lab(ScriptedModel(["unused"]))
    docs = tmp_path / "docs_reload"
    docs.mkdir()
    (docs / "e4012.md").write_text("# Error E4012\n\nThe bucket is over its storage quota.\n")
    assert lab.ingest(docs, progress=False).docs_added == 1
    code = al.CodeWriterAgent(lab=lab, model=ScriptedModel([RIGHT])).run("add", tests=TESTS)
    data = al.DataAnalysisAgent(lab=lab, model=ScriptedModel([call("run_sql", sql=SQL),
                                "North has 180, South 70 and East 60."])
                                ).run("total per region", data={"sales": SALES})
    research = al.ResearchAgent(lab=lab, model=ScriptedModel(["Over quota [1]."])
                                ).run("What is E4012?")
    react = al.ReActAgent(lab=lab, output=Verdict, model=ScriptedModel(['{"answer": 5}'])
                          ).run("2 + 3?")
    runs = [code, data, research, react]
    assert [r.status for r in runs] == ["completed"] * 4, [r.error for r in runs]
    assert [type(r.output) for r in runs] == [CodeResult, AnalysisResult, ResearchAnswer,
                                              Verdict]
    return lab, runs


def test_every_agents_output_model_round_trips_and_reloads_as_its_type(make_lab, tmp_path):
    lab, runs = four_runs(make_lab, tmp_path)
    for run in runs:
        again = al.AgentRun.model_validate_json(run.model_dump_json())
        assert again == run and type(again.output) is type(run.output)
        assert again.model_dump() == run.model_dump()
        loaded = lab.load_run(run.id)
        assert loaded == run and type(loaded.output) is type(run.output)
    code, data, research, react = (lab.load_run(r.id) for r in runs)
    assert code.output.passed and code.output.iterations == 1
    assert code.output_type == "aillm_lab.agents.code_writer:CodeResult"
    assert research.output.sources[0].source.endswith("e4012.md")
    assert react.output == Verdict(answer=5)
    # the frame comes back with its dtypes; the chart is redrawn from its spec and the frame
    pd.testing.assert_frame_equal(data.output.frame, runs[1].output.frame)
    assert data.output.chart_spec == runs[1].output.chart_spec is not None
    assert isinstance(data.output.chart, figure)
    assert list(data.output.chart.x_range.factors) == ["East", "North", "South"]


def test_another_process_reloads_the_aillm_lab_types_and_leaves_a_users_model_as_data(
        make_lab, tmp_path):
    lab, runs = four_runs(make_lab, tmp_path)
    reloaded = reload_elsewhere(lab, *(r.id for r in runs))
    kinds = [kind for kind, _ in reloaded]
    assert kinds == ["aillm_lab.agents.code_writer:CodeResult",
                     "aillm_lab.agents.data_analysis:AnalysisResult",
                     "aillm_lab.agents.research:ResearchAnswer",
                     "builtins:dict"]  # this test module is not imported over there
    for run, (_, text) in zip(runs[:3], reloaded[:3], strict=True):
        assert al.AgentRun.model_validate_json(text) == run
    # the user's model stays JSON data there, but keeps its type name, so here (where the
    # class is imported) the same JSON is a Verdict again and equal to the run
    assert json.loads(reloaded[3][1])["output_type"] == runs[3].output_type
    assert al.AgentRun.model_validate_json(reloaded[3][1]) == runs[3]


def planted(output_type: str, output: object) -> str:
    run = al.AgentRun(agent="ReActAgent", task="t", status="completed")
    data = json.loads(run.model_dump_json())
    return json.dumps({**data, "output": output, "output_type": output_type})


@pytest.mark.parametrize("name", [
    "planted_output_module:Thing",  # importable from sys.path: must not be imported
    "os:system",  # imported, but no pydantic class
    "aillm_lab.agents.code_writer:CodeWriterAgent",  # ours, but not a model
    "aillm_lab.no_such_module:Thing",
    "aillm_lab.agents.code_writer:<locals>.CodeResult",
    "../planted_output_module:Thing",
    "pydantic:BaseModel.__subclasses__",
])
def test_a_type_name_read_from_a_file_never_imports_code_and_leaves_the_output_as_data(
        tmp_path, monkeypatch, caplog, name):
    marker = tmp_path / "imported.txt"
    (tmp_path / "planted_output_module.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        f"from pydantic import BaseModel\nclass Thing(BaseModel):\n    x: int = 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="aillm_lab.agents.run"):
        run = al.AgentRun.model_validate_json(planted(name, {"x": 1}))
    assert run.output == {"x": 1} and run.output_type == name
    assert not marker.exists() and "planted_output_module" not in sys.modules
    assert name in caplog.text and "stays JSON data" in caplog.text
    assert output_class(name) is None


def test_output_data_that_no_longer_validates_stays_data_with_a_warning(caplog):
    name = "aillm_lab.agents.code_writer:CodeResult"
    with caplog.at_level(logging.WARNING, logger="aillm_lab.agents.run"):
        run = al.AgentRun.model_validate_json(planted(name, {"passed": "maybe"}))
    assert run.output == {"passed": "maybe"} and run.output_type == name
    assert "no longer validates as aillm_lab.agents.code_writer:CodeResult" in caplog.text
    good = al.AgentRun.model_validate_json(planted(name, {"passed": True, "code": "x = 1"}))
    assert good.output == CodeResult(passed=True, code="x = 1")


def test_text_and_plain_data_outputs_carry_no_type_name():
    for output in ("FIVE", {"a": 1}, [1, 2], None):
        run = al.AgentRun(output=output)
        assert run.output_type is None
        again = al.AgentRun.model_validate_json(run.model_dump_json())
        assert again == run and again.output == output
