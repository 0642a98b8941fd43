"""Settings: immutable, secrets never printed, every bad configuration refused at start-up."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pydantic
import pytest

from miniprogram_pay import ConfigurationError, Secret, Settings

KEY = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"
SECRETS = (
    "AQE-api-key-value",
    "hook-password-value",
    "app-secret-value",
    "s" * 32,
    "admin-key-value",
)


def valid(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "adyen_api_key": "AQE-api-key-value",
        "adyen_merchant_account": "ShopCN",
        "adyen_hmac_keys": [KEY],
        "adyen_return_url": "https://shop.example/return",
        "webhook_username": "adyen",
        "webhook_password": "hook-password-value",
        "wechat_app_id": "wx1234567890abcdef",
        "wechat_app_secret": "app-secret-value",
        "session_secret": "s" * 32,
        "admin_api_key": "admin-key-value",
    }
    values.update(overrides)
    return values


def env(**overrides: str) -> dict[str, str]:
    values = {
        "MINIPROGRAM_PAY_ADYEN_API_KEY": "AQE-api-key-value",
        "MINIPROGRAM_PAY_ADYEN_MERCHANT_ACCOUNT": "ShopCN",
        "MINIPROGRAM_PAY_ADYEN_HMAC_KEYS": f"{KEY}, {KEY.lower()}",
        "MINIPROGRAM_PAY_ADYEN_RETURN_URL": "https://shop.example/return",
        "MINIPROGRAM_PAY_WEBHOOK_USERNAME": "adyen",
        "MINIPROGRAM_PAY_WEBHOOK_PASSWORD": "hook-password-value",
        "MINIPROGRAM_PAY_WECHAT_APP_ID": "wx1234567890abcdef",
        "MINIPROGRAM_PAY_WECHAT_APP_SECRET": "app-secret-value",
        "MINIPROGRAM_PAY_SESSION_SECRET": "s" * 32,
    }
    values.update({f"MINIPROGRAM_PAY_{k}": v for k, v in overrides.items()})
    return values


def test_secrets_are_wrapped_and_never_printed() -> None:
    settings = Settings(**valid())
    for text in (repr(settings), str(settings), f"{settings}"):
        for secret in SECRETS:
            assert secret not in text
        assert KEY not in text
    assert isinstance(settings.adyen_api_key, Secret)
    assert isinstance(settings.admin_api_key, Secret)
    assert all(isinstance(k, Secret) for k in settings.adyen_hmac_keys)
    assert settings.adyen_api_key.reveal() == "AQE-api-key-value"
    assert repr(settings.wechat_app_secret) == "Secret('**********')"


def test_settings_are_immutable() -> None:
    settings = Settings(**valid())
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        settings.adyen_merchant_account = "Other"


def test_from_env_reads_every_prefixed_variable() -> None:
    settings = Settings.from_env(
        env(
            ADYEN_ENVIRONMENT="live",
            ADYEN_LIVE_PREFIX="1797a841fbb37ca7-AdyenDemo",
            ADYEN_API_VERSION="72",
            ALLOW_CLIENT_AMOUNT="yes",
            SESSION_TTL_SECONDS="600",
            RATE_LIMIT_PER_MINUTE="30",
            ADMIN_API_KEY="admin-key-value",
            DATABASE_POOL_SIZE="4",
            HOOK_TIMEOUT_SECONDS="2.5",
            OUTBOX_PARK_AFTER_SECONDS="86400",
            SQLITE_SYNCHRONOUS="NORMAL",
        )
    )
    assert settings.is_live
    assert settings.checkout_url == (
        "https://1797a841fbb37ca7-AdyenDemo-checkout-live.adyenpayments.com/checkout/v72"
    )
    assert len(settings.adyen_hmac_keys) == 2
    assert settings.allow_client_amount is True
    assert (settings.session_ttl_seconds, settings.rate_limit_per_minute) == (600, 30)
    assert settings.database_pool_size == 4
    assert (settings.hook_timeout_seconds, settings.outbox_park_after_seconds) == (2.5, 86400)
    assert settings.sqlite_synchronous == "normal"
    assert Settings.from_env(env()).checkout_url == "https://checkout-test.adyen.com/v71"
    assert (
        Settings.from_env(env(), adyen_merchant_account="Override").adyen_merchant_account
        == "Override"
    )


def test_from_env_names_every_missing_variable() -> None:
    values = env()
    del values["MINIPROGRAM_PAY_ADYEN_API_KEY"], values["MINIPROGRAM_PAY_SESSION_SECRET"]
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env(values)
    message = str(caught.value)
    assert "MINIPROGRAM_PAY_ADYEN_API_KEY" in message
    assert "MINIPROGRAM_PAY_SESSION_SECRET" in message


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("ADYEN_API_VERSION", "seventy-one"),
        ("ALLOW_CLIENT_AMOUNT", "perhaps"),
        ("SESSION_TTL_SECONDS", "1h"),
    ],
)
def test_from_env_refuses_unparsable_values(name: str, raw: str) -> None:
    with pytest.raises(ConfigurationError, match=f"MINIPROGRAM_PAY_{name} is not valid"):
        Settings.from_env(env(**{name: raw}))


@pytest.mark.parametrize(
    ("overrides", "setting", "fix"),
    [
        ({"adyen_environment": "live"}, "ADYEN_LIVE_PREFIX", "Customer Area"),
        ({"adyen_environment": "staging"}, "ADYEN_ENVIRONMENT", "test"),
        ({"adyen_hmac_keys": []}, "ADYEN_HMAC_KEYS", "HMAC key"),
        ({"adyen_hmac_keys": ["not-hex"]}, "ADYEN_HMAC_KEYS", "hex"),
        ({"adyen_hmac_keys": [KEY, "abc"]}, "ADYEN_HMAC_KEYS", "key number 2"),
        ({"webhook_username": ""}, "WEBHOOK_USERNAME", "Customer Area"),
        ({"webhook_password": ""}, "WEBHOOK_PASSWORD", "Customer Area"),
        ({"session_secret": "short"}, "SESSION_SECRET", "secrets.token_urlsafe"),
        ({"adyen_api_key": ""}, "ADYEN_API_KEY", "API key"),
        ({"adyen_merchant_account": ""}, "ADYEN_MERCHANT_ACCOUNT", "merchant account"),
        ({"adyen_api_version": 49}, "ADYEN_API_VERSION", "67"),
        ({"adyen_return_url": ""}, "ADYEN_RETURN_URL", "returnUrl"),
        ({"adyen_country_code": "CHN"}, "ADYEN_COUNTRY_CODE", "CN"),
        ({"wechat_app_id": ""}, "WECHAT_APP_ID", "AppID"),
        ({"wechat_app_secret": ""}, "WECHAT_APP_SECRET", "AppSecret"),
        ({"max_body_bytes": 10}, "MAX_BODY_BYTES", "1024"),
        ({"session_ttl_seconds": 0}, "SESSION_TTL_SECONDS", "greater than 0"),
        ({"database_pool_size": 0}, "DATABASE_POOL_SIZE", "up to 4 readers"),
        ({"database_pool_size": 101}, "DATABASE_POOL_SIZE", "between 1 and 100"),
        ({"amount_limits": {"XBT": (1, 2)}}, "AMOUNT_LIMITS", "XBT"),
        ({"amount_limits": {"CNY": (10, 1)}}, "AMOUNT_LIMITS", "min <= max"),
        ({"adyen_hmac_keys": ["ab"]}, "ADYEN_HMAC_KEYS", "64 hex characters"),
        ({"adyen_checkout_url": "notaurl"}, "ADYEN_CHECKOUT_URL", "https://"),
        ({"wechat_api_url": "ftp://x"}, "WECHAT_API_URL", "https://"),
        ({"adyen_return_url": "shop.example"}, "ADYEN_RETURN_URL", "https://"),
        ({"rate_limit_per_minute": -5}, "RATE_LIMIT_PER_MINUTE", "greater than or equal to 0"),
        ({"adyen_timeout_seconds": 0}, "ADYEN_TIMEOUT_SECONDS", "greater than 0"),
        ({"adyen_max_retries": -1}, "ADYEN_MAX_RETRIES", "greater than or equal to 0"),
        ({"inbox_max_attempts": 0}, "INBOX_MAX_ATTEMPTS", "greater than or equal to 1"),
        ({"hook_timeout_seconds": 0}, "HOOK_TIMEOUT_SECONDS", "greater than 0"),
        ({"hook_timeout_seconds": 301}, "HOOK_TIMEOUT_SECONDS", "less than or equal to 300"),
        ({"outbox_park_after_seconds": 0}, "OUTBOX_PARK_AFTER_SECONDS", "greater than or equal"),
        ({"sqlite_synchronous": "off"}, "SQLITE_SYNCHRONOUS", "'full' or 'normal'"),
        (
            {"session_secrets": ["s" * 32, "short"], "session_secret": None},
            "SESSION_SECRETS",
            "secret number 2",
        ),
        ({"adyen_hmac_key": KEY}, "adyen_hmac_key", "Did you mean adyen_hmac_keys?"),
    ],
)
def test_bad_settings_fail_with_the_setting_and_the_fix(
    overrides: dict[str, Any], setting: str, fix: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings(**valid(**overrides))
    message = str(caught.value)
    assert setting in message
    assert fix in message
    for secret in SECRETS:
        assert secret not in message


def test_a_live_configuration_with_an_explicit_url_needs_no_prefix() -> None:
    settings = Settings(
        **valid(adyen_environment="live", adyen_checkout_url="https://x.example/v71/")
    )
    assert settings.checkout_url == "https://x.example/v71"


def test_from_env_never_shows_pythons_own_parse_errors() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env(env(DATABASE_POOL_SIZE="ten"))
    assert "invalid literal" not in str(caught.value)
    assert "valid integer" in str(caught.value)


def test_from_env_reads_the_settings_that_had_no_variable() -> None:
    settings = Settings.from_env(
        env(
            ADYEN_TIMEOUT_SECONDS="2.5",
            ADYEN_MAX_RETRIES="4",
            WECHAT_TIMEOUT_SECONDS="1.5",
            INBOX_MAX_ATTEMPTS="3",
            AMOUNT_LIMITS='{"CNY": [100, 5000000]}',
        )
    )
    assert (settings.adyen_timeout_seconds, settings.adyen_max_retries) == (2.5, 4)
    assert (settings.wechat_timeout_seconds, settings.inbox_max_attempts) == (1.5, 3)
    assert settings.amount_limit("CNY") == (100, 5_000_000)
    with pytest.raises(ConfigurationError, match=re.escape('{"CNY": [1, 5000000]}')):
        Settings.from_env(env(AMOUNT_LIMITS="CNY=1..5"))


def test_an_unknown_variable_is_reported_with_a_hint(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="miniprogram_pay.config"):
        Settings.from_env(env(ADYEN_HMAC_KEY=KEY, COMPLETELY_UNRELATED="1"))
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        "MINIPROGRAM_PAY_ADYEN_HMAC_KEY is not a miniprogram-pay setting" in m
        and "did you mean MINIPROGRAM_PAY_ADYEN_HMAC_KEYS?" in m
        for m in messages
    )
    assert any("MINIPROGRAM_PAY_COMPLETELY_UNRELATED" in m for m in messages)
    assert all(KEY not in m for m in messages)


def test_a_dotenv_file_is_read_under_the_environment(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    lines = [f"{k}={v}" for k, v in env(ADYEN_MERCHANT_ACCOUNT="FromFile").items()]
    dotenv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    from_file = Settings.from_env({}, env_file=dotenv)
    assert from_file.adyen_merchant_account == "FromFile"
    both = Settings.from_env(
        {"MINIPROGRAM_PAY_ADYEN_MERCHANT_ACCOUNT": "FromEnvironment"}, env_file=dotenv
    )
    assert both.adyen_merchant_account == "FromEnvironment"


def test_building_in_code_never_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in env(RATE_LIMIT_PER_MINUTE="77").items():
        monkeypatch.setenv(name, value)
    assert Settings(**valid()).rate_limit_per_minute == 0
    assert Settings.from_env(env()).rate_limit_per_minute == 0
    assert Settings.from_env(env_file=None).rate_limit_per_minute == 77


def test_several_session_secrets_the_first_signs() -> None:
    new, old = "n" * 32, "o" * 32
    settings = Settings.from_env(env(SESSION_SECRET="", SESSION_SECRETS=f"{new}, {old}"))
    assert [s.reveal() for s in settings.session_secrets] == [new, old]
    assert settings.session_secret is not None and settings.session_secret.reveal() == new
    single = Settings(**valid())
    assert [s.reveal() for s in single.session_secrets] == ["s" * 32]
    with pytest.raises(ConfigurationError, match="Keep only SESSION_SECRETS"):
        Settings.from_env(env(SESSION_SECRETS=f"{new},{old}"))


def test_every_setting_is_documented() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text(encoding="utf-8")
    for name in Settings.model_fields:
        assert f"`{name}`" in doc, name
        assert f"`{name.upper()}`" in doc, name
