"""A stateful test of the storage against a simple in-memory model, on a real SQLite file.

Hypothesis drives random sequences of: creating payments, applying API answers
(some repeated), storing webhook items (some redelivered, some for unknown
references, some with the wrong amount), applying them in any order, and
recording failures. After every step the stored payments, their history, their
event log and the inbox must match the model.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import tempfile
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from miniprogram_pay.domain.events import EventSource, PaymentEvent, result_event, webhook_event
from miniprogram_pay.domain.money import Amount
from miniprogram_pay.storage import Database, InboxItem, PaymentRecord, Storage
from miniprogram_pay.storage.schema import create_all
from tests.domain.model import (
    EXPECTED_API_CODES,
    PAYMENT_WEBHOOK_CODES,
    UNEXPECTED_API_CODES,
    agrees,
    assert_valid_path,
    gives_psp,
    model_implied,
    model_state,
    model_summary,
)

T = TypeVar("T")

REFERENCES = ["order-a", "order-b", "order-c"]
UNKNOWN_REFERENCES = ["ghost"]
AMOUNTS = [Amount(1130, "CNY"), Amount(500, "JPY"), Amount(99, "USD")]
MAX_ATTEMPTS = 3
WAITING = ("received", "failed")


def psp_of(reference: str) -> str:
    return f"PSP-{reference}"


@dataclass
class ModelPayment:
    amount: Amount
    psp: str
    events: dict[str, PaymentEvent] = field(default_factory=dict)


@dataclass
class ModelNotification:
    id: int
    item: InboxItem
    deliveries: int = 1
    status: str = "received"
    attempts: int = 0

    @property
    def event(self) -> PaymentEvent:
        return webhook_event(
            self.item.event_code,
            self.item.success,
            dedup_key=self.item.dedup_key,
            psp_reference=self.item.psp_reference,
            amount_value=self.item.amount_value,
            amount_currency=self.item.amount_currency,
            reason=self.item.reason,
        )


@st.composite
def money(draw: st.DrawFn, amount: Amount) -> tuple[int | None, str | None]:
    """Mostly the payment's amount; sometimes none, sometimes a different one."""
    choice = draw(st.sampled_from(["own", "own", "own", "none", "other"]))
    if choice == "none":
        return None, None
    if choice == "other":
        return amount.value + 1, amount.currency
    return amount.value, amount.currency


class RepositoryMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.folder = Path(tempfile.mkdtemp(prefix="mpp-stateful-"))
        self.db = Database(f"sqlite+aiosqlite:///{self.folder / 'state.db'}")
        self.run(create_all(self.db))
        self.storage = Storage.over(self.db)
        self.payments: dict[str, ModelPayment] = {}
        self.notifications: dict[str, ModelNotification] = {}
        self.sent: list[tuple[str, PaymentEvent]] = []
        self.items_made = 0
        # Payments written since the last check: their history and event log are re-read.
        self.touched: set[str] = set()
        self.transitions: dict[str, int] = {}

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(work)

    def teardown(self) -> None:
        try:
            self.run(self.db.dispose())
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()
            shutil.rmtree(self.folder, ignore_errors=True)

    # -- payments ----------------------------------------------------------------------

    @rule(reference=st.sampled_from(REFERENCES), amount=st.sampled_from(AMOUNTS))
    def create_payment(self, reference: str, amount: Amount) -> None:
        payment, created = self.run(
            self.storage.payments.create(
                reference=reference, openid="o", amount=amount, idempotency_key=reference
            )
        )
        assert created is (reference not in self.payments)
        if created:
            self.payments[reference] = ModelPayment(amount, psp_of(reference))
            self.touched.add(reference)
        assert payment.amount == self.payments[reference].amount

    @precondition(lambda self: self.payments)
    @rule(data=st.data())
    def apply_api_answer(self, data: st.DataObject) -> None:
        reference = data.draw(st.sampled_from(sorted(self.payments)))
        model = self.payments[reference]
        value, currency = data.draw(money(model.amount))
        codes = EXPECTED_API_CODES * 3 + UNEXPECTED_API_CODES
        event = result_event(
            data.draw(st.sampled_from([EventSource.PAYMENTS, EventSource.DETAILS])),
            data.draw(st.sampled_from(codes)),
            psp_reference=data.draw(st.sampled_from([model.psp, None])),
            reason=data.draw(st.sampled_from([None, "Refused", "cancel"])),
            amount_value=value,
            amount_currency=currency,
        )
        self._apply(reference, event)
        self.sent.append((reference, event))

    @precondition(lambda self: self.sent)
    @rule(data=st.data())
    def repeat_api_answer(self, data: st.DataObject) -> None:
        reference, event = data.draw(st.sampled_from(self.sent))
        self._apply(reference, event)

    def _apply(self, reference: str, event: PaymentEvent) -> None:
        model = self.payments[reference]
        applied = self.run(self.storage.payments.apply(reference, event))
        self.touched.add(reference)
        assert applied.duplicate is (event.key in model.events)
        model.events[event.key] = event

    # -- webhooks ----------------------------------------------------------------------

    @rule(data=st.data())
    def receive_webhook(self, data: st.DataObject) -> None:
        self._receive(data)

    @rule(data=st.data())
    def receive_and_apply_webhook(self, data: st.DataObject) -> None:
        # What the webhook endpoint does: store durably, acknowledge, apply.
        self._apply_notification(self._receive(data))

    def _receive(self, data: st.DataObject) -> ModelNotification:
        # Mostly for a payment we have; sometimes for one we don't (yet, or ever).
        references = st.sampled_from(REFERENCES + UNKNOWN_REFERENCES)
        if self.payments:
            references = st.sampled_from(sorted(self.payments)) | references
        reference = data.draw(references)
        model = self.payments.get(reference)
        amount = model.amount if model else AMOUNTS[0]
        value, currency = data.draw(money(amount))
        self.items_made += 1
        code = data.draw(st.sampled_from(["AUTHORISATION"] * 4 + PAYMENT_WEBHOOK_CODES))
        item = InboxItem(
            dedup_key=hashlib.sha256(str(self.items_made).encode()).hexdigest(),
            psp_reference=psp_of(reference),
            merchant_reference=reference,
            event_code=code,
            success=data.draw(st.booleans()),
            amount_value=value,
            amount_currency=currency,
            reason=data.draw(st.sampled_from([None, "Refused"])),
            raw_json="{}",
        )
        [stored] = self.run(self.storage.inbox.store([item]))
        assert stored.new
        assert stored.id not in {n.id for n in self.notifications.values()}
        note = ModelNotification(stored.id, item)
        self.notifications[item.dedup_key] = note
        return note

    @precondition(lambda self: self.notifications)
    @rule(data=st.data())
    def redeliver_webhooks(self, data: st.DataObject) -> None:
        keys = sorted(self.notifications)
        chosen = data.draw(st.lists(st.sampled_from(keys), min_size=1, max_size=3))
        batch = [self.notifications[k].item for k in chosen]
        stored = self.run(self.storage.inbox.store(batch))
        for key, result in zip(chosen, stored, strict=True):
            note = self.notifications[key]
            note.deliveries += 1
            assert (result.id, result.new, result.status) == (note.id, False, note.status)

    @precondition(lambda self: self.notifications)
    @rule(data=st.data())
    def apply_webhook(self, data: st.DataObject) -> None:
        # Any stored item, in any order; mostly one still waiting.
        waiting = sorted(k for k, n in self.notifications.items() if n.status in WAITING)
        keys = st.sampled_from(sorted(self.notifications))
        if waiting:
            keys = st.sampled_from(waiting) | keys
        self._apply_notification(self.notifications[data.draw(keys)])

    def _apply_notification(self, note: ModelNotification) -> None:
        record = self.run(self.storage.inbox.apply_one(note.id))
        if note.status not in WAITING:
            assert record is None
            return
        assert record is not None
        note.attempts += 1
        payment = self.payments.get(note.item.merchant_reference)
        if payment is None:
            note.status = "orphan"
            assert (record.status, record.applied) == ("orphan", None)
            return
        note.status = "applied"
        self.touched.add(note.item.merchant_reference)
        assert record.status == "applied"
        assert record.applied is not None and not record.applied.duplicate
        event = note.event
        assert event.key not in payment.events
        payment.events[event.key] = event

    @precondition(lambda self: self.notifications)
    @rule(data=st.data())
    def fail_webhook(self, data: st.DataObject) -> None:
        note = self.notifications[data.draw(st.sampled_from(sorted(self.notifications)))]
        status = self.run(
            self.storage.inbox.record_failure(
                note.id, error="Boom", max_attempts=MAX_ATTEMPTS, backoff_seconds=0
            )
        )
        if note.status in WAITING:
            note.attempts += 1
            note.status = "parked" if note.attempts >= MAX_ATTEMPTS else "failed"
        assert status == note.status

    # -- invariants --------------------------------------------------------------------

    @invariant()
    def payments_match_the_model(self) -> None:
        for reference, model in self.payments.items():
            payment = self._check_payment(reference, model)
            if reference in self.touched:
                self.transitions[reference] = self._check_logs(payment, model)
        self.touched.clear()
        counts = self.run(self.storage.outbox.counts())
        assert sum(counts.values()) == sum(self.transitions.values())
        by_state: dict[str, int] = {}
        for model in self.payments.values():
            state = model_state(model.amount, list(model.events.values()), model.psp)
            by_state[state] = by_state.get(state, 0) + 1
        assert self.run(self.storage.payments.count_by_state()) == by_state

    def _check_payment(self, reference: str, model: ModelPayment) -> PaymentRecord:
        events = list(model.events.values())
        payment = self.run(self.storage.payments.get(reference))
        assert payment is not None
        assert payment.state.value == model_state(model.amount, events, model.psp)
        summary = model_summary(model.amount, events, model.psp)
        assert (payment.result_code, payment.refusal_reason) == (summary or (None, None))
        carries_psp = any(gives_psp(e, model.amount) for e in events)
        assert payment.psp_reference == (model.psp if carries_psp else None)
        return payment

    def _check_logs(self, payment: PaymentRecord, model: ModelPayment) -> int:
        history = self.run(self.storage.payments.history(payment.id))
        states = [t.to_state for t in history]
        assert_valid_path(states)
        assert history[0].from_state is None
        assert all(t.from_state is s for t, s in zip(history[1:], states, strict=False))
        assert states[-1] is payment.state
        assert {t.event_key for t in history[1:]} <= set(model.events)

        log = self.run(self.storage.payments.events(payment.id))
        assert sorted(e.key for e in log) == sorted(model.events)
        for row in log:
            event = model.events[row.key]
            if model_implied(event) is not None and not agrees(event, model.amount, model.psp):
                stated = event.amount_value is not None
                conflict = "amount_mismatch" if stated else "amount_missing"
                assert (row.outcome, row.conflict) == ("conflict", conflict)
        assert payment.conflicts == sum(row.outcome == "conflict" for row in log)
        return len(history) - 1

    @invariant()
    def inbox_matches_the_model(self) -> None:
        rows = self.run(self.storage.inbox.listing(limit=10_000))
        assert len(rows) == len(self.notifications)
        stored = {r.id: r for r in rows}
        for note in self.notifications.values():
            row = stored[note.id]
            assert (row.status, row.deliveries, row.attempts) == (
                note.status,
                note.deliveries,
                note.attempts,
            )
            assert row.merchant_reference == note.item.merchant_reference
        due = self.run(self.storage.inbox.due(limit=10_000))
        waiting = [n.id for n in self.notifications.values() if n.status in WAITING]
        assert due == sorted(waiting)


def test_repository_matches_the_model() -> None:
    run_state_machine_as_test(
        RepositoryMachine,
        settings=settings(max_examples=100, stateful_step_count=30, deadline=None),
    )
