"""HMAC signatures of Adyen standard notification items.

Pure functions: the signing string, the signature, and a verifier that raises a
specific ``SignatureError`` for each way an item can fail. Comparisons run in
constant time; every configured key is tried so a key can be rotated.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any

from miniprogram_pay.errors import SignatureError

__all__ = ["sign_item", "signing_string", "verify_item"]

_SIGNED_FIELDS = (
    "pspReference",
    "originalReference",
    "merchantAccountCode",
    "merchantReference",
)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        # Adyen sends success as the string "true"/"false"; a JSON boolean is
        # rendered the same way so the signature still matches what was sent.
        return "true" if value else "false"
    return str(value)


def signing_string(item: Mapping[str, Any]) -> str:
    """The colon-joined values Adyen signs, in Adyen's order, unescaped."""
    amount = item.get("amount") or {}
    if not isinstance(amount, Mapping):
        amount = {}
    parts = [_text(item.get(name)) for name in _SIGNED_FIELDS]
    parts += [
        _text(amount.get("value")),
        _text(amount.get("currency")),
        _text(item.get("eventCode")),
        _text(item.get("success")),
    ]
    return ":".join(parts)


def sign_item(item: Mapping[str, Any], key: bytes) -> str:
    """base64(HMAC-SHA256(key, signing string)) for one notification item."""
    digest = hmac.new(key, signing_string(item).encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_item(item: Mapping[str, Any], keys: Sequence[bytes]) -> int:
    """Check ``additionalData.hmacSignature`` against every key.

    Returns the index of the key that matched (so operators can see when the old
    key of a rotation stops being used). Raises ``SignatureError`` otherwise.
    """
    additional = item.get("additionalData")
    if not isinstance(additional, Mapping):
        raise SignatureError("notification item has no additionalData.hmacSignature")
    received = additional.get("hmacSignature")
    if not isinstance(received, str) or not received:
        raise SignatureError("notification item has no additionalData.hmacSignature")
    received_bytes = received.encode("ascii", "replace")
    matched = -1
    # Try every key, even after a match, so timing does not reveal which key matched.
    for index, key in enumerate(keys):
        if hmac.compare_digest(sign_item(item, key).encode("ascii"), received_bytes):
            matched = index if matched < 0 else matched
    if matched < 0:
        raise SignatureError("notification item signature does not match any configured HMAC key")
    return matched
