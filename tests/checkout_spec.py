"""Adyen's official Checkout v71 OpenAPI document, to check bodies against its schemas.

It is read where CI has it, ``../shared/reference/adyen-openapi/`` next to the
repository root, and never copied into the project.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT.parent / "shared" / "reference" / "adyen-openapi" / "CheckoutService-v71.json"


@functools.cache
def checkout_spec() -> dict[str, Any]:
    if not SPEC.is_file():
        raise FileNotFoundError(f"Adyen's Checkout OpenAPI document is expected at {SPEC}")
    spec: dict[str, Any] = json.loads(SPEC.read_text(encoding="utf-8"))
    return spec


@functools.cache
def _validator(schema: str) -> Draft202012Validator:
    # OpenAPI 3.1 schemas are JSON Schema 2020-12; refs point into the document's components.
    root = {"$ref": f"#/components/schemas/{schema}", "components": checkout_spec()["components"]}
    return Draft202012Validator(root)


def schema_errors(schema: str, instance: object) -> list[str]:
    """What is wrong with ``instance`` as Adyen's ``schema`` (empty when it conforms)."""
    return sorted(error.message for error in _validator(schema).iter_errors(instance))


def example(name: str) -> Any:
    """One of the document's own examples, by its key under ``components.examples``."""
    return checkout_spec()["components"]["examples"][name]["value"]
