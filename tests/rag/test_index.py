"""The usearch file is a rebuildable cache of SQLite: damage it and results come back the same."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from aillm_lab.rag.chunking import Chunk
from aillm_lab.rag.embeddings import HashingEmbedder
from aillm_lab.rag.index import (
    CONNECTIVITY,
    EXPANSION_SEARCH,
    LEGACY_GRAPH,
    QUANTIZATION,
    _exact,
)
from aillm_lab.rag.loaders import Document
from aillm_lab.rag.retriever import Knowledge
from aillm_lab.rag.store import replace_documents, under
from aillm_lab.runtime import LoopRunner

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")

TOPICS = ["kettles boil water", "teapots keep heat", "bicycles need oil", "rivers flood plains",
          "violins have strings", "compilers emit code", "glaciers carve valleys",
          "bakers proof dough", "comets have tails", "owls hunt mice"]


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i, topic in enumerate(TOPICS):
        (docs / f"doc{i}.txt").write_text(f"Document {i}. In short, {topic}. " * 3)
    return docs


def _kb(tmp_path: Path, runner: LoopRunner, threshold: int = 0) -> Knowledge:
    return Knowledge(db_path=tmp_path / "lab.db", index_dir=tmp_path / "index",
                     embedder=HashingEmbedder(dim=32), runner=runner, exact_threshold=threshold,
                     progress=False)


def _dense(kb: Knowledge, queries: list[str] = TOPICS) -> list[list[tuple[float, int]]]:
    """Every chunk's score per query, in a tie-proof order."""
    return [sorted((-round(h.score, 5), h.chunk_id) for h in kb.search(q, k=50, mode="dense"))
            for q in queries]


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _stale_manifest(path: Path) -> None:
    manifest_path = path.with_suffix(".manifest.json")
    manifest = json.loads(manifest_path.read_text())
    manifest["count"] -= 3
    manifest_path.write_text(json.dumps(manifest))


def _other_model(path: Path) -> None:
    manifest_path = path.with_suffix(".manifest.json")
    manifest = json.loads(manifest_path.read_text())
    manifest["model_id"] = "someone-else"
    manifest_path.write_text(json.dumps(manifest))


def _other_graph(path: Path) -> None:
    manifest_path = path.with_suffix(".manifest.json")
    manifest = json.loads(manifest_path.read_text())
    manifest["graph"]["connectivity"] = CONNECTIVITY // 2  # as if built by an older default
    manifest_path.write_text(json.dumps(manifest))


DAMAGE: dict[str, Callable[[Path], None]] = {
    "deleted": lambda p: p.unlink(),
    "truncated": _truncate,
    "corrupted": _corrupt,
    "stale manifest": _stale_manifest,
    "manifest deleted": lambda p: p.with_suffix(".manifest.json").unlink(),
    "manifest for another model": _other_model,
    "manifest for other HNSW settings": _other_graph,
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_index_file_is_rebuilt_and_results_match(tmp_path: Path, folder: Path,
                                                         runner: LoopRunner,
                                                         damage: str) -> None:
    kb = _kb(tmp_path, runner)
    kb.ingest(folder)
    before = _dense(kb)
    assert kb.collections()[0].ann
    kb.close()
    index_file = tmp_path / "index" / "default.usearch"
    DAMAGE[damage](index_file)

    reopened = _kb(tmp_path, runner)
    assert _dense(reopened) == before
    info = reopened.collections()[0]
    assert info.ann and info.rebuilds == 1
    manifest = json.loads(index_file.with_suffix(".manifest.json").read_text())
    assert manifest["count"] == info.chunks == len(TOPICS)
    reopened.close()


def test_an_intact_index_file_is_reused_without_a_rebuild(tmp_path: Path, folder: Path,
                                                          runner: LoopRunner) -> None:
    kb = _kb(tmp_path, runner)
    kb.ingest(folder)
    before = _dense(kb)
    kb.close()
    reopened = _kb(tmp_path, runner)
    assert _dense(reopened) == before
    assert reopened.collections()[0].rebuilds == 0
    reopened.close()


def test_an_older_valid_file_catches_up_with_chunks_committed_after_it(
        tmp_path: Path, folder: Path, runner: LoopRunner) -> None:
    kb = _kb(tmp_path, runner)
    kb.ingest(folder)
    saved = tmp_path / "saved"
    shutil.copytree(tmp_path / "index", saved)
    (folder / "late.txt").write_text("Late arrival: narwhals have tusks. " * 3)
    kb.ingest(folder)
    expected = _dense(kb, ["narwhals have tusks"])
    kb.close()
    shutil.rmtree(tmp_path / "index")
    shutil.copytree(saved, tmp_path / "index")  # as if we crashed before saving the file

    reopened = _kb(tmp_path, runner)
    got = _dense(reopened, ["narwhals have tusks"])
    assert got == expected
    assert reopened.search("narwhals", k=1, mode="dense")[0].source.endswith("late.txt")
    assert reopened.collections()[0].rebuilds == 0
    reopened.close()


def test_many_dead_entries_trigger_a_compacting_rebuild(tmp_path: Path, folder: Path,
                                                        runner: LoopRunner) -> None:
    kb = _kb(tmp_path, runner)
    kb.ingest(folder)
    for round_ in range(3):
        (folder / "doc0.txt").write_text(f"Version {round_}: kettles whistle loudly. " * 3)
        kb.ingest(folder)
    info = kb.collections()[0]
    assert info.rebuilds >= 1
    dead = kb.runner.run(kb.db.fetchone("SELECT count(*) FROM rag_chunks WHERE alive = 0"))
    manifest = json.loads((tmp_path / "index" / "default.manifest.json").read_text())
    assert dead is not None and manifest["count"] == info.chunks + dead[0]
    assert kb.search("kettles whistle", k=1, mode="dense")[0].text.startswith("Version 2")
    kb.close()


def test_exact_and_usearch_paths_agree_on_a_small_collection(tmp_path: Path, folder: Path,
                                                             runner: LoopRunner) -> None:
    ann = _kb(tmp_path / "a", runner, threshold=0)
    exact = _kb(tmp_path / "b", runner, threshold=10_000)
    ann.ingest(folder)
    exact.ingest(folder)
    assert ann.collections()[0].ann and not exact.collections()[0].ann
    for q in TOPICS:
        a = sorted((-round(h.score, 4), h.source) for h in ann.search(q, k=50, mode="dense"))
        b = sorted((-round(h.score, 4), h.source) for h in exact.search(q, k=50, mode="dense"))
        assert a == b and len(a) == len(TOPICS)
        assert ann.search(q, k=1, mode="dense")[0].text == exact.search(q, k=1,
                                                                        mode="dense")[0].text
    ann.close()
    exact.close()


def test_growing_past_the_threshold_switches_to_the_usearch_file(tmp_path: Path, folder: Path,
                                                                 runner: LoopRunner) -> None:
    kb = _kb(tmp_path, runner, threshold=len(TOPICS) + 2)
    kb.ingest(folder)
    assert not kb.collections()[0].ann
    assert not (tmp_path / "index" / "default.usearch").exists()
    for i in range(3):
        (folder / f"extra{i}.txt").write_text(f"Extra {i}: penguins cannot fly. " * 3)
    kb.ingest(folder)
    assert kb.collections()[0].ann
    assert (tmp_path / "index" / "default.usearch").exists()
    assert kb.search("penguins cannot fly", k=3, mode="dense")[0].source.startswith(str(folder))
    kb.close()


def test_exact_search_orders_by_cosine_and_caps_k() -> None:
    ids = np.array([10, 11, 12])
    mat = np.eye(3, dtype=np.float32)
    query = np.array([0.1, 0.9, 0.4], dtype=np.float32)
    assert [i for i, _ in _exact(query, ids, mat, 10)] == [11, 12, 10]
    assert _exact(query, ids[:0], mat[:0], 3) == []


def test_under_matches_folders_files_and_globs(tmp_path: Path) -> None:
    src = str(tmp_path / "a" / "b.md")
    assert under(src, tmp_path / "a")
    assert not under(src, tmp_path / "ab")
    assert under(src, [tmp_path / "zzz", src])
    assert under(src, str(tmp_path / "*" / "*.md"))
    assert not under(src, str(tmp_path / "*" / "*.txt"))


def test_dead_keys_left_in_the_usearch_file_are_never_returned(tmp_path: Path, folder: Path,
                                                               runner: LoopRunner) -> None:
    kb = _kb(tmp_path, runner)
    kb.ingest(folder)
    old_id = kb.search("kettles boil water", k=1, mode="dense")[0].chunk_id
    (folder / "doc0.txt").write_text("Document 0. In short, kettles sing. " * 3)
    kb.ingest(folder)  # 1 of 11 keys dead: below the compaction ratio
    info = kb.collections()[0]
    assert info.ann and info.rebuilds == 0
    hits = kb.search("kettles boil water", k=50, mode="dense")
    assert len(hits) == info.chunks == len(TOPICS)
    assert old_id not in {h.chunk_id for h in hits}
    kb.close()


def _vectors_collection(tmp_path: Path, runner: LoopRunner, mat: np.ndarray) -> Knowledge:
    """A collection of the given unit vectors written straight into SQLite (no embedder)."""
    kb = Knowledge(db_path=tmp_path / "lab.db", index_dir=tmp_path / "index",
                   embedder=HashingEmbedder(dim=mat.shape[1]), runner=runner,
                   exact_threshold=0, progress=False)
    cid = runner.run(kb._collection_id("default", create=True))
    group = [(Document(source=f"/v/{i}.txt", text=f"vector {i}", type="text"),
              [Chunk(text=f"vector {i}", ordinal=0, token_count=2)]) for i in range(len(mat))]
    runner.run(replace_documents(kb.db, cid, group, mat, []))
    return kb


def test_usearch_recall_at_10_matches_exact_search(tmp_path: Path, runner: LoopRunner) -> None:
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(40, 48))
    mat = centres[rng.integers(0, 40, 4000)] + rng.normal(scale=0.6, size=(4000, 48))
    mat = (mat / np.linalg.norm(mat, axis=1, keepdims=True)).astype(np.float32)
    kb = _vectors_collection(tmp_path, runner, mat)
    dense = runner.run(kb._dense_index("default"))
    assert dense.uses_ann
    ids = np.arange(1, len(mat) + 1)  # a fresh table numbers chunks 1..n in insert order
    queries = mat[rng.integers(0, len(mat), 60)] + rng.normal(scale=0.3, size=(60, 48))
    found = 0
    for q in queries.astype(np.float32):
        q /= np.linalg.norm(q)
        exact = {i for i, _ in _exact(q, ids, mat, 10)}
        found += len(exact & {i for i, _ in runner.run(dense.asearch(q, 10))})
    assert found / (10 * len(queries)) >= 0.97
    kb.close()


def test_a_reopened_file_keeps_the_configured_search_settings(tmp_path: Path, folder: Path,
                                                              runner: LoopRunner) -> None:
    kb = _kb(tmp_path, runner)
    kb.ingest(folder)
    kb.close()
    reopened = _kb(tmp_path, runner)
    dense = runner.run(reopened._dense_index("default"))
    assert dense.uses_ann and dense.rebuilds == 0
    assert dense._ann.expansion_search == dense.hnsw["expansion_search"] == EXPANSION_SEARCH
    assert dense._ann.connectivity == dense.hnsw["connectivity"] == CONNECTIVITY
    reopened.close()


def test_a_manifest_from_before_graph_settings_were_recorded_is_still_reused(
        tmp_path: Path, folder: Path, runner: LoopRunner) -> None:
    kb = _kb(tmp_path, runner)
    kb.ingest(folder)
    before = _dense(kb)
    kb.close()
    manifest_path = tmp_path / "index" / "default.manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest.pop("graph") == LEGACY_GRAPH  # files were built with these settings
    manifest_path.write_text(json.dumps(manifest))
    reopened = _kb(tmp_path, runner)
    assert _dense(reopened) == before and reopened.collections()[0].rebuilds == 0
    reopened.close()


def test_an_f32_file_from_before_quantisation_is_used_as_it_is(
        tmp_path: Path, folder: Path, runner: LoopRunner,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from aillm_lab.rag import index

    monkeypatch.setattr(index, "QUANTIZATION", "f32")  # what files were before "dtype"
    kb = _kb(tmp_path, runner)
    kb.ingest(folder)
    before = _dense(kb)
    kb.close()
    monkeypatch.undo()
    assert QUANTIZATION == "i8"
    manifest_path = tmp_path / "index" / "default.manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest.pop("dtype") == "f32"
    manifest.pop("orphans")
    manifest_path.write_text(json.dumps(manifest))  # exactly as those files were written
    reopened = _kb(tmp_path, runner)
    assert _dense(reopened) == before and reopened.collections()[0].rebuilds == 0
    reopened.close()


def test_ann_scores_are_exact_cosines_and_its_top_k_is_the_exact_top_k(
        tmp_path: Path, folder: Path, runner: LoopRunner) -> None:
    """The usearch file holds 8-bit vectors; the candidates are re-scored from lab.db's f32."""
    ann, exact = _kb(tmp_path / "ann", runner, threshold=0), _kb(tmp_path / "ex", runner, 10**6)
    for kb in (ann, exact):
        kb.ingest(folder)
    assert ann.collections()[0].ann and not exact.collections()[0].ann
    for query in TOPICS:
        got = [(h.chunk_id, h.score) for h in ann.search(query, k=3, mode="dense")]
        every = {h.chunk_id: h.score for h in exact.search(query, k=50, mode="dense")}
        best = sorted(every.values(), reverse=True)[:3]
        assert all(abs(score - every[i]) < 1e-6 for i, score in got)  # exact cosines
        assert all(abs(a - b) < 1e-6 for (_, a), b in zip(got, best, strict=True))  # the top 3
    ann.close()
    exact.close()


def test_a_vector_the_graph_cannot_reach_is_still_found(tmp_path: Path,
                                                       runner: LoopRunner) -> None:
    """HNSW pruning can leave a node with no way in; a sparse graph (connectivity 2) makes
    many. Each is found by its own vector anyway, and stays known after a reopen."""
    from aillm_lab.db import LabDB
    from aillm_lab.rag.index import DenseIndex
    from aillm_lab.rag.store import SCHEMA

    rng = np.random.default_rng(3)
    mat = rng.normal(size=(400, 16)).astype(np.float32)
    mat /= np.linalg.norm(mat, axis=1, keepdims=True)

    async def main() -> tuple[int, list[int], int]:
        db = LabDB(tmp_path / "lab.db", schema=SCHEMA, runner=runner)
        async with db.write() as conn:
            await conn.execute("INSERT INTO rag_collections VALUES (1, 'c', 'm', 16, 0)")
            await conn.executemany(
                "INSERT INTO rag_chunks (id, collection_id, ordinal, text, text_hash, "
                "token_count, vector) VALUES (?, 1, 0, '', '', 1, ?)",
                [(i + 1, mat[i].tobytes()) for i in range(len(mat))])
        opened = []
        for _ in range(2):  # built, then reopened from its file and manifest
            dense = DenseIndex(db, 1, "c", model_id="m", dim=16, index_dir=tmp_path / "index",
                               exact_threshold=0, connectivity=2, expansion_add=2,
                               expansion_search=2)
            await dense.aopen()
            missed = [i + 1 for i in range(len(mat))
                      if (await dense.asearch(mat[i], 1))[0][0] != i + 1]
            opened.append((len(dense._orphans), missed))
        await db.aclose()
        return opened[0][0], opened[0][1] + opened[1][1], opened[1][0]

    orphans, missed, reopened = runner.run(main())
    assert orphans > 0 and reopened == orphans  # the sparse graph did strand some
    assert missed == []
