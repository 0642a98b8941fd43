"""GET /ready: the database answers, its schema is current, the loops are alive; else 503 and why.

``/health`` stays the cheap liveness check: it answers 200 while readiness fails on the database.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Connection, text

from miniprogram_pay.errors import StorageError
from miniprogram_pay.services.readiness import check_readiness
from miniprogram_pay.storage.engine import Database
from miniprogram_pay.storage.schema import BASELINE_REVISION, VERSION_TABLE, head_revision
from tests.world import World, eventually, world


async def ready(w: World) -> httpx.Response:
    return await w.client.get("/pay/ready")


async def set_revision(w: World, revision: str | None) -> None:
    """Put the database's recorded revision at ``revision`` (None: no revision at all)."""
    database = w.pay.database
    table = f"{database.schema}.{VERSION_TABLE}" if database.schema else VERSION_TABLE

    def put(connection: Connection) -> None:
        if revision is None:
            connection.execute(text(f"DELETE FROM {table}"))
        else:
            connection.execute(text(f"UPDATE {table} SET version_num = :r"), {"r": revision})

    await database.run_sync(put)


async def test_a_started_plugin_is_ready(db_url: str) -> None:
    async with world(db_url) as w:
        answer = await ready(w)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "status": "ready",
        "schemaRevision": head_revision(),
        "loops": {"inbox": "running", "outbox": "running"},
    }


@pytest.mark.parametrize(
    ("revision", "says"),
    [
        (BASELINE_REVISION, f"it is at revision {BASELINE_REVISION}"),
        (None, "no miniprogram-pay tables"),
    ],
    ids=["behind", "missing"],
)
async def test_a_schema_behind_the_release_is_not_ready(
    db_url: str, revision: str | None, says: str
) -> None:
    assert head_revision() != BASELINE_REVISION
    async with world(db_url) as w:
        await w.pay.start()
        await set_revision(w, revision)
        answer = await ready(w)
        health = await w.client.get("/pay/health")
    assert answer.status_code == 503
    error = answer.json()["error"]
    assert error["code"] == "schema_outdated"
    assert says in error["message"] and head_revision() in error["message"]
    assert "miniprogram-pay db upgrade" in error["message"]
    assert health.status_code == 200  # liveness does not read the database


async def test_a_newer_schema_is_ready(db_url: str) -> None:
    """A newer release migrated the database (a rolling deploy): migrations only add."""
    async with world(db_url) as w:
        await w.pay.start()
        await set_revision(w, "9999_from_a_newer_release")
        answer = await ready(w)
    assert answer.status_code == 200, answer.text
    assert answer.json()["schemaRevision"] == "9999_from_a_newer_release"


async def test_a_stalled_loop_and_an_old_schema_are_both_named(db_url: str) -> None:
    async with world(db_url) as w:
        await w.pay.start()
        await set_revision(w, None)
        release = asyncio.Event()
        reading = w.pay.storage.inbox.due

        async def stuck(**options: Any) -> list[int]:
            await release.wait()  # as a database that never answers this loop
            return await reading(**options)

        w.pay.storage.inbox.due = stuck  # type: ignore[method-assign]
        w.pay.workers.stall_after_seconds = 0.2
        w.pay.workers.kick()

        async def stalled() -> httpx.Response | None:
            answer = await ready(w)
            return answer if "inbox loop is stalled" in answer.text else None

        answer = await eventually(stalled, what="/ready to report the stall")
        release.set()
    assert answer.status_code == 503
    error = answer.json()["error"]
    assert error["code"] == "schema_outdated"  # the first failure names the code
    assert "no miniprogram-pay tables" in error["message"]
    assert "background work is not running: the inbox loop is stalled" in error["message"]


async def test_a_database_that_does_not_answer_is_storage_unavailable(
    db_url: str, tmp_path: Path
) -> None:
    unreachable = Database(f"sqlite+aiosqlite:///{tmp_path / 'no-such-dir' / 'pay.db'}")
    async with world(db_url) as w:
        await w.pay.start()
        try:
            with pytest.raises(StorageError, match="the database does not answer"):
                await check_readiness(unreachable, w.pay.workers)
        finally:
            await unreachable.dispose()


async def test_a_database_that_hangs_is_storage_unavailable_within_the_timeout(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import miniprogram_pay.services.readiness as readiness

    async def hangs(database: Database) -> Any:
        await asyncio.Event().wait()

    monkeypatch.setattr(readiness, "schema_status", hangs)
    async with world(db_url) as w:
        await w.pay.start()
        with pytest.raises(StorageError, match=r"did not answer within 0\.05 s"):
            await check_readiness(w.pay.database, w.pay.workers, timeout_seconds=0.05)
