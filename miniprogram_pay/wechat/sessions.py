"""Shopper session tokens: opaque, authenticated, encrypted and stateless.

After ``jscode2session`` the server knows the shopper's openid; the Mini Program
gets a token instead: a Fernet token (AES-128-CBC plus HMAC-SHA256, from
``cryptography``) whose plaintext is the openid and an expiry. Any worker can
check it without a shared store, and the client never sees the openid. The
``session_key`` is not kept at all.

Several session secrets may be configured at once (``MultiFernet``): the first
encrypts new tokens, every one decrypts, so a secret is rotated without logging
shoppers out.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from miniprogram_pay.config import Secret
from miniprogram_pay.errors import AuthenticationError

__all__ = ["SessionTokens", "ShopperSession"]

MAX_TOKEN_CHARS = 1024
# Names what the derived key is for, so the secret can never key anything else the same way.
KEY_INFO = b"miniprogram-pay/session-token/fernet"
_TOKEN = re.compile(r"[A-Za-z0-9_-]+={0,2}")


@dataclass(frozen=True, slots=True)
class ShopperSession:
    openid: str
    expires_at: int


def _fernet(secret: Secret) -> Fernet:
    """A Fernet key derived from a session secret of any length (HKDF-SHA256)."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=KEY_INFO)
    key = hkdf.derive(secret.reveal().encode("utf-8"))
    return Fernet(base64.urlsafe_b64encode(key))


def _invalid() -> AuthenticationError:
    return AuthenticationError("the session token is not valid", code="invalid_token")


def _canonical(token: str) -> bool:
    # The base64 decoder skips stray characters: accept only the exact spelling we
    # issue, so one token has one spelling.
    if not token or len(token) > MAX_TOKEN_CHARS or not _TOKEN.fullmatch(token):
        return False
    try:
        return base64.urlsafe_b64encode(base64.urlsafe_b64decode(token)).decode() == token
    except (binascii.Error, ValueError):
        return False


class SessionTokens:
    """Issues and verifies shopper tokens under the session secrets (the first issues).

    Example::

        tokens = SessionTokens([Secret("new ..."), Secret("old ...")], ttl_seconds=7200)
        token, expires_in = tokens.issue("o6_bmjrPTlm6_2sgVt7hMZOPfL2M")
        tokens.verify(token).openid
    """

    def __init__(
        self,
        secrets: Secret | Sequence[Secret],
        *,
        ttl_seconds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        keys = [secrets] if isinstance(secrets, Secret) else list(secrets)
        if not keys:
            raise ValueError("SessionTokens needs at least one secret")
        self._fernet = MultiFernet([_fernet(secret) for secret in keys])
        self.ttl_seconds = ttl_seconds
        self._clock = clock

    def issue(self, openid: str) -> tuple[str, int]:
        """A new token for ``openid`` and its lifetime in seconds."""
        now = int(self._clock())
        plain = json.dumps({"o": openid, "e": now + self.ttl_seconds}, separators=(",", ":"))
        token = self._fernet.encrypt_at_time(plain.encode("utf-8"), now)
        return token.decode("ascii"), self.ttl_seconds

    def verify(self, token: str) -> ShopperSession:
        """The session a token stands for; ``AuthenticationError`` when forged or expired."""
        if not _canonical(token):
            raise _invalid()
        try:
            plain = self._fernet.decrypt(token.encode("ascii"))
        except InvalidToken:
            raise _invalid() from None
        data = json.loads(plain)
        if int(data["e"]) < self._clock():
            raise AuthenticationError(
                "the session has expired; log in again", code="session_expired"
            )
        return ShopperSession(openid=str(data["o"]), expires_at=int(data["e"]))
