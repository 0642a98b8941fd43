"""The merchant app the multi-worker tests serve with uvicorn (``--factory``).

``create_app`` mounts the plugin at ``/pay`` in a host app, with settings from
the ``MINIPROGRAM_PAY_*`` variables. Test-only knobs, read here and nowhere in
the package:

``MPP_TEST_DELIVERIES_DIR``  on_state_change appends one JSON line per call to
                             ``<dir>/<pid>.jsonl`` (written before it returns).
``MPP_TEST_HOOK_BLOCKS=<state>``  on_state_change records the call, then never
                             returns for a change to ``<state>`` (``1``: every change):
                             the process dies between commit and delivery.
``MPP_TEST_NO_APPLY=1``      storing and applying a webhook at once fails (so it is
                             stored alone), and no worker loop and no apply after the
                             answer: the process dies between storing and applying it.
``MPP_TEST_LEASE_SECONDS``   the outbox lease this process takes (shorter than the
                             hook's timeout: a killed process's rows come back soon).
``MPP_TEST_APPLY_LEASE_SECONDS``  how long a stored webhook item is left to the
                             request that stored it.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from starlette.applications import Starlette
from starlette.routing import Mount

from miniprogram_pay import MiniProgramPay, Settings, StateChange, StateChangeHook


class _TestPay(MiniProgramPay):
    """The plugin with the test knobs above; behaviour is otherwise untouched."""

    no_apply = False
    lease_seconds: float | None = None
    apply_lease_seconds: float | None = None

    async def apply_stored(self, notification_ids: Sequence[int]) -> None:
        if self.no_apply:
            return  # as if the process died right after answering [accepted]
        await super().apply_stored(notification_ids)

    def _build_services(self) -> None:
        super()._build_services()
        if self.no_apply:
            self.storage.inbox.take = _cannot_take  # type: ignore[method-assign]
        if self.apply_lease_seconds is not None:
            self.service.apply_lease_seconds = self.apply_lease_seconds
        if self.lease_seconds is not None:
            self.workers.deliveries.lease_seconds = self.lease_seconds


async def _cannot_take(items: object, **_: object) -> NoReturn:
    raise RuntimeError("as if applying had failed: the items are stored alone")


def _recorder(folder: Path, *, block: str | None) -> StateChangeHook:
    path = folder / f"{os.getpid()}.jsonl"

    async def on_state_change(change: StateChange) -> None:
        line = {
            "event_id": change.event_id,
            "reference": change.reference,
            "previous": change.previous.value if change.previous else None,
            "state": change.state.value,
            "attempt": change.attempt,
            "pid": os.getpid(),
        }
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(line) + "\n").encode())
        finally:
            os.close(fd)
        if block in ("1", change.state.value):
            await asyncio.Event().wait()

    return on_state_change


def create_app() -> Starlette:
    env = os.environ
    no_apply = env.get("MPP_TEST_NO_APPLY") == "1"
    folder = Path(env["MPP_TEST_DELIVERIES_DIR"])
    pay = _TestPay(
        Settings.from_env(inbox_max_attempts=3),
        on_state_change=_recorder(folder, block=env.get("MPP_TEST_HOOK_BLOCKS")),
        run_workers=not no_apply,
    )
    pay.no_apply = no_apply
    if env.get("MPP_TEST_LEASE_SECONDS"):
        pay.lease_seconds = float(env["MPP_TEST_LEASE_SECONDS"])
    if env.get("MPP_TEST_APPLY_LEASE_SECONDS"):
        pay.apply_lease_seconds = float(env["MPP_TEST_APPLY_LEASE_SECONDS"])
    return Starlette(routes=[Mount("/pay", app=pay)], lifespan=pay.lifespan)
