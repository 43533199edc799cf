"""Bokeh figures of a run's summary and of a comparison: means with their intervals.

bokeh comes with panel (the dashboard extra); it is imported only when a figure is drawn,
and the figures are plain bokeh, so ``bokeh.io.show`` shows them in a notebook and the
dashboard can embed them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


def summary_figure(summary: pd.DataFrame, metric: str) -> Any:
    """One horizontal bar per prompt × model: the mean of ``metric`` and its interval."""
    if metric not in summary.columns:
        known = [c for c in summary.columns if f"{c}_lo" in summary.columns]
        raise ValueError(f"metric={metric!r}: not in this run's summary; pick one of {known}")
    labels = [f"{model} · prompt {p}" for model, p in
              zip(summary["model"], summary["prompt_index"], strict=True)]
    return _bars(labels, summary[metric].tolist(), summary[f"{metric}_lo"].tolist(),
                 summary[f"{metric}_hi"].tolist(), title=f"{metric}: mean and interval")


def comparison_figure(table: pd.DataFrame) -> Any:
    """One bar per metric: the difference b - a and its bootstrap interval."""
    title = f"{table.attrs.get('run_b', 'b')} - {table.attrs.get('run_a', 'a')}"
    return _bars(table["metric"].tolist(), table["diff"].tolist(), table["ci_low"].tolist(),
                 table["ci_high"].tolist(), title=title)


def _bars(labels: list[str], values: list[float], lows: list[float], highs: list[float], *,
          title: str) -> Any:
    from bokeh.models import ColumnDataSource, Whisker
    from bokeh.plotting import figure

    source = ColumnDataSource({"label": labels, "value": values, "lo": lows, "hi": highs})
    fig = figure(y_range=list(reversed(labels)), title=title, height=60 + 36 * len(labels),
                 width=640, toolbar_location=None,
                 tooltips=[("", "@label"), ("mean", "@value{0.000}"),
                           ("interval", "@lo{0.000} .. @hi{0.000}")])
    fig.hbar(y="label", right="value", height=0.6, source=source)
    fig.add_layout(Whisker(source=source, base="label", lower="lo", upper="hi",
                           dimension="width"))
    return fig
