"""Where DLI credentials come from, and how a request is authenticated with them.

- ``AkSkAuth`` signs each request (SDK-HMAC-SHA256) with an AK/SK pair from the environment or
  from a mounted secret file that is re-read when it changes (rotation without a restart).
  A security token (temporary AK/SK) is sent as ``X-Security-Token`` and signed.
- ``TokenAuth`` gets an IAM token per DLI project (password method, project scope), caches it
  for every thread of the process, and renews it before it expires.

After a 401 from DLI, ``after_unauthorized`` drops what may be stale (the file is read again,
the token that was refused is forgotten) and says whether one retry can help.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import requests

from cancel_handler import logs
from cancel_handler.config import (
    CredentialsFileError,
    IamSettings,
    Secret,
    Settings,
    read_credentials_file,
    read_password_file,
)
from cancel_handler.dli import signer
from cancel_handler.dli.errors import AuthRefused, CredentialsUnavailable, TransientFault

JSON_CONTENT_TYPE = "application/json"
# A mounted secret is read again at least this often even when its ``stat`` did not change
# (a secret volume may serve a new version without changing mtime, size or inode).
FILE_MAX_AGE_S = 300.0
# Renew a token when less than min(300 s, 10 % of its lifetime) remains (SPEC section 4).
RENEW_MARGIN_S = 300.0
RENEW_MARGIN_FRACTION = 0.1
DEFAULT_TOKEN_LIFETIME_S = 3600.0  # IAM sent no usable expires_at (real tokens last 24 h)
# After IAM refuses the password, it is not asked again (for any project) for this long: every
# request meanwhile shares that refusal (SPEC 5.1: accounts get locked out by retry storms).
IAM_REFUSAL_PAUSE_S = 60.0


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
    """A mounted secret: JSON ``{"ak", "sk", "security_token"?}``.

    ``current()`` costs one ``stat`` (which follows symlinks) when nothing changed; the file is
    read again when its inode, size, mtime or ctime changed (an in-place write, an atomic
    rename, a Kubernetes-style ``..data`` symlink swap), at least every ``max_age_s``, and
    after a 401 (``refresh``). A file that has gone or become malformed raises
    ``CredentialsUnavailable`` (the event is retried)."""

    def __init__(
        self,
        path: str,
        max_age_s: float = FILE_MAX_AGE_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._max_age_s = max_age_s
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int, int, int] | None = None
        self._read_at = 0.0
        self._credentials: AkSk | None = None

    def current(self) -> AkSk:
        with self._lock:
            stamp = self._stat()
            stale = self._monotonic() - self._read_at >= self._max_age_s
            if self._credentials is None or stamp != self._stamp or stale:
                self._load(stamp)
            assert self._credentials is not None
            return self._credentials

    def refresh(self) -> bool:
        """After a 401: read the file now; True if it holds other credentials than before."""
        with self._lock:
            before = self._credentials
            self._load(self._stat())
            return before is None or self._credentials != before

    def _load(self, stamp: tuple[int, int, int, int, int]) -> None:
        # The stamp is taken before the read: a change racing with the read is seen next time.
        self._credentials = self._read()
        self._stamp = stamp
        self._read_at = self._monotonic()

    def _stat(self) -> tuple[int, int, int, int, int]:
        try:
            st = os.stat(self._path)
        except OSError as exc:
            raise CredentialsUnavailable(
                f"DLI_CREDENTIALS_FILE {self._path} unreadable: {exc.strerror}"
            ) from None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def _read(self) -> AkSk:
        try:
            ak, sk, token = read_credentials_file(self._path)
        except CredentialsFileError as error:
            raise CredentialsUnavailable(str(error)) from None
        for value in (ak, sk, token):
            logs.register_secret(value)
        return AkSk(ak, sk, token)


class CredentialSource(Protocol):
    def current(self) -> AkSk: ...

    def refresh(self) -> bool: ...


class AkSkAuth:
    def __init__(self, source: CredentialSource, clock: Callable[[], datetime] | None = None):
        self._source = source
        self._clock = clock

    def headers(self, call: Call, host: str) -> dict[str, str]:
        credentials = self._source.current()
        date = signer.sdk_date(self._clock() if self._clock else None)
        # Every header sent here is signed, as the official SDK does; they are listed in
        # sorted lower-case order, so the signer needs no normalisation pass.
        signed = [
            ("content-type", JSON_CONTENT_TYPE),
            ("host", host),
            ("x-project-id", call.project_id),
            ("x-sdk-date", date),
        ]
        headers = {
            "Host": host,
            "Content-Type": JSON_CONTENT_TYPE,
            "X-Project-Id": call.project_id,
            "X-Sdk-Date": date,
        }
        if credentials.security_token:
            token = credentials.security_token.strip()
            signed.append(("x-security-token", token))
            headers["X-Security-Token"] = token
        headers["Authorization"] = signer.sign_prepared(
            call.method,
            call.path,
            signed,
            date,
            credentials.access_key,
            credentials.secret_key,
            query=call.query,
            body=call.body,
        )
        return headers

    def after_unauthorized(self, call: Call) -> bool:
        return self._source.refresh()


@dataclass(frozen=True)
class _Token:
    value: str = field(repr=False)
    expires_at: float  # monotonic deadline
    renew_at: float


class TokenAuth:
    """IAM token auth. One token per project, shared by all threads of the process.

    - A token is renewed when less than min(300 s, 10 % of its lifetime) remains; the lifetime
      is ``expires_at - issued_at`` of IAM's answer, counted from just before the request.
    - Only one thread fetches a project's token at a time; threads that need it meanwhile wait
      for that fetch (no token yet, or it has expired) or keep using the current one (it is
      only due for renewal; if the renewal fails transiently it stays in use until it expires).
    - After a 401 the token that request carried is forgotten, unless another thread has
      already replaced it, so a refused token costs one fetch however many requests saw it.
    - After IAM refuses the password (``AuthRefused``), IAM is asked again at most once per
      ``IAM_REFUSAL_PAUSE_S``, whatever the project: until then every token request of the
      instance raises that refusal at once.
    """

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
        self._used = threading.local()  # per thread: project id -> token value last sent
        # per project, changed only with its lock held: fetches done, the last one's failure
        self._fetches_done: dict[str, int] = {}
        self._failures: dict[str, tuple[int, Exception]] = {}
        self._refused: tuple[float, AuthRefused] | None = None  # when IAM last refused, and how
        self.fetch_count = 0

    def headers(self, call: Call, host: str) -> dict[str, str]:
        return {
            "Host": host,
            "Content-Type": JSON_CONTENT_TYPE,
            "X-Auth-Token": self.token(call.project_id),
        }

    def after_unauthorized(self, call: Call) -> bool:
        used = self._used_tokens().get(call.project_id)
        with self._guard:
            cached = self._tokens.get(call.project_id)
            if cached is not None and (used is None or cached.value == used):
                del self._tokens[call.project_id]
        return True

    def token(self, project_id: str) -> str:
        cached = self._tokens.get(project_id)
        if cached is not None and self._monotonic() < cached.renew_at:
            return self._use(project_id, cached.value)
        self._raise_if_refused_lately()
        lock = self._project_lock(project_id)
        if cached is not None and self._monotonic() < cached.expires_at:
            if not lock.acquire(blocking=False):
                return self._use(project_id, cached.value)  # another thread is renewing it
        else:
            done_before = self._fetches_done.get(project_id, 0)
            lock.acquire()
            failed = self._failures.get(project_id)
            if failed is not None and failed[0] > done_before:
                # The fetch this thread waited for failed: share its outcome, do not repeat it.
                lock.release()
                raise _copy(failed[1])
        try:
            return self._use(project_id, self._renew(project_id))
        finally:
            lock.release()

    def _renew(self, project_id: str) -> str:
        """With the project's lock held: the cached token if still fresh, else a new one."""
        cached = self._tokens.get(project_id)
        if cached is not None and self._monotonic() < cached.renew_at:
            return cached.value
        self._raise_if_refused_lately()  # a thread that waited for the lock: IAM may have refused
        try:
            fresh = self._fetch(project_id)
        except (TransientFault, AuthRefused, CredentialsUnavailable) as exc:
            if isinstance(exc, AuthRefused):
                with self._guard:
                    self._refused = (self._monotonic(), exc)
            self._failures[project_id] = (self._fetch_done(project_id), exc)
            still_valid = cached is not None and self._monotonic() < cached.expires_at
            if still_valid and not isinstance(exc, AuthRefused):
                assert cached is not None
                logs.warning(
                    "IAM token renewal failed; the current token stays in use until it expires",
                    project_id=project_id,
                    error=str(exc),
                )
                return cached.value
            raise
        self._fetch_done(project_id)
        self._failures.pop(project_id, None)
        with self._guard:
            self._tokens[project_id] = fresh
        return fresh.value

    def _raise_if_refused_lately(self) -> None:
        """Raise IAM's last refusal while it is younger than ``IAM_REFUSAL_PAUSE_S``."""
        refused = self._refused
        if refused is not None and self._monotonic() - refused[0] < IAM_REFUSAL_PAUSE_S:
            raise _copy(refused[1])

    def _fetch_done(self, project_id: str) -> int:
        """Count a finished fetch (the project's lock held); returns the new count."""
        done = self._fetches_done[project_id] = self._fetches_done.get(project_id, 0) + 1
        return done

    def _use(self, project_id: str, value: str) -> str:
        self._used_tokens()[project_id] = value
        return value

    def _used_tokens(self) -> dict[str, str]:
        used: dict[str, str] | None = getattr(self._used, "tokens", None)
        if used is None:
            used = self._used.tokens = {}
        return used

    def _project_lock(self, project_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(project_id, threading.Lock())

    def _fetch(self, project_id: str) -> _Token:
        body = json.dumps(self._request_body(project_id))
        started = self._monotonic()
        try:
            response = self._session.post(
                f"{self._iam.endpoint}/v3/auth/tokens",
                data=body,
                headers={"Content-Type": "application/json;charset=utf8"},
                timeout=self._timeout_s,
            )
        except requests.Timeout:
            raise TransientFault("IAM_TIMEOUT", "no answer from IAM in time") from None
        except requests.RequestException as exc:
            raise TransientFault("IAM_UNREACHABLE", type(exc).__name__) from None
        with self._guard:
            self.fetch_count += 1
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientFault(*_iam_error(response), http_status=response.status_code)
        if response.status_code != 201:
            raise AuthRefused(response.status_code, *_iam_error(response))
        value = response.headers.get("X-Subject-Token", "")
        if not value:
            raise AuthRefused(response.status_code, "IAM_NO_TOKEN", "no X-Subject-Token header")
        logs.register_secret(value)
        lifetime = _lifetime_s(response)
        margin = renew_margin_s(lifetime)
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
                password = read_password_file(self._iam.password_file)
            except CredentialsFileError as error:
                raise CredentialsUnavailable(str(error)) from None
            logs.register_secret(password)
            return password
        assert self._iam.password is not None
        return self._iam.password.reveal()


def _copy(error: Exception) -> Exception:
    """A fresh exception like ``error`` (one instance must not be raised in many threads)."""
    if isinstance(error, TransientFault):
        return TransientFault(error.error_code, error.message, error.http_status)
    return type(error)(*error.args)


def renew_margin_s(lifetime_s: float) -> float:
    """How long before expiry a token with this lifetime is renewed."""
    return min(RENEW_MARGIN_S, lifetime_s * RENEW_MARGIN_FRACTION)


def _lifetime_s(response: requests.Response) -> float:
    """Seconds the token stays valid: ``expires_at - issued_at`` of the body (IAM's clock on
    both sides, so local clock skew does not matter); ``expires_at - now`` without
    ``issued_at``; an hour when the body has no usable ``expires_at``."""
    try:
        token = response.json()["token"]
        expires = _parse_time(token["expires_at"])
        issued_text = token.get("issued_at")
        issued = _parse_time(issued_text) if issued_text else datetime.now(UTC)
        return max(0.0, (expires - issued).total_seconds())
    except (ValueError, KeyError, TypeError, AttributeError):
        return DEFAULT_TOKEN_LIFETIME_S


def _parse_time(text: str) -> datetime:
    """IAM's ``2026-11-29T12:00:00.123000Z``; a time without a zone is taken as UTC."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _iam_error(response: requests.Response) -> tuple[str, str]:
    """IAM's error code and message. IAM answers ``{"error": {"code", "message", "title"}}``
    (``code`` is the HTTP status, reported as ``IAM_HTTP_<code>``, or a code such as
    ``IAM.0101``, kept as it is); the API gateway in front of it ``{"error_code",
    "error_msg"}``."""
    status_code = f"IAM_HTTP_{response.status_code}"
    try:
        body = response.json()
    except ValueError:
        return status_code, " ".join(response.text[:200].split())
    if not isinstance(body, Mapping):
        return status_code, str(body)[:200]
    error = body.get("error")
    if isinstance(error, Mapping):
        code = str(error.get("code") or response.status_code)
        message = str(error.get("message") or error.get("title") or "")
        return (f"IAM_HTTP_{code}" if code.isdigit() else code), message
    if body.get("error_code"):
        return str(body["error_code"]), str(body.get("error_msg", ""))
    return status_code, str(body)[:200]


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
