"""``Orchestrator`` (``lab.solve``): plan a task, route its parts to agents, run, aggregate.

``single`` routes the whole task to one agent. ``llm`` asks the model (through the Lab's
gateway) for a ``Plan`` of subtasks with their dependencies; a plan that does not validate
is shown its error and repaired once, then the task falls back to ``single``. The subtasks
run in waves: each wave holds the subtasks whose dependencies are done, and runs them at
once. The result is one ``AgentRun`` whose steps are the plan and the waves: each wave step
carries one ``run_agent`` tool call per subtask, answered by a ``ToolResult`` whose ``value``
is the sub-run itself (its ``call_id`` is the sub-run's id, saved under ``runs/`` by its
agent, so a reloaded parent still finds its children: ``Orchestrator.sub_runs``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import inspect
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from aillm_lab.agents.run import AgentRun, AgentStep, RunStatus
from aillm_lab.core.router import AGENTS, LlmMode, Route
from aillm_lab.errors import BudgetExceeded, ConfigError, StructuredOutputError
from aillm_lab.llm.base import Model
from aillm_lab.llm.limits import UNSET
from aillm_lab.llm.types import Completion, Message, ToolCall, Usage
from aillm_lab.runtime import sync_twin
from aillm_lab.tools.base import ToolResult

if TYPE_CHECKING:
    from aillm_lab.core.lab import Lab
    from aillm_lab.core.router import TaskRouter

log = logging.getLogger(__name__)
RUN_STATUSES = set(get_args(RunStatus))
RUN_AGENT = "run_agent"  # the tool call a wave step shows for each subtask it ran
AgentFactory = Callable[["Lab"], Any]

PLAN_PROMPT = """Split the task into at most {n} subtasks that specialised agents can do
one by one. Agents: {agents}.
Give each subtask a short id (s1, s2, ...), a self-contained instruction, and depends_on:
the ids whose results it needs (empty when it can start at once). Use one subtask when the
task is not worth splitting.

Task: {task}"""
AGGREGATE_PROMPT = """Combine the results of the subtasks into one answer to the task.

Task: {task}

{results}"""


class OrchestratorConfig(BaseModel):
    """How ``lab.solve`` plans and runs; every field is checked when it is made."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    plan: Literal["single", "llm"] = Field("single", description="route the task whole, "
                                           "or have the model split it into subtasks")
    model: str | Model | None = Field(None, description="the planner's, the aggregator's "
                                      "and the made agents' model (default: the Lab's)")
    max_subtasks: int = Field(4, ge=1, le=12)
    max_concurrency: int = Field(4, ge=1, le=32, description="subtasks running at once")
    plan_repairs: int = Field(1, ge=0, le=3, description="tries to fix an invalid plan "
                              "before falling back to single")
    router_llm: LlmMode = Field("off", description="the router's LLM classifier")
    aggregate: Literal["join", "llm"] = Field("join", description="join the subtasks' "
                                              "answers as sections, or have the model merge")
    agent_max_steps: int | None = Field(None, ge=1, le=100)
    agent_max_seconds: float | None = Field(None, gt=0)
    max_cost_usd: float | None = Field(None, ge=0, description="cap for the planner and "
                                       "aggregator calls, and for each sub-run")
    agent_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="keyword arguments for each agent's class, by "
        "router name: {'react': {'tools': ['read_file']}}")
    save: bool = True

    @field_validator("agent_options")
    @classmethod
    def _known_agents(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        unknown = sorted(set(value) - set(AGENTS))
        if unknown:
            raise ValueError(f"unknown agent names {unknown}; known: {sorted(AGENTS)}")
        return value


class Subtask(BaseModel):
    """One part of a plan: an instruction and the subtasks whose results it needs."""

    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")
    task: str = Field(min_length=1, max_length=4000)
    depends_on: list[str] = Field(default_factory=list)


class Plan(BaseModel):
    """Subtasks with unique ids whose dependencies name earlier subtasks, with no cycle."""

    subtasks: list[Subtask] = Field(min_length=1)

    @model_validator(mode="after")
    def _a_dag(self) -> Plan:
        ids = [s.id for s in self.subtasks]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"subtask ids must be unique; repeated: {twice}")
        for s in self.subtasks:
            dangling = sorted(set(s.depends_on) - set(ids))
            if dangling:
                raise ValueError(f"subtask {s.id!r} depends on unknown ids {dangling}")
        waves(self)  # raises on a cycle
        return self


@functools.lru_cache(maxsize=16)
def plan_model(max_subtasks: int) -> type[Plan]:
    """``Plan`` with at most ``max_subtasks`` subtasks (the schema the model is shown)."""
    return create_model("Plan", __base__=Plan,
                        subtasks=(list[Subtask], Field(min_length=1, max_length=max_subtasks)))


def waves(plan: Plan) -> list[list[Subtask]]:
    """The subtasks in waves: each wave depends only on earlier ones (ValueError on a
    cycle, naming the subtasks in it)."""
    left = {s.id: s for s in plan.subtasks}
    done: set[str] = set()
    out: list[list[Subtask]] = []
    while left:
        ready = [s for s in left.values() if set(s.depends_on) <= done]
        if not ready:
            raise ValueError(f"subtasks {sorted(left)} depend on each other in a cycle")
        out.append(ready)
        done |= {s.id for s in ready}
        for s in ready:
            del left[s.id]
    return out


class Orchestrator:
    """Plans, routes, runs and aggregates: ``Orchestrator(lab, plan="llm").solve(task)``.

    ``config``: an ``OrchestratorConfig`` (or its fields as keywords; a bad value is a
    ``ConfigError`` naming the field). ``agents``: ready agents, or functions ``lab ->
    agent``, by router name, used instead of making one from the router's table (the way
    to give a ``WorkflowAgent`` its workflow or a ``DataAnalysisAgent`` its data).
    """

    def __init__(self, lab: Lab | None = None, config: OrchestratorConfig | None = None, *,
                 agents: Mapping[str, Any] | None = None, router: TaskRouter | None = None,
                 **options: Any) -> None:
        if lab is None:
            import aillm_lab

            lab = aillm_lab.default_lab()
        self.lab = lab
        self.config = _config(config, options)
        self.router = router if router is not None else lab.router
        known = set(AGENTS) | set(self.router.agents)
        unknown = sorted(set(agents or {}) - known)
        if unknown:
            raise ConfigError(f"agents=: unknown agent names {unknown}; known: "
                              f"{sorted(known)}", fields=("agents",))
        self._given = dict(agents or {})

    def __repr__(self) -> str:
        return f"<Orchestrator plan={self.config.plan!r} model={self.config.model!r}>"

    # -- doors -----------------------------------------------------------------------------
    async def asolve(self, task: str) -> AgentRun:
        """Solve ``task``; the run's steps are the plan (``llm``) and one step per wave of
        subtasks, each subtask's sub-run in its ``run_agent`` result."""
        if not isinstance(task, str) or not task.strip():
            raise ConfigError(f"task={task!r}: give the task as a non-empty text",
                              fields=("task",))
        return await self.lab.runner.arun(self._solve(task.strip()))

    async def aplan(self, task: str) -> Plan:
        """The model's plan for ``task`` (repaired up to ``plan_repairs`` times), or
        ``StructuredOutputError`` when it never validates."""
        schema = plan_model(self.config.max_subtasks)
        agents = ", ".join(f"{n} ({c.description})" for n, c in AGENTS.items())
        prompt = PLAN_PROMPT.format(n=self.config.max_subtasks, agents=agents, task=task)
        return await self.lab.acomplete(prompt, self.config.model, output=schema,
                                        retries=self.config.plan_repairs)

    solve = sync_twin(asolve)
    plan = sync_twin(aplan)

    @staticmethod
    def sub_runs(run: AgentRun, lab: Lab | None = None) -> list[AgentRun]:
        """The sub-runs of an orchestrated run, in order; a reloaded run's are read back
        from the runs saved under ``lab``'s home (default: ``al.default_lab()``)."""
        from aillm_lab.agents.store import load_run

        found = []
        for step in run.steps:
            for result in step.tool_results:
                if result.name != RUN_AGENT or result.call_id is None:
                    continue
                value = result.value
                if not isinstance(value, AgentRun):
                    if lab is None:
                        import aillm_lab

                        lab = aillm_lab.default_lab()
                    value = load_run(lab, result.call_id)
                found.append(value)
        return found

    # -- on the runner loop ----------------------------------------------------------------
    async def _solve(self, task: str) -> AgentRun:
        cfg = self.config
        planner = self.lab.model(cfg.model).id if cfg.plan == "llm" else _model_id(cfg.model)
        run = AgentRun(agent="Orchestrator", task=task, model=planner,
                       inputs={"plan": cfg.plan})
        started = time.monotonic()
        cap = UNSET if cfg.max_cost_usd is None else cfg.max_cost_usd
        try:
            with self.lab.scope(run.id, budget_usd=cap) as scope:
                plan = await self._planned(run, task, scope)
                outputs: dict[str, AgentRun] = {}
                for wave in waves(plan):
                    await self._wave(run, wave, outputs)
                await self._aggregate(run, task, plan, outputs, scope)
        except asyncio.CancelledError:
            self._end(run, "cancelled", "cancelled from outside", started)
            await self._save(run)
            raise
        except BudgetExceeded as exc:
            self._end(run, "budget", f"BudgetExceeded: {exc}", started)
        except Exception as exc:
            self._end(run, "error", f"{type(exc).__name__}: {exc}", started)
        else:
            failed = [r for r in self.sub_runs(run, self.lab) if r.status != "completed"]
            error = "; ".join(f"{r.agent} ended {r.status}: {r.error}" for r in failed)
            self._end(run, "error" if failed else "completed", error or None, started)
        await self._save(run)
        return run

    async def _planned(self, run: AgentRun, task: str, scope: Any) -> Plan:
        """``single``: the task itself. ``llm``: the model's plan as step 0, or, when it
        never validates, the task itself with the reason in that step's error."""
        whole = Plan(subtasks=[Subtask(id="task", task=task)])
        if self.config.plan == "single":
            run.inputs["plan_used"] = "single"
            return whole
        spent, clock = scope.spent_usd, time.monotonic()
        step = AgentStep(index=len(run.steps), model=run.model)
        run.steps.append(step)
        try:
            plan = await self.aplan(task)
        except StructuredOutputError as exc:
            step.error = (f"the plan was invalid after {self.config.plan_repairs} repair(s), "
                          f"so the task runs whole on one agent: {exc}")
            run.inputs["plan_used"] = "single (fallback)"
            plan = whole
        else:
            run.inputs["plan_used"] = "llm"
        step.completion = Completion(text=plan.model_dump_json(), model=run.model)
        step.latency_s, step.cost_usd = time.monotonic() - clock, scope.spent_usd - spent
        run.inputs["subtasks"] = [s.model_dump() for s in plan.subtasks]
        return plan

    async def _wave(self, run: AgentRun, wave: list[Subtask],
                    outputs: dict[str, AgentRun]) -> None:
        """Route the wave's subtasks, run them at once (up to ``max_concurrency``) and
        record them as one step of ``run_agent`` calls."""
        step = AgentStep(index=len(run.steps), model="orchestrator")
        run.steps.append(step)
        clock = time.monotonic()
        routes = await self.router.aroute_many([s.task for s in wave],
                                               llm=self.config.router_llm)
        gate = asyncio.Semaphore(self.config.max_concurrency)

        async def one(subtask: Subtask, route: Route) -> AgentRun:
            async with gate:
                return await self._run_agent(route.agent, _with_context(subtask, outputs))

        subs = await asyncio.gather(*(one(s, r) for s, r in zip(wave, routes, strict=True)))
        calls, results = [], []
        for subtask, route, sub in zip(wave, routes, subs, strict=True):
            outputs[subtask.id] = sub
            calls.append(ToolCall(id=sub.id, name=RUN_AGENT, arguments={
                "subtask": subtask.id, "agent": route.agent, "task": subtask.task,
                "confidence": route.confidence, "why": route.why}))
            results.append(ToolResult(name=RUN_AGENT, call_id=sub.id,
                                      ok=sub.status == "completed", content=output_text(sub),
                                      error=sub.error, value=sub))
        step.completion = Completion(tool_calls=calls, model="orchestrator",
                                     finish_reason="tool_calls")
        step.tool_results = results
        step.usage = sum((s.usage for s in subs), Usage())
        costs = [s.cost_usd for s in subs]
        step.cost_usd = None if None in costs else float(sum(c or 0.0 for c in costs))
        step.latency_s = time.monotonic() - clock

    async def _run_agent(self, name: str, task: str) -> AgentRun:
        """One subtask on its agent. An agent that cannot be made or fails outright gives an
        ``error`` run that says why, so its siblings still finish; what is not an
        ``AgentRun`` (a ``WorkflowRun``, a monitor's alerts) is recorded as one and saved."""
        agent, owned = None, name not in self._given or not _is_agent(self._given[name])
        try:
            agent = self._agent(name)
            result: Any = await _invoke(agent, task)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            result = exc
        finally:
            if owned and agent is not None and hasattr(agent, "aclose"):
                await agent.aclose()  # what the orchestrator made, it closes
        if isinstance(result, AgentRun):
            return result
        card = AGENTS.get(name)
        label = (type(agent).__name__ if agent is not None
                 else card.cls.split(":")[1] if card is not None else name)
        sub = _as_run(label, task, result)
        await self._save(sub)
        return sub

    def _agent(self, name: str) -> Any:
        """The agent for ``name``: the one given (or made by the function given), else one
        made from the router's table with the config's limits its class accepts."""
        given = self._given.get(name)
        if given is not None:
            return given if _is_agent(given) else given(self.lab)
        if name not in AGENTS:
            raise ConfigError(f"the router picked {name!r}, which has no agent here; pass "
                              f"agents={{{name!r}: ...}}", fields=("agents",))
        module, _, cls_name = AGENTS[name].cls.partition(":")
        try:
            cls = getattr(importlib.import_module(module), cls_name)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"the {name} agent ({AGENTS[name].cls}) is not available "
                              f"here ({exc}); pass agents={{{name!r}: ...}}",
                              fields=("agents",)) from exc
        cfg = self.config
        accepted = inspect.signature(cls).parameters
        kwargs = {key: value for key, value in (
            ("lab", self.lab), ("model", cfg.model), ("max_steps", cfg.agent_max_steps),
            ("max_seconds", cfg.agent_max_seconds), ("max_cost_usd", cfg.max_cost_usd))
            if value is not None and key in accepted}
        try:
            return cls(**{**kwargs, **cfg.agent_options.get(name, {})})
        except TypeError as exc:
            raise ConfigError(f"could not make {cls_name} from the orchestrator's settings "
                              f"({exc}); pass agents={{{name!r}: <a ready agent>}}",
                              fields=("agents",)) from exc

    async def _aggregate(self, run: AgentRun, task: str, plan: Plan,
                         outputs: dict[str, AgentRun], scope: Any) -> None:
        """One subtask: its output as is. Several: sections, or the model's merge."""
        subs = [outputs[s.id] for s in plan.subtasks]
        if len(subs) == 1:
            run.output = subs[0].output
            return
        sections = "\n\n".join(f"## {s.id}: {s.task}\n{output_text(outputs[s.id])}"
                               for s in plan.subtasks)
        if self.config.aggregate == "join":
            run.output = sections
            return
        prompt = AGGREGATE_PROMPT.format(task=task, results=sections)
        step = AgentStep(index=len(run.steps), model=run.model,
                         messages=[Message.user(prompt)])
        run.steps.append(step)
        spent, clock = scope.spent_usd, time.monotonic()
        completion = await self.lab.acomplete(prompt, self.config.model)
        step.completion, step.usage = completion, completion.usage
        step.latency_s, step.cost_usd = time.monotonic() - clock, scope.spent_usd - spent
        run.output = completion.text

    def _end(self, run: AgentRun, status: Any, error: str | None, started: float) -> None:
        run.status, run.error = status, error
        run.latency_s = time.monotonic() - started

    async def _save(self, run: AgentRun) -> None:
        if not self.config.save:
            return
        from aillm_lab.agents import store

        with contextlib.suppress(OSError):  # a full disk must not lose the run returned
            await asyncio.shield(asyncio.to_thread(
                store.save_run, self.lab.settings.home, run,
                redact=self.lab.tools.guard.redactor.redact_value))  # no key on disk


def _is_agent(obj: Any) -> bool:
    """An agent (it runs or checks), as opposed to a function that makes one."""
    return hasattr(obj, "arun") or hasattr(obj, "acheck")


async def _invoke(agent: Any, task: str) -> Any:
    """Run ``task`` on ``agent`` through the door it has: a ``WorkflowAgent`` gets the task
    as its input ``task`` when its workflow declares one (or declares none), else runs on
    its defaults; a ``MonitoringAgent`` checks now; every other agent runs the task."""
    workflow = getattr(agent, "workflow", None)
    if workflow is not None and hasattr(workflow, "declared_inputs"):
        declared = workflow.declared_inputs()
        return await agent.arun({"task": task} if declared is None or "task" in declared
                                else None)
    if not hasattr(agent, "arun"):
        return await agent.acheck()
    return await agent.arun(task)


def _as_run(agent: str, task: str, result: Any) -> AgentRun:
    """What an agent gave that is not an ``AgentRun``, recorded as one."""
    if isinstance(result, BaseException):
        return AgentRun(agent=agent, task=task, status="error",
                        error=f"{type(result).__name__}: {result}")
    if isinstance(result, list):  # a monitor's alerts
        text = "\n".join(map(str, result)) or "no alerts: every metric is within its threshold"
        return AgentRun(agent=agent, task=task, status="completed", output=text)
    status = getattr(result, "status", "completed")
    fields: dict[str, Any] = {"status": status if status in RUN_STATUSES else "error",
                              "output": getattr(result, "outputs", result),
                              "error": getattr(result, "error", None),
                              "latency_s": getattr(result, "latency_s", 0.0)}
    for key in ("id", "started_at"):
        if getattr(result, key, None) is not None:
            fields[key] = getattr(result, key)
    return AgentRun(agent=agent, task=task, **fields)


def output_text(run: AgentRun) -> str:
    """A sub-run's answer as text: a string as is, a result model by its main field."""
    value = run.output
    if value is None:
        return f"(no answer: {run.status}{': ' + run.error if run.error else ''})"
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        for name in ("answer", "narrative", "text", "summary", "code"):
            text = getattr(value, name, None)
            if isinstance(text, str) and text:
                return text
        return value.model_dump_json()
    return str(value)


def _with_context(subtask: Subtask, outputs: Mapping[str, AgentRun]) -> str:
    """The subtask's instruction, with the answers of the subtasks it depends on."""
    if not subtask.depends_on:
        return subtask.task
    context = "\n".join(f"[{d}] {output_text(outputs[d])[:4000]}" for d in subtask.depends_on)
    return f"{subtask.task}\n\nResults of the subtasks this one builds on:\n{context}"


def _model_id(model: str | Model | None) -> str:
    return model.id if isinstance(model, Model) else model or ""


def _config(config: OrchestratorConfig | None, options: dict[str, Any]) -> OrchestratorConfig:
    """The config, with ``options`` over it; a bad field is a ``ConfigError`` naming it."""
    try:
        if config is None:
            return OrchestratorConfig(**options)
        if not isinstance(config, OrchestratorConfig):
            raise ConfigError(f"config={type(config).__name__}: give an OrchestratorConfig "
                              f"or its fields as keywords", fields=("config",))
        return OrchestratorConfig(**{**dict(config), **options})
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        fields = tuple(str(e["loc"][0]) if e["loc"] else "config" for e in errors)
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}="
                             f"{e.get('input')!r}: {e['msg']}" for e in errors)
        raise ConfigError(f"bad Orchestrator config ({problems}); fields: "
                          f"{', '.join(OrchestratorConfig.model_fields)}",
                          fields=fields) from None
