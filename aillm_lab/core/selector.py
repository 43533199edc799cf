"""``ModelSelector`` (``lab.select_model``): a model for a job by what it can do, what it costs
and how fast it has answered here, with fallbacks and the reasons.

Why these three: a capability a model lacks fails the job (no tool calls, no JSON, no
images, too short a context); a price over the caller's budget per call is refused by the
gateway anyway; and among models that can do the job, the one that answered fastest in
this home's call log is the best guess for the next call. Capabilities are what the
``Model`` classes declare (``supports_tools``, ``supports_structured``, ``supports_images``);
context windows come from the model object (a ``context_window`` attribute) or the
genai-prices data set; prices from the Lab's ``Pricing`` (its overrides, then genai-prices);
latency is the median of answered, uncached calls in the call log.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from aillm_lab.display import Displayable, fields_table
from aillm_lab.errors import AillmError, ConfigError, ModelNotAvailable
from aillm_lab.llm.base import Model
from aillm_lab.llm.types import Usage
from aillm_lab.runtime import sync_twin

if TYPE_CHECKING:
    import pandas as pd

    from aillm_lab.core.lab import Lab

Prefer = Literal["latency", "cost"]
# a need -> the Model attribute that declares it
CAPABILITIES = {"tools": "supports_tools", "json": "supports_structured",
                "vision": "supports_images"}
ALIASES = {"structured": "json", "images": "vision", "image": "vision", "tool": "tools"}
_LATENCY_SQL = """
SELECT model, count(*) AS calls, median(latency_s) AS p50, quantile_cont(latency_s, 0.95) AS p95
FROM calls
WHERE status = 'ok' AND NOT cache_hit AND NOT replay_hit AND latency_s IS NOT NULL
GROUP BY model
"""


class Candidate(BaseModel):
    """One model the selector weighed: what it has, costs and did, and what it lacks."""

    model: str
    fits: bool
    missing: list[str] = Field(default_factory=list, description="why it does not fit")
    capabilities: list[str] = Field(default_factory=list)
    context_window: int | None = None
    usd_per_call: float | None = Field(None, description="estimated; None when unknown")
    price_source: str = "unknown"
    p50_latency_s: float | None = Field(None, description="observed here; None if never")
    p95_latency_s: float | None = None
    observed_calls: int = 0


class Selection(BaseModel, Displayable):
    """The chosen ``model``, the ``fallbacks`` in order, ``why``, and every ``candidate``."""

    model: str
    fallbacks: list[str] = Field(default_factory=list)
    why: str
    candidates: list[Candidate] = Field(default_factory=list)

    def __str__(self) -> str:
        return self.model

    def to_frame(self) -> pd.DataFrame:
        """One row per candidate, the chosen one first, then the fallbacks, then the rest."""
        import pandas as pd

        order = [self.model, *self.fallbacks]
        rank = {name: i for i, name in enumerate(order)}
        rows = sorted(self.candidates, key=lambda c: rank.get(c.model, len(order)))
        frame = pd.DataFrame([c.model_dump() for c in rows], columns=list(Candidate.model_fields))
        frame["missing"] = frame["missing"].map("; ".join)
        frame["capabilities"] = frame["capabilities"].map(", ".join)
        return frame

    def _repr_html_(self) -> str:
        body = self.to_frame().to_html(index=False, na_rep="")
        return fields_table("Selection", [("model", self.model),
                                          ("fallbacks", ", ".join(self.fallbacks) or "none"),
                                          ("why", self.why)], body)


class ModelSelector:
    """Picks among ``candidates`` (``provider:model`` strings or ``Model`` objects); by
    default the Lab's known models: its default model, ``settings.model``, ``fallbacks``,
    the models it has prices or limits for, and every model its call log has seen answer.

    A call's cost is estimated for ``input_tokens`` in and ``output_tokens`` out.
    """

    def __init__(self, lab: Lab, *, candidates: Iterable[str | Model] | None = None,
                 input_tokens: int = 1000, output_tokens: int = 500) -> None:
        _check_tokens(input_tokens, output_tokens)
        self.lab = lab
        self.runner = lab.runner
        self.candidates = None if candidates is None else list(candidates)
        self.input_tokens, self.output_tokens = input_tokens, output_tokens

    def __repr__(self) -> str:
        return f"<ModelSelector candidates={self.candidates or 'the Lab’s known models'}>"

    async def aselect(self, needs: Iterable[str] = (), *, max_usd_per_call: float | None = None,
                      min_context: int | None = None, max_latency_s: float | None = None,
                      prefer: Prefer = "latency",
                      candidates: Iterable[str | Model] | None = None) -> Selection:
        """The best candidate that has every need (``tools``, ``json``, ``vision``), at
        least ``min_context`` tokens of context, an estimated cost per call at most
        ``max_usd_per_call`` (and within the Lab's remaining budget) and an observed p95
        latency at most ``max_latency_s``; ranked by observed median latency (models never
        seen answer come after those that have), then price, or price first with
        ``prefer="cost"``. The others that fit are the fallbacks, in rank order.

        Raises ``ModelNotAvailable`` naming what each candidate lacks when none fits.
        """
        wanted = _needs(needs)
        _check_limits(max_usd_per_call, min_context, max_latency_s, prefer)
        pool = list(candidates) if candidates is not None else self.candidates
        specs = pool if pool is not None else await self._known()
        if not specs:
            raise ModelNotAvailable("select_model: there are no candidate models. Pass "
                                    "candidates=['provider:model', …], or set "
                                    "settings.model or settings.fallbacks.")
        latency = await self._latencies()
        weighed = [self._weigh(spec, wanted, max_usd_per_call, min_context, max_latency_s,
                               latency) for spec in _unique(specs)]
        fitting = [c for c in weighed if c.fits]
        if not fitting:
            raise ModelNotAvailable(_nothing_fits(weighed, wanted, max_usd_per_call,
                                                  min_context, max_latency_s),
                                    missing={c.model: list(c.missing) for c in weighed})
        order = {c.model: i for i, c in enumerate(weighed)}
        fitting.sort(key=lambda c: _rank(c, prefer, order[c.model]))
        best = fitting[0]
        return Selection(model=best.model, fallbacks=[c.model for c in fitting[1:]],
                         why=_why(best, fitting, weighed, prefer, self.input_tokens,
                                  self.output_tokens),
                         candidates=weighed)

    select = sync_twin(aselect)

    # -- the candidates and what is known of them --------------------------------------------
    async def _known(self) -> list[str | Model]:
        """The Lab's configured models, then those its call log has seen answer."""
        settings = self.lab.settings
        known: list[str | Model] = [self.lab.default_model_id]
        known += [s for s in (settings.model,) if s]
        known += [*settings.fallbacks, *settings.prices, *settings.limits]
        seen = await self.lab.acalls("SELECT DISTINCT model FROM calls WHERE status = 'ok' "
                                     "ORDER BY model")
        known += list(seen["model"])
        # the embedding model embeds; it does not chat
        return [k for k in known if k != settings.embedding_model]

    async def _latencies(self) -> dict[str, tuple[int, float, float]]:
        frame = await self.lab.acalls(_LATENCY_SQL)
        return {row.model: (int(row.calls), float(row.p50), float(row.p95))
                for row in frame.itertuples(index=False)}

    def _weigh(self, spec: str | Model, wanted: list[str], max_usd: float | None,
               min_context: int | None, max_latency_s: float | None,
               latency: dict[str, tuple[int, float, float]]) -> Candidate:
        name = spec.id if isinstance(spec, Model) else str(spec)
        try:
            model = self.lab.model(spec)
        except AillmError as exc:  # unknown provider, missing extra or weights, bad spec
            return Candidate(model=name, fits=False, missing=[f"not available here: {exc}"])
        caps = [need for need, attr in CAPABILITIES.items() if getattr(model, attr, False)]
        missing = [f"no {need}" for need in wanted if need not in caps]
        context = context_window(model)
        if min_context is not None:
            if context is None:
                missing.append(f"context window unknown (need {min_context:,} tokens)")
            elif context < min_context:
                missing.append(f"context {context:,} < {min_context:,} tokens")
        pricing = self.lab.gateway.pricing
        usage = Usage(input_tokens=self.input_tokens, output_tokens=self.output_tokens)
        cost = pricing.price(model.provider, model.name, usage)
        source = pricing.source(model.provider, model.name)
        if max_usd is not None:
            if cost is None:
                missing.append("price unknown (set settings.prices for it)")
            elif cost > max_usd:
                missing.append(f"over budget: ~${cost:.6f} per call > ${max_usd:g}")
        remaining = self.lab.gateway.budget.remaining_usd
        if cost is not None and remaining is not None and cost > remaining:
            missing.append(f"over the Lab's remaining budget: ~${cost:.6f} > "
                           f"${remaining:.6f}")
        calls, p50, p95 = latency.get(model.id, (0, None, None))
        if max_latency_s is not None and p95 is not None and p95 > max_latency_s:
            missing.append(f"too slow: p95 {p95:.3g} s > {max_latency_s:g} s")
        return Candidate(model=model.id, fits=not missing, missing=missing, capabilities=caps,
                         context_window=context, usd_per_call=cost, price_source=source,
                         p50_latency_s=p50, p95_latency_s=p95, observed_calls=calls)


def context_window(model: Model) -> int | None:
    """Tokens of input the model takes: its own ``context_window``, else genai-prices'."""
    own = getattr(model, "context_window", None)
    if isinstance(own, int) and not isinstance(own, bool) and own > 0:
        return own
    return _listed_context(model.provider, model.name)


@functools.lru_cache(maxsize=256)
def _listed_context(provider: str, name: str) -> int | None:
    try:
        import genai_prices
    except ImportError:
        return None
    try:
        found = genai_prices.calc_price(genai_prices.Usage(input_tokens=0, output_tokens=0),
                                        name, provider_id=provider)
    except (LookupError, ValueError):
        return None
    return found.model.context_window


# -- checks, ranking and the words ------------------------------------------------------------
def _needs(needs: Iterable[str]) -> list[str]:
    if isinstance(needs, str):
        needs = [needs]
    out: list[str] = []
    for need in needs:
        key = ALIASES.get(str(need).lower(), str(need).lower())
        if key not in CAPABILITIES:
            raise ConfigError(f"needs: {need!r} is not a capability the selector knows. Use "
                              f"{', '.join(map(repr, CAPABILITIES))}; for context length pass "
                              "min_context=.", fields=("needs",))
        if key not in out:
            out.append(key)
    return sorted(out, key=list(CAPABILITIES).index)  # a set's order must not show


def _check_limits(max_usd: float | None, min_context: int | None, max_latency_s: float | None,
                  prefer: str) -> None:
    if max_usd is not None and (isinstance(max_usd, bool) or not isinstance(max_usd, int | float)
                                or not max_usd >= 0):
        raise ConfigError(f"max_usd_per_call = {max_usd!r}: give USD >= 0, or None for no cap.",
                          fields=("max_usd_per_call",))
    if min_context is not None and (isinstance(min_context, bool)
                                    or not isinstance(min_context, int) or min_context < 1):
        raise ConfigError(f"min_context = {min_context!r}: give a whole number of tokens >= 1, "
                          "or None.", fields=("min_context",))
    if max_latency_s is not None and (isinstance(max_latency_s, bool)
                                      or not isinstance(max_latency_s, int | float)
                                      or not max_latency_s > 0):
        raise ConfigError(f"max_latency_s = {max_latency_s!r}: give seconds > 0, or None.",
                          fields=("max_latency_s",))
    if prefer not in ("latency", "cost"):
        raise ConfigError(f"prefer = {prefer!r}: use 'latency' or 'cost'.", fields=("prefer",))


def _check_tokens(input_tokens: int, output_tokens: int) -> None:
    for field, value in (("input_tokens", input_tokens), ("output_tokens", output_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{field} = {value!r}: give a whole number of tokens >= 0.",
                              fields=(field,))


def _unique(specs: Iterable[str | Model]) -> list[str | Model]:
    seen: set[str] = set()
    out = []
    for spec in specs:
        key = spec.id if isinstance(spec, Model) else str(spec)
        if key not in seen:
            seen.add(key)
            out.append(spec)
    return out


def _rank(c: Candidate, prefer: Prefer, index: int) -> tuple[Any, ...]:
    latency = (c.p50_latency_s is None, c.p50_latency_s or 0.0)
    cost = (c.usd_per_call is None, c.usd_per_call or 0.0)
    return (*latency, *cost, index) if prefer == "latency" else (*cost, *latency, index)


def _why(best: Candidate, fitting: list[Candidate], weighed: list[Candidate], prefer: Prefer,
         input_tokens: int, output_tokens: int) -> str:
    has = ", ".join(best.capabilities) or "no declared capabilities"
    if best.usd_per_call is None:
        cost = "price unknown"
    elif best.usd_per_call == 0:
        cost = "free" if best.price_source == "free" else f"free ({best.price_source})"
    else:
        cost = (f"~${best.usd_per_call:.6f} per call ({input_tokens} tokens in, "
                f"{output_tokens} out; {best.price_source})")
    seen = ("never observed here" if best.p50_latency_s is None else
            f"median latency {best.p50_latency_s:.3g} s over {best.observed_calls} calls here")
    ranked = "fastest observed" if prefer == "latency" else "cheapest"
    rank = (f"The only one of {len(weighed)} that fits." if len(fitting) == 1 else
            f"Ranked {ranked} of {len(fitting)} that fit.")
    text = f"{best.model}: has {has}; {cost}; {seen}. {rank}"
    rejected = [f"{c.model} ({'; '.join(c.missing)})" for c in weighed if not c.fits]
    if rejected:
        text += " Left out: " + ", ".join(rejected) + "."
    return text


def _nothing_fits(weighed: list[Candidate], wanted: list[str], max_usd: float | None,
                  min_context: int | None, max_latency_s: float | None) -> str:
    asked = [f"needs={{{', '.join(wanted)}}}" if wanted else "no needs"]
    asked += [f"{k}={v!r}" for k, v in (("max_usd_per_call", max_usd),
                                         ("min_context", min_context),
                                         ("max_latency_s", max_latency_s)) if v is not None]
    lines = "\n  ".join(f"{c.model}: {'; '.join(c.missing)}" for c in weighed)
    return (f"select_model: no candidate fits ({', '.join(asked)}). What each lacks:\n  "
            f"{lines}\nAdd a model that has it (candidates=[…] or settings.fallbacks), or "
            "relax the criteria.")


__all__ = ["Candidate", "ModelSelector", "Selection", "context_window"]
