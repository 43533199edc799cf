"""Legitimate analysis SQL still works under the read-only guard, with correct answers.

The guard refuses a lot (see test_sql_attacks.py); these queries are the other half of the
contract: what a data-analysis agent needs must pass, and pandas computes each expected
answer from the same data.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from aillm_lab.runtime import get_runner
from aillm_lab.tools.database import Database
from aillm_lab.tools.paths import Workspace
from aillm_lab.tools.policy import SqlPolicy

PEOPLE = pd.DataFrame({
    "id": [1, 2, 3, 4, 5, 6],
    "name": ["ada", "bob", "cy", "di", "eve", "fay"],
    "dept": ["eng", "eng", "ops", "ops", "ops", "sales"],
    "salary": [120, 100, 90, 95, 70, 80],
    "joined": pd.to_datetime(["2020-01-15", "2021-03-01", "2021-03-20", "2022-07-04",
                              "2023-11-30", "2023-12-01"])})
ORDERS = pd.DataFrame({"order_id": range(10, 20),
                       "person_id": [1, 1, 2, 3, 3, 3, 4, 6, 6, 9],
                       "amount": [5.5, 7.0, 3.25, 10.0, 1.0, 2.5, 8.0, 4.0, 6.5, 1.5]})
PRODUCTS = pd.DataFrame({"sku": ["a", "b", "c"], "price": [1.5, 2.0, 9.99]})
EVENTS = [{"kind": "click", "meta": {"x": 1}}, {"kind": "view", "meta": {"x": 5}},
          {"kind": "click", "meta": {"x": 3}}]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    ORDERS.to_csv(tmp_path / "orders.csv", index=False)
    pd.DataFrame(EVENTS).to_json(tmp_path / "events.json", orient="records")
    con = duckdb.connect()
    con.register("products", PRODUCTS)
    con.execute(f"COPY products TO '{tmp_path / 'products.parquet'}' (FORMAT parquet)")
    con.close()
    database = Database(Workspace(tmp_path), SqlPolicy(max_rows=1000))
    database.register("people", PEOPLE)
    database.register_file("orders", "orders.csv")
    database.register_file("products", "products.parquet")
    database.register_file("events", "events.json")
    try:
        yield database
    finally:
        database.close()


def frame(db: Database, sql: str) -> pd.DataFrame:
    return db.query(sql)


def test_count_matches_the_dataframe(db: Database) -> None:
    assert frame(db, "SELECT count(*) AS n FROM people")["n"][0] == len(PEOPLE)


def test_group_by_aggregates(db: Database) -> None:
    got = frame(db, "SELECT dept, sum(salary) AS total, avg(salary) AS mean FROM people "
                    "GROUP BY dept ORDER BY dept")
    want = PEOPLE.groupby("dept")["salary"].agg(total="sum", mean="mean").reset_index()
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def test_join_of_a_dataframe_and_a_csv_view(db: Database) -> None:
    got = frame(db, "SELECT p.name, count(*) AS orders, sum(o.amount) AS spent "
                    "FROM people p JOIN orders o ON o.person_id = p.id "
                    "GROUP BY p.name ORDER BY p.name")
    merged = PEOPLE.merge(ORDERS, left_on="id", right_on="person_id")
    want = (merged.groupby("name")["amount"].agg(orders="count", spent="sum").reset_index())
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def test_left_join_keeps_people_without_orders(db: Database) -> None:
    got = frame(db, "SELECT p.id FROM people p LEFT JOIN orders o ON o.person_id = p.id "
                    "WHERE o.order_id IS NULL ORDER BY p.id")
    assert got["id"].tolist() == sorted(set(PEOPLE["id"]) - set(ORDERS["person_id"]))


def test_window_function_ranks_within_partitions(db: Database) -> None:
    got = frame(db, "SELECT name, rank() OVER (PARTITION BY dept ORDER BY salary DESC) AS r "
                    "FROM people ORDER BY name")
    want = PEOPLE.assign(r=PEOPLE.groupby("dept")["salary"].rank(ascending=False))
    assert got["r"].tolist() == want.sort_values("name")["r"].astype(int).tolist()


def test_running_total_window(db: Database) -> None:
    got = frame(db, "SELECT order_id, sum(amount) OVER (ORDER BY order_id) AS running "
                    "FROM orders ORDER BY order_id")
    assert got["running"].tolist() == pytest.approx(ORDERS["amount"].cumsum().tolist())


def test_common_table_expressions(db: Database) -> None:
    got = frame(db, "WITH spend AS (SELECT person_id, sum(amount) AS s FROM orders "
                    "GROUP BY person_id), top AS (SELECT * FROM spend ORDER BY s DESC LIMIT 1) "
                    "SELECT p.name FROM top JOIN people p ON p.id = top.person_id")
    best = ORDERS.groupby("person_id")["amount"].sum().idxmax()
    assert got["name"].tolist() == PEOPLE.loc[PEOPLE["id"] == best, "name"].tolist()


def test_from_first_syntax_and_filters(db: Database) -> None:
    got = frame(db, "FROM people SELECT name WHERE salary >= 95 ORDER BY name")
    assert got["name"].tolist() == sorted(PEOPLE.loc[PEOPLE["salary"] >= 95, "name"])


def test_having_filters_groups(db: Database) -> None:
    got = frame(db, "SELECT dept FROM people GROUP BY dept HAVING count(*) > 1 ORDER BY dept")
    counts = PEOPLE["dept"].value_counts()
    assert got["dept"].tolist() == sorted(counts[counts > 1].index)


def test_qualify_keeps_the_top_earner_per_dept(db: Database) -> None:
    got = frame(db, "SELECT dept, name FROM people "
                    "QUALIFY row_number() OVER (PARTITION BY dept ORDER BY salary DESC) = 1 "
                    "ORDER BY dept")
    want = PEOPLE.sort_values("salary", ascending=False).groupby("dept").head(1)
    assert got["name"].tolist() == want.sort_values("dept")["name"].tolist()


def test_median_and_quantiles(db: Database) -> None:
    got = frame(db, "SELECT median(salary) AS med, quantile_cont(salary, 0.25) AS q1 "
                    "FROM people")
    assert got["med"][0] == PEOPLE["salary"].median()
    assert got["q1"][0] == pytest.approx(PEOPLE["salary"].quantile(0.25))


def test_dates_truncate_and_group(db: Database) -> None:
    got = frame(db, "SELECT year(joined) AS y, count(*) AS n FROM people GROUP BY y ORDER BY y")
    want = PEOPLE["joined"].dt.year.value_counts().sort_index()
    assert got["y"].tolist() == want.index.tolist() and got["n"].tolist() == want.tolist()


def test_case_expressions_and_string_functions(db: Database) -> None:
    got = frame(db, "SELECT upper(name) AS n, CASE WHEN salary > 90 THEN 'high' ELSE 'low' END "
                    "AS band FROM people WHERE name LIKE '%a%' ORDER BY id")
    rows = PEOPLE[PEOPLE["name"].str.contains("a")]
    assert got["n"].tolist() == rows["name"].str.upper().tolist()
    assert got["band"].tolist() == ["high" if s > 90 else "low" for s in rows["salary"]]


def test_union_across_parquet_and_values(db: Database) -> None:
    got = frame(db, "SELECT sku, price FROM products UNION ALL "
                    "SELECT * FROM (VALUES ('z', 0.5)) v(sku, price) ORDER BY sku")
    want = pd.concat([PRODUCTS, pd.DataFrame({"sku": ["z"], "price": [0.5]})])
    assert got["sku"].tolist() == want["sku"].tolist()
    assert got["price"].tolist() == pytest.approx(want["price"].tolist())


def test_json_view_with_nested_fields(db: Database) -> None:
    got = frame(db, "SELECT kind, sum(meta.x) AS total FROM events GROUP BY kind ORDER BY kind")
    want = pd.DataFrame(EVENTS).assign(x=[e["meta"]["x"] for e in EVENTS]).groupby("kind")["x"]
    assert got["total"].tolist() == want.sum().tolist()


def test_generators_lists_and_unnest(db: Database) -> None:
    assert frame(db, "SELECT sum(range) AS s FROM range(10)")["s"][0] == sum(range(10))
    got = frame(db, "SELECT unnest([3, 1, 2]) AS v ORDER BY v")
    assert got["v"].tolist() == [1, 2, 3]
    series = frame(db, "SELECT * FROM generate_series(1, 5, 2) t(i)")
    assert series["i"].tolist() == list(range(1, 6, 2))


def test_limit_and_offset_page_through_ordered_rows(db: Database) -> None:
    got = frame(db, "SELECT id FROM people ORDER BY id LIMIT 2 OFFSET 3")
    assert got["id"].tolist() == sorted(PEOPLE["id"])[3:5]


def test_the_row_cap_keeps_the_requested_order(db: Database) -> None:
    got = db.query("SELECT order_id FROM orders ORDER BY amount DESC", max_rows=3)
    assert got["order_id"].tolist() == ORDERS.nlargest(3, "amount")["order_id"].tolist()
    assert got.attrs["truncated"] is True


def test_describe_show_and_summarize(db: Database) -> None:
    described = frame(db, "DESCRIBE people")
    assert described["column_name"].tolist() == list(PEOPLE.columns)
    shown = frame(db, "SHOW TABLES")
    assert set(shown["name"]) == {"people", "orders", "products", "events"}
    summary = frame(db, "SUMMARIZE orders")
    assert summary["column_name"].tolist() == list(ORDERS.columns)


def test_catalog_views_and_information_schema(db: Database) -> None:
    views = frame(db, "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1")
    assert views["view_name"].tolist() == sorted(["orders", "products", "events", "people"])
    cols = frame(db, "SELECT column_name FROM information_schema.columns "
                     "WHERE table_name = 'orders' ORDER BY ordinal_position")
    assert cols["column_name"].tolist() == list(ORDERS.columns)


def test_comments_semicolons_and_suspicious_strings_are_just_data(db: Database) -> None:
    got = frame(db, "-- a comment\nSELECT 'x; DROP TABLE people' AS a, "
                    "'read_csv(''/etc/passwd'')' AS b /* block */ ;")
    assert got.to_dict("records") == [{"a": "x; DROP TABLE people",
                                       "b": "read_csv('/etc/passwd')"}]
    assert frame(db, "SELECT count(*) AS n FROM people")["n"][0] == len(PEOPLE)


def test_the_tools_list_describe_and_query(db: Database) -> None:
    tools = {t.name: t for t in db.tools()}

    async def main() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        return (await tools["list_tables"].acall({}),
                await tools["describe_table"].acall({"name": "orders"}),
                await tools["sql_query"].acall({"sql": "SELECT max(price) AS m FROM products",
                                                "max_rows": 5}))

    listing, described, answer = get_runner().run(main())
    assert listing["name"].tolist() == ["people", "orders", "products", "events"]
    assert listing["kind"].tolist() == ["dataframe", "csv", "parquet", "json"]
    assert listing["source"].tolist()[1:] == ["orders.csv", "products.parquet", "events.json"]
    assert described["column_name"].tolist() == list(ORDERS.columns)
    assert answer["m"][0] == PRODUCTS["price"].max()
