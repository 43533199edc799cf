"""The workbench: served for real on 127.0.0.1, and each page's callbacks driven directly
(a Lab on a temporary home with a scripted model, no browser)."""

from __future__ import annotations

import asyncio
import html
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from _ui_servers import free_port, serving

pn = pytest.importorskip("panel")

import aillm_lab as al  # noqa: E402
from aillm_lab import Lab  # noqa: E402
from aillm_lab.errors import ModelNotAvailable  # noqa: E402
from aillm_lab.llm.types import Completion, Usage  # noqa: E402
from aillm_lab.testing import ScriptedModel  # noqa: E402
from aillm_lab.ui.workbench.app import Workbench, _responder, create_app, reply_stats  # noqa: E402

# bokeh's ColumnDataSource.from_df calls reset_index(inplace=True), which pandas 3.1
# deprecates; every Tabulator goes through it. Not ours to fix.
pytestmark = [
    pytest.mark.filterwarnings(
        "ignore:The inplace keyword in DataFrame.reset_index:pandas.errors.Pandas4Warning"),
    pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")]


def _get(url: str, timeout: float = 5) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read().decode()


def _document_texts(url: str) -> tuple[set[str], str]:
    """Open a real Bokeh session over the websocket: the model kinds and all their text."""
    import importlib
    import pkgutil

    import panel.models
    from bokeh.client import pull_session

    for module in pkgutil.iter_modules(panel.models.__path__):  # registers Panel's Bokeh
        importlib.import_module(f"panel.models.{module.name}")  # models for the client

    with pull_session(url=url) as session:
        models = list(session.document.models)
    texts = "\n".join(html.unescape(str(getattr(m, "text", ""))) for m in models)
    return {type(m).__name__ for m in models}, texts


@pytest.fixture
def served(lab_home) -> Iterator[str]:
    """`aillm-lab serve` on a free port."""
    port = free_port()
    with serving(["-m", "aillm_lab.cli", "serve", "--address", "127.0.0.1", "--port", str(port),
                   "--model", "scripted:echo"], port, lab_home) as url:
        yield url


def test_served_page_loads_over_http_with_the_panel_bundle(served):
    status, page = _get(served + "/")
    assert status == 200
    assert "<title>AILLM Lab</title>" in page
    assert "panel.min.js" in page and "render_items" in page


def test_served_session_holds_a_chat_and_names_the_model_in_use(served):
    kinds, texts = _document_texts(served + "/")
    assert {"ChatAreaInput", "Feed"} <= kinds
    assert "scripted:echo" in texts and "given to Lab(model=...)" in texts


def test_the_app_file_runs_under_panel_serve_too(lab_home):
    port = free_port()
    app = Path(create_app.__code__.co_filename)
    with serving(["-m", "panel", "serve", str(app), "--port", str(port), "--address",
                   "127.0.0.1", "--allow-websocket-origin", f"127.0.0.1:{port}",
                   "--liveness"], port, lab_home) as url:
        kinds, texts = _document_texts(f"{url}/app")
    assert "ChatAreaInput" in kinds and "local:smollm2" in texts


def test_sync_chat_works_inside_a_panel_serve_session(lab_home, tmp_path):
    port = free_port()
    app = tmp_path / "sync_app.py"
    app.write_text(
        "import asyncio\nimport panel as pn\nimport aillm_lab as al\n"
        "asyncio.get_running_loop()  # Bokeh builds sessions on its running loop\n"
        "reply = al.chat('hello from panel serve', model='scripted:echo')\n"
        "pn.pane.Markdown('REPLY: ' + reply.text).servable()\n")
    with serving(["-m", "panel", "serve", str(app), "--port", str(port), "--address",
                   "127.0.0.1", "--allow-websocket-origin", f"127.0.0.1:{port}",
                   "--liveness"], port, lab_home) as url:
        _, texts = _document_texts(f"{url}/sync_app")
    assert "REPLY: hello from panel serve" in texts


def _drive(respond, contents: str, instance) -> list:
    async def collect() -> list:
        return [item async for item in respond(contents, "User", instance)]

    return asyncio.run(collect())


def test_chat_callback_streams_growing_text_then_a_footer_with_tokens_and_latency():
    model = ScriptedModel(["Paris is the capital of France."])
    with Lab(model=model) as lab:
        chat = Workbench(lab).chat
        chat.send("What is the capital of France?", respond=False)
        items = _drive(_responder(lab, 64), "What is the capital of France?", chat)
    partial, final = items[:-1], items[-1]
    assert len(partial) > 1 and all(isinstance(p, str) for p in partial)
    assert all(b.startswith(a) for a, b in zip(partial, partial[1:], strict=False))
    assert final["object"] == "Paris is the capital of France."
    stats = final["footer_objects"][0].object
    assert "scripted:" in stats and "in /" in stats and "out tokens" in stats
    assert "latency" in stats and "first token" in stats
    assert model.requests[0].messages[-1].text == "What is the capital of France?"


def test_chat_callback_sends_the_earlier_turns_as_history():
    model = ScriptedModel(["first answer", "second answer"])
    with Lab(model=model) as lab:
        chat = Workbench(lab).chat
        respond = _responder(lab, 64)
        chat.send("first question", respond=False)
        chat.send(_drive(respond, "first question", chat)[-1]["object"], user="model",
                  respond=False)
        chat.send("second question", respond=False)
        _drive(respond, "second question", chat)
    roles = [(m.role, m.text) for m in model.requests[1].messages]
    assert roles == [("user", "first question"), ("assistant", "first answer"),
                     ("user", "second question")]


def test_chat_callback_shows_a_model_error_in_the_chat_instead_of_crashing():
    with Lab(model="local:no-such-model.gguf") as lab:
        chat = Workbench(lab).chat
        items = _drive(_responder(lab, 16), "hello", chat)
    assert len(items) == 1 and items[0]["user"] == "error"
    assert ModelNotAvailable.__name__ in items[0]["object"]


def test_header_names_the_default_model_and_why():
    with Lab(model="scripted:echo") as lab:
        header = Workbench(lab).header.object
    assert "scripted:echo" in header and "given to Lab(model=...)" in header


def test_reply_stats_report_tokens_latency_first_token_and_speed():
    completion = Completion(text="x", model="local:smollm2",
                            usage=Usage(input_tokens=12, output_tokens=11))
    stats = reply_stats(completion, latency_s=1.5, ttft_s=0.5)
    assert stats == ("local:smollm2 · 12 in / 11 out tokens · latency 1.50 s · "
                     "first token 0.50 s · 10.0 tok/s")
    assert reply_stats(None, 0.25, None) == "latency 0.25 s"


# -- the pages, their callbacks awaited directly -------------------------------------------
def _await(coro):
    return asyncio.run(coro)


@pytest.fixture
def bench(tmp_path) -> Iterator[Workbench]:
    with Lab(home=tmp_path / "home", model=ScriptedModel(lambda m, r: "scripted answer")) as lab:
        yield Workbench(lab, max_tokens=32)


def test_create_app_is_tabs_with_the_seven_pages_in_order(tmp_path):
    with Lab(home=tmp_path / "home", model="scripted:echo") as lab:
        app = create_app(lab)
    assert isinstance(app, pn.Tabs)
    assert [page.name for page in app] == ["Chat", "Documents", "Data", "Runs and calls",
                                          "Memory", "Monitor", "Settings"]


def test_runs_page_lists_the_calls_made_with_cost_and_latency_plots_by_model(bench):
    bench.lab.chat("one")
    bench.lab.chat("two")
    assert _await(bench.runs.refresh())
    calls = bench.runs.calls.value
    assert len(calls) == 2 and set(calls["model"]) == {"scripted:scripted"}
    assert {"latency_s", "cost_usd", "output_tokens", "status"} <= set(calls.columns)
    assert calls["time"].is_monotonic_decreasing  # newest first, as text
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", calls["time"][0])
    assert "**2 call(s)**" in bench.runs.summary.object
    assert [p.name for p in bench.runs.plots] == ["plot-cost_usd", "plot-latency_s", "plot-tokens",
                                                  "plot-errors", "plot-latency-over-time"]


def test_runs_page_without_calls_says_so_and_draws_no_plot(bench):
    assert _await(bench.runs.refresh())
    assert bench.runs.calls.value.empty and list(bench.runs.plots) == []
    assert bench.runs.summary.object.startswith("No model calls yet")


def test_runs_page_lists_a_saved_agent_run_and_opens_its_trace(bench):
    run = al.ReActAgent(lab=bench.lab).run("say hi")
    assert _await(bench.runs.refresh())
    assert list(bench.runs.runs.value["id"]) == [run.id]
    assert _await(bench.runs.open_run(run.id))
    assert "scripted answer" in bench.runs.trace[0].object


def test_runs_page_shows_an_unknown_run_as_a_notice(bench):
    assert not _await(bench.runs.open_run("no-such-run"))
    assert bench.runs.notice.kind == "danger" and "no-such-run" in bench.runs.notice.text


def test_tab_load_fills_the_runs_page(bench):
    bench.lab.chat("hello")
    _await(bench.load("Runs and calls"))
    assert len(bench.runs.calls.value) == 1


CSV = b"region,amount\nnorth,10\nsouth,20\neast,5\n"


def test_data_page_registers_an_uploaded_csv_and_runs_a_select_on_it(bench):
    assert _await(bench.data.upload("Sales 2024.csv", CSV))
    assert bench.lab.tools.database.tables() == ["sales_2024"]
    assert "`sales_2024`" in bench.data.tables.object
    schema = bench.data.schema.value
    assert bench.data.schema.visible
    assert list(zip(schema["column_name"], schema["column_type"], strict=True)) == [
        ("region", "VARCHAR"), ("amount", "BIGINT")]
    assert len(bench.data.result.value) == 3  # the preview
    assert bench.data.sql.value == "SELECT * FROM sales_2024 LIMIT 20"
    assert _await(bench.data.run_sql(
        "SELECT region, amount FROM sales_2024 WHERE amount > 6 ORDER BY amount"))
    assert bench.data.result.value.to_dict("records") == [
        {"region": "north", "amount": 10}, {"region": "south", "amount": 20}]
    assert bench.data.notice.kind == "success" and bench.data.notice.text.startswith("2 row(s)")


@pytest.mark.parametrize("sql", ["DROP TABLE sales", "INSERT INTO sales VALUES ('w', 1)",
                                 "COPY sales TO 'out.csv'"])
def test_data_page_refuses_sql_that_writes_with_a_readable_notice(bench, sql):
    _await(bench.data.upload("sales.csv", CSV))
    _await(bench.data.run_sql("SELECT * FROM sales"))
    assert not _await(bench.data.run_sql(sql))
    notice = bench.data.notice
    assert notice.kind == "danger" and notice.text.startswith("SafetyViolation: ")
    assert "read-only" in notice.text and "Traceback" not in notice.text
    assert len(bench.data.result.value) == 3  # the earlier result stays
    assert len(bench.lab.tools.database.query("SELECT * FROM sales")) == 3


@pytest.mark.parametrize("sql", ["", "   \n  "])
def test_data_page_asks_for_a_select_when_the_query_is_empty(bench, sql):
    assert not _await(bench.data.run_sql(sql))
    assert bench.data.notice.kind == "danger" and "Type one SELECT" in bench.data.notice.text


def test_data_page_names_the_tables_when_one_is_unknown(bench):
    _await(bench.data.upload("sales.csv", CSV))
    assert not _await(bench.data.run_sql("SELECT * FROM nope"))
    assert "DatabaseError" in bench.data.notice.text and "sales" in bench.data.notice.text


def test_data_page_takes_a_json_file_under_the_name_given(bench):
    bench.data.table_name.value = "people"
    assert _await(bench.data.upload("x.json", b'[{"name": "Ada", "age": 36}]'))
    assert _await(bench.data.run_sql("SELECT name FROM people WHERE age > 30"))
    assert list(bench.data.result.value["name"]) == ["Ada"]


def test_data_page_refuses_a_file_kind_it_cannot_read(bench):
    assert not _await(bench.data.upload("notes.txt", b"hello"))
    assert bench.data.notice.text == "notes.txt: upload a .csv or .json file."
    assert bench.lab.tools.database.tables() == []


@pytest.mark.parametrize("data", [b"", b"a,b\n1,2\n3,4,5,6\n"])
def test_data_page_reports_a_csv_it_cannot_read(bench, data):
    assert not _await(bench.data.upload("x.csv", data))
    assert bench.data.notice.kind == "danger" and "Error: " in bench.data.notice.text
    assert bench.lab.tools.database.tables() == []


def test_memory_page_adds_searches_and_forgets(bench):
    assert _await(bench.memory.add("I prefer green tea in the morning"))
    assert _await(bench.memory.add("My cat is called Miso"))
    assert list(bench.memory.table.value["text"]) == ["I prefer green tea in the morning",
                                                      "My cat is called Miso"]
    assert _await(bench.memory.search("tea"))
    found = bench.memory.table.value
    assert found.iloc[0]["text"] == "I prefer green tea in the morning"
    bench.memory.table.selection = [0]
    assert _await(bench.memory.forget_selected())
    assert list(bench.memory.table.value["text"]) == ["My cat is called Miso"]
    assert [m.text for m in bench.lab.memory.list("user")] == ["My cat is called Miso"]


def test_memory_page_keeps_namespaces_apart(bench):
    bench.memory.namespace.value = "project"
    _await(bench.memory.add("The deadline is Friday"))
    bench.memory.namespace.value = "user"
    _await(bench.memory.browse())
    assert bench.memory.table.value.empty


def test_memory_page_refuses_empty_input_and_forgetting_nothing(bench):
    assert not _await(bench.memory.add("  "))
    assert "Type the memory" in bench.memory.notice.text
    assert not _await(bench.memory.search(""))
    assert not _await(bench.memory.forget_selected())
    assert "Select the memories" in bench.memory.notice.text


def test_memory_page_shows_a_bad_namespace_as_a_notice(bench):
    bench.memory.namespace.value = "bad namespace!"
    assert not _await(bench.memory.browse())
    assert bench.memory.notice.kind == "danger" and "namespace" in bench.memory.notice.text


def test_settings_page_shows_key_presence_never_the_key(tmp_path):
    secret = "sk-test-0123456789abcdefSECRET"
    with Lab(home=tmp_path / "home", model="scripted:echo", openai_api_key=secret,
             budget_usd=2.5) as lab:
        page = Workbench(lab).settings
    keys = dict(zip(page.keys.value["key"], page.keys.value["set"], strict=True))
    assert keys == {"openai_api_key": "yes", "anthropic_api_key": "no"}
    shown = "\n".join([page.model_info.object, page.budgets.object,
                       page.table.value.to_string(), str(page.safety.object)])
    assert secret not in shown and "SECRET" not in shown
    assert "`scripted:echo` — given to Lab(model=...)" in page.model_info.object
    assert "Lab budget: $2.50" in page.budgets.object
    assert "scripted" in page.model_info.object  # the providers here
    settings = dict(zip(page.table.value["setting"], page.table.value["value"], strict=True))
    assert settings["home"] == str(tmp_path / "home") and "safety" not in settings
    assert "sql" in page.safety.object


def test_runs_page_counts_a_failed_call_as_an_error_of_its_model(tmp_path):
    model = ScriptedModel([RuntimeError("the provider broke"), "fine"], name="flaky")
    with Lab(home=tmp_path / "home", model=model) as lab:
        page = Workbench(lab).runs
        with pytest.raises(Exception, match="the provider broke"):
            lab.chat("first")
        lab.chat("second")
        assert _await(page.refresh())
    assert "2 call(s)" in page.summary.object and "1 error(s)" in page.summary.object
    bars = {p.name: p.object.renderers[0].data_source.data["top"] for p in page.plots[:4]}
    assert list(bars["plot-errors"]) == [1]
    assert list(page.calls.value["status"]) == ["ok", "error"]  # newest first



DOCS = {"e4012.md": "# Errors\n\nE4012 means the bucket is over its storage quota.\n",
        "cats.md": "# Cats\n\nKittens sleep about sixteen hours a day.\n"}


def test_documents_page_ingests_a_workspace_folder_and_searches_it(bench):
    folder = bench.lab.settings.workspace_path / "notes"
    folder.mkdir(parents=True)
    for name, text in DOCS.items():
        (folder / name).write_text(text)
    assert _await(bench.documents.ingest("notes"))
    assert "2 added" in bench.documents.notice.text
    assert not bench.documents.progress.visible
    bench.documents.mode.value = "sparse"
    assert _await(bench.documents.search("storage quota"))
    results = bench.documents.results.value
    assert results.iloc[0]["source"].endswith("e4012.md")
    assert "over its storage quota" in results.iloc[0]["text"]
    assert _await(bench.documents.ingest("notes"))  # unchanged files cost nothing
    assert "0 added, 0 updated, 2 unchanged" in bench.documents.notice.text


def test_documents_page_saves_uploads_in_the_workspace_and_ingests_them(bench):
    files = {name: text.encode() for name, text in DOCS.items()}
    files["../escape.md"] = b"# Out\n\nnot outside\n"
    assert _await(bench.documents.upload(files))
    uploads = bench.lab.settings.workspace_path / "uploads"
    assert sorted(p.name for p in uploads.iterdir()) == ["cats.md", "e4012.md", "escape.md"]
    assert "3 added" in bench.documents.notice.text


def test_documents_page_asks_the_research_agent_and_lists_the_cited_source(tmp_path):
    def reply(messages, request):
        text = "\n".join(m.text for m in messages)
        label = next(n for n, part in re.findall(r"\[(\d+)\] \(([^)]*)", text)
                     if "e4012" in part)
        return f"E4012 means the bucket is over its storage quota [{label}]."

    with Lab(home=tmp_path / "home", model=ScriptedModel(reply)) as lab:
        page = Workbench(lab).documents
        assert _await(page.upload({n: t.encode() for n, t in DOCS.items()}))
        assert _await(page.ask("What does E4012 mean?"))
    answer = page.answer.object
    assert answer.startswith("**Answer:** E4012 means the bucket is over its storage quota [")
    assert "`e4012.md`" in answer and "cats.md" not in answer


def test_documents_page_refuses_empty_input_and_reports_a_missing_folder(bench):
    assert not _await(bench.documents.ingest(""))
    assert "Name a folder" in bench.documents.notice.text
    assert not _await(bench.documents.search(" "))
    assert not _await(bench.documents.ask(""))
    assert not _await(bench.documents.ingest("no/such/folder"))
    assert bench.documents.notice.kind == "danger"


@pytest.mark.parametrize("path", ["/etc", "../..", "notes/../../outside"])
def test_documents_page_refuses_a_path_outside_the_workspace(bench, path):
    assert not _await(bench.documents.ingest(path))
    assert bench.documents.notice.text.startswith("PermissionError: ")
    assert "outside the workspace" in bench.documents.notice.text
    assert not bench.documents.progress.visible


# -- Data: a question for the DataAnalysis agent, Parquet, the text sent with the click --------
from aillm_lab.ui.workbench import data as data_page  # noqa: E402
from aillm_lab.ui.workbench import monitor as monitor_page  # noqa: E402
from aillm_lab.ui.workbench.submit import read, send  # noqa: E402

PER_REGION = "SELECT region, SUM(amount) AS total FROM sales GROUP BY region ORDER BY region"
NARRATIVE = "South leads with 20, then north with 10 and east with 5."


def analyst(messages, request) -> str:
    """A scripted analyst: the SQL as a fenced block for the question, then the narrative."""
    last = messages[-1].text
    if "Result of your SQL query" in last:
        return NARRATIVE
    if "Tables you can query" in last:
        return f"Here is the query:\n```sql\n{PER_REGION}\n```"
    return "I only answer questions about tables."


def _in_loop(act) -> None:
    """Do ``act()`` (a click's effect) inside a running loop, as a served session does, and
    wait for the callbacks it scheduled (Panel runs async watchers as tasks there)."""
    async def go() -> None:
        act()
        current = asyncio.current_task()
        while pending := [t for t in asyncio.all_tasks() if t is not current]:
            await asyncio.gather(*pending)

    asyncio.run(go())


def _click(carrier, text: str) -> None:
    _in_loop(lambda: send(carrier, text))


@pytest.fixture
def analyst_bench(tmp_path) -> Iterator[Workbench]:
    with Lab(home=tmp_path / "home", model=ScriptedModel(analyst, name="analyst")) as lab:
        yield Workbench(lab, max_tokens=32)


def test_data_page_asks_the_data_analysis_agent_and_shows_narrative_sql_table_and_chart(
        analyst_bench):
    data = analyst_bench.data
    assert _await(data.upload("sales.csv", CSV))
    assert _await(data.ask("Total amount per region?"))
    assert data.result.value.to_dict("records") == [
        {"region": "east", "total": 5}, {"region": "north", "total": 10},
        {"region": "south", "total": 20}]
    assert data.narrative.object.startswith(f"**Answer:** {NARRATIVE}")
    assert PER_REGION in data.narrative.object
    [chart] = data.chart.objects
    assert isinstance(chart, pn.pane.Bokeh)
    assert list(chart.object.renderers[0].data_source.data["x"]) == ["east", "north", "south"]
    assert data.notice.kind == "success" and "3 row(s)" in data.notice.text
    run_id = re.search(r"run (\S+)\)", data.notice.text).group(1)
    assert analyst_bench.lab.load_run(run_id).task == "Total amount per region?"
    assert _await(data.run_sql("SELECT 1 AS n"))  # typed SQL shows no stale answer or chart
    assert data.chart.objects == [] and data.narrative.object == ""


def test_data_page_question_needs_a_table_and_a_question(analyst_bench):
    data = analyst_bench.data
    assert not _await(data.ask("Total amount per region?"))
    assert data.notice.kind == "danger" and "Upload a table first" in data.notice.text
    _await(data.upload("sales.csv", CSV))
    for empty in ("", "  \n "):
        assert not _await(data.ask(empty))
        assert "Type a question first" in data.notice.text
    assert analyst_bench.lab.calls().empty  # nothing reached the model


def test_data_page_shows_an_agent_that_never_queries_as_a_notice(tmp_path):
    model = ScriptedModel(lambda messages, request: "No idea.", name="lost")
    with Lab(home=tmp_path / "home", model=model) as lab:
        data = Workbench(lab).data
        _await(data.upload("sales.csv", CSV))
        assert not _await(data.ask("Total amount per region?"))
    assert data.notice.kind == "danger" and data.notice.text.startswith("The agent stopped (")
    assert data.chart.objects == [] and data.narrative.object == ""


def test_data_page_sql_button_runs_the_text_sent_with_the_click_not_the_box(bench):
    data = bench.data
    _await(data.upload("sales.csv", CSV))
    data.sql.value = "SELECT 'stale' AS s"  # what the server last heard from the box
    _click(data.sql_request, "SELECT region FROM sales WHERE amount > 15")
    assert list(data.result.value["region"]) == ["south"]
    _click(data.sql_request, "SELECT region FROM sales WHERE amount > 15")  # same text again
    assert data.notice.text == "1 row(s)."
    _click(data.sql_request, "DELETE FROM sales")
    assert data.notice.text.startswith("SafetyViolation: ") and "DELETE" in data.notice.text


def test_data_page_ask_button_and_enter_send_the_question(analyst_bench):
    data = analyst_bench.data
    _await(data.upload("sales.csv", CSV))
    _click(data.ask_request, "Total amount per region?")
    assert NARRATIVE in data.narrative.object
    data.narrative.object = ""
    data.question.value = "Total amount per region, again?"
    _in_loop(lambda: data.question.param.trigger("enter_pressed"))
    assert NARRATIVE in data.narrative.object


@pytest.mark.parametrize("payload", ["", "not json", "[1, 2]", '{"nonce": 3}', '{"text": 5}'])
def test_a_malformed_click_payload_runs_nothing(bench, payload):
    assert read(payload) is None
    _in_loop(lambda: setattr(bench.data.sql_request, "value", payload))
    assert not bench.data.notice.text


def test_data_page_without_a_parquet_engine_says_how_to_get_one(bench, monkeypatch):
    monkeypatch.setattr(data_page, "parquet_readable", lambda: False)
    assert not _await(bench.data.upload("sales.parquet", b"PAR1"))
    assert bench.data.notice.text == ("sales.parquet: reading Parquet needs pyarrow (pip "
                                      "install pyarrow); upload a .csv or .json file meanwhile.")
    assert bench.lab.tools.database.tables() == []
    assert data_page.accepted() == [".csv", ".json"]


def test_data_page_reads_parquet_when_pyarrow_is_installed(bench, tmp_path):
    pytest.importorskip("pyarrow")
    import pandas as pd

    path = tmp_path / "sales.parquet"
    pd.DataFrame({"region": ["north"], "amount": [10]}).to_parquet(path)
    assert ".parquet" in data_page.accepted()
    assert _await(bench.data.upload("sales.parquet", path.read_bytes()))
    assert bench.data.frames["sales"].to_dict("records") == [{"region": "north", "amount": 10}]


def test_data_page_reports_a_parquet_file_it_cannot_read(bench, monkeypatch):
    monkeypatch.setattr(data_page, "parquet_readable", lambda: True)
    assert not _await(bench.data.upload("sales.parquet", b"not parquet at all"))
    assert bench.data.notice.kind == "danger" and bench.data.frames == {}


# -- Runs: experiments listed, two compared -----------------------------------------------------
ROWS = [{"question": f"what is {i} + {i}?", "answer": str(2 * i)} for i in range(8)]


def _experiment(lab: Lab, name: str, right: set[int]) -> al.ExperimentRun:
    def reply(messages, request):
        i = int(messages[-1].text.split()[2])
        return str(2 * i) if i in right else "no idea"

    return al.Experiment(name=name, dataset=ROWS, prompts=["{question}"],
                         models=[ScriptedModel(reply, name=name)],
                         scorers=[al.scorers.exact("answer")], lab=lab).run(progress=False)


def test_runs_page_lists_experiments_and_compares_the_two_selected(bench):
    weak = _experiment(bench.lab, "weak", {0, 1})
    strong = _experiment(bench.lab, "strong", set(range(8)))
    assert _await(bench.runs.refresh())
    section = bench.runs.experiments
    listed = section.table.value
    assert list(listed["run_id"]) == [strong.run_id, weak.run_id]  # newest first
    assert list(listed["models"]) == ["scripted:strong", "scripted:weak"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", listed["updated_at"][0])
    _in_loop(lambda: setattr(section.table, "selection", [0, 1]))  # a click on each row
    table = section.comparison.value.set_index("metric")
    assert section.comparison.visible
    assert table.loc["exact", "mean_a"] == pytest.approx(0.25)  # a: the older run
    assert table.loc["exact", "diff"] == pytest.approx(0.75)
    assert table.loc["exact", "wins"] == 6
    assert section.heading.object.startswith(f"**strong** `{strong.run_id}` minus **weak**")
    [plot] = section.plot.objects
    assert list(plot.object.renderers[0].data_source.data["label"]) == ["exact"]
    assert bench.runs.notice.kind == "success"


def test_runs_page_asks_for_exactly_two_when_three_experiments_are_selected(bench):
    for name in ("a", "b", "c"):
        _experiment(bench.lab, name, {0})
    assert _await(bench.runs.refresh())
    section = bench.runs.experiments
    _in_loop(lambda: setattr(section.table, "selection", [0]))  # one: nothing to compare yet
    assert not bench.runs.notice.text and not section.comparison.visible
    _in_loop(lambda: setattr(section.table, "selection", [0, 1, 2]))
    assert bench.runs.notice.text == ("3 runs selected: select exactly two to compare (a click "
                                      "toggles a row).")
    assert not section.comparison.visible


def test_runs_page_compare_refuses_one_run_twice_and_an_unknown_run(bench):
    run = _experiment(bench.lab, "only", {0})
    section = bench.runs.experiments
    assert not _await(section.compare(run.run_id, run.run_id))
    assert "two different" in bench.runs.notice.text
    assert not _await(section.compare(run.run_id, "no-such-run"))
    assert bench.runs.notice.text.startswith("LookupError: ")
    assert "no-such-run" in bench.runs.notice.text and run.run_id in bench.runs.notice.text
    assert not section.comparison.visible and section.plot.objects == []


def test_runs_page_says_when_two_experiments_share_no_metric(bench):
    a = _experiment(bench.lab, "a", {0})
    b = al.Experiment(name="b", dataset=ROWS, prompts=["{question}"], models=["scripted:echo"],
                      scorers=[al.scorers.contains("answer")], lab=bench.lab).run(progress=False)
    assert not _await(bench.runs.experiments.compare(a.run_id, b.run_id))
    assert "share no scored metric" in bench.runs.notice.text


# -- Monitor -------------------------------------------------------------------------------------
def test_monitor_page_charts_the_call_log_per_minute_and_shows_the_agents_metrics(tmp_path):
    failures = [RuntimeError("the provider broke")] * 3
    model = ScriptedModel([*failures, "fine", "fine"], name="flaky")
    with Lab(home=tmp_path / "home", model=model) as lab:
        page = Workbench(lab).monitor
        for prompt in ("a", "b", "c", "d", "e"):
            try:
                lab.chat(prompt)
            except Exception:
                pass
        assert _await(page.refresh())
        calls = page.sources["calls"].data
        assert sum(calls["y"]) == 5 and len(calls["x"]) == len(page.sources["error_rate"].data["y"])
        rates = page.sources["error_rate"].data["y"]
        assert sum(r * n for r, n in zip(rates, calls["y"], strict=True)) == pytest.approx(3)
        assert len(page.charts) == 4
        shown = dict(zip(page.metrics.value["metric"], page.metrics.value["value"], strict=True))
        assert shown["calls"] == "5" and shown["errors"] == "3" and shown["error_rate"] == "0.6"
        assert "**5 call(s)**" in page.summary.object
        assert page.alerts.value.empty
        assert _await(page.check())
        assert page.notice.kind == "danger" and "error_rate = 0.6 > 0.2" in page.notice.text
        assert list(page.alerts.value["metric"]) == ["error_rate"]
        assert "MonitoringAgent `aillm-monitor-" in page.agent_status.object
        assert Workbench(lab).monitor.monitor is page.monitor  # one agent per Lab


def test_monitor_page_without_calls_draws_empty_charts_and_raises_no_alert(bench):
    _await(bench.load("Monitor"))
    assert bench.monitor.summary.object == "No model calls yet."
    assert all(source.data["y"] == [] for source in bench.monitor.sources.values())
    assert _await(bench.monitor.check())
    assert bench.monitor.notice.text == "No alert: every metric is within its threshold."


def test_monitor_page_says_in_one_line_when_the_agent_is_missing(bench, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "aillm_lab.agents.monitoring", None)
    monkeypatch.setattr(monitor_page, "_MONITORS", monitor_page.weakref.WeakKeyDictionary())
    bench.lab.chat("hello")
    assert _await(bench.monitor.refresh())
    assert bench.monitor.sources["calls"].data["y"] == [1.0]  # the call log's own figures
    status = bench.monitor.agent_status.object
    assert status.startswith("The MonitoringAgent is not available here (ModuleNotFoundError")
    assert "\n" not in status and bench.monitor.check_button.disabled
    assert not _await(bench.monitor.check())
    assert bench.monitor.notice.text == status


def test_monitor_page_refreshes_periodically_only_while_its_tab_is_open(bench):
    from bokeh.document import Document
    from panel.io.state import set_curdoc

    page = bench.monitor
    page.watch(True)  # no session (a notebook, a test): nothing to schedule
    assert page.periodic is None
    with set_curdoc(Document()):
        _await(bench.load("Monitor"))
        periodic = page.periodic
        assert periodic is not None and periodic.running
        assert periodic.period == monitor_page.REFRESH_MS
        page.watch(True)
        assert page.periodic is periodic  # one callback, however often the tab opens
        _await(bench.load("Settings"))
        assert page.periodic is None and not periodic.running
        _await(bench.load("Monitor"))
        again = page.periodic
        page._on_session_destroyed(None)
        assert page.periodic is None and not again.running


def test_runs_page_refresh_resends_the_experiments_only_when_they_changed(bench):
    """A new value re-renders the browser's table and drops its selection, so a refresh that
    lands between the user's two clicks (the tab's own and the Refresh button's) must not."""
    first = _experiment(bench.lab, "first", {0})
    _experiment(bench.lab, "second", {1})
    assert _await(bench.runs.refresh())
    section = bench.runs.experiments
    sent: list[object] = []
    section.table.param.watch(sent.append, "value")
    assert _await(bench.runs.refresh())
    assert sent == []
    _experiment(bench.lab, "third", {2})
    assert _await(bench.runs.refresh())
    assert len(sent) == 1 and list(section.table.value["run_id"])[2] == first.run_id


def test_memory_page_clicks_use_the_values_sent_with_them_not_the_boxes(bench):
    """Under two server threads the boxes may still hold the previous text when a click
    arrives: Add, Search and Show all act on what the click carried."""
    from aillm_lab.ui.workbench.submit import send_fields

    memory = bench.memory
    memory.namespace.value, memory.text.value, memory.query.value = "user", "stale", "stale"
    _in_loop(lambda: send_fields(memory.add_request, namespace="work",
                                 text="The deadline is Friday", importance="0.9"))
    [saved] = bench.lab.memory.list("work")
    assert (saved.text, saved.importance) == ("The deadline is Friday", 0.9)
    assert bench.lab.memory.list("user") == []
    _in_loop(lambda: send_fields(memory.search_request, namespace="work", query="deadline"))
    assert list(memory.table.value["text"]) == ["The deadline is Friday"]
    _in_loop(lambda: send_fields(memory.list_request, namespace="user"))
    assert memory.table.value.empty
    _in_loop(lambda: send_fields(memory.list_request, namespace="work"))
    assert list(memory.table.value["text"]) == ["The deadline is Friday"]
