"""The back office's refund action in-process: the confirmation says what will be refunded and
what is left, one confirmation is one refund however often it is sent, refusals come back to the
payment's page with their code, and the amount is typed in the currency's major units."""

from __future__ import annotations

import asyncio
import re
from urllib.parse import urlencode

import httpx
import pytest

from miniprogram_pay.errors import InvalidRefundError
from miniprogram_pay.office.refunds import format_money, minor_units
from tests.office.test_auth import OFFICE, SAME_SITE, another_secret, csrf_of, sign_in
from tests.world import ADMIN_KEY, World, world

FORM = {**SAME_SITE, "Content-Type": "application/x-www-form-urlencoded"}


async def authorised(w: World, reference: str) -> str:
    headers = await w.login()
    assert (await w.pay_order(headers, reference)).status_code == 200
    answer = await w.details(headers, reference)
    assert answer.json()["state"] == "Authorised", answer.text
    await w.settle()
    psp: str = answer.json()["pspReference"]
    return psp


async def confirmation(w: World, reference: str, **params: str) -> httpx.Response:
    return await w.client.get(OFFICE + "/refund", params={"reference": reference, **params})


def confirm_form(page: str) -> str:
    """The confirmation's form, as the browser would send it."""
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page))
    return urlencode(fields)


async def refunds_of(w: World, reference: str) -> list[tuple[str, int, str]]:
    status = await w.status(reference)
    return [(i["reference"], i["amount"]["value"], i["state"]) for i in status["refunds"]["items"]]


async def test_a_confirmation_sent_twice_and_at_once_makes_one_refund(db_url: str) -> None:
    async with world(db_url) as w:
        psp = await authorised(w, "order-office")
        await sign_in(w)
        page = await confirmation(w, "order-office", amount="3.76", reason="return")
        assert page.status_code == 200, page.text
        assert "Refund CNY 3.76 of order-office?" in page.text
        assert re.search(r'id="refund-left">CNY 7.54<', page.text)
        assert re.search(r'id="refund-reason">RETURN<', page.text)
        assert 'name="value" value="376"' in page.text  # sent in minor units
        body = confirm_form(page.text)

        # A double click: the confirmation twice at once; then once more (a reload).
        first, second = await asyncio.gather(
            *(w.client.post(OFFICE + "/refund", content=body, headers=FORM) for _ in range(2))
        )
        assert first.status_code == 303, first.text
        assert first.headers["location"] == OFFICE + "/payments/order-office?refund=1"
        again = await w.client.post(OFFICE + "/refund", content=body, headers=FORM)
        assert [r.headers["location"] for r in (second, again)] == [first.headers["location"]] * 2
        await w.settle()
        assert len(w.sandbox.payments[psp].refunds) == 1
        assert await refunds_of(w, "order-office") == [("order-office-refund-1", 376, "Refunded")]

        shown = await w.client.get(first.headers["location"])
        assert "Refund order-office-refund-1 of CNY 3.76: refunded" in shown.text
        assert re.search(r'id="ledger-refundable">CNY 7.54<', shown.text)

        # A new confirmation is a new refund: everything that is left.
        rest = await confirmation(w, "order-office")
        assert "Refund CNY 7.54 of order-office?" in rest.text
        assert re.search(r'id="refund-left">CNY 0.00<', rest.text)
        body = confirm_form(rest.text)
        done = await w.client.post(OFFICE + "/refund", content=body, headers=FORM)
        assert done.headers["location"].endswith("?refund=2")
        await w.settle()
        assert [r[2] for r in await refunds_of(w, "order-office")] == ["Refunded", "Refunded"]
        after = await w.client.get(OFFICE + "/payments/order-office")
        assert "Nothing is left to refund." in after.text and 'id="refund-form"' not in after.text


async def test_the_refund_needs_the_pages_csrf_secret_and_this_site(db_url: str) -> None:
    async with world(db_url) as w:
        psp = await authorised(w, "order-forged")
        await sign_in(w)
        body = confirm_form((await confirmation(w, "order-forged", amount="1")).text)
        csrf = csrf_of((await w.client.get(OFFICE)).text)
        forged = re.sub(r"csrf=[^&]+", "csrf=" + another_secret(csrf), body)
        for content, headers in (
            (forged, FORM),
            (body, {**FORM, "Sec-Fetch-Site": "cross-site"}),
            (body, {**FORM, "Origin": "https://evil.test", "Sec-Fetch-Site": "cross-site"}),
        ):
            refused = await w.client.post(OFFICE + "/refund", content=content, headers=headers)
            assert refused.status_code == 403 and "Nothing was done" in refused.text
        assert w.sandbox.payments[psp].refunds == []
        assert await refunds_of(w, "order-forged") == []


async def test_refusals_come_back_to_the_payment_page_with_their_code(db_url: str) -> None:
    async with world(db_url, adyen_max_retries=0) as w:
        psp = await authorised(w, "order-refused")
        await sign_in(w)
        for params, status, code in (
            ({"amount": "11.31"}, 409, "refund_exceeds_refundable"),
            ({"amount": "3.765"}, 400, "invalid_refund_amount"),
            ({"amount": "0"}, 400, "invalid_refund_amount"),
            ({"amount": "١٢"}, 400, "invalid_refund_amount"),  # Arabic-Indic digits
            ({"reason": "because"}, 400, "invalid_refund_reason"),
        ):
            page = await confirmation(w, "order-refused", **params)
            assert page.status_code == status, (params, page.text)
            assert f"<code>{code}</code>" in page.text and 'id="confirm"' not in page.text
        assert (
            "CNY 11.31 asked, CNY 11.30 is left"
            in (await confirmation(w, "order-refused", amount="11.31")).text
        )

        # Confirmed, then another refund took the money first: refused by the service.
        body = confirm_form((await confirmation(w, "order-refused", amount="10")).text)
        await w.pay.refund("order-refused", 500)
        await w.settle()
        late = await w.client.post(OFFICE + "/refund", content=body, headers=FORM)
        assert late.status_code == 409
        assert "<code>refund_exceeds_refundable</code>" in late.text
        assert "Not refunded: CNY 10.00 asked, CNY 6.30 is left" in late.text

        # Adyen unavailable: the refund is stored, holds its amount, and the same
        # confirmation sent again asks Adyen with the same key: one refund.
        body = confirm_form((await confirmation(w, "order-refused", amount="2.00")).text)
        w.sandbox.inject_fault("503", target="refunds", processed=True)
        lost = await w.client.post(OFFICE + "/refund", content=body, headers=FORM)
        assert lost.status_code == 503, lost.text
        assert "<code>adyen_unavailable</code>" in lost.text
        assert "stored as Requested and holds its amount" in lost.text
        # Adyen made it before failing: its webhook may already have come.
        assert re.search(r'id="ledger-pending">CNY 2.00<', lost.text) or re.search(
            r'id="ledger-refunded">CNY 7.00<', lost.text
        )
        again = await w.client.post(OFFICE + "/refund", content=body, headers=FORM)
        assert again.status_code == 303
        await w.settle()
        assert [(r[1], r[2]) for r in await refunds_of(w, "order-refused")] == [
            (500, "Refunded"),
            (200, "Refunded"),
        ]
        assert len(w.sandbox.payments[psp].refunds) == 2


async def test_a_payment_that_is_not_authorised_offers_no_refund(db_url: str) -> None:
    async with world(db_url) as w:
        headers = await w.login()
        assert (await w.pay_order(headers, "order-pending")).status_code == 200
        await sign_in(w)
        page = await w.client.get(OFFICE + "/payments/order-pending")
        assert "Only an Authorised payment can be refunded; this one is Pending." in page.text
        assert 'id="refund-form"' not in page.text
        confirm = await confirmation(w, "order-pending")
        assert confirm.status_code == 409 and "<code>payment_not_refundable</code>" in confirm.text
        missing = await confirmation(w, "order-nobody")
        assert missing.status_code == 404


async def test_a_proxy_that_sends_the_admin_key_refunds_without_a_cookie(db_url: str) -> None:
    async with world(db_url) as w:
        await authorised(w, "order-proxy")
        admin = {"X-Admin-Key": ADMIN_KEY}
        page = await w.client.get(
            OFFICE + "/refund", params={"reference": "order-proxy"}, headers=admin
        )
        done = await w.client.post(
            OFFICE + "/refund",
            content=confirm_form(page.text),
            headers={**admin, "Content-Type": "application/x-www-form-urlencoded"},
        )
        assert done.status_code == 303
        await w.settle()
        assert await refunds_of(w, "order-proxy") == [("order-proxy-refund-1", 1130, "Refunded")]


@pytest.mark.parametrize(
    ("typed", "currency", "value"),
    [
        ("3.76", "CNY", 376),
        ("3.7", "CNY", 370),
        ("3", "CNY", 300),
        (" 11.30 ", "CNY", 1130),
        ("500", "JPY", 500),
        ("", "CNY", None),
        (None, "JPY", None),
    ],
)
def test_an_amount_is_typed_in_major_units(typed: str | None, currency: str, value: int) -> None:
    assert minor_units(typed, currency) == value


@pytest.mark.parametrize(
    ("typed", "currency"),
    [("3.765", "CNY"), ("3.", "CNY"), (".5", "CNY"), ("-1", "CNY"), ("1e3", "CNY"),
     ("3,76", "CNY"), ("0.00", "CNY"), ("5.0", "JPY"), ("0", "JPY"), ("9" * 16, "CNY")],
)  # fmt: skip
def test_an_amount_the_currency_cannot_hold_is_refused(typed: str, currency: str) -> None:
    with pytest.raises(InvalidRefundError) as refused:
        minor_units(typed, currency)
    assert refused.value.code == "invalid_refund_amount"


def test_money_is_shown_in_major_units_zero_included() -> None:
    amounts = ((0, "CNY"), (754, "CNY"), (5, "CNY"), (500, "JPY"))
    assert [format_money(value, currency) for value, currency in amounts] == [
        "CNY 0.00",
        "CNY 7.54",
        "CNY 0.05",
        "JPY 500",
    ]
