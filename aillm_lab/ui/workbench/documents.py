"""The Documents page: ingest files into a collection, search it (mode and filters), and ask
the Research agent for an answer whose ``[n]`` markers link to the chunks they cite.

Each button sends its boxes' text with the click (``submit.submit_with_text`` for Ask, and
``submit.submit_fields`` for Ingest and Search, which carry several boxes), so under
``panel serve --num-threads 2`` a click never runs the previous query or question.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path, PurePath
from typing import Any

from aillm_lab.core.lab import Lab
from aillm_lab.ui.workbench.notices import Notice
from aillm_lab.ui.workbench.submit import submit_fields, submit_with_text

MODES = ["hybrid", "dense", "sparse"]
TYPES = ["markdown", "text", "html", "pdf", "notebook", "code"]  # rag.loaders.DocType
RESULT_COLUMNS = ["rank", "score", "source", "section", "text", "chunk_id"]
UPLOADS = "uploads"  # uploaded files are saved under <workspace>/uploads, then ingested
MARKER = re.compile(r"\[(\d+)\]")


class DocumentsPage:
    """``ingest(path)``, ``upload(files)``, ``search(query, mode=, filters=)`` and
    ``ask(question)`` await the Lab's ``aingest``, ``asearch`` and ``ResearchAgent.arun``."""

    title = "Documents"

    def __init__(self, lab: Lab) -> None:
        import pandas as pd
        import panel as pn

        self.lab = lab
        self.notice = Notice("documents-notice")
        self.collection = pn.widgets.TextInput(label="Collection", value="default", width=160)
        self.path = pn.widgets.TextInput(label="Folder or file in the workspace",
                                         placeholder="notes/", sizing_mode="stretch_width")
        self.tags = pn.widgets.TextInput(label="Tags for these files (comma-separated)",
                                         placeholder="paper, 2024", width=220)
        self.ingest_button = pn.widgets.Button(label="Ingest", color="primary")
        self.file_input = pn.widgets.FileInput(multiple=True, accept=".md,.txt,.pdf,.html")
        self.progress = pn.indicators.Progress(active=False, visible=False, width=200)
        self.embedded = (0, 0)  # chunks embedded, of how many (the running or last ingest)
        self.query = pn.widgets.TextInput(label="Search", placeholder="storage quota",
                                          sizing_mode="stretch_width")
        self.mode = pn.widgets.Select(label="Mode", options=MODES, value="hybrid", width=120)
        self.source_filter = pn.widgets.TextInput(label="Only sources (glob or folder)",
                                                  placeholder="*.md", width=200)
        self.type_filter = pn.widgets.MultiChoice(label="Only types", options=TYPES, width=220)
        self.tag_filter = pn.widgets.TextInput(label="With all tags", placeholder="paper",
                                               width=160)
        self.search_button = pn.widgets.Button(label="Search")
        self.results = pn.widgets.Tabulator(pd.DataFrame(columns=RESULT_COLUMNS), disabled=True,
                                            show_index=False, pagination="local", page_size=10,
                                            sizing_mode="stretch_width")
        self.question = pn.widgets.TextInput(label="Ask (Research agent, cited answer)",
                                             placeholder="What does error E4012 mean?",
                                             sizing_mode="stretch_width")
        self.ask_button = pn.widgets.Button(label="Ask", color="primary")
        self.answer = pn.pane.Markdown("", name="documents-answer", sizing_mode="stretch_width")
        self.ingest_request = submit_fields(
            self.ingest_button, {"path": self.path, "tags": self.tags, "collection":
                                 self.collection}, self._on_ingest, "documents-ingest-request")
        self.search_request = submit_fields(
            self.search_button, {"query": self.query, "mode": self.mode, "collection":
                                 self.collection, "source": self.source_filter,
                                 "types": self.type_filter, "tags": self.tag_filter},
            self._on_search, "documents-search-request")
        self.ask_request = submit_with_text(self.ask_button, self.question, self.ask,
                                            "documents-ask-request")
        self.query.param.watch(self._on_search_enter, "enter_pressed")
        self.question.param.watch(self._on_ask_enter, "enter_pressed")
        self.file_input.param.watch(self._on_upload, "value")
        self.view = pn.Column(
            pn.pane.Markdown("### Documents\nIngest files (unchanged ones cost nothing), "
                             "search them, or ask for an answer with numbered citations: "
                             "each `[n]` links to the chunk it cites."),
            pn.Row(self.collection, self.path, self.tags, self.ingest_button,
                   sizing_mode="stretch_width"),
            pn.Row(self.file_input, self.progress),
            pn.Row(self.query, self.mode, self.search_button, sizing_mode="stretch_width"),
            pn.Row(self.source_filter, self.type_filter, self.tag_filter),
            self.notice.alert, self.results,
            pn.Row(self.question, self.ask_button, sizing_mode="stretch_width"), self.answer,
            self.ingest_request, self.search_request, self.ask_request,
            name=self.title, sizing_mode="stretch_width")

    async def ingest(self, path: str | Path | list[Path] | None = None,
                     tags: list[str] | None = None, collection: str | None = None) -> bool:
        """Ingest a folder or file (default: the path typed); the progress bar is busy while
        files load, then shows the share of chunks embedded."""
        target = self.path.value.strip() if path is None else path
        if not target:
            self.notice.error("Name a folder or file to ingest first.")
            return False
        collection = (collection or self.collection.value).strip()
        self.progress.param.update(value=-1, active=True, visible=True)  # busy until embedding
        self.embedded = (0, 0)
        loop = asyncio.get_running_loop()

        def embedded(done: int, total: int) -> None:  # called on the Lab's runner thread
            loop.call_soon_threadsafe(self._show_progress, done, total)

        try:
            paths = target if isinstance(target, list) else [self._resolve(target)]
            report = await self.lab.aingest(paths, collection, progress=embedded,
                                            tags=tags if tags is not None else
                                            split_tags(self.tags.value))
        except Exception as exc:
            self.notice.failed(exc)
            return False
        finally:
            self.progress.param.update(value=-1, active=False, visible=False)
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

    async def search(self, query: str | None = None, *, mode: str | None = None,
                     filters: dict[str, Any] | None = None,
                     collection: str | None = None) -> bool:
        """Search the collection; ``mode`` and ``filters`` default to the page's widgets."""
        query = (self.query.value if query is None else query).strip()
        if not query:
            self.notice.error("Type what to search for first.")
            return False
        mode = mode or self.mode.value
        if filters is None:
            filters = search_filters(self.source_filter.value, self.type_filter.value,
                                     self.tag_filter.value)
        try:
            results = await self.lab.asearch(query, k=10, mode=mode, filters=filters or None,
                                             collection=collection or self.collection.value)
        except Exception as exc:
            self.notice.failed(exc)
            return False
        self.results.value = results.to_pandas()[RESULT_COLUMNS]
        narrowed = f", {describe(filters)}" if filters else ""
        self.notice.ok(f"{len(results)} passage(s) for {query!r} ({mode}{narrowed}).")
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
        self.notice.ok(f"Answered {question!r} in {len(run.steps)} step(s), "
                       f"${run.cost_usd:.4f}.")
        return True

    def _show_progress(self, done: int, total: int) -> None:
        """The share of chunks embedded, while the ingest runs (a late report is dropped)."""
        if self.progress.visible:
            self.embedded = (done, total)
            self.progress.param.update(value=min(100, round(100 * done / max(total, 1))),
                                       active=False)

    def _resolve(self, path: str | Path) -> Path:
        """A path in the workspace: a browser may not ingest (and so read) other files."""
        root = Path(self.lab.settings.workspace_path).resolve()
        resolved = (root / path).resolve()
        if not resolved.is_relative_to(root):
            raise PermissionError(f"{str(path)!r} is outside the workspace {root}; name a "
                                  "folder or file inside it, or upload the files")
        return resolved

    async def _on_ingest(self, sent: dict[str, Any]) -> None:
        await self.ingest(str(sent.get("path") or ""), split_tags(sent.get("tags")),
                          str(sent.get("collection") or ""))

    async def _on_search(self, sent: dict[str, Any]) -> None:
        await self.search(str(sent.get("query") or ""), mode=str(sent.get("mode") or ""),
                          filters=search_filters(sent.get("source"), sent.get("types"),
                                                 sent.get("tags")),
                          collection=str(sent.get("collection") or ""))

    async def _on_search_enter(self, event: Any = None) -> None:
        await self.search(self.query.value)  # Enter sends the text with it: one event

    async def _on_ask_enter(self, event: Any = None) -> None:
        await self.ask(self.question.value)

    async def _on_upload(self, event: Any) -> None:
        names = self.file_input.filename or []
        values = event.new or []
        if isinstance(values, bytes):
            names, values = [names], [values]
        if values:
            await self.upload(dict(zip(names, values, strict=False)))


def split_tags(text: Any) -> list[str]:
    """``"paper, 2024"`` → ``["paper", "2024"]``."""
    return [t.strip() for t in str(text or "").split(",") if t.strip()]


def search_filters(source: Any, types: Any, tags: Any) -> dict[str, Any]:
    """The filters the boxes name (empty ones left out), for ``lab.asearch(filters=...)``."""
    filters: dict[str, Any] = {}
    if str(source or "").strip():
        filters["source"] = str(source).strip()
    if types:
        filters["type"] = [types] if isinstance(types, str) else list(types)
    if tag_list := split_tags(tags):
        filters["tags"] = tag_list
    return filters


def describe(filters: dict[str, Any]) -> str:
    """``source *.md, type markdown, tags paper``: the filters a search used, for its notice."""
    return ", ".join(f"{key} {', '.join(value) if isinstance(value, list) else value}"
                     for key, value in filters.items())


def answer_markdown(answer: Any) -> str:
    """The answer with each ``[n]`` a link to its source (hover: the chunk's text), one line
    per cited source (``[n] source § section (chunk id) — text``), then the question."""
    by_label = {source.label: source for source in answer.sources}

    def link(match: re.Match[str]) -> str:
        source = by_label.get(int(match.group(1)))
        if source is None:
            return match.group(0)
        title = f"{PurePath(source.source).name}: {_excerpt(source.text, 150)}"
        return f'[[{source.label}]](#documents-source-{source.label} "{_quote(title)}")'

    lines = [f"**Answer:** {MARKER.sub(link, answer.text)}"]
    if answer.sources:
        lines.append("\n**Sources**")
        for source in answer.sources:
            section = f" § {source.section}" if source.section else ""
            chunk = f" (chunk {source.chunk_id})" if source.chunk_id is not None else ""
            lines.append(f'- <a id="documents-source-{source.label}"></a>**[{source.label}]** '
                         f"`{PurePath(source.source).name}`{section}{chunk} "
                         f"— {_excerpt(source.text, 200)}")
    if answer.unsupported:
        lines.append("\n⚠️ Markers with no source: "
                     + ", ".join(f"[{n}]" for n in answer.unsupported))
    if getattr(answer, "question", ""):
        lines.append(f"\n*Question: {answer.question}*")
    return "\n".join(lines)


def _excerpt(text: str, limit: int) -> str:
    return " ".join(text.split())[:limit]


def _quote(text: str) -> str:
    """Text safe inside a Markdown link title (``"…"``)."""
    return text.replace("\\", "\\\\").replace('"', "'")


def _save(folder: Path, files: dict[str, bytes]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in files.items():
        path = folder / PurePath(name).name  # never a path the browser chose
        path.write_bytes(data)
        paths.append(path)
    return paths
