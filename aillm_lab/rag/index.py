"""The RAG index: SQLite is the truth, the usearch file is a rebuildable cache of it.

Why this split (ARCHITECTURE.md, invariant 9): documents, chunks, vectors and the FTS5
(BM25) table live in ``lab.db`` (``store.py``) and change only inside ``BEGIN IMMEDIATE``
transactions, with triggers keeping FTS in step with the chunks in the same transaction.
The ANN index is one usearch file per collection, keyed by chunk rowid, written to a temp
file and ``os.replace``d, with a manifest (count, max rowid, model, HNSW build settings,
sha256) checked at open: a missing, stale or corrupt file is rebuilt from SQLite. Rowids are
never reused (AUTOINCREMENT) and a key is never removed and re-added (usearch #175, #355):
dead chunks are masked and compacted away by a rebuild.
Small collections skip usearch and search exactly with numpy.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from aillm_lab.db import LabDB

log = logging.getLogger(__name__)

EXACT_THRESHOLD = 20_000  # below this many live vectors, numpy beats HNSW (bench_rag.py)
FILTER_EXACT_LIMIT = 5_000  # filtered sets up to this size are searched exactly
COMPACT_RATIO = 0.2  # rebuild when more than this share of indexed keys is dead
# HNSW settings: recall@10 against exact search on 100k real text chunks (bench_rag.py)
CONNECTIVITY = 16
EXPANSION_ADD = 128
EXPANSION_SEARCH = 128
# The usearch file holds 8-bit vectors (a quarter of f32's disk and memory, and faster
# distances); the best RERANK x k candidates are then re-scored exactly from the f32 vectors
# in lab.db, so scores are exact cosines and recall@10 matched f32 HNSW (bench_rag_vs_chroma).
QUANTIZATION = "i8"
RERANK = 3
ORPHAN_DISTANCE = 1e-3  # an 8-bit twin of the vector itself is closer than this
ORPHAN_FIRST_EF = 16  # the look-up pass over every new vector; its misses are checked again
MANIFEST_VERSION = 1
LEGACY_GRAPH = {"connectivity": 16, "expansion_add": 128}  # manifests written before "graph"
LEGACY_DTYPE = "f32"  # manifests written before "dtype": such files are used as they are

class DenseIndex:
    """Dense search over one collection's live vectors: exact numpy, or a usearch file.

    Not thread-safe by itself; ``Knowledge`` serialises calls with a per-collection lock.
    """

    def __init__(self, db: LabDB, collection_id: int, name: str, *, model_id: str, dim: int,
                 index_dir: Path, exact_threshold: int = EXACT_THRESHOLD,
                 connectivity: int = CONNECTIVITY, expansion_add: int = EXPANSION_ADD,
                 expansion_search: int = EXPANSION_SEARCH) -> None:
        self.db, self.collection_id, self.name = db, collection_id, name
        self.model_id, self.dim = model_id, dim
        self.path = Path(index_dir) / f"{name}.usearch"
        self.manifest_path = self.path.with_suffix(".manifest.json")
        self.exact_threshold = exact_threshold
        self.hnsw = {"connectivity": connectivity, "expansion_add": expansion_add,
                     "expansion_search": expansion_search}
        self.live = 0
        self.rebuilds = 0  # how often the usearch file was rebuilt from SQLite
        self._unsaved = False  # the in-memory usearch index is ahead of its file
        self._ann: Any = None
        self._max_rowid = 0
        self._dead: set[int] = set()
        self._orphans: set[int] = set()  # vectors the graph cannot reach: searched exactly
        self.dtype = QUANTIZATION  # of the usearch file in use (an older one may be f32)
        self._ids = np.zeros(0, dtype=np.int64)
        self._mat = np.zeros((0, dim), dtype=np.float32)

    @property
    def uses_ann(self) -> bool:
        return self._ann is not None

    async def aopen(self) -> None:
        """Load vectors (exact) or the verified usearch file (ANN), rebuilding if needed."""
        row = await self.db.fetchone(
            "SELECT count(*) FROM rag_chunks WHERE collection_id = ? AND alive = 1",
            (self.collection_id,))
        self.live = int(row[0]) if row else 0
        if self.live < self.exact_threshold:
            self._ann = None
            self._ids, self._mat = await self._live_vectors()
        else:
            self._ids, self._mat = np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32)
            await self._open_ann()

    async def aupdate(self, added_ids: list[int], added: np.ndarray, dead_ids: list[int], *,
                      save: bool = True) -> None:
        """Apply one committed batch: new live vectors and newly dead chunk ids.

        ``save=False`` leaves writing the file to ``asave`` (once per ingest, not per batch:
        at 100k each save rewrote and hashed ~160 MB); a crash before it only leaves the
        file stale, and ``aopen`` catches up from SQLite.
        """
        self.live += len(added_ids) - len(dead_ids)
        if self._ann is None and self.live >= self.exact_threshold:
            await self.aopen()  # grew past the threshold: switch to the usearch file
            return
        if self._ann is None:
            keep = ~np.isin(self._ids, np.asarray(dead_ids, dtype=np.int64))
            self._ids = np.concatenate([self._ids[keep], np.asarray(added_ids, np.int64)])
            self._mat = np.concatenate([self._mat[keep], added.reshape(-1, self.dim)])
            return
        self._dead.update(dead_ids)
        if added_ids:
            keys = np.asarray(added_ids, dtype=np.uint64)
            await asyncio.to_thread(self._add, keys, added)
            self._max_rowid = max(self._max_rowid, max(added_ids))
        if len(self._dead) > COMPACT_RATIO * max(len(self._ann), 1):
            await self.arebuild(reason="compaction")
        elif added_ids or dead_ids:
            self._unsaved = True
            if save:
                await self.asave()

    async def asave(self) -> None:
        """Write the usearch file if batches applied since the last save changed it."""
        if self._ann is not None and self._unsaved:
            await asyncio.to_thread(self._save)

    async def asearch(self, query: np.ndarray, k: int,
                      allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """(chunk id, cosine similarity) best first; ``allowed`` restricts to those ids.

        A small allowed set is searched exactly; a large one over-fetches from usearch.
        """
        if allowed is not None and (self._ann is None or len(allowed) <= FILTER_EXACT_LIMIT):
            ids, mat = await self._vectors_for(allowed)
            return _exact(query, ids, mat, k)
        if self._ann is None:
            return _exact(query, self._ids, self._mat, k)
        keep = None if allowed is None else {int(i) for i in allowed}
        total = len(self._ann)
        usable = max(total - len(self._dead), 1) if keep is None else max(len(keep), 1)
        wanted = k * RERANK
        fetch = math.ceil(wanted * total / usable) + 8  # expected over-fetch, then grow
        while True:
            fetch = min(fetch, total)
            if fetch <= 0:
                return []
            keys = self._ann.search(query, fetch).keys
            candidates = [int(key) for key in keys
                          if int(key) not in self._dead and (keep is None or int(key) in keep)]
            if len(candidates) >= wanted or fetch >= total:
                break
            fetch *= 4
        keys = candidates[:wanted]
        keys += [i for i in self._orphans - set(keys)
                 if i not in self._dead and (keep is None or i in keep)]
        rows = await self.db.read_small(
            f"SELECT id, vector FROM rag_chunks WHERE id IN ({','.join('?' * len(keys))})",
            keys) if keys else []
        ids, mat = _unpack(rows, self.dim)
        return _exact(query, ids, mat, k)

    async def arebuild(self, reason: str, *, quiet: bool = False) -> None:
        """Drop dead rows and write a fresh usearch file from SQLite's live vectors."""
        (log.debug if quiet else log.warning)(
            "rebuilding the %r vector index from lab.db (%s)", self.name, reason)
        async with self.db.write() as conn:
            await conn.execute("DELETE FROM rag_chunks WHERE collection_id = ? AND alive = 0",
                               (self.collection_id,))
        ids, mat = await self._live_vectors()
        self.dtype = QUANTIZATION
        self._ann, self._orphans = await asyncio.to_thread(self._build, ids, mat)
        self._dead = set()
        self._max_rowid = int(ids.max()) if len(ids) else await self._max_id()
        self.rebuilds += not quiet
        await asyncio.to_thread(self._save)

    def remove_files(self) -> None:
        for path in (self.path, self.manifest_path):
            path.unlink(missing_ok=True)

    # -- the usearch file ------------------------------------------------------------------
    async def _open_ann(self) -> None:
        dead = await self.db.fetchall(
            "SELECT id FROM rag_chunks WHERE collection_id = ? AND alive = 0",
            (self.collection_id,))
        self._dead = {int(r[0]) for r in dead}
        problem, manifest = self._check_file()
        if problem is None:
            row = await self.db.fetchone(
                "SELECT count(*) FROM rag_chunks WHERE collection_id = ? AND id <= ?",
                (self.collection_id, manifest["max_rowid"]))
            if not row or int(row[0]) != manifest["count"]:
                problem = "stale: SQLite and the manifest disagree on the vector count"
        if problem is None:
            ann = await asyncio.to_thread(self._load)
            if len(ann) != manifest["count"]:
                problem = f"the file holds {len(ann)} vectors, not {manifest['count']}"
            else:
                self._ann, self._max_rowid = ann, int(manifest["max_rowid"])
                self._orphans = {int(i) for i in manifest.get("orphans", [])}
        if problem is not None:
            fresh = not self.path.exists() and not self.manifest_path.exists()
            await self.arebuild(reason="new collection" if fresh else problem, quiet=fresh)
            return
        await self._catch_up()

    async def _catch_up(self) -> None:
        """Add live chunks committed after the file was saved (a crash before the save)."""
        rows = await self.db.fetchall(
            "SELECT id, vector FROM rag_chunks WHERE collection_id = ? AND alive = 1 AND id > ?",
            (self.collection_id, self._max_rowid))
        if rows:
            ids, mat = _unpack(rows, self.dim)
            await asyncio.to_thread(self._add, ids.astype(np.uint64), mat)
            self._max_rowid = int(ids.max())
            await asyncio.to_thread(self._save)

    def _check_file(self) -> tuple[str | None, dict[str, Any]]:
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except (OSError, ValueError):
            return "missing or unreadable manifest", {}
        if not self.path.is_file():
            return "missing index file", manifest
        expected = (MANIFEST_VERSION, self.model_id, self.dim)
        if (manifest.get("version"), manifest.get("model_id"), manifest.get("dim")) != expected:
            return "manifest is for another model or version", manifest
        if manifest.get("graph", LEGACY_GRAPH) != self._graph_settings():
            return "built with other HNSW settings (a rebuild applies the current ones)", manifest
        dtype = manifest.get("dtype", LEGACY_DTYPE)
        if dtype not in ("f32", "f16", "i8"):
            return f"unknown vector type {dtype!r}", manifest
        if _sha256(self.path) != manifest.get("sha256"):
            return "checksum mismatch (truncated or corrupt file)", manifest
        self.dtype = dtype
        return None, manifest

    def _graph_settings(self) -> dict[str, int]:
        """The build-time settings baked into the file (expansion_search is set at load)."""
        return {"connectivity": self.hnsw["connectivity"],
                "expansion_add": self.hnsw["expansion_add"]}

    def _new_index(self) -> Any:
        from usearch.index import Index

        return Index(ndim=self.dim, metric="cos", dtype=self.dtype, **self.hnsw)

    def _build(self, ids: np.ndarray, mat: np.ndarray) -> tuple[Any, set[int]]:
        ann = self._new_index()
        return ann, (_add(ann, ids.astype(np.uint64), mat) if len(ids) else set())

    def _add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        self._orphans |= _add(self._ann, keys, vectors)


    def _load(self) -> Any:
        ann = self._new_index()
        ann.load(str(self.path))
        ann.expansion_search = self.hnsw["expansion_search"]
        return ann

    def _save(self) -> None:
        """Temp file + ``os.replace`` for the index, then the manifest the same way."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.name}.", suffix=".tmp")
        os.close(fd)
        try:
            self._ann.save(tmp)
            _fsync(tmp)
            digest = _sha256(Path(tmp))
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        manifest = {"version": MANIFEST_VERSION, "count": len(self._ann),
                    "max_rowid": self._max_rowid, "model_id": self.model_id, "dim": self.dim,
                    "graph": self._graph_settings(), "dtype": self.dtype, "sha256": digest,
                    "orphans": sorted(self._orphans)}
        _atomic_write(self.manifest_path, json.dumps(manifest, indent=1))
        self._unsaved = False

    # -- SQLite reads ----------------------------------------------------------------------
    async def _live_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        rows = await self.db.fetchall(
            "SELECT id, vector FROM rag_chunks WHERE collection_id = ? AND alive = 1 "
            "ORDER BY id", (self.collection_id,))
        return _unpack(rows, self.dim)

    async def _vectors_for(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._ann is None:
            keep = np.isin(self._ids, ids)
            return self._ids[keep], self._mat[keep]
        rows = []
        id_list = [int(i) for i in ids]
        for i in range(0, len(id_list), 500):
            part = id_list[i:i + 500]
            rows += await self.db.fetchall(
                f"SELECT id, vector FROM rag_chunks WHERE alive = 1 AND id IN "
                f"({','.join('?' * len(part))})", part)
        return _unpack(rows, self.dim)

    async def _max_id(self) -> int:
        row = await self.db.fetchone("SELECT max(id) FROM rag_chunks WHERE collection_id = ?",
                                     (self.collection_id,))
        return int(row[0]) if row and row[0] is not None else 0


def _add(ann: Any, keys: np.ndarray, vectors: np.ndarray) -> set[int]:
    """Add to the graph, then look each new vector up: one the search cannot find is
    an orphan (HNSW pruning can leave a node with no way in; at 20k vectors one build in
    two had one, a document no dense query could return), searched exactly instead. A
    cheap pass (ef 16) finds most; only its misses are looked up again at the search's ef."""
    ann.add(keys, vectors)
    suspects = np.arange(len(keys))
    for ef in (min(ORPHAN_FIRST_EF, ann.expansion_search), ann.expansion_search):
        saved, ann.expansion_search = ann.expansion_search, ef
        try:
            found = ann.search(vectors[suspects], 1)
        finally:
            ann.expansion_search = saved
        got = np.asarray(found.keys).reshape(-1)
        dist = np.asarray(found.distances).reshape(-1)
        lost = (got != keys[suspects]) & (dist > ORPHAN_DISTANCE)  # a twin found is fine
        suspects = suspects[lost]
        if not len(suspects):
            break
    return {int(k) for k in keys[suspects]}


def _exact(query: np.ndarray, ids: np.ndarray, mat: np.ndarray,
           k: int) -> list[tuple[int, float]]:
    if not len(ids):
        return []
    scores = mat @ query.astype(np.float32)
    k = min(k, len(ids))
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.argsort(-scores[top], kind="stable")]
    return [(int(ids[i]), float(scores[i])) for i in top]


def _unpack(rows: list[Any], dim: int) -> tuple[np.ndarray, np.ndarray]:
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros((0, dim), dtype=np.float32)
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    mat = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(-1, dim)
    return ids, mat


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: str | Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
