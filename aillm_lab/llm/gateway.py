"""The gateway: every model call passes here for limits, retries, budgets, fallbacks and logs.

``Gateway`` is one per Lab and holds the per-model limiters, the budgets and two hooks (the
response store and the call log). ``GatewayModel`` wraps a ``Model`` so callers see a plain
``Model``. One call goes: store lookup → for each model (the asked one, then fallbacks):
reserve the worst-case cost, take a concurrency slot and RPM/TPM tokens, send, retry
retryable errors with backoff → settle the real cost → save to the store → one call-log row.

Money rule: typed errors (a provider's error response, a model refusing before sending) cost
0; outcomes the gateway cannot see (its own timeouts, cancellation, an abandoned stream,
unexpected exceptions) are charged the reserved worst case, so a budget is never undercounted.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from aillm_lab.config import LabSettings, ModelLimits
from aillm_lab.errors import (
    AillmError,
    ModelNotAvailable,
    ProviderError,
    RateLimited,
)
from aillm_lab.llm.base import Model, OutputSpec
from aillm_lab.llm.calllog import CallRecord
from aillm_lab.llm.gateway_model import GatewayModel, aclose_stream, anext_or_none, next_event
from aillm_lab.llm.limits import (
    UNSET,
    Budget,
    Clock,
    ModelLimiter,
    ProviderTimeout,
    Reservation,
    Run,
    Runs,
    Sleep,
    backoff_delay,
    estimate_input_tokens,
    reserve,
    within,
)
from aillm_lab.llm.pricing import Pricing
from aillm_lab.llm.request_key import public_url, request_hash
from aillm_lab.llm.store import Recorded, as_completion, as_events, describe_request
from aillm_lab.llm.types import Completion, GenerationParams, Message, StreamEvent, ToolSpec, Usage

__all__ = ["Gateway", "GatewayModel", "ProviderTimeout", "StoreHook", "public_url",
           "request_hash"]
T = TypeVar("T")
log = logging.getLogger(__name__)
OnRecord = Callable[[CallRecord], object]  # may return an awaitable; failures are logged
_Opened = tuple[AsyncIterator[StreamEvent], StreamEvent | None, float | None]


class StoreHook(Protocol):
    """What the gateway needs of its ``store``: a ``ResponseStore`` or ``TieredStore``
    (``llm/store.py``), or a test's own; a protocol, so the gateway does not depend on SQLite.

    ``lookup`` returns what was saved under ``key`` (a ``Completion``, or the events of a
    stream) or None, and may raise ``ReplayMiss``; ``save`` keeps a finished answer. A store
    whose ``mode`` starts with ``"replay"`` has its hits logged as replay hits. A store may
    say ``reads = False`` or ``writes = False`` (e.g. mode "off") to be skipped per call.
    """

    async def lookup(self, key: str, *, stream: bool, describe: str = "") -> Recorded | None:
        ...

    async def save(self, key: str, value: Recorded) -> Any: ...


class Gateway:
    """Limits, retries, budgets, fallbacks and logging for every model call of one Lab.

    ``limits`` maps ``"provider:model"`` to ``ModelLimits`` (others get ``default_limits``).
    ``budget_usd`` caps the Lab; ``run_budget_usd`` caps each ``run()`` block. ``on_record``
    receives one ``CallRecord`` per call; ``store`` answers repeats. ``clock``, ``sleep`` and
    ``seed`` make limits and backoff testable on fake time.
    """

    def __init__(self, *, limits: Mapping[str, ModelLimits] | None = None,
                 default_limits: ModelLimits | None = None, budget_usd: float | None = None,
                 run_budget_usd: float | None = None, request_timeout_s: float | None = 300.0,
                 pricing: Pricing | None = None, on_record: OnRecord | None = None,
                 store: StoreHook | None = None, run_id: str | None = None,
                 clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep,
                 seed: int | None = None) -> None:
        self.limits = dict(limits or {})
        self.default_limits = default_limits or ModelLimits()
        self.budget = Budget(budget_usd, "Lab")
        self.runs = Runs(run_id or f"lab-{uuid.uuid4().hex[:8]}", run_budget_usd)
        self.request_timeout_s = request_timeout_s
        self.pricing = pricing or Pricing()
        self.on_record = on_record
        self.store = store
        self._clock, self._sleep = clock, sleep
        self._rng = random.Random(seed)
        self._limiters: dict[str, ModelLimiter] = {}
        self._sample: contextvars.ContextVar[int] = contextvars.ContextVar(
            "gateway_sample", default=0)

    @classmethod
    def from_settings(cls, settings: LabSettings, **kwargs: Any) -> Gateway:
        """A gateway with the settings' limits, budgets and timeout; ``kwargs`` add hooks."""
        return cls(limits=settings.limits, budget_usd=settings.budget_usd,
                   run_budget_usd=settings.run_budget_usd,
                   request_timeout_s=settings.request_timeout_s, **kwargs)

    def __repr__(self) -> str:
        return f"<Gateway run={self.runs.current_id!r} {self.budget!r}>"

    def wrap(self, model: Model, fallbacks: Sequence[Model] = ()) -> GatewayModel:
        return GatewayModel(model, self, fallbacks)

    def limits_for(self, model_id: str) -> ModelLimits:
        return self.limits.get(model_id) or self.default_limits

    def limiter(self, model_id: str) -> ModelLimiter:
        """The one limiter of a ``provider:model``, created on first use."""
        limiter = self._limiters.get(model_id)
        if limiter is None:
            limiter = self._limiters[model_id] = ModelLimiter(
                self.limits_for(model_id), clock=self._clock, sleep=self._sleep)
        return limiter

    def run(self, run_id: str | None = None, budget_usd: float | None = UNSET
            ) -> AbstractContextManager[Run]:
        """``with gateway.run("exp-1", budget_usd=0.5):`` calls inside also count against
        this run's budget (default ``run_budget_usd``); calls outside count against the Lab
        budget only. Works in sync and async code; the run follows the context into the
        runner loop."""
        return self.runs.open(run_id, budget_usd)

    @contextmanager
    def sample(self, index: int) -> Iterator[None]:
        """Mark calls as sample ``index`` of a repeated request, so each caches apart."""
        token = self._sample.set(index)
        try:
            yield
        finally:
            self._sample.reset(token)

    # -- one call ---------------------------------------------------------------------------
    async def complete(self, model: GatewayModel, messages: Sequence[Message],
                       tools: Sequence[ToolSpec] | None, output: OutputSpec,
                       params: GenerationParams) -> Completion:
        call = self._new_call(model, messages, tools, output, params, stream=False)
        try:
            hit = await self._lookup(call)
            if hit is not None:
                completion = as_completion(hit)
                completion = completion.model_copy(update={"latency_s": call.elapsed()})
                await self._record(call, usage=completion.usage, cost=0.0)
                return completion
            completion, limiter, hold = await self._send(
                call, call.candidates,
                functools.partial(_answer, messages, tools, output, params))
            cost = self._settle(call, limiter, hold, completion.usage)
            if completion.latency_s is None:  # a fresh object from the provider: ours to set
                completion.latency_s = call.elapsed()
        except BaseException as exc:
            await self._record(call, error=exc)
            raise
        await self._record(call, usage=completion.usage, cost=cost)
        await self._save(call, completion)
        return completion

    async def stream(self, model: GatewayModel, messages: Sequence[Message],
                     tools: Sequence[ToolSpec] | None, output: OutputSpec,
                     params: GenerationParams) -> AsyncIterator[StreamEvent]:
        call = self._new_call(model, messages, tools, output, params, stream=True)
        try:
            hit = await self._lookup(call)
        except BaseException as exc:
            await self._record(call, error=exc)
            raise
        if hit is not None:
            async with contextlib.aclosing(self._replay(call, hit)) as replay:
                async for event in replay:
                    yield event
            return
        try:
            (agen, first, deadline), limiter, hold = await self._send(
                call, call.candidates,
                lambda m, total: self._open(m, total, messages, tools, output, params))
        except BaseException as exc:
            await self._record(call, error=exc)
            raise
        events: list[StreamEvent] = []
        keep = self.store is not None and getattr(self.store, "writes", True)
        usage: Usage | None = None
        error: BaseException | None = None
        done = False
        try:
            event = first
            while event is not None:  # from here on nothing is retried: text was shown
                call.ttft = call.elapsed() if call.ttft is None else call.ttft
                usage = event.usage or (event.completion.usage if event.completion else usage)
                done = event.type == "done"
                if keep:
                    events.append(event)
                yield event
                event = await next_event(agen, deadline, call.model or call.requested)
        except BaseException as exc:
            if not (done and isinstance(exc, GeneratorExit)):  # closed after "done": fine
                error = exc
            raise
        finally:
            await aclose_stream(agen)
            if error is None:
                cost = self._settle(call, limiter, hold, usage)
                await self._record(call, usage=usage, cost=cost)
                await self._save(call, events)
            else:
                hold.settle(None)  # tokens may have been billed; charge the worst case
                limiter.release(call.tokens, None)
                await self._record(call, error=error, usage=usage)

    async def embed(self, model: GatewayModel, texts: Sequence[str]) -> list[list[float]]:
        """Limits and retries for embeddings; no fallbacks (vectors would not compare)."""
        messages = [Message.user(t) for t in texts]
        call = self._new_call(model, messages, None, None, GenerationParams(), stream=False)
        call.max_tokens, call.tokens = 0, call.input_tokens
        try:
            vectors, limiter, hold = await self._send(
                call, [model.inner],
                lambda m, total: within(m.embed(texts), total, "embedding", m))
        except BaseException as exc:
            await self._record(call, error=exc)
            raise
        hold.settle(None)  # embed() reports no usage: charge the estimate we reserved
        limiter.release(call.tokens, None)
        limiter.concurrency.on_success()
        await self._record(call)
        return vectors

    # -- steps ------------------------------------------------------------------------------
    def _new_call(self, model: GatewayModel, messages: Sequence[Message],
                  tools: Sequence[ToolSpec] | None, output: OutputSpec,
                  params: GenerationParams, stream: bool) -> _CallState:
        inner = model.inner
        key = request_hash(inner.provider, inner.name, messages, base_url=inner.base_url,
                           tools=tools, output=output, params=params,
                           sample=self._sample.get())
        run = self.runs.current
        budgets = (self.budget,) if run is None else (self.budget, *run.budgets)
        candidates = (inner, *model.fallbacks)
        capped = any(b.cap_usd is not None for b in budgets)
        # the estimate sizes a budget hold and a TPM charge; with neither it has no reader,
        # and on a growing agent history it is a walk over every message each step
        counted = capped or any(self.limits_for(m.id).tpm for m in candidates)
        input_tokens = estimate_input_tokens(messages, tools, output) if counted else 0
        return _CallState(requested=inner, candidates=candidates, key=key,
                          run_id=self.runs.current_id, budgets=budgets,
                          capped=capped, stream=stream,
                          input_tokens=input_tokens, max_tokens=params.max_tokens,
                          tokens=input_tokens + params.max_tokens, started=self._clock(),
                          clock=self._clock, messages=messages)

    async def _lookup(self, call: _CallState) -> Recorded | None:
        if self.store is None or not getattr(self.store, "reads", True):
            return None
        describe = describe_request(call.requested.provider, call.requested.name,
                                    call.messages)
        hit = await self.store.lookup(call.key, stream=call.stream, describe=describe)
        if hit is not None:
            replay = str(getattr(self.store, "mode", "")).startswith("replay")
            call.replay_hit, call.cache_hit = replay, not replay
            call.attempts = 0
        return hit

    async def _replay(self, call: _CallState, hit: Recorded) -> AsyncIterator[StreamEvent]:
        events = as_events(hit)
        error: BaseException | None = None
        try:
            for event in events:
                call.ttft = call.elapsed() if call.ttft is None else call.ttft
                yield event
        except BaseException as exc:
            error = exc
            raise
        finally:
            final = events[-1].completion if events else None
            await self._record(call, error=error, usage=final.usage if final else None,
                               cost=0.0)

    async def _open(self, model: Model, total: float | None, messages: Sequence[Message],
                    tools: Sequence[ToolSpec] | None, output: OutputSpec,
                    params: GenerationParams) -> _Opened:
        """Start a stream and wait for its first event, within the TTFT and total limits."""
        ttft = self.limits_for(model.id).ttft_timeout_s
        deadline = None if total is None else asyncio.get_running_loop().time() + total
        first_wait = total if ttft is None else ttft if total is None else min(ttft, total)
        agen = aiter(model.stream(messages, tools=tools, output=output, params=params))
        try:
            first = await within(anext_or_none(agen), first_wait, "first token", model)
        except BaseException:
            await aclose_stream(agen)
            raise
        return agen, first, deadline

    def _send(self, call: _CallState, models: Sequence[Model],
              send: Callable[[Model, float | None], Awaitable[T]],
              ) -> Awaitable[tuple[T, ModelLimiter, Reservation]]:
        """Try ``models`` in order until one answers; the caller settles the hold and
        frees the slot of the one that did. One model: its attempts' own coroutine."""
        if len(models) == 1:
            return self._attempts(call, models[0], send)
        return self._fall_back(call, models, send)

    async def _fall_back(self, call: _CallState, models: Sequence[Model],
                         send: Callable[[Model, float | None], Awaitable[T]],
                         ) -> tuple[T, ModelLimiter, Reservation]:
        for model in models[:-1]:
            try:
                return await self._attempts(call, model, send)
            except Exception as exc:
                fits = isinstance(exc, ModelNotAvailable) or (
                    isinstance(exc, ProviderError) and exc.retryable)
                if not fits:
                    raise
                log.warning("%s failed (%s: %s); falling back to the next model", model.id,
                            type(exc).__name__, exc)
        return await self._attempts(call, models[-1], send)

    async def _attempts(self, call: _CallState, model: Model,
                        send: Callable[[Model, float | None], Awaitable[T]],
                        ) -> tuple[T, ModelLimiter, Reservation]:
        """Send with retries on one model, within its limits and the budgets."""
        limits = self.limits_for(model.id)
        total = limits.total_timeout_s or self.request_timeout_s
        attempt = 0
        while True:
            attempt += 1
            call.model = model
            worst = self.pricing.worst_case(model.provider, model.name, call.input_tokens,
                                            call.max_tokens) if call.capped else 0.0
            hold = reserve(call.budgets, worst, f"a call to {model.id} "
                           f"(~{call.input_tokens} input tokens, max_tokens={call.max_tokens})")
            limiter = self.limiter(model.id)
            try:
                await limiter.acquire(call.tokens)
            except BaseException:
                hold.settle(0.0)
                raise
            call.attempts += 1
            try:
                return await send(model, total), limiter, hold
            except BaseException as exc:
                # our typed errors are known outcomes (a vendor error, or refused before
                # sending); anything else, our own timeouts included, may have been billed
                clean = isinstance(exc, AillmError) and not isinstance(exc, ProviderTimeout)
                hold.settle(0.0 if clean else None)
                limiter.release(call.tokens, 0 if clean else None)
                if isinstance(exc, RateLimited):
                    limiter.concurrency.on_rate_limited()
                if not (isinstance(exc, ProviderError) and exc.retryable) \
                        or attempt >= limits.max_attempts:
                    raise
                delay = backoff_delay(attempt, limits, exc.retry_after_s, self._rng)
            log.info("%s: attempt %d failed, retrying in %.2f s", model.id, attempt, delay)
            await self._sleep(delay)

    def _settle(self, call: _CallState, limiter: ModelLimiter, hold: Reservation,
                usage: Usage | None) -> float | None:
        """Swap the hold for the real cost and correct the TPM charge; returns the cost."""
        model = call.model or call.requested
        cost = None if usage is None else self.pricing.price(model.provider, model.name, usage)
        hold.settle(cost)
        limiter.release(call.tokens, usage.total_tokens if usage is not None else None)
        limiter.concurrency.on_success()
        return cost

    async def _record(self, call: _CallState, *, error: BaseException | None = None,
                      usage: Usage | None = None, cost: float | None = None) -> None:
        if self.on_record is None:
            return
        model = call.model or call.requested
        usage = usage or Usage()
        record = CallRecord(
            run_id=call.run_id, provider=model.provider, model=model.id,
            requested_model=call.requested.id, request_hash=call.key,
            cache_hit=call.cache_hit, replay_hit=call.replay_hit, stream=call.stream,
            attempts=call.attempts, latency_s=call.elapsed(), ttft_s=call.ttft,
            status="ok" if error is None else "error",
            error_type=None if error is None else type(error).__name__,
            input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            reasoning_tokens=usage.reasoning_tokens, cost_usd=cost)
        try:
            result = self.on_record(record)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("the call-log hook failed for request %s", call.key[:12])

    async def _save(self, call: _CallState, value: Recorded) -> None:
        if self.store is None or call.cache_hit or call.replay_hit \
                or not getattr(self.store, "writes", True):
            return
        try:
            await self.store.save(call.key, value)
        except Exception:
            log.exception("the response store could not save request %s", call.key[:12])


def _answer(messages: Sequence[Message], tools: Sequence[ToolSpec] | None, output: OutputSpec,
            params: GenerationParams, model: Model, total: float | None,
            ) -> Awaitable[Completion]:
    """One attempt's ``send`` for ``complete``: a partial of this, not a closure, keeps the
    objects each call holds while it waits (and the collector walks) to a minimum."""
    return within(model.complete(messages, tools=tools, output=output, params=params),
                  total, "answer", model)


@dataclass(slots=True)
class _CallState:
    """The state of one gateway call across attempts and fallbacks."""

    requested: Model
    candidates: tuple[Model, ...]
    key: str
    run_id: str
    budgets: tuple[Budget, ...]
    stream: bool
    input_tokens: int
    max_tokens: int
    tokens: int
    started: float
    clock: Clock
    messages: Sequence[Message] = ()
    capped: bool = True  # a budget has a cap, so each attempt reserves its worst case
    model: Model | None = None
    attempts: int = 0
    ttft: float | None = None
    cache_hit: bool = False
    replay_hit: bool = False

    def elapsed(self) -> float:
        return max(0.0, self.clock() - self.started)
