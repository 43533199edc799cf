"""A tool-calling conformance suite in BFCL's format: a small sample written for this project.

Each item has BFCL's fields: ``id``, ``question``, ``function`` (the schemas offered, with
BFCL's ``dict``/``float`` types) and ``possible_answer`` (per expected call, the allowed
values of each argument; ``""`` marks one optional). ``bfcl_experiment(models)`` runs it with
``al.scorers.tool_call``; ``answers()`` gives each question's perfect calls and ``replay()``
wraps them as a ``ScriptedModel`` reply function, so a run through any provider adapter
that carries tool calls faithfully scores 100%.
"""

from __future__ import annotations

from typing import Any

from aillm_lab.experiments.spec import Experiment
from aillm_lab.experiments.tool_scorer import tool_call
from aillm_lab.llm.types import ToolCall


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
    table = {}
    for item in items or SAMPLE:
        calls = []
        for index, entry in enumerate(item["possible_answer"]):
            (function, allowed), = entry.items()
            arguments = {arg: next(v for v in values if v != "")
                         for arg, values in allowed.items() if any(v != "" for v in values)}
            calls.append(ToolCall(id=f"call_{index}", name=function, arguments=arguments))
        table[item["question"]] = calls
    return table


def replay(items: list[dict[str, Any]] | None = None) -> Any:
    """A ``ScriptedModel`` reply function answering each question with ``answers(items)``."""
    table = answers(items)

    def reply(messages: list[Any], request: Any) -> list[ToolCall]:
        return table[messages[-1].text]

    return reply
