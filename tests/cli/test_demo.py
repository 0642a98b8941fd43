"""``miniprogram-pay demo``: a whole payment over real HTTP, told step by step."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from miniprogram_pay.sandbox import SCENARIOS, Sandbox, SandboxConfig
from tests.cli.conftest import Run, run_in

pytestmark = pytest.mark.slow

STEPS = (
    "1 wx.login",
    "2 POST /session",
    "3 POST /payments",
    "4 wx.requestPayment",
    "5 POST /payments/details",
    "6 webhooks",
    "7 GET /payments/{ref}",
)


@pytest.fixture(scope="module")
def default_demo(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    return run_in(tmp_path_factory.mktemp("demo"), "demo")


def test_demo_plays_the_default_scenario_to_authorised(
    default_demo: subprocess.CompletedProcess[str],
) -> None:
    result = default_demo
    assert result.returncode == 0, result.stderr
    out = result.stdout
    positions = [out.index(step) for step in STEPS]
    assert positions == sorted(positions)  # the steps come in the flow's order
    assert "CNY 11.30" in out
    assert "paySign ok (MD5)" in out
    assert "requestPayment:ok" in out
    assert re.search(r"state\s+Pending -> Authorised", out)
    assert "AUTHORISATION success=true -> accepted" in out
    assert re.search(r"result\s+Authorised, expected Authorised: OK", out)
    assert result.stderr == ""


def test_demo_refunds_the_payment_in_two_parts(
    default_demo: subprocess.CompletedProcess[str],
) -> None:
    out = default_demo.stdout
    # The refunds come after the payment, and before the metrics the demo moved.
    refunds = out[out.index("the back office refunds it") : out.index("\n  metrics ")]
    assert re.search(r"refund\s+demo-sbx-authorised-\w+-refund-1, CNY 3.76 \(CUSTOMER", refunds)
    assert re.search(r"refund\s+demo-sbx-authorised-\w+-refund-2, CNY 7.54 \(RETURN\)", refunds)
    assert len(re.findall(r"state\s+Refunded", refunds)) == 2
    assert len(re.findall(r"host told\s+refund .*Received -> Refunded", refunds)) == 2
    assert refunds.rstrip().endswith(
        "refunded CNY 11.30, pending CNY 0.00, returned CNY 0.00, refundable CNY 0.00"
    )


def test_demo_prints_no_secret(default_demo: subprocess.CompletedProcess[str]) -> None:
    out = default_demo.stdout
    config = SandboxConfig()
    for secret in (config.api_key, config.webhook_password, config.wechat_app_secret):
        assert secret not in out
    assert "Bearer" not in out
    assert "token issued" in out and '"token"' not in out
    openid = Sandbox(config).openid_for("alice")
    assert re.findall(r"pspReference \d+, shopper (\S+)", out) == [
        f"{openid[:4]}...{openid[-2:]}"
    ]  # masked
    assert openid not in out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--scenario", "refused"], "Refused"),
        (["--scenario", "success-then-failure", "--style", "redirect"], "Authorised"),
        (["--action", "cancel", "--style", "sdk"], "Refused"),
    ],
)
def test_demo_scenarios_and_shopper_actions(run_cli: Run, args: list[str], expected: str) -> None:
    result = run_cli("demo", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{expected}, expected {expected}: OK" in result.stdout
    if "success-then-failure" in args:
        assert "conflicts recorded: failure_after_authorisation" in result.stdout


def test_demo_refused_then_paid_by_the_orders_next_attempt(run_cli: Run) -> None:
    result = run_cli("demo", "--scenario", "retry-after-refusal")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Refused; the shopper tries the same order again" in out
    orders = re.findall(r"CNY 11\.30 for order (\S+)", out)
    assert len(orders) == 2 and orders[0] == orders[1]  # one reference, two attempts
    assert "Authorised, expected Authorised: OK" in out


def test_demo_all_prints_a_table_of_every_scenario(run_cli: Run) -> None:
    result = run_cli("demo", "--all")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    table = {(row[0], row[1]): row for row in rows if len(row) >= 5 and row[0] in SCENARIOS}
    assert {name for name, _ in table} == set(SCENARIOS)
    for row in table.values():
        assert row[2] == row[3], row  # expected == actual
        assert row[-1] == "ok"
    assert table[("authorised", "cancel")][3] == "Refused"
    assert table[("success-then-failure", "ok")][4] == "failure_after_authorisation"
    total = len(SCENARIOS) + 1
    assert f"{total} of {total} as expected" in result.stdout


def test_demo_unknown_scenario_is_a_usage_error_naming_the_scenarios(run_cli: Run) -> None:
    result = run_cli("demo", "--scenario", "nope")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "invalid choice: 'nope'" in result.stderr
    assert "failure-then-success" in result.stderr


def test_demo_prints_the_metrics_its_payment_moved(
    default_demo: subprocess.CompletedProcess[str],
) -> None:
    out = default_demo.stdout
    metrics = out[out.index("/pay/metrics (the non-zero series)") :]
    assert re.search(r"payments\s+Authorised 1\n", metrics)
    assert re.search(r"refunds\s+Refunded 2\n", metrics)  # the two parts, and no other state
    assert not re.search(r"refunds\s+(Requested|Received|Refused|Failed|Reversed) ", metrics)
    # The AUTHORISATION, then one REFUND webhook for each of the two refunds.
    assert re.search(r"webhooks\s+stored 3\n", metrics)
    for call in (
        "adyen,/payments,ok 1",
        "adyen,/payments/details,ok 1",
        "adyen,/payments/{pspReference}/refunds,ok 2",
        "wechat,/sns/jscode2session",
    ):
        assert call in metrics
    # Pending, then Authorised; and each refund's Requested, Received, then Refunded.
    assert re.search(r"hook calls\s+delivered 8\n", metrics)


def test_demo_stay_serves_the_back_office_until_interrupted(tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MINIPROGRAM_PAY_")}
    demo = subprocess.Popen(
        [sys.executable, "-m", "miniprogram_pay", "demo", "--stay"],
        cwd=tmp_path,
        env=clean,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert demo.stdout is not None
        lines = []
        for line in demo.stdout:  # ends at the line the demo waits after
            lines.append(line)
            if line.startswith("serving until Ctrl-C"):
                break
        printed = "".join(lines)
        office = re.search(r"back office\s+(http://\S+)", printed)
        key = re.search(r"admin key\s+(\S+)", printed)
        assert office and key, printed
        login = httpx.get(office.group(1), follow_redirects=True, timeout=10)
        assert login.status_code == 200 and "Sign in to the back office" in login.text
        listed = httpx.get(office.group(1), headers={"X-Admin-Key": key.group(1)}, timeout=10)
        assert "demo-sbx-authorised-" in listed.text  # the demo's payment, still there
    finally:
        demo.send_signal(signal.SIGINT)
        demo.communicate(timeout=30)  # reads the rest and closes the pipes
    assert demo.returncode == 0
