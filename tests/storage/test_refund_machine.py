"""A stateful test of refunds through the real storage, against the independent refund model.

Hypothesis drives random sequences of: payment events (a payment authorised, or left
Pending), refund requests (some too large, some everything, some repeating a caller
key), Adyen's answers (received, rejected, repeated), refund webhooks for our refunds
and for Customer Area ones (duplicated, reordered, before the answer, with a wrong
amount now and then), each stored in the inbox and applied from it. After every step
the stored refunds, the admission of the last request, the ledger and the changes
owed to the host must match ``tests/domain/refund_model.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import tempfile
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from miniprogram_pay.domain.events import EventSource, result_event
from miniprogram_pay.domain.money import Amount
from miniprogram_pay.domain.refunds import (
    RefundEvent,
    refund_received_event,
    refund_rejected_event,
    refund_requested_event,
    refund_webhook_event,
)
from miniprogram_pay.errors import MiniProgramPayError
from miniprogram_pay.storage import Database, InboxItem, Storage
from miniprogram_pay.storage.refund_rows import refund_reference
from miniprogram_pay.storage.refunds import RefundAsk
from miniprogram_pay.storage.schema import create_all
from tests.domain.refund_model import (
    HOLDS,
    WEBHOOK_CODES,
    ModelRefund,
    assert_valid_path,
    model_external,
    model_implied,
    model_ledger,
    model_ours,
    stated_amount,
)

T = TypeVar("T")

AUTHORISED = {"order-a": Amount(1000, "CNY"), "order-b": Amount(300, "JPY")}
PENDING = {"order-p": Amount(500, "CNY")}
LIMIT = 5
WINDOW = timedelta(days=365)


def psp_of(reference: str) -> str:
    return f"PSP-{reference}"


@dataclass
class Model:
    """One refund as the test knows it: ours (``requested``) or external."""

    payment: str
    psp: str
    requested: tuple[int, str] | None
    reference: str | None
    events: dict[str, RefundEvent] = field(default_factory=dict)
    answered: bool = False

    def refused_then_refunded(self, currency: str) -> bool:
        agreeing = [e for e in self.events.values() if stated_amount(e) in (None, self.requested)]
        implied = {model_implied(e) for e in agreeing}
        return "Refused" in implied and self.expected(currency).state == "Refunded"

    def expected(self, currency: str) -> ModelRefund:
        if self.requested is None:
            return model_external(currency, list(self.events.values()))
        return model_ours(self.requested, list(self.events.values()), None)


class RefundMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.folder = Path(tempfile.mkdtemp(prefix="mpp-refunds-"))
        # A throwaway file: no need to sync every commit to the disk.
        self.db = Database(
            f"sqlite+aiosqlite:///{self.folder / 'refunds.db'}", sqlite_synchronous="normal"
        )
        self.run(create_all(self.db))
        self.storage = Storage.over(self.db)
        self.refunds: list[Model] = []
        self.keys: dict[tuple[str, str], int] = {}  # (payment, caller key) -> refund index
        self.stored: list[tuple[int, Model, RefundEvent]] = []  # inbox id, refund, event
        self.items = 0

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(work)

    def teardown(self) -> None:
        try:
            self.run(self.db.dispose())
        finally:
            self.loop.close()
            shutil.rmtree(self.folder, ignore_errors=True)

    @initialize()
    def payments(self) -> None:
        for reference, amount in {**AUTHORISED, **PENDING}.items():
            self.run(
                self.storage.payments.create(
                    reference=reference, openid="o", amount=amount, idempotency_key=reference
                )
            )
            code = "Authorised" if reference in AUTHORISED else "Pending"
            event = result_event(
                EventSource.PAYMENTS,
                code,
                psp_reference=psp_of(reference),
                amount_value=amount.value,
                amount_currency=amount.currency,
            )
            self.run(self.storage.payments.apply(reference, event))

    # -- the model's view of a payment ----------------------------------------------------

    def of(self, payment: str) -> list[Model]:
        return [r for r in self.refunds if r.payment == payment]

    def currency(self, payment: str) -> str:
        return {**AUTHORISED, **PENDING}[payment].currency

    def ledger(self, payment: str) -> Any:
        return model_ledger([r.expected(self.currency(payment)) for r in self.of(payment)])

    # -- refund requests ----------------------------------------------------------------

    @rule(
        payment=st.sampled_from(sorted({**AUTHORISED, **PENDING})),
        share=st.sampled_from([None, 1, 4, 2, 1.5]),
        key=st.sampled_from([None, None, "k1", "k2"]),
    )
    def ask(self, payment: str, share: float | None, key: str | None) -> None:
        amount = {**AUTHORISED, **PENDING}[payment]
        value = None if share is None else max(1, int(amount.value / share))
        ask = RefundAsk(value, None, None, key)
        repeat = self.keys.get((payment, key)) if key else None
        expected = None if repeat is not None else self._admission(payment, value)
        try:
            refund, created, _ = self.run(
                self.storage.refunds.begin(payment, ask, window=WINDOW, limit=LIMIT)
            )
        except MiniProgramPayError as exc:
            earlier = self.refunds[repeat] if repeat is not None else None
            differs = earlier is not None and value not in (None, (earlier.requested or (0,))[0])
            assert exc.code == ("idempotency_key_reused" if differs else expected), exc
            return
        if repeat is not None:
            assert not created and refund.reference == self.refunds[repeat].reference
            return
        assert expected is None, f"admitted, the model refuses: {expected}"
        assert created and refund.amount is not None
        wanted = value or amount.value - self._held(payment)
        assert refund.amount == Amount(wanted, amount.currency)
        number = len([m for m in self.of(payment) if m.events]) + 1
        assert refund.reference == refund_reference(payment, number)
        model = Model(payment, f"R-{payment}-{number}", (wanted, amount.currency), refund.reference)
        model.events["requested"] = refund_requested_event(refund.amount)
        self.refunds.append(model)
        if key:
            self.keys[(payment, key)] = len(self.refunds) - 1

    def _held(self, payment: str) -> int:
        ledger = self.ledger(payment)
        return int(ledger.refunded + ledger.pending)

    def _admission(self, payment: str, value: int | None) -> str | None:
        """The refusal the documented rules give, or None when they admit it."""
        if payment not in AUTHORISED:
            return "payment_not_refundable"
        ledger = self.ledger(payment)
        if ledger.disputed:
            return "refund_under_review"
        if ledger.count >= LIMIT:
            return "refund_limit_reached"
        left = ledger.refundable(AUTHORISED[payment].value)
        wanted = left if value is None else value
        return "refund_exceeds_refundable" if wanted == 0 or wanted > left else None

    # -- Adyen's answer -----------------------------------------------------------------

    @precondition(lambda self: any(r.requested for r in self.refunds))
    @rule(data=st.data())
    def answer(self, data: st.DataObject) -> None:
        ours = [r for r in self.refunds if r.requested]
        model = data.draw(st.sampled_from(ours))
        kind = data.draw(st.sampled_from(["received", "received", "received", "rejected"]))
        if kind == "rejected":
            event = refund_rejected_event("Adyen rejected the request")
        else:
            value, currency = model.requested or (0, "")
            wrong = data.draw(st.sampled_from([False] * 9 + [True]))
            event = refund_received_event(
                model.psp, amount_value=value + wrong, amount_currency=currency
            )
        refunds = self.run(self.storage.refunds.of(model.payment))
        row = next(r for r in refunds if r.reference == model.reference)
        applied = self.run(self.storage.refunds.answer(model.payment, row.id, event))
        assert applied.duplicate is (event.key in model.events)
        model.events[event.key] = event

    # -- webhooks, through the inbox ----------------------------------------------------

    @rule(data=st.data())
    def webhook(self, data: st.DataObject) -> None:
        external = not self.refunds or data.draw(st.sampled_from([False, False, False, True]))
        if external:
            payment = data.draw(st.sampled_from(sorted(AUTHORISED)))
            number = len([r for r in self.refunds if r.requested is None]) + 1
            model = Model(payment, f"X-{payment}-{number}", None, payment)
            self.refunds.append(model)
        else:
            model = data.draw(st.sampled_from(self.refunds))
        amount = {**AUTHORISED, **PENDING}[model.payment]
        value, currency = model.requested or (amount.value // 2, amount.currency)
        drift = data.draw(st.sampled_from(["same"] * 8 + ["more", "currency"]))
        if drift == "more":
            value += 1
        elif drift == "currency":
            currency = "USD"
        self.items += 1
        item = InboxItem(
            dedup_key=hashlib.sha256(f"item-{self.items}".encode()).hexdigest(),
            psp_reference=model.psp,
            merchant_reference=model.reference or "",
            event_code=data.draw(st.sampled_from(WEBHOOK_CODES[:4] * 2 + ["REFUND"])),
            success=data.draw(st.sampled_from([True, True, True, False])),
            amount_value=value,
            amount_currency=currency,
            reason=None,
            raw_json=json.dumps({"originalReference": psp_of(model.payment)}),
        )
        [stored] = self.run(self.storage.inbox.store([item]))
        event = refund_webhook_event(
            item.event_code,
            item.success,
            dedup_key=item.dedup_key,
            psp_reference=item.psp_reference,
            amount_value=value,
            amount_currency=currency,
        )
        self.stored.append((stored.id, model, event))
        if data.draw(st.booleans()):
            self._apply(len(self.stored) - 1)

    @precondition(lambda self: self.stored)
    @rule(data=st.data())
    def apply_stored(self, data: st.DataObject) -> None:
        """Any stored item, in any order; one applied before is a no-op."""
        self._apply(data.draw(st.integers(0, len(self.stored) - 1)))

    def _apply(self, index: int) -> None:
        notification_id, model, event = self.stored[index]
        record = self.run(self.storage.inbox.apply_one(notification_id))
        if event.key in model.events:
            assert record is None  # applied already: not waiting any more
            return
        assert record is not None and record.status == "applied", record
        assert record.refund is not None and not record.refund.duplicate
        model.events[event.key] = event

    # -- invariants ---------------------------------------------------------------------

    @invariant()
    def refunds_match_the_model(self) -> None:
        moves = 0
        for payment in sorted({**AUTHORISED, **PENDING}):
            currency = self.currency(payment)
            stored = self.run(self.storage.refunds.of(payment))
            models = [m for m in self.of(payment) if m.events]
            assert len(stored) == len(models)
            by_psp = {m.psp: m for m in models if m.requested is None}
            by_reference = {m.reference: m for m in models if m.requested is not None}
            for refund in stored:
                model = by_psp[refund.psp_reference or ""] if refund.external else None
                model = model or by_reference[refund.reference]
                expected = model.expected(currency)
                assert refund.state == (None if expected.state is None else expected.state), (
                    refund,
                    list(model.events.values()),
                )
                assert (refund.amount.value if refund.amount else None) == expected.value
                assert refund.disputed is expected.disputed
                states = [h.to_state.value for h in refund.history if h.to_state is not None]
                assert_valid_path(states)
                moves += len(states)
            if not any(m.requested is None for m in models) and payment in AUTHORISED:
                held = sum(
                    int(m.expected(currency).value or 0)
                    for m in models
                    if m.expected(currency).state in HOLDS
                )
                if held > AUTHORISED[payment].value:
                    # Only once Adyen contradicted itself: a refund it refused (at the API or
                    # by webhook) was then reported made. Nothing more is admitted after it.
                    assert any(m.refused_then_refunded(currency) for m in models)
                    assert self.ledger(payment).refundable(AUTHORISED[payment].value) == 0
        outbox = self.run(self.storage.outbox.listing(limit=100_000))
        assert sum(row.kind == "refund" for row in outbox) == moves
        assert len({row.event_id for row in outbox}) == len(outbox)


def test_refunds_through_storage_match_the_model() -> None:
    run_state_machine_as_test(
        RefundMachine,
        settings=settings(max_examples=30, stateful_step_count=20, deadline=None),
    )
