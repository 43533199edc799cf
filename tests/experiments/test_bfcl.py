"""The BFCL-format conformance sample scores 100% when the model replays the answers:
scripted, and through the OpenAI, Anthropic and Ollama adapters against their fake servers;
a model that calls the wrong thing scores less."""

from __future__ import annotations

import os

import pytest

from aillm_lab.errors import ConfigError
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


# -- BFCL's own data, from the bfcl-eval wheel (fetched apart from the venv) -------------------
def _bfcl_data():
    """bfcl-eval's data: $AILLM_BFCL_DATA, the repo's .bfcl-data/ (``make test`` fetches
    it), or an installed bfcl-eval; None when none is there."""
    from pathlib import Path

    candidates = [os.environ.get("AILLM_BFCL_DATA"),
                  str(Path(__file__).resolve().parents[2] / ".bfcl-data"), None]
    for candidate in candidates:
        if candidate == "":
            continue
        try:
            return bfcl.find_data(candidate)
        except ConfigError:
            continue
    return None


DATA = _bfcl_data()
needs_data = pytest.mark.skipif(
    DATA is None, reason="BFCL's data is not here: `pip install --no-deps --target .bfcl-data "
    "bfcl-eval` (make test does), or set AILLM_BFCL_DATA to such a folder")


@needs_data
def test_a_replaying_model_scores_100_percent_on_bfcl_simple_python(make_lab):
    category = bfcl.load_category("simple_python", data_dir=DATA)
    assert len(category.items) == 400 and category.skipped == {}
    model = ScriptedModel(bfcl.replay(category.items), name="replay")
    run = bfcl.bfcl_experiment([model], dataset=category.items, lab=make_lab(),
                               concurrency=16).run(progress=False)
    assert run.n_done == 400 and run.n_errors == 0
    assert run.results()["tool_call"].tolist() == [1.0] * 400
    names = {t.name for r in model.requests for t in r.tools}
    assert "math_factorial" in names and not any("." in n for n in names)


@needs_data
@pytest.mark.parametrize("name", [c for c in bfcl.SUPPORTED if c != "simple_python"])
def test_a_replaying_model_scores_100_percent_on_each_supported_category(make_lab, name):
    category = bfcl.load_category(name, data_dir=DATA)
    assert len(category.items) >= 0.9 * (len(category.items) + len(category.skipped))
    run = bfcl.bfcl_experiment([ScriptedModel(bfcl.replay(category.items), name="replay")],
                               dataset=category.items, name=f"bfcl-{name}", lab=make_lab(),
                               concurrency=16).run(progress=False)
    assert run.n_errors == 0
    assert run.results()["tool_call"].sum() == len(category.items)


@needs_data
def test_real_bfcl_through_the_openai_adapter_scores_100_percent(make_lab, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    items = bfcl.load("parallel", data_dir=DATA, limit=40)
    table = bfcl.answers(items)
    holder: dict = {}

    def handler(body):
        return Completion(tool_calls=table[holder["server"].last_user_text(body)])

    with FakeOpenAI(handler=handler) as server:
        holder["server"] = server
        run = bfcl.experiment([f"openai:gpt-4o-mini@{server.url}"], "parallel", data_dir=DATA,
                              limit=40, lab=make_lab()).run(progress=False)
    assert run.n_errors == 0, run.results()["error"].dropna().tolist()[:3]
    assert run.results()["tool_call"].tolist() == [1.0] * 40


@needs_data
def test_a_model_that_misses_an_argument_or_calls_when_it_should_not_scores_less(make_lab):
    items = bfcl.load("simple_python", data_dir=DATA, limit=10) + \
        bfcl.load("irrelevance", data_dir=DATA, limit=10)
    perfect = bfcl.replay(items)
    first = items[0]["question"]  # calculate_triangle_area(base=10, height=5)

    def sloppy(messages, request):
        reply = perfect(messages, request)
        if messages[-1].text == first:
            return [ToolCall(id="c", name=reply[0].name, arguments={"base": 10})]
        if isinstance(reply, str):  # an irrelevance item: it calls anyway
            spec = request.tools[0]
            return [ToolCall(id="c", name=spec.name, arguments={})]
        return reply

    run = bfcl.bfcl_experiment([ScriptedModel(sloppy, name="sloppy")], dataset=items,
                               lab=make_lab()).run(progress=False)
    assert run.results()["tool_call"].tolist() == [0.0] + [1.0] * 9 + [0.0] * 10


@needs_data
def test_items_a_cell_cannot_express_are_skipped_with_the_reason():
    live = bfcl.load_category("live_simple", data_dir=DATA)
    reasons = set(live.skipped.values())
    assert any("system prompt" in r for r in reasons)
    assert any("allows no value" in r for r in reasons)
    assert not set(live.skipped) & {i["id"] for i in live.items}


def test_nested_possible_answers_are_spelled_out_as_concrete_values():
    from aillm_lab.experiments.tool_scorer import matches

    row = {"id": "x", "question": [[{"role": "user", "content": "Update John."}]],
           "function": [{"name": "db.update", "description": "",
                         "parameters": {"type": "dict", "properties": {}}}]}
    truth = [{"db.update": {"info": [{"name": ["John Doe", "John"], "email": ["", "j@x.io"]}],
                            "rows": [[{"field": ["age"], "op": [">", "gt"]}]]}}]
    item = bfcl.convert(row, truth, "simple_python")
    assert item["function"][0]["name"] == "db_update" and item["question"] == "Update John."
    allowed = item["possible_answer"][0]["db_update"]
    assert allowed["info"] == [{"name": "John Doe"}, {"name": "John Doe", "email": "j@x.io"},
                               {"name": "John"}, {"name": "John", "email": "j@x.io"}]
    assert allowed["rows"] == [[{"field": "age", "op": ">"}], [{"field": "age", "op": "gt"}]]
    made = [{"name": "db_update", "arguments": {"info": {"name": "John"},
                                                "rows": [{"field": "age", "op": "gt"}]}}]
    assert matches(made, item["possible_answer"])
    made[0]["arguments"]["info"] = {"name": "John", "email": "other@x.io"}
    assert not matches(made, item["possible_answer"])


def test_bad_categories_and_a_missing_data_folder_say_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="multi-turn"):
        bfcl.load("multi_turn_base", data_dir=tmp_path)
    with pytest.raises(ConfigError, match="not a BFCL category"):
        bfcl.load("simple_cobol", data_dir=tmp_path)
    with pytest.raises(ConfigError, match="--no-deps --target"):
        bfcl.load("simple_python", data_dir=tmp_path)
    with pytest.raises(ConfigError, match="limit"):
        bfcl.load("simple_python", data_dir=tmp_path, limit=0)
    row = {"id": "y", "question": [[{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": "Hi"}]], "function": []}
    with pytest.raises(ValueError, match="system prompt"):
        bfcl.convert(row, [], "live_simple")


def test_without_bfcl_eval_installed_the_error_names_the_extra(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"aillm-lab\[bfcl\]"):
        bfcl.find_data()
