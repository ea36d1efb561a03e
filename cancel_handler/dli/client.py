"""DLI calls per job kind, retries of transient faults, and DLI answers -> outcomes.

Transient faults (connection errors, timeouts, 429, 5xx, bodies that are not JSON) are retried
with exponential backoff and full jitter, honouring ``Retry-After`` up to a cap, at most
``max_attempts`` times. When they outlast the retries the call ends in ``TransientFailure``; the
handler decides whether the event is delivered again or published as ``failed`` (``dli.errors``
describes every exception). A client made with ``bounded(deadline)`` also stops at the
deadline (the event's time budget): no attempt starts and no backoff sleeps past it, and each
attempt's timeout is cut to the time left.
"""

from __future__ import annotations

import copy
import json
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote, urlsplit

import urllib3
from urllib3.exceptions import NewConnectionError

from cancel_handler import logs
from cancel_handler.dli import signer
from cancel_handler.dli.auth import Auth, Call
from cancel_handler.dli.errors import AuthRefused, DliRefused, TransientFailure, TransientFault
from cancel_handler.dli.types import (
    SQL_ACTIVE_STATES,
    CallOutcome,
    JobRef,
    is_terminal,
)

NOT_FOUND_CODES = frozenset({"DLI.0002", "DLI.0023"})
LIST_PAGE_SIZE = 100


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    timeout_s: float = 10.0
    base_delay_s: float = 0.5
    max_delay_s: float = 10.0


@dataclass(frozen=True)
class Answer:
    """A definitive (non-transient) DLI answer."""

    status: int
    body: Any
    request_id: str | None
    attempts: int

    @property
    def error_code(self) -> str | None:
        return _error_pair(self.body)[0] if self.status >= 400 else None

    @property
    def error_message(self) -> str:
        return _error_pair(self.body)[1] if self.status >= 400 else ""


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
        """Cancel one job: what DLI's answer means. Raises ``TransientFailure`` when faults
        outlast the retries, ``CredentialsUnavailable`` when the credentials cannot be read; an
        authentication IAM refuses is a ``rejected`` outcome."""
        try:
            if job.kind == "spark":
                return self._cancel_spark(job)
            if job.kind == "flink":
                return self._cancel_flink(job)
            return self._cancel_sql(job)
        except AuthRefused as refused:
            return CallOutcome(
                "rejected", False, refused.error_code, refused.message, refused.http_status
            )

    def _cancel_sql(self, job: JobRef) -> CallOutcome:
        answer = self._call(Call("DELETE", self._job_path(job), job.project_id))
        if answer.status == 200 and _flag(_field(answer.body, "is_success")):
            return _cancelled(answer)
        return self._explain_refusal(job, answer, self._sql_state)

    def _cancel_spark(self, job: JobRef) -> CallOutcome:
        path = f"{self._prefix}/v2.0/{_q(job.project_id)}/batches/{_q(job.job_id)}"
        answer = self._call(Call("DELETE", path, job.project_id))
        if answer.status == 200 and _field(answer.body, "msg") == "deleted":
            return _cancelled(answer)
        return self._explain_refusal(job, answer, self._spark_state)

    def _cancel_flink(self, job: JobRef) -> CallOutcome:
        path = f"{self._prefix}/v1.0/{_q(job.project_id)}/streaming/jobs/stop"
        body = json.dumps({"job_ids": [int(job.job_id)], "trigger_savepoint": False})
        answer = self._call(Call("POST", path, job.project_id, body=body.encode()))
        per_job = answer.body[0] if isinstance(answer.body, list) and answer.body else {}
        if answer.status == 200 and _flag(_field(per_job, "is_success")):
            return _cancelled(answer)
        if answer.status == 200:
            answer = replace(answer, body=per_job)
        return self._explain_refusal(job, answer, self._flink_state)

    def _explain_refusal(
        self, job: JobRef, answer: Answer, read_state: Callable[[JobRef], str | None]
    ) -> CallOutcome:
        """After a refused cancel, the job's state tells already-finished and not-found
        apart from a real refusal. 401/403 are refusals: no state read can change that."""
        code = answer.error_code or _field(answer.body, "error_code")
        message = answer.error_message or str(_field(answer.body, "message") or "")
        base = CallOutcome(
            outcome="rejected",
            is_success=False,
            error_code=code or f"DLI_HTTP_{answer.status}",
            message=message,
            http_status=answer.status,
            request_id=answer.request_id,
            attempts=answer.attempts,
        )
        if answer.status in (401, 403):
            return base
        if code in NOT_FOUND_CODES or answer.status == 404:
            return replace(base, outcome="not_found")
        try:
            state = read_state(job)
        except DliRefused as refused:
            if _says_not_found(refused):
                return replace(base, outcome="not_found")
            return base
        if state is None:
            return replace(base, outcome="not_found")
        if is_terminal(job.kind, state):
            return replace(base, outcome="already_finished", message=f"job is {state}")
        return base

    # -- state and listing ----------------------------------------------------------------

    def job_state(self, job: JobRef) -> str | None:
        """The job's state as DLI reports it (SQL status, Spark state, Flink status); ``None``
        when DLI has no such job. Raises ``DliRefused``, ``AuthRefused`` or
        ``TransientFailure`` when the state cannot be read."""
        readers = {"sql": self._sql_state, "spark": self._spark_state, "flink": self._flink_state}
        try:
            return readers[job.kind](job)
        except DliRefused as refused:
            if _says_not_found(refused):
                return None
            raise

    def _sql_state(self, job: JobRef) -> str | None:
        answer = self._read(Call("GET", self._job_path(job) + "/status", job.project_id))
        status = _field(answer.body, "status")
        return str(status) if status else None

    def _spark_state(self, job: JobRef) -> str | None:
        path = f"{self._prefix}/v2.0/{_q(job.project_id)}/batches/{_q(job.job_id)}/state"
        state = _field(self._read(Call("GET", path, job.project_id)).body, "state")
        return str(state) if state else None

    def _flink_state(self, job: JobRef) -> str | None:
        path = f"{self._prefix}/v1.0/{_q(job.project_id)}/streaming/jobs/{_q(job.job_id)}"
        body = self._read(Call("GET", path, job.project_id)).body
        detail = _field(body, "job_detail") or body
        status = _field(detail, "status")
        return str(status) if status else None

    def list_active_sql_jobs(self, project_id: str, queue_name: str) -> list[str]:
        """Every RUNNING, LAUNCHING or SCALING SQL job on the queue, across all pages."""
        seen: dict[str, None] = {}
        for state in SQL_ACTIVE_STATES:
            for job in self._list_pages(project_id, queue_name, state):
                if job.get("queue_name", queue_name) == queue_name and job.get("status") == state:
                    seen.setdefault(str(job["job_id"]), None)
        return list(seen)

    def _list_pages(self, project_id: str, queue: str, state: str) -> Iterator[dict[str, Any]]:
        path = f"{self._prefix}/v1.0/{_q(project_id)}/jobs"
        page, fetched = 1, 0
        while True:
            query = (
                ("current-page", str(page)),
                ("job-status", state),
                ("page-size", str(LIST_PAGE_SIZE)),
                ("queue_name", queue),
            )
            body = self._read(Call("GET", path, project_id, query=query)).body
            jobs = [
                j for j in (_field(body, "jobs") or []) if isinstance(j, dict) and "job_id" in j
            ]
            yield from jobs
            fetched += len(jobs)
            total = _field(body, "job_count")
            if (
                not jobs
                or len(jobs) < LIST_PAGE_SIZE
                or (isinstance(total, int) and fetched >= total)
            ):
                return
            page += 1

    def _read(self, call: Call) -> Answer:
        answer = self._call(call)
        if answer.status >= 400 or _field(answer.body, "is_success") is False:
            raise DliRefused(
                answer.status, answer.error_code, answer.error_message, answer.request_id
            )
        return answer

    # -- transport ------------------------------------------------------------------------

    def _call(self, call: Call) -> Answer:
        """Send ``call``, retrying transient faults. ``attempts`` in the answer (or in the
        ``TransientFailure``) counts every request sent for it, the one after a 401 included."""
        counted = 0  # attempts toward max_attempts (a fresh credential restarts the count)
        sent = 0  # requests actually sent
        reauthenticated = False
        last: TransientFailure | None = None
        while counted < self._policy.max_attempts:
            timeout = self._attempt_timeout()
            if timeout is None:
                break
            counted += 1
            sent += 1
            try:
                answer = self._send(call, sent, timeout)
            except TransientFault as fault:
                last = fault.failure(sent)
                if counted < self._policy.max_attempts:
                    delay = self._backoff(counted, fault.retry_after)
                    if not self._time_left_after(delay):
                        break
                    self._sleep(delay)
                continue
            if answer.status == 401 and not reauthenticated and self._auth.after_unauthorized(call):
                reauthenticated = True
                counted -= 1  # a fresh credential gets a full set of attempts of its own
                continue
            return answer
        if counted < self._policy.max_attempts:  # stopped by the deadline
            if last is None:
                raise TransientFailure(
                    "DLI_TIMEOUT", "the event's time budget ran out before DLI was called", sent
                )
            raise last.out_of_time()
        assert last is not None
        raise last

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

    def _send(self, call: Call, attempt: int, timeout: float) -> Answer:
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
        return _classify(_Response(raw.status, raw.headers, raw.data), attempt)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        cap = self._policy.max_delay_s
        if retry_after is not None:
            return min(retry_after, cap)
        with self._random_lock:
            return self._random.uniform(0, min(cap, self._policy.base_delay_s * 2**attempt))

    def _job_path(self, job: JobRef) -> str:
        return f"{self._prefix}/v1.0/{_q(job.project_id)}/jobs/{_q(job.job_id)}"


@dataclass(frozen=True)
class _Response:
    status_code: int
    headers: Mapping[str, str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


def new_pool(size: int) -> urllib3.PoolManager:
    """Keep-alive connections to DLI, ``size`` per host, TLS verified (certifi's CAs).

    urllib3 directly rather than through requests: requests adds ~0.7 ms of request
    preparation to every DLI call (a third of a cancel's own cost on loopback)."""
    import certifi

    return urllib3.PoolManager(
        num_pools=4, maxsize=size, block=False, cert_reqs="CERT_REQUIRED", ca_certs=certifi.where()
    )


def _classify(response: _Response, attempt: int) -> Answer:
    request_id = response.headers.get("X-Request-Id")
    status = response.status_code
    if status == 429 or status >= 500:
        raise TransientFault(
            f"DLI_HTTP_{status}",
            _snippet(response),
            status,
            request_id,
            _retry_after(response.headers.get("Retry-After")),
        )
    try:
        body = response.json()
    except ValueError:
        raise TransientFault(
            f"DLI_HTTP_{status}", f"answer is not JSON: {_snippet(response)}", status, request_id
        ) from None
    return Answer(status, body, request_id, attempt)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _cancelled(answer: Answer) -> CallOutcome:
    return CallOutcome(
        outcome="cancelled",
        is_success=True,
        message=str(_field(answer.body, "message") or ""),
        http_status=answer.status,
        request_id=answer.request_id,
        attempts=answer.attempts,
    )


def _says_not_found(refused: DliRefused) -> bool:
    return refused.dli_code in NOT_FOUND_CODES or refused.http_status == 404


def _flag(value: Any) -> bool:
    """DLI's success flags: a JSON true, or Flink's string "true"."""
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _field(body: Any, name: str) -> Any:
    return body.get(name) if isinstance(body, dict) else None


def _error_pair(body: Any) -> tuple[str | None, str]:
    """The error code and message, the way the official SDK finds them."""
    if not isinstance(body, dict):
        return None, ""
    for code_key, msg_key in (("error_code", "error_msg"), ("errorCode", "errorMsg")):
        if code_key in body:
            return str(body[code_key]), str(body.get(msg_key, ""))
    for value in body.values():
        if isinstance(value, dict):
            code, message = _error_pair(value)
            if code:
                return code, message
    return None, str(body.get("message", "") or body.get("error_msg", ""))


def _q(segment: str) -> str:
    return quote(segment, safe="")


def _snippet(response: _Response) -> str:
    """The start of an answer's body, for messages; registered secrets are masked."""
    return " ".join(logs.redact(response.text[:2000]).split())[:200]


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
