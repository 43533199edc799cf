"""LongTermMemory's async methods through their own door: awaited from a foreign event loop
(``asyncio.run`` in the test thread, as a script would), each hopping onto the runner and
back with its result; and every one of them has a sync twin with the same parameters."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from _writer import WordHashEmbedder

from aillm_lab.memory.long_term import (
    Hits,
    ImportReport,
    LongTermMemory,
    Memories,
    Memory,
    MemoryNotFound,
    ScoringWeights,
)
from aillm_lab.runtime import LoopRunner
from aillm_lab.testing import ScriptedModel

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")

RUNNER = "memory-async-door-loop"
T = TypeVar("T")


class ThreadNotingEmbedder(WordHashEmbedder):
    """Notes the thread of every embedding call: all of them must run on the runner."""

    def __init__(self, dim: int = 256) -> None:
        super().__init__(dim)
        self.threads: set[str] = set()

    async def aembed(self, texts: list[str]) -> np.ndarray:
        self.threads.add(threading.current_thread().name)
        return await super().aembed(texts)


@pytest.fixture
def runner() -> Iterator[LoopRunner]:
    r = LoopRunner(name=RUNNER)
    yield r
    r.close()


@pytest.fixture
def embedder() -> ThreadNotingEmbedder:
    return ThreadNotingEmbedder()


@pytest.fixture
def mem(tmp_path: Path, runner: LoopRunner, embedder: ThreadNotingEmbedder) -> LongTermMemory:
    return LongTermMemory(db_path=tmp_path / "lab.db", embedder=embedder, runner=runner)


def foreign(main: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a fresh loop in this thread, never the runner's."""
    assert threading.current_thread().name != RUNNER
    return asyncio.run(main)


# -- each async method, awaited from another loop -------------------------------------------
def test_aadd_and_aadd_many_store_memories_and_run_on_the_runner(
        mem: LongTermMemory, embedder: ThreadNotingEmbedder) -> None:
    async def main() -> tuple[Memory, Memories, Memory]:
        one = await mem.aadd("Olga plays the cello", importance=0.7, tags=["music"])
        many = await mem.aadd_many(["Olga lives in Riga", "Olga has two sisters"],
                                   namespace="family")
        again = await mem.aadd("olga plays the CELLO")
        return one, many, again

    one, many, again = foreign(main())
    assert one.text == "Olga plays the cello" and one.importance == 0.7 and one.tags == ["music"]
    assert isinstance(many, Memories) and [m.namespace for m in many] == ["family"] * 2
    assert again.id == one.id and again.strength == 2
    assert embedder.threads == {RUNNER}


def test_asearch_aget_ahistory_and_alist_read_back_what_was_written(
        mem: LongTermMemory) -> None:
    first = mem.add("Pavel drives a blue van")
    second = mem.update(first.id, "Pavel drives a green van")
    other = mem.add("The office opens at nine")

    async def main() -> tuple[Hits, Memory, Memory, Memories, Memories, Memories]:
        hits = await mem.asearch("which van does Pavel drive", k=1)
        got = await mem.aget(second.id)
        old = await mem.aget(first.id, include_invalid=True)
        history = await mem.ahistory(second.id)
        listed = await mem.alist()
        everything = await mem.alist(None, include_invalid=True)
        with pytest.raises(MemoryNotFound, match="superseded"):
            await mem.aget(first.id)
        return hits, got, old, history, listed, everything

    hits, got, old, history, listed, everything = foreign(main())
    assert [h.memory.id for h in hits] == [second.id]
    assert got.text == "Pavel drives a green van" and not old.live
    assert [m.id for m in history] == [first.id, second.id]
    assert [m.id for m in listed] == [second.id, other.id]
    assert len(everything) == 3


def test_aupdate_aforget_and_apurge_change_what_is_stored(mem: LongTermMemory) -> None:
    a = mem.add("Quinn's locker is number 12")
    b = mem.add("Quinn's bike lock code is 0815", namespace="secrets")

    async def main() -> tuple[Memory, Memory, int, int]:
        newer = await mem.aupdate(a.id, "Quinn's locker is number 14", importance=0.9)
        hidden = await mem.aforget(b.id)
        erased = await mem.apurge(newer.id)
        emptied = await mem.apurge(namespace="secrets")
        return newer, hidden, erased, emptied

    newer, hidden, erased, emptied = foreign(main())
    assert newer.version == 2 and newer.root_id == a.id and newer.importance == 0.9
    assert hidden.id == b.id and hidden.forgotten_at is not None and not hidden.live
    assert (erased, emptied) == (2, 1)  # both versions of the locker; the forgotten secret
    assert mem.list(None, include_invalid=True) == []


def test_aconsolidate_replaces_a_group_by_its_summary(mem: LongTermMemory) -> None:
    cats = mem.add_many(["Rosa has a dog named Rex", "Rosa's dog Rex is brown"])
    model = ScriptedModel(["Rosa has a brown dog named Rex."])

    async def main() -> Memories:
        return await mem.aconsolidate("user", model, threshold=0.3)

    [summary] = foreign(main())
    assert summary.text == "Rosa has a brown dog named Rex."
    assert sorted(summary.sources) == sorted(m.id for m in cats)
    assert [m.id for m in mem.list()] == [summary.id]


def test_areindex_embeds_what_another_embedder_wrote(mem: LongTermMemory,
                                                    runner: LoopRunner) -> None:
    mem.add_many(["Sam grows tomatoes", "Sam keeps bees"])
    wider = LongTermMemory(db_path=mem.path, embedder=ThreadNotingEmbedder(512), runner=runner)

    async def main() -> tuple[int, int, float]:
        done, again = await wider.areindex(batch=1), await wider.areindex()
        hits = await wider.asearch("tomatoes", weights=ScoringWeights(text_weight=0))
        return done, again, hits[0].vector_score

    done, again, vector_score = foreign(main())
    assert (done, again) == (2, 0) and vector_score > 0.5


def test_aexport_and_aimport_records_round_trip(mem: LongTermMemory, tmp_path: Path,
                                                runner: LoopRunner) -> None:
    first = mem.add("Tara speaks Finnish", tags=["lang"])
    mem.update(first.id, "Tara speaks Finnish and Swedish")
    copy = LongTermMemory(db_path=tmp_path / "copy.db", embedder=WordHashEmbedder(),
                          runner=runner)

    async def main() -> tuple[list[dict[str, object]], ImportReport, ImportReport]:
        records = await mem.aexport()
        return records, await copy.aimport_records(records), await copy.aimport_records(records)

    records, report, again = foreign(main())
    assert [r["version"] for r in records] == [1, 2]
    assert (report.added, report.skipped, again.added, again.skipped) == (2, 0, 0, 2)
    assert copy.export() == mem.export()


def test_acheckpoint_and_aclose_then_async_with_reopens(mem: LongTermMemory) -> None:
    mem.add("Uma writes in pencil")

    async def main() -> tuple[tuple[int, int, int], list[str]]:
        busy_frames_done = await mem.acheckpoint("TRUNCATE")
        await mem.aclose()
        await mem.aclose()  # idempotent
        async with mem:  # reopens on demand, closes on the way out
            texts = [m.text for m in await mem.alist()]
        return busy_frames_done, texts

    (busy, frames, done), texts = foreign(main())
    assert busy == 0 and frames == done == 0 and texts == ["Uma writes in pencil"]


def test_timeout_bounds_an_async_call_from_another_loop(tmp_path: Path,
                                                        runner: LoopRunner) -> None:
    class Slow(WordHashEmbedder):
        async def aembed(self, texts: list[str]) -> np.ndarray:
            await asyncio.sleep(5)
            return await super().aembed(texts)

    mem = LongTermMemory(db_path=tmp_path / "lab.db", embedder=Slow(), runner=runner,
                         timeout=0.2)
    assert mem.sync_timeout == 0.2

    async def main() -> None:
        await mem.aadd("never stored")

    with pytest.raises(TimeoutError):
        foreign(main())
    mem.embedder.aembed = WordHashEmbedder().aembed  # type: ignore[method-assign]
    assert mem.list() == []  # the cancelled call left nothing behind


# -- the sync doors ---------------------------------------------------------------------------
def test_every_async_method_has_a_derived_sync_twin_with_the_same_parameters() -> None:
    amethods = {name for name, fn in vars(LongTermMemory).items()
                if name.startswith("a") and inspect.iscoroutinefunction(fn)}
    assert amethods >= {"aadd", "aadd_many", "asearch", "aget", "ahistory", "alist", "aupdate",
                        "aforget", "apurge", "aconsolidate", "areindex", "aexport",
                        "aimport_records", "acheckpoint", "aclose"}
    for name in amethods:
        twin = getattr(LongTermMemory, name[1:])
        assert getattr(twin, "__sync_twin_of__", None) == name, name
        asig = inspect.signature(getattr(LongTermMemory, name))
        assert list(inspect.signature(twin).parameters.values()) == list(
            asig.parameters.values()), name


def test_the_runner_is_public_and_shared_with_the_database(mem: LongTermMemory,
                                                           runner: LoopRunner) -> None:
    assert mem.runner is runner and mem.sync_timeout is None
    with mem as same:
        assert same is mem and same.add("Vera bakes bread").live
