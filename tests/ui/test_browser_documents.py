"""The Documents page in a real browser (Debian's chromium via Playwright), under two server
threads: ingest a folder, search it with a mode and filters, and ask the Research agent for a
cited answer whose ``[n]`` link to the chunks they cite.

The server is the same ``pn.serve`` call ``aillm-lab serve`` makes, with two worker threads
(``pn.config.nthreads = 2``, as ``panel serve --num-threads 2``), and every text box of the
page has its own messages land a second late: a click that read a box on the server would
ingest, search or ask with the previous text. Each click must use the text just typed. The
scripted model plays the Research agent: it answers from the source about E4012 and cites
it. With ``AILLM_SCREENSHOTS=<folder>`` the page's screenshot is also written there (that is
how ``docs/screenshots/documents.png`` is made).
"""

from __future__ import annotations

import os
import re
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from _ui_servers import (
    launch_chromium,
    open_page,
    said,
    serving_script,
    skip_without_browser,
    tab,
    visible,
)

skip_without_browser()

from playwright.sync_api import Browser, Page, expect  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")
expect.set_options(timeout=60_000)  # waits for an element to show: a failure guard only

# the page's text boxes, by placeholder: each one's own messages reach Python a second late
LATE_BOXES = ["notes/", "paper, 2024", "storage quota", "*.md", "paper",
              "What does error E4012 mean?"]
SERVER = textwrap.dedent(f'''
    import re
    import sys
    import time

    import panel as pn
    from panel.widgets import TextInput

    from aillm_lab import Lab
    from aillm_lab.testing import ScriptedModel
    from aillm_lab.ui.workbench.app import TITLE, create_app

    port = int(sys.argv[1])


    def reply(messages, request):
        text = "\\n".join(m.text for m in messages)
        cited = re.search(r"^\\[(\\d+)\\] \\([^)]*e4012", text, re.M)
        if cited:  # the Research agent's sources are in the prompt
            return f"E4012 means the bucket is over its storage quota [{{cited.group(1)}}]."
        return "Reply to " + messages[-1].text


    process_events = TextInput._process_events


    def late(self, events):
        """A busy worker thread: the box's new text reaches Python a second after the click
        does. A click that reads the box on the server uses the previous text."""
        if self.placeholder in {LATE_BOXES!r}:
            time.sleep(1.0)
        process_events(self, events)


    TextInput._process_events = late
    lab = Lab(model=ScriptedModel(reply, name="researcher"))
    pn.config.nthreads = 2  # what `panel serve --num-threads 2` sets
    pn.serve({{"/": lambda: create_app(lab, max_tokens=64)}}, port=port, address="127.0.0.1",
             websocket_origin=[f"127.0.0.1:{{port}}"], show=False, title=TITLE,
             liveness=True)
''')
NOTES = {"e4012.md": "# Errors\n\nE4012 means the bucket is over its storage quota.\n",
         "cats.md": "# Cats\n\nKittens sleep about sixteen hours a day.\n"}


@pytest.fixture(scope="module")
def server_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("browser-documents-server") / "home"
    notes = home / "workspace" / "notes"
    notes.mkdir(parents=True)
    for name, text in NOTES.items():
        (notes / name).write_text(text)
    return home


@pytest.fixture(scope="module")
def server(server_home: Path) -> Iterator[str]:
    with serving_script(SERVER, "serve_workbench_documents.py", server_home) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launch_chromium() as browser:
        yield browser


@pytest.fixture
def page(browser: Browser, server: str) -> Iterator[Page]:
    page = open_page(browser, server)
    tab(page, "Documents").click()
    yield page
    page.close()


def _box(page: Page, placeholder: str):
    return visible(page.get_by_placeholder(placeholder, exact=True))


def _sources(page: Page):
    """The source column of the results, best first."""
    return visible(page.locator(".tabulator-cell[tabulator-field=source]"))


def _shot(page: Page, tmp_path: Path, name: str) -> Path:
    """The page down to its last element, without the notification toasts (for the README)."""
    page.add_style_tag(content=".notyf { display: none !important; }")
    page.evaluate("() => window.scrollTo(0, 0)")  # bounding boxes are relative to the view
    last = visible(page.get_by_text(re.compile(r"^Question: "))).bounding_box()
    height = last["y"] + last["height"] + 24 if last else 900
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True,
                    clip={"x": 0, "y": 0, "width": 1280, "height": height})
    assert path.stat().st_size > 10_000  # a rendered page, not a blank one
    if folder := os.environ.get("AILLM_SCREENSHOTS"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(folder) / path.name)
    return path


def _ingest(page: Page, path: str, tags: str = "") -> None:
    _box(page, "notes/").fill(path)
    _box(page, "paper, 2024").fill(tags)
    visible(page.get_by_role("button", name="Ingest")).click()
    expect(said(page, re.compile(r"Ingested into default: \d+ added"))).to_be_visible()


def _search(page: Page, query: str, source: str = "", tags: str = "") -> None:
    _box(page, "storage quota").fill(query)
    _box(page, "*.md").fill(source)
    _box(page, "paper").fill(tags)
    visible(page.get_by_role("button", name="Search", exact=True)).click()


def test_documents_page_ingests_searches_and_asks_with_the_texts_typed_before_each_click(
        page, tmp_path):
    _ingest(page, "notes", tags="handbook")
    expect(said(page, "Ingested into default: 2 added, 0 updated, 0 unchanged")
           ).to_be_visible()
    for query, best in (("kittens sleep", "cats.md"), ("storage quota", "e4012.md"),
                        ("sixteen hours", "cats.md"), ("bucket quota", "e4012.md")):
        _search(page, query)
        expect(said(page, f"passage(s) for {query!r} (hybrid).")).to_be_visible()
        expect(_sources(page).first).to_contain_text(best)
    for question in ("What is E4012?", "Why does my upload fail with E4012?"):
        _box(page, "What does error E4012 mean?").fill(question)
        visible(page.get_by_role("button", name="Ask")).click()
        expect(said(page, f"Answered {question!r} in")).to_be_visible()
        answer = visible(page.get_by_text(f"Question: {question}"))
        expect(answer).to_be_visible()  # the question the Research agent got, shown under it
    cited = visible(page.get_by_role("link", name=re.compile(r"^\[\d\]$")))
    expect(cited).to_have_count(1)
    label = cited.inner_text().strip("[]")
    expect(cited).to_have_attribute("href", f"#documents-source-{label}")
    expect(cited).to_have_attribute("title", re.compile(r"^e4012\.md: .*E4012 means the bucket"))
    source = visible(page.get_by_role("listitem").filter(has_text=f"[{label}]"))
    expect(source).to_contain_text(re.compile(r"e4012\.md.* \(chunk \d+\) — "))
    expect(source.locator(f"[id=documents-source-{label}]")).to_have_count(1)
    assert page.get_by_text("Traceback").count() == 0
    _shot(page, tmp_path, "documents")


def _pick_type(page: Page, kind: str) -> None:
    """Pick ``kind`` in the "Only types" picker (a choices.js list)."""
    visible(page.locator(".choices__input--cloned")).click()
    visible(page.locator(".choices__item--choice", has_text=re.compile(f"^{kind}$"))).click()
    page.keyboard.press("Escape")


def test_documents_page_search_uses_the_mode_and_filters_sent_with_the_click(page):
    _ingest(page, "notes", tags="handbook")  # tagged on their first ingest
    _search(page, "storage quota", source="*cats.md")
    expect(said(page, "passage(s) for 'storage quota' (hybrid, source *cats.md).")
           ).to_be_visible()
    expect(_sources(page)).to_have_count(1)
    expect(_sources(page).first).to_contain_text("cats.md")
    _search(page, "storage quota", tags="no-such-tag")
    expect(said(page, "0 passage(s) for 'storage quota' (hybrid, tags no-such-tag).")
           ).to_be_visible()
    _search(page, "storage quota", tags="handbook")
    expect(said(page, "passage(s) for 'storage quota' (hybrid, tags handbook).")
           ).to_be_visible()
    expect(_sources(page).first).to_contain_text("e4012.md")
    _pick_type(page, "pdf")
    _search(page, "storage quota")
    expect(said(page, "0 passage(s) for 'storage quota' (hybrid, type pdf).")).to_be_visible()
    visible(page.locator(".choices__button")).click()  # pdf is no longer picked
    _pick_type(page, "markdown")
    _search(page, "storage quota")
    expect(said(page, "passage(s) for 'storage quota' (hybrid, type markdown).")
           ).to_be_visible()
    expect(_sources(page).first).to_contain_text("e4012.md")
    visible(page.locator(".choices__button")).click()
    visible(page.locator("select")).filter(has_text="hybrid").select_option("sparse")
    _search(page, "kittens")
    expect(said(page, "1 passage(s) for 'kittens' (sparse).")).to_be_visible()
    expect(_sources(page)).to_have_count(1)


def test_documents_page_says_what_is_missing_instead_of_using_an_old_text(page):
    _box(page, "storage quota").fill("")
    visible(page.get_by_role("button", name="Search", exact=True)).click()
    expect(said(page, "Type what to search for first.")).to_be_visible()
    _box(page, "What does error E4012 mean?").fill("  ")
    visible(page.get_by_role("button", name="Ask")).click()
    expect(said(page, "Type a question first.")).to_be_visible()
    _box(page, "notes/").fill("../outside")
    visible(page.get_by_role("button", name="Ingest")).click()
    expect(said(page, "outside the workspace")).to_be_visible()
