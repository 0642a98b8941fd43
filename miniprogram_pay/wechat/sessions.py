"""Shopper session tokens: opaque, signed, and stateless.

After ``jscode2session`` the server knows the shopper's openid; the Mini Program
gets a token instead. The token carries the openid encrypted (HMAC-SHA256 in
counter mode as the keystream) and authenticated (HMAC-SHA256 over the whole
token, encrypt-then-MAC), so any worker can check it without a shared store and
the client never sees the openid. The ``session_key`` is not kept at all.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from miniprogram_pay.config import Secret
from miniprogram_pay.errors import AuthenticationError

__all__ = ["SessionTokens", "ShopperSession"]

TOKEN_VERSION = b"\x01"
NONCE_BYTES = 16
MAC_BYTES = 32
MAX_TOKEN_CHARS = 1024


@dataclass(frozen=True, slots=True)
class ShopperSession:
    openid: str
    expires_at: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionTokens:
    """Issues and verifies shopper tokens with keys derived from ``session_secret``."""

    def __init__(
        self, secret: Secret, *, ttl_seconds: int, clock: Callable[[], float] = time.time
    ) -> None:
        master = secret.reveal().encode("utf-8")
        self._enc_key = hmac.new(master, b"miniprogram-pay/session/enc", hashlib.sha256).digest()
        self._mac_key = hmac.new(master, b"miniprogram-pay/session/mac", hashlib.sha256).digest()
        self.ttl_seconds = ttl_seconds
        self._clock = clock

    def issue(self, openid: str) -> tuple[str, int]:
        """A new token for ``openid`` and its lifetime in seconds."""
        expires_at = int(self._clock()) + self.ttl_seconds
        plain = json.dumps({"o": openid, "e": expires_at}, separators=(",", ":")).encode()
        nonce = secrets.token_bytes(NONCE_BYTES)
        body = TOKEN_VERSION + nonce + _xor(plain, self._keystream(nonce, len(plain)))
        mac = hmac.new(self._mac_key, body, hashlib.sha256).digest()
        return _b64(body + mac), self.ttl_seconds

    def verify(self, token: str) -> ShopperSession:
        """The session a token stands for; ``AuthenticationError`` when forged or expired."""
        raw = self._decode(token)
        body, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
        expected = hmac.new(self._mac_key, body, hashlib.sha256).digest()
        if not hmac.compare_digest(mac, expected) or body[:1] != TOKEN_VERSION:
            raise AuthenticationError("the session token is not valid", code="invalid_token")
        nonce, cipher = body[1 : 1 + NONCE_BYTES], body[1 + NONCE_BYTES :]
        data = json.loads(_xor(cipher, self._keystream(nonce, len(cipher))))
        if int(data["e"]) < self._clock():
            raise AuthenticationError(
                "the session has expired; log in again", code="session_expired"
            )
        return ShopperSession(openid=str(data["o"]), expires_at=int(data["e"]))

    def _decode(self, token: str) -> bytes:
        invalid = AuthenticationError("the session token is not valid", code="invalid_token")
        if not token or len(token) > MAX_TOKEN_CHARS or not token.isascii():
            raise invalid
        try:
            raw = _unb64(token)
        except (ValueError, TypeError):
            raise invalid from None
        # The decoder skips stray characters and extra padding: accept only the exact
        # form we issued, so one token has one spelling.
        if _b64(raw) != token or len(raw) < 1 + NONCE_BYTES + MAC_BYTES + 2:
            raise invalid
        return raw

    def _keystream(self, nonce: bytes, length: int) -> bytes:
        blocks = []
        for counter in range((length + 31) // 32):
            block = nonce + counter.to_bytes(4, "big")
            blocks.append(hmac.new(self._enc_key, block, hashlib.sha256).digest())
        return b"".join(blocks)[:length]


def _xor(data: bytes, stream: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(data, stream, strict=True))
