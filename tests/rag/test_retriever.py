"""Knowledge: ingest, re-ingest, change, delete and hybrid search, with the real MiniLM model."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aillm_lab.rag.embeddings import HashingEmbedder, LocalEmbedder, default_embedder
from aillm_lab.rag.loaders import LoaderError
from aillm_lab.rag.retriever import Knowledge
from aillm_lab.rag.sparse import Filters, RagError
from aillm_lab.runtime import LoopRunner

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")

CORPUS = {
    'errors/e4011.md': (
        '# Error E4011\n\nThe upload was rejected because the bucket does not exist. Create'
        ' the bucket first, then retry the upload.'
    ),
    'errors/e4012.md': (
        '# Error E4012\n\nThe upload was rejected because the bucket is over its storage '
        'quota. Delete old objects or raise the quota, then retry.'
    ),
    'errors/e4013.md': (
        '# Error E4013\n\nThe upload was rejected because the object name is too long. Use '
        'a key shorter than 1024 bytes.'
    ),
    'errors/e4021.md': (
        '# Error E4021\n\nThe download failed because the object was deleted while it was '
        'being read. Retry the download.'
    ),
    'errors/e4022.md': (
        '# Error E4022\n\nThe download failed because the signed link expired. Ask for a '
        'fresh signed link.'
    ),
    'errors/e5001.md': (
        '# Error E5001\n\nThe storage service is temporarily unavailable. Retry later with '
        'exponential backoff.'
    ),
    'errors/e5002.md': (
        '# Error E5002\n\nThe storage service timed out while writing the object. Retry the'
        ' upload with a smaller part size.'
    ),
    'api/parse_config_file.md': (
        '# parse_config_file\n\n`parse_config_file(path)` reads settings from a file on '
        'disk and returns a dictionary of options.'
    ),
    'api/load_settings.md': (
        '# load_settings\n\n`load_settings(path)` reads settings from a file and returns a '
        'dictionary of options, applying defaults.'
    ),
    'api/read_options.md': (
        '# read_options\n\n`read_options(stream)` reads options from an open stream and '
        'returns a dictionary of settings.'
    ),
    'api/merge_configs.md': (
        '# merge_configs\n\n`merge_configs(a, b)` combines two dictionaries of settings; '
        'values in b win.'
    ),
    'api/validate_config.md': (
        '# validate_config\n\n`validate_config(cfg)` checks a dictionary of settings and '
        'raises ValueError on bad options.'
    ),
    'api/dump_config.md': (
        '# dump_config\n\n`dump_config(cfg, path)` writes a dictionary of settings back to '
        'a file on disk.'
    ),
    'notes/battery.md': (
        '# Power tips\n\nTo extend how long a notebook computer runs unplugged, dim the '
        'display, close background apps and switch on the energy saver mode.'
    ),
    'notes/last_train.md': (
        '# Timetable\n\nThe last train leaves the station at midnight; on Sundays it '
        'departs an hour longer after sunset. Keep your ticket until you get home.'
    ),
    'notes/meetings.md': (
        '# Meetings\n\nMeetings that last longer than an hour make people tired. Keep them '
        'short and send an agenda.'
    ),
    'notes/sleep.md': (
        '# Sleep\n\nAdults rest best with seven to nine hours a night, a dark bedroom and '
        'no screens before bed.'
    ),
    'notes/plants.md': (
        '# Houseplants\n\nWater succulents sparingly; soggy soil rots their roots. Give '
        'them bright, indirect sunlight.'
    ),
    'notes/bread.md': (
        '# Baking\n\nSourdough rises slowly; let the dough ferment overnight in the fridge '
        'for a more sour loaf.'
    ),
    'notes/bikes.md': (
        '# Cycling\n\nOil the chain every few hundred kilometres and check tyre pressure '
        'before long rides.'
    ),
    'notes/coffee.md': (
        '# Coffee\n\nGrind beans just before brewing and use water just off the boil for a '
        'pour-over.'
    ),
    'notes/running.md': (
        '# Running\n\nBuild mileage slowly, no more than ten percent a week, to avoid shin '
        'splints and other injuries.'
    ),
    'notes/passwords.md': (
        '# Accounts\n\nUse a password manager and turn on two-factor authentication for '
        'email and banking.'
    ),
    'notes/moving.md': (
        '# Moving house\n\nLabel boxes by room, pack heavy books in small boxes and book '
        'the van weeks ahead.'
    ),
    'notes/cats.md': (
        '# Pets\n\nCats scratch furniture to mark territory; give them a tall scratching '
        'post near the sofa.'
    ),
    'notes/tea.md': (
        '# Tea\n\nGreen tea turns bitter in boiling water; steep it at about eighty degrees'
        ' for two minutes.'
    ),
    'notes/budget.md': (
        '# Money\n\nTrack spending for a month, then set aside savings automatically on '
        'payday before anything else.'
    ),
    'notes/phone.md': (
        '# Phones\n\nA phone that runs out of charge by noon may have a failing cell; check'
        ' the health report in settings.'
    ),
    'notes/car.md': (
        '# Car care\n\nRotate the tyres every ten thousand kilometres and replace the wiper'
        ' blades each autumn.'
    ),
    'notes/language.md': (
        '# Languages\n\nPractise vocabulary with spaced repetition cards for fifteen '
        'minutes every day.'
    ),
    'notes/garden.md': (
        '# Garden\n\nMulch beds in spring to keep moisture in the soil and weeds out.'
    ),
    'notes/printer.md': (
        '# Printer\n\nIf pages come out streaky, run the head cleaning cycle and replace '
        'low ink cartridges.'
    ),
    'notes/wifi.md': (
        '# Wi-Fi\n\nPlace the router high and central, away from microwaves, to improve '
        'wireless coverage at home.'
    ),
    'notes/stress.md': (
        '# Stress\n\nA ten minute walk outside and slow breathing lower stress during a '
        'busy workday.'
    ),
    'notes/travel.md': (
        '# Travel\n\nScan your passport and keep a copy in cloud storage in case the '
        'original is lost abroad.'
    ),
}
IDENTIFIER_QUERIES = [("E4012", "e4012"), ("error E4012", "e4012"),
                      ("what does E5002 mean", "e5002"), ("parse_config_file()", "parse_config")]
PARAPHRASE_QUERIES = [("how can I make my laptop battery last longer", "battery"),
                      ("keep the kitty off the couch", "cats"),
                      ("how many hours should grown-ups sleep", "sleep")]


def _write(folder: Path, docs: dict[str, str]) -> Path:
    for name, text in docs.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


@pytest.fixture(scope="module")
def minilm() -> LocalEmbedder:
    return default_embedder()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp("corpus"), CORPUS)


@pytest.fixture(scope="module")
def kb(tmp_path_factory: pytest.TempPathFactory, corpus: Path, minilm: LocalEmbedder,
       module_runner: LoopRunner) -> Iterator[Knowledge]:
    home = tmp_path_factory.mktemp("home")
    kb = Knowledge(db_path=home / "lab.db", index_dir=home / "index", embedder=minilm,
                   runner=module_runner, progress=False)
    kb.ingest(corpus, tags=["kb"])
    yield kb
    kb.close()


def _small(tmp_path: Path, runner: LoopRunner, **kwargs: object) -> Knowledge:
    return Knowledge(db_path=tmp_path / "lab.db", index_dir=tmp_path / "index",
                     embedder=HashingEmbedder(dim=32), runner=runner, progress=False,
                     **kwargs)  # type: ignore[arg-type]


def _rank(kb: Knowledge, query: str, target: str, mode: str) -> int:
    """1-based rank of the first hit whose source contains ``target`` (11 if not in top 10)."""
    hits = kb.search(query, k=10, mode=mode)  # type: ignore[arg-type]
    return next((h.rank for h in hits if target in h.source), 11)


def _ids_by_source(kb: Knowledge) -> dict[str, list[int]]:
    rows = kb.runner.run(kb.db.fetchall(
        "SELECT d.source, c.id FROM rag_chunks c JOIN rag_documents d ON d.id = c.doc_id "
        "WHERE c.alive = 1 ORDER BY c.id"))
    out: dict[str, list[int]] = {}
    for source, chunk_id in rows:
        out.setdefault(Path(source).name, []).append(chunk_id)
    return out


# -- acceptance: the ingest lifecycle -----------------------------------------------------
def test_ingest_reingest_change_and_delete_lifecycle(tmp_path: Path, minilm: LocalEmbedder,
                                                     module_runner: LoopRunner) -> None:
    folder = _write(tmp_path / "docs", CORPUS)
    kb = Knowledge(db_path=tmp_path / "lab.db", index_dir=tmp_path / "index", embedder=minilm,
                   runner=module_runner, progress=False)
    first = kb.ingest(folder)
    assert (first.docs_added, first.chunks_added) == (len(CORPUS), len(CORPUS))
    assert first.embeddings_computed == len(CORPUS)
    assert kb.search("bucket over its storage quota", k=1)[0].source.endswith("e4012.md")

    conn = kb.runner.run(kb.db.conn())
    writes_before, ids_before = conn.total_changes, _ids_by_source(kb)
    again = kb.ingest(folder)
    assert again.docs_unchanged == len(CORPUS) and again.embeddings_computed == 0
    assert (again.docs_added, again.docs_updated, again.chunks_added) == (0, 0, 0)
    assert conn.total_changes == writes_before  # nothing written at all

    (folder / "notes" / "tea.md").write_text("# Tea\n\nOolong tastes best at ninety degrees.")
    changed = kb.ingest(folder)
    assert (changed.docs_updated, changed.chunks_added, changed.chunks_removed) == (1, 1, 1)
    assert changed.embeddings_computed == 1
    ids_after = _ids_by_source(kb)
    assert ids_after["tea.md"] != ids_before["tea.md"]
    assert {k: v for k, v in ids_after.items() if k != "tea.md"} == {
        k: v for k, v in ids_before.items() if k != "tea.md"}
    assert kb.search("oolong temperature", k=1)[0].source.endswith("tea.md")

    (folder / "errors" / "e4012.md").unlink()
    removed = kb.ingest(folder, sync=True)
    assert (removed.docs_removed, removed.chunks_removed) == (1, 1)
    for mode in ("dense", "sparse", "hybrid"):
        hits = kb.search("E4012 storage quota", k=50, mode=mode)  # type: ignore[arg-type]
        assert all(not h.source.endswith("e4012.md") for h in hits)
    filtered = kb.search("storage quota", k=50, filters={"source": "*/errors/*"})
    assert filtered and all(not h.source.endswith("e4012.md") for h in filtered)
    kb.close()


def test_restoring_a_deleted_file_reuses_cached_embeddings(tmp_path: Path,
                                                           module_runner: LoopRunner) -> None:
    folder = _write(tmp_path / "docs", {"a.md": "alpha text", "b.md": "beta text"})
    kb = _small(tmp_path, module_runner)
    kb.ingest(folder)
    kb.remove(folder / "a.md")
    assert [h.source for h in kb.search("alpha", mode="sparse")] == []
    report = kb.ingest(folder)
    assert report.docs_added == 1 and report.embeddings_computed == 0
    assert kb.search("alpha", k=1, mode="sparse")[0].source == str(folder / "a.md")
    kb.close()


def test_sync_only_removes_files_under_the_ingested_paths(tmp_path: Path,
                                                          module_runner: LoopRunner) -> None:
    one = _write(tmp_path / "one", {"a.md": "apples"})
    two = _write(tmp_path / "two", {"b.md": "bananas"})
    kb = _small(tmp_path, module_runner)
    kb.ingest([one, two])
    (one / "a.md").unlink()
    (one / "c.md").write_text("cherries")
    report = kb.ingest(one, sync=True)
    assert report.docs_removed == 1 and report.docs_added == 1
    assert kb.search("bananas", k=1, mode="sparse")[0].source == str(two / "b.md")
    kb.close()


# -- acceptance: hybrid beats either alone ------------------------------------------------
def test_hybrid_beats_dense_on_exact_identifier_queries(kb: Knowledge) -> None:
    dense = [_rank(kb, q, t, "dense") for q, t in IDENTIFIER_QUERIES]
    hybrid = [_rank(kb, q, t, "hybrid") for q, t in IDENTIFIER_QUERIES]
    assert all(h <= d for h, d in zip(hybrid, dense, strict=True)), (hybrid, dense)
    assert sum(1 / r for r in hybrid) > sum(1 / r for r in dense), (hybrid, dense)
    assert _rank(kb, "E4012", "e4012", "hybrid") == 1 < _rank(kb, "E4012", "e4012", "dense")


def test_hybrid_beats_sparse_on_paraphrase_queries(kb: Knowledge) -> None:
    sparse = [_rank(kb, q, t, "sparse") for q, t in PARAPHRASE_QUERIES]
    hybrid = [_rank(kb, q, t, "hybrid") for q, t in PARAPHRASE_QUERIES]
    assert all(h <= s for h, s in zip(hybrid, sparse, strict=True)), (hybrid, sparse)
    assert sum(1 / r for r in hybrid) > sum(1 / r for r in sparse), (hybrid, sparse)
    assert _rank(kb, "keep the kitty off the couch", "cats", "sparse") == 11


def test_hits_carry_rank_section_and_metadata(kb: Knowledge) -> None:
    hits = kb.search("parse_config_file", k=3)
    assert [h.rank for h in hits] == [1, 2, 3]
    assert hits[0].section == "parse_config_file"
    assert hits[0].metadata["type"] == "markdown" and hits[0].metadata["tags"] == ["kb"]
    assert hits[0].score >= hits[1].score >= hits[2].score


# -- filters ------------------------------------------------------------------------------
def test_filters_by_source_glob_prefix_type_and_tags(kb: Knowledge, corpus: Path) -> None:
    by_glob = kb.search("settings dictionary", k=20, filters={"source": "*/api/*"})
    assert by_glob and all("/api/" in h.source for h in by_glob)
    by_prefix = kb.search("retry", k=20, filters={"source": str(corpus / "errors")})
    assert by_prefix and all(h.source.startswith(str(corpus / "errors")) for h in by_prefix)
    assert kb.search("retry", filters=Filters(type=["code"])).sources == []
    assert len(kb.search("retry", k=50, filters={"tags": "kb", "type": "markdown"})) > 0
    assert len(kb.search("retry", filters={"tags": ["missing"]})) == 0


def test_filters_by_modification_time(tmp_path: Path, module_runner: LoopRunner) -> None:
    import os

    folder = _write(tmp_path / "docs", {"old.md": "shared words", "new.md": "shared words"})
    os.utime(folder / "old.md", (1_000_000_000, 1_000_000_000))
    kb = _small(tmp_path, module_runner)
    kb.ingest(folder)
    cut = datetime(2015, 1, 1, tzinfo=UTC)
    assert kb.search("shared", filters={"after": cut}).sources == [str(folder / "new.md")]
    assert kb.search("shared", filters={"before": cut}).sources == [str(folder / "old.md")]
    later = datetime.now(UTC) + timedelta(days=1)
    assert kb.search("shared", mode="dense", filters={"after": later}).sources == []
    kb.close()


def test_a_large_filtered_set_on_the_usearch_path_is_over_fetched(
        tmp_path: Path, module_runner: LoopRunner) -> None:
    from aillm_lab.rag import index

    docs = {f"d{i}.md": f"note {i} about topic {i % 7}" for i in range(40)}
    folder = _write(tmp_path / "docs", docs)
    kb = _small(tmp_path, module_runner, exact_threshold=0)
    kb.ingest(folder)
    old = index.FILTER_EXACT_LIMIT
    index.FILTER_EXACT_LIMIT = 0  # force the over-fetch branch
    try:
        hits = kb.search("topic 3", k=3, mode="dense", filters={"source": "*/d1*.md"})
    finally:
        index.FILTER_EXACT_LIMIT = old
    assert len(hits) == 3 and all(Path(h.source).name.startswith("d1") for h in hits)
    kb.close()



def test_an_ingest_of_many_batches_writes_the_usearch_file_once(
        tmp_path: Path, module_runner: LoopRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    from aillm_lab.rag import index, retriever

    saves: list[int] = []
    save = index.DenseIndex._save
    monkeypatch.setattr(index.DenseIndex, "_save", lambda self: (saves.append(1), save(self)))
    kb = _small(tmp_path, module_runner, exact_threshold=0)
    kb.ingest(_write(tmp_path / "first", {"a.md": "alpha notes"}))
    monkeypatch.setattr(retriever, "EMBED_BATCH", 1)  # one document per batch and commit
    saves.clear()
    report = kb.ingest(_write(tmp_path / "more", {f"d{i}.md": f"note {i}" for i in range(5)}))
    assert report.chunks_added == 5 and len(saves) == 1
    kb.close()
    again = _small(tmp_path, module_runner, exact_threshold=0)
    assert again.search("note 3", k=1, mode="dense").sources == [str(tmp_path / "more/d3.md")]
    assert [(c.ann, c.rebuilds, c.chunks) for c in again.collections()] == [(True, 0, 6)]
    again.close()

# -- FTS escaping ---------------------------------------------------------------------------
@pytest.mark.parametrize("query", ["foo()", "E1234:", '"unbalanced', "AND OR NOT", "*",
                                   "a-b c:d (x) NEAR/2", "col:value ^start", "!!!"])
def test_punctuation_in_queries_never_breaks_fts(kb: Knowledge, query: str) -> None:
    kb.search(query, mode="sparse")
    kb.search(query, mode="hybrid")


# -- collections and the async door --------------------------------------------------------
def test_collections_are_separate(tmp_path: Path, module_runner: LoopRunner) -> None:
    a = _write(tmp_path / "a", {"x.md": "zebra stripes"})
    b = _write(tmp_path / "b", {"y.md": "giraffe necks", "z.md": "giraffe spots"})
    kb = _small(tmp_path, module_runner)
    kb.ingest(a, collection="animals-a")
    kb.ingest(b, collection="animals_b")
    assert kb.search("zebra", collection="animals-a").sources == [str(a / "x.md")]
    assert kb.search("zebra", collection="animals_b", mode="sparse").sources == []
    info = {c.name: (c.documents, c.chunks) for c in kb.collections()}
    assert info == {"animals-a": (1, 1), "animals_b": (2, 2)}
    kb.drop("animals-a")
    assert [c.name for c in kb.collections()] == ["animals_b"]
    with pytest.raises(RagError, match="does not exist"):
        kb.search("zebra", collection="animals-a")
    kb.close()


def test_a_dropped_collection_ingested_again_under_its_name_is_searched_anew(
        tmp_path: Path, module_runner: LoopRunner) -> None:
    """The collection id is remembered per name; a drop must forget it."""
    old = _write(tmp_path / "old", {"x.md": "zebra stripes"})
    new = _write(tmp_path / "new", {"y.md": "zebra crossing"})
    kb = _small(tmp_path, module_runner)
    kb.ingest(old, collection="zoo")
    assert kb.search("zebra", collection="zoo").sources == [str(old / "x.md")]
    kb.drop("zoo")
    kb.ingest(new, collection="zoo")
    assert kb.search("zebra", collection="zoo").sources == [str(new / "y.md")]
    kb.close()


def test_a_collection_refuses_a_different_embedding_model(tmp_path: Path,
                                                          module_runner: LoopRunner) -> None:
    folder = _write(tmp_path / "docs", {"a.md": "text"})
    kb = _small(tmp_path, module_runner)
    kb.ingest(folder)
    kb.close()
    other = Knowledge(db_path=tmp_path / "lab.db", index_dir=tmp_path / "index",
                      embedder=HashingEmbedder(dim=48), runner=module_runner, progress=False)
    with pytest.raises(RagError, match="built with hashing-32"):
        other.search("text")
    other.close()



# -- search by a vector you already have ----------------------------------------------------
ANIMALS = {"cats.md": "cats sleep in the sun all day", "dogs.md": "dogs fetch sticks in the park",
           "owls.md": "owls hunt mice at night", "bees.md": "bees make honey in the hive"}


@pytest.mark.parametrize("exact_threshold", [20_000, 0], ids=["exact", "usearch"])
def test_search_by_vector_equals_search_by_the_text_that_produced_it(
        tmp_path: Path, module_runner: LoopRunner, exact_threshold: int) -> None:
    folder = _write(tmp_path / "docs", ANIMALS)
    kb = _small(tmp_path, module_runner, exact_threshold=exact_threshold)
    kb.ingest(folder)
    assert kb.collections()[0].ann is (exact_threshold == 0)
    for text in ("owls at night", "honey bees", "a dog in the park"):
        vector = module_runner.run(kb.embedder.aembed([text]))[0]
        by_text = kb.search(text, k=4, mode="dense")
        by_vector = kb.search(vector=vector.tolist(), k=4)  # mode defaults to dense
        assert [(h.chunk_id, h.score) for h in by_vector] == \
            [(h.chunk_id, h.score) for h in by_text]
        assert by_text.sources[0] == by_vector.sources[0]
        hybrid = kb.search(text, k=4, mode="hybrid", vector=vector)
        assert [h.chunk_id for h in hybrid] == [h.chunk_id for h in kb.search(text, k=4)]
    kb.close()


def test_a_vector_from_another_model_or_of_another_size_is_refused(
        tmp_path: Path, module_runner: LoopRunner) -> None:
    kb = _small(tmp_path, module_runner)
    kb.ingest(_write(tmp_path / "docs", ANIMALS))
    vector = module_runner.run(kb.embedder.aembed(["owls"]))[0]
    with pytest.raises(RagError, match="built with hashing-32; embed the query with hashing-32"):
        kb.search(vector=vector, vector_model="openai:text-embedding-3-small")
    assert kb.search(vector=vector, vector_model="hashing-32", k=1).sources
    with pytest.raises(RagError, match=r"shape \(48,\).*32-d vectors of hashing-32"):
        kb.search(vector=[0.1] * 48)
    with pytest.raises(RagError, match="finite, non-zero"):
        kb.search(vector=[0.0] * 32)
    with pytest.raises(RagError, match="needs the query text.*mode='dense'"):
        kb.search(vector=vector, mode="hybrid")
    kb.close()

def test_async_api_works_from_another_event_loop(tmp_path: Path, module_runner: LoopRunner) -> None:
    folder = _write(tmp_path / "docs", {"a.md": "async kettles"})
    kb = _small(tmp_path, module_runner)

    async def main() -> list[str]:
        await kb.aingest(folder)
        results = await kb.asearch("kettles", k=1)
        await kb.aclose()
        return results.sources

    assert asyncio.run(main()) == [str(folder / "a.md")]


# -- bad input ------------------------------------------------------------------------------
def test_bad_search_arguments_raise_typed_errors(kb: Knowledge) -> None:
    with pytest.raises(RagError, match="mode='fuzzy'.*'dense', 'sparse' or 'hybrid'"):
        kb.search("x", mode="fuzzy")  # type: ignore[arg-type]
    for k in (0, -1, 1001, True):
        with pytest.raises(RagError, match="k=.*from 1 to 1000"):
            kb.search("x", k=k)
    with pytest.raises(RagError, match="query=.*empty"):
        kb.search("   ")
    with pytest.raises(RagError, match="filters.colour"):
        kb.search("x", filters={"colour": "red"})
    with pytest.raises(RagError, match="filters.type"):
        kb.search("x", filters={"type": "spreadsheet"})
    with pytest.raises(RagError, match="collection='no/slash'"):
        kb.search("x", collection="no/slash")


def test_missing_path_raises_and_unsupported_files_are_reported(tmp_path: Path,
                                                                module_runner: LoopRunner) -> None:
    kb = _small(tmp_path, module_runner)
    with pytest.raises(LoaderError, match="no-such-dir"):
        kb.ingest(tmp_path / "no-such-dir")
    folder = _write(tmp_path / "docs", {"a.md": "fine"})
    (folder / "b.xlsx").write_bytes(b"PK\x03\x04")
    report = kb.ingest(folder)
    assert report.docs_added == 1
    assert [Path(s.source).name for s in report.skipped] == ["b.xlsx"]
    kb.close()


def test_ingest_never_follows_a_link_out_of_the_folder_and_reports_every_entry_left_out(
        tmp_path: Path, module_runner: LoopRunner) -> None:
    private = _write(tmp_path / "private", {"secret.md": "the vault combination is zebra"})
    folder = _write(tmp_path / "docs", {"a.md": "kettles boil water"})
    (folder / "leak.md").symlink_to(private / "secret.md")
    (folder / "gone.md").symlink_to(folder / "deleted.md")
    os.mkfifo(folder / "pipe.txt")  # opening it would block the ingest forever
    kb = _small(tmp_path, module_runner)
    report = kb.ingest(folder)
    assert report.docs_added == 1
    reasons = {Path(s.source).name: s.reason for s in report.skipped}
    assert set(reasons) == {"leak.md", "gone.md", "pipe.txt"}
    assert "outside the ingested folder" in reasons["leak.md"]
    assert "dangling symlink" in reasons["gone.md"] and "FIFO" in reasons["pipe.txt"]
    assert kb.search("vault combination zebra", mode="sparse").sources == []
    assert kb.search("kettles", mode="sparse").sources == [str(folder / "a.md")]
    kb.close()


def test_ingest_flags_invalid_utf8_in_the_report_instead_of_guessing_latin1(
        tmp_path: Path, module_runner: LoopRunner) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "menu.txt").write_bytes("café au lait".encode("latin-1"))
    kb = _small(tmp_path, module_runner)
    report = kb.ingest(folder)
    assert report.docs_added == 1 and report.skipped == []
    [warning] = report.warnings
    assert warning.source == str(folder / "menu.txt") and "invalid UTF-8" in warning.reason
    assert kb.search("lait", mode="sparse")[0].text == "caf\ufffd au lait"
    kb.close()


def test_ingest_skips_binary_data_behind_a_text_header(tmp_path: Path,
                                                       module_runner: LoopRunner) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "trace.log").write_bytes(b"session start\n" * 1000 + bytes(range(256)) * 4096)
    kb = _small(tmp_path, module_runner)
    report = kb.ingest(folder)
    assert report.docs_added == 0 and report.chunks_added == 0
    assert "binary content" in report.skipped[0].reason
    kb.close()


# -- results ------------------------------------------------------------------------------
def test_results_html_escapes_text_and_marks_query_terms(tmp_path: Path,
                                                         module_runner: LoopRunner) -> None:
    folder = _write(tmp_path / "docs", {"x.md": "Beware <script>alert(1)</script> kettles"})
    kb = _small(tmp_path, module_runner)
    kb.ingest(folder)
    results = kb.search("kettles <b>", k=1)
    html = results._repr_html_()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<mark>kettles</mark>" in html and "&lt;b&gt;" in html
    frame = results.to_pandas()
    assert list(frame.columns)[:4] == ["rank", "score", "source", "section"]
    assert frame.loc[0, "source"] == str(folder / "x.md")
    assert "1 hits" in repr(results)
    kb.close()


def test_sparse_search_finds_a_small_collection_beside_a_large_one(
        tmp_path: Path, module_runner: LoopRunner) -> None:
    big = _write(tmp_path / "big", {f"k{i}.md": "kettle kettle kettle" for i in range(30)})
    small = _write(tmp_path / "small", {"only.md": "a kettle story"})
    kb = _small(tmp_path, module_runner)
    kb.ingest(big, collection="big")
    kb.ingest(small, collection="small")
    assert kb.search("kettle", k=1, mode="sparse", collection="small").sources == [
        str(small / "only.md")]
    assert len(kb.search("kettle", k=50, mode="sparse", collection="big")) == 30
    kb.close()


def test_ingest_shows_a_progress_bar_when_asked(tmp_path: Path, module_runner: LoopRunner,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    folder = _write(tmp_path / "docs", {"a.md": "one", "b.md": "two"})
    kb = _small(tmp_path, module_runner)
    kb.ingest(folder, progress=True)
    assert "embedding chunks" in capsys.readouterr().err
    (folder / "c.md").write_text("three")
    kb.ingest(folder)  # the Knowledge default (progress=False here) stays quiet
    assert "embedding chunks" not in capsys.readouterr().err
    kb.close()
