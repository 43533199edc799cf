"""``compare(run_a, run_b)``: per-metric differences with paired bootstrap CIs and wins/losses.

Runs are paired by item: each run's score for an item is the mean over its cells of that
item (prompts, models, samples and epochs), and only items scored in both runs count. The
difference is ``b - a``; it is significant when its interval excludes 0. A win is an item
where b is better than a in the metric's direction (lower latency and cost win).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aillm_lab.experiments.stats import bootstrap_mean_ci

if TYPE_CHECKING:
    import pandas as pd

    from aillm_lab.experiments.results import ExperimentRun


def compare(run_a: ExperimentRun, run_b: ExperimentRun, *, metrics: list[str] | None = None,
            confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """One row per metric both runs have: n paired items, mean_a, mean_b, diff (b - a), its
    bootstrap interval, wins/losses/ties for b, and whether the difference is significant."""
    import pandas as pd

    directions = {**run_a.metrics, **run_b.metrics}
    shared = [m for m in run_a.metrics if m in run_b.metrics]
    if metrics is not None:
        unknown = [m for m in metrics if m not in shared]
        if unknown:
            raise ValueError(f"metrics={unknown}: not scored in both runs; the shared "
                             f"metrics are {shared}")
        shared = list(metrics)
    per_item_a, per_item_b = _per_item(run_a), _per_item(run_b)
    rows = [_row(metric, per_item_a, per_item_b, directions[metric], confidence, seed)
            for metric in shared]
    table = pd.DataFrame(rows, columns=["metric", "n", "mean_a", "mean_b", "diff", "ci_low",
                                        "ci_high", "wins", "losses", "ties", "significant",
                                        "higher_is_better"])
    table.attrs.update(run_a=run_a.run_id, run_b=run_b.run_id, confidence=confidence)
    return table


def plot_comparison(table: pd.DataFrame) -> Any:
    """A bokeh figure of a ``compare`` table: each metric's difference and interval."""
    from aillm_lab.experiments.plots import comparison_figure

    return comparison_figure(table)


def _per_item(run: ExperimentRun) -> pd.DataFrame:
    scores = run.scores().dropna(subset=["value"])
    items = run.cells()[["cell_id", "item_id"]]
    joined = scores.merge(items, on="cell_id")
    return joined.groupby(["item_id", "scorer"])["value"].mean().unstack("scorer")


def _row(metric: str, a: pd.DataFrame, b: pd.DataFrame, higher_is_better: bool,
         confidence: float, seed: int) -> dict[str, Any]:
    import numpy as np

    if metric not in a.columns or metric not in b.columns:
        paired = np.empty((0, 2))
    else:
        import pandas as pd

        both = pd.concat([a[metric].rename("a"), b[metric].rename("b")], axis=1,
                         join="inner").dropna()
        paired = both.to_numpy(dtype=float)
    if len(paired) == 0:
        return {"metric": metric, "n": 0, "mean_a": np.nan, "mean_b": np.nan,
                "diff": np.nan, "ci_low": np.nan, "ci_high": np.nan, "wins": 0, "losses": 0,
                "ties": 0, "significant": False, "higher_is_better": higher_is_better}
    diffs = paired[:, 1] - paired[:, 0]
    diff, lo, hi = bootstrap_mean_ci(diffs, confidence=confidence, seed=seed)
    better = diffs if higher_is_better else -diffs
    return {"metric": metric, "n": len(paired), "mean_a": float(paired[:, 0].mean()),
            "mean_b": float(paired[:, 1].mean()), "diff": diff, "ci_low": lo, "ci_high": hi,
            "wins": int((better > 0).sum()), "losses": int((better < 0).sum()),
            "ties": int((better == 0).sum()), "significant": bool(lo > 0 or hi < 0),
            "higher_is_better": higher_is_better}
