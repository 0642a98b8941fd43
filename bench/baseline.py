"""The baseline: a bare Starlette app doing only the irreducible work of each endpoint.

``uvicorn --factory bench.baseline:create``. Same database (``BENCH_DB_URL``) and
same sandbox (``BENCH_SANDBOX_URL``) as the plugin it is compared with:

- ``POST /base/webhooks/adyen``: parse the JSON, verify one HMAC, commit one insert
  (SQLAlchemy async Core; on SQLite WAL, the default pool, and the plugin's durability:
  ``synchronous=FULL`` unless ``BENCH_SQLITE_SYNCHRONOUS=normal``).
- ``POST /base/session``, ``/base/payments``, ``/base/payments/details``: one call to
  the sandbox each, answer passed through.
- ``GET /base/payments/{reference}``: one indexed read of ``mpp_payment``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bench.common import ADMIN_KEY, CONFIG, db_url, sandbox_url, sqlite_synchronous

__all__ = ["create"]

HMAC_KEY = CONFIG.hmac_key_bytes()
_FIELDS = ("pspReference", "originalReference", "merchantAccountCode", "merchantReference")
CREATE_TABLE = (
    "CREATE TABLE IF NOT EXISTS bench_webhook ("
    " id {pk}, dedup_key VARCHAR(64) NOT NULL UNIQUE, raw TEXT NOT NULL,"
    " received_at TIMESTAMP NOT NULL)"
)
INSERT = text(
    "INSERT INTO bench_webhook (dedup_key, raw, received_at) VALUES (:k, :r, :t)"
    " ON CONFLICT (dedup_key) DO NOTHING"
)
READ = text(
    "SELECT reference, state, amount_value, currency, psp_reference, updated_at"
    " FROM mpp_payment WHERE reference = :ref"
)


def _signing_string(item: dict[str, Any]) -> str:
    amount = item.get("amount") or {}
    parts = [str(item.get(name) or "") for name in _FIELDS]
    parts += [
        str(amount.get("value", "")),
        str(amount.get("currency", "")),
        str(item.get("eventCode", "")),
        str(item.get("success", "")),
    ]
    return ":".join(parts)


def _engine(url: str) -> AsyncEngine:
    engine = create_async_engine(url)
    if url.startswith("sqlite"):

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # The plugin's own setting: both sides sync a commit alike.
            cursor.execute(f"PRAGMA synchronous={sqlite_synchronous().upper()}")
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.close()

    return engine


class Baseline:
    def __init__(self) -> None:
        self.url = db_url()
        self.engine = _engine(self.url)
        self.http = httpx.AsyncClient(base_url=sandbox_url(), timeout=10.0)

    async def start(self) -> None:
        pk = "INTEGER PRIMARY KEY" if self.url.startswith("sqlite") else "BIGSERIAL PRIMARY KEY"
        try:
            async with self.engine.begin() as conn:
                await conn.execute(text(CREATE_TABLE.format(pk=pk)))
        except IntegrityError:
            # Two workers starting at once: PostgreSQL's IF NOT EXISTS is not atomic, and
            # the loser of the race fails on the catalog's unique index. The table exists.
            pass

    async def stop(self) -> None:
        await self.http.aclose()
        await self.engine.dispose()

    async def webhook(self, request: Request) -> Response:
        document = json.loads(await request.body())
        item = document["notificationItems"][0]["NotificationRequestItem"]
        signing = _signing_string(item).encode()
        expected = base64.b64encode(hmac.new(HMAC_KEY, signing, hashlib.sha256).digest())
        given = item["additionalData"]["hmacSignature"].encode()
        if not hmac.compare_digest(expected, given):
            return PlainTextResponse("bad signature", status_code=401)
        values = {
            "k": hashlib.sha256(signing).hexdigest(),
            "r": json.dumps(item),
            "t": datetime.now(UTC),
        }
        async with self.engine.begin() as conn:
            await conn.execute(INSERT, values)
        return PlainTextResponse("[accepted]")

    async def session(self, request: Request) -> Response:
        body = await request.json()
        params = {
            "appid": CONFIG.wechat_app_id,
            "secret": CONFIG.wechat_app_secret,
            "js_code": body["code"],
            "grant_type": "authorization_code",
        }
        answer = await self.http.get("/wechat/sns/jscode2session", params=params)
        return JSONResponse({"token": json.loads(answer.content)["openid"]})

    async def payments(self, request: Request) -> Response:
        body = await request.json()
        payload = {
            "amount": body["amount"],
            "merchantAccount": CONFIG.merchant_account,
            "reference": body["reference"],
            "returnUrl": "https://merchant.example/return",
            "countryCode": "CN",
            "paymentMethod": {
                "type": "wechatpayMiniProgram",
                "openid": request.headers["authorization"].removeprefix("Bearer "),
                "appId": CONFIG.wechat_app_id,
            },
        }
        return await self._adyen("/adyen/v71/payments", payload)

    async def details(self, request: Request) -> Response:
        body = await request.json()
        payload = {
            "paymentData": body["paymentData"],
            "details": {"paymentStatus": body["details"]["paymentStatus"]},
        }
        return await self._adyen("/adyen/v71/payments/details", payload)

    async def _adyen(self, path: str, payload: dict[str, Any]) -> Response:
        headers = {"X-API-Key": CONFIG.api_key, "Idempotency-Key": str(uuid.uuid4())}
        answer = await self.http.post(path, json=payload, headers=headers)
        return Response(answer.content, answer.status_code, media_type="application/json")

    async def status(self, request: Request) -> Response:
        given = request.headers.get("x-admin-key", "")
        if not hmac.compare_digest(given.encode(), ADMIN_KEY.encode()):
            return JSONResponse({"error": "not found"}, 404)
        async with self.engine.connect() as conn:
            row = (await conn.execute(READ, {"ref": request.path_params["reference"]})).first()
        if row is None:
            return JSONResponse({"error": "not found"}, 404)
        return JSONResponse(
            {
                "reference": row[0],
                "state": row[1],
                "amount": {"value": row[2], "currency": row[3]},
                "pspReference": row[4],
                "updatedAt": str(row[5]),
            }
        )

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})


def create() -> Starlette:
    base = Baseline()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await base.start()
        yield
        await base.stop()

    return Starlette(
        routes=[
            Route("/base/webhooks/adyen", base.webhook, methods=["POST"]),
            Route("/base/session", base.session, methods=["POST"]),
            Route("/base/payments", base.payments, methods=["POST"]),
            Route("/base/payments/details", base.details, methods=["POST"]),
            Route("/base/payments/{reference:str}", base.status, methods=["GET"]),
            Route("/base/health", base.health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
