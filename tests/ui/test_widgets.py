"""The notebook widgets without a browser: their buttons are clicked from Python, as a front
end would, and what they do is checked on the Lab (the reply, the files, the audit)."""

from __future__ import annotations

import threading
import time

import pytest

import aillm_lab as al
from aillm_lab.testing import ScriptedModel

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.01)


def test_the_chat_widget_streams_a_reply_in_several_updates(make_lab):
    lab = make_lab(ScriptedModel(["The capital of France is Paris."], name="x"))
    chat = al.ui.chat(lab)
    chat.prompt.value = "What is the capital of France?"
    chat.send_button.click()
    assert chat.send_button.disabled and not chat.stop_button.disabled
    assert chat._future.result(timeout=10) == "The capital of France is Paris."
    assert chat.updates >= 2  # streamed, not one final paint
    assert "Paris." in chat.reply.value
    wait_for(lambda: not chat.send_button.disabled)
    assert chat.status.value == "" and len(lab.calls()) == 1


def test_stop_cancels_the_reply_within_a_second(make_lab):
    words = " ".join(f"w{i}" for i in range(200))
    lab = make_lab(ScriptedModel([words], name="slow", delay=0.05))
    chat = al.ui.chat(lab)
    future = chat.send("go on")
    wait_for(lambda: chat.updates >= 2)
    started = time.monotonic()
    chat.stop_button.click()
    wait_for(lambda: future.done(), timeout=5)
    assert time.monotonic() - started < 1.0 and future.cancelled()
    wait_for(lambda: chat.status.value == "<i>stopped</i>")
    assert chat.updates < 200  # it really stopped part way


def test_an_empty_prompt_is_refused_without_a_call(make_lab):
    lab = make_lab(ScriptedModel(["unused"]))
    chat = al.ui.chat(lab)
    with pytest.raises(ValueError, match="prompt is empty"):
        chat.send("   ")
    assert "Write a prompt first" in chat.status.value


@pytest.mark.parametrize("answer", ["Deny", "Approve"])
def test_the_approval_widget_decides_whether_the_file_is_written(make_lab, answer):
    content = "print('hello')\n" * 10
    model = ScriptedModel([al.ToolCall(id="c1", name="write_file",
                                       arguments={"path": "hello.py", "content": content}),
                           "done"])
    lab = make_lab(model)
    lab.settings.safety.approvals.by_tool["write_file"] = "ask"
    panel = al.ui.approvals(lab)
    agent = al.ReActAgent(tools=["write_file"], lab=lab)
    runs: list[al.AgentRun] = []
    worker = threading.Thread(target=lambda: runs.append(agent.run("write hello.py")))
    worker.start()
    wait_for(lambda: len(panel.pending) == 1)  # the agent waits; this thread is free
    request, approve, deny = panel.pending[0]
    assert request.tool == "write_file" and "1 waiting" in panel.header.value
    card = panel.children[1]
    assert "write_file" in card.children[0].value and "print(&#x27;hello&#x27;)" in \
        card.children[0].value  # the text it would write, escaped
    (approve if answer == "Approve" else deny).click()
    worker.join(timeout=10)
    [run] = runs
    target = lab.settings.workspace_path / "hello.py"
    decision = list(lab.audit(tool="write_file")["decision"])
    if answer == "Approve":
        assert target.read_text() == content and decision == ["allowed"]
    else:
        assert not target.exists() and decision == ["denied"]
        assert run.steps[0].tool_results[0].rule == "approval.denied"
    assert run.status == "completed" and panel.pending == []
    assert len(panel.children) == 1 and "none waiting" in panel.header.value


def test_the_trace_widget_has_one_section_per_step(make_lab):
    model = ScriptedModel([al.ToolCall(id="c1", name="nope", arguments={}), "the end"])
    run = al.ReActAgent(lab=make_lab(model)).run("try")
    view = al.ui.trace(run)
    assert len(view.children) == len(run.steps) == 2
    assert view.get_title(0) == "step 0: nope" and view.get_title(1) == "step 1: answer"
    assert "Unknown tool" in view.children[0].value and "the end" in view.children[1].value


def test_the_model_picker_starts_on_the_labs_default_and_lists_the_others(make_lab):
    lab = make_lab(ScriptedModel(["unused"], name="x"))
    chat = al.ui.chat(lab, models=["scripted:x", "openai:gpt-4o-mini"])
    assert chat.model.options == (("scripted:x (default)", None),
                                  ("openai:gpt-4o-mini", "openai:gpt-4o-mini"))
    assert chat.model.value is None


def test_the_agent_picker_offers_plain_chat_and_the_agents_that_run_from_a_prompt(make_lab):
    chat = al.ui.chat(make_lab(ScriptedModel(["unused"])))
    assert [key for _, key in chat.agent.options] == ["chat", "react", "code_writer",
                                                      "research", "data_analysis"]
    assert chat.agent.value == "chat"


def test_a_picked_agent_streams_its_tool_calls_then_answers_with_its_trace(make_lab):
    model = ScriptedModel([al.ToolCall(id="c1", name="write_file",
                                       arguments={"path": "plan.txt", "content": "the plan"}),
                           "Wrote plan.txt."], name="writer")
    lab = make_lab(model)
    chat = al.ui.chat(lab)
    chat.agent.value = "react"
    assert chat.send("write the plan").result(timeout=20) == "Wrote plan.txt."
    assert (lab.settings.workspace_path / "plan.txt").read_text() == "the plan"
    assert chat.run is not None and chat.run.status == "completed"
    assert chat.updates >= 2 and "Wrote plan.txt." in chat.reply.value
    [trace] = chat.trace_box.children
    assert isinstance(trace, al.ui.TraceWidget) and len(trace.children) == 2
    assert "write_file" in trace.get_title(0) and "plan.txt" in trace.children[0].value
    wait_for(lambda: not chat.send_button.disabled)
    assert chat.status.value == ""


def test_the_research_agent_streams_its_seed_search_then_answers_with_a_citation(make_lab,
                                                                                 tmp_path):
    docs = tmp_path / "docs_widget"
    docs.mkdir()
    (docs / "e4012.md").write_text("Error E4012 means the bucket is over its storage quota.")
    lab = make_lab(ScriptedModel(lambda messages, request: "It is over its quota [1].",
                                 name="researcher"))
    lab.ingest(docs, progress=False)
    chat = al.ui.chat(lab)
    chat.agent.value = "research"
    shown: list[str] = []
    chat.reply.observe(lambda change: shown.append(change["new"]), names="value")
    assert chat.send("What does E4012 mean?").result(timeout=30) == "It is over its quota [1]."
    # the seed search showed while it ran, before the answer replaced it
    assert any("calling search_knowledge" in v for v in shown[:-1])
    assert chat.run is not None and chat.run.status == "completed"
    assert chat.run.output.sources[0].source.endswith("e4012.md")


def test_the_data_agent_without_tables_says_how_to_give_them(make_lab):
    chat = al.ui.chat(make_lab(ScriptedModel(["unused"])))
    chat.agent.value = "data_analysis"
    future = chat.send("total per region?")
    wait_for(lambda: future.done())
    wait_for(lambda: not chat.send_button.disabled)
    assert "al.ui.chat(data=" in chat.status.value and chat.run is None


def test_stop_cancels_an_agent_run_within_a_second(make_lab):
    lab = make_lab(ScriptedModel([" ".join(f"w{i}" for i in range(300))], delay=0.05))
    chat = al.ui.chat(lab)
    chat.agent.value = "react"
    future = chat.send("talk")
    wait_for(lambda: chat.updates >= 2)
    started = time.monotonic()
    chat.stop()
    wait_for(lambda: future.done(), timeout=5)
    assert time.monotonic() - started < 1.0 and future.cancelled()


# bokeh's ColumnDataSource.from_df calls reset_index(inplace=True), which pandas 3.1
# deprecates; every Tabulator of the dashboard goes through it. Not ours to fix.
@pytest.mark.filterwarnings(
    "ignore:The inplace keyword in DataFrame.reset_index:pandas.errors.Pandas4Warning")
def test_the_inline_dashboard_is_the_workbench_over_the_given_lab(make_lab):
    import panel as pn

    lab = make_lab(ScriptedModel(["unused"], name="x"))
    view = al.ui.dashboard(lab)
    assert isinstance(view, pn.Tabs)
    assert [page.name for page in view] == ["Chat", "Documents", "Data", "Runs and calls",
                                           "Memory", "Monitor", "Settings"]
    assert "scripted:x" in view[0].objects[0].object  # the Chat header names the Lab's model
