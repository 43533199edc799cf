"""The Data (a question for the DataAnalysis agent, SQL under two server threads), Runs
(experiments compared) and Monitor pages in a real browser: Debian's chromium via Playwright.

The server is the same ``pn.serve`` call ``aillm-lab serve`` makes, with two worker threads
(``pn.config.nthreads = 2``, as ``panel serve --num-threads 2``; the SQL box's own messages
are made to land a second late, so a click that read the box would run the previous query),
over a Lab whose scripted model plays a data analyst: a fenced SQL block for a question about
tables, then a narrative of the result. Panel renders inside shadow DOM, so every lookup is
a Playwright locator. Each page's screenshot is saved under the test's tmp_path; with
``AILLM_SCREENSHOTS=<folder>`` it is also written there (that is how
``docs/screenshots/monitor.png`` is made).
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

import aillm_lab as al  # noqa: E402
from aillm_lab.testing import ScriptedModel  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")
expect.set_options(timeout=60_000)  # waits for an element to show: a failure guard only

PER_COUNTRY = ("SELECT country, SUM(population) AS population FROM cities GROUP BY country "
               "ORDER BY country")
NARRATIVE = "FR has 2420000 people in these cities and DE 3600000."
SERVER = textwrap.dedent(f'''
    import sys
    import time

    import panel as pn
    from panel.widgets import TextAreaInput

    from aillm_lab import Lab
    from aillm_lab.testing import ScriptedModel
    from aillm_lab.ui.workbench.app import TITLE, create_app

    port = int(sys.argv[1])


    def reply(messages, request):
        last = messages[-1].text
        if "Result of your SQL query" in last:
            return {NARRATIVE!r}
        if "Tables you can query" in last:
            return "```sql\\n" + {PER_COUNTRY!r} + "\\n```"
        return "Reply to " + last


    process_events = TextAreaInput._process_events


    def late(self, events):
        """A busy worker thread: the SQL box's new text reaches Python a second after the
        click does. A click that reads the box on the server runs the previous query."""
        if self.placeholder.startswith("SELECT"):
            time.sleep(1.0)
        process_events(self, events)


    TextAreaInput._process_events = late
    lab = Lab(model=ScriptedModel(reply, name="analyst"))
    pn.config.nthreads = 2  # what `panel serve --num-threads 2` sets
    pn.serve({{"/": lambda: create_app(lab, max_tokens=64)}}, port=port, address="127.0.0.1",
             websocket_origin=[f"127.0.0.1:{{port}}"], show=False, title=TITLE,
             liveness=True)
''')


@pytest.fixture(scope="module")
def server_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("browser-pages-server") / "home"


@pytest.fixture(scope="module")
def server(server_home: Path) -> Iterator[str]:
    with serving_script(SERVER, "serve_workbench_pages.py", server_home) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launch_chromium() as browser:
        yield browser


@pytest.fixture
def page(browser: Browser, server: str) -> Iterator[Page]:
    page = open_page(browser, server)
    yield page
    page.close()


def _cell(page: Page, field: str, text: str):
    return visible(page.locator(f".tabulator-cell[tabulator-field={field}]", has_text=text))


def _shot(page: Page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000  # a rendered page, not a blank one
    if folder := os.environ.get("AILLM_SCREENSHOTS"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(folder) / path.name)
    return path


# -- Data ---------------------------------------------------------------------------------------
CITIES = "name,country,population\nParis,FR,2100000\nBerlin,DE,3600000\nNantes,FR,320000\n"


def _upload_cities(page: Page, tmp_path: Path) -> None:
    csv = tmp_path / "cities.csv"
    csv.write_text(CITIES)
    tab(page, "Data").click()
    page.locator("input[type=file][accept^='.csv,.json']").set_input_files(str(csv))
    expect(said(page, "Table cities: 3 rows")).to_be_visible()


def test_data_page_answers_a_question_with_a_table_a_chart_and_a_narrative(page, tmp_path):
    _upload_cities(page, tmp_path)
    visible(page.get_by_placeholder("Which region sold the most?")).fill(
        "How many people live in these cities per country?")
    visible(page.get_by_role("button", name="Ask")).click()
    expect(visible(page.get_by_text(NARRATIVE))).to_be_visible()
    expect(said(page, re.compile(r"Answered with 2 row\(s\)"))).to_be_visible()
    expect(_cell(page, "population", "3,600,000")).to_be_visible()
    expect(_cell(page, "country", "FR")).to_be_visible()
    expect(visible(page.locator("canvas")).first).to_be_visible()  # the bokeh bar chart
    assert page.get_by_text("Traceback").count() == 0
    _shot(page, tmp_path, "data-question")


def test_data_page_runs_each_typed_query_once_clicked_with_two_server_threads(page, tmp_path):
    # The upload put "SELECT * FROM cities LIMIT 20" in the box; each query below is typed
    # and clicked once, and the page must answer that query, never the one before it.
    _upload_cities(page, tmp_path)
    box = visible(page.get_by_placeholder("SELECT * FROM my_table LIMIT 20"))
    run = visible(page.get_by_role("button", name="Run SQL"))
    box.fill("DELETE FROM cities")
    run.click()
    refused = "SafetyViolation: sql.not_read_only: DELETE statements are refused"
    expect(said(page, refused)).to_be_visible()
    expect(visible(page.locator(".notyf__message", has_text="DELETE statements are refused"))
           ).to_be_visible()
    for floor, count in ((0, 3), (1_000_000, 2), (3_000_000, 1), (2_000_000, 2)):
        box.fill(f"SELECT count(*) AS n_{floor} FROM cities WHERE population > {floor}")
        run.click()
        expect(_cell(page, f"n_{floor}", str(count))).to_be_visible()
        expect(said(page, "1 row(s).")).to_be_visible()
    _shot(page, tmp_path, "data-sql")


# -- Runs: experiments --------------------------------------------------------------------------
ROWS = [{"question": f"what is {i} + {i}?", "answer": str(2 * i)} for i in range(6)]


def _experiment(lab: al.Lab, name: str, right: set[int]) -> al.ExperimentRun:
    def reply(messages, request):
        i = int(messages[-1].text.split()[2])
        return str(2 * i) if i in right else "no idea"

    return al.Experiment(name=name, dataset=ROWS, prompts=["{question}"],
                         models=[ScriptedModel(reply, name=name)],
                         scorers=[al.scorers.exact("answer")], lab=lab).run(progress=False)


def test_runs_page_lists_two_experiments_and_shows_their_comparison(page, server_home, tmp_path):
    with al.Lab(home=server_home, model="scripted:echo") as lab:
        weak = _experiment(lab, "weak-model", {0})
        strong = _experiment(lab, "strong-model", set(range(6)))
    tab(page, "Runs and calls").click()  # opening the tab loads what is saved (a second
    # load by Refresh can redraw the table under the clicks below and lose a selection)
    listed = {run.name: _cell(page, "name", run.name) for run in (weak, strong)}  # the
    for cell in listed.values():  # call log has a run_id column too; only this has names
        expect(cell).to_be_visible()
    listed["weak-model"].click()
    listed["strong-model"].click()
    heading = f"strong-model {strong.run_id} minus weak-model {weak.run_id}"
    expect(visible(page.get_by_text(heading))).to_be_visible()
    expect(_cell(page, "metric", "exact")).to_be_visible()
    expect(_cell(page, "wins", "5")).to_be_visible()
    expect(said(page, f"Compared {weak.run_id} with {strong.run_id}.")).to_be_visible()
    visible(page.get_by_text("minus")).scroll_into_view_if_needed()
    _shot(page, tmp_path, "runs-experiments")


# -- Monitor --------------------------------------------------------------------------------------
def test_monitor_page_shows_the_call_log_charts_metrics_and_a_check(page, tmp_path):
    box = visible(page.get_by_placeholder("Send a message"))
    box.fill("hello monitor")
    box.press("Enter")
    expect(visible(page.get_by_text(re.compile(r"\d+ in / \d+ out tokens")))).to_be_visible()
    tab(page, "Monitor").click()
    expect(said(page, re.compile(r"\d+ call\(s\) over the last"))).to_be_visible()
    charts = visible(page.locator("canvas"))
    expect(charts.nth(3)).to_be_visible()  # calls, error rate, p95 latency, cost
    expect(_cell(page, "metric", "p95_latency_s")).to_be_visible()
    expect(visible(page.get_by_text(re.compile(r"MonitoringAgent `?aillm-monitor-")))
           ).to_be_visible()
    visible(page.get_by_role("button", name="Check now")).click()
    expect(said(page, "No alert: every metric is within its threshold.")).to_be_visible()
    assert page.get_by_text("Traceback").count() == 0
    _shot(page, tmp_path, "monitor")
