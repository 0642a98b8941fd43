"""A payment's time line: everything in it, oldest first, cause before effect at one instant."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from miniprogram_pay.domain.money import Amount
from miniprogram_pay.domain.refunds import RefundChange
from miniprogram_pay.domain.refunds import RefundState as RS
from miniprogram_pay.domain.states import PaymentState
from miniprogram_pay.office.timeline import path_taken, timeline
from miniprogram_pay.storage.admin import InboxRecord, PaymentStory
from miniprogram_pay.storage.records import (
    EventRecord,
    OutboxRecord,
    PaymentRecord,
    Refund,
    RefundHistory,
    TransitionRecord,
)

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
C, P, A = PaymentState.CREATED, PaymentState.PENDING, PaymentState.AUTHORISED


def at(ms: int) -> datetime:
    return T0 + timedelta(milliseconds=ms)


def story() -> PaymentStory:
    payment = PaymentRecord(
        id=1, reference="order-1", openid="o", amount=Amount(1130, "CNY"), state=A,
        psp_reference="881", result_code="Authorised", refusal_reason=None, payment_data=None,
        wechat_params=None, action=None, idempotency_key="k", conflicts=1, version=3,
        created_at=at(0), updated_at=at(40),
    )  # fmt: skip
    webhook = InboxRecord(
        id=7, status="applied", detail=None, psp_reference="881", merchant_reference="order-1",
        event_code="AUTHORISATION", success=False, amount_value=1130, amount_currency="CNY",
        deliveries=2, attempts=1, received_at=at(30), next_attempt_at=at(30), applied_at=at(30),
    )  # fmt: skip
    return PaymentStory(
        payment=payment,
        transitions=[
            TransitionRecord(None, C, "payments", "Created", "k0", at(0)),
            TransitionRecord(C, P, "payments", "Pending", "k1", at(10)),
            TransitionRecord(P, A, "details", "Authorised", "k2", at(20)),
        ],
        events=[
            EventRecord(
                "k2",
                "details",
                "Authorised",
                None,
                "transition",
                None,
                None,
                "881",
                1130,
                "CNY",
                at(20),
            ),
            EventRecord(
                "k3",
                "webhook",
                "AUTHORISATION",
                False,
                "conflict",
                "failure_after_authorisation",
                "Refused",
                "881",
                1130,
                "CNY",
                at(30),
            ),
        ],
        webhooks=[webhook],
        deliveries=[
            OutboxRecord(
                2,
                "mpp_1_authorised",
                "order-1",
                P,
                A,
                "parked",
                9,
                "RuntimeError",
                at(20),
                at(90),
                None,
                None,
            ),
        ],
    )


def test_entries_are_in_time_order_with_causes_first() -> None:
    entries = timeline(story())
    assert [(e.at, e.lane) for e in entries] == [
        (at(0), "state"),
        (at(10), "state"),
        (at(20), "event"),  # the details answer...
        (at(20), "state"),  # ...moved the payment...
        (at(20), "delivery"),  # ...and the change was queued for the host
        (at(30), "webhook"),  # received, then applied:
        (at(30), "event"),
    ]
    conflict = entries[-1]
    assert conflict.conflict and conflict.tone == "bad"
    assert "failure_after_authorisation" in conflict.detail and "CNY 11.30" in conflict.detail
    assert "delivered 2 times" in entries[-2].detail
    assert entries[4].tone == "bad" and "9 attempts; RuntimeError" in entries[4].detail
    assert entries[0].title == "(new) → Created"


def test_the_path_taken_is_every_move_in_order() -> None:
    assert path_taken(story()) == [
        (None, "Created"),
        ("Created", "Pending"),
        ("Pending", "Authorised"),
    ]


def refunded_story() -> PaymentStory:
    """The story above, with one refund: stored, received, then refunded by its webhook,
    a refusal after that (a conflict), and the host told of the refund."""
    base = story()
    move, hook = "transition", "webhook"
    history = (
        RefundHistory("request", "Requested", None, move, None, None, RS.REQUESTED, None, at(50)),
        RefundHistory("api", "received", None, move, None, RS.REQUESTED, RS.RECEIVED, None, at(60)),
        RefundHistory(hook, "REFUND", True, move, None, RS.RECEIVED, RS.REFUNDED, None, at(70)),
        RefundHistory(
            hook, "REFUND", False, "conflict", "refusal_after_refund", None, None, "nope", at(80)
        ),
    )  # fmt: skip
    refund = Refund(
        id=1, payment_reference="order-1", number=1, reference="order-1-refund-1",
        psp_reference="R1", amount=Amount(376, "CNY"), state=RS.REFUNDED, reason="RETURN",
        refusal_reason=None, external=False, disputed=False, conflicts=1, created_at=at(50),
        updated_at=at(80), history=history,
    )  # fmt: skip
    item = replace(
        base.webhooks[0], id=8, event_code="REFUND", success=True, psp_reference="R1",
        merchant_reference="order-1-refund-1", deliveries=1, received_at=at(70),
    )  # fmt: skip
    change = RefundChange(
        "order-1-refund-1", "R1", Amount(376, "CNY"), RS.RECEIVED, RS.REFUNDED, external=False
    )
    told = replace(
        base.deliveries[0], id=3, event_id="mpp_1_refund_1_refunded", to_state=A,
        status="delivered", attempts=1, last_error=None, created_at=at(70), delivered_at=at(75),
        kind="refund", refund=change,
    )  # fmt: skip
    return replace(
        base,
        webhooks=[*base.webhooks, item],
        deliveries=[*base.deliveries, told],
        refunds=[refund],
    )


def test_refund_facts_are_on_the_line_with_their_moves_and_conflicts() -> None:
    entries = [e for e in timeline(refunded_story()) if e.at >= at(50)]
    assert [(e.at, e.lane, e.title) for e in entries] == [
        (at(50), "refund", "Refund order-1-refund-1: (new) → Requested"),
        (at(60), "refund", "Refund order-1-refund-1: Requested → Received"),
        (at(70), "webhook", "Webhook REFUND success=true received"),
        (at(70), "refund", "Refund order-1-refund-1: Received → Refunded"),
        (at(75), "delivery", "on_state_change(refund order-1-refund-1: Refunded) delivered"),
        (at(80), "refund", "Refund order-1-refund-1: REFUND success=false conflict"),
    ]
    assert "refund order-1-refund-1 (R1)" in entries[2].detail
    assert [e.tone for e in entries[:2]] == ["wait", "wait"] and entries[3].tone == "ok"
    assert entries[3].detail == "by webhook (REFUND success=true), CNY 3.76"
    refused = entries[-1]
    assert refused.conflict and refused.tone == "bad"
    assert refused.detail.startswith("conflict: refusal_after_refund; ")
    assert refused.detail.endswith("; nope")
