"""DLI calls per job kind: sending, retrying, and DLI's answers -> outcomes.

What one reply means is ``dli.replies``' decision (pure functions); this module sends the
requests and acts on it:
- transient faults (connection errors, timeouts, 429, 5xx, ``DLI.0999``, replies that cannot be
  interpreted: ``DLI_BAD_REPLY``) are retried with exponential backoff and full jitter,
  honouring ``Retry-After`` up to a cap, at most ``max_attempts`` times; then
  ``TransientFailure``. Under DLI's rate limit every request of the instance also waits for its
  turn (``dli.pacing``: the pace its 429s taught);
- configuration faults raise ``Misconfigured`` at once: a 401 after one credential refresh, IAM
  refusing the password (``AuthRefused``), the API gateway's 404 without a DLI code;
- a refused cancel is explained by the job's state (``already_finished``, ``not_found``,
  ``rejected``); ``not_found`` only when DLI says so with its own code or a state read confirms
  it.
The handler decides whether an event is delivered again or published as ``failed``
(``dli.errors`` describes every exception). A client made with ``bounded(deadline)`` also stops
at the deadline (the event's time budget): no attempt starts and no backoff sleeps past it, and
each attempt's timeout is cut to the time left.
"""

from __future__ import annotations

import copy
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Generic, TypeVar
from urllib.parse import quote, urlsplit

import urllib3
from urllib3.exceptions import NewConnectionError

from cancel_handler.dli import listing, replies, signer
from cancel_handler.dli.auth import Auth, Call
from cancel_handler.dli.errors import DliRefused, Misconfigured, TransientFailure, TransientFault
from cancel_handler.dli.pacing import Pacer
from cancel_handler.dli.replies import (
    Accepted,
    Answer,
    ConfigFault,
    JobState,
    Page,
    Refusal,
    Reply,
    Transient,
)
from cancel_handler.dli.types import (
    CallOutcome,
    JobKind,
    JobRef,
    is_terminal,
)
from cancel_handler.limits import ListedJob

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    timeout_s: float = 10.0
    base_delay_s: float = 0.5
    max_delay_s: float = 10.0


@dataclass(frozen=True)
class _Got(Generic[T]):
    """What a call's final reply meant, and how it came."""

    value: T
    http_status: int
    request_id: str | None
    attempts: int


class DliClient:
    def __init__(
        self,
        endpoint: str,
        auth: Auth,
        policy: RetryPolicy,
        pool: urllib3.PoolManager | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        parts = urlsplit(endpoint)
        self._base = endpoint.rstrip("/")
        self._prefix = parts.path.rstrip("/")
        self._host = parts.netloc
        self._auth = auth
        self._policy = policy
        self._pool = pool or new_pool(8)
        self._sleep = sleep
        self._clock = clock
        self._deadline: float | None = None
        self._pacer = Pacer(clock)  # shared by every bounded() copy: one pace per instance
        self._random = random.Random()
        self._random_lock = threading.Lock()

    def bounded(self, deadline: float | None) -> DliClient:
        """This client (same connection pool, credentials and retry policy) with a deadline on the
        ``clock`` (``time.monotonic`` by default): no attempt starts and no backoff sleeps past
        it, and each attempt's timeout is cut to the time left. ``None``: no deadline."""
        other = copy.copy(self)
        other._deadline = deadline
        return other

    # -- cancel ---------------------------------------------------------------------------

    def cancel(self, job: JobRef) -> CallOutcome:
        """Cancel one job: what DLI's answer means. Raises ``DliUnavailable``:
        ``TransientFailure`` when faults outlast the retries, ``Misconfigured`` for a
        configuration fault, ``CredentialsUnavailable`` when the credentials cannot be read."""
        got = self._call(self._cancel_call(job), replies.read_cancel(job.kind))
        if isinstance(got.value, Accepted):
            return CallOutcome(
                outcome="cancelled",
                is_success=True,
                message=got.value.message,
                http_status=got.http_status,
                request_id=got.request_id,
                attempts=got.attempts,
            )
        return self._explain_refusal(job, got.value, got.request_id, got.attempts)

    def _cancel_call(self, job: JobRef) -> Call:
        if job.kind == "spark":
            return Call("DELETE", self._spark_path(job), job.project_id)
        if job.kind == "flink":
            path = f"{self._prefix}/v1.0/{_q(job.project_id)}/streaming/jobs/stop"
            body = json.dumps({"job_ids": [int(job.job_id)], "trigger_savepoint": False})
            return Call("POST", path, job.project_id, body=body.encode())
        return Call("DELETE", self._job_path(job), job.project_id)

    def _explain_refusal(
        self, job: JobRef, refusal: Refusal, request_id: str | None, attempts: int
    ) -> CallOutcome:
        """After a refused cancel, the job's state tells already-finished and not-found
        apart from a real refusal (not after a 403: no state read can change that)."""
        base = CallOutcome(
            outcome="rejected",
            is_success=False,
            error_code=refusal.error_code,
            message=refusal.message,
            http_status=refusal.http_status,
            request_id=request_id,
            attempts=attempts,
        )
        if refusal.not_found:
            return replace(base, outcome="not_found")
        if not refusal.needs_state_read:
            return base
        try:
            state = self.job_state(job)
        except DliRefused:
            return base
        if state is None:
            return replace(base, outcome="not_found")
        if is_terminal(job.kind, state):
            return replace(base, outcome="already_finished", message=f"job is {state}")
        return base

    # -- state and listing ----------------------------------------------------------------

    def job_state(self, job: JobRef) -> str | None:
        """The job's state as DLI reports it (SQL status, Spark state, Flink status); ``None``
        when DLI says, with its own code, that there is no such job. Raises ``DliRefused``
        when DLI refuses the read, ``DliUnavailable`` when it cannot be made."""
        call = Call("GET", self._state_path(job), job.project_id)
        got: _Got[JobState | Refusal] = self._call(call, replies.read_state(job.kind))
        if isinstance(got.value, Refusal):
            raise _refused(got.value, got.request_id)
        return got.value.state

    def _state_path(self, job: JobRef) -> str:
        if job.kind == "spark":
            return self._spark_path(job) + "/state"
        if job.kind == "flink":
            return f"{self._prefix}/v1.0/{_q(job.project_id)}/streaming/jobs/{_q(job.job_id)}"
        return self._job_path(job) + "/status"

    def list_active_sql_jobs(self, project_id: str, queue_name: str) -> list[str]:
        """Every LAUNCHING, RUNNING or SCALING SQL job on the queue, across all pages
        (``dli.listing``: states in lifecycle order, pages to the total DLI reports)."""
        return [job.job_id for job in self.list_active(project_id, "sql", queue_name)]

    def list_active(
        self, project_id: str, kind: JobKind, queue_name: str | None = None
    ) -> list[ListedJob]:
        """Every active job of ``kind`` on the queue (``None``: every queue), all pages, with
        what the watchdog needs (``dli.listing``)."""
        return listing.list_active(
            self._page_reader(kind), self._prefix, project_id, kind, queue_name
        )

    def _page_reader(self, kind: JobKind) -> Callable[[Call], Page]:
        """Reads one listing page (``dli.replies.read_page``); ``DliRefused`` when DLI
        refuses it."""
        read = replies.read_page(kind)

        def page(call: Call) -> Page:
            got = self._call(call, read)
            if isinstance(got.value, Refusal):
                raise _refused(got.value, got.request_id)
            return got.value

        return page

    # -- transport ------------------------------------------------------------------------

    def _call(self, call: Call, read: Callable[[Answer], T]) -> _Got[T]:
        """Send ``call`` and ``read`` the answer, retrying transient faults (a reply ``read``
        cannot interpret included). ``attempts`` (here or in the ``DliUnavailable``) counts
        every request sent for it, the one after a 401 included."""
        counted = 0  # attempts toward max_attempts (a fresh credential restarts the count)
        sent = 0  # requests actually sent
        reauthenticated = False
        last: TransientFailure | None = None
        while counted < self._policy.max_attempts:
            started = self._wait_for_turn()
            if started is None:
                break
            timeout = self._attempt_timeout()
            if timeout is None:
                break
            counted += 1
            sent += 1
            try:
                got = self._attempt(call, read, timeout, sent)
            except TransientFault as fault:
                self._paced(started, fault.http_status, fault.retry_after)
                last = fault.failure(sent)
                if counted < self._policy.max_attempts:
                    delay = self._backoff(counted, fault.retry_after)
                    if not self._time_left_after(delay):
                        break
                    self._sleep(delay)
                continue
            if not isinstance(got, ConfigFault):
                return got
            if got.unauthorized and not reauthenticated and self._auth.after_unauthorized(call):
                reauthenticated = True
                counted -= 1  # a fresh credential gets a full set of attempts of its own
                continue
            raise Misconfigured(got.error_code, got.message, sent, got.http_status, got.request_id)
        if counted < self._policy.max_attempts:  # stopped by the deadline
            if last is None:
                raise TransientFailure(
                    "DLI_TIMEOUT", "the event's time budget ran out before DLI was called", sent
                )
            raise last.out_of_time()
        assert last is not None
        raise last

    def _wait_for_turn(self) -> float | None:
        """Sleep until the pacer lets this request start (DLI's rate limit); the start time, or
        ``None`` when that would be past the deadline."""
        started = self._pacer.turn()
        wait = started - self._clock()
        if wait > 0:
            if not self._time_left_after(wait):
                return None
            self._sleep(wait)
        return started

    def _paced(self, started: float, status: int | None, retry_after: float | None) -> None:
        """Tell the pacer when DLI's gateway throttled a request."""
        if status == 429:
            # held no longer than the throttled request itself waits (the backoff's cap)
            cap = self._policy.max_delay_s
            self._pacer.throttled(started, None if retry_after is None else min(retry_after, cap))

    def _attempt(
        self, call: Call, read: Callable[[Answer], T], timeout: float, sent: int
    ) -> _Got[T] | ConfigFault:
        """One request: what its reply means, or ``TransientFault``."""
        reply = self._send(call, timeout)
        meaning = replies.interpret(reply, read, time.time())
        if isinstance(meaning, Transient):
            raise TransientFault(
                meaning.error_code,
                meaning.message,
                meaning.http_status,
                meaning.request_id,
                meaning.retry_after_s,
            )
        if isinstance(meaning, ConfigFault):
            return meaning
        return _Got(meaning, reply.status, replies.request_id_of(reply.headers), sent)

    def _attempt_timeout(self) -> float | None:
        """The timeout of the next attempt; ``None`` when the deadline has passed."""
        if self._deadline is None:
            return self._policy.timeout_s
        left = self._deadline - self._clock()
        if left <= 0:
            return None
        return min(self._policy.timeout_s, left)

    def _time_left_after(self, delay: float) -> bool:
        return self._deadline is None or self._clock() + delay < self._deadline

    def _send(self, call: Call, timeout: float) -> Reply:
        url = self._base[: len(self._base) - len(self._prefix)] + call.path
        if call.query:
            # the query goes on the wire exactly as it was signed
            url += "?" + signer.canonical_query(call.query)
        try:
            headers = self._auth.headers(call, self._host)
            raw = self._pool.request(
                call.method,
                url,
                body=call.body or None,
                headers=headers,
                timeout=timeout,
                retries=False,
                redirect=False,
            )
        except NewConnectionError as exc:  # a subclass of the connect timeout, but refused
            raise TransientFault("DLI_UNREACHABLE", _reason(exc)) from None
        except urllib3.exceptions.TimeoutError as exc:
            raise TransientFault("DLI_TIMEOUT", _reason(exc)) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise TransientFault("DLI_UNREACHABLE", _reason(exc)) from None
        return Reply(raw.status, raw.headers, raw.data)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        cap = self._policy.max_delay_s
        if retry_after is not None:
            return min(retry_after, cap)
        with self._random_lock:
            return self._random.uniform(0, min(cap, self._policy.base_delay_s * 2**attempt))

    def _job_path(self, job: JobRef) -> str:
        return f"{self._prefix}/v1.0/{_q(job.project_id)}/jobs/{_q(job.job_id)}"

    def _spark_path(self, job: JobRef) -> str:
        return f"{self._prefix}/v2.0/{_q(job.project_id)}/batches/{_q(job.job_id)}"


def _refused(refusal: Refusal, request_id: str | None) -> DliRefused:
    return DliRefused(refusal.http_status, refusal.dli_code, refusal.message, request_id)


def new_pool(size: int) -> urllib3.PoolManager:
    """Keep-alive connections to DLI, ``size`` per host, TLS verified (certifi's CAs).

    urllib3 directly rather than through requests: requests adds ~0.7 ms of request
    preparation to every DLI call (a third of a cancel's own cost on loopback)."""
    import certifi

    return urllib3.PoolManager(
        num_pools=4, maxsize=size, block=False, cert_reqs="CERT_REQUIRED", ca_certs=certifi.where()
    )


def _q(segment: str) -> str:
    return quote(segment, safe="")


_TRANSPORT_CAUSES = (
    ("refused", "connection refused"),
    ("reset by peer", "connection reset"),
    ("RemoteDisconnected", "connection closed without an answer"),
    ("without response", "connection closed without an answer"),
    ("Name or service not known", "host name not resolved"),
    ("nodename nor servname", "host name not resolved"),
    ("CERTIFICATE_VERIFY_FAILED", "TLS certificate not trusted"),
    ("connect timeout", "connect timed out"),
    ("Read timed out", "no answer in time"),
)


def _reason(exc: Exception) -> str:
    """A short, secret-free description of a transport error: its type and a known cause
    (the library's own text carries the URL, which is not echoed)."""
    text = str(exc)
    causes = [cause for marker, cause in _TRANSPORT_CAUSES if marker in text]
    return f"{type(exc).__name__} ({causes[0]})" if causes else type(exc).__name__
