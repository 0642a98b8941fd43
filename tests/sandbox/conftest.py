from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.sandbox.helpers import Harness, make_harness


@pytest.fixture
async def harness_factory() -> AsyncIterator[Callable[..., Harness]]:
    """Build harnesses with config overrides; all are closed after the test."""
    made: list[Harness] = []

    def build(**config: Any) -> Harness:
        harness = make_harness(**config)
        made.append(harness)
        return harness

    yield build
    for harness in made:
        await harness.aclose()


@pytest.fixture
def harness(harness_factory: Callable[..., Harness]) -> Harness:
    return harness_factory()
