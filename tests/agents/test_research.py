"""ResearchAgent end to end: a folder ingested into the Lab's knowledge, scripted models,
citations checked against the retrieved chunks, repairs, "not found", the web through the
guard, and bad arguments."""

from __future__ import annotations

import asyncio
import http.server
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from _agent_tools import call, label_of

import aillm_lab as al
from aillm_lab.agents.research import (
    NOT_FOUND,
    ResearchAgent,
    ResearchAnswer,
    sub_questions,
)
from aillm_lab.rag.context import ContextManager
from aillm_lab.rag.retriever import Knowledge
from aillm_lab.testing import HashingEmbedder, ScriptedModel

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")

CORPUS = {
    "e4012.md": "# Error E4012\n\nThe upload was rejected because the bucket is over its "
                "storage quota. Delete old objects or raise the quota.\n",
    "e5001.md": "# Error E5001\n\nThe storage service is temporarily unavailable. Retry "
                "later with exponential backoff.\n",
    "cats.md": "# Cats\n\nKittens sleep most of the day in warm places.\n",
    "tea.txt": "Green tea is steamed or pan-fired soon after picking, which keeps it from "
               "oxidising.\n",
    "rivers.md": "# Rivers\n\nThe Danube flows through ten countries and ends in the Black "
                 "Sea.\n",
}


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs_research"
    folder.mkdir()
    for name, text in CORPUS.items():
        (folder / name).write_text(text)
    return folder


def ingested(make_lab, docs: Path, model: ScriptedModel, **settings) -> al.Lab:
    lab = make_lab(model, **settings)
    report = lab.ingest(docs, progress=False)
    assert report.docs_added == len(CORPUS)
    return lab


def script(*replies: object) -> ScriptedModel:
    """A scripted model whose replies may also be functions of the messages it is sent."""
    queue = list(replies)

    def reply(messages, request):
        item = queue.pop(0)
        return item(messages) if callable(item) else item

    return ScriptedModel(reply)


def labels(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"^\[(\d+)\] \(", text, re.M)]


def test_an_answer_on_an_ingested_folder_cites_only_retrieved_chunks(make_lab, docs):
    def reply(messages, request):
        quota = label_of(messages, "storage quota")
        return f"E4012 means the bucket is over its storage quota [{quota}]."

    model = ScriptedModel(reply)
    lab = ingested(make_lab, docs, model)
    run = ResearchAgent(lab=lab).run("What does error E4012 mean?")
    assert run.status == "completed", run.error
    answer = run.output
    assert isinstance(answer, ResearchAnswer) and answer.found and answer.supported
    assert answer.unsupported == [] and len(answer.sources) == 1
    cited = answer.sources[0]
    assert cited.source.endswith("e4012.md") and "storage quota" in cited.text
    # every cited source is a chunk of the Lab's knowledge, with its document and chunk ids
    hits = {h.chunk_id: h for h in lab.search("storage quota E4012", k=10)}
    assert cited.chunk_id in hits and hits[cited.chunk_id].text == cited.text
    assert cited.doc_id == hits[cited.chunk_id].metadata["doc_id"]
    assert cited.collection == "default"
    # the packed prompt the model saw is in the trace, numbered from 1, with the question
    system = run.steps[0].messages[0]
    assert system.role == "system" and labels(system.text)[0] == 1
    assert f"[{cited.label}] (e4012.md" in system.text
    assert run.steps[0].messages[-1].text == "What does error E4012 mean?"
    # retrieval went through the Safety Guard and is audited
    audit = lab.audit()
    assert list(audit["tool"]) == ["search_knowledge"]
    assert list(audit["decision"]) == ["allowed"]


def test_each_part_of_a_question_is_searched_and_both_parts_are_cited(make_lab, docs):
    def reply(messages, request):
        return (f"E4012 is a full quota [{label_of(messages, 'storage quota')}]; kittens "
                f"sleep in warm places [{label_of(messages, 'Kittens')}].")

    lab = ingested(make_lab, docs, ScriptedModel(reply))
    question = "What does error E4012 mean? Where do kittens sleep?"
    run = ResearchAgent(lab=lab, k=2).run(question)
    assert sub_questions(question) == [question, "What does error E4012 mean?",
                                       "Where do kittens sleep?"]
    assert len(lab.audit()) == 3  # the whole question and each part
    assert "Already searched: 'What does error E4012 mean? Where do kittens sleep?'; " \
        "'What does error E4012 mean?'; 'Where do kittens sleep?'." in run.steps[0].messages[0].text
    assert {Path(s.source).name for s in run.output.sources} == {"e4012.md", "cats.md"}


def test_the_model_searches_a_sub_question_and_cites_the_new_source(make_lab, docs):
    model = script(call("search_knowledge", query="Danube Black Sea"),
                   lambda messages: f"It ends in the Black Sea [{label_of(messages, 'Danube')}].")
    lab = ingested(make_lab, docs, model)
    run = ResearchAgent(lab=lab, k=1).run("Which sea does the Danube reach?")
    assert run.status == "completed", run.error
    step0 = run.steps[0]
    assert [c.name for c in step0.tool_calls] == ["search_knowledge"]
    result = step0.tool_results[0]
    assert result.ok and "Danube" in result.content
    assert {s.name for s in model.requests[0].tools} == {"search_knowledge"}
    cited = run.output.sources[0]
    assert cited.source.endswith("rivers.md") and cited.chunk_id is not None
    assert list(lab.audit()["tool"]) == ["search_knowledge"] * 2  # the seed and the model's


def test_a_citation_of_9_with_4_sources_is_repaired_by_the_second_reply(make_lab, docs):
    model = script("Retry later [9].",
                   lambda messages: f"Retry later [{label_of(messages, 'temporarily')}].")
    lab = ingested(make_lab, docs, model)
    run = ResearchAgent(lab=lab, k=4).run("What should I do about error E5001?")
    assert labels(run.steps[0].messages[0].text) == [1, 2, 3, 4]
    hint = run.steps[0].observations[0]
    assert hint.role == "user" and "[9]" in hint.text and "[1], [2], [3], [4]" in hint.text
    assert model.requests[1].messages[-1].text == hint.text  # the model read the hint
    assert run.status == "completed" and len(run.steps) == 2
    assert run.output.unsupported == [] and run.output.sources[0].source.endswith("e5001.md")


def test_a_citation_that_still_dangles_after_the_repair_is_reported(make_lab, docs):
    lab = ingested(make_lab, docs, ScriptedModel(["Retry later [9].",
                                                  "Retry later [1][9]."]))
    run = ResearchAgent(lab=lab, k=4).run("What should I do about error E5001?")
    assert run.status == "completed" and len(run.steps) == 2
    assert run.output.unsupported == [9] and not run.output.supported
    assert [s.label for s in run.output.sources] == [1]
    assert run.output.text == "Retry later [1][9]."


def test_an_answer_that_cites_nothing_is_sent_back_once(make_lab, docs):
    lab = ingested(make_lab, docs, ScriptedModel(["Kittens sleep a lot.",
                                                  "Kittens sleep a lot."]))
    run = ResearchAgent(lab=lab).run("Do kittens sleep much?")
    assert "cites no source" in run.steps[0].observations[0].text
    assert run.output.sources == [] and not run.output.supported


def test_the_model_is_told_to_say_not_found_and_its_not_found_is_the_answer(make_lab, docs):
    model = ScriptedModel(["I'm sorry, the answer is not found in the sources."])
    lab = ingested(make_lab, docs, model)
    run = ResearchAgent(lab=lab).run("Who won the 1966 football world cup?")
    assert "reply exactly: Not found in the sources." in model.requests[0].messages[0].text
    assert run.output == ResearchAnswer(question="Who won the 1966 football world cup?",
                                        text=NOT_FOUND, found=False)
    assert len(run.steps) == 1


def test_with_nothing_retrieved_an_invented_answer_becomes_not_found(make_lab, docs, tmp_path):
    empty = tmp_path / "empty_research"
    empty.mkdir()
    model = ScriptedModel(["England won it [1]."])
    lab = ingested(make_lab, docs, model)
    lab.ingest(empty, collection="empty", progress=False)
    run = ResearchAgent(lab=lab).run("Who won the 1966 world cup?", collections="empty")
    assert run.status == "completed"
    assert run.output.text == NOT_FOUND and not run.output.found and run.output.sources == []
    assert "No sources are listed yet" in model.requests[0].messages[0].text


def test_the_sources_are_packed_into_the_context_budget(make_lab, docs):
    model = script(lambda messages: f"Quota [{label_of(messages, 'quota')}].")
    lab = ingested(make_lab, docs, model)
    run = ResearchAgent(lab=lab, context_tokens=260).run("What does error E4012 mean?")
    kept = labels(run.steps[0].messages[0].text)
    assert 1 <= len(kept) < len(CORPUS) and kept == list(range(1, len(kept) + 1))
    budget = ContextManager(budget_tokens=260)
    assert budget.count(run.steps[0].messages) <= 260
    assert run.output.sources[0].source.endswith("e4012.md")  # the best hit stayed


def test_a_question_too_long_for_the_context_budget_is_a_clear_run_error(make_lab, docs):
    model = ScriptedModel(["never asked"])
    lab = ingested(make_lab, docs, model)
    run = ResearchAgent(lab=lab, context_tokens=64).run("Why? " * 100)
    assert run.status == "error" and "ContextOverflow" in run.error
    assert "raise budget_tokens" in run.error and model.requests == []


def test_a_streamed_run_seeds_as_a_run_does_and_tells_each_search_as_it_happens(make_lab,
                                                                                docs):
    model = script(call("search_knowledge", query="kittens sleep"),
                   lambda messages: f"In warm places [{label_of(messages, 'Kittens')}].")
    lab = ingested(make_lab, docs, model)
    events = list(ResearchAgent(lab=lab).stream("Where do kittens sleep?",
                                                collections="default"))
    # the seed search comes first, as step 0's call and result, then the model's own search
    assert [e.type for e in events[:2]] == ["tool_call", "tool_result"]
    assert [(e.step, e.tool_call.arguments["query"]) for e in events
            if e.type == "tool_call"] == [(0, "Where do kittens sleep?"), (0, "kittens sleep")]
    seeded = events[1].tool_result
    assert seeded.ok and seeded.content.startswith("5 passages found") and seeded.value is None
    final = events[-1].run
    assert events[-1].type == "final" and final.status == "completed"
    assert final.output.sources[0].source.endswith("cats.md")
    # the first prompt already holds the seed's sources, as a run's first prompt does
    assert "No sources are listed yet" not in final.steps[0].messages[0].text
    assert label_of(final.steps[0].messages, "Kittens") >= 1
    assert list(lab.audit()["tool"]) == ["search_knowledge", "search_knowledge"]


def test_a_stream_with_an_unknown_collection_raises_before_any_event(make_lab, docs):
    model = ScriptedModel(["never asked"])
    lab = ingested(make_lab, docs, model)
    with pytest.raises(al.RagError, match="'nope' does not exist"):
        next(iter(ResearchAgent(lab=lab).stream("anything?", collections="nope")))
    assert model.requests == [] and len(lab.audit()) == 0


def test_sync_run_works_inside_a_running_event_loop(make_lab, docs):
    lab = ingested(make_lab, docs, ScriptedModel(
        lambda messages, request: f"Backoff [{label_of(messages, 'backoff')}]."))
    agent = ResearchAgent(lab=lab)

    async def main() -> al.AgentRun:
        return agent.run("How should I retry after E5001?")

    run = asyncio.run(main())
    assert run.status == "completed" and run.output.sources[0].source.endswith("e5001.md")


def test_the_run_round_trips_through_json_with_its_research_answer(make_lab, docs):
    lab = ingested(make_lab, docs, ScriptedModel(
        lambda messages, request: f"Over quota [{label_of(messages, 'quota')}]."))
    run = ResearchAgent(lab=lab).run("What is E4012?", collections=["default"])
    assert {k: run.inputs[k] for k in ("collections", "web")} == {
        "collections": ["default"], "web": False}
    # the seed's numbered sources are kept too, so a fork of the reloaded run can cite them
    assert [s["label"] for s in run.inputs["sources"]] == labels(run.steps[0].messages[0].text)
    again = al.AgentRun.model_validate_json(run.model_dump_json())
    assert ResearchAnswer.model_validate(again.output) == run.output
    assert again.model_dump() == run.model_dump()
    reloaded = lab.load_run(run.id)
    assert ResearchAnswer.model_validate(reloaded.output) == run.output


def test_another_knowledge_and_several_collections_are_searched(make_lab, docs, tmp_path):
    more = tmp_path / "more_research"
    more.mkdir()
    (more / "owls.md").write_text("# Owls\n\nOwls hunt at night and sleep by day.\n")
    model = ScriptedModel(lambda messages, request: (
        f"Owls sleep by day [{label_of(messages, 'Owls')}], kittens in warm places "
        f"[{label_of(messages, 'Kittens')}]."))
    lab = make_lab(model)
    with Knowledge(lab.settings, runner=lab.runner, embedder=HashingEmbedder(),
                   progress=False) as knowledge:
        knowledge.ingest(docs, collection="pets")
        knowledge.ingest(more, collection="birds")
        run = ResearchAgent(lab=lab, knowledge=knowledge).run(
            "When do owls and kittens sleep?", collections=["pets", "birds"])
    assert {(s.collection, Path(s.source).name) for s in run.output.sources} == {
        ("birds", "owls.md"), ("pets", "cats.md")}


def test_an_unknown_collection_is_a_clear_error_naming_the_existing_ones(make_lab, docs):
    model = ScriptedModel(["never asked"])
    lab = ingested(make_lab, docs, model)
    agent = ResearchAgent(lab=lab)
    with pytest.raises(al.RagError, match=r"'nope' does not exist.*existing: \['default'\]"):
        agent.run("anything?", collections=["default", "nope"])
    with pytest.raises(ValueError, match="collections="):
        agent.run("anything?", collections=[1])
    with pytest.raises(ValueError, match="question="):
        agent.run("   ")
    assert model.requests == [] and len(lab.audit()) == 0


def test_bad_constructor_arguments_are_refused(make_lab):
    lab = make_lab(ScriptedModel([]))
    with pytest.raises(al.ConfigError, match="always a ResearchAnswer"):
        ResearchAgent(lab=lab, output=al.AgentRun)
    with pytest.raises(al.ConfigError, match="k=0"):
        ResearchAgent(lab=lab, k=0)
    with pytest.raises(al.ConfigError, match="search_tokens=10"):
        ResearchAgent(lab=lab, search_tokens=10)
    with pytest.raises(al.ConfigError, match="mode='fuzzy'"):
        ResearchAgent(lab=lab, mode="fuzzy")
    with pytest.raises(al.ConfigError, match="not a Toolbox"):
        ResearchAgent(lab.tools, lab=lab)


def test_the_web_tool_is_offered_only_with_web_access(make_lab, docs):
    model = script(call("read_web_page", url="https://example.com"),
                   lambda messages: f"Quota [{label_of(messages, 'quota')}].")
    lab = ingested(make_lab, docs, model)
    run = ResearchAgent(lab=lab).run("What is E4012?")
    assert {s.name for s in model.requests[0].tools} == {"search_knowledge"}
    assert "Unknown tool 'read_web_page'" in run.steps[0].tool_results[0].content
    assert "read_web_page" not in model.requests[0].messages[0].text


@pytest.fixture
def page_server() -> Iterator[str]:
    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"The research station on the ridge records 212 frost days a year."
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    class Server(http.server.HTTPServer):  # one thread; a client hanging up is no error
        def handle_error(self, request: object, client_address: object) -> None:
            pass

    server = Server(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/frost.txt"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def test_a_web_page_read_through_the_guard_becomes_a_cited_source(make_lab, docs,
                                                                  page_server):
    model = script(call("read_web_page", url=page_server),
                   lambda messages: f"212 frost days [{label_of(messages, 'frost days')}].")
    lab = ingested(make_lab, docs, model, safety={"network": {"allow_loopback": True}})
    run = ResearchAgent(lab=lab, web=True).run("How many frost days at the ridge?")
    assert run.status == "completed", run.error
    assert "read_web_page" in model.requests[0].messages[0].text
    web = run.output.sources[0]
    assert (web.kind, web.source, web.chunk_id) == ("web", page_server, None)
    assert "212 frost days" in web.text and web.label == labels(
        run.steps[0].tool_results[0].content)[0]
    audit = lab.audit()
    assert list(audit["tool"]) == ["search_knowledge", "fetch_url", "read_web_page"]
    assert set(audit["decision"]) == {"allowed"}


def test_a_refused_web_fetch_is_fed_back_and_audited(make_lab, docs, page_server):
    model = ScriptedModel([call("read_web_page", url=page_server), NOT_FOUND])
    lab = ingested(make_lab, docs, model)  # loopback is refused by the default policy
    run = ResearchAgent(lab=lab, web=True).run("How many frost days at the ridge?")
    result = run.steps[0].tool_results[0]
    assert not result.ok and result.rule is not None
    assert "Refused by the safety policy" in result.content
    assert run.status == "completed" and not run.output.found
    audit = lab.audit()
    assert list(audit["decision"])[-2:] == ["refused", "refused"]
    assert list(audit["tool"])[-2:] == ["fetch_url", "read_web_page"]
