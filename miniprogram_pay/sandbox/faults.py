"""Fault injection for the simulated Adyen endpoints.

A fault answers the next N calls to an endpoint with an error instead of the
real answer. ``processed=True`` means Adyen did the work (created the payment,
stored the idempotent result) before failing, which is what makes retries with
the same ``Idempotency-Key`` interesting.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from typing import Literal, get_args

from starlette.responses import Response

from miniprogram_pay.sandbox.responses import service_error, unauthorized

__all__ = ["Endpoint", "Fault", "FaultKind", "FaultQueue", "FaultTarget", "render_fault"]

FaultKind = Literal["500", "503", "timeout", "401", "422", "garbage"]
Endpoint = Literal["payments", "details", "refunds"]
FaultTarget = Literal["payments", "details", "refunds", "any"]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
FAULT_TARGETS: tuple[str, ...] = get_args(FaultTarget)

# A proxy cut the body short: the header says JSON, the body does not parse.
GARBAGE_BODY = b'{"resultCode":"Pending","action":{"paymentMethodType":"wechatpa'


@dataclass(slots=True)
class Fault:
    """``count`` more calls to ``target`` answer ``kind``."""

    kind: FaultKind
    count: int = 1
    target: FaultTarget = "any"
    processed: bool = True
    delay_seconds: float | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def default_processed(kind: FaultKind) -> bool:
    """5xx, timeouts and garbage happen after the work; 401/422 reject it up front."""
    return kind not in ("401", "422")


class FaultQueue:
    """Faults waiting to fire, consumed in the order they were added."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        if fault.kind not in FAULT_KINDS or fault.target not in FAULT_TARGETS:
            raise ValueError(f"kind must be one of {FAULT_KINDS}, target one of {FAULT_TARGETS}")
        if fault.count < 1:
            raise ValueError("count must be at least 1")
        self._faults.append(fault)

    def take(self, endpoint: Endpoint) -> Fault | None:
        """The fault for this call, if one is due; decrements its count."""
        for fault in self._faults:
            if fault.target in (endpoint, "any"):
                fault.count -= 1
                if fault.count == 0:
                    self._faults.remove(fault)
                return Fault(fault.kind, 1, fault.target, fault.processed, fault.delay_seconds)
        return None

    def pending(self) -> list[Fault]:
        return list(self._faults)

    def clear(self) -> None:
        self._faults.clear()


async def render_fault(fault: Fault, *, real: Response | None, timeout_seconds: float) -> Response:
    """The answer a fault gives instead of (or, for a timeout, long after) the real one."""
    if fault.kind == "timeout":
        # Sleep past the caller's timeout; if it is still listening, give it the real answer.
        await asyncio.sleep(
            fault.delay_seconds if fault.delay_seconds is not None else timeout_seconds
        )
        return real or service_error(504, "000", "Gateway Timeout", "internal")
    if fault.kind == "401":
        return unauthorized()
    if fault.kind == "422":
        return service_error(422, "000", "Sandbox injected validation error", "validation")
    if fault.kind == "garbage":
        return Response(GARBAGE_BODY, status_code=200, media_type="application/json")
    if fault.kind == "503":
        return service_error(503, "000", "Service Unavailable", "internal", psp=False)
    return service_error(500, "000", "Internal error", "internal")
