"""The control API under ``/_sandbox/``: steer scenarios and faults, inspect, reset.

Unauthenticated by design: the sandbox only ever listens on a developer's
machine or a CI box. Never expose it publicly.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from miniprogram_pay.sandbox.faults import FAULT_KINDS, FAULT_TARGETS
from miniprogram_pay.sandbox.responses import json_response
from miniprogram_pay.sandbox.scenarios import (
    DEFAULT_REFUND_SCENARIO,
    REFUND_SCENARIOS,
    SCENARIOS,
    UnknownScenarioError,
    is_payment_status,
    refund_scenario_steps,
    scenario_steps,
)
from miniprogram_pay.sandbox.state import Sandbox, SandboxPayment
from miniprogram_pay.sandbox.validation import RefundRequest, RequestInvalid, parse_refund

__all__ = ["control_routes"]

DEFAULT_DRAIN_SECONDS = 10.0


class BadControlRequest(Exception):
    pass


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise BadControlRequest("the body must be a JSON object")
    return body


def _bad(message: str, status: int = 400) -> Response:
    return json_response({"error": message}, status)


class ControlApi:
    """JSON endpoints over one ``Sandbox``."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    async def list_scenarios(self, request: Request) -> Response:
        scenarios = [
            {"name": s.name, "summary": s.summary, "steps": list(scenario_steps(s))}
            for s in SCENARIOS.values()
        ]
        refunds = [
            {"name": s.name, "summary": s.summary, "steps": list(refund_scenario_steps(s))}
            for s in REFUND_SCENARIOS.values()
        ]
        return json_response(
            {
                "scenarios": scenarios,
                "default": self.sandbox.config.default_scenario,
                "overrides": self.sandbox.scenario_overrides,
                "refundScenarios": refunds,
                "refundDefault": DEFAULT_REFUND_SCENARIO,
                "refundOverrides": self.sandbox.refund_scenario_overrides,
            }
        )

    async def set_scenario(self, request: Request) -> Response:
        reference, scenario = await _reference_and_scenario(request)
        try:
            self.sandbox.set_scenario(reference, scenario)
        except UnknownScenarioError as exc:
            raise BadControlRequest(str(exc)) from None
        return json_response({"reference": reference, "scenario": scenario})

    async def set_refund_scenario(self, request: Request) -> Response:
        reference, scenario = await _reference_and_scenario(request)
        try:
            self.sandbox.set_refund_scenario(reference, scenario)
        except UnknownScenarioError as exc:
            raise BadControlRequest(str(exc)) from None
        return json_response({"reference": reference, "scenario": scenario})

    async def list_faults(self, request: Request) -> Response:
        return json_response({"faults": [f.to_dict() for f in self.sandbox.faults.pending()]})

    async def add_fault(self, request: Request) -> Response:
        body = await _json_object(request)
        kind, target = str(body.get("kind")), str(body.get("target", "any"))
        if kind not in FAULT_KINDS or target not in FAULT_TARGETS:
            raise BadControlRequest(
                f"kind must be one of {FAULT_KINDS}, target one of {FAULT_TARGETS}"
            )
        count, processed, delay = (
            body.get("count", 1),
            body.get("processed"),
            body.get("delay_seconds"),
        )
        if type(count) is not int or count < 1 or not isinstance(processed, bool | None):
            raise BadControlRequest("count must be an integer >= 1, processed a boolean")
        if delay is not None and (not isinstance(delay, int | float) or delay < 0):
            raise BadControlRequest("delay_seconds must be a number >= 0")
        fault = self.sandbox.inject_fault(
            kind,  # type: ignore[arg-type]  # checked against FAULT_KINDS above
            count=count,
            target=target,  # type: ignore[arg-type]
            processed=processed,
            delay_seconds=None if delay is None else float(delay),
        )
        return json_response(fault.to_dict(), 201)

    async def clear_faults(self, request: Request) -> Response:
        self.sandbox.faults.clear()
        return json_response({"faults": []})

    async def list_payments(self, request: Request) -> Response:
        return json_response({"payments": [p.to_dict() for p in self.sandbox.payments.values()]})

    async def get_payment(self, request: Request) -> Response:
        payment = self.sandbox.payments.get(request.path_params["psp_reference"])
        if payment is None:
            return _bad("no such payment", 404)
        return json_response(payment.to_dict())

    async def complete_payment(self, request: Request) -> Response:
        """Settle a payment without a details call (the shopper closed the Mini Program)."""
        payment = self.sandbox.payments.get(request.path_params["psp_reference"])
        if payment is None:
            return _bad("no such payment", 404)
        status = (await _json_object(request)).get("paymentStatus", "requestPayment:ok")
        if not is_payment_status(status):
            raise BadControlRequest("paymentStatus must start with 'requestPayment:'")
        await self.sandbox.settle(payment, status)
        return json_response(payment.to_dict())

    async def release_payment(self, request: Request) -> Response:
        """Send the webhooks a ``webhook-held`` payment keeps back."""
        payment = self.sandbox.payments.get(request.path_params["psp_reference"])
        if payment is None:
            return _bad("no such payment", 404)
        if not self.sandbox.release(payment):
            return _bad("this payment holds no webhooks (scenario webhook-held, once settled)", 409)
        return json_response(payment.to_dict())

    async def list_calls(self, request: Request) -> Response:
        """The merchant's calls to the simulated Adyen, about one payment when asked."""
        query = request.query_params
        psp, reference = query.get("pspReference"), query.get("reference")
        calls = self.sandbox.calls.calls
        if psp is not None or reference is not None:
            calls = self.sandbox.calls.about(psp_reference=psp, merchant_reference=reference)
        return json_response({"calls": [call.to_dict() for call in calls]})

    async def refund_payment(self, request: Request) -> Response:
        """A refund made in Adyen's Customer Area: only its webhooks reach the merchant."""
        payment = self.sandbox.payments.get(request.path_params["psp_reference"])
        if payment is None:
            return _bad("no such payment", 404)
        body = await _json_object(request)
        scenario = body.get("scenario", DEFAULT_REFUND_SCENARIO)
        if not isinstance(scenario, str):
            raise BadControlRequest("scenario must be a string")
        wanted = _customer_area_request(payment, body, self.sandbox)
        try:
            refund = await self.sandbox.refund_in_customer_area(
                payment, wanted.amount, scenario=scenario, reference=wanted.reference
            )
        except UnknownScenarioError as exc:
            raise BadControlRequest(str(exc)) from None
        return json_response(refund.to_dict(), 201)

    async def list_webhooks(self, request: Request) -> Response:
        return json_response({"deliveries": [d.to_dict() for d in self.sandbox.deliveries]})

    async def drain(self, request: Request) -> Response:
        timeout = (await _json_object(request)).get("timeout_seconds", DEFAULT_DRAIN_SECONDS)
        if not isinstance(timeout, int | float) or timeout <= 0:
            raise BadControlRequest("timeout_seconds must be a positive number")
        try:
            await self.sandbox.drain(float(timeout))
        except TimeoutError as exc:
            return _bad(str(exc), 504)
        return json_response({"drained": True})

    async def reset(self, request: Request) -> Response:
        await self.sandbox.reset()
        return json_response({"reset": True})


async def _reference_and_scenario(request: Request) -> tuple[str, str]:
    body = await _json_object(request)
    reference, scenario = body.get("reference"), body.get("scenario")
    if not isinstance(reference, str) or not isinstance(scenario, str):
        raise BadControlRequest("send {'reference': str, 'scenario': str}")
    return reference, scenario


def _customer_area_request(
    payment: SandboxPayment, body: dict[str, Any], sandbox: Sandbox
) -> RefundRequest:
    """A Customer Area refund's amount and reference, checked like a /refunds body.

    The amount defaults to the payment's whole amount.
    """
    config = sandbox.config
    wanted = {"amount": body.get("amount") or payment.amount, "reference": body.get("reference")}
    checked = {k: v for k, v in wanted.items() if v is not None}
    try:
        return parse_refund({**checked, "merchantAccount": config.merchant_account}, config)
    except RequestInvalid as exc:
        raise BadControlRequest(exc.message) from None


async def _bad_request(request: Request, exc: Exception) -> Response:
    return _bad(str(exc))


EXCEPTION_HANDLERS = {BadControlRequest: _bad_request}


def control_routes(sandbox: Sandbox) -> list[Route]:
    """Routes under ``/_sandbox/`` (``/_sandbox/wechat/pay`` lives with the WeChat simulator)."""
    api = ControlApi(sandbox)
    payment = "/_sandbox/payments/{psp_reference}"
    return [
        Route("/_sandbox/scenarios", api.list_scenarios, methods=["GET"]),
        Route("/_sandbox/scenarios", api.set_scenario, methods=["POST"]),
        Route("/_sandbox/faults", api.list_faults, methods=["GET"]),
        Route("/_sandbox/faults", api.add_fault, methods=["POST"]),
        Route("/_sandbox/faults", api.clear_faults, methods=["DELETE"]),
        Route("/_sandbox/payments", api.list_payments, methods=["GET"]),
        Route(payment, api.get_payment, methods=["GET"]),
        Route(payment + "/complete", api.complete_payment, methods=["POST"]),
        Route(payment + "/refunds", api.refund_payment, methods=["POST"]),
        Route(payment + "/release", api.release_payment, methods=["POST"]),
        Route("/_sandbox/calls", api.list_calls, methods=["GET"]),
        Route("/_sandbox/refund-scenarios", api.set_refund_scenario, methods=["POST"]),
        Route("/_sandbox/webhooks", api.list_webhooks, methods=["GET"]),
        Route("/_sandbox/drain", api.drain, methods=["POST"]),
        Route("/_sandbox/reset", api.reset, methods=["POST"]),
    ]
