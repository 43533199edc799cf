"""The BFCL-format conformance sample scores 100% when the model replays the answers:
scripted, and through the OpenAI, Anthropic and Ollama adapters against their fake servers;
a model that calls the wrong thing scores less."""

from __future__ import annotations

import pytest

from aillm_lab.experiments import bfcl
from aillm_lab.llm.types import Completion, ToolCall
from aillm_lab.testing import FakeAnthropic, FakeOllama, FakeOpenAI, ScriptedModel

KEY = "sk-test-NEVER-STORE-0123456789abcdef"


def test_the_sample_is_well_formed_and_its_schemas_become_json_schema():
    from aillm_lab.experiments.tool_scorer import function_specs

    assert len(bfcl.SAMPLE) == 8 and len({i["id"] for i in bfcl.SAMPLE}) == 8
    for item in bfcl.SAMPLE:
        specs = function_specs(item["function"])
        assert all(s.parameters["type"] == "object" for s in specs)
        names = {s.name for s in specs}
        assert all(next(iter(entry)) in names for entry in item["possible_answer"])
    area = function_specs(bfcl.SAMPLE[3]["function"])[0]
    assert area.parameters["properties"]["radius"]["type"] == "number"  # BFCL's float


def test_a_replaying_scripted_model_scores_every_item(make_lab):
    model = ScriptedModel(bfcl.replay(), name="replay")
    run = bfcl.bfcl_experiment([model], lab=make_lab()).run(progress=False)
    assert run.n_done == 8 and run.results()["tool_call"].tolist() == [1.0] * 8
    offered = [sorted(t.name for t in r.tools) for r in model.requests]
    assert offered[4] == ["get_weather", "search_books"]  # each item its own functions


def test_a_model_that_calls_wrongly_scores_less(make_lab):
    def sloppy(messages, request):
        calls = bfcl.answers()[messages[-1].text]
        return [ToolCall(id=c.id, name=c.name, arguments={**c.arguments, "extra": 1})
                for c in calls[:1]] if "Oslo" in messages[-1].text else calls

    run = bfcl.bfcl_experiment([ScriptedModel(sloppy, name="sloppy")],
                               lab=make_lab()).run(progress=False)
    scores = run.results().set_index("item_index")["tool_call"]
    assert scores.sum() == 7 and scores[6] == 0.0


@pytest.mark.parametrize(("server_cls", "prefix"), [
    (FakeOpenAI, "openai:gpt-4o-mini"), (FakeAnthropic, "anthropic:claude-3-5-haiku-latest"),
    (FakeOllama, "ollama:llama3.2")])
def test_the_sample_scores_100_percent_through_each_provider_adapter(make_lab, monkeypatch,
                                                                     server_cls, prefix):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    table = bfcl.answers()
    holder: dict = {}

    def handler(body):
        return Completion(tool_calls=table[holder["server"].last_user_text(body)])

    with server_cls(handler=handler) as server:
        holder["server"] = server
        model = f"{prefix}@{server.url}"
        run = bfcl.bfcl_experiment([model], lab=make_lab()).run(progress=False)
        assert len(server.requests) == 8
    assert run.n_errors == 0, run.results()["error"].dropna().tolist()
    assert run.results()["tool_call"].tolist() == [1.0] * 8
