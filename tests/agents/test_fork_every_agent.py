"""A fork past the step that made an agent's per-run state goes on from that state, for every
agent: Research cites the sources its replayed steps numbered, DataAnalysis describes the
replayed query's result, CodeWriter counts the replayed iterations. No model or tool call is
made for the replayed steps (the call log and the audit prove it), and a run reloaded from
the Lab's home forks the same way (the state is in the trace)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _agent_tools import call, label_of

import aillm_lab as al
from aillm_lab.agents.code_writer import CodeResult, CodeWriterAgent
from aillm_lab.agents.data_analysis import AnalysisResult, DataAnalysisAgent
from aillm_lab.agents.research import ResearchAgent, ResearchAnswer
from aillm_lab.testing import ScriptedModel

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")


def live_calls(lab: al.Lab, run: al.AgentRun) -> list[str]:
    calls = lab.calls()
    return list(calls[calls["run_id"] == run.id]["model"])


# -- Research ------------------------------------------------------------------------------------
DOCS = {
    "cats.md": "# Cats\n\nKittens sleep most of the day in warm places.\n",
    "tea.md": "# Tea\n\nGreen tea is steamed or pan-fired soon after picking.\n",
    "rivers.md": "# Rivers\n\nThe Danube flows through ten countries.\n",
}
QUESTION = "Where do kittens sleep?"


def cite_both(messages: list[al.Message], request: object = None) -> str:
    return (f"Kittens sleep in warm places [{label_of(messages, 'Kittens')}]; green tea is "
            f"steamed [{label_of(messages, 'Green tea')}].")


@pytest.fixture
def research(make_lab, tmp_path: Path) -> tuple[al.Lab, al.AgentRun]:
    """A completed run: the seed numbers the cats source, the model's search (step 0) the
    tea source, and step 1 cites both."""
    folder = tmp_path / "docs_fork"
    folder.mkdir()
    for name, text in DOCS.items():
        (folder / name).write_text(text)
    queue: list[object] = [call("search_knowledge", query="green tea steamed"), cite_both]

    def reply(messages, request):
        item = queue.pop(0)
        return item(messages) if callable(item) else item

    lab = make_lab(ScriptedModel(reply, name="a"))
    lab.ingest(folder, progress=False)
    run = ResearchAgent(lab=lab, k=1).run(QUESTION)
    assert run.status == "completed", run.error
    assert len(run.output.sources) == 2 and len(run.steps) == 2
    return lab, run


def check_research_fork(lab: al.Lab, run: al.AgentRun, forked: al.AgentRun,
                        audited: int) -> None:
    assert forked.status == "completed", forked.error
    answer = ResearchAnswer.model_validate(forked.output)
    assert answer.found and answer.unsupported == []
    # the fork cites the seed's source and the one the replayed search numbered
    assert sorted(s.source.rsplit("/", 1)[-1] for s in answer.sources) == ["cats.md", "tea.md"]
    original = ResearchAnswer.model_validate(run.output)
    assert {s.label: s.chunk_id for s in answer.sources} == {
        s.label: s.chunk_id for s in original.sources}
    assert [s.replayed for s in forked.steps] == [True, False]
    assert live_calls(lab, forked) == ["scripted:b"]  # one model call: the live step
    assert len(lab.audit()) == audited  # no search made again


def test_a_research_fork_cites_the_sources_its_replayed_steps_numbered(research):
    lab, run = research
    audited = len(lab.audit())
    forked = run.fork(step=1, model=ScriptedModel(cite_both, name="b"))
    check_research_fork(lab, run, forked, audited)


def test_a_reloaded_research_run_forks_with_its_sources(research):
    lab, run = research
    audited = len(lab.audit())
    again = lab.load_run(run.id)
    forked = again.fork(step=1, model=ScriptedModel(cite_both, name="b"),
                        agent=ResearchAgent(lab=lab, k=1))
    check_research_fork(lab, run, forked, audited)


def test_a_research_fork_before_the_search_does_not_know_its_source(research):
    """Only what the replayed steps showed is restored: forked at step 0 the run seeds
    afresh (tea is not among the seed's sources), so a cite of a later number dangles."""
    lab, run = research
    forked = run.fork(step=0, model=ScriptedModel(["Tea is steamed [2].", "Still [2]."],
                                                  name="b"))
    answer = ResearchAnswer.model_validate(forked.output)
    assert forked.status == "completed" and answer.unsupported == [2]
    assert forked.inputs["sources"][0]["source"].endswith("cats.md")
    assert len(forked.inputs["sources"]) == 1


# -- DataAnalysis --------------------------------------------------------------------------------
SALES = "region,amount\nNorth,100\nSouth,70\nNorth,80\n"
SQL = "SELECT region, SUM(amount) AS total FROM sales GROUP BY region ORDER BY region"
NARRATIVE = "North sold 180 and South 70."


@pytest.fixture
def analysis(make_lab) -> tuple[al.Lab, al.AgentRun]:
    """A completed run over a workspace file: step 0 runs the SQL, step 1 narrates it."""
    lab = make_lab(ScriptedModel([call("run_sql", sql=SQL), NARRATIVE], name="a"))
    (lab.tools.workspace.root / "sales.csv").write_text(SALES)
    run = DataAnalysisAgent(lab=lab).run("total per region", data={"sales": "sales.csv"})
    assert run.status == "completed", run.error
    return lab, run


def check_analysis_fork(lab: al.Lab, run: al.AgentRun, forked: al.AgentRun,
                        audited: int) -> None:
    assert forked.status == "completed", forked.error
    result = AnalysisResult.model_validate(forked.output)
    original = AnalysisResult.model_validate(run.output)
    assert result.sql == SQL and result.narrative == "South sold 70, North 180."
    assert result.frame.equals(original.frame) and result.unsupported_numbers == []
    assert list(result.frame["total"]) == [180, 70]
    assert live_calls(lab, forked) == ["scripted:b"]
    assert len(lab.audit()) == audited  # the replayed query did not run again


def test_a_data_analysis_fork_narrates_the_replayed_query_result(analysis):
    lab, run = analysis
    audited = len(lab.audit())
    forked = run.fork(step=1, model=ScriptedModel(["South sold 70, North 180."], name="b"))
    check_analysis_fork(lab, run, forked, audited)


def test_a_reloaded_data_analysis_run_forks_with_its_result(analysis):
    lab, run = analysis
    audited = len(lab.audit())
    forked = lab.load_run(run.id).fork(
        step=1, model=ScriptedModel(["South sold 70, North 180."], name="b"),
        agent=DataAnalysisAgent(lab=lab))
    check_analysis_fork(lab, run, forked, audited)


def test_a_data_analysis_fork_keeps_the_rewrite_already_asked_for(make_lab):
    """Step 1's narrative was sent back once (a number not in the result); a fork at step 2
    has used its one rewrite, so a wrong number is flagged, not sent back again."""
    lab = make_lab(ScriptedModel([call("run_sql", sql=SQL), "North sold 999.", NARRATIVE]))
    (lab.tools.workspace.root / "sales.csv").write_text(SALES)
    run = DataAnalysisAgent(lab=lab).run("total per region", data={"sales": "sales.csv"})
    assert run.status == "completed" and len(run.steps) == 3
    forked = run.fork(step=2, model=ScriptedModel(["North sold 555."], name="b"))
    assert forked.status == "completed", forked.error
    assert forked.output.unsupported_numbers == ["555"]


# -- CodeWriter ----------------------------------------------------------------------------------
TESTS = "from solution import add\n\ndef test_small():\n    assert add(2, 3) == 5\n"
WRONG_1 = "def add(a, b):\n    return a - b\n"
WRONG_2 = "def add(a, b):\n    return a * b\n"
RIGHT = "def add(a, b):\n    return a + b\n"


def block(code: str) -> str:
    return f"```python\n{code}```"


@pytest.fixture
def coded(make_lab) -> tuple[al.Lab, al.AgentRun]:
    lab = make_lab(ScriptedModel([block(WRONG_1), block(WRONG_2), block(RIGHT)], name="a"))
    run = CodeWriterAgent(lab=lab).run("write add(a, b)", tests=TESTS)
    assert run.status == "completed" and run.output.iterations == 3
    return lab, run


def check_code_fork(lab: al.Lab, forked: al.AgentRun, audited: int) -> None:
    assert forked.status == "completed", forked.error
    result = CodeResult.model_validate(forked.output)
    assert result.passed and result.iterations == 3 and result.code == RIGHT
    assert [(h.iteration, h.step, h.code, h.passed) for h in result.history] == [
        (1, 0, WRONG_1, False), (2, 1, WRONG_2, False), (3, 2, RIGHT, True)]
    assert "assert" in result.history[0].test_output
    assert live_calls(lab, forked) == ["scripted:b"]
    assert len(lab.audit()) == audited + 1  # only the live iteration's test run


def test_a_code_writer_fork_counts_the_replayed_iterations(coded):
    lab, run = coded
    audited = len(lab.audit())
    forked = run.fork(step=2, model=ScriptedModel([block(RIGHT)], name="b"))
    check_code_fork(lab, forked, audited)


def test_a_reloaded_code_writer_run_forks_with_its_iterations(coded):
    lab, run = coded
    audited = len(lab.audit())
    forked = lab.load_run(run.id).fork(step=2, model=ScriptedModel([block(RIGHT)], name="b"),
                                       agent=CodeWriterAgent(lab=lab))
    check_code_fork(lab, forked, audited)


def test_a_code_writer_fork_stopped_at_once_returns_the_replayed_result(coded):
    """A fork whose step limit is reached before any live step still has the replayed
    iterations as its output, as a run stopped there would."""
    lab, run = coded
    agent = CodeWriterAgent(lab=lab, max_steps=2)
    forked = lab.load_run(run.id).fork(step=2, model=ScriptedModel([], name="b"), agent=agent)
    assert forked.status == "max_steps"
    assert forked.output.iterations == 2 and not forked.output.passed
    assert forked.output.code == WRONG_2
