"""Explicit, immutable configuration.

``Settings`` is built once by the host (or by ``Settings.from_env()``) and handed
to ``create_app``. Every check runs in ``__post_init__`` so a bad configuration
fails at start-up with a message that names the setting and says how to fix it.
"""

from __future__ import annotations

import binascii
import hmac
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Literal

from miniprogram_pay.domain.money import SUPPORTED_CURRENCIES
from miniprogram_pay.errors import ConfigurationError

__all__ = ["ENV_PREFIX", "Secret", "Settings"]

ENV_PREFIX = "MINIPROGRAM_PAY_"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./miniprogram_pay.db"
DEFAULT_WECHAT_API_URL = "https://api.weixin.qq.com"
ADYEN_TEST_URL = "https://checkout-test.adyen.com/v{version}"
ADYEN_LIVE_URL = "https://{prefix}-checkout-live.adyenpayments.com/checkout/v{version}"
MIN_SESSION_SECRET_BYTES = 16


class Secret:
    """A string that never prints: ``repr`` and ``str`` show a placeholder.

    Read the value with ``reveal()`` at the one place that needs it, and compare
    with ``matches()``, which runs in constant time.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def matches(self, candidate: str) -> bool:
        return hmac.compare_digest(self._value.encode(), candidate.encode())

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and self.matches(other._value)

    def __hash__(self) -> int:
        return hash(("Secret", len(self._value)))


def _secret(value: str | Secret | None) -> Secret:
    if isinstance(value, Secret):
        return value
    return Secret(value or "")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the plugin needs, passed explicitly; nothing is read from globals.

    Example::

        settings = Settings(
            adyen_api_key=Secret("AQE..."),
            adyen_merchant_account="MyShopCN",
            adyen_hmac_keys=(Secret("44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"),),
            adyen_return_url="https://shop.example/return",
            webhook_username=Secret("adyen"), webhook_password=Secret("..."),
            wechat_app_id="wx1234567890abcdef", wechat_app_secret=Secret("..."),
            session_secret=Secret("a long random string"),
        )

    Plain strings are accepted at run time and wrapped, so a secret is never
    stored printable; the annotations ask for ``Secret`` so type checkers keep
    call sites explicit.
    """

    adyen_api_key: Secret
    adyen_merchant_account: str
    adyen_hmac_keys: tuple[Secret, ...]
    adyen_return_url: str
    webhook_username: Secret
    webhook_password: Secret
    wechat_app_id: str
    wechat_app_secret: Secret
    session_secret: Secret
    adyen_environment: Literal["test", "live"] = "test"
    adyen_live_prefix: str | None = None
    adyen_api_version: int = 71
    adyen_checkout_url: str | None = None
    adyen_country_code: str = "CN"
    adyen_timeout_seconds: float = 10.0
    adyen_max_retries: int = 2
    wechat_api_url: str = DEFAULT_WECHAT_API_URL
    wechat_timeout_seconds: float = 5.0
    database_url: str = DEFAULT_DATABASE_URL
    database_schema: str | None = None
    # PostgreSQL connections kept per process; as many again may open under load.
    database_pool_size: int = 10
    # Migrate the schema at start-up; None means yes on SQLite, no on PostgreSQL.
    auto_migrate: bool | None = None
    admin_api_key: Secret | None = None
    allow_client_amount: bool = False
    session_ttl_seconds: int = 7200
    max_body_bytes: int = 64 * 1024
    rate_limit_per_minute: int = 0
    inbox_max_attempts: int = 8
    stale_after_seconds: int = 1800
    amount_limits: Mapping[str, tuple[int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Accept plain strings from callers and wrap them, so a secret is never
        # stored unwrapped even when the host forgot to wrap it.
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _SECRET_FIELDS:
                object.__setattr__(self, f.name, _secret(value))
        if self.admin_api_key is not None and not isinstance(self.admin_api_key, Secret):
            object.__setattr__(self, "admin_api_key", _secret(self.admin_api_key))
        keys = self.adyen_hmac_keys
        if isinstance(keys, str | Secret):
            keys = (keys,)
        object.__setattr__(self, "adyen_hmac_keys", tuple(_secret(k) for k in keys))
        object.__setattr__(self, "amount_limits", dict(self.amount_limits))
        _validate(self)

    @property
    def checkout_url(self) -> str:
        """Adyen Checkout base URL including the API version, without a trailing slash."""
        if self.adyen_checkout_url:
            return self.adyen_checkout_url.rstrip("/")
        if self.adyen_environment == "live":
            return ADYEN_LIVE_URL.format(
                prefix=self.adyen_live_prefix, version=self.adyen_api_version
            )
        return ADYEN_TEST_URL.format(version=self.adyen_api_version)

    @property
    def is_live(self) -> bool:
        return self.adyen_environment == "live"

    def hmac_key_bytes(self) -> list[bytes]:
        """The HMAC keys, hex-decoded (validated at start-up)."""
        return [binascii.unhexlify(k.reveal()) for k in self.adyen_hmac_keys]

    def amount_limit(self, currency: str) -> tuple[int, int]:
        """Inclusive (min, max) minor units accepted for ``currency``."""
        return self.amount_limits.get(currency, (1, 10**12))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Read ``MINIPROGRAM_PAY_*`` variables; keyword overrides win."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for name, (attr, parse) in _ENV_FIELDS.items():
            raw = env.get(ENV_PREFIX + name)
            if raw is None or raw == "":
                continue
            try:
                values[attr] = parse(raw)
            except ValueError as exc:
                raise ConfigurationError(
                    f"{ENV_PREFIX}{name} is not valid ({exc}); fix its value."
                ) from None
        values.update(overrides)
        missing = [
            ENV_PREFIX + name
            for name, (attr, _) in _ENV_FIELDS.items()
            if attr in _REQUIRED and attr not in values
        ]
        if missing:
            raise ConfigurationError(
                "Missing required settings: "
                + ", ".join(missing)
                + ". Set them in the environment."
            )
        return cls(**values)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))
        return f"Settings({shown})"


_SECRET_FIELDS = frozenset(
    {
        "adyen_api_key",
        "webhook_username",
        "webhook_password",
        "wechat_app_secret",
        "session_secret",
    }
)
_REQUIRED = frozenset(
    {
        "adyen_api_key",
        "adyen_merchant_account",
        "adyen_hmac_keys",
        "adyen_return_url",
        "webhook_username",
        "webhook_password",
        "wechat_app_id",
        "wechat_app_secret",
        "session_secret",
    }
)


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _parse_keys(raw: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in raw.split(",") if k.strip())


def _str(raw: str) -> str:
    return raw.strip()


_ENV_FIELDS: dict[str, tuple[str, Callable[[str], object]]] = {
    "ADYEN_API_KEY": ("adyen_api_key", _str),
    "ADYEN_MERCHANT_ACCOUNT": ("adyen_merchant_account", _str),
    "ADYEN_HMAC_KEYS": ("adyen_hmac_keys", _parse_keys),
    "ADYEN_ENVIRONMENT": ("adyen_environment", _str),
    "ADYEN_LIVE_PREFIX": ("adyen_live_prefix", _str),
    "ADYEN_API_VERSION": ("adyen_api_version", int),
    "ADYEN_CHECKOUT_URL": ("adyen_checkout_url", _str),
    "ADYEN_RETURN_URL": ("adyen_return_url", _str),
    "ADYEN_COUNTRY_CODE": ("adyen_country_code", _str),
    "WEBHOOK_USERNAME": ("webhook_username", _str),
    "WEBHOOK_PASSWORD": ("webhook_password", _str),
    "WECHAT_APP_ID": ("wechat_app_id", _str),
    "WECHAT_APP_SECRET": ("wechat_app_secret", _str),
    "WECHAT_API_URL": ("wechat_api_url", _str),
    "DATABASE_URL": ("database_url", _str),
    "DATABASE_SCHEMA": ("database_schema", _str),
    "DATABASE_POOL_SIZE": ("database_pool_size", int),
    "AUTO_MIGRATE": ("auto_migrate", _parse_bool),
    "SESSION_SECRET": ("session_secret", _str),
    "ADMIN_API_KEY": ("admin_api_key", _str),
    "ALLOW_CLIENT_AMOUNT": ("allow_client_amount", _parse_bool),
    "SESSION_TTL_SECONDS": ("session_ttl_seconds", int),
    "MAX_BODY_BYTES": ("max_body_bytes", int),
    "RATE_LIMIT_PER_MINUTE": ("rate_limit_per_minute", int),
    "STALE_AFTER_SECONDS": ("stale_after_seconds", int),
}


def _fail(setting: str, problem: str, fix: str) -> None:
    raise ConfigurationError(f"{ENV_PREFIX}{setting}: {problem}. {fix}")


def _validate(s: Settings) -> None:
    _validate_adyen(s)
    _validate_webhook(s)
    _validate_wechat(s)
    _validate_limits(s)


def _validate_adyen(s: Settings) -> None:
    if not s.adyen_api_key:
        _fail("ADYEN_API_KEY", "is empty", "Copy the API key of your web service user.")
    if not s.adyen_merchant_account:
        _fail("ADYEN_MERCHANT_ACCOUNT", "is empty", "Set your Adyen merchant account name.")
    if s.adyen_environment not in ("test", "live"):
        _fail("ADYEN_ENVIRONMENT", f"must be 'test' or 'live', not {s.adyen_environment!r}", "")
    if s.adyen_environment == "live" and not s.adyen_live_prefix and not s.adyen_checkout_url:
        _fail(
            "ADYEN_LIVE_PREFIX",
            "is required when ADYEN_ENVIRONMENT=live",
            "Copy the live URL prefix from Developers > API URLs in your Customer Area.",
        )
    if s.adyen_api_version < 67:
        _fail(
            "ADYEN_API_VERSION",
            f"{s.adyen_api_version} is too old",
            "Use 67 or later (71 is tested).",
        )
    if not s.adyen_return_url or len(s.adyen_return_url) > 8000:
        _fail(
            "ADYEN_RETURN_URL", "must be a URL of 1 to 8000 characters", "Adyen requires returnUrl."
        )
    if len(s.adyen_country_code) != 2 or not s.adyen_country_code.isalpha():
        _fail("ADYEN_COUNTRY_CODE", "must be a two-letter ISO 3166 code", "Use CN for WeChat Pay.")


def _validate_webhook(s: Settings) -> None:
    if not s.adyen_hmac_keys:
        _fail(
            "ADYEN_HMAC_KEYS",
            "no HMAC key is configured, so webhooks could not be verified",
            "Generate an HMAC key on the webhook in your Customer Area and set it here.",
        )
    for position, key in enumerate(s.adyen_hmac_keys, start=1):
        raw = key.reveal()
        try:
            decoded = binascii.unhexlify(raw)
        except (binascii.Error, ValueError):
            decoded = b""
        if not decoded:
            _fail(
                "ADYEN_HMAC_KEYS",
                f"key number {position} is not a hex string",
                "Paste the key exactly as the Customer Area shows it (64 hex characters).",
            )
    if not s.webhook_username or not s.webhook_password:
        _fail(
            "WEBHOOK_USERNAME/WEBHOOK_PASSWORD",
            "Basic-auth credentials are missing",
            "Set the same username and password as on the webhook in your Customer Area.",
        )


def _validate_wechat(s: Settings) -> None:
    if not s.wechat_app_id:
        _fail("WECHAT_APP_ID", "is empty", "Use your Mini Program's AppID (wx...).")
    if not s.wechat_app_secret:
        _fail("WECHAT_APP_SECRET", "is empty", "Use your Mini Program's AppSecret.")
    if len(s.session_secret.reveal().encode()) < MIN_SESSION_SECRET_BYTES:
        _fail(
            "SESSION_SECRET",
            f"must be at least {MIN_SESSION_SECRET_BYTES} bytes",
            "Generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'",
        )


def _validate_limits(s: Settings) -> None:
    for currency, (low, high) in s.amount_limits.items():
        if currency not in SUPPORTED_CURRENCIES:
            _fail("amount_limits", f"{currency} is not a WeChat Pay currency", "")
        if not 0 < low <= high:
            _fail("amount_limits", f"{currency} limits must satisfy 0 < min <= max", "")
    if s.max_body_bytes < 1024:
        _fail("MAX_BODY_BYTES", "must be at least 1024", "")
    if s.session_ttl_seconds <= 0:
        _fail("SESSION_TTL_SECONDS", "must be positive", "")
    if not 1 <= s.database_pool_size <= 100:
        _fail(
            "DATABASE_POOL_SIZE",
            "must be between 1 and 100",
            "Each process opens up to twice this many PostgreSQL connections.",
        )
    if s.adyen_max_retries < 0 or s.adyen_timeout_seconds <= 0:
        _fail("adyen_max_retries/adyen_timeout_seconds", "must be >= 0 and > 0", "")
