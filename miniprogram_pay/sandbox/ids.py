"""Identifiers shaped like Adyen's and WeChat's, from a CSPRNG."""

from __future__ import annotations

import base64
import secrets
import string
import uuid
from datetime import UTC, datetime

__all__ = [
    "new_nonce_str",
    "new_payment_data",
    "new_prepay_id",
    "new_psp_reference",
    "new_rid",
    "new_session_key",
]

_NONCE_ALPHABET = string.ascii_uppercase + string.digits


def new_psp_reference() -> str:
    """16 digits, never starting with 0 (Adyen's classic numeric pspReference)."""
    return str(10**15 + secrets.randbelow(9 * 10**15))


def new_payment_data() -> str:
    """An opaque blob in Adyen's style (``Ab02b4c0!`` + base64)."""
    return "Ab02b4c0!" + base64.b64encode(secrets.token_bytes(48)).decode("ascii")


def new_prepay_id() -> str:
    """``wx`` + yyyymmddHHMMSS + 20 hex characters, like WeChat's prepay ids."""
    return "wx" + datetime.now(UTC).strftime("%Y%m%d%H%M%S") + secrets.token_hex(10)


def new_nonce_str() -> str:
    """32 random upper-case letters and digits (WeChat's maximum length)."""
    return "".join(secrets.choice(_NONCE_ALPHABET) for _ in range(32))


def new_session_key() -> str:
    """A base64 16-byte key, like WeChat's session_key."""
    return base64.b64encode(secrets.token_bytes(16)).decode("ascii")


def new_rid() -> str:
    """WeChat appends a request id to errmsg (``..., rid: <id>``)."""
    return uuid.uuid4().hex[:24]
