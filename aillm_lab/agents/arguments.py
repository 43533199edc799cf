"""An agent's limits checked when it is built, before anything runs.

A limit is a number a user types (``max_steps=``, ``max_seconds=``, ...); a wrong one (a
string, a bool, NaN, a negative count) must fail at the constructor with a ``ConfigError``
that names the argument, not deep in a run as a ``TypeError`` from a comparison.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from aillm_lab.errors import ConfigError


def check_limits(*, max_steps: Any, max_repairs: Any, remember: Any, max_cost_usd: Any,
                 max_seconds: Any, progress: Any, progress_default: float) -> None:
    """Every limit of ``Agent.__init__``; the first wrong one raises."""
    check_number("max_steps", max_steps, "a whole number, 1 or more", whole=True, low=1)
    check_number("max_repairs", max_repairs, "a whole number, 0 or more", whole=True, low=0)
    check_number("remember", remember, "a whole number of facts, 0 or more (0 saves none)",
                 whole=True, low=0)
    if max_cost_usd is not None:
        check_number("max_cost_usd", max_cost_usd, "a number of USD, 0 or more, or None",
                     low=0)
    if max_seconds is not None:
        check_number("max_seconds", max_seconds, "a number above 0, or None", low=0,
                     above=True)
    if not isinstance(progress, bool):
        check_number("progress", progress, "True, False, or the seconds a run lasts before "
                     f"its bar shows (default {progress_default:g})", low=0)


def check_number(name: str, value: Any, allowed: str, *, low: float, whole: bool = False,
                 above: bool = False) -> None:
    """A real number (not a bool, NaN or infinity; a whole one for counts) at or above
    ``low`` (strictly ``above`` it), else a ``ConfigError`` naming the argument, its value
    and ``allowed``."""
    kinds = numbers.Integral if whole else numbers.Real  # numpy's numbers too
    ok = (isinstance(value, kinds) and not isinstance(value, bool) and math.isfinite(value)
          and (value > low if above else value >= low))
    if not ok:
        raise ConfigError(f"{name}={value!r}: give {allowed}.", fields=(name,))
