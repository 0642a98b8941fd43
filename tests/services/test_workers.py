"""The worker loop leaves a webhook request's items to it, and takes them in a drain."""

from __future__ import annotations

from collections.abc import Sequence

from miniprogram_pay.services.workers import Workers
from miniprogram_pay.storage import InboxItem, PaymentRepository


def _item(dedup_key: str) -> InboxItem:
    return InboxItem(
        dedup_key=dedup_key,
        psp_reference="7914073381342284",
        merchant_reference="order-1",
        event_code="AUTHORISATION",
        success=True,
        amount_value=1130,
        amount_currency="CNY",
        reason=None,
        raw_json="{}",
    )


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    async def __call__(self, notification_ids: Sequence[int]) -> None:
        self.calls.append(list(notification_ids))


async def test_the_loop_skips_leased_items_and_takes_due_ones(
    repository: PaymentRepository,
) -> None:
    [leased] = await repository.store_notifications([_item("a" * 64)], lease_seconds=3600)
    [due] = await repository.store_notifications([_item("b" * 64)], lease_seconds=0)
    applied = _Recorder()
    workers = Workers(apply_notifications=applied, repository=repository, on_state_change=None)

    assert await workers.run_once() == 1
    assert applied.calls == [[due.id]]
    assert await workers.run_once(include_leased=True) == 2
    assert applied.calls[-1] == [leased.id, due.id]
