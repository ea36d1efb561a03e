"""Push OIDC token verification (``PUSH_AUDIENCE``), in process: real RS256 signatures against
signing keys served the way Google serves them (``{"key id": "x509 PEM"}`` at a certs URL, here
a local server). Through functions-framework: tests/e2e/test_push_auth_http.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from cancel_handler import push_auth
from cancel_handler.config import Settings, load_settings
from cancel_handler.push_auth import PushAuthError, verify_push_token
from tests.push_tokens import (
    AUDIENCE,
    BAD_TOKEN_CASES,
    SERVICE_ACCOUNT,
    CertsServer,
    SigningKey,
    bad_token,
    claims,
)


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture(scope="module")
def other_key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def certs(key: SigningKey) -> Iterator[CertsServer]:
    server = CertsServer([key])
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(push_auth, "_request", None)


def settings(certs: CertsServer) -> Settings:
    env = {
        "DLI_ENDPOINT": "http://127.0.0.1:9",
        "HUAWEICLOUD_SDK_AK": "AK",
        "HUAWEICLOUD_SDK_SK": "SK",
        "DLI_LOCAL_RUN": "true",
        "PUSH_AUDIENCE": AUDIENCE,
        "PUSH_SERVICE_ACCOUNT": SERVICE_ACCOUNT,
        "PUSH_CERTS_URL": certs.url,
    }
    return load_settings(env)


def test_valid_token_is_accepted(certs: CertsServer, key: SigningKey) -> None:
    verified = verify_push_token(f"Bearer {key.sign(claims())}", settings(certs))

    assert verified["email"] == SERVICE_ACCOUNT and verified["aud"] == AUDIENCE


def test_no_token_is_accepted_without_a_configured_service_account(
    certs: CertsServer, key: SigningKey
) -> None:
    # load_settings refuses PUSH_AUDIENCE without PUSH_SERVICE_ACCOUNT; the check holds anyway
    config = replace(settings(certs), push_service_account=None)

    with pytest.raises(PushAuthError, match="PUSH_SERVICE_ACCOUNT is not configured"):
        verify_push_token(f"Bearer {key.sign(claims())}", config)


# case -> the reason given (never the token itself)
BAD_TOKENS = {
    "wrong audience": "invalid push token: wrong audience",
    "expired": "invalid push token: token expired",
    "not yet valid": "invalid push token: token used too early",
    "bad signature": "invalid push token: bad signature",
    "unknown key": "invalid push token: signed by an unknown key",
    "wrong service account": "push token is not from the expected service account",
    "email not verified": "push token is not from the expected service account",
    "no email": "push token is not from the expected service account",
    "not issued by Google": "push token not issued by Google",
    "tampered payload": "invalid push token: bad signature",
    "not a JWT": "invalid push token: MalformedError",
}


def test_every_bad_token_case_has_its_reason() -> None:
    assert set(BAD_TOKENS) == set(BAD_TOKEN_CASES)


@pytest.mark.parametrize("case", BAD_TOKEN_CASES)
def test_bad_tokens_are_refused(
    certs: CertsServer, key: SigningKey, other_key: SigningKey, case: str
) -> None:
    token = bad_token(case, key, other_key)

    with pytest.raises(PushAuthError) as refused:
        verify_push_token(f"Bearer {token}", settings(certs))

    assert str(refused.value) == BAD_TOKENS[case]


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "token abc"])
def test_missing_bearer_token_is_refused(certs: CertsServer, header: str) -> None:
    with pytest.raises(PushAuthError, match="missing bearer token"):
        verify_push_token(header, settings(certs))
    assert certs.hits == 0


def test_signing_keys_are_cached(certs: CertsServer, key: SigningKey) -> None:
    config = settings(certs)
    for _ in range(3):
        verify_push_token(f"Bearer {key.sign(claims())}", config)

    assert certs.hits == 1


def test_rotated_keys_are_fetched_again(
    certs: CertsServer, key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = settings(certs)
    verify_push_token(f"Bearer {key.sign(claims())}", config)
    new_key = SigningKey.generate()
    certs.keys = [key, new_key]
    monkeypatch.setattr(push_auth, "REFETCH_AFTER_S", 0.0)

    verify_push_token(f"Bearer {new_key.sign(claims())}", config)

    assert certs.hits == 2


def test_cached_keys_are_not_refetched_for_every_bad_token(
    certs: CertsServer, key: SigningKey, other_key: SigningKey
) -> None:
    config = settings(certs)
    verify_push_token(f"Bearer {key.sign(claims())}", config)
    for _ in range(3):
        with pytest.raises(PushAuthError):
            verify_push_token(f"Bearer {other_key.sign(claims())}", config)

    assert certs.hits == 1, "fresh keys are not fetched again within a minute"


def test_unreachable_certs_url_refuses(key: SigningKey) -> None:
    server = CertsServer([key])
    server.start()
    config = settings(server)
    server.stop()

    with pytest.raises(PushAuthError):
        verify_push_token(f"Bearer {key.sign(claims())}", config)


def test_certs_url_defaults_to_google() -> None:
    config = load_settings(
        {
            "DLI_ENDPOINT": "https://x",
            "HUAWEICLOUD_SDK_AK": "a",
            "HUAWEICLOUD_SDK_SK": "b",
            "DLI_LOCAL_RUN": "1",
        }
    )

    assert config.push_certs_url == "https://www.googleapis.com/oauth2/v1/certs"
