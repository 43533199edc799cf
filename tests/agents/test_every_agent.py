"""Issue 12's acceptance suite run across every agent: ReAct, CodeWriter, DataAnalysis and
Research end to end with scripted models. Each agent has a small case kit (how to start it,
what a correct final reply is and how to recognise it); every case runs once per agent:
the happy path, a malformed call repaired, an unknown tool, a tool that raises, a guard
refusal, the step limit, a budget, a time limit, a cancel from another thread, and the
sync door inside a running event loop. One more case runs a ReActAgent in a real kernel."""

from __future__ import annotations

import asyncio
import re
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
import pytest
from _agent_tools import add, call
from nbclient import NotebookClient

import aillm_lab as al
from aillm_lab.testing import ScriptedModel

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")

# -- the four case kits ------------------------------------------------------------------------
Reply = Any  # what a ScriptedModel takes, or a function of the messages (for citations)


@dataclass(frozen=True)
class Kit:
    """How to start one agent, the replies that end its run well, and how to tell."""

    agent: type[al.Agent]
    task: str
    finish: Callable[[], list[Reply]]
    check: Callable[[al.AgentRun, al.Lab], None]
    arguments: Callable[[], dict[str, Any]] = dict
    prepare: Callable[[al.Lab, Path], None] = lambda lab, tmp_path: None


def check_completed(run: al.AgentRun) -> None:
    assert run.status == "completed", run.error
    assert run.error is None


# ReAct: a tool call, then the answer in plain text.
def react_check(run: al.AgentRun, lab: al.Lab) -> None:
    check_completed(run)
    assert run.output == "2 + 3 = 5"
    assert run.steps[-2].tool_calls[0].name == "add"
    assert run.steps[-2].tool_results[0].content == "5"


REACT = Kit(al.ReActAgent, "What is 2 + 3?",
            finish=lambda: [call("add", "f1", a=2, b=3), "2 + 3 = 5"], check=react_check)

# CodeWriter: a python block that passes the given tests in the sandbox.
TESTS = "from solution import plus\n\ndef test_plus():\n    assert plus(2, 3) == 5\n"
RIGHT = "def plus(a, b):\n    return a + b\n"


def code_check(run: al.AgentRun, lab: al.Lab) -> None:
    check_completed(run)
    result = run.output
    assert isinstance(result, al.CodeResult)
    assert result.passed and result.code == RIGHT and result.tests == TESTS
    assert result.history[-1].tests_passed == 1 and result.history[-1].tests_failed == 0
    audit = lab.audit(tool="run_python")
    assert list(audit["call_id"])[-1] == f"{run.id}:test{result.iterations}"
    assert list(audit["decision"])[-1] == "allowed"


CODE_WRITER = Kit(al.CodeWriterAgent, "write plus(a, b)",
                  finish=lambda: [f"Here it is:\n```python\n{RIGHT}```"], check=code_check,
                  arguments=lambda: {"tests": TESTS})

# DataAnalysis: a run_sql call, then a narrative whose numbers are in the result.
SALES = pd.DataFrame({"region": ["North", "North", "South", "East"],
                      "amount": [100, 80, 115, 60]})
PER_REGION = "SELECT region, SUM(amount) AS total FROM sales GROUP BY region ORDER BY region"
NARRATIVE = "North leads with 180, then South with 115 and East with 60."


def data_check(run: al.AgentRun, lab: al.Lab) -> None:
    check_completed(run)
    result = run.output
    assert isinstance(result, al.AnalysisResult)
    assert result.sql == PER_REGION and result.narrative == NARRATIVE
    assert result.frame.to_dict("records") == [
        {"region": "East", "total": 60}, {"region": "North", "total": 180},
        {"region": "South", "total": 115}]
    assert result.unsupported_numbers == []
    assert list(lab.audit(tool="run_sql")["decision"])[-1] == "allowed"


DATA_ANALYSIS = Kit(al.DataAnalysisAgent, "total sales per region",
                    finish=lambda: [call("run_sql", "q1", sql=PER_REGION), NARRATIVE],
                    check=data_check, arguments=lambda: {"data": {"sales": SALES.copy()}})

# Research: an answer that cites the ingested passage by the number the prompt gave it.
CORPUS = {"zorblat.md": "# Zorblat\n\nA zorblat is a blue fruit grown in greenhouses on "
                        "Mars.\n",
          "tea.txt": "Green tea is steamed or pan-fired soon after picking.\n"}


def label_of(messages: list[al.Message], name: str) -> int:
    """The [n] the packed prompt gives the source ``name``."""
    for message in messages:
        found = re.search(rf"\[(\d+)\] \({re.escape(name)}", message.text)
        if found:
            return int(found.group(1))
    raise AssertionError(f"no numbered source {name} in the prompt")


def research_answer(messages: list[al.Message]) -> str:
    return f"A zorblat is a blue fruit grown on Mars [{label_of(messages, 'zorblat.md')}]."


def research_check(run: al.AgentRun, lab: al.Lab) -> None:
    check_completed(run)
    answer = run.output
    assert isinstance(answer, al.ResearchAnswer)
    assert answer.found and answer.supported and answer.unsupported == []
    assert [Path(s.source).name for s in answer.sources] == ["zorblat.md"]
    assert "blue fruit" in answer.sources[0].text and answer.sources[0].chunk_id is not None
    assert answer.text == f"A zorblat is a blue fruit grown on Mars [{answer.sources[0].label}]."
    assert "allowed" in set(lab.audit(tool="search_knowledge")["decision"])


def ingest_corpus(lab: al.Lab, tmp_path: Path) -> None:
    folder = tmp_path / "corpus"
    folder.mkdir(exist_ok=True)
    for name, text in CORPUS.items():
        (folder / name).write_text(text)
    assert lab.ingest(folder, progress=False).docs_added == len(CORPUS)


RESEARCH = Kit(al.ResearchAgent, "What is a zorblat?", finish=lambda: [research_answer],
               check=research_check, prepare=ingest_corpus)

KITS = [REACT, CODE_WRITER, DATA_ANALYSIS, RESEARCH]
KIT_IDS = ["react", "code_writer", "data_analysis", "research"]


# -- the bench: a Lab, the agent's own tools, a run ------------------------------------------
def scripted(*replies: Reply, name: str = "scripted") -> ScriptedModel:
    """A model answering from ``replies`` in order; a callable gets the messages."""
    queue = list(replies)

    def reply(messages: list[al.Message], request: Any) -> Any:
        if not queue:
            raise AssertionError(f"the script ran out after {len(model.requests)} calls")
        item = queue.pop(0)
        return item(messages) if callable(item) else item

    model = ScriptedModel(reply, name=name)
    return model  # the reply function reads model.requests


def forever_adding(name: str = "scripted") -> ScriptedModel:
    """A model that calls ``add(n, 1)`` on every turn and never answers; the arguments
    change each turn, so no call repeats an earlier one."""
    numbers = count()

    def reply(messages: list[al.Message], request: Any) -> al.ToolCall:
        n = next(numbers)
        return call("add", f"c{n}", a=n, b=1)

    return ScriptedModel(reply, name=name)


class Bench:
    """One agent under test: its Lab (prepared by the kit) and its own tools."""

    def __init__(self, kit: Kit, make_lab: Callable[..., al.Lab], tmp_path: Path) -> None:
        self.kit, self.make_lab, self.tmp_path = kit, make_lab, tmp_path
        self.started = threading.Event()  # set when the slow tool begins
        started = self.started

        @al.tool
        def explode(x: int) -> int:
            """Always fails."""
            raise ValueError(f"cannot handle {x}")

        @al.tool
        async def slow(seconds: float) -> str:
            """Wait, then say done."""
            started.set()
            await asyncio.sleep(seconds)
            return "done"

        self.tools: list[Any] = [add, explode, slow, "read_file"]

    def agent(self, model: ScriptedModel, settings: dict[str, Any] | None = None,
              **limits: Any) -> al.Agent:
        self.model = model
        self.lab = self.make_lab(model, **(settings or {}))
        self.kit.prepare(self.lab, self.tmp_path)
        return self.kit.agent(tools=self.tools, lab=self.lab, **limits)

    def run(self, agent: al.Agent) -> al.AgentRun:
        return agent.run(self.kit.task, **self.kit.arguments())

    def fed_back(self, request: int, text: str) -> bool:
        """Whether the model's request number ``request`` carried ``text`` as a message."""
        return any(m.text == text for m in self.model.requests[request].messages)


@pytest.fixture(params=KITS, ids=KIT_IDS)
def kit(request: pytest.FixtureRequest) -> Kit:
    return request.param


@pytest.fixture
def bench(kit: Kit, make_lab: Callable[..., al.Lab], tmp_path: Path) -> Bench:
    return Bench(kit, make_lab, tmp_path)


# -- the acceptance cases, once per agent ----------------------------------------------------
def test_the_happy_path_completes_with_the_right_output(kit, bench):
    agent = bench.agent(scripted(*kit.finish()))
    run = bench.run(agent)
    kit.check(run, bench.lab)
    assert len(run.steps) == len(kit.finish())
    assert run.agent == kit.agent.__name__ and agent.last_run is run
    calls = bench.lab.calls()
    mine = calls[calls["run_id"] == run.id]
    assert len(mine) == len(run.steps) and set(mine["status"]) == {"ok"}


def test_a_malformed_tool_call_is_fed_back_and_repaired(kit, bench):
    agent = bench.agent(scripted(call("add", "m1", _raw="{a: 2, b"),
                                 call("add", "m2", a="two", b=3), *kit.finish()))
    run = bench.run(agent)
    unparsed, invalid = run.steps[0].tool_results[0], run.steps[1].tool_results[0]
    assert not unparsed.ok and "not valid JSON" in unparsed.content
    assert not invalid.ok and "Invalid arguments for tool 'add'" in invalid.content
    assert "- a:" in invalid.content and "'two'" in invalid.content
    assert run.steps[1].observations[0].text == invalid.content
    assert bench.fed_back(1, unparsed.content) and bench.fed_back(2, invalid.content)
    kit.check(run, bench.lab)  # then the repaired run ends with the right output
    assert len(run.steps) == 2 + len(kit.finish())


def test_an_unknown_tool_is_an_observation_naming_the_tools_there_are(kit, bench):
    agent = bench.agent(scripted(call("multiply", "u1", a=2, b=3), *kit.finish()))
    run = bench.run(agent)
    result = run.steps[0].tool_results[0]
    assert not result.ok and "Unknown tool 'multiply'" in result.content
    assert "add" in result.content and "explode" in result.content
    assert bench.fed_back(1, result.content)
    kit.check(run, bench.lab)
    assert len(run.steps) == 1 + len(kit.finish())


def test_a_tool_that_raises_is_an_observation_and_audited_as_an_error(kit, bench):
    agent = bench.agent(scripted(call("explode", "e1", x=1), *kit.finish()))
    run = bench.run(agent)
    result = run.steps[0].tool_results[0]
    assert not result.ok and "ValueError: cannot handle 1" in result.content
    assert bench.fed_back(1, result.content)
    assert list(bench.lab.audit(tool="explode")["decision"]) == ["error"]
    kit.check(run, bench.lab)
    assert len(run.steps) == 1 + len(kit.finish())


def test_a_safety_violation_is_fed_back_visible_in_the_trace_and_the_audit(kit, bench):
    agent = bench.agent(scripted(call("read_file", "r1", path="/etc/passwd"), *kit.finish()))
    run = bench.run(agent)
    result = run.steps[0].tool_results[0]
    assert not result.ok and result.rule is not None and result.rule.startswith("path.")
    assert "Refused by the safety policy" in result.content and "root:" not in result.content
    assert run.steps[0].observations[0].text == result.content
    assert bench.fed_back(1, result.content)
    audit = bench.lab.audit(tool="read_file")
    assert list(audit["decision"]) == ["refused"] and list(audit["call_id"]) == ["r1"]
    kit.check(run, bench.lab)
    assert len(run.steps) == 1 + len(kit.finish())


def test_the_step_limit_ends_the_run_with_max_steps_and_every_step_kept(kit, bench):
    agent = bench.agent(forever_adding(), max_steps=3)
    run = bench.run(agent)
    assert run.status == "max_steps" and "3 steps" in run.error
    assert [r.content for s in run.steps for r in s.tool_results] == ["1", "2", "3"]
    assert all(r.ok for s in run.steps for r in s.tool_results)
    assert run.output is None
    calls = bench.lab.calls()
    assert len(calls[calls["run_id"] == run.id]) == 3


def test_a_budget_that_runs_out_mid_run_ends_with_budget_and_never_overspends(kit, bench):
    budget = 5.0
    agent = bench.agent(forever_adding("priced"),
                        {"prices": {"scripted:priced": {"input": 2_000, "output": 2_000}}},
                        max_steps=50, max_cost_usd=budget, params={"max_tokens": 50})
    run = bench.run(agent)
    assert run.status == "budget" and f"max_cost_usd={budget}" in run.error
    live = [s for s in run.steps if s.completion is not None]
    assert 2 <= len(live) < 50  # it worked for a while, then the gateway refused a call
    assert all(s.tool_results[0].ok for s in live)  # the partial trace is kept
    assert run.steps[-1].completion is None and run.steps[-1].error == run.error
    assert 0 < run.cost_usd <= budget
    calls = bench.lab.calls()
    mine = calls[calls["run_id"] == run.id]
    assert mine["cost_usd"].sum() <= budget
    assert mine["cost_usd"].sum() == pytest.approx(run.cost_usd)
    assert len(mine[mine["status"] == "ok"]) == len(live)


def test_the_time_limit_ends_the_run_with_timeout_promptly(kit, bench):
    agent = bench.agent(scripted(call("slow", "s1", seconds=30)), max_seconds=0.5)
    started = time.monotonic()
    run = bench.run(agent)
    assert time.monotonic() - started < 2.5
    assert bench.started.is_set()  # the limit stopped a tool that was running
    assert run.status == "timeout" and "max_seconds" in run.error
    assert len(run.steps) == 1 and run.steps[0].tool_calls[0].name == "slow"
    assert run.output is None


def test_cancel_from_another_thread_returns_the_partial_run_within_a_second(kit, bench):
    agent = bench.agent(scripted(call("add", "c1", a=1, b=2), call("slow", "c2", seconds=30)),
                        max_seconds=20)  # a broken cancel ends as a timeout, not a hang
    asked: list[tuple[float, int]] = []

    def cancel_once_slow_runs() -> None:
        if bench.started.wait(10):
            asked.append((time.monotonic(), agent.cancel()))

    thread = threading.Thread(target=cancel_once_slow_runs)
    thread.start()
    run = bench.run(agent)
    returned = time.monotonic()
    thread.join()
    assert asked and asked[0][1] == 1  # one run was in flight
    assert returned - asked[0][0] < 1.0
    assert run.status == "cancelled" and "agent.cancel()" in run.error
    assert run.steps[0].tool_results[0].content == "3"  # the work before is kept
    assert len(run.steps) == 2 and agent.last_run is run


def test_sync_run_works_inside_a_coroutine_under_asyncio_run(kit, bench):
    agent = bench.agent(scripted(*kit.finish()))

    async def main() -> al.AgentRun:
        asyncio.get_running_loop()  # the sync door, called while this loop runs
        return bench.run(agent)

    run = asyncio.run(main())
    kit.check(run, bench.lab)


# -- a real Jupyter kernel ------------------------------------------------------------------
def test_sync_run_inside_a_real_jupyter_kernel(tmp_path):
    home = tmp_path / "kernel_home"
    cell = textwrap.dedent(f"""\
        import asyncio
        import aillm_lab as al
        from aillm_lab.testing import ScriptedModel

        @al.tool
        def add(a: int, b: int) -> int:
            \"\"\"Add two integers.\"\"\"
            return a + b

        assert asyncio.get_event_loop().is_running()  # the kernel's own loop
        model = ScriptedModel([al.ToolCall(id="c1", name="add", arguments={{"a": 2, "b": 3}}),
                               "2 + 3 = 5"])
        with al.Lab(home={str(home)!r}, model=model) as lab:
            run = al.ReActAgent(tools=[add], lab=lab).run("What is 2 + 3?")
        assert run.status == "completed", run.error
        assert run.output == "2 + 3 = 5"
        print(run.status, run.steps[0].tool_results[0].content, run.output, sep="|")
        """)
    path = tmp_path / "agent.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)]), path)
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=120,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    nbformat.write(nb, path)
    outputs = nbformat.read(path, as_version=4).cells[0].outputs
    assert all(o["output_type"] == "stream" for o in outputs)  # no error, no result
    printed = [o["text"] for o in outputs if o["name"] == "stdout"]  # stderr: a warning
    assert printed == ["completed|5|2 + 3 = 5\n"]
    assert any(home.joinpath("runs").glob("*.agent.json"))  # the kernel's run was saved
