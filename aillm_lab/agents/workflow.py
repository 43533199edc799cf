"""``WorkflowAgent``: runs a ``Workflow`` (a DAG of steps) durably on the Lab's runner loop.

How a run goes: the scheduler starts every step whose dependencies have finished, up to
``max_concurrency`` at once, so independent branches run concurrently. Each step renders its
templates from the inputs and the outputs before it, checks its ``when:``, and hashes what
it is about to do (its definition and rendered inputs). After it finishes, its output is
checkpointed to ``lab.db`` in one transaction (``_workflow_store``). Running again with the
same ``run_id`` (after a crash, a SIGKILL, a kernel restart) resumes: a step whose
checkpoint has the same hash is restored, not run again; one whose inputs changed runs.

Failures: a step tries ``retry.attempts`` times with backoff, each try under ``timeout_s``;
a failed step blocks the steps that need it while independent branches go on; the run ends
``error``. All model calls run in ``lab.scope(run_id, budget_usd=...)``, so they are in the
call log under the run id and the budget (``max_cost_usd``, else the workflow's
``budget_usd``, less what earlier resumes spent) refuses a call before it is sent; a
refused call ends the run ``budget`` without starting more steps. ``max_seconds`` ends it
``timeout`` and ``cancel()`` ``cancelled``; finished steps stay checkpointed either way.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aillm_lab.agents._workflow_store import Checkpoint, CheckpointStore
from aillm_lab.agents.run import RunStatus
from aillm_lab.agents.workflow_imports import AGENTS, import_object
from aillm_lab.agents.workflow_run import StepRun, WorkflowRun
from aillm_lab.agents.workflow_spec import (
    AgentRunStep,
    CallStep,
    LlmStep,
    RetryPolicy,
    StepBase,
    ToolStep,
    Workflow,
)
from aillm_lab.agents.workflow_template import TemplateError, render_tree
from aillm_lab.errors import BudgetExceeded, ConfigError, SafetyViolation
from aillm_lab.llm.limits import UNSET
from aillm_lab.llm.types import Message
from aillm_lab.runtime import Lifecycle, LoopRunner, cancel_and_wait, sync_twin

if TYPE_CHECKING:
    from aillm_lab import Lab

log = logging.getLogger(__name__)
FINAL = (SafetyViolation, BudgetExceeded, ConfigError, TemplateError)  # never retried


class WorkflowAgent(Lifecycle):
    """Runs ``workflow`` (a ``Workflow`` or a YAML path) with checkpoints; see the module.
    A path is read with ``Workflow.from_yaml``'s defaults (it imports nothing it names): for
    ``call:`` steps pass ``Workflow.from_yaml(path, functions={...})`` instead.

    ``model``: the model for ``llm:`` and ``agent:`` steps that name none (default: the
    Lab's). ``max_cost_usd``: the run's budget (default: the workflow's ``budget_usd``).
    ``max_seconds``: the whole run's time limit. ``checkpoint=False`` keeps nothing in
    ``lab.db`` (no resume). ``max_concurrency`` overrides the workflow's.
    """

    def __init__(self, workflow: Workflow | str | Path, *, lab: Lab | None = None,
                 model: str | Any | None = None, max_cost_usd: float | None = None,
                 max_seconds: float | None = None, checkpoint: bool = True,
                 max_concurrency: int | None = None) -> None:
        if isinstance(workflow, str | Path):
            workflow = Workflow.from_yaml(workflow)
        if not isinstance(workflow, Workflow):
            raise ConfigError(f"WorkflowAgent takes a Workflow or a YAML path, not "
                              f"{type(workflow).__name__}.", fields=("workflow",))
        for name, value, low in (("max_cost_usd", max_cost_usd, 0.0),
                                 ("max_seconds", max_seconds, 0.0),
                                 ("max_concurrency", max_concurrency, 1)):
            if value is not None and (isinstance(value, bool) or not value >= low
                                      or (name == "max_seconds" and value == 0)):
                raise ConfigError(f"{name}={value!r}: give a number >= {low} (> 0 for "
                                  f"max_seconds), or None.", fields=(name,))
        self.workflow, self.model = workflow, model
        self.max_cost_usd, self.max_seconds = max_cost_usd, max_seconds
        self.checkpoint = checkpoint
        self.max_concurrency = max_concurrency or workflow.max_concurrency
        self.last_run: WorkflowRun | None = None
        self._lab = lab
        self._store: CheckpointStore | None = None
        self._definitions = {s.id: json.dumps(s.definition(), sort_keys=True, default=str)
                             for s in workflow.steps}
        self._specs: dict[str, StepBase] = {s.id: s for s in workflow.steps}
        self._active: set[_Live] = set()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"<WorkflowAgent {self.workflow.name!r} steps={len(self.workflow.steps)} "
                f"checkpoint={self.checkpoint}>")

    @property
    def lab(self) -> Lab:
        """The Lab whose gateway, tools, guard and ``lab.db`` this agent uses."""
        if self._lab is None:
            import aillm_lab  # the public door: agents sit beside core, not above it

            self._lab = aillm_lab.default_lab()
        return self._lab

    @property
    def runner(self) -> LoopRunner:
        return self.lab.runner

    # -- doors -------------------------------------------------------------------------------
    async def arun(self, inputs: Mapping[str, Any] | None = None,
                   run_id: str | None = None) -> WorkflowRun:
        """Run the workflow on ``inputs``; with the ``run_id`` of an earlier run, resume it
        (its finished steps whose inputs are unchanged are restored, not run again)."""
        bound = self.workflow.bind(inputs)
        try:
            bound = json.loads(json.dumps(bound))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"inputs must be JSON data (they are hashed and stored): {exc}",
                              fields=("inputs",)) from None
        if run_id is not None and (not isinstance(run_id, str) or not run_id.strip()):
            raise ConfigError(f"run_id={run_id!r}: give a non-empty string, or None for a "
                              "new id.", fields=("run_id",))
        run = WorkflowRun(id=run_id or f"wf-{uuid.uuid4().hex[:12]}",
                          workflow=self.workflow.name, inputs=bound,
                          steps=[StepRun(id=s.id, kind=s.kind) for s in self.workflow.steps],
                          started_at=datetime.now(UTC))
        self.last_run = run
        return await self.runner.arun(self._supervise(_Live(run)))

    run = sync_twin(arun)

    def cancel(self) -> int:
        """End this agent's runs in flight with status ``cancelled`` (from any thread);
        finished steps stay checkpointed. Returns how many were asked to stop."""
        with self._lock:
            active = list(self._active)
        for live in active:
            live.cancel_requested = True
            if live.task is not None and live.loop is not None:
                live.loop.call_soon_threadsafe(live.task.cancel)
        return len(active)

    async def aclose(self) -> None:
        """Close this agent's connection to ``lab.db``; idempotent."""
        store, self._store = self._store, None
        if store is not None:
            await self.runner.arun(store.aclose())

    # -- the supervisor ------------------------------------------------------------------------
    async def _supervise(self, live: _Live) -> WorkflowRun:
        run, started = live.run, time.monotonic()
        live.loop = asyncio.get_running_loop()
        body = asyncio.ensure_future(self._body(live))
        live.task = body
        with self._lock:
            self._active.add(live)
        if live.cancel_requested:
            body.cancel()
        try:
            done, _ = await asyncio.wait({body}, timeout=self.max_seconds)
        except asyncio.CancelledError:
            await cancel_and_wait(body)
            await self._end(live, "cancelled", "cancelled by task.cancel() or a keyboard "
                            "interrupt; finished steps are checkpointed", started)
            raise
        finally:
            with self._lock:
                self._active.discard(live)
        if not done:
            await cancel_and_wait(body)
            await self._end(live, "timeout", f"the run took longer than max_seconds="
                            f"{self.max_seconds:g}; finished steps are checkpointed", started)
        elif body.cancelled():
            await self._end(live, "cancelled", "cancelled by agent.cancel(); finished steps "
                            "are checkpointed", started)
        elif (exc := body.exception()) is not None:
            if isinstance(exc, ConfigError):  # a bad run_id or inputs: the caller's to fix
                raise exc
            await self._end(live, "error", f"{type(exc).__name__}: {exc}", started)
        else:
            await self._end(live, *body.result(), started)
        return run

    async def _end(self, live: _Live, status: RunStatus, error: str | None,
                   started: float) -> None:
        run = live.run
        run.status, run.error = status, error
        run.latency_s = time.monotonic() - started
        for rec in run.steps:
            if rec.status == "running":
                rec.status, rec.error = "cancelled", rec.error or f"stopped: {status}"
        if self._store is not None and live.begun:
            outputs = json.dumps(run.outputs, ensure_ascii=False)
            try:  # shielded: a second Ctrl-C must not lose the run's final state
                await asyncio.shield(self._store.finish(run.id, status, outputs, error))
            except Exception as exc:  # the caller's run matters more than this row
                log.warning("workflow run %s: its final state was not stored: %r", run.id, exc)

    # -- the body ------------------------------------------------------------------------------
    async def _body(self, live: _Live) -> tuple[RunStatus, str | None]:
        run, wf = live.run, self.workflow
        if self.checkpoint:
            if self._store is None:
                self._store = CheckpointStore(self.lab.settings.db_path, self.runner)
                close_with = getattr(self.lab, "close_with", None)
                if close_with is not None:  # the connection closes with the Lab
                    close_with(self)
            live.prior = await self._store.begin(run.id, wf.name,
                                                 json.dumps(run.inputs, sort_keys=True))
            live.begun = True
        run.resumed = any(c.status == "completed" for c in live.prior.values())
        cap = self.max_cost_usd if self.max_cost_usd is not None else wf.budget_usd
        if cap is not None:  # the budget covers every resume of the run
            cap = max(0.0, cap - sum(c.cost_usd or 0.0 for c in live.prior.values()
                                     if c.status == "completed"))
        live.context = {"inputs": run.inputs, "steps": {}}
        live.records = {r.id: r for r in run.steps}
        with self.lab.scope(run.id, budget_usd=UNSET if cap is None else cap) as scope:
            live.budget = scope.budget
            await self._schedule(live)
        if live.stop is not None:
            return "budget", live.stop
        if live.failure is not None:
            return "error", live.failure
        try:
            run.outputs = self._outputs(live)
        except TemplateError as exc:
            return "error", f"outputs: {exc}"
        return "completed", None

    async def _schedule(self, live: _Live) -> None:
        """Start each step when what it needs has finished, ``max_concurrency`` at a time."""
        wf = self.workflow
        waiting = {s.id: len(wf.needs(s.id)) for s in wf.steps}
        dependents: dict[str, list[str]] = {s.id: [] for s in wf.steps}
        for s in wf.steps:
            for need in wf.needs(s.id):
                dependents[need].append(s.id)
        ready = deque(sid for sid, n in waiting.items() if n == 0)
        running: set[asyncio.Task[str]] = set()
        loop = asyncio.get_running_loop()
        try:
            while ready or running:
                while ready and len(running) < self.max_concurrency and live.stop is None:
                    sid = ready.popleft()
                    running.add(loop.create_task(self._step(live, sid), name=f"wf:{sid}"))
                if not running:
                    break
                done, running = await asyncio.wait(running,
                                                   return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    for dep in dependents[task.result()]:
                        waiting[dep] -= 1
                        if waiting[dep] == 0:
                            ready.append(dep)
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    async def _step(self, live: _Live, sid: str) -> str:
        """Run, restore, skip or block one step; always returns its id (failures are in
        its record), so the scheduler can move on."""
        step, rec, ctx = self._specs[sid], live.records[sid], live.context
        compiled = self.workflow.compiled(sid)
        blocker = next((n for n in self.workflow.needs(sid) if _blocks(live.records[n])),
                       None)
        if blocker is not None:
            rec.status = "skipped"
            rec.error = f"not run: it needs steps.{blocker}, which {_how(live.records[blocker])}"
            return self._publish(live, rec)
        try:
            when = compiled.get("when")
            if when is not None and not (when if isinstance(when, bool) else when.holds(ctx)):
                rec.status = "skipped"
                return self._publish(live, rec)
            inputs = {f: render_tree(compiled[f], ctx) for f in step.templated}
        except TemplateError as exc:
            return await self._failed(live, rec, ConfigError(
                f"step {sid!r}: {exc}", fields=(f"steps.{sid}",)))
        try:
            rec.input_hash = self._hash(step, inputs)
        except Exception as exc:  # the step's model cannot be resolved here, say
            return await self._failed(live, rec, exc)
        prior = live.prior.get(sid)
        if prior is not None and prior.status == "completed" \
                and prior.input_hash == rec.input_hash:
            return self._restore(live, rec, prior)
        rec.status, rec.started_at = "running", datetime.now(UTC)
        clock = time.monotonic()
        try:
            output, rec.cost_usd = await self._attempts(live, step, rec, inputs)
            text = _json_text(output, sid)
        except asyncio.CancelledError:
            rec.status, rec.error = "cancelled", "cancelled while running"
            raise
        except Exception as exc:
            rec.finished_at, rec.duration_s = datetime.now(UTC), time.monotonic() - clock
            return await self._failed(live, rec, exc)
        rec.finished_at, rec.duration_s = datetime.now(UTC), time.monotonic() - clock
        rec.status, rec.error, rec.output = "completed", None, json.loads(text)
        if self._store is not None and self.checkpoint:
            await asyncio.shield(self._store.save(live.run.id, rec, text))
        return self._publish(live, rec)

    async def _attempts(self, live: _Live, step: StepBase, rec: StepRun,
                        inputs: dict[str, Any]) -> tuple[Any, float | None]:
        """The step's tries under its retry policy, each within ``timeout_s``."""
        policy: RetryPolicy = step.retry
        for attempt in range(1, policy.attempts + 1):
            rec.attempts = attempt
            try:
                async with asyncio.timeout(step.timeout_s) as limit:
                    return await self._execute(live, step, inputs)
            except FINAL:
                raise
            except TimeoutError as exc:
                error: Exception = exc
                if limit.expired():
                    error = TimeoutError(f"step {step.id!r} timed out after "
                                         f"timeout_s={step.timeout_s:g}")
            except Exception as exc:
                error = exc
            if attempt == policy.attempts:
                raise error
            rec.error = f"try {attempt} failed: {type(error).__name__}: {error}"
            log.info("workflow %s step %s: %s", live.run.id, step.id, rec.error)
            await asyncio.sleep(policy.delay(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _execute(self, live: _Live, step: StepBase,
                       inputs: dict[str, Any]) -> tuple[Any, float | None]:
        """One try of one step: (its output, its cost in USD or None when unknown)."""
        if isinstance(step, CallStep):
            fn, args = step.fn, inputs["args"]
            if inspect.iscoroutinefunction(fn):
                out = await fn(**args)
            elif step.inline:
                out = fn(**args)
            else:
                out = await asyncio.to_thread(fn, **args)
            if inspect.isawaitable(out):
                out = await out
            return out, 0.0
        if isinstance(step, ToolStep):
            result = await self.lab.tools.acall(step.tool, **inputs["args"])
            return {"text": result.content}, 0.0
        if isinstance(step, LlmStep):
            return await self._llm(step, inputs)
        assert isinstance(step, AgentRunStep)
        return await self._agent(live, step, inputs["task"])

    async def _llm(self, step: LlmStep, inputs: dict[str, Any]) -> tuple[Any, float | None]:
        from aillm_lab.llm.structured import complete_structured

        model = self.lab.model(step.model or self.model)
        system = inputs.get("system")
        messages = [*([Message.system(str(system))] if system else []),
                    Message.user(str(inputs["llm"]))]
        if step.output is not None:
            completion = await complete_structured(model, messages, step.output, step.params)
        else:
            completion = await model.complete(messages, params=step.params)
        provider, _, name = completion.model.partition(":")
        cost = self.lab.gateway.pricing.price(provider, name, completion.usage)
        data = completion.output if step.output is not None else None
        return {"text": completion.text, "data": data, "model": completion.model}, cost

    async def _agent(self, live: _Live, step: AgentRunStep,
                     task: Any) -> tuple[Any, float | None]:
        """An agent run as a step, capped at what is left of the run's budget; its spend is
        then taken off that budget (the agent's calls run under its own run id)."""
        agent = step.agent
        left = live.budget.remaining_usd if live.budget is not None else None
        if isinstance(agent, str):
            cls = import_object(AGENTS.get(agent, agent))
            agent = cls(tools=step.tools, model=step.model or self.model, lab=self.lab,
                        max_steps=step.max_steps, max_cost_usd=left)
        run = await agent.arun(str(task))
        cost = run.cost_usd
        if cost and live.budget is not None and live.budget.cap_usd is not None:
            live.budget.cap_usd = max(0.0, live.budget.cap_usd - cost)
        if run.status == "budget":
            raise BudgetExceeded(f"agent run {run.id}: {run.error}")
        if run.status != "completed":
            raise RuntimeError(f"agent run {run.id} ended {run.status}: {run.error}")
        out = run.output
        data = out.model_dump(mode="json") if hasattr(out, "model_dump") else out
        text = out if isinstance(out, str) else json.dumps(data, default=str)
        return {"text": text, "data": None if isinstance(out, str) else data,
                "run_id": run.id}, cost

    # -- bookkeeping ---------------------------------------------------------------------------
    def _hash(self, step: StepBase, inputs: dict[str, Any]) -> str:
        model = None
        if isinstance(step, LlmStep | AgentRunStep):
            model = self.lab.model(step.model or self.model).id
        blob = json.dumps([self._definitions[step.id], model, inputs], sort_keys=True,
                          default=str, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _restore(self, live: _Live, rec: StepRun, prior: Checkpoint) -> str:
        rec.status, rec.output, rec.cost_usd = "restored", prior.value(), prior.cost_usd
        return self._publish(live, rec)

    async def _failed(self, live: _Live, rec: StepRun, exc: BaseException) -> str:
        tries = f" (after {rec.attempts} tries)" if rec.attempts > 1 else ""
        rec.status, rec.error = "failed", f"{type(exc).__name__}: {exc}{tries}"
        if isinstance(exc, BudgetExceeded) and live.stop is None:
            live.stop = f"step {rec.id!r}: {exc}"
        elif live.failure is None:
            live.failure = f"step {rec.id!r} failed: {rec.error}"
        if self._store is not None and self.checkpoint and rec.input_hash is not None:
            await asyncio.shield(self._store.save(live.run.id, rec, None))
        return self._publish(live, rec)

    def _publish(self, live: _Live, rec: StepRun) -> str:
        live.context["steps"][rec.id] = {"output": rec.output, "status": rec.status}
        return rec.id

    def _outputs(self, live: _Live) -> dict[str, Any]:
        compiled = self.workflow.compiled_outputs()
        if compiled is not None:
            return render_tree(compiled, live.context)
        return {sid: live.records[sid].output for sid in self.workflow.leaves()}


class _Live:
    """One run in flight: its records, template context, checkpoints found and stop state."""

    def __init__(self, run: WorkflowRun) -> None:
        self.run = run
        self.records: dict[str, StepRun] = {}
        self.context: dict[str, Any] = {}
        self.prior: dict[str, Checkpoint] = {}
        self.begun = False
        self.budget: Any = None
        self.stop: str | None = None  # why no new step may start (the budget ran out)
        self.failure: str | None = None  # the first step that failed
        self.task: asyncio.Future[Any] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.cancel_requested = False


def _blocks(rec: StepRun) -> bool:
    """A step that failed (or was not run because of one) blocks what needs it; one whose
    ``when`` was false does not: its output is None."""
    return rec.status in ("failed", "cancelled") or (
        rec.status == "skipped" and rec.error is not None)


def _how(rec: StepRun) -> str:
    return "failed" if rec.status == "failed" else f"was {rec.status}"


def _json_text(output: Any, sid: str) -> str:
    """The output as JSON text: what is checkpointed and what later steps see, so a
    resumed run and a fresh one give the same values."""
    try:
        return json.dumps(output, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"step {sid!r} returned {type(output).__name__} that is not JSON "
                          f"data ({exc}); return dicts, lists, strings, numbers, booleans or "
                          "None.", fields=(f"steps.{sid}",)) from None


__all__ = ["Workflow", "WorkflowAgent", "WorkflowRun"]
