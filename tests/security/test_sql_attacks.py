"""SQL a hostile model might send to the read-only Database: each one is refused.

After every attempt the host is checked: the sentinel file outside the workspace is
unchanged, no file appeared anywhere under the test folder (COPY, EXPORT, ATTACH), the
registered tables still answer, and DuckDB still reports external access off and its
configuration locked. A second layer is tested with the parser guard switched off: the
locked connection alone still refuses files and settings.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aillm_lab.tools.database as database_module
from aillm_lab.errors import SafetyViolation
from aillm_lab.tools.database import Database, DatabaseError
from aillm_lab.tools.paths import Workspace

SECRET = "TOP-SECRET-SENTINEL-4711"
PEOPLE = pd.DataFrame({"id": [1, 2], "name": ["ada", "bob"]})

NOT_READ_ONLY = "sql.not_read_only"
MULTIPLE = "sql.multiple_statements"
FILES = "sql.file_access"
FUNCTION = "sql.function_not_allowed"

# (sql, rule). {out} is the test folder (outside the workspace), {ws} the workspace and
# {sentinel} a secret file in {out}.
ATTACKS: list[tuple[str, str]] = [
    # writing files
    ("COPY people TO '{out}/stolen.csv'", NOT_READ_ONLY),
    ("COPY (SELECT * FROM data) TO '{ws}/copy.parquet' (FORMAT parquet)", NOT_READ_ONLY),
    ("COPY people FROM '{sentinel}'", NOT_READ_ONLY),
    ("EXPORT DATABASE '{out}/export'", NOT_READ_ONLY),
    ("IMPORT DATABASE '{out}/export'", NOT_READ_ONLY),
    # other databases
    ("ATTACH ':memory:' AS scratch", NOT_READ_ONLY),
    ("ATTACH '{out}/evil.duckdb' AS evil", NOT_READ_ONLY),
    ("ATTACH '{sentinel}' AS s (TYPE sqlite)", NOT_READ_ONLY),
    ("DETACH memory", NOT_READ_ONLY),
    ("USE memory", NOT_READ_ONLY),
    # extensions
    ("INSTALL httpfs", NOT_READ_ONLY),
    ("LOAD httpfs", NOT_READ_ONLY),
    ("FORCE INSTALL httpfs FROM 'http://127.0.0.1:9/'", NOT_READ_ONLY),
    ("LOAD '{out}/evil.duckdb_extension'", NOT_READ_ONLY),
    ("UPDATE EXTENSIONS", NOT_READ_ONLY),
    # schema and data changes
    ("CREATE TABLE t AS SELECT 1", NOT_READ_ONLY),
    ("CREATE VIEW v AS SELECT * FROM read_csv('{sentinel}')", NOT_READ_ONLY),
    ("CREATE MACRO m(x) AS x + 1", NOT_READ_ONLY),
    ("CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')", NOT_READ_ONLY),
    ("CREATE OR REPLACE TEMP VIEW people AS SELECT 'pwned' AS name", NOT_READ_ONLY),
    ("CREATE SEQUENCE seq", NOT_READ_ONLY),
    ("INSERT INTO people VALUES (9, 'mallory')", NOT_READ_ONLY),
    ("UPDATE people SET name = 'mallory'", NOT_READ_ONLY),
    ("DELETE FROM people", NOT_READ_ONLY),
    ("MERGE INTO people USING people p ON false WHEN NOT MATCHED THEN INSERT VALUES (5, 'z')",
     NOT_READ_ONLY),
    ("DROP TABLE people", NOT_READ_ONLY),
    ("DROP VIEW data", NOT_READ_ONLY),
    ("ALTER VIEW data RENAME TO data2", NOT_READ_ONLY),
    ("COMMENT ON TABLE people IS 'x'", NOT_READ_ONLY),
    ("PIVOT people ON name", NOT_READ_ONLY),
    # settings and session state
    ("PRAGMA enable_profiling", NOT_READ_ONLY),
    ("SET enable_external_access = true", NOT_READ_ONLY),
    ("SET lock_configuration = false", NOT_READ_ONLY),
    ("RESET allowed_paths", NOT_READ_ONLY),
    ("SET allowed_directories = ['/']", NOT_READ_ONLY),
    ("SET memory_limit = '100GB'", NOT_READ_ONLY),
    ("PRAGMA memory_limit = '100GB'", NOT_READ_ONLY),
    ("SET GLOBAL threads = 64", NOT_READ_ONLY),
    ("RESET memory_limit", NOT_READ_ONLY),
    ("SET VARIABLE x = 1", NOT_READ_ONLY),
    ("CALL pragma_version()", NOT_READ_ONLY),
    ("CHECKPOINT", NOT_READ_ONLY),
    ("VACUUM", NOT_READ_ONLY),
    ("BEGIN TRANSACTION", NOT_READ_ONLY),
    ("PREPARE p AS SELECT 1", NOT_READ_ONLY),
    ("EXPLAIN SELECT * FROM people", NOT_READ_ONLY),
    # a second statement, hidden or not
    ("SELECT 1; DROP TABLE people", MULTIPLE),
    ("SELECT 1 /* ; */ ; DROP VIEW data", MULTIPLE),
    ("SELECT 1 -- hidden\n; DROP VIEW data", MULTIPLE),
    ("FROM people; ATTACH ':memory:' AS m", MULTIPLE),
    # reading files
    ("SELECT * FROM read_csv('/etc/passwd')", FILES),
    ("SELECT * FROM READ_CSV_AUTO('{sentinel}')", FILES),
    ("SELECT * FROM read_csv(['{sentinel}', '/etc/passwd'])", FILES),
    ("SELECT * FROM read_text('/etc/hostname')", FILES),
    ("SELECT * FROM read_text('{sentinel}')", FILES),
    ("SELECT * FROM read_blob('{sentinel}')", FILES),
    ("SELECT * FROM read_parquet('../x.parquet')", FILES),
    ("SELECT * FROM read_json('{ws}/../sentinel.txt')", FILES),
    ("SELECT * FROM glob('/*')", FILES),
    ("SELECT * FROM sniff_csv('/etc/passwd')", FILES),
    ("SELECT * FROM parquet_metadata('{ws}/data.csv')", FILES),
    ("FROM '/etc/passwd'", FILES),
    ("SELECT * FROM '{sentinel}'", FILES),
    ("SELECT * FROM 'data.csv'", FILES),
    ('SELECT * FROM "{ws}/data.csv"', FILES),
    ("SUMMARIZE '{sentinel}'", FILES),
    ("DESCRIBE SELECT * FROM read_csv('/etc/passwd')", FILES),
    ("SELECT * FROM people WHERE id IN (SELECT 1 FROM read_csv('{sentinel}'))", FILES),
    ("WITH x AS (SELECT * FROM read_text('{sentinel}')) SELECT * FROM x", FILES),
    ("SELECT * FROM people, LATERAL (SELECT * FROM read_text(people.name))", FILES),
    # host, settings and secrets
    ("SELECT getenv('HOME')", FUNCTION),
    ("SELECT current_setting('allowed_paths')", FUNCTION),
    ("SELECT * FROM duckdb_secrets()", FUNCTION),
    ("SELECT * FROM duckdb_settings()", FUNCTION),
    ("SELECT * FROM system.main.duckdb_settings()", FUNCTION),
    ("SELECT * FROM pg_catalog.pg_settings", FUNCTION),
    ("SELECT * FROM duckdb_databases", FUNCTION),
    ("SELECT * FROM duckdb_extensions()", FUNCTION),
    ("SELECT getvariable('x')", FUNCTION),
    ("SELECT * FROM which_secret('s3://bucket/x', 's3')", FUNCTION),
    # SQL text executed from inside a SELECT, and state-changing table functions
    ("SELECT * FROM query('DROP TABLE people')", FUNCTION),
    ("SELECT * FROM json_execute_serialized_sql('{{}}')", FUNCTION),
    ("SELECT * FROM checkpoint()", FUNCTION),
    ("SELECT * FROM enable_logging()", FUNCTION),
    ("SELECT * FROM add_grammar_extension('x')", FUNCTION),
    ("SELECT nextval('seq')", FUNCTION),
    ("SELECT write_log('x')", FUNCTION),
]


class Host:
    """The test folder, its sentinel and the Database under attack."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.ws = out / "ws"
        self.ws.mkdir()
        self.sentinel = out / "sentinel.txt"
        self.sentinel.write_text(SECRET)
        (self.ws / "data.csv").write_text("k,v\na,1\nb,2\n")
        self.db = Database(Workspace(self.ws))
        self.db.register("people", PEOPLE)
        self.db.register_file("data", "data.csv")
        self.files = self.snapshot()

    def snapshot(self) -> dict[str, tuple[int, int]]:
        return {str(p): (p.stat().st_size, p.stat().st_mtime_ns)
                for p in self.out.rglob("*") if p.is_file()}

    def sql(self, template: str) -> str:
        return template.format(out=self.out, ws=self.ws, sentinel=self.sentinel)

    def assert_unharmed(self) -> None:
        assert self.sentinel.read_text() == SECRET
        assert self.snapshot() == self.files, "a file was created or changed"
        assert self.db.query("SELECT * FROM people ORDER BY id").equals(PEOPLE)
        assert self.db.query("SELECT * FROM data ORDER BY k")["v"].tolist() == [1, 2]
        settings = self.db.settings()
        assert settings["enable_external_access"] == "false"
        assert settings["lock_configuration"] == "true"
        assert settings["allowed_configs"] == "[]"
        assert settings["allowed_paths"] == f"[{self.ws / 'data.csv'}]"
        assert settings["memory_limit"] == "1.0 GiB"  # SqlPolicy.memory_limit_mb, locked


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    h = Host(tmp_path)
    try:
        yield h
    finally:
        h.db.close()


def test_there_are_at_least_forty_attacks() -> None:
    assert len(ATTACKS) >= 40
    assert len({sql for sql, _ in ATTACKS}) == len(ATTACKS)


@pytest.mark.parametrize(("template", "rule"), ATTACKS, ids=[a[0][:50] for a in ATTACKS])
def test_attack_is_refused_and_the_host_is_unharmed(host: Host, template: str,
                                                    rule: str) -> None:
    with pytest.raises(SafetyViolation) as err:
        host.db.query(host.sql(template))
    assert err.value.rule == rule
    assert SECRET not in str(err.value)
    assert any(hint in err.value.detail.lower() for hint in ("instead", "allowed:", "send"))
    host.assert_unharmed()


@pytest.mark.parametrize(("template", "needle"), [
    ("SELECT * FROM read_csv('{sentinel}')", "Permission"),
    ("SELECT * FROM read_text('/etc/hostname')", "Permission"),
    ("SELECT * FROM '{sentinel}'", "does not exist"),  # replacement scans are off
    ("SELECT * FROM glob('{out}/*')", "Permission"),
    ("COPY people TO '{out}/stolen.csv'", "Permission"),
    ("ATTACH '{out}/evil.duckdb' AS evil", "Permission"),
    ("INSTALL httpfs", "Permission"),
    ("SET enable_external_access = true", "locked"),
    ("SET lock_configuration = false", "locked"),
    ("SET allowed_directories = ['/']", "locked"),
    ("SET python_enable_replacements = true", "locked"),
    ("SET memory_limit = '100GB'", "locked"),
    ("SET threads = 64", "locked"),
])
def test_the_locked_connection_refuses_even_without_the_parser_guard(
        host: Host, monkeypatch: pytest.MonkeyPatch, template: str, needle: str) -> None:
    monkeypatch.setattr(database_module, "check_sql", lambda sql, con: None)
    with pytest.raises((SafetyViolation, DatabaseError)) as err:
        host.db.query(host.sql(template))
    assert needle in str(err.value)
    assert SECRET not in str(err.value)
    host.assert_unharmed()


def test_a_symlink_that_leads_out_of_the_workspace_cannot_be_registered(host: Host) -> None:
    (host.ws / "link.csv").symlink_to(host.sentinel)
    with pytest.raises(SafetyViolation) as err:
        host.db.register_file("link", "link.csv")
    assert err.value.rule.startswith("path.")
    assert "link" not in host.db.tables()
    with pytest.raises(SafetyViolation):
        host.db.query(f"SELECT * FROM '{host.ws / 'link.csv'}'")


@pytest.mark.parametrize("queried_before", [False, True], ids=["cold", "warm"])
def test_a_registered_file_swapped_for_a_symlink_leaks_nothing(host: Host,
                                                               queried_before: bool) -> None:
    if queried_before:  # the locked engine exists already; else it is built after the swap
        host.db.query("SELECT * FROM data")
    (host.ws / "data.csv").unlink()
    (host.ws / "data.csv").symlink_to(host.sentinel)
    with pytest.raises((SafetyViolation, DatabaseError)) as err:
        host.db.query("SELECT * FROM data")
    assert SECRET not in str(err.value)
    assert host.sentinel.read_text() == SECRET


def test_a_long_or_endless_query_is_stopped_not_left_running(host: Host) -> None:
    with pytest.raises(SafetyViolation) as err:
        host.db.query("SELECT count(*) FROM range(1000000) a, range(1000000) b",
                      timeout_s=0.5)
    assert err.value.rule == "sql.timeout"
    host.assert_unharmed()


def test_a_huge_result_is_capped_not_returned(host: Host) -> None:
    df = host.db.query("SELECT * FROM range(100000000)")
    assert len(df) == host.db.policy.max_rows
    assert df.attrs["truncated"] is True


# The result cap (20 MB) once applied after the whole DataFrame was built: 4.4 GB peak.
_PEAK_RSS = """
import json, resource, sys
import aillm_lab as al
with al.Lab(home=sys.argv[1]) as lab:
    lab.tools.invoke("sql_query", {"sql": "SELECT 1"})  # DuckDB and the tools are loaded
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = lab.tools.invoke("sql_query", {"sql": sys.argv[2]})
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    frame = result.value
    print(json.dumps({"ok": result.ok, "growth_mb": growth / 1024, "content": result.content,
                      "rows": None if frame is None else len(frame),
                      "note": None if frame is None else frame.attrs.get("note")}))
"""


def test_a_huge_result_is_streamed_and_stopped_at_the_byte_cap(tmp_path: Path) -> None:
    """Ten 10 MB strings a row, 150 rows: 1.5 GB if built. Measured in a fresh process
    through the public API, since DuckDB allocates outside tracemalloc's view. DuckDB
    itself evaluates the 150 rows as one chunk (~1.5 GB, outside its memory_limit), so the
    bound is what our side adds on top of that: the 20 MB that fit, not the 3 GB more
    that pandas once built around it."""
    sql = "SELECT repeat('x', 10000000) AS s FROM range(150)"
    proc = subprocess.run([sys.executable, "-c", _PEAK_RSS, str(tmp_path / "home"), sql],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["ok"], report["content"][:500]
    assert report["rows"] == 1  # a second 10 MB string (plus its object header) would not fit
    assert "over the 20000000-byte cap" in report["note"]
    assert report["growth_mb"] < 2048, report["growth_mb"]


def test_a_statement_type_the_driver_does_not_know_is_refused(host: Host) -> None:
    # DuckDB's Python enum lacks some newer statement types; unknown means refused.
    with pytest.raises(SafetyViolation, match="UNKNOWN"):
        host.db.query("UPDATE EXTENSIONS (httpfs)")


FRAGMENTS = ["SELECT", "*", "FROM", "people", "data", "read_csv('/etc/passwd')", ";", "DROP",
             "TABLE", "COPY", "TO", "'/tmp/x'", "ATTACH", "SET", "--", "/*", "*/", "(", ")",
             "WITH", "x", "AS", "1", "'", '"', "getenv('HOME')", "UNION", "PRAGMA", "\n"]


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=12))
def test_any_mix_of_sql_fragments_gives_rows_or_a_typed_error(host: Host,
                                                              parts: list[str]) -> None:
    try:
        result = host.db.query(" ".join(parts), timeout_s=5)
    except (SafetyViolation, DatabaseError) as err:
        assert SECRET not in str(err)
    else:
        assert isinstance(result, pd.DataFrame)
    assert host.sentinel.read_text() == SECRET
    assert host.snapshot() == host.files
