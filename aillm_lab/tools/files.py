"""File tools: read, write, append, list, glob, search and diff inside one ``Workspace``.

Every call goes through ``Workspace.resolve`` / ``Workspace.open``, so path rules, deny
globs, size limits and the open-time symlink check live in one place (``paths.py``).
Results are plain text written for a model to read; paths in them are workspace-relative.

Regex searches use the ``regex`` package rather than ``re``: it matches with the GIL
released (``concurrent=True``), so a pattern that backtracks for minutes cannot freeze the
runner loop or the kernel, and it honours a ``timeout=``, so such a search ends with a
``SafetyViolation`` (rule ``files.regex_timeout``) instead of running on. Globs become
regexes too ('*a*a*a…!' backtracks), so ``glob_files`` matches the same way
(``files.glob_timeout``).
"""

from __future__ import annotations

import difflib
import itertools
import re
import time
from collections.abc import Callable, Iterator

import regex as rx_engine

from aillm_lab.errors import AillmError, SafetyViolation
from aillm_lab.tools.base import RiskLevel, Tool
from aillm_lab.tools.paths import Workspace, glob_to_regex

BINARY_SNIFF_BYTES = 8192
MAX_LIST_ENTRIES = 1000
MAX_GLOB_RESULTS = 1000
MAX_LINE_CHARS = 300  # search hits longer than this are cut
REGEX_TIMEOUT_S = 5.0  # matching time one search or glob may spend, over all its lines
_EOL = "\r\n"
_GLOB_MAGIC = re.compile(r"[*?\[]")


class FileToolError(AillmError, ValueError):
    """A file tool was called with arguments it cannot honour; the message says what to do."""


class _RegexTimeout(Exception):
    """The call's regex time ran out (private: the tool turns it into a refusal)."""


def file_tools(ws: Workspace) -> list[Tool]:
    """The built-in file tools, bound to ``ws``. ``read_file`` runs on the loop (inline):
    a read is capped at ``max_read_bytes`` (2 MB, a few ms at most), while the thread hop
    would cost more than a typical small read; tools that walk trees or write keep the
    worker thread."""
    ft = FileTools(ws)
    return [Tool(ft.read_file, inline=True), Tool(ft.write_file, risk=RiskLevel.WRITE),
            Tool(ft.append_file, risk=RiskLevel.WRITE), Tool(ft.list_dir),
            Tool(ft.glob_files), Tool(ft.search_text), Tool(ft.diff_preview)]


class FileTools:
    """The tool functions; each method's docstring is what the model reads."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws

    def read_file(self, path: str, start_line: int | None = None,
                  end_line: int | None = None, numbered: bool = False) -> str:
        """Read a UTF-8 text file in the workspace, whole or a range of lines.

        Args:
            path: file path relative to the workspace root, e.g. 'src/app.py'
            start_line: first line to return (1-based); default the first line
            end_line: last line to return (inclusive); default the last line
            numbered: prefix each line with its line number
        """
        _check_range(start_line, end_line)
        with self.ws.open(path, "rb") as fh:
            _refuse_binary(fh.peek(BINARY_SNIFF_BYTES)[:BINARY_SNIFF_BYTES], self.ws, path)
            if start_line is None and end_line is None:
                lines = _decode(fh.read(), self.ws, path).splitlines(keepends=True)
                first = 1
            else:
                first = start_line or 1
                lines = _line_range(fh, first, end_line, self.ws, path)
        if not numbered:
            return "".join(lines)
        return "".join(f"{n:>6}\t{line.rstrip(_EOL)}\n" for n, line in
                       enumerate(lines, start=first))

    def write_file(self, path: str, content: str) -> str:
        """Create or replace a text file (missing folders are created).

        Args:
            path: file path relative to the workspace root
            content: the complete new content of the file
        """
        existed = self._exists(path)
        target = self.ws.write_atomic(path, content, parents=True)
        size = len(content.encode("utf-8"))
        verb = "replaced" if existed else "created"
        return f"{verb} {self.ws.relative(target)} ({size} bytes)"

    def append_file(self, path: str, content: str) -> str:
        """Append text to the end of a file, creating it (and its folders) if missing.

        Args:
            path: file path relative to the workspace root
            content: text to add at the end; include a trailing newline if you want one
        """
        data = content.encode("utf-8")
        self.ws.check_write_size(len(data), self.ws.display(path))
        with self.ws.open(path, "ab", parents=True) as fh:
            fh.write(data)
        return f"appended {len(data)} bytes to {self.ws.display(path)}"

    def list_dir(self, path: str = ".") -> str:
        """List a folder: sub-folders end with '/', files show their size.

        Args:
            path: folder relative to the workspace root; '.' is the root
        """
        entries = self.ws.entries(path)
        shown = self.ws.display(path)
        if not entries:
            return f"{shown}/ is empty"
        lines = [_format_entry(e.name, e.kind, e.size) for e in entries[:MAX_LIST_ENTRIES]]
        if len(entries) > MAX_LIST_ENTRIES:
            lines.append(f"[{len(entries) - MAX_LIST_ENTRIES} more entries not shown; "
                         "use glob_files to narrow down]")
        return "\n".join(lines)

    def glob_files(self, pattern: str) -> str:
        """Find files by glob pattern: '*' and '?' match within a folder, '**/' spans folders.

        Args:
            pattern: workspace-relative glob, e.g. '**/*.py' or 'docs/*.md'
        """
        pattern = self.ws.check_pattern(pattern)
        try:
            found = list(itertools.islice(_glob(self.ws, pattern), MAX_GLOB_RESULTS + 1))
        except _RegexTimeout:
            raise SafetyViolation(
                "files.glob_timeout",
                f"matching the glob {pattern!r} ran past {REGEX_TIMEOUT_S:g} s and was "
                "stopped; use fewer '*' in one name (e.g. '*report*.csv'), or a folder "
                "prefix such as 'docs/**/*.md'") from None
        if not found:
            return f"no files match {pattern!r}"
        lines = sorted(found[:MAX_GLOB_RESULTS])
        if len(found) > MAX_GLOB_RESULTS:
            lines.append(f"[stopped at {MAX_GLOB_RESULTS} files; use a narrower pattern]")
        return "\n".join(lines)

    def search_text(self, pattern: str, path: str = ".", regex: bool = False,
                    max_matches: int = 200, ignore_case: bool = False) -> str:
        """Search text files for a string (or regex); returns 'file:line:text' lines.

        Args:
            pattern: text to look for (a Python regular expression if regex is true)
            path: folder or file to search, relative to the workspace root
            regex: treat pattern as a regular expression
            max_matches: stop after this many matching lines (1 to 10000)
            ignore_case: match regardless of letter case
        """
        if not pattern:
            raise FileToolError("pattern is empty; pass the text to search for")
        if not 1 <= max_matches <= 10_000:
            raise FileToolError(f"max_matches={max_matches} is out of range; use 1 to 10000")
        matches = _matcher(pattern, regex, ignore_case)
        hits: list[str] = []
        skipped = 0
        try:
            for rel in self.ws.walk(path):
                file_hits = _search_file(self.ws, rel, matches, max_matches - len(hits))
                if file_hits is None:
                    skipped += 1
                    continue
                hits.extend(file_hits)
                if len(hits) >= max_matches:
                    hits.append(f"[stopped after {max_matches} matches; narrow path or "
                                "pattern]")
                    break
        except _RegexTimeout:
            raise SafetyViolation(
                "files.regex_timeout",
                f"the regular expression {pattern!r} ran past {REGEX_TIMEOUT_S:g} s and was "
                "stopped; simplify it (nested or overlapping repeats such as (a+)+ or (a|a)* "
                "backtrack without end), search a narrower path, or pass regex=false to "
                "search for plain text") from None
        note = f" ({skipped} binary, oversized or refused files skipped)" if skipped else ""
        if not hits:
            return f"no matches for {pattern!r} in {self.ws.display(path)}{note}"
        return "\n".join(hits) + (f"\n[{note.strip(' ()')}]" if note else "")

    def diff_preview(self, path: str, new_content: str) -> str:
        """Show the unified diff that writing new_content to path would make; writes nothing.

        Args:
            path: file path relative to the workspace root (may not exist yet)
            new_content: the complete content you are considering writing
        """
        target = self.ws.resolve(path, write=True)
        rel = self.ws.relative(target)
        old = self.read_file(rel) if self._exists(rel) else None
        before = "/dev/null" if old is None else f"a/{rel}"
        diff = difflib.unified_diff((old or "").splitlines(), new_content.splitlines(),
                                    fromfile=before, tofile=f"b/{rel}", lineterm="")
        text = "\n".join(diff)
        return text or f"no changes: {rel} already has exactly this content"

    def _exists(self, path: str) -> bool:
        return self.ws.resolve(path).is_file()


# -- helpers ---------------------------------------------------------------------------------
def _check_range(start: int | None, end: int | None) -> None:
    if start is not None and start < 1:
        raise FileToolError(f"start_line={start} is invalid; lines are numbered from 1")
    if end is not None and end < 1:
        raise FileToolError(f"end_line={end} is invalid; lines are numbered from 1")
    if start is not None and end is not None and end < start:
        raise FileToolError(f"end_line={end} is before start_line={start}; swap them")


def _line_range(fh: Iterator[bytes], first: int, last: int | None, ws: Workspace,
                path: str) -> list[str]:
    lines: list[str] = []
    count = 0
    for count, raw in enumerate(fh, start=1):  # noqa: B007 (count is used after the loop)
        if last is not None and count > last:
            break
        if count >= first:
            lines.append(_decode(raw, ws, path))
    if first > count:
        raise FileToolError(f"start_line={first} is past the end of {ws.display(path)!r}, "
                            f"which has {count} lines")
    return lines


def _refuse_binary(head: bytes, ws: Workspace, path: str) -> None:
    if b"\x00" in head:
        raise FileToolError(f"{ws.display(path)!r} looks like a binary file (it contains NUL "
                            "bytes); read_file reads UTF-8 text only")


def _decode(data: bytes, ws: Workspace, path: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileToolError(f"{ws.display(path)!r} is not UTF-8 text (bad byte at offset "
                            f"{exc.start}); it looks binary, and read_file reads text only"
                            ) from None


def _format_entry(name: str, kind: str, size: int | None) -> str:
    if kind == "dir":
        return f"{name}/"
    if kind == "symlink":
        return f"{name}@ (symbolic link)"
    if kind == "other":
        return f"{name} (special file)"
    return f"{name} ({size} bytes)"


def _glob(ws: Workspace, pattern: str) -> Iterator[str]:
    """Walk only the pattern's literal prefix, so 'src/**/*.py' never scans all of it."""
    parts = [p for p in pattern.split("/") if p not in ("", ".")]
    static: list[str] = []
    for part in parts:
        if _GLOB_MAGIC.search(part):
            break
        static.append(part)
    if len(static) == len(parts):  # no wildcard: a plain path, checked like any other
        target = ws.resolve(pattern)
        if target.is_file():
            yield ws.relative(target)
        return
    base = "/".join(static) or "."
    if not ws.resolve(base).is_dir():
        return
    try:
        rx = rx_engine.compile(glob_to_regex("/".join(parts)))
    except rx_engine.error as exc:
        raise FileToolError(f"glob {pattern!r} has a bad [...] class ({exc}); "
                            "fix it, e.g. '[a-z]*.txt'") from None
    include_git = any(p == ".git" for p in static)
    budget = _MatchBudget()  # '*a*a*a...' can backtrack like a regex
    for rel in ws.walk(base, include_git=include_git):
        if budget.matches(rx.match, rel) and _allowed(ws, rel):
            yield rel


def _allowed(ws: Workspace, rel: str) -> bool:
    try:
        return ws.resolve(rel).is_file()
    except SafetyViolation:  # e.g. a symlink out of the workspace: not listed at all
        return False


def _matcher(pattern: str, regex: bool, ignore_case: bool) -> Callable[[str], bool]:
    if regex:
        return _regex_matcher(pattern, ignore_case)
    if ignore_case:
        folded = pattern.casefold()
        return lambda line: folded in line.casefold()
    return lambda line: pattern in line


def _regex_matcher(pattern: str, ignore_case: bool) -> Callable[[str], bool]:
    """A line test that releases the GIL while it matches and shares one deadline."""
    try:
        rx = rx_engine.compile(pattern, rx_engine.IGNORECASE if ignore_case else 0)
    except rx_engine.error as exc:
        raise FileToolError(f"pattern {pattern!r} is not a valid regular expression "
                            f"({exc}); fix it, or pass regex=false to search literally"
                            ) from None
    budget = _MatchBudget()
    return lambda line: budget.matches(rx.search, line)


class _MatchBudget:
    """``REGEX_TIMEOUT_S`` of matching shared by a call's lines (reading files is not
    counted); each match runs with the GIL released."""

    def __init__(self) -> None:
        self.left = REGEX_TIMEOUT_S

    def matches(self, method: Callable[..., object], text: str) -> bool:
        if self.left <= 0:
            raise _RegexTimeout
        start = time.monotonic()
        try:
            return method(text, concurrent=True, timeout=self.left) is not None
        except TimeoutError:
            raise _RegexTimeout from None
        finally:
            self.left -= time.monotonic() - start


def _search_file(ws: Workspace, rel: str, matches: Callable[[str], bool],
                 budget: int) -> list[str] | None:
    """Matching lines of one file, or None if it was skipped (binary, too big, refused)."""
    hits: list[str] = []
    try:
        with ws.open(rel, "rb") as fh:
            if b"\x00" in fh.peek(BINARY_SNIFF_BYTES)[:BINARY_SNIFF_BYTES]:
                return None
            for n, raw in enumerate(fh, start=1):
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if matches(line[:10 * MAX_LINE_CHARS]):
                    shown = line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS] + "…"
                    hits.append(f"{rel}:{n}:{shown}")
                    if len(hits) >= budget:
                        break
    except (SafetyViolation, OSError):
        return None
    return hits


__all__ = ["FileToolError", "FileTools", "file_tools"]
