"""Programmable stand-ins for a remote API, shared by the client tests."""

from __future__ import annotations

import httpx

Step = httpx.Response | Exception


class ScriptedServer:
    """An ``httpx.MockTransport`` handler: answers the queued steps in order, then repeats the last.

    A step that is an exception is raised instead (a timeout, a refused connection).
    """

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if isinstance(step, Exception):
            raise step
        return step

    @property
    def calls(self) -> int:
        return len(self.requests)


class Sleeper:
    """An ``asyncio.sleep`` that records the delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
