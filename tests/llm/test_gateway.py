"""The gateway: retries, timeouts, fallbacks, budgets, limits, store and call-log hooks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aillm_lab.config import LabSettings, ModelLimits
from aillm_lab.core.lab import Lab
from aillm_lab.errors import (
    AuthenticationError,
    BadRequest,
    BudgetExceeded,
    ModelNotAvailable,
    ProviderConnectionError,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    ReplayMiss,
    StreamInterrupted,
)
from aillm_lab.llm.base import Model, OutputSpec
from aillm_lab.llm.calllog import CallRecord
from aillm_lab.llm.gateway import Gateway, GatewayModel, ProviderTimeout, request_hash
from aillm_lab.llm.limits import estimate_input_tokens
from aillm_lab.llm.pricing import Pricing
from aillm_lab.llm.scripted import ScriptedModel
from aillm_lab.llm.types import (
    Completion,
    GenerationParams,
    ImagePart,
    Message,
    StreamEvent,
    ToolCall,
    ToolSpec,
    Usage,
)
from aillm_lab.runtime import LoopRunner

FAST = ModelLimits(backoff_base_s=0.0, max_attempts=4)
HI = [Message.user("hi")]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


def _gateway(records: list[CallRecord] | None = None, **kwargs: Any) -> Gateway:
    clock = kwargs.pop("clock", None) or FakeClock()
    kwargs.setdefault("default_limits", FAST)
    if records is not None:
        kwargs["on_record"] = records.append
    return Gateway(clock=clock, sleep=clock.sleep, seed=0, **kwargs)


def _faults(*errors: BaseException, then: str = "ok") -> Any:
    """A ScriptedModel function raising ``errors`` in turn, then answering ``then``."""
    queue = list(errors)

    def reply(messages: list[Message], request: Any) -> Any:
        return queue.pop(0) if queue else then

    return reply


class PricedModel(Model):
    """A hosted-looking model (priced by override) whose usage the test controls."""

    provider = "acme"

    def __init__(self, name: str = "m", *, output_tokens: int = 10,
                 fail: BaseException | None = None) -> None:
        super().__init__(name)
        self.output_tokens, self.fail = output_tokens, fail
        self.received: list[str] = []

    async def complete(self, messages: Sequence[Message], *,
                       tools: Sequence[ToolSpec] | None = None, output: OutputSpec = None,
                       params: GenerationParams | None = None) -> Completion:
        self.received.append(messages[-1].text)
        if self.fail is not None:
            raise self.fail
        params = params or GenerationParams()
        usage = Usage(input_tokens=estimate_input_tokens(messages, tools, output),
                      output_tokens=min(self.output_tokens, params.max_tokens))
        return Completion(text="answer", usage=usage, model=self.id)


class BreakingStream(Model):
    """Streams one event, then fails with a retryable error."""

    provider = "acme"

    def __init__(self) -> None:
        super().__init__("breaking")
        self.opened = 0

    async def complete(self, messages: Sequence[Message], **kwargs: Any) -> Completion:
        raise AssertionError("not used")

    async def stream(self, messages: Sequence[Message], **kwargs: Any
                     ) -> AsyncIterator[StreamEvent]:
        self.opened += 1
        yield StreamEvent(type="text", text="Hel")
        raise ProviderConnectionError("connection reset", provider="acme", status=None,
                                      vendor_message="reset by peer")


PRICES = Pricing(overrides={"acme:m": {"input": 1.0, "output": 2.0},
                            "acme:cheap": {"input": 0.1, "output": 0.1}})


# -- the wrapper -------------------------------------------------------------------------------
def test_gateway_model_looks_like_the_model_it_wraps():
    inner = ScriptedModel(["a"], name="pets")
    model = _gateway().wrap(inner, fallbacks=[ScriptedModel(name="spare")])
    assert isinstance(model, Model) and isinstance(model, GatewayModel)
    assert model.id == "scripted:pets" and model.provider == "scripted"
    assert model.supports_images is True and model.base_url is None
    assert model.requests is inner.requests  # other attributes come from the inner model
    assert "scripted:pets" in repr(model) and "scripted:spare" in repr(model)


def test_aclose_closes_the_inner_model():
    class Closing(ScriptedModel):
        closed = 0

        async def aclose(self) -> None:
            self.closed += 1

    inner = Closing()
    asyncio.run(_gateway().wrap(inner).aclose())
    assert inner.closed == 1


def test_a_call_writes_one_row_with_hash_tokens_latency_status_and_cost():
    records: list[CallRecord] = []
    gw = _gateway(records, run_id="lab-x")
    model = gw.wrap(ScriptedModel(["four words in reply"]))
    completion = asyncio.run(model.complete([Message.user("two words")]))
    assert completion.text == "four words in reply" and completion.latency_s is not None
    [row] = records
    assert row.run_id == "lab-x" and row.status == "ok" and row.attempts == 1
    assert row.provider == "scripted" and row.model == row.requested_model == model.id
    assert row.request_hash == request_hash("scripted", "scripted", [Message.user("two words")])
    assert (row.input_tokens, row.output_tokens) == (2, 4)
    assert row.cost_usd == 0.0 and row.latency_s is not None and not row.stream


# -- retries -----------------------------------------------------------------------------------
def test_rate_limited_twice_then_answering_takes_three_attempts():
    records: list[CallRecord] = []
    inner = ScriptedModel(_faults(RateLimited("429"), RateLimited("429"), then="done"))
    answer = asyncio.run(_gateway(records).wrap(inner).complete(HI))
    assert answer.text == "done"
    assert len(inner.requests) == 3
    assert records[0].attempts == 3 and records[0].status == "ok"


@pytest.mark.parametrize("max_attempts", [1, 2, 5])
def test_max_attempts_is_never_exceeded_and_the_last_error_surfaces(max_attempts):
    records: list[CallRecord] = []
    inner = ScriptedModel(lambda m, r: ProviderUnavailable("503", status=503))
    gw = _gateway(records, default_limits=ModelLimits(backoff_base_s=0,
                                                      max_attempts=max_attempts))
    with pytest.raises(ProviderUnavailable, match="503"):
        asyncio.run(gw.wrap(inner).complete(HI))
    assert len(inner.requests) == max_attempts
    assert records[0].attempts == max_attempts and records[0].status == "error"
    assert records[0].error_type == "ProviderUnavailable"


def test_retry_after_is_honoured_on_the_fake_clock_up_to_its_cap():
    clock = FakeClock()
    gw = _gateway(clock=clock, default_limits=ModelLimits(retry_after_cap_s=5.0))
    inner = ScriptedModel(_faults(RateLimited("429", retry_after_s=1.0),
                                  RateLimited("429", retry_after_s=600.0)))
    asyncio.run(gw.wrap(inner).complete(HI))
    assert clock.sleeps == [1.0, 5.0]


def test_retry_after_waits_in_real_time_too():
    gw = Gateway(default_limits=FAST)
    inner = ScriptedModel(_faults(RateLimited("429", retry_after_s=0.2)))
    start = time.perf_counter()
    asyncio.run(gw.wrap(inner).complete(HI))
    assert time.perf_counter() - start >= 0.2


def test_backoff_without_retry_after_is_jittered_under_an_exponential_ceiling():
    clock = FakeClock()
    limits = ModelLimits(backoff_base_s=1.0, backoff_cap_s=3.0, max_attempts=5)
    gw = _gateway(clock=clock, default_limits=limits)
    inner = ScriptedModel(_faults(*[ProviderConnectionError("reset")] * 4))
    asyncio.run(gw.wrap(inner).complete(HI))
    assert len(clock.sleeps) == 4
    for attempt, delay in enumerate(clock.sleeps, start=1):
        assert 0.0 <= delay <= min(3.0, 2.0 ** (attempt - 1))
    assert len(set(clock.sleeps)) == 4  # jitter, not a fixed schedule


@pytest.mark.parametrize("error", [
    AuthenticationError("bad key", status=401, vendor_message="Incorrect API key provided"),
    BadRequest("bad schema", status=400, vendor_message="'x' is not valid"),
])
def test_non_retryable_errors_surface_at_once_unchanged_without_fallback(error):
    inner = ScriptedModel(lambda m, r: error)
    spare = ScriptedModel(["spare"])
    with pytest.raises(type(error)) as info:
        asyncio.run(_gateway().wrap(inner, [spare]).complete(HI))
    assert info.value is error and info.value.vendor_message == error.vendor_message
    assert len(inner.requests) == 1 and spare.requests == []


def test_an_unexpected_exception_is_not_retried():
    inner = ScriptedModel(lambda m, r: ValueError("bug"))
    with pytest.raises(ValueError, match="bug"):
        asyncio.run(_gateway().wrap(inner).complete(HI))
    assert len(inner.requests) == 1


def test_1000_calls_with_30_percent_retryable_faults_all_succeed_within_max_attempts():
    records: list[CallRecord] = []
    limits = ModelLimits(backoff_base_s=0.01, max_attempts=10, concurrency=8)
    gw = _gateway(records, default_limits=limits)
    faults = [lambda: RateLimited("429", retry_after_s=0.5),
              lambda: ProviderUnavailable("503", status=503),
              lambda: ProviderUnavailable("overloaded", status=529),
              lambda: ProviderUnavailable("timeout", status=408),
              lambda: ProviderConnectionError("reset")]
    calls: dict[str, int] = {}
    failed = 0

    def reply(messages: list[Message], request: Any) -> Any:
        nonlocal failed
        key = messages[-1].text
        calls[key] = calls.get(key, 0) + 1
        rng = random.Random(f"7-{key}-{calls[key]}")  # seeded, independent of scheduling
        if rng.random() < 0.3:
            failed += 1
            return rng.choice(faults)()
        return f"re: {key}"

    model = gw.wrap(ScriptedModel(reply))

    async def go() -> list[Completion]:
        return await asyncio.gather(*(model.complete([Message.user(f"q{i}")])
                                      for i in range(1000)))

    answers = asyncio.run(go())
    assert [a.text for a in answers] == [f"re: q{i}" for i in range(1000)]
    assert len(records) == 1000 and all(r.status == "ok" for r in records)
    assert max(r.attempts for r in records) <= 10
    assert max(calls.values()) <= 10
    assert sum(r.attempts for r in records) == sum(calls.values())
    assert 0.25 < failed / sum(calls.values()) < 0.35
    assert sum(1 for r in records if r.attempts >= 3) > 10


# -- streams and timeouts ----------------------------------------------------------------------
def test_a_stream_is_never_retried_after_its_first_event():
    records: list[CallRecord] = []
    inner = BreakingStream()
    spare = ScriptedModel(["spare"])
    seen: list[str] = []

    async def go() -> None:
        async for event in _gateway(records).wrap(inner, [spare]).stream(HI):
            seen.append(str(event))

    with pytest.raises(StreamInterrupted, match="after its first event") as info:
        asyncio.run(go())
    assert not info.value.retryable
    assert isinstance(info.value.__cause__, ProviderConnectionError)
    assert info.value.vendor_message == "reset by peer"
    assert seen == ["Hel"] and inner.opened == 1 and spare.requests == []
    assert records[0].status == "error" and records[0].attempts == 1
    assert records[0].error_type == "StreamInterrupted" and records[0].stream


def test_a_stream_failing_before_its_first_event_is_retried():
    records: list[CallRecord] = []
    inner = ScriptedModel(_faults(RateLimited("429"), then="hello there"))

    async def go() -> str:
        return "".join([str(e) async for e in _gateway(records).wrap(inner).stream(HI)])

    assert asyncio.run(go()) == "hello there"
    assert len(inner.requests) == 2
    assert records[0].attempts == 2 and records[0].ttft_s is not None
    assert records[0].output_tokens == 2


def test_ttft_timeout_is_a_retryable_timeout_before_the_first_byte():
    records: list[CallRecord] = []
    inner = ScriptedModel(lambda m, r: "slow words", delay=2.0)
    limits = ModelLimits(ttft_timeout_s=0.05, max_attempts=2, backoff_base_s=0)
    gw = Gateway(default_limits=limits, on_record=records.append)

    async def go() -> None:
        async for _ in gw.wrap(inner).stream(HI):
            pass

    start = time.perf_counter()
    with pytest.raises(ProviderTimeout, match="first token within 0.05 s") as info:
        asyncio.run(go())
    assert time.perf_counter() - start < 1.5
    assert info.value.retryable and isinstance(info.value, ProviderConnectionError)
    assert len(inner.requests) == 2 and records[0].attempts == 2


def test_ttft_timeout_does_not_cut_a_stream_that_has_started():
    inner = ScriptedModel(lambda m, r: "a b c d", delay=0.03)
    gw = Gateway(default_limits=ModelLimits(ttft_timeout_s=0.5))

    async def go() -> str:
        return "".join([str(e) async for e in gw.wrap(inner).stream(HI)])

    assert asyncio.run(go()) == "a b c d"


def test_total_timeout_caps_one_attempt():
    inner = ScriptedModel(["late"], delay=2.0)
    gw = Gateway(default_limits=ModelLimits(total_timeout_s=0.05, max_attempts=1))
    start = time.perf_counter()
    with pytest.raises(ProviderTimeout, match="no answer within 0.05 s"):
        asyncio.run(gw.wrap(inner).complete(HI))
    assert time.perf_counter() - start < 1.5


# -- fallbacks ---------------------------------------------------------------------------------
def test_a_fallback_answers_when_the_primary_keeps_failing_and_the_log_says_so(caplog):
    records: list[CallRecord] = []
    primary = ScriptedModel(lambda m, r: ProviderUnavailable("overloaded", status=529),
                            name="primary")
    spare = ScriptedModel(["from spare"], name="spare")
    gw = _gateway(records, default_limits=ModelLimits(backoff_base_s=0, max_attempts=2))
    with caplog.at_level(logging.WARNING, logger="aillm_lab.llm.gateway"):
        answer = asyncio.run(gw.wrap(primary, [spare]).complete(HI))
    assert answer.text == "from spare"
    assert len(primary.requests) == 2 and len(spare.requests) == 1
    [row] = records
    assert row.model == "scripted:spare" and row.requested_model == "scripted:primary"
    assert row.attempts == 3
    assert "falling back" in caplog.text


def test_model_not_available_falls_back_at_once():
    primary = ScriptedModel(lambda m, r: ModelNotAvailable("run `ollama serve`"))
    spare = ScriptedModel(["ok"], name="spare")
    assert asyncio.run(_gateway().wrap(primary, [spare]).complete(HI)).text == "ok"
    assert len(primary.requests) == 1


def test_when_every_model_fails_the_last_error_surfaces():
    records: list[CallRecord] = []
    first = ScriptedModel(lambda m, r: RateLimited("429"), name="first")
    second = ScriptedModel(lambda m, r: ModelNotAvailable("no weights"), name="second")
    with pytest.raises(ModelNotAvailable, match="no weights"):
        asyncio.run(_gateway(records).wrap(first, [second]).complete(HI))
    assert records[0].model == "scripted:second" and records[0].attempts == 5


def test_a_stream_falls_back_before_its_first_event():
    primary = ScriptedModel(lambda m, r: ProviderConnectionError("down"), name="primary")
    spare = ScriptedModel(["spare words"], name="spare")

    async def go() -> str:
        model = _gateway().wrap(primary, [spare])
        return "".join([str(e) async for e in model.stream(HI)])

    assert asyncio.run(go()) == "spare words"


# -- budgets -----------------------------------------------------------------------------------
def test_a_call_over_budget_is_refused_before_any_request_is_sent():
    records: list[CallRecord] = []
    inner = PricedModel()
    gw = _gateway(records, budget_usd=0.0001, pricing=PRICES)
    with pytest.raises(BudgetExceeded, match="does not fit the Lab budget"):
        asyncio.run(gw.wrap(inner).complete(HI, params=GenerationParams(max_tokens=1000)))
    assert inner.received == []
    assert records[0].error_type == "BudgetExceeded" and records[0].attempts == 0
    assert gw.budget.spent_usd == 0 and gw.budget.reserved_usd == 0


def test_the_budget_is_reconciled_with_actual_usage_not_the_worst_case():
    records: list[CallRecord] = []
    inner = PricedModel(output_tokens=10)
    gw = _gateway(records, budget_usd=1.0, pricing=PRICES)
    asyncio.run(gw.wrap(inner).complete(HI, params=GenerationParams(max_tokens=10_000)))
    expected = PRICES.price("acme", "m", Usage(input_tokens=estimate_input_tokens(HI),
                                               output_tokens=10))
    assert records[0].cost_usd == pytest.approx(expected)
    assert gw.budget.spent_usd == pytest.approx(expected)
    assert gw.budget.reserved_usd == 0


def test_a_run_budget_refuses_inside_the_run_and_not_outside():
    records: list[CallRecord] = []
    gw = _gateway(records, pricing=PRICES)
    model = gw.wrap(PricedModel())
    params = GenerationParams(max_tokens=1000)  # worst case about $0.002

    async def go() -> None:
        with gw.run("exp-1", budget_usd=0.001) as run:
            with pytest.raises(BudgetExceeded, match="run 'exp-1'"):
                await model.complete(HI, params=params)
            assert run.spent_usd == 0
        await model.complete(HI, params=params)

    asyncio.run(go())
    assert [r.run_id for r in records][0] == "exp-1"
    assert records[1].status == "ok" and records[1].run_id == gw.runs.default_id


def test_an_unknown_price_is_refused_under_a_budget_and_logged_as_none_without_one():
    records: list[CallRecord] = []
    unknown = PricedModel(name="unpriced")
    with pytest.raises(BudgetExceeded, match="price is unknown"):
        asyncio.run(_gateway(budget_usd=5.0, pricing=PRICES).wrap(unknown).complete(HI))
    assert unknown.received == []
    asyncio.run(_gateway(records, pricing=PRICES).wrap(unknown).complete(HI))
    assert records[0].status == "ok" and records[0].cost_usd is None


def test_a_stream_abandoned_midway_is_charged_its_worst_case():
    records: list[CallRecord] = []
    gw = _gateway(records, budget_usd=10.0,
                  pricing=Pricing(overrides={"scripted:scripted": {"input": 1.0,
                                                                   "output": 1.0}}))
    model = gw.wrap(ScriptedModel(["one two three four"]))

    async def go() -> None:
        async with contextlib.aclosing(model.stream(HI)) as events:
            async for _ in events:
                break

    asyncio.run(go())
    worst = gw.pricing.worst_case("scripted", "scripted", estimate_input_tokens(HI), 256)
    assert gw.budget.spent_usd == pytest.approx(worst)
    assert gw.budget.reserved_usd == 0
    assert records[0].status == "error" and records[0].error_type == "GeneratorExit"


def test_a_stream_closed_right_after_its_done_event_counts_as_finished():
    records: list[CallRecord] = []
    gw = _gateway(records, budget_usd=10.0,
                  pricing=Pricing(overrides={"scripted:scripted": {"input": 1.0,
                                                                   "output": 1.0}}))
    model = gw.wrap(ScriptedModel(["one two"]))

    async def go() -> None:
        async with contextlib.aclosing(model.stream(HI)) as events:
            async for event in events:
                if event.type == "done":
                    break

    asyncio.run(go())
    assert records[0].status == "ok" and records[0].output_tokens == 2
    assert records[0].cost_usd == pytest.approx(3 / 1e6)  # 1 in + 2 out at $1/M
    assert gw.budget.spent_usd == pytest.approx(3 / 1e6)


def test_a_cancelled_call_frees_its_slot_and_is_charged_its_worst_case():
    gw = _gateway(budget_usd=10.0, pricing=PRICES)
    inner = PricedModel()
    model = gw.wrap(inner)

    async def slow(*args: Any, **kwargs: Any) -> Completion:
        await asyncio.sleep(10)
        raise AssertionError("not reached")

    inner.complete = slow  # type: ignore[method-assign]

    async def go() -> None:
        task = asyncio.create_task(model.complete(HI))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    assert gw.limiter("acme:m").concurrency.in_use == 0
    assert gw.budget.reserved_usd == 0
    assert gw.budget.spent_usd == pytest.approx(
        PRICES.worst_case("acme", "m", estimate_input_tokens(HI), 256))


# (prompt size, max_tokens, output tokens (capped at max_tokens, so often all of it), fails)
call_specs = st.lists(st.tuples(st.integers(0, 3000), st.integers(1, 2000),
                                st.one_of(st.just(10**6), st.integers(0, 2000)), st.booleans()),
                      min_size=1, max_size=20)


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(calls=call_specs, cap=st.floats(0.0, 0.02), price_in=st.floats(0.01, 30.0),
       price_out=st.floats(0.01, 60.0), per_run=st.booleans(), together=st.booleans())
def test_spend_never_exceeds_the_budget_and_refused_calls_never_reach_the_model(
        calls, cap, price_in, price_out, per_run, together):
    pricing = Pricing(overrides={"acme:m": {"input": price_in, "output": price_out}})
    gw = _gateway(budget_usd=None if per_run else cap, pricing=pricing)
    received: list[str] = []
    costs: list[float] = []

    class Model_(PricedModel):
        async def complete(self, messages, *, tools=None, output=None, params=None):
            received.append(messages[-1].text)
            await asyncio.sleep(0)
            text = messages[-1].text
            if text.endswith("!"):
                raise ProviderUnavailable("down", status=503, retryable=False)
            usage = Usage(input_tokens=estimate_input_tokens(messages),
                          output_tokens=int(text.split(":")[1]))
            costs.append(pricing.price("acme", "m", usage) or 0.0)
            return Completion(text="ok", usage=usage)

    model = gw.wrap(Model_())

    async def one(i: int, size: int, max_tokens: int, out: int, fail: bool) -> str:
        prompt = f"{i}:{min(out, max_tokens)}:{'x' * size}{'!' if fail else ''}"
        try:
            await model.complete([Message.user(prompt)],
                                 params=GenerationParams(max_tokens=max_tokens))
        except BudgetExceeded:
            return f"refused {prompt}"
        except ProviderUnavailable:
            return f"failed {prompt}"
        return f"sent {prompt}"

    async def go() -> tuple[list[str], float]:
        with gw.run("r", budget_usd=cap if per_run else None) as run:
            jobs = [one(i, *c) for i, c in enumerate(calls)]
            if together:
                outcomes = await asyncio.gather(*jobs)
            else:
                outcomes = [await job for job in jobs]
            budget = run.budget if per_run else gw.budget
            assert budget.remaining_usd is not None and budget.remaining_usd >= 0
            assert budget.reserved_usd == 0
            return list(outcomes), budget.spent_usd

    outcomes, spent = asyncio.run(go())
    refused = {o.split(" ", 1)[1] for o in outcomes if o.startswith("refused")}
    assert not refused & set(received)
    assert len(received) == len(calls) - len(refused)
    assert spent <= cap
    assert spent == pytest.approx(sum(costs), rel=1e-9, abs=1e-15)


# -- limits through the gateway ----------------------------------------------------------------
def test_concurrency_limit_holds_for_calls_through_the_gateway():
    running = peak = 0

    async def reply(messages: list[Message], request: Any) -> str:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.005)
        running -= 1
        return "ok"

    gw = Gateway(limits={"scripted:scripted": ModelLimits(concurrency=2)})
    model = gw.wrap(ScriptedModel(reply))

    async def go() -> None:
        await asyncio.gather(*(model.complete(HI) for _ in range(12)))

    asyncio.run(go())
    assert peak == 2


def test_rpm_spreads_calls_through_the_gateway_on_fake_time():
    clock = FakeClock()
    starts: list[float] = []

    def reply(messages: list[Message], request: Any) -> str:
        starts.append(clock())
        return "ok"

    gw = _gateway(clock=clock, limits={"scripted:scripted": ModelLimits(rpm=60)})
    model = gw.wrap(ScriptedModel(reply))

    async def go() -> None:
        await asyncio.gather(*(model.complete(HI) for _ in range(10)))

    asyncio.run(go())
    assert starts[0] == 0.0 and 8.9 <= starts[-1] <= 9.1


def test_the_tpm_charge_is_corrected_with_actual_usage():
    clock = FakeClock()
    gw = _gateway(clock=clock, limits={"scripted:scripted": ModelLimits(tpm=60_000)})
    asyncio.run(gw.wrap(ScriptedModel(["one two"])).complete(
        HI, params=GenerationParams(max_tokens=500)))
    bucket = gw.limiter("scripted:scripted").tpm
    assert bucket is not None
    assert bucket.level == pytest.approx(1 - 3)  # started at 1; actual 1 in + 2 out


def test_adaptive_concurrency_shrinks_on_a_burst_of_429s():
    gw = _gateway(limits={"scripted:scripted": ModelLimits(concurrency=10, adaptive=True,
                                                           backoff_base_s=0)})
    inner = ScriptedModel(_faults(*[RateLimited("429")] * 3))
    asyncio.run(gw.wrap(inner).complete(HI))
    assert gw.limiter("scripted:scripted").concurrency.limit == 8


def test_from_settings_takes_limits_budgets_and_timeout():
    s = LabSettings(limits={"openai:gpt-4o": {"rpm": 60, "max_attempts": 2}}, budget_usd=3.0,
                    run_budget_usd=0.5, request_timeout_s=12.0)
    gw = Gateway.from_settings(s)
    assert gw.limits_for("openai:gpt-4o").max_attempts == 2
    assert gw.limits_for("openai:other") == ModelLimits()
    assert gw.budget.cap_usd == 3.0 and gw.request_timeout_s == 12.0
    with gw.run("x") as run:
        assert run.budget.cap_usd == 0.5


# -- request hash, store and call-log hooks ----------------------------------------------------
def test_request_hash_changes_with_every_part_of_the_request_and_is_stable():
    base = dict(provider="openai", model="gpt-4o", messages=HI)
    h = request_hash(**base)
    assert h == request_hash(**base) and len(h) == 64
    variants = [
        dict(base, model="gpt-4o-mini"), dict(base, provider="azure"),
        dict(base, messages=[Message.user("hello")]), dict(base, base_url="http://x:8000/v1"),
        dict(base, tools=[ToolSpec(name="f")]), dict(base, output={"type": "object"}),
        dict(base, params=GenerationParams(temperature=0.5)), dict(base, sample=1),
    ]
    assert len({request_hash(**v) for v in variants} | {h}) == len(variants) + 1


def test_request_hash_bytes_never_change_so_committed_cassettes_keep_replaying():
    """Golden digests: a change to the canonical JSON would turn every recording into a
    ReplayMiss. If this fails on purpose, the store needs a migration, not a new digest."""
    from pydantic import BaseModel

    class Answer(BaseModel):
        city: str
        population: int

    messages = [Message.system("Be brief."),
                Message.user("héllo “world” ✓", ImagePart(url="https://example.com/a.png")),
                Message.assistant("", tool_calls=[ToolCall(id="c1", name="lookup", arguments={
                    "q": "paris", "n": 2, "f": 0.1})]),
                Message.tool("c1", "48.8566 N")]
    tools = [ToolSpec(name="lookup", description="find", parameters={
        "type": "object", "properties": {"q": {"type": "string"}}})]
    params = GenerationParams(max_tokens=64, temperature=0.7, top_p=0.9, stop=["\n\n"], seed=7,
                              tool_choice="required")
    assert request_hash("openai", "gpt-4o-mini", [Message.user("hi")]) == (
        "38aa343437c3a0c10ebb991b98d3fc2e516b95a1671efe2c667b1513cfcf9d59")
    assert request_hash("openai", "gpt-4o-mini", messages, tools=tools, output=Answer,
                        base_url="https://u:p@api.example.com/v1?key=s", params=params,
                        sample=3) == (
        "cccef6361b7a4e9e830945a18d94472b7da97375ab6087cb6a279fb4a5c855f1")
    schema = {"type": "object", "properties": {"x": {"type": "number", "default": 1e-7}}}
    assert request_hash("anthropic", "claude-x", [Message.user("a")], output=schema) == (
        "cd0a596e95e05ed5622d717d62a9806fd6153ef4d922eed9d1917e3e37d7b0cb")


def test_request_hash_ignores_credentials_in_the_base_url():
    clean = request_hash("openai", "m", HI, base_url="https://api.example.com/v1")
    leaky = request_hash("openai", "m", HI,
                         base_url="https://user:sk-SECRET@api.example.com/v1?api_key=sk-SECRET")
    assert clean == leaky


class DictStore:
    def __init__(self, mode: str = "replay_or_record") -> None:
        self.mode = mode
        self.data: dict[tuple[str, bool], Any] = {}

    async def lookup(self, key: str, *, stream: bool, describe: str = "") -> Any:
        if self.mode == "replay" and (key, stream) not in self.data:
            raise ReplayMiss(f"no recording for {describe}")
        return self.data.get((key, stream))

    async def save(self, key: str, value: Any) -> None:
        self.data[(key, isinstance(value, list))] = value


@pytest.mark.parametrize(("mode", "hit_field"), [("replay_or_record", "replay_hit"),
                                                 ("cache", "cache_hit")])
def test_a_stored_answer_is_served_without_calling_the_model(mode, hit_field):
    records: list[CallRecord] = []
    store = DictStore(mode)
    inner = ScriptedModel(["first answer"])
    model = _gateway(records, store=store).wrap(inner)

    async def go() -> tuple[Completion, Completion]:
        return await model.complete(HI), await model.complete(HI)

    first, second = asyncio.run(go())
    assert first.text == second.text == "first answer" and len(inner.requests) == 1
    assert getattr(records[1], hit_field) is True and records[1].attempts == 0
    assert records[1].cost_usd == 0.0 and records[0].request_hash == records[1].request_hash


def test_a_store_that_neither_reads_nor_writes_is_never_called():
    class Idle(DictStore):
        reads = writes = False
        calls = 0

        async def lookup(self, key: str, *, stream: bool, describe: str = "") -> Any:
            Idle.calls += 1
            return await super().lookup(key, stream=stream, describe=describe)

        async def save(self, key: str, value: Any) -> None:
            Idle.calls += 1

    records: list[CallRecord] = []
    model = _gateway(records, store=Idle()).wrap(ScriptedModel(["a", "b"]))

    async def go() -> list[str]:
        streamed = [str(e) async for e in model.stream(HI)]
        return [(await model.complete(HI)).text, "".join(streamed)]

    assert sorted(asyncio.run(go())) == ["a", "b"]
    assert Idle.calls == 0 and not any(r.cache_hit or r.replay_hit for r in records)


def test_a_stream_is_saved_and_replayed_event_by_event():
    records: list[CallRecord] = []
    store = DictStore()
    inner = ScriptedModel(["alpha beta"])
    model = _gateway(records, store=store).wrap(inner)

    async def go() -> list[list[str]]:
        return [[str(e) async for e in model.stream(HI)] for _ in range(2)]

    first, second = asyncio.run(go())
    assert first == second == ["alpha ", "beta", "", ""]
    assert len(inner.requests) == 1 and records[1].replay_hit and records[1].stream


def test_failed_calls_are_not_saved_and_a_replay_miss_surfaces_and_is_logged():
    records: list[CallRecord] = []
    store = DictStore()
    with pytest.raises(BadRequest):
        asyncio.run(_gateway(store=store).wrap(
            ScriptedModel(lambda m, r: BadRequest("no"))).complete(HI))
    assert store.data == {}
    replay = _gateway(records, store=DictStore("replay"))
    inner = ScriptedModel(["x"])
    with pytest.raises(ReplayMiss):
        asyncio.run(replay.wrap(inner).complete(HI))
    assert inner.requests == [] and records[0].error_type == "ReplayMiss"


def test_samples_are_hashed_apart():
    records: list[CallRecord] = []
    gw = _gateway(records)
    model = gw.wrap(ScriptedModel(["a", "b"]))

    async def go() -> None:
        for i in range(2):
            with gw.sample(i):
                await model.complete(HI)

    asyncio.run(go())
    assert records[0].request_hash != records[1].request_hash


def test_an_async_call_log_hook_is_awaited_and_a_failing_one_does_not_fail_the_call(caplog):
    seen: list[CallRecord] = []

    async def hook(record: CallRecord) -> None:
        await asyncio.sleep(0)
        seen.append(record)

    asyncio.run(_gateway(on_record=hook).wrap(ScriptedModel(["a"])).complete(HI))
    assert len(seen) == 1

    def broken(record: CallRecord) -> None:
        raise OSError("disk full")

    with caplog.at_level(logging.ERROR, logger="aillm_lab.llm.gateway"):
        answer = asyncio.run(_gateway(on_record=broken).wrap(ScriptedModel(["b"])).complete(HI))
    assert answer.text == "b" and "call-log hook failed" in caplog.text


def test_embeddings_go_through_limits_and_retries():
    records: list[CallRecord] = []

    class Embedder(ScriptedModel):
        tries = 0

        async def embed(self, texts: Sequence[str]) -> list[list[float]]:
            self.tries += 1
            if self.tries == 1:
                raise RateLimited("429")
            return [[float(len(t))] for t in texts]

    inner = Embedder()
    vectors = asyncio.run(_gateway(records).wrap(inner).embed(["ab", "c"]))
    assert vectors == [[2.0], [1.0]] and inner.tries == 2 and records[0].attempts == 2


def test_provider_errors_keep_their_type_for_callers():
    error = ProviderUnavailable("503", status=503, vendor_message="try later")
    inner = ScriptedModel(lambda m, r: error)
    gw = _gateway(default_limits=ModelLimits(max_attempts=1))
    with pytest.raises(ProviderError) as info:
        asyncio.run(gw.wrap(inner).complete(HI))
    assert info.value is error


def test_a_lab_handed_a_gateway_model_logs_sync_calls_in_the_callers_run(tmp_path):
    records: list[CallRecord] = []
    gw = Gateway(on_record=records.append, run_id="lab-default")
    runner = LoopRunner(name="test-gateway-lab")
    lab = Lab(LabSettings(home=tmp_path), model=gw.wrap(ScriptedModel(["a b", "c d"])),
              runner=runner)
    try:
        with gw.run("notebook-run"):
            assert lab.chat("hi").text == "a b"
        assert "".join(str(e) for e in lab.stream("hi")) == "c d"
    finally:
        lab.close()
        runner.close()
    assert [r.run_id for r in records] == ["notebook-run", "lab-default"]
    assert [r.stream for r in records] == [False, True]
