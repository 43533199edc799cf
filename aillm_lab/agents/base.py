"""``Agent``: the one async loop every agent shares, and its doors (run, stream, fork, cancel).

A run is two tasks on the Lab's runner loop. The *body* does the steps (model call through
the Lab's gateway, tool calls through the Safety Guard, observations) inside
``lab.scope(run.id, budget_usd=max_cost_usd)``, so every model call is in the call log under
the run's id and a run budget refuses a call before it is sent. The *supervisor* owns the
limits: it waits for the body with ``max_seconds``, cancels it on ``agent.cancel()`` (from any
thread) and turns how the body ended into the run's ``status``. So a limit never loses the
trace: the caller always gets the partial ``AgentRun``. Only a cancellation from outside
(``task.cancel()``, Ctrl-C in a cell) is re-raised, after the run is marked ``cancelled`` and
kept as ``agent.last_run``.

Subclasses change what is said and judged, not how the loop runs: ``instructions`` (the
system text), ``initial_messages(run, memories)``, ``acheck_answer(run, text)`` (is a reply
without tool calls a final answer? async, so it may run tests or queries) and
``tools_for(run)`` (a run's own tools, e.g. over the data it was given), and two doors for
per-run state: ``aprepare(run, emit)`` (work before the first prompt, e.g. retrieval) and
``arestore(run, replayed)`` (a fork rebuilds that state from its replayed steps' ``state``;
see ``agents.fork``); both run in the body, so every limit covers them. A subclass whose
``arun`` takes more arguments (``tests=``, ``data=``) puts them in ``run.inputs``, starts the
run with ``_launch(run)`` and derives its own ``run = sync_twin(arun)``.
How tool calls travel is a ``ToolMode``, picked per run for its model: native tool calling
where the model has it, else the text protocol (``TextTools``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from aillm_lab.agents import memory_hook, prompts, store
from aillm_lab.agents.arguments import check_limits
from aillm_lab.agents.fork import fork_run, replayed_steps
from aillm_lab.agents.live import Emit, LiveRun
from aillm_lab.agents.modes import FINAL_TOOL, NativeTools, ToolMode, Verdict
from aillm_lab.agents.run import (
    AgentEvent,
    AgentRun,
    AgentStep,
    RunStatus,
    remember_agent,
)
from aillm_lab.agents.toolset import AgentTools, ToolsArg
from aillm_lab.errors import BudgetExceeded
from aillm_lab.llm.limits import UNSET
from aillm_lab.llm.registry import check_spec
from aillm_lab.llm.structured import json_schema, parse_output
from aillm_lab.llm.types import (
    Completion,
    GenerationParams,
    Message,
    ToolCall,
    ToolSpec,
    generation_params,
)
from aillm_lab.runtime import LoopRunner, cancel_and_wait, sync_twin
from aillm_lab.tools.base import ToolResult

if TYPE_CHECKING:
    from aillm_lab import Lab
    from aillm_lab.memory.long_term import LongTermMemory

ModelArg = str | Any | None  # a "provider:model" string or a Model
log = logging.getLogger(__name__)
_END = object()
REPEAT_RULE = "agent.repeat"  # the rule a repeated call is refused under (see allow_repeats)
PROGRESS_AFTER_S = 3.0  # a run shows a progress bar once it has lasted this long


class Agent:
    """A tool-using model loop with limits on steps, cost and time; see ``ReActAgent``.

    ``tools``: ``@al.tool`` tools, plain typed functions, names of built-ins (``"read_file"``)
    or a ``Toolbox``. ``output``: a pydantic model the final answer must validate against
    (the model submits it through a ``final_answer`` tool). ``memory``: a
    ``LongTermMemory`` (or True for ``lab.memory``) recalled into the context first; after
    a completed run the model picks up to ``remember`` salient facts, which are saved to it
    (0: recall only; see ``memory_hook``; ``run.remembered`` has their ids).
    ``max_repairs``: failed calls or answers in a row before the run ends with ``error``.
    ``allow_repeats``: run a call identical to an earlier one (same tool and arguments) again;
    off by default, because a model that repeats itself is stuck (small models loop on the
    same call until ``max_steps``): the repeat gets the earlier result back with a note
    instead, and counts as a failed call. Turn it on for tools whose answers change
    (a clock, a status to poll).
    ``progress``: a tqdm bar (``tqdm.auto``: a widget in Jupyter) with the steps taken out
    of ``max_steps``, shown only once a run has lasted ``PROGRESS_AFTER_S`` seconds (a number
    sets another threshold; False turns it off); short runs never build one.
    """

    system_prompt: str = prompts.REACT_SYSTEM

    def __init__(self, tools: ToolsArg = None, model: ModelArg = None, lab: Lab | None = None,
                 max_steps: int = 10, max_cost_usd: float | None = None,
                 max_seconds: float | None = None, output: type[BaseModel] | None = None,
                 memory: LongTermMemory | bool | None = None, *, system: str | None = None,
                 max_repairs: int = 3, params: GenerationParams | dict[str, Any] | None = None,
                 tool_mode: ToolMode | None = None, save: bool = True,
                 allow_repeats: bool = False, progress: bool | float = True,
                 remember: int = 3) -> None:
        check_limits(max_steps=max_steps, max_repairs=max_repairs, remember=remember,
                     max_cost_usd=max_cost_usd, max_seconds=max_seconds, progress=progress,
                     progress_default=PROGRESS_AFTER_S)
        if isinstance(model, str):  # a typo fails here, as Lab(model=...) does
            check_spec(model, "model")
        self._lab = lab
        self.model = model
        self.max_steps, self.max_cost_usd, self.max_seconds = max_steps, max_cost_usd, max_seconds
        self.output, self.memory, self.max_repairs = output, memory, max_repairs
        self.remember = remember
        self.system = system
        self.params = (params if isinstance(params, GenerationParams)
                       else generation_params({"max_tokens": 1024, **(params or {})}))
        self.tool_mode: ToolMode = tool_mode or NativeTools()
        self.save, self.allow_repeats = save, allow_repeats
        self.progress_after_s: float | None = (
            None if progress is False else PROGRESS_AFTER_S if progress is True
            else float(progress))
        self.tools = AgentTools(self.lab, tools)
        if output is not None:
            self.tools.add_spec(ToolSpec(name=FINAL_TOOL, parameters=json_schema(output),
                                         description=prompts.FINAL_TOOL_DESCRIPTION))
        self.last_run: AgentRun | None = None
        self._active: set[LiveRun] = set()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} tools={self.tools.names()} "
                f"max_steps={self.max_steps}>")

    @property
    def lab(self) -> Lab:
        """The Lab whose gateway, guard and home this agent uses (``al.default_lab()``)."""
        if self._lab is None:
            import aillm_lab  # the public door: agents sit beside core, not above it

            self._lab = aillm_lab.default_lab()
        return self._lab

    @property
    def runner(self) -> LoopRunner:
        return self.lab.runner

    # -- doors -------------------------------------------------------------------------------
    async def arun(self, task: str) -> AgentRun:
        """Work on ``task`` until a final answer or a limit; the run says which."""
        return await self._launch(AgentRun(task=task))

    async def astream(self, task: str) -> AsyncIterator[AgentEvent]:
        """Events as they happen; the last one is ``final`` and carries the ``AgentRun``."""
        live = self._start(AgentRun(task=task), self.model, None)
        async for event in self.runner.aiterate(lambda: self._events(live)):
            yield event

    async def _launch(self, run: AgentRun, model: ModelArg = None,
                      history: list[Message] | None = None) -> AgentRun:
        """Run ``run`` (its task and ``inputs`` set) under the limits on the runner loop."""
        live = self._start(run, model if model is not None else self.model, history)
        return await self.runner.arun(self._supervise(live))

    async def afork(self, run: AgentRun, step: int, model: ModelArg = None) -> AgentRun:
        """A new run that copies ``run``'s steps before ``step`` (no calls made for them)
        and continues live from there with ``model`` (default: this agent's)."""
        new, history = fork_run(run, step)  # the agent's state: ``arestore``, in the body
        return await self._launch(new, model, history)

    run = sync_twin(arun)
    stream = sync_twin(astream)
    fork = sync_twin(afork)

    def cancel(self) -> int:
        """End this agent's runs in flight with status ``cancelled`` (from any thread);
        returns how many were asked to stop. Each returns its partial run within ~1 s."""
        with self._lock:
            active = list(self._active)
        for live in active:
            live.cancel_requested = True
            task = live.task
            if task is not None and not task.done():
                live.loop.call_soon_threadsafe(task.cancel)
        return len(active)

    # -- hooks for subclasses ----------------------------------------------------------------
    def instructions(self) -> str:
        """The system text: the agent's role, and how to submit a structured answer."""
        text = self.system if self.system is not None else self.system_prompt
        if self.output is not None:
            text += "\n\n" + prompts.OUTPUT_NOTE.format(tool=FINAL_TOOL)
        return text

    def initial_messages(self, run: AgentRun, memories: list[str]) -> list[Message]:
        """The first step's messages: instructions, recalled memories, then the task."""
        system = self.instructions()
        if memories:
            system += "\n\n" + prompts.MEMORY_NOTE.format(
                memories="\n".join(f"- {m}" for m in memories))
        return [Message.system(system), Message.user(run.task)]

    async def aprepare(self, run: AgentRun, emit: Emit) -> None:
        """Work a run needs before its first prompt (retrieval, describing tables); it runs
        inside the limits (``max_seconds``, cancel, budget), and ``emit`` tells it as
        events of step 0 to whoever streams the run. Not called for a fork past step 0."""

    async def arestore(self, run: AgentRun, replayed: list[AgentStep]) -> None:
        """A fork's door: rebuild this agent's per-run state from the ``replayed`` steps
        (their ``state``, see ``agents.fork``) and ``run.inputs``, calling no model or tool;
        called once, inside the limits, before the fork's first live step."""

    prepare = sync_twin(aprepare)  # hooks: the loop awaits them; the twins keep one shape
    restore = sync_twin(arestore)

    def tools_for(self, run: AgentRun) -> AgentTools:
        """The tools this run may call: the agent's, unless a subclass adds its own."""
        return self.tools

    async def acheck_answer(self, run: AgentRun, text: str) -> Verdict:
        """Whether a reply without tool calls ends the run, and with what output; a
        subclass may check it (run the tests, the query) before accepting it. The sync
        twin lets a test ask the agent how it judges a reply."""
        return self.accept_text(text)

    check_answer = sync_twin(acheck_answer)

    def accept_text(self, text: str) -> Verdict:
        """The plain check: a non-empty text, or one that validates as ``output=``."""
        if self.output is None:
            return Verdict(output=text) if text.strip() else Verdict(repair=prompts.EMPTY_REPLY)
        try:
            return Verdict(output=parse_output(text, self.output))
        except Exception as exc:
            return Verdict(repair=prompts.BAD_OUTPUT.format(error=exc, tool=FINAL_TOOL))

    # -- the supervisor ------------------------------------------------------------------------
    def _start(self, run: AgentRun, model: ModelArg, history: list[Message] | None,
               emit: Emit | None = None) -> LiveRun:
        resolved = self.lab.model(model)
        run.agent, run.model = type(self).__name__, resolved.id
        remember_agent(run, self)
        self.last_run = run
        return LiveRun(run, resolved, self.tool_mode.for_model(resolved), history,
                     self.runner.loop, emit, self.progress_after_s)

    async def _supervise(self, live: LiveRun) -> AgentRun:
        """Run the body under the limits; always returns the run, except when cancelled
        from outside, which marks it cancelled and re-raises."""
        run, started = live.run, time.monotonic()
        live.bar.start(started)
        with self._lock:
            self._active.add(live)
        body = asyncio.ensure_future(self._body(live))
        live.task = body
        if live.cancel_requested:
            body.cancel()
        try:
            done, _ = await asyncio.wait({body}, timeout=self.max_seconds)
        except asyncio.CancelledError:
            await cancel_and_wait(body)
            self._end(live, "cancelled", prompts.CANCELLED.format(
                how="task.cancel() or a keyboard interrupt"), started)
            await self._save_run(run)
            raise
        finally:
            with self._lock:
                self._active.discard(live)
        if run.status == "completed" and (not done or body.cancelled()):
            await cancel_and_wait(body)  # stopped while saving facts: the answer stands
            log.warning("agent run %s: saving its facts to memory was cut short", run.id)
            self._end(live, "completed", None, started)
        elif not done:
            await cancel_and_wait(body)
            self._end(live, "timeout", prompts.TIMEOUT.format(seconds=self.max_seconds),
                      started)
        elif body.cancelled():
            self._end(live, "cancelled", prompts.CANCELLED.format(how="agent.cancel()"),
                      started)
        elif (exc := body.exception()) is not None:
            if isinstance(exc, BudgetExceeded):
                self._end(live, "budget", prompts.BUDGET.format(cap=self.max_cost_usd,
                                                                error=exc), started)
            else:
                self._end(live, "error", f"{type(exc).__name__}: {exc}", started)
        else:
            self._end(live, run.status, run.error, started)
        await self._save_run(run)
        return run

    async def _save_run(self, run: AgentRun) -> None:
        if not self.save:
            return
        # the guard's redactor (the Lab's keys, secret env vars, key formats): a trace keeps
        # tool arguments, results and answers, and no API key may be stored at rest
        redact = self.lab.tools.guard.redactor.redact_value
        try:  # shielded: a second Ctrl-C while the file is written must not lose the run
            await asyncio.shield(asyncio.to_thread(store.save_run, self.lab.settings.home, run,
                                                   redact=redact))
        except OSError as exc:  # a full disk must not lose the run the caller gets
            log.warning("agent run %s was not saved: %s", run.id, exc)

    def _end(self, live: LiveRun, status: RunStatus, error: str | None, started: float) -> None:
        run = live.run
        run.status, run.error = status, error
        run.latency_s = time.monotonic() - started
        live.bar.close(len(run.steps))
        if run.steps and error is not None and run.steps[-1].completion is None:
            run.steps[-1].error = error  # the step that was in flight
        if error is not None:
            live.send("error", step=len(run.steps), text=error)
        live.send("final", step=len(run.steps), run=run,
                  text=run.output if isinstance(run.output, str) else "")

    async def _events(self, live: LiveRun) -> AsyncIterator[AgentEvent]:
        """``astream``'s producer, on the runner loop: the run's events through a queue."""
        queue: asyncio.Queue[Any] = asyncio.Queue()
        live.emit = queue.put_nowait
        task = asyncio.ensure_future(self._supervise(live))
        task.add_done_callback(lambda _: queue.put_nowait(_END))
        try:
            while (event := await queue.get()) is not _END:
                yield event
                if event.type == "final":
                    return
            task.result()  # the supervisor failed without a final event: say why
        finally:
            if not task.done():
                task.cancel()
                await cancel_and_wait(task)

    # -- the body: steps -----------------------------------------------------------------------
    async def _body(self, live: LiveRun) -> None:
        run = live.run
        cap = UNSET if self.max_cost_usd is None else self.max_cost_usd
        with self.lab.scope(run.id, budget_usd=cap) as scope:
            messages = await self._first_messages(live)
            while True:
                if live.bar.due():
                    live.bar.show(len(run.steps), self.max_steps)
                if len(run.steps) >= self.max_steps:
                    run.status, run.error = "max_steps", prompts.MAX_STEPS.format(
                        steps=len(run.steps))
                    return
                step = AgentStep(index=len(run.steps), model=live.model.id,
                                 messages=list(messages))
                run.steps.append(step)
                live.send("step_start", step=step.index)
                spent, clock = scope.spent_usd, time.monotonic()
                try:
                    completion = await self._call_model(live, step)
                finally:
                    step.latency_s = time.monotonic() - clock
                step.completion, step.usage = completion, completion.usage
                step.cost_usd = self._cost(completion, scope.spent_usd - spent)
                if await self._observe(live, step, completion):
                    run.status = "completed"
                    await self._save_facts(live)
                    return
                if live.failures > self.max_repairs:
                    run.status, run.error = "error", prompts.GAVE_UP.format(
                        count=live.failures, error=live.last_failure)
                    return
                messages = step.history()

    async def _first_messages(self, live: LiveRun) -> list[Message]:
        """A fork's recorded history with the agent's state restored from the replayed
        steps, or a new run's first prompt after its preparation."""
        run = live.run
        if live.history is not None:
            await self.arestore(run, replayed_steps(run))
            return live.history
        await self.aprepare(run, live.put)
        return self.initial_messages(run, await self._recall(run.task))

    async def _call_model(self, live: LiveRun, step: AgentStep) -> Completion:
        messages, tools = live.mode.request(step.messages,
                                                 self.tools_for(live.run).specs())
        params = self._params_for(live.run)
        if live.emit is None:
            return await live.model.complete(messages, tools=tools, params=params)
        completion: Completion | None = None
        async for event in live.model.stream(messages, tools=tools, params=params):
            if event.type == "text" and event.text:
                live.send("token", step=step.index, text=event.text)
            elif event.type == "done":
                completion = event.completion
        if completion is None:
            raise RuntimeError(f"{live.model.id} ended its stream without a completion")
        return completion

    def _params_for(self, run: AgentRun) -> GenerationParams:
        """The step's generation settings. ``tool_choice="required"`` holds until a tool has
        run, then turns to ``"auto"`` so the model can answer (as the OpenAI Agents SDK's
        ``reset_tool_choice`` does); with ``output=`` it holds throughout, since the answer
        is itself a tool call. A model whose last turn only repeated earlier calls is stuck:
        its next turn may call no tool, so it answers from what it has."""
        last = run.steps[-2] if len(run.steps) > 1 else None  # [-1] is the step being made
        if (last is not None and self.output is None and last.tool_results
                and all(r.rule == REPEAT_RULE for r in last.tool_results)):
            return self.params.model_copy(update={"tool_choice": "none"})
        if (self.params.tool_choice == "required" and self.output is None
                and any(r.ok for s in run.steps for r in s.tool_results)):
            return self.params.model_copy(update={"tool_choice": "auto"})
        return self.params

    async def _observe(self, live: LiveRun, step: AgentStep, completion: Completion) -> bool:
        """Act on one answer: run its tool calls, or judge it as the final answer. True when
        the run is done; failures are counted so repairs stay bounded."""
        calls = live.mode.calls(completion)
        if not calls:
            verdict = await self.acheck_answer(live.run, completion.text)
            if verdict.repair is None:
                live.run.output = verdict.output
                return True
            step.observations.append(Message.user(verdict.repair))
            if verdict.failed:
                live.failed(verdict.repair)
            else:
                live.failures = 0
            return False
        for call in calls:
            live.send("tool_call", step=step.index, tool_call=call)
        final: Verdict | None = None

        async def one(call: ToolCall) -> ToolResult:
            nonlocal final
            earlier = None if self.allow_repeats else _earlier(live.run, call)
            if call.name == FINAL_TOOL and self.output is not None:
                final, result = _final_answer(call, self.output)
            elif earlier is not None:
                text = prompts.REPEATED.format(tool=call.name, result=earlier.content)
                result = ToolResult(name=call.name, call_id=call.id, ok=False, content=text,
                                    error=text, rule=REPEAT_RULE)
            else:
                result = await self.tools_for(live.run).ainvoke(call)
                result = result.model_copy(update={"value": None})  # the trace is redacted
            live.send("tool_result", step=step.index, tool_call=call, tool_result=result)
            return result

        if len(calls) == 1:  # the usual turn: no task and no gather (two loop passes)
            step.tool_results = [await one(calls[0])]
        else:
            step.tool_results = list(await asyncio.gather(*(one(c) for c in calls)))
        step.observations += [Message.tool(r.content, c.id, name=c.name)
                              for c, r in zip(calls, step.tool_results, strict=True)]
        if final is not None and final.repair is None:
            live.run.output = final.output
            return True
        if all(not r.ok for r in step.tool_results):
            live.failed(step.tool_results[-1].content)
        else:
            live.failures = 0
        return False

    def _cost(self, completion: Completion, spent: float) -> float | None:
        """What the budget was charged; None when the model's price is unknown."""
        provider, _, name = completion.model.partition(":")
        known = self.lab.gateway.pricing.price(provider, name, completion.usage)
        return None if known is None and spent == 0 else spent

    def _memory(self) -> LongTermMemory | None:
        if self.memory is None or self.memory is False:
            return None
        return self.lab.memory if self.memory is True else self.memory

    async def _recall(self, task: str) -> list[str]:
        memory = self._memory()
        return [] if memory is None else await memory_hook.recall(memory, task)

    async def _save_facts(self, live: LiveRun) -> None:
        """After the answer: the model's salient facts into memory, never failing the run
        (a refusal by the budget or a broken model is logged; the answer stands)."""
        memory = self._memory()
        if memory is None or self.remember == 0:
            return
        run = live.run
        try:
            with self.lab.scope(f"{run.id}/memory"):  # nested: the run's budget still caps
                run.remembered = await memory_hook.save_facts(
                    memory, live.model, run, limit=self.remember,
                    redact=self.lab.tools.guard.redactor.redact)
        except Exception as exc:
            log.warning("agent run %s: no facts saved to memory: %s: %s", run.id,
                        type(exc).__name__, exc)


def _final_answer(call: ToolCall, output: type[BaseModel]) -> tuple[Verdict, ToolResult]:
    """Validate a ``final_answer`` call; the error goes back to the model as the result."""
    try:
        value = output.model_validate(call.arguments)
    except Exception as exc:
        text = prompts.BAD_OUTPUT.format(error=exc, tool=FINAL_TOOL)
        return Verdict(repair=text), ToolResult(name=call.name, call_id=call.id, ok=False,
                                                content=text, error=text)
    return Verdict(output=value), ToolResult(name=call.name, call_id=call.id,
                                             content=prompts.ACCEPTED)


def _earlier(run: AgentRun, call: ToolCall) -> ToolResult | None:
    """The result of an earlier call in ``run`` with the same tool and arguments, if any
    (a repeat is never run again; see ``allow_repeats``)."""
    for step in run.steps:
        for old, result in zip(step.tool_calls, step.tool_results, strict=False):
            if old.name == call.name and old.arguments == call.arguments:
                return result
    return None
