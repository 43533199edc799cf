"""TaskRouter (lab.route): keywords and MiniLM description similarity, an optional LLM
classifier through the gateway, and accuracy on the labelled set in router_tasks.jsonl."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

import aillm_lab as al
from aillm_lab.core.router import AGENTS, LlmChoice, load_examples
from aillm_lab.testing import ScriptedModel

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")
TASKS = Path(__file__).with_name("router_tasks.jsonl")


def test_the_labelled_set_has_80_plus_tasks_over_all_seven_agents_half_held_out():
    rows = load_examples(TASKS)
    assert len(rows) >= 80
    per_agent = Counter(r["agent"] for r in rows)
    assert set(per_agent) == set(AGENTS) and len(AGENTS) == 7
    assert min(per_agent.values()) >= 10
    assert Counter(r["split"] for r in rows) == {"dev": len(rows) // 2,
                                                 "heldout": len(rows) // 2}
    assert len({r["task"] for r in rows}) == len(rows)


def test_accuracy_with_keywords_and_embeddings_only_is_at_least_085_on_each_half(make_lab):
    model = ScriptedModel()  # any LLM call would exhaust it and fail the test
    lab = make_lab(model)
    rows = load_examples(TASKS)
    report = lab.router.evaluate(rows, llm="off")
    print(f"\nrouter accuracy {report.accuracy:.3f} on {len(rows)} tasks")
    print(report.confusion.to_string())
    for split in ("dev", "heldout"):
        half = lab.router.evaluate([r for r in rows if r["split"] == split])
        print(f"{split}: {half.accuracy:.3f}")
        assert half.accuracy >= 0.85, half
    assert report.accuracy >= 0.85, report
    confusion = report.confusion
    assert list(confusion.index) == list(confusion.columns) == list(AGENTS)
    assert int(confusion.to_numpy().sum()) == len(rows)
    assert report.accuracy == pytest.approx(confusion.to_numpy().trace() / len(rows))
    assert model.requests == []


def test_a_route_names_the_agent_its_confidence_and_why(make_lab):
    lab = make_lab(ScriptedModel())
    route = lab.route("plot monthly revenue from sales.csv")
    assert isinstance(route, al.Route)
    assert route.agent == "data_analysis" and route.method == "keywords+embeddings"
    assert 1 / 7 < route.confidence <= 1.0
    assert "csv" in route.why and "plot" in route.why and "data_analysis" in route.why
    assert max(route.scores, key=route.scores.__getitem__) == "data_analysis"
    assert set(route.scores) == set(AGENTS)
    assert "data_analysis" in route._repr_mimebundle_()["text/html"]


def test_embeddings_alone_route_a_task_with_no_keyword(make_lab):
    lab = make_lab(ScriptedModel())
    router = al.TaskRouter(lab, keyword_weight=0.0)
    task = "Send today's summary to my team's chat"
    assert router.keyword_hits(task) == {}
    assert router.route(task).agent == "integration"
    # and a strong description match outweighs one keyword pointing elsewhere
    task = "How long did the calls take on average since noon, and how many failed?"
    assert al.TaskRouter(lab).keyword_hits(task) == {"data_analysis": ["average"]}
    assert al.TaskRouter(lab).route(task).agent == "monitoring"


def test_the_descriptions_are_embedded_once_per_router(make_lab, monkeypatch):
    lab = make_lab(ScriptedModel())
    batches: list[int] = []
    real = lab.aembed

    async def counting(texts, model=None):
        batches.append(len(texts))
        return await real(texts, model)

    monkeypatch.setattr(lab, "aembed", counting)
    router = al.TaskRouter(lab)
    router.route("what is the p95 latency of today's calls?")
    router.route("call the weather API")
    router.route_many(["a", "b", "c"])
    descriptions = sum(len(card.texts) for card in AGENTS.values())
    assert batches == [descriptions, 1, 1, 3]


def test_the_llm_classifier_decides_when_asked_and_is_called_through_the_gateway(make_lab):
    model = ScriptedModel([LlmChoice(agent="integration", confidence=0.8,
                                     reason="the task names a REST service")])
    lab = make_lab(model)
    route = lab.route("plot monthly revenue from sales.csv", llm="always")
    assert (route.agent, route.method, route.confidence) == ("integration", "llm", 0.8)
    assert "the task names a REST service" in route.why
    assert "keywords and embeddings said data_analysis" in route.why
    assert model.requests[0].output is LlmChoice
    assert list(lab.calls()["model"]) == ["scripted:scripted"]


def test_fallback_asks_the_llm_only_below_the_confidence_threshold(make_lab):
    model = ScriptedModel([LlmChoice(agent="research", confidence=0.9, reason="cited")])
    lab = make_lab(model)
    sure = al.TaskRouter(lab, llm="fallback", llm_below=0.0)
    assert sure.route("plot monthly revenue from sales.csv").method == "keywords+embeddings"
    assert model.requests == []
    unsure = al.TaskRouter(lab, llm="fallback", llm_below=0.5, temperature=10.0)
    assert unsure.route("plot monthly revenue from sales.csv").agent == "research"
    assert len(model.requests) == 1


def test_an_llm_answer_naming_no_known_agent_keeps_the_keyword_and_embedding_route(make_lab):
    model = ScriptedModel([LlmChoice(agent="poet", confidence=0.9, reason="rhymes")])
    route = make_lab(model).route("plot monthly revenue from sales.csv", llm="always")
    assert route.agent == "data_analysis" and route.method == "keywords+embeddings"
    assert "unknown agent 'poet'" in route.why


def test_async_route_gives_the_same_answer_as_the_sync_twin(make_lab):
    import asyncio

    lab = make_lab(ScriptedModel())
    task = "Alert me when the error rate goes over 2%"
    sync = lab.route(task)
    assert asyncio.run(lab.aroute(task)) == sync
    assert sync.agent == "monitoring"


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"llm": "maybe"}, "llm"), ({"llm_below": 2}, "llm_below"),
    ({"temperature": 0}, "temperature"), ({"keyword_weight": -1}, "keyword_weight"),
    ({"agents": {}}, "agents")])
def test_bad_router_settings_are_rejected_naming_the_field(make_lab, kwargs, field):
    with pytest.raises(al.ConfigError, match=field) as info:
        al.TaskRouter(make_lab(ScriptedModel()), **kwargs)
    assert info.value.fields == (field,)


def test_bad_tasks_and_examples_are_rejected_naming_what_is_wrong(make_lab):
    lab = make_lab(ScriptedModel())
    with pytest.raises(al.ConfigError, match="task=") as info:
        lab.route("   ")
    assert info.value.fields == ("task",)
    with pytest.raises(al.ConfigError, match="poet"):
        lab.router.evaluate([{"task": "write a sonnet", "agent": "poet"}])
    with pytest.raises(al.ConfigError, match="agent"):
        lab.router.evaluate([{"task": "write a sonnet"}])
    with pytest.raises(al.ConfigError, match="llm="):
        lab.route("hello", llm="sometimes")
