"""POST /pay/payments/details: the Mini Program's res.errMsg, answered with the server's state."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from miniprogram_pay.sandbox import SandboxConfig
from tests.http.helpers import HostKind, error_code, host_world, start_payment
from tests.world import MERCHANT_BASE

DETAILS_KEYS = {"reference", "state", "resultCode", "pspReference", "refusalReason"}


@pytest.mark.parametrize("kind", ["starlette", "fastapi"])
async def test_ok_is_authorised(db_url: str, kind: HostKind) -> None:
    async with host_world(db_url, kind=kind) as w:
        headers = await start_payment(w, "order-ok")
        r = await w.details(headers, "order-ok")
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == DETAILS_KEYS
        (payment,) = w.sandbox.payments.values()
        assert body == {
            "reference": "order-ok",
            "state": "Authorised",
            "resultCode": "Authorised",
            "pspReference": payment.psp_reference,
            "refusalReason": None,
        }
        assert payment.payment_status == "requestPayment:ok"


@pytest.mark.parametrize(
    ("reference", "status", "answer", "final_state"),
    [
        (
            "order-sbx-refused",
            "requestPayment:ok",
            ("Refused", "Refused", "Not enough balance"),
            "Refused",
        ),
        ("order-sbx-error", "requestPayment:ok", ("Error", "Error", "Acquirer Error"), "Refused"),
        ("order-cancel", "requestPayment:fail cancel", ("Refused", "Cancelled", None), "Refused"),
        # Adyen is sent the shape of res.errMsg, not the client's wording of the failure.
        (
            "order-fail",
            "requestPayment:fail no money",
            ("Refused", "Refused", "Refused"),
            "Refused",
        ),
        (
            "order-sbx-pending-then-webhook",
            "requestPayment:ok",
            ("Pending", "Pending", None),
            "Authorised",
        ),
    ],
)
async def test_outcomes(
    db_url: str,
    reference: str,
    status: str,
    answer: tuple[str, str, str | None],
    final_state: str,
) -> None:
    async with host_world(db_url) as w:
        headers = await start_payment(w, reference)
        r = await w.details(headers, reference, status)
        assert r.status_code == 200, r.text
        body = r.json()
        shown = (body["state"], body["resultCode"], body["refusalReason"])
        await w.settle()
        final = await w.status(reference)
        assert final["state"] == final_state
        # The answer is the payment as stored when it is rendered: what details said,
        # or, when Adyen's webhook was applied first (it outranks details), the final
        # summary. Nothing else.
        assert shown in (answer, (final["state"], final["resultCode"], final["refusalReason"]))


async def test_details_by_payment_data_alone(db_url: str) -> None:
    config = SandboxConfig(webhook_url=f"{MERCHANT_BASE}/pay/webhooks/adyen", response_style="sdk")
    async with host_world(db_url, config=config) as w:
        headers = await w.login()
        paid = await w.pay_order(headers, "order-pd")
        body = {
            "paymentData": paid.json()["paymentData"],
            "details": {"paymentStatus": "requestPayment:ok"},
        }
        r = await w.client.post("/pay/payments/details", json=body, headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["reference"] == "order-pd"
        assert r.json()["state"] == "Authorised"


async def test_a_repeated_details_call_changes_nothing(db_url: str) -> None:
    async with host_world(db_url) as w:
        headers = await start_payment(w, "order-again")
        first = await w.details(headers, "order-again")
        second = await w.details(headers, "order-again")
        assert first.json() == second.json()
        await w.settle()
        history = (await w.status("order-again"))["history"]
        assert [h["to"] for h in history] == ["Created", "Pending", "Authorised"]


async def test_someone_elses_payment_looks_missing(db_url: str) -> None:
    async with host_world(db_url) as w:
        await start_payment(w, "order-alice", "alice")
        bob = await w.login("bob")
        for reference in ("order-alice", "order-nobody"):
            r = await w.details(bob, reference)
            assert r.status_code == 404
            assert error_code(r) == "payment_not_found"
        body = {"paymentData": "unknown", "details": {"paymentStatus": "requestPayment:ok"}}
        r = await w.client.post("/pay/payments/details", json=body, headers=bob)
        assert r.status_code == 404
        (payment,) = w.sandbox.payments.values()
        assert payment.details_calls == 0
        assert (await w.status("order-alice"))["state"] == "Pending"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"details": {"paymentStatus": "requestPayment:ok"}}, "missing_reference"),
        (
            {"reference": "bad ref", "details": {"paymentStatus": "requestPayment:ok"}},
            "invalid_reference",
        ),
        ({"reference": 5, "details": {"paymentStatus": "requestPayment:ok"}}, "invalid_field"),
        (
            {"paymentData": "", "details": {"paymentStatus": "requestPayment:ok"}},
            "invalid_payment_data",
        ),
        ({"reference": "order-v"}, "invalid_payment_status"),
        ({"reference": "order-v", "details": "requestPayment:ok"}, "invalid_payment_status"),
        ({"reference": "order-v", "details": {"paymentStatus": "ok"}}, "invalid_payment_status"),
        ({"reference": "order-v", "details": {"paymentStatus": 1}}, "invalid_payment_status"),
        (
            {"reference": "order-v", "details": {"paymentStatus": "requestPayment:" + "x" * 300}},
            "invalid_payment_status",
        ),
        (
            {"reference": "order-v", "details": {"paymentStatus": "requestPayment:ok\n"}},
            "invalid_payment_status",
        ),
    ],
)
async def test_bad_details_bodies_are_400_and_change_nothing(
    db_url: str, body: dict[str, Any], expected: str
) -> None:
    async with host_world(db_url) as w:
        headers = await start_payment(w, "order-v")
        r = await w.client.post("/pay/payments/details", json=body, headers=headers)
        assert r.status_code == 400, r.text
        assert error_code(r) == expected
        (payment,) = w.sandbox.payments.values()
        assert payment.details_calls == 0
        assert (await w.status("order-v"))["state"] == "Pending"


async def test_details_need_a_session(db_url: str) -> None:
    async with host_world(db_url) as w:
        await start_payment(w, "order-anon")
        r = await w.client.post(
            "/pay/payments/details",
            json={"reference": "order-anon", "details": {"paymentStatus": "requestPayment:ok"}},
        )
        assert r.status_code == 401
        assert error_code(r) == "unauthenticated"


async def test_adyen_failing_on_details_keeps_the_state(db_url: str) -> None:
    async with host_world(db_url, adyen_max_retries=0) as w:
        headers = await start_payment(w, "order-down")
        w.sandbox.inject_fault("503", target="details", processed=False)
        r = await w.details(headers, "order-down")
        assert r.status_code == 503
        assert error_code(r) == "adyen_unavailable"
        assert (await w.status("order-down"))["state"] == "Pending"
        r = await w.details(headers, "order-down")  # the shopper's retry goes through
        assert r.json()["state"] == "Authorised"


async def test_without_payment_data_details_answer_the_payment_and_the_webhook_settles(
    db_url: str,
) -> None:
    """A v71 redirect action names no paymentData: Adyen cannot match the details call,
    the shopper's choice reaches it through WeChat, and its webhook settles the payment."""
    config = SandboxConfig(
        webhook_url=f"{MERCHANT_BASE}/pay/webhooks/adyen", response_style="action"
    )
    async with host_world(db_url, config=config) as w:
        headers = await w.login()
        started = await w.pay_order(headers, "order-v71")
        assert started.json()["paymentData"] is None
        (payment,) = w.sandbox.payments.values()
        control = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=w.sandbox_app), base_url="http://sandbox.test"
        )
        async with control:
            wx = await control.post(
                "/_sandbox/wechat/pay",
                json={**started.json()["redirect"]["data"], "outcome": "ok"},
            )
        assert wx.json()["errMsg"] == "requestPayment:ok"
        r = await w.details(headers, "order-v71")
        assert r.status_code == 200, r.text
        # The details call changed nothing; the answer is the payment as it is now.
        assert r.json()["state"] in ("Pending", "Authorised")
        assert payment.details_calls == 0
        await w.settle()
        final = await w.status("order-v71")
        assert final["state"] == "Authorised"
        assert [e["source"] for e in final["events"]] == ["payments", "webhook"]


async def test_without_payment_data_an_adyen_outage_on_details_is_still_an_error(
    db_url: str,
) -> None:
    config = SandboxConfig(
        webhook_url=f"{MERCHANT_BASE}/pay/webhooks/adyen", response_style="action"
    )
    async with host_world(db_url, config=config, adyen_max_retries=0) as w:
        headers = await start_payment(w, "order-v71-down")
        w.sandbox.inject_fault("503", target="details", processed=False)
        r = await w.details(headers, "order-v71-down")
        assert (r.status_code, error_code(r)) == (503, "adyen_unavailable")
        assert (await w.status("order-v71-down"))["state"] == "Pending"
