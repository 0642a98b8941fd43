"""The back office's doors: sign-in with the admin key, the session cookie, CSRF-safe actions,
and no back office at all without an admin key."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from miniprogram_pay import StateChange
from tests.world import ADMIN_KEY, World, eventually, world

OFFICE = "/pay/admin/office"
SAME_SITE = {"Origin": "http://merchant.test", "Sec-Fetch-Site": "same-origin"}


async def sign_in(w: World, key: str = ADMIN_KEY) -> httpx.Response:
    return await w.client.post(
        OFFICE + "/login",
        content=f"key={key}",
        headers={**SAME_SITE, "Content-Type": "application/x-www-form-urlencoded"},
    )


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field on the page"
    return found.group(1)


def another_secret(csrf: str) -> str:
    """The page's secret with its last character changed: never the secret itself,
    whatever character it ends in (one in 64 of them end in any given one)."""
    return csrf[:-1] + ("B" if csrf.endswith("A") else "A")


def test_another_secret_differs_whatever_the_last_character() -> None:
    for csrf in ("OmKmY3bit0j7Lgoz2h43EdZfUFM1L9vA", "OmKmY3bit0j7Lgoz2h43EdZfUFM1L9vB"):
        forged = another_secret(csrf)
        assert forged != csrf and forged[:-1] == csrf[:-1]


failing = {"on": True}


async def refuses(change: StateChange) -> None:
    if failing["on"]:
        raise RuntimeError("the host's order table is locked")


@pytest.fixture
async def parked(db_url: str) -> AsyncIterator[World]:
    """A payment whose Pending change was refused by the hook until it parked."""
    failing["on"] = True
    async with world(db_url, on_state_change=refuses, outbox_park_after_seconds=1) as w:
        headers = await w.login("alice")
        assert (await w.pay_order(headers, "order-parked")).status_code == 200

        async def is_parked() -> bool:
            answer = await w.client.get(
                "/pay/admin/outbox?status=parked", headers={"X-Admin-Key": ADMIN_KEY}
            )
            return bool(answer.json()["outbox"])

        await eventually(is_parked, what="the change to park")
        failing["on"] = False
        yield w


async def test_the_office_asks_for_the_key_then_keeps_a_strict_cookie(db_url: str) -> None:
    async with world(db_url) as w:
        first = await w.client.get(OFFICE)
        assert (first.status_code, first.headers["location"]) == (303, OFFICE + "/login")
        login = await w.client.get(OFFICE + "/login")
        assert login.status_code == 200 and 'type="password"' in login.text
        assert "default-src 'none'" in login.headers["content-security-policy"]
        wrong = await sign_in(w, ADMIN_KEY + "x")
        assert wrong.status_code == 401 and "not the admin key" in wrong.text
        assert "set-cookie" not in wrong.headers
        right = await sign_in(w)
        assert (right.status_code, right.headers["location"]) == (303, OFFICE)
        cookie = right.headers["set-cookie"].lower()
        for flag in ("httponly", "samesite=strict", f"path={OFFICE}"):
            assert flag in cookie, cookie
        assert ADMIN_KEY.lower() not in cookie  # a token, never the key
        home = await w.client.get(OFFICE)
        assert home.status_code == 200 and "Inbox and outbox" in home.text


async def test_a_forged_cookie_or_a_sign_in_from_another_site_gets_nothing(db_url: str) -> None:
    async with world(db_url) as w:
        w.client.cookies.set("mpp_office", "gAAAAAforged", path=OFFICE)
        assert (await w.client.get(OFFICE)).status_code == 303
        w.client.cookies.clear()
        forged = await w.client.post(
            OFFICE + "/login",
            content=f"key={ADMIN_KEY}",
            headers={"Origin": "https://evil.test", "Sec-Fetch-Site": "cross-site"},
        )
        assert forged.status_code == 401 and "set-cookie" not in forged.headers


async def test_requeue_needs_the_pages_csrf_secret_and_this_site(parked: World) -> None:
    w = parked
    await sign_in(w)
    confirm = await w.client.get(OFFICE + "/requeue?kind=outbox")
    assert confirm.status_code == 200 and "Requeue 1 parked" in confirm.text
    csrf = csrf_of(confirm.text)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for body, headers in (
        ("kind=outbox", {**form, **SAME_SITE}),  # no secret
        ("kind=outbox&csrf=" + another_secret(csrf), {**form, **SAME_SITE}),  # another secret
        (f"kind=outbox&csrf={csrf}", {**form, "Origin": "https://evil.test"}),  # another site
        (f"kind=outbox&csrf={csrf}", {**form, "Sec-Fetch-Site": "cross-site"}),
    ):
        refused = await w.client.post(OFFICE + "/requeue", content=body, headers=headers)
        assert refused.status_code == 403, body
        assert "Nothing was done" in refused.text
    outbox = await w.client.get("/pay/admin/outbox", headers={"X-Admin-Key": ADMIN_KEY})
    assert [r["status"] for r in outbox.json()["outbox"]] == ["parked"]  # untouched

    done = await w.client.post(
        OFFICE + "/requeue", content=f"kind=outbox&csrf={csrf}", headers={**form, **SAME_SITE}
    )
    assert done.status_code == 303
    assert "1+parked+state+changes" in done.headers["location"]

    async def delivered() -> bool:
        answer = await w.client.get("/pay/admin/outbox", headers={"X-Admin-Key": ADMIN_KEY})
        return [r["status"] for r in answer.json()["outbox"]] == ["delivered"]

    await eventually(delivered, what="the requeued change to reach the hook")


async def test_a_proxy_that_sends_the_admin_key_needs_no_cookie(parked: World) -> None:
    w = parked
    admin = {"X-Admin-Key": ADMIN_KEY}
    assert (await w.client.get(OFFICE, headers=admin)).status_code == 200
    done = await w.client.post(
        OFFICE + "/requeue",
        content="kind=outbox",
        headers={**admin, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert done.status_code == 303


async def test_without_an_admin_key_there_is_no_back_office(db_url: str) -> None:
    async with world(db_url, admin_api_key=None) as w:
        for path in (OFFICE, OFFICE + "/login", OFFICE + "/payments/x"):
            answer = await w.client.get(path)
            assert (answer.status_code, answer.json()["error"]["code"]) == (404, "not_found")
