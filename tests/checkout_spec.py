"""Adyen's official Checkout v71 OpenAPI document, to check bodies against its schemas.

It is read where the machines have it (``shared/reference/adyen-openapi/``
beside the storage, or the path in ``MINIPROGRAM_PAY_TEST_ADYEN_OPENAPI``) and
never copied into the project; the tests that need it are skipped without it.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parents[1]
SPEC_ENV = "MINIPROGRAM_PAY_TEST_ADYEN_OPENAPI"
SPEC_NAME = Path("shared") / "reference" / "adyen-openapi" / "CheckoutService-v71.json"
# Where the document may be: named by the environment, beside the storage (a
# checkout next to ``shared/``), or at the machines' shared folder (a clone elsewhere).
SPEC_CANDIDATES = (ROOT.parent / SPEC_NAME, Path("/work") / SPEC_NAME)


def spec_path() -> Path | None:
    named = os.environ.get(SPEC_ENV)
    candidates = (Path(named),) if named else SPEC_CANDIDATES
    return next((path for path in candidates if path.is_file()), None)


@functools.cache
def checkout_spec() -> dict[str, Any]:
    path = spec_path()
    if path is None:
        pytest.skip(f"Adyen's Checkout OpenAPI document is not here (set {SPEC_ENV})")
    spec: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
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
