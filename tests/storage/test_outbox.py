"""The outbox: claims and leases, failed deliveries, parking."""

from __future__ import annotations

from miniprogram_pay.storage import (
    Storage,
)
from tests.storage.helpers import create, details


async def _one_outbox_row(storage: Storage) -> None:
    await create(storage)
    await storage.payments.apply("order-1", details("Authorised"))


async def test_claim_outbox_leases(storage: Storage) -> None:
    await _one_outbox_row(storage)
    [claimed] = await storage.outbox.claim()
    assert claimed.attempts == 1
    assert await storage.outbox.claim() == []
    await storage.outbox.delivered([claimed.id])
    assert await storage.outbox.counts() == {"delivered": 1}
    assert await storage.outbox.claim() == []


async def test_an_expired_lease_is_claimed_again(storage: Storage) -> None:
    await _one_outbox_row(storage)
    [first] = await storage.outbox.claim(lease_seconds=0)
    [second] = await storage.outbox.claim()
    assert (second.id, second.attempts) == (first.id, 2)


async def test_outbox_failed_retries_then_parks(storage: Storage) -> None:
    await _one_outbox_row(storage)
    [claimed] = await storage.outbox.claim()
    await storage.outbox.failed(claimed.id, error="503", retry_in_seconds=0, park=False)
    assert await storage.outbox.counts() == {"pending": 1}
    [again] = await storage.outbox.claim()
    assert again.attempts == 2
    await storage.outbox.failed(claimed.id, error="503", retry_in_seconds=3600, park=False)
    assert await storage.outbox.claim() == []
    await storage.outbox.failed(claimed.id, error="x" * 300, retry_in_seconds=0, park=True)
    assert await storage.outbox.counts() == {"parked": 1}
    assert await storage.outbox.claim() == []


async def test_claim_outbox_respects_the_limit(storage: Storage) -> None:
    for n in range(3):
        await create(storage, f"order-{n}")
        await storage.payments.apply(f"order-{n}", details("Authorised"))
    first = await storage.outbox.claim(limit=2)
    rest = await storage.outbox.claim(limit=2)
    assert len(first) == 2 and len(rest) == 1
    assert {o.id for o in first}.isdisjoint(o.id for o in rest)


async def test_a_change_written_leased_is_left_to_its_writer_until_the_lease_ends(
    storage: Storage,
) -> None:
    await create(storage)
    applied = await storage.payments.apply("order-1", details("Authorised"), lease_seconds=3600)
    # Handed to this process's delivery as it commits: attempt 1 is that delivery.
    assert applied.outbox is not None
    assert (applied.outbox.event_id, applied.outbox.attempts) == (
        f"mpp_{applied.payment.id}_authorised",
        1,
    )
    assert await storage.outbox.claim() == []
    await storage.outbox.delivered([applied.outbox.id])
    assert await storage.outbox.counts() == {"delivered": 1}


async def test_a_lease_that_ends_undelivered_is_claimed_with_the_next_attempt(
    storage: Storage,
) -> None:
    # The writer died with the change in hand: another process's poll takes it over.
    await create(storage)
    applied = await storage.payments.apply("order-1", details("Authorised"), lease_seconds=0)
    assert applied.outbox is not None
    [claimed] = await storage.outbox.claim()
    assert (claimed.id, claimed.event_id, claimed.attempts) == (
        applied.outbox.id,
        applied.outbox.event_id,
        2,
    )
