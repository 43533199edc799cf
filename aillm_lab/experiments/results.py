"""``ExperimentRun``: a run's folder read back as tables (``results``, ``scores``, ``summary``).

Reading needs no Lab and no loop: the folder is the whole truth, so a run reopened after a
kernel restart (``ExperimentRun.load(path)``) answers exactly as the one that wrote it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aillm_lab.experiments import store
from aillm_lab.experiments.stats import bootstrap_mean_ci

if TYPE_CHECKING:
    import pandas as pd

CELL_VIEW = ["cell_id", "item_id", "item_index", "prompt_index", "prompt", "model", "epoch",
             "sample", "input", "output", "tool_calls", "error", "cost_usd", "latency_s",
             "input_tokens", "output_tokens"]


class ExperimentRun:
    """One experiment's results under ``<home>/experiments/<run_id>/``.

    ``status`` is how the last ``run()`` ended: ``completed`` (every cell was tried; some
    may have failed, see ``n_errors``), ``budget``, ``cancelled`` or ``error`` (the
    runner itself failed); ``message`` says why
    and how far it got. ``sent``: cells sent to a model by that run (0 on a full resume).
    """

    def __init__(self, folder: str | Path, *, status: str | None = None,
                 message: str | None = None, sent: int = 0) -> None:
        self.folder = Path(folder)
        self.manifest = store.read_manifest(self.folder)
        self.run_id: str = self.manifest["run_id"]
        self.name: str = self.manifest["name"]
        self.status: str = status or self.manifest.get("status", "unknown")
        self.sent = sent
        cells = store.latest_cells(self.folder)
        self.n_cells: int = self.manifest["n_cells"]
        self.n_done = int(cells["error"].isna().sum())
        self.n_errors = len(cells) - self.n_done
        self.cost_usd = float(cells["cost_usd"].fillna(0.0).sum())
        if self.status == "budget":
            message = (f"{message or 'stopped at the budget'}; {self.n_done} of "
                       f"{self.n_cells} cells done (${self.cost_usd:.6f} spent). Run again "
                       "with a larger budget_usd to go on from there.")
        self.message: str = message or self.manifest.get("message") or ""

    @classmethod
    def load(cls, folder: str | Path) -> ExperimentRun:
        """A run saved earlier, from its folder (``LookupError`` if it holds none)."""
        return cls(folder)

    def __repr__(self) -> str:
        return (f"<ExperimentRun {self.run_id} {self.status}: {self.n_done}/{self.n_cells} "
                f"cells, {self.n_errors} errors, ${self.cost_usd:.6f}>")

    def _repr_html_(self) -> str:
        """The status line and the summary table, for a notebook cell."""
        import html

        head = (f"<b>{html.escape(self.name)}</b> <code>{html.escape(self.run_id)}</code>: "
                f"{html.escape(self.status)}, {self.n_done}/{self.n_cells} cells, "
                f"{self.n_errors} errors, ${self.cost_usd:.6f}")
        note = f"<br><i>{html.escape(self.message)}</i>" if self.message else ""
        table = self.summary().to_html(index=False, float_format=lambda x: f"{x:.3g}")
        return f"<div>{head}{note}{table}</div>"

    @property
    def metrics(self) -> dict[str, bool]:
        """Each scorer's name and whether higher is better."""
        scores = store.latest_scores(self.folder)
        pairs = scores.drop_duplicates("scorer")
        return dict(zip(pairs["scorer"], pairs["higher_is_better"].astype(bool), strict=True))

    def cells(self) -> pd.DataFrame:
        """The raw cells table (newest attempt per cell), without scores."""
        return store.latest_cells(self.folder)

    def scores(self) -> pd.DataFrame:
        """The scores table in long form: one row per (cell, scorer)."""
        return store.latest_scores(self.folder)

    def results(self) -> pd.DataFrame:
        """One row per cell (item × prompt × model × sample × epoch) in grid order, with
        the item's columns, the output, the error, cost, latency and one column per scorer."""
        import pandas as pd

        order = ["model_index", "prompt_index", "epoch", "sample", "item_index"]
        cells = self.cells().sort_values(order, kind="stable").reset_index(drop=True)
        wide = self._wide_scores()
        frame = cells[CELL_VIEW].merge(wide, how="left", left_on="cell_id", right_index=True)
        items = pd.DataFrame([json.loads(text) for text in cells["item"]], index=cells.index)
        items.columns = [c if c not in frame.columns else f"item_{c}" for c in items.columns]
        frame = pd.concat([frame.iloc[:, :4], items, frame.iloc[:, 4:]], axis=1)
        return frame

    def summary(self, confidence: float = 0.95) -> pd.DataFrame:
        """Per prompt × model: cells, errors, cost, mean latency, and each scorer's mean
        with a bootstrap confidence interval (``<scorer>_lo``, ``<scorer>_hi``)."""
        import numpy as np
        import pandas as pd

        frame = self.results()
        metrics = list(self.metrics)
        seed = int(self.manifest.get("seed", 0))
        rows = []
        for (prompt_index, model), group in frame.groupby(["prompt_index", "model"],
                                                          sort=True):
            row: dict[str, Any] = {
                "prompt_index": prompt_index, "prompt": group["prompt"].iloc[0],
                "model": model, "cells": len(group), "errors": int(group["error"].notna().sum()),
                "cost_usd": float(group["cost_usd"].fillna(0.0).sum()),
                "latency_s": float(group["latency_s"].mean()),
            }
            for metric in metrics:
                values = group[metric].dropna().to_numpy(dtype=float)
                mean, lo, hi = (bootstrap_mean_ci(values, confidence=confidence, seed=seed)
                                if len(values) else (np.nan, np.nan, np.nan))
                row.update({metric: mean, f"{metric}_lo": lo, f"{metric}_hi": hi})
            rows.append(row)
        return pd.DataFrame(rows)

    def plot(self, metric: str | None = None) -> Any:
        """A bokeh figure of ``metric`` (the first scorer by default) per prompt × model,
        with its interval; ``bokeh.io.show(fig)`` in a notebook."""
        from aillm_lab.experiments.plots import summary_figure

        metrics = list(self.metrics)
        if metric is None and not metrics:
            raise ValueError("this run has no scores to plot; give the experiment scorers")
        return summary_figure(self.summary(), metric or metrics[0])

    def _wide_scores(self) -> pd.DataFrame:
        scores = self.scores()
        if scores.empty:
            import pandas as pd

            return pd.DataFrame(index=pd.Index([], name="cell_id", dtype="string"))
        wide = scores.pivot(index="cell_id", columns="scorer", values="value")
        named = [s for s in self.manifest["spec"].get("scorers", []) if s in wide.columns]
        return wide[named + [c for c in wide.columns if c not in named]]


def list_runs(home: str | Path) -> pd.DataFrame:
    """Every experiment run under ``home``, newest first: one row per run with its id, name,
    status, cells, models, when it was last run and its folder (for ``lab.experiments()``)."""
    import pandas as pd

    rows = []
    for manifest_path in store.experiments_dir(Path(home)).glob("*/manifest.json"):
        try:
            manifest = store.read_manifest(manifest_path.parent)
        except (LookupError, ValueError):  # half-written by a crash: skipped, not fatal
            continue
        spec = manifest.get("spec", {})
        rows.append({"run_id": manifest["run_id"], "name": manifest.get("name"),
                     "status": manifest.get("status"), "cells": manifest.get("n_cells"),
                     "models": spec.get("models"), "prompts": len(spec.get("prompts", [])),
                     "items": spec.get("n_items"), "updated_at": manifest.get("updated_at"),
                     "path": str(manifest_path.parent)})
    columns = ["run_id", "name", "status", "cells", "models", "prompts", "items",
               "updated_at", "path"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values("updated_at", ascending=False, kind="stable").reset_index(drop=True)
