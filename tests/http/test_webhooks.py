"""POST /pay/webhooks/adyen: Basic auth, HMAC of every item, store, then ``[accepted]``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from Adyen.util import generate_notification_sig  # type: ignore[import-untyped]
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from miniprogram_pay import PaymentState
from miniprogram_pay.adyen.hmac import sign_item
from miniprogram_pay.sandbox import DEFAULT_HMAC_KEY, SandboxConfig
from miniprogram_pay.storage import InboxItem, Intake
from tests.http.helpers import error_code, host_world, start_payment
from tests.world import (
    ADMIN_KEY,
    MERCHANT_BASE,
    World,
    basic_auth,
    notification_body,
    notification_item,
)

SECOND_KEY = "280F1B655A1E730E7480B0DAEFAC8B84208D57C9059C78C670BBD00F762662EB"
UNKNOWN_KEY = "00" * 32
ADMIN = {"X-Admin-Key": ADMIN_KEY}
URL = "/pay/webhooks/adyen"


def auth(w: World) -> dict[str, str]:
    return basic_auth(w.config.webhook_username, w.config.webhook_password)


async def post(w: World, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return await w.client.post(URL, content=body, headers=auth(w) if headers is None else headers)


async def notifications(w: World) -> list[dict[str, Any]]:
    r = await w.client.get("/pay/admin/notifications", headers=ADMIN)
    assert r.status_code == 200
    found: list[dict[str, Any]] = r.json()["notifications"]
    return found


async def authorisation_for(w: World, reference: str, **overrides: Any) -> bytes:
    """A signed AUTHORISATION success=true for the sandbox payment of ``reference``."""
    payment = next(p for p in w.sandbox.payments.values() if p.merchant_reference == reference)
    values: dict[str, Any] = {
        "psp_reference": payment.psp_reference,
        "merchant_reference": reference,
        "key_hex": DEFAULT_HMAC_KEY,
        **overrides,
    }
    return notification_body(notification_item(**values))


async def test_a_signed_notification_is_stored_acknowledged_and_applied(db_url: str) -> None:
    async with host_world(db_url) as w:
        await start_payment(w, "order-wh")
        r = await post(w, await authorisation_for(w, "order-wh"))
        assert r.status_code == 200
        assert r.text == "[accepted]"
        assert r.headers["content-type"].startswith("text/plain")
        await w.pay.drain()
        (note,) = await notifications(w)
        assert (note["status"], note["eventCode"], note["success"]) == (
            "applied",
            "AUTHORISATION",
            True,
        )
        status = await w.status("order-wh")
        assert status["state"] == "Authorised"
        assert status["history"][-1]["source"] == "webhook"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer abc"},
        {"Authorization": "Basic not-base64!"},
        basic_auth("adyen", "wrong-password"),
        basic_auth("someone", "sandbox-webhook-password"),
        {"Authorization": "Basic YWR5ZW4="},  # "adyen" without a colon
    ],
)
async def test_wrong_credentials_are_401_and_nothing_is_stored(
    db_url: str, headers: dict[str, str]
) -> None:
    async with host_world(db_url) as w:
        await start_payment(w, "order-auth")
        r = await post(w, await authorisation_for(w, "order-auth"), headers)
        assert r.status_code == 401
        assert error_code(r) == "webhook_auth_failed"
        assert await notifications(w) == []
        assert (await w.status("order-auth"))["state"] == "Pending"


async def test_credentials_are_checked_before_the_body_is_parsed(db_url: str) -> None:
    async with host_world(db_url) as w:
        r = await post(w, b"not json", basic_auth("adyen", "nope"))
        assert r.status_code == 401


@pytest.mark.parametrize(
    "signature",
    ["", "AAAA", "coqCmt/IZ4E3CzPvMY8zTjQVL5hYJUiBRg8UU+iCWo0=", "ü"],
)
async def test_a_wrong_signature_is_401(db_url: str, signature: str) -> None:
    async with host_world(db_url) as w:
        await start_payment(w, "order-sig")
        r = await post(
            w, await authorisation_for(w, "order-sig", signature=signature, key_hex=None)
        )
        assert r.status_code == 401
        assert error_code(r) == "webhook_signature_invalid"
        assert await notifications(w) == []


async def test_an_item_without_additional_data_is_401(db_url: str) -> None:
    async with host_world(db_url) as w:
        item = notification_item(key_hex=DEFAULT_HMAC_KEY)
        del item["additionalData"]
        r = await post(w, notification_body(item))
        assert r.status_code == 401
        assert error_code(r) == "webhook_signature_invalid"


async def test_every_item_of_a_batch_is_verified(db_url: str) -> None:
    async with host_world(db_url) as w:
        good = notification_item(psp_reference="1", key_hex=DEFAULT_HMAC_KEY)
        bad = notification_item(psp_reference="2", key_hex=UNKNOWN_KEY)
        r = await post(w, notification_body(good, bad))
        assert r.status_code == 401
        assert "item 1" in r.json()["error"]["message"]
        assert await notifications(w) == []
        r = await post(
            w,
            notification_body(good, notification_item(psp_reference="2", key_hex=DEFAULT_HMAC_KEY)),
        )
        assert r.status_code == 200
        assert len(await notifications(w)) == 2


async def test_either_configured_key_verifies_during_rotation(db_url: str) -> None:
    config = SandboxConfig(
        webhook_url=f"{MERCHANT_BASE}{URL}", hmac_keys=(DEFAULT_HMAC_KEY, SECOND_KEY)
    )
    async with host_world(db_url, config=config) as w:
        for n, key in enumerate((DEFAULT_HMAC_KEY, SECOND_KEY)):
            r = await post(
                w, notification_body(notification_item(psp_reference=str(n), key_hex=key))
            )
            assert r.status_code == 200
        r = await post(w, notification_body(notification_item(key_hex=UNKNOWN_KEY)))
        assert r.status_code == 401
        # The sandbox's rotated-key scenario signs with the second key end to end.
        headers = await start_payment(w, "order-sbx-rotated-key")
        await w.details(headers, "order-sbx-rotated-key")
        await w.settle()
        assert all(d.accepted for d in w.sandbox.deliveries)


@pytest.mark.parametrize(
    ("overrides", "live", "detail"),
    [
        ({"merchant_account": "SomeoneElse"}, "false", "merchant account is not ours"),
        ({}, "true", "live flag does not match this environment"),
    ],
)
async def test_a_notification_for_another_account_or_environment_is_ignored(
    db_url: str, overrides: dict[str, Any], live: str, detail: str
) -> None:
    async with host_world(db_url) as w:
        await start_payment(w, "order-ign")
        payment = next(iter(w.sandbox.payments.values()))
        item = notification_item(
            psp_reference=payment.psp_reference,
            merchant_reference="order-ign",
            key_hex=DEFAULT_HMAC_KEY,
            **overrides,
        )
        r = await post(w, notification_body(item, live=live))
        assert r.status_code == 200
        assert r.text == "[accepted]"
        await w.pay.drain()
        (note,) = await notifications(w)
        assert (note["status"], note["detail"]) == ("ignored", detail)
        assert (await w.status("order-ign"))["state"] == "Pending"


async def test_an_authorisation_without_an_amount_moves_nothing(db_url: str) -> None:
    async with host_world(db_url) as w:
        await start_payment(w, "order-noamount")
        payment = next(iter(w.sandbox.payments.values()))
        item = notification_item(
            psp_reference=payment.psp_reference,
            merchant_reference="order-noamount",
            signature="replaced below",
        )
        del item["amount"]
        item["additionalData"]["hmacSignature"] = sign_item(item, bytes.fromhex(DEFAULT_HMAC_KEY))
        r = await post(w, notification_body(item))
        assert r.text == "[accepted]"  # genuine and signed: kept, but it checks no money
        await w.pay.drain()
        status = await w.status("order-noamount")
        assert status["state"] == "Pending"
        assert [(c["kind"], c["event"]) for c in status["conflicts"]] == [
            ("amount_missing", "AUTHORISATION")
        ]
        assert w.changes[-1].state is PaymentState.PENDING  # the host heard of nothing else


async def test_a_redelivery_is_counted_and_changes_nothing(db_url: str) -> None:
    async with host_world(db_url) as w:
        await start_payment(w, "order-dup")
        body = await authorisation_for(w, "order-dup")
        for _ in range(3):
            r = await post(w, body)
            assert r.status_code == 200 and r.text == "[accepted]"
        await w.pay.drain()
        (note,) = await notifications(w)
        assert note["deliveries"] == 3
        status = await w.status("order-dup")
        assert [h["to"] for h in status["history"]] == ["Created", "Pending", "Authorised"]
        assert len([e for e in status["events"] if e["source"] == "webhook"]) == 1
        assert [c.state for c in w.changes].count(PaymentState.AUTHORISED) == 1


async def test_a_redelivery_applies_an_item_its_first_delivery_left_waiting(db_url: str) -> None:
    # The first request could not apply its item with the store (so stored it alone),
    # and its apply after the answer can pass over it: on PostgreSQL a concurrent
    # redelivery's store holds the row lock, and the apply uses SKIP LOCKED. The item
    # is leased to the first request, so the worker loop would wait 10 s for it; the
    # redelivering request applies it instead, and no drain is needed here.
    async with host_world(db_url) as w:
        await start_payment(w, "order-skip")
        body = await authorisation_for(w, "order-skip")
        apply_stored = w.pay.apply_stored
        passed_over: list[Sequence[int]] = []
        inbox = w.pay.storage.inbox
        take = inbox.take

        async def fail_once(items: Sequence[InboxItem], **options: Any) -> Intake:
            if not passed_over:
                raise RuntimeError("as if applying had failed")
            return await take(items, **options)

        inbox.take = fail_once  # type: ignore[method-assign]

        async def pass_over_once(notification_ids: Sequence[int]) -> None:
            if not passed_over:
                passed_over.append(notification_ids)
                return
            await apply_stored(notification_ids)

        w.pay.apply_stored = pass_over_once  # type: ignore[method-assign]
        assert (await post(w, body)).text == "[accepted]"
        assert (await w.status("order-skip"))["state"] == "Pending"
        assert (await post(w, body)).text == "[accepted]"
        assert (await w.status("order-skip"))["state"] == "Authorised"
        (note,) = await notifications(w)
        assert (note["status"], note["attempts"], note["deliveries"]) == ("applied", 1, 2)
        assert [[note["id"]]] == [list(ids) for ids in passed_over]


async def test_a_notification_for_an_unknown_payment_is_kept_as_orphan(db_url: str) -> None:
    async with host_world(db_url) as w:
        r = await post(
            w,
            notification_body(
                notification_item(merchant_reference="nobody", key_hex=DEFAULT_HMAC_KEY)
            ),
        )
        assert r.status_code == 200
        await w.pay.drain()
        (note,) = await notifications(w)
        assert note["status"] == "orphan"


def _items(**item: Any) -> bytes:
    return json.dumps(
        {"live": "false", "notificationItems": [{"NotificationRequestItem": item}]}
    ).encode()


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'{"live": "false"}',
        b'{"live": "false", "notificationItems": []}',
        b'{"live": "false", "notificationItems": [1]}',
        b'{"live": "maybe", "notificationItems": [{"NotificationRequestItem": {}}]}',
        b'{"live": "false", "notificationItems": '
        b'[{"NotificationRequestItem": {"pspReference": NaN}}]}',
        _items(merchantAccountCode="M", eventCode="AUTHORISATION", success="true"),
        _items(pspReference="1", merchantAccountCode="M", eventCode="AUTHORISATION", success="yes"),
        _items(
            pspReference="1",
            merchantAccountCode="M",
            eventCode="AUTHORISATION",
            success="true",
            amount={"value": "10", "currency": "CNY"},
        ),
        _items(
            pspReference="1",
            merchantAccountCode="M",
            eventCode="AUTHORISATION",
            success="true",
            amount={"value": 10**30, "currency": "CNY"},
        ),
        _items(
            pspReference="1",
            merchantAccountCode="M",
            eventCode="AUTHORISATION",
            success="true",
            additionalData="x",
        ),
        json.dumps(
            {"live": "false", "notificationItems": [{"NotificationRequestItem": {}}] * 101}
        ).encode(),
    ],
)
async def test_malformed_notifications_are_400_not_500(db_url: str, body: bytes) -> None:
    async with host_world(db_url) as w:
        r = await post(w, body)
        assert r.status_code == 400, r.text
        assert error_code(r) == "invalid_notification"
        assert await notifications(w) == []


async def test_a_lone_surrogate_in_an_item_is_refused_not_a_500(db_url: str) -> None:
    async with host_world(db_url) as w:
        body = _items(
            pspReference="\ud800",
            merchantAccountCode="M",
            eventCode="AUTHORISATION",
            success="true",
            additionalData={"hmacSignature": "x"},
        )
        r = await post(w, body)
        assert r.status_code == 400, r.text
        assert error_code(r) == "invalid_notification"
        assert await notifications(w) == []


async def test_an_oversized_notification_is_413(db_url: str) -> None:
    async with host_world(db_url) as w:
        item = notification_item(key_hex=DEFAULT_HMAC_KEY, reason="x" * 70_000)
        r = await post(w, notification_body(item))
        assert r.status_code == 413
        assert error_code(r) == "payload_too_large"


# -- HMAC against the official library ------------------------------------------------

# Colons and backslashes in values are signed as they are, never escaped. A NUL is
# refused as malformed before any signature is checked (tests/adyen/test_webhooks.py).
_TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from(":\\:\\ab-_é中"),
        st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
    ),
    max_size=20,
)
_REQUIRED = _TEXT.filter(bool)


@st.composite
def signed_items(draw: st.DrawFn) -> tuple[dict[str, Any], bool]:
    """An item signed by ``Adyen.util`` (or made wrong) and whether it is signed right."""
    item: dict[str, Any] = {
        "pspReference": draw(_REQUIRED),
        "merchantAccountCode": draw(_REQUIRED),
        "merchantReference": draw(_TEXT),
        # A currency is stored in 8 characters at most; longer is refused as malformed.
        "amount": {"value": draw(st.integers(0, 2**53)), "currency": draw(_TEXT)[:8]},
        "eventCode": draw(_REQUIRED),
        "success": draw(st.sampled_from(["true", "false"])),
        "reason": draw(_TEXT),
    }
    if draw(st.booleans()):
        item["originalReference"] = draw(_TEXT)
    key = draw(st.sampled_from([DEFAULT_HMAC_KEY, SECOND_KEY, UNKNOWN_KEY]))
    signature = generate_notification_sig(item, key).decode("ascii")
    right = key != UNKNOWN_KEY
    if right and draw(st.booleans()):
        # Change one signed value after signing (appending keeps it different).
        field = draw(
            st.sampled_from(
                ["pspReference", "merchantAccountCode", "merchantReference", "eventCode"]
            )
        )
        item[field] += draw(st.sampled_from([":", "\\", "x"]))
        right = False
    item["additionalData"] = {"hmacSignature": signature}
    return item, right


@pytest.fixture(scope="module")
def shared_world(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[asyncio.Runner, World]]:
    """One world for all hypothesis examples, driven from a runner of its own."""
    path: Path = tmp_path_factory.mktemp("hmac") / "pay.db"
    config = SandboxConfig(
        webhook_url=f"{MERCHANT_BASE}{URL}", hmac_keys=(DEFAULT_HMAC_KEY, SECOND_KEY)
    )
    runner = asyncio.Runner()
    context = host_world(f"sqlite+aiosqlite:///{path}", config=config)
    w = runner.run(context.__aenter__())
    try:
        yield runner, w
    finally:
        runner.run(context.__aexit__(None, None, None))
        runner.close()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch=st.lists(signed_items(), min_size=1, max_size=3))
def test_accepted_iff_every_item_is_signed_right(
    shared_world: tuple[asyncio.Runner, World], batch: list[tuple[dict[str, Any], bool]]
) -> None:
    runner, w = shared_world
    items = [item for item, _ in batch]
    body = json.dumps(
        {"live": "false", "notificationItems": [{"NotificationRequestItem": i} for i in items]}
    )
    r = runner.run(post(w, body.encode()))
    if all(right for _, right in batch):
        assert r.status_code == 200, r.text
        assert r.text == "[accepted]"
    else:
        assert r.status_code == 401, r.text
        assert error_code(r) == "webhook_signature_invalid"


def test_the_seed_example_signature_matches_the_official_library() -> None:
    item: dict[str, Any] = {
        "pspReference": "7914073381342284",
        "merchantAccountCode": "TestMerchant",
        "merchantReference": "TestPayment-1407325143704",
        "amount": {"currency": "EUR", "value": 1130},
        "eventCode": "AUTHORISATION",
        "success": "true",
    }
    key = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"
    expected = "coqCmt/IZ4E3CzPvMY8zTjQVL5hYJUiBRg8UU+iCWo0="
    assert generate_notification_sig(item, key).decode() == expected
    assert (
        notification_item(
            psp_reference=item["pspReference"],
            merchant_account=item["merchantAccountCode"],
            merchant_reference=item["merchantReference"],
            currency="EUR",
            key_hex=key,
        )["additionalData"]["hmacSignature"]
        == expected
    )
