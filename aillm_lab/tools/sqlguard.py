"""The SQL guard: one read-only SELECT, no file readers, no state-changing functions.

Kept apart from ``Database`` because it is pure policy over DuckDB's own parser: the
statement type comes from ``extract_statements`` and the SELECT's syntax tree from
``json_serialize_sql``, so no spelling of a statement is judged by a regex. The locked
connection in ``_duckdb_engine`` is the layer behind it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aillm_lab.errors import AillmError, SafetyViolation

if TYPE_CHECKING:
    import duckdb

RESERVED_PREFIXES = ("duckdb_", "pragma_", "sqlite_", "pg_")

# Table functions a query may call: generators and catalog views, nothing that reads files,
# executes SQL text, writes logs or checkpoints (DuckDB has dozens; new ones stay refused).
ALLOWED_TABLE_FUNCTIONS = frozenset({
    "range", "generate_series", "unnest", "repeat", "json_each", "json_tree",
    "duckdb_tables", "duckdb_views", "duckdb_columns", "duckdb_types", "duckdb_schemas",
    "duckdb_constraints", "duckdb_keywords", "duckdb_functions", "pragma_table_info",
    "histogram", "histogram_values", "summary", "pg_timezone_names", "icu_calendar_names"})
# System views (the duckdb_/pragma_/sqlite_/pg_ names) a query may read; pg_settings and
# friends are refused because settings hold values such as http_proxy_password.
ALLOWED_CATALOG_VIEWS = frozenset({
    "duckdb_columns", "duckdb_constraints", "duckdb_indexes", "duckdb_schemas", "duckdb_tables",
    "duckdb_types", "duckdb_views", "sqlite_master", "sqlite_schema", "pg_attribute", "pg_class",
    "pg_constraint", "pg_index", "pg_indexes", "pg_namespace", "pg_proc", "pg_tables", "pg_type",
    "pg_views"})
_FILE_FUNCTIONS = frozenset({"glob", "sniff_csv", "query_table", "seq_scan"})
_FILE_PREFIXES = ("read_", "parquet_", "iceberg_", "delta_", "sqlite_", "postgres_")
# Scalar functions that reveal the host or settings, or change database state.
DENIED_FUNCTIONS = frozenset({
    "getenv", "current_setting", "getvariable", "which_secret", "nextval", "currval", "setval",
    "write_log", "json_execute_serialized_sql"})


class DatabaseError(AillmError, ValueError):
    """DuckDB could not run a query or register a table; the message says which and why."""


def check_sql(sql: str, con: duckdb.DuckDBPyConnection) -> None:
    """Refuse anything but one read-only SELECT over tables (``SafetyViolation``).

    ``con`` is only used to parse: ``extract_statements`` and ``json_serialize_sql``.
    """
    import duckdb

    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise DatabaseError(f"the SQL does not parse: {first_line(exc)}") from None
    if not statements:
        raise DatabaseError("the SQL is empty; send one SELECT statement")
    kinds = [_statement_type(s) for s in statements]
    if len(statements) > 1:
        raise SafetyViolation("sql.multiple_statements", f"found {len(statements)} statements "
                              f"({', '.join(kinds)}); send exactly one SELECT per call")
    if kinds[0] != "SELECT":
        raise SafetyViolation("sql.not_read_only", f"{kinds[0]} statements are refused: the "
                              "database is read-only. Send one SELECT (WITH, FROM-first, VALUES, "
                              "DESCRIBE, SHOW and SUMMARIZE also work)")
    tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0][0])
    if tree.get("error"):
        raise DatabaseError(f"the SQL does not parse: {tree.get('error_message', tree)}")
    _check_tree(tree)


# -- the guard ------------------------------------------------------------------------------
def _check_tree(tree: Any) -> None:
    """Walk the SELECT's syntax tree for table functions, functions and file-like tables."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        kind = node.get("type")
        if kind == "TABLE_FUNCTION":
            _check_table_function(str(node.get("function", {}).get("function_name", "")))
        elif kind == "BASE_TABLE":
            _check_table_name(str(node.get("table_name", "")))
        if "function_name" in node:
            _check_function(str(node["function_name"]))
        stack.extend(v for v in node.values() if isinstance(v, dict | list))


def _statement_type(statement: Any) -> str:
    try:
        return str(statement.type.name)
    except ValueError:  # a type this DuckDB build's Python enum does not know (UPDATE EXTENSIONS)
        return "UNKNOWN"


def _check_table_function(name: str) -> None:
    low = name.lower()
    if low in ALLOWED_TABLE_FUNCTIONS:
        return
    if low in _FILE_FUNCTIONS or low.startswith(_FILE_PREFIXES):
        raise SafetyViolation("sql.file_access", f"{name}() reads files, which queries may "
                              "not do; query the registered tables (list_tables) instead")
    raise SafetyViolation("sql.function_not_allowed", f"table function {name}() is not "
                          f"allowed; allowed: {', '.join(sorted(ALLOWED_TABLE_FUNCTIONS))}")


def _check_function(name: str) -> None:
    if name.lower() in DENIED_FUNCTIONS:
        raise SafetyViolation("sql.function_not_allowed", f"{name}() is not allowed: it "
                              "reveals settings or the host, or changes database state; "
                              "query the registered tables (list_tables) instead")


def _check_table_name(name: str) -> None:
    if any(ch in name for ch in "/\\.:~"):
        raise SafetyViolation("sql.file_access", f"FROM {name!r} would read a file (a DuckDB "
                              "replacement scan); query the registered tables instead")
    low = name.lower()
    if low.startswith(RESERVED_PREFIXES) and low not in ALLOWED_CATALOG_VIEWS:
        raise SafetyViolation("sql.function_not_allowed", f"the system view {name} is not "
                              "allowed (it can reveal settings or the host); allowed: "
                              f"{', '.join(sorted(ALLOWED_CATALOG_VIEWS))}, information_schema")


def first_line(exc: BaseException) -> str:
    """The first line of an error message (DuckDB's carry long context after it)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


__all__ = ["ALLOWED_CATALOG_VIEWS", "ALLOWED_TABLE_FUNCTIONS", "DENIED_FUNCTIONS",
           "DatabaseError", "RESERVED_PREFIXES", "check_sql", "first_line"]
