"""What the MonitoringAgent measures and the rules that turn a measure into an alert.

Three sources: the call log (model calls in the window: errors, p95 latency, cost, cache
hits), the audit log (tool calls refused, denied or failed) and this process (RSS, open
connections, file sizes, the in-memory response cache), plus the Lab's budget. Each rule
compares one metric with one ``MonitoringThresholds`` field; a field set to ``None`` turns
its rule off. Rates need ``min_calls`` calls in the window first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from aillm_lab import Lab
    from aillm_lab.config import MonitoringThresholds

Metrics = dict[str, Any]
MONITOR_RUN_PREFIX = "aillm-monitor-"  # the summary's own calls; never counted
AUDIT_ROWS = 2000  # the most recent tool calls a check reads (a rate needs no more)
MB = 1_000_000


class Alert(BaseModel):
    """One rule over its threshold: the metric, its value, the threshold and the window.

    ``window_s`` is the period looked back over; ``None`` for a reading taken at ``time``
    (RSS, file sizes) or the Lab's budget so far. ``id`` is the row in ``lab.db`` that
    recorded this alert when it started (a rule that stays over is stored once).
    """

    metric: str
    value: float
    threshold: float
    op: Literal[">", "<"]
    window_s: float | None
    message: str
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    summary: str | None = Field(None, description="the model's account of what changed")
    id: int | None = None

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Rule:
    """``metric op threshold`` fires; ``gate`` names the count that must reach min_calls."""

    metric: str
    setting: str
    op: Literal[">", "<"]
    windowed: bool
    gate: str | None
    detail: Callable[[Metrics], str]


RULES = (
    Rule("error_rate", "max_error_rate", ">", True, "calls",
         lambda m: f"{m['errors']} of {m['calls']} model calls failed"),
    Rule("p95_latency_s", "max_p95_latency_s", ">", True, "answered",
         lambda m: f"over {m['answered']} answered, uncached calls"),
    Rule("usd_per_hour", "max_usd_per_hour", ">", True, None,
         lambda m: f"${m['cost_usd']:.6f} spent in the window"),
    Rule("budget_hours_left", "min_budget_hours_left", "<", True, None,
         lambda m: f"${m['budget_left_usd']:.6f} of ${m['budget_usd']:.6f} left at "
                   f"${m['usd_per_hour']:.6f}/h"),
    Rule("budget_used", "max_budget_used", ">", False, None,
         lambda m: f"${m['budget_spent_usd']:.6f} of ${m['budget_usd']:.6f} spent"),
    Rule("cache_hit_rate", "min_cache_hit_rate", "<", True, "calls",
         lambda m: f"{m['cache_hits']} of {m['calls']} calls answered from the cache"),
    Rule("tool_failure_rate", "max_tool_failure_rate", ">", True, "tool_calls",
         lambda m: f"{m['tool_failures']} of {m['tool_calls']} tool calls refused, denied or "
                   "failed"),
    Rule("rss_mb", "max_rss_mb", ">", False, None, lambda m: "this process's resident memory"),
    Rule("open_connections", "max_open_connections", ">", False, None,
         lambda m: "this process's open network connections"),
    Rule("cache_mb", "max_cache_mb", ">", False, None, lambda m: "cache.db on disk"),
    Rule("lab_db_mb", "max_lab_db_mb", ">", False, None, lambda m: "lab.db on disk"),
)


def evaluate(metrics: Metrics, thresholds: MonitoringThresholds, now: datetime) -> list[Alert]:
    """The alerts ``metrics`` raise under ``thresholds``, in rule order."""
    alerts = []
    for rule in RULES:
        threshold = getattr(thresholds, rule.setting)
        value = metrics.get(rule.metric)
        if threshold is None or value is None:
            continue
        if rule.gate is not None and metrics.get(rule.gate, 0) < thresholds.min_calls:
            continue
        if not (value > threshold if rule.op == ">" else value < threshold):
            continue
        window = thresholds.window_s if rule.windowed else None
        where = f"over the last {window:g} s" if window is not None else "now"
        alerts.append(Alert(
            metric=rule.metric, value=float(value), threshold=float(threshold), op=rule.op,
            window_s=window, time=now,
            message=f"{rule.metric} = {_num(value)} {rule.op} {_num(threshold)} {where} "
                    f"({rule.detail(metrics)})"))
    return alerts


# -- collection ---------------------------------------------------------------------------------
async def collect(lab: Lab, window_s: float, now: datetime) -> Metrics:
    """Every metric the rules read, plus the counts behind them; ``None`` when unknown."""
    start = now - timedelta(seconds=window_s)
    calls, tools, process = await asyncio.gather(
        _call_metrics(lab, start, window_s), _tool_metrics(lab, start),
        asyncio.to_thread(_process_metrics, lab.settings.home, lab.settings.db_path))
    metrics: Metrics = {"time": now, "window_s": window_s, **calls, **tools, **process}
    metrics.update(_budget_metrics(lab, metrics["usd_per_hour"]))
    metrics.update(_memory_cache(lab))
    return metrics


_CALLS_SQL = """
SELECT count(*) AS calls,
       count(*) FILTER (WHERE status <> 'ok') AS errors,
       count(*) FILTER (WHERE {answered}) AS answered,
       quantile_cont(latency_s, 0.95) FILTER (WHERE {answered}) AS p95,
       coalesce(sum(cost_usd), 0) AS cost,
       count(*) FILTER (WHERE cache_hit OR replay_hit) AS hits
FROM calls
WHERE time >= TIMESTAMPTZ '{start}' AND NOT starts_with(run_id, '{prefix}')
"""
_ANSWERED = "status = 'ok' AND NOT cache_hit AND NOT replay_hit AND latency_s IS NOT NULL"


async def _call_metrics(lab: Lab, start: datetime, window_s: float) -> Metrics:
    sql = _CALLS_SQL.format(answered=_ANSWERED, start=start.isoformat(),
                            prefix=MONITOR_RUN_PREFIX)
    row = (await lab.acalls(sql)).iloc[0]
    calls, errors = int(row["calls"]), int(row["errors"])
    p95 = None if _missing(row["p95"]) else float(row["p95"])
    cost = 0.0 if _missing(row["cost"]) else float(row["cost"])
    hits = int(row["hits"])
    return {"calls": calls, "errors": errors, "answered": int(row["answered"]),
            "error_rate": errors / calls if calls else None, "p95_latency_s": p95,
            "cost_usd": cost, "usd_per_hour": cost * 3600.0 / window_s,
            "cache_hits": hits, "cache_hit_rate": hits / calls if calls else None}


async def _tool_metrics(lab: Lab, start: datetime) -> Metrics:
    frame = await lab.aaudit(AUDIT_ROWS)
    recent = frame[frame["ts"] >= start] if len(frame) else frame
    total = len(recent)
    failed = int((recent["decision"] != "allowed").sum()) if total else 0
    return {"tool_calls": total, "tool_failures": failed,
            "tool_failure_rate": failed / total if total else None}


def _process_metrics(home: Path, db_path: Path) -> Metrics:
    """psutil's view of this process and the sizes of the home's stores (a worker thread:
    listing connections reads /proc)."""
    import psutil

    proc = psutil.Process()
    try:
        connections: int | None = len(proc.net_connections(kind="inet"))
    except (psutil.AccessDenied, psutil.Error):
        connections = None
    try:
        open_files: int | None = proc.num_fds()
    except (AttributeError, psutil.Error):  # Windows has handles, not fds
        open_files = None
    calls_dir = home / "calls"
    call_bytes = sum(p.stat().st_size for p in calls_dir.glob("*") if p.is_file()) \
        if calls_dir.is_dir() else 0
    return {"rss_mb": proc.memory_info().rss / MB, "open_connections": connections,
            "open_files": open_files, "cache_mb": _db_bytes(home / "cache.db") / MB,
            "lab_db_mb": _db_bytes(db_path) / MB, "call_log_mb": call_bytes / MB}


def _budget_metrics(lab: Lab, usd_per_hour: float) -> Metrics:
    budget = lab.gateway.budget
    cap = budget.cap_usd
    if cap is None:
        return {"budget_usd": None, "budget_spent_usd": budget.spent_usd,
                "budget_left_usd": None, "budget_used": None, "budget_hours_left": None}
    left = max(budget.remaining_usd or 0.0, 0.0)
    return {"budget_usd": cap, "budget_spent_usd": budget.spent_usd, "budget_left_usd": left,
            "budget_used": budget.spent_usd / cap if cap else 1.0,
            "budget_hours_left": left / usd_per_hour if usd_per_hour > 0 else None}


def _memory_cache(lab: Lab) -> Metrics:
    cache = getattr(lab.gateway.store, "cache", None)
    if cache is None:
        return {"memory_cache_entries": None, "memory_cache_hit_rate": None}
    stats = cache.stats()
    return {"memory_cache_entries": stats.size, "memory_cache_hit_rate": stats.hit_rate}


def _db_bytes(path: Path) -> int:
    total = 0
    for suffix in ("", "-wal"):
        part = path.with_name(path.name + suffix)
        try:
            total += part.stat().st_size
        except FileNotFoundError:
            pass
    return total


def _missing(value: Any) -> bool:
    import pandas as pd

    return bool(pd.isna(value))


def _num(value: float) -> str:
    return f"{value:.4g}"


__all__ = ["RULES", "Alert", "Metrics", "Rule", "collect", "evaluate"]
