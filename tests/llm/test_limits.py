"""Limits: smooth token buckets on fake time, (adaptive) concurrency, budgets, runs, backoff."""

from __future__ import annotations

import asyncio
import random

import pytest

from aillm_lab.config import LabSettings, ModelLimits
from aillm_lab.errors import BudgetExceeded, ConfigError
from aillm_lab.llm.limits import (
    Budget,
    ConcurrencyLimit,
    ModelLimiter,
    ProviderTimeout,
    Runs,
    TokenBucket,
    backoff_delay,
    estimate_input_tokens,
    reserve,
    within,
)
from aillm_lab.llm.scripted import ScriptedModel
from aillm_lab.llm.types import ImagePart, Message, ToolCall, ToolSpec
from aillm_lab.runtime import LoopRunner


class FakeClock:
    """Time that moves only when someone sleeps; ``sleep`` still yields to the loop."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


async def _acquire_times(bucket: TokenBucket, clock: FakeClock, n: int,
                         amount: float = 1.0) -> list[float]:
    times: list[float] = []

    async def one() -> None:
        await bucket.acquire(amount)
        times.append(clock())

    await asyncio.gather(*(one() for _ in range(n)))
    return sorted(times)


def _max_in_window(times: list[float], width: float = 1.0) -> int:
    return max(sum(1 for t in times if start <= t < start + width) for start in times)


# -- token buckets ---------------------------------------------------------------------------
def test_bucket_at_120_rpm_spreads_60_acquisitions_over_about_30_seconds():
    clock = FakeClock()
    bucket = TokenBucket.per_minute(120, clock=clock, sleep=clock.sleep)
    times = asyncio.run(_acquire_times(bucket, clock, 60))
    assert len(times) == 60
    assert 29.0 <= times[-1] - 0.0 <= 31.0
    assert _max_in_window(times) <= 2 + 1  # 120 RPM is 2 a second


def test_bucket_starts_with_no_burst():
    clock = FakeClock()
    bucket = TokenBucket.per_minute(600, clock=clock, sleep=clock.sleep)  # 10 a second
    times = asyncio.run(_acquire_times(bucket, clock, 5))
    assert times[0] == 0.0
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(gap == pytest.approx(0.1) for gap in gaps)


def test_bucket_after_idle_bursts_at_most_one_second_of_rate():
    clock = FakeClock()
    bucket = TokenBucket.per_minute(120, clock=clock, sleep=clock.sleep)
    clock.now = 1000.0  # a long idle: the bucket is full, but holds only one second's worth
    times = asyncio.run(_acquire_times(bucket, clock, 10))
    assert sum(1 for t in times if t == 1000.0) == 2
    assert _max_in_window(times) <= 3


def test_bucket_lets_a_request_larger_than_its_capacity_through_then_repays_the_debt():
    clock = FakeClock()
    bucket = TokenBucket.per_minute(600, clock=clock, sleep=clock.sleep)  # 10 tokens a second

    async def go() -> list[float]:
        await bucket.acquire(100)
        first = clock()
        await bucket.acquire(1)
        return [first, clock()]

    first, second = asyncio.run(go())
    assert first == 0.0
    assert second == pytest.approx(10.0)  # 100 tokens of debt at 10 a second


def test_bucket_adjust_gives_back_unused_tokens_and_takes_extra_ones():
    clock = FakeClock()
    bucket = TokenBucket(10.0, capacity=10.0, clock=clock, sleep=clock.sleep, initial=5.0)
    bucket.adjust(3)
    assert bucket.level == pytest.approx(2.0)
    bucket.adjust(-100)
    assert bucket.level == pytest.approx(10.0)  # never above capacity


def test_bucket_rejects_a_rate_that_is_not_positive():
    with pytest.raises(ValueError, match="rate_per_s"):
        TokenBucket(0.0)


# -- concurrency -----------------------------------------------------------------------------
def test_concurrency_limit_never_lets_more_than_its_limit_run():
    async def go() -> int:
        limit = ConcurrencyLimit(3)
        running = peak = 0

        async def one() -> None:
            nonlocal running, peak
            await limit.acquire()
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.001)
            running -= 1
            limit.release()

        await asyncio.gather(*(one() for _ in range(20)))
        assert limit.in_use == 0
        return peak

    assert asyncio.run(go()) == 3


def test_a_cancelled_waiter_does_not_leak_a_slot():
    async def go() -> None:
        limit = ConcurrencyLimit(1)
        await limit.acquire()
        waiter = asyncio.create_task(limit.acquire())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        limit.release()
        assert limit.in_use == 0
        await asyncio.wait_for(limit.acquire(), 1)
        assert limit.in_use == 1

    asyncio.run(go())


def test_adaptive_limit_cuts_once_per_burst_of_429s_and_grows_back_slowly():
    clock = FakeClock()
    limit = ConcurrencyLimit(10, adaptive=True, grow_after=5, cooldown_s=1.0, clock=clock)
    for _ in range(4):  # one burst
        limit.on_rate_limited()
    assert limit.limit == 8
    clock.now += 2.0
    limit.on_rate_limited()
    assert limit.limit == 6
    for _ in range(4):
        limit.on_success()
    assert limit.limit == 6
    limit.on_success()
    assert limit.limit == 7
    for _ in range(100):
        limit.on_success()
    assert limit.limit == 10  # never above the configured maximum


def test_adaptive_limit_never_drops_below_one_and_plain_limits_never_change():
    clock = FakeClock()
    limit = ConcurrencyLimit(2, adaptive=True, clock=clock)
    for _ in range(10):
        limit.on_rate_limited()
        clock.now += 5
    assert limit.limit == 1
    plain = ConcurrencyLimit(2)
    plain.on_rate_limited()
    assert plain.limit == 2


def test_model_limiter_corrects_the_tpm_charge_with_actual_usage():
    clock = FakeClock()
    limiter = ModelLimiter(ModelLimits(tpm=600), clock=clock, sleep=clock.sleep)

    async def go() -> None:
        await limiter.acquire(1)
        assert limiter.tpm is not None and limiter.tpm.level == pytest.approx(0.0)
        limiter.release(estimated=1, actual=5)
        assert limiter.tpm.level == pytest.approx(-4.0)
        assert limiter.concurrency.in_use == 0

    asyncio.run(go())


def test_model_limiter_frees_its_slot_when_cancelled_while_waiting_for_rate():
    limiter = ModelLimiter(ModelLimits(rpm=1, concurrency=1))

    async def go() -> None:
        await limiter.acquire(1)
        limiter.release(1, 1)
        waiting = asyncio.create_task(limiter.acquire(1))  # the bucket is empty for ~60 s
        await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert limiter.concurrency.in_use == 0

    asyncio.run(go())


# -- budgets ---------------------------------------------------------------------------------
def test_reserve_refuses_when_spent_plus_reserved_plus_worst_case_exceeds_the_cap():
    budget = Budget(1.0, "Lab")
    first = reserve([budget], 0.6, "call 1")
    with pytest.raises(BudgetExceeded, match="does not fit the Lab budget"):
        reserve([budget], 0.5, "call 2")
    assert budget.reserved_usd == pytest.approx(0.6)
    first.settle(0.1)
    assert budget.spent_usd == pytest.approx(0.1) and budget.reserved_usd == 0
    reserve([budget], 0.9, "call 3")  # exactly at the cap fits


def test_reserve_holds_nothing_on_any_budget_when_one_refuses():
    lab, run = Budget(10.0, "Lab"), Budget(0.1, "run 'r'")
    with pytest.raises(BudgetExceeded, match="run 'r'"):
        reserve([lab, run], 0.5, "a call")
    assert lab.reserved_usd == 0 and run.reserved_usd == 0


def test_unknown_price_is_refused_under_a_cap_and_allowed_without_one():
    with pytest.raises(BudgetExceeded, match="price is unknown"):
        reserve([Budget(5.0, "Lab")], None, "a call to openai:mystery")
    free = Budget(None, "Lab")
    hold = reserve([free], None, "a call")
    hold.settle(None)
    assert free.spent_usd == 0


def test_settle_is_idempotent_and_none_charges_the_whole_hold():
    budget = Budget(1.0, "Lab")
    hold = reserve([budget], 0.25, "a call")
    hold.settle(None)
    hold.settle(0.0)
    assert budget.spent_usd == pytest.approx(0.25) and budget.reserved_usd == 0
    assert budget.remaining_usd == pytest.approx(0.75)


def test_an_uncapped_budget_reports_spend_and_a_cap_set_later_counts_it():
    budget = Budget(None, "run 'r'")
    for cost in (0.1, 0.2, 0.3):
        reserve([budget], 0.0, "a call").settle(cost)
    reserve([budget], None, "a call at an unknown price").settle(None)  # charges nothing
    assert budget.spent_usd == pytest.approx(0.6) and budget.reserved_usd == 0
    budget.cap_usd = 1.0  # what was spent before the cap still counts against it
    assert budget.remaining_usd == pytest.approx(0.4)
    with pytest.raises(BudgetExceeded, match="does not fit"):
        reserve([budget], 0.5, "a call")
    reserve([budget], 0.4, "a call").settle(0.4)
    assert budget.spent_usd == pytest.approx(1.0)


# -- runs ------------------------------------------------------------------------------------
def test_runs_share_a_budget_while_open_and_default_to_the_run_budget():
    runs = Runs("lab-1", budget_usd=2.0)
    assert runs.current is None and runs.current_id == "lab-1"
    with runs.open("exp") as outer:
        assert outer.budget.cap_usd == 2.0 and runs.current_id == "exp"
        with runs.open("exp") as inner:
            assert inner is outer
        with runs.open("other", budget_usd=None) as other:
            assert other.budget.cap_usd is None and runs.current_id == "other"
        assert runs.current_id == "exp"
    assert runs.current is None
    with runs.open("exp") as again:
        assert again is not outer  # its spend lived while a block was open


def test_the_current_run_follows_a_sync_call_into_the_runner_loop():
    runs = Runs("lab-1")
    runner = LoopRunner(name="test-runs-loop")

    async def current() -> str:
        return runs.current_id

    try:
        with runs.open("exp-7"):
            assert runner.run(current(), timeout=5) == "exp-7"
        assert runner.run(current(), timeout=5) == "lab-1"
    finally:
        runner.close()


# -- attempts --------------------------------------------------------------------------------
def test_backoff_is_full_jitter_under_an_exponential_ceiling_and_honours_retry_after():
    limits = ModelLimits(backoff_base_s=1.0, backoff_cap_s=5.0, retry_after_cap_s=10.0)
    rng = random.Random(1)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (10, 5.0)]:
        delays = [backoff_delay(attempt, limits, None, rng) for _ in range(200)]
        assert 0 <= min(delays) and max(delays) <= ceiling
        assert max(delays) > ceiling * 0.8  # jitter spans the range, not a constant
    assert backoff_delay(1, limits, 3.0, rng) == 3.0
    assert backoff_delay(1, limits, 3600.0, rng) == 10.0


def test_input_estimate_is_chars_over_four_plus_overheads():
    text = "x" * 400
    assert estimate_input_tokens([Message.user(text)]) == 100 + 4
    call = ToolCall(id="1", name="f", arguments={"a": 1})
    with_call = estimate_input_tokens([Message.user(text), Message.assistant("", [call])])
    assert with_call > 108
    tool = ToolSpec(name="lookup", description="d" * 400)
    assert estimate_input_tokens([Message.user(text)], [tool]) > 204
    image = Message.user("hi", ImagePart(url="https://example.com/a.png"))
    assert estimate_input_tokens([image]) >= 1000


def test_within_turns_its_own_expiry_into_a_retryable_provider_timeout():
    model = ScriptedModel(name="slow")

    async def go() -> None:
        with pytest.raises(ProviderTimeout, match="no answer within") as info:
            await within(asyncio.sleep(5), 0.01, "answer", model)
        assert info.value.retryable and info.value.provider == "scripted"

        async def inner_timeout() -> None:
            raise TimeoutError("from the provider")

        with pytest.raises(TimeoutError, match="from the provider"):
            await within(inner_timeout(), 5, "answer", model)
        assert await within(asyncio.sleep(0, "ok"), None, "answer", model) == "ok"

    asyncio.run(go())


def test_a_provider_leaves_its_total_timeout_to_an_earlier_gateway_deadline(monkeypatch):
    """guard_call adds its own timer only when the enclosing ``within`` would wait longer."""
    from aillm_lab.llm import _clients

    made: list[float] = []
    real_timeout = asyncio.timeout

    def counting(delay: float | None) -> asyncio.Timeout:
        made.append(delay)
        return real_timeout(delay)

    monkeypatch.setattr(_clients.asyncio, "timeout", counting)
    model = ScriptedModel(name="slow")

    def translate(exc: BaseException, started: bool) -> None:
        return None  # nothing to translate: errors pass unchanged

    async def go() -> None:
        call = _clients.guard_call(asyncio.sleep(0, "ok"), translate, 30.0)
        assert await within(call, 5, "answer", model) == "ok" and made == []
        slow = _clients.guard_call(asyncio.sleep(5), translate, 30.0)
        with pytest.raises(ProviderTimeout, match="no answer within 0.02 s"):
            await within(slow, 0.02, "answer", model)  # the gateway's deadline still holds
        assert made == []
        short = _clients.guard_call(asyncio.sleep(5), translate, 0.02)
        with pytest.raises(TimeoutError) as info:
            await within(short, 5, "answer", model)  # the provider's own limit comes first
        assert not isinstance(info.value, ProviderTimeout) and made == [0.02]
        assert _clients.outer_deadline.get() is None  # nothing leaks out of within()
        assert await _clients.guard_call(asyncio.sleep(0, "bare"), translate, 1.0) == "bare"
        assert made == [0.02, 1.0]  # a bare provider call keeps its own timeout

    asyncio.run(go())


@pytest.mark.parametrize(("field", "value", "allowed"), [
    ("max_attempts", 0, ">= 1 and <= 20"), ("max_attempts", 21, "<= 20"),
    ("backoff_cap_s", 601, "<= 600"), ("retry_after_cap_s", -1, ">= 0"),
    ("ttft_timeout_s", 0, "> 0"), ("total_timeout_s", 0, "> 0"),
    ("connect_timeout_s", 0, "> 0"), ("adaptive_grow_after", 0, ">= 1"),
])
def test_new_limit_fields_fail_at_load_time_naming_the_field_and_range(field, value, allowed):
    with pytest.raises(ConfigError) as info:
        LabSettings(limits={"openai:gpt-4o": {field: value}})
    assert f"limits.openai:gpt-4o.{field}" in str(info.value) and allowed in str(info.value)


def test_limit_defaults_retry_a_few_times_and_leave_timeouts_to_the_lab():
    limits = ModelLimits()
    assert limits.max_attempts == 4 and not limits.adaptive
    assert limits.total_timeout_s is None and limits.ttft_timeout_s is None
    assert limits.connect_timeout_s == 10.0
