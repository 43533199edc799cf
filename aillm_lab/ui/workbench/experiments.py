"""The Runs page's experiments: every experiment run under the home in a table; select two and
the page shows ``al.compare``'s table (the newer run minus the older) and its plot.

Reading a run's Parquet parts and the bootstrap run in a worker thread, so the server's loop
never waits on them.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aillm_lab.core.lab import Lab
from aillm_lab.ui.workbench.notices import Notice

if TYPE_CHECKING:
    import pandas as pd

    from aillm_lab.experiments.results import ExperimentRun

EXPERIMENT_COLUMNS = ["run_id", "name", "status", "cells", "models", "prompts", "items",
                      "updated_at"]


class ExperimentsSection:
    """``await refresh()`` lists ``lab.aexperiments()``; ``await compare(a, b)`` (or
    selecting two rows) shows the comparison of two runs by id."""

    def __init__(self, lab: Lab, notice: Notice) -> None:
        import pandas as pd
        import panel as pn

        self.lab = lab
        self.notice = notice
        self.listed = pd.DataFrame(columns=[*EXPERIMENT_COLUMNS, "path"])
        self.table = pn.widgets.Tabulator(pd.DataFrame(columns=EXPERIMENT_COLUMNS),
                                          disabled=True, show_index=False,
                                          selectable="toggle",
                                          pagination="local", page_size=10,
                                          sizing_mode="stretch_width")
        self.table.param.watch(self._on_select, "selection")
        self.heading = pn.pane.Markdown("", name="comparison-heading",
                                        sizing_mode="stretch_width")
        self.comparison = pn.widgets.Tabulator(pd.DataFrame(), disabled=True, show_index=False,
                                               visible=False, sizing_mode="stretch_width")
        self.plot = pn.Column(name="comparison-plot", sizing_mode="stretch_width")
        self.view = pn.Column(
            pn.pane.Markdown("#### Experiments (select two to compare them)"), self.table,
            self.heading, self.comparison, self.plot, sizing_mode="stretch_width")

    async def refresh(self) -> bool:
        try:
            listed = await self.lab.aexperiments()
        except Exception as exc:
            self.notice.failed(exc)
            return False
        self.listed = listed.reset_index(drop=True)
        shown = self.listed[[c for c in EXPERIMENT_COLUMNS if c in self.listed.columns]]
        shown = shown.assign(models=shown["models"].map(_names),
                             updated_at=_when(shown["updated_at"]))
        if not shown.equals(self.table.value):  # an unchanged list keeps the user's selection
            self.table.value = shown
        return True

    async def compare(self, run_a: str, run_b: str) -> bool:
        """Show ``al.compare(a, b)`` for two listed runs: per metric the difference b - a
        with its interval, wins and losses, and the plot of the differences."""
        import panel as pn

        from aillm_lab.experiments.compare import compare, plot_comparison

        if run_a == run_b:
            self.notice.error("Select two different experiment runs to compare.")
            return False
        try:
            a, b = await asyncio.gather(self._load(run_a), self._load(run_b))
            table = await asyncio.to_thread(compare, a, b)
        except Exception as exc:
            self.notice.failed(exc)
            return False
        if table.empty:
            self.notice.error(f"{a.name} and {b.name} share no scored metric: nothing to "
                              "compare (give both experiments the same scorers).")
            return False
        self.heading.object = (f"**{b.name}** `{b.run_id}` minus **{a.name}** `{a.run_id}`: "
                               f"{int(table['significant'].sum())} of {len(table)} metric(s) "
                               "differ significantly.")
        self.comparison.param.update(value=table, visible=True)
        self.plot.objects = [pn.pane.Bokeh(plot_comparison(table), name="comparison-figure")]
        self.notice.ok(f"Compared {a.run_id} with {b.run_id}.")
        return True

    async def _load(self, run_id: str) -> ExperimentRun:
        from aillm_lab.experiments.results import ExperimentRun

        rows = self.listed[self.listed["run_id"] == run_id]
        if rows.empty:
            await self.refresh()
            rows = self.listed[self.listed["run_id"] == run_id]
        if rows.empty:
            known = ", ".join(self.listed["run_id"]) or "none yet"
            raise LookupError(f"no experiment run {run_id!r} under this home (runs: {known})")
        return await asyncio.to_thread(ExperimentRun.load, rows.iloc[0]["path"])

    async def _on_select(self, event: Any) -> None:
        """A click toggles a row; two selected rows are compared (the newer minus the older)."""
        picked = sorted(event.new or [])
        if len(picked) > 2:
            self.notice.error(f"{len(picked)} runs selected: select exactly two to compare "
                              "(a click toggles a row).")
            return
        if len(picked) != 2 or len(self.listed) <= max(picked):
            return
        rows = self.listed.iloc[picked].sort_values("updated_at", kind="stable")
        await self.compare(str(rows.iloc[0]["run_id"]), str(rows.iloc[1]["run_id"]))


def _when(column: pd.Series) -> pd.Series:
    """Times as text (Tabulator would show epoch numbers): the manifest's epoch seconds."""
    import pandas as pd

    numeric = pd.api.types.is_numeric_dtype(column)
    when = pd.to_datetime(column, unit="s" if numeric else None, utc=True, errors="coerce")
    return when.dt.strftime("%Y-%m-%d %H:%M:%S").fillna("")


def _names(models: Any) -> str:
    """A list of model ids as one readable cell."""
    if isinstance(models, list | tuple) or hasattr(models, "tolist"):
        return ", ".join(map(str, list(models)))
    return "" if models is None else str(models)

