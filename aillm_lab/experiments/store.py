"""Where a run lives: ``<home>/experiments/<run_id>/`` with a manifest and Parquet parts.

``manifest.json`` holds the spec, the package versions, the git SHA (if the working folder
is a checkout), the price-table version, the seed and the last run's outcome.
``cells/part-*.parquet`` hold one row per finished cell attempt, ``scores/part-*.parquet``
one row per (cell, scorer); both carry ``run_id``, so they join the call log. Every part is
written to a hidden temp file and renamed, so readers see whole parts only. Between parts,
each finished row is appended at once to ``journal/*.jsonl`` (one write per cell), so a
SIGKILL loses no cell that had finished; readers fold the journals in, and a torn last line
is skipped; the next run folds journals no live writer holds (each writer locks its own).
A row in both a part and a journal (a kill between the two) is the same row;
a cell attempted twice (an error, then a retry) has two rows: the newest wins. Under the Ray
executor every worker is one more writer of parts and journals in the same folder, and
writes its own ``workers/<n>.json``, which the driver merges into ``manifest.json``.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import subprocess
import time
import uuid
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aillm_lab.config import environ_without_secrets

if TYPE_CHECKING:
    import pandas as pd

CELL_COLUMNS: dict[str, str] = {
    "run_id": "string", "cell_id": "string", "item_id": "string", "item_index": "int64",
    "item": "string", "prompt_index": "int64", "prompt": "string", "model_index": "int64",
    "model": "string", "epoch": "int64", "sample": "int64", "input": "string",
    "output": "string", "tool_calls": "string", "error": "string", "answered_by": "string",
    "input_tokens": "Int64", "output_tokens": "Int64", "cost_usd": "float64",
    "latency_s": "float64", "finish_reason": "string", "finished_at": "float64",
}
SCORE_COLUMNS: dict[str, str] = {
    "run_id": "string", "cell_id": "string", "scorer": "string", "value": "float64",
    "error": "string", "higher_is_better": "bool", "scored_at": "float64",
}
PACKAGES = ("aillm-lab", "pydantic", "pandas", "numpy", "duckdb", "genai-prices")


def experiments_dir(home: Path) -> Path:
    return Path(home) / "experiments"


def write_part(folder: Path, rows: list[dict[str, Any]], columns: dict[str, str]) -> Path:
    """``rows`` as one Parquet file in ``folder``, published by an atomic rename."""
    import duckdb
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({name: pd.Series([r.get(name) for r in rows], dtype=dtype)
                          for name, dtype in columns.items()})
    final = folder / f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
    temp = folder / f".{final.name}.tmp"
    con = duckdb.connect()
    try:
        con.register("part", frame)
        con.execute(f"COPY part TO '{_sql_path(temp)}' (FORMAT parquet)")
    finally:
        con.close()
    with open(temp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temp, final)
    return final


def read_parts(folder: Path, columns: dict[str, str]) -> pd.DataFrame:
    """Every part in ``folder`` as one frame (empty with the columns when there is none)."""
    import duckdb
    import pandas as pd

    parts = sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []
    if not parts:
        return pd.DataFrame({n: pd.Series([], dtype=t) for n, t in columns.items()})
    listed = ", ".join(f"'{_sql_path(p)}'" for p in parts)
    con = duckdb.connect()
    try:
        frame = con.execute(f"SELECT * FROM read_parquet([{listed}], union_by_name = true)"
                            ).df()
    finally:
        con.close()
    return frame.astype({n: t for n, t in columns.items() if n in frame.columns})


class Journal:
    """This process's append-only JSONL of rows not yet in a part; ``rotate`` starts anew."""

    def __init__(self, folder: Path) -> None:
        self.dir = folder / "journal"
        self.fd: int | None = None
        self.path: Path | None = None

    def append(self, kind: str, rows: list[dict[str, Any]]) -> None:
        if self.fd is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.path = self.dir / f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.jsonl"
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            fcntl.flock(self.fd, fcntl.LOCK_EX)  # "in use": fold_orphans leaves it alone
        data = "".join(json.dumps({"kind": kind, **row}, default=str) + "\n" for row in rows)
        os.write(self.fd, data.encode())

    def rotate(self) -> Path | None:
        """Close the current file and return it (delete it once its rows are in a part)."""
        path, fd = self.path, self.fd
        self.path = self.fd = None
        if fd is not None:
            os.close(fd)
        return path


def fold_orphans(folder: Path) -> int:
    """Fold journals no live writer holds (left by a crash or a failed write) into parts,
    then delete them; returns how many were folded."""
    folded = 0
    for path in sorted((folder / "journal").glob("*.jsonl")):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a running writer's journal
            cells, scores = _journal_rows(path, "cells"), _journal_rows(path, "scores")
            if cells:
                write_part(folder / "cells", cells, CELL_COLUMNS)
            if scores:
                write_part(folder / "scores", scores, SCORE_COLUMNS)
            path.unlink(missing_ok=True)
            folded += 1
        finally:
            os.close(fd)
    return folded


def _journal_rows(path: Path, kind: str) -> list[dict[str, Any]]:
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:  # folded into a part meanwhile; the part has its rows
        return rows
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line torn by a kill
        if row.get("kind") == kind:
            rows.append(row)
    return rows


def read_journal(folder: Path, kind: str, columns: dict[str, str]) -> pd.DataFrame:
    """The ``kind`` rows of every journal under ``folder``; torn lines are skipped."""
    import pandas as pd

    rows = [row for path in sorted((folder / "journal").glob("*.jsonl"))
            for row in _journal_rows(path, kind)]
    return pd.DataFrame({n: pd.Series([r.get(n) for r in rows], dtype=t)
                         for n, t in columns.items()})


def _read_all(folder: Path, kind: str, columns: dict[str, str]) -> pd.DataFrame:
    import pandas as pd

    journal = read_journal(folder, kind, columns)  # first: a part written meanwhile has them
    parts = read_parts(folder / kind, columns)
    if journal.empty:
        return parts
    return pd.concat([parts, journal], ignore_index=True) if not parts.empty else journal


def latest_cells(folder: Path) -> pd.DataFrame:
    """One row per cell: its newest attempt."""
    cells = _read_all(folder, "cells", CELL_COLUMNS)
    cells = cells.sort_values("finished_at", kind="stable")
    return cells.drop_duplicates("cell_id", keep="last").reset_index(drop=True)


def latest_scores(folder: Path) -> pd.DataFrame:
    """One row per (cell, scorer): its newest score."""
    scores = _read_all(folder, "scores", SCORE_COLUMNS)
    scores = scores.sort_values("scored_at", kind="stable")
    return scores.drop_duplicates(["cell_id", "scorer"], keep="last").reset_index(drop=True)


def write_manifest(folder: Path, manifest: dict[str, Any], name: str = "manifest.json"
                   ) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    temp = folder / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
    temp.write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
    os.replace(temp, folder / name)


def write_worker_manifest(folder: Path, worker: int, manifest: dict[str, Any]) -> None:
    """A Ray worker's own account of its shard, ``workers/<n>.json``; the driver merges
    them into ``manifest.json`` (``read_worker_manifests``)."""
    write_manifest(folder / "workers", manifest, f"{worker}.json")


def read_worker_manifests(folder: Path) -> dict[int, dict[str, Any]]:
    """The worker manifests of the last Ray run, by worker number (a torn one is skipped)."""
    found = {}
    for path in (folder / "workers").glob("*.json"):
        try:
            found[int(path.stem)] = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, OSError):
            continue
    return dict(sorted(found.items()))


def clear_worker_manifests(folder: Path) -> None:
    """Forget an earlier Ray run's worker manifests before a new one starts."""
    for path in (folder / "workers").glob("*.json"):
        path.unlink(missing_ok=True)


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / "manifest.json"
    if not path.is_file():
        raise LookupError(f"{folder} holds no experiment run (no manifest.json); run the "
                          "experiment first, or pass the folder of an existing run")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def environment() -> dict[str, Any]:
    """Package versions, Python and the git SHA of the working folder, for the manifest."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return {"python": platform.python_version(), "packages": versions, "git_sha": _git_sha()}


def _git_sha() -> str | None:
    """The commit of the current folder's repository, for the manifest; git gets no
    secrets from our environment and no terminal."""
    env = {**environ_without_secrets(), "GIT_TERMINAL_PROMPT": "0"}
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5, check=False, env=env, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")
