"""The Documents page: ingest files into a collection, search it, and ask the Research agent
for an answer whose ``[n]`` markers are listed with the chunks they cite."""

from __future__ import annotations

import asyncio
from pathlib import Path, PurePath
from typing import Any

from aillm_lab.core.lab import Lab
from aillm_lab.ui.workbench.notices import Notice

MODES = ["hybrid", "dense", "sparse"]
RESULT_COLUMNS = ["rank", "score", "source", "section", "text"]
UPLOADS = "uploads"  # uploaded files are saved under <workspace>/uploads, then ingested


class DocumentsPage:
    """``ingest(path)``, ``upload(files)``, ``search(query)`` and ``ask(question)`` await the
    Lab's ``aingest``, ``asearch`` and ``ResearchAgent.arun``."""

    title = "Documents"

    def __init__(self, lab: Lab) -> None:
        import pandas as pd
        import panel as pn

        self.lab = lab
        self.notice = Notice("documents-notice")
        self.collection = pn.widgets.TextInput(label="Collection", value="default", width=160)
        self.path = pn.widgets.TextInput(label="Folder or file in the workspace",
                                         placeholder="notes/", sizing_mode="stretch_width")
        self.ingest_button = pn.widgets.Button(label="Ingest", color="primary")
        self.file_input = pn.widgets.FileInput(multiple=True, accept=".md,.txt,.pdf,.html")
        self.progress = pn.indicators.Progress(active=False, visible=False, width=200)
        self.query = pn.widgets.TextInput(label="Search", placeholder="storage quota",
                                          sizing_mode="stretch_width")
        self.mode = pn.widgets.Select(label="Mode", options=MODES, value="hybrid", width=120)
        self.search_button = pn.widgets.Button(label="Search")
        self.results = pn.widgets.Tabulator(pd.DataFrame(columns=RESULT_COLUMNS), disabled=True,
                                            show_index=False, pagination="local", page_size=10,
                                            sizing_mode="stretch_width")
        self.question = pn.widgets.TextInput(label="Ask (Research agent, cited answer)",
                                             placeholder="What does error E4012 mean?",
                                             sizing_mode="stretch_width")
        self.ask_button = pn.widgets.Button(label="Ask", color="primary")
        self.answer = pn.pane.Markdown("", name="documents-answer", sizing_mode="stretch_width")
        self.ingest_button.on_click(self._on_ingest)
        self.file_input.param.watch(self._on_upload, "value")
        self.search_button.on_click(self._on_search)
        self.ask_button.on_click(self._on_ask)
        self.view = pn.Column(
            pn.pane.Markdown("### Documents\nIngest files (unchanged ones cost nothing), "
                             "search them, or ask for an answer with numbered citations."),
            pn.Row(self.collection, self.path, self.ingest_button, sizing_mode="stretch_width"),
            pn.Row(self.file_input, self.progress),
            pn.Row(self.query, self.mode, self.search_button, sizing_mode="stretch_width"),
            self.notice.alert, self.results,
            pn.Row(self.question, self.ask_button, sizing_mode="stretch_width"), self.answer,
            name=self.title, sizing_mode="stretch_width")

    async def ingest(self, path: str | Path | list[Path] | None = None) -> bool:
        """Ingest a folder or file (default: the path typed), with a busy progress bar."""
        target = self.path.value.strip() if path is None else path
        if not target:
            self.notice.error("Name a folder or file to ingest first.")
            return False
        self.progress.param.update(active=True, visible=True)
        try:
            paths = target if isinstance(target, list) else [self._resolve(target)]
            report = await self.lab.aingest(paths, self.collection.value, progress=False)
        except Exception as exc:
            self.notice.failed(exc)
            return False
        finally:
            self.progress.param.update(active=False, visible=False)
        skipped = f" · {len(report.skipped)} skipped" if report.skipped else ""
        self.notice.ok(f"Ingested into {report.collection}: {report.docs_added} added, "
                       f"{report.docs_updated} updated, {report.docs_unchanged} unchanged, "
                       f"{report.chunks_added} chunks{skipped}.")
        return True

    async def upload(self, files: dict[str, bytes]) -> bool:
        """Save uploaded files under ``<workspace>/uploads`` (in a thread), then ingest them."""
        folder = Path(self.lab.settings.workspace_path) / UPLOADS
        try:
            paths = await asyncio.to_thread(_save, folder, files)
        except Exception as exc:
            self.notice.failed(exc)
            return False
        return await self.ingest(paths)

    async def search(self, query: str | None = None) -> bool:
        query = (self.query.value if query is None else query).strip()
        if not query:
            self.notice.error("Type what to search for first.")
            return False
        try:
            results = await self.lab.asearch(query, k=10, mode=self.mode.value,
                                             collection=self.collection.value)
        except Exception as exc:
            self.notice.failed(exc)
            return False
        self.results.value = results.to_pandas()[RESULT_COLUMNS]
        self.notice.ok(f"{len(results)} passage(s) for {query!r} ({self.mode.value}).")
        return True

    async def ask(self, question: str | None = None) -> bool:
        """Run the Research agent; show its answer and, under it, each cited source."""
        from aillm_lab import ResearchAgent

        question = (self.question.value if question is None else question).strip()
        if not question:
            self.notice.error("Type a question first.")
            return False
        try:
            run = await ResearchAgent(lab=self.lab).arun(question, [self.collection.value])
        except Exception as exc:
            self.notice.failed(exc)
            return False
        if run.status != "completed" or run.output is None:
            self.notice.error(f"The Research agent ended {run.status}: {run.error or ''}")
            return False
        self.answer.object = answer_markdown(run.output)
        self.notice.ok(f"Answered in {len(run.steps)} step(s), ${run.cost_usd:.4f}.")
        return True

    def _resolve(self, path: str | Path) -> Path:
        """A path in the workspace: a browser may not ingest (and so read) other files."""
        root = Path(self.lab.settings.workspace_path).resolve()
        resolved = (root / path).resolve()
        if not resolved.is_relative_to(root):
            raise PermissionError(f"{str(path)!r} is outside the workspace {root}; name a "
                                  "folder or file inside it, or upload the files")
        return resolved

    async def _on_ingest(self, event: Any = None) -> None:
        await self.ingest()

    async def _on_upload(self, event: Any) -> None:
        names = self.file_input.filename or []
        values = event.new or []
        if isinstance(values, bytes):
            names, values = [names], [values]
        if values:
            await self.upload(dict(zip(names, values, strict=False)))

    async def _on_search(self, event: Any = None) -> None:
        await self.search()

    async def _on_ask(self, event: Any = None) -> None:
        await self.ask()


def answer_markdown(answer: Any) -> str:
    """The answer, then one line per cited source: ``[n] source § section — text``."""
    lines = [f"**Answer:** {answer.text}"]
    if answer.sources:
        lines.append("\n**Sources**")
        for source in answer.sources:
            section = f" § {source.section}" if source.section else ""
            excerpt = " ".join(source.text.split())[:200]
            lines.append(f"- **[{source.label}]** `{PurePath(source.source).name}`{section} "
                         f"— {excerpt}")
    if answer.unsupported:
        lines.append("\n⚠️ Markers with no source: "
                     + ", ".join(f"[{n}]" for n in answer.unsupported))
    return "\n".join(lines)


def _save(folder: Path, files: dict[str, bytes]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in files.items():
        path = folder / PurePath(name).name  # never a path the browser chose
        path.write_bytes(data)
        paths.append(path)
    return paths
