"""Many shoppers retry one order at once after a refusal, on three worker processes and
one PostgreSQL: each round starts exactly one new attempt, and never two open ones."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

import pytest

from tests.multiworker.conftest import Store
from tests.multiworker.harness import Merchants, Shop

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROUNDS = 4
RETRIES_PER_ROUND = 12
FAIL = "requestPayment:fail"


async def test_concurrent_retries_after_a_refusal_start_one_attempt_per_round(
    merchants: Merchants, shop: Shop, store: Store
) -> None:
    pair = await merchants.start("pair", workers=2)
    single = await merchants.start("single")
    bases = [pair.url, single.url]
    rnd = random.Random(20261203)
    order = "mw-retry-race"
    headers = await shop.login(bases[0], "racer", 0)
    first = await shop.pay(bases[0], headers, order)
    started = time.monotonic()
    rounds: list[Counter[int]] = []
    reference = first["reference"]
    for _ in range(ROUNDS):
        # The current attempt fails (the shopper's sheet said so; Adyen refuses it) ...
        r = await shop.details(rnd.choice(bases), headers, reference, FAIL)
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "Refused", r.text
        # ... and every shopper's device asks to pay the order again at once.
        answers = await asyncio.gather(
            *(shop.pay(rnd.choice(bases), headers, order) for _ in range(RETRIES_PER_ROUND))
        )
        rounds.append(Counter(a["attempt"] for a in answers))
        assert len({a["reference"] for a in answers}) == 1, answers  # one new attempt
        assert all(a["state"] == "Pending" and a["redirect"] for a in answers)
        reference = answers[0]["reference"]
        status = await store.storage.orders.status(order)
        assert status is not None
        open_attempts = [a for a in status.attempts if not a.payment.state.is_final]
        assert len(open_attempts) == 1, status.attempts  # never two open
    elapsed = time.monotonic() - started
    assert [sorted(c) for c in rounds] == [[n] for n in range(2, ROUNDS + 2)]
    status = await store.storage.orders.status(order)
    assert status is not None
    assert [a.payment.attempt for a in status.attempts] == list(range(1, ROUNDS + 2))
    print(  # the measurement, shown with -s
        f"\n{ROUNDS} rounds x {RETRIES_PER_ROUND} concurrent retries on 3 workers: "
        f"{len(status.attempts)} attempts, one per round, in {elapsed:.1f} s"
    )
