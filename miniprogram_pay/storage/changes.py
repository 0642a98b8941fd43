"""How events change payments, inside a unit of work: lock, decide, write.

``PaymentChanges`` is the one way the package changes a payment, for an Adyen answer
(``PaymentStore.apply``) as for a batch of webhook items (``InboxStore``):

1. ``lock(references, keys)`` sends two reads: the payments, locked in reference order
   (the one global lock order: ``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's single
   ``BEGIN IMMEDIATE`` writer holds them all), and which of the event keys their event
   logs hold already. On PostgreSQL both go out with whatever the unit sent before.
2. ``apply(change)``, per event in order, decides with the pure domain against the
   payment as the events before it left it (the same row object serves them all),
   exactly as if they were applied one by one, and queues the writes.
3. ``flush()`` writes every event, transition and outbox row with one statement per
   table, and each changed payment's final values with one versioned ``UPDATE`` (the
   summed row count must equal the number of payments, or ``StaleRowError`` makes the
   whole unit run again; a lock makes that impossible, the version makes it loud; on
   PostgreSQL the statement checks itself in the server). It returns a function that
   reads the outbox rows' ids back: called after ``unit.commit()``, on PostgreSQL that
   read waits for nothing but the commit.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from miniprogram_pay.domain.events import PaymentEvent, summary_result_code
from miniprogram_pay.domain.machine import PaymentMachine
from miniprogram_pay.domain.money import Amount
from miniprogram_pay.domain.orders import AttemptView, OrderView
from miniprogram_pay.domain.reconcile import Decision, Outcome, PaymentView, decide
from miniprogram_pay.domain.states import PaymentState
from miniprogram_pay.storage.outbox import OrderChange, outbox_row, write_changes
from miniprogram_pay.storage.payment_rows import (
    ATTEMPTS,
    CHANGEABLE,
    COUNT_CONFLICT,
    DUPLICATE,
    DUPLICATE_KEY,
    INSERT_EVENTS,
    INSERT_TRANSITIONS,
    LOCK,
    LOCK_ORDERS,
    LOCK_WITH_OWNERS,
    LOGGED,
    UPDATE_ORDER,
    UPDATE_PAYMENT,
    StoredPayment,
    attempt_view,
    digest,
    fact_values,
    payment_record,
    stored_payment,
)
from miniprogram_pay.storage.records import (
    AppliedEvent,
    OutboxEvent,
    ProviderAnswer,
    TransitionRecord,
)
from miniprogram_pay.storage.sql import StaleRowError, Unit, checks_itself

__all__ = ["Change", "PaymentChanges", "with_outbox"]


@dataclass(slots=True)
class _Order:
    """A locked order, and its attempts as read (the unit's own payments read live)."""

    id: int
    reference: str
    duplicates: int
    attempts: dict[int, AttemptView] = field(default_factory=dict)
    ids: dict[int, int] = field(default_factory=dict)  # attempt number -> payment id
    changed: bool = False


@dataclass(frozen=True, slots=True)
class Change:
    """One event to apply to the payment ``reference`` (with what Adyen's answer adds)."""

    reference: str
    event: PaymentEvent
    answer: ProviderAnswer | None = None


@dataclass
class PaymentChanges:
    """The events one unit of work applies, and the writes they add up to."""

    unit: Unit
    machine: PaymentMachine
    now: datetime
    # The outbox rows' lease: this process delivers them itself (None: any process may).
    lease_seconds: float | None = None
    _payments: dict[str, StoredPayment] = field(default_factory=dict)
    _orders: dict[int, _Order] = field(default_factory=dict)
    _counted: list[dict[str, Any]] = field(default_factory=list)
    _logged: set[tuple[int, str]] = field(default_factory=set)
    _before: dict[int, int] = field(default_factory=dict)  # changed payment -> version read
    _events: list[dict[str, Any]] = field(default_factory=list)
    _transitions: list[dict[str, Any]] = field(default_factory=list)
    _outbox: list[dict[str, Any]] = field(default_factory=list)
    _reads: tuple[Any, Any, Any, Any] | None = None

    def lock(
        self, references: Iterable[str], keys: Iterable[str], owners: Iterable[str] = ()
    ) -> None:
        """Send the reads: the payments of ``references`` locked, the ``keys`` logged already.

        ``owners`` are pspReferences whose payments the unit goes on to lock for refund
        items: they are locked here, with the others, in the one global order. Locked
        later, a batch holding payment A and wanting B's refunds would deadlock with one
        holding B and wanting A's on PostgreSQL.
        """
        refs = sorted(set(references))
        psps = sorted(set(owners))
        if refs or psps:
            orders = self.unit.run(LOCK_ORDERS, {"references": refs})
            lock = (
                self.unit.run(LOCK_WITH_OWNERS, {"references": refs, "psps": psps})
                if psps
                else self.unit.run(LOCK, {"references": refs})
            )
            attempts = self.unit.run(ATTEMPTS, {"references": refs})
            logged = self.unit.run(LOGGED, {"references": refs, "keys": sorted(set(keys))})
            self._reads = (orders, lock, attempts, logged)

    def _read(self) -> None:
        if self._reads is None:
            return
        orders, lock, attempts, logged = self._reads
        self._reads = None
        self._orders = {int(i): _Order(int(i), ref, int(d)) for i, ref, d in orders.all()}
        self._payments = {p.reference: p for p in map(stored_payment, lock.all())}
        for row in attempts.all():
            order, attempt = self._orders[int(row[1])], attempt_view(row)
            order.ids[attempt.number] = int(row[0])
            order.attempts[attempt.number] = attempt
        self._logged = {(int(pid), str(key)) for pid, key in logged.all()}

    def apply(self, change: Change) -> AppliedEvent | None:
        """Decide one event and queue its writes; None when there is no such payment."""
        self._read()
        row = self._payments.get(change.reference)
        if row is None:
            return None
        event = change.event
        if (row.id, event.key) in self._logged:
            # Applied before: the event log says so. Only a missing answer is kept.
            answer = _answer_changes(row, change.answer)
            if answer:
                self._change(row, {**answer, "updated_at": self.now})
            return AppliedEvent(payment=payment_record(row), decision=None, duplicate=True)
        self._logged.add((row.id, event.key))
        decision = decide(_view(row), event, self.machine)
        self._events.append(_event_values(row.id, event, decision, self.now))
        order = self._orders.get(row.order_id)
        before, was = self._order_view(order), PaymentState(row.state)
        self._change(row, _changes(row, event, decision, change.answer, self.now))
        transition, duplicates = None, []
        if decision.moved:
            after = self._moved(order, row)
            transition = self._transition(row, was, event, decision, after)
            if order is not None and after is not None:
                for attempt in _new_duplicates(before, after):
                    duplicates.append(self._duplicate(order, attempt, after))
        return AppliedEvent(
            payment=payment_record(row),
            decision=decision,
            duplicate=False,
            transition=transition,
            duplicates=tuple(duplicates),
        )

    def _order_view(self, order: _Order | None) -> OrderView | None:
        return None if order is None else OrderView(order.reference, tuple(order.attempts.values()))

    def _moved(self, order: _Order | None, row: StoredPayment) -> OrderView | None:
        """The order once its attempt ``row`` moved to the state it now has."""
        if order is None:
            return None
        seen = order.attempts[row.attempt]
        order.attempts[row.attempt] = replace(seen, state=PaymentState(row.state))
        return self._order_view(order)

    def _duplicate(self, order: _Order, attempt: AttemptView, after: OrderView) -> str:
        """Record that ``attempt`` authorised an order another attempt pays: a conflict
        on the attempt and the order, and a change owed to the host (who refunds it)."""
        payment_id = order.ids[attempt.number]
        kept = after.kept
        assert kept is not None  # a duplicate exists only beside the kept attempt
        self._logged.add((payment_id, DUPLICATE_KEY))
        self._events.append(
            dict(
                payment_id=payment_id, key=DUPLICATE_KEY, source="order", kind=DUPLICATE,
                success=None, outcome=Outcome.CONFLICT.value, conflict=DUPLICATE,
                reason=f"attempt {kept.number} ({kept.reference}) pays the order",
                psp_reference=None, amount_value=None, amount_currency=None, at=self.now,
            )
        )  # fmt: skip
        row = self._payments.get(attempt.reference)
        if row is not None:
            self._change(row, {"conflicts": row.conflicts + 1, "updated_at": self.now})
        else:
            self._counted.append({"b_id": payment_id, "now": self.now})
        order.duplicates += 1
        order.changed = True
        authorised = PaymentState.AUTHORISED
        self._outbox.append(
            outbox_row(
                payment_id=payment_id, reference=attempt.reference, from_state=authorised,
                to_state=authorised, source="order", now=self.now,
                lease_seconds=self.lease_seconds,
                order=OrderChange(order.reference, attempt.number, after.state, DUPLICATE),
            )
        )  # fmt: skip
        return str(self._outbox[-1]["event_id"])

    def _transition(
        self,
        row: StoredPayment,
        was: PaymentState,
        event: PaymentEvent,
        decision: Decision,
        order: OrderView | None,
    ) -> TransitionRecord:
        """The history row and the outbox row of a state change, written with it.

        The outbox row commits with the change: the host hears of every change that
        happened, even if this process dies right after the commit.
        """
        now = decision.new_state
        source = event.source.value
        self._transitions.append(
            dict(
                payment_id=row.id, from_state=was.value, to_state=now.value, source=source,
                event_kind=event.kind[:64], event_key=event.key, at=self.now,
            )
        )  # fmt: skip
        told = OrderChange(
            order.reference if order else row.reference, row.attempt, order.state if order else now
        )
        self._outbox.append(
            outbox_row(
                payment_id=row.id, reference=row.reference, from_state=was, to_state=now,
                source=source, now=self.now, lease_seconds=self.lease_seconds, order=told,
            )
        )  # fmt: skip
        return TransitionRecord(was, now, source, event.kind, event.key, self.now)

    def _change(self, row: StoredPayment, changes: dict[str, Any]) -> None:
        if not changes:
            return
        self._before.setdefault(row.id, row.version)
        for name, value in changes.items():
            setattr(row, name, value)
        row.version += 1

    def flush(self) -> Callable[[], dict[str, OutboxEvent]]:
        """Send every write; read the outbox events written (by ``event_id``) with the
        function returned, after the unit's commit (``Unit.commit``) where it can."""
        if self._events:
            self.unit.run_rows(INSERT_EVENTS, self._events)
        if self._transitions:
            self.unit.run_rows(INSERT_TRANSITIONS, self._transitions)
        written = write_changes(self.unit, self._outbox)
        self.unit.run_many(COUNT_CONFLICT, self._counted)
        orders = [
            {"b_id": o.id, "duplicates": o.duplicates, "updated_at": self.now}
            for o in self._orders.values()
            if o.changed
        ]
        self.unit.run_many(UPDATE_ORDER, orders)
        changed = [p for p in self._payments.values() if p.id in self._before]
        if changed:
            updates = [
                {"b_id": p.id, "b_version": self._before[p.id], **_changeable(p)} for p in changed
            ]
            updated = self.unit.run_many(UPDATE_PAYMENT, updates)
            # PostgreSQL checks in the server: reading the count would cost a round trip.
            if not checks_itself(self.unit.dialect) and updated.rowcount != len(updates):
                raise StaleRowError
        return written


def with_outbox(applied: AppliedEvent, written: dict[str, OutboxEvent]) -> AppliedEvent:
    """``applied`` with the outbox events its change wrote, if any."""
    if applied.transition is None:
        return applied
    event_id = f"mpp_{applied.payment.id}_{applied.transition.to_state.value.lower()}"
    reported = tuple(written[i] for i in applied.duplicates if i in written)
    return replace(applied, outbox=written.get(event_id), reported=reported)


def _new_duplicates(before: OrderView | None, after: OrderView | None) -> list[AttemptView]:
    """Attempts that became duplicates of the order's kept one with this change."""
    if after is None:
        return []
    known = {a.number for a in before.duplicates} if before is not None else set()
    return [a for a in after.duplicates if a.number not in known]


def _changeable(row: StoredPayment) -> dict[str, Any]:
    return {name: getattr(row, name) for name in CHANGEABLE}


def _view(row: StoredPayment) -> PaymentView:
    decisive = None
    if row.decisive_rank is not None and row.decisive_weight is not None and row.decisive_key:
        decisive = (row.decisive_rank, row.decisive_weight, row.decisive_key)
    return PaymentView(
        state=PaymentState(row.state),
        amount=Amount(row.amount_value, row.currency),
        psp_reference=row.psp_reference,
        decisive=decisive,
        psp_confirmed=bool(row.psp_confirmed),
    )


def _event_values(
    payment_id: int, event: PaymentEvent, decision: Decision, now: datetime
) -> dict[str, Any]:
    conflict = decision.conflict.value if decision.conflict else None
    values = fact_values(event, event.source.value, decision.outcome.value, conflict, now)
    return {"payment_id": payment_id, **values}


def _changes(
    row: StoredPayment,
    event: PaymentEvent,
    decision: Decision,
    answer: ProviderAnswer | None,
    now: datetime,
) -> dict[str, Any]:
    changes: dict[str, Any] = _answer_changes(row, answer)
    if decision.fills_psp_reference:
        changes["psp_reference"] = event.psp_reference
    if decision.confirms_psp_reference:
        changes["psp_confirmed"] = True
    if decision.outcome is Outcome.CONFLICT:
        changes["conflicts"] = row.conflicts + 1
    if decision.moved:
        changes["state"] = decision.new_state.value
    if decision.takes_summary and decision.precedence is not None:
        rank, weight, key = decision.precedence
        changes.update(
            decisive_rank=rank,
            decisive_weight=weight,
            decisive_key=key,
            decisive_source=event.source.value,
            result_code=summary_result_code(event)[:32],
            refusal_reason=_reason_for(decision, event),
        )
    if changes:
        changes["updated_at"] = now
    return changes


def _reason_for(decision: Decision, event: PaymentEvent) -> str | None:
    failed = decision.implied in (PaymentState.REFUSED, PaymentState.ERROR)
    return event.reason[:255] if failed and event.reason else None


def _answer_changes(row: StoredPayment, answer: ProviderAnswer | None) -> dict[str, Any]:
    """What an Adyen /payments answer adds; stored once, never overwritten."""
    if answer is None:
        return {}
    changes: dict[str, Any] = {}
    if answer.payment_data and not row.payment_data:
        changes["payment_data"] = answer.payment_data
        changes["payment_data_hash"] = digest(answer.payment_data)
    if answer.wechat_params and not row.wechat_params:
        changes["wechat_params"] = json.dumps(answer.wechat_params, sort_keys=True)
    if answer.action and not row.action:
        changes["action"] = json.dumps(answer.action, sort_keys=True)
    return changes
