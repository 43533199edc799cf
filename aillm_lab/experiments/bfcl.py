"""A tool-calling conformance suite in BFCL's format: a small original sample, and BFCL's own data.

Each item has BFCL's fields: ``id``, ``question``, ``function`` (the schemas offered, with
BFCL's ``dict``/``float`` types) and ``possible_answer`` (per expected call, the allowed
values of each argument; ``""`` marks one optional). ``bfcl_experiment(models)`` runs it with
``al.scorers.tool_call``; ``answers()`` gives each question's perfect calls and ``replay()``
wraps them as a ``ScriptedModel`` reply function, so a run through any provider adapter
that carries tool calls faithfully scores 100%.

``load(category)`` reads the real Berkeley Function-Calling Leaderboard data shipped in the
``bfcl-eval`` wheel (the ``[bfcl]`` extra, or ``pip install --no-deps --target DIR
bfcl-eval`` and ``data_dir=DIR``) without importing it: bfcl-eval pins numpy and dozens of
vendor SDKs, so it is never a dependency of ours. The single-turn categories in ``SUPPORTED``
are converted to the items above; ``UNSUPPORTED`` says why the others are not, and
``load_category(...).skipped`` which items of a supported category were left out and why.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aillm_lab.errors import ConfigError
from aillm_lab.experiments.spec import Experiment
from aillm_lab.experiments.tool_scorer import function_specs, tool_call
from aillm_lab.llm.types import ToolCall, ToolSpec


def _fn(name: str, description: str, properties: dict[str, Any],
        required: list[str]) -> dict[str, Any]:
    return {"name": name, "description": description,
            "parameters": {"type": "dict", "properties": properties, "required": required}}


_WEATHER = _fn("get_weather", "Current weather in a city.",
               {"city": {"type": "string", "description": "City name"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, ["city"])
_CONVERT = _fn("convert_currency", "Convert an amount between currencies.",
               {"amount": {"type": "float"}, "from_code": {"type": "string"},
                "to_code": {"type": "string"}}, ["amount", "from_code", "to_code"])
_AREA = _fn("circle_area", "Area of a circle.", {"radius": {"type": "float"}}, ["radius"])
_EVENT = _fn("create_event", "Put an event in the calendar.",
             {"title": {"type": "string"}, "date": {"type": "string", "description": "YYYY-MM-DD"},
              "attendees": {"type": "array", "items": {"type": "string"}}},
             ["title", "date"])
_SEARCH = _fn("search_books", "Search a library catalogue.",
              {"query": {"type": "string"}, "limit": {"type": "integer"}}, ["query"])

SAMPLE: list[dict[str, Any]] = [
    {"id": "simple_0", "question": "What's the weather in Lisbon right now?",
     "function": [_WEATHER],
     "possible_answer": [{"get_weather": {"city": ["Lisbon", "Lisbon, Portugal"],
                                          "unit": ["", "celsius"]}}]},
    {"id": "simple_1", "question": "How warm is it in Denver, in fahrenheit?",
     "function": [_WEATHER],
     "possible_answer": [{"get_weather": {"city": ["Denver", "Denver, CO"],
                                          "unit": ["fahrenheit"]}}]},
    {"id": "simple_2", "question": "Convert 250 euros to Japanese yen.",
     "function": [_CONVERT],
     "possible_answer": [{"convert_currency": {"amount": [250.0], "from_code": ["EUR"],
                                               "to_code": ["JPY"]}}]},
    {"id": "simple_3", "question": "What is the area of a circle of radius 2.5?",
     "function": [_AREA], "possible_answer": [{"circle_area": {"radius": [2.5]}}]},
    {"id": "multiple_0", "question": "Find me up to 3 books about sourdough baking.",
     "function": [_WEATHER, _SEARCH],
     "possible_answer": [{"search_books": {"query": ["sourdough baking", "sourdough"],
                                           "limit": [3]}}]},
    {"id": "multiple_1",
     "question": "Schedule 'Design review' on 2025-03-14 with Ana and Bo.",
     "function": [_SEARCH, _EVENT],
     "possible_answer": [{"create_event": {"title": ["Design review"],
                                           "date": ["2025-03-14"],
                                           "attendees": [["Ana", "Bo"]]}}]},
    {"id": "parallel_0", "question": "Weather in Oslo and in Cairo, please.",
     "function": [_WEATHER],
     "possible_answer": [{"get_weather": {"city": ["Oslo"], "unit": [""]}},
                         {"get_weather": {"city": ["Cairo"], "unit": [""]}}]},
    {"id": "parallel_1", "question": "Areas of circles with radius 1 and radius 3?",
     "function": [_AREA],
     "possible_answer": [{"circle_area": {"radius": [1.0]}},
                         {"circle_area": {"radius": [3.0]}}]},
]


def bfcl_experiment(models: list[Any], *, dataset: list[dict[str, Any]] | None = None,
                    name: str = "bfcl-sample", lab: Any = None, **spec: Any) -> Experiment:
    """The conformance experiment over ``dataset`` (the sample by default) for ``models``."""
    return Experiment(name=name, dataset=dataset or SAMPLE, prompts=["{question}"],
                      models=models, tools="function", scorers=[tool_call("possible_answer")],
                      lab=lab, **spec)


def answers(items: list[dict[str, Any]] | None = None) -> dict[str, list[ToolCall]]:
    """Each question's expected calls, with the first allowed value of every argument
    (optional ones left out): what a perfect model would call."""
    return {item["question"]: expected_calls(item) for item in items or SAMPLE}


def expected_calls(item: Mapping[str, Any]) -> list[ToolCall]:
    """The calls a perfect model makes for ``item`` (none for an irrelevance item)."""
    calls = []
    for index, entry in enumerate(item["possible_answer"]):
        (function, allowed), = entry.items()
        arguments = {arg: next(v for v in values if v != "")
                     for arg, values in allowed.items() if any(v != "" for v in values)}
        calls.append(ToolCall(id=f"call_{index}", name=function, arguments=arguments))
    return calls


def replay(items: list[dict[str, Any]] | None = None) -> Any:
    """A ``ScriptedModel`` reply function making each item's ``expected_calls`` (found by
    the question and the functions offered, since BFCL repeats some questions), and
    answering in words where no call is expected."""
    table = {_key(item["question"], function_specs(item["function"])): expected_calls(item)
             for item in items or SAMPLE}

    def reply(messages: list[Any], request: Any) -> list[ToolCall] | str:
        return table[_key(messages[-1].text, request.tools)] or NO_CALL

    return reply


NO_CALL = "None of the functions offered can answer this, so I call none of them."


def _key(question: str, specs: list[ToolSpec]) -> str:
    return json.dumps([question, [s.model_dump(mode="json") for s in specs]], sort_keys=True)


# -- BFCL's own data (the bfcl-eval wheel) ------------------------------------------------------
SUPPORTED = ("simple_python", "multiple", "parallel", "parallel_multiple", "live_simple",
             "live_multiple", "live_parallel", "live_parallel_multiple", "irrelevance",
             "live_irrelevance")
_MULTI_TURN = ("multi-turn: each turn's calls are run against BFCL's simulated APIs (its "
               "Python classes) and judged by their state; a cell here is one prompt")
UNSUPPORTED = {
    "simple_java": "arguments are Java source in strings, which BFCL's checker parses per "
                   "Java type; tool_call compares JSON values",
    "simple_javascript": "arguments are JavaScript source in strings, which BFCL's checker "
                         "parses per type; tool_call compares JSON values",
    "live_relevance": "it passes when the model makes any call at all, which a possible "
                      "answer cannot say",
    "multi_turn_base": _MULTI_TURN, "multi_turn_long_context": _MULTI_TURN,
    "multi_turn_miss_func": _MULTI_TURN, "multi_turn_miss_param": _MULTI_TURN,
    "memory": "agentic: the model keeps and queries a memory backend of BFCL's over turns",
    "web_search": "agentic: the model searches the live web, and the answer is judged as text",
    "format_sensitivity": "not items: it lists other categories' ids to ask again in other "
                          "prompt formats",
}
MAX_COMBINATIONS = 256  # concrete values a nested possible answer may stand for
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what OpenAI and Anthropic take as a tool name


@dataclass
class Category:
    """A BFCL category converted: its items, and the ids left out with the reason."""

    name: str
    items: list[dict[str, Any]]
    skipped: dict[str, str] = field(default_factory=dict)


def load(category: str = "simple_python", *, data_dir: str | Path | None = None,
         limit: int | None = None) -> list[dict[str, Any]]:
    """The items of a BFCL category in this module's format (see ``load_category``)."""
    return load_category(category, data_dir=data_dir, limit=limit).items


def load_category(category: str, *, data_dir: str | Path | None = None,
                  limit: int | None = None) -> Category:
    """BFCL's ``BFCL_v4_<category>.json`` and its possible answers, converted: the user's
    question as the prompt, dots in function names made underscores (as BFCL does for
    OpenAI-style tools), and nested possible answers spelled out as concrete values.
    ``data_dir``: bfcl-eval's ``data`` folder, its package folder or a ``--target`` folder
    holding it (default: the installed package). ``limit`` keeps the first items."""
    if category in UNSUPPORTED:
        raise ConfigError(f"category={category!r} is not supported: {UNSUPPORTED[category]}. "
                          f"Supported: {', '.join(SUPPORTED)}", fields=("category",))
    if category not in SUPPORTED:
        raise ConfigError(f"category={category!r} is not a BFCL category; give one of "
                          f"{', '.join(SUPPORTED)}", fields=("category",))
    if limit is not None and limit < 1:
        raise ConfigError(f"limit={limit}: give 1 or more items, or None for all",
                          fields=("limit",))
    folder = find_data(data_dir)
    rows = _read_jsonl(folder / f"BFCL_v4_{category}.json")
    answer_file = folder / "possible_answer" / f"BFCL_v4_{category}.json"
    truth = ({row["id"]: row["ground_truth"] for row in _read_jsonl(answer_file)}
             if answer_file.is_file() else {})
    result = Category(category, [])
    for row in rows:
        if limit is not None and len(result.items) >= limit:
            break
        try:
            result.items.append(convert(row, truth.get(row["id"]), category))
        except _Unsupported as exc:
            result.skipped[row["id"]] = str(exc)
    return result


def find_data(data_dir: str | Path | None = None) -> Path:
    """bfcl-eval's ``data`` folder: under ``data_dir`` or the installed package."""
    import importlib.util

    if data_dir is not None:
        base = Path(data_dir)
        for folder in (base, base / "data", base / "bfcl_eval" / "data"):
            if (folder / "BFCL_v4_simple_python.json").is_file():
                return folder
        raise ConfigError(f"data_dir={str(base)!r} holds no BFCL data (BFCL_v4_*.json); give "
                          "the folder of `pip install --no-deps --target DIR bfcl-eval`",
                          fields=("data_dir",))
    spec = importlib.util.find_spec("bfcl_eval")  # locates it without importing it
    for location in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(location) / "data"
        if (folder / "BFCL_v4_simple_python.json").is_file():
            return folder
    raise ConfigError("BFCL's data ships in the bfcl-eval package, which is not installed: "
                      "pip install 'aillm-lab[bfcl]' (it pins numpy and many SDKs, so "
                      "better in its own folder: pip install --no-deps --target DIR "
                      "bfcl-eval, then data_dir=DIR)", fields=("data_dir",))


def convert(row: Mapping[str, Any], ground_truth: Any, category: str) -> dict[str, Any]:
    """One BFCL row (and its ground truth) as an item of this module's format."""
    turns = row.get("question")
    if not (isinstance(turns, list) and len(turns) == 1 and isinstance(turns[0], list)
            and len(turns[0]) == 1 and turns[0][0].get("role") == "user"):
        raise _Unsupported("the turn holds a system prompt or several messages; a cell "
                           "sends one user prompt")
    functions = [dict(f) for f in row.get("function") or []]
    if not functions:
        raise _Unsupported("it offers no functions")
    names = {f["name"]: f["name"].replace(".", "_") for f in functions}
    bad = sorted(n for n in names.values() if not _NAME.match(n))
    if bad or len(set(names.values())) != len(names):
        raise _Unsupported(f"function names {bad or sorted(names)} are not valid tool names")
    for function in functions:
        function["name"] = names[function["name"]]
    if category.endswith("irrelevance"):
        expected: list[dict[str, Any]] = []  # the right answer is no call
    elif not isinstance(ground_truth, list) or not ground_truth:
        raise _Unsupported("it has no possible answer")
    else:
        expected = [{names.get(fn, fn): {arg: _spelled_out(allowed)
                                         for arg, allowed in args.items()}}
                    for entry in ground_truth for fn, args in entry.items()]
        empty = sorted(arg for entry in expected for args in entry.values()
                       for arg, allowed in args.items() if not allowed)
        if empty:  # BFCL's own checker fails every answer to such an item
            raise _Unsupported(f"the possible answer allows no value for {empty}")
    return {"id": row["id"], "question": turns[0][0]["content"], "function": functions,
            "possible_answer": expected}


def experiment(models: list[Any], category: str = "sample", *,
               data_dir: str | Path | None = None, limit: int | None = None,
               lab: Any = None, **spec: Any) -> Experiment:
    """The conformance experiment over ``category``: ``"sample"`` (this module's own
    items) or one of BFCL's ``SUPPORTED`` categories, read with ``load``."""
    if category == "sample":
        return bfcl_experiment(models, dataset=SAMPLE[:limit], lab=lab, **spec)
    return bfcl_experiment(models, dataset=load(category, data_dir=data_dir, limit=limit),
                           name=f"bfcl-{category}", lab=lab, **spec)


class _Unsupported(ValueError):
    """An item this conversion cannot express (kept in ``Category.skipped``)."""


_ABSENT = object()


def _spelled_out(allowed: Any) -> list[Any]:
    """An argument's allowed values with BFCL's nested answers (a dict of allowed values per
    key, inside a list or not) turned into every concrete value they allow."""
    values = allowed if isinstance(allowed, list) else [allowed]
    out: list[Any] = []
    for value in values:
        out += [""] if value == "" else _concrete(value)
    return out


def _concrete(value: Any) -> list[Any]:
    if isinstance(value, dict):
        keys = list(value)
        choices = []
        for key in keys:
            allowed = value[key] if isinstance(value[key], list) else [value[key]]
            choices.append([c for a in allowed
                            for c in ([_ABSENT] if a == "" else _concrete(a))])
        combos = _bounded(itertools.product(*choices))
        return [{k: v for k, v in zip(keys, combo, strict=True) if v is not _ABSENT}
                for combo in combos]
    if isinstance(value, list):
        return [list(combo) for combo in _bounded(itertools.product(*map(_concrete, value)))]
    return [value]


def _bounded(combos: Any) -> list[Any]:
    found = list(itertools.islice(combos, MAX_COMBINATIONS + 1))
    if len(found) > MAX_COMBINATIONS:
        raise _Unsupported(f"a nested possible answer allows over {MAX_COMBINATIONS} values")
    return found


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
