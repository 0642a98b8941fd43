"""Tests' own reads and DDL on a ``Database``: SQLModel sessions on its admin connection.

The package reads through its stores; a test that inspects rows as stored (every column,
whatever the stores expose) or drops a schema goes around them, here.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection
from sqlmodel import Session

from miniprogram_pay.storage import Database


async def select_rows(database: Database, statement: Any) -> list[Any]:
    """What ``statement`` (a SQLModel ``select``) finds, as detached objects or scalars."""

    def work(connection: Connection) -> list[Any]:
        with Session(bind=connection) as session:
            found = list(session.exec(statement).all())
            session.expunge_all()
            return found

    return await database.run_sync(work)


async def drop_schema(database: Database, schema: str) -> None:
    def work(connection: Connection) -> None:
        connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')

    await database.run_sync(work)
