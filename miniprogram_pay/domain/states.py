"""Payment states and their precedence.

A payment only ever moves up this order. The order is the reconciliation rule:
the final state is the highest state implied by any trustworthy event received,
so it cannot depend on the order in which events arrive.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["FINAL_STATES", "PaymentState"]


class PaymentState(StrEnum):
    CREATED = "Created"
    PENDING = "Pending"
    ERROR = "Error"
    REFUSED = "Refused"
    AUTHORISED = "Authorised"

    @property
    def rank(self) -> int:
        """Position in the precedence order Created < Pending < Error < Refused < Authorised."""
        return _RANK[self]

    @property
    def is_final(self) -> bool:
        """True when Adyen has given a definitive answer (it may still be upgraded)."""
        return self in FINAL_STATES


_RANK = {state: position for position, state in enumerate(PaymentState)}
FINAL_STATES = frozenset({PaymentState.ERROR, PaymentState.REFUSED, PaymentState.AUTHORISED})
