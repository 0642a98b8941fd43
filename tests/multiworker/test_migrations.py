"""Migrations: upgrade makes exactly tables.py; the start-up check refuses a database behind."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import make_url

from miniprogram_pay import ConfigurationError, create_app
from miniprogram_pay.sandbox import SandboxConfig
from miniprogram_pay.storage import Database
from miniprogram_pay.storage.schema import (
    BASELINE_REVISION,
    VERSION_TABLE,
    create_all,
    current_revision,
    downgrade,
    head_revision,
    upgrade,
)
from miniprogram_pay.storage.tables import metadata
from tests.multiworker.harness import ROOT
from tests.world import settings_for

TABLES = {
    "mpp_order",
    "mpp_payment",
    "mpp_transition",
    "mpp_payment_event",
    "mpp_notification",
    "mpp_outbox",
    "mpp_refund",
    "mpp_refund_event",
}


def _sync_url(url: str) -> str:
    return url.replace("+aiosqlite", "")


def _inspect(url: str, schema: str | None = None) -> tuple[set[str], list[Any]]:
    """The package's tables found in ``schema`` and autogenerate's diff against tables.py."""
    options = {"options": f"-csearch_path={schema}"} if schema else {}
    engine = create_engine(_sync_url(url), connect_args=options)
    try:
        with engine.connect() as conn:
            names = set(inspect(conn).get_table_names())
            context = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    "compare_server_default": True,
                    "include_name": lambda name, type_, _p: (
                        type_ != "table" or name != VERSION_TABLE
                    ),
                },
            )
            return names, compare_metadata(context, metadata)
    finally:
        engine.dispose()


def _sqlite(tmp_path: Path, name: str = "mpp.db") -> str:
    return f"sqlite+aiosqlite:///{tmp_path / name}"


async def test_upgrade_on_empty_sqlite_creates_exactly_the_tables(tmp_path: Path) -> None:
    url = _sqlite(tmp_path)
    await asyncio.to_thread(upgrade, url, None)
    await asyncio.to_thread(upgrade, url, None)  # a second run changes nothing
    names, diffs = await asyncio.to_thread(_inspect, url)
    assert names == TABLES | {VERSION_TABLE}
    assert diffs == []
    assert current_revision(url) == head_revision()


@pytest.mark.postgres
async def test_upgrade_on_empty_postgres_creates_exactly_the_tables(fresh_pg_database: str) -> None:
    await asyncio.to_thread(upgrade, fresh_pg_database, None)
    names, diffs = await asyncio.to_thread(_inspect, fresh_pg_database)
    assert names == TABLES | {VERSION_TABLE}
    assert diffs == []
    assert current_revision(fresh_pg_database) == head_revision()


@pytest.mark.postgres
async def test_upgrade_into_a_postgres_schema_leaves_public_alone(fresh_pg_database: str) -> None:
    await asyncio.to_thread(upgrade, fresh_pg_database, "payments")
    names, diffs = await asyncio.to_thread(_inspect, fresh_pg_database, "payments")
    assert names == TABLES | {VERSION_TABLE}
    assert diffs == []
    public, _ = await asyncio.to_thread(_inspect, fresh_pg_database, "public")
    assert public == set()
    assert current_revision(fresh_pg_database, "payments") == head_revision()
    assert current_revision(fresh_pg_database) is None


async def _race_upgrades(url: str, schema: str | None, racers: int = 3) -> None:
    code = (
        "import sys; from miniprogram_pay.storage.schema import upgrade; "
        "upgrade(sys.argv[1], sys.argv[2] or None)"
    )
    command = [sys.executable, "-c", code, url, schema or ""]
    processes = [
        subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE)  # noqa: ASYNC220 - no wait
        for _ in range(racers)
    ]
    try:
        results = [await asyncio.to_thread(p.communicate, timeout=60) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    errors = [err.decode()[-2000:] for _, err in results]
    assert [p.returncode for p in processes] == [0] * racers, errors
    assert current_revision(url, schema) == head_revision()


async def test_concurrent_upgrades_on_sqlite_all_succeed(tmp_path: Path) -> None:
    """Several workers starting together on an empty database: BEGIN IMMEDIATE serialises."""
    await _race_upgrades(_sqlite(tmp_path), None)


@pytest.mark.postgres
async def test_concurrent_upgrades_on_postgres_all_succeed(fresh_pg_database: str) -> None:
    """The same on PostgreSQL, into a schema nobody created yet: the advisory lock serialises."""
    await _race_upgrades(fresh_pg_database, "racing")


async def test_downgrade_to_base_removes_every_table(tmp_path: Path) -> None:
    url = _sqlite(tmp_path)
    await asyncio.to_thread(upgrade, url, None)
    await asyncio.to_thread(downgrade, url, None, revision="base")
    names, _ = await asyncio.to_thread(_inspect, url)
    assert names == {VERSION_TABLE}
    assert current_revision(url) is None


def _pay(url: str, **overrides: Any) -> Any:
    return create_app(settings_for(SandboxConfig(), url, **overrides))


@pytest.mark.postgres
async def test_startup_refuses_an_empty_postgres_database(fresh_pg_database: str) -> None:
    pay = _pay(fresh_pg_database)  # auto_migrate defaults to false on PostgreSQL
    with pytest.raises(ConfigurationError, match="Run `miniprogram-pay db upgrade`"):
        await pay.start()


@pytest.mark.postgres
async def test_startup_refuses_a_postgres_schema_that_is_behind(fresh_pg_database: str) -> None:
    await asyncio.to_thread(upgrade, fresh_pg_database, "shop")
    await asyncio.to_thread(downgrade, fresh_pg_database, "shop", revision="base")
    pay = _pay(fresh_pg_database, database_schema="shop")
    with pytest.raises(ConfigurationError) as caught:
        await pay.start()
    message = str(caught.value)
    assert "miniprogram-pay db upgrade" in message
    assert head_revision() in message
    await asyncio.to_thread(upgrade, fresh_pg_database, "shop")
    await pay.start()  # the operator migrated: it starts now
    await pay.stop()


@pytest.mark.postgres
async def test_postgres_auto_migrate_when_asked(fresh_pg_database: str) -> None:
    pay = _pay(fresh_pg_database, database_schema="auto", auto_migrate=True)
    await pay.start()
    await pay.stop()
    assert current_revision(fresh_pg_database, "auto") == head_revision()


async def test_sqlite_migrates_itself_at_start_up(tmp_path: Path) -> None:
    url = _sqlite(tmp_path)
    pay = _pay(url)
    await pay.start()
    await pay.stop()
    assert current_revision(url) == head_revision()


async def test_sqlite_refuses_when_auto_migrate_is_off(tmp_path: Path) -> None:
    pay = _pay(_sqlite(tmp_path), auto_migrate=False)
    with pytest.raises(ConfigurationError, match="miniprogram-pay db upgrade"):
        await pay.start()


async def test_tables_from_before_migrations_are_adopted(tmp_path: Path) -> None:
    """A database made by the old create_all (no version table) upgrades in place."""
    url = _sqlite(tmp_path)
    # The tables as they were then (the baseline revision), without the version table.
    await asyncio.to_thread(upgrade, url, None, revision=BASELINE_REVISION)
    engine = create_engine(_sync_url(url))
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE mpp_alembic_version")
    engine.dispose()
    assert current_revision(url) is None
    await asyncio.to_thread(upgrade, url, None)
    assert current_revision(url) == head_revision()


async def test_create_all_is_recorded_as_head(tmp_path: Path) -> None:
    database = Database(_sqlite(tmp_path))
    await create_all(database)
    await database.dispose()
    pay = _pay(database.url, auto_migrate=False)
    await pay.start()
    await pay.stop()


BEFORE_ORDERS = "0004_refunds"
OLD_PAYMENT = """
INSERT INTO mpp_payment (reference, openid, amount_value, currency, state, idempotency_key,
  details_attempts, conflicts, version, created_at, updated_at)
VALUES ('{reference}', 'o-1', 1130, 'CNY', '{state}', 'k-{reference}', 0, 0, 0,
  '2026-12-01 10:00:00+00:00', '2026-12-01 10:00:00+00:00')
"""


def _payments_before_orders(url: str) -> None:
    upgrade(url, None, revision=BEFORE_ORDERS)
    engine = create_engine(_sync_url(url))
    with engine.begin() as conn:
        for reference, state in (("shop-1", "Authorised"), ("shop-2", "Refused")):
            conn.exec_driver_sql(OLD_PAYMENT.format(reference=reference, state=state))
    engine.dispose()


def _orders_and_attempts(url: str) -> list[tuple[Any, ...]]:
    engine = create_engine(_sync_url(url))
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT o.reference, o.openid, o.amount_value, o.currency, p.reference, p.attempt,"
            " p.psp_confirmed FROM mpp_payment p JOIN mpp_order o ON o.id = p.order_id"
            " ORDER BY o.reference"
        ).all()
    engine.dispose()
    return [tuple(row) for row in rows]


async def _check_payments_become_first_attempts(url: str) -> None:
    await asyncio.to_thread(_payments_before_orders, url)
    await asyncio.to_thread(upgrade, url, None)
    assert await asyncio.to_thread(_orders_and_attempts, url) == [
        ("shop-1", "o-1", 1130, "CNY", "shop-1", 1, False),
        ("shop-2", "o-1", 1130, "CNY", "shop-2", 1, False),
    ]
    assert _inspect(url)[1] == []
    await asyncio.to_thread(downgrade, url, None, revision=BEFORE_ORDERS)
    assert "mpp_order" not in _inspect(url)[0]


async def test_payments_become_their_orders_first_attempt_on_sqlite(tmp_path: Path) -> None:
    await _check_payments_become_first_attempts(_sqlite(tmp_path))


async def test_payments_become_their_orders_first_attempt_on_postgres(
    fresh_pg_database: str,
) -> None:
    await _check_payments_become_first_attempts(fresh_pg_database)


def test_schema_names_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="plain schema name"):
        upgrade("postgresql+psycopg://127.0.0.1:1/x", 'evil"; drop table x; --')
    with pytest.raises(ConfigurationError, match="PostgreSQL only"):
        upgrade("sqlite+aiosqlite:///x.db", "payments")
    assert make_url("sqlite+aiosqlite:///x.db").get_backend_name() == "sqlite"


def _outbox_row_before_refunds(url: str, schema: str | None) -> None:
    """A payment and one change owed to the host, written as revision 0003 had them."""
    options = {"options": f"-csearch_path={schema}"} if schema else {}
    engine = create_engine(_sync_url(url), connect_args=options)
    now = "2026-12-01 00:00:00+00:00"
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO mpp_payment (reference, openid, amount_value, currency, state, "
            "idempotency_key, details_attempts, conflicts, version, created_at, updated_at) "
            f"VALUES ('old-1', 'o1', 1130, 'CNY', 'Authorised', 'k', 0, 0, 0, '{now}', '{now}')"
        )
        conn.exec_driver_sql(
            "INSERT INTO mpp_outbox (event_id, payment_id, reference, from_state, to_state, "
            "source, status, attempts, created_at, next_attempt_at) "
            "SELECT 'mpp_1_authorised', id, reference, 'Pending', 'Authorised', 'webhook', "
            f"'pending', 0, '{now}', '{now}' FROM mpp_payment"
        )
    engine.dispose()


def _outbox_kinds(url: str, schema: str | None) -> list[tuple[str, str, Any]]:
    options = {"options": f"-csearch_path={schema}"} if schema else {}
    engine = create_engine(_sync_url(url), connect_args=options)
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT event_id, kind, refund FROM mpp_outbox").all()
    engine.dispose()
    return [tuple(row) for row in rows]


async def _upgrade_with_an_owed_change(url: str, schema: str | None) -> None:
    await asyncio.to_thread(upgrade, url, schema, revision="0003_requeue")
    await asyncio.to_thread(_outbox_row_before_refunds, url, schema)
    await asyncio.to_thread(upgrade, url, schema)
    # A change stored before refunds existed is a payment's, and still owed to the host.
    assert await asyncio.to_thread(_outbox_kinds, url, schema) == [
        ("mpp_1_authorised", "payment", None)
    ]
    names, diff = await asyncio.to_thread(_inspect, url, schema)
    assert names >= TABLES and not diff
    await asyncio.to_thread(downgrade, url, schema, revision="0003_requeue")
    assert await asyncio.to_thread(_outbox_kinds_before, url, schema) == ["mpp_1_authorised"]


def _outbox_kinds_before(url: str, schema: str | None) -> list[str]:
    options = {"options": f"-csearch_path={schema}"} if schema else {}
    engine = create_engine(_sync_url(url), connect_args=options)
    with engine.connect() as conn:
        names = set(inspect(conn).get_table_names())
        assert not {"mpp_refund", "mpp_refund_event"} & names
        rows = conn.exec_driver_sql("SELECT event_id FROM mpp_outbox").all()
    engine.dispose()
    return [row[0] for row in rows]


async def test_refunds_revision_keeps_owed_changes_on_sqlite(tmp_path: Path) -> None:
    await _upgrade_with_an_owed_change(_sqlite(tmp_path), None)


@pytest.mark.postgres
async def test_refunds_revision_keeps_owed_changes_on_postgres(fresh_pg_database: str) -> None:
    await _upgrade_with_an_owed_change(fresh_pg_database, "refunds")
