"""Bootstrap intervals: percentile CIs of a mean, resampled with a seeded generator.

Seeded, so a summary or a comparison printed twice shows the same numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

RESAMPLES = 2000


def bootstrap_mean_ci(values: np.ndarray, *, confidence: float = 0.95, seed: int = 0,
                      resamples: int = RESAMPLES) -> tuple[float, float, float]:
    """The mean of ``values`` and its percentile bootstrap interval at ``confidence``."""
    import numpy as np

    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence}: give a level between 0 and 1, e.g. 0.95")
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2 or np.all(values == values[0]):
        return mean, mean, mean  # no spread to resample
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(values), size=(resamples, len(values)))
    means = values[picks].mean(axis=1)
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(means, [tail, 1 - tail])
    return mean, float(lo), float(hi)
