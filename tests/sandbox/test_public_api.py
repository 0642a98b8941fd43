"""The sandbox's front door and configuration checks."""

from __future__ import annotations

from typing import Any

import pytest

import miniprogram_pay.sandbox as sandbox_package
from miniprogram_pay.errors import ConfigurationError
from miniprogram_pay.sandbox import SandboxConfig, create_sandbox_app


def test_exported_members_are_the_public_api() -> None:
    assert sorted(sandbox_package.__all__) == [
        "DEFAULT_HMAC_KEY",
        "DEFAULT_PAYSIGN_KEY",
        "DeliveryAttempt",
        "Fault",
        "REFUND_SCENARIOS",
        "RefundScenario",
        "SCENARIOS",
        "Sandbox",
        "SandboxConfig",
        "SandboxPayment",
        "SandboxRefund",
        "Scenario",
        "WebhookDelivery",
        "create_sandbox_app",
        "hmac_sha256_pay_sign",
        "md5_pay_sign",
        "verify_pay_sign",
    ]
    for name in sandbox_package.__all__:
        assert getattr(sandbox_package, name) is not None


def test_the_app_exposes_its_sandbox() -> None:
    app = create_sandbox_app(SandboxConfig())
    assert app.state.sandbox.config == SandboxConfig()


def test_defaults() -> None:
    config = SandboxConfig()
    assert len(config.hmac_keys[0]) == 64
    assert len(config.paysign_key) == 32
    assert config.response_style == "sdk"
    assert config.webhook_url is None


def test_secrets_stay_out_of_repr() -> None:
    text = repr(SandboxConfig())
    for secret in ("sandbox-api-key", "sandbox-app-secret", SandboxConfig().paysign_key):
        assert secret not in text


@pytest.mark.parametrize(
    "overrides",
    [
        {"hmac_keys": ()},
        {"hmac_keys": ("not hex",)},
        {"response_style": "xml"},
        {"default_scenario": "nope"},
        {"api_key": ""},
        {"webhook_retry_delays": (-1.0,)},
        {"webhook_timeout_seconds": 0},
    ],
)
def test_bad_configuration_fails_at_start_up(overrides: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match=r"SandboxConfig\."):
        SandboxConfig(**overrides)
