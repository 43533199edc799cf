"""A ``ResearchAgent``'s sources: what one is, how a search hit becomes one, when two are the
same one, how the hits of several searches merge, the name the model reads, and a run's
book of numbered sources (``SourceBook``).

Why a module of its own: a source is the unit the whole agent turns on (retrieved, packed,
numbered ``[n]``, cited, returned in ``ResearchAnswer.sources``), and its identity must be
one rule everywhere: a knowledge chunk is the same source whatever search found it (its
collection and chunk id), a web page is its URL. The run logic in ``research`` (seed, pack,
number, check the citations) uses these; ``research_passages`` makes their text inert.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from aillm_lab.agents.research_passages import one_line, shown_name
from aillm_lab.rag.context import Source

if TYPE_CHECKING:
    from aillm_lab.rag.results import SearchHit


class ResearchSource(BaseModel):
    """A numbered source the answer cites: a knowledge chunk (with its ids) or a web page."""

    label: int
    source: str = Field(description="the document's path, or the page's URL")
    text: str
    kind: Literal["knowledge", "web"] = "knowledge"
    collection: str | None = None
    doc_id: int | None = None
    chunk_id: int | None = None
    section: str = ""

    @property
    def name(self) -> str:
        """How the source is shown to the model: file name and section, or the URL."""
        if self.kind == "web":
            return self.source
        name = Path(self.source).name or self.source
        return f"{name} § {self.section}" if self.section else name


def source_from_hit(hit: SearchHit, collection: str) -> ResearchSource:
    """A search hit of ``collection`` as a source, not numbered yet (``label=0``)."""
    doc_id = hit.metadata.get("doc_id")
    return ResearchSource(label=0, source=hit.source, text=hit.text, section=hit.section,
                          collection=collection, chunk_id=hit.chunk_id,
                          doc_id=int(doc_id) if doc_id is not None else None)


def source_key(source: ResearchSource) -> tuple[str, str]:
    """What makes two sources one: the collection and chunk id, or the page's URL."""
    if source.kind == "web":
        return ("web", source.source)
    return (source.collection or "", str(source.chunk_id))


def interleave(lists: Sequence[Sequence[ResearchSource]]) -> list[ResearchSource]:
    """Round-robin by rank (each list's best first), dropping repeats."""
    out: dict[tuple[str, str], ResearchSource] = {}
    for rank in range(max((len(x) for x in lists), default=0)):
        for hits in lists:
            if rank < len(hits):
                out.setdefault(source_key(hits[rank]), hits[rank])
    return list(out.values())


@dataclass
class SourceBook:
    """One run's numbered sources: each source under one label, each label once. A fork
    fills it again from the trace with the recorded labels (``add(source, label)``)."""

    book: dict[int, ResearchSource] = field(default_factory=dict)
    keys: dict[tuple[str, str], int] = field(default_factory=dict)

    def add(self, source: ResearchSource, label: int | None = None) -> int:
        """Number ``source`` (the next label unless given); a known one keeps its label."""
        known = self.label_of(source)
        if known is not None:
            return known
        label = label if label is not None else len(self.book) + 1
        self.book[label] = source.model_copy(update={"label": label})
        self.keys[source_key(source)] = label
        return label

    def label_of(self, source: ResearchSource) -> int | None:
        return self.keys.get(source_key(source))

    def sources(self) -> list[Source]:
        """The book as ``ContextManager`` sources, for ``cite()``."""
        return [Source(label=s.label, source=s.source, text=s.text)
                for s in self.book.values()]


def name_for_model(source: ResearchSource) -> str:
    """The source's name as the model reads it (a section title is document text too)."""
    if source.kind == "web":
        return one_line(source.source)
    return shown_name(source.name, Path(source.source).name or source.source, source.section)


__all__ = ["ResearchSource", "SourceBook", "interleave", "name_for_model", "source_from_hit",
           "source_key"]
