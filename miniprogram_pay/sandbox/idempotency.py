"""Adyen's ``Idempotency-Key``: the same key and body get the first answer again.

Choices where Adyen's behaviour is unconfirmed (see docs/sandbox.md):
the same key with a different body answers 422; a key whose first request is
still being processed answers 409 ("704", like Adyen's in-progress answer).
Bodies are compared as parsed JSON, so whitespace and key order do not matter.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import Enum
from typing import Any

from starlette.responses import Response

__all__ = ["IdempotencyStore", "Lookup", "fingerprint"]

MAX_KEY_LENGTH = 64


class Lookup(Enum):
    NEW = "new"
    REPLAY = "replay"
    MISMATCH = "mismatch"
    IN_PROGRESS = "in_progress"


@dataclass(slots=True)
class _Entry:
    fingerprint: str
    status_code: int | None = None
    body: bytes = b""
    media_type: str = "application/json"

    def replay(self) -> Response:
        return Response(self.body, status_code=self.status_code or 200, media_type=self.media_type)


def fingerprint(body: Any) -> str:
    """A digest of the parsed body, independent of formatting."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class IdempotencyStore:
    """Answers per (endpoint, key); kept for the sandbox's lifetime (Adyen: 31+ days)."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], _Entry] = {}

    def begin(self, endpoint: str, key: str, digest: str) -> tuple[Lookup, Response | None]:
        """Claim the key for a new request, or say why not (with the replay, if any)."""
        entry = self._entries.get((endpoint, key))
        if entry is None:
            self._entries[(endpoint, key)] = _Entry(digest)
            return Lookup.NEW, None
        if entry.fingerprint != digest:
            return Lookup.MISMATCH, None
        if entry.status_code is None:
            return Lookup.IN_PROGRESS, None
        return Lookup.REPLAY, entry.replay()

    def finish(self, endpoint: str, key: str, response: Response) -> None:
        """Store the real answer; later requests with the key get these exact bytes."""
        entry = self._entries[(endpoint, key)]
        entry.status_code = response.status_code
        entry.body = bytes(response.body)
        entry.media_type = response.media_type or "application/json"

    def abandon(self, endpoint: str, key: str) -> None:
        """Forget a claim whose request never produced an answer (so a retry can run)."""
        entry = self._entries.get((endpoint, key))
        if entry is not None and entry.status_code is None:
            del self._entries[(endpoint, key)]

    def clear(self) -> None:
        self._entries.clear()
