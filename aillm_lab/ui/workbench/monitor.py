"""The Monitor page: the call log's own figures per minute (calls, error rate, p95 latency,
cost so far) as bokeh charts, and the MonitoringAgent's current metrics and alerts, with a
"Check now" button.

The charts are built once and only their data sources change, so a refresh redraws in place.
The page refreshes itself (``pn.state.add_periodic_callback``) only while its tab is open
(``watch``), and the callback stops when the tab is left or the session ends. One
MonitoringAgent per Lab is shared by every session and closed with the Lab
(``lab.close_with``); when ``aillm_lab.agents.monitoring`` cannot be used, the page says so
in one line and still shows the call log's figures.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any

from aillm_lab.core.lab import Lab
from aillm_lab.ui.workbench.notices import Notice

if TYPE_CHECKING:
    import pandas as pd

REFRESH_MS = 10_000
MINUTES_SHOWN = 120  # the most recent one-minute buckets drawn
SPAN_MS = 10 * 60_000  # the time axis around a single minute's point
PER_MINUTE_SQL = f"""
SELECT * FROM (
    SELECT time_bucket(INTERVAL '1 minute', time) AS minute, count(*) AS calls,
           avg(CASE WHEN status <> 'ok' THEN 1.0 ELSE 0.0 END) AS error_rate,
           quantile_cont(latency_s, 0.95) AS p95_latency_s,
           coalesce(sum(cost_usd), 0) AS cost_usd
    FROM calls GROUP BY 1 ORDER BY 1 DESC LIMIT {MINUTES_SHOWN}
) ORDER BY minute
"""
# (column of the per-minute frame, chart title): one chart each
CHARTS = (("calls", "calls per minute"), ("error_rate", "error rate per minute"),
          ("p95_latency_s", "p95 latency (s) per minute"), ("total_cost_usd", "cost so far (USD)"))
# the agent's metrics shown, with the threshold field each is compared with
METRICS = (("calls", None), ("errors", None), ("error_rate", "max_error_rate"),
           ("p95_latency_s", "max_p95_latency_s"), ("usd_per_hour", "max_usd_per_hour"),
           ("budget_used", "max_budget_used"), ("cache_hit_rate", "min_cache_hit_rate"),
           ("tool_failure_rate", "max_tool_failure_rate"), ("rss_mb", "max_rss_mb"),
           ("open_connections", "max_open_connections"), ("lab_db_mb", "max_lab_db_mb"))
ALERT_COLUMNS = ["ts", "metric", "value", "op", "threshold", "message"]

_MONITORS: weakref.WeakKeyDictionary[Lab, Any] = weakref.WeakKeyDictionary()
_MONITORS_LOCK = threading.Lock()


class MonitorPage:
    """``await refresh()`` reads the call log and the agent's metrics; ``await check()`` runs
    the agent's rules now; ``watch(True/False)`` starts or stops the periodic refresh."""

    title = "Monitor"

    def __init__(self, lab: Lab, *, refresh_ms: int = REFRESH_MS) -> None:
        import pandas as pd
        import panel as pn

        self.lab = lab
        self.refresh_ms = refresh_ms
        self.periodic: Any = None  # the running PeriodicCallback, while the tab is open
        self._hooked = False  # the session's end stops it (on_session_destroyed)
        self.notice = Notice("monitor-notice")
        self.summary = pn.pane.Markdown("No model calls yet.", name="monitor-summary")
        self.sources, charts = _charts()
        self.charts = pn.FlexBox(*charts, name="monitor-charts", sizing_mode="stretch_width")
        self.agent_status = pn.pane.Markdown("", name="monitor-agent-status",
                                             sizing_mode="stretch_width")
        self.check_button = pn.widgets.Button(label="Check now", color="primary")
        self.check_button.on_click(self._on_check)
        self.refresh_button = pn.widgets.Button(label="Refresh")
        self.refresh_button.on_click(self._on_refresh)
        self.metrics = pn.widgets.Tabulator(pd.DataFrame(columns=["metric", "value",
                                                                  "threshold"]),
                                            disabled=True, show_index=False,
                                            sizing_mode="stretch_width")
        self.alerts = pn.widgets.Tabulator(pd.DataFrame(columns=ALERT_COLUMNS), disabled=True,
                                           show_index=False, pagination="local", page_size=10,
                                           sizing_mode="stretch_width")
        self.view = pn.Column(
            pn.pane.Markdown("### Monitor\nThe call log per minute, and the MonitoringAgent's "
                             "metrics and alerts (thresholds: `LabSettings.monitoring`). The "
                             f"page refreshes every {refresh_ms / 1000:g} s while it is open."),
            pn.Row(self.refresh_button, self.check_button), self.notice.alert, self.summary,
            self.charts, self.agent_status, pn.pane.Markdown("#### Metrics now"), self.metrics,
            pn.pane.Markdown("#### Alerts (newest first)"), self.alerts,
            name=self.title, sizing_mode="stretch_width")

    @property
    def monitor(self) -> Any:
        """The Lab's shared MonitoringAgent, or None (and the reason on the page)."""
        agent, why = shared_monitor(self.lab)
        if agent is None:
            self.agent_status.object = why
            self.check_button.disabled = True
        return agent

    async def refresh(self) -> bool:
        """Redraw the call-log charts, and the agent's metrics and stored alerts."""
        try:
            minutes = await self.lab.acalls(PER_MINUTE_SQL)
        except Exception as exc:
            self.notice.failed(exc)
            return False
        self._draw(minutes)
        agent = self.monitor
        if agent is None:
            return True
        try:
            reading = await agent.ametrics()
            alerts = await agent.aalerts(limit=200)
        except Exception as exc:
            self.notice.failed(exc)
            return False
        self._show_agent(reading, alerts, agent)
        return True

    async def check(self) -> bool:
        """Run the agent's rules now: the alerts firing go to the notice and the table."""
        agent = self.monitor
        if agent is None:
            self.notice.error(self.agent_status.object)
            return False
        try:
            firing = await agent.acheck()
            alerts = await agent.aalerts(limit=200)
        except Exception as exc:
            self.notice.failed(exc)
            return False
        self._show_agent(agent.last_metrics or {}, alerts, agent)
        if firing:
            self.notice.error(f"{len(firing)} alert(s): " + "; ".join(map(str, firing)))
        else:
            self.notice.ok("No alert: every metric is within its threshold.")
        return True

    def watch(self, showing: bool) -> None:
        """Refresh periodically while the tab shows (in a served session), else stop."""
        import panel as pn

        if not showing:
            self.stop()
        elif self.periodic is None and pn.state.curdoc is not None:
            self.periodic = pn.state.add_periodic_callback(self.refresh,
                                                           period=self.refresh_ms)
            if not self._hooked:  # once per session, however often the tab opens
                pn.state.on_session_destroyed(self._on_session_destroyed)
                self._hooked = True

    def stop(self) -> None:
        periodic, self.periodic = self.periodic, None
        if periodic is not None:
            periodic.stop()

    def _draw(self, minutes: pd.DataFrame) -> None:
        if minutes.empty:
            self.summary.object = "No model calls yet."
        else:
            calls, cost = int(minutes["calls"].sum()), float(minutes["cost_usd"].sum())
            self.summary.object = (f"**{calls} call(s)** over the last {len(minutes)} "
                                   f"active minute(s) · ${cost:.4f}")
        when = list(minutes["minute"].dt.tz_convert(None)) if len(minutes) else []
        columns = {"calls": minutes["calls"], "error_rate": minutes["error_rate"],
                   "p95_latency_s": minutes["p95_latency_s"],
                   "total_cost_usd": minutes["cost_usd"].cumsum()}
        for name, source in self.sources.items():
            source.data = {"x": when, "y": [float(v) for v in columns[name].fillna(0.0)]}

    def _show_agent(self, reading: dict[str, Any], alerts: pd.DataFrame, agent: Any) -> None:
        import pandas as pd

        thresholds = agent.thresholds
        rows = [{"metric": name, "value": _shown(reading.get(name)),
                 "threshold": _shown(getattr(thresholds, field)) if field else ""}
                for name, field in METRICS]
        self.metrics.value = pd.DataFrame(rows)
        shown = alerts[[c for c in ALERT_COLUMNS if c in alerts.columns]].iloc[::-1]
        if "ts" in shown.columns:
            shown = shown.assign(ts=shown["ts"].dt.strftime("%Y-%m-%d %H:%M:%S"))
        self.alerts.value = shown.reset_index(drop=True)
        window = thresholds.window_s
        self.agent_status.object = (f"MonitoringAgent `{agent.id}`: the last {window:g} s, "
                                    f"{len(alerts)} alert(s) stored under this home.")

    async def _on_check(self, event: Any = None) -> None:
        await self.check()

    async def _on_refresh(self, event: Any = None) -> None:
        await self.refresh()

    def _on_session_destroyed(self, session_context: Any) -> None:
        self.stop()


def shared_monitor(lab: Lab) -> tuple[Any, str]:
    """The one MonitoringAgent of ``lab`` (made on first use, closed with the Lab), or None
    and one line saying why it cannot be used here."""
    with _MONITORS_LOCK:
        agent = _MONITORS.get(lab)
        if agent is not None:
            return agent, ""
        try:
            from aillm_lab.agents.monitoring import MonitoringAgent

            agent = MonitoringAgent(lab=lab)
            lab.close_with(agent)
        except Exception as exc:  # not there yet, or broken: the charts still work
            return None, (f"The MonitoringAgent is not available here ({type(exc).__name__}: "
                          f"{exc}); the charts read the call log directly.")
        _MONITORS[lab] = agent
        return agent, ""


def _charts() -> tuple[dict[str, Any], list[Any]]:
    """One empty time chart per figure; their sources are filled by each refresh."""
    import panel as pn
    from bokeh.models import ColumnDataSource
    from bokeh.plotting import figure

    sources, panes = {}, []
    for name, title in CHARTS:
        source = ColumnDataSource({"x": [], "y": []})
        fig = figure(x_axis_type="datetime", height=220, width=300, title=title,
                     toolbar_location=None, tooltips=[("", "@y{0.[0000]}")])
        fig.x_range.default_span = SPAN_MS  # one minute's point sits in a readable span
        fig.x_range.range_padding, fig.x_range.range_padding_units = 60_000, "absolute"
        fig.line("x", "y", source=source, line_width=2)
        fig.scatter("x", "y", source=source, size=6)
        fig.y_range.start = 0
        sources[name] = source
        panes.append(pn.pane.Bokeh(fig, name=f"monitor-{name}"))
    return sources, panes


def _shown(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
