"""The SQL side of search on its own: FTS5 queries, BM25, filters, RRF and chunk rows."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aillm_lab.rag.embeddings import HashingEmbedder
from aillm_lab.rag.retriever import Knowledge
from aillm_lab.rag.sparse import (
    Filters,
    RagError,
    chunk_rows,
    filtered_ids,
    fts_query,
    rrf,
    source_key,
    sparse_search,
)
from aillm_lab.runtime import LoopRunner

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")


@pytest.fixture()
def kb(tmp_path: Path) -> Iterator[Knowledge]:
    runner = LoopRunner("rag-sparse-test")
    docs = tmp_path / "docs"
    (docs / "api").mkdir(parents=True)
    (docs / "api" / "load.md").write_text("# load_settings\n\nReads the settings file.")
    (docs / "api" / "dump.md").write_text("# dump_settings\n\nWrites the settings file.")
    (docs / "notes.txt").write_text("Kettles boil water quickly.")
    kb = Knowledge(db_path=tmp_path / "lab.db", index_dir=tmp_path / "index",
                   embedder=HashingEmbedder(dim=16), runner=runner, progress=False)
    kb.ingest(docs / "api", tags=["api"])
    kb.ingest(docs / "notes.txt")
    yield kb
    kb.close()
    runner.close()


def _cid(kb: Knowledge) -> int:
    return kb.runner.run(kb._collection_id("default", create=False))


def test_fts_query_quotes_each_term() -> None:
    assert fts_query('foo() E1234: say "hi"') == '"foo()" OR "E1234:" OR "say" OR """hi"""'
    assert fts_query("?? !!") == ""


def test_fts_query_drops_common_words_unless_nothing_else_is_left() -> None:
    assert fts_query("how do I use the read_options function") == (
        '"use" OR "read_options" OR "function"')
    assert fts_query("the of and") == '"the" OR "of" OR "and"'


def test_rrf_rewards_items_ranked_well_in_both_lists() -> None:
    fused = rrf([[(1, 0.9), (2, 0.8), (3, 0.7)], [(3, 5.0), (2, 4.0), (4, 1.0)]])
    assert [i for i, _ in fused] == [3, 2, 1, 4]  # in both lists beats first in one
    assert fused[0][1] == pytest.approx(1 / 63 + 1 / 61)
    assert fused[2][1] == pytest.approx(1 / 61)


def test_source_key_is_absolute_and_keeps_a_trailing_slash(tmp_path: Path) -> None:
    assert source_key(tmp_path / "a" / ".." / "b.md") == str(tmp_path / "b.md")
    assert source_key(f"{tmp_path}/dir/") == f"{tmp_path}/dir/"


def test_filters_parse_dicts_and_name_the_bad_key() -> None:
    flt = Filters.parse({"type": "markdown", "tags": "api"})
    assert flt is not None and flt.type == ["markdown"] and flt.tags == ["api"]
    assert Filters.parse(None) is None and Filters.parse(flt) is flt
    with pytest.raises(RagError, match="filters.colour"):
        Filters.parse({"colour": "red"})
    with pytest.raises(RagError, match="must be a dict"):
        Filters.parse(["markdown"])  # type: ignore[arg-type]


def test_filters_to_sql_binds_every_value_as_a_parameter() -> None:
    where, params = Filters(source="*.md", tags=["x'; DROP TABLE t; --"],
                            after=datetime(2020, 1, 1, tzinfo=UTC)).to_sql()
    assert "DROP" not in where and "x'; DROP TABLE t; --" in params
    assert params[0] == "*.md" and where.count("?") == len(params)
    assert Filters().to_sql() == ("1", [])


def test_sparse_search_ranks_by_bm25_and_applies_filters(kb: Knowledge) -> None:
    cid = _cid(kb)
    hits = kb.runner.run(sparse_search(kb.db, cid, fts_query("load_settings"), 5, None))
    rows = kb.runner.run(chunk_rows(kb.db, [i for i, _ in hits]))
    assert Path(rows[hits[0][0]]["source"]).name == "load.md"
    assert all(a[1] >= b[1] for a, b in zip(hits, hits[1:], strict=False))
    only_txt = Filters(type=["text"])
    filtered = kb.runner.run(sparse_search(kb.db, cid, fts_query("settings kettles"), 5,
                                           only_txt))
    assert [Path(kb.runner.run(chunk_rows(kb.db, [i]))[i]["source"]).name
            for i, _ in filtered] == ["notes.txt"]
    assert kb.runner.run(sparse_search(kb.db, cid, "", 5, None)) == []


def test_filtered_ids_and_chunk_rows_carry_tags_and_sections(kb: Knowledge) -> None:
    cid = _cid(kb)
    ids = kb.runner.run(filtered_ids(kb.db, cid, Filters(tags=["api"])))
    rows = kb.runner.run(chunk_rows(kb.db, ids.tolist()))
    assert sorted(Path(r["source"]).name for r in rows.values()) == ["dump.md", "load.md"]
    assert {r["section"] for r in rows.values()} == {"load_settings", "dump_settings"}
    assert all(r["metadata"]["tags"] == ["api"] for r in rows.values())
    assert kb.runner.run(chunk_rows(kb.db, [])) == {}
