"""Applying webhook items as one batch is the same as applying them one by one.

The batch path decides every item in memory and sends the writes with one
statement per table; the one-by-one path writes each item in its own
transaction; taking the items stores and applies them in one transaction. For any
mix of items (duplicates, conflicts, failures after an authorisation, unknown
references, events that imply nothing), all must leave the same payments,
history, event log and outbox, and report the same outcomes.

The package runs its statements on the DB-API driver, compiled once
(``storage/sql.py``). The batch is also applied through SQLAlchemy's own
``Connection.execute`` (``executor="core"``), the reference the driver path is held
to: the same rows, column by column.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import select

from miniprogram_pay.domain.events import EventSource, PaymentEvent, result_event, webhook_event
from miniprogram_pay.domain.money import Amount
from miniprogram_pay.storage import Database, InboxItem, Storage
from miniprogram_pay.storage.records import NotificationRecord
from miniprogram_pay.storage.schema import upgrade
from miniprogram_pay.storage.tables import PaymentRow
from tests.rows import select_rows

REFERENCES = ("pay-a", "pay-b", "pay-c")
AMOUNT = Amount(1130, "CNY")


def _item(
    n: int, ref: str, code: str, success: bool, value: int, psp: str, reason: str | None
) -> InboxItem:
    return InboxItem(
        dedup_key=f"key-{n:03d}".ljust(64, "0"),
        psp_reference=psp,
        merchant_reference=ref,
        event_code=code,
        success=success,
        amount_value=value,
        amount_currency="CNY",
        reason=reason,
        raw_json="{}",
    )


@st.composite
def _deliveries(draw: st.DrawFn) -> list[InboxItem]:
    """Items as Adyen sends them: a key names one content, and keys repeat (redeliveries)."""
    distinct = draw(st.integers(1, 10))
    contents = [
        _item(
            n,
            draw(st.sampled_from((*REFERENCES, "pay-unknown"))),
            # A refund's webhooks go to its refunds (tests/storage/test_refund_machine.py).
            draw(st.sampled_from(("AUTHORISATION", "OFFER_CLOSED", "CAPTURE", "CANCELLATION"))),
            draw(st.booleans()),
            draw(st.sampled_from((1130, 1130, 1130, 999))),
            draw(st.sampled_from(("PSP-1", "PSP-1", "PSP-2"))),
            draw(st.sampled_from((None, "Refused", "Expired"))),
        )
        for n in range(distinct)
    ]
    picks = draw(st.lists(st.integers(0, distinct - 1), min_size=1, max_size=14))
    return [contents[i] for i in picks]


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated database file, copied for every example (migrating is the slow part)."""
    path = tmp_path_factory.mktemp("batch") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{path}", None)
    return path


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(items=_deliveries(), pending=st.sets(st.sampled_from(REFERENCES)))
def test_a_batch_ends_where_one_by_one_ends(
    migrated: Path, items: list[InboxItem], pending: set[str]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        ways = asyncio.run(_every_way(migrated, Path(folder), items, pending))
    batch, single, reference, taken, core = ways
    assert batch == single
    assert taken == batch
    assert core == batch
    # Storage.apply writes statement by statement: the payments, their
    # history, event log and outbox agree with it too.
    assert batch["payments"] == reference["payments"]
    assert batch["outbox"] == reference["outbox"]


async def _every_way(
    template: Path, folder: Path, items: list[InboxItem], pending: set[str]
) -> list[dict[str, Any]]:
    results = []
    for way in ("batch", "single", "reference", "take", "core"):
        path = folder / f"{way}.db"
        shutil.copyfile(template, path)
        database = Database(
            f"sqlite+aiosqlite:///{path}", executor="core" if way == "core" else "driver"
        )
        try:
            storage = Storage.over(database)
            await _seed(storage, pending)
            records: list[NotificationRecord] = []
            if way == "take":
                records = (await storage.inbox.take(items)).applied
                results.append(await _snapshot(storage, records))
                continue
            stored = await storage.inbox.store(items)
            first = {s.id: item for s, item in zip(stored, items, strict=True) if s.new}
            # Every way applies in the batch's lock order: reference, then id.
            order = sorted(first, key=lambda i: (first[i].merchant_reference, i))
            if way in ("batch", "core"):
                records = await storage.inbox.apply(order)
            elif way == "single":
                for notification_id in order:
                    record = await storage.inbox.apply_one(notification_id)
                    assert record is not None
                    records.append(record)
            else:
                for notification_id in order:
                    item = first[notification_id]
                    if item.merchant_reference in REFERENCES:
                        await storage.payments.apply(item.merchant_reference, _event(item))
            results.append(await _snapshot(storage, records))
        finally:
            await database.dispose()
    return results


def _event(item: InboxItem) -> PaymentEvent:
    return webhook_event(
        item.event_code,
        item.success,
        dedup_key=item.dedup_key,
        psp_reference=item.psp_reference,
        amount_value=item.amount_value,
        amount_currency=item.amount_currency,
        reason=item.reason,
    )


async def _seed(storage: Storage, pending: set[str]) -> None:
    for reference in REFERENCES:
        await storage.payments.create(
            reference=reference, openid="o", amount=AMOUNT, idempotency_key=f"idem-{reference}"
        )
        if reference in pending:
            event = result_event(
                EventSource.PAYMENTS,
                "Pending",
                psp_reference="PSP-1",
                amount_value=AMOUNT.value,
                amount_currency=AMOUNT.currency,
            )
            await storage.payments.apply(reference, event)


async def _snapshot(storage: Storage, records: list[NotificationRecord]) -> dict[str, Any]:
    payments = {}
    # Every stored column, so a column the batch forgot to write shows here.
    rows = {
        row.reference: row.model_dump(exclude={"created_at", "updated_at"})
        for row in await select_rows(storage.database, select(PaymentRow))
    }
    for reference in REFERENCES:
        found = await storage.payments.status(reference)
        assert found is not None
        _, history, events, _ = found
        payments[reference] = (
            rows[reference],
            [(t.from_state, t.to_state, t.source, t.event_kind, t.event_key) for t in history],
            sorted(
                (e.key, e.source, e.kind, e.outcome, e.conflict, e.amount_value) for e in events
            ),
        )
    outcomes = sorted(
        (
            r.id,
            r.status,
            r.applied.duplicate if r.applied else None,
            r.applied.decision.outcome if r.applied and r.applied.decision else None,
            r.applied.payment.state if r.applied else None,
            r.applied.transition.to_state if r.applied and r.applied.transition else None,
        )
        for r in records
    )
    outbox = sorted(event.event_id for event in await storage.outbox.claim(limit=1000))
    notes = sorted((n.id, n.status, n.attempts) for n in await storage.inbox.listing())
    return {"payments": payments, "outcomes": outcomes, "outbox": outbox, "notes": notes}
