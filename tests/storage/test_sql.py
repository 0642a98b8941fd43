"""Statements as the driver path compiles and sends them, on both databases."""

from __future__ import annotations

import pytest
from sqlalchemy import Integer, String, bindparam, column, literal, select, text

from miniprogram_pay.storage import Database
from miniprogram_pay.storage.orders import CREATED
from miniprogram_pay.storage.sql import RowsSql, Sql, Unit, server_placeholders
from miniprogram_pay.storage.tables import PaymentRow, table

P = table(PaymentRow)
PERCENT = Sql(text("SELECT '100%' || :tail AS v").columns(column("v", String)))
TWICE = Sql(text("SELECT :a || :b || :a AS v").columns(column("v", String)))
LIKE = Sql(select(P.c.reference).where(P.c.reference.like(bindparam("pattern"), escape="/")))


async def _one(database: Database, sql: Sql, params: dict[str, str]) -> object:
    def work(unit: Unit) -> object:
        return unit.run(sql, params).all()[0][0]

    return await database.read(work)


async def test_a_percent_sign_in_a_statement_reaches_the_database_as_written(
    database: Database,
) -> None:
    # Only percent placeholder styles double a literal "%"; with $n it must stay one.
    assert await _one(database, PERCENT, {"tail": "!"}) == "100%!"


async def test_a_parameter_used_twice_is_sent_once_and_read_twice(database: Database) -> None:
    assert await _one(database, TWICE, {"a": "x", "b": "y"}) == "xyx"


async def test_postgresql_statements_carry_the_servers_own_placeholders(
    database: Database,
) -> None:
    if database.is_sqlite:
        pytest.skip("SQLite's statements use its own '?' placeholders")
    await database.read(lambda unit: unit.run(PERCENT, {"tail": ""}).all())  # connected
    compiled = TWICE.compiled(database.driver_dialect)
    assert "$1" in compiled.sql and "$2" in compiled.sql and "%(" not in compiled.sql
    assert compiled.params({"a": "x", "b": "y"}) == ("x", "y")
    like = LIKE.compiled(database.driver_dialect)
    assert "$1" in like.sql and "%" not in like.sql


async def test_an_insert_asks_nothing_back_unless_it_says_so(database: Database) -> None:
    """PostgreSQL's dialect would add ``RETURNING id`` to a one-row INSERT on its own."""
    await database.read(lambda unit: unit.run(PERCENT, {"tail": ""}).all())  # connected
    dialect = database.driver_dialect
    compiled = CREATED.compiled(dialect)  # the attempt's first transition, one row
    assert "RETURNING" not in compiled.sql
    assert compiled.results is None


def test_server_placeholders_leaves_the_dialect_it_was_given_alone() -> None:
    from sqlalchemy.dialects.postgresql import psycopg

    dialect = psycopg.dialect()  # type: ignore[no-untyped-call]
    positional = server_placeholders(dialect)
    assert (dialect.paramstyle, dialect.positional) == ("pyformat", False)
    assert (positional.paramstyle, positional.positional) == ("numeric_dollar", True)
    assert "%%" in PERCENT.compiled(dialect).sql  # its own, percent style, as before


async def test_a_statement_built_for_a_dialect_then_compiled_for_it(database: Database) -> None:
    """``Sql.compiled`` once asked the construct ``statement()`` kept for its truth value."""
    read = Sql(select(P.c.reference).where(P.c.reference == bindparam("reference")))
    read.statement(database.dialect)  # as the reference path and the JSON reads do
    assert await database.read(lambda unit: unit.run(read, {"reference": "none"}).all()) == []


async def test_a_multi_row_statement_gets_each_rows_values_in_place(database: Database) -> None:
    """Rows in chunks of 64, 32 and 4: every value where its row and column say, beside
    a value the construct holds itself (a bound literal, sent with them)."""
    pairs = RowsSql(
        ("a", "b"),
        lambda dialect, n: select(
            *(
                literal(1000, Integer) + bindparam(f"{name}_r{i}", type_=Integer)
                for i in range(n)
                for name in ("a", "b")
            )
        ),
    )
    rows = [{"a": i, "b": -i} for i in range(100)]
    found = await database.read(lambda unit: unit.run_rows(pairs, rows).all())
    expected = [1000 + v for r in rows for v in (r["a"], r["b"])]
    assert [v for row in found for v in row] == expected
    with pytest.raises(ValueError):
        pairs.params(rows)  # more rows than one statement holds: run_rows chunks them
