"""The Chat page without a browser: a ``Workbench`` built directly over a Lab on a temporary
home, its chat callback awaited (pickers, agent replies with their trace, inline approvals per
session, image attachments through a fake OpenAI server)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

pn = pytest.importorskip("panel")

from aillm_lab import Lab  # noqa: E402
from aillm_lab.llm.types import ToolCall  # noqa: E402
from aillm_lab.testing import ScriptedModel  # noqa: E402
from aillm_lab.testing.fake_servers import FakeOpenAI  # noqa: E402
from aillm_lab.ui.workbench.app import Workbench  # noqa: E402
from aillm_lab.ui.workbench.approvals_inline import APPROVAL_USER  # noqa: E402
from aillm_lab.ui.workbench.chat import ChatPage  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings(
        "ignore:The inplace keyword in DataFrame.reset_index:pandas.errors.Pandas4Warning"),
    pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")]

# a 1x1 PNG
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgG"
                       "AWjR9awAAAABJRU5ErkJggg==")
ASK_WRITES = {"approvals": {"by_risk": {"read": "auto", "write": "ask", "execute": "auto",
                                        "network": "auto"}}}


def _writer(messages: list[Any], request: Any) -> Any:
    """Write notes/plan.txt once, then answer with what the tool said."""
    said = [m for m in messages if m.role == "tool"]
    if not said:
        return ToolCall(id="call-1", name="write_file",
                        arguments={"path": "notes/plan.txt", "content": "new plan"})
    return f"Done: {said[-1].text}"


async def _collect(page: ChatPage, text: str) -> list[Any]:
    page.chat.send(text, respond=False)
    return [item async for item in page.respond(text, "User", page.chat)]


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with Lab(home=tmp_path / "home", model=ScriptedModel(_writer, name="writer"),
             safety=ASK_WRITES) as lab:
        yield lab


# -- pickers ----------------------------------------------------------------------------------
def test_model_picker_lists_the_default_first_with_why_and_the_models_usable_here(tmp_path):
    with Lab(home=tmp_path / "home", model=ScriptedModel(["hi"], name="slow"),
             openai_api_key="sk-test-not-a-key") as lab:
        page = Workbench(lab, models=["scripted:other"]).chat_page
        options = page.model_picker.options
        assert list(options)[0] == "scripted:slow (default)" and options[
            "scripted:slow (default)"] == ""
        assert {"scripted:other", "openai:gpt-4o-mini", "scripted:echo"} <= set(options.values())
        assert "given to Lab(model=...)" in page.header.object
        why = dict(page.models)
        assert why["openai:gpt-4o-mini"] == "an OpenAI key is set"
        assert why["scripted:other"] == "offered by this server"
        page.model_picker.value = "scripted:echo"
        assert "`scripted:echo`" in page.header.object and "echo model" in page.header.object
        assert page.chat.callback_user == "scripted:echo"
        assert "sk-test" not in repr(options)


def test_model_picker_leaves_out_vendors_without_a_key(tmp_path):
    with Lab(home=tmp_path / "home", model="scripted:echo") as lab:
        specs = [spec for spec, _ in ChatPage(lab).models]
    assert specs[0] == "scripted:echo"
    assert not any(s.startswith(("openai:", "anthropic:")) for s in specs)


def test_agent_picker_offers_plain_chat_and_the_agents_that_run_from_a_prompt(lab):
    options = ChatPage(lab).agent_picker.options
    assert set(options.values()) == {"chat", "react", "code_writer", "research",
                                     "data_analysis"}
    assert "workflow" not in options.values() and "monitoring" not in options.values()


def test_switching_the_model_picker_changes_which_model_answers(tmp_path):
    with Lab(home=tmp_path / "home", model=ScriptedModel(lambda m, r: "from the default",
                                                          name="first")) as lab:
        page = ChatPage(lab, models=["scripted:echo"])
        first = _run(_collect(page, "hello there"))[-1]
        page.model_picker.value = "scripted:echo"
        second = _run(_collect(page, "hello again"))[-1]
    assert first["object"] == "from the default" and first["user"] == "scripted:first"
    assert second["object"] == "hello again" and second["user"] == "scripted:echo"
    assert second["footer_objects"][0].object.startswith("scripted:echo ·")


# -- agents -----------------------------------------------------------------------------------
def test_agent_reply_streams_its_tool_calls_then_carries_the_trace_in_a_card(tmp_path):
    with Lab(home=tmp_path / "home", model=ScriptedModel(_writer, name="writer")) as lab:
        page = ChatPage(lab)
        page.agent_picker.value = "react"
        items = _run(_collect(page, "write the plan"))
        written = (lab.settings.workspace_path / "notes" / "plan.txt").read_text()
    partial, final = items[:-1], items[-1]
    assert any("calling `write_file`" in p for p in partial if isinstance(p, str))
    assert final["object"].startswith("Done: created notes/plan.txt")
    footer, card = final["footer_objects"]
    assert footer.object.startswith("scripted:writer · ReActAgent · completed ·")
    assert isinstance(card, pn.Card) and card.collapsed and card.title.startswith("Trace: 2 step")
    steps = "".join(pane.object for pane in card.objects)
    assert "write_file(" in steps and "notes/plan.txt" in steps and "new plan" in steps
    assert "in / " in steps and "out tokens" in steps and written == "new plan"


def test_an_agent_that_cannot_be_made_shows_a_notice_not_a_traceback(tmp_path):
    with Lab(home=tmp_path / "home", model="scripted:echo") as lab:
        page = ChatPage(lab)
        page.agent_picker.value = "react"
        page.model_picker.options = {**page.model_picker.options, "x": "nosuch:model"}
        page.model_picker.value = "nosuch:model"
        items = _run(_collect(page, "do it"))
    assert items[-1]["user"] == "error" and "names no known provider ('nosuch')" in items[-1][
        "object"]
    assert page.notice.kind == "danger" and "Traceback" not in page.notice.text


# -- approvals ----------------------------------------------------------------------------------
def _approvals(page: ChatPage) -> list[Any]:
    return [m for m in page.chat.objects if m.user == APPROVAL_USER]


async def _answer_when_asked(page: ChatPage, other: ChatPage, approve: bool) -> list[Any]:
    """Run the agent in ``page``; when its approval shows, check ``other`` has none, click."""
    reply = asyncio.ensure_future(_collect(page, "write the plan"))
    for _ in range(500):
        if page.approvals.pending or reply.done():
            break
        await asyncio.sleep(0.01)
    assert page.approvals.pending, "no approval was asked"
    assert len(_approvals(page)) == 1 and not _approvals(other)
    assert not other.approvals.pending
    shown = _approvals(page)[0].object.objects[0].object
    assert "write_file" in shown and "notes/plan.txt" in shown and "new plan" in shown
    page.approvals.pending[0].click(approve)
    return await reply


def test_an_approval_shows_only_in_the_session_whose_agent_asked_and_deny_writes_nothing(lab):
    target = lab.settings.workspace_path / "notes" / "plan.txt"
    target.parent.mkdir(parents=True)
    target.write_text("old plan")
    first, second = Workbench(lab).chat_page, Workbench(lab).chat_page
    first.agent_picker.value = "react"
    items = _run(_answer_when_asked(first, second, approve=False))
    assert target.read_text() == "old plan"
    assert "Denied" in _approvals(first)[0].object.objects[2].object
    steps = "".join(p.object for p in items[-1]["footer_objects"][1].objects)
    assert "approval.denied" in steps


def test_approve_in_the_chat_lets_the_waiting_agent_write_the_file(lab):
    target = lab.settings.workspace_path / "notes" / "plan.txt"
    first, second = ChatPage(lab), ChatPage(lab)
    second.agent_picker.value = "react"
    _run(_answer_when_asked(second, first, approve=True))
    assert target.read_text() == "new plan"
    assert "Approved" in _approvals(second)[0].object.objects[2].object


def test_an_unanswered_approval_times_out_to_a_denial(tmp_path):
    policy = {"approvals": {**ASK_WRITES["approvals"], "timeout_s": 0.3}}
    with Lab(home=tmp_path / "home", model=ScriptedModel(_writer, name="writer"),
             safety=policy) as lab:
        page = ChatPage(lab)
        page.agent_picker.value = "react"
        items = _run(_collect(page, "write the plan"))
        assert not (lab.settings.workspace_path / "notes" / "plan.txt").exists()
    assert "No answer in time" in _approvals(page)[0].object.objects[2].object
    steps = "".join(p.object for p in items[-1]["footer_objects"][1].objects)
    assert "approval.timeout" in steps


# -- images -------------------------------------------------------------------------------------
def _attach(page: ChatPage) -> None:
    page.image.param.update(value=PNG, filename="dot.png", mime_type="image/png")


def test_an_attached_image_reaches_the_model_as_an_image_part(tmp_path):
    with FakeOpenAI(["A single dot."]) as server, \
            Lab(home=tmp_path / "home", model="scripted:echo") as lab:
        spec = f"openai:gpt-4o-mini@{server.url}"
        page = ChatPage(lab, models=[spec])
        page.model_picker.value = spec
        _attach(page)
        items = _run(_collect(page, "What is in this picture?"))
        body = server.last_request.body
    assert items[-1]["object"] == "A single dot."
    parts = body["messages"][-1]["content"]
    images = [p for p in parts if p.get("type") == "image_url"]
    assert images and images[0]["image_url"]["url"] == (
        "data:image/png;base64," + base64.b64encode(PNG).decode())
    assert any(p.get("text") == "What is in this picture?" for p in parts)
    assert page.image.value is None  # the attachment goes with one message only


def test_a_text_only_model_refuses_an_image_with_a_readable_notice(tmp_path):
    from aillm_lab.llm.local_files import KNOWN_MODELS

    models = tmp_path / "models"
    models.mkdir()
    (models / KNOWN_MODELS["smollm2"].filename).write_bytes(b"GGUF")  # never loaded
    with Lab(home=tmp_path / "home", model="scripted:echo", models_dir=models,
             local={"backend": "transformers"}) as lab:  # nothing loads llama.cpp
        page = ChatPage(lab)
        page.model_picker.value = "local:smollm2"
        _attach(page)
        items = _run(_collect(page, "What is in this picture?"))
    assert len(items) == 1 and items[0]["user"] == "error"
    assert "local:smollm2 cannot take images (it is text-only)" in items[0]["object"]
    assert page.notice.kind == "danger" and "text-only" in page.notice.text
    assert "Traceback" not in items[0]["object"]


def test_an_agent_refuses_an_attached_image_and_says_to_use_plain_chat(lab):
    page = ChatPage(lab)
    page.agent_picker.value = "react"
    _attach(page)
    items = _run(_collect(page, "look"))
    assert items[-1]["user"] == "error" and "pick Plain chat" in items[-1]["object"]


def test_the_data_agent_queries_the_data_pages_tables_and_asks_for_one_when_there_is_none(
        tmp_path):
    def analyst(messages: list[Any], request: Any) -> Any:
        if not [m for m in messages if m.role == "tool"]:
            return ToolCall(id="q1", name="run_sql",
                            arguments={"sql": "SELECT count(*) AS n FROM cities"})
        return "There are 3 cities."

    with Lab(home=tmp_path / "home", model=ScriptedModel(analyst, name="analyst")) as lab:
        bench = Workbench(lab)
        page = bench.chat_page
        page.agent_picker.value = "data_analysis"
        empty = _run(_collect(page, "How many cities?"))
        assert empty[-1]["user"] == "error" and "upload a CSV" in empty[-1]["object"]
        bench.data.frames["cities"] = pd.DataFrame({"name": ["Paris", "Berlin", "Nantes"]})
        items = _run(_collect(page, "How many cities?"))
    card = items[-1]["footer_objects"][1]
    steps = "".join(p.object for p in card.objects)
    assert "run_sql(" in steps and "SELECT count(*) AS n FROM cities" in steps
    assert "3" in items[-1]["object"]
