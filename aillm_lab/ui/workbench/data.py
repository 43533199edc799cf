"""The Data page: read-only SQL over the Database tool, and CSV or JSON uploads as its
tables, each shown with its schema and first rows."""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import PurePath
from typing import Any

from aillm_lab.core.lab import Lab
from aillm_lab.ui.workbench.notices import Notice

EXAMPLE = "SELECT * FROM my_table LIMIT 20"
READERS = {".csv": "read_csv", ".json": "read_json"}  # pandas readers; Parquet needs pyarrow
PREVIEW_ROWS = 20


class DataPage:
    """Type SQL (one SELECT; writes are refused by the Database tool's guard) or upload a
    CSV or JSON file."""

    title = "Data"

    def __init__(self, lab: Lab) -> None:
        import pandas as pd
        import panel as pn

        self.lab = lab
        self.notice = Notice("data-notice")
        self.sql = pn.widgets.TextAreaInput(label="SQL (read-only)", placeholder=EXAMPLE,
                                            height=110, sizing_mode="stretch_width")
        self.run_button = pn.widgets.Button(label="Run SQL", color="primary")
        self.run_button.on_click(self._on_run)
        self.file_input = pn.widgets.FileInput(accept=",".join(READERS))
        self.file_input.param.watch(self._on_upload, "value")
        self.table_name = pn.widgets.TextInput(label="Table name (default: the file's name)",
                                               placeholder="sales")
        self.tables = pn.pane.Markdown("No tables yet: upload a CSV.", name="data-tables")
        self.schema = pn.widgets.Tabulator(pd.DataFrame(), disabled=True, show_index=False,
                                           visible=False)
        self.result = pn.widgets.Tabulator(pd.DataFrame(), disabled=True, show_index=False,
                                           pagination="local", page_size=20,
                                           sizing_mode="stretch_width")
        self.view = pn.Column(
            pn.pane.Markdown("### Data\nUpload a CSV or JSON file as a table, then query it "
                             "with SQL. Queries are read-only: a statement that writes is "
                             "refused."),
            pn.Row(self.file_input, self.table_name),
            self.tables, self.schema, self.sql, self.run_button, self.notice.alert, self.result,
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
        self.result.value = frame
        note = frame.attrs.get("note") or ""
        self.notice.ok(f"{len(frame)} row(s). {note}".strip())
        return True

    async def upload(self, filename: str, data: bytes, name: str | None = None) -> bool:
        """Read a CSV or JSON file (in a worker thread), register it as a table of the
        Database tool, and show its schema and first rows."""
        import pandas as pd

        reader = READERS.get(PurePath(filename).suffix.lower())
        if reader is None:
            self.notice.error(f"{filename}: upload a {' or '.join(READERS)} file.")
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
        self.refresh_tables()
        self.schema.param.update(value=schema, visible=True)
        self.result.value = frame.head(PREVIEW_ROWS)
        self.sql.value = f"SELECT * FROM {table} LIMIT {PREVIEW_ROWS}"
        self.notice.ok(f"Table {table}: {len(frame)} rows, columns {', '.join(frame.columns)}.")
        return True

    def refresh_tables(self) -> None:
        names = self.lab.tools.database.tables()
        self.tables.object = ("**Tables:** " + ", ".join(f"`{n}`" for n in names)) if names \
            else "No tables yet: upload a CSV."

    async def _on_run(self, event: Any = None) -> None:
        await self.run_sql()

    async def _on_upload(self, event: Any) -> None:
        if event.new:
            await self.upload(self.file_input.filename or "upload.csv", event.new)


def _table_name(filename: str) -> str:
    """A SQL-friendly table name from a file name: ``Sales 2024.csv`` → ``sales_2024``."""
    stem = re.sub(r"\W+", "_", PurePath(filename).stem.lower()).strip("_")
    return stem if stem and not stem[0].isdigit() else f"t_{stem or 'upload'}"
