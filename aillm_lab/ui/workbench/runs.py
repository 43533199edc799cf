"""The Runs and calls page: the call log and saved agent runs as tables, cost and latency by
model as bar charts, one agent run's trace on request, and the experiment runs (two of them
compared: ``experiments.ExperimentsSection``)."""

from __future__ import annotations

from typing import Any

from aillm_lab.core.lab import Lab
from aillm_lab.ui.workbench.experiments import ExperimentsSection
from aillm_lab.ui.workbench.notices import Notice

CALL_COLUMNS = ["time", "model", "status", "cache_hit", "stream", "latency_s", "ttft_s",
                "input_tokens", "output_tokens", "cost_usd", "run_id", "error_type"]


class RunsPage:
    """``await refresh()`` reads ``lab.acalls()``, ``lab.aruns()`` and
    ``lab.aexperiments()`` (never on the server loop's thread); ``await open_run(id)`` shows
    one run's steps, ``await experiments.compare(a, b)`` two experiment runs side by side."""

    title = "Runs and calls"

    def __init__(self, lab: Lab) -> None:
        import pandas as pd
        import panel as pn

        self.lab = lab
        self.notice = Notice("runs-notice")
        self.refresh_button = pn.widgets.Button(label="Refresh", color="primary")
        self.refresh_button.on_click(self._on_refresh)
        self.summary = pn.pane.Markdown("No calls yet.", name="runs-summary")
        self.calls = pn.widgets.Tabulator(pd.DataFrame(columns=CALL_COLUMNS), disabled=True,
                                          show_index=False, pagination="local", page_size=15,
                                          header_filters=True, sizing_mode="stretch_width")
        self.runs = pn.widgets.Tabulator(pd.DataFrame(), disabled=True, show_index=False,
                                         pagination="local", page_size=10,
                                         selectable=1, sizing_mode="stretch_width")
        self.runs.param.watch(self._on_select_run, "selection")
        self.plots = pn.FlexBox(name="runs-plots", sizing_mode="stretch_width")
        self.trace = pn.Column(name="run-trace", sizing_mode="stretch_width")
        self.experiments = ExperimentsSection(lab, self.notice)
        self.view = pn.Column(
            pn.pane.Markdown("### Runs and calls\nEvery model call of this home (newest "
                             "first), and the agent runs and experiments saved under it."),
            self.refresh_button, self.notice.alert, self.summary, self.plots,
            pn.pane.Markdown("#### Model calls"), self.calls,
            pn.pane.Markdown("#### Agent runs (select one to see its trace)"), self.runs,
            self.trace, self.experiments.view, name=self.title, sizing_mode="stretch_width")

    async def refresh(self) -> bool:
        try:
            calls = await self.lab.acalls()
            runs = await self.lab.aruns()
        except Exception as exc:
            self.notice.failed(exc)
            return False
        self.notice.clear()
        if not await self.experiments.refresh():
            return False
        shown = calls[[c for c in CALL_COLUMNS if c in calls.columns]].iloc[::-1]
        if "time" in shown.columns:  # Tabulator shows a zoned datetime as epoch milliseconds
            shown = shown.assign(time=shown["time"].dt.strftime("%Y-%m-%d %H:%M:%S"))
        self.calls.value = shown.reset_index(drop=True)
        self.runs.value = runs
        self.summary.object = _summary(calls, runs)
        self.plots.objects = _plots(calls)
        return True

    async def open_run(self, run_id: str) -> bool:
        import panel as pn

        try:
            run = await self.lab.aload_run(run_id)
        except Exception as exc:
            self.notice.failed(exc)
            return False
        self.trace.objects = [pn.pane.HTML(run._repr_html_(), sizing_mode="stretch_width",
                                           name="run-trace-html")]
        return True

    async def _on_refresh(self, event: Any = None) -> None:
        await self.refresh()

    async def _on_select_run(self, event: Any) -> None:
        frame = self.runs.value
        if event.new and frame is not None and "id" in frame.columns:
            await self.open_run(str(frame.iloc[event.new[0]]["id"]))


def _summary(calls: Any, runs: Any) -> str:
    if calls.empty:
        return f"No model calls yet · {len(runs)} agent run(s)."
    errors = int((calls["status"] != "ok").sum()) if "status" in calls.columns else 0
    return (f"**{len(calls)} call(s)** · {calls['model'].nunique()} model(s) · "
            f"${calls['cost_usd'].sum():.4f} · {errors} error(s) · "
            f"{len(runs)} agent run(s)")


def _plots(calls: Any) -> list[Any]:
    """Bokeh charts: cost, mean latency, tokens and errors per model, and each call's latency
    over time; none without calls."""
    if calls.empty:
        return []
    import panel as pn
    from bokeh.palettes import Category10_10
    from bokeh.plotting import figure

    calls = calls.assign(tokens=calls["input_tokens"] + calls["output_tokens"],
                         errors=(calls["status"] != "ok").astype(int))
    by_model = calls.groupby("model").agg(cost_usd=("cost_usd", "sum"),
                                          latency_s=("latency_s", "mean"),
                                          tokens=("tokens", "sum"),
                                          errors=("errors", "sum")).reset_index()
    models = list(by_model["model"])
    charts = []
    for column, label in (("cost_usd", "cost (USD) by model"),
                          ("latency_s", "mean latency (s) by model"),
                          ("tokens", "tokens by model"), ("errors", "errors by model")):
        fig = figure(x_range=models, height=200, width=260, title=label, toolbar_location=None)
        fig.vbar(x=models, top=list(by_model[column]), width=0.7)
        fig.y_range.start = 0
        charts.append(pn.pane.Bokeh(fig, name=f"plot-{column}"))
    timeline = figure(x_axis_type="datetime", height=200, width=520,
                      title="latency (s) of each call over time", toolbar_location=None)
    for model, color in zip(models, Category10_10 * (len(models) // 10 + 1), strict=False):
        rows = calls[calls["model"] == model]
        timeline.scatter(list(rows["time"].dt.tz_convert(None)), list(rows["latency_s"]),
                         color=color, legend_label=model, size=6)
    timeline.legend.location = "top_left"
    charts.append(pn.pane.Bokeh(timeline, name="plot-latency-over-time"))
    return charts
