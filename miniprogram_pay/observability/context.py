"""The request id: which request a log line, a service call or a state change belongs to.

The plugin gives every HTTP request an id (the caller's ``X-Request-ID`` when it
is a sensible token, else a new one), answers it in ``X-Request-ID`` and binds it
to a context variable for the request's whole life: its services, its background
task (applying a webhook after ``[accepted]``) and every log line they write.

A state change is delivered to the host's ``on_state_change`` later, by a
background loop, outside any request. ``ChangeOrigins`` remembers which request
caused each change, so the hook runs with that request's id bound (and gets it as
``StateChange.request_id``). It is memory, not storage: a change delivered by
another process, or after a restart, carries none.

Example (a host's hook)::

    async def on_state_change(change: StateChange) -> None:
        log.info("payment %s is %s (request %s)", change.reference, change.state,
                 change.request_id)
"""

from __future__ import annotations

import contextlib
import random
import re
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from contextvars import ContextVar

__all__ = [
    "REQUEST_ID_HEADER",
    "ChangeOrigins",
    "bound_request_id",
    "current_request_id",
    "request_id_from",
]

REQUEST_ID_HEADER = "X-Request-ID"
# What a caller's id may look like to be kept: a token, never prose (it lands in log lines).
_GIVEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
MAX_REMEMBERED_CHANGES = 10_000

_request_id: ContextVar[str | None] = ContextVar("miniprogram_pay_request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request this code runs for, or None (a background loop)."""
    return _request_id.get()


def request_id_from(given: str | None) -> str:
    """The caller's id when it is a token of at most 128 characters, else a new one."""
    if given is not None and _GIVEN.fullmatch(given):
        return given
    # Not uuid4(): os.urandom releases the interpreter lock for its system call, and the
    # event loop then waits for a database thread to hand it back. An id correlates; it
    # guards nothing, so the interpreter's own generator (reseeded in a forked child) does.
    return uuid.UUID(int=random.getrandbits(128), version=4).hex


@contextlib.contextmanager
def bound_request_id(request_id: str | None) -> Iterator[None]:
    """Run the block as part of ``request_id`` (None: of no request)."""
    token = _request_id.set(request_id)
    try:
        yield
    finally:
        _request_id.reset(token)


class ChangeOrigins:
    """Which request caused each state change, by (reference, state); the newest are kept.

    A payment enters a state at most once, so (reference, state) names one change.
    """

    def __init__(self, capacity: int = MAX_REMEMBERED_CHANGES) -> None:
        self.capacity = capacity
        self._origins: OrderedDict[tuple[str, str], str] = OrderedDict()

    def note(self, reference: str, state: str) -> None:
        """Remember the current request as the cause of ``reference`` entering ``state``."""
        request_id = current_request_id()
        if request_id is None:
            return
        self._origins[(reference, state)] = request_id
        self._origins.move_to_end((reference, state))
        while len(self._origins) > self.capacity:
            self._origins.popitem(last=False)

    def of(self, reference: str, state: str) -> str | None:
        return self._origins.get((reference, state))

    def forget(self, reference: str, state: str) -> None:
        self._origins.pop((reference, state), None)
