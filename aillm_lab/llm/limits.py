"""What the gateway waits for or refuses: rate buckets, concurrency, budgets, deadlines.

Everything takes an injectable ``clock`` and ``sleep`` so tests run on fake time, and is
used from one event loop (the runner's); budgets also take a lock, since a notebook thread
may read them while the loop settles a call.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import math
import numbers
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from decimal import Context, Decimal
from fractions import Fraction
from typing import Any, TypeVar

from pydantic import BaseModel

from aillm_lab.config import ModelLimits
from aillm_lab.errors import BudgetExceeded, ConfigError, ProviderConnectionError
from aillm_lab.llm.base import Model, OutputSpec
from aillm_lab.llm.types import Message, ToolSpec

T = TypeVar("T")
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
UNSET: Any = object()  # "argument not given", where None means "no cap"
_EPS = 1e-9


class TokenBucket:
    """Refills ``rate`` tokens a second up to ``capacity``, starting at one token: no burst.

    A request may take the bucket into debt once it holds one token (or the whole request,
    if smaller), so a request bigger than the capacity still gets through and later ones
    wait for the debt to be repaid: the long-run rate holds. Waiters are served in order.
    """

    def __init__(self, rate_per_s: float, capacity: float | None = None, *,
                 clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep,
                 initial: float = 1.0) -> None:
        if rate_per_s <= 0:
            raise ValueError(f"TokenBucket rate_per_s = {rate_per_s}: must be > 0")
        self.rate = rate_per_s
        self.capacity = max(1.0, rate_per_s if capacity is None else capacity)
        self._clock, self._sleep = clock, sleep
        self._level = min(initial, self.capacity)
        self._stamp = clock()
        self._lock: asyncio.Lock | None = None

    @classmethod
    def per_minute(cls, per_minute: float, *, clock: Clock = time.monotonic,
                   sleep: Sleep = asyncio.sleep) -> TokenBucket:
        """A bucket for RPM or TPM: refills per second, holds at most one second's worth."""
        return cls(per_minute / 60.0, clock=clock, sleep=sleep)

    @property
    def level(self) -> float:
        self._refill()
        return self._level

    async def acquire(self, amount: float = 1.0) -> float:
        """Wait until ``amount`` may be taken, take it, and return the seconds waited."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        need = min(amount, 1.0)
        waited = 0.0
        async with self._lock:
            self._refill()
            while self._level < need - _EPS:
                delay = (need - self._level) / self.rate
                await self._sleep(delay)
                waited += delay
                self._refill()
            self._level -= amount
        return waited

    def adjust(self, delta: float) -> None:
        """Take ``delta`` more tokens (or give back, if negative) once real usage is known."""
        self._refill()
        self._level = min(self.capacity, self._level - delta)

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(self.capacity, self._level + max(0.0, now - self._stamp) * self.rate)
        self._stamp = now


class ConcurrencyLimit:
    """A FIFO semaphore whose size can change; in adaptive mode 429s shrink it.

    One 429 burst (429s within ``cooldown_s`` of each other) cuts the limit once, to ×0.8
    (at least 1); every ``grow_after`` successes add one slot back, up to ``maximum``.
    """

    def __init__(self, maximum: int, *, adaptive: bool = False, grow_after: int = 20,
                 cooldown_s: float = 1.0, clock: Clock = time.monotonic) -> None:
        self.maximum = self.limit = maximum
        self.adaptive, self.grow_after, self.cooldown_s = adaptive, grow_after, cooldown_s
        self.in_use = 0
        self._clock = clock
        self._last_cut = -math.inf
        self._successes = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self.in_use < self.limit and not self._waiters:
            self.in_use += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot was handed to us just as we were cancelled
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        self.in_use -= 1
        self._wake()

    def on_rate_limited(self) -> None:
        if not self.adaptive:
            return
        now = self._clock()
        if now - self._last_cut >= self.cooldown_s:
            self.limit = max(1, int(self.limit * 0.8))
            self._last_cut = now
        self._successes = 0

    def on_success(self) -> None:
        if not self.adaptive or self.limit >= self.maximum:
            return
        self._successes += 1
        if self._successes >= self.grow_after:
            self.limit += 1
            self._successes = 0
            self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_use < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_use += 1
                waiter.set_result(None)


class ModelLimiter:
    """The limits of one (provider, model): a concurrency slot, then RPM and TPM tokens."""

    def __init__(self, limits: ModelLimits, *, clock: Clock = time.monotonic,
                 sleep: Sleep = asyncio.sleep) -> None:
        self.limits = limits
        self.concurrency = ConcurrencyLimit(limits.concurrency, adaptive=limits.adaptive,
                                            grow_after=limits.adaptive_grow_after, clock=clock)
        self.rpm = TokenBucket.per_minute(limits.rpm, clock=clock, sleep=sleep) \
            if limits.rpm else None
        self.tpm = TokenBucket.per_minute(limits.tpm, clock=clock, sleep=sleep) \
            if limits.tpm else None

    async def acquire(self, tokens: int) -> None:
        """Hold a slot, then wait for one request and ``tokens`` (an estimate) of rate."""
        await self.concurrency.acquire()
        try:
            if self.rpm is not None:
                await self.rpm.acquire(1)
            if self.tpm is not None:
                await self.tpm.acquire(tokens)
        except BaseException:
            self.concurrency.release()
            raise

    def release(self, estimated: int, actual: int | None) -> None:
        """Free the slot and correct the TPM charge: ``actual`` None keeps the estimate."""
        self.concurrency.release()
        if self.tpm is not None and actual is not None:
            self.tpm.adjust(actual - estimated)


class Budget:
    """A USD cap with what was spent and what in-flight calls have reserved.

    Amounts are kept as exact decimal fractions of the floats' shortest reprs, so "spent
    never exceeds the cap" holds exactly, not up to float rounding, and $0.1 + $0.9 fits a
    $1 cap. ``cap_usd`` None tracks spend without a limit in a Decimal, as exact and 4x
    cheaper per call; Fractions are kept where a cap is checked (setting one folds it in).
    """

    def __init__(self, cap_usd: float | None, label: str) -> None:
        self._cap_usd, self.label = cap_usd, label
        self._spent = Fraction(0)
        self._reserved = Fraction(0)
        self._loose = Decimal(0)  # spend while uncapped, exact too but without Fractions
        self.refused = 0  # calls this cap turned away: a caller whose code swallowed the
        # BudgetExceeded (an agent ends its run with status "budget") can still tell

    @property
    def cap_usd(self) -> float | None:
        return self._cap_usd

    @cap_usd.setter
    def cap_usd(self, cap: float | None) -> None:
        with _budget_lock:  # capped spend lives in the Fraction: fold the Decimal in
            self._spent += Fraction(self._loose)
            self._loose = Decimal(0)
            self._cap_usd = cap

    @property
    def spent_usd(self) -> float:
        return float(self._spent + Fraction(self._loose)) if self._loose else float(self._spent)

    @property
    def reserved_usd(self) -> float:
        return float(self._reserved)

    @property
    def remaining_usd(self) -> float | None:
        return None if self.cap_usd is None else float(
            _usd(self.cap_usd) - self._spent - self._reserved)

    def __repr__(self) -> str:
        cap = "no cap" if self.cap_usd is None else f"cap ${self.cap_usd:.4f}"
        return (f"<Budget {self.label}: spent ${self.spent_usd:.6f}, reserved "
                f"${self.reserved_usd:.6f}, {cap}>")


_budget_lock = threading.Lock()


class Reservation:
    """Money held on some budgets for one attempt; ``settle`` swaps it for the real cost."""

    __slots__ = ("amount", "budgets", "settled")

    def __init__(self, budgets: Sequence[Budget], amount: Fraction) -> None:
        self.budgets, self.amount = tuple(budgets), amount
        self.settled = False

    def settle(self, actual_usd: float | None) -> None:
        """Release the hold and add ``actual_usd``; None (unknown) charges the whole hold.

        Idempotent, so a ``finally`` may call it after a success already did.
        """
        if self.settled:
            return
        exact: Fraction | None = None  # made only for a capped budget: Fractions are slow
        with _budget_lock:
            for budget in self.budgets:  # zeros skipped for the same reason
                if self.amount:
                    budget._reserved -= self.amount
                if budget._cap_usd is None:
                    paid = float(self.amount) if actual_usd is None else actual_usd
                    if paid:
                        budget._loose = _EXACT.add(budget._loose, Decimal(repr(float(paid))))
                    continue
                if exact is None:
                    exact = self.amount if actual_usd is None else _usd(actual_usd)
                if exact:
                    budget._spent += exact
            self.settled = True


def reserve(budgets: Sequence[Budget], worst_usd: float | None, what: str) -> Reservation:
    """Hold ``worst_usd`` on every budget, or raise ``BudgetExceeded`` and hold nothing.

    ``worst_usd`` None means the price is unknown: refused when any budget has a cap,
    since nobody can tell whether it fits; set a price (``Pricing(overrides=…)``) to allow it.
    """
    capped = [b for b in budgets if b.cap_usd is not None]
    if worst_usd is None:
        if capped:
            raise BudgetExceeded(
                f"{what}: the price is unknown, so it cannot be checked against the "
                f"{capped[0].label} budget (${capped[0].cap_usd:.4f}). Give a price, e.g. "
                "Pricing(overrides={'provider:model': {'input': 1.0, 'output': 2.0}}) "
                "(USD per million tokens), or remove the budget.")
        return Reservation(budgets, Fraction(0))
    amount = _usd(worst_usd)
    with _budget_lock:
        for budget in capped:
            assert budget.cap_usd is not None
            if budget._spent + budget._reserved + amount > _usd(budget.cap_usd):
                budget.refused += 1
                raise BudgetExceeded(
                    f"{what}: worst case ${worst_usd:.6f} does not fit the {budget.label} "
                    f"budget (cap ${budget.cap_usd:.4f}, spent ${budget.spent_usd:.6f}, "
                    f"reserved by calls in flight ${budget.reserved_usd:.6f}). No request "
                    "was sent. Lower max_tokens, raise the budget, or start a new run.")
        if amount:
            for budget in budgets:
                budget._reserved += amount
    return Reservation(budgets, amount)


_EXACT = Context(prec=200)  # far more digits than sums of float reprs can need


@functools.lru_cache(maxsize=4096)
def _usd(amount: float) -> Fraction:
    """The exact decimal a float prints as (repr round-trips, so order is kept).

    Cached: the same few prices repeat, and building a Fraction from a string is slow."""
    return Fraction(repr(float(amount)))


def check_budget(value: Any, name: str = "budget_usd") -> None:
    """A USD cap must be a real number, 0 or more (not a bool, NaN or infinity); else a
    ``ConfigError`` naming ``name``, rather than a confusing refusal at the first call."""
    ok = (isinstance(value, numbers.Real) and not isinstance(value, bool)
          and math.isfinite(value) and value >= 0)
    if not ok:
        raise ConfigError(f"{name}={value!r}: give a number of USD, 0 or more, or None for "
                          "no cap.", fields=(name,))


@dataclass
class Run:
    """A named run with its own budget; ``Gateway.run`` opens one. A run opened inside
    another (an agent's run in an experiment's cell) has it as ``parent``: its calls count
    against every budget up the chain, so the outer cap holds for the inner run too."""

    run_id: str
    budget: Budget
    users: int = 0
    parent: Run | None = None

    @property
    def spent_usd(self) -> float:
        return self.budget.spent_usd

    @property
    def budgets(self) -> tuple[Budget, ...]:
        """This run's budget, then those of the runs it was opened inside."""
        chain, run = [], self
        while run is not None:
            chain.append(run.budget)
            run = run.parent
        return tuple(chain)


class Runs:
    """The open runs and the current one, which a context variable carries into the loop."""

    def __init__(self, default_id: str, budget_usd: float | None = None) -> None:
        self.default_id, self.budget_usd = default_id, budget_usd
        self._runs: dict[str, Run] = {}
        self._lock = threading.Lock()
        self._current: contextvars.ContextVar[Run | None] = contextvars.ContextVar(
            "aillm_run", default=None)

    @property
    def current(self) -> Run | None:
        return self._current.get()

    @property
    def current_id(self) -> str:
        run = self._current.get()
        return run.run_id if run is not None else self.default_id

    def open(self, run_id: str | None = None,
             budget_usd: float | None = UNSET) -> AbstractContextManager[Run]:
        """Make ``run_id`` current; its budget is ``budget_usd``, else the default.

        Blocks with the same id share one run (and its spend) while any of them is open.
        A bad budget is refused here, at the call, before any ``with`` is entered.
        """
        if budget_usd is not UNSET and budget_usd is not None:
            check_budget(budget_usd)
        return self._open(run_id, budget_usd)

    @contextmanager
    def _open(self, run_id: str | None, budget_usd: float | None) -> Iterator[Run]:
        run_id = run_id or f"run-{uuid.uuid4().hex[:12]}"
        cap = self.budget_usd if budget_usd is UNSET else budget_usd
        outer = self._current.get()
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                run = self._runs[run_id] = Run(
                    run_id, Budget(cap, f"run {run_id!r}"),
                    parent=outer if outer is not None and outer.run_id != run_id else None)
            elif budget_usd is not UNSET:
                run.budget.cap_usd = cap
            run.users += 1
        token = self._current.set(run)
        try:
            yield run
        finally:
            self._current.reset(token)
            with self._lock:
                run.users -= 1
                if run.users == 0:
                    self._runs.pop(run_id, None)


# -- attempts: estimates, backoff and deadlines ----------------------------------------------
class ProviderTimeout(ProviderConnectionError):
    """The gateway stopped waiting (first token or whole attempt); retryable like a reset."""


def estimate_input_tokens(messages: Sequence[Message], tools: Sequence[ToolSpec] | None = None,
                          output: OutputSpec = None) -> int:
    """chars/4 of messages, tool calls, tool schemas and output schema; +4 a message, +1000
    an image. An estimate, not a bound: a call whose input is larger can overshoot a budget
    by the difference, and the next calls are then refused."""
    chars = 0
    for m in messages:
        chars += len(m.text) + sum(len(c.name) + len(json.dumps(c.arguments, default=str))
                                   for c in m.tool_calls)
    if tools:
        chars += len(json.dumps([t.model_dump(mode="json") for t in tools]))
    if isinstance(output, type) and issubclass(output, BaseModel):
        chars += len(json.dumps(output.model_json_schema()))
    elif output is not None:
        chars += len(json.dumps(output, default=str))
    images = sum(len(m.images) for m in messages)
    return math.ceil(chars / 4) + 4 * len(messages) + 1000 * images


def backoff_delay(attempt: int, limits: ModelLimits, retry_after_s: float | None,
                  rng: random.Random) -> float:
    """Seconds before retry ``attempt + 1``: Retry-After (capped), else full jitter."""
    if retry_after_s is not None:
        return min(max(retry_after_s, 0.0), limits.retry_after_cap_s)
    ceiling = min(limits.backoff_cap_s, limits.backoff_base_s * 2.0 ** (attempt - 1))
    return rng.uniform(0.0, ceiling)


# The loop time by which an enclosing ``within`` gives up. A provider's own total timeout
# (``_clients.guard_call``) is skipped when this comes first: one timer a call, not two.
outer_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "aillm_outer_deadline", default=None)


async def within(aw: Awaitable[T], seconds: float | None, what: str, model: Model, *,
                 at: float | None = None) -> T:
    """Await ``aw`` for ``seconds`` (or until loop time ``at``); our own expiry becomes a
    retryable ``ProviderTimeout``, while a TimeoutError from inside passes unchanged."""
    if seconds is None and at is None:
        return await aw
    deadline = at if at is not None else asyncio.get_running_loop().time() + (seconds or 0.0)
    timeout = asyncio.timeout_at(deadline)
    token = outer_deadline.set(deadline)
    try:
        async with timeout:
            return await aw
    except TimeoutError:
        if not timeout.expired():
            raise
        limit = f"within {seconds:g} s" if at is None else "before the attempt's deadline"
        raise ProviderTimeout(
            f"{model.id}: no {what} {limit}, so the gateway stopped waiting. Raise "
            "ttft_timeout_s / total_timeout_s in this model's limits if it is just slow.",
            provider=model.provider, model=model.name) from None
    finally:
        outer_deadline.reset(token)
