"""Readiness: may this process take traffic? Apart from liveness (``/health``), which stays cheap.

Ready means the database answers (within ``READY_TIMEOUT_SECONDS``), its schema is
at the revision this release needs (or newer: a rolling deploy), and the
background loops are alive (running, or off when the host runs none). Each
failure is its own error, with a stable code, so a probe's log says which:
``storage_unavailable``, ``schema_outdated``, ``workers_unavailable``. When
several fail, the first is the code and the message lists them all.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from sqlalchemy.exc import DBAPIError

from miniprogram_pay.errors import (
    MiniProgramPayError,
    SchemaOutdatedError,
    StorageError,
    WorkersUnavailableError,
)
from miniprogram_pay.services.workers import LoopState, Workers
from miniprogram_pay.storage.engine import Database
from miniprogram_pay.storage.schema import SchemaStatus, schema_status

__all__ = ["READY_TIMEOUT_SECONDS", "Readiness", "check_readiness"]

# Under a load balancer's probe timeout (often 5 s): a hung database answers "not ready".
READY_TIMEOUT_SECONDS = 3.0
DOWN = (LoopState.STALLED, LoopState.DEAD)


@dataclass(frozen=True, slots=True)
class Readiness:
    """What a ready process found."""

    schema: str
    loops: dict[str, LoopState]


async def check_readiness(
    database: Database, workers: Workers, *, timeout_seconds: float = READY_TIMEOUT_SECONDS
) -> Readiness:
    """The checks' findings; the first failure (naming every failure) when not ready."""
    problems: list[MiniProgramPayError] = []
    status = await _schema(database, timeout_seconds, problems)
    loops = workers.loop_states()
    down = {name: state for name, state in loops.items() if state in DOWN}
    if down:
        listed = ", ".join(f"the {name} loop is {state}" for name, state in down.items())
        problems.append(WorkersUnavailableError(f"background work is not running: {listed}"))
    if problems:
        first = problems[0]
        raise type(first)("; ".join(problem.message for problem in problems))
    schema = (status.found or status.expected) if status is not None else ""
    return Readiness(schema=schema, loops=loops)


async def _schema(
    database: Database, timeout_seconds: float, problems: list[MiniProgramPayError]
) -> SchemaStatus | None:
    try:
        async with asyncio.timeout(timeout_seconds):
            status = await schema_status(database)
    except TimeoutError:
        problems.append(StorageError(f"the database did not answer within {timeout_seconds:g} s"))
        return None
    except (DBAPIError, OSError) as exc:
        problems.append(StorageError(f"the database does not answer ({type(exc).__name__})"))
        return None
    if not status.usable:
        problems.append(SchemaOutdatedError(status.problem()))
    return status
