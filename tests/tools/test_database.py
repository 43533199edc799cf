"""The read-only DuckDB Database: registration, caps, timeouts, concurrency and its tools.

Every test builds its own workspace and Database and closes it. Expected values come from
pandas on the same data, so nothing here is a hard-coded answer.
"""

from __future__ import annotations

import asyncio
import pickle
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from aillm_lab.errors import SafetyViolation
from aillm_lab.runtime import LoopRunner, get_runner
from aillm_lab.tools.database import Database, DatabaseError, QueryTimeout, to_text
from aillm_lab.tools.paths import Workspace
from aillm_lab.tools.policy import SqlPolicy

# ~10^12 row pairs: minutes of work on any machine, so only a timeout ends it.
ENDLESS = ("SELECT count(*) FROM range(1000000) a, range(1000000) b "
           "WHERE (a.range * b.range) % 7 = 3")

PEOPLE = pd.DataFrame({"id": [1, 2, 3, 4], "name": ["ada", "bob", "cy", "di"],
                       "dept": ["eng", "eng", "ops", "ops"], "salary": [120, 100, 90, 95]})
ORDERS = pd.DataFrame({"order_id": [10, 11, 12, 13, 14], "person_id": [1, 1, 2, 3, 9],
                       "amount": [5.5, 7.0, 3.25, 10.0, 1.0]})


def write_files(root: Path) -> None:
    """CSV, Parquet and JSON copies of ORDERS, written by a trusted DuckDB connection."""
    ORDERS.to_csv(root / "orders.csv", index=False)
    ORDERS.to_json(root / "orders.json", orient="records")
    con = duckdb.connect()
    con.register("orders", ORDERS)
    con.execute(f"COPY orders TO '{root / 'orders.parquet'}' (FORMAT parquet)")
    con.close()


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    root = tmp_path / "ws"
    root.mkdir()
    write_files(root)
    return Workspace(root)


@pytest.fixture
def db(ws: Workspace) -> Iterator[Database]:
    database = Database(ws, SqlPolicy(timeout_s=30))
    database.register("people", PEOPLE)
    try:
        yield database
    finally:
        database.close()


# -- registration ---------------------------------------------------------------------------
def test_a_registered_dataframe_is_queryable_by_name(db: Database) -> None:
    df = db.query("SELECT * FROM people ORDER BY id")
    pd.testing.assert_frame_equal(df, PEOPLE, check_dtype=False)


@pytest.mark.parametrize("filename", ["orders.csv", "orders.parquet", "orders.json"])
def test_csv_parquet_and_json_files_become_views(db: Database, filename: str) -> None:
    db.register_file("orders", filename)
    df = db.query("SELECT * FROM orders ORDER BY order_id")
    pd.testing.assert_frame_equal(df, ORDERS, check_dtype=False)


@pytest.mark.parametrize("filename", ["it's here.csv", "données 2024.csv", "a;b--c.csv"])
def test_file_names_with_quotes_spaces_and_unicode_work(db: Database, ws: Workspace,
                                                        filename: str) -> None:
    (ws.root / filename).write_text((ws.root / "orders.csv").read_text())
    db.register_file("orders", filename)
    assert db.query("SELECT count(*) AS n FROM orders")["n"][0] == len(ORDERS)


def test_a_format_can_be_given_when_the_suffix_does_not_say(db: Database, ws: Workspace) -> None:
    (ws.root / "orders.data").write_text((ws.root / "orders.csv").read_text())
    db.register_file("orders", "orders.data", format="csv")
    assert db.query("SELECT count(*) AS n FROM orders")["n"][0] == len(ORDERS)


def test_an_unknown_file_suffix_is_refused_with_the_allowed_ones(db: Database,
                                                                 ws: Workspace) -> None:
    (ws.root / "notes.xlsx").write_bytes(b"x")
    with pytest.raises(DatabaseError, match=r"unknown format.*\.csv.*format="):
        db.register_file("notes", "notes.xlsx")


def test_a_file_outside_the_workspace_is_refused(db: Database, tmp_path: Path) -> None:
    (tmp_path / "outside.csv").write_text("a\n1\n")
    with pytest.raises(SafetyViolation) as err:
        db.register_file("outside", "../outside.csv")
    assert err.value.rule.startswith("path.")
    assert "outside" not in db.tables()


def test_a_symlink_inside_the_workspace_is_pinned_to_its_target(db: Database,
                                                               ws: Workspace) -> None:
    (ws.root / "latest.csv").symlink_to(ws.root / "orders.csv")
    db.register_file("latest", "latest.csv")
    (ws.root / "latest.csv").unlink()  # the view reads the real file, not the link
    assert db.query("SELECT count(*) AS n FROM latest")["n"][0] == len(ORDERS)
    assert db.list_tables().set_index("name").loc["latest", "source"] == "orders.csv"


def test_a_missing_file_is_refused_with_a_readable_error(db: Database) -> None:
    with pytest.raises(DatabaseError, match="no such file"):
        db.register_file("ghost", "ghost.csv")


@pytest.mark.parametrize("name", ["1abc", "a-b", "a b", 'x"; DROP TABLE people; --', "",
                                  "duckdb_settings", "a" * 64, "ü"])
def test_table_names_must_be_plain_identifiers(db: Database, name: str) -> None:
    with pytest.raises(DatabaseError, match="table name"):
        db.register(name, PEOPLE)


def test_register_refuses_anything_but_a_dataframe(db: Database) -> None:
    with pytest.raises(DatabaseError, match="pandas DataFrame"):
        db.register("rows", [{"a": 1}])  # type: ignore[arg-type]


def test_registering_a_name_again_replaces_the_table(db: Database) -> None:
    db.register("people", PEOPLE.head(2))
    assert db.query("SELECT count(*) AS n FROM people")["n"][0] == 2
    db.register_file("people", "orders.csv")  # a file may replace a DataFrame, too
    assert list(db.query("SELECT * FROM people").columns) == list(ORDERS.columns)
    assert db.tables() == ["people"]


def test_unregister_removes_a_table_and_unknown_names_are_named(db: Database) -> None:
    db.register_file("orders", "orders.csv")
    db.unregister("orders")
    with pytest.raises(DatabaseError, match="orders"):
        db.query("SELECT * FROM orders")
    with pytest.raises(DatabaseError, match="no table named 'nope'.*people"):
        db.unregister("nope")


def test_a_broken_file_does_not_hide_the_other_tables(db: Database, ws: Workspace) -> None:
    (ws.root / "broken.parquet").write_bytes(b"not parquet at all")
    db.register_file("broken", "broken.parquet")
    db.register_file("orders", "orders.csv")
    assert db.query("SELECT count(*) AS n FROM orders")["n"][0] == len(ORDERS)
    listing = db.list_tables().set_index("name")
    assert listing.loc["broken", "columns"].startswith("(cannot read")
    with pytest.raises(DatabaseError, match="broken"):
        db.query("SELECT * FROM broken")


# -- results and caps -----------------------------------------------------------------------
def test_a_join_across_a_dataframe_and_a_csv_view(db: Database) -> None:
    db.register_file("orders", "orders.csv")
    got = db.query("SELECT p.name, sum(o.amount) AS total FROM people p "
                   "JOIN orders o ON o.person_id = p.id GROUP BY p.name ORDER BY p.name")
    want = (PEOPLE.merge(ORDERS, left_on="id", right_on="person_id").groupby("name")["amount"]
            .sum().reset_index().rename(columns={"amount": "total"}))
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    assert got.attrs["truncated"] is False


def test_the_row_cap_truncates_and_says_so(ws: Workspace) -> None:
    with Database(ws, SqlPolicy(max_rows=5)) as sdb:
        df = sdb.query("SELECT * FROM range(1000) t(i) ORDER BY i")
        assert list(df["i"]) == list(range(5))
        assert df.attrs["truncated"] is True
        assert "more than 5 rows" in df.attrs["note"]
        assert "more than 5 rows" in to_text(df)


def test_max_rows_per_call_narrows_but_never_widens_the_policy(ws: Workspace) -> None:
    with Database(ws, SqlPolicy(max_rows=5)) as sdb:
        assert len(sdb.query("SELECT * FROM range(100)", max_rows=3)) == 3
        assert len(sdb.query("SELECT * FROM range(100)", max_rows=50)) == 5


def test_the_byte_cap_stops_a_wide_row_after_narrow_ones(ws: Workspace) -> None:
    """Rows are measured one at a time, so a wide one cannot ride in a batch of narrow."""
    with Database(ws, SqlPolicy(max_result_bytes=1_000_000)) as sdb:
        df = sdb.query("SELECT i, CASE WHEN i < 3 THEN 'x' ELSE repeat('x', 400000) END AS s "
                       "FROM range(50) t(i) ORDER BY i")
        assert list(df["i"]) == [0, 1, 2, 3, 4]
        assert "over the 1000000-byte cap" in df.attrs["note"]


def test_streamed_results_keep_the_dtypes_duckdb_gives(db: Database) -> None:
    sql = ("SELECT i::INTEGER AS i, i::BIGINT AS b, CASE WHEN i = 1 THEN NULL ELSE i END "
           "AS maybe, i / 2 AS d, (i * 1.25)::DECIMAL(8, 2) AS dec, 'n' || i AS s, "
           "CASE WHEN i = 1 THEN NULL ELSE 'v' END AS ms, DATE '2024-01-01' + i::INTEGER "
           "AS day, TIMESTAMP '2024-01-01 10:00' AS ts, i % 2 = 0 AS even, "
           "CASE WHEN i = 1 THEN NULL ELSE true END AS mb, 'a'::ENUM('a', 'b') AS e, "
           "i::HUGEINT AS h, INTERVAL 1 DAY AS iv FROM range(3) t(i) ORDER BY i")
    trusted = duckdb.connect()
    pd.testing.assert_frame_equal(db.query(sql), trusted.sql(sql).df())
    empty = sql + " LIMIT 0"
    pd.testing.assert_frame_equal(db.query(empty), trusted.sql(empty).df())
    trusted.close()


def test_duckdb_runs_with_the_policys_memory_limit_and_threads(ws: Workspace) -> None:
    with Database(ws, SqlPolicy(memory_limit_mb=64, threads=1)) as sdb:
        settings = sdb.settings()
        assert settings["memory_limit"] == "64.0 MiB" and settings["threads"] == "1"
        with pytest.raises(SafetyViolation) as err:
            sdb.query("SELECT list(i) FROM range(50000000) t(i)")
        assert err.value.rule == "sql.memory_limit"
        assert "64 MB" in err.value.detail and "LIMIT" in err.value.detail
        assert sdb.query("SELECT 1 AS one")["one"][0] == 1  # the database still works


@pytest.mark.parametrize("bad", [0, -1, True, 2.5])
def test_a_bad_max_rows_is_refused(db: Database, bad: object) -> None:
    with pytest.raises(DatabaseError, match="max_rows"):
        db.query("SELECT 1", max_rows=bad)  # type: ignore[arg-type]


def test_the_byte_cap_keeps_only_the_rows_that_fit(ws: Workspace) -> None:
    cap = 20_000
    with Database(ws, SqlPolicy(max_result_bytes=cap)) as sdb:
        df = sdb.query("SELECT repeat('x', 1000) AS s FROM range(100)")
        assert 0 < len(df) < 100
        assert df.memory_usage(index=False, deep=True).sum() <= cap
        assert df.attrs["truncated"] is True and "byte cap" in df.attrs["note"]


def test_sql_errors_are_readable_and_list_the_tables(db: Database) -> None:
    with pytest.raises(DatabaseError, match=r"nope.*tables: people"):
        db.query("SELECT nope FROM people")
    with pytest.raises(DatabaseError, match="does not parse"):
        db.query("SELEC 1")
    with pytest.raises(DatabaseError, match="empty"):
        db.query("  -- nothing\n")


def test_to_text_renders_rows_shape_and_empty_results(db: Database) -> None:
    text = to_text(db.query("SELECT name FROM people ORDER BY id"))
    assert "ada" in text and "(4 rows x 1 columns)" in text and "Truncated" not in text
    empty = to_text(db.query("SELECT name, salary FROM people WHERE false"))
    assert "(no rows) columns: name, salary" in empty


# -- timeouts and the loop ------------------------------------------------------------------
def test_the_loop_heartbeat_never_stalls_during_a_five_second_query(db: Database) -> None:
    period, gaps = 0.010, []

    async def main() -> float:
        stop = asyncio.Event()

        async def heartbeat() -> None:
            last = time.perf_counter()
            while not stop.is_set():
                await asyncio.sleep(period)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        beat = asyncio.create_task(heartbeat())
        start = time.perf_counter()
        with pytest.raises(QueryTimeout):
            await db.aquery(ENDLESS, timeout_s=5.0)
        elapsed = time.perf_counter() - start
        stop.set()
        await beat
        return elapsed

    elapsed = get_runner().run(main())
    assert elapsed >= 4.9  # the query really ran for five seconds
    assert len(gaps) > 100
    # a loop blocked by the query would stall for the whole five seconds; 0.5 s leaves room
    # for a busy machine's scheduling (a run at load average 5 saw a 50 ms gap)
    assert max(gaps) - period < 0.5, f"the loop stalled for {max(gaps) - period:.3f} s"


def test_a_timeout_interrupts_the_query_within_a_second(ws: Workspace) -> None:
    with Database(ws, workers=1) as sdb:
        start = time.perf_counter()
        with pytest.raises(QueryTimeout) as err:
            sdb.query(ENDLESS, timeout_s=1.0)
        late = time.perf_counter() - start - 1.0
        assert late < 1.0, f"the interrupt took {late:.2f} s after the deadline"
        assert err.value.rule == "sql.timeout" and "1 s" in err.value.detail
        assert isinstance(err.value, TimeoutError)
        # The single worker is free again, so the query really stopped.
        assert sdb.query("SELECT 42 AS x", timeout_s=5)["x"][0] == 42


def test_the_policy_timeout_applies_when_no_timeout_is_given(ws: Workspace) -> None:
    with Database(ws, SqlPolicy(timeout_s=0.3)) as sdb, pytest.raises(QueryTimeout):
        sdb.query("SELECT sleep_ms(20000)")


def test_a_bad_timeout_is_refused(db: Database) -> None:
    with pytest.raises(DatabaseError, match="timeout_s"):
        db.query("SELECT 1", timeout_s=0)


def test_cancelling_the_caller_interrupts_the_query(ws: Workspace) -> None:
    async def main(database: Database) -> int:
        task = asyncio.create_task(database.aquery(ENDLESS, timeout_s=60))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # With one worker this only answers if the cancelled query stopped.
        return int((await database.aquery("SELECT 7 AS x", timeout_s=5))["x"][0])

    with Database(ws, workers=1) as sdb:
        assert get_runner().run(main(sdb)) == 7


def test_query_timeout_survives_pickling() -> None:
    err = pickle.loads(pickle.dumps(QueryTimeout("sql.timeout", "ran past 1 s")))
    assert isinstance(err, QueryTimeout) and err.rule == "sql.timeout"


# -- concurrency ----------------------------------------------------------------------------
def test_concurrent_queries_from_several_tasks_each_get_their_answer(db: Database) -> None:
    async def main() -> list[int]:
        frames = await asyncio.gather(*(
            db.aquery(f"SELECT sum(range) AS s FROM range({n * 100_000})") for n in range(1, 9)))
        return [int(f["s"][0]) for f in frames]

    want = [sum(range(n * 100_000)) for n in range(1, 9)]
    assert get_runner().run(main()) == want


def test_registering_a_file_while_a_query_runs_keeps_both_working(db: Database) -> None:
    async def main() -> tuple[int, int]:
        slow = asyncio.create_task(db.aquery("SELECT count(*) AS n FROM people, "
                                             "(SELECT sleep_ms(500))"))
        await asyncio.sleep(0.1)
        db.register_file("orders", "orders.parquet")  # rebuilds the engine mid-query
        fast = await db.aquery("SELECT count(*) AS n FROM orders")
        return int((await slow)["n"][0]), int(fast["n"][0])

    assert get_runner().run(main()) == (len(PEOPLE), len(ORDERS))


def test_queries_can_be_awaited_from_a_loop_that_is_not_the_runner(db: Database) -> None:
    df = asyncio.run(db.aquery("SELECT max(salary) AS m FROM people"))
    assert df["m"][0] == PEOPLE["salary"].max()


# -- tools and lifecycle --------------------------------------------------------------------
def test_the_tools_are_read_risk_with_schemas_and_return_dataframes(db: Database) -> None:
    tools = {t.name: t for t in db.tools()}
    assert set(tools) == {"sql_query", "list_tables", "describe_table", "load_table"}
    assert all(t.risk.value == "read" for t in tools.values())
    assert tools["sql_query"].spec.parameters["required"] == ["sql"]
    assert "max_rows" in tools["sql_query"].spec.parameters["properties"]

    async def main() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        return (await tools["sql_query"].acall({"sql": "SELECT count(*) AS n FROM people"}),
                await tools["list_tables"].acall({}),
                await tools["describe_table"].acall({"name": "people"}))

    counted, listing, described = get_runner().run(main())
    assert counted["n"][0] == len(PEOPLE)
    assert listing.to_dict("records") == [{"name": "people", "kind": "dataframe",
                                           "source": "DataFrame",
                                           "columns": "id BIGINT, name VARCHAR, "
                                                      "dept VARCHAR, salary BIGINT"}]
    assert list(described["column_name"]) == list(PEOPLE.columns)


def test_load_table_lets_the_model_query_a_workspace_file(db: Database) -> None:
    tools = {t.name: t for t in db.tools()}
    (db.ws.root / "2024 stock.csv").write_text("item,qty\nfig,3\nkiwi,5\n")

    async def main() -> tuple[str, pd.DataFrame]:
        loaded = await tools["load_table"].acall({"path": "2024 stock.csv"})
        return loaded, await tools["sql_query"].acall({"sql": "SELECT sum(qty) AS q "
                                                              "FROM t_2024_stock"})

    loaded, total = get_runner().run(main())
    assert "'t_2024_stock'" in loaded and "item" in loaded and "qty" in loaded
    assert total["q"][0] == 8


@pytest.mark.parametrize(("args", "error", "match"), [
    ({"path": "../outside.csv", "name": "x"}, SafetyViolation, "outside the workspace"),
    ({"path": "people.csv", "name": "people"}, DatabaseError, "name='people_file'"),
    ({"path": "missing.csv"}, DatabaseError, "no such file"),
])
def test_load_table_refuses_outside_files_user_tables_and_missing_files(
        db: Database, args: dict[str, str], error: type[Exception], match: str) -> None:
    tool = next(t for t in db.tools() if t.name == "load_table")
    (db.ws.root / "people.csv").write_text("a\n1\n")
    with pytest.raises(error, match=match):
        get_runner().run(tool.acall(args))
    assert db.tables() == ["people"]


def test_the_sql_query_tool_refuses_writes_like_the_method(db: Database) -> None:
    tool = next(t for t in db.tools() if t.name == "sql_query")
    with pytest.raises(SafetyViolation) as err:
        get_runner().run(tool.acall({"sql": "DROP TABLE people"}))
    assert err.value.rule == "sql.not_read_only"


def test_describe_names_the_tables_when_one_is_missing(db: Database) -> None:
    with pytest.raises(DatabaseError, match="no table named 'ghost'; tables: people"):
        db.describe("ghost")


def test_close_is_idempotent_and_later_use_is_refused(ws: Workspace) -> None:
    database = Database(ws)
    database.register("people", PEOPLE)
    assert len(database.query("SELECT * FROM people")) == len(PEOPLE)
    database.close()
    database.close()
    with pytest.raises(DatabaseError, match="closed"):
        database.query("SELECT 1")
    with pytest.raises(DatabaseError, match="closed"):
        database.register("again", PEOPLE)


def test_closing_the_runner_closes_the_database(ws: Workspace) -> None:
    runner = LoopRunner(name="aillm-test-duckdb")
    database = Database(ws, runner=runner)
    assert database.query("SELECT 1 AS x")["x"][0] == 1
    runner.close()
    with pytest.raises(DatabaseError, match="closed"):
        database.register("people", PEOPLE)


def test_a_database_left_open_closes_cleanly_at_interpreter_exit(ws: Workspace) -> None:
    """At exit no new thread may start, so the runner's closer must stop DuckDB inline."""
    script = (f"from aillm_lab.runtime import get_runner\n"
              f"from aillm_lab.tools.database import Database\n"
              f"from aillm_lab.tools.paths import Workspace\n"
              f"db = Database(Workspace({str(ws.root)!r}), runner=get_runner())\n"
              f"print(db.query('SELECT 42 AS x')['x'][0])\n")
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", script], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "42", proc.stderr
    assert "failed" not in proc.stderr, proc.stderr
