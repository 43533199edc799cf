"""Which chart, if any, suits a query result, and the bokeh figure drawn from that choice.

Why a spec and a figure apart: the choice (``ChartSpec``: kind, x, y, title) is small data that
goes into the run's JSON, while a live bokeh figure cannot; a reloaded result draws the same
figure again from its spec and its frame. Why so strict a rule: one label column against one
number over a few rows is the shape a bar or line chart shows better than the table; for any
other shape a chart would guess, so there is none. bokeh comes with panel, so nothing extra is
installed; it is imported only when a figure is drawn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

if TYPE_CHECKING:
    import pandas as pd

MAX_BARS = 30  # more categories than this make an unreadable bar chart
MAX_POINTS = 1000  # a line over time stays readable much longer

ChartKind = Literal["bar", "line"]


class ChartSpec(BaseModel):
    """A chart as data: ``bar`` (categories) or ``line`` (time) of column ``y`` over ``x``."""

    kind: ChartKind
    x: str
    y: str
    title: str = ""


def choose_chart(frame: pd.DataFrame, title: str = "") -> ChartSpec | None:
    """A spec when ``frame`` is one label or time column and one numeric column, else None."""
    import pandas as pd

    if frame.shape[1] != 2 or len(frame) < 2:
        return None
    numeric = [c for c in frame.columns if _is_number(frame[c])]
    if len(numeric) != 1:
        return None
    y = numeric[0]
    x = next(c for c in frame.columns if c != y)
    if frame[y].isna().all():
        return None
    if pd.api.types.is_datetime64_any_dtype(frame[x]):
        kind: ChartKind = "line"
        if len(frame) > MAX_POINTS:
            return None
    else:
        kind = "bar"
        if len(frame) > MAX_BARS or frame[x].isna().any() or frame[x].duplicated().any():
            return None  # a bar per distinct label, or the bars would overlap
    return ChartSpec(kind=kind, x=str(x), y=str(y), title=title[:120])


def build_chart(spec: ChartSpec, frame: pd.DataFrame) -> Any:
    """The bokeh figure for ``spec`` over ``frame`` (show it, or put it in a Panel)."""
    from bokeh.models import ColumnDataSource
    from bokeh.plotting import figure

    x, y = frame[spec.x], frame[spec.y].astype(float)
    when = "@x{%F}" if spec.kind == "line" else "@x"
    tooltips = [(spec.x, when), (spec.y, "@y{0,0.[00]}")]
    common: dict[str, Any] = {"title": spec.title, "height": 320, "tooltips": tooltips,
                              "sizing_mode": "stretch_width", "toolbar_location": "right"}
    if spec.kind == "line":
        source = ColumnDataSource({"x": list(x), "y": list(y)})
        fig = figure(x_axis_type="datetime", **common)
        fig.line("x", "y", source=source, line_width=2)
        fig.scatter("x", "y", source=source, size=5)
        fig.hover.formatters = {"@x": "datetime"}
    else:
        labels = [str(v) for v in x]
        source = ColumnDataSource({"x": labels, "y": list(y)})
        fig = figure(x_range=labels, **common)
        fig.vbar(x="x", top="y", source=source, width=0.8)
        fig.y_range.start = min(0.0, float(y.min()))
        fig.xaxis.major_label_orientation = 0.8 if len(labels) > 8 else 0.0
    fig.xaxis.axis_label, fig.yaxis.axis_label = spec.x, spec.y
    return fig


def _is_number(column: pd.Series) -> bool:
    import pandas as pd

    return (pd.api.types.is_numeric_dtype(column)
            and not pd.api.types.is_bool_dtype(column))


__all__ = ["ChartSpec", "build_chart", "choose_chart"]
