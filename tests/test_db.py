"""lab.db's identity and integrity: a lost, emptied, swapped or damaged file is a typed error
naming the file and the fix, never a silently empty lab or a raw ``sqlite3`` error."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
from pathlib import Path

import pytest

import aillm_lab as al
from aillm_lab.db import LabDB, id_path
from aillm_lab.errors import (
    LabDBBusy,
    LabDBError,
    LabDBIdentityError,
    LabDBOperationalError,
)

FACT = "The user prefers metric units."


def _use(home: Path) -> str:
    """A home with history: a memory and an audited tool call; returns the memory's id."""
    with al.Lab(home=home) as lab:
        assert lab.tools.workspace.root.is_dir()
        (lab.settings.workspace_path / "notes.txt").write_text("alpha\n")
        memory = lab.memory.add(FACT)
        assert lab.tools.invoke("read_file", {"path": "notes.txt"}).ok
        assert list(lab.audit()["tool"]) == ["read_file"]
        db = lab.settings.db_path
    assert not Path(f"{db}-wal").exists()  # closed: everything is in lab.db itself
    return memory.id


def _stored_id(db: Path) -> str:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute("SELECT value FROM lab_meta WHERE key = 'id'").fetchone()[0]


def _assert_names_file_and_fix(exc: BaseException, db: Path) -> None:
    text = str(exc)
    assert str(db) in text and "aillm-lab reset --confirm" in text and "backup" in text


# -- identity ---------------------------------------------------------------------------------
def test_a_truncated_lab_db_raises_a_typed_error_naming_the_file_not_an_empty_lab(
        lab_home: Path) -> None:
    _use(lab_home)
    db = lab_home / "lab.db"
    db.write_bytes(b"")
    with al.Lab(home=lab_home) as lab:
        with pytest.raises(LabDBIdentityError, match="empty") as info:
            lab.memory.list()
        _assert_names_file_and_fix(info.value, db)
        with pytest.raises(LabDBIdentityError):
            lab.tools.invoke("read_file", {"path": "notes.txt"})
    assert db.stat().st_size == 0  # nothing was written over the evidence


def test_a_deleted_lab_db_is_not_recreated_while_its_id_file_remains(lab_home: Path) -> None:
    _use(lab_home)
    db = lab_home / "lab.db"
    expected = id_path(db).read_text().strip()
    db.unlink()
    with al.Lab(home=lab_home) as lab:
        with pytest.raises(LabDBIdentityError, match="missing") as info:
            lab.memory.list()
    _assert_names_file_and_fix(info.value, db)
    assert info.value.expected_id == expected and info.value.path == db
    assert not db.exists()


def test_another_homes_lab_db_is_refused_as_foreign(lab_home: Path, tmp_path: Path) -> None:
    _use(lab_home)
    other = tmp_path / "other_home"
    other.mkdir()
    _use(other)
    db = lab_home / "lab.db"
    mine, theirs = _stored_id(db), _stored_id(other / "lab.db")
    shutil.copyfile(other / "lab.db", db)
    with al.Lab(home=lab_home) as lab:
        with pytest.raises(LabDBIdentityError, match="another lab") as info:
            lab.memory.list()
    _assert_names_file_and_fix(info.value, db)
    assert (info.value.expected_id, info.value.found_id) == (mine, theirs)


def test_a_brand_new_home_gets_lab_db_and_its_id_file(lab_home: Path) -> None:
    with al.Lab(home=lab_home) as lab:
        assert lab.audit().empty
    db = lab_home / "lab.db"
    assert id_path(db) == lab_home / "lab.db.id"
    assert id_path(db).read_text().strip() == _stored_id(db)


def test_a_lab_db_from_before_ids_is_adopted(lab_home: Path) -> None:
    memory_id = _use(lab_home)
    db = lab_home / "lab.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("DROP TABLE lab_meta")
        conn.commit()
    id_path(db).unlink()
    with al.Lab(home=lab_home) as lab:
        assert lab.memory.get(memory_id).text == FACT
    assert id_path(db).read_text().strip() == _stored_id(db)


def test_an_unreadable_id_file_is_named_with_its_fix(lab_home: Path) -> None:
    _use(lab_home)
    sidecar = lab_home / "lab.db.id"
    sidecar.write_text("scribbled over\n")
    with al.Lab(home=lab_home) as lab, pytest.raises(LabDBIdentityError) as info:
        lab.audit()
    assert str(sidecar) in str(info.value) and f"delete {sidecar.name}" in str(info.value)


# -- damage -----------------------------------------------------------------------------------
def test_a_zeroed_middle_third_fails_memory_and_tool_calls_with_a_typed_error(
        lab_home: Path) -> None:
    _use(lab_home)
    db = lab_home / "lab.db"
    data = bytearray(db.read_bytes())
    third = len(data) // 3
    assert third >= 2 * 4096  # at least one whole page is zeroed
    data[third:2 * third] = bytes(third)
    db.write_bytes(bytes(data))
    with al.Lab(home=lab_home) as lab:
        with pytest.raises(LabDBError, match="damaged") as from_memory:
            lab.memory.list()
        with pytest.raises(LabDBError, match="damaged") as from_tools:
            lab.tools.invoke("read_file", {"path": "notes.txt"})
    for info in (from_memory, from_tools):
        _assert_names_file_and_fix(info.value, db)
        assert not isinstance(info.value, LabDBIdentityError)  # its id is intact


def test_garbage_bytes_fail_with_a_typed_error_whose_cause_is_sqlites(lab_home: Path) -> None:
    _use(lab_home)
    db = lab_home / "lab.db"
    db.write_bytes(b"this is not a database, just text\n" * 500)
    with al.Lab(home=lab_home) as lab:
        with pytest.raises(LabDBError, match="not a database") as from_memory:
            lab.memory.list()
        with pytest.raises(LabDBError, match="not a database") as from_tools:
            lab.tools.invoke("read_file", {"path": "notes.txt"})
    for info in (from_memory, from_tools):
        _assert_names_file_and_fix(info.value, db)
        assert type(info.value.__cause__) is sqlite3.DatabaseError


def test_undecodable_text_is_a_typed_error_naming_the_file(lab_home: Path) -> None:
    _use(lab_home)
    db = lab_home / "lab.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("UPDATE audit SET tool = CAST(x'fffe41' AS TEXT)")
        conn.commit()
    with al.Lab(home=lab_home) as lab, pytest.raises(LabDBError, match="decode") as info:
        lab.audit()
    _assert_names_file_and_fix(info.value, db)


# -- other SQLite errors ----------------------------------------------------------------------
def test_a_held_lock_is_lab_db_busy_which_is_still_an_operational_error(tmp_path: Path) -> None:
    path = tmp_path / "lab.db"

    async def main() -> None:
        db = LabDB(path, schema="CREATE TABLE IF NOT EXISTS t (x);", busy_timeout_ms=10)
        await db.fetchall("SELECT * FROM t")
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            try:
                with pytest.raises(LabDBBusy, match="locked") as info:
                    async with db.write() as conn:
                        await conn.execute("INSERT INTO t VALUES (1)")
            finally:
                other.execute("ROLLBACK")
        async with db.write() as conn:  # the failed batch left no transaction behind
            await conn.execute("INSERT INTO t VALUES (2)")
        assert [tuple(r) for r in await db.fetchall("SELECT x FROM t")] == [(2,)]
        await db.aclose()
        assert isinstance(info.value, sqlite3.OperationalError) and str(path) in str(info.value)

    asyncio.run(main())


def test_a_missing_table_is_a_typed_operational_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "lab.db"

    async def main() -> None:
        db = LabDB(path)
        try:
            with pytest.raises(LabDBOperationalError, match="no such table: nope") as info:
                await db.fetchall("SELECT * FROM nope")
        finally:
            await db.aclose()
        assert str(path) in str(info.value)
        assert type(info.value.__cause__) is sqlite3.OperationalError

    asyncio.run(main())


def test_read_small_runs_on_the_loop_sees_committed_writes_and_names_the_file(
        tmp_path: Path) -> None:
    path = tmp_path / "lab.db"

    async def main() -> None:
        db = LabDB(path, schema="CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT);")
        try:
            await db.executemany("INSERT INTO t VALUES (?, ?)", [(1, "a"), (2, "b")])
            rows = await db.read_small("SELECT id, v FROM t WHERE id IN (?, ?)", (1, 2))
            assert [(r["id"], r["v"]) for r in rows] == [(1, "a"), (2, "b")]
            async with db.write() as conn:  # a later commit is seen by the next read
                await conn.execute("UPDATE t SET v = 'z' WHERE id = 1")
            assert (await db.read_small("SELECT v FROM t WHERE id = 1"))[0][0] == "z"
            with pytest.raises(LabDBOperationalError, match="no such table: nope") as info:
                await db.read_small("SELECT * FROM nope")
            assert str(path) in str(info.value)
            with pytest.raises(LabDBError, match="readonly"):  # the reader cannot write
                await db.read_small("DELETE FROM t")
        finally:
            await db.aclose()
        assert db._reader is None  # closed with the database
        assert (await db.read_small("SELECT count(*) FROM t"))[0][0] == 2  # reopens
        await db.aclose()

    asyncio.run(main())


# -- backup -----------------------------------------------------------------------------------
def test_a_backup_opens_as_a_lab_with_the_same_memories_and_restores_a_lost_home(
        lab_home: Path, tmp_path: Path) -> None:
    memory_id = _use(lab_home)
    with al.Lab(home=lab_home) as lab:
        copy = lab.backup(tmp_path / "backups" / "lab-copy.db")
        assert copy == tmp_path / "backups" / "lab-copy.db"
        lab.memory.add("Written after the backup.")
    assert sorted(p.name for p in copy.parent.iterdir()) == ["lab-copy.db"]
    elsewhere = tmp_path / "restored_home"
    elsewhere.mkdir()
    shutil.copyfile(copy, elsewhere / "lab.db")
    with al.Lab(home=elsewhere) as lab:
        assert lab.memory.get(memory_id).text == FACT
        assert [m.text for m in lab.memory.list()] == [FACT]
        assert list(lab.audit()["tool"]) == ["read_file"]
    db = lab_home / "lab.db"
    db.write_bytes(b"")  # lost; the backup keeps the home's id, so it restores it
    shutil.copyfile(copy, db)
    with al.Lab(home=lab_home) as lab:
        assert lab.memory.get(memory_id).text == FACT


def test_abackup_awaits_from_a_running_loop(lab_home: Path, tmp_path: Path) -> None:
    async def main() -> Path:
        async with al.Lab(home=lab_home) as lab:
            await lab.tools.ainvoke("list_dir", {"path": "."})
            return await lab.abackup(tmp_path / "copy.db")

    copy = asyncio.run(main())
    assert _stored_id(copy) == _stored_id(lab_home / "lab.db")
    with contextlib.closing(sqlite3.connect(copy)) as conn:
        assert conn.execute("SELECT tool FROM audit").fetchall() == [("list_dir",)]



def test_a_backup_holds_the_audit_rows_still_waiting_for_their_group_commit(
        lab_home: Path, tmp_path: Path) -> None:
    with al.Lab(home=lab_home) as lab:
        for _ in range(5):  # the first row commits on return, the next ones are buffered
            lab.tools.invoke("list_dir", {"path": "."})
        copy = lab.backup(tmp_path / "copy.db")
    with contextlib.closing(sqlite3.connect(copy)) as conn:
        assert conn.execute("SELECT count(*) FROM audit").fetchone() == (5,)
