"""Search results: a list of hits that shows itself well in a notebook and as a DataFrame.

Why a rich repr: in a notebook the first thing a researcher does with a search is look at
it, so the HTML shows rank, score, source, section and a snippet with the query's words
marked. Everything from the documents is HTML-escaped before any markup is added.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, overload

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    import pandas as pd

SNIPPET_CHARS = 300


class SearchHit(BaseModel):
    """One retrieved chunk; ``score`` is cosine (dense), -BM25 (sparse) or RRF (hybrid)."""

    chunk_id: int
    score: float
    text: str
    source: str
    section: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)
    rank: int = 0


class SearchResults:
    """A read-only list of ``SearchHit``s for one query, best first."""

    def __init__(self, query: str, hits: list[SearchHit], *, mode: str = "hybrid",
                 collection: str = "default") -> None:
        self.query, self.mode, self.collection = query, mode, collection
        self._hits = list(hits)

    @overload
    def __getitem__(self, index: int) -> SearchHit: ...
    @overload
    def __getitem__(self, index: slice) -> list[SearchHit]: ...
    def __getitem__(self, index: int | slice) -> SearchHit | list[SearchHit]:
        return self._hits[index]

    def __len__(self) -> int:
        return len(self._hits)

    def __iter__(self) -> Iterator[SearchHit]:
        return iter(self._hits)

    def __bool__(self) -> bool:
        return bool(self._hits)

    def __repr__(self) -> str:
        lines = [f"SearchResults({self.query!r}, mode={self.mode!r}, {len(self)} hits)"]
        lines += [f"  {h.rank}. {h.score:.4f} {h.source}"
                  + (f" § {h.section}" if h.section else "") for h in self._hits]
        return "\n".join(lines)

    @property
    def sources(self) -> list[str]:
        """Distinct sources in rank order."""
        return list(dict.fromkeys(h.source for h in self._hits))

    def to_pandas(self) -> pd.DataFrame:
        import pandas as pd

        columns = ["rank", "score", "source", "section", "text", "chunk_id", "metadata"]
        return pd.DataFrame([{c: getattr(h, c) for c in columns} for h in self._hits],
                            columns=columns)

    def _repr_html_(self) -> str:
        head = (f"<div><b>{len(self)} results</b> for <code>{html.escape(self.query)}</code> "
                f"({html.escape(self.mode)}, collection {html.escape(self.collection)})</div>")
        if not self._hits:
            return head
        rows = "".join(
            f"<tr><td>{h.rank}</td><td>{h.score:.4f}</td>"
            f"<td><code>{html.escape(h.source)}</code>"
            + (f"<br><small>{html.escape(h.section)}</small>" if h.section else "")
            + f"</td><td>{highlight(snippet(h.text, self.query), self.query)}</td></tr>"
            for h in self._hits)
        return (head + "<table><thead><tr><th>#</th><th>score</th><th>source</th>"
                f"<th>snippet</th></tr></thead><tbody>{rows}</tbody></table>")


def query_terms(query: str) -> list[str]:
    """The words of a query, longest first, as used for highlighting."""
    words = {w.lower() for w in re.findall(r"\w+", query) if len(w) > 1}
    return sorted(words, key=len, reverse=True)


def snippet(text: str, query: str, width: int = SNIPPET_CHARS) -> str:
    """About ``width`` characters of ``text`` around the first query term found."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    lower = text.lower()
    found = [i for i in (lower.find(t) for t in query_terms(query)) if i >= 0]
    start = max(0, min(found) - width // 3) if found else 0
    end = min(len(text), start + width)
    return ("…" if start else "") + text[start:end] + ("…" if end < len(text) else "")


def highlight(text: str, query: str) -> str:
    """HTML-escaped ``text`` with query terms wrapped in ``<mark>``."""
    terms = query_terms(query)
    if not terms:
        return html.escape(text)
    pattern = re.compile("|".join(re.escape(t) for t in terms), re.IGNORECASE)
    out, last = [], 0
    for m in pattern.finditer(text):
        out.append(html.escape(text[last:m.start()]))
        out.append(f"<mark>{html.escape(m.group(0))}</mark>")
        last = m.end()
    out.append(html.escape(text[last:]))
    return "".join(out)
