"""Running workflows: parallel branches overlap, retries follow the policy with backoff, a
step timeout is honoured, refusals are not retried, conditions skip, a failure blocks only
what needs it, llm/tool/agent steps go through the gateway and the guard, a budget stops the
run before the call, max_seconds and cancel() keep finished steps, and the report is a
DataFrame of steps."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import aillm_lab as al
from aillm_lab.testing import ScriptedModel


@pytest.fixture
def make_lab(tmp_path, runner):
    labs: list[al.Lab] = []

    def make(model=None, **settings) -> al.Lab:
        lab = al.Lab(al.LabSettings(home=tmp_path / "home", **settings), model=model,
                     runner=runner)
        labs.append(lab)
        return lab

    yield make
    for lab in labs:
        lab.close()


def _run(lab, steps, inputs=None, run_id=None, **options):
    options.setdefault("outputs", None)
    wf_options = {k: options.pop(k) for k in ("outputs", "budget_usd", "max_concurrency")
                  if k in options}
    agent = al.WorkflowAgent(al.Workflow(steps=steps, **wf_options), lab=lab, **options)
    return agent.run(inputs, run_id=run_id)


def test_independent_branches_run_concurrently_and_their_windows_overlap(make_lab):
    barrier = threading.Barrier(2, timeout=20)  # each branch waits for the other

    def branch(name: str) -> str:
        barrier.wait()
        time.sleep(0.05)
        return name

    run = _run(make_lab(), [
        {"id": "left", "call": branch, "args": {"name": "L"}},
        {"id": "right", "call": branch, "args": {"name": "R"}},
        {"id": "join", "call": lambda a, b: a + b,
         "args": {"a": "{{ steps.left.output }}", "b": "{{ steps.right.output }}"}}])
    assert run.status == "completed", run.error
    assert run.outputs == {"join": "LR"}
    left, right, join = run.steps
    assert left.started_at < right.finished_at and right.started_at < left.finished_at
    assert join.started_at >= max(left.finished_at, right.finished_at)


def test_a_failing_step_retries_per_its_policy_with_backoff(make_lab):
    tries: list[float] = []

    def flaky() -> str:
        tries.append(time.monotonic())
        if len(tries) < 3:
            raise ConnectionError(f"try {len(tries)} failed")
        return "ok"

    run = _run(make_lab(), [{"id": "flaky", "call": flaky, "retry": {
        "attempts": 3, "backoff_s": 0.1, "factor": 2}}])
    step = run.step("flaky")
    assert (run.status, step.status, step.attempts, step.output) == (
        "completed", "completed", 3, "ok")
    assert step.error is None
    assert tries[1] - tries[0] >= 0.1 and tries[2] - tries[1] >= 0.2  # backoff 0.1, then 0.2


def test_a_step_that_keeps_failing_fails_after_its_attempts_and_the_run_says_which(make_lab):
    calls = []

    def broken() -> None:
        calls.append(1)
        raise ValueError("no luck")

    run = _run(make_lab(), [{"id": "broken", "call": broken,
                             "retry": {"attempts": 2, "backoff_s": 0}}])
    step = run.step("broken")
    assert (run.status, step.status, step.attempts, len(calls)) == ("error", "failed", 2, 2)
    assert step.error == "ValueError: no luck (after 2 tries)"
    assert run.error == "step 'broken' failed: ValueError: no luck (after 2 tries)"


def test_a_step_timeout_is_honoured_for_each_try(make_lab):
    async def hang() -> None:
        await asyncio.sleep(60)

    started = time.monotonic()
    run = _run(make_lab(), [{"id": "hang", "call": hang, "timeout_s": 0.2,
                             "retry": {"attempts": 2, "backoff_s": 0}}])
    assert time.monotonic() - started < 20  # two tries of 0.2 s, not a minute
    step = run.step("hang")
    assert (step.status, step.attempts) == ("failed", 2)
    assert step.error == ("TimeoutError: step 'hang' timed out after timeout_s=0.2 "
                          "(after 2 tries)")
    assert 0.4 <= step.duration_s


def test_a_safety_refusal_is_not_retried(make_lab):
    run = _run(make_lab(), [{"id": "peek", "tool": "read_file",
                             "args": {"path": "/etc/passwd"}, "retry": {"attempts": 3}}])
    step = run.step("peek")
    assert (step.status, step.attempts) == ("failed", 1)
    assert step.error.startswith("SafetyViolation")


def test_when_skips_a_step_and_a_failure_blocks_only_what_needs_it(make_lab):
    def boom() -> None:
        raise RuntimeError("boom")

    run = _run(make_lab(), [
        {"id": "flag", "call": lambda: {"go": False}},
        {"id": "maybe", "call": lambda: "ran", "when": "{{ steps.flag.output.go }}"},
        {"id": "after", "call": lambda v: f"maybe={v}", "args": {"v": "{{ steps.maybe.output }}"}},
        {"id": "bad", "call": boom},
        {"id": "needs_bad", "call": lambda: "never", "needs": ["bad"]},
        {"id": "chain", "call": lambda: "never", "needs": ["needs_bad"]},
        {"id": "other", "call": lambda: "fine"}])
    status = {s.id: s.status for s in run.steps}
    assert status == {"flag": "completed", "maybe": "skipped", "after": "completed",
                      "bad": "failed", "needs_bad": "skipped", "chain": "skipped",
                      "other": "completed"}
    assert run.step("maybe").error is None and run.step("after").output == "maybe=None"
    assert run.step("needs_bad").error == "not run: it needs steps.bad, which failed"
    assert run.step("chain").error == "not run: it needs steps.needs_bad, which was skipped"
    assert run.status == "error" and run.error.startswith("step 'bad' failed: RuntimeError")


def test_an_output_that_is_not_json_data_fails_the_step_by_name(make_lab):
    run = _run(make_lab(), [{"id": "odd", "call": lambda: {1, 2},
                             "retry": {"attempts": 3, "backoff_s": 0}}])
    step = run.step("odd")
    assert (step.status, step.attempts) == ("failed", 1)
    assert "step 'odd' returned set that is not JSON data" in step.error


def test_llm_steps_go_through_the_gateway_under_the_run_id(make_lab):
    model = ScriptedModel(lambda messages, request: (
        {"city": "Paris", "people": 2} if request.output else
        f"echo: {messages[-1].text}"))
    lab = make_lab(model)
    run = _run(lab, [
        {"id": "ask", "llm": "hello {{ inputs.name }}", "system": "be brief"},
        {"id": "facts", "llm": "about {{ steps.ask.output.text }}", "output": {
            "type": "object", "properties": {"city": {"type": "string"},
                                             "people": {"type": "integer"}},
            "required": ["city", "people"]}}], inputs={"name": "Ada"}, run_id="wf-llm")
    assert run.status == "completed", run.error
    assert run.step("ask").output == {"text": "echo: hello Ada", "data": None,
                                      "model": "scripted:scripted"}
    assert run.step("facts").output["data"] == {"city": "Paris", "people": 2}
    assert model.requests[0].messages[0].text == "be brief"
    calls = lab.calls()
    assert calls[calls["run_id"] == "wf-llm"].shape[0] == 2


def test_tool_steps_pass_the_guard_and_are_audited(make_lab):
    lab = make_lab()

    @al.tool
    def shout(text: str) -> str:
        """Upper-case a text."""
        return text.upper()

    lab.tools.add(shout)
    run = _run(lab, [{"id": "loud", "tool": "shout", "args": {"text": "{{ inputs.t }}"}}],
               inputs={"t": "quiet"})
    assert run.step("loud").output == {"text": "QUIET"}
    audit = lab.tools.audit(tool="shout")
    assert audit.shape[0] == 1 and audit["decision"].tolist() == ["allowed"]


def test_an_agent_step_runs_an_agent_and_a_failed_run_fails_the_step(make_lab):
    lab = make_lab(ScriptedModel(lambda messages, request: "forty-two"))
    run = _run(lab, [{"id": "think", "agent": "react", "task": "answer {{ inputs.q }}",
                      "max_steps": 2}], inputs={"q": "everything"})
    out = run.step("think").output
    assert run.status == "completed" and out["text"] == "forty-two"
    assert lab.load_run(out["run_id"]).task == "answer everything"

    quiet = make_lab(ScriptedModel(lambda messages, request: ""))
    failed = _run(quiet, [{"id": "think", "agent": "react", "task": "x", "max_steps": 1}])
    assert failed.step("think").status == "failed"
    assert "ended max_steps" in failed.step("think").error


def test_a_budget_stops_the_run_before_the_call_and_starts_no_more_steps(make_lab):
    model = ScriptedModel(lambda messages, request: "a short answer", name="priced")
    lab = make_lab(model, prices={"scripted:priced": {"input": 10_000, "output": 10_000}})
    params = {"max_tokens": 10}
    run = _run(lab, [
        {"id": "one", "llm": "first question here", "params": params},
        {"id": "two", "llm": "{{ steps.one.output.text }} again", "params": params},
        {"id": "three", "call": lambda t: t, "args": {"t": "{{ steps.two.output }}"}}],
        budget_usd=0.22)
    status = {s.id: s.status for s in run.steps}
    assert status == {"one": "completed", "two": "failed", "three": "pending"}
    assert run.status == "budget" and "BudgetExceeded" in run.step("two").error
    assert len(model.requests) == 1  # the refused call was never sent
    assert 0 < run.cost_usd <= 0.22


def test_max_seconds_ends_the_run_with_timeout_and_keeps_finished_steps(make_lab):
    lab = make_lab()
    release = threading.Event()

    async def wait_for_release() -> str:
        await asyncio.to_thread(release.wait, 30)
        return "released"

    steps = [{"id": "quick", "call": lambda: "done"},
             {"id": "slow", "call": wait_for_release, "needs": ["quick"]}]
    run = _run(lab, steps, run_id="limited", max_seconds=0.5)
    assert run.status == "timeout" and "max_seconds=0.5" in run.error
    assert {s.id: s.status for s in run.steps} == {"quick": "completed",
                                                   "slow": "cancelled"}
    release.set()
    resumed = _run(lab, steps, run_id="limited")
    assert resumed.status == "completed"
    assert resumed.restored == ["quick"] and resumed.executed == ["slow"]


def test_cancel_from_another_thread_returns_the_partial_run_promptly(make_lab):
    async def forever() -> None:
        await asyncio.sleep(60)

    agent = al.WorkflowAgent(al.Workflow(steps=[{"id": "first", "call": lambda: 1},
                                                {"id": "stuck", "call": forever,
                                                 "needs": ["first"]}]), lab=make_lab())
    timer = threading.Timer(0.3, agent.cancel)
    timer.start()
    started = time.monotonic()
    run = agent.run(run_id="cancelled")
    timer.join()
    assert time.monotonic() - started < 10
    assert run.status == "cancelled" and run.step("first").status == "completed"
    assert run.step("stuck").status == "cancelled"


def test_the_report_is_a_dataframe_of_steps_with_the_outputs(make_lab):
    run = _run(make_lab(), [{"id": "a", "call": lambda: 2},
                            {"id": "b", "call": lambda x: x * 21,
                             "args": {"x": "{{ steps.a.output }}"}}],
               outputs={"answer": "{{ steps.b.output }}"})
    frame = run.report()
    assert frame.columns.tolist() == ["step", "kind", "status", "attempts", "started_at",
                                      "finished_at", "duration_s", "cost_usd", "output",
                                      "error"]
    assert frame[["step", "status", "attempts", "output"]].to_dict("records") == [
        {"step": "a", "status": "completed", "attempts": 1, "output": 2},
        {"step": "b", "status": "completed", "attempts": 1, "output": 42}]
    assert frame.attrs["outputs"] == run.outputs == {"answer": 42}
    assert "completed=2" in repr(run)
    html = run._repr_html_()
    assert "Workflow workflow: completed" in html and "answer" in html


def test_arun_is_awaitable_from_another_event_loop(make_lab):
    agent = al.WorkflowAgent(al.Workflow(steps=[{"id": "a", "call": lambda: "hi"}]),
                             lab=make_lab(), checkpoint=False)

    async def main() -> al.agents.workflow.WorkflowRun:
        return await agent.arun()

    run = asyncio.run(main())
    assert run.status == "completed" and run.outputs == {"a": "hi"}


def test_bad_agent_options_and_inputs_are_config_errors(make_lab):
    wf = al.Workflow(inputs=["x"], steps=[{"id": "a", "call": lambda x: x,
                                           "args": {"x": "{{ inputs.x }}"}}])
    with pytest.raises(al.ConfigError) as info:
        al.WorkflowAgent(wf, lab=make_lab(), max_seconds=0)
    assert info.value.fields == ("max_seconds",)
    agent = al.WorkflowAgent(wf, lab=make_lab())
    with pytest.raises(al.ConfigError, match="needs input 'x'"):
        agent.run({})
    with pytest.raises(al.ConfigError, match="JSON data") as info:
        agent.run({"x": object()})
    assert info.value.fields == ("inputs",)


def test_a_model_that_cannot_be_resolved_fails_its_step_not_the_run(make_lab):
    run = _run(make_lab(), [{"id": "ask", "llm": "hi", "model": "nosuchprovider:x"},
                            {"id": "other", "call": lambda: "fine"}])
    assert run.step("ask").status == "failed" and "nosuchprovider" in run.step("ask").error
    assert run.step("other").status == "completed" and run.status == "error"
