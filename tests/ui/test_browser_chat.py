"""The Chat page in a real browser (Debian's chromium through Playwright): the agent picker,
an agent's trace card, inline Approve/Deny checked on disk, and the model picker.

The server is the ``pn.serve`` call ``aillm-lab serve`` makes, with two worker threads (as
``panel serve --num-threads 2``), over one Lab whose scripted model writes a workspace file
when asked to (a tool call the policy says to ``ask`` about) and otherwise answers in words.
``AILLM_SCREENSHOTS=<folder>`` keeps the screenshots (``docs/screenshots/chat.png`` is made
that way).
"""

from __future__ import annotations

import os
import re
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from _ui_servers import launch_chromium, open_page, serving_script, skip_without_browser, visible

skip_without_browser()

from playwright.sync_api import Browser, Page, expect  # noqa: E402

expect.set_options(timeout=60_000)  # a failure guard only

SERVER = textwrap.dedent('''
    import sys

    import panel as pn

    from aillm_lab import Lab, ToolCall
    from aillm_lab.testing import ScriptedModel
    from aillm_lab.ui.workbench.app import TITLE, create_app

    port = int(sys.argv[1])
    pn.config.nthreads = 2  # what `panel serve --num-threads 2` sets


    def reply(messages, request):
        said = [m for m in messages if m.role == "tool"]
        if said:
            return "Done: " + said[-1].text
        prompt = next(m.text for m in reversed(messages) if m.role == "user")
        if "plan" in prompt and request.tools:
            return ToolCall(id="call-1", name="write_file",
                            arguments={"path": "notes/plan.txt", "content": "new plan"})
        return "Scripted reply to " + prompt


    ask = {"read": "auto", "write": "ask", "execute": "auto", "network": "auto"}
    lab = Lab(model=ScriptedModel(reply, name="slow", delay=0.02),
              safety={"approvals": {"by_risk": ask}})
    pn.serve({"/": lambda: create_app(lab, max_tokens=64, models=["scripted:echo"])},
             port=port, address="127.0.0.1", websocket_origin=[f"127.0.0.1:{port}"],
             show=False, title=TITLE, liveness=True)
''')


@pytest.fixture(scope="module")
def server_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("browser-chat") / "home"


@pytest.fixture(scope="module")
def server(server_home: Path) -> Iterator[str]:
    with serving_script(SERVER, "serve_chat.py", server_home) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launch_chromium() as browser:
        yield browser


@pytest.fixture
def page(browser: Browser, server: str) -> Iterator[Page]:
    page = open_page(browser, server, height=1000)
    yield page
    page.close()


def _send(page: Page, text: str) -> None:
    box = visible(page.get_by_placeholder("Send a message"))
    expect(box).to_be_enabled()
    box.fill(text)
    box.press("Enter")


def _pick(page: Page, option: str, value: str) -> None:
    """Choose ``value`` in the picker that lists ``option``."""
    picker = page.locator(f"select:has(option:text-is('{option}'))")
    picker.select_option(label=value)


def _shot(page: Page, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path))  # the viewport: the chat scrolls inside it
    assert path.stat().st_size > 10_000
    if folder := os.environ.get("AILLM_SCREENSHOTS"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(folder) / path.name)


def _answer(page: Page, button: str) -> None:
    """Click ``button`` on the approval that is waiting, once it shows."""
    waiting = visible(page.get_by_text("Waiting for your answer…"))
    expect(waiting).to_have_count(1)
    expect(visible(page.get_by_text("wants to run")).last).to_contain_text("write_file")
    visible(page.get_by_role("button", name=button)).last.click()
    expect(waiting).to_have_count(0)


def test_agent_reply_shows_its_trace_and_asks_inline_deny_keeps_the_file_approve_writes(
        page, server_home, tmp_path):
    target = server_home / "workspace" / "notes" / "plan.txt"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("old plan")
    _pick(page, "Plain chat", "ReAct agent (the Lab's tools)")

    _send(page, "write the plan")
    _answer(page, "Deny")
    expect(visible(page.get_by_text("Denied.", exact=True))).to_be_visible()
    expect(visible(page.get_by_text("scripted:slow · ReActAgent · completed")).first
           ).to_be_visible()
    assert target.read_text() == "old plan"

    _send(page, "write the plan again")
    _answer(page, "Approve")
    expect(visible(page.get_by_text("Approved.", exact=True))).to_be_visible()
    expect(visible(page.get_by_text("Done: replaced notes/plan.txt"))).to_be_visible()
    assert target.read_text() == "new plan"

    cards = visible(page.get_by_text(re.compile(r"^Trace: 2 step\(s\)")))
    expect(cards).to_have_count(2)
    cards.last.click()  # open the last answer's trace
    call = visible(page.get_by_text(re.compile(r'write_file\(\{"path": "notes/plan.txt"'))).last
    expect(call).to_be_visible()
    visible(page.get_by_text(re.compile(r"^step 1: answer$"))).last.scroll_into_view_if_needed()
    expect(visible(page.get_by_text("new plan")).first).to_be_visible()
    _shot(page, tmp_path, "chat")


def test_model_picker_lists_the_models_and_switching_it_changes_who_answers(page):
    picker = page.locator("select:has(option:text-is('scripted:echo'))")
    labels = [o.strip() for o in picker.locator("option").all_text_contents()]
    assert labels[0] == "scripted:slow (default)" and "scripted:echo" in labels
    expect(visible(page.get_by_text("— default: given to Lab(model=...)"))).to_be_visible()

    _send(page, "first question")
    expect(visible(page.get_by_text("Scripted reply to first question"))).to_be_visible()
    expect(visible(page.get_by_text(re.compile(r"^scripted:slow · \d+ in")))).to_have_count(1)

    picker.select_option(label="scripted:echo")
    expect(visible(page.get_by_text("scripted:echo — offered by this server"))).to_be_visible()
    _send(page, "second question")
    expect(visible(page.get_by_text(re.compile(r"^scripted:echo · \d+ in")))).to_have_count(1)
    expect(visible(page.get_by_text("second question", exact=True))).to_have_count(2)


def test_two_tabs_share_the_lab_and_an_approval_shows_only_in_the_tab_that_asked(
        browser, server, server_home):
    target = server_home / "workspace" / "notes" / "plan.txt"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("old plan")
    asking, other = open_page(browser, server, height=1000), open_page(browser, server, height=1000)
    try:
        _pick(asking, "Plain chat", "ReAct agent (the Lab's tools)")
        _send(other, "just chatting")
        _send(asking, "write the plan")
        expect(visible(asking.get_by_text("Waiting for your answer…"))).to_have_count(1)
        expect(visible(other.get_by_text("Scripted reply to just chatting"))).to_be_visible()
        assert other.get_by_text("Approval needed").count() == 0
        _answer(asking, "Deny")
        expect(visible(asking.get_by_text("Denied.", exact=True))).to_be_visible()
        assert other.get_by_text("Approval needed").count() == 0
        assert target.read_text() == "old plan"
    finally:
        asking.close()
        other.close()
