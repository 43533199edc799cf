"""LongTermMemory: semantics (dedupe, history, forget, purge, namespaces), scoring, concurrency,
consolidation, export/import and maintenance. Most tests use a tiny word-hash embedder."""

from __future__ import annotations

import asyncio
import math
import random
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from _writer import WordHashEmbedder, text_for

from aillm_lab.memory.long_term import (
    Hits,
    LongTermMemory,
    Memories,
    MemoryInputError,
    MemoryNotFound,
    ScoringWeights,
)
from aillm_lab.runtime import LoopRunner
from aillm_lab.testing import ScriptedModel

# SQLite 3.40.1 here has the WAL-reset bug, so LabDB warns once per process at open;
# test_transactions.py checks that warning explicitly.
pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")

DAY = 86_400.0


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def mem(tmp_path: Path, runner: LoopRunner, clock: Clock) -> LongTermMemory:
    return LongTermMemory(db_path=tmp_path / "lab.db", embedder=WordHashEmbedder(),
                          runner=runner, clock=clock)


def raw(mem: LongTermMemory, sql: str, params: tuple = ()) -> list[tuple]:
    """Read the file with plain sqlite3, as an outside observer would."""
    with sqlite3.connect(mem.path) as conn:
        return conn.execute(sql, params).fetchall()


# -- adding and reading -------------------------------------------------------------------
def test_added_memory_is_read_back_and_found_by_search(mem: LongTermMemory) -> None:
    tea = mem.add("Alice drinks green tea every morning", importance=0.7, tags=["pref"],
                  metadata={"source": "chat"})
    mem.add("The build server runs on port 8080")
    got = mem.get(tea.id)
    assert (got.text, got.importance, got.tags, got.metadata) == (
        "Alice drinks green tea every morning", 0.7, ["pref"], {"source": "chat"})
    assert got.live and got.strength == 1 and got.root_id == tea.id and got.version == 1
    hits = mem.search("what tea does Alice drink?")
    assert hits[0].memory.id == tea.id
    assert all(h.memory.id != tea.id for h in mem.search("build server port")[:1])


def test_settings_put_memory_in_lab_db(tmp_path: Path, runner: LoopRunner) -> None:
    from aillm_lab.config import LabSettings

    settings = LabSettings.load(home=tmp_path / "home")
    with LongTermMemory(settings, embedder=WordHashEmbedder(), runner=runner) as mem:
        mem.add("stored in the lab database")
        assert mem.path == settings.db_path
    assert raw(mem, "SELECT text FROM memories") == [("stored in the lab database",)]


def test_duplicate_add_keeps_one_memory_and_strengthens_it(mem: LongTermMemory,
                                                           clock: Clock) -> None:
    first = mem.add("Alice likes green tea", importance=0.4, tags=["a"], metadata={"k": 1})
    clock.now += 60
    again = mem.add("  alice LIKES   green tea ", importance=0.9, tags=["b"],
                    metadata={"k": 2, "new": True})
    assert again.id == first.id
    assert again.strength == 2 and again.importance == 0.9
    assert again.last_seen > first.last_seen and again.created_at == first.created_at
    assert again.tags == ["a", "b"] and again.metadata == {"k": 1, "new": True}
    assert raw(mem, "SELECT count(*) FROM memories") == [(1,)]
    lower = mem.add("alice likes green tea", importance=0.1)
    assert lower.strength == 3 and lower.importance == 0.9  # importance never drops


def test_near_duplicate_by_cosine_strengthens_instead_of_adding(tmp_path: Path,
                                                                runner: LoopRunner) -> None:
    # Different punctuation: different text hashes, identical word vectors (cosine 1.0).
    with LongTermMemory(db_path=tmp_path / "a.db", embedder=WordHashEmbedder(),
                        runner=runner) as mem:
        a = mem.add("Alice likes green tea.")
        b = mem.add("Alice likes green tea!")
        assert b.id == a.id and b.strength == 2
    with LongTermMemory(db_path=tmp_path / "b.db", embedder=WordHashEmbedder(),
                        runner=runner, dedupe_threshold=None) as exact_only:
        a = exact_only.add("Alice likes green tea.")
        b = exact_only.add("Alice likes green tea!")
        assert b.id != a.id


def test_adding_a_contradiction_never_deletes_the_old_memory(mem: LongTermMemory) -> None:
    old = mem.add("Bob lives in Paris")
    new = mem.add("Bob moved to Berlin last year")
    assert {m.id for m in mem.list()} == {old.id, new.id}
    assert mem.get(old.id).live


def test_add_many_writes_one_batch_and_dedupes_within_it(mem: LongTermMemory) -> None:
    texts = ["apples are red", "the sky is blue", "Apples are   RED", "grass is green"]
    out = mem.add_many(texts, importance=[0.2, 0.5, 0.8, 0.5])
    assert isinstance(out, Memories) and len(out) == 4
    assert out[0].id == out[2].id and out[0].strength == 2 and out[0].importance == 0.8
    assert len({m.id for m in out}) == 3
    again = mem.add_many(["the sky is blue", "snow is white"])
    assert again[0].id == out[1].id and again[0].strength == 2
    assert raw(mem, "SELECT count(*) FROM memories") == [(4,)]
    assert mem.add_many([]) == []


def test_dedupe_false_stores_every_copy(mem: LongTermMemory) -> None:
    a = mem.add("same words", dedupe=False)
    b = mem.add("same words", dedupe=False)
    assert a.id != b.id and len(mem.list()) == 2


# -- update, forget, purge ----------------------------------------------------------------
def test_update_supersedes_and_keeps_the_history_chain(mem: LongTermMemory,
                                                       clock: Clock) -> None:
    v1 = mem.add("Carol works at Acme", importance=0.6, tags=["job"])
    clock.now += 10
    v2 = mem.update(v1.id, "Carol works at Globex")
    clock.now += 10
    v3 = mem.update(v2.id, "Carol runs her own company", importance=0.9)
    assert [m.text for m in mem.history(v1.id)] == [
        "Carol works at Acme", "Carol works at Globex", "Carol runs her own company"]
    assert [m.id for m in mem.history(v3.id)] == [v1.id, v2.id, v3.id]
    old = mem.get(v1.id, include_invalid=True)
    assert not old.live and old.superseded_by == v2.id and old.valid_to == v2.created_at
    assert (v3.version, v3.root_id, v3.importance, v3.tags) == (3, v1.id, 0.9, ["job"])
    with pytest.raises(MemoryNotFound, match=f"superseded by '{v2.id}'"):
        mem.get(v1.id)
    assert [h.memory.id for h in mem.search("Carol company Acme Globex", k=5)] == [v3.id]
    with pytest.raises(MemoryNotFound, match="superseded"):
        mem.update(v1.id, "an edit of an old version")


def test_forget_hides_a_memory_from_search_and_get(mem: LongTermMemory) -> None:
    secret = mem.add("Dave's door code is 4711")
    other = mem.add("Dave likes jazz")
    forgotten = mem.forget(secret.id)
    assert forgotten.forgotten_at is not None and not forgotten.live
    assert all(h.memory.id != secret.id for h in mem.search("Dave door code 4711"))
    with pytest.raises(MemoryNotFound, match="forgotten"):
        mem.get(secret.id)
    assert mem.get(secret.id, include_invalid=True).text == "Dave's door code is 4711"
    assert [m.id for m in mem.list()] == [other.id]
    assert mem.forget(secret.id).forgotten_at == forgotten.forgotten_at  # idempotent
    assert mem.add("Dave's door code is 4711").id != secret.id  # a forgotten one is not reused


def test_purge_erases_the_memory_its_history_fts_rows_and_vectors(mem: LongTermMemory) -> None:
    v1 = mem.add("Erin's passport number is X123")
    v2 = mem.update(v1.id, "Erin's passport number is Y456")
    keep = mem.add("Erin likes hiking")
    assert mem.purge(v2.id) == 2
    for mid in (v1.id, v2.id):
        with pytest.raises(MemoryNotFound, match="no such memory"):
            mem.get(mid, include_invalid=True)
    assert raw(mem, "SELECT count(*) FROM memories") == [(1,)]
    assert raw(mem, "SELECT rowid FROM memory_fts WHERE memory_fts MATCH 'passport'") == []
    assert raw(mem, "SELECT count(*) FROM memory_fts") == [(1,)]
    assert raw(mem, "SELECT count(*) FROM memory_vectors") == [(1,)]
    assert [h.memory.id for h in mem.search("Erin passport hiking")] == [keep.id]


def test_purge_a_namespace_leaves_the_others(mem: LongTermMemory) -> None:
    mem.add_many(["one fact", "two facts"], namespace="project/alpha")
    kept = mem.add("a user fact")
    assert mem.purge(namespace="project/alpha") == 2
    assert mem.list("project/alpha") == [] and [m.id for m in mem.list()] == [kept.id]
    assert raw(mem, "SELECT count(*) FROM memory_vectors") == [(1,)]


def test_namespaces_isolate_search_dedupe_and_listing(mem: LongTermMemory) -> None:
    u = mem.add("prefers dark mode", namespace="user")
    a = mem.add("prefers dark mode", namespace="agent:coder")
    assert u.id != a.id and u.strength == a.strength == 1
    assert [h.memory.id for h in mem.search("dark mode", namespace="user")] == [u.id]
    assert [h.memory.id for h in mem.search("dark mode", namespace="agent:coder")] == [a.id]
    assert mem.search("dark mode", namespace="project/none") == []
    assert [m.id for m in mem.list(None)] == [u.id, a.id]


# -- bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "argument"), [
    ({"text": ""}, "text"), ({"text": "   "}, "text"), ({"text": None}, "text"),
    ({"text": "x" * 100_001}, "text"),
    ({"importance": 1.5}, "importance"), ({"importance": -0.1}, "importance"),
    ({"importance": math.nan}, "importance"), ({"importance": True}, "importance"),
    ({"importance": "high"}, "importance"),
    ({"namespace": ""}, "namespace"), ({"namespace": "has space"}, "namespace"),
    ({"namespace": 3}, "namespace"), ({"tags": "pref"}, "tags"), ({"tags": [""]}, "tags"),
    ({"metadata": {"f": object()}}, "metadata"), ({"metadata": ["a"]}, "metadata"),
])
def test_bad_add_arguments_raise_typed_errors_naming_the_argument(
        mem: LongTermMemory, kwargs: dict, argument: str) -> None:
    args = {"text": "a fact", **kwargs}
    with pytest.raises(MemoryInputError) as info:
        mem.add(**args)
    assert info.value.argument == argument and str(info.value).startswith(f"{argument} = ")
    assert not mem.path.exists()  # refused before the database was even opened


def test_bad_arguments_elsewhere_raise_typed_errors(mem: LongTermMemory) -> None:
    m = mem.add("a fact")
    with pytest.raises(MemoryNotFound, match="id = 'feedbeef'"):
        mem.get("feedbeef")
    for call in (lambda: mem.update("feedbeef", "x"), lambda: mem.forget("feedbeef"),
                 lambda: mem.history("feedbeef"), lambda: mem.purge("feedbeef")):
        with pytest.raises(MemoryNotFound, match="no such memory"):
            call()
    cases = [(lambda: mem.get("bad id!"), "id"), (lambda: mem.search(""), "query"),
             (lambda: mem.search("x", k=0), "k"), (lambda: mem.update(m.id, ""), "text"),
             (lambda: mem.update(m.id, "y", importance=2), "importance"),
             (lambda: mem.purge(), "id"), (lambda: mem.purge(m.id, namespace="user"), "id"),
             (lambda: mem.add_many(["ok", ""]), "texts[1]"),
             (lambda: mem.add_many([""]), "texts[0]"),
             (lambda: mem.add_many("not a list"), "texts"),
             (lambda: mem.add_many(["a", "b"], importance=[0.1]), "importance"),
             (lambda: mem.checkpoint("SOMETIMES"), "mode")]
    for call, argument in cases:
        with pytest.raises(MemoryInputError) as info:
            call()
        assert info.value.argument == argument, argument
    with pytest.raises(MemoryInputError, match="synchronous"):
        LongTermMemory(db_path=mem.path, synchronous="OFF")  # type: ignore[arg-type]
    for option, value in (("dedupe_threshold", 1.5), ("dedupe_threshold", 0),
                          ("checkpoint_every", 0), ("checkpoint_interval_s", -1.0)):
        with pytest.raises(MemoryInputError) as info:
            LongTermMemory(db_path=mem.path, **{option: value})
        assert info.value.argument == option


@pytest.mark.parametrize(("field", "value"), [
    ("similarity", -1), ("importance", 11), ("half_life_days", 0), ("text_weight", 1.5),
    ("candidates", 0), ("recency_exponent", 1)])
def test_bad_scoring_weights_are_refused_naming_the_field(field: str, value: float) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=field):
        ScoringWeights(**{field: value})


def test_an_embedder_returning_the_wrong_shape_is_refused(tmp_path: Path,
                                                          runner: LoopRunner) -> None:
    class Broken(WordHashEmbedder):
        async def aembed(self, texts: list[str]) -> np.ndarray:
            return np.ones((len(texts), self.dim + 1), dtype=np.float32)

    mem = LongTermMemory(db_path=tmp_path / "lab.db", embedder=Broken(), runner=runner)
    with pytest.raises(MemoryInputError, match=r"embedder = .*shape"):
        mem.add("anything")


# -- scoring --------------------------------------------------------------------------------
def test_importance_changes_the_ranking(mem: LongTermMemory) -> None:
    closer = mem.add("coffee order latte oat milk", importance=0.2)
    important = mem.add("coffee order flat white", importance=1.0)
    query = "coffee order latte oat"
    assert [h.memory.id for h in mem.search(query, k=2)] == [important.id, closer.id]
    off = ScoringWeights(importance=0)
    assert [h.memory.id for h in mem.search(query, k=2, weights=off)] == [closer.id,
                                                                          important.id]
    hit = mem.search(query, k=2)[1]
    assert hit.importance_factor == pytest.approx(0.2)
    assert hit.score == pytest.approx(hit.similarity * 0.2 * hit.recency_factor)


def test_recency_changes_the_ranking(mem: LongTermMemory, clock: Clock) -> None:
    old = mem.add("meeting room booked Monday morning standup")
    clock.now += 90 * DAY
    new = mem.add("meeting room booked Friday")
    query = "meeting room booked Monday morning"
    assert [h.memory.id for h in mem.search(query, k=2)] == [new.id, old.id]
    old_hit = mem.search(query, k=2)[1]
    assert old_hit.recency_factor == pytest.approx(0.5 ** 3)  # 90 days, 30-day half-life
    off = ScoringWeights(recency=0)
    assert [h.memory.id for h in mem.search(query, k=2, weights=off)] == [old.id, new.id]
    slow = ScoringWeights(half_life_days=10_000)
    assert mem.search(query, k=2, weights=slow)[0].memory.id == old.id


def test_strengthening_refreshes_recency(mem: LongTermMemory, clock: Clock) -> None:
    a = mem.add("project deadline is in March")
    clock.now += 60 * DAY
    mem.add("deadline for the project moved")
    before = mem.search("project deadline", k=2)
    assert before[0].memory.id != a.id
    clock.now += DAY
    mem.add("Project deadline is in March.")  # a near-duplicate: last_seen becomes now
    assert mem.search("project deadline", k=2)[0].memory.id == a.id


def test_full_text_candidates_count_when_vectors_disagree(mem: LongTermMemory) -> None:
    hit = mem.add("kubernetes")
    mem.add("an unrelated note about gardening")
    only_text = ScoringWeights(text_weight=1.0)
    res = mem.search("kubernetes cluster", weights=only_text)
    assert [h.memory.id for h in res] == [hit.id] and res[0].text_score == 1.0


# -- concurrency ----------------------------------------------------------------------------
def test_four_concurrent_writers_lose_nothing(mem: LongTermMemory, runner: LoopRunner) -> None:
    rng = random.Random(7)
    texts = [[text_for(f"task{t}", i, rng) for i in range(500)] for t in range(4)]
    assert len({x for chunk in texts for x in chunk}) == 2000

    async def writer(task: int) -> list[str]:
        return [(await mem.aadd(text)).id for text in texts[task]]

    async def main() -> list[list[str]]:
        return await asyncio.gather(*(writer(t) for t in range(4)))

    ids = runner.run(main())
    flat = [i for chunk in ids for i in chunk]
    assert len(set(flat)) == 2000
    assert raw(mem, "SELECT count(*) FROM memories WHERE valid_to IS NULL") == [(2000,)]
    assert raw(mem, "SELECT count(*) FROM memory_vectors") == [(2000,)]
    assert raw(mem, "PRAGMA integrity_check") == [("ok",)]


def test_a_second_instance_sees_the_first_ones_writes(tmp_path: Path,
                                                      runner: LoopRunner) -> None:
    db = tmp_path / "lab.db"
    a = LongTermMemory(db_path=db, embedder=WordHashEmbedder(), runner=runner)
    b = LongTermMemory(db_path=db, embedder=WordHashEmbedder(), runner=runner)
    first = a.add("shared fact about penguins")
    assert b.search("penguins")[0].memory.id == first.id  # b loads its cache now
    second = a.add("another fact about walruses")
    assert b.search("walruses")[0].memory.id == second.id  # b notices a's commit
    assert b.add("shared fact about penguins!").id == first.id  # and dedupes against it


def test_memory_reopens_after_close_and_after_its_runner_restarts(
        mem: LongTermMemory, runner: LoopRunner, tmp_path: Path) -> None:
    first = mem.add("Mona collects stamps")
    mem.close()
    mem.close()  # idempotent
    assert mem.search("stamps")[0].memory.id == first.id  # reopened on demand
    runner.close()  # a new loop starts on the next call: no stale lock or cache
    other = LongTermMemory(db_path=mem.path, embedder=WordHashEmbedder(),
                           runner=LoopRunner("other-loop"))
    second = other.add("Mona collects coins")
    vectors_only = ScoringWeights(text_weight=0)  # proves the vector cache was reloaded
    assert mem.search("coins", weights=vectors_only)[0].memory.id == second.id
    assert mem.add("Mona collects stamps!").id == first.id
    other.close()


def test_async_api_works_from_another_event_loop(mem: LongTermMemory) -> None:
    async def main() -> tuple[str, str]:
        m = await mem.aadd("async fact about otters")
        hits = await mem.asearch("otters")
        return m.id, hits[0].memory.id

    mid, found = asyncio.run(main())
    assert mid == found


# -- consolidation --------------------------------------------------------------------------
def test_consolidation_summarises_similar_memories_and_links_sources(
        mem: LongTermMemory) -> None:
    cats = mem.add_many(["Frank has a cat named Tom", "Frank's cat Tom is grey",
                         "Frank feeds his cat Tom twice a day"], importance=[0.3, 0.8, 0.5])
    other = mem.add("The quarterly report is due on Friday")
    model = ScriptedModel(["Frank has a grey cat named Tom, fed twice a day."])
    summaries = mem.consolidate("user", model, threshold=0.3)
    assert len(summaries) == 1
    s = summaries[0]
    assert s.text == "Frank has a grey cat named Tom, fed twice a day."
    assert sorted(s.sources) == sorted(m.id for m in cats) and s.importance == 0.8
    assert s.strength == 3 and s.metadata["consolidated_by"] == model.id
    prompt = model.requests[0].messages[-1].text
    assert all(m.text in prompt for m in cats) and other.text not in prompt
    for m in cats:
        src = mem.get(m.id, include_invalid=True)
        assert src.superseded_by == s.id and not src.live
    assert {m.id for m in mem.list()} == {s.id, other.id}
    assert mem.search("Frank cat Tom")[0].memory.id == s.id
    assert raw(mem, "SELECT count(*) FROM memory_links WHERE summary_id = ?", (s.id,)) == [(3,)]


def test_purging_a_summary_brings_back_the_memories_it_replaced(mem: LongTermMemory) -> None:
    a, b, c = mem.add_many(["Liam runs marathons", "Liam runs marathons in Berlin",
                            "Liam runs marathons every spring"])
    [summary] = mem.consolidate("user", ScriptedModel(["Liam runs marathons, Berlin too"]),
                                threshold=0.5)
    assert sorted(summary.sources) == sorted([a.id, b.id, c.id])
    mem.forget(c.id)  # a source may still be forgotten: it stays hidden below
    assert mem.purge(summary.id) == 1
    assert {m.id for m in mem.list()} == {a.id, b.id}
    assert mem.get(b.id).superseded_by is None
    assert mem.search("Liam Berlin")[0].memory.id == b.id
    assert raw(mem, "SELECT count(*) FROM memory_links") == [(0,)]


def test_consolidation_with_nothing_similar_calls_no_model(mem: LongTermMemory) -> None:
    mem.add_many(["alpha beta", "gamma delta", "epsilon zeta"])
    model = ScriptedModel()
    assert mem.consolidate("user", model, threshold=0.9) == []
    assert model.requests == []


def test_consolidation_through_a_lab_takes_a_model_string_and_goes_through_its_gateway(
        tmp_path: Path) -> None:
    import aillm_lab as al

    with al.Lab(home=tmp_path / "home") as lab:
        mem = lab.memory
        mem.add_many(["Gina plays violin", "Gina plays violin in an orchestra"], namespace="u")
        with lab.scope(budget_usd=1.0) as run:
            summaries = mem.consolidate("u", "scripted:echo", threshold=0.5)
        assert len(summaries) == 1 and "Gina plays violin" in summaries[0].text
        calls = lab.calls()
        assert list(calls["model"]) == ["scripted:echo"] and list(calls["run_id"]) == [run.run_id]
        with pytest.raises(MemoryInputError, match="max_group"):
            mem.consolidate("u", "scripted:echo", max_group=1)


def test_a_memory_without_a_lab_refuses_a_model_string(mem: LongTermMemory) -> None:
    mem.add_many(["Gina plays violin", "Gina plays violin in an orchestra"])
    with pytest.raises(MemoryInputError, match="needs a Lab's gateway"):
        mem.consolidate("user", "scripted:echo", threshold=0.5)


# -- export / import ------------------------------------------------------------------------
def _populated(mem: LongTermMemory) -> None:
    a = mem.add("Hank speaks Dutch", importance=0.9, tags=["lang"], metadata={"src": "cv"})
    mem.update(a.id, "Hank speaks Dutch and German")
    mem.forget(mem.add("Hank's old phone number").id)
    mem.add_many(["Hank owns a red bike", "Hank's red bike is a racer"], namespace="agent:x")
    mem.consolidate("agent:x", ScriptedModel(["Hank owns a red racing bike"]), threshold=0.4)


def test_jsonl_round_trip_preserves_everything_and_is_idempotent(
        mem: LongTermMemory, tmp_path: Path, runner: LoopRunner) -> None:
    _populated(mem)
    path = tmp_path / "export" / "memories.jsonl"
    assert mem.export_jsonl(path) == 6
    copy = LongTermMemory(db_path=tmp_path / "copy.db", embedder=WordHashEmbedder(),
                          runner=runner)
    report = copy.import_jsonl(path)
    assert (report.added, report.skipped, report.links) == (6, 0, 2)
    assert copy.export() == mem.export()
    again = copy.import_jsonl(path)
    assert (again.added, again.skipped) == (0, 6)
    assert copy.export() == mem.export()
    assert copy.search("Hank German")[0].memory.text == "Hank speaks Dutch and German"
    assert copy.search("red bike", namespace="agent:x")[0].memory.sources


def test_dataframe_round_trip(mem: LongTermMemory, tmp_path: Path, runner: LoopRunner) -> None:
    _populated(mem)
    frame = mem.to_pandas(None, include_invalid=True)
    assert len(frame) == 6 and {"id", "text", "importance", "sources"} <= set(frame.columns)
    copy = LongTermMemory(db_path=tmp_path / "copy.db", embedder=WordHashEmbedder(),
                          runner=runner)
    assert copy.from_pandas(frame).added == 6
    assert copy.export() == mem.export()
    assert copy.from_pandas(frame).skipped == 6


def test_import_refuses_a_conflicting_id_and_writes_nothing(mem: LongTermMemory) -> None:
    m = mem.add("original text")
    rec = mem.export()[0]
    fresh = {**rec, "id": "0123abcd", "root_id": "0123abcd", "text": "new"}
    with pytest.raises(MemoryInputError, match="already stored with different text"):
        mem.import_records([fresh, {**rec, "text": "tampered"}])
    assert [x.id for x in mem.list()] == [m.id]
    with pytest.raises(MemoryInputError, match=r"records\[0\]"):
        mem.import_records([{"text": "no id"}])
    with pytest.raises(MemoryInputError, match="records"):
        mem.import_records({"id": "x"})  # type: ignore[arg-type]


# -- reprs ----------------------------------------------------------------------------------
def test_lists_show_as_html_tables_and_convert_to_pandas(mem: LongTermMemory) -> None:
    mem.add("Ivy's <b>bold</b> claim", importance=0.3)
    hits = mem.search("Ivy claim")
    assert isinstance(hits, Hits)
    html = hits._repr_html_()
    assert "<table>" in html and "&lt;b&gt;bold&lt;/b&gt;" in html and "<b>" not in html
    assert "&lt;b&gt;" in mem.list()._repr_html_() and "live" in mem.list()._repr_html_()
    frame = hits.to_pandas()
    assert list(frame["importance"]) == [0.3] and "score" in frame.columns
    assert mem.list().to_pandas()["text"].tolist() == ["Ivy's <b>bold</b> claim"]


def test_real_embedder_finds_a_paraphrase(tmp_path: Path, runner: LoopRunner) -> None:
    embeddings = pytest.importorskip("aillm_lab.rag.embeddings")
    pytest.importorskip("sentence_transformers")
    mem = LongTermMemory(db_path=tmp_path / "lab.db", embedder=embeddings.default_embedder(),
                         runner=runner)
    dog = mem.add("The user's dog is called Rex")
    mem.add_many(["The quarterly budget was approved", "Paris is the capital of France"])
    hits = mem.search("What is the name of my pet?", weights=ScoringWeights(text_weight=0))
    assert hits[0].memory.id == dog.id and hits[0].vector_score > 0.3


# -- the vector cache -----------------------------------------------------------------------
def test_vector_cache_matches_brute_force_after_growth_removal_and_compaction(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from aillm_lab.memory import _vectors

    monkeypatch.setattr(_vectors, "_CHUNK", 10)  # blocks of 128 vectors in nearest()
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(3000, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    cache = _vectors.VectorCache(16)
    cache.add(list(range(1000, 4000)), vecs)  # grows 64 -> 4096 rows
    removed = set(range(1000, 4000, 3)) | set(range(1001, 4000, 3))
    cache.remove(sorted(removed))  # two thirds gone: compacts
    holes = set(range(1002, 1300, 3))
    cache.remove(sorted(holes))  # a few more: zeroed rows stay until the next compaction
    removed |= holes
    alive = np.array([s for s in range(1000, 4000) if s not in removed])
    assert len(cache) == len(alive)
    queries = rng.normal(size=(5, 16)).astype(np.float32)
    sims = queries @ vecs[alive - 1000].T
    seqs, best = cache.nearest(queries)
    assert list(seqs) == list(alive[sims.argmax(axis=1)])
    assert np.allclose(best, sims.max(axis=1), atol=1e-5)
    top = cache.top(queries[0], 5)
    assert [s for s, _ in top] == list(alive[np.argsort(-sims[0])[:5]])
    assert cache.cosines([top[0][0], 1000], queries[0])[1] == 0.0  # 1000 was removed


def test_large_caches_compute_cosines_in_a_worker_thread(
        mem: LongTermMemory, monkeypatch: pytest.MonkeyPatch) -> None:
    from aillm_lab.memory import _batch

    mem.add_many([f"fact {i} about topic{i}" for i in range(20)])
    calls: list[str] = []
    real = asyncio.to_thread

    async def spy(fn, *args):  # type: ignore[no-untyped-def]
        calls.append(fn.__name__)
        return await real(fn, *args)

    monkeypatch.setattr(_batch, "_OFFLOAD_FLOATS", 0)
    monkeypatch.setattr(_batch.asyncio, "to_thread", spy)
    assert mem.search("topic7")[0].memory.text == "fact 7 about topic7"
    assert mem.add("fact 3 about topic3!").strength == 2
    assert calls == ["top", "nearest"]


def test_an_embedder_that_learns_its_dimension_late_still_consolidates(
        mem: LongTermMemory, runner: LoopRunner) -> None:
    mem.add_many(["Jack sails a blue boat", "Jack's blue boat is a sloop"])

    class LateDim(WordHashEmbedder):
        async def aembed(self, texts: list[str]) -> np.ndarray:
            self.dim = 512
            return await WordHashEmbedder(512).aembed(texts)

    late = LateDim(512)
    late.dim = 0
    other = LongTermMemory(db_path=mem.path, embedder=late, runner=runner)
    assert other.reindex() == 2 and other.reindex() == 0
    out = other.consolidate("user", ScriptedModel(["Jack sails a blue sloop"]), threshold=0.4)
    assert [m.text for m in out] == ["Jack sails a blue sloop"] and len(out[0].sources) == 2


def test_switching_embedders_warns_until_reindexed(mem: LongTermMemory, runner: LoopRunner,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    kept = mem.add("Kate keeps bees in the garden")
    other = LongTermMemory(db_path=mem.path, embedder=WordHashEmbedder(512), runner=runner)
    with caplog.at_level("WARNING", logger="aillm_lab.memory"):
        hits = other.search("Kate bees", weights=ScoringWeights(text_weight=0))
    assert hits == [] and "1 live memories" in caplog.text and "reindex()" in caplog.text
    assert other.search("Kate bees")[0].vector_score == 0.0  # full text still finds it
    assert other.reindex("user") == 1
    caplog.clear()
    with caplog.at_level("WARNING", logger="aillm_lab.memory"):
        hit = other.search("Kate bees", weights=ScoringWeights(text_weight=0))[0]
    assert hit.memory.id == kept.id and hit.vector_score > 0.5 and caplog.text == ""
    with pytest.raises(MemoryInputError, match="batch"):
        other.reindex(batch=0)
