"""Orders through the storage: the attempt rule under the order's lock, and the order's
state and duplicate authorisations as functions of the set of events its attempts got."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import tempfile
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import col, select

from miniprogram_pay.domain.events import PaymentEvent, implied_state
from miniprogram_pay.domain.money import Amount
from miniprogram_pay.domain.orders import AttemptView, OrderView, Step, attempt_reference
from miniprogram_pay.domain.states import PaymentState
from miniprogram_pay.storage import Database, Storage
from miniprogram_pay.storage.refunds import RefundAsk
from miniprogram_pay.storage.schema import upgrade
from miniprogram_pay.storage.tables import OutboxRow
from tests.rows import select_rows
from tests.storage.helpers import AMOUNT, details, webhook

ORDER = "order-7"
# Every attempt but the first is started at once (a zero lifetime ends any open one).
NOW = timedelta(0)
HOUR = timedelta(hours=1)


async def _pay(storage: Storage, key: str, lifetime: timedelta = NOW, openid: str = "o-1") -> Step:
    found = await storage.orders.pay(
        reference=ORDER, openid=openid, amount=AMOUNT, idempotency_key=key, lifetime=lifetime
    )
    assert found.matches
    return found.step


async def _attempts(storage: Storage, count: int) -> list[str]:
    for n in range(count):
        assert await _pay(storage, f"k{n}") is Step.START
    return [ORDER if n == 1 else attempt_reference(ORDER, n) for n in range(1, count + 1)]


async def _duplicates_told(storage: Storage) -> list[tuple[str, int | None, str | None]]:
    rows = await select_rows(storage.database, select(OutboxRow).order_by(col(OutboxRow.id)))
    return sorted(
        (row.reference, row.attempt_number, row.order_state)
        for row in rows
        if row.conflict == "duplicate_authorisation"
    )


async def test_the_rule_starts_reuses_and_stops(storage: Storage) -> None:
    assert await _pay(storage, "k1", HOUR) is Step.START
    assert await _pay(storage, "k2", HOUR) is Step.REUSE
    await storage.payments.apply(ORDER, details("Refused"))
    assert await _pay(storage, "k3", HOUR) is Step.START
    second = attempt_reference(ORDER, 2)
    await storage.payments.apply(second, details("Authorised", psp_reference="PSP-2"))
    assert await _pay(storage, "k4", HOUR) is Step.PAID
    found = await storage.orders.pay(
        reference=ORDER, openid="o-2", amount=AMOUNT, idempotency_key="k5", lifetime=HOUR
    )
    assert not found.matches  # another shopper's order: nothing is handed out
    status = await storage.orders.status(ORDER)
    assert status is not None
    assert [(a.payment.attempt, a.payment.idempotency_key) for a in status.attempts] == [
        (1, "k1"),
        (2, "k3"),
    ]


async def test_concurrent_requests_start_one_attempt(storage: Storage) -> None:
    await _pay(storage, "k0", HOUR)
    await storage.payments.apply(ORDER, details("Refused"))
    steps = await asyncio.gather(*(_pay(storage, f"k{n}", HOUR) for n in range(1, 9)))
    assert sorted(steps) == sorted([Step.START] + [Step.REUSE] * 7)
    status = await storage.orders.status(ORDER)
    assert status is not None
    assert [a.payment.state for a in status.attempts] == [
        PaymentState.REFUSED,
        PaymentState.CREATED,
    ]


async def test_the_status_read_finds_the_order_by_its_reference_or_an_attempts(
    storage: Storage,
) -> None:
    """Each statement of the read finds the order on its own (on PostgreSQL they go out
    together); the answer is the same whichever reference names it."""
    references = await _attempts(storage, 2)
    await storage.payments.apply(references[0], details("Refused"))
    await storage.payments.apply(references[1], details("Authorised"))
    await storage.refunds.begin(
        references[1], RefundAsk(300, None, None, None), window=timedelta(days=1), limit=50
    )
    by_order = await storage.orders.status(ORDER)
    by_attempt = await storage.orders.status(references[1])
    assert by_order is not None and by_order == by_attempt
    assert [a.payment.reference for a in by_order.attempts] == references
    assert [[h.to_state for h in a.history] for a in by_order.attempts] == [
        [PaymentState.CREATED, PaymentState.REFUSED],
        [PaymentState.CREATED, PaymentState.AUTHORISED],
    ]
    assert [[r.amount for r in a.refunds] for a in by_order.attempts] == [[], [Amount(300, "CNY")]]
    assert by_order.attempts[1].refunds[0].payment_reference == references[1]
    assert await storage.orders.status("order-nobody") is None


async def test_an_orders_own_reference_wins_over_another_orders_attempt(
    storage: Storage,
) -> None:
    await _attempts(storage, 2)  # order-7's attempt 2 is named order-7-2
    other = attempt_reference(ORDER, 2)
    found = await storage.orders.pay(
        reference=other, openid="o-1", amount=AMOUNT, idempotency_key="other", lifetime=HOUR
    )
    assert found.step is Step.START
    status = await storage.orders.status(other)
    assert status is not None and status.order.reference == other
    # Its first attempt stepped over the taken reference; order-7 is not in the answer.
    assert [a.payment.reference for a in status.attempts] == [attempt_reference(other, 2)]


# -- the late double authorisation, in every order of its events ----------------------------


def _paid(attempt: int) -> list[PaymentEvent]:
    psp = f"PSP-{attempt}"
    return [
        details("Authorised", psp_reference=psp),
        _webhook(f"auth-{attempt}", psp, True),
    ]


def _webhook(key: str, psp: str, success: bool) -> PaymentEvent:
    return replace(webhook(key, success=success), psp_reference=psp)


LATE = [
    (1, details("Pending", psp_reference="PSP-1")),
    *((2, e) for e in _paid(2)),
    (1, _webhook("auth-1", "PSP-1", True)),
]


@pytest.mark.parametrize("order", list(itertools.permutations(range(len(LATE)))))
async def test_two_attempts_both_authorised_keep_one_and_report_the_other_once(
    storage: Storage, order: tuple[int, ...]
) -> None:
    references = await _attempts(storage, 2)
    for i in order:
        attempt, event = LATE[i]
        await storage.payments.apply(references[attempt - 1], event)
        await storage.payments.apply(references[attempt - 1], event)  # a redelivery
    status = await storage.orders.status(ORDER)
    assert status is not None
    view = status.view
    assert view.state is PaymentState.AUTHORISED
    assert view.kept is not None and view.kept.number == 1
    assert [a.number for a in view.duplicates] == [2]
    assert await _duplicates_told(storage) == [(references[1], 2, "Authorised")]
    assert status.order.duplicates == 1
    conflicts = [e.conflict for a in status.attempts for e in a.events if e.conflict]
    assert conflicts == ["duplicate_authorisation"]


# -- any attempts, any events, any order -------------------------------------------------------


@st.composite
def _story(draw: st.DrawFn) -> tuple[int, list[tuple[int, PaymentEvent]]]:
    """Up to three attempts, each with some of the events Adyen may send for it, delivered
    in any order and some more than once."""
    count = draw(st.integers(1, 3))
    events: list[tuple[int, PaymentEvent]] = []
    for attempt in range(1, count + 1):
        psp = f"PSP-{attempt}"
        possible = [
            details("Pending", psp_reference=psp),
            details("Refused", psp_reference=psp),
            details("Authorised", psp_reference=psp),
            _webhook(f"ok-{attempt}", psp, True),
            _webhook(f"no-{attempt}", psp, False),
        ]
        chosen = draw(st.sets(st.sampled_from(range(len(possible))), max_size=3))
        events += [(attempt, possible[i]) for i in sorted(chosen)]
    picks = draw(st.permutations(events)) if events else []
    repeats = draw(st.lists(st.sampled_from(events), max_size=3)) if events else []
    return count, [*picks, *repeats]


def _expected(count: int, events: list[tuple[int, PaymentEvent]]) -> OrderView:
    """The order as the set of events says it is (no event here disagrees on money)."""
    states = dict.fromkeys(range(1, count + 1), PaymentState.CREATED)
    for attempt, event in events:
        implied = implied_state(event)
        if implied is not None and implied.rank > states[attempt].rank:
            states[attempt] = implied
    return OrderView(
        ORDER,
        tuple(
            AttemptView(n, attempt_reference(ORDER, n), state, AMOUNT, _EPOCH)
            for n, state in states.items()
        ),
    )


_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("orders") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{path}", None)
    return path


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(story=_story())
def test_the_order_is_a_function_of_its_attempts_events(
    migrated: Path, story: tuple[int, list[tuple[int, PaymentEvent]]]
) -> None:
    count, events = story
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "pay.db"
        shutil.copyfile(migrated, path)
        asyncio.run(_check(f"sqlite+aiosqlite:///{path}", count, events))


async def _check(url: str, count: int, events: list[tuple[int, PaymentEvent]]) -> None:
    database = Database(url)
    try:
        storage = Storage.over(database)
        references = await _attempts(storage, count)
        for attempt, event in events:
            await storage.payments.apply(references[attempt - 1], event)
        status = await storage.orders.status(ORDER)
        assert status is not None
        expected = _expected(count, events)
        view = status.view
        assert view.state is expected.state
        assert [a.state for a in sorted(view.attempts, key=lambda a: a.number)] == [
            a.state for a in expected.attempts
        ]
        duplicates = [a.number for a in expected.duplicates]
        assert [a.number for a in view.duplicates] == duplicates
        told = await _duplicates_told(storage)
        assert [n for _, n, _ in told] == duplicates  # each duplicate told once
        assert status.order.duplicates == len(duplicates)
    finally:
        await database.dispose()
