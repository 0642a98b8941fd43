"""``miniprogram-pay outbox requeue`` and ``notifications requeue``, against the database."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from miniprogram_pay import Amount
from miniprogram_pay.domain.events import EventSource, result_event
from miniprogram_pay.storage import Database, InboxItem, Storage
from miniprogram_pay.storage.schema import create_all
from tests.cli.conftest import Run

MERCHANT = "SandboxMerchantCN"


@pytest.fixture
async def storage(db_url: str) -> AsyncIterator[Storage]:
    database = Database(db_url)
    await create_all(database)
    try:
        yield Storage.over(database)
    finally:
        await database.dispose()


def _item(key: str, *, merchant_account: str = MERCHANT, **fields: object) -> InboxItem:
    raw = {"merchantAccountCode": merchant_account, "merchantReference": "order-1"}
    values: dict[str, object] = {
        "dedup_key": key.ljust(64, "0"),
        "psp_reference": "7914073381342284",
        "merchant_reference": "order-1",
        "event_code": "AUTHORISATION",
        "success": True,
        "amount_value": 1130,
        "amount_currency": "CNY",
        "reason": None,
        "raw_json": json.dumps(raw),
        "live": False,
        **fields,
    }
    return InboxItem(**values)  # type: ignore[arg-type]


async def test_outbox_requeue_offers_parked_changes_again(
    storage: Storage, run_cli: Run, db_url: str
) -> None:
    await storage.payments.create(
        reference="order-1", openid="o-1", amount=Amount(1130, "CNY"), idempotency_key="k"
    )
    await storage.payments.apply("order-1", result_event(EventSource.PAYMENTS, "Pending"))
    [row] = await storage.outbox.listing()
    await storage.outbox.failed(row.id, error="ConnectionError", retry_in_seconds=0, park=True)

    done = run_cli("outbox", "requeue", "--database-url", db_url)
    assert done.returncode == 0, done.stderr
    assert "requeued 1 parked state change(s)" in done.stdout
    assert row.event_id in done.stdout
    [again] = await storage.outbox.listing(status="pending")
    assert again.id == row.id and again.requeued_at is not None

    nothing = run_cli("outbox", "requeue", "--id", str(row.id), "--database-url", db_url)
    assert "requeued 0 parked state change(s)" in nothing.stdout


async def test_notifications_requeue_retries_parked_items(
    storage: Storage, run_cli: Run, db_url: str
) -> None:
    [stored] = await storage.inbox.store([_item("a")])
    status = await storage.inbox.record_failure(stored.id, error="RuntimeError", max_attempts=1)
    assert status == "parked"
    done = run_cli("notifications", "requeue", "--status", "parked", "--database-url", db_url)
    assert done.returncode == 0, done.stderr
    assert "requeued 1 parked webhook item(s)" in done.stdout
    [note] = await storage.inbox.listing()
    assert (note.status, note.attempts) == ("received", 0)
    assert await storage.inbox.due() == [stored.id]


async def test_notifications_requeue_judges_ignored_items_by_the_settings_now(
    storage: Storage, run_cli: Run, db_url: str
) -> None:
    ours, foreign, live = await storage.inbox.store(
        [
            _item("b", status="ignored", detail="live flag does not match this environment"),
            _item("c", merchant_account="SomeoneElse", status="ignored"),
            _item("d", status="ignored", live=True),
        ]
    )
    command = ("notifications", "requeue", "--status", "ignored", "--database-url", db_url)
    refused = run_cli(*command)
    assert refused.returncode == 1
    assert "MINIPROGRAM_PAY_ADYEN_MERCHANT_ACCOUNT" in refused.stderr

    done = run_cli(*command, env={"MINIPROGRAM_PAY_ADYEN_MERCHANT_ACCOUNT": MERCHANT})
    assert done.returncode == 0, done.stderr
    assert "requeued 1 ignored webhook item(s)" in done.stdout
    assert f"#{foreign.id}" in done.stdout and "merchant account is not ours" in done.stdout
    assert "live flag does not match" in done.stdout
    statuses = {n.id: n.status for n in await storage.inbox.listing()}
    assert statuses == {ours.id: "received", foreign.id: "ignored", live.id: "ignored"}
