"""The DLI package's exceptions, in one place.

```
Exception
├── DliUnavailable          try later: DLI cannot be used now. The handler catches this base once
│   │                       and decides: deliver the event again, or publish ``failed``.
│   ├── TransientFailure    transient faults (DLI or IAM: connection errors, timeouts, 429, 5xx,
│   │                       DLI.0999, replies that cannot be interpreted: DLI_BAD_REPLY)
│   │                       outlasted the retries or the event's time budget. ``ages_out``: an
│   │                       event older than MAX_EVENT_AGE_S gives up.
│   ├── Misconfigured       a configuration fault DLI reported: a refused authentication (a 401
│   │   │                   after one credential refresh), an API that does not exist where
│   │   │                   DLI_ENDPOINT points (the gateway's 404 without a DLI code, a
│   │   │                   redirect). Not retried within the event; ages out like a transient.
│   │   └── AuthRefused     IAM refused to issue a token (wrong password, no permission).
│   └── CredentialsUnavailable  the credentials cannot be read (a mounted secret gone or
│                           malformed): a configuration fault, retried whatever the event's age.
├── TransientFault          one request's transient fault (DLI or IAM). Raised inside the
│                           client, which retries it; it never leaves ``DliClient``.
└── Refused                 a definitive refusal: the same request later gets the same answer.
    └── DliRefused          DLI refused a read (job state, listing).
```

Above this package the handler turns ``DliUnavailable`` into ``cancel_handler.errors.RetryLater``
(what the transports understand) or into ``failed`` results.
"""

from __future__ import annotations


class DliUnavailable(Exception):
    """DLI cannot be used now; the same call later may succeed.

    ``ages_out``: whether an event older than MAX_EVENT_AGE_S stops waiting for it (its jobs
    are published as ``failed``); when False the event is delivered again whatever its age."""

    ages_out = True

    def __init__(
        self,
        error_code: str,
        message: str,
        attempts: int = 0,
        http_status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(f"{error_code} after {attempts} attempts: {message}")
        self.error_code = error_code
        self.message = message
        self.attempts = attempts
        self.http_status = http_status
        self.request_id = request_id


class TransientFailure(DliUnavailable):
    """Transient faults outlasted every retry. ``error_code`` is ours: ``DLI_TIMEOUT``,
    ``DLI_UNREACHABLE``, ``DLI_HTTP_<status>`` (or IAM's counterparts); ``attempts`` counts the
    requests sent."""

    def out_of_time(self) -> TransientFailure:
        """The same failure, noting that the event's time budget stopped the retries."""
        return TransientFailure(
            self.error_code,
            f"{self.message} (no time left in the event's budget for another attempt)",
            self.attempts,
            self.http_status,
            self.request_id,
        )


class CredentialsUnavailable(DliUnavailable):
    """Credentials could not be read: a configuration problem, so the event is delivered
    again until it is fixed (it never ages out into ``failed``)."""

    ages_out = False

    def __init__(self, message: str) -> None:
        super().__init__("CREDENTIALS_UNAVAILABLE", message)
        self.args = (message,)

    def __str__(self) -> str:
        return self.message


class TransientFault(Exception):
    """One request hit a transient fault (DLI or IAM answered 429 or 5xx, an unreadable
    reply, or no answer: ``http_status`` None). The client retries it, waiting at least
    ``retry_after`` seconds when the server said so, and turns the last one into
    ``TransientFailure``."""

    def __init__(
        self,
        error_code: str,
        message: str,
        http_status: int | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{error_code}: {message}")
        self.error_code = error_code
        self.message = message
        self.http_status = http_status
        self.request_id = request_id
        self.retry_after = retry_after

    def failure(self, attempts: int) -> TransientFailure:
        """This fault as the end of a call that sent ``attempts`` requests."""
        return TransientFailure(
            self.error_code, self.message, attempts, self.http_status, self.request_id
        )


class Refused(Exception):
    """A definitive refusal. ``error_code`` is the service's own code where it gave one, else
    ``DLI_HTTP_<status>`` / ``IAM_HTTP_<status>``."""

    def __init__(self, summary: str, http_status: int, error_code: str, message: str) -> None:
        super().__init__(summary)
        self.http_status = http_status
        self.error_code = error_code
        self.message = message


class DliRefused(Refused):
    """DLI answered a read (job state, listing) with a definitive error. ``dli_code`` is DLI's
    own error code, ``None`` when the reply had none."""

    def __init__(
        self, http_status: int, dli_code: str | None, message: str, request_id: str | None = None
    ) -> None:
        super().__init__(
            f"DLI refused: HTTP {http_status} {dli_code}",
            http_status,
            dli_code or f"DLI_HTTP_{http_status}",
            message,
        )
        self.dli_code = dli_code
        self.request_id = request_id


class Misconfigured(DliUnavailable):
    """A configuration fault DLI (or IAM) reported: the same request cannot succeed until the
    configuration changes (credentials, DLI_ENDPOINT, region), so it is not retried within the
    event. The event is delivered again while younger than MAX_EVENT_AGE_S (a key rotation may
    be under way); older, its jobs are published ``failed`` with ``error_code`` (the code DLI,
    the gateway or IAM gave, else ``DLI_HTTP_<status>`` / ``IAM_HTTP_<status>``) and
    ``http_status`` of the last reply."""

    def __str__(self) -> str:
        return f"configuration fault: {self.error_code} (HTTP {self.http_status}): {self.message}"


class AuthRefused(Misconfigured):
    """IAM refused to issue a token: the credentials are wrong or lack permission."""

    def __init__(self, http_status: int, error_code: str, message: str) -> None:
        super().__init__(error_code, message, 0, http_status)
        self.args = (http_status, error_code, message)
