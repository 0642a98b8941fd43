"""No secret ever reaches a log line, an error body or a stored row.

One full flow (session, payments, details, webhooks, and a string of errors) runs
with every logger at DEBUG; then the captured logs, every response body and
every row of the database are searched for each secret, in every spelling.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator

import httpx
import pytest

from miniprogram_pay import Settings
from tests.security.helpers import SecurityWorld, dump_text
from tests.world import ADMIN_KEY, SESSION_SECRET, basic_auth, notification_body, notification_item


def spellings(secret: str | bytes) -> Iterator[str]:
    """A secret as it could leak: itself, hex, base64, repr of its bytes."""
    raw = secret.encode() if isinstance(secret, str) else secret
    if isinstance(secret, str):
        yield secret
    yield raw.hex()
    yield raw.hex().upper()
    yield base64.b64encode(raw).decode()
    yield base64.urlsafe_b64encode(raw).decode().rstrip("=")
    yield repr(raw)[2:-1]


def secrets_of(world: SecurityWorld) -> dict[str, list[str]]:
    config = world.config
    basic = base64.b64encode(
        f"{config.webhook_username}:{config.webhook_password}".encode()
    ).decode()
    found: dict[str, list[str]] = {
        "api key": list(spellings(config.api_key)),
        "app secret": list(spellings(config.wechat_app_secret)),
        "webhook password": [*spellings(config.webhook_password), basic],
        "session secret": list(spellings(SESSION_SECRET)),
        "admin key": list(spellings(ADMIN_KEY)),
    }
    for index, key_hex in enumerate(config.hmac_keys):
        found[f"hmac key {index} (hex)"] = [key_hex, key_hex.lower()]
        found[f"hmac key {index} (bytes)"] = list(spellings(bytes.fromhex(key_hex)))
    for index, exchange in enumerate(world.transport.to("/wechat/")):
        body = json.loads(exchange.response_body or b"{}")
        if "session_key" in body:
            found[f"session_key {index}"] = list(spellings(body["session_key"]))
            found[f"session_key {index} (bytes)"] = list(
                spellings(base64.b64decode(body["session_key"]))
            )
    return found


def assert_no_secret(where: str, text: str, secrets: dict[str, list[str]]) -> None:
    for name, forms in secrets.items():
        for form in forms:
            assert form not in text, f"{name} appears in {where}"


class Recorder:
    """Every response body the client saw, except the token a login hands out."""

    def __init__(self) -> None:
        self.bodies: list[str] = []
        self.logins = 0

    async def __call__(self, response: httpx.Response) -> None:
        await response.aread()
        if response.request.url.path == "/pay/session" and response.status_code == 200:
            self.logins += 1
            assert set(response.json()) == {"token", "expires_in"}
            return
        self.bodies.append(response.text)


async def run_everything(world: SecurityWorld) -> list[str]:
    """The full flow and its failures; returns the shopper tokens issued."""
    client = world.client
    tokens = []
    alice = await world.login("alice")
    tokens.append(alice["Authorization"].removeprefix("Bearer "))
    bob = await world.login("bob")
    tokens.append(bob["Authorization"].removeprefix("Bearer "))

    assert (await world.pay_order(alice, "order-ok")).status_code == 200
    assert (await world.details(alice, "order-ok")).status_code == 200
    assert (await world.pay_order(alice, "order-cancel")).status_code == 200
    await world.details(alice, "order-cancel", "requestPayment:fail cancel")
    await world.settle()

    # Errors of every kind.
    await client.post("/pay/session", json={"code": "alice.0"})  # reused code
    await client.post("/pay/session", json={"code": "invalid.1"})
    await client.post("/pay/session", json={"code": "ratelimit.1"})
    await client.get("/pay/payments/order-ok", headers=bob)
    await client.get("/pay/payments/order-ok", headers={"Authorization": "Bearer forged"})
    await client.get("/pay/admin/stale", headers={"X-Admin-Key": ADMIN_KEY[:-1]})
    await client.post(
        "/pay/payments", content=b"\xff", headers={**alice, "Content-Type": "application/json"}
    )
    for kind in ("401", "422", "500", "garbage"):
        world.sandbox.inject_fault(kind, count=3, target="payments")
        await world.pay_order(alice, f"order-fault-{kind}")
    world.sandbox.faults.clear()
    world.transport.down.add("/wechat/")
    await client.post("/pay/session", json={"code": "alice.down"})
    world.transport.down.clear()

    password = world.config.webhook_password
    key = world.config.hmac_keys[0]
    bad_auth = basic_auth(world.config.webhook_username, password + "x")
    good_auth = basic_auth(world.config.webhook_username, password)
    item = notification_item(merchant_reference="order-ok", key_hex=key)
    await client.post("/pay/webhooks/adyen", content=notification_body(item), headers=bad_auth)
    forged = notification_item(merchant_reference="order-ok", signature="AAAA")
    await client.post("/pay/webhooks/adyen", content=notification_body(forged), headers=good_auth)
    orphan = notification_item(merchant_reference="nobody", key_hex=key)
    await client.post("/pay/webhooks/adyen", content=notification_body(orphan), headers=good_auth)
    await client.get("/pay/admin/notifications", headers={"X-Admin-Key": ADMIN_KEY})
    await client.get("/pay/payments/order-ok", headers={"X-Admin-Key": ADMIN_KEY})
    await client.get("/pay/health", headers={"X-Admin-Key": ADMIN_KEY})
    await world.pay.drain()
    return tokens


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)  # the root logger: every library's records
    for name in ("httpx", "httpcore", "miniprogram_pay", "sqlalchemy", "asyncio"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


async def test_no_secret_leaks_anywhere(
    world: SecurityWorld, all_logs: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder()
    world.client.event_hooks["response"].append(recorder)
    tokens = await run_everything(world)

    secrets = secrets_of(world)
    assert any(name.startswith("session_key") for name in secrets), "no session_key captured"
    secrets["shopper tokens"] = tokens
    assert len(all_logs.records) > 50, "the flow should have logged plenty"
    assert any(r.name == "httpx" for r in all_logs.records), "httpx's own lines are captured"
    assert "jscode2session?appid=" in all_logs.text and "secret=REDACTED" in all_logs.text
    logs = "\n".join(
        f"{r.name} {r.getMessage()} {r.exc_text or ''} {r.stack_info or ''}"
        for r in all_logs.records
    )
    assert_no_secret("the logs", logs + all_logs.text, secrets)
    assert len(recorder.bodies) > 20 and recorder.logins >= 2
    assert_no_secret("a response body", "\n".join(recorder.bodies), secrets)
    assert_no_secret("the database", dump_text(world.db_path), secrets)


async def test_openids_are_masked_in_the_packages_own_log_lines(
    world: SecurityWorld, all_logs: pytest.LogCaptureFixture
) -> None:
    await run_everything(world)
    openids = [world.sandbox.openid_for(shopper) for shopper in ("alice", "bob")]
    own = [r for r in all_logs.records if r.name.startswith("miniprogram_pay")]
    own = [r for r in own if not r.name.startswith("miniprogram_pay.sandbox")]
    assert any("session opened for" in r.getMessage() for r in own)
    for record in own:
        for openid in openids:
            assert openid not in record.getMessage(), record.getMessage()
            assert openid not in (record.exc_text or "")


def test_settings_never_print_a_secret(world: SecurityWorld) -> None:
    settings: Settings = world.settings
    secrets = secrets_of(world)
    for text in (repr(settings), str(settings), f"{settings}", f"{settings!r}"):
        assert_no_secret("Settings' repr", text, secrets)
        assert "Secret('**********')" in text
    for name in ("adyen_api_key", "webhook_password", "wechat_app_secret", "session_secret"):
        value = getattr(settings, name)
        assert str(value) == repr(value) == "Secret('**********')"
    assert all(repr(key) == "Secret('**********')" for key in settings.adyen_hmac_keys)
    assert_no_secret(
        "the plugin's clients", repr(world.pay.adyen) + repr(world.pay.wechat), secrets
    )


def test_secrets_compare_in_constant_time_and_by_value() -> None:
    from miniprogram_pay import Secret

    secret = Secret("s3cr3t-value")
    assert secret.matches("s3cr3t-value") and not secret.matches("s3cr3t-valuE")
    assert not secret.matches("") and not secret.matches("s3cr3t-value ")
    assert secret == Secret("s3cr3t-value") and secret != "s3cr3t-value"
    assert hash(secret) == hash(Secret("other-value!"))  # the hash says only the length
