"""CodeWriterAgent end to end with scripted models: tests run in the sandbox through the guard,
failures fed back, tests written by the model, limits, saving through write_file."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from pathlib import Path

import pytest
from _agent_tools import call

import aillm_lab as al
from aillm_lab.agents.code_writer import CodeResult, CodeWriterAgent, extract_code
from aillm_lab.testing import ScriptedModel

pytestmark = [pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning"),
              pytest.mark.skipif(sys.platform.startswith("win"), reason="POSIX sandbox")]

TESTS = """\
from solution import add

def test_small():
    assert add(2, 3) == 5

def test_negative():
    assert add(-1, 1) == 0
"""
WRONG = "def add(a, b):\n    return a - b\n"
RIGHT = "def add(a, b):\n    return a + b\n"


def block(code: str, before: str = "Here is the code:") -> str:
    return f"{before}\n```python\n{code}```\nIt adds two numbers."


def test_a_wrong_then_right_implementation_passes_in_two_iterations_run_in_the_sandbox(
        make_lab):
    model = ScriptedModel([block(WRONG), block(RIGHT)])
    lab = make_lab(model)
    run = CodeWriterAgent(lab=lab).run("write add(a, b)", tests=TESTS)
    assert run.status == "completed" and run.error is None
    result = run.output
    assert isinstance(result, CodeResult)
    assert result.passed and result.iterations == 2 and result.code == RIGHT
    assert result.tests == TESTS and not result.tests_generated
    first, second = result.history
    assert (first.passed, first.tests_passed, first.tests_failed) == (False, 0, 2)
    assert (second.passed, second.tests_passed, second.tests_failed) == (True, 2, 0)
    assert first.code == WRONG and (first.step, second.step) == (0, 1)
    # the sandbox really ran the code: only execution knows that 2 - 3 == -1
    assert "assert -1 == 5" in first.test_output and "FAILED test_small" in first.test_output
    assert "2 passed, 0 failed" in second.test_output
    # the failure output of iteration 1 is in the prompt of iteration 2
    prompt = "\n".join(m.text for m in model.requests[1].messages)
    assert "assert -1 == 5" in prompt and "Iteration 1" in prompt
    assert TESTS.strip() in model.requests[0].messages[-1].text
    # each test run was a run_python call through the guard, audited under the run's id
    audit = lab.audit(tool="run_python")
    assert list(audit["call_id"]) == [f"{run.id}:test1", f"{run.id}:test2"]
    assert list(audit["decision"]) == ["allowed", "allowed"]
    assert list(audit["risk"]) == ["execute", "execute"]
    assert sandbox_workers() == []  # the run's sandbox was closed with it


def test_without_tests_the_model_writes_them_first_and_they_are_kept(make_lab):
    model = ScriptedModel([block(TESTS, "Tests:"), block(RIGHT)])
    run = CodeWriterAgent(lab=make_lab(model)).run("write add(a, b)")
    assert run.status == "completed"
    assert run.output.passed and run.output.tests == TESTS and run.output.tests_generated
    assert run.output.iterations == 1 and run.output.history[0].step == 1
    assert "write tests" in model.requests[0].messages[-1].text
    assert "Tests recorded" in model.requests[1].messages[-1].text
    assert run.inputs == {"tests": TESTS, "tests_generated": True}


def test_generated_tests_without_any_test_are_sent_back(make_lab):
    model = ScriptedModel([block("x = 1\n"), block("assert add(1, 1) == 2\n"), block(RIGHT)])
    run = CodeWriterAgent(lab=make_lab(model)).run("write add(a, b)")
    assert "no test_* function" in run.steps[0].observations[-1].text
    assert run.output.passed and run.output.tests == "assert add(1, 1) == 2\n"
    assert "passed the tests' asserts" in run.output.history[0].test_output


def test_a_reply_without_code_is_repaired(make_lab):
    model = ScriptedModel(["Sure, I will add the two numbers.", block(RIGHT)])
    run = CodeWriterAgent(lab=make_lab(model)).run("write add", tests=TESTS)
    assert "found no Python code" in run.steps[0].observations[0].text
    assert run.status == "completed" and run.output.passed and run.output.iterations == 1


def test_code_submitted_through_the_tool_is_tested_and_its_call_answered(make_lab):
    model = ScriptedModel([call("submit_code", "s1", code=WRONG),
                           call("submit_code", "s2", code=RIGHT)])
    run = CodeWriterAgent(lab=make_lab(model)).run("write add", tests=TESTS)
    assert "submit_code" in {t.name for t in model.requests[0].tools}
    assert run.status == "completed" and run.output.passed and run.output.iterations == 2
    tool_msgs = [m for m in model.requests[1].messages if m.role == "tool"]
    assert [m.tool_call_id for m in tool_msgs] == ["s1"]
    assert "assert -1 == 5" in tool_msgs[0].text
    assert model.requests[1].messages[-1].role == "user"  # then the fix-it prompt


def test_a_malformed_submit_call_and_an_unknown_tool_are_repaired(make_lab):
    model = ScriptedModel([call("submit_code", "s1", _raw="{code: def"),
                           call("run_tests", "u1", code=RIGHT),
                           call("submit_code", "s2", code=RIGHT)])
    run = CodeWriterAgent(lab=make_lab(model)).run("write add", tests=TESTS)
    assert "found no Python code" in run.steps[0].observations[-1].text
    assert run.steps[0].observations[0].tool_call_id == "s1"  # the call got an answer
    unknown = run.steps[1].tool_results[0]
    assert not unknown.ok and "Unknown tool 'run_tests'" in unknown.content
    assert run.status == "completed" and run.output.passed and run.output.iterations == 1


def test_code_the_sandbox_refuses_is_fed_back_and_audited_as_refused(make_lab):
    sneaky = "import socket\nsocket.socket()\n" + RIGHT
    model = ScriptedModel([block(sneaky), block(RIGHT)])
    lab = make_lab(model)
    run = CodeWriterAgent(lab=lab).run("write add", tests=TESTS)
    first = run.output.history[0]
    assert not first.passed and "Refused by the safety policy [code.network]" in \
        first.test_output
    assert "code.network" in model.requests[1].messages[-1].text
    assert list(lab.audit(tool="run_python")["decision"]) == ["refused", "allowed"]
    assert run.output.passed


def test_the_runner_runs_test_classes_and_reports_fixtures_it_cannot_give(make_lab):
    tests = ("class TestAdd:\n    def test_one(self):\n        assert add(1, 1) == 2\n\n"
             "def test_needs_a_fixture(tmp_path):\n    assert add(0, 0) == 0\n")
    run = CodeWriterAgent(lab=make_lab(ScriptedModel([block(RIGHT)])), max_steps=1).run(
        "write add", tests=tests)
    first = run.output.history[0]
    assert (first.tests_passed, first.tests_failed, first.passed) == (1, 1, False)
    assert "passed TestAdd.test_one" in first.test_output
    assert "FAILED test_needs_a_fixture:\nit takes arguments" in first.test_output
    assert run.status == "max_steps"


def test_a_syntax_error_is_reported_as_a_load_error_and_fixed(make_lab):
    model = ScriptedModel([block("def add(a, b)\n    return a + b\n"), block(RIGHT)])
    run = CodeWriterAgent(lab=make_lab(model)).run("write add", tests=TESTS)
    first = run.output.history[0]
    assert "ERROR loading the code" in first.test_output and "SyntaxError" in first.test_output
    assert run.output.passed and run.output.iterations == 2


def test_the_step_limit_with_failing_tests_ends_with_max_steps_and_the_last_try(make_lab):
    model = ScriptedModel(lambda messages, request: block(WRONG))
    run = CodeWriterAgent(lab=make_lab(model), max_steps=6).run("write add", tests=TESTS)
    # six failing iterations are progress, not six mistakes: max_repairs (3) never ends it
    assert run.status == "max_steps" and len(run.steps) == 6
    assert isinstance(run.output, CodeResult)
    assert run.output.passed is False and run.output.iterations == 6
    assert run.output.code == WRONG


def test_a_budget_that_runs_out_ends_with_budget_and_the_tries_so_far(make_lab):
    model = ScriptedModel(lambda messages, request: block(WRONG), name="priced")
    lab = make_lab(model, prices={"scripted:priced": {"input": 10_000, "output": 10_000}})
    agent = CodeWriterAgent(lab=lab, max_steps=50, max_cost_usd=5.0,
                            params={"max_tokens": 50})
    run = agent.run("write add", tests=TESTS)
    assert run.status == "budget" and 0 < run.cost_usd <= 5.0
    assert run.output.passed is False and 1 <= run.output.iterations < 50


def test_the_time_limit_stops_a_hanging_test_run_promptly(make_lab):
    slow = "import time\n\ndef add(a, b):\n    time.sleep(30)\n"
    lab = make_lab(ScriptedModel([block(slow)]))
    started = time.monotonic()
    run = CodeWriterAgent(lab=lab, max_seconds=1.5).run("write add", tests=TESTS)
    assert time.monotonic() - started < 4.0
    assert run.status == "timeout" and run.output is None
    assert sandbox_workers() == []  # the hanging worker was stopped


def test_cancel_from_another_thread_stops_a_test_run_within_a_second(make_lab):
    slow = "import time\n\ndef add(a, b):\n    time.sleep(30)\n"
    agent = CodeWriterAgent(lab=make_lab(ScriptedModel([block(slow)])))
    asked: list[float] = []
    timer = threading.Timer(0.7, lambda: (asked.append(time.monotonic()), agent.cancel()))
    timer.start()
    run = agent.run("write add", tests=TESTS)
    timer.join()
    assert time.monotonic() - asked[0] < 1.0
    assert run.status == "cancelled" and len(run.steps) == 1
    assert sandbox_workers() == []


def test_a_test_run_past_test_timeout_s_is_a_failure_the_model_sees(make_lab):
    slow = "import time\n\ndef add(a, b):\n    time.sleep(30)\n"
    model = ScriptedModel([block(slow), block(RIGHT)])
    run = CodeWriterAgent(lab=make_lab(model), test_timeout_s=0.5).run("add", tests=TESTS)
    assert "timed out" in run.output.history[0].test_output
    assert "timed out" in model.requests[1].messages[-1].text
    assert run.output.passed and run.output.iterations == 2


def test_the_passing_code_is_saved_through_write_file(make_lab):
    lab = make_lab(ScriptedModel([block(RIGHT)]))
    run = CodeWriterAgent(lab=lab, save_to="pkg/solution.py").run("add", tests=TESTS)
    assert run.output.saved_to == "pkg/solution.py" and run.output.save_error is None
    assert (lab.settings.workspace_path / "pkg" / "solution.py").read_text() == RIGHT
    audit = lab.audit(tool="write_file")
    assert list(audit["call_id"]) == [f"{run.id}:save"]
    assert list(audit["decision"]) == ["allowed"]


def test_a_denied_save_leaves_no_file_and_says_why(make_lab):
    lab = make_lab(ScriptedModel([block(RIGHT)]))
    lab.settings.safety.approvals.by_tool["write_file"] = "ask"
    asked = []
    lab.tools.approver = lambda request: asked.append(request.tool) and False
    run = CodeWriterAgent(lab=lab, save_to="solution.py").run("add", tests=TESTS)
    assert asked == ["write_file"]
    assert run.status == "completed" and run.output.passed
    assert run.output.saved_to is None and "approval.denied" in run.output.save_error
    assert not (lab.settings.workspace_path / "solution.py").exists()
    assert list(lab.audit(tool="write_file")["decision"]) == ["denied"]


def test_a_policy_that_denies_run_python_ends_the_run_with_error(make_lab):
    lab = make_lab(ScriptedModel([block(RIGHT)]))
    lab.settings.safety.approvals.by_tool["run_python"] = "deny"
    run = CodeWriterAgent(lab=lab).run("add", tests=TESTS)
    assert run.status == "error" and "approval.denied_by_policy" in run.error
    assert list(lab.audit(tool="run_python")["decision"]) == ["denied"]


def test_sync_run_works_inside_a_coroutine_under_asyncio_run(make_lab):
    agent = CodeWriterAgent(lab=make_lab(ScriptedModel([block(RIGHT)])))

    async def main() -> al.AgentRun:
        return agent.run("add", tests=TESTS)

    run = asyncio.run(main())
    assert run.status == "completed" and run.output.passed


def test_the_run_round_trips_through_json_and_reloads_from_the_home(make_lab):
    lab = make_lab(ScriptedModel([block(WRONG), block(RIGHT)]))
    run = CodeWriterAgent(lab=lab).run("add", tests=TESTS)
    again = al.AgentRun.model_validate_json(run.model_dump_json())
    assert CodeResult.model_validate(again.output) == run.output
    assert again.inputs == run.inputs and again.agent == "CodeWriterAgent"
    loaded = lab.load_run(run.id)
    assert CodeResult.model_validate(loaded.output) == run.output


def test_a_fork_goes_on_with_the_tests_the_model_wrote(make_lab):
    lab = make_lab(ScriptedModel([block(TESTS, "Tests:"), block(WRONG), block(WRONG)]))
    agent = CodeWriterAgent(lab=lab, max_steps=3)
    run = agent.run("write add")
    assert run.status == "max_steps" and not run.output.passed
    forked = run.fork(step=2, model=ScriptedModel([block(RIGHT)]))
    assert forked.status == "completed" and forked.output.passed
    assert forked.output.tests == TESTS and forked.output.tests_generated
    assert len(forked.steps) == 3 and forked.steps[0].replayed


def test_stream_ends_with_the_run_and_its_result(make_lab):
    agent = CodeWriterAgent(lab=make_lab(ScriptedModel([block(RIGHT)])))
    events = list(agent.stream("add", tests=TESTS))
    assert events[-1].type == "final" and events[-1].run.output.passed


def test_bad_arguments_are_refused_with_what_to_give(make_lab):
    lab = make_lab(ScriptedModel([block(RIGHT)]))
    agent = CodeWriterAgent(lab=lab)
    with pytest.raises(ValueError, match="no test_\\* function"):
        agent.run("add", tests="print('hi')")
    with pytest.raises(ValueError, match="not valid Python"):
        agent.run("add", tests="def test(:")
    with pytest.raises(TypeError, match="str"):
        agent.run("add", tests=["assert True"])
    with pytest.raises(al.ConfigError, match="always a CodeResult"):
        CodeWriterAgent(lab=lab, output=al.AgentRun)
    with pytest.raises(ValueError, match="save_to"):
        CodeWriterAgent(lab=lab, save_to="  ")


def test_extract_code_prefers_the_longest_python_block_and_reads_unfenced_code():
    text = "```python\nprint(add(1, 2))\n```\n```python\ndef add(a, b):\n    return a + b\n```"
    assert extract_code(text) == RIGHT
    assert extract_code("```\n" + RIGHT + "```") == RIGHT
    assert extract_code("```python\n" + RIGHT) == RIGHT  # cut at max_tokens
    assert extract_code(RIGHT) == RIGHT
    assert extract_code("```bash\nls\n```") is None
    assert extract_code("hello") is None and extract_code("") is None


def sandbox_workers() -> list[int]:
    """Sandbox worker processes this test process started and that are still alive."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and b"_sandbox_worker" in cmdline and " Z " not in stat:
            found.append(int(entry.name))
    return found
