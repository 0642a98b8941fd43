"""Every sandbox scenario over real HTTP, with the sandbox misbehaving as Adyen does.

The expected states below are written out from the reconciliation rule (the
highest state implied by an event that agrees with the money facts), not taken
from the code under test: a failure never lowers an authorisation, a later
success raises a failure, a rejected webhook changes nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from miniprogram_pay.sandbox import SCENARIOS
from miniprogram_pay.sandbox.server import SandboxedServers
from miniprogram_pay.sandbox.shopper import PaymentResult, Shopper

pytestmark = pytest.mark.slow

# scenario -> (final state when the shopper pays, conflicts the payment must show)
RULE: dict[str, tuple[str, list[str]]] = {
    "authorised": ("Authorised", []),
    "refused": ("Refused", []),
    "error": ("Refused", []),  # details Error, webhook failure: Refused outranks Error
    "pending-then-webhook": ("Authorised", []),
    "webhook-held": ("Pending", []),  # until released (below)
    "webhook-never": ("Pending", []),
    "webhook-before-details": ("Authorised", []),
    "duplicate-webhooks": ("Authorised", []),
    "failure-then-success": ("Authorised", []),
    "webhook-twice-out-of-order": ("Authorised", []),
    "success-then-failure": ("Authorised", ["failure_after_authorisation"]),
    "wrong-amount": ("Pending", ["amount_mismatch"]),  # another amount authorises nothing
    "rotated-key": ("Authorised", []),
    "bad-signature": ("Authorised", []),  # webhook rejected; the details answer stands
    "adyen-5xx-once": ("Authorised", []),
    "adyen-timeout-once": ("Authorised", []),
    "offer-closed": ("Refused", []),
    # One attempt each: the shopper does not try again here.
    "retry-after-refusal": ("Refused", []),
    "expired-paid-late": ("Pending", []),
}


def test_the_rule_covers_every_scenario() -> None:
    assert set(RULE) == set(SCENARIOS)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as c:
        yield c


def shopper_for(client: httpx.AsyncClient, servers: SandboxedServers) -> Shopper:
    return Shopper(
        client,
        api_url=servers.api_url,
        sandbox_url=servers.sandbox_url,
        admin_api_key=servers.admin_api_key,
    )


async def admin_status(
    client: httpx.AsyncClient, servers: SandboxedServers, reference: str
) -> dict[str, Any]:
    r = await client.get(
        f"{servers.api_url}/payments/{reference}", headers={"X-Admin-Key": servers.admin_api_key}
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def sandbox_payments(
    client: httpx.AsyncClient, servers: SandboxedServers, reference: str
) -> list[dict[str, Any]]:
    r = await client.get(servers.sandbox_url + "/_sandbox/payments")
    return [p for p in r.json()["payments"] if p["merchantReference"] == reference]


async def check_stored(
    client: httpx.AsyncClient, servers: SandboxedServers, result: PaymentResult, scenario: str
) -> dict[str, Any]:
    expected_state, expected_conflicts = RULE[scenario]
    status = await admin_status(client, servers, result.reference)
    assert status["state"] == expected_state
    assert [c["kind"] for c in status["conflicts"]] == expected_conflicts
    # Adyen created exactly one payment, whatever was retried.
    assert len(await sandbox_payments(client, servers, result.reference)) == 1
    return status


@pytest.mark.parametrize("scenario", list(RULE))
async def test_scenario_ends_where_the_rule_says(
    scenario: str, servers: SandboxedServers, client: httpx.AsyncClient
) -> None:
    result = await shopper_for(client, servers).pay(scenario, name=f"e2e-{scenario}")
    status = await check_stored(client, servers, result, scenario)
    webhook_events = [e for e in status["events"] if e["source"] == "webhook"]
    if scenario == "bad-signature":
        assert webhook_events == []
        assert {d["state"] for d in result.webhooks} == {"failed"}
        assert all(a["statusCode"] == 401 for d in result.webhooks for a in d["attempts"])
    elif scenario in ("webhook-held", "webhook-never", "expired-paid-late"):
        assert result.webhooks == [] and webhook_events == []
    else:
        assert result.webhooks and {d["state"] for d in result.webhooks} == {"accepted"}
    if scenario == "duplicate-webhooks":
        assert len(result.webhooks) == 3
        assert len(webhook_events) == 1  # three deliveries, one fact


@pytest.mark.parametrize(
    "scenario", ["authorised", "pending-then-webhook", "failure-then-success", "offer-closed"]
)
async def test_late_webhooks_settle_a_payment_without_payment_data(
    scenario: str, slow_servers: SandboxedServers, client: httpx.AsyncClient
) -> None:
    result = await shopper_for(client, slow_servers).pay(scenario, name=f"slow-{scenario}")
    await check_stored(client, slow_servers, result, scenario)


async def test_failure_then_success_passes_through_refused(
    servers: SandboxedServers, client: httpx.AsyncClient
) -> None:
    result = await shopper_for(client, servers).pay("failure-then-success", name="upgrade")
    assert result.history == ["Created", "Pending", "Refused", "Authorised"]


@pytest.mark.parametrize("scenario", ["authorised", "failure-then-success", "duplicate-webhooks"])
@pytest.mark.parametrize("action", ["cancel", "fail"])
async def test_a_shopper_who_does_not_pay_is_refused(
    scenario: str, action: str, servers: SandboxedServers, client: httpx.AsyncClient
) -> None:
    shopper = shopper_for(client, servers)
    result = await shopper.pay(scenario, action=action, name=f"{action}-{scenario}")  # type: ignore[arg-type]
    assert result.state == "Refused"
    status = await admin_status(client, servers, result.reference)
    assert status["state"] == "Refused"
    assert status["conflicts"] == []


async def test_adyen_5xx_on_details_is_retried_with_the_same_key(
    servers: SandboxedServers, client: httpx.AsyncClient
) -> None:
    r = await client.post(
        servers.sandbox_url + "/_sandbox/faults",
        json={"kind": "500", "target": "details", "count": 1},
    )
    assert r.status_code == 201
    result = await shopper_for(client, servers).pay("authorised", name="details-5xx")
    assert result.state == "Authorised"
    (payment,) = await sandbox_payments(client, servers, result.reference)
    assert payment["detailsCalls"] == 1  # the retry was answered from Adyen's idempotency store


async def test_webhook_settles_a_payment_whose_details_call_failed(
    servers: SandboxedServers, client: httpx.AsyncClient
) -> None:
    """Adyen processes the details call but every answer is lost: the webhook still settles it."""
    shopper = shopper_for(client, servers)
    auth = await shopper._open_session("lost-answer")
    reference = "e2e-lost-answer-1"
    payment = await shopper._create_payment(auth, reference, amount=_cny(2500))
    err_msg = await shopper._request_payment(payment, "ok")
    r = await client.post(
        servers.sandbox_url + "/_sandbox/faults",
        json={"kind": "503", "target": "details", "count": 10},
    )
    assert r.status_code == 201
    try:
        r = await client.post(
            servers.api_url + "/payments/details",
            json={"reference": reference, "details": {"paymentStatus": err_msg}},
            headers=auth,
        )
    finally:
        await client.delete(servers.sandbox_url + "/_sandbox/faults")
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "adyen_unavailable"
    await shopper._await_webhooks(reference, payment["pspReference"])
    status = await admin_status(client, servers, reference)
    assert status["state"] == "Authorised"
    assert status["history"][-1]["source"] == "webhook"


def _cny(value: int) -> Any:
    from miniprogram_pay import Amount

    return Amount(value, "CNY")


async def test_a_held_webhook_settles_the_payment_once_released(
    servers: SandboxedServers, client: httpx.AsyncClient
) -> None:
    shopper = shopper_for(client, servers)
    result = await shopper.pay("webhook-held", name="held")
    assert result.state == "Pending"
    (payment,) = await sandbox_payments(client, servers, result.reference)
    assert payment["heldWebhooks"] == 1
    released = await client.post(
        f"{servers.sandbox_url}/_sandbox/payments/{payment['pspReference']}/release"
    )
    assert released.status_code == 200
    await shopper._await_webhooks(result.reference, payment["pspReference"])
    status = await admin_status(client, servers, result.reference)
    assert status["state"] == "Authorised"
    assert status["history"][-1]["source"] == "webhook"
