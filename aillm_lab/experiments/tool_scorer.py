"""The BFCL-style tool-call match: function names, required arguments, allowed values.

The item's column holds the possible answer in BFCL's format: a list with one entry per
expected call, ``{"function_name": {"argument": [allowed values...]}}``; an allowed list
holding ``""`` marks the argument optional. A cell matches when it made exactly as many
calls as expected, and each expected call is matched by one made call (in any order) with
that name, every required argument present with an allowed value, optional ones absent
or allowed, and no argument the answer does not know.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aillm_lab.errors import ConfigError
from aillm_lab.experiments.scorers import Scorer
from aillm_lab.llm.types import ToolSpec

# BFCL writes some JSON-schema types its own way
_TYPES = {"dict": "object", "float": "number", "tuple": "array", "any": "string"}


def tool_call(column: str = "possible_answer", *, name: str = "tool_call") -> Scorer:
    """1.0 when the cell's tool calls match ``item[column]`` (see the module doc)."""
    def score(output: str | None, item: Mapping[str, Any],
              cell: Mapping[str, Any]) -> float | None:
        expected = _load(item.get(column))
        if expected is None:
            return None
        made = _calls(cell.get("tool_calls"), output)
        return float(matches(made, expected))

    return Scorer(name, score, (column,), uses_cell=True)


def matches(made: list[dict[str, Any]], expected: list[dict[str, Any]]) -> bool:
    """Whether ``made`` ([{"name", "arguments"}]) answers ``expected`` (BFCL entries)."""
    if len(made) != len(expected):
        return False
    left = list(made)
    for entry in expected:
        if not isinstance(entry, Mapping) or len(entry) != 1:
            return False
        (function, allowed), = entry.items()
        hit = next((call for call in left if _call_matches(call, function, allowed)), None)
        if hit is None:
            return False
        left.remove(hit)
    return True


def _call_matches(call: Mapping[str, Any], function: str,
                  allowed: Mapping[str, Any]) -> bool:
    if call.get("name") != function:
        return False
    arguments = call.get("arguments") or {}
    if any(arg not in allowed for arg in arguments):
        return False  # an argument the answer does not know
    for arg, values in allowed.items():
        values = values if isinstance(values, list) else [values]
        if arg not in arguments:
            if "" not in values:
                return False  # a required argument is missing
            continue
        if not any(_same(arguments[arg], v) for v in values if v != ""):
            return False
    return True


def _same(got: Any, want: Any) -> bool:
    """Equal, with ints and floats compared as numbers and strings case-folded."""
    if isinstance(got, bool) or isinstance(want, bool):
        return isinstance(got, bool) and isinstance(want, bool) and got == want
    if isinstance(got, int | float) and isinstance(want, int | float):
        return float(got) == float(want)
    if isinstance(got, str) and isinstance(want, str):
        return got.strip().casefold() == want.strip().casefold()
    if isinstance(got, list) and isinstance(want, list):
        return len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want,
                                                                         strict=True))
    if isinstance(got, dict) and isinstance(want, dict):
        return got.keys() == want.keys() and all(_same(got[k], want[k]) for k in got)
    return bool(got == want)


def _load(value: Any) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if isinstance(value, Mapping):
        value = [value]
    return list(value) if isinstance(value, list) else None


def _calls(recorded: Any, output: str | None) -> list[dict[str, Any]]:
    """The calls the cell made: its recorded tool calls, else calls written as JSON text
    (``[{"name": ..., "arguments": {...}}]``) by a model without native tool calling."""
    for source in (recorded, output):
        if not source:
            continue
        try:
            value = json.loads(source) if isinstance(source, str) else source
        except ValueError:
            continue
        value = [value] if isinstance(value, Mapping) else value
        if isinstance(value, list) and value and all(
                isinstance(c, Mapping) and "name" in c for c in value):
            return [dict(c) for c in value]
    return []


def function_specs(functions: Any) -> list[ToolSpec]:
    """BFCL function schemas (``{"name", "description", "parameters"}``, with its ``dict``,
    ``float`` and ``tuple`` types) as the ToolSpecs models take."""
    if isinstance(functions, str):
        functions = json.loads(functions)
    if isinstance(functions, Mapping):
        functions = [functions]
    if not isinstance(functions, list) or not functions:
        raise ConfigError(f"tools: an item's functions must be a list of schemas, got "
                          f"{type(functions).__name__}", fields=("tools",))
    return [ToolSpec(name=f["name"], description=f.get("description", ""),
                     parameters=_json_schema(f.get("parameters") or {"type": "dict"}))
            for f in functions]


def _json_schema(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_json_schema(s) for s in schema]
    if not isinstance(schema, Mapping):
        return schema
    fixed = {k: _json_schema(v) for k, v in schema.items()}
    if isinstance(fixed.get("type"), str):
        fixed["type"] = _TYPES.get(fixed["type"], fixed["type"])
    if fixed.get("type") == "object":
        fixed.setdefault("properties", {})
    return fixed
