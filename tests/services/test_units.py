"""What one request asks of the database: units of work (each one hop to a database
thread), counted by the plugin's ``Database``.

The background loops poll with reads now and then; the writes of a request are exact:
a webhook is stored and applied under one commit, a payment is created and its answer
recorded in two, and a change reaches the host with no read and no claim, only its
"delivered" mark (batched with others). Only the commits somebody is told of wait for the
disk: the webhook's, the answers'; not the creation, not the marks.
"""

from __future__ import annotations

from dataclasses import replace

from miniprogram_pay.storage import UnitCounts
from tests.world import (
    World,
    basic_auth,
    default_config,
    eventually,
    notification_body,
    notification_item,
    world,
)


def _counts(w: World) -> UnitCounts:
    return w.pay.database.counts()


def _waits(db_url: str, on_postgresql: int) -> int:
    """A unit's waits for the server: PostgreSQL's round trips; none on SQLite."""
    return on_postgresql if db_url.startswith("postgresql") else 0


async def _delivered(w: World, event_id: str) -> bool:
    rows = await w.pay.storage.outbox.listing(status="delivered")
    return any(row.event_id == event_id for row in rows)


async def _told(w: World, reference: str, state: str) -> str:
    """Wait for the host to take the change of ``reference`` to ``state``; its event id."""

    async def found() -> str | None:
        for change in w.changes:
            if change.reference == reference and change.state.value == state:
                return change.event_id
        return None

    event_id: str = await eventually(found, what=f"{reference} {state} to reach the host")
    await eventually(lambda: _delivered(w, event_id), what="its delivered mark")
    return event_id


async def test_a_webhook_is_one_write_and_its_delivery_one_more(db_url: str) -> None:
    async with world(db_url) as w:
        r = await w.pay_order(await w.login(), "order-units")
        assert r.status_code == 200, r.text
        await _told(w, "order-units", "Pending")
        item = notification_item(
            psp_reference=r.json()["pspReference"],
            merchant_reference="order-units",
            key_hex=w.config.hmac_keys[0],
        )
        auth = basic_auth(w.config.webhook_username, w.config.webhook_password)
        before = _counts(w)
        r = await w.client.post(
            "/pay/webhooks/adyen", content=notification_body(item), headers=auth
        )
        assert r.text == "[accepted]"
        after = _counts(w)
        # The upsert; the payment's order, locks, attempts and logged keys (four reads,
        # in the lock order); its event, transition, outbox row, versioned update and
        # the inbox mark.
        assert after.statements - before.statements == 10
        # Stored and applied, one commit, synced before [accepted] is sent.
        assert (after.writes - before.writes, after.unsynced - before.unsynced) == (1, 0)
        # PostgreSQL: the stored row and the locks in one round trip, the writes and
        # the commit (the outbox row's id read back with it) in another.
        assert after.write_waits - before.write_waits == _waits(db_url, 2)
        await _told(w, "order-units", "Authorised")
        after = _counts(w)
        # And the delivered mark, which need not wait for the disk.
        assert (after.writes - before.writes, after.unsynced - before.unsynced) == (2, 1)
        assert (await w.status("order-units"))["state"] == "Authorised"


async def test_a_payment_is_two_writes_and_its_delivery_one_more(db_url: str) -> None:
    async with world(db_url) as w:
        headers = await w.login()
        before = _counts(w)
        r = await w.pay_order(headers, "order-units")
        assert r.status_code == 200, r.text
        after = _counts(w)
        # Created (not synced on its own); Adyen's answer recorded (synced: it is told).
        assert (after.writes - before.writes, after.unsynced - before.unsynced) == (2, 1)
        # PostgreSQL: the order's lock with its attempts; the new attempt's id; the commit.
        # Then the answer: the payment's lock and reads; the writes with the commit.
        assert after.write_waits - before.write_waits == _waits(db_url, 3 + 2)
        await _told(w, "order-units", "Pending")
        after = _counts(w)
        assert (after.writes - before.writes, after.unsynced - before.unsynced) == (3, 2)


async def test_a_payment_is_thirteen_statements(db_url: str) -> None:
    async with world(db_url) as w:
        headers = await w.login()
        await w.pay.workers.stop()  # no polls: every statement is the request's
        before = _counts(w)
        r = await w.pay_order(headers, "order-units")
        assert r.status_code == 200, r.text
        after = _counts(w)
        # Created: the order's lock, its attempts, the rule, the attempt, its transition.
        # The answer: the four locked reads, its event, transition, outbox row and
        # versioned update.
        assert after.statements - before.statements == 13


async def test_details_is_one_read_and_one_write_and_status_one_read(db_url: str) -> None:
    # The sandbox sends no webhook of its own here: every write is the request's.
    async with world(db_url, config=replace(default_config(), webhook_url=None)) as w:
        headers = await w.login()
        r = await w.pay_order(headers, "order-units")
        assert r.status_code == 200, r.text
        await _told(w, "order-units", "Pending")
        await w.pay.workers.stop()  # no polls from here on: every statement is the request's
        before = _counts(w)
        r = await w.details(headers, "order-units")
        assert r.status_code == 200 and r.json()["state"] == "Authorised", r.text
        after = _counts(w)
        assert (after.reads - before.reads, after.writes - before.writes) == (1, 1)
        # Read: the payment, asked before?; the answer as above.
        assert after.statements - before.statements == 10
        assert after.unsynced == before.unsynced  # the answer is told: its commit is synced
        assert after.read_waits - before.read_waits == _waits(db_url, 1)
        assert after.write_waits - before.write_waits == _waits(db_url, 2)
        before = _counts(w)
        assert (await w.status("order-units"))["state"] == "Authorised"
        after = _counts(w)
        assert (after.reads - before.reads, after.writes - before.writes) == (1, 0)
        # PostgreSQL: the six reads as one statement (one snapshot), one round trip.
        # SQLite: six SELECTs in one read transaction.
        postgres = db_url.startswith("postgresql")
        assert after.statements - before.statements == (1 if postgres else 6)
        assert after.read_waits - before.read_waits == _waits(db_url, 1)
