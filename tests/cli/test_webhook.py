"""``miniprogram-pay webhook send`` against a running server."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from miniprogram_pay.cli import main
from miniprogram_pay.sandbox.server import SandboxedServers
from tests.cli.conftest import Run

pytestmark = pytest.mark.slow

OTHER_KEY = "00" * 32


def start_payment(servers: SandboxedServers, reference: str, shopper: str) -> dict[str, Any]:
    """A Pending payment, as if the shopper had not come back from wx.requestPayment."""
    r = httpx.post(servers.api_url + "/session", json={"code": f"{shopper}.1"})
    auth = {"Authorization": f"Bearer {r.json()['token']}"}
    body = {
        "paymentMethod": {"type": "wechatpayMiniProgram"},
        "reference": reference,
        "amount": {"currency": "CNY", "value": 1130},
    }
    r = httpx.post(servers.api_url + "/payments", json=body, headers=auth)
    assert r.status_code == 200, r.text
    payment: dict[str, Any] = r.json()
    return payment


def state_of(servers: SandboxedServers, reference: str, wanted: str) -> str:
    deadline = time.monotonic() + 5
    state = ""
    while time.monotonic() < deadline:
        r = httpx.get(
            f"{servers.api_url}/payments/{reference}",
            headers={"X-Admin-Key": servers.admin_api_key},
        )
        state = r.json()["state"]
        if state == wanted:
            break
        time.sleep(0.05)
    return state


def test_send_moves_a_payment(servers: SandboxedServers, run_cli: Run) -> None:
    payment = start_payment(servers, "cli-webhook-1", "wh1")
    result = run_cli(
        "webhook", "send", "--event", "AUTHORISATION", "--success", "true",
        "--reference", "cli-webhook-1", "--psp", payment["pspReference"],
        "--url", servers.api_url + "/webhooks/adyen",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "-> 200 [accepted]" in result.stdout
    assert "AUTHORISATION success=true" in result.stdout and "CNY 11.30" in result.stdout
    assert state_of(servers, "cli-webhook-1", "Authorised") == "Authorised"


def test_failure_then_success_sent_by_hand(
    servers: SandboxedServers, capsys: pytest.CaptureFixture[str]
) -> None:
    payment = start_payment(servers, "cli-webhook-2", "wh2")
    url = servers.api_url + "/webhooks/adyen"
    common = ["--reference", "cli-webhook-2", "--psp", payment["pspReference"], "--url", url]
    assert main(["webhook", "send", "--success", "false", "--reason", "Refused", *common]) == 0
    assert state_of(servers, "cli-webhook-2", "Refused") == "Refused"
    assert main(["webhook", "send", "--success", "true", *common]) == 0
    assert state_of(servers, "cli-webhook-2", "Authorised") == "Authorised"
    assert capsys.readouterr().out.count("-> 200 [accepted]") == 2


def test_a_wrong_key_is_rejected(servers: SandboxedServers, run_cli: Run) -> None:
    result = run_cli(
        "webhook", "send", "--reference", "cli-webhook-3", "--hmac-key", OTHER_KEY,
        "--url", servers.api_url + "/webhooks/adyen",
    )  # fmt: skip
    assert result.returncode == 1
    assert "-> 401" in result.stdout
    assert "webhook_signature_invalid" in result.stdout


def test_credentials_come_from_the_environment(servers: SandboxedServers, run_cli: Run) -> None:
    result = run_cli(
        "webhook", "send", "--reference", "cli-webhook-4",
        "--url", servers.api_url + "/webhooks/adyen",
        env={"MINIPROGRAM_PAY_WEBHOOK_PASSWORD": "not-the-password"},
    )  # fmt: skip
    assert result.returncode == 1
    assert "-> 401" in result.stdout
    assert "webhook_auth_failed" in result.stdout


def test_an_unreachable_server_is_one_error_line(run_cli: Run) -> None:
    result = run_cli("webhook", "send", "--reference", "x", "--url", "http://127.0.0.1:9/hook")
    assert result.returncode == 1
    assert result.stderr.startswith("error: could not reach http://127.0.0.1:9/hook")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("codes", "state"),
    [
        (["REFUND"], "Refunded"),
        (["REFUND_FAILED", "REFUND"], "Failed"),  # the failure sent first still wins
        (["REFUND", "REFUNDED_REVERSED"], "Reversed"),
        (["CANCEL_OR_REFUND"], "Refunded"),
    ],
)
def test_send_each_refund_event_code(
    servers: SandboxedServers, capsys: pytest.CaptureFixture[str], codes: list[str], state: str
) -> None:
    """A refund's webhooks, for a refund nobody asked the package for: a Customer Area one."""
    reference = f"cli-refund-{'-'.join(codes).lower()}"
    payment = start_payment(servers, reference, reference)
    url = servers.api_url + "/webhooks/adyen"
    for code in codes:
        assert main(["webhook", "send", "--event", code, "--reference", reference,
                     "--psp", "9915000000000077", "--original-reference", payment["pspReference"],
                     "--amount", "300", "--url", url]) == 0  # fmt: skip
    assert "-> 200 [accepted]" in capsys.readouterr().out
    deadline = time.monotonic() + 5
    items: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        r = httpx.get(
            f"{servers.api_url}/payments/{reference}",
            headers={"X-Admin-Key": servers.admin_api_key},
        )
        items = r.json()["refunds"]["items"]
        if items and items[0]["state"] == state and len(items[0]["history"]) == len(codes):
            break
        time.sleep(0.05)
    [item] = items
    assert (item["external"], item["state"], item["amount"]) == (
        True,
        state,
        {"currency": "CNY", "value": 300},
    )
