"""The refund ledger and the admission rule, against ``tests/domain/refund_model.py``.

The stateful test plays a merchant asking for refunds against a model of Adyen
that keeps its own balance, with Customer Area refunds made behind our back and
every answer and webhook delivered late, twice or out of order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from miniprogram_pay.domain.ledger import (
    DEFAULT_REFUND_WINDOW,
    MAX_REFUNDS_PER_PAYMENT,
    RefundablePayment,
    RefundLedger,
    admit_refund,
    refund_ledger,
)
from miniprogram_pay.domain.money import Amount
from miniprogram_pay.domain.refunds import (
    RefundEvent,
    RefundMachine,
    RefundState,
    RefundView,
    fold_refund,
    refund_received_event,
    refund_rejected_event,
    refund_requested_event,
    refund_webhook_event,
)
from miniprogram_pay.domain.states import PaymentState
from miniprogram_pay.errors import InvalidRefundError, RefundNotAllowedError
from tests.domain.refund_model import (
    ModelLedger,
    ModelRefund,
    model_external,
    model_ledger,
    model_ours,
)

EXAMPLES = 300
AUTHORISED_AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
NOW = AUTHORISED_AT + timedelta(days=30)
CNY = Amount(1130, "CNY")
PSP = "PSP0000000000001"


def payment(amount: Amount = CNY, **overrides: object) -> RefundablePayment:
    fields: dict[str, object] = {
        "state": PaymentState.AUTHORISED,
        "amount": amount,
        "psp_reference": PSP,
        "authorised_at": AUTHORISED_AT,
        **overrides,
    }
    return RefundablePayment(**fields)  # type: ignore[arg-type]


def refund(state: RefundState | None, value: int | None, **overrides: object) -> RefundView:
    return RefundView(state, "CNY", value, **overrides)  # type: ignore[arg-type]


# -- the ledger --------------------------------------------------------------------------


def test_each_state_counts_where_the_docs_say() -> None:
    refunds = [
        refund(RefundState.REQUESTED, 100),
        refund(RefundState.RECEIVED, 20),
        refund(RefundState.REFUNDED, 300),
        refund(RefundState.REFUSED, 4000),
        refund(RefundState.FAILED, 50),
        refund(RefundState.REVERSED, 6),
    ]
    ledger = refund_ledger(CNY, refunds)
    assert ledger == RefundLedger(CNY, 300, 120, 56, 5, False)
    assert ledger.committed_value == 420
    assert ledger.refundable_value == 1130 - 420


def test_an_empty_ledger_can_refund_everything() -> None:
    assert refund_ledger(CNY, []).refundable_value == 1130


def test_refundable_is_never_negative() -> None:
    ledger = refund_ledger(CNY, [refund(RefundState.REFUNDED, 1000), refund(None, None)])
    assert ledger.refundable_value == 130
    over = refund_ledger(CNY, [refund(RefundState.REFUNDED, 1000, external=True)] * 2)
    assert (over.refunded_value, over.refundable_value) == (2000, 0)


@pytest.mark.parametrize(
    "odd",
    [
        refund(RefundState.REFUNDED, 10, disputed=True),
        RefundView(RefundState.REQUESTED, "USD", 10),
        refund(None, None, external=True, disputed=True),
    ],
)
def test_a_disputed_refund_freezes_the_payment(odd: RefundView) -> None:
    ledger = refund_ledger(CNY, [refund(RefundState.REFUNDED, 100), odd])
    assert ledger.disputed
    assert ledger.refundable_value == 0


# -- admission ---------------------------------------------------------------------------


def refusal(
    refunds: list[RefundView],
    value: int | None = None,
    *,
    of: RefundablePayment | None = None,
    currency: str | None = None,
    now: datetime = NOW,
    window: timedelta = DEFAULT_REFUND_WINDOW,
    limit: int = MAX_REFUNDS_PER_PAYMENT,
) -> str:
    """The code ``admit_refund`` refuses with (the test fails if it admits)."""
    with pytest.raises((RefundNotAllowedError, InvalidRefundError)) as caught:
        admit_refund(of or payment(), refunds, value, currency, now=now, window=window, limit=limit)
    return caught.value.code


def test_admits_a_partial_and_then_the_rest() -> None:
    assert admit_refund(payment(), [], 300, now=NOW) == Amount(300, "CNY")
    assert admit_refund(payment(), [refund(RefundState.RECEIVED, 300)], now=NOW) == Amount(
        830, "CNY"
    )
    assert admit_refund(payment(), [refund(RefundState.RECEIVED, 300)], 830, now=NOW).value == 830


def test_a_refund_that_does_not_fit_is_refused_with_what_is_left() -> None:
    refunds = [refund(RefundState.REQUESTED, 1000)]
    with pytest.raises(RefundNotAllowedError) as caught:
        admit_refund(payment(), refunds, 131, now=NOW)
    error = caught.value
    assert (error.code, error.status) == ("refund_exceeds_refundable", 409)
    assert error.refundable == (130, "CNY")
    assert error.to_dict()["error"] == {
        "code": "refund_exceeds_refundable",
        "message": "CNY 1.31 asked, CNY 1.30 is left to refund of CNY 11.30",
        "pspReference": PSP,
        "refundable": {"value": 130, "currency": "CNY"},
    }


def test_nothing_left_refuses_a_full_refund() -> None:
    assert refusal([refund(RefundState.REFUNDED, 1130)]) == "refund_exceeds_refundable"
    assert refusal([refund(RefundState.REFUNDED, 1130)], 1) == "refund_exceeds_refundable"


def test_failed_and_reversed_refunds_free_their_amount_refused_ones_too() -> None:
    for released in (RefundState.REFUSED, RefundState.FAILED, RefundState.REVERSED):
        assert admit_refund(payment(), [refund(released, 1130)], now=NOW) == CNY


@pytest.mark.parametrize(
    "of",
    [
        payment(state=PaymentState.PENDING),
        payment(state=PaymentState.REFUSED),
        payment(state=PaymentState.CREATED, psp_reference=None),
        payment(psp_reference=None),
        payment(authorised_at=None),
    ],
)
def test_only_an_authorised_payment_known_to_adyen_is_refundable(of: RefundablePayment) -> None:
    assert refusal([], 100, of=of) == "payment_not_refundable"


@pytest.mark.parametrize("value", [0, -1, True, 2**63, 1.5, "100"])
def test_the_amount_is_a_positive_integer(value: object) -> None:
    with pytest.raises(InvalidRefundError) as caught:
        admit_refund(payment(), [], value, now=NOW)  # type: ignore[arg-type]
    assert (caught.value.code, caught.value.status) == ("invalid_refund_amount", 400)


def test_the_currency_is_the_payments() -> None:
    assert admit_refund(payment(), [], 100, "CNY", now=NOW).currency == "CNY"
    assert refusal([], 100, currency="USD") == "refund_currency_mismatch"


def test_the_window_is_measured_from_the_authorisation() -> None:
    last = AUTHORISED_AT + DEFAULT_REFUND_WINDOW
    assert admit_refund(payment(), [], 100, now=last).value == 100
    later = last + timedelta(seconds=1)
    assert refusal([], 100, now=later) == "refund_window_closed"
    week = timedelta(days=7)
    assert refusal([], 100, now=AUTHORISED_AT + week * 2, window=week) == "refund_window_closed"


def test_at_most_fifty_refunds_refused_ones_aside() -> None:
    forty_nine = [refund(RefundState.REFUNDED, 1)] * (MAX_REFUNDS_PER_PAYMENT - 1)
    assert admit_refund(payment(), forty_nine, 1, now=NOW).value == 1
    fifty = [*forty_nine, refund(RefundState.FAILED, 1)]
    assert refusal(fifty, 1) == "refund_limit_reached"
    refused = [*forty_nine, *[refund(RefundState.REFUSED, 1)] * 10]
    assert admit_refund(payment(), refused, 1, now=NOW).value == 1
    assert refusal([refund(RefundState.REFUNDED, 1)] * 3, 1, limit=3) == "refund_limit_reached"


def test_a_dispute_refuses_every_new_refund() -> None:
    assert refusal([refund(RefundState.RECEIVED, 5, disputed=True)], 1) == "refund_under_review"


def test_payment_checks_come_first() -> None:
    closed = AUTHORISED_AT + timedelta(days=400)
    unpaid = payment(state=PaymentState.PENDING)
    assert refusal([], 0, of=unpaid, now=closed) == "payment_not_refundable"
    assert refusal([], 0, now=closed) == "invalid_refund_amount"
    full = [refund(RefundState.REFUNDED, 1130)] * 50
    assert refusal(full, 1, now=closed) == "refund_window_closed"
    assert refusal(full, 1) == "refund_limit_reached"


# -- admission against the model ---------------------------------------------------------

views = st.builds(
    refund,
    st.sampled_from([None, *RefundState]),
    st.integers(1, 600),
    disputed=st.sampled_from([False] * 9 + [True]),
)


def expected_refusal(model: ModelLedger, authorised: int, value: int | None) -> str | None:
    if model.disputed:
        return "refund_under_review"
    if model.count >= MAX_REFUNDS_PER_PAYMENT:
        return "refund_limit_reached"
    wanted = model.refundable(authorised) if value is None else value
    return "refund_exceeds_refundable" if not 0 < wanted <= model.refundable(authorised) else None


def as_model(view: RefundView) -> ModelRefund:
    return ModelRefund(view.state.value if view.state else None, view.value, view.disputed)


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    st.integers(1, 3000),
    st.lists(views, max_size=60),
    st.none() | st.integers(1, 3000),
)
def test_admission_is_the_model(
    authorised: int, refunds: list[RefundView], value: int | None
) -> None:
    amount = Amount(authorised, "CNY")
    model = model_ledger([as_model(r) for r in refunds])
    expected = expected_refusal(model, authorised, value)
    ledger = refund_ledger(amount, refunds)
    assert (ledger.refunded_value, ledger.pending_value, ledger.returned_value) == (
        model.refunded,
        model.pending,
        model.returned,
    )
    assert (ledger.refund_count, ledger.disputed) == (model.count, model.disputed)
    try:
        admitted = admit_refund(payment(amount), refunds, value, now=NOW)
    except RefundNotAllowedError as exc:
        assert exc.code == expected
        return
    assert expected is None
    assert admitted.value == (value or model.refundable(authorised))
    assert ledger.committed_value + admitted.value <= authorised


# -- the ledger does not depend on the order of events -----------------------------------


@dataclass
class Refund:
    """One refund of the scenario and everything that can be heard of it."""

    external: bool
    amount: Amount
    events: list[RefundEvent]


def webhook(code: str, success: bool, psp: str, value: int, key: str) -> RefundEvent:
    return refund_webhook_event(
        code, success, dedup_key=key, psp_reference=psp, amount_value=value, amount_currency="CNY"
    )


@st.composite
def refund_histories(draw: st.DrawFn, number: int) -> Refund:
    amount = Amount(draw(st.integers(1, 400)), "CNY")
    psp = f"RFND{number:012d}"
    external = draw(st.booleans())
    events: list[RefundEvent] = [] if external else [refund_requested_event(amount)]
    if not external and draw(st.booleans()):
        events.append(refund_received_event(psp, amount_value=amount.value, amount_currency="CNY"))
    if not external and draw(st.integers(0, 5)) == 0:
        events.append(refund_rejected_event("137"))
    codes = st.sampled_from(["REFUND", "REFUND", "REFUND_FAILED", "REFUNDED_REVERSED"])
    for n in range(draw(st.integers(int(external), 4))):
        value = amount.value + draw(st.sampled_from([0, 0, 0, 0, 0, 0, 0, 1]))
        events.append(webhook(draw(codes), draw(st.booleans()), psp, value, f"{psp}-{n}"))
    return Refund(external, amount, events)


def start(r: Refund) -> RefundView:
    return RefundView.new_external("CNY") if r.external else RefundView.new(r.amount)


def ledger_after(
    authorised: Amount, refunds: list[Refund], deliveries: list[tuple[int, RefundEvent]]
) -> RefundLedger:
    """Each refund folded from the events that reached it, in delivery order."""
    machine = RefundMachine()
    heard: dict[int, list[RefundEvent]] = {}
    for owner, event in deliveries:
        heard.setdefault(owner, []).append(event)
    views = [fold_refund(start(refunds[n]), events, machine) for n, events in heard.items()]
    return refund_ledger(authorised, views)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.data())
def test_any_order_and_duplication_gives_the_same_ledger(data: st.DataObject) -> None:
    refunds = [data.draw(refund_histories(n)) for n in range(data.draw(st.integers(1, 5)))]
    authorised = Amount(data.draw(st.integers(1, 2000)), "CNY")
    facts = [(n, e) for n, r in enumerate(refunds) for e in r.events]
    models = [
        model_external("CNY", r.events)
        if r.external
        else model_ours((r.amount.value, "CNY"), r.events, psp=None)
        for r in refunds
    ]
    model = model_ledger(models)
    expected = (model.refunded, model.pending, model.returned, model.count, model.disputed)
    for _ in range(3):
        copies = [fact for fact in facts for _ in range(1 + data.draw(st.integers(0, 1)))]
        ledger = ledger_after(authorised, refunds, data.draw(st.permutations(copies)))
        got = (
            ledger.refunded_value,
            ledger.pending_value,
            ledger.returned_value,
            ledger.refund_count,
            ledger.disputed,
        )
        assert got == expected
        assert ledger.refundable_value == model.refundable(authorised.value)


# -- a merchant, Adyen and the network, step by step -------------------------------------

Outcome = Literal["refunded", "refused", "failed", "reversed", "rejected"]


@dataclass
class AdyenRefund:
    """A refund as Adyen knows it, with the facts it will send us."""

    value: int
    outcome: Outcome
    external: bool


@dataclass
class Known:
    """What our side has heard of one refund so far."""

    start: RefundView
    events: list[RefundEvent] = field(default_factory=list)

    def view(self, machine: RefundMachine) -> RefundView:
        return fold_refund(self.start, self.events, machine)


class RefundWorld(RuleBasedStateMachine):
    """Admission on our side, Adyen's own balance on its side, a network in between."""

    def __init__(self) -> None:
        super().__init__()
        self.machine = RefundMachine()
        self.authorised = CNY
        self.adyen: list[AdyenRefund] = []
        self.adyen_left = 0
        self.known: dict[int, Known] = {}
        self.outbox: list[tuple[int, RefundEvent]] = []
        self.delivered: list[tuple[int, RefundEvent]] = []
        self.externals = False

    @initialize(value=st.integers(1, 5000))
    def authorise(self, value: int) -> None:
        self.authorised = Amount(value, "CNY")
        self.adyen_left = value

    def views(self) -> list[RefundView]:
        return [known.view(self.machine) for known in self.known.values()]

    def ledger(self) -> RefundLedger:
        return refund_ledger(self.authorised, self.views())

    def adyen_makes(
        self, number: int, value: int, outcome: Outcome, *, external: bool = False
    ) -> list[RefundEvent]:
        """What Adyen sends for a refund; it refuses what its own balance lacks."""
        psp = f"RFND{number:012d}"
        if outcome != "rejected" and value > self.adyen_left:
            outcome = "refused"
        self.adyen.append(AdyenRefund(value, outcome, external))
        if outcome == "rejected":
            return [refund_rejected_event("137")]
        steps = [("REFUND", outcome != "refused")]
        if outcome != "refused":
            self.adyen_left -= value
        if outcome in ("failed", "reversed"):
            steps.append(("REFUND_FAILED" if outcome == "failed" else "REFUNDED_REVERSED", True))
            self.adyen_left += value
        return [
            webhook(code, success, psp, value, f"{psp}-{n}")
            for n, (code, success) in enumerate(steps)
        ]

    @rule(
        value=st.none() | st.integers(1, 5000),
        outcome=st.sampled_from(["refunded", "refunded", "refused", "failed", "reversed"]),
        answer=st.sampled_from(["received", "received", "lost", "rejected"]),
    )
    def merchant_refunds(self, value: int | None, outcome: Outcome, answer: str) -> None:
        before = self.ledger()
        try:
            admitted = admit_refund(payment(self.authorised), self.views(), value, now=NOW)
        except RefundNotAllowedError as exc:
            assert exc.code in ("refund_exceeds_refundable", "refund_limit_reached")
            wanted = before.refundable_value if value is None else value
            assert wanted > before.refundable_value or wanted == 0 or before.refund_count >= 50
            return
        assert before.committed_value + admitted.value <= self.authorised.value
        number = len(self.adyen)
        self.known[number] = Known(RefundView.new(admitted), [refund_requested_event(admitted)])
        if answer == "rejected":
            outcome = "rejected"
        elif answer == "received":
            psp, value = f"RFND{number:012d}", admitted.value
            answered = refund_received_event(psp, amount_value=value, amount_currency="CNY")
            self.outbox.append((number, answered))
        self.outbox += [(number, e) for e in self.adyen_makes(number, admitted.value, outcome)]

    @rule(
        value=st.integers(1, 5000),
        outcome=st.sampled_from(["refunded", "failed", "reversed"]),
    )
    def someone_refunds_in_the_customer_area(self, value: int, outcome: Outcome) -> None:
        if value > self.adyen_left:
            return  # Adyen's Customer Area would not let them
        self.externals = True
        number = len(self.adyen)
        made = self.adyen_makes(number, value, outcome, external=True)
        self.outbox += [(number, e) for e in made]

    @precondition(lambda self: bool(self.outbox))
    @rule(index=st.integers(0, 10**6))
    def a_fact_arrives(self, index: int) -> None:
        self.hear(*self.outbox.pop(index % len(self.outbox)))

    @precondition(lambda self: bool(self.delivered))
    @rule(index=st.integers(0, 10**6))
    def a_fact_arrives_again(self, index: int) -> None:
        self.hear(*self.delivered[index % len(self.delivered)])

    def hear(self, number: int, event: RefundEvent) -> None:
        # A webhook for a refund we never asked for is an external refund.
        known = self.known.setdefault(number, Known(RefundView.new_external("CNY")))
        known.events.append(event)
        self.delivered.append((number, event))

    @invariant()
    def ledger_never_offers_more_than_is_left(self) -> None:
        ledger = self.ledger()
        left = self.authorised.value - ledger.committed_value
        assert ledger.refundable_value == max(0, left)
        assert not ledger.disputed  # Adyen's facts here never contradict each other

    @invariant()
    def our_refunds_never_commit_more_than_authorised(self) -> None:
        if not self.externals:
            ledger = self.ledger()
            assert ledger.committed_value <= self.authorised.value
            assert ledger.refunded_value <= self.authorised.value

    @invariant()
    def once_everything_arrived_the_ledger_is_adyens(self) -> None:
        if self.outbox:
            return
        ledger = self.ledger()
        refunded = sum(r.value for r in self.adyen if r.outcome == "refunded")
        returned = sum(r.value for r in self.adyen if r.outcome in ("failed", "reversed"))
        assert ledger.refunded_value == refunded <= self.authorised.value
        assert ledger.returned_value == returned
        assert ledger.pending_value == 0
        assert ledger.refundable_value == self.adyen_left


RefundWorld.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_refunds_against_adyen = RefundWorld.TestCase


def test_a_refusal_without_a_ledger_carries_no_refundable() -> None:
    with pytest.raises(RefundNotAllowedError) as caught:
        admit_refund(payment(state=PaymentState.PENDING), [], 1, now=NOW)
    assert "refundable" not in caught.value.to_dict()["error"]  # type: ignore[operator]
    assert caught.value.refundable is None
