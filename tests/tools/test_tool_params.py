"""``@tool`` maps every legal Python parameter name: a property test over generated names.

Each example builds a real function with ``exec`` (so Python itself decides what a legal
parameter is, NFKC-normalising unicode names as its parser does), documents it Google
style, applies ``@tool`` and checks that the schema has each parameter under its exact
name, with its type, required-ness and description, and that a call by those names
validates and reaches the function with the right values.
"""

from __future__ import annotations

import asyncio
import builtins
import keyword
import sys
import unicodedata
from dataclasses import dataclass
from typing import Any, Literal, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from aillm_lab.tools.base import Tool, tool


class Point(BaseModel):
    x: int
    y: int


@dataclass(frozen=True)
class Kind:
    """A parameter type: its annotation, the JSON Schema pydantic gives it, its values as a
    model sends them, and the defaults it may have (None: it is always required here)."""

    annotation: Any
    schema: dict[str, Any]
    values: st.SearchStrategy[Any]
    defaults: st.SearchStrategy[Any] | None

    def received(self, sent: Any) -> Any:
        """What the function gets for the JSON value ``sent``: a dict becomes a Point."""
        return Point(**sent) if isinstance(sent, dict) else sent


_text = st.text(max_size=20)
_ints = st.integers()
_point = st.fixed_dictionaries({"x": _ints, "y": _ints})
_KINDS = [
    (int, {"type": "integer"}, _ints),
    (str, {"type": "string"}, _text),
    (float, {"type": "number"}, st.floats(allow_nan=False, allow_infinity=False)),
    (bool, {"type": "boolean"}, st.booleans()),
    (list[str], {"type": "array", "items": {"type": "string"}}, st.lists(_text, max_size=3)),
    (Optional[int], {"anyOf": [{"type": "integer"}, {"type": "null"}]},  # noqa: UP045
     st.none() | _ints),
    (Literal["fast", "exact"], {"type": "string", "enum": ["fast", "exact"]},
     st.sampled_from(["fast", "exact"])),
]
KINDS = [Kind(a, s, v, v) for a, s, v in _KINDS] + [
    Kind(Point, {"$ref": "#/$defs/Point"}, _point, None),
    Kind(Point | None, {"anyOf": [{"$ref": "#/$defs/Point"}, {"type": "null"}]},
         st.none() | _point, st.none()),
]


def _legal(name: str) -> bool:
    """A name ``def f(name): ...`` accepts (``__debug__`` is an identifier it refuses)."""
    return name.isidentifier() and not keyword.iskeyword(name) and name != "__debug__"


# the names that broke: pydantic's own (model_config, json, schema, validate, copy, ...),
# leading underscores, builtins, soft keywords
RESERVED = sorted({n for n in dir(BaseModel) if _legal(n)}
                  | {n for n in dir(builtins) if _legal(n)}
                  | {"_", "_class", "__x__", "___", "_0", "match", "case", "type", "self",
                     "cls", "fn", "args", "kwargs", "p0", "p1", "__root__"})
_START = st.characters(categories=("Lu", "Ll", "Lt", "Lm", "Lo", "Nl"), include_characters="_")
_CONTINUE = st.characters(categories=("Lu", "Ll", "Lt", "Lm", "Lo", "Nl", "Mn", "Mc", "Nd",
                                      "Pc"), include_characters="\u00b7\u0387\u1369")
_generated = st.builds(lambda under, first, rest: under + first + rest,
                       st.sampled_from(["", "", "_", "__"]), _START, st.text(_CONTINUE, max_size=8))
NAMES = (st.sampled_from(RESERVED) | _generated).map(
    lambda n: unicodedata.normalize("NFKC", n)).filter(_legal)
# descriptions: words of letters, digits, punctuation and symbols on one line
_WORD = st.text(st.characters(categories=("L", "N", "P", "S")), min_size=1, max_size=8)
DESCRIPTIONS = st.none() | st.lists(_WORD, min_size=1, max_size=4).map(" ".join)


@dataclass
class Param:
    name: str
    kind: Kind
    place: Literal["positional", "either", "keyword"]
    description: str | None
    default: Any  # _NO_DEFAULT when required


_NO_DEFAULT = object()


@st.composite
def params(draw: st.DrawFn) -> list[Param]:
    """Parameters in a legal order: positional-only, then either, then keyword-only."""
    out = []
    for name in draw(st.lists(NAMES, min_size=1, max_size=6, unique=True)):
        kind = draw(st.sampled_from(KINDS))
        default = (draw(kind.defaults) if kind.defaults is not None and draw(st.booleans())
                   else _NO_DEFAULT)
        place = draw(st.sampled_from(["positional", "either", "keyword"]))
        out.append(Param(name, kind, place, draw(DESCRIPTIONS), default))
    order = {"positional": 0, "either": 1, "keyword": 2}
    out.sort(key=lambda p: order[p.place])
    seen_default = False  # Python's rule: no required positional one after a defaulted one
    for p in out:
        if p.place != "keyword":
            if p.default is _NO_DEFAULT and seen_default:
                p.place = "keyword"
            seen_default = seen_default or p.default is not _NO_DEFAULT
    return sorted(out, key=lambda p: order[p.place])


def build(ps: list[Param]) -> tuple[Tool, dict[str, Any]]:
    """``@tool`` over ``def generated_tool(...)`` made by exec; the dict gets each call's
    locals (the body names one global that no parameter can shadow)."""
    taken = {p.name for p in ps}
    capture = next(f"_capture{i}" for i in range(len(ps) + 1) if f"_capture{i}" not in taken)
    received: dict[str, Any] = {}
    ns: dict[str, Any] = {capture: lambda: received.update(sys._getframe(1).f_locals)}
    parts: list[str] = []
    for i, p in enumerate(ps):
        if p.place == "keyword" and "*" not in parts:
            parts.append("*")
        ns[f"T{i}"], ns[f"D{i}"] = p.kind.annotation, p.default
        parts.append(f"{p.name}: T{i}" + ("" if p.default is _NO_DEFAULT else f" = D{i}"))
        if p.place == "positional" and (i + 1 == len(ps) or ps[i + 1].place != "positional"):
            parts.append("/")
    exec(f"def generated_tool({', '.join(parts)}):\n    {capture}()\n", ns)
    fn = ns["generated_tool"]
    documented = [f"    {p.name}: {p.description}" for p in ps if p.description is not None]
    fn.__doc__ = "A generated tool.\n\nArgs:\n" + "\n".join(documented) + "\n"
    return tool(fn), received


@settings(max_examples=100, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(ps=params(), data=st.data())
def test_any_legal_parameter_name_round_trips_through_schema_and_call(
        ps: list[Param], data: st.DataObject) -> None:
    t, received = build(ps)
    schema = t.spec.parameters
    assert t.spec.description == "A generated tool."
    assert list(schema["properties"]) == [p.name for p in ps]
    assert schema.get("required", []) == [p.name for p in ps if p.default is _NO_DEFAULT]
    for p in ps:
        expected = dict(p.kind.schema)
        if p.description is not None:
            expected["description"] = p.description
        if p.default is not _NO_DEFAULT:
            expected["default"] = p.default
        assert schema["properties"][p.name] == expected, p.name

    sent = {p.name: data.draw(p.kind.values) for p in ps
            if p.default is _NO_DEFAULT or data.draw(st.booleans())}
    asyncio.run(t.acall(sent))
    assert received == {p.name: p.kind.received(sent[p.name]) if p.name in sent else p.default
                        for p in ps}


@settings(max_examples=40, deadline=None, database=None)
@given(name=NAMES)
def test_only_the_parameter_name_is_accepted_not_the_internal_field(name: str) -> None:
    t, _ = build([Param(name, KINDS[0], "either", "a number", _NO_DEFAULT)])
    assert t.validate({name: "7"}) == {name: 7}
    internal = "p1" if name == "p0" else "p0"  # the names of the model's own fields
    with pytest.raises(ValidationError, match=f"{internal}\n  Extra inputs are not permitted"):
        t.validate({name: 1, internal: 2})
