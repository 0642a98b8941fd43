"""Several reads as one PostgreSQL statement: one snapshot, one result to set up.

A status read is six ``SELECT``s: an order, its attempts, their histories and event
logs, their refunds and the refunds' histories. Sent as six statements, under READ
COMMITTED each sees a snapshot of its own (a change committed between two of them
shows in one and not the other), and psycopg sets up six results, one loader per
column, about seventy in all: the largest part of a status read's client work.

Here each read becomes ``json_agg(json_build_array(<its columns>) ORDER BY <its
order>)`` over its own ``FROM`` and ``WHERE``, and the reads are the columns of one
``SELECT``. The rows come back as JSON arrays, and become the values the driver would
have given: timestamps parsed from their ISO text, then each column type's own result
processing. ``tests/storage/test_json_reads.py`` holds the rows to the separate
statements' rows, value for value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, func, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.expression import Executable

from miniprogram_pay.storage.sql import Row, Sql, Unit

__all__ = ["JsonRead", "JsonReads"]

Convert = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class JsonRead:
    """One read (a ``SELECT``: its columns, ``FROM`` and ``WHERE``), and its order.

    ``order_by`` is the read's own ``ORDER BY`` again (SQLAlchemy keeps a select's order
    to itself); ``tests/storage/test_json_reads.py`` holds the two to the same rows.
    """

    read: Sql
    order_by: tuple[ColumnElement[Any], ...] = ()

    @property
    def statement(self) -> Select[Any]:
        statement = self.read.statement("postgresql")
        if not isinstance(statement, Select):
            raise TypeError("a JSON read is a SELECT")
        return statement


class JsonReads:
    """``reads`` as one statement on PostgreSQL; ``rows`` gives each read's rows."""

    def __init__(self, reads: Sequence[JsonRead]) -> None:
        self.reads = tuple(reads)
        self.sql = Sql(self._build)
        dialect = postgresql.psycopg.dialect()  # type: ignore[no-untyped-call]
        self._decoders = [_decoder(read.statement, dialect) for read in self.reads]

    def rows(self, unit: Unit, params: Mapping[str, Any]) -> list[list[Row]]:
        """Each read's rows, in its order, as the separate statements would give them."""
        (found,) = unit.run(self.sql, params).all()
        return [decode(values or []) for decode, values in zip(self._decoders, found, strict=True)]

    def _build(self, dialect: str) -> Executable:
        if dialect != "postgresql":
            raise TypeError("JSON reads are PostgreSQL's; elsewhere the reads run one by one")
        return select(*(_aggregated(read).label(f"read_{i}") for i, read in enumerate(self.reads)))


def _aggregated(read: JsonRead) -> Any:
    row = func.json_build_array(*read.statement.selected_columns)
    rows = func.json_agg(aggregate_order_by(row, *read.order_by) if read.order_by else row)
    return (
        read.statement.with_only_columns(rows, maintain_column_froms=True)
        .order_by(None)
        .scalar_subquery()
    )


def _decoder(statement: Select[Any], dialect: Dialect) -> Callable[[list[list[Any]]], list[Row]]:
    converters: list[Convert | None] = []
    for column in statement.selected_columns:
        parse = _from_iso if isinstance(column.type, DateTime) else None
        process = column.type.dialect_impl(dialect).result_processor(dialect, None)
        converters.append(_chain(parse, process))

    def decode(rows: list[list[Any]]) -> list[Row]:
        return [
            tuple(
                value if c is None or value is None else c(value)
                for c, value in zip(converters, row, strict=True)
            )
            for row in rows
        ]

    return decode


def _chain(first: Convert | None, then: Convert | None) -> Convert | None:
    if first is None or then is None:
        return first or then
    return lambda value: then(first(value))


def _from_iso(value: str) -> datetime:
    return datetime.fromisoformat(value)
