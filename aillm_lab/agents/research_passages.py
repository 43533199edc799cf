"""Retrieved text as a ``ResearchAgent``'s model may read it: inert among the sources.

A passage is data someone else may have written, and the seed passages land in the system
message, where a model trusts what it reads most. Two things keep a passage from acting:
lines that imitate the prompt's own source markup are quoted (so a passage cannot forge a
``[99] (trusted.md)`` source, a new ``Sources (cite them as [n]):`` list or a ``</sources>``
end of the list), and a passage with such a line, or one the tools' injection scan flags,
is fenced with ``wrap_as_data``, as the Safety Guard fences tool output.
"""

from __future__ import annotations

import re

from aillm_lab.tools.scan import scan_injection, wrap_as_data

SEARCH_TOOL = "search_knowledge"

# A line of retrieved text that imitates the prompt's source markup: a source line "[n] (",
# a sources header ("Sources (cite them as [n]):", "Sources for 'q' (cite them as [n]):"),
# or a tag that could pass for the list's or a role's delimiter ("</sources>", "<system>").
_FORGED_LINE = re.compile(
    r"^[ \t>]*(?:\[\s*\d+(?:\s*[,;]\s*\d+)*\s*\]\s*\(|sources\b[^\n]*cite them as"
    r"|</?\s*(?:sources?|documents?|context|system|user|assistant|tool)\b)",
    re.IGNORECASE | re.MULTILINE)
_LEADING_MARKER = re.compile(r"^([ \t>]*)\[\s*(\d+(?:\s*[,;]\s*\d+)*)\s*\]")
FORGED_MARKER = "imitates the source list's markup"


def passage_for_model(text: str, *, scan: bool = True) -> str:
    """``text`` as the model may read it among the sources: lines that imitate the source
    list's markup quoted (``> (99) (trusted.md) ...``), so a passage cannot forge a source
    or close the list; fenced as untrusted data (``wrap_as_data``) when it had such a line
    or ``scan_injection`` flags it (``scan=False``: the guard already scanned it)."""
    markers: list[str] = []
    if _FORGED_LINE.search(text):
        markers.append(FORGED_MARKER)
        text = _FORGED_LINE.sub(_quote_line, text)
    if scan:
        markers += scan_injection(text)
    if not markers:
        return text
    return wrap_as_data(text, SEARCH_TOOL, markers)


def shown_name(name: str, file_name: str, section: str) -> str:
    """A knowledge source's name on one line; when its section title (document text too)
    imitates markup or the injection scan flags it, the file name alone."""
    name = one_line(name)
    if section and (_FORGED_LINE.search(section) or scan_injection(name)):
        return one_line(file_name)
    return name


def one_line(text: str) -> str:
    return " ".join(text.split())


def _quote_line(match: re.Match[str]) -> str:
    """A forged line's start, quoted, with a leading ``[n]`` turned into ``(n)``."""
    head = _LEADING_MARKER.sub(lambda m: f"{m.group(1)}({m.group(2)})", match.group(0))
    return "> " + head.lstrip(" \t")


__all__ = ["FORGED_MARKER", "one_line", "passage_for_model", "shown_name"]
