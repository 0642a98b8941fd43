"""Shopper session tokens: Fernet from ``cryptography``, several secrets, the first issues."""

from __future__ import annotations

import base64

import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from miniprogram_pay import AuthenticationError, Secret
from miniprogram_pay.wechat.sessions import KEY_INFO, SessionTokens

OLD, NEW = Secret("old-session-secret-0123456789"), Secret("new-session-secret-0123456789")
OPENID = "o6_bmjrPTlm6_2sgVt7hMZOPfL2M"


def test_a_token_is_a_fernet_token_under_a_key_derived_from_the_secret() -> None:
    token, _ = SessionTokens(NEW, ttl_seconds=60).issue(OPENID)
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=KEY_INFO).derive(
        NEW.reveal().encode()
    )
    plain = Fernet(base64.urlsafe_b64encode(key)).decrypt(token.encode())
    assert OPENID.encode() in plain
    assert OPENID not in token


def test_rotation_keeps_old_tokens_valid_and_issues_under_the_new_secret() -> None:
    before = SessionTokens(OLD, ttl_seconds=60).issue(OPENID)[0]
    rotating = SessionTokens([NEW, OLD], ttl_seconds=60)
    assert rotating.verify(before).openid == OPENID
    after = rotating.issue(OPENID)[0]
    assert SessionTokens(NEW, ttl_seconds=60).verify(after).openid == OPENID
    with pytest.raises(AuthenticationError) as caught:
        SessionTokens(OLD, ttl_seconds=60).verify(after)
    assert caught.value.code == "invalid_token"


def test_expiry_comes_from_the_issuing_clock() -> None:
    token = SessionTokens(NEW, ttl_seconds=60, clock=lambda: 1_000.0).issue(OPENID)[0]
    assert SessionTokens(NEW, ttl_seconds=60, clock=lambda: 1_059.0).verify(token).openid == OPENID
    with pytest.raises(AuthenticationError) as caught:
        SessionTokens(NEW, ttl_seconds=60, clock=lambda: 1_061.0).verify(token)
    assert caught.value.code == "session_expired"


@pytest.mark.parametrize("spelling", ["padding", "stray characters"])
def test_only_the_issued_spelling_is_accepted(spelling: str) -> None:
    tokens = SessionTokens(NEW, ttl_seconds=60)
    token = tokens.issue(OPENID)[0]
    # Both decode to the same bytes as the token itself.
    padding = token.rstrip("=") if token.endswith("=") else token + "=="
    variant = padding if spelling == "padding" else token[:10] + "\n" + token[10:]
    with pytest.raises(AuthenticationError) as caught:
        tokens.verify(variant)
    assert caught.value.code == "invalid_token"


def test_no_secret_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="at least one secret"):
        SessionTokens([], ttl_seconds=60)
