"""Loaders: files (by path, glob or folder) become ``Document``s with a content hash.

Why a hash per document: re-ingesting a folder must cost nothing when nothing changed, so
the index compares hashes before it chunks or embeds anything. Unsupported or unreadable
files are not errors: they are reported in ``LoadResult.skipped`` and logged, so one odd
file never stops a folder ingest. A path that does not exist at all is an error.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import re
from collections.abc import Iterable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from aillm_lab.errors import AillmError

log = logging.getLogger(__name__)

DocType = Literal["text", "markdown", "html", "pdf", "notebook", "code"]
MAX_BYTES = 50_000_000

TEXT_SUFFIXES = {".txt", ".text", ".rst", ".log", ".csv", ".tsv", ""}
MARKDOWN_SUFFIXES = {".md", ".markdown", ".mdx"}
HTML_SUFFIXES = {".html", ".htm", ".xhtml"}
CODE_LANGUAGES = {
    ".py": "python", ".pyi": "python", ".js": "javascript", ".mjs": "javascript",
    ".ts": "typescript", ".tsx": "typescript", ".jsx": "javascript", ".java": "java",
    ".kt": "kotlin", ".scala": "scala", ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp",
    ".hpp": "cpp", ".cs": "csharp", ".go": "go", ".rs": "rust", ".rb": "ruby", ".php": "php",
    ".swift": "swift", ".sh": "bash", ".bash": "bash", ".zsh": "bash", ".sql": "sql",
    ".r": "r", ".jl": "julia", ".lua": "lua", ".pl": "perl", ".toml": "toml",
    ".yaml": "yaml", ".yml": "yaml", ".json": "json", ".ini": "ini", ".cfg": "ini",
    ".css": "css", ".xml": "xml",
}
SKIP_DIRS = {".git", ".hg", ".svn", "__pycache__", ".venv", "venv", "node_modules",
             ".ipynb_checkpoints", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".tox"}


class LoaderError(AillmError, FileNotFoundError):
    """A path given to ``load`` matched no file; the message names it."""


class Document(BaseModel):
    """One loaded file: its text, type and metadata; ``content_hash`` is sha256 of the text."""

    source: str
    text: str
    type: DocType
    metadata: dict[str, Any] = Field(default_factory=dict)
    content_hash: str = ""
    mtime: float | None = None

    def model_post_init(self, context: Any) -> None:
        if not self.content_hash:
            self.content_hash = hashlib.sha256(self.text.encode("utf-8", "replace")).hexdigest()


class Skipped(BaseModel):
    """A file that was not loaded, and why (unsupported type, binary, unreadable …)."""

    source: str
    reason: str


class LoadResult(BaseModel):
    documents: list[Document] = Field(default_factory=list)
    skipped: list[Skipped] = Field(default_factory=list)


def load(paths: str | Path | Iterable[str | Path], *, max_bytes: int = MAX_BYTES) -> LoadResult:
    """Load every supported file under ``paths`` (files, folders, or glob patterns)."""
    result = LoadResult()
    for path in iter_files(paths):
        try:
            doc = load_file(path, max_bytes=max_bytes)
        except UnsupportedFile as exc:
            log.warning("skipped %s: %s", path, exc)
            result.skipped.append(Skipped(source=str(path), reason=str(exc)))
            continue
        result.documents.append(doc)
    return result


def iter_files(paths: str | Path | Iterable[str | Path]) -> Iterator[Path]:
    """Resolved files for each path, folder (recursive, minus VCS/venv dirs) or glob."""
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    seen: set[Path] = set()
    for item in items:
        for path in _expand(item):
            if path not in seen:
                seen.add(path)
                yield path


def _expand(item: str | Path) -> list[Path]:
    path = Path(item).expanduser()
    if path.is_file():
        return [path.resolve()]
    if path.is_dir():
        return sorted(p.resolve() for p in _walk(path))
    if glob.has_magic(str(path)):
        found = sorted(Path(p).resolve() for p in glob.glob(str(path), recursive=True)
                       if Path(p).is_file())
        if found:
            return found
        raise LoaderError(f"paths={str(item)!r}: the pattern matched no file; check the "
                          "pattern (use '**' to search subfolders).")
    raise LoaderError(f"paths={str(item)!r}: no such file or folder; pass an existing "
                      "file, folder or glob pattern.")


def _walk(folder: Path) -> Iterator[Path]:
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            if child.name not in SKIP_DIRS and not child.name.startswith("."):
                yield from _walk(child)
        elif child.is_file() and not child.name.startswith("."):
            yield child


class UnsupportedFile(AillmError, ValueError):
    """A file the loaders cannot read as text; ``load`` reports and skips it."""


def doc_type(path: Path) -> DocType | None:
    """The document type from the file suffix, or None when unsupported."""
    suffix = path.suffix.lower()
    if suffix in MARKDOWN_SUFFIXES:
        return "markdown"
    if suffix in HTML_SUFFIXES:
        return "html"
    if suffix == ".pdf":
        return "pdf"
    if suffix == ".ipynb":
        return "notebook"
    if suffix in CODE_LANGUAGES:
        return "code"
    if suffix in TEXT_SUFFIXES:
        return "text"
    return None


def load_file(path: str | Path, *, max_bytes: int = MAX_BYTES) -> Document:
    """One file as a ``Document``; raises ``UnsupportedFile`` if it cannot be read as text."""
    path = Path(path).resolve()
    kind = doc_type(path)
    if kind is None:
        raise UnsupportedFile(f"unsupported file type {path.suffix or '(none)'!r}; supported: "
                              "text, Markdown, HTML, PDF, notebooks and source code")
    try:
        stat = path.stat()
        if stat.st_size > max_bytes:
            raise UnsupportedFile(f"{stat.st_size} bytes is over max_bytes={max_bytes}")
        data = path.read_bytes()
    except OSError as exc:
        raise UnsupportedFile(f"unreadable: {exc.strerror or exc}") from None
    text, meta = _READERS[kind](data, path)
    meta.setdefault("filename", path.name)
    return Document(source=str(path), text=text, type=kind, metadata=meta, mtime=stat.st_mtime)


def _decode(data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise UnsupportedFile("binary content (NUL bytes)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _read_text(data: bytes, path: Path) -> tuple[str, dict[str, Any]]:
    return _decode(data), {}


def _read_markdown(data: bytes, path: Path) -> tuple[str, dict[str, Any]]:
    text = _decode(data)
    title = re.search(r"^#\s+(.+)$", text, re.MULTILINE)
    return text, ({"title": title.group(1).strip()} if title else {})


def _read_code(data: bytes, path: Path) -> tuple[str, dict[str, Any]]:
    return _decode(data), {"language": CODE_LANGUAGES.get(path.suffix.lower(), "text")}


def _read_html(data: bytes, path: Path) -> tuple[str, dict[str, Any]]:
    html = _decode(data)
    title = re.search(r"<title[^>]*>(.*?)</title>", html, re.IGNORECASE | re.DOTALL)
    meta = {"title": " ".join(title.group(1).split())} if title else {}
    try:
        import trafilatura

        text = trafilatura.extract(html, output_format="markdown", include_tables=True,
                                   include_comments=False, favor_recall=True)
    except ImportError:  # the [rag] extra is optional; plain tag stripping still works
        text = None
    return (text or _strip_tags(html)).strip(), meta


def _read_pdf(data: bytes, path: Path) -> tuple[str, dict[str, Any]]:
    import io

    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise UnsupportedFile(f"unreadable PDF: {exc}") from None
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text:
        raise UnsupportedFile("the PDF has no extractable text (scanned images need OCR)")
    return text, {"pages": len(pages)}


def _read_notebook(data: bytes, path: Path) -> tuple[str, dict[str, Any]]:
    try:
        nb = json.loads(_decode(data))
        cells = nb["cells"]
    except (ValueError, KeyError, TypeError) as exc:
        raise UnsupportedFile(f"not a Jupyter notebook: {exc}") from None
    language = (nb.get("metadata", {}).get("language_info", {}) or {}).get("name", "python")
    parts = []
    for cell in cells:
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        if not source.strip():
            continue
        if cell.get("cell_type") == "code":
            parts.append(f"```{language}\n{source.rstrip()}\n```")
        elif cell.get("cell_type") == "markdown":
            parts.append(source.strip())
    return "\n\n".join(parts), {"cells": len(cells), "language": language}


_READERS = {"text": _read_text, "markdown": _read_markdown, "html": _read_html,
            "pdf": _read_pdf, "notebook": _read_notebook, "code": _read_code}


class _TextOnly(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        self._skip += tag in ("script", "style")
        if tag in ("p", "br", "div", "li", "h1", "h2", "h3", "h4", "tr"):
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in ("script", "style") and self._skip > 0

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def _strip_tags(html: str) -> str:
    parser = _TextOnly()
    parser.feed(html)
    return re.sub(r"\n\s*\n+", "\n\n", "".join(parser.parts))
