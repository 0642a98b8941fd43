"""Scraping the plugin's metrics the way Prometheus does, and reading single figures."""

from __future__ import annotations

from collections.abc import Mapping

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.world import ADMIN_KEY

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a text exposition, by (name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(client: httpx.AsyncClient, path: str = "/pay/metrics") -> Samples:
    answer = await client.get(path, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=")
    return parse(answer.text)


def value(samples: Samples, name: str, labels: Mapping[str, str] | None = None) -> float:
    """One sample; a missing series fails loudly (0 is a value, absence is not)."""
    key = (f"miniprogram_pay_{name}", frozenset((labels or {}).items()))
    assert key in samples, f"no sample {key[0]}{dict(labels or {})}"
    return samples[key]


def moved(
    before: Samples, after: Samples, name: str, labels: Mapping[str, str] | None = None
) -> float:
    """How much one series grew between two scrapes."""
    return value(after, name, labels) - value(before, name, labels)
