"""A payment's time line: everything in it, oldest first, cause before effect at one instant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from miniprogram_pay.domain.money import Amount
from miniprogram_pay.domain.states import PaymentState
from miniprogram_pay.office.timeline import path_taken, timeline
from miniprogram_pay.storage.admin import InboxRecord, PaymentStory
from miniprogram_pay.storage.records import (
    EventRecord,
    OutboxRecord,
    PaymentRecord,
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
