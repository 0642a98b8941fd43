"""Explicit, immutable configuration, validated by pydantic.

``Settings`` is built once by the host, in code (``Settings(...)``, keyword
arguments only, nothing read from the environment) or from ``MINIPROGRAM_PAY_*``
variables and an optional ``.env`` file (``Settings.from_env()``), and handed to
``create_app``. Every check runs while it is built, so a bad configuration fails
at start-up with a ``ConfigurationError`` that names the variable and says how
to fix it.

Adding a setting: declare a field below with its default and a ``Field``
description (types and ranges are pydantic's: ``Field(ge=..., le=...)``), put a
check that needs a better message or several fields in ``_validate_*``, and add
a row to ``docs/configuration.md``. Its variable is ``MINIPROGRAM_PAY_`` + the
field name in upper case; ``tests/http/test_settings.py`` checks that every
field is documented.
"""

from __future__ import annotations

import binascii
import difflib
import hmac
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    Field,
    ModelWrapValidatorHandler,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from miniprogram_pay.domain.money import SUPPORTED_CURRENCIES
from miniprogram_pay.errors import ConfigurationError

__all__ = ["DEFAULT_ENV_FILE", "ENV_PREFIX", "Secret", "Settings"]

logger = logging.getLogger("miniprogram_pay.config")

ENV_PREFIX = "MINIPROGRAM_PAY_"
DEFAULT_ENV_FILE = ".env"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./miniprogram_pay.db"
DEFAULT_WECHAT_API_URL = "https://api.weixin.qq.com"
ADYEN_TEST_URL = "https://checkout-test.adyen.com/v{version}"
ADYEN_LIVE_URL = "https://{prefix}-checkout-live.adyenpayments.com/checkout/v{version}"
MIN_SESSION_SECRET_BYTES = 16
HMAC_KEY_BYTES = 32
MAX_URL_CHARS = 8000
# A command to run, not a secret.
HOW_TO_GENERATE = "Generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
# Variables with the prefix that are not settings, read by the project's own tooling.
_NOT_SETTINGS = frozenset({"TEST_POSTGRES_URL", "SERVE_ORDER_RESOLVER", "SERVE_ON_STATE_CHANGE"})


class Secret(SecretStr):
    """A string that never prints: ``repr`` and ``str`` show a placeholder.

    Read the value with ``reveal()`` at the one place that needs it, and compare
    with ``matches()``, which runs in constant time. It is a pydantic
    ``SecretStr``, so models and settings accept a plain string for it.
    """

    def reveal(self) -> str:
        return self.get_secret_value()

    def matches(self, candidate: str) -> bool:
        return hmac.compare_digest(self.reveal().encode(), candidate.encode())

    def __bool__(self) -> bool:
        return bool(self.reveal())

    def __str__(self) -> str:
        return repr(self)  # "Secret('**********')", in f-strings and log lines too

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretStr) and self.matches(other.get_secret_value())

    def __hash__(self) -> int:
        return hash(("Secret", len(self.reveal())))


def _split(value: object) -> object:
    """A comma-separated string (the environment's form) as a tuple; anything else as is."""
    if isinstance(value, Secret):
        return (value,)
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


SecretList = Annotated[tuple[Secret, ...], NoDecode]


class _Unset:
    """``from_env``'s "no env_file given" (None means "read no file")."""


_UNSET = _Unset()


class Settings(BaseSettings):
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

    Plain strings are accepted and wrapped, so a secret is never stored
    printable; the annotations ask for ``Secret`` so type checkers keep call
    sites explicit. ``Settings.from_env()`` reads the same fields from
    ``MINIPROGRAM_PAY_<FIELD>`` variables.
    """

    model_config: ClassVar[SettingsConfigDict] = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        env_ignore_empty=True,
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    # -- Adyen ---------------------------------------------------------------------------
    adyen_api_key: Secret = Field(description="API key of the web service user (X-API-Key).")
    adyen_merchant_account: str = Field(description="Merchant account sent with every payment.")
    adyen_hmac_keys: SecretList = Field(description="Hex HMAC keys of the webhook.")
    adyen_return_url: str = Field(description="returnUrl Adyen requires (any URL of yours).")
    adyen_environment: Literal["test", "live"] = "test"
    adyen_live_prefix: str | None = None
    adyen_api_version: int = Field(default=71, le=1000)
    adyen_checkout_url: str | None = None
    adyen_country_code: str = "CN"
    adyen_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    adyen_max_retries: int = Field(default=2, ge=0, le=10)
    # -- webhook endpoint ------------------------------------------------------------------
    webhook_username: Secret = Field(description="Basic-auth user of the webhook.")
    webhook_password: Secret = Field(description="Basic-auth password of the webhook.")
    inbox_max_attempts: int = Field(default=8, ge=1, le=100)
    # -- telling the host (on_state_change) ------------------------------------------------
    # One call of the hook may take this long; then it counts as failed and is retried.
    hook_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    # A state change is offered to the host this long (capped backoff) before it is parked.
    outbox_park_after_seconds: int = Field(default=3 * 24 * 3600, ge=1, le=90 * 24 * 3600)
    # -- refunds ---------------------------------------------------------------------------
    # WeChat Pay refunds a payment up to a year after it; a refund asked later is refused.
    refund_window_days: int = Field(default=365, ge=1, le=3650)
    # -- WeChat ----------------------------------------------------------------------------
    wechat_app_id: str = Field(description="The Mini Program's AppID (wx...).")
    wechat_app_secret: Secret = Field(description="The Mini Program's AppSecret.")
    wechat_api_url: str = DEFAULT_WECHAT_API_URL
    wechat_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    # -- shopper sessions and the HTTP API ------------------------------------------------
    # The first secret issues tokens; every one verifies them (rotation without logouts).
    session_secrets: SecretList = ()
    # The single-secret spelling; after validation it is ``session_secrets[0]``.
    session_secret: Secret | None = None
    session_ttl_seconds: int = Field(default=7200, gt=0)
    admin_api_key: Secret | None = None
    allow_client_amount: bool = False
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    rate_limit_per_minute: int = Field(default=0, ge=0)
    stale_after_seconds: int = Field(default=1800, ge=0)
    # A Created or Pending attempt older than this is not handed out again: a new
    # attempt starts (a WeChat prepay_id lives about two hours).
    prepay_lifetime_seconds: int = Field(default=7200, ge=60, le=7 * 24 * 3600)
    # A second authorisation of a paid order is refunded in full, automatically; off:
    # it is only reported (a conflict on the order, told to the host).
    refund_duplicates: bool = True
    amount_limits: Annotated[dict[str, tuple[int, int]], NoDecode] = Field(default_factory=dict)
    # -- storage ---------------------------------------------------------------------------
    database_url: str = DEFAULT_DATABASE_URL
    database_schema: str | None = None
    # PostgreSQL writer connections (and threads) per process, beside up to 4 readers.
    database_pool_size: int = 10
    # Migrate the schema at start-up; None means yes on SQLite, no on PostgreSQL.
    auto_migrate: bool | None = None
    # SQLite only: "full" syncs the write-ahead log on every commit, so an acknowledged
    # webhook survives a power failure or an OS crash; "normal" may lose the last commits.
    sqlite_synchronous: Literal["full", "normal"] = "full"
    # -- operations: logs and metrics ------------------------------------------------------
    # "text": lines for people; "json": one object a line, for log shippers.
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # "auto": log to stderr unless the host configured logging; "always"; "never".
    log_handler: Literal["auto", "always", "never"] = "auto"
    # GET /metrics: "admin" needs the admin key, "open" anyone who reaches it, "off" no route.
    metrics_access: Literal["admin", "open", "off"] = "admin"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Built in code, settings are exactly what the caller wrote: the environment
        # is read by from_env() only, never behind the caller's back.
        return (init_settings,)

    # -- parsing --------------------------------------------------------------------------

    @field_validator("adyen_hmac_keys", "session_secrets", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return _split(value)

    @field_validator("amount_limits", mode="before")
    @classmethod
    def _json_limits(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except ValueError:
            raise ValueError('must be JSON such as {"CNY": [1, 5000000]}') from None

    @field_validator(
        "sqlite_synchronous",
        "log_format",
        "log_level",
        "log_handler",
        "metrics_access",
        mode="before",
    )
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator(
        "adyen_merchant_account",
        "adyen_return_url",
        "adyen_live_prefix",
        "adyen_checkout_url",
        "adyen_country_code",
        "wechat_app_id",
        "wechat_api_url",
        "database_url",
        "database_schema",
        mode="before",
    )
    @classmethod
    def _stripped(cls, value: object) -> object:
        return value.strip() if isinstance(value, str) else value

    @model_validator(mode="wrap")
    @classmethod
    def _one_message(cls, data: Any, handler: ModelWrapValidatorHandler[Settings]) -> Settings:
        # One ConfigurationError naming every problem, instead of pydantic's report.
        try:
            return handler(data)
        except ValidationError as exc:
            raise ConfigurationError(_describe(exc, data)) from None

    @model_validator(mode="before")
    @classmethod
    def _one_session_secret_list(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        one, many = data.get("session_secret"), _split(data.get("session_secrets") or ())
        if one is not None and many:
            first = many[0] if isinstance(many, tuple) else None
            given = one.reveal() if isinstance(one, Secret) else one
            head = first.reveal() if isinstance(first, Secret) else first
            if given != head:
                raise ConfigurationError(
                    f"{ENV_PREFIX}SESSION_SECRET and {ENV_PREFIX}SESSION_SECRETS are both set "
                    "and disagree. Keep only SESSION_SECRETS: the new secret first, then the "
                    "old ones that must still verify."
                )
        if one is not None and not many:
            many = (one,)
        return {**data, "session_secrets": many, "session_secret": None}

    @model_validator(mode="after")
    def _checked(self) -> Settings:
        _validate(self)
        if self.session_secrets:
            # The single spelling stays readable: it is the secret that signs.
            object.__setattr__(self, "session_secret", self.session_secrets[0])
        return self

    # -- derived values -------------------------------------------------------------------

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

    # -- the environment ------------------------------------------------------------------

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        env_file: str | os.PathLike[str] | _Unset | None = _UNSET,
        **overrides: Any,
    ) -> Settings:
        """Read ``MINIPROGRAM_PAY_*`` variables, then ``env_file`` under them; overrides win.

        ``environ`` defaults to ``os.environ`` and ``env_file`` to ``./.env`` (when
        it exists). A given ``environ`` is read alone unless ``env_file`` is passed
        too, so a test sees exactly its mapping.
        Unknown ``MINIPROGRAM_PAY_*`` variables are logged with a "did you mean" hint.
        """
        if isinstance(env_file, _Unset):
            env_file = DEFAULT_ENV_FILE if environ is None else None
        variables = _read_env_file(env_file)
        variables.update(os.environ if environ is None else environ)
        _warn_unknown(variables)
        try:
            values = _EnvironSource(cls, variables)()
        except ValueError as exc:  # pydantic-settings' SettingsError
            raise ConfigurationError(f"the environment could not be read ({exc})") from None
        values.update(overrides)
        return cls(**values)


class _EnvironSource(EnvSettingsSource):
    """pydantic-settings' environment source, reading a given mapping instead of os.environ."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # Settings are case-insensitive (model_config) and empty values are unset.
        return {name.lower(): value for name, value in self._environ.items() if value != ""}


def _read_env_file(path: str | os.PathLike[str] | None) -> dict[str, str]:
    if path is None or not Path(path).is_file():
        return {}
    from dotenv import dotenv_values  # pydantic-settings' own dependency

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def _env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def _warn_unknown(variables: Mapping[str, str]) -> None:
    known = list(Settings.model_fields)
    for name in sorted(variables):
        if not name.upper().startswith(ENV_PREFIX):
            continue
        field = name[len(ENV_PREFIX) :].lower()
        if field in known or field.upper() in _NOT_SETTINGS:
            continue
        close = difflib.get_close_matches(field, known, n=1, cutoff=0.75)
        hint = f"; did you mean {_env_name(close[0])}?" if close else ""
        logger.warning("%s is not a miniprogram-pay setting and is ignored%s", name, hint)


# -- turning pydantic's errors into one message ----------------------------------------


def _describe(exc: ValidationError, data: Any) -> str:
    errors = exc.errors(include_input=False, include_url=False)
    problems = [_one_error(e) for e in errors if e["type"] != "missing"]
    missing = [_error_setting(e) for e in errors if e["type"] == "missing"]
    given = data if isinstance(data, dict) else {}
    if not given.get("session_secrets") and not given.get("session_secret"):
        missing.append(_error_setting({"loc": ("session_secrets",)}))  # type: ignore[typeddict-item]
    if missing:
        problems.append(
            "Missing required settings: " + ", ".join(missing) + ". Set them in the environment."
        )
    return " ".join(problems)


def _error_setting(error: ErrorDetails) -> str:
    field = str(error["loc"][0]) if error["loc"] else ""
    if field in ("session_secret", "session_secrets"):
        return f"{_env_name('session_secrets')} (or {_env_name('session_secret')})"
    return _env_name(field)


def _one_error(error: ErrorDetails) -> str:
    field = str(error["loc"][0]) if error["loc"] else ""
    if error["type"] == "extra_forbidden":
        close = difflib.get_close_matches(field, list(Settings.model_fields), n=1, cutoff=0.75)
        hint = f" Did you mean {close[0]}?" if close else ""
        return f"{field} is not a setting.{hint}"
    message = error["msg"].removeprefix("Value error, ")
    return f"{_env_name(field)} is not valid ({message}); fix its value."


# -- checks with their own messages ----------------------------------------------------


def _fail(setting: str, problem: str, fix: str) -> None:
    raise ConfigurationError(f"{ENV_PREFIX}{setting}: {problem}. {fix}".rstrip())


def _validate(s: Settings) -> None:
    _validate_database(s)
    _validate_adyen(s)
    _validate_urls(s)
    _validate_webhook(s)
    _validate_wechat(s)
    _validate_limits(s)


def _validate_adyen(s: Settings) -> None:
    if not s.adyen_api_key:
        _fail("ADYEN_API_KEY", "is empty", "Copy the API key of your web service user.")
    if not s.adyen_merchant_account:
        _fail("ADYEN_MERCHANT_ACCOUNT", "is empty", "Set your Adyen merchant account name.")
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
    if len(s.adyen_country_code) != 2 or not s.adyen_country_code.isalpha():
        _fail("ADYEN_COUNTRY_CODE", "must be a two-letter ISO 3166 code", "Use CN for WeChat Pay.")


DATABASE_DRIVERS = ("sqlite+aiosqlite", "postgresql+psycopg")


def _validate_database(s: Settings) -> None:
    scheme = s.database_url.partition("://")[0].lower()
    if scheme in DATABASE_DRIVERS:
        return
    if scheme.startswith("sqlite"):
        _fail(
            "DATABASE_URL",
            f"{scheme}:// is not the async SQLite driver",
            "Write it as sqlite+aiosqlite:///path/to/file.db.",
        )
    if scheme.startswith("postgres"):
        _fail(
            "DATABASE_URL",
            f"{scheme}:// is not the PostgreSQL driver the plugin uses",
            "Write it as postgresql+psycopg://user:password@host/db and install the driver: "
            "pip install 'miniprogram-pay[postgres]'.",
        )
    _fail(
        "DATABASE_URL",
        "is not a database URL the plugin supports",
        "Use sqlite+aiosqlite:///path.db or postgresql+psycopg://user@host/db.",
    )


def _is_http_url(value: str) -> bool:
    scheme, sep, rest = value.partition("://")
    return bool(sep) and scheme.lower() in ("http", "https") and bool(rest.split("/")[0])


def _validate_urls(s: Settings) -> None:
    if not s.adyen_return_url or len(s.adyen_return_url) > MAX_URL_CHARS:
        _fail(
            "ADYEN_RETURN_URL", "must be a URL of 1 to 8000 characters", "Adyen requires returnUrl."
        )
    urls = {
        "ADYEN_RETURN_URL": s.adyen_return_url,
        "ADYEN_CHECKOUT_URL": s.adyen_checkout_url,
        "WECHAT_API_URL": s.wechat_api_url,
    }
    for setting, url in urls.items():
        if url is not None and not _is_http_url(url):
            _fail(setting, "is not an http(s) URL", "Write it in full, e.g. https://host/path.")


def _validate_webhook(s: Settings) -> None:
    if not s.adyen_hmac_keys:
        _fail(
            "ADYEN_HMAC_KEYS",
            "no HMAC key is configured, so webhooks could not be verified",
            "Generate an HMAC key on the webhook in your Customer Area and set it here.",
        )
    for position, key in enumerate(s.adyen_hmac_keys, start=1):
        try:
            decoded = binascii.unhexlify(key.reveal())
        except (binascii.Error, ValueError):
            decoded = b""
        if len(decoded) != HMAC_KEY_BYTES:
            _fail(
                "ADYEN_HMAC_KEYS",
                f"key number {position} is not a hex string of {HMAC_KEY_BYTES * 2} characters",
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
    if not s.session_secrets:
        _fail("SESSION_SECRETS", "no session secret is set", HOW_TO_GENERATE)
    for position, secret in enumerate(s.session_secrets, start=1):
        if len(secret.reveal().encode()) < MIN_SESSION_SECRET_BYTES:
            which = "SESSION_SECRET" if len(s.session_secrets) == 1 else "SESSION_SECRETS"
            _fail(
                which,
                f"secret number {position} must be at least {MIN_SESSION_SECRET_BYTES} bytes",
                HOW_TO_GENERATE,
            )


def _validate_limits(s: Settings) -> None:
    for currency, (low, high) in s.amount_limits.items():
        if currency not in SUPPORTED_CURRENCIES:
            _fail("AMOUNT_LIMITS", f"{currency} is not a WeChat Pay currency", "")
        if not 0 < low <= high:
            _fail("AMOUNT_LIMITS", f"{currency} limits must satisfy 0 < min <= max", "")
    if not 1 <= s.database_pool_size <= 100:
        _fail(
            "DATABASE_POOL_SIZE",
            "must be between 1 and 100",
            "Each process keeps this many PostgreSQL writer connections, and up to 4 readers.",
        )
