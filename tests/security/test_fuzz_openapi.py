"""Schemathesis over the app's own OpenAPI document, in process and derandomised.

Every operation of ``GET /pay/openapi.json`` gets positive cases (valid by the
schema) and negative cases (violating it: wrong types, missing and extra fields,
bad headers, garbage bodies), each sent with either the generated credentials or
real ones (a shopper token, the admin key, webhook Basic auth) so the fuzzer gets
past the front door. Whatever comes back: never a 500, errors are
``{"error": {"code", "message"}}`` JSON, and a refused request (4xx) changes
nothing in the database.
"""

from __future__ import annotations

import itertools
import json
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from miniprogram_pay.http.openapi import openapi_document
from tests.security.helpers import SecurityWorld, assert_error_shape, count_case
from tests.world import ADMIN_KEY, MERCHANT_BASE, basic_auth

BOTH_BACKENDS = True
MAX_EXAMPLES = 50
UPSTREAM_CODES = {"adyen_rejected", "adyen_unavailable", "adyen_timeout", "wechat_invalid_code"}
SCHEMA = schemathesis.openapi.from_dict(openapi_document("/pay"))
OPERATIONS = {
    result.ok().label: result.ok()  # type: ignore[union-attr]
    for result in SCHEMA.get_all_operations()
}
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
# These take nothing at all, so there is nothing to make invalid.
TAKES_NOTHING = {"GET /health", "GET /ready", "GET /openapi.json"}
CASES = [
    pytest.param(label, mode, id=f"{label}-{mode.value}")
    for label in sorted(OPERATIONS)
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if not (label in TAKES_NOTHING and mode is GenerationMode.NEGATIVE)
]
# Which credentials each example is sent with, in turn: mostly the ones the
# operation wants (to get past the front door), sometimes the generated ones or
# another role's (to knock on the wrong door).
CREDENTIALS = {
    "POST /session": ("generated",),
    "POST /webhooks/adyen": ("webhook", "webhook", "generated", "admin"),
    "GET /admin/stale": ("admin", "admin", "generated", "shopper"),
    "GET /admin/payments": ("admin", "admin", "generated", "shopper"),
    "GET /admin/payments/{reference}": ("admin", "admin", "generated", "shopper"),
    "GET /admin/notifications": ("admin", "admin", "generated", "shopper"),
    "POST /admin/notifications/requeue": ("admin", "admin", "generated", "shopper"),
    "GET /admin/outbox": ("admin", "admin", "generated", "shopper"),
    "POST /admin/outbox/requeue": ("admin", "admin", "generated", "shopper"),
    "GET /health": ("admin", "generated"),
    "GET /ready": ("generated",),
    "GET /metrics": ("admin", "admin", "generated", "shopper"),
    "GET /openapi.json": ("generated",),
}
SHOPPER_CREDENTIALS = ("shopper", "shopper", "generated", "admin", "webhook")


async def test_the_served_document_is_the_one_fuzzed(world: SecurityWorld) -> None:
    served = (await world.client.get("/pay/openapi.json")).json()
    assert served == openapi_document("/pay")
    assert set(OPERATIONS) == {
        f"{method.upper()} {path}" for path, item in served["paths"].items() for method in item
    }


TURNS = {label: itertools.count() for label in OPERATIONS}


def _request_kwargs(case: Any) -> dict[str, Any]:
    """Schemathesis' requests-style kwargs as httpx kwargs (bodies sent as raw bytes)."""
    kwargs = case.as_transport_kwargs(base_url=f"{MERCHANT_BASE}/pay")
    out: dict[str, Any] = {
        "method": kwargs["method"],
        "url": kwargs["url"],
        "headers": kwargs.get("headers") or {},
        "params": kwargs.get("params") or {},
    }
    if "json" in kwargs:
        out["content"] = json.dumps(kwargs["json"]).encode()
    elif isinstance(kwargs.get("data"), bytes | str):
        data = kwargs["data"]
        out["content"] = data.encode() if isinstance(data, str) else data
    elif kwargs.get("data") is not None:
        out["content"] = json.dumps(kwargs["data"]).encode()
    return out


async def _credentials(world: SecurityWorld, which: str) -> dict[str, str]:
    if which == "shopper":
        return await world.login("fuzzer")
    if which == "admin":
        return {"X-Admin-Key": ADMIN_KEY}
    if which == "webhook":
        auth = basic_auth(world.config.webhook_username, world.config.webhook_password)
        return {"Authorization": auth["Authorization"]}
    return {}


def _check(response: httpx.Response, before: Any, after: Any) -> None:
    assert response.status_code != 500, response.text
    if response.status_code < 400:
        return
    if response.status_code == 404 and "\n" in unquote(response.request.url.path):
        # The host's Mount("/pay") pattern (``.*``) stops at a newline, so the host's own
        # router answers; the plugin never saw the request.
        assert after == before
        return
    error = assert_error_shape(response)
    if response.status_code < 500:
        assert after == before, f"a refused request ({error['code']}) changed stored state"
    else:
        assert response.status_code in (502, 503, 504), response.text
        assert error["code"] in UPSTREAM_CODES, error


@pytest.mark.parametrize(("label", "mode"), CASES)
@FUZZ_SETTINGS
@given(data=st.data())
async def test_schemathesis(
    world: SecurityWorld, label: str, mode: GenerationMode, data: st.DataObject
) -> None:
    case = data.draw(OPERATIONS[label].as_strategy(mode), label="case")
    turns = CREDENTIALS.get(label, SHOPPER_CREDENTIALS)
    which = turns[next(TURNS[label]) % len(turns)]
    kwargs = _request_kwargs(case)
    kwargs["headers"].update(await _credentials(world, which))
    try:
        request = world.client.build_request(**kwargs)
    except (httpx.HTTPError, UnicodeEncodeError, ValueError, TypeError):
        assume(False)  # httpx cannot even send it: not a case for the server
    before = await world.snapshot()
    response = await world.client.send(request)
    note(f"{request.method} {request.url} -> {response.status_code} {response.text[:200]}")
    count_case(f"schemathesis {label} [{mode.value}]", response.status_code)
    _check(response, before, await world.snapshot())
