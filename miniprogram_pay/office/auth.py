"""Who may use the back office: the admin key, typed once, then a session cookie; CSRF-safe posts.

A person signs in with the admin key. The answer sets a cookie holding a Fernet
token (``cryptography``; its key derived from the admin key with HKDF, for this
use only) with an expiry and a random CSRF secret: stateless, so any worker
checks it, and changing the admin key signs everyone out. The cookie is
``HttpOnly``, ``SameSite=Strict`` and limited to the back office's path
(``Secure`` over HTTPS).

Every action is a POST that must carry the session's CSRF secret in its form
(the synchronizer-token pattern) and must not come from another site (the
``Origin`` and ``Sec-Fetch-Site`` headers, where the browser sends them). A
request with the ``X-Admin-Key`` header (a proxy that adds it) is a signed-in
session too; its actions need the header again, which no other site can set.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from starlette.requests import Request

from miniprogram_pay.config import Secret

__all__ = ["COOKIE", "SESSION_SECONDS", "OfficeSession", "OfficeSessions", "same_site"]

COOKIE = "mpp_office"
SESSION_SECONDS = 8 * 3600  # a working day
KEY_INFO = b"miniprogram-pay/back-office-session/fernet"
MAX_COOKIE_CHARS = 1024


@dataclass(frozen=True, slots=True)
class OfficeSession:
    csrf: str
    expires_at: int


class OfficeSessions:
    """Issues and checks back-office sessions for one admin key."""

    def __init__(self, admin_key: Secret) -> None:
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=KEY_INFO)
        key = hkdf.derive(admin_key.reveal().encode("utf-8"))
        self._fernet = Fernet(base64.urlsafe_b64encode(key))
        self._admin_key = admin_key

    def key_matches(self, given: str) -> bool:
        return self._admin_key.matches(given)

    def issue(self) -> tuple[str, OfficeSession]:
        session = OfficeSession(
            csrf=secrets.token_urlsafe(24), expires_at=int(time.time()) + SESSION_SECONDS
        )
        payload = json.dumps({"csrf": session.csrf, "exp": session.expires_at}).encode()
        return self._fernet.encrypt(payload).decode("ascii"), session

    def read(self, cookie: str | None) -> OfficeSession | None:
        """The session a cookie holds, or None (absent, forged, expired, another key's)."""
        if not cookie or len(cookie) > MAX_COOKIE_CHARS:
            return None
        try:
            payload = json.loads(self._fernet.decrypt(cookie.encode("ascii")))
            session = OfficeSession(csrf=str(payload["csrf"]), expires_at=int(payload["exp"]))
        except (InvalidToken, ValueError, KeyError, TypeError, UnicodeEncodeError):
            return None
        return session if session.expires_at > time.time() else None

    @staticmethod
    def csrf_matches(session: OfficeSession, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(session.csrf.encode(), given.encode())


def same_site(request: Request) -> bool:
    """False when the browser says the request comes from another site (a forged form).

    ``Sec-Fetch-Site`` decides where the browser sends it. Else a real ``Origin`` must
    be this host; ``Origin: null`` (sent under ``Referrer-Policy: no-referrer``) and no
    header at all (a script, an old browser) leave it to the CSRF secret and the cookie.
    """
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return True
    return origin.split("://", 1)[-1] == request.headers.get("host", "")
