"""On SQLite a unit of work reads what it locks in one statement (``LOCKED_TOGETHER``);
PostgreSQL, and the reference path, send four: the orders, the payments, the orders'
attempts, the event keys logged. For any orders of several attempts in any states
(duplicate authorisations among them), any references asked (some unknown, attempts of
one order asked together or not) and any event keys, the one statement must give
``PaymentChanges`` exactly what the four give: the same orders in the same order, with
the same attempts and duplicate counts, the same payments column by column in the same
order, the same logged keys.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from miniprogram_pay.domain.events import webhook_event
from miniprogram_pay.domain.orders import attempt_reference
from miniprogram_pay.storage import Database, Storage
from miniprogram_pay.storage.changes import PaymentChanges
from miniprogram_pay.storage.payment_rows import DUPLICATE_KEY
from miniprogram_pay.storage.schema import upgrade
from miniprogram_pay.storage.sql import Unit
from miniprogram_pay.storage.tables import utcnow
from tests.storage.helpers import AMOUNT

# Attempt references sort apart from their orders' ("o-2", attempt 2 of "o", after "o-1"),
# so reading in the wrong order shows.
NAMES = ("o", "o-1", "o-10")
EVENTS = (("AUTHORISATION", True), ("AUTHORISATION", False), ("OFFER_CLOSED", True))
# Orders, each a list of attempts, each the webhooks its payment gets.
Orders = list[list[list[tuple[str, bool]]]]


@st.composite
def _orders(draw: st.DrawFn) -> Orders:
    events = st.lists(st.sampled_from(EVENTS), max_size=3)
    return draw(st.lists(st.lists(events, min_size=1, max_size=3), min_size=1, max_size=3))


def _reference(order: int, attempt: int) -> str:
    """The first attempt is paid under the order's own reference."""
    return NAMES[order] if attempt == 1 else attempt_reference(NAMES[order], attempt)


def _keys(orders: Orders) -> list[str]:
    return [
        f"webhook:{_reference(o, a)}-{n}"
        for o, attempts in enumerate(orders)
        for a, events in enumerate(attempts, 1)
        for n in range(len(events))
    ]


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("locked") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{path}", None)
    return path


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data(), orders=_orders())
def test_one_statement_reads_what_four_read(
    migrated: Path, data: st.DataObject, orders: Orders
) -> None:
    references = [_reference(o, a) for o, at in enumerate(orders) for a in range(1, len(at) + 1)]
    asked = data.draw(st.lists(st.sampled_from([*references, "o-unknown"]), max_size=6))
    keys = data.draw(
        st.lists(st.sampled_from([*_keys(orders), DUPLICATE_KEY, "webhook:unknown"]), max_size=8)
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "db.sqlite"
        shutil.copyfile(migrated, path)
        apart, together = asyncio.run(_both_reads(path, orders, asked, keys))
    assert together == apart


def test_an_order_asked_through_one_attempt_reads_them_all(migrated: Path) -> None:
    # Two authorised attempts: the second is a duplicate the order counts.
    orders: Orders = [[[("AUTHORISATION", True)], [("AUTHORISATION", True)], []]]
    asked, keys = [_reference(0, 2)], [f"webhook:{_reference(0, 2)}-0", "webhook:unknown"]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "db.sqlite"
        shutil.copyfile(migrated, path)
        apart, together = asyncio.run(_both_reads(path, orders, asked, keys))
    assert together == apart
    [(_, _, duplicates, attempts, _)] = together["orders"]
    assert duplicates == 1
    assert [(n, a.state.value) for n, a in attempts] == [
        (1, "Authorised"), (2, "Authorised"), (3, "Created"),
    ]  # fmt: skip
    assert [p["reference"] for p in together["payments"]] == [_reference(0, 2)]
    assert len(together["logged"]) == 1


async def _both_reads(
    path: Path, orders: Orders, asked: list[str], keys: list[str]
) -> list[dict[str, Any]]:
    database = Database(f"sqlite+aiosqlite:///{path}")
    try:
        storage = Storage.over(database)
        await _seed(storage, orders)
        machine = storage.payments.machine

        def work(unit: Unit) -> list[dict[str, Any]]:
            seen = []
            for together in (False, True):
                changes = PaymentChanges(unit, machine, utcnow(), together=together)
                changes.lock(asked, keys)
                seen.append(_what_was_read(changes))
            return seen

        return await database.write(work)
    finally:
        await database.dispose()


async def _seed(storage: Storage, orders: Orders) -> None:
    for o, attempts in enumerate(orders):
        # Every attempt first (a paid order starts no more); a zero lifetime ends the
        # open attempt, so every pay starts the next one.
        for a in range(1, len(attempts) + 1):
            step = await storage.orders.pay(
                reference=NAMES[o], openid="o", amount=AMOUNT,
                idempotency_key=f"k-{o}-{a}", lifetime=timedelta(0),
            )  # fmt: skip
            assert step.attempt is not None and step.attempt.reference == _reference(o, a)
        for a, events in enumerate(attempts, 1):
            reference = _reference(o, a)
            for n, (code, success) in enumerate(events):
                event = webhook_event(
                    code, success, dedup_key=f"{reference}-{n}", psp_reference=f"PSP-{reference}",
                    amount_value=AMOUNT.value, amount_currency=AMOUNT.currency,
                )  # fmt: skip
                await storage.payments.apply(reference, event)


def _what_was_read(changes: PaymentChanges) -> dict[str, Any]:
    changes._read()
    return {
        "orders": [
            (i, o.reference, o.duplicates, sorted(o.attempts.items()), sorted(o.ids.items()))
            for i, o in changes._orders.items()
        ],
        "payments": [asdict(p) for p in changes._payments.values()],
        "logged": sorted(changes._logged),
    }
