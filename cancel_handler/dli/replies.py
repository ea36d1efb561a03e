"""What DLI's replies mean: pure functions of (status, headers, body bytes).

No I/O, no clock, no state: the client sends and retries, these decide. ``classify`` maps every
reply, whatever its status, headers or bytes, to exactly one of

- ``Answer``: a reply that can be read: a success, or DLI refusing with its own code;
- ``Transient``: a fault a later attempt may not meet: 429, 5xx, ``DLI.0999`` (DLI's
  "server-side error", documented with HTTP 400), and every reply that cannot be interpreted
  (not JSON where JSON is due, an ``error_code`` or ``is_success`` of an unexpected type, nesting
  deeper than ``MAX_REPLY_DEPTH``): ``DLI_BAD_REPLY``;
- ``ConfigFault``: the request cannot succeed until the configuration changes: a 401 (the
  client refreshes its credentials once before it believes one), a 404 without a DLI code (the
  API gateway: wrong endpoint, path or region; ``APIG.0101``), a redirect.

The readers (``read_cancel``, ``read_state``, ``read_page``) interpret an ``Answer`` for one
operation; a reply of the wrong shape for it raises ``BadReply``, and ``interpret`` (classify,
then read) turns that into a ``DLI_BAD_REPLY`` ``Transient``. Nothing else is raised for any
reply. Error codes that come out of here are strings: DLI's own, or ours
(``DLI_HTTP_<status>``, ``DLI_BAD_REPLY``).

Decisions (SPEC 5.1):
- ``not_found`` only when DLI says so with ``DLI.0002`` / ``DLI.0023`` (``Refusal.not_found``),
  or a state read confirms it (``JobState(None)``): never from a bare 404.
- A top-level ``error_code`` that is ``null`` or ``""`` counts as absent; any other non-string is
  a bad reply. Codes found elsewhere (``errorCode``, one object deeper, on error statuses only)
  are used only when they are strings.
- ``is_success`` may be a JSON boolean or the string ``"true"``/``"false"`` (Flink), any case;
  anything else where it appears is a bad reply.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

from cancel_handler import logs
from cancel_handler.dli.types import JobKind
from cancel_handler.jsonbody import kind_of

T = TypeVar("T")

NOT_FOUND_CODES = frozenset({"DLI.0002", "DLI.0023"})
SERVER_ERROR_CODES = frozenset({"DLI.0999"})
BAD_REPLY = "DLI_BAD_REPLY"
DLI_CODE_PREFIX = "DLI."
MAX_REPLY_DEPTH = 64  # DLI's deepest documented reply is 4 levels
MAX_TEXT_CHARS = 1000  # DLI's messages, as they go into results
MAX_REQUEST_ID_CHARS = 128
SNIPPET_CHARS = 200


class BadReply(Exception):
    """A reply that cannot be interpreted (raised by the readers, caught by ``interpret``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Reply:
    """One HTTP reply as received."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class Answer:
    """A reply that can be read. ``error_code`` is DLI's (a string) where it gave one;
    ``is_success`` is the top-level flag where there is one."""

    status: int
    body: Any
    request_id: str | None
    error_code: str | None = None
    error_message: str = ""
    is_success: bool | None = None

    @property
    def ok(self) -> bool:
        """A 2xx reply that does not say ``is_success: false``."""
        return 200 <= self.status < 300 and self.is_success is not False


@dataclass(frozen=True)
class Transient:
    error_code: str  # DLI_HTTP_<status>, DLI.0999, DLI_BAD_REPLY
    message: str
    http_status: int | None
    request_id: str | None
    retry_after_s: float | None = None  # finite, >= 0


@dataclass(frozen=True)
class ConfigFault:
    error_code: str  # the code DLI or the gateway gave, else DLI_HTTP_<status>
    message: str
    http_status: int
    request_id: str | None

    @property
    def unauthorized(self) -> bool:
        """A 401: one credential refresh may still help."""
        return self.http_status == 401


Classified = Answer | Transient | ConfigFault


@dataclass(frozen=True)
class Accepted:
    """DLI accepted the cancel."""

    message: str


@dataclass(frozen=True)
class Refusal:
    """DLI refused (a cancel, or a read). ``dli_code``: DLI's own code, if it gave one."""

    dli_code: str | None
    message: str
    http_status: int

    @property
    def error_code(self) -> str:
        """DLI's code, else ``DLI_HTTP_<status>``."""
        return self.dli_code or f"DLI_HTTP_{self.http_status}"

    @property
    def not_found(self) -> bool:
        """DLI says, with its own code, that there is no such job."""
        return self.dli_code in NOT_FOUND_CODES

    @property
    def needs_state_read(self) -> bool:
        """Whether the job's state can tell ``already_finished`` / ``not_found`` from a real
        refusal: not after a 403 (no state read can change a permission refusal)."""
        return not self.not_found and self.http_status != 403


@dataclass(frozen=True)
class JobState:
    """A job's state as DLI reports it; ``None``: DLI says there is no such job."""

    state: str | None


@dataclass(frozen=True)
class PageJob:
    """One job of a listing page: its id (Flink's integer ids as digits), its state, the
    queue it is on if the entry says, and DLI's whole entry."""

    job_id: str
    state: str
    queue_name: str | None
    fields: Mapping[str, Any] = field(repr=False, default_factory=dict)


@dataclass(frozen=True)
class Page:
    jobs: tuple[PageJob, ...]
    total: int | None  # the total DLI reports (job_count, total, total_count), if any


# -- classification ----------------------------------------------------------------------------


def classify(reply: Reply, now: float) -> Classified:
    """What one reply means. ``now`` (epoch seconds) reads an HTTP-date ``Retry-After``."""
    status = reply.status
    request_id = request_id_of(reply.headers)
    if status == 429 or status >= 500:
        retry = retry_after_s(header(reply.headers, "Retry-After"), now)
        return Transient(f"DLI_HTTP_{status}", snippet(reply.body), status, request_id, retry)
    if status < 200:
        return Transient(BAD_REPLY, f"HTTP {status} is not a final answer", status, request_id)
    if 300 <= status < 400:
        return ConfigFault(
            f"DLI_HTTP_{status}",
            f"DLI_ENDPOINT redirects (HTTP {status}): check the endpoint",
            status,
            request_id,
        )
    try:
        body = parse_json(reply.body)
    except BadReply as bad:
        if status in (401, 404):
            return _config_fault(status, None, snippet(reply.body), request_id)
        return Transient(BAD_REPLY, bad.message, status, request_id)
    if status == 401:
        code, message = _lenient_error(body)
        return _config_fault(status, code, message, request_id)
    try:
        answer = _answer(status, body, request_id)
    except BadReply as bad:
        if status == 404:
            return _config_fault(status, None, bad.message, request_id)
        return Transient(BAD_REPLY, bad.message, status, request_id)
    if status == 404 and not (answer.error_code or "").startswith(DLI_CODE_PREFIX):
        return _config_fault(status, answer.error_code, answer.error_message, request_id)
    if answer.error_code in SERVER_ERROR_CODES:
        retry = retry_after_s(header(reply.headers, "Retry-After"), now)
        return Transient(answer.error_code, answer.error_message, status, request_id, retry)
    return answer


def interpret(reply: Reply, read: Callable[[Answer], T], now: float) -> T | Transient | ConfigFault:
    """Classify, then read the answer; a reply of the wrong shape is a ``DLI_BAD_REPLY``."""
    classified = classify(reply, now)
    if not isinstance(classified, Answer):
        return classified
    try:
        return read(classified)
    except BadReply as bad:
        return Transient(BAD_REPLY, bad.message, classified.status, classified.request_id)


def _answer(status: int, body: Any, request_id: str | None) -> Answer:
    if not isinstance(body, dict):
        return Answer(status, body, request_id)
    code, message = _error_pair(body, deep=status >= 400)
    return Answer(status, body, request_id, code, message, _flag(body, "is_success"))


def _config_fault(
    status: int, code: str | None, message: str, request_id: str | None
) -> ConfigFault:
    if status == 401:
        what = "DLI refused the credentials"
    else:
        what = "no such API where DLI_ENDPOINT points (not a DLI code: check the endpoint, region)"
    text = f"{what}: {message}" if message else what
    return ConfigFault(code or f"DLI_HTTP_{status}", text, status, request_id)


# -- readers, one per operation ------------------------------------------------------------------


def read_cancel(kind: JobKind) -> Callable[[Answer], Accepted | Refusal]:
    """The reader of a cancel's answer (SQL DELETE, Spark DELETE, Flink stop)."""

    def read(answer: Answer) -> Accepted | Refusal:
        if kind == "flink":
            answer = _flink_stop_entry(answer)
        if not answer.ok:
            return refusal(answer)
        body = _object(answer.body, "the cancel answer")
        if kind == "spark":
            msg = body.get("msg")
            if not isinstance(msg, str):
                raise BadReply("a Spark cancel answered 2xx without a string msg")
            if msg == "deleted":
                return Accepted("")
            return refusal(answer, msg)
        if answer.is_success is None:
            raise BadReply("the cancel answered 2xx without is_success")
        return Accepted(text(body.get("message")))

    return read


def read_state(kind: JobKind) -> Callable[[Answer], JobState | Refusal]:
    """The reader of a state read (SQL status, Spark state, Flink job detail)."""
    key = "state" if kind == "spark" else "status"

    def read(answer: Answer) -> JobState | Refusal:
        if not answer.ok:
            refused = refusal(answer)
            return JobState(None) if refused.not_found else refused
        holder = _object(answer.body, "the state answer")
        if kind == "flink" and "job_detail" in holder:
            holder = _object(holder["job_detail"], "job_detail")
        state = holder.get(key)
        if not isinstance(state, str) or not state:
            raise BadReply(f"the state answer has no {key} string")
        return JobState(state)

    return read


_LISTS: dict[JobKind, tuple[str | None, str, str, str, tuple[str, ...]]] = {
    # container key, jobs key, id key, state key, queue keys
    "sql": (None, "jobs", "job_id", "status", ("queue_name",)),
    "spark": (None, "sessions", "id", "state", ("queue", "cluster_name")),
    "flink": ("job_list", "jobs", "job_id", "status", ("queue_name",)),
}
TOTAL_KEYS = ("job_count", "total", "total_count")


def read_page(kind: JobKind) -> Callable[[Answer], Page | Refusal]:
    """The reader of one listing page (SQL jobs, Spark batches, Flink jobs). A page whose
    structure is wrong (not an object, a job list that is not a list, a total that is not a
    count) is a bad reply; an entry that names no job (not an object, no id or state of the
    right type) is left out: it cannot be cancelled, and the rest of the page still counts."""
    container_key, jobs_key, id_key, state_key, queue_keys = _LISTS[kind]

    def read(answer: Answer) -> Page | Refusal:
        if not answer.ok:
            return refusal(answer)
        container = _object(answer.body, "the listing")
        if container_key is not None:
            inner = container.get(container_key)
            container = {} if inner is None else _object(inner, container_key)
        entries = container.get(jobs_key)
        if entries is None:
            entries = []
        if not isinstance(entries, list):
            raise BadReply(f"the listing's {jobs_key} is {kind_of(entries)}, not an array")
        listed = (_listed(entry, id_key, state_key, queue_keys) for entry in entries)
        return Page(tuple(job for job in listed if job is not None), _total(container))

    return read


def _listed(entry: Any, id_key: str, state_key: str, queue_keys: tuple[str, ...]) -> PageJob | None:
    if not isinstance(entry, dict):
        return None
    job_id, state = entry.get(id_key), entry.get(state_key)
    if isinstance(job_id, int) and not isinstance(job_id, bool) and job_id >= 0:
        job_id = str(job_id)
    if not isinstance(job_id, str) or not job_id or not isinstance(state, str):
        return None
    queue = next((entry[k] for k in queue_keys if isinstance(entry.get(k), str) and entry[k]), None)
    return PageJob(job_id, state, queue, entry)


def _total(container: Mapping[str, Any]) -> int | None:
    for key in TOTAL_KEYS:
        value = container.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise BadReply(f"the listing's {key} is {kind_of(value)}, not a count")
        return value
    return None


def _flink_stop_entry(answer: Answer) -> Answer:
    """A Flink stop answers a list with one ``{is_success, message}`` per id: the first is
    this job's (a dict body is read as it is)."""
    if not 200 <= answer.status < 300 or isinstance(answer.body, dict):
        return answer
    if not isinstance(answer.body, list) or not answer.body:
        raise BadReply(f"a Flink stop answered {kind_of(answer.body)}, not a list of results")
    entry = _object(answer.body[0], "a Flink stop result")
    code, message = _error_pair(entry, deep=False)
    flag = _flag(entry, "is_success")
    if flag is None:
        raise BadReply("a Flink stop result has no is_success")
    return Answer(answer.status, entry, answer.request_id, code, message, flag)


def refusal(answer: Answer, message: str | None = None) -> Refusal:
    text_ = answer.error_message or message or text(_get(answer.body, "message"))
    return Refusal(answer.error_code, text_, answer.status)


# -- the pieces ----------------------------------------------------------------------------------


def parse_json(body: bytes) -> Any:
    """The JSON of a body; ``BadReply`` when it is not JSON or nests deeper than
    ``MAX_REPLY_DEPTH``."""
    try:
        value = json.loads(body)
    except RecursionError:
        raise BadReply(f"the answer nests deeper than {MAX_REPLY_DEPTH} levels") from None
    except ValueError:  # UnicodeDecodeError and JSONDecodeError included
        raise BadReply(f"the answer is not JSON: {snippet(body)}") from None
    if depth_exceeds(value, MAX_REPLY_DEPTH):
        raise BadReply(f"the answer nests deeper than {MAX_REPLY_DEPTH} levels")
    return value


def depth_exceeds(value: Any, limit: int) -> bool:
    """Whether a parsed JSON value nests deeper than ``limit`` (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


_CODE_KEYS = (("error_code", "error_msg"), ("errorCode", "errorMsg"))


def _error_pair(body: Mapping[str, Any], deep: bool) -> tuple[str | None, str]:
    """DLI's error code and message, where the official SDK finds them. A top-level
    ``error_code`` of any type but a string (``null`` and ``""`` count as absent) is a bad
    reply; other places are used only when they hold a string."""
    code = body.get("error_code")
    if code is not None and not isinstance(code, str):
        raise BadReply(f"error_code is {kind_of(code)}, not a string")
    holders = [body]
    if deep:
        holders += [value for value in body.values() if isinstance(value, dict)]
    for holder in holders:
        for code_key, message_key in _CODE_KEYS:
            found = holder.get(code_key)
            if isinstance(found, str) and found:
                message = holder.get(message_key, holder.get("message"))
                return found[:MAX_TEXT_CHARS], text(message)
    return None, text(body.get("error_msg", body.get("message")))


def _lenient_error(body: Any) -> tuple[str | None, str]:
    """The error code and message of a reply that is a fault whatever its shape (a 401)."""
    if not isinstance(body, dict):
        return None, ""
    try:
        return _error_pair(body, deep=True)
    except BadReply:
        return None, text(body.get("error_msg", body.get("message")))


def _flag(body: Mapping[str, Any], name: str) -> bool | None:
    """DLI's success flag: a JSON boolean, or Flink's string "true"/"false"; ``None`` when
    absent; a bad reply for anything else."""
    if name not in body:
        return None
    value = body[name]
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise BadReply(f"{name} is {kind_of(value)}, not a boolean")


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadReply(f"{what} is {kind_of(value)}, not an object")
    return value


def _get(body: Any, name: str) -> Any:
    return body.get(name) if isinstance(body, dict) else None


def text(value: Any) -> str:
    """DLI's text for a result: a string as it is (cut to ``MAX_TEXT_CHARS``), anything else
    as JSON; ``""`` for null. Secrets registered with ``logs`` are masked."""
    if value is None:
        return ""
    raw = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return logs.redact(raw[:MAX_TEXT_CHARS])


def snippet(body: bytes) -> str:
    """The start of a body, for messages: whitespace collapsed, secrets masked."""
    start = body[: SNIPPET_CHARS * 4].decode("utf-8", "replace")
    return " ".join(logs.redact(start).split())[:SNIPPET_CHARS]


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value, looked up without regard to case."""
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lowered), None)


def request_id_of(headers: Mapping[str, str]) -> str | None:
    value = header(headers, "X-Request-Id")
    return value[:MAX_REQUEST_ID_CHARS] if value else None


def retry_after_s(value: str | None, now: float) -> float | None:
    """Seconds to wait from ``Retry-After`` (delta-seconds, or an HTTP-date against ``now``);
    ``None`` when absent or unreadable. Always finite and >= 0."""
    if value is None or not value.strip():
        return None
    seconds: float | None
    try:
        seconds = float(value)
    except ValueError:
        seconds = _http_date_delta(value, now)
    if seconds is None or not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _http_date_delta(value: str, now: float) -> float | None:
    try:
        return parsedate_to_datetime(value).timestamp() - now
    except (TypeError, ValueError, IndexError, OverflowError, OSError):
        return None
