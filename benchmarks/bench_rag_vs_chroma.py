"""RAG against chromadb, side by side on the same precomputed 384-d vectors (issue 17).

Vectors: deterministic synthetic unit vectors (seed 17), not model output, so no model runs
and both sides index exactly the same numbers. Each is a point of a 64-cluster Gaussian
mixture in a 48-d latent space, projected to 384-d by a fixed random matrix, plus isotropic
noise, then L2-normalised: low intrinsic dimension and clusters, as real sentence embeddings
have (uniform random 384-d vectors would be an adversarial case for any HNSW). The 500 query
vectors come from the same distribution and are not in the collection.

* ours      ``Knowledge(embedder=...)`` with an embedder that returns the precomputed vector
            named in each text (``item-<i>`` / ``query-<i>``): ingest of N one-line ``.txt``
            files (load, chunk, SQLite + FTS5, embedding cache, usearch), then 500 single
            ``Knowledge.search(..., mode="dense", k=10)`` calls through the sync door.
* chromadb  a ``PersistentClient`` collection with explicit embeddings, cosine space, its
            default HNSW; ``add`` in its max batch size, then 500 single ``query`` calls,
            k=10. It runs in a child process with ``PYTHONPATH=.bench-peers`` (``make
            bench-peers`` installs it there from ``requirements-peers.txt``), never in .venv.

Reported per N: add rate (documents/s), query p50/p95, recall@10 against exact numpy search,
disk (the data folder after the run). Targets (issue 17): query p50 <= 0.6x chromadb's, add
rate >= 1.0x, recall@10 >= chromadb's, disk <= 2x. Printed as PASS/FAIL, not asserted.

    .venv/bin/python benchmarks/bench_rag_vs_chroma.py [--n 20000] [--big]   # --big adds 100k
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import environment, save  # benchmarks/ is sys.path[0] when run as a script

NAME = "bench_rag_vs_chroma"
HERE = Path(__file__).parent
PEERS = Path(os.environ.get("BENCH_PEERS", HERE.parent / ".bench-peers"))
DIM, LATENT, CLUSTERS, SEED = 384, 48, 64, 17
QUERIES, K = 500, 10
_ID = re.compile(r"(item|query)-(\d+)")


def vectors(n: int, queries: int = QUERIES) -> tuple[np.ndarray, np.ndarray]:
    """(n documents, ``queries`` queries), float32 unit rows, the same for every run."""
    rng = np.random.default_rng(SEED)
    centres = rng.normal(size=(CLUSTERS, LATENT)) * 2.0
    project = rng.normal(size=(LATENT, DIM)) / np.sqrt(LATENT)

    def draw(m: int) -> np.ndarray:
        latent = centres[rng.integers(CLUSTERS, size=m)] + rng.normal(size=(m, LATENT))
        x = latent @ project + 0.3 * rng.normal(size=(m, DIM))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    return draw(n), draw(queries)


def exact_top(docs: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    scores = queries @ docs.T
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    return top


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    return statistics.fmean(len(set(f) & set(t.tolist())) / K for f, t in zip(found, truth,
                                                                                strict=True))


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def latency(samples_s: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples_s)
    return {"p50_ms": statistics.median(ms), "p95_ms": ms[int(len(ms) * 0.95)],
            "mean_ms": statistics.fmean(ms)}


# -- ours ---------------------------------------------------------------------------------
def run_ours(data: Path, n: int) -> dict[str, Any]:
    from aillm_lab.rag.embeddings import Embedder
    from aillm_lab.rag.retriever import Knowledge

    docs = np.load(data / "docs.npy")
    queries = np.load(data / "queries.npy")

    class Precomputed(Embedder):
        """The vector named in the text: ``item-<i>`` or ``query-<i>``."""

        model_id, dim, max_tokens = "bench-precomputed-384", DIM, 256

        def count_tokens(self, text: str) -> int:
            return len(text.split())

        async def aembed(self, texts: list[str]) -> np.ndarray:
            out = np.empty((len(texts), DIM), dtype=np.float32)
            for row, text in enumerate(texts):
                kind, i = _ID.search(text).groups()  # type: ignore[union-attr]
                out[row] = (docs if kind == "item" else queries)[int(i)]
            return out

    corpus = data / "corpus"
    corpus.mkdir()
    for i in range(n):
        (corpus / f"{i:07d}.txt").write_text(f"item-{i}\n")
    home = data / "ours"
    kn = Knowledge(db_path=home / "lab.db", index_dir=home / "index", embedder=Precomputed(),
                   progress=False)
    try:
        started = time.perf_counter()
        report = kn.ingest(corpus, "bench")
        add_s = time.perf_counter() - started
        assert report.chunks_added == n, report
        kn.search("query-0", k=K, mode="dense", collection="bench")  # opens the index
        samples, found = [], []
        for q in range(QUERIES):
            t = time.perf_counter()
            res = kn.search(f"query-{q}", k=K, mode="dense", collection="bench")
            samples.append(time.perf_counter() - t)
            found.append([int(_ID.search(h.text).group(2)) for h in res])  # type: ignore[union-attr]
        ann = kn.collections()[0].ann
    finally:
        kn.close()
    return {"add_s": add_s, "add_per_s": n / add_s, **latency(samples), "found": found,
            "disk_bytes": disk_bytes(home), "ann": ann}


# -- chromadb (child process) ---------------------------------------------------------------
def run_chroma(data: Path, n: int) -> dict[str, Any]:
    """chromadb in a child with the peers on its path; ``{"error": why}`` when it cannot."""
    if not (PEERS / "chromadb").is_dir():
        return {"error": f"chromadb is not in {PEERS.name}/: run `make bench-peers`"}
    env = {**os.environ, "PYTHONPATH": str(PEERS), "ANONYMIZED_TELEMETRY": "False"}
    proc = subprocess.run([sys.executable, __file__, "--child", str(data), "--n", str(n)],
                          capture_output=True, text=True, env=env, cwd=HERE.parent, timeout=3600)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        why = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {proc.returncode}: {why[:300]}"}
    return dict(json.loads(lines[-1]))


def chroma_child(data: Path, n: int) -> None:
    import chromadb
    from chromadb.config import Settings

    docs = np.load(data / "docs.npy")
    queries = np.load(data / "queries.npy")
    home = data / "chroma"
    client = chromadb.PersistentClient(path=str(home),
                                       settings=Settings(anonymized_telemetry=False))
    col = client.create_collection("bench", metadata={"hnsw:space": "cosine"},
                                   embedding_function=None)
    batch = client.get_max_batch_size()
    started = time.perf_counter()
    for lo in range(0, n, batch):
        hi = min(lo + batch, n)
        col.add(ids=[str(i) for i in range(lo, hi)], embeddings=docs[lo:hi],
                documents=[f"item-{i}" for i in range(lo, hi)])
    add_s = time.perf_counter() - started
    assert col.count() == n
    col.query(query_embeddings=queries[:1], n_results=K)
    samples, found = [], []
    for q in range(QUERIES):
        t = time.perf_counter()
        res = col.query(query_embeddings=queries[q:q + 1], n_results=K)
        samples.append(time.perf_counter() - t)
        found.append([int(i) for i in res["ids"][0]])
    del col, client
    print(json.dumps({"add_s": add_s, "add_per_s": n / add_s, **latency(samples),
                      "found": found, "disk_bytes": disk_bytes(home),
                      "version": chromadb.__version__}))


# -- report -------------------------------------------------------------------------------
def compare(n: int, ours: dict[str, Any], peer: dict[str, Any]) -> tuple[list[str], dict]:
    lines = [f"N = {n:,}",
             f"  {'':10} {'add docs/s':>11} {'p50 ms':>8} {'p95 ms':>8} {'recall@10':>10} "
             f"{'disk MB':>8}"]
    for name, r in (("aillm_lab", ours), ("chromadb", peer)):
        if "error" in r:
            lines.append(f"  {name:10} unavailable: {r['error']}")
            continue
        lines.append(f"  {name:10} {r['add_per_s']:>11,.0f} {r['p50_ms']:>8.2f} "
                     f"{r['p95_ms']:>8.2f} {r['recall']:>10.4f} {r['disk_bytes'] / 1e6:>8.1f}")
    targets: dict[str, Any] = {}
    if "error" not in peer:
        checks = {
            "query p50 <= 0.6x chromadb": (ours["p50_ms"] / peer["p50_ms"], lambda r: r <= 0.6),
            "add rate >= 1.0x chromadb": (ours["add_per_s"] / peer["add_per_s"],
                                          lambda r: r >= 1.0),
            "recall@10 >= chromadb": (ours["recall"] - peer["recall"], lambda d: d >= 0),
            "disk <= 2x chromadb": (ours["disk_bytes"] / peer["disk_bytes"], lambda r: r <= 2.0),
        }
        for label, (value, ok) in checks.items():
            unit = "" if label.startswith("recall") else "x"
            sign = "+" if label.startswith("recall") and value >= 0 else ""
            verdict = "PASS" if ok(value) else "FAIL"
            targets[label] = {"value": round(value, 4), "pass": verdict == "PASS"}
            lines.append(f"  {label:28} {sign}{value:.4f}{unit}  {verdict}")
    return lines, targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, action="append", help="collection size(s)")
    parser.add_argument("--big", action="store_true", help="also run 100k (minutes)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        chroma_child(args.child, args.n[0])
        return
    sizes = args.n or [20_000]
    if args.big and 100_000 not in sizes:
        sizes.append(100_000)
    load_start = os.getloadavg()[0]
    lines = ["RAG against chromadb: the same synthetic 384-d unit vectors, 500 single queries, "
             "k=10, dense only", ""]
    data: dict[str, Any] = {"sizes": {}}
    for n in sizes:
        work = Path(tempfile.mkdtemp(prefix="bench-rag-chroma-"))
        try:
            docs, queries = vectors(n)
            np.save(work / "docs.npy", docs)
            np.save(work / "queries.npy", queries)
            truth = exact_top(docs, queries)
            print(f"N={n}: chromadb ...", file=sys.stderr, flush=True)
            peer = run_chroma(work, n)
            print(f"N={n}: aillm_lab ...", file=sys.stderr, flush=True)
            ours = run_ours(work, n)
            for r in (ours, peer):
                if "found" in r:
                    r["recall"] = recall(r.pop("found"), truth)
            block, targets = compare(n, ours, peer)
            lines += block + [""]
            data["sizes"][str(n)] = {"aillm_lab": ours, "chromadb": peer, "targets": targets}
        finally:
            shutil.rmtree(work, ignore_errors=True)
    data["environment"] = environment(load_start)
    lines.append(f"load average {load_start:.2f} at start, {os.getloadavg()[0]:.2f} at end; "
                 f"{os.cpu_count()} CPUs")
    save(NAME, "\n".join(lines), data)


if __name__ == "__main__":
    main()
