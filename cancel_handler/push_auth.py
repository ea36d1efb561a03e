"""Verification of the OIDC token Pub/Sub attaches to authenticated push requests.

Used by ``cancel_dli_job_http`` when ``PUSH_AUDIENCE`` is set, and imported only then, so
google-auth's transport costs nothing otherwise. The token must be signed by one of the keys
published at ``PUSH_CERTS_URL`` (Google's by default), unexpired, for ``PUSH_AUDIENCE``, issued
by Google, for the verified service account ``PUSH_SERVICE_ACCOUNT`` (required with
``PUSH_AUDIENCE``: without it any Google account could sign a token for the audience).

The published keys are cached for as long as their ``Cache-Control: max-age`` allows (at most
an hour), so a push request does not cost a round trip to Google; a token that fails against
cached keys older than a minute is checked once more against freshly fetched keys, in case
Google rotated them.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from google.auth.transport import Request, Response

from cancel_handler.config import Settings

GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")
CERTS_TIMEOUT_S = 10.0
DEFAULT_CERTS_TTL_S = 300.0
MAX_CERTS_TTL_S = 3600.0
REFETCH_AFTER_S = 60.0
_MAX_AGE = re.compile(r"max-age=(\d+)")


class PushAuthError(Exception):
    pass


def verify_push_token(authorization: str, settings: Settings) -> dict[str, Any]:
    """Check signature, expiry, audience, issuer and the service account.

    Raises ``PushAuthError`` with a short reason that never contains the token."""
    from google.auth import exceptions
    from google.oauth2 import id_token

    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise PushAuthError("missing bearer token")
    if not settings.push_audience:
        raise PushAuthError("PUSH_AUDIENCE is not configured")
    url = settings.push_certs_url
    request = _certs_request()
    for attempt in (1, 2):
        try:
            verified = id_token.verify_token(
                token, request, audience=settings.push_audience, certs_url=url
            )
            claims = dict(verified)
            break
        except (ValueError, exceptions.GoogleAuthError) as error:
            if attempt == 1 and request.forget(url, older_than_s=REFETCH_AFTER_S):
                continue
            raise PushAuthError(f"invalid push token: {_reason(error)}") from None
    return check_claims(claims, settings)


def check_claims(claims: dict[str, Any], settings: Settings) -> dict[str, Any]:
    if claims.get("iss") not in GOOGLE_ISSUERS:
        raise PushAuthError("push token not issued by Google")
    expected = settings.push_service_account
    if not expected:  # the configuration refuses this too: any Google account would do
        raise PushAuthError("PUSH_SERVICE_ACCOUNT is not configured")
    if claims.get("email") != expected or claims.get("email_verified") is not True:
        raise PushAuthError("push token is not from the expected service account")
    return claims


def _reason(error: Exception) -> str:
    """Why google-auth refused the token, without echoing the token or its claims."""
    text = str(error).lower()
    for needle, reason in (
        ("expired", "token expired"),
        ("too early", "token used too early"),
        ("audience", "wrong audience"),
        ("signature", "bad signature"),
        ("key id", "signed by an unknown key"),
        ("could not fetch", "signing keys could not be fetched"),
    ):
        if needle in text:
            return reason
    return type(error).__name__


@dataclass
class _Cached:
    response: Response
    fetched_at: float
    expires_at: float


class _CachingRequest(Request):
    """A ``google.auth.transport.Request`` that caches GET answers (the signing keys)."""

    def __init__(self, inner: Callable[..., Response]) -> None:
        self._inner = inner
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Response:
        if method != "GET":
            return self._inner(url, method, body, headers, timeout or CERTS_TIMEOUT_S, **kwargs)
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(url)
        if cached is not None and cached.expires_at > now:
            return cached.response
        response = self._inner(url, "GET", None, headers, timeout or CERTS_TIMEOUT_S, **kwargs)
        if response.status == 200:
            ttl = _max_age(response.headers)
            with self._lock:
                self._cache[url] = _Cached(response, now, now + ttl)
        return response

    def forget(self, url: str, older_than_s: float) -> bool:
        """Drop the cached answer for ``url`` if it is older than ``older_than_s``."""
        with self._lock:
            cached = self._cache.get(url)
            if cached is None or time.monotonic() - cached.fetched_at < older_than_s:
                return False
            del self._cache[url]
            return True


def _max_age(headers: Mapping[str, str]) -> float:
    control = next((v for k, v in headers.items() if k.lower() == "cache-control"), "")
    if "no-store" in control or "no-cache" in control:
        return 0.0
    match = _MAX_AGE.search(control)
    return min(float(match.group(1)), MAX_CERTS_TTL_S) if match else DEFAULT_CERTS_TTL_S


_request: _CachingRequest | None = None
_request_lock = threading.Lock()


def _certs_request() -> _CachingRequest:
    global _request
    if _request is None:
        with _request_lock:
            if _request is None:
                import requests
                from google.auth.transport import requests as google_requests

                session = requests.Session()
                _request = _CachingRequest(google_requests.Request(session))
    return _request
