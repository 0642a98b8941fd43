"""Nothing acknowledged is stuck: parked changes and webhooks are visible and requeued,
and a webhook ignored under a wrong setting is applied once the setting is fixed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import httpx
import pytest

from miniprogram_pay import StateChange
from miniprogram_pay.sandbox import DEFAULT_HMAC_KEY
from miniprogram_pay.services import delivery as delivery_module
from tests.http.helpers import error_code, host_world, start_payment
from tests.world import (
    ADMIN_KEY,
    World,
    basic_auth,
    eventually,
    notification_body,
    notification_item,
)

ADMIN = {"X-Admin-Key": ADMIN_KEY}
WRONG_SETTINGS = [
    pytest.param({"adyen_environment": "live"}, id="environment"),
    pytest.param({"adyen_merchant_account": "RenamedAccount"}, id="merchant-account"),
]


async def _webhook(w: World, reference: str, psp: str, **options: Any) -> httpx.Response:
    live = options.pop("live", "false")
    item = notification_item(
        psp_reference=psp, merchant_reference=reference, key_hex=DEFAULT_HMAC_KEY, **options
    )
    auth = basic_auth(w.config.webhook_username, w.config.webhook_password)
    r = await w.client.post(
        "/pay/webhooks/adyen", content=notification_body(item, live=live), headers=auth
    )
    assert r.text == "[accepted]", r.text
    return r


async def _notes(w: World, status: str | None = None) -> list[dict[str, Any]]:
    params = {"status": status} if status else {}
    r = await w.client.get("/pay/admin/notifications", params=params, headers=ADMIN)
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["notifications"]
    return found


async def _pending(db_url: str, reference: str) -> str:
    """A Pending payment made with the right settings; its pspReference."""
    async with host_world(db_url) as w:
        r = await w.pay_order(await w.login(), reference)
        assert r.status_code == 200, r.text
        psp: str = r.json()["pspReference"]
        return psp


async def _state(w: World, reference: str) -> str:
    state: str = (await w.status(reference))["state"]
    return state


# -- ignored items -------------------------------------------------------------------------


@pytest.mark.parametrize("wrong", WRONG_SETTINGS)
async def test_an_item_ignored_under_a_wrong_setting_is_applied_when_resent_after_the_fix(
    db_url: str, wrong: dict[str, Any]
) -> None:
    psp = await _pending(db_url, "order-fixme")
    async with host_world(db_url, **wrong) as w:
        await _webhook(w, "order-fixme", psp)
        await w.pay.drain()
        [note] = await _notes(w)
        assert note["status"] == "ignored"
    async with host_world(db_url) as w:  # the setting fixed, Adyen resends
        await _webhook(w, "order-fixme", psp)
        await w.pay.drain()
        [note] = await _notes(w)
        assert (note["status"], note["detail"], note["deliveries"]) == ("applied", None, 2)
        assert await _state(w, "order-fixme") == "Authorised"


async def test_a_copy_with_the_live_flag_flipped_does_not_suppress_the_genuine_item(
    db_url: str,
) -> None:
    psp = await _pending(db_url, "order-flip")
    async with host_world(db_url) as w:
        # The live flag is not signed: whoever has the Basic-auth password can flip it.
        await _webhook(w, "order-flip", psp, live="true")
        await _webhook(w, "order-flip", psp, live="false")
        await w.pay.drain()
        assert sorted(n["status"] for n in await _notes(w)) == ["applied", "ignored"]
        assert await _state(w, "order-flip") == "Authorised"


async def test_the_operator_requeues_ignored_items_that_are_ours_now(db_url: str) -> None:
    psp = await _pending(db_url, "order-requeue")
    async with host_world(db_url, adyen_environment="live") as w:
        await _webhook(w, "order-requeue", psp)
        await _webhook(w, "order-requeue", psp, merchant_account="SomeoneElse", live="true")
        await w.pay.drain()
        ours, foreign = sorted(await _notes(w, "ignored"), key=lambda n: n["id"])
    async with host_world(db_url) as w:
        r = await w.client.post(
            "/pay/admin/notifications/requeue", json={"status": "ignored"}, headers=ADMIN
        )
        assert r.status_code == 200, r.text
        assert r.json() == {
            "requeued": [ours["id"]],
            "kept": [{"id": foreign["id"], "detail": "merchant account is not ours"}],
        }

        async def authorised() -> bool:
            return await _state(w, "order-requeue") == "Authorised"

        await eventually(authorised, what="the requeued item to be applied by the inbox loop")
        assert [n["id"] for n in await _notes(w, "ignored")] == [foreign["id"]]


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        ("/pay/admin/notifications/requeue", {}, "invalid_status"),
        ("/pay/admin/notifications/requeue", {"status": "applied"}, "invalid_status"),
        ("/pay/admin/notifications/requeue", {"status": "parked", "ids": "1"}, "invalid_ids"),
        ("/pay/admin/notifications/requeue", {"status": "parked", "ids": [0]}, "invalid_ids"),
        ("/pay/admin/outbox/requeue", {"ids": [1, True]}, "invalid_ids"),
        ("/pay/admin/outbox/requeue", {"ids": list(range(1, 1002))}, "invalid_ids"),
        ("/pay/admin/outbox/requeue", {"ids": [2**31]}, "invalid_ids"),
    ],
)
async def test_a_bad_requeue_is_refused(
    db_url: str, path: str, body: dict[str, Any], code: str
) -> None:
    async with host_world(db_url) as w:
        r = await w.client.post(path, json=body, headers=ADMIN)
        assert (r.status_code, error_code(r)) == (400, code)
        assert (await w.client.post(path, json=body)).status_code == 404  # admin only


@pytest.mark.parametrize("path", ["/pay/admin/notifications", "/pay/admin/outbox"])
async def test_an_unknown_status_filter_is_refused(db_url: str, path: str) -> None:
    async with host_world(db_url) as w:
        for status in ("bogus", "\x00", "parked\x00"):
            r = await w.client.get(path, params={"status": status}, headers=ADMIN)
            assert (r.status_code, error_code(r)) == (400, "invalid_status")


# -- parked webhook items ------------------------------------------------------------------


async def test_a_parked_item_is_requeued_and_applied(db_url: str) -> None:
    async with host_world(db_url, inbox_max_attempts=1) as w:
        await start_payment(w, "order-parked")
        psp = (await w.status("order-parked"))["pspReference"]
        storage = w.pay.storage

        async def broken(notification_ids: Sequence[int] | int, **_: object) -> None:
            raise RuntimeError("the database said no")

        # Applying fails wherever it is tried: with the store, in a batch, item by item.
        inbox = storage.inbox
        inbox.take = inbox.apply = inbox.apply_one = broken  # type: ignore[method-assign,assignment]
        await _webhook(w, "order-parked", psp)
        [parked] = await eventually(lambda: _notes(w, "parked"), what="the item to be parked")
        health = (await w.client.get("/pay/health", headers=ADMIN)).json()
        assert health["notifications"] == {"parked": 1}

        del inbox.take, inbox.apply, inbox.apply_one  # fixed
        r = await w.client.post(
            "/pay/admin/notifications/requeue", json={"status": "parked"}, headers=ADMIN
        )
        assert r.json() == {"requeued": [parked["id"]], "kept": []}

        async def authorised() -> bool:
            return await _state(w, "order-parked") == "Authorised"

        await eventually(authorised, what="the requeued item to be applied")
        [note] = await _notes(w)
        assert (note["status"], note["attempts"]) == ("applied", 1)


# -- parked state changes ------------------------------------------------------------------


async def test_a_change_the_host_keeps_refusing_is_parked_loudly_then_requeued(
    db_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(delivery_module, "outbox_backoff", lambda attempt: 0.05)
    host = {"up": False}

    async def hook(change: StateChange) -> None:
        if not host["up"]:
            raise ConnectionError("the host is down")

    async with host_world(db_url, on_state_change=hook, outbox_park_after_seconds=1) as w:
        await w.pay.start()
        w.pay.workers.poll_seconds = 0.02
        await start_payment(w, "order-host-down")

        async def parked() -> list[dict[str, Any]]:
            r = await w.client.get("/pay/admin/outbox", params={"status": "parked"}, headers=ADMIN)
            rows: list[dict[str, Any]] = r.json()["outbox"]
            return rows

        [row] = await eventually(parked, what="the change to be parked after its window")
        assert (row["reference"], row["to"], row["lastError"]) == (
            "order-host-down",
            "Pending",
            "ConnectionError",
        )
        assert row["attempts"] > 2 and row["requeuedAt"] is None
        loud = [r for r in caplog.records if r.levelno >= logging.ERROR and "PARKED" in r.message]
        assert [row["eventId"] in r.message for r in loud] == [True]
        health = (await w.client.get("/pay/health", headers=ADMIN)).json()
        assert health["outbox"] == {"parked": 1}
        assert await w.pay.workers.report_parked() == (1, 0)  # the periodic reminder

        host["up"] = True
        body = {"ids": [row["id"]]}
        r = await w.client.post("/pay/admin/outbox/requeue", json=body, headers=ADMIN)
        [requeued] = r.json()["requeued"]
        assert (requeued["eventId"], requeued["status"]) == (row["eventId"], "pending")

        async def delivered() -> list[dict[str, Any]]:
            r = await w.client.get(
                "/pay/admin/outbox", params={"status": "delivered"}, headers=ADMIN
            )
            rows: list[dict[str, Any]] = r.json()["outbox"]
            return rows

        [done] = await eventually(delivered, what="the requeued change to reach the host")
        assert done["eventId"] == row["eventId"] and done["requeuedAt"] is not None
        assert done["attempts"] == row["attempts"] + 1
        r = await w.client.post("/pay/admin/outbox/requeue", json={}, headers=ADMIN)
        assert r.json() == {"requeued": []}  # nothing parked any more
