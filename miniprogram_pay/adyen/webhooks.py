"""Parse and authenticate Adyen standard notifications.

Three pure steps, each raising one specific error: ``check_basic_auth``
(``WebhookAuthError``), ``parse_notification_body`` (``InvalidRequestError``
with code ``invalid_notification``) and ``verify_batch`` (``SignatureError``).
Error messages say what is wrong and where, never the value that was sent.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from miniprogram_pay.adyen.hmac import signing_string, verify_item
from miniprogram_pay.config import Secret
from miniprogram_pay.domain.money import MAX_MINOR_UNITS
from miniprogram_pay.errors import InvalidRequestError, SignatureError, WebhookAuthError

__all__ = [
    "MAX_NOTIFICATION_ITEMS",
    "NotificationBatch",
    "NotificationItem",
    "check_basic_auth",
    "parse_notification_body",
    "verify_batch",
]

# Adyen sends one item per request in practice; a cap bounds the work an
# unauthenticated-until-verified body can make us do.
MAX_NOTIFICATION_ITEMS = 100


@dataclass(frozen=True, slots=True)
class NotificationItem:
    """One ``NotificationRequestItem``, typed; ``raw`` keeps it exactly as received."""

    psp_reference: str
    original_reference: str | None
    merchant_account: str
    merchant_reference: str
    amount_value: int | None
    amount_currency: str | None
    event_code: str
    success: bool
    event_date: str | None
    reason: str | None
    payment_method: str | None
    raw: dict[str, Any]
    live: bool = False

    @property
    def dedup_key(self) -> str:
        """sha256 hex of the delivery's ``live`` flag and the HMAC signing string.

        Identical redeliveries share it. ``live`` is not signed, so it is part of the
        key: a copy with the flag flipped is another item, and cannot pass for (and
        so suppress) the genuine one.
        """
        text = f"{'true' if self.live else 'false'}:{signing_string(self.raw)}"
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class NotificationBatch:
    """A whole delivery: the ``live`` flag and its items (at least one)."""

    live: bool
    items: tuple[NotificationItem, ...]


class _Malformed(Exception):
    """Internal: names what is wrong, translated once at the boundary."""


def _invalid(problem: str) -> InvalidRequestError:
    return InvalidRequestError(f"notification is malformed: {problem}", code="invalid_notification")


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; refusing them keeps ``raw`` JSON-safe.
    raise _Malformed("the body contains a non-JSON number")


def _decode_json(body: bytes) -> object:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _Malformed("the body is not UTF-8") from None
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        # ValueError also covers integers beyond Python's digit limit.
        raise _Malformed("the body is not valid JSON") from None
    try:
        # A "\ud800" escape decodes to a lone surrogate: no HMAC or UTF-8 column takes it.
        json.dumps(document, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise _Malformed("the body contains an unpaired surrogate escape") from None
    return document


def _flag(value: object, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise _Malformed(f"{where} must be 'true' or 'false'")


# Longest values we store; Adyen's real ones are far shorter (a pspReference has 16).
# A longer one cannot be genuine and would overflow the column on PostgreSQL.
_MAX_CHARS = {
    "pspReference": 64,
    "originalReference": 64,
    "merchantReference": 255,
    "eventCode": 64,
    "currency": 8,
}


def _bounded(value: str, name: str, where: str) -> str:
    limit = _MAX_CHARS.get(name)
    if limit is not None and len(value) > limit:
        raise _Malformed(f"{where}.{name} is longer than {limit} characters")
    if _has_nul(value):
        raise _Malformed(f"{where}.{name} contains a NUL character")
    return value


def _has_nul(value: str) -> bool:
    # No genuine value has one, and PostgreSQL refuses it in a text column.
    return "\x00" in value


def _required_str(item: Mapping[str, Any], name: str, where: str) -> str:
    value = item.get(name)
    if not isinstance(value, str) or not value:
        raise _Malformed(f"{where}.{name} must be a non-empty string")
    return _bounded(value, name, where)


def _optional_str(item: Mapping[str, Any], name: str, where: str) -> str | None:
    value = item.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        return _bounded(value, name, where)
    raise _Malformed(f"{where}.{name} must be a string")


def _amount(item: Mapping[str, Any], where: str) -> tuple[int | None, str | None]:
    amount = item.get("amount")
    if amount is None:
        return None, None
    if not isinstance(amount, dict):
        raise _Malformed(f"{where}.amount must be an object")
    value = amount.get("value")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise _Malformed(f"{where}.amount.value must be an integer")
    if value is not None and not -MAX_MINOR_UNITS <= value <= MAX_MINOR_UNITS:
        # The column is int64: a larger value would crash the insert, not be refused.
        raise _Malformed(f"{where}.amount.value is out of range")
    return value, _optional_str(amount, "currency", f"{where}.amount")


def _item(entry: object, index: int, live: bool) -> NotificationItem:
    where = f"notificationItems[{index}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("NotificationRequestItem"), dict):
        raise _Malformed(f"{where} must be an object holding a NotificationRequestItem object")
    raw: dict[str, Any] = entry["NotificationRequestItem"]
    where += ".NotificationRequestItem"
    if raw.get("additionalData") is not None and not isinstance(raw["additionalData"], dict):
        raise _Malformed(f"{where}.additionalData must be an object")
    value, currency = _amount(raw, where)
    return NotificationItem(
        psp_reference=_required_str(raw, "pspReference", where),
        original_reference=_optional_str(raw, "originalReference", where),
        merchant_account=_required_str(raw, "merchantAccountCode", where),
        merchant_reference=_optional_str(raw, "merchantReference", where) or "",
        amount_value=value,
        amount_currency=currency,
        event_code=_required_str(raw, "eventCode", where),
        success=_flag(raw.get("success"), f"{where}.success"),
        event_date=_optional_str(raw, "eventDate", where),
        reason=_optional_str(raw, "reason", where),
        payment_method=_optional_str(raw, "paymentMethod", where),
        raw=raw,
        live=live,
    )


def _batch(document: object) -> NotificationBatch:
    if not isinstance(document, dict):
        raise _Malformed("the body must be a JSON object")
    entries = document.get("notificationItems")
    if not isinstance(entries, list) or not entries:
        raise _Malformed("notificationItems must be a non-empty list")
    if len(entries) > MAX_NOTIFICATION_ITEMS:
        raise _Malformed(f"more than {MAX_NOTIFICATION_ITEMS} notificationItems")
    live = _flag(document.get("live"), "live")
    return NotificationBatch(
        live=live, items=tuple(_item(entry, index, live) for index, entry in enumerate(entries))
    )


def parse_notification_body(body: bytes) -> NotificationBatch:
    """Parse a standard-notification request body; authenticate it separately.

    Example::

        check_basic_auth(request.headers.get("authorization"), username=u, password=p)
        batch = parse_notification_body(await request.body())
        verify_batch(batch, settings.hmac_key_bytes())
    """
    try:
        return _batch(_decode_json(body))
    except _Malformed as exc:
        raise _invalid(str(exc)) from exc


def _credentials(authorization: str | None) -> tuple[str, str] | None:
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):  # bad base64, non-ASCII token, or not UTF-8
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None


def check_basic_auth(authorization: str | None, *, username: Secret, password: Secret) -> None:
    """Check an ``Authorization: Basic ...`` header against the configured credentials.

    Raises ``WebhookAuthError`` on a missing, malformed or wrong header.
    """
    credentials = _credentials(authorization)
    if credentials is None:
        raise WebhookAuthError("webhook request has no valid Basic credentials")
    # Compare both parts before deciding, so timing does not reveal which one was wrong.
    user_ok = username.matches(credentials[0])
    password_ok = password.matches(credentials[1])
    if not (user_ok & password_ok):
        raise WebhookAuthError("webhook Basic credentials do not match")


def verify_batch(batch: NotificationBatch, keys: Sequence[bytes]) -> None:
    """Verify the HMAC signature of every item with any of ``keys`` (for rotation).

    Raises ``SignatureError`` naming the first failing item's index.
    """
    if not keys:
        raise SignatureError("no HMAC key is configured; notifications cannot be verified")
    if not batch.items:
        raise SignatureError("notification batch has no items to verify")
    for index, item in enumerate(batch.items):
        try:
            verify_item(item.raw, keys)
        except SignatureError as exc:
            raise SignatureError(f"notification item {index}: {exc.message}") from exc
