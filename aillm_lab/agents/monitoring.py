"""``MonitoringAgent``: watches the call log, the audit log and this process, and raises alerts.

Why rules, not a model: an alert must be cheap, repeatable and say exactly which number
crossed which line (``monitor_rules``); a model is asked only, optionally, to put into
words what changed since the last check. Thresholds are ``LabSettings.monitoring``
(validated at load), or a ``thresholds=`` of the same shape.

It runs on the Lab's runner loop: ``check()`` on demand, or ``start(every_s=30)`` for a
task that checks periodically until ``stop()``, ``close()`` or the Lab closes (``start``
hands it to ``lab.close_with``). An alert is stored in ``lab.db`` (table
``monitor_alerts``) when its rule starts firing; while the rule stays over its threshold,
later checks return the alert again but do not store it again, so a 30 s period does not
write a row every 30 s for one incident. ``alerts()`` is that table as a DataFrame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from aillm_lab.agents import prompts
from aillm_lab.agents.monitor_rules import MONITOR_RUN_PREFIX, Alert, Metrics, collect, evaluate
from aillm_lab.config import MonitoringThresholds
from aillm_lab.db import LabDB
from aillm_lab.errors import ConfigError
from aillm_lab.runtime import Lifecycle, sync_twin

if TYPE_CHECKING:
    import pandas as pd

    from aillm_lab import Lab

log = logging.getLogger(__name__)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS monitor_alerts (
    id        INTEGER PRIMARY KEY,
    ts        TEXT NOT NULL,     -- ISO 8601, UTC
    monitor   TEXT NOT NULL,     -- the MonitoringAgent that raised it
    metric    TEXT NOT NULL,
    value     REAL NOT NULL,
    op        TEXT NOT NULL,     -- '>' or '<'
    threshold REAL NOT NULL,
    window_s  REAL,              -- NULL: a reading at ts, not a window
    message   TEXT NOT NULL,
    summary   TEXT
);
CREATE INDEX IF NOT EXISTS monitor_alerts_ts ON monitor_alerts (ts);
"""
_COLUMNS = ("ts", "monitor", "metric", "value", "op", "threshold", "window_s", "message",
            "summary")


class MonitoringAgent(Lifecycle):
    """Rule-based alerts over the Lab's calls, tool calls, budget and process; see module.

    ``thresholds``: a ``MonitoringThresholds`` or a dict of its fields (default
    ``lab.settings.monitoring``). ``summarize``: ask ``model`` (default: the Lab's) through
    the gateway for a short account of what changed when new alerts start; its calls run
    under their own run id and are left out of the metrics. ``clock``: the time a check
    looks back from (tests move it).
    """

    def __init__(self, lab: Lab | None = None, *,
                 thresholds: MonitoringThresholds | Mapping[str, Any] | None = None,
                 summarize: bool = False, model: str | Any | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        if lab is None:
            import aillm_lab  # the public door: agents sit beside core, not above it

            lab = aillm_lab.default_lab()
        self.lab = lab
        self.runner = lab.runner
        self.thresholds = _thresholds(thresholds if thresholds is not None
                                      else lab.settings.monitoring)
        self.summarize, self.model = summarize, model
        self.id = f"{MONITOR_RUN_PREFIX}{uuid.uuid4().hex[:8]}"
        self.last_metrics: Metrics | None = None
        self.last_error: BaseException | None = None
        self._clock = clock or (lambda: datetime.now(UTC))
        self._db = LabDB(lab.settings.db_path, schema=_SCHEMA, runner=lab.runner)
        self._active: dict[str, int | None] = {}  # metric firing now -> its stored row
        self._task: asyncio.Task[None] | None = None
        self._lock: asyncio.Lock | None = None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<MonitoringAgent {self.id} {state} window={self.thresholds.window_s:g}s>"

    @property
    def running(self) -> bool:
        """True while the periodic task started by ``start`` is alive."""
        return self._task is not None and not self._task.done()

    # -- on demand --------------------------------------------------------------------------
    async def acheck(self) -> list[Alert]:
        """Measure now and return every alert firing (new ones are stored in ``lab.db``)."""
        return await self.runner.arun(self._check())

    async def ametrics(self) -> Metrics:
        """Every metric the rules read, measured now, without raising or storing alerts."""
        return await self.runner.arun(collect(self.lab, self.thresholds.window_s,
                                              self._clock()))

    async def aalerts(self, limit: int | None = None) -> pd.DataFrame:
        """The alerts stored in ``lab.db`` by every monitor of this home, oldest first;
        ``limit`` keeps the most recent rows."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or limit < 0):
            raise ConfigError(f"alerts(limit={limit!r}): give a whole number >= 0, or None "
                              "for every row.", fields=("limit",))
        return await self.runner.arun(self._frame(limit))

    check = sync_twin(acheck)
    metrics = sync_twin(ametrics)
    alerts = sync_twin(aalerts)

    # -- periodic ---------------------------------------------------------------------------
    async def astart(self, every_s: float = 30.0) -> None:
        """Check now and then every ``every_s`` seconds on the runner loop, until ``stop``
        or the Lab closes; starting again restarts with the new period. A failed check is
        logged and kept in ``last_error``; the next one runs all the same."""
        if isinstance(every_s, bool) or not isinstance(every_s, int | float) \
                or not 0 < every_s < math.inf:
            raise ConfigError(f"start(every_s={every_s!r}): give a finite number of seconds "
                              "> 0.", fields=("every_s",))
        await self.runner.arun(self._start(float(every_s)))
        close_with = getattr(self.lab, "close_with", None)
        if close_with is not None:
            close_with(self)

    async def astop(self) -> None:
        """Stop the periodic checks and wait until their task has ended; idempotent."""
        await self.runner.arun(self._stop())

    start = sync_twin(astart)
    stop = sync_twin(astop)

    async def aclose(self) -> None:
        """Stop, and close this monitor's connection to ``lab.db``; idempotent."""
        await self.runner.arun(self._close())

    # -- on the runner loop -----------------------------------------------------------------
    async def _check(self) -> list[Alert]:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # a periodic and an on-demand check must not interleave
            now = self._clock()
            metrics = await collect(self.lab, self.thresholds.window_s, now)
            alerts = evaluate(metrics, self.thresholds, now)
            new = [a for a in alerts if a.metric not in self._active]
            started = {a.metric for a in new}
            if new and self.summarize:
                summary = await self._summary(self.last_metrics, metrics, new)
                for alert in new:
                    alert.summary = summary
            if new:
                await self._store(new)
            self._active = {a.metric: a.id if a.metric in started
                            else self._active.get(a.metric) for a in alerts}
            for alert in alerts:
                alert.id = self._active[alert.metric]
            self.last_metrics = metrics
            return alerts

    async def _summary(self, before: Metrics | None, after: Metrics,
                       alerts: list[Alert]) -> str | None:
        """The model's account of what changed; None (and a warning) if the call fails."""
        prompt = (f"Before: {_reading(before)}\nNow: {_reading(after)}\nAlerts:\n"
                  + "\n".join(f"- {a.message}" for a in alerts))
        try:
            with self.lab.scope(self.id):
                completion = await self.lab.acomplete(
                    prompt, self.model, system=prompts.MONITOR_SUMMARY_SYSTEM, max_tokens=200)
        except Exception as exc:  # the alerts matter more than their summary
            log.warning("monitor %s: the summary call failed: %r", self.id, exc)
            return None
        return completion.text.strip() or None

    async def _store(self, alerts: list[Alert]) -> None:
        sql = (f"INSERT INTO monitor_alerts ({', '.join(_COLUMNS)}) "
               f"VALUES ({', '.join('?' * len(_COLUMNS))})")
        async with self._db.write() as conn:
            for a in alerts:
                cursor = await conn.execute(sql, (
                    a.time.astimezone(UTC).isoformat(), self.id, a.metric, a.value, a.op,
                    a.threshold, a.window_s, a.message, a.summary))
                a.id = cursor.lastrowid

    async def _frame(self, limit: int | None) -> pd.DataFrame:
        import pandas as pd

        sql = f"SELECT id, {', '.join(_COLUMNS)} FROM monitor_alerts ORDER BY id DESC"
        params: list[Any] = []
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = await self._db.fetchall(sql, params)
        frame = pd.DataFrame([tuple(r) for r in reversed(rows)], columns=["id", *_COLUMNS])
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True, format="ISO8601")
        frame = frame.astype({"id": "int64", "value": "float64", "threshold": "float64",
                              "window_s": "float64"})
        frame["summary"] = frame["summary"].astype(object).where(frame["summary"].notna(), None)
        return frame

    async def _start(self, every_s: float) -> None:
        await self._stop()
        self._task = asyncio.get_running_loop().create_task(self._periodic(every_s),
                                                            name=f"aillm-monitor:{self.id}")

    async def _periodic(self, every_s: float) -> None:
        while True:
            try:
                await self._check()
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep watching: the next check may work
                self.last_error = exc
                log.warning("monitor %s: a check failed: %r", self.id, exc)
            await asyncio.sleep(every_s)

    async def _stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(task, return_exceptions=True)

    async def _close(self) -> None:
        await self._stop()
        await self._db.aclose()


def _thresholds(value: MonitoringThresholds | Mapping[str, Any]) -> MonitoringThresholds:
    """A ``MonitoringThresholds``; a bad dict is a ConfigError naming every bad field."""
    if isinstance(value, MonitoringThresholds):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"thresholds: give a MonitoringThresholds or a dict of its fields, "
                          f"not {type(value).__name__}.", fields=("thresholds",))
    try:
        return MonitoringThresholds.model_validate(dict(value))
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        fields = tuple("monitoring." + ".".join(map(str, e["loc"])) for e in errors)
        detail = "; ".join(f"{f} = {e.get('input')!r}: {e['msg']}"
                           for f, e in zip(fields, errors, strict=True))
        raise ConfigError(f"bad monitoring thresholds: {detail}. Fix them in thresholds= or "
                          "in LabSettings.monitoring.", fields=fields) from None


def _reading(metrics: Metrics | None) -> str:
    if metrics is None:
        return "no earlier reading"
    keep = ("calls", "error_rate", "p95_latency_s", "usd_per_hour", "budget_used",
            "cache_hit_rate", "tool_failure_rate", "rss_mb", "open_connections")
    return ", ".join(f"{k}={_short(metrics.get(k))}" for k in keep)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


__all__ = ["Alert", "MonitoringAgent", "MonitoringThresholds"]
