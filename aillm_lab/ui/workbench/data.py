"""The Data page: CSV, JSON or Parquet uploads as tables (each shown with its schema and first
rows), a question about them answered by the DataAnalysis agent (its SQL, result table,
chart and narrative), and read-only SQL typed directly through the Database tool's guard.

Each button sends its box's text with the click (``submit.submit_with_text``), so under
``panel serve --num-threads 2`` a click never runs the previous query or question.
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import re
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from aillm_lab.core.lab import Lab
from aillm_lab.ui.workbench.notices import Notice
from aillm_lab.ui.workbench.submit import submit_with_text

if TYPE_CHECKING:
    import pandas as pd

EXAMPLE = "SELECT * FROM my_table LIMIT 20"
QUESTION_EXAMPLE = "Which region sold the most?"
READERS = {".csv": "read_csv", ".json": "read_json", ".parquet": "read_parquet"}  # pandas
PARQUET_ENGINES = ("pyarrow", "fastparquet")  # pandas reads Parquet with one of these
PREVIEW_ROWS = 20
NO_TABLES = "No tables yet: upload a CSV."


def parquet_readable() -> bool:
    """Whether pandas can read Parquet here (pyarrow or fastparquet is installed)."""
    return any(importlib.util.find_spec(name) is not None for name in PARQUET_ENGINES)


def accepted() -> list[str]:
    """The file kinds this page reads here: Parquet only with an engine for it."""
    return [kind for kind in READERS if kind != ".parquet" or parquet_readable()]


class DataPage:
    """Upload a CSV, JSON or Parquet file as a table; ask a question about the tables
    (``await ask(question)``) or type SQL (``await run_sql(sql)``: one SELECT; writes are
    refused by the Database tool's guard)."""

    title = "Data"

    def __init__(self, lab: Lab) -> None:
        import pandas as pd
        import panel as pn

        self.lab = lab
        self.frames: dict[str, pd.DataFrame] = {}  # the uploads, for the DataAnalysis agent
        self.notice = Notice("data-notice")
        self.file_input = pn.widgets.FileInput(accept=",".join(accepted()))
        self.file_input.param.watch(self._on_upload, "value")
        self.table_name = pn.widgets.TextInput(label="Table name (default: the file's name)",
                                               placeholder="sales")
        self.tables = pn.pane.Markdown(NO_TABLES, name="data-tables")
        self.schema = pn.widgets.Tabulator(pd.DataFrame(), disabled=True, show_index=False,
                                           visible=False)
        self.question = pn.widgets.TextInput(label="Ask a question about the tables",
                                             placeholder=QUESTION_EXAMPLE,
                                             sizing_mode="stretch_width")
        self.question.param.watch(self._on_enter, "enter_pressed")
        self.ask_button = pn.widgets.Button(label="Ask", color="primary")
        self.ask_request = submit_with_text(self.ask_button, self.question, self.ask,
                                            "data-ask-request")
        self.narrative = pn.pane.Markdown("", name="data-narrative", sizing_mode="stretch_width")
        self.chart = pn.Column(name="data-chart", sizing_mode="stretch_width")
        self.sql = pn.widgets.TextAreaInput(label="SQL (read-only)", placeholder=EXAMPLE,
                                            height=110, sizing_mode="stretch_width")
        self.run_button = pn.widgets.Button(label="Run SQL", color="primary")
        self.sql_request = submit_with_text(self.run_button, self.sql, self.run_sql,
                                            "data-sql-request")
        self.result = pn.widgets.Tabulator(pd.DataFrame(), disabled=True, show_index=False,
                                           pagination="local", page_size=20,
                                           sizing_mode="stretch_width")
        kinds = " or ".join(k.lstrip(".").upper() for k in accepted())
        parquet = "" if parquet_readable() else " (Parquet too once pyarrow is installed)"
        self.view = pn.Column(
            pn.pane.Markdown(f"### Data\nUpload a {kinds} file{parquet} as a table, then ask "
                             "a question about it (the DataAnalysis agent writes the SQL, "
                             "draws a chart and explains the result) or query it with SQL. "
                             "Queries are read-only: a statement that writes is refused."),
            pn.Row(self.file_input, self.table_name), self.tables, self.schema,
            pn.Row(self.question, self.ask_button, sizing_mode="stretch_width"),
            self.sql, self.run_button, self.notice.alert, self.narrative, self.result,
            self.chart, self.ask_request, self.sql_request,
            name=self.title, sizing_mode="stretch_width")

    async def run_sql(self, sql: str | None = None) -> bool:
        """Run the typed SQL; the rows go to the table, a refusal or error to the notice."""
        sql = (self.sql.value if sql is None else sql).strip()
        if not sql:
            self.notice.error("Type one SELECT first, e.g. " + EXAMPLE)
            return False
        try:
            frame = await self.lab.tools.database.aquery(sql)
        except Exception as exc:  # shown to the user, never raised into the server
            self.notice.failed(exc)
            return False
        self._show(frame)
        note = frame.attrs.get("note") or ""
        self.notice.ok(f"{len(frame)} row(s). {note}".strip())
        return True

    async def ask(self, question: str | None = None) -> bool:
        """Have the DataAnalysis agent answer ``question`` over the uploaded tables: its
        narrative, its SQL, its result table and its chart (when the result suits one)."""
        from aillm_lab.agents.data_analysis import DataAnalysisAgent

        question = (self.question.value if question is None else question).strip()
        if not question:
            self.notice.error("Type a question first, e.g. " + QUESTION_EXAMPLE)
            return False
        if not self.frames:
            self.notice.error("Upload a table first: the agent answers from the tables "
                              "uploaded on this page.")
            return False
        try:
            run = await DataAnalysisAgent(lab=self.lab).arun(question, data=dict(self.frames))
        except Exception as exc:
            self.notice.failed(exc)
            return False
        if run.status != "completed" or run.output is None:
            self.notice.error(f"The agent stopped ({run.status}): {run.error or 'no answer'}")
            return False
        result = run.output
        self._show(result.frame, chart=result.chart)
        flagged = (f"\n\n*Numbers not in the result: {', '.join(result.unsupported_numbers)}*"
                   if result.unsupported_numbers else "")
        self.narrative.object = (f"**Answer:** {result.narrative}{flagged}\n\n"
                                 f"```sql\n{result.sql}\n```")
        self.notice.ok(f"Answered with {len(result.frame)} row(s) in {len(run.steps)} "
                       f"step(s) (run {run.id}).")
        return True

    async def upload(self, filename: str, data: bytes, name: str | None = None) -> bool:
        """Read a CSV, JSON or Parquet file (in a worker thread), register it as a table of
        the Database tool, and show its schema and first rows."""
        import pandas as pd

        kind = PurePath(filename).suffix.lower()
        reader = READERS.get(kind)
        if reader is None:
            self.notice.error(f"{filename}: upload a {' or '.join(accepted())} file.")
            return False
        if kind == ".parquet" and not parquet_readable():
            self.notice.error(f"{filename}: reading Parquet needs pyarrow (pip install "
                              "pyarrow); upload a .csv or .json file meanwhile.")
            return False
        table = (name or self.table_name.value or "").strip() or _table_name(filename)
        database = self.lab.tools.database
        try:
            frame = await asyncio.to_thread(getattr(pd, reader), io.BytesIO(data))
            database.register(table, frame)
            schema = await database.adescribe(table)
        except Exception as exc:
            self.notice.failed(exc)
            return False
        self.frames[table] = frame
        self.refresh_tables()
        self.schema.param.update(value=schema, visible=True)
        self._show(frame.head(PREVIEW_ROWS))
        query = f"SELECT * FROM {table} LIMIT {PREVIEW_ROWS}"
        self.sql.param.update(value=query, value_input=query)
        self.notice.ok(f"Table {table}: {len(frame)} rows, columns {', '.join(frame.columns)}.")
        return True

    def refresh_tables(self) -> None:
        names = self.lab.tools.database.tables()
        self.tables.object = ("**Tables:** " + ", ".join(f"`{n}`" for n in names)) if names \
            else NO_TABLES

    def _show(self, frame: pd.DataFrame, chart: Any = None) -> None:
        """A result table, and the chart under it (an answer's), or none (SQL's, a preview)."""
        import panel as pn

        self.result.value = frame
        self.chart.objects = [] if chart is None else [
            pn.pane.Bokeh(chart, name="data-chart-figure", sizing_mode="stretch_width")]
        if chart is None:
            self.narrative.object = ""

    async def _on_enter(self, event: Any = None) -> None:
        await self.ask(self.question.value)  # Enter sends the text with it: one event

    async def _on_upload(self, event: Any) -> None:
        if event.new:
            await self.upload(self.file_input.filename or "upload.csv", event.new)


def _table_name(filename: str) -> str:
    """A SQL-friendly table name from a file name: ``Sales 2024.csv`` → ``sales_2024``."""
    stem = re.sub(r"\W+", "_", PurePath(filename).stem.lower()).strip("_")
    return stem if stem and not stem[0].isdigit() else f"t_{stem or 'upload'}"
