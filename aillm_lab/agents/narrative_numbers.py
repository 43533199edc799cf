"""Which numbers in a ``DataAnalysisAgent`` narrative the query result does not support.

Why a check of its own: a model that writes a narrative about a result may round, scale or
invent numbers, and a reader trusts a number in prose as much as one in the table. So every
number the narrative writes must match a value of the result frame (rounded as written, or
as a percentage), of the question or the SQL, or the row count; what matches nothing is
sent back once for a rewrite, then flagged in ``AnalysisResult.unsupported_numbers``. It is
model-free text matching.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections.abc import Sequence

import pandas as pd

_NUMBER = re.compile(
    r"(?<![\w.])(?P<int>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<dec>\d+))?"
    r"(?:\s?(?P<pct>%|percent\b)|\s?(?P<scale>thousand|million|billion|bn|mn|k|K|M|B)\b)?"
    r"(?!\w)")
_LIST_MARKER = re.compile(r"^\s*\d+[.)]\s", re.MULTILINE)  # "1. North ..." is not a claim
_SCALES = {"thousand": 1e3, "k": 1e3, "million": 1e6, "mn": 1e6, "m": 1e6, "billion": 1e9,
           "bn": 1e9, "b": 1e9}


def unsupported_numbers(text: str, frame: pd.DataFrame, *, also: Sequence[str] = ()
                        ) -> list[str]:
    """The numbers written in ``text`` that no value of ``frame`` (nor of ``also``, e.g. the
    question and the SQL, nor the row count) supports, in order, each once.

    A number matches a value rounded to as many decimals as it is written with ("15.3"
    for 15.27; "1.2 million" for 1,234,567), and "45%" matches 45 or 0.45.
    """
    known = sorted(_frame_numbers(frame) | {float(len(frame))}
                   | {n for part in also for n in _plain_numbers(part)})
    found: list[str] = []
    for match in _NUMBER.finditer(_LIST_MARKER.sub("", text)):
        value, decimals = _value(match), len(match["dec"] or "")
        scale = _SCALES.get((match["scale"] or "").lower(), 1.0)
        half = 0.5 * 10.0 ** -decimals
        candidates = [(value * scale, half * scale)]
        if match["pct"]:
            candidates.append((value / 100, half / 100))
        if not any(_near(known, v, tol) for v, tol in candidates):
            found.append(match.group(0).strip())
    return list(dict.fromkeys(found))


def _near(known: list[float], value: float, tol: float) -> bool:
    tol += 1e-9 * max(1.0, abs(value))  # float noise, e.g. 0.1 + 0.2
    i = bisect_left(known, value - tol)
    return i < len(known) and known[i] <= value + tol


def _frame_numbers(frame: pd.DataFrame) -> set[float]:
    numbers: set[float] = set()
    for name in frame.columns:
        column = frame[name].dropna()
        numbers.update(_plain_numbers(str(name)))
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            numbers.update(abs(float(v)) for v in column if math.isfinite(float(v)))
        else:
            numbers.update(n for v in column for n in _plain_numbers(str(v)))
    return numbers


def _plain_numbers(text: str) -> set[float]:
    return {_value(m) for m in _NUMBER.finditer(text)}


def _value(match: re.Match[str]) -> float:
    return float(match["int"].replace(",", "") + (f".{match['dec']}" if match["dec"] else ""))



__all__ = ["unsupported_numbers"]
