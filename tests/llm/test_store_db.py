"""The record/replay store's file follows lab.db's rules, through LabDB, without its identity."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from aillm_lab.db import LabDB
from aillm_lab.errors import LabDBError
from aillm_lab.llm.store import ResponseStore
from aillm_lab.llm.types import Completion
from aillm_lab.runtime import LoopRunner


def test_the_store_is_a_lab_db_on_cache_db_without_an_identity_file(
        tmp_path: Path, runner: LoopRunner) -> None:
    store = ResponseStore(tmp_path, "record")
    assert isinstance(store, LabDB) and store.path == tmp_path / "cache.db"
    assert runner.run(store.save("k", Completion(text="hi")))
    runner.run(store.aclose())
    assert not (tmp_path / "cache.db.id").exists()
    with sqlite3.connect(tmp_path / "cache.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1


def test_a_damaged_cache_db_is_a_typed_error_whose_fix_fits_the_file(
        tmp_path: Path, runner: LoopRunner) -> None:
    (tmp_path / "cache.db").write_bytes(b"this is not a database, " * 400)
    store = ResponseStore(tmp_path, "replay_or_record")
    with pytest.raises(LabDBError, match="damaged") as info:
        runner.run(store.lookup("k", stream=False))
    text = str(info.value)
    assert str(tmp_path / "cache.db") in text and "move cache.db" in text
    assert "aillm-lab reset" not in text  # that fix is for lab.db, not for this file
    runner.run(store.aclose())
