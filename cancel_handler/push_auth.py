"""Verification of the OIDC token Pub/Sub attaches to authenticated push requests.

Imported only when ``PUSH_AUDIENCE`` is set, so google-auth's transport costs nothing otherwise.
"""

from __future__ import annotations

from typing import Any

from cancel_handler.config import Settings

GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")


class PushAuthError(Exception):
    pass


def verify_push_token(authorization: str, settings: Settings) -> dict[str, Any]:
    """Check signature, expiry, audience and (when configured) the service account."""
    from google.auth import exceptions
    from google.auth.transport import requests as google_requests
    from google.oauth2 import id_token

    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise PushAuthError("missing bearer token")
    try:
        claims: dict[str, Any] = id_token.verify_oauth2_token(  # type: ignore[no-untyped-call]
            token, google_requests.Request(), audience=settings.push_audience
        )
    except (ValueError, exceptions.GoogleAuthError) as error:
        raise PushAuthError(f"invalid push token: {type(error).__name__}") from None
    return check_claims(claims, settings)


def check_claims(claims: dict[str, Any], settings: Settings) -> dict[str, Any]:
    if claims.get("iss") not in GOOGLE_ISSUERS:
        raise PushAuthError("push token not issued by Google")
    expected = settings.push_service_account
    if expected and (claims.get("email") != expected or not claims.get("email_verified")):
        raise PushAuthError("push token is not from the expected service account")
    return claims
