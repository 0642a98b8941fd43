"""``miniprogram-pay shopper``: a Mini Program's payment played against a running host."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from miniprogram_pay import Amount, Order, OrderRequest, create_app
from miniprogram_pay.cli import main
from miniprogram_pay.sandbox.server import SandboxedServers
from miniprogram_pay.sandbox.shopper import FlowError, Shopper
from tests.cli.conftest import Run
from tests.world import MERCHANT_BASE, connect, default_config, settings_for, wiring

pytestmark = pytest.mark.slow


def play(servers: SandboxedServers, *args: str) -> list[str]:
    return ["shopper", "--api", servers.api_url, "--sandbox", servers.sandbox_url, *args]


def test_the_shopper_pays_and_the_host_agrees(run_cli: Run, servers: SandboxedServers) -> None:
    result = run_cli(*play(servers))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith(f"miniprogram-pay shopper: a Mini Program pays at {servers.api_url}")
    steps = ["1 wx.login", "2 POST /session", "3 POST /payments", "4 wx.requestPayment",
             "5 POST /payments/details", "6 webhooks", "7 GET /payments/{ref}"]  # fmt: skip
    positions = [out.index(step) for step in steps]
    assert positions == sorted(positions)
    assert re.search(r"for order shopper-sbx-authorised-[0-9a-f]{6}", out)
    assert "AUTHORISATION success=true -> accepted" in out
    assert re.search(r"result\s+Authorised, expected Authorised: OK", out)
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("args", "ending"),
    [
        (["--action", "cancel"], "Refused, expected Refused: OK"),
        (["--scenario", "webhook-never"], "Pending, expected Pending: OK"),
        (["--scenario", "wrong-amount"], "Pending, expected Pending: OK"),
        (["--amount", "2500", "--currency", "EUR"], "Authorised, expected Authorised: OK"),
    ],
)
def test_scenarios_and_answers(
    servers: SandboxedServers, capsys: pytest.CaptureFixture[str], args: list[str], ending: str
) -> None:
    assert main(play(servers, *args)) == 0
    out = capsys.readouterr().out
    assert re.search(r"result\s+" + re.escape(ending), out)
    if "--amount" in args:
        assert "EUR 25.00 for order" in out
    if "wrong-amount" in args:
        assert "conflicts recorded: amount_mismatch" in out


def test_a_refused_admin_key_falls_back_to_the_payment_state(
    servers: SandboxedServers, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(play(servers, "--admin-key", "not-the-key")) == 0
    out = capsys.readouterr().out
    assert "the host refused the admin key: waiting on the payment's state" in out
    assert re.search(r"result\s+Authorised, expected Authorised: OK", out)
    assert "not-the-key" not in out


def test_an_unreachable_host_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["shopper", "--api", "http://127.0.0.1:9/pay", "--sandbox", "http://127.0.0.1:9"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: could not reach http://127.0.0.1:9/pay")
    assert err.count("\n") == 1


def test_an_order_that_is_not_a_json_object_is_one_error_line(
    servers: SandboxedServers, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(play(servers, "--order", "[1]")) == 1
    assert capsys.readouterr().err.startswith("error: --order must be a JSON object")


# -- a host with an order resolver (the merchant's own), in-process ---------------------------


@dataclass
class ResolvingHost:
    shopper: Shopper
    orders: list[dict[str, object]]


@pytest.fixture
async def resolving_host(sqlite_url: str) -> AsyncIterator[ResolvingHost]:
    """The quickstart's host: the order decides the reference and the amount."""
    seen: list[dict[str, object]] = []

    async def resolve_order(request: OrderRequest) -> Order:
        seen.append(dict(request.body))
        return Order(reference=f"shop-{request.body['orderId']}", amount=Amount(4200, "CNY"))

    config = default_config()
    settings = settings_for(config, sqlite_url, allow_client_amount=False)
    async with wiring(config) as parts:
        plugin = create_app(settings, order_resolver=resolve_order, http_client=parts.outbound)
        connect(parts, Starlette(routes=[Mount("/pay", app=plugin)]))
        mounts = {
            MERCHANT_BASE: httpx.ASGITransport(app=parts.late),
            "http://sandbox.test": httpx.ASGITransport(app=parts.sandbox_app),
        }
        async with httpx.AsyncClient(mounts=mounts) as client:
            shopper = Shopper(
                client,
                api_url=f"{MERCHANT_BASE}/pay",
                sandbox_url="http://sandbox.test",
                admin_api_key=settings.admin_api_key.reveal() if settings.admin_api_key else None,
            )
            try:
                yield ResolvingHost(shopper, seen)
            finally:
                await plugin.stop()


async def test_with_an_order_the_host_decides_and_the_scenario_follows_its_reference(
    resolving_host: ResolvingHost,
) -> None:
    result = await resolving_host.shopper.pay("success-then-failure", order={"orderId": "A1"})
    assert resolving_host.orders == [
        {"orderId": "A1", "paymentMethod": {"type": "wechatpayMiniProgram"}}
    ]
    assert result.reference == "shop-A1"
    assert (result.state, result.conflicts) == ("Authorised", ["failure_after_authorisation"])
    assert [(w["eventCode"], w["success"]) for w in result.webhooks] == [
        ("AUTHORISATION", "true"),
        ("AUTHORISATION", "false"),
    ]


async def test_with_an_order_a_first_call_scenario_cannot_be_played(
    resolving_host: ResolvingHost,
) -> None:
    with pytest.raises(FlowError, match="acts on the first /payments call"):
        await resolving_host.shopper.pay("adyen-5xx-once", order={"orderId": "A2"})
    assert resolving_host.orders == []
