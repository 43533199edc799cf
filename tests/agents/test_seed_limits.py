"""The work a run does before its first prompt (a ResearchAgent's seed searches, a
DataAnalysisAgent's table descriptions) is under the run's limits: ``max_seconds``,
``agent.cancel()`` from another thread and ``task.cancel()`` stop it within ~1 s and return
(or keep) the partial run. The searches here stand in for a slow index or a remote
embedding model; the time checks are generous."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

import aillm_lab as al
from aillm_lab.agents import data_analysis
from aillm_lab.agents.research import ResearchAgent
from aillm_lab.testing import ScriptedModel

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")

SLOW_S = 10.0  # how long one slow search or description takes; a limit must cut it short
QUICK_S = 5.0  # generous: the limits fire after ~0.5 s


@pytest.fixture
def slow_research(make_lab, tmp_path: Path) -> tuple[ScriptedModel, ResearchAgent]:
    folder = tmp_path / "docs_seed"
    folder.mkdir()
    (folder / "cats.md").write_text("# Cats\n\nKittens sleep in warm places.\n")
    model = ScriptedModel(["Warm places [1]."])
    lab = make_lab(model)
    lab.ingest(folder, progress=False)
    agent = ResearchAgent(lab=lab)
    searched: list[str] = []

    async def slow_search(session, query):
        searched.append(query)
        await asyncio.sleep(SLOW_S)
        raise AssertionError("the slow search was not cut short")

    agent._search = slow_search  # type: ignore[method-assign]
    return model, agent


def test_max_seconds_stops_a_slow_seed_search(slow_research):
    model, agent = slow_research
    agent.max_seconds = 0.5
    clock = time.monotonic()
    run = agent.run("Where do kittens sleep?")
    assert time.monotonic() - clock < QUICK_S
    assert run.status == "timeout" and "0.5" in run.error
    assert run.steps == [] and model.requests == []
    assert agent.last_run is run


def test_agent_cancel_from_another_thread_stops_a_slow_seed_search(slow_research):
    model, agent = slow_research
    asked: list[int] = []
    timer = threading.Timer(0.5, lambda: asked.append(agent.cancel()))
    timer.start()
    clock = time.monotonic()
    try:
        run = agent.run("Where do kittens sleep?")
    finally:
        timer.join()
    assert time.monotonic() - clock < QUICK_S
    assert asked == [1] and run.status == "cancelled" and model.requests == []


def test_task_cancel_stops_a_slow_seed_search_and_keeps_the_run(slow_research):
    model, agent = slow_research

    async def main() -> None:
        task = asyncio.ensure_future(agent.arun("Where do kittens sleep?"))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    clock = time.monotonic()
    asyncio.run(main())
    assert agent.last_run is not None
    deadline = time.monotonic() + 2.0  # the runner side unwinds on its own loop
    while agent.last_run.status == "running" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert time.monotonic() - clock < QUICK_S
    assert agent.last_run.status == "cancelled"
    assert model.requests == []


def test_a_streamed_run_with_a_slow_seed_ends_with_a_timeout_event(slow_research):
    model, agent = slow_research
    agent.max_seconds = 0.5
    clock = time.monotonic()
    events = list(agent.stream("Where do kittens sleep?"))
    assert time.monotonic() - clock < QUICK_S
    # the seed search was told as step 0's call; no result came; the run ended in time
    assert [e.type for e in events] == ["tool_call", "error", "final"]
    assert events[0].step == 0 and events[0].tool_call.name == "search_knowledge"
    assert events[-1].run.status == "timeout"


def test_max_seconds_stops_slow_table_descriptions(make_lab, monkeypatch):
    model = ScriptedModel(["never asked"])
    agent = al.DataAnalysisAgent(lab=make_lab(model), max_seconds=0.5)
    real = data_analysis._describe_tables

    async def slow_describe(db, sources):
        await asyncio.sleep(SLOW_S)
        return await real(db, sources)

    monkeypatch.setattr(data_analysis, "_describe_tables", slow_describe)
    import pandas as pd

    clock = time.monotonic()
    run = agent.run("total?", data={"sales": pd.DataFrame({"amount": [1, 2]})})
    assert time.monotonic() - clock < QUICK_S
    assert run.status == "timeout" and model.requests == []


def test_a_file_duckdb_cannot_read_ends_the_run_with_its_error(make_lab):
    """Reading the schemas is the run's first work, so a file DuckDB cannot parse ends the
    run (the trace kept, DuckDB's message in ``run.error``) before any model call."""
    model = ScriptedModel(["never asked"])
    lab = make_lab(model)
    (lab.tools.workspace.root / "broken.parquet").write_text("not parquet at all")
    run = al.DataAnalysisAgent(lab=lab).run("total?", data={"t": "broken.parquet"})
    assert run.status == "error" and "DatabaseError" in run.error and "t" in run.error
    assert model.requests == [] and lab.load_run(run.id).status == "error"
