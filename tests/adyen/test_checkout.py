from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from miniprogram_pay.adyen.checkout import DEFAULT_BACKOFF, AdyenCheckoutClient
from miniprogram_pay.config import Secret, Settings
from miniprogram_pay.errors import AdyenError, AdyenTimeoutError, AdyenUnavailableError
from miniprogram_pay.retrying import Backoff, no_jitter
from tests.fakes import ScriptedServer, Sleeper, Step

API_KEY = "AQE-super-secret-api-key-1234567890"
BASE = "https://checkout-test.adyen.com/v71"
KEY = "7d9d6a56-0d3c-4f2b-9c44-6d2b2a0c1f00"
BODY = {"amount": {"currency": "CNY", "value": 100}, "reference": "order-1"}


class FakeAdyen(ScriptedServer):
    """A programmable Adyen: answers the queued steps in order, then repeats the last."""


def make_client(
    fake: FakeAdyen, *, max_retries: int = 2, sleeper: Sleeper | None = None
) -> AdyenCheckoutClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(fake))
    return AdyenCheckoutClient(
        base_url=BASE + "/",
        api_key=Secret(API_KEY),
        http=http,
        max_retries=max_retries,
        backoff=Backoff(0.25, 0.25, no_jitter),
        sleep=sleeper or Sleeper(),
    )


def ok(body: Any = None, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json={"resultCode": "Pending"} if body is None else body)


def service_error(status: int, **fields: Any) -> httpx.Response:
    return httpx.Response(status, json={"status": status, **fields})


def timeout() -> httpx.TimeoutException:
    return httpx.ReadTimeout("timed out")


def connect_error() -> httpx.ConnectError:
    return httpx.ConnectError("connection refused")


Call = Callable[[AdyenCheckoutClient], Any]
CALLS: list[tuple[str, Call]] = [
    ("/payments", lambda c: c.create_payment(BODY, idempotency_key=KEY)),
    ("/payments/details", lambda c: c.submit_details(BODY, idempotency_key=KEY)),
]


@pytest.mark.parametrize(("path", "call"), CALLS)
async def test_success_sends_headers_and_body(path: str, call: Call) -> None:
    fake = FakeAdyen(ok({"resultCode": "Authorised", "pspReference": "P1"}))
    result = await call(make_client(fake))
    assert result == {"resultCode": "Authorised", "pspReference": "P1"}
    (request,) = fake.requests
    assert request.method == "POST"
    assert str(request.url) == BASE + path
    assert request.headers["X-API-Key"] == API_KEY
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Idempotency-Key"] == KEY
    assert json.loads(request.content) == BODY


@pytest.mark.parametrize(
    ("first", "expected_calls"),
    [(timeout(), 2), (connect_error(), 2), (httpx.Response(503), 2), (httpx.Response(500), 2)],
)
async def test_retries_transient_failures_with_same_key(first: Step, expected_calls: int) -> None:
    fake = FakeAdyen(first, ok())
    sleeper = Sleeper()
    result = await make_client(fake, sleeper=sleeper).create_payment(BODY, idempotency_key=KEY)
    assert result == {"resultCode": "Pending"}
    assert fake.calls == expected_calls
    assert {r.headers["Idempotency-Key"] for r in fake.requests} == {KEY}
    assert {r.content for r in fake.requests} == {fake.requests[0].content}
    assert sleeper.delays == [0.25]


@pytest.mark.parametrize(
    ("step", "error_type", "code", "status"),
    [
        (timeout(), AdyenTimeoutError, "adyen_timeout", 504),
        (connect_error(), AdyenUnavailableError, "adyen_unavailable", 503),
        (httpx.Response(502, text="Bad gateway"), AdyenUnavailableError, "adyen_unavailable", 503),
    ],
)
@pytest.mark.parametrize("max_retries", [0, 1, 3])
async def test_retries_are_bounded(
    step: Step, error_type: type[AdyenError], code: str, status: int, max_retries: int
) -> None:
    fake = FakeAdyen(step)
    sleeper = Sleeper()
    client = make_client(fake, max_retries=max_retries, sleeper=sleeper)
    with pytest.raises(error_type) as info:
        await client.create_payment(BODY, idempotency_key=KEY)
    assert fake.calls == max_retries + 1
    assert len(sleeper.delays) == max_retries
    assert info.value.code == code
    assert info.value.status == status
    assert info.value.retryable


async def test_transport_errors_are_chained() -> None:
    fake = FakeAdyen(timeout())
    with pytest.raises(AdyenTimeoutError) as info:
        await make_client(fake, max_retries=0).create_payment(BODY, idempotency_key=KEY)
    assert isinstance(info.value.__cause__, httpx.TimeoutException)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422, 429])
async def test_never_retries_4xx(status: int) -> None:
    fake = FakeAdyen(service_error(status, errorCode="000"), ok())
    with pytest.raises(AdyenError):
        await make_client(fake).create_payment(BODY, idempotency_key=KEY)
    assert fake.calls == 1


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_failure(status: int) -> None:
    fake = FakeAdyen(service_error(status, errorCode="000", message="HTTP Status Response"))
    with pytest.raises(AdyenError) as info:
        await make_client(fake).create_payment(BODY, idempotency_key=KEY)
    assert info.value.code == "adyen_auth_failed"
    assert info.value.status == 502
    assert info.value.http_status == status


@pytest.mark.parametrize("status", [400, 422])
async def test_rejection_carries_adyen_fields(status: int) -> None:
    fake = FakeAdyen(
        service_error(
            status,
            errorCode="14_030",
            message="Return URL is missing.",
            errorType="validation",
            pspReference="PSP42",
        )
    )
    with pytest.raises(AdyenError) as info:
        await make_client(fake).create_payment(BODY, idempotency_key=KEY)
    error = info.value
    assert (error.code, error.status, error.http_status) == ("adyen_rejected", 502, status)
    assert error.error_code == "14_030"
    assert error.psp_reference == "PSP42"
    assert "Return URL is missing." in error.message
    assert not error.retryable


async def test_rejection_without_json_body() -> None:
    fake = FakeAdyen(httpx.Response(422, text="<html>nope</html>"))
    with pytest.raises(AdyenError) as info:
        await make_client(fake).create_payment(BODY, idempotency_key=KEY)
    assert info.value.code == "adyen_rejected"
    assert info.value.error_code is None


async def test_a_request_still_in_progress_is_asked_again_with_the_same_key() -> None:
    fake = FakeAdyen(service_error(409, errorCode="704", message="request in progress"), ok())
    sleeper = Sleeper()
    answer = await make_client(fake, sleeper=sleeper).create_payment(BODY, idempotency_key=KEY)
    assert answer == {"resultCode": "Pending"}
    assert fake.calls == 2
    assert sleeper.delays == [0.25]
    assert {r.headers["Idempotency-Key"] for r in fake.requests} == {KEY}


async def test_a_conflict_that_outlasts_the_retries_is_a_retryable_409() -> None:
    fake = FakeAdyen(service_error(409, errorCode="704", message="request already processed"))
    with pytest.raises(AdyenError) as info:
        await make_client(fake, max_retries=1).create_payment(BODY, idempotency_key=KEY)
    assert fake.calls == 2
    assert (info.value.code, info.value.status) == ("adyen_conflict", 409)
    assert info.value.retryable
    assert info.value.error_code == "704"


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="not json"),
        httpx.Response(200, json=[1, 2]),
        httpx.Response(200, json="string"),
        httpx.Response(200, content=b"\xff\xfe"),
        httpx.Response(204),
    ],
)
async def test_bad_2xx_body(response: httpx.Response) -> None:
    with pytest.raises(AdyenError) as info:
        await make_client(FakeAdyen(response)).submit_details(BODY, idempotency_key=KEY)
    assert (info.value.code, info.value.status) == ("adyen_bad_response", 502)


@pytest.mark.parametrize("key", ["", "x" * 65, "key with\nnewline", "clé"])
async def test_invalid_idempotency_key(key: str) -> None:
    fake = FakeAdyen(ok())
    with pytest.raises(ValueError, match="idempotency_key"):
        await make_client(fake).create_payment(BODY, idempotency_key=key)
    assert fake.calls == 0


async def test_64_char_key_is_accepted() -> None:
    fake = FakeAdyen(ok())
    await make_client(fake).create_payment(BODY, idempotency_key="k" * 64)
    assert fake.requests[0].headers["Idempotency-Key"] == "k" * 64


async def test_logs_one_line_per_attempt_without_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeAdyen(httpx.Response(500), timeout(), ok())
    with caplog.at_level(logging.INFO, logger="miniprogram_pay.adyen"):
        await make_client(fake).create_payment(BODY, idempotency_key=KEY)
    lines = [r.getMessage() for r in caplog.records if r.name == "miniprogram_pay.adyen"]
    assert len(lines) == 3
    assert "status=500" in lines[0] and "attempt=1" in lines[0] and "/payments" in lines[0]
    assert "ReadTimeout" in lines[1] and "attempt=2" in lines[1]
    assert "status=200" in lines[2] and "elapsed_ms=" in lines[2]
    assert all(API_KEY not in line and "order-1" not in line for line in lines)


@pytest.mark.parametrize(
    "step",
    [
        timeout(),
        connect_error(),
        httpx.Response(500),
        service_error(401),
        service_error(422, errorCode="1", message="bad"),
        service_error(409),
        httpx.Response(200, text="x"),
    ],
)
async def test_errors_never_contain_the_api_key_or_body(step: Step) -> None:
    client = make_client(FakeAdyen(step), max_retries=0)
    with pytest.raises(AdyenError) as info:
        await client.create_payment(BODY, idempotency_key=KEY)
    rendered = " ".join([str(info.value), repr(info.value), json.dumps(info.value.to_dict())])
    assert API_KEY not in rendered
    assert "order-1" not in rendered
    assert API_KEY not in repr(client)


def test_from_settings() -> None:
    settings = Settings(
        adyen_api_key=Secret(API_KEY),
        adyen_merchant_account="TestMerchant",
        adyen_hmac_keys=(
            Secret("44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"),
        ),
        adyen_return_url="https://shop.example/return",
        webhook_username=Secret("adyen"),
        webhook_password=Secret("pw"),
        wechat_app_id="wx1234567890abcdef",
        wechat_app_secret=Secret("app-secret"),
        session_secret=Secret("0123456789abcdef0123456789abcdef"),
        adyen_max_retries=5,
    )
    client = AdyenCheckoutClient.from_settings(settings, httpx.AsyncClient())
    assert client._base_url == "https://checkout-test.adyen.com/v71"
    assert client._max_retries == 5
    assert client._api_key.reveal() == API_KEY


def test_default_backoff_grows_and_is_capped() -> None:
    for attempt in range(1, 12):
        delay = DEFAULT_BACKOFF.delay(attempt)
        nominal = min(8.0, 0.5 * 2 ** (attempt - 1))
        assert nominal / 2 <= delay <= nominal


def test_default_backoff_without_jitter_is_exact() -> None:
    exact = Backoff(DEFAULT_BACKOFF.base_seconds, DEFAULT_BACKOFF.cap_seconds, no_jitter)
    assert [exact.delay(n) for n in (1, 2, 3, 10)] == [0.5, 1.0, 2.0, 8.0]


@pytest.mark.parametrize(("header", "expected"), [("3", [3.0]), ("0", [0.25]), ("soon", [0.25])])
async def test_a_5xx_retry_after_is_honoured_when_longer(
    header: str, expected: list[float]
) -> None:
    fake = FakeAdyen(httpx.Response(503, headers={"Retry-After": header}), ok())
    sleeper = Sleeper()
    await make_client(fake, sleeper=sleeper).create_payment(BODY, idempotency_key=KEY)
    assert sleeper.delays == expected
    assert {r.headers["Idempotency-Key"] for r in fake.requests} == {KEY}


async def test_a_retry_after_too_long_to_wait_is_handed_on() -> None:
    fake = FakeAdyen(httpx.Response(503, headers={"Retry-After": "120"}), ok())
    sleeper = Sleeper()
    with pytest.raises(AdyenUnavailableError) as info:
        await make_client(fake, sleeper=sleeper).create_payment(BODY, idempotency_key=KEY)
    assert fake.calls == 1 and sleeper.delays == []
    assert info.value.retry_after_seconds == 120


async def test_retry_after_as_an_http_date() -> None:
    fake = FakeAdyen(
        httpx.Response(503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}), ok()
    )
    sleeper = Sleeper()
    await make_client(fake, sleeper=sleeper).create_payment(BODY, idempotency_key=KEY)
    assert sleeper.delays == [0.25]  # a date in the past: no extra wait


def test_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError, match="max_retries"):
        AdyenCheckoutClient(
            base_url=BASE, api_key=Secret(API_KEY), http=httpx.AsyncClient(), max_retries=-1
        )
