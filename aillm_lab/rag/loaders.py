"""Loaders: files (by path, glob or folder) become ``Document``s with a content hash.

Why a hash per document: re-ingesting a folder must cost nothing when nothing changed, so
the index compares hashes before it chunks or embeds anything.

Why every odd entry is reported: one odd file must never stop a folder ingest, and must
never vanish silently either. Each entry that is not loaded (unsupported type, binary,
too large, unreadable, FIFO, socket, device, symlink …) is in ``LoadResult.skipped`` with
its reason; a file loaded imperfectly (invalid UTF-8) is in ``LoadResult.warnings``. A
path that does not exist at all is an error.

Symlinks inside a folder or glob are never followed, whether they point in or out: a link
out could expose any file on the machine, and a link in would ingest a file twice. Each
link is reported as skipped, saying where it points. A file path given explicitly is the
caller's choice and is read through its link. Hidden entries (``.name``) and tool folders
(``SKIP_DIRS``) are pruned without a report, by design.

Files are checked with ``lstat`` before they are opened, so a FIFO or device is never
opened (opening one can block forever or have side effects), and the open itself uses
``O_NONBLOCK | O_NOFOLLOW`` in case the entry changed in between.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import re
import stat
from collections.abc import Iterable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from aillm_lab.errors import AillmError

log = logging.getLogger(__name__)

DocType = Literal["text", "markdown", "html", "pdf", "notebook", "code"]
MAX_BYTES = 50_000_000
MAX_CONTROL_RATIO = 0.10  # share of control bytes (not tab, newlines, FF, ESC) = binary
MAX_INVALID_RATIO = 0.25  # share of undecodable UTF-8 = not text at all

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
_CONTROL_BYTES = bytes(b for b in range(32) if b not in (9, 10, 12, 13, 27)) + b"\x7f"


class LoaderError(AillmError, FileNotFoundError):
    """A path given to ``load`` matched no file; the message names it."""


class UnsupportedFile(AillmError, ValueError):
    """A file the loaders cannot read as text; ``load`` reports and skips it."""


class Document(BaseModel):
    """One loaded file: its text, type and metadata; ``content_hash`` is sha256 of the text.

    ``warnings`` says what was imperfect about reading it (invalid UTF-8 replaced …).
    """

    source: str
    text: str
    type: DocType
    metadata: dict[str, Any] = Field(default_factory=dict)
    content_hash: str = ""
    mtime: float | None = None
    warnings: list[str] = Field(default_factory=list)

    def model_post_init(self, context: Any) -> None:
        if not self.content_hash:
            self.content_hash = hashlib.sha256(self.text.encode("utf-8", "replace")).hexdigest()


class Skipped(BaseModel):
    """An entry that was not loaded, and why (unsupported type, binary, symlink, FIFO …)."""

    source: str
    reason: str


class LoadWarning(BaseModel):
    """A file that was loaded, but not cleanly; ``reason`` says what was lost and the fix."""

    source: str
    reason: str


class LoadResult(BaseModel):
    documents: list[Document] = Field(default_factory=list)
    skipped: list[Skipped] = Field(default_factory=list)
    warnings: list[LoadWarning] = Field(default_factory=list)


def load(paths: str | Path | Iterable[str | Path], *, max_bytes: int = MAX_BYTES) -> LoadResult:
    """Load every supported file under ``paths`` (files, folders, or glob patterns)."""
    files, skipped = scan(paths)
    result = LoadResult(skipped=skipped)
    for path in files:
        try:
            doc = _load_real(path, max_bytes)
        except UnsupportedFile as exc:
            result.skipped.append(Skipped(source=str(path), reason=str(exc)))
            continue
        result.documents.append(doc)
        result.warnings += [LoadWarning(source=doc.source, reason=w) for w in doc.warnings]
    for item in result.skipped:
        log.warning("skipped %s: %s", item.source, item.reason)
    for warning in result.warnings:
        log.warning("%s: %s", warning.source, warning.reason)
    return result


def iter_files(paths: str | Path | Iterable[str | Path]) -> Iterator[Path]:
    """Resolved regular files for each path, folder (recursive) or glob; see ``scan``."""
    yield from scan(paths)[0]


def scan(paths: str | Path | Iterable[str | Path]) -> tuple[list[Path], list[Skipped]]:
    """The regular files under ``paths`` (each once, resolved) and every entry left out.

    Folders are walked without following links (minus hidden and ``SKIP_DIRS`` entries);
    glob matches get the same checks, so a link never leads a pattern out of its folder.
    """
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    files: dict[Path, None] = {}  # ordered set: a path listed twice is loaded once
    skipped: dict[str, Skipped] = {}
    for item in items:
        found, left_out = _expand(item)
        files.update(dict.fromkeys(found))
        skipped.update((s.source, s) for s in left_out if s.source not in skipped)
    return list(files), list(skipped.values())


def _expand(item: str | Path) -> tuple[list[Path], list[Skipped]]:
    path = Path(item).expanduser()
    if not os.path.lexists(path) and glob.has_magic(str(path)):
        return _expand_glob(path, item)
    try:
        mode = path.stat().st_mode  # named by the caller: read through a link, if it is one
    except FileNotFoundError:
        if path.is_symlink():
            return [], [Skipped(source=str(path), reason=_dangling(path))]
        raise LoaderError(f"paths={str(item)!r}: no such file or folder; pass an existing "
                          "file, folder or glob pattern.") from None
    except OSError as exc:
        return [], [Skipped(source=str(path), reason=f"unreadable: {exc.strerror or exc}")]
    if stat.S_ISDIR(mode):
        root = path.resolve()
        files: list[Path] = []
        skipped: list[Skipped] = []
        _walk(root, root, files, skipped)
        return sorted(files), skipped
    if stat.S_ISREG(mode):
        return [path.resolve()], []
    return [], [Skipped(source=str(path), reason=_not_regular(mode))]


def _expand_glob(pattern: Path, item: str | Path) -> tuple[list[Path], list[Skipped]]:
    root = _glob_root(pattern)
    files: list[Path] = []
    skipped: list[Skipped] = []
    for match in sorted(glob.glob(str(pattern), recursive=True)):
        if os.path.islink(match) or not os.path.isdir(match):
            _classify(Path(match), root, files, skipped)
    if not files and not skipped:
        raise LoaderError(f"paths={str(item)!r}: the pattern matched no file; check the "
                          "pattern (use '**' to search subfolders).")
    return sorted(files), skipped


def _walk(folder: Path, root: Path, files: list[Path], skipped: list[Skipped]) -> None:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        skipped.append(Skipped(source=str(folder),
                               reason=f"unreadable folder: {exc.strerror or exc}"))
        return
    for entry in entries:
        if entry.name.startswith(".") or entry.name in SKIP_DIRS and _is_dir(entry):
            continue
        if _is_dir(entry):
            _walk(Path(entry.path), root, files, skipped)
        elif _is_file(entry):  # no link on the way from the real root: already resolved
            files.append(Path(entry.path))
        else:
            _classify(Path(entry.path), root, files, skipped)


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _is_file(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file(follow_symlinks=False)
    except OSError:
        return False


def _classify(path: Path, root: Path, files: list[Path], skipped: list[Skipped]) -> None:
    """Add ``path`` to ``files`` if it is a regular file inside ``root``, else say why not."""
    try:
        mode = path.lstat().st_mode
    except OSError as exc:
        skipped.append(Skipped(source=str(path), reason=f"unreadable: {exc.strerror or exc}"))
        return
    if stat.S_ISLNK(mode):
        skipped.append(Skipped(source=str(path), reason=_link_reason(path, root)))
    elif not stat.S_ISREG(mode):
        skipped.append(Skipped(source=str(path), reason=_not_regular(mode)))
    elif not (real := path.resolve()).is_relative_to(root):
        skipped.append(Skipped(source=str(path), reason=(
            f"reached through a linked folder, outside {root}; links are never followed "
            "out of the ingested folder")))
    else:
        files.append(real)


def _link_reason(path: Path, root: Path) -> str:
    target = Path(os.path.realpath(path))
    if not target.exists():
        return _dangling(path)
    if not target.is_relative_to(root):
        return (f"symlink to {target}, outside the ingested folder {root}; links are never "
                "followed out of it. Ingest the target by its own path if you want it")
    return (f"symlink to {target}, inside the folder; links are not followed, so each file "
            "is ingested once, under its real path")


def _dangling(path: Path) -> str:
    return (f"dangling symlink: its target {os.readlink(path)!r} does not exist (or the "
            "links loop); fix or delete the link")


def _not_regular(mode: int) -> str:
    kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else
            "a socket" if stat.S_ISSOCK(mode) else
            "a character device" if stat.S_ISCHR(mode) else
            "a block device" if stat.S_ISBLK(mode) else "an unknown kind of entry")
    return f"{kind}, not a regular file; only regular files are read"


def _glob_root(pattern: Path) -> Path:
    """The folder a glob searches: its longest leading part without wildcards."""
    parts: list[str] = []
    for part in pattern.parts:
        if glob.has_magic(part):
            break
        parts.append(part)
    return Path(*parts).resolve() if parts else Path.cwd().resolve()


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
    return _load_real(Path(path).resolve(), max_bytes)


def _load_real(path: Path, max_bytes: int) -> Document:
    """``load_file`` for a path already resolved (``scan`` gives those)."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise UnsupportedFile(f"unreadable: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise UnsupportedFile(_not_regular(mode))
    kind = doc_type(path)
    if kind is None:
        raise UnsupportedFile(f"unsupported file type {path.suffix or '(none)'!r}; supported: "
                              "text, Markdown, HTML, PDF, notebooks and source code")
    data, mtime = _read_regular(path, max_bytes)
    warnings: list[str] = []
    if kind == "pdf":
        text, meta = _read_pdf(data)
    else:
        decoded, warning = _decode(data)
        warnings += [warning] if warning else []
        text, meta = _READERS[kind](decoded, path)
    meta.setdefault("filename", path.name)
    return Document(source=str(path), text=text, type=kind, metadata=meta, mtime=mtime,
                    warnings=warnings)


def _read_regular(path: Path, max_bytes: int) -> tuple[bytes, float]:
    """The bytes of a regular file, opened so that a FIFO or a swapped-in link cannot block."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise UnsupportedFile(f"unreadable: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # replaced between the check and the open
            raise UnsupportedFile(_not_regular(info.st_mode))
        if info.st_size > max_bytes:
            raise UnsupportedFile(f"{info.st_size} bytes is over max_bytes={max_bytes}")
        try:
            data = file.read(max_bytes + 1)
        except OSError as exc:
            raise UnsupportedFile(f"unreadable: {exc.strerror or exc}") from None
    if len(data) > max_bytes:  # it grew while we read it
        raise UnsupportedFile(f"more than max_bytes={max_bytes} bytes")
    return data, info.st_mtime


def _decode(data: bytes) -> tuple[str, str | None]:
    """UTF-8 text (BOM dropped, newlines unified) and a warning if bytes had to be replaced.

    The whole file is checked, not a prefix, so binary data behind a text header is refused.
    Invalid UTF-8 is replaced with U+FFFD and reported: guessing latin-1 would index
    mojibake silently.
    """
    if (nul := data.find(b"\x00")) >= 0:
        raise UnsupportedFile(f"binary content (NUL byte at offset {nul})")
    controls = len(data) - len(data.translate(None, _CONTROL_BYTES))
    if controls > MAX_CONTROL_RATIO * len(data):
        raise UnsupportedFile(f"binary content ({controls} of {len(data)} bytes are control "
                              "characters)")
    warning = None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        text = data.decode("utf-8-sig", errors="replace")
        bad = text.count("\ufffd")
        if bad > MAX_INVALID_RATIO * len(text):
            raise UnsupportedFile(f"not UTF-8 text ({bad} of {len(text)} characters are "
                                  "invalid); convert it to UTF-8 to ingest it") from None
        line = data.count(b"\n", 0, exc.start) + 1
        warning = (f"invalid UTF-8: {bad} character(s) replaced with U+FFFD, the first on "
                   f"line {line}; re-save the file as UTF-8 to keep them")
    return text.replace("\r\n", "\n").replace("\r", "\n"), warning


def _read_text(text: str, path: Path) -> tuple[str, dict[str, Any]]:
    return text, {}


def _read_markdown(text: str, path: Path) -> tuple[str, dict[str, Any]]:
    title = re.search(r"^#\s+(.+)$", text, re.MULTILINE)
    return text, ({"title": title.group(1).strip()} if title else {})


def _read_code(text: str, path: Path) -> tuple[str, dict[str, Any]]:
    return text, {"language": CODE_LANGUAGES.get(path.suffix.lower(), "text")}


def _read_html(html: str, path: Path) -> tuple[str, dict[str, Any]]:
    title = re.search(r"<title[^>]*>(.*?)</title>", html, re.IGNORECASE | re.DOTALL)
    meta = {"title": " ".join(title.group(1).split())} if title else {}
    try:
        import trafilatura

        text = trafilatura.extract(html, output_format="markdown", include_tables=True,
                                   include_comments=False, favor_recall=True)
    except ImportError:  # the [rag] extra is optional; plain tag stripping still works
        text = None
    return (text or _strip_tags(html)).strip(), meta


def _read_pdf(data: bytes) -> tuple[str, dict[str, Any]]:
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


def _read_notebook(text: str, path: Path) -> tuple[str, dict[str, Any]]:
    try:
        nb = json.loads(text)
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
            "notebook": _read_notebook, "code": _read_code}


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
