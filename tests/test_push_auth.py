"""Push OIDC token verification (``PUSH_AUDIENCE``): real RS256 signatures against signing keys
served the way Google serves them (``{"key id": "x509 PEM"}`` at a certs URL, here a local
server), in-process and through ``cancel_dli_job_http`` under functions-framework.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

from cancel_handler import push_auth
from cancel_handler.config import Settings, load_settings
from cancel_handler.local.stack import PubSubEmulator
from cancel_handler.push_auth import PushAuthError, verify_push_token
from tests.corpus import encode, push_envelope
from tests.e2e_support import PROJECT_ID, LocalStack, start_stack, stop_stack

AUDIENCE = "https://dli-cancel-abc123-ew.a.run.app/"
SERVICE_ACCOUNT = "pubsub-push@acme-ops.iam.gserviceaccount.com"
ISSUER = "https://accounts.google.com"


@dataclass
class SigningKey:
    kid: str
    private_pem: bytes
    cert_pem: str
    _signers: dict[str, crypt.RSASigner] = field(default_factory=dict, repr=False)

    @classmethod
    def generate(cls, kid: str | None = None) -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, "federated-signon.system.gserviceaccount.com")]
        )
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=14))
            .sign(key, hashes.SHA256())
        )
        private_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        return cls(kid or uuid.uuid4().hex, private_pem, cert_pem)

    def sign(self, claims: dict[str, Any], kid: str | None = None) -> str:
        signer = self._signers.get(kid or self.kid)
        if signer is None:
            signer = crypt.RSASigner.from_string(  # type: ignore[no-untyped-call]
                self.private_pem, key_id=kid or self.kid
            )
            self._signers[kid or self.kid] = signer
        token: bytes = jwt.encode(signer, claims)  # type: ignore[no-untyped-call]
        return token.decode()


@dataclass
class CertsServer:
    """Serves ``{"kid": "PEM"}`` like https://www.googleapis.com/oauth2/v1/certs."""

    keys: list[SigningKey]
    cache_control: str = "public, max-age=19740, must-revalidate, no-transform"
    hits: int = 0
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)

    def start(self) -> str:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hits += 1
                body = json.dumps({k.kid: k.cert_pem for k in owner.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Cache-Control", owner.cache_control)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self.url

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/oauth2/v1/certs"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def claims(**changes: Any) -> dict[str, Any]:
    """The claims of a Pub/Sub push token (``None`` drops a claim)."""
    now = int(time.time())
    base: dict[str, Any] = {
        "aud": AUDIENCE,
        "azp": "113774264463038321964",
        "email": SERVICE_ACCOUNT,
        "email_verified": True,
        "exp": now + 3600,
        "iat": now,
        "iss": ISSUER,
        "sub": "113774264463038321964",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


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


# -- in process ------------------------------------------------------------------------------


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


def bad_token(case: str, key: SigningKey, other: SigningKey) -> str:
    now = int(time.time())
    makers: dict[str, Callable[[], str]] = {
        "wrong audience": lambda: key.sign(claims(aud="https://elsewhere.example.com/")),
        "expired": lambda: key.sign(claims(iat=now - 7200, exp=now - 3600)),
        "not yet valid": lambda: key.sign(claims(iat=now + 600, exp=now + 4200)),
        "bad signature": lambda: other.sign(claims(), kid=key.kid),
        "unknown key": lambda: other.sign(claims()),
        "wrong service account": lambda: key.sign(
            claims(email="intruder@acme-ops.iam.gserviceaccount.com")
        ),
        "email not verified": lambda: key.sign(claims(email_verified=False)),
        "no email": lambda: key.sign(claims(email=None)),
        "not issued by Google": lambda: key.sign(claims(iss="https://issuer.example.com")),
        "tampered payload": lambda: _tampered(key.sign(claims())),
        "not a JWT": lambda: "not-a-jwt",
    }
    return makers[case]()


def _tampered(token: str) -> str:
    """The token with another audience in its payload and the original signature."""
    header, payload, signature = token.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    decoded["aud"] = "https://elsewhere.example.com/"
    forged = base64.urlsafe_b64encode(encode(decoded)).rstrip(b"=").decode()
    return ".".join([header, forged, signature])


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
BAD_TOKEN_NAMES = list(BAD_TOKENS)


@pytest.mark.parametrize("case", BAD_TOKEN_NAMES)
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


# -- through functions-framework -------------------------------------------------------------


@pytest.fixture(scope="module")
def auth_stack(
    emulator: PubSubEmulator, key: SigningKey
) -> Iterator[tuple[LocalStack, CertsServer]]:
    server = CertsServer([key])
    server.start()
    env = {
        "PUSH_AUDIENCE": AUDIENCE,
        "PUSH_SERVICE_ACCOUNT": SERVICE_ACCOUNT,
        "PUSH_CERTS_URL": server.url,
    }
    local = start_stack(emulator, env=env, target="cancel_dli_job_http")
    try:
        yield local, server
    finally:
        stop_stack(local)
        server.stop()


def post_with(local: LocalStack, body: bytes, authorization: str | None) -> requests.Response:
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    return requests.post(local.server.url + "/", data=body, headers=headers, timeout=30)


@pytest.mark.emulator
def test_http_push_with_a_valid_token_is_handled(
    auth_stack: tuple[LocalStack, CertsServer], key: SigningKey
) -> None:
    local, _ = auth_stack
    job = local.sim.submit_sql_job(PROJECT_ID)
    message_id = str(uuid.uuid4().int)[:16]
    body = push_envelope(
        encode({"event_type": "job-timeout", "job_id": job}),
        message_id=message_id,
        publish_time=dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
    )

    response = post_with(local, body, f"Bearer {key.sign(claims())}")

    assert response.status_code == 200
    [result] = response.json()["results"]
    assert result["outcome"] == "cancelled" and result["source_event_id"] == message_id
    assert local.results_for(message_id, 1)[0]["job_id"] == job
    assert local.sim.job_status(PROJECT_ID, job) == "CANCELLED"


@pytest.mark.emulator
@pytest.mark.parametrize("case", [*BAD_TOKEN_NAMES, "missing header"])
def test_http_push_with_a_bad_token_is_401_and_never_reaches_dli(
    auth_stack: tuple[LocalStack, CertsServer],
    key: SigningKey,
    other_key: SigningKey,
    case: str,
) -> None:
    local, _ = auth_stack
    local.sim.clear_requests()
    job = local.sim.submit_sql_job(PROJECT_ID)
    token = None if case == "missing header" else bad_token(case, key, other_key)
    body = push_envelope(encode({"event_type": "job-timeout", "job_id": job}))

    response = post_with(local, body, None if token is None else f"Bearer {token}")

    assert response.status_code == 401
    assert set(response.json()) == {"error"}
    assert local.sim.requests() == []
    assert local.sim.job_status(PROJECT_ID, job) == "RUNNING"
    if token is not None:
        assert token not in response.text and token not in local.server.output()
