"""A query result's DataFrame as JSON data, and back.

Why: an ``AnalysisResult`` is part of its run's trace, which is saved as JSON and reloaded
in another process (``lab.runs``, ``fork``). A DataFrame is not JSON, so the frame is kept
as columns, dtypes and records (row lists of JSON values), and rebuilt with its dtypes where
pandas can restore them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd
from pydantic_core import to_jsonable_python


def frame_to_json(frame: pd.DataFrame) -> dict[str, Any]:
    """Columns, dtypes and records (row lists) of JSON values; ``frame_from_json`` undoes it."""
    return {"columns": [str(c) for c in frame.columns],
            "dtypes": [str(t) for t in frame.dtypes],
            "records": [[_cell(v) for v in row]
                        for row in frame.itertuples(index=False, name=None)]}


def frame_from_json(data: Mapping[str, Any]) -> pd.DataFrame:
    """The DataFrame ``frame_to_json`` described, with its dtypes where pandas can restore
    them (a column it cannot stays as its JSON values)."""
    columns = list(data["columns"])
    frame = pd.DataFrame(list(data["records"]) or None, columns=columns)
    for name, dtype in zip(columns, data.get("dtypes") or [], strict=False):
        try:
            frame[name] = frame[name].astype(dtype)
        except (TypeError, ValueError):
            continue
    return frame


def _cell(value: Any) -> Any:
    if value is None or value is pd.NaT or value is pd.NA or (
            isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if hasattr(value, "item") and not isinstance(value, str | bytes):  # numpy scalars
        return _cell(value.item())
    return to_jsonable_python(value, fallback=str)



__all__ = ["frame_from_json", "frame_to_json"]
