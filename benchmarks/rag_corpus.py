"""A real-text corpus for ANN recall: ~100k docstring paragraphs from installed packages.

Why: recall@10 must be measured on real text, not on perturbed copies of a few thousand
vectors (near-duplicates are an adversarial case for HNSW). The pieces are paragraphs (or
sentence groups of long paragraphs) of every docstring in the Python standard library and
site-packages (numpy, pandas, torch, transformers, sympy, scipy, ... whatever is installed),
found with ``ast`` (nothing is imported), normalised, deduplicated and sampled with a fixed
seed. They are embedded once with all-MiniLM-L6-v2 and cached under
``~/.cache/aillm_lab_bench/`` (never committed), in parts, so an interrupted run resumes.

    .venv/bin/python benchmarks/rag_corpus.py [--n 101000]   # build or complete the cache
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import re
import sys
import sysconfig
import time
import warnings
from pathlib import Path

import numpy as np

VERSION = "v1"
CACHE = Path.home() / ".cache" / "aillm_lab_bench"
PART = 4096
MIN_CHARS, MAX_CHARS = 60, 600
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_SKIP_DIRS = {"test", "tests", "testing", "idlelib", "lib2to3", "__pycache__", "_vendor"}


def roots() -> list[Path]:
    """The standard library and site-packages folders, in a fixed order."""
    paths = sysconfig.get_paths()
    found = [Path(paths["stdlib"]), Path(paths["purelib"]), Path(paths["platlib"])]
    return sorted({p.resolve() for p in found if p.is_dir()})


def source_files() -> list[Path]:
    files = []
    for root in roots():
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root).parts
            if "site-packages" in rel and root.name != "site-packages":
                continue  # the stdlib root contains site-packages: walked on its own
            if _SKIP_DIRS.intersection(rel[:-1]):
                continue
            files.append(path)
    return files


def docstrings(path: Path) -> list[str]:
    try:
        if path.stat().st_size > 2_000_000:
            return []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(path.read_bytes())
    except (OSError, SyntaxError, ValueError):
        return []
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return [d for node in ast.walk(tree) if isinstance(node, kinds)
            and (d := ast.get_docstring(node, clean=True))]


def pieces(doc: str) -> list[str]:
    """Prose paragraphs of a docstring, long ones cut into sentence groups; code dropped."""
    out = []
    for para in re.split(r"\n\s*\n", doc):
        if ">>>" in para or "::" in para or para.lstrip().startswith(("..", "--", "==")):
            continue
        text = " ".join(para.split())
        if len(text) > MAX_CHARS:
            out += _group(_SENTENCE.split(text))
        else:
            out.append(text)
    return [p for p in out if _prose(p)]


def _group(sentences: list[str]) -> list[str]:
    groups, cur = [], ""
    for s in sentences:
        if cur and len(cur) + len(s) > 400:
            groups.append(cur)
            cur = ""
        cur = f"{cur} {s}".strip()
    return groups + ([cur] if cur else [])


def _prose(text: str) -> bool:
    if not MIN_CHARS <= len(text) <= MAX_CHARS or len(text.split()) < 8:
        return False
    letters = sum(ch.isalpha() or ch == " " for ch in text)
    return letters / len(text) > 0.8


def harvest(n: int) -> list[str]:
    """``n`` distinct prose pieces, sampled with a fixed seed from all installed docstrings."""
    seen: dict[str, None] = {}
    for path in source_files():
        for doc in docstrings(path):
            for piece in pieces(doc):
                seen.setdefault(piece, None)
    texts = list(seen)
    if len(texts) < n:
        raise SystemExit(f"only {len(texts)} distinct pieces found, {n} wanted")
    order = np.random.default_rng(0).permutation(len(texts))[:n]
    return [texts[i] for i in order]


def folder(n: int) -> Path:
    return CACHE / f"real-docstrings-{VERSION}-{n}"


def load_or_build(n: int, *, log: bool = True) -> tuple[list[str], np.ndarray, dict[str, float]]:
    """(texts, unit vectors) for ``n`` pieces, embedding only what the cache lacks."""
    from aillm_lab.rag.embeddings import default_embedder

    out = folder(n)
    out.mkdir(parents=True, exist_ok=True)
    timing = {"harvest_s": 0.0, "embed_s": 0.0, "embedded_now": 0}
    texts_file = out / "texts.json"
    if texts_file.exists():
        texts = json.loads(texts_file.read_text())
    else:
        t0 = time.perf_counter()
        texts = harvest(n)
        timing["harvest_s"] = round(time.perf_counter() - t0, 1)
        texts_file.write_text(json.dumps(texts))
    emb = default_embedder()
    parts = []
    for start in range(0, n, PART):
        part = out / f"part{start // PART:04d}.npy"
        if not part.exists():
            t0 = time.perf_counter()
            vecs = emb.embed_blocking(texts[start:start + PART])
            timing["embed_s"] += time.perf_counter() - t0
            timing["embedded_now"] += len(vecs)
            np.save(part.with_suffix(".tmp.npy"), vecs.astype(np.float32))
            part.with_suffix(".tmp.npy").replace(part)
            if log:
                print(f"embedded {min(start + PART, n)}/{n} "
                      f"({timing['embedded_now'] / timing['embed_s']:.0f}/s)", flush=True)
        parts.append(np.load(part))
    timing["embed_s"] = round(timing["embed_s"], 1)
    mat = np.concatenate(parts)
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:12]
    timing["texts_sha256_12"] = digest  # type: ignore[assignment]
    return texts, mat, timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=101_000)
    args = parser.parse_args()
    texts, mat, timing = load_or_build(args.n)
    print(len(texts), mat.shape, timing, file=sys.stderr)


if __name__ == "__main__":
    main()
