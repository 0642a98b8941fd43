"""``miniprogram-pay refund``: a payment refunded through a running server's admin endpoint."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from miniprogram_pay.cli import main
from miniprogram_pay.sandbox.server import SandboxedServers
from miniprogram_pay.sandbox.shopper import Shopper

pytestmark = pytest.mark.slow


def _paid(servers: SandboxedServers, scenario: str = "authorised") -> str:
    async def pay() -> str:
        async with httpx.AsyncClient(timeout=30) as client:
            shopper = Shopper(
                client,
                api_url=servers.api_url,
                sandbox_url=servers.sandbox_url,
                admin_api_key=servers.admin_api_key,
                say=lambda label, text: None,
            )
            result = await shopper.pay(scenario, prefix="cli-refund")
            assert result.state == "Authorised"
            return result.reference

    return asyncio.run(pay())


def refund(servers: SandboxedServers, reference: str, *args: str) -> list[str]:
    return ["refund", reference, "--api", servers.api_url, "--admin-key", servers.admin_api_key,
            *args]  # fmt: skip


def test_refund_in_parts_from_the_command_line(
    servers: SandboxedServers, capsys: pytest.CaptureFixture[str]
) -> None:
    reference = _paid(servers)
    assert main(refund(servers, reference, "--amount", "130", "--reason", "return")) == 0
    out = capsys.readouterr().out
    assert f"{reference}-refund-1, CNY 1.30 (RETURN)" in out
    assert re.search(r"state\s+Received \(pspReference \d+\)", out)
    assert re.search(r"state\s+Refunded", out)
    assert "refunded CNY 1.30, pending CNY 0.00, returned CNY 0.00, refundable CNY 10.00" in out

    assert main(refund(servers, reference, "--idempotency-key", "rest-1")) == 0
    out = capsys.readouterr().out
    assert f"{reference}-refund-2, CNY 10.00" in out
    assert "refundable CNY 0.00" in out

    assert main(refund(servers, reference, "--amount", "1")) == 1
    err = capsys.readouterr().err
    assert "refund_exceeds_refundable" in err
    assert servers.admin_api_key not in err


def test_a_refused_refund_exits_1(
    servers: SandboxedServers, capsys: pytest.CaptureFixture[str]
) -> None:
    reference = _paid(servers, "authorised")
    # The sandbox's control API, as a tester steers it: this payment's refunds are refused.
    chosen = httpx.post(
        f"{servers.sandbox_url}/_sandbox/refund-scenarios",
        json={"reference": reference, "scenario": "refused"},
    )
    assert chosen.status_code == 200, chosen.text
    assert main(refund(servers, reference)) == 1
    out = capsys.readouterr().out
    assert re.search(r"state\s+Refused \(Refund refused\)", out)
    assert "refundable CNY 11.30" in out
