"""The BFCL-style tool-call match, alone and in an experiment whose model calls tools."""

from __future__ import annotations

import json

import pytest

import aillm_lab as al
from aillm_lab.llm.types import ToolCall
from aillm_lab.testing import ScriptedModel

WEATHER = [{"get_weather": {"city": ["Paris", "Paris, France"], "unit": ["celsius", ""]}}]


def _score(calls, answer=WEATHER, output=""):
    cell = {"tool_calls": json.dumps(calls) if calls is not None else None}
    return al.scorers.tool_call("possible_answer")(output, {"possible_answer": answer}, cell)


@pytest.mark.parametrize(("calls", "expected"), [
    ([{"name": "get_weather", "arguments": {"city": "Paris"}}], 1.0),
    ([{"name": "get_weather", "arguments": {"city": "paris, france", "unit": "celsius"}}], 1.0),
    ([{"name": "get_weather", "arguments": {"city": "Paris", "unit": "kelvin"}}], 0.0),
    ([{"name": "get_weather", "arguments": {"unit": "celsius"}}], 0.0),   # missing argument
    ([{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}], 0.0),  # unknown one
    ([{"name": "get_forecast", "arguments": {"city": "Paris"}}], 0.0),    # wrong function
    ([], 0.0), (None, 0.0),                                               # no call at all
    ([{"name": "get_weather", "arguments": {"city": "Paris"}}] * 2, 0.0),  # one too many
])
def test_a_call_matches_on_name_required_arguments_and_allowed_values(calls, expected):
    assert _score(calls) == expected


def test_parallel_calls_match_in_any_order_and_numbers_compare_as_numbers():
    answer = [{"add": {"a": [1], "b": [2]}}, {"add": {"a": [3], "b": [4.0]}}]
    calls = [{"name": "add", "arguments": {"a": 3, "b": 4}},
             {"name": "add", "arguments": {"a": 1.0, "b": 2}}]
    assert _score(calls, answer) == 1.0
    assert _score(calls[:1], answer) == 0.0
    assert _score([{"name": "add", "arguments": {"a": True, "b": 2}}], [answer[0]]) == 0.0


def test_calls_written_as_json_text_count_and_a_bad_answer_has_no_score():
    text = json.dumps([{"name": "get_weather", "arguments": {"city": "Paris"}}])
    assert _score(None, output=text) == 1.0
    assert _score(None, output="It is sunny in Paris") == 0.0       # not JSON
    assert _score(None, output='{"city": "Paris"}') == 0.0           # JSON but no call
    assert _score([], answer=None) is None                          # no reference
    assert _score([], answer="{not json") is None
    assert _score([{"name": "get_weather", "arguments": {"city": "Paris"}}],
                  answer=json.dumps(WEATHER)) == 1.0                # a CSV/JSONL string


@al.tool
def get_weather(city: str, unit: str = "celsius") -> str:
    """The weather in a city."""
    return "sunny"


def test_an_experiment_offers_tools_keeps_the_calls_and_scores_them(make_lab):
    rows = [{"question": f"Weather in {city}?", "possible_answer": [
        {"get_weather": {"city": [city], "unit": ["celsius", ""]}}]}
        for city in ("Paris", "Lima", "Oslo")]

    def caller(messages, request):
        assert [t.name for t in request.tools] == ["get_weather"]
        city = messages[-1].text.split()[-1].rstrip("?")
        return ToolCall(id="c1", name="get_weather",
                        arguments={"city": "Lima" if city == "Oslo" else city})

    model = ScriptedModel(caller, name="caller")
    lab = make_lab()
    run = al.Experiment(name="bfcl-mini", dataset=rows, prompts=["{question}"], models=[model],
                        tools=[get_weather], scorers=[al.scorers.tool_call()],
                        lab=lab).run(progress=False)
    results = run.results()
    assert results["tool_call"].tolist() == [1.0, 1.0, 0.0]
    assert json.loads(results["tool_calls"][0]) == [{"name": "get_weather",
                                                     "arguments": {"city": "Paris"}}]
    assert run.manifest["spec"]["tools"] == ["get_weather"]
    without = al.Experiment(name="bfcl-mini", dataset=rows, prompts=["{question}"],
                            models=[model])
    assert without.run_id(without.cells(lab)) != run.run_id  # the tools shape the answer
