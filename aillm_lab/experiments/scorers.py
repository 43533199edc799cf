"""Scorers: a cell's output (and its item and record) in, one number out.

A scorer is a plain function ``fn(output, item)`` or ``fn(output, item, cell)`` returning a
number, a bool (1.0 / 0.0) or None (not applicable). ``Scorer`` gives it a name, says which
item columns it needs (checked against the dataset before anything is sent) and whether a
higher value is better, which ``compare`` needs to count wins. The built-ins::

    al.scorers.exact("answer"), al.scorers.contains("answer"), al.scorers.regex(r"\\d+"),
    al.scorers.json_valid(schema), al.scorers.numeric("answer", abs_tol=0.01),
    al.scorers.latency(), al.scorers.cost(), al.scorers.tool_call("possible_answer"),
    al.scorers.judge("Is it correct and concise?", "openai:gpt-4o-mini", reference="answer"),
    al.scorers.recall_at_k("relevant", k=5), al.scorers.mrr(), al.scorers.ndcg_at_k(k=10)
"""

from __future__ import annotations

import inspect
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aillm_lab.errors import ConfigError

ScoreFn = Callable[..., float | bool | None]
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


@dataclass(frozen=True)
class Scorer:
    """A named scoring function; ``columns`` are the item columns it reads."""

    name: str
    fn: ScoreFn
    columns: tuple[str, ...] = ()
    higher_is_better: bool = True
    uses_cell: bool = field(default=False)
    needs_lab: bool = field(default=False)  # an async fn(output, item, cell, lab): a judge

    def __call__(self, output: str | None, item: Mapping[str, Any],
                 cell: Mapping[str, Any] | None = None) -> float | None:
        """The score as a float (None: not applicable); a bad return type is a TypeError."""
        if self.needs_lab:
            raise TypeError(f"scorer {self.name!r} calls a model; an experiment run scores "
                            "it through its Lab")
        value = (self.fn(output, item, cell or {}) if self.uses_cell
                 else self.fn(output, item))
        return to_score(self.name, value)


def to_score(name: str, value: Any) -> float | None:
    """A scorer's return value as a float: bools as 1.0 / 0.0, None kept."""
    if value is None:
        return None
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    raise TypeError(f"scorer {name!r} returned a {type(value).__name__}; return a "
                    "number, a bool or None")


def as_scorer(obj: Any) -> Scorer:
    """A ``Scorer`` as is, or a plain function ``(output, item[, cell])`` named after itself."""
    if isinstance(obj, Scorer):
        return obj
    if not callable(obj):
        raise ConfigError(f"scorers: {obj!r} is not a function; give al.scorers.exact('answer') "
                          "or a function (output, item) -> float", fields=("scorers",))
    try:
        params = [p for p in inspect.signature(obj).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    if len(params) not in (2, 3):
        raise ConfigError(f"scorers: {getattr(obj, '__name__', obj)!r} takes {len(params)} "
                          "arguments; a scorer takes (output, item) or (output, item, cell)",
                          fields=("scorers",))
    name = getattr(obj, "__name__", type(obj).__name__)
    return Scorer(name=name, fn=obj, uses_cell=len(params) == 3)


# -- the built-ins ----------------------------------------------------------------------------
def exact(column: str = "answer", *, ignore_case: bool = False, strip: bool = True,
          name: str = "exact") -> Scorer:
    """1.0 when the output equals ``item[column]`` (stripped, optionally case-folded)."""
    def score(output: str | None, item: Mapping[str, Any]) -> float | None:
        expected = _expected(item, column)
        if expected is None:
            return None
        return float(_norm(output, ignore_case, strip) == _norm(str(expected), ignore_case, strip))

    return Scorer(name, score, (column,))


def contains(column: str = "answer", *, ignore_case: bool = True,
             name: str = "contains") -> Scorer:
    """1.0 when ``item[column]`` appears in the output (case-folded by default)."""
    def score(output: str | None, item: Mapping[str, Any]) -> float | None:
        expected = _expected(item, column)
        if expected is None:
            return None
        needle = _norm(str(expected), ignore_case, True)
        return float(bool(needle) and needle in _norm(output, ignore_case, False))

    return Scorer(name, score, (column,))


def regex(pattern: str, *, flags: int = 0, name: str = "regex") -> Scorer:
    """1.0 when ``pattern`` matches anywhere in the output (``re.search``)."""
    try:
        compiled = re.compile(pattern, flags)
    except re.error as exc:
        raise ConfigError(f"scorers.regex: the pattern {pattern!r} does not compile ({exc}); "
                          "fix it or escape it with re.escape", fields=("pattern",)) from exc

    def score(output: str | None, item: Mapping[str, Any]) -> float:
        return float(compiled.search(output or "") is not None)

    return Scorer(name, score)


def json_valid(schema: Mapping[str, Any] | None = None, *, name: str = "json_valid") -> Scorer:
    """1.0 when the output is JSON (a ```json fence is allowed) valid against ``schema``."""
    validator = None
    if schema is not None:
        import jsonschema

        try:
            cls = jsonschema.validators.validator_for(schema)
            cls.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ConfigError(f"scorers.json_valid: the schema is not a valid JSON schema: "
                              f"{exc.message}", fields=("schema",)) from exc
        validator = cls(schema)

    def score(output: str | None, item: Mapping[str, Any]) -> float:
        try:
            value = json.loads(_unfence(output or ""))
        except ValueError:
            return 0.0
        return float(validator is None or validator.is_valid(value))

    return Scorer(name, score)


def numeric(column: str = "answer", *, abs_tol: float = 0.0, rel_tol: float = 1e-9,
            name: str = "numeric") -> Scorer:
    """1.0 when the last number in the output is within tolerance of ``item[column]``.

    The last number, because models tend to reason first and answer at the end; thousands
    separators (``1,234``) are read as such.
    """
    if abs_tol < 0 or rel_tol < 0:
        raise ConfigError(f"scorers.numeric: abs_tol={abs_tol}, rel_tol={rel_tol}: give "
                          "tolerances of 0 or more", fields=("abs_tol", "rel_tol"))

    def score(output: str | None, item: Mapping[str, Any]) -> float | None:
        expected = _expected(item, column)
        if expected is None:
            return None
        try:
            target = float(str(expected).replace(",", ""))
        except ValueError:
            return None  # an item whose answer is not a number has no numeric score
        found = _NUMBER.findall(output or "")
        if not found:
            return 0.0
        try:
            got = float(found[-1].replace(",", ""))
        except ValueError:
            return 0.0
        return float(math.isclose(got, target, rel_tol=rel_tol, abs_tol=abs_tol))

    return Scorer(name, score, (column,))


def latency(*, name: str = "latency") -> Scorer:
    """The cell's model latency in seconds (lower is better); None for a failed cell."""
    def score(output: str | None, item: Mapping[str, Any],
              cell: Mapping[str, Any]) -> float | None:
        return _number(cell.get("latency_s"))

    return Scorer(name, score, higher_is_better=False, uses_cell=True)


def cost(*, name: str = "cost") -> Scorer:
    """The cell's cost in USD (lower is better); None when the price is unknown."""
    def score(output: str | None, item: Mapping[str, Any],
              cell: Mapping[str, Any]) -> float | None:
        return _number(cell.get("cost_usd"))

    return Scorer(name, score, higher_is_better=False, uses_cell=True)


def tool_call(column: str = "possible_answer", *, name: str = "tool_call") -> Scorer:
    """1.0 when the cell's tool calls match ``item[column]``, a BFCL possible answer:
    ``[{"get_weather": {"city": ["Paris"], "unit": ["celsius", ""]}}]`` ("" = optional)."""
    from aillm_lab.experiments.tool_scorer import tool_call as make

    return make(column, name=name)


def judge(rubric: str, model: Any = None, *, reference: str | None = None,
          scale: tuple[float, float] = (0, 10), name: str = "judge") -> Scorer:
    """LLM-as-judge: ``model`` grades each output against ``rubric`` (and ``item[reference]``
    when given) on ``scale``; the score is rescaled to 0..1. Its calls go through the Lab's
    gateway under the run's id and budget, recorded like any other call."""
    from aillm_lab.experiments.judge import judge as make

    return make(rubric, model, reference=reference, scale=scale, name=name)


# -- retrieval: the output is a ranked list of ids, the item's column the relevant ones --------
def recall_at_k(column: str = "relevant", k: int = 10, *, name: str | None = None) -> Scorer:
    """The share of ``item[column]``'s relevant ids among the output's first ``k``."""
    _check_k(k)

    def score(output: str | None, item: Mapping[str, Any]) -> float | None:
        relevant = _relevance(item.get(column))
        if not relevant:
            return None
        top = _ranked(output)[:k]
        return sum(1 for doc in relevant if doc in top) / len(relevant)

    return Scorer(name or f"recall@{k}", score, (column,))


def mrr(column: str = "relevant", *, name: str = "mrr") -> Scorer:
    """1 / the rank of the first relevant id in the output (0 when none is there)."""
    def score(output: str | None, item: Mapping[str, Any]) -> float | None:
        relevant = _relevance(item.get(column))
        if not relevant:
            return None
        return next((1.0 / rank for rank, doc in enumerate(_ranked(output), 1)
                     if doc in relevant), 0.0)

    return Scorer(name, score, (column,))


def ndcg_at_k(column: str = "relevant", k: int = 10, *, name: str | None = None) -> Scorer:
    """nDCG of the output's first ``k`` ids; ``item[column]`` is a list (relevance 1) or a
    dict of id to graded relevance."""
    _check_k(k)

    def score(output: str | None, item: Mapping[str, Any]) -> float | None:
        relevant = _relevance(item.get(column))
        if not relevant or not any(relevant.values()):
            return None
        gains = [relevant.get(doc, 0.0) for doc in _ranked(output)[:k]]
        ideal = sorted(relevant.values(), reverse=True)[:k]
        return _dcg(gains) / _dcg(ideal)

    return Scorer(name or f"ndcg@{k}", score, (column,))


# -- helpers ------------------------------------------------------------------------------------
def _expected(item: Mapping[str, Any], column: str) -> Any:
    """``item[column]``; a missing or null value scores None (the item has no reference)."""
    value = item.get(column)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def _norm(text: str | None, ignore_case: bool, strip: bool) -> str:
    text = text or ""
    text = " ".join(text.split()) if strip else text
    return text.casefold() if ignore_case else text


def _unfence(text: str) -> str:
    match = re.fullmatch(r"\s*```(?:json)?\s*\n?(.*?)\n?```\s*", text, re.DOTALL)
    return match.group(1) if match else text


def _check_k(k: int) -> None:
    if k < 1:
        raise ConfigError(f"k={k}: give a cut-off of 1 or more", fields=("k",))


def _ids(value: Any) -> list[str]:
    """Ids from a list, a JSON list (in a fence or not) or comma/line separated text."""
    if value is None:
        return []
    if isinstance(value, str):
        try:
            value = json.loads(_unfence(value))
        except ValueError:
            return [p.strip() for p in re.split(r"[,\n]", value) if p.strip()]
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return [str(value)]


def _ranked(output: str | None) -> list[str]:
    seen: dict[str, None] = {}  # a repeated id counts at its first rank only
    for doc in _ids(output):
        seen.setdefault(doc, None)
    return list(seen)


def _relevance(value: Any) -> dict[str, float]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            pass
    if isinstance(value, Mapping):
        return {str(k): float(v) for k, v in value.items()}
    return {doc: 1.0 for doc in _ids(value)}


def _dcg(gains: list[float]) -> float:
    return sum((2 ** g - 1) / math.log2(rank + 1) for rank, g in enumerate(gains, 1))


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number
