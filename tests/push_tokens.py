"""Pub/Sub push OIDC tokens for the tests: RS256 signing keys with self-signed certificates, a
local server that serves them the way Google's certs URL does, the claims of a push token and
the ways a token can be bad."""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

from tests.corpus import encode

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


def bad_token(case: str, key: SigningKey, other: SigningKey) -> str:
    """A token that must be refused, made the way ``case`` (one of ``BAD_TOKEN_CASES``) says."""
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
    assert set(makers) == set(BAD_TOKEN_CASES)
    return makers[case]()


def _tampered(token: str) -> str:
    """The token with another audience in its payload and the original signature."""
    header, payload, signature = token.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    decoded["aud"] = "https://elsewhere.example.com/"
    forged = base64.urlsafe_b64encode(encode(decoded)).rstrip(b"=").decode()
    return ".".join([header, forged, signature])


BAD_TOKEN_CASES = (
    "wrong audience",
    "expired",
    "not yet valid",
    "bad signature",
    "unknown key",
    "wrong service account",
    "email not verified",
    "no email",
    "not issued by Google",
    "tampered payload",
    "not a JWT",
)
