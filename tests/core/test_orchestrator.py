"""Orchestrator (lab.solve) with scripted models: plans, routing, concurrent sub-runs in the
parent run, repair then fallback for invalid plans, and its validated config."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

import aillm_lab as al
from aillm_lab.core.orchestrator import RUN_AGENT, OrchestratorConfig
from aillm_lab.core.router import AGENTS, AgentCard
from aillm_lab.testing import ScriptedModel

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")
TWO = {"subtasks": [
    {"id": "s1", "task": "Count the lines of the README", "depends_on": []},
    {"id": "s2", "task": "Show the current git branch", "depends_on": []}]}


def reply(plan, answers=None):
    """A scripted model: ``plan`` (or each of a list of plans) to the planner, whose
    requests ask for an output schema; to an agent, its answer for the task it was given."""
    plans = list(plan) if isinstance(plan, list) else [plan]

    def fn(messages, request):
        if request.output is not None:
            return plans.pop(0) if len(plans) > 1 else plans[0]
        task = next(m.text for m in messages if m.role == "user")
        for key, answer in (answers or {}).items():
            if key in task:
                return answer
        return f"done: {task.splitlines()[0]}"

    return fn


def react_everywhere(**options):
    """Every router name runs a ReActAgent, so a test is about orchestration, not agents."""
    return {name: (lambda lab: al.ReActAgent(lab=lab, **options)) for name in AGENTS}


def windows(runs):
    return [(r.started_at, r.started_at + timedelta(seconds=r.latency_s)) for r in runs]


def test_an_llm_plan_with_two_independent_subtasks_runs_them_concurrently(make_lab):
    model = ScriptedModel(reply(TWO), delay=0.5)
    lab = make_lab(model)
    run = al.Orchestrator(lab, plan="llm", agents=react_everywhere()).solve("readme and git")
    assert run.status == "completed", run.error
    assert run.inputs["plan_used"] == "llm" and len(run.steps) == 2
    plan_step, wave = run.steps
    assert json.loads(plan_step.text) == TWO
    assert [c.name for c in wave.tool_calls] == [RUN_AGENT, RUN_AGENT]
    subs = al.Orchestrator.sub_runs(run)
    assert [s.task for s in subs] == ["Count the lines of the README",
                                      "Show the current git branch"]
    assert all(s.status == "completed" and s.latency_s >= 0.5 for s in subs)
    (a_start, a_end), (b_start, b_end) = windows(subs)
    assert a_start < b_end and b_start < a_end  # their time windows overlap
    # every sub-run is in the parent: its call, its result, its id, its calls and cost
    assert [c.id for c in wave.tool_calls] == [r.call_id for r in wave.tool_results] == [
        s.id for s in subs]
    assert [r.content for r in wave.tool_results] == [s.output for s in subs]
    assert {c.arguments["subtask"] for c in wave.tool_calls} == {"s1", "s2"}
    assert all(c.arguments["agent"] in AGENTS and c.arguments["why"]
               for c in wave.tool_calls)
    calls = lab.calls()
    assert set(calls["run_id"]) == {run.id, *(s.id for s in subs)}
    assert wave.usage.total_tokens == sum(s.usage.total_tokens for s in subs) > 0
    assert run.usage.total_tokens >= wave.usage.total_tokens
    assert "## s1: Count the lines of the README\ndone: Count" in run.output
    shown = str(run)  # the trace view shows each sub-run as a call and its answer
    assert 'run_agent({"subtask": "s2", "agent": ' in shown
    assert "-> ok: 'done: Show the current git branch'" in shown


def test_one_subtask_at_a_time_when_max_concurrency_is_one(make_lab):
    lab = make_lab(ScriptedModel(reply(TWO), delay=0.3))
    run = al.Orchestrator(lab, plan="llm", max_concurrency=1,
                          agents=react_everywhere()).solve("readme and git")
    (a_start, a_end), (b_start, b_end) = sorted(windows(al.Orchestrator.sub_runs(run)))
    assert a_end <= b_start


def test_a_dependent_subtask_runs_after_and_is_given_the_earlier_answer(make_lab):
    plan = {"subtasks": [
        {"id": "find", "task": "Find the biggest file", "depends_on": []},
        {"id": "describe", "task": "Describe that file", "depends_on": ["find"]}]}
    model = ScriptedModel(reply(plan, {"Find the biggest": "big.bin, 3 MB"}))
    lab = make_lab(model)
    run = al.Orchestrator(lab, plan="llm", agents=react_everywhere()).solve("biggest file?")
    assert run.status == "completed"
    assert [[c.arguments["subtask"] for c in s.tool_calls] for s in run.steps[1:]] == [
        ["find"], ["describe"]]
    first, second = al.Orchestrator.sub_runs(run)
    assert "Results of the subtasks this one builds on:\n[find] big.bin, 3 MB" in second.task
    assert second.started_at >= first.started_at + timedelta(seconds=first.latency_s)


def test_an_invalid_plan_is_repaired_once_then_falls_back_to_single(make_lab):
    cyclic = {"subtasks": [{"id": "a", "task": "x", "depends_on": ["b"]},
                           {"id": "b", "task": "y", "depends_on": ["a"]}]}
    dangling = {"subtasks": [{"id": "a", "task": "x", "depends_on": ["zz"]}]}
    model = ScriptedModel(reply([cyclic, dangling]))
    lab = make_lab(model)
    run = al.Orchestrator(lab, plan="llm", agents=react_everywhere()).solve("whole task")
    planner = [r for r in model.requests if r.output is not None]
    assert len(planner) == 2  # the plan, and one repair
    assert "cycle" in planner[1].messages[-1].text  # the repair showed the model its error
    assert run.inputs["plan_used"] == "single (fallback)"
    assert "invalid after 1 repair" in run.steps[0].error and "zz" in run.steps[0].error
    assert run.status == "completed"
    [wave] = run.steps[1:]
    assert [c.arguments["task"] for c in wave.tool_calls] == ["whole task"]
    assert run.output == "done: whole task"


def test_a_repaired_plan_is_used(make_lab):
    bad = {"subtasks": [{"id": "a", "task": "", "depends_on": []}]}
    lab = make_lab(ScriptedModel(reply([bad, TWO])))
    run = al.Orchestrator(lab, plan="llm", agents=react_everywhere()).solve("two things")
    assert run.inputs["plan_used"] == "llm" and run.steps[0].error is None
    assert len(run.steps[1].tool_calls) == 2


def test_too_many_subtasks_is_an_invalid_plan(make_lab):
    many = {"subtasks": [{"id": f"s{i}", "task": f"t{i}"} for i in range(5)]}
    lab = make_lab(ScriptedModel(reply(many)))
    run = al.Orchestrator(lab, plan="llm", max_subtasks=4,
                          agents=react_everywhere()).solve("many")
    assert run.inputs["plan_used"] == "single (fallback)"


def test_single_routes_the_whole_task_to_one_agent_and_reloads_with_its_sub_run(make_lab):
    model = ScriptedModel(reply(TWO))
    lab = make_lab(model)
    run = lab.solve("List the files in my workspace and tell me which one is the biggest")
    assert run.status == "completed", run.error
    assert run.agent == "Orchestrator" and run.inputs["plan_used"] == "single"
    assert not [r for r in model.requests if r.output is not None]  # no planner call
    [step] = run.steps
    [call] = step.tool_calls
    route = lab.route(run.task)
    assert call.arguments["agent"] == route.agent == "react"
    assert call.arguments["why"] == route.why
    [sub] = al.Orchestrator.sub_runs(run)
    assert sub.agent == "ReActAgent" and run.output == sub.output
    again = lab.load_run(run.id)
    assert again.model_dump() == run.model_dump()
    assert al.Orchestrator.sub_runs(again, lab) == [sub]
    assert set(lab.runs()["id"]) == {run.id, sub.id}


def test_a_failing_sub_agent_makes_an_error_run_and_its_sibling_still_finishes(make_lab):
    def broken(lab):
        raise RuntimeError("no such agent today")

    agents = {**react_everywhere(), "react": broken}
    plan = {"subtasks": [{"id": "a", "task": "List the files in the workspace folder"},
                         {"id": "b", "task": "Write a Python function that adds two numbers"
                                             " and test it"}]}
    lab = make_lab(ScriptedModel(reply(plan)))
    run = al.Orchestrator(lab, plan="llm", agents=agents).solve("two")
    routed = {c.arguments["subtask"]: c.arguments["agent"] for c in run.steps[1].tool_calls}
    assert routed == {"a": "react", "b": "code_writer"}
    bad, good = al.Orchestrator.sub_runs(run)
    assert (bad.status, good.status) == ("error", "completed")
    assert "no such agent today" in bad.error
    assert run.status == "error" and "no such agent today" in run.error
    assert [r.ok for r in run.steps[1].tool_results] == [False, True]


def test_aggregate_llm_asks_the_model_to_merge_the_answers(make_lab):
    def fn(messages, request):
        text = messages[-1].text
        if request.output is not None:
            return TWO
        if text.startswith("Combine the results"):
            return "merged answer"
        return "part"

    lab = make_lab(ScriptedModel(fn))
    run = al.Orchestrator(lab, plan="llm", aggregate="llm",
                          agents=react_everywhere()).solve("both")
    assert run.output == "merged answer" and run.steps[-1].text == "merged answer"
    assert "## s2: Show the current git branch\npart" in run.steps[-1].messages[-1].text


@pytest.mark.parametrize(("options", "field"), [
    ({"max_concurrency": 0}, "max_concurrency"), ({"plan": "parallel"}, "plan"),
    ({"max_subtasks": 100}, "max_subtasks"), ({"aggregate": "vote"}, "aggregate"),
    ({"agent_options": {"poet": {}}}, "agent_options"), ({"temperature": 1}, "temperature"),
    ({"agent_max_seconds": -1}, "agent_max_seconds")])
def test_a_bad_config_is_rejected_naming_the_field(make_lab, options, field):
    lab = make_lab(ScriptedModel())
    with pytest.raises(al.ConfigError, match=field) as info:
        al.Orchestrator(lab, **options)
    assert info.value.fields == (field,)
    with pytest.raises(al.ConfigError, match=field):
        lab.solve("anything", **options) if "plan" not in options else \
            lab.solve("anything", plan=options["plan"])


def test_config_is_a_model_and_keywords_override_it(make_lab):
    config = OrchestratorConfig(plan="llm", max_concurrency=2)
    orch = al.Orchestrator(make_lab(ScriptedModel()), config, max_concurrency=3)
    assert (orch.config.plan, orch.config.max_concurrency) == ("llm", 3)
    with pytest.raises(al.ConfigError, match="agents="):
        al.Orchestrator(make_lab(ScriptedModel()), agents={"poet": object()})
    with pytest.raises(al.ConfigError, match="task="):
        orch.solve("  ")


def test_a_workflow_agent_given_runs_with_the_task_as_its_input(make_lab):
    lab = make_lab(ScriptedModel(reply(TWO)))
    wf = al.Workflow(name="digest", inputs=["task"],
                     steps=[{"id": "sum", "llm": "Summarise: {{ inputs.task }}"}])
    with al.WorkflowAgent(wf, lab=lab) as agent:
        run = lab.solve("Run the nightly pipeline: fetch, embed and rebuild, with checkpoints",
                        agents={"workflow": agent})
    assert run.status == "completed", run.error
    assert run.steps[0].tool_calls[0].arguments["agent"] == "workflow"
    [sub] = al.Orchestrator.sub_runs(run)
    assert sub.agent == "WorkflowAgent" and sub.id.startswith("wf-")
    assert "done: Summarise: Run the nightly pipeline" in json.dumps(sub.output)
    assert al.Orchestrator.sub_runs(lab.load_run(run.id), lab) == [sub]


def test_a_workflow_task_without_a_workflow_says_how_to_give_one(make_lab):
    lab = make_lab(ScriptedModel(reply(TWO)))
    run = lab.solve("Run the nightly pipeline: fetch, embed and rebuild, with checkpoints")
    [sub] = al.Orchestrator.sub_runs(run)
    assert sub.status == "error" and "pass agents={'workflow'" in sub.error
    assert run.status == "error" and sub.agent == "WorkflowAgent"


def test_a_monitoring_task_is_a_check_by_a_monitor_the_orchestrator_makes_and_closes(
        make_lab, monkeypatch):
    closed = []
    real = al.MonitoringAgent.aclose

    async def aclose(self):
        closed.append(self.id)
        await real(self)

    monkeypatch.setattr(al.MonitoringAgent, "aclose", aclose)
    lab = make_lab(ScriptedModel(reply(TWO)))
    run = lab.solve("Alert me when the error rate goes over 2%")
    assert len(closed) == 1
    assert run.status == "completed", run.error
    [sub] = al.Orchestrator.sub_runs(run)
    assert sub.agent == "MonitoringAgent" and sub.output.startswith("no alerts")


def test_the_config_model_plans_and_runs_the_agents_the_orchestrator_makes(make_lab):
    default, chosen = ScriptedModel(name="default"), ScriptedModel(reply(TWO), name="chosen")
    lab = make_lab(default)
    run = lab.solve("List the files in my workspace", plan="llm", model=chosen)
    assert run.status == "completed", run.error
    assert run.model == "scripted:chosen" and default.requests == []
    assert {s.model for s in al.Orchestrator.sub_runs(run)} == {"scripted:chosen"}


def test_agent_options_reach_the_agent_class_and_a_bad_one_is_an_error_run(make_lab):
    lab = make_lab(ScriptedModel(reply(TWO)))
    run = lab.solve("List the files in my workspace",
                    agent_options={"react": {"max_steps": 1, "bogus": True}})
    [sub] = al.Orchestrator.sub_runs(run)
    assert sub.status == "error" and "bogus" in sub.error and "agents=" in sub.error
    run = lab.solve("List the files in my workspace", agent_options={"react": {"max_steps": 1}})
    assert run.status == "completed"


def test_a_budget_of_zero_stops_the_planner_before_its_call(make_lab):
    model = ScriptedModel(reply(TWO))
    lab = make_lab(model, prices={"scripted:scripted": {"input": 1, "output": 1}})
    run = lab.solve("two things", plan="llm", max_cost_usd=0.0)
    assert run.status == "budget" and "BudgetExceeded" in run.error
    assert model.requests == []


def test_a_router_of_your_own_routes_to_agents_you_give_and_names_the_missing_ones(make_lab):
    lab = make_lab(ScriptedModel(reply(TWO)))
    cards = {"poet": AgentCard("poet", "nowhere:Poet", "Writes poems and verse.",
                               keywords=(r"\bpoem\b",)),
             "critic": AgentCard("critic", "nowhere:Critic", "Reviews and criticises poems.",
                                 keywords=(r"\breview\b",))}
    router = al.TaskRouter(lab, agents=cards)
    poet = al.ReActAgent(lab=lab)
    run = al.Orchestrator(lab, router=router, agents={"poet": poet}).solve("a poem on owls")
    assert run.status == "completed" and run.steps[0].tool_calls[0].arguments["agent"] == "poet"
    run = al.Orchestrator(lab, router=router, agents={"poet": poet}).solve("review my poem")
    [sub] = al.Orchestrator.sub_runs(run)
    assert sub.status == "error" and "pass agents={'critic'" in sub.error
    assert sub.agent == "critic"
