"""A chunk's vector is on disk once (issue 17): in its chunk row while it lives, in the
embedding cache once it dies; identical text is still never embedded twice."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from aillm_lab.rag.embeddings import HashingEmbedder
from aillm_lab.rag.retriever import Knowledge
from aillm_lab.runtime import LoopRunner

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")


class Counting(HashingEmbedder):
    def __init__(self) -> None:
        super().__init__(dim=32)
        self.texts = 0

    async def aembed(self, texts: list[str]):  # type: ignore[no-untyped-def]
        self.texts += len(texts)
        return await super().aembed(texts)


def _counts(db: Path) -> tuple[int, int]:
    with sqlite3.connect(db) as conn:
        cached = conn.execute("SELECT COUNT(*) FROM rag_embedding_cache").fetchone()[0]
        stored = conn.execute("SELECT COUNT(*) FROM rag_chunks WHERE vector IS NOT NULL"
                              ).fetchone()[0]
    return int(cached), int(stored)


def test_each_vector_is_stored_once_and_found_again_without_embedding(
        tmp_path: Path, module_runner: LoopRunner) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(6):
        (docs / f"d{i}.md").write_text(f"Document {i} talks about topic number {i}.\n")
    embedder = Counting()
    kb = Knowledge(db_path=tmp_path / "lab.db", index_dir=tmp_path / "index",
                   embedder=embedder, runner=module_runner, progress=False)
    try:
        first = kb.ingest(docs)
        assert first.embeddings_computed == first.chunks_added == 6
        kb.close()  # flush to the file before reading it from outside
        assert _counts(tmp_path / "lab.db") == (0, 6)  # in the chunk rows, not twice

        seen = embedder.texts
        other = kb.ingest(docs, "copy")  # same texts, same model, another collection
        assert other.chunks_added == 6 and other.embeddings_computed == 0
        assert embedder.texts == seen

        kb.remove(docs / "d0.md")
        kb.close()
        assert _counts(tmp_path / "lab.db") == (1, 11)  # the dead chunk's vector moved
        back = kb.ingest(docs)
        assert back.docs_added == 1 and back.embeddings_computed == 0
        assert embedder.texts == seen
        hits = kb.search("Document 0 talks about topic number 0.", k=1, mode="dense")
        assert hits[0].source.endswith("d0.md")
    finally:
        kb.close()


def test_each_collection_says_about_how_much_disk_it_uses(
        tmp_path: Path, module_runner: LoopRunner) -> None:
    small, big = tmp_path / "small", tmp_path / "big"
    for folder, n in ((small, 2), (big, 40)):
        folder.mkdir()
        for i in range(n):
            (folder / f"d{i}.md").write_text(f"Note {i}: " + "words about things " * 20 + "\n")
    kb = Knowledge(db_path=tmp_path / "lab.db", index_dir=tmp_path / "index",
                   embedder=HashingEmbedder(dim=32), runner=module_runner, progress=False,
                   exact_threshold=10)
    try:
        kb.ingest(small, "small")
        kb.ingest(big, "big")
        kb.search("words", collection="big", mode="dense")  # opens (and writes) its index
        info = {c.name: c for c in kb.collections()}
        assert info["big"].ann and not info["small"].ann
        index_file = (tmp_path / "index" / "big.usearch").stat().st_size
        text = sum(len(p.read_text()) for p in big.iterdir())
        assert info["big"].disk_bytes >= index_file + 40 * 32 * 4 + text
        assert 2 * 32 * 4 < info["small"].disk_bytes < info["big"].disk_bytes
    finally:
        kb.close()
