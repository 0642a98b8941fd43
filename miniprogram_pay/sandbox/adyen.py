"""Simulated Adyen Checkout: ``POST /adyen/v{N}/payments``, ``/payments/details``
and ``/payments/{pspReference}/refunds``.

Each call runs the same pipeline: an injected fault that rejects up front,
``X-API-Key``, JSON, ``Idempotency-Key``, the real work, then a fault that
fires after the work (the payment exists, the idempotent answer is stored).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from miniprogram_pay.sandbox.calls import AdyenCall
from miniprogram_pay.sandbox.config import ResponseStyle
from miniprogram_pay.sandbox.faults import Endpoint, Fault, render_fault
from miniprogram_pay.sandbox.idempotency import MAX_KEY_LENGTH, Lookup, fingerprint
from miniprogram_pay.sandbox.responses import json_response, service_error, unauthorized
from miniprogram_pay.sandbox.scenarios import UnknownScenarioError
from miniprogram_pay.sandbox.state import Sandbox, SandboxPayment, SandboxRefund
from miniprogram_pay.sandbox.validation import (
    PAYMENT_METHOD_TYPE,
    RequestInvalid,
    parse_details,
    parse_payment,
    parse_refund,
)

__all__ = [
    "adyen_routes",
    "answer_shape",
    "details_body",
    "names_payment_data",
    "payment_body",
    "refund_body",
]

Processed = tuple[Response, Fault | None]
Process = Callable[[Any], Awaitable[Processed]]
WX_PARAM_NAMES = ("appId", "timeStamp", "nonceStr", "package", "signType", "paySign")


# Adyen removed the top-level ``redirect`` (and ``paymentData``) of the /payments answer in v67.
FIRST_VERSION_WITHOUT_TOP_LEVEL_REDIRECT = 67
Shape = Literal["sdk", "seed", "redirect-action"]


def answer_shape(style: ResponseStyle, version: int) -> Shape:
    """The shape of the /payments answer in ``style`` for API ``version``.

    ``sdk``: an sdk action with paymentData and ``sdkData``. ``seed``: the seed
    document's pre-v67 shape (top-level paymentData and ``redirect.data``), which the
    ``redirect`` style gives below v67 only. ``redirect-action``: a v67+ redirect action
    with ``data`` and no paymentData (the v71 schema forbids it there).
    """
    if style == "sdk":
        return "sdk"
    if style == "redirect" and version < FIRST_VERSION_WITHOUT_TOP_LEVEL_REDIRECT:
        return "seed"
    return "redirect-action"


def names_payment_data(style: ResponseStyle, version: int) -> bool:
    """Whether that answer carries paymentData. Without it ``/payments/details`` cannot
    name the payment, and Adyen learns the shopper's choice from WeChat
    (``/_sandbox/wechat/pay``) instead."""
    return answer_shape(style, version) != "redirect-action"


def payment_body(
    payment: SandboxPayment, style: ResponseStyle, version: int = 71
) -> dict[str, Any]:
    """The /payments answer for API ``version``, shaped as ``answer_shape`` says."""
    wx = {name: payment.wx_params[name] for name in WX_PARAM_NAMES}
    body: dict[str, Any] = {
        "resultCode": "Pending",
        "pspReference": payment.psp_reference,
        "merchantReference": payment.merchant_reference,
    }
    action: dict[str, Any] = {"paymentMethodType": PAYMENT_METHOD_TYPE}
    shape = answer_shape(style, version)
    if shape == "sdk":
        action.update(type="sdk", paymentData=payment.payment_data, sdkData=wx)
    elif shape == "seed":
        action.update(type="redirect", paymentData=payment.payment_data)
        body["paymentData"] = payment.payment_data
        body["redirect"] = {"data": wx, "method": "GET"}
    else:
        action.update(type="redirect", data=wx)
    body["action"] = action
    return body


def details_body(payment: SandboxPayment) -> dict[str, Any]:
    """A PaymentDetailsResponse for the payment's settled result."""
    body: dict[str, Any] = {
        "resultCode": payment.result_code,
        "pspReference": payment.psp_reference,
        "merchantReference": payment.merchant_reference,
        "amount": payment.amount,
        "additionalData": {"wechatpay.openid": payment.openid},
    }
    if payment.refusal_reason is not None:
        body["refusalReason"] = payment.refusal_reason
    return body


def refund_body(refund: SandboxRefund, merchant_account: str) -> dict[str, Any]:
    """A PaymentRefundResponse: ``status`` is always ``received``, the outcome comes later."""
    body: dict[str, Any] = {
        "merchantAccount": merchant_account,
        "paymentPspReference": refund.payment_psp_reference,
        "pspReference": refund.psp_reference,
        "status": "received",
        "amount": refund.amount,
    }
    if refund.reference is not None:
        body["reference"] = refund.reference
    if refund.reason is not None:
        body["merchantRefundReason"] = refund.reason
    return body


def _invalid(exc: RequestInvalid) -> Processed:
    return service_error(exc.status, exc.code, exc.message, exc.error_type), None


class AdyenSimulator:
    """The Checkout endpoints bound to one ``Sandbox``."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.config = sandbox.config

    async def payments(self, request: Request) -> Response:
        version: int = request.path_params["version"]
        return await self._handle(
            request, "payments", lambda body: self._create_payment(body, version)
        )

    async def details(self, request: Request) -> Response:
        return await self._handle(request, "details", self._submit_details)

    async def refunds(self, request: Request) -> Response:
        psp_reference: str = request.path_params["psp_reference"]
        return await self._handle(
            request, "refunds", lambda body: self._refund(psp_reference, body)
        )

    async def _handle(self, request: Request, endpoint: Endpoint, process: Process) -> Response:
        raw = await request.body()
        call = self._open_call(request, endpoint, raw)
        response, fault = await self._respond(request, endpoint, process, call, raw)
        call.answer(response, fault)
        return response

    async def _respond(
        self, request: Request, endpoint: Endpoint, process: Process, call: AdyenCall, raw: bytes
    ) -> tuple[Response, str | None]:
        fault = self.sandbox.faults.take(endpoint)
        if fault is not None and not fault.processed:
            return await self._faulted(fault, None, call), fault.kind
        if not self._authorized(request):
            return unauthorized(), None
        try:
            body = json.loads(raw)
        except ValueError:
            return service_error(400, "000", "Unable to parse message.", "validation"), None
        response, late_fault = await self._idempotent(request, endpoint, body, process, call)
        call.learn(response)
        fault = fault or late_fault
        if fault is None:
            return response, None
        return await self._faulted(fault, response, call), fault.kind

    async def _faulted(self, fault: Fault, real: Response | None, call: AdyenCall) -> Response:
        call.fault = fault.kind  # shown while a timeout keeps the caller waiting
        return await self._render(fault, real)

    def _open_call(self, request: Request, endpoint: Endpoint, raw: bytes) -> AdyenCall:
        """Record the call at once, with the payment it names when the request tells."""
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        body = body if isinstance(body, dict) else {}
        payment: SandboxPayment | None = None
        if endpoint == "details" and isinstance(body.get("paymentData"), str):
            payment = self.sandbox.payment_by_data(body["paymentData"])
        elif endpoint == "refunds":
            payment = self.sandbox.payments.get(request.path_params["psp_reference"])
        reference = body.get("reference") if endpoint == "payments" else None
        return self.sandbox.calls.open(
            endpoint,
            idempotency_key=request.headers.get("idempotency-key"),
            psp_reference=payment.psp_reference if payment is not None else None,
            merchant_reference=(
                payment.merchant_reference
                if payment is not None
                else (reference if isinstance(reference, str) else None)
            ),
        )

    def _authorized(self, request: Request) -> bool:
        received = request.headers.get("x-api-key", "").encode("utf-8", "replace")
        return hmac.compare_digest(received, self.config.api_key.encode("utf-8"))

    async def _render(self, fault: Fault, real: Response | None) -> Response:
        return await render_fault(
            fault, real=real, timeout_seconds=self.config.timeout_fault_seconds
        )

    async def _idempotent(
        self, request: Request, endpoint: Endpoint, body: Any, process: Process, call: AdyenCall
    ) -> Processed:
        key = request.headers.get("idempotency-key")
        if key is None:
            return await process(body)
        if not key or len(key) > MAX_KEY_LENGTH:
            return _invalid(RequestInvalid(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} chars."))
        store = self.sandbox.idempotency
        # The same key for a refund of another payment is another request, not a replay.
        scope = request.path_params.get("psp_reference")
        digest = fingerprint(body if scope is None else [scope, body])
        lookup, replay = store.begin(endpoint, key, digest)
        if lookup is Lookup.REPLAY and replay is not None:
            call.replayed = True
            return replay, None
        if lookup is Lookup.MISMATCH:
            message = "Idempotency-Key was already used with a different request body."
            return _invalid(RequestInvalid(message))
        if lookup is Lookup.IN_PROGRESS:
            message = "request already processed or in progress"
            return _invalid(RequestInvalid(message, code="704", status=409))
        try:
            response, fault = await process(body)
        except BaseException:
            # Cancelled or crashed before an answer existed: let a retry run afresh.
            store.abandon(endpoint, key)
            raise
        store.finish(endpoint, key, response)
        return response, fault

    async def _create_payment(self, body: Any, version: int) -> Processed:
        try:
            payment_request = parse_payment(body, self.config)
            scenario = self.sandbox.scenario_for(
                payment_request.reference, payment_request.order_reference
            )
        except RequestInvalid as exc:
            return _invalid(exc)
        except UnknownScenarioError as exc:
            return _invalid(RequestInvalid(str(exc)))
        payment = self.sandbox.create_payment(payment_request, scenario)
        style = self.config.response_style
        payment.payment_data_sent = names_payment_data(style, version)
        body_out = payment_body(payment, style, version)
        return json_response(body_out), self.sandbox.first_call_fault(payment)

    async def _submit_details(self, body: Any) -> Processed:
        try:
            details_request = parse_details(body)
        except RequestInvalid as exc:
            return _invalid(exc)
        if details_request.payment_data is None:
            # Nothing else in a Mini Program's details names the payment (no
            # redirectResult, no payload): its result comes by webhook.
            message = "Required field 'paymentData' is not provided: no payment matches details."
            return _invalid(RequestInvalid(message))
        payment = self.sandbox.payment_by_data(details_request.payment_data)
        if payment is None:
            return _invalid(RequestInvalid("Invalid payment data: no such payment."))
        payment.details_calls += 1
        await self.sandbox.settle(payment, details_request.payment_status)
        return json_response(details_body(payment)), None

    async def _refund(self, psp_reference: str, body: Any) -> Processed:
        try:
            refund_request = parse_refund(body, self.config)
        except RequestInvalid as exc:
            return _invalid(exc)
        payment = self.sandbox.payments.get(psp_reference)
        if payment is None:
            # Adyen's code for an unknown original pspReference is unconfirmed.
            message = "Original pspReference is not a payment of this merchant account."
            return _invalid(RequestInvalid(message))
        try:
            scenario = self.sandbox.refund_scenario_for(refund_request.reference, payment)
        except UnknownScenarioError as exc:
            return _invalid(RequestInvalid(str(exc)))
        refund = await self.sandbox.refund(payment, refund_request, scenario)
        return json_response(refund_body(refund, self.config.merchant_account), 201), None


def adyen_routes(sandbox: Sandbox) -> list[Route]:
    """Routes under ``/adyen/v{N}``: v71 shapes, and the seed's pre-v67 one below v67."""
    simulator = AdyenSimulator(sandbox)
    return [
        Route("/adyen/v{version:int}/payments", simulator.payments, methods=["POST"]),
        Route("/adyen/v{version:int}/payments/details", simulator.details, methods=["POST"]),
        Route(
            "/adyen/v{version:int}/payments/{psp_reference}/refunds",
            simulator.refunds,
            methods=["POST"],
        ),
    ]
