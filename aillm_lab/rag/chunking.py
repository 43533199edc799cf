"""Token-aware recursive chunking, measured in the EMBEDDING model's own tokens.

Why the embedder's tokenizer: a chunk longer than the model's sequence length is silently
truncated when embedded, so its tail could never be found. Sizes and overlap are therefore
in that tokenizer's tokens and capped at ``embedder.max_tokens``. Markdown (and notebooks and
HTML, which load as Markdown) is first split at headings, and each chunk keeps its heading
path as ``section``; semchunk then splits each section at the largest boundary that fits
(blank lines, lines, sentences, clauses, words), with an overlap in tokens.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from aillm_lab.errors import AillmError
from aillm_lab.rag.loaders import Document

DEFAULT_CHUNK_TOKENS = 200
DEFAULT_OVERLAP_TOKENS = 24
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_FENCE = re.compile(r"^(```|~~~)", re.MULTILINE)


class ChunkingError(AillmError, ValueError):
    """Chunk size or overlap is out of range for the embedding model."""


class Chunk(BaseModel):
    """A piece of a document small enough to embed whole."""

    text: str
    ordinal: int
    token_count: int
    section: str = ""
    start: int = 0  # character offset in the document text
    metadata: dict[str, Any] = Field(default_factory=dict)


class Chunker:
    """Splits documents into chunks of at most ``chunk_tokens`` tokens of ``count_tokens``."""

    def __init__(self, count_tokens: Callable[[str], int], *, max_tokens: int,
                 chunk_tokens: int | None = None,
                 overlap_tokens: int = DEFAULT_OVERLAP_TOKENS) -> None:
        size = min(DEFAULT_CHUNK_TOKENS, max_tokens) if chunk_tokens is None else chunk_tokens
        if not 8 <= size <= max_tokens:
            raise ChunkingError(f"chunk_tokens={size} is out of range: use 8 to {max_tokens} "
                                "(the embedding model's max_tokens; longer text is truncated).")
        if not 0 <= overlap_tokens < size // 2:
            raise ChunkingError(f"overlap_tokens={overlap_tokens} is out of range: use 0 to "
                                f"{size // 2 - 1} (less than half of chunk_tokens={size}).")
        import semchunk

        self.count_tokens = count_tokens
        self.chunk_tokens = size
        self.overlap_tokens = overlap_tokens
        self._chunker = semchunk.chunkerify(count_tokens, size)

    @classmethod
    def for_embedder(cls, embedder: Any, *, chunk_tokens: int | None = None,
                     overlap_tokens: int = DEFAULT_OVERLAP_TOKENS) -> Chunker:
        """A chunker in ``embedder``'s tokens, capped at its ``max_tokens``."""
        return cls(embedder.count_tokens, max_tokens=embedder.max_tokens,
                   chunk_tokens=chunk_tokens, overlap_tokens=overlap_tokens)

    def split(self, doc: Document) -> list[Chunk]:
        """The chunks of ``doc`` in order; empty text gives no chunks."""
        headed = doc.type in ("markdown", "notebook", "html")
        sections = split_sections(doc.text) if headed else [("", 0, doc.text)]
        chunks: list[Chunk] = []
        for section, offset, body in sections:
            if not body.strip():
                continue
            pieces, spans = self._chunker(body, offsets=True,
                                          overlap=self.overlap_tokens or None)
            for piece, (start, _end) in zip(pieces, spans, strict=True):
                if piece.strip():
                    chunks.append(Chunk(text=piece, ordinal=len(chunks), section=section,
                                        token_count=self.count_tokens(piece),
                                        start=offset + start))
        return chunks


def split_sections(text: str) -> list[tuple[str, int, str]]:
    """(heading path, offset, body) per Markdown section; headings in code fences ignored.

    The body starts with its own heading line, so the heading's words are searchable.
    """
    fenced = _fenced_ranges(text)
    heads = [m for m in _HEADING.finditer(text)
             if not any(a <= m.start() < b for a, b in fenced)]
    if not heads:
        return [("", 0, text)]
    out: list[tuple[str, int, str]] = []
    if heads[0].start() > 0:
        out.append(("", 0, text[:heads[0].start()]))
    path: list[tuple[int, str]] = []
    carry: int | None = None  # a heading with no body joins the next section
    for i, m in enumerate(heads):
        level, title = len(m.group(1)), m.group(2).strip()
        path = [(lv, t) for lv, t in path if lv < level] + [(level, title)]
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        start = m.start() if carry is None else carry
        if not text[m.end():end].strip() and i + 1 < len(heads):
            carry = start
            continue
        carry = None
        out.append((" > ".join(t for _, t in path), start, text[start:end]))
    return out


def _fenced_ranges(text: str) -> list[tuple[int, int]]:
    marks = [m.start() for m in _FENCE.finditer(text)]
    return [(marks[i], marks[i + 1]) for i in range(0, len(marks) - 1, 2)]
