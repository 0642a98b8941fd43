"""The HTTP contract as pydantic models: every request body and every answer, declared once.

Requests are validated by their model; the first problem becomes an
``InvalidRequestError`` whose code and message come from the field's ``Refusal``
(a stable code, a fixed message, never the value sent). Answers are built as
models and rendered with ``render``. ``http/openapi.py`` generates the OpenAPI
document from these models and the routes, so the document cannot drift.

Adding a request or an answer: declare a model here (fields in snake_case, the
JSON spelling is camelCase through the alias generator), give each request field
a ``Refusal``, and name the models on the route (``http/routes.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    Strict,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import ErrorDetails, PydanticCustomError

from miniprogram_pay.adyen.checkout import PAYMENT_METHOD_TYPE
from miniprogram_pay.domain.money import MAX_MINOR_UNITS, SUPPORTED_CURRENCIES, Amount
from miniprogram_pay.domain.refunds import RefundState
from miniprogram_pay.domain.states import PaymentState
from miniprogram_pay.errors import InvalidQueryError, InvalidRequestError
from miniprogram_pay.services.workers import LoopState

__all__ = [
    "AmountBody",
    "DetailsAnswer",
    "DetailsRequest",
    "ErrorResponse",
    "HealthAnswer",
    "NotificationRequeueAnswer",
    "NotificationRequeueRequest",
    "NotificationsAnswer",
    "OutboxAnswer",
    "OutboxRequeueAnswer",
    "OutboxRequeueRequest",
    "PaymentAnswer",
    "PaymentRequest",
    "PaymentStoryAnswer",
    "PaymentsAnswer",
    "ReadyAnswer",
    "RefundAnswer",
    "RefundEntry",
    "RefundRequest",
    "RefundsBody",
    "Refusal",
    "SessionAnswer",
    "SessionRequest",
    "StaleAnswer",
    "StatusAnswer",
    "has_nul",
    "parse",
    "path_reference",
    "query_status",
    "render",
]

REFERENCE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,79}$"
MAX_CODE_CHARS = 128
MAX_PAYMENT_STATUS_CHARS = 256
MAX_PAYMENT_DATA_CHARS = 8192
MAX_ORDER_ID_CHARS = 128
MAX_REFERENCE_CHARS = 80
MAX_REQUEUE_IDS = 1000
MAX_REFUND_REASON_CHARS = 32
MAX_IDEMPOTENCY_KEY_CHARS = 64
# Row ids are INTEGER columns: a larger id could never match, and PostgreSQL refuses it.
MAX_ROW_ID = 2**31 - 1
PAYMENT_STATUS_PREFIX = "requestPayment:"
NOTIFICATION_STATUSES = ("applied", "failed", "ignored", "orphan", "parked", "received")
OUTBOX_STATUSES = ("delivered", "parked", "pending")


@dataclass(frozen=True)
class Refusal:
    """How a field that fails validation is refused: its stable code and message.

    ``when`` picks another code and message for some of pydantic's error types
    (``missing``, ``string_type``, ...); everything else gets ``code``/``message``.
    """

    code: str
    message: str
    when: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    def codes(self) -> set[str]:
        return {self.code, *(code for code, _ in self.when.values())}


MODEL_REFUSAL = Refusal("invalid_field", "is not valid")
_NOT_A_STRING = ("invalid_field", "must be a string")


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        frozen=True,
    )


class _Request(_Model):
    # Bodies may carry the host's own fields (an order id, a coupon): the order
    # resolver sees the whole body, so unknown fields pass. Only the JSON spelling
    # (camelCase) is read.
    model_config = ConfigDict(extra="allow", validate_by_name=False)
    # A problem the model as a whole reports (a before-validator), and its code.
    refusal: ClassVar[Refusal] = MODEL_REFUSAL


# -- requests ----------------------------------------------------------------------------


def _printable_ascii(value: str) -> str:
    if not (value.isascii() and value.isprintable()):
        raise ValueError("not printable ASCII")
    return value


def _printable_ascii_or_none(value: str | None) -> str | None:
    return None if value is None else _printable_ascii(value)


def _printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError("not printable")
    return value


def has_nul(value: str) -> bool:
    """True when ``value`` holds a NUL: PostgreSQL refuses it in text, and nothing needs it."""
    return "\x00" in value


def _without_nul(value: str | None) -> str | None:
    if value is not None and has_nul(value):
        raise ValueError("contains NUL")
    return value


CODE_REFUSAL = Refusal(
    "invalid_code",
    "is not a jsCode",
    when={
        kind: ("missing_code", "is required: the jsCode from wx.login()")
        for kind in ("missing", "string_type", "string_too_short")
    },
)


class SessionRequest(_Request):
    """``POST /session``: the one-time code from ``wx.login()``."""

    code: Annotated[
        str,
        Field(min_length=1, max_length=MAX_CODE_CHARS, description="The code from wx.login()."),
        AfterValidator(_printable_ascii),
        CODE_REFUSAL,
    ]


CURRENCY_REFUSAL = Refusal("invalid_currency", "is not a currency WeChat Pay accepts")
VALUE_REFUSAL = Refusal(
    "invalid_amount",
    "must be a positive integer",
    when={
        kind: ("invalid_amount", "must be an integer number of minor units")
        for kind in ("missing", "int_type")
    },
)


def _supported(currency: str) -> str:
    if currency not in SUPPORTED_CURRENCIES:
        raise ValueError("unsupported currency")
    return currency


class AmountBody(_Model):
    """An amount in minor units (``{"currency": "CNY", "value": 1130}`` is CNY 11.30)."""

    model_config = ConfigDict(extra="ignore")

    currency: Annotated[
        str,
        Field(json_schema_extra={"enum": sorted(SUPPORTED_CURRENCIES)}),
        AfterValidator(_supported),
        CURRENCY_REFUSAL,
    ]
    value: Annotated[
        int,
        Strict(),
        Field(gt=0, le=MAX_MINOR_UNITS, description="Minor units (fen for CNY)."),
        VALUE_REFUSAL,
    ]

    def to_amount(self) -> Amount:
        return Amount(self.value, self.currency)

    @classmethod
    def of(cls, amount: Amount) -> AmountBody:
        return cls(currency=amount.currency, value=amount.value)


METHOD_REFUSAL = Refusal("invalid_payment_method", f"must be {PAYMENT_METHOD_TYPE!r}")
OPENID_REFUSAL = Refusal("openid_mismatch", "does not belong to this session")


class PaymentMethod(_Model):
    model_config = ConfigDict(extra="ignore")

    type: Annotated[Literal["wechatpayMiniProgram"], METHOD_REFUSAL]
    openid: Annotated[
        str | None,
        Field(default=None, description="Optional; if sent, the session's openid."),
        OPENID_REFUSAL,
    ]

    @field_validator("openid")
    @classmethod
    def _the_sessions(cls, openid: str | None, info: ValidationInfo) -> str | None:
        expected = (info.context or {}).get("openid")
        if openid is not None and openid != expected:
            raise ValueError("not the session's openid")
        return openid


REFERENCE_REFUSAL = Refusal(
    "invalid_reference",
    "must be 1-80 letters, digits or ._:/-",
    when={"string_type": _NOT_A_STRING},
)
Reference = Annotated[
    str | None,
    Field(default=None, pattern=REFERENCE_PATTERN, description="The merchant's reference."),
    REFERENCE_REFUSAL,
]


class PaymentRequest(_Request):
    """``POST /payments``: start a WeChat Pay payment.

    With an order resolver, ``orderId`` (or any field of your own) names the
    order and the resolver decides reference and amount; ``reference`` and
    ``amount`` are read only without one (``ALLOW_CLIENT_AMOUNT``), and an
    ``amount`` sent with a resolver must equal the order's.
    """

    payment_method: Annotated[PaymentMethod, METHOD_REFUSAL]
    order_id: Annotated[
        str | None,
        Field(default=None, max_length=MAX_ORDER_ID_CHARS, description="Your order's id."),
        Refusal("invalid_field", "must be a string of at most 128 characters"),
    ]
    reference: Reference
    amount: Annotated[
        AmountBody | None,
        Field(default=None),
        Refusal("invalid_amount", "must be an object with currency and value"),
    ]


DETAILS_REFUSAL = Refusal("missing_reference", "reference or paymentData is required")
STATUS_REFUSAL = Refusal(
    "invalid_payment_status",
    "must be the res.errMsg of wx.requestPayment (requestPayment:...)",
    when={
        kind: ("invalid_payment_status", "is too long or not printable")
        for kind in ("string_too_long", "value_error")
    },
)


class PaymentDetails(_Model):
    model_config = ConfigDict(extra="ignore")

    payment_status: Annotated[
        str,
        Field(
            max_length=MAX_PAYMENT_STATUS_CHARS,
            pattern=f"^{PAYMENT_STATUS_PREFIX}",
            description="res.errMsg of wx.requestPayment, verbatim.",
        ),
        AfterValidator(_printable),
        STATUS_REFUSAL,
    ]


class DetailsRequest(_Request):
    """``POST /payments/details``: what ``wx.requestPayment`` answered."""

    refusal: ClassVar[Refusal] = DETAILS_REFUSAL

    reference: Reference
    payment_data: Annotated[
        str | None,
        Field(default=None, min_length=1, max_length=MAX_PAYMENT_DATA_CHARS),
        AfterValidator(_without_nul),
        Refusal(
            "invalid_payment_data",
            "has an invalid length",
            when={
                "string_type": _NOT_A_STRING,
                "value_error": ("invalid_payment_data", "contains a NUL character"),
            },
        ),
    ]
    details: Annotated[PaymentDetails, Refusal(STATUS_REFUSAL.code, STATUS_REFUSAL.message)]

    @model_validator(mode="before")
    @classmethod
    def _identified(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if data.get("reference") is None and data.get("paymentData") is None:
            raise PydanticCustomError("missing_reference", "no reference")
        return data


REASON_REFUSAL = Refusal(
    "invalid_refund_reason",
    "must be one of FRAUD, CUSTOMER REQUEST, RETURN, DUPLICATE, OTHER",
)
KEY_REFUSAL = Refusal(
    "invalid_idempotency_key", f"must be 1-{MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII characters"
)


class RefundRequest(_Request):
    """``POST /admin/payments/{reference}/refunds``: give money back.

    Without ``amount``, everything still refundable is refunded. The same
    ``idempotencyKey`` again returns the same refund (and asks Adyen again, with the
    same Idempotency-Key, if its answer was lost).
    """

    amount: Annotated[
        AmountBody | None,
        Field(default=None, description="In the payment's currency; default: all that is left."),
        Refusal("invalid_amount", "must be an object with currency and value"),
    ]
    reason: Annotated[
        str | None,
        Field(
            default=None,
            max_length=MAX_REFUND_REASON_CHARS,
            description="Adyen's merchantRefundReason: FRAUD, CUSTOMER REQUEST, RETURN, "
            "DUPLICATE or OTHER (customer_request is read as CUSTOMER REQUEST).",
        ),
        REASON_REFUSAL,
    ]
    idempotency_key: Annotated[
        str | None,
        Field(
            default=None,
            min_length=1,
            max_length=MAX_IDEMPOTENCY_KEY_CHARS,
            description="Yours: the same key returns the same refund.",
        ),
        AfterValidator(_printable_ascii_or_none),
        KEY_REFUSAL,
    ]


# -- answers -----------------------------------------------------------------------------

# ISO 8601 with the offset spelled out (``+00:00``), as the contract always had it.
Timestamp = Annotated[
    datetime,
    PlainSerializer(lambda moment: moment.isoformat(), return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


class MoneyBody(_Model):
    """An amount in an answer: minor units, zero included."""

    currency: str
    value: int = Field(ge=0, description="Minor units (fen for CNY).")

    @classmethod
    def of(cls, value: int, currency: str) -> MoneyBody:
        return cls(currency=currency, value=value)


class ErrorDetail(_Model):
    code: str = Field(description="Stable: switch on it.")
    message: str = Field(description="For people; may change; never contains what was sent.")
    psp_reference: str | None = Field(default=None, description="Adyen's, for support.")
    retryable: bool | None = Field(default=None, description="The same request may succeed later.")
    parameter: str | None = Field(
        default=None, description="The query parameter refused (admin lists)."
    )
    allowed: list[str] | None = Field(
        default=None, description="The values (or parameter names) that parameter accepts."
    )
    refundable: MoneyBody | None = Field(
        default=None, description="A refused refund: what is left to refund."
    )


class ErrorResponse(_Model):
    """Every error, from every endpoint."""

    error: ErrorDetail


class SessionAnswer(_Model):
    token: str = Field(description="Send as Authorization: Bearer <token>.")
    expires_in: int = Field(alias="expires_in", description="Seconds.")


class RequestPaymentParams(_Model):
    """Pass to ``wx.requestPayment()`` as they are."""

    model_config = ConfigDict(alias_generator=None)

    appId: str | None = None  # WeChat's own spelling
    timeStamp: str
    nonceStr: str
    package: str
    signType: str
    paySign: str


class Redirect(_Model):
    data: RequestPaymentParams


class DetailsAnswer(_Model):
    reference: str
    state: PaymentState
    result_code: str | None
    psp_reference: str | None
    refusal_reason: str | None


class PaymentAnswer(_Model):
    reference: str = Field(
        description="The attempt's own Adyen reference: send it to /payments/details."
    )
    order_reference: str = Field(description="The order's reference (the same for every attempt).")
    attempt: int = Field(description="The attempt's number in the order: 1, 2, ...")
    order_state: PaymentState = Field(description="Authorised when one attempt is.")
    state: PaymentState
    result_code: str | None
    psp_reference: str | None
    amount: AmountBody
    payment_data: str | None
    redirect: Redirect | None = Field(description="null once the payment is Authorised.")
    action: dict[str, Any] | None = Field(description="Adyen's action, unchanged.")


class Conflict(_Model):
    kind: str | None = Field(
        description="failure_after_authorisation, amount_mismatch, duplicate_authorisation, ..."
    )
    attempt: str | None = Field(default=None, description="The attempt's reference.")
    source: str
    event: str
    success: bool | None
    at: Timestamp


class HistoryEntry(_Model):
    from_: PaymentState | None = Field(alias="from")
    to: PaymentState
    source: str
    event: str
    at: Timestamp


class EventEntry(_Model):
    source: str
    event: str
    success: bool | None
    outcome: str
    at: Timestamp


class RefundHistoryEntry(_Model):
    from_: RefundState | None = Field(alias="from")
    to: RefundState | None = Field(description="null: the fact moved nothing.")
    source: str = Field(description="request, api or webhook.")
    event: str
    success: bool | None
    outcome: str = Field(description="transition, recorded, conflict or unexpected.")
    conflict: str | None
    at: Timestamp


class RefundEntry(_Model):
    reference: str | None = Field(description="The refund's own (ours: <payment>-refund-<n>).")
    psp_reference: str | None = Field(description="Adyen's, once known.")
    amount: MoneyBody | None
    state: RefundState | None = Field(description="null: an external refund with no state yet.")
    reason: str | None
    refusal_reason: str | None
    external: bool = Field(description="Made in Adyen's Customer Area.")
    disputed: bool
    created_at: Timestamp
    updated_at: Timestamp
    history: list[RefundHistoryEntry]


class RefundsBody(_Model):
    """A payment's refunds, summed up in its currency (docs/refunds.md, the ledger)."""

    refunded: MoneyBody = Field(description="Refunded: the money went to the shopper.")
    pending: MoneyBody = Field(description="Requested or Received: the outcome is not known yet.")
    returned: MoneyBody = Field(description="Failed or Reversed: the money came back to you.")
    refundable: MoneyBody = Field(description="What a new refund may take now.")
    disputed: bool = Field(description="A refund's facts disagree: no refund is admitted.")
    items: list[RefundEntry]


class AttemptEntry(DetailsAnswer):
    """One attempt of the order: one Adyen payment."""

    number: int
    kept: bool = Field(description="This attempt pays the order.")
    created_at: Timestamp
    updated_at: Timestamp
    conflicts: list[Conflict]
    history: list[HistoryEntry]
    events: list[EventEntry]
    refunds: RefundsBody = Field(description="This attempt's refunds.")


class StatusAnswer(DetailsAnswer):
    """The order: its state (Authorised when one attempt is, else its current attempt's),
    the summary, history and events of the attempt that decides it (the kept one, else
    the current one), every conflict of every attempt, and each attempt."""

    reference: str = Field(description="The order's reference.")
    amount: AmountBody
    created_at: Timestamp
    updated_at: Timestamp
    conflicts: list[Conflict]
    history: list[HistoryEntry]
    events: list[EventEntry]
    attempts: list[AttemptEntry] = Field(description="Oldest first.")
    refunds: RefundsBody = Field(
        description="The refunds of the attempt the summary shows (the kept one, if any)."
    )


class RefundAnswer(_Model):
    """The refund as stored once Adyen has it (``Received``), and the payment's refunds."""

    payment_reference: str
    refund: RefundEntry
    refunds: RefundsBody


class StalePayment(_Model):
    reference: str
    state: PaymentState
    psp_reference: str | None
    updated_at: Timestamp


class StaleAnswer(_Model):
    older_than_seconds: int
    payments: list[StalePayment]


class WebhookAmount(_Model):
    """An amount as a webhook item names it: any currency, zero included (not checked)."""

    currency: str | None
    value: int | None


class StoredNotification(_Model):
    id: int
    status: str
    detail: str | None
    merchant_reference: str | None
    event_code: str | None
    success: bool | None
    deliveries: int
    attempts: int
    psp_reference: str | None = None
    amount: WebhookAmount | None = Field(default=None, description="As Adyen sent it.")
    received_at: Timestamp | None = None
    next_attempt_at: Timestamp | None = None
    applied_at: Timestamp | None = None


NEXT_CURSOR = Field(description="Pass it as ``cursor`` for the next (older) page; null: the last.")


class NotificationsAnswer(_Model):
    notifications: list[StoredNotification]
    next_cursor: str | None = NEXT_CURSOR


class PaymentSummary(_Model):
    reference: str
    state: PaymentState
    amount: AmountBody
    psp_reference: str | None
    result_code: str | None
    conflicts: int = Field(description="Events that disagreed with the payment's state.")
    created_at: Timestamp
    updated_at: Timestamp


class PaymentsAnswer(_Model):
    payments: list[PaymentSummary] = Field(description="Newest first.")
    next_cursor: str | None = NEXT_CURSOR


class StoryPayment(PaymentSummary):
    refusal_reason: str | None


class StoryEvent(_Model):
    """Something that happened to the payment: an API answer, a webhook, a shopper's report."""

    key: str = Field(description="Stable id of the event (a webhook's: Adyen's dedup key).")
    source: str
    event: str
    success: bool | None
    outcome: str = Field(description="What the state machine did with it.")
    conflict: str | None = Field(description="failure_after_authorisation, amount_mismatch, ...")
    reason: str | None
    psp_reference: str | None
    amount: WebhookAmount | None
    at: Timestamp


class HealthAnswer(_Model):
    status: Literal["ok"]
    loops: dict[str, LoopState] = Field(
        description="The background loops (inbox, outbox): running, or off when the host "
        "runs none; a stalled or dead loop answers 503 workers_unavailable instead."
    )
    states: dict[str, int] | None = Field(
        default=None, description="Payments per state. With X-Admin-Key only."
    )
    outbox: dict[str, int] | None = Field(
        default=None, description="State changes for the host per status. With X-Admin-Key only."
    )
    notifications: dict[str, int] | None = Field(
        default=None, description="Webhook items per status. With X-Admin-Key only."
    )
    stale_payments: int | None = Field(
        default=None,
        description="Payments Created or Pending longer than STALE_AFTER_SECONDS. "
        "With X-Admin-Key only.",
    )
    deliveries_in_flight: int | None = Field(
        default=None, description="Hook calls running in this process. With X-Admin-Key only."
    )


class ReadyAnswer(_Model):
    status: Literal["ready"]
    schema_revision: str = Field(description="The database's schema revision.")
    loops: dict[str, LoopState] = Field(description="The background loops: running, or off.")


class OutboxEntry(_Model):
    id: int
    event_id: str
    reference: str
    from_: PaymentState | None = Field(alias="from")
    to: PaymentState
    status: str = Field(description="pending, delivered or parked.")
    attempts: int
    last_error: str | None
    created_at: Timestamp
    next_attempt_at: Timestamp
    delivered_at: Timestamp | None
    requeued_at: Timestamp | None
    kind: Literal["payment", "refund"] = Field(description="What changed.")
    refund: dict[str, Any] | None = Field(
        description="A refund's change: reference, pspReference, amount, previous, state."
    )


class OutboxAnswer(_Model):
    outbox: list[OutboxEntry]
    next_cursor: str | None = NEXT_CURSOR


class PaymentStoryAnswer(_Model):
    """Everything stored about one payment, read at one moment, each list oldest first.

    A payment is one attempt at Adyen: its transitions and events are that attempt's.
    """

    payment: StoryPayment
    transitions: list[HistoryEntry]
    events: list[StoryEvent]
    webhooks: list[StoredNotification] = Field(
        description="Webhook items naming the payment's reference or pspReference, and its "
        "refunds' (REFUND & co. naming a refund's pspReference or reference)."
    )
    deliveries: list[OutboxEntry] = Field(
        description="The payment's and its refunds' changes for on_state_change, and their "
        "delivery."
    )
    refunds: RefundsBody = Field(
        description="The refund ledger and each refund with its history, as the status has it."
    )


IDS_REFUSAL = Refusal("invalid_ids", f"must be a list of at most {MAX_REQUEUE_IDS} positive ids")
RequeueIds = Annotated[
    list[Annotated[int, Strict(), Field(ge=1, le=MAX_ROW_ID)]] | None,
    Field(default=None, max_length=MAX_REQUEUE_IDS, description="Only these; default: all."),
    IDS_REFUSAL,
]


class OutboxRequeueRequest(_Request):
    """``POST /admin/outbox/requeue``: parked state changes to offer to the host again."""

    ids: RequeueIds


class OutboxRequeueAnswer(_Model):
    requeued: list[OutboxEntry]


class NotificationRequeueRequest(_Request):
    """``POST /admin/notifications/requeue``: parked or ignored webhook items to apply again."""

    status: Annotated[
        Literal["parked", "ignored"],
        Field(description="parked: retried; ignored: applied if ours under today's settings."),
        Refusal("invalid_status", "must be 'parked' or 'ignored'"),
    ]
    ids: RequeueIds


class KeptNotification(_Model):
    id: int
    detail: str = Field(description="Why the item is still not ours.")


class NotificationRequeueAnswer(_Model):
    requeued: list[int]
    kept: list[KeptNotification]


class NotificationRequestItem(_Model):
    model_config = ConfigDict(alias_generator=None, extra="allow")

    pspReference: str  # Adyen's own spelling
    merchantReference: str | None = None
    merchantAccountCode: str
    eventCode: str
    success: Literal["true", "false"]
    amount: AmountBody | None = None
    additionalData: dict[str, Any] = Field(description="Carries hmacSignature.")


class NotificationItem(_Model):
    model_config = ConfigDict(alias_generator=None)

    NotificationRequestItem: NotificationRequestItem


class NotificationRequest(_Model):
    """Adyen's standard notification (validated by ``adyen/webhooks.py``, described here)."""

    model_config = ConfigDict(alias_generator=None)

    live: Literal["true", "false"]
    notificationItems: list[NotificationItem]


# -- path and query values ---------------------------------------------------------------


def path_reference(value: str) -> str:
    """A reference from the URL path (``/payments/{reference}``), ``/`` included.

    The Mini Program sends it ``encodeURIComponent``-ed (``%2F``); Starlette hands
    it over decoded. One no payment can have is refused before the database sees it.
    """
    if not 0 < len(value) <= MAX_REFERENCE_CHARS or has_nul(value):
        raise InvalidRequestError(
            "reference must be 1-80 characters, without NUL", code="invalid_reference"
        )
    return value


def query_status(value: str | None, allowed: tuple[str, ...]) -> str | None:
    """The ``status`` filter of an admin list: absent, or one of ``allowed``."""
    if value is None or value in allowed:
        return value
    raise InvalidQueryError(
        "status must be one of " + ", ".join(allowed),
        parameter="status",
        allowed=allowed,
        code="invalid_status",
    )


# -- parsing and rendering ---------------------------------------------------------------

RequestModel = TypeVar("RequestModel", bound=_Request)


def parse(model: type[RequestModel], body: Mapping[str, Any], **context: Any) -> RequestModel:
    """``body`` validated by ``model``; the first problem as an ``InvalidRequestError``."""
    try:
        return model.model_validate(body, context=context)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        raise _refusal_error(model, first) from None


def _refusal_error(model: type[BaseModel], error: ErrorDetails) -> InvalidRequestError:
    path, refusal = _refusal_at(model, error["loc"])
    if refusal is None:
        refusal = getattr(model, "refusal", MODEL_REFUSAL) if not path else MODEL_REFUSAL
    code, message = refusal.when.get(error["type"], (refusal.code, refusal.message))
    # A field's message follows its name; the model's own is a whole sentence.
    return InvalidRequestError(f"{'.'.join(path)} {message}" if path else message, code=code)


def _refusal_at(
    model: type[BaseModel], loc: tuple[int | str, ...]
) -> tuple[list[str], Refusal | None]:
    """The JSON path of ``loc`` and the innermost ``Refusal`` declared along it."""
    path: list[str] = []
    found: Refusal | None = None
    current: Any = model
    for part in loc:
        fields = getattr(current, "model_fields", None)
        info = None
        if fields is not None:
            info = next(
                (f for name, f in fields.items() if part in (name, f.alias)),
                None,
            )
        if info is None:
            path.append(str(part))
            break
        path.append(info.alias or str(part))
        found = next((m for m in info.metadata if isinstance(m, Refusal)), found)
        current = _model_of(info.annotation)
    return path, found


def _model_of(annotation: Any) -> Any:
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def render(answer: BaseModel) -> dict[str, Any]:
    """An answer as JSON-ready data, in the contract's spelling.

    Fields given (even as None) are rendered; optional fields left out stay out.
    """
    return answer.model_dump(mode="json", by_alias=True, exclude_unset=True)


def request_refusals(model: type[BaseModel]) -> set[str]:
    """Every error code validating ``model`` can answer (for the OpenAPI document)."""
    own = vars(model).get("refusal")
    codes = set(own.codes()) if isinstance(own, Refusal) else set()
    for info in model.model_fields.values():
        for meta in info.metadata:
            if isinstance(meta, Refusal):
                codes |= meta.codes()
        nested = _model_of(info.annotation)
        if nested is not None:
            codes |= request_refusals(nested) - {MODEL_REFUSAL.code}
    return codes
