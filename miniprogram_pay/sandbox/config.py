"""The sandbox's configuration: credentials it expects and quirks it simulates.

The defaults are the sandbox's own well-known test credentials. Point the
merchant's ``Settings`` at the same values (see ``docs/sandbox.md``).
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass, field
from typing import Literal

from miniprogram_pay.errors import ConfigurationError
from miniprogram_pay.sandbox.scenarios import SCENARIOS

__all__ = [
    "DEFAULT_HMAC_KEY",
    "DEFAULT_PAYSIGN_KEY",
    "ResponseStyle",
    "SandboxConfig",
]

# Well-known test values: they only ever sign sandbox traffic.
DEFAULT_HMAC_KEY = "22FAB43EAC23B4B5B664EBDB616491A608FEB29508E45CADA8DB183C56A9B1A9"
DEFAULT_PAYSIGN_KEY = "Ukx4vBr14f0iPEWcJ2quAPX9hz8V4NV8"

ResponseStyle = Literal["redirect", "action", "sdk"]
_RESPONSE_STYLES = ("redirect", "action", "sdk")


@dataclass(frozen=True, kw_only=True)
class SandboxConfig:
    """Everything the simulated Adyen and WeChat need.

    Example::

        config = SandboxConfig(
            webhook_url="http://127.0.0.1:8000/pay/webhooks/adyen",
            hmac_keys=(DEFAULT_HMAC_KEY, "280F...62EB"),  # a second key enables rotated-key
        )
        app = create_sandbox_app(config)
    """

    # Secrets stay out of repr (and so out of logs), even though these are test values.
    api_key: str = field(default="sandbox-api-key", repr=False)
    merchant_account: str = "SandboxMerchantCN"
    hmac_keys: tuple[str, ...] = field(default=(DEFAULT_HMAC_KEY,), repr=False)
    webhook_url: str | None = None
    webhook_username: str = "adyen"
    webhook_password: str = field(default="sandbox-webhook-password", repr=False)
    wechat_app_id: str = "wxsandbox0000000001"
    wechat_app_secret: str = field(default="sandbox-app-secret", repr=False)
    paysign_key: str = field(default=DEFAULT_PAYSIGN_KEY, repr=False)
    response_style: ResponseStyle = "sdk"
    live: bool = False
    default_scenario: str = "authorised"
    webhook_delay_seconds: float = 0.0
    # Adyen retries at ~9, 18, 27 s and then from a queue; shortened so tests stay fast.
    webhook_retry_delays: tuple[float, ...] = (0.2, 0.5, 1.0)
    # Adyen gives a webhook endpoint 10 s to answer.
    webhook_timeout_seconds: float = 10.0
    # How long a "timeout" fault keeps the caller waiting: longer than any sane client timeout.
    timeout_fault_seconds: float = 30.0
    # Openids are HMAC(openid_secret, shopper): stable per shopper, unguessable without it.
    openid_secret: str = field(default="sandbox-openid-secret", repr=False)
    # The console's defaults: the plugin it drives (None: webhook_url's base, else
    # http://127.0.0.1:8000/pay) and the X-Admin-Key it reads the host's view with.
    merchant_api_url: str | None = None
    merchant_admin_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # A tuple given as a list still works; a frozen dataclass needs object.__setattr__.
        object.__setattr__(self, "hmac_keys", tuple(self.hmac_keys))
        object.__setattr__(self, "webhook_retry_delays", tuple(self.webhook_retry_delays))
        _validate(self)

    def hmac_key_bytes(self, index: int = 0) -> bytes:
        """The hex-decoded HMAC key number ``index`` (validated at start-up)."""
        return binascii.unhexlify(self.hmac_keys[index])


def _fail(field: str, problem: str, fix: str) -> None:
    raise ConfigurationError(f"SandboxConfig.{field}: {problem}. {fix}")


def _validate(config: SandboxConfig) -> None:
    if not config.hmac_keys:
        _fail("hmac_keys", "is empty", "Give at least one 64-hex-character key.")
    for position, key in enumerate(config.hmac_keys):
        try:
            decoded = binascii.unhexlify(key)
        except (binascii.Error, ValueError):
            decoded = b""
        if not decoded:
            _fail("hmac_keys", f"key {position} is not a hex string", "Use 64 hex characters.")
    if config.response_style not in _RESPONSE_STYLES:
        _fail("response_style", f"{config.response_style!r} is unknown", f"Use {_RESPONSE_STYLES}.")
    if config.default_scenario not in SCENARIOS:
        _fail("default_scenario", f"{config.default_scenario!r} is unknown", "See docs/sandbox.md.")
    if not config.api_key or not config.paysign_key or not config.wechat_app_secret:
        _fail("api_key/paysign_key/wechat_app_secret", "must not be empty", "Keep the defaults.")
    delays = (
        config.webhook_delay_seconds,
        config.timeout_fault_seconds,
        *config.webhook_retry_delays,
    )
    if any(delay < 0 for delay in delays) or config.webhook_timeout_seconds <= 0:
        _fail("*_seconds/webhook_retry_delays", "must not be negative", "Use 0 or more seconds.")
