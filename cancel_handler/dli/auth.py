"""Where DLI credentials come from, and how a request is authenticated with them.

- ``AkSkAuth`` signs each request (SDK-HMAC-SHA256) with an AK/SK pair from the environment or
  from a mounted secret file that is re-read when it changes (rotation without a restart).
- ``TokenAuth`` gets an IAM token per DLI project (password method, project scope), caches it
  for every thread of the process, and renews it before it expires.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import requests

from cancel_handler import logs
from cancel_handler.config import IamSettings, Secret, Settings
from cancel_handler.dli import signer

JSON_CONTENT_TYPE = "application/json"


class CredentialsUnavailable(Exception):
    """Credentials could not be read (a configuration problem: the event is retried)."""


class AuthRefused(Exception):
    """IAM refused to issue a token: the credentials are wrong or lack permission."""

    def __init__(self, http_status: int, error_code: str, message: str) -> None:
        self.http_status = http_status
        self.error_code = error_code
        self.message = message
        super().__init__(f"IAM refused the token request: HTTP {http_status} {error_code}")


class IamUnavailable(Exception):
    """IAM answered 429 or 5xx: a transient fault, retried like DLI's own."""

    def __init__(self, http_status: int, error_code: str, message: str) -> None:
        self.http_status = http_status
        self.error_code = error_code
        self.message = message
        super().__init__(f"IAM unavailable: HTTP {http_status} {error_code}")


@dataclass(frozen=True)
class AkSk:
    access_key: str
    secret_key: str
    security_token: str | None = None

    def __repr__(self) -> str:
        return "AkSk(access_key='****', secret_key='****', security_token='****')"


@dataclass(frozen=True)
class Call:
    """One HTTP request to DLI, before authentication."""

    method: str
    path: str
    project_id: str
    query: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


class Auth(Protocol):
    def headers(self, call: Call, host: str) -> dict[str, str]: ...

    def after_unauthorized(self, call: Call) -> bool:
        """Drop cached credentials after a 401; True when a retry may now succeed."""
        ...


class EnvCredentials:
    def __init__(self, access_key: Secret, secret_key: Secret, token: Secret | None) -> None:
        self._credentials = AkSk(
            access_key.reveal(), secret_key.reveal(), token.reveal() if token else None
        )

    def current(self) -> AkSk:
        return self._credentials

    def refresh(self) -> bool:
        return False


class FileCredentials:
    """A mounted secret: JSON ``{"ak", "sk", "security_token"?}``. Checked with one ``stat``
    per use; read again only when its size, mtime or inode changed."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._credentials: AkSk | None = None

    def current(self) -> AkSk:
        with self._lock:
            stamp = self._stat()
            if self._credentials is None or stamp != self._stamp:
                self._credentials = self._read()
                self._stamp = stamp
            return self._credentials

    def refresh(self) -> bool:
        """After a 401: re-read now; True if the file holds other credentials than before."""
        with self._lock:
            before = self._credentials
            self._credentials = self._read()
            self._stamp = self._stat()
            return before is None or self._credentials != before

    def _stat(self) -> tuple[int, int, int]:
        try:
            st = os.stat(self._path)
        except OSError as exc:
            raise CredentialsUnavailable(
                f"DLI_CREDENTIALS_FILE {self._path} unreadable: {exc.strerror}"
            ) from None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _read(self) -> AkSk:
        try:
            with open(self._path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            raise CredentialsUnavailable(
                f"DLI_CREDENTIALS_FILE {self._path} is not a readable JSON file"
            ) from None
        if not isinstance(data, dict):
            raise CredentialsUnavailable(f"DLI_CREDENTIALS_FILE {self._path} must hold an object")
        ak, sk, token = data.get("ak"), data.get("sk"), data.get("security_token")
        if not isinstance(ak, str) or not ak or not isinstance(sk, str) or not sk:
            raise CredentialsUnavailable(
                f"DLI_CREDENTIALS_FILE {self._path} needs non-empty strings 'ak' and 'sk'"
            )
        if token is not None and not isinstance(token, str):
            raise CredentialsUnavailable(
                f"DLI_CREDENTIALS_FILE {self._path}: 'security_token' must be a string"
            )
        for value in (ak, sk, token):
            logs.register_secret(value)
        return AkSk(ak, sk, token or None)


class CredentialSource(Protocol):
    def current(self) -> AkSk: ...

    def refresh(self) -> bool: ...


class AkSkAuth:
    def __init__(self, source: CredentialSource, clock: Callable[[], datetime] | None = None):
        self._source = source
        self._clock = clock

    def headers(self, call: Call, host: str) -> dict[str, str]:
        credentials = self._source.current()
        headers = {
            "Host": host,
            "Content-Type": JSON_CONTENT_TYPE,
            "X-Project-Id": call.project_id,
            "X-Sdk-Date": signer.sdk_date(self._clock() if self._clock else None),
        }
        if credentials.security_token:
            headers["X-Security-Token"] = credentials.security_token
        headers["Authorization"] = signer.authorization(
            method=call.method,
            path=call.path,
            query=call.query,
            headers=headers,
            body=call.body,
            access_key=credentials.access_key,
            secret_key=credentials.secret_key,
        )
        return headers

    def after_unauthorized(self, call: Call) -> bool:
        return self._source.refresh()


@dataclass(frozen=True)
class _Token:
    value: str
    expires_at: float  # monotonic deadline
    renew_at: float


class TokenAuth:
    """IAM token auth. One token per project, shared by all threads; a single fetch even
    when many threads need a token at the same moment."""

    def __init__(
        self,
        iam: IamSettings,
        session: requests.Session,
        timeout_s: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._iam = iam
        self._session = session
        self._timeout_s = timeout_s
        self._monotonic = monotonic
        self._tokens: dict[str, _Token] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.fetch_count = 0

    def headers(self, call: Call, host: str) -> dict[str, str]:
        return {
            "Host": host,
            "Content-Type": JSON_CONTENT_TYPE,
            "X-Auth-Token": self.token(call.project_id),
        }

    def after_unauthorized(self, call: Call) -> bool:
        with self._guard:
            self._tokens.pop(call.project_id, None)
        return True

    def token(self, project_id: str) -> str:
        cached = self._tokens.get(project_id)
        if cached and self._monotonic() < cached.renew_at:
            return cached.value
        with self._project_lock(project_id):
            cached = self._tokens.get(project_id)
            if cached and self._monotonic() < cached.renew_at:
                return cached.value
            fresh = self._fetch(project_id)
            self._tokens[project_id] = fresh
            return fresh.value

    def _project_lock(self, project_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(project_id, threading.Lock())

    def _fetch(self, project_id: str) -> _Token:
        started = self._monotonic()
        response = self._session.post(
            f"{self._iam.endpoint}/v3/auth/tokens",
            data=json.dumps(self._request_body(project_id)),
            headers={"Content-Type": "application/json;charset=utf8"},
            timeout=self._timeout_s,
        )
        self.fetch_count += 1
        if response.status_code == 429 or response.status_code >= 500:
            raise IamUnavailable(response.status_code, *_iam_error(response))
        if response.status_code != 201:
            raise AuthRefused(response.status_code, *_iam_error(response))
        value = response.headers.get("X-Subject-Token", "")
        if not value:
            raise AuthRefused(response.status_code, "IAM_NO_TOKEN", "no X-Subject-Token header")
        logs.register_secret(value)
        lifetime = _lifetime_s(response)
        margin = min(300.0, lifetime * 0.1)
        return _Token(value, started + lifetime, started + lifetime - margin)

    def _request_body(self, project_id: str) -> dict[str, Any]:
        user = {
            "name": self._iam.username,
            "password": self._password(),
            "domain": {"name": self._iam.domain},
        }
        return {
            "auth": {
                "identity": {"methods": ["password"], "password": {"user": user}},
                "scope": {"project": {"id": project_id}},
            }
        }

    def _password(self) -> str:
        if self._iam.password_file:
            try:
                with open(self._iam.password_file, encoding="utf-8") as handle:
                    password = handle.read().strip()
            except OSError as exc:
                raise CredentialsUnavailable(
                    f"IAM_PASSWORD_FILE {self._iam.password_file} unreadable: {exc.strerror}"
                ) from None
            logs.register_secret(password)
            return password
        assert self._iam.password is not None
        return self._iam.password.reveal()


def _lifetime_s(response: requests.Response) -> float:
    """Seconds the token stays valid, from ``expires_at`` and ``issued_at`` of the body."""
    try:
        token = response.json()["token"]
        expires = _parse_time(token["expires_at"])
        issued = _parse_time(token.get("issued_at")) if token.get("issued_at") else None
    except (ValueError, KeyError, TypeError):
        return 3600.0
    reference = issued or datetime.now(expires.tzinfo)
    return max(0.0, (expires - reference).total_seconds())


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _iam_error(response: requests.Response) -> tuple[str, str]:
    try:
        body = response.json()
    except ValueError:
        return f"IAM_HTTP_{response.status_code}", response.text[:200]
    error = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(error, Mapping):
        return f"IAM_HTTP_{error.get('code', response.status_code)}", str(error.get("message"))
    return f"IAM_HTTP_{response.status_code}", str(body)[:200]


def build_auth(settings: Settings, session: requests.Session) -> Auth:
    if settings.auth_mode == "token":
        assert settings.iam is not None
        return TokenAuth(settings.iam, session, settings.dli_timeout_s)
    source: CredentialSource
    if settings.credentials_file:
        source = FileCredentials(settings.credentials_file)
    else:
        assert settings.access_key is not None and settings.secret_key is not None
        source = EnvCredentials(settings.access_key, settings.secret_key, settings.security_token)
    return AkSkAuth(source)
