"""MemoryStore, memory's internal store: reads between batches, all-or-nothing batches whose
vector-cache changes land only after COMMIT, caches that notice other connections; and the
shape of ``memory/``: helpers use the store's interface and never import the public class."""

from __future__ import annotations

import ast
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _writer import WordHashEmbedder

import aillm_lab.memory
from aillm_lab.db import LabDB
from aillm_lab.memory import _batch
from aillm_lab.memory._schema import SCHEMA
from aillm_lab.memory._store import MemoryStore
from aillm_lab.runtime import LoopRunner

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")

MEMORY_DIR = Path(aillm_lab.memory.__file__).parent


def make_store(path: Path, runner: LoopRunner, **options: Any) -> MemoryStore:
    return MemoryStore(LabDB(path, schema=SCHEMA, runner=runner), embedder=WordHashEmbedder(),
                       **options)


async def add(store: MemoryStore, text: str, namespace: str = "user", *,
              fail: bool = False) -> int:
    """One memory through the store's public interface; returns its seq."""
    items = _batch.new_items([text], namespace, 0.5, None, None)
    vectors = await store.embed([text])
    async with store.transaction() as tx:
        cache = await store.vectors(tx.conn, namespace)
        plan = await _batch.plan_adds(tx.conn, items, vectors, cache, None, False)
        [seq] = await _batch.apply_plan(tx, plan, items, vectors, store.clock(),
                                        store.embedder.model_id)
        if fail:
            raise RuntimeError("disk trouble")
    return seq


def test_a_committed_batch_patches_the_cached_vectors_and_a_failed_one_does_not(
        tmp_path: Path, runner: LoopRunner) -> None:
    store = make_store(tmp_path / "lab.db", runner)

    async def scenario() -> tuple[int, int, int, bool]:
        await add(store, "Wanda paints murals")
        cache = await store.read(store.vectors, "user")
        with pytest.raises(RuntimeError, match="disk trouble"):
            await add(store, "Wanda sculpts marble", fail=True)
        after_failure = len(cache)
        await add(store, "Wanda sculpts marble")
        same = await store.read(store.vectors, "user")  # patched in place, not reloaded
        rows = await store.read(_batch.select, "SELECT count(*) FROM memory_vectors")
        await store.aclose()
        return after_failure, len(cache), rows[0][0], same is cache

    assert runner.run(scenario()) == (1, 2, 2, True)


def test_cached_vectors_reload_when_another_connection_commits(tmp_path: Path,
                                                               runner: LoopRunner) -> None:
    a = make_store(tmp_path / "lab.db", runner)
    b = make_store(tmp_path / "lab.db", runner)

    async def scenario() -> tuple[list[int], list[int]]:
        await add(a, "Xavier repairs clocks")
        before = await a.read(a.vectors, "user")
        seq = await add(b, "Xavier collects stamps")
        after = await a.read(a.vectors, "user")
        query = (await a.embed(["Xavier stamps"]))[0]
        await a.aclose()
        await b.aclose()
        return [s for s, _ in before.top(query, 5)], [seq, *(s for s, _ in after.top(query, 1))]

    before, (seq, best) = runner.run(scenario())
    assert seq not in before and best == seq


def test_a_write_lock_held_too_long_is_memory_busy(tmp_path: Path, runner: LoopRunner) -> None:
    from aillm_lab.memory._schema import MemoryBusy

    store = MemoryStore(LabDB(tmp_path / "lab.db", schema=SCHEMA, runner=runner,
                              busy_timeout_ms=50), embedder=WordHashEmbedder())
    runner.run(add(store, "opens the file"))
    other = sqlite3.connect(tmp_path / "lab.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(MemoryBusy, match="busy_timeout_ms = 50"):
            runner.run(add(store, "refused while locked"))
    finally:
        other.execute("COMMIT")
        other.close()
    runner.run(store.aclose())


def test_an_embedder_with_the_wrong_shape_is_refused_by_embed(tmp_path: Path,
                                                              runner: LoopRunner) -> None:
    class Flat(WordHashEmbedder):
        async def aembed(self, texts: list[str]) -> np.ndarray:
            return np.ones((len(texts), 3), dtype=np.float32)

    store = MemoryStore(LabDB(tmp_path / "lab.db", schema=SCHEMA, runner=runner),
                        embedder=Flat())
    with pytest.raises(ValueError, match="shape"):
        runner.run(store.embed(["anything"]))


# -- the shape of memory/ -------------------------------------------------------------------
def _imports(path: Path) -> set[str]:
    """Every memory module ``path`` imports, TYPE_CHECKING blocks and function bodies too."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "aillm_lab.memory":
                found.update(alias.name for alias in node.names)
            elif node.module.startswith("aillm_lab.memory."):
                found.add(node.module.rsplit(".", 1)[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.rsplit(".", 1)[1] for a in node.names
                         if a.name.startswith("aillm_lab.memory."))
    return found


def test_memory_modules_import_each_other_without_a_circle() -> None:
    graph = {p.stem: _imports(p) for p in MEMORY_DIR.glob("*.py")}
    assert all("long_term" not in deps for name, deps in graph.items() if name != "long_term")

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(dep == goal or (dep not in seen and reaches(dep, goal, seen | {dep}))
                   for dep in graph.get(start, ()))

    assert [name for name in graph if reaches(name, name, set())] == []


def test_no_memory_module_reaches_into_another_objects_private_members() -> None:
    reached = []
    for path in MEMORY_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.endswith("_")  # dunders and _repr_html_ are protocols
                    and not (isinstance(node.value, ast.Name) and node.value.id == "self")):
                reached.append(f"{path.name}:{node.lineno} .{node.attr}")
    assert reached == []
