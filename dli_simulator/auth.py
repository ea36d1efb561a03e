"""Authentication for the DLI simulator: SDK-HMAC-SHA256 verification, IAM tokens."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dli_simulator import signature
from dli_simulator.model import (
    SERVICE_AUTH_ERROR,
    TOKEN_ERROR,
    USER_AUTH_ERROR,
    ApiError,
    Headers,
    Response,
)

AUTH_RE = re.compile(
    r"^SDK-HMAC-SHA256\s+Access=(?P<ak>[^,\s]+),\s*SignedHeaders=(?P<names>[^,\s]+),"
    r"\s*Signature=(?P<sig>[0-9a-fA-F]+)\s*$"
)
REQUIRED_SIGNED = ("host", "x-sdk-date")


def auth_kind(headers: Headers) -> tuple[str, str | None]:
    """The kind of credentials presented (``aksk``/``token``/``none``) and the access key."""
    authorization = headers.get("Authorization")
    if authorization:
        match = AUTH_RE.match(authorization)
        return "aksk", match.group("ak") if match else None
    if headers.get("X-Auth-Token"):
        return "token", None
    return "none", None


def _auth_failed(reason: str) -> ApiError:
    return ApiError(401, SERVICE_AUTH_ERROR, f"Authentication failed: {reason}")


@dataclass
class SignedRequest:
    method: str
    raw_path: str
    query_pairs: list[tuple[str, str]]
    headers: Headers
    body: bytes


class AkSkVerifier:
    def __init__(
        self,
        credentials: dict[str, str],
        security_tokens: set[str] | None,
        clock_skew_s: float,
    ) -> None:
        self.credentials = credentials
        self.security_tokens = security_tokens
        self.clock_skew_s = clock_skew_s

    def verify(self, request: SignedRequest, project_id: str) -> str:
        """The access key of a correctly signed request, else raises a 401 ``ApiError``."""
        match = AUTH_RE.match(request.headers.get("Authorization") or "")
        if match is None:
            raise _auth_failed("malformed Authorization header")
        access_key, names = match.group("ak"), match.group("names").split(";")
        secret_key = self.credentials.get(access_key)
        if secret_key is None:
            raise _auth_failed(f"unknown access key {access_key}")
        missing = [n for n in REQUIRED_SIGNED if n not in names]
        if missing:
            raise _auth_failed(f"headers not signed: {', '.join(missing)}")
        absent = [n for n in names if n not in request.headers]
        if absent:
            raise _auth_failed(f"signed headers missing from the request: {', '.join(absent)}")
        self._check_date(request.headers["X-Sdk-Date"])
        expected = self._expected(request, secret_key, names)
        if not hmac.compare_digest(expected, match.group("sig").lower()):
            raise _auth_failed("the signature does not match (verify aksk signature fail)")
        self._check_security_token(request.headers, names)
        header_project = request.headers.get("X-Project-Id")
        if header_project is not None and header_project != project_id:
            raise _auth_failed("X-Project-Id does not match the project in the path")
        return access_key

    def _expected(self, request: SignedRequest, secret_key: str, names: list[str]) -> str:
        canonical = signature.canonical_request(
            request.method,
            request.raw_path,
            request.query_pairs,
            request.headers,
            names,
            request.body,
        )
        return signature.sign(secret_key, request.headers["X-Sdk-Date"], canonical)

    def _check_date(self, value: str) -> None:
        try:
            signed_at = datetime.strptime(value, signature.DATE_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            raise _auth_failed(f"invalid X-Sdk-Date {value!r}") from None
        skew = abs(time.time() - signed_at.timestamp())
        if skew > self.clock_skew_s:
            raise _auth_failed(
                f"X-Sdk-Date {value} is {skew:.0f} s away from the server time "
                f"(allowed {self.clock_skew_s:.0f} s)"
            )

    def _check_security_token(self, headers: Headers, names: list[str]) -> None:
        if self.security_tokens is None:
            return
        token = headers.get("X-Security-Token")
        if token is None or "x-security-token" not in names:
            raise _auth_failed("a signed X-Security-Token is required")
        if token not in self.security_tokens:
            raise _auth_failed("the security token is invalid or expired")


@dataclass
class IssuedToken:
    value: str
    project_id: str | None
    issued_at: float
    expires_at: float
    revoked: bool = False


def iso8601(epoch_s: float) -> str:
    """IAM's timestamp format: ``2026-11-28T12:00:00.123000Z`` (millisecond precision)."""
    moment = datetime.fromtimestamp(round(epoch_s, 3), UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}000Z"


def iam_error(status: int, title: str, message: str) -> Response:
    return Response.json(status, {"error": {"code": status, "message": message, "title": title}})


def project_id_for_name(name: str) -> str:
    """The simulated id of a project named ``name`` (IAM scope by name)."""
    return hashlib.md5(name.encode("utf-8"), usedforsecurity=False).hexdigest()


class TokenService:
    """The IAM side: issues project-scoped tokens and checks them on DLI requests."""

    def __init__(self, users: dict[tuple[str, str], str], ttl_s: float) -> None:
        self.users = users
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._tokens: dict[str, IssuedToken] = {}

    def issued(self) -> list[str]:
        with self._lock:
            return list(self._tokens)

    def revoke(self, token: str) -> bool:
        with self._lock:
            issued = self._tokens.get(token)
            if issued is not None:
                issued.revoked = True
            return issued is not None

    def verify(self, token: str, project_id: str) -> None:
        with self._lock:
            issued = self._tokens.get(token)
        if issued is None:
            raise ApiError(401, TOKEN_ERROR, "Token info for token is null, return.")
        if issued.revoked:
            raise ApiError(401, TOKEN_ERROR, "The token has been revoked.")
        if time.time() >= issued.expires_at:
            raise ApiError(401, TOKEN_ERROR, "The token has expired.")
        if issued.project_id != project_id:
            raise ApiError(
                401, USER_AUTH_ERROR, f"The token is not scoped to project {project_id}."
            )

    def issue(self, body: Any) -> Response:
        """``POST /v3/auth/tokens`` (password method)."""
        try:
            user, scope = _password_request(body)
        except (KeyError, TypeError, ValueError) as exc:
            return iam_error(400, "Bad Request", f"The request body is invalid: {exc}")
        domain, name, password = user
        expected = self.users.get((domain, name))
        if expected is None or not hmac.compare_digest(expected, password):
            return iam_error(401, "Unauthorized", "The username or password is wrong.")
        project_id, project_name = scope
        token = self._new_token(project_id)
        payload = _token_body(token, domain, name, project_id, project_name)
        return Response.json(201, payload, {"X-Subject-Token": token.value})

    def _new_token(self, project_id: str | None) -> IssuedToken:
        now = time.time()
        value = "MIIsim" + secrets.token_urlsafe(48)
        token = IssuedToken(value, project_id, now, now + self.ttl_s)
        with self._lock:
            self._tokens[value] = token
        return token


def _password_request(body: Any) -> tuple[tuple[str, str, str], tuple[str | None, str | None]]:
    auth = body["auth"]
    identity = auth["identity"]
    if "password" not in identity["methods"]:
        raise ValueError("only the password method is supported")
    user = identity["password"]["user"]
    credentials = (str(user["domain"]["name"]), str(user["name"]), str(user["password"]))
    project = (auth.get("scope") or {}).get("project")
    if project is None:
        return credentials, (None, None)
    if "id" in project:
        return credentials, (str(project["id"]), project.get("name"))
    name = str(project["name"])
    return credentials, (project_id_for_name(name), name)


def _token_body(
    token: IssuedToken, domain: str, user: str, project_id: str | None, project_name: str | None
) -> dict[str, Any]:
    domain_ref = {"id": project_id_for_name("domain:" + domain), "name": domain}
    body: dict[str, Any] = {
        "expires_at": iso8601(token.expires_at),
        "issued_at": iso8601(token.issued_at),
        "methods": ["password"],
        "user": {
            "id": project_id_for_name("user:" + domain + "/" + user),
            "name": user,
            "domain": domain_ref,
            "password_expires_at": "",
        },
        "roles": [{"id": "0", "name": "op_service"}],
        "catalog": [],
    }
    if project_id is not None:
        body["project"] = {"id": project_id, "name": project_name or "", "domain": domain_ref}
    else:
        body["domain"] = domain_ref
    return {"token": body}
