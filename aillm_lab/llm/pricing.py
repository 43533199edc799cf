"""USD prices per call, from the ``genai-prices`` data set or the user's own overrides.

Prices are per million tokens. ``None`` means unknown, never 0: the call log records it as
such and a budget refuses what it cannot price. Local, scripted and Ollama models run on
the user's machine and cost 0. ``Usage.input_tokens`` counts all input, cached included
(the OpenAI convention genai-prices uses); cache reads and writes are priced on top of
that split, not added to it.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from aillm_lab.errors import ConfigError
from aillm_lab.llm.types import Usage

FREE_PROVIDERS = frozenset({"local", "scripted", "ollama"})


def prices_version() -> str | None:
    """The installed genai-prices version, recorded beside costs; None if not installed."""
    try:
        return version("genai-prices")
    except PackageNotFoundError:
        return None


@dataclass(frozen=True)
class Price:
    """USD per million tokens; cache prices default to the input price."""

    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None

    def __post_init__(self) -> None:
        for name in ("input", "output", "cache_read", "cache_write"):
            value = getattr(self, name)
            if value is not None and not (0 <= value < 1e6):
                raise ConfigError(f"price {name} = {value!r}: must be >= 0 and < 1e6 USD per "
                                  "million tokens.", fields=(name,))

    def cost(self, usage: Usage) -> float:
        reads, writes = _cache_split(usage)
        plain = usage.input_tokens - reads - writes
        read_price = self.input if self.cache_read is None else self.cache_read
        write_price = self.input if self.cache_write is None else self.cache_write
        return (plain * self.input + reads * read_price + writes * write_price
                + usage.output_tokens * self.output) / 1e6


class Pricing:
    """Prices calls; ``overrides`` maps ``"provider:model"`` to a ``Price`` or a dict of it.

    ``Pricing(overrides={"openai:my-finetune": {"input": 0.3, "output": 1.2}})``. An
    override wins over everything else; then ``free_providers`` cost 0; then genai-prices.
    """

    def __init__(self, overrides: Mapping[str, Price | Mapping[str, float]] | None = None, *,
                 free_providers: frozenset[str] = FREE_PROVIDERS) -> None:
        self.overrides = {spec: _as_price(spec, p) for spec, p in (overrides or {}).items()}
        self.free_providers = free_providers
        self.version = prices_version()

    def __repr__(self) -> str:
        return f"<Pricing genai-prices {self.version} overrides={sorted(self.overrides)}>"

    def price(self, provider: str, model: str, usage: Usage) -> float | None:
        """USD for ``usage`` on ``provider:model``, or None when the price is unknown."""
        override = self.overrides.get(f"{provider}:{model}")
        if override is not None:
            return override.cost(usage)
        if provider in self.free_providers:
            return 0.0
        return _genai_price(provider, model, usage)

    def worst_case(self, provider: str, model: str, input_tokens: int,
                   max_tokens: int) -> float | None:
        """The most a call can cost: all input (cache writes cost more), ``max_tokens`` out."""
        plain = Usage(input_tokens=input_tokens, output_tokens=max_tokens)
        written = plain.model_copy(update={"cache_write_tokens": input_tokens})
        costs = [self.price(provider, model, plain), self.price(provider, model, written)]
        known = [c for c in costs if c is not None]
        return max(known) if len(known) == len(costs) else None

    def source(self, provider: str, model: str) -> str:
        """Where a price comes from: 'free', 'override', 'genai-prices X.Y.Z' or 'unknown'."""
        if f"{provider}:{model}" in self.overrides:
            return "override"
        if provider in self.free_providers:
            return "free"
        known = _genai_price(provider, model, Usage()) is not None
        return f"genai-prices {self.version}" if known else "unknown"


_default = Pricing()


def price(provider: str, model: str, usage: Usage) -> float | None:
    """USD for ``usage`` with the bundled prices (no overrides); None when unknown."""
    return _default.price(provider, model, usage)


def worst_case(provider: str, model: str, input_tokens: int, max_tokens: int) -> float | None:
    """The most a call can cost with the bundled prices; None when unknown."""
    return _default.worst_case(provider, model, input_tokens, max_tokens)


def _as_price(spec: str, value: Price | Mapping[str, Any]) -> Price:
    if isinstance(value, Price):
        return value
    allowed = {"input", "output", "cache_read", "cache_write"}
    unknown = set(value) - allowed
    if unknown or not {"input", "output"} <= set(value):
        raise ConfigError(f"price for {spec!r} = {dict(value)!r}: give 'input' and 'output' "
                          f"(and optionally 'cache_read', 'cache_write') in USD per million "
                          f"tokens; unknown keys: {sorted(unknown)}", fields=(spec,))
    return Price(**value)


def _cache_split(usage: Usage) -> tuple[int, int]:
    """Cache reads and writes, clipped so they never exceed the input they are part of."""
    reads = min(usage.cache_read_tokens, usage.input_tokens)
    return reads, min(usage.cache_write_tokens, usage.input_tokens - reads)


def _genai_price(provider: str, model: str, usage: Usage) -> float | None:
    flat = _flat_price(provider, model, time.monotonic() // _PRICE_TTL_S)
    if flat is not None:
        return flat.cost(usage) if isinstance(flat, Price) else None
    return _genai_calc(provider, model, usage)


_PRICE_TTL_S = 3600.0  # prices can change by date; re-resolve each hour
_SIMPLE_KEYS = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok")


@functools.lru_cache(maxsize=512)
def _flat_price(provider: str, model: str, _epoch: float) -> Price | bool | None:
    """The model's price as a plain ``Price`` when it is flat (no tiers), else None.

    Why: ``genai_prices.calc_price`` takes ~100 µs a call (Decimal unit machinery), which was
    the gateway's largest overhead; a flat price gives the same number with four products.
    ``False`` caches "unknown model"; None sends tiered prices to the full calculation.
    """
    try:
        import genai_prices
    except ImportError:
        return False
    try:
        calc = genai_prices.calc_price(genai_prices.Usage(input_tokens=0, output_tokens=0),
                                       model, provider_id=provider)
    except (LookupError, ValueError):
        return False
    values = {k: getattr(calc.model_price, k, None) for k in _SIMPLE_KEYS}
    if not all(v is None or isinstance(v, Decimal) for v in values.values()):
        return None
    if values["input_mtok"] is None or values["output_mtok"] is None:
        return None
    return Price(input=float(values["input_mtok"]), output=float(values["output_mtok"]),
                 cache_read=_float(values["cache_read_mtok"]),
                 cache_write=_float(values["cache_write_mtok"]))


def _float(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _genai_calc(provider: str, model: str, usage: Usage) -> float | None:
    """genai-prices' full calculation, for tiered prices."""
    try:
        import genai_prices
    except ImportError:  # an optional data set: without it only overrides price calls
        return None
    reads, writes = _cache_split(usage)
    counts = {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
              "cache_read_tokens": reads, "cache_write_tokens": writes}
    try:
        calc = genai_prices.calc_price(genai_prices.Usage(**counts), model,
                                       provider_id=provider)
    except (LookupError, ValueError):
        return None
    return float(calc.total_price)
