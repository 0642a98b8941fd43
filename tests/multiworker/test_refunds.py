"""Refunds across worker processes on one PostgreSQL: no over-refund, no second refund at Adyen.

The race: two uvicorn worker processes are asked at once for partial refunds of one
payment that together exceed it; admission under the payment's row lock accepts
exactly what fits and refuses the rest cleanly, and Adyen is called for the
accepted ones only. The crash: a worker is killed while Adyen holds its answer to
a refund it has already made; a restarted worker, asked again with the same key,
sends the stored Idempotency-Key, so Adyen replays the first refund.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx
import pytest
from sqlmodel import col, select

from miniprogram_pay.storage.tables import RefundRow
from tests.multiworker.conftest import Store
from tests.multiworker.harness import Merchant, Merchants, Shop, wait_until
from tests.rows import select_rows
from tests.world import ADMIN_KEY

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ADMIN = {"X-Admin-Key": ADMIN_KEY}
AMOUNT = 1130
RACERS = 12
SHARE = 200  # 12 x 200 asks for 2400 of 1130: exactly 5 fit


async def _authorised(shop: Shop, merchant: Merchant, reference: str) -> str:
    headers = await shop.login(merchant.url, "erin", random.randrange(10**6))
    answer = await shop.pay(merchant.url, headers, reference, AMOUNT)
    r = await shop.details(merchant.url, headers, reference, "requestPayment:ok")
    assert r.status_code == 200 and r.json()["state"] == "Authorised", r.text
    psp: str = answer["pspReference"]
    return psp


async def _refund(
    client: httpx.AsyncClient, merchant: Merchant, reference: str, body: dict[str, Any]
) -> httpx.Response:
    url = f"{merchant.url}/pay/admin/payments/{reference}/refunds"
    return await client.post(url, json=body, headers=ADMIN)


async def _refund_rows(store: Store) -> list[RefundRow]:
    return await select_rows(store.database, select(RefundRow).order_by(col(RefundRow.id)))


def _refund_calls(shop: Shop) -> list[Any]:
    return [c for c in shop.sandbox.sandbox.calls.calls if c.endpoint == "refunds"]


async def test_two_workers_racing_partial_refunds_never_exceed_the_payment(
    merchants: Merchants, shop: Shop, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    workers = [await merchants.start("a"), await merchants.start("b")]
    reference = "race-refund-1"
    psp = await _authorised(shop, workers[0], reference)
    body = {"amount": {"currency": "CNY", "value": SHARE}}
    gate = asyncio.Event()

    async def one(index: int) -> httpx.Response:
        await gate.wait()
        return await _refund(shop.client, workers[index % 2], reference, body)

    tasks = [asyncio.create_task(one(i)) for i in range(RACERS)]
    await asyncio.sleep(0.05)
    gate.set()  # every request leaves at once, half to each worker process
    answers = await asyncio.gather(*tasks)

    accepted = [r for r in answers if r.status_code == 201]
    refused = [r for r in answers if r.status_code != 201]
    assert len(accepted) == AMOUNT // SHARE  # all that fits, and no more
    for r in refused:
        error = r.json()["error"]
        assert (r.status_code, error["code"]) == (409, "refund_exceeds_refundable"), r.text
        assert error["refundable"]["value"] in (AMOUNT - SHARE * len(accepted), 0)
    # Adyen was called once per accepted refund, never for a refused one.
    calls = _refund_calls(shop)
    made = shop.sandbox.sandbox.payments[psp].refunds
    assert len(calls) == len(made) == len(accepted)
    assert sum(int(r.amount["value"]) for r in made) == SHARE * len(accepted) <= AMOUNT
    rows = await _refund_rows(store)
    assert sorted(r.number for r in rows) == list(range(1, len(accepted) + 1))
    assert {r.state for r in rows} == {"Received"}
    status = await shop.client.get(f"{workers[1].url}/pay/payments/{reference}", headers=ADMIN)
    assert status.json()["refunds"]["pending"]["value"] == SHARE * len(accepted)
    with capsys.disabled():
        print(
            f"\nrefund race: {RACERS} requests on 2 workers, {len(accepted)} accepted, "
            f"{len(refused)} refused (409 refund_exceeds_refundable), "
            f"{len(calls)} Adyen calls, {len(made)} refunds at Adyen"
        )


async def test_worker_killed_before_adyens_answer_makes_one_refund_after_restart(
    merchants: Merchants, shop: Shop, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    # The first worker waits long for Adyen; the sandbox makes the refund, then holds the answer.
    first = await merchants.start("first", MINIPROGRAM_PAY_ADYEN_TIMEOUT_SECONDS="60")
    reference = "crash-refund-1"
    psp = await _authorised(shop, first, reference)
    shop.sandbox.sandbox.inject_fault("timeout", target="refunds", delay_seconds=8.0)
    body = {"amount": {"currency": "CNY", "value": 400}, "idempotencyKey": "crash-1"}
    request = asyncio.create_task(_refund(shop.client, first, reference, body))

    async def made_at_adyen() -> bool:
        return bool(shop.sandbox.sandbox.payments[psp].refunds)

    await wait_until(made_at_adyen, seconds=15, what="Adyen to make the refund")
    # Committed before Adyen was called: another connection sees it, with its key.
    [row] = await _refund_rows(store)
    assert (row.state, row.amount_value) == ("Requested", 400) and row.idempotency_key
    await asyncio.to_thread(first.kill)
    assert first.process.returncode == -9
    [cut] = await asyncio.gather(request, return_exceptions=True)
    assert isinstance(cut, httpx.HTTPError), cut  # the caller never got an answer

    second = await merchants.start("second")
    again = await _refund(shop.client, second, reference, body)
    assert again.status_code == 201, again.text
    refund = again.json()["refund"]
    made = shop.sandbox.sandbox.payments[psp].refunds
    assert len(made) == 1  # the retry did not make a second refund
    assert (refund["state"], refund["pspReference"]) == ("Received", made[0].psp_reference)
    calls = _refund_calls(shop)
    assert [c.idempotency_key for c in calls] == [row.idempotency_key] * 2
    assert [c.replayed for c in calls] == [False, True]
    [stored] = await _refund_rows(store)
    assert (stored.id, stored.state, stored.psp_reference) == (
        row.id,
        "Received",
        made[0].psp_reference,
    )
    with capsys.disabled():
        print(
            f"\nrefund crash: 2 requests (the first's worker killed), 1 refund stored, "
            f"{len(calls)} Adyen calls ({sum(c.replayed for c in calls)} replayed), "
            f"{len(made)} refund at Adyen"
        )
