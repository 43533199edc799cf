"""RAG: ingest throughput, query latency at 10k/100k chunks, ANN recall and retrieval quality.

Corpus: real docstrings of the standard library, numpy and pandas (whatever is installed),
harvested with ``inspect``. Each docstring with a summary line and a body becomes one
Markdown document ``# <qualified name>\\n\\n<body>``; its summary line is the query whose one
relevant document is that body (summaries are not in the documents).

* ingest        ``Knowledge.ingest`` of the corpus folder (load, chunk, embed with
                all-MiniLM-L6-v2 on CPU, SQLite + FTS + index, commit) in chunks/s, against raw
                ``SentenceTransformer.encode`` (same batch size) on a random sample of the same
                chunk texts, timed just before and just after the ingest (the mean is used,
                so a change in machine load hits both sides). Target: ingest >= 0.9x raw.
* quality       nDCG@10 and recall@10 (distinct documents) for dense through usearch, dense by
                brute-force exact search, sparse (FTS5 BM25) and hybrid (RRF, k=60).
* corpus        for scale and recall: 100k distinct REAL text chunks, the prose paragraphs
                of every docstring in the installed standard library and site-packages
                (torch, transformers, scipy, sympy, pandas, numpy, ...), found with ``ast``,
                plus 1,000 held-out paragraphs as queries (``rag_corpus.py``). Embedded once
                with all-MiniLM-L6-v2 and cached under ~/.cache/aillm_lab_bench/.
* scale         10k and 100k chunk collections of that corpus, written straight into SQLite
                (its vectors are already known). The index is built once from SQLite
                ("build"), then a fresh ``Knowledge`` opens the saved file ("reopen": checksum
                + load, no rebuild). Query p50/p95 for dense and hybrid, with the query vector
                given and with the MiniLM query embedding, over the docstring-summary queries.
                10k is searched exactly with numpy, 100k through usearch.
* recall        recall@10 of usearch against exact search at 100k: a grid of (connectivity,
                expansion_add) builds x expansion_search values, on the held-out paragraphs
                and on the summary queries, and then the ``DenseIndex`` at the defaults of
                ``aillm_lab/rag/index.py`` as reopened from its file. Target: >= 0.98 there.
* threshold     exact numpy top-10 latency at 5k..100k vectors against usearch at 100k: the
                evidence for ``EXACT_THRESHOLD``.

    .venv/bin/python benchmarks/bench_rag.py [--quick]
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import math
import os
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import rag_corpus
from _common import environment, save  # benchmarks/ is sys.path[0] when run as a script

from aillm_lab.rag import index as rag_index
from aillm_lab.rag import store as rag_store
from aillm_lab.rag.chunking import Chunk, Chunker
from aillm_lab.rag.embeddings import Embedder, LocalEmbedder, default_embedder
from aillm_lab.rag.loaders import Document, load
from aillm_lab.rag.retriever import Knowledge

NAME = "bench_rag"
MODULES = [
    "os", "re", "json", "collections", "itertools", "functools", "pathlib", "asyncio",
    "subprocess", "shutil", "string", "textwrap", "datetime", "decimal", "fractions",
    "statistics", "random", "math", "heapq", "bisect", "typing", "inspect", "logging",
    "argparse", "csv", "sqlite3", "email.message", "http.client", "urllib.parse",
    "xml.etree.ElementTree", "zipfile", "tarfile", "tempfile", "threading",
    "concurrent.futures", "unittest", "difflib", "pprint", "enum", "dataclasses", "contextlib",
    "io", "codecs", "struct", "hashlib", "base64", "uuid", "socket", "ssl", "selectors",
    "calendar", "locale", "glob", "pickle", "copy", "operator", "weakref", "types", "ast",
    "tokenize", "traceback", "warnings", "platform", "sysconfig", "zlib", "gzip",
    "configparser", "html.parser", "mimetypes", "smtplib", "queue", "graphlib", "ipaddress",
    "zoneinfo", "numpy", "numpy.linalg", "numpy.fft", "numpy.random", "numpy.ma",
    "numpy.polynomial", "pandas", "pandas.api.types"]
GRID = [(16, 128), (16, 256), (32, 128), (32, 256)]  # (connectivity, expansion_add)
EFS = (64, 128, 256, 512)  # expansion_search values tried on each build


def harvest() -> list[tuple[str, str, str]]:
    """(qualified name, one-line summary, body) for documented public objects, deduplicated."""
    seen: set[int] = set()
    out: dict[str, tuple[str, str, str]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in MODULES:
            try:
                mod = importlib.import_module(name)
            except Exception:  # noqa: BLE001 - an optional package may be missing
                continue
            for qual, obj in _members(name, mod):
                try:
                    doc = inspect.getdoc(obj)
                except Exception:  # noqa: BLE001 - odd objects raise anything
                    continue
                if not doc or id(obj) in seen:
                    continue
                seen.add(id(obj))
                parts = doc.strip().split("\n\n", 1)
                if len(parts) < 2:
                    continue
                summary, body = " ".join(parts[0].split()), parts[1].strip()
                if len(summary) >= 20 and len(body) >= 80 and not summary.endswith(":"):
                    out.setdefault(body, (qual, summary, body))
    items = list(out.values())
    items.sort(key=lambda t: t[0])
    np.random.default_rng(0).shuffle(items)  # type: ignore[arg-type]
    return items


def _members(name: str, mod: Any) -> list[tuple[str, Any]]:
    found = []
    for attr, obj in vars(mod).items():
        if attr.startswith("_"):
            continue
        found.append((f"{name}.{attr}", obj))
        if inspect.isclass(obj):
            found += [(f"{name}.{attr}.{m}", f) for m, f in vars(obj).items()
                      if not m.startswith("_")]
    return found


class Precomputed(Embedder):
    """Answers known texts from a dict (to time search without the query embedding)."""

    def __init__(self, inner: LocalEmbedder, vectors: dict[str, np.ndarray]) -> None:
        self.inner, self.vectors = inner, vectors
        self.model_id, self.dim, self.max_tokens = inner.model_id, inner.dim, inner.max_tokens

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    async def aembed(self, texts: list[str]) -> np.ndarray:
        if all(t in self.vectors for t in texts):
            return np.stack([self.vectors[t] for t in texts])
        return await self.inner.aembed(texts)


# -- ingest throughput ------------------------------------------------------------------------
def bench_ingest(items: list[tuple[str, str, str]], work: Path, emb: LocalEmbedder,
                 raw_sample: int) -> tuple[dict[str, Any], Knowledge, Path]:
    folder = work / "corpus"
    for i, (qual, _summary, body) in enumerate(items):
        (folder / f"{i // 500:03d}").mkdir(parents=True, exist_ok=True)
        (folder / f"{i // 500:03d}" / f"doc{i:05d}.md").write_text(f"# {qual}\n\n{body}\n")
    emb.embed_blocking(["warm-up text"] * 8)  # load the model outside the timings
    chunker = Chunker.for_embedder(emb)
    texts = [c.text for d in load(folder).documents for c in chunker.split(d)]
    sample = [texts[i] for i in np.random.default_rng(2).permutation(len(texts))[:raw_sample]]
    model = emb.model()

    def raw() -> float:
        t0 = time.perf_counter()
        model.encode(sample, batch_size=emb.batch_size, normalize_embeddings=True,
                     convert_to_numpy=True, show_progress_bar=False)
        return len(sample) / (time.perf_counter() - t0)

    before = raw()  # raw runs bracket the ingest, so a load change hits both sides
    kb = Knowledge(db_path=work / "lab.db", index_dir=work / "index", embedder=emb,
                   progress=False)
    t0 = time.perf_counter()
    report = kb.ingest(folder)
    ingest_s = time.perf_counter() - t0
    after = raw()
    raw_rate = (before + after) / 2
    ingest_rate = report.chunks_added / ingest_s
    data = {"docs": report.docs_added, "chunks": report.chunks_added,
            "embeddings_computed": report.embeddings_computed,
            "mean_tokens": round(statistics.fmean(emb.count_tokens(t) for t in texts), 1),
            "ingest_s": round(ingest_s, 2), "raw_sample": len(sample),
            "ingest_chunks_per_s": round(ingest_rate, 1),
            "raw_chunks_per_s": round(raw_rate, 1),
            "raw_chunks_per_s_before_after": [round(before, 1), round(after, 1)],
            "ratio": round(ingest_rate / raw_rate, 3)}
    return data, kb, folder


# -- retrieval quality -----------------------------------------------------------------------
def bench_quality(items: list[tuple[str, str, str]], work: Path, folder: Path,
                  emb: LocalEmbedder, queries: int) -> tuple[dict[str, Any], dict[str, Any]]:
    chosen = list(range(min(queries, len(items))))
    texts = [items[i][1] for i in chosen]
    qvecs = emb.embed_blocking(texts)
    pre = Precomputed(emb, dict(zip(texts, qvecs, strict=True)))
    kbs = {"dense (usearch)": ("dense", 0), "dense (exact)": ("dense", 10**9),
           "sparse (BM25)": ("sparse", 10**9), "hybrid (RRF)": ("hybrid", 10**9)}
    out: dict[str, Any] = {}
    for label, (mode, threshold) in kbs.items():
        kb = Knowledge(db_path=work / "lab.db", index_dir=work / f"index-{threshold}",
                       embedder=pre, exact_threshold=threshold, progress=False)
        ndcg, recall = [], []
        for i in chosen:
            target = f"doc{i:05d}.md"
            hits = kb.search(items[i][1], k=30, mode=mode)  # type: ignore[arg-type]
            names = [Path(s).name for s in hits.sources][:10]
            rank = names.index(target) + 1 if target in names else 0
            ndcg.append(1 / math.log2(rank + 1) if rank else 0.0)
            recall.append(1.0 if rank else 0.0)
        out[label] = {"ndcg@10": round(statistics.fmean(ndcg), 4),
                      "recall@10": round(statistics.fmean(recall), 4)}
        kb.close()
    return out, dict(zip(texts, qvecs, strict=True))


# -- scale: latency, build and reopen ------------------------------------------------------
def build_collection(work: Path, emb: Embedder, name: str, texts: list[str],
                     vecs: np.ndarray) -> Knowledge:
    """Write chunks straight into SQLite (no embedding); the index is built on first open."""
    kb = Knowledge(db_path=work / f"{name}.db", index_dir=work / "index", embedder=emb,
                   progress=False)
    cid = kb.runner.run(kb._collection_id(name, create=True))
    per_doc = 100
    for start in range(0, len(texts), 5000):
        group = []
        for d in range(start, min(start + 5000, len(texts)), per_doc):
            part = texts[d:d + per_doc]
            doc = Document(source=f"/corpus/{name}/doc{d // per_doc}.md",
                           text="\n".join(part), type="markdown")
            group.append((doc, [Chunk(text=t, ordinal=o, token_count=0)
                                for o, t in enumerate(part)]))
        kb.runner.run(rag_store.replace_documents(
            kb.db, cid, group, vecs[start:start + 5000], []))
    return kb


def latency(kb: Knowledge, name: str, queries: list[str], mode: str) -> dict[str, float]:
    samples = []
    for q in queries:
        t0 = time.perf_counter()
        kb.search(q, k=10, mode=mode, collection=name)  # type: ignore[arg-type]
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return {"p50_ms": round(statistics.median(samples), 2),
            "p95_ms": round(samples[int(len(samples) * 0.95) - 1], 2)}


def open_timed(kb: Knowledge, name: str) -> tuple[Any, float]:
    t0 = time.perf_counter()
    dense = kb.runner.run(kb._dense_index(name))
    return dense, round(time.perf_counter() - t0, 2)


def bench_scale(work: Path, emb: LocalEmbedder, qmap: dict[str, np.ndarray],
                corpus: tuple[list[str], np.ndarray, np.ndarray],
                sizes: list[int]) -> dict[str, Any]:
    texts, vecs, held = corpus
    out: dict[str, Any] = {}
    queries = list(qmap)[:200]
    qvecs = np.stack([qmap[q] for q in queries])
    for n in sizes:
        name = f"c{n}"
        pre = Precomputed(emb, qmap)
        t0 = time.perf_counter()
        kb = build_collection(work, pre, name, texts[:n], vecs[:n])
        load_s = round(time.perf_counter() - t0, 1)
        dense, build_s = open_timed(kb, name)  # no file yet: exact load or usearch build
        kb.close()
        kb = Knowledge(db_path=work / f"{name}.db", index_dir=work / "index", embedder=pre,
                       progress=False)
        dense, reopen_s = open_timed(kb, name)  # the saved file: checksum + load
        kb.search(queries[0], collection=name)  # warm caches
        row: dict[str, Any] = {"chunks": n, "ann": dense.uses_ann, "sqlite_load_s": load_s,
                               "index_build_s": build_s, "index_reopen_s": reopen_s,
                               "rebuilds_on_reopen": dense.rebuilds}
        for mode in ("dense", "hybrid"):
            row[f"{mode} (vector given)"] = latency(kb, name, queries[:100], mode)
        kb._embedder = emb  # real query embedding from here on
        for mode in ("dense", "hybrid"):
            row[f"{mode} (with embedding)"] = latency(kb, name, queries[100:150], mode)
        if dense.uses_ann:
            row["defaults"] = {**dense.hnsw, **defaults_recall(dense, kb, vecs[:n],
                                                               {"held-out": held,
                                                                "summaries": qvecs})}
        out[name] = row
        kb.close()
    out["threshold"] = threshold_curve(vecs, qvecs[:50])
    return out


# -- recall ------------------------------------------------------------------------------------
def exact_top(mat: np.ndarray, queries: np.ndarray, k: int = 10) -> np.ndarray:
    """Row indexes of the exact top-k by cosine (unit vectors), in batches."""
    out = []
    for i in range(0, len(queries), 256):
        scores = queries[i:i + 256] @ mat.T
        out.append(np.argpartition(-scores, k - 1, axis=1)[:, :k])
    return np.concatenate(out)


def recall_at_10(found: np.ndarray, exact: np.ndarray) -> float:
    hits = sum(len(set(f.tolist()) & set(e.tolist())) for f, e in zip(found, exact, strict=True))
    return round(hits / exact.size, 4)


def search_p50(ann: Any, queries: np.ndarray) -> float:
    took = []
    for q in queries[:200]:
        t0 = time.perf_counter()
        ann.search(q, 10)
        took.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(took), 3)


def ann_grid(vecs: np.ndarray, qsets: dict[str, np.ndarray],
             grid: list[tuple[int, int]]) -> list[dict[str, Any]]:
    """Build usearch for each (connectivity, expansion_add); recall for each expansion_search."""
    from usearch.index import Index

    exact = {label: exact_top(vecs, q) for label, q in qsets.items()}
    keys = np.arange(len(vecs), dtype=np.uint64)
    rows = []
    for connectivity, expansion_add in grid:
        ann = Index(ndim=vecs.shape[1], metric="cos", dtype="f32", connectivity=connectivity,
                    expansion_add=expansion_add)
        t0 = time.perf_counter()
        ann.add(keys, vecs)
        build_s = round(time.perf_counter() - t0, 1)
        for ef in EFS:
            ann.expansion_search = ef
            row: dict[str, Any] = {"connectivity": connectivity, "expansion_add": expansion_add,
                                   "expansion_search": ef, "build_s": build_s,
                                   "size_mb": round(ann.serialized_length / 2**20, 1)}
            for label, q in qsets.items():
                row[f"recall@10 {label}"] = recall_at_10(ann.search(q, 10).keys, exact[label])
            row["search_p50_ms"] = search_p50(ann, qsets["summaries"])
            rows.append(row)
            print("grid:", row, flush=True)
        del ann
    return rows


def defaults_recall(dense: Any, kb: Knowledge, vecs: np.ndarray,
                    qsets: dict[str, np.ndarray]) -> dict[str, Any]:
    """Recall of the reopened ``DenseIndex`` file itself, keys mapped back to rows."""
    rows = kb.runner.run(kb.db.fetchall("SELECT id FROM rag_chunks WHERE alive = 1 ORDER BY id"))
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    out: dict[str, Any] = {}
    for label, q in qsets.items():
        exact = ids[exact_top(vecs, q)]
        out[f"recall@10 {label}"] = recall_at_10(dense._ann.search(q, 10).keys, exact)
    out["search_p50_ms"] = search_p50(dense._ann, qsets["summaries"])
    return out


def threshold_curve(vecs: np.ndarray, qvecs: np.ndarray) -> dict[str, float]:
    out = {}
    for n in (5_000, 10_000, 20_000, 50_000, 100_000):
        if n > len(vecs):
            continue
        ids, mat = np.arange(n), vecs[:n]
        took = []
        for q in qvecs:
            t0 = time.perf_counter()
            rag_index._exact(q, ids, mat, 10)
            took.append((time.perf_counter() - t0) * 1000)
        out[f"exact p50 ms @ {n}"] = round(statistics.median(took), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few minutes")
    parser.add_argument("--recall-only", action="store_true",
                        help="skip ingest and quality: corpus, scale and the ANN grid only")
    args = parser.parse_args()
    load0 = os.getloadavg()[0]
    n_docs, n_queries = (200, 150) if args.quick else (1000, 300)
    sizes = [2_000, 10_000] if args.quick else [10_000, 100_000]
    items = harvest()[:n_docs]
    emb = default_embedder()
    held = 1_000
    texts, mat, corpus_info = rag_corpus.load_or_build(sizes[-1] + held)
    corpus = (texts[:sizes[-1]], mat[:sizes[-1]], mat[sizes[-1]:])
    corpus_info.update(chunks=sizes[-1], held_out_queries=held,
                       mean_chars=round(statistics.fmean(len(t) for t in texts), 1),
                       cache=str(rag_corpus.folder(sizes[-1] + held)))
    work = Path(tempfile.mkdtemp(prefix="bench-rag-"))
    ingest: dict[str, Any] = {}
    quality: dict[str, Any] = {}
    try:
        if args.recall_only:
            summaries = [items[i][1] for i in range(min(n_queries, len(items)))]
            qmap = dict(zip(summaries, emb.embed_blocking(summaries), strict=True))
        else:
            ingest, kb0, folder = bench_ingest(items, work, emb, 300 if args.quick else 600)
            kb0.close()
            print("ingest:", ingest, flush=True)
            quality, qmap = bench_quality(items, work, folder, emb, n_queries)
            print("quality:", quality, flush=True)
        scale = bench_scale(work, emb, qmap, corpus, sizes)
        print("scale:", scale, flush=True)
        qsets = {"held-out": corpus[2], "summaries": np.stack(list(qmap.values()))[:200]}
        grid = ann_grid(corpus[1], qsets, GRID[:1] if args.quick else GRID)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(args, load0, corpus_info, ingest, quality, scale, grid)


def report(args: argparse.Namespace, load0: float, corpus: dict[str, Any],
           ingest: dict[str, Any], quality: dict[str, Any], scale: dict[str, Any],
           grid: list[dict[str, Any]]) -> None:
    env = environment(load0)
    flags = "".join(f" --{f}" for f in ("quick", "recall-only")
                    if getattr(args, f.replace("-", "_")))
    lines = [f"bench_rag{flags}  {env}", ""]
    if ingest:
        lines += report_ingest(ingest, quality)
    lines += [f"corpus for scale and recall: {corpus['chunks']} distinct real docstring "
              f"paragraphs (stdlib + site-packages, mean {corpus['mean_chars']} chars) and "
              f"{corpus['held_out_queries']} held-out ones as queries; MiniLM vectors cached "
              f"in {corpus['cache']} (embedded this run: {corpus['embedded_now']} in "
              f"{corpus['embed_s']} s)"]
    verdict = None
    for name, row in scale.items():
        if name == "threshold":
            continue
        kind = "usearch" if row["ann"] else "exact numpy"
        lines += ["", f"collection of {row['chunks']} chunks ({kind}): SQLite load "
                  f"{row['sqlite_load_s']} s, index build {row['index_build_s']} s, reopen "
                  f"{row['index_reopen_s']} s ({row['rebuilds_on_reopen']} rebuilds)"]
        lines += [f"  {key:26s} p50 {v['p50_ms']:7.2f} ms  p95 {v['p95_ms']:7.2f} ms"
                  for key, v in row.items() if isinstance(v, dict) and "p95_ms" in v]
        if "defaults" in row:
            d = row["defaults"]
            recalls = [v for k, v in d.items() if k.startswith("recall@10")]
            verdict = min(recalls) >= 0.98
            lines.append(
                f"  DenseIndex defaults (connectivity {d['connectivity']}, expansion_add "
                f"{d['expansion_add']}, expansion_search {d['expansion_search']}), reopened: "
                f"recall@10 held-out {d['recall@10 held-out']:.4f}, summaries "
                f"{d['recall@10 summaries']:.4f}, search p50 {d['search_p50_ms']} ms")
    lines += ["", f"ANN grid at {corpus['chunks']} chunks (recall@10 against exact search):",
              "  conn  ef_add  build s  size MB  ef_search  held-out  summaries  search p50 ms"]
    lines += [f"  {r['connectivity']:4d}  {r['expansion_add']:6d}  {r['build_s']:7.1f}  "
              f"{r['size_mb']:7.1f}  {r['expansion_search']:9d}  {r['recall@10 held-out']:8.4f}"
              f"  {r['recall@10 summaries']:9.4f}  {r['search_p50_ms']:13.3f}" for r in grid]
    lines += ["", "exact numpy top-10 latency (threshold evidence):"]
    lines += [f"  {k}: {v}" for k, v in scale["threshold"].items()]
    if verdict is not None:
        lines.append(f"ANN recall@10 target >= 0.98 at the DenseIndex defaults, "
                     f"{corpus['chunks']} real chunks -> {'PASS' if verdict else 'FAIL'}")
    suffix = ("_quick" if args.quick else "") + ("_recall" if args.recall_only else "")
    save(NAME + suffix, "\n".join(lines),
         {"environment": env, "corpus": corpus, "ingest": ingest, "quality": quality,
          "scale": scale, "ann_grid": grid})


def report_ingest(ingest: dict[str, Any], quality: dict[str, Any]) -> list[str]:
    lines = [f"ingest: {ingest['docs']} docs -> {ingest['chunks']} chunks "
             f"(mean {ingest['mean_tokens']} tokens)",
             f"  Knowledge.ingest      {ingest['ingest_chunks_per_s']:8.1f} chunks/s "
             f"({ingest['ingest_s']} s)",
             f"  raw model.encode      {ingest['raw_chunks_per_s']:8.1f} chunks/s "
             f"(random {ingest['raw_sample']} of the same chunks, before and after: "
             f"{ingest['raw_chunks_per_s_before_after']})",
             f"  ratio {ingest['ratio']:.2f}x (target >= 0.90) -> "
             f"{'PASS' if ingest['ratio'] >= 0.9 else 'FAIL'}", "",
             "quality (docstring summary -> its body):"]
    lines += [f"  {label:18s} nDCG@10 {m['ndcg@10']:.3f}  recall@10 {m['recall@10']:.3f}"
              for label, m in quality.items()]
    return lines + [""]


if __name__ == "__main__":
    main()
