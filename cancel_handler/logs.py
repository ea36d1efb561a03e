"""Structured logs for Cloud Logging, on the standard ``logging`` module.

Every record of the process, ours and the libraries' (urllib3, google-auth, grpc, werkzeug,
gunicorn's worker), goes through ONE handler on the root logger, which writes it as one JSON
object per line (stdout; the CLI sends them to stderr). Cloud Logging reads the special fields
of each line (names from its structured-logging documentation): ``severity``, ``message``,
``time``, ``logging.googleapis.com/labels``, ``logging.googleapis.com/trace``,
``logging.googleapis.com/spanId`` and ``logging.googleapis.com/trace_sampled``; every other key
becomes a field of ``jsonPayload``, so an operator can filter on ``event_id`` or ``job_id``.

Per event: ``event_context`` (``entry.py`` wraps each delivery in it) puts the event id and the
trace of the request (W3C ``traceparent``, ``X-Cloud-Trace-Context``, or a CloudEvent's
``traceparent`` extension) on every record logged inside it; ``carry`` takes that context into
a worker thread (and adds the job id there). A record that names a ``job_id`` gets it as a
label too.

Secrets never reach the output: the handler's filter (every record passes it, whichever
library logged it) masks, in the message, its arguments, its extra fields and its traceback,
the values registered with ``register_secret`` (AK, SK, security token, IAM password, IAM
tokens: registered when they are loaded) and the value of any credential header
(``Authorization``, ``X-Auth-Token``, ``X-Subject-Token``, ``X-Security-Token``).

``LOG_LEVEL`` (``config.py``; DEBUG, INFO, WARNING, ERROR) sets the level. The chattiest
libraries (urllib3, google-*, grpc, werkzeug) stay at WARNING (or the level, if higher) unless
it is DEBUG.

Why no JSON-logging library: python-json-logger 4.2 was measured against this module (2-core
machine, bytecode compiled). Importing ``pythonjsonlogger.json`` costs 2-3 ms inside the
functions-framework server, where this whole module costs about 1 ms (0.9 ms; 0.8 ms before
it moved to ``logging``), and 17-20 ms more in a bare interpreter (it pulls dataclasses,
inspect, uuid, platform); that breaks "importing logs is no heavier than before". Per record
its ``JsonFormatter``, given the same Cloud Logging fields in ``add_fields``, was no faster
(about 15 us each on the loaded machine). And it would only replace the final ``json.dumps``:
the Cloud Logging fields, labels, trace and redaction are written here either way.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ParamSpec, TextIO, TypeVar

# -- secrets ---------------------------------------------------------------------------------

_secrets: set[str] = set()
_lock = threading.Lock()
_HEADER_NAMES = r"(?:Authorization|X-Auth-Token|X-Subject-Token|X-Security-Token)"
# A credential header's value, wherever a header shows up in a text: a JSON or Python dict
# ('Authorization': '...' or "Authorization": "...", also with escaped quotes inside a JSON
# string), or a raw HTTP header line (Authorization: ...). A quoted value runs to its closing
# quote; an unquoted one to the end of the line. Comma-separated parts (an SDK-HMAC-SHA256
# header's Access=..., SignedHeaders=..., Signature=...) are masked together. Compiled at first
# use, not while the server starts.
_AUTH_HEADER = (
    _HEADER_NAMES
    + r"""(?P<close>\\?['"])?(?P<sep>\s*[:=]\s*)"""
    + r"""(?:(?P<open>\\?['"])(?P<quoted>.*?)(?P=open)|(?P<bare>[^\r\n]+))"""
)
REDACTED = "[REDACTED]"
MIN_SECRET_CHARS = 4


# The secrets longest first (so that a secret containing another one is masked whole), kept
# sorted here rather than at every ``redact``: redact runs on every string of every log line
# and result. Refreshed when a secret is registered, or when the set's size has changed.
_longest_first: tuple[str, ...] = ()
_header_pattern: re.Pattern[str] | None = None


def register_secret(value: str | None) -> None:
    """Never print ``value`` (an AK, SK, token or password) from now on."""
    if value and len(value) >= MIN_SECRET_CHARS:
        with _lock:
            _secrets.add(value)
            _sort_secrets()


def _sort_secrets() -> tuple[str, ...]:
    """With ``_lock`` held."""
    global _longest_first
    _longest_first = tuple(sorted(_secrets, key=len, reverse=True))
    return _longest_first


def _mask_header(match: re.Match[str]) -> str:
    name = match.group(0)[: match.start("sep") - match.start(0)]
    if match.group("open") is not None:
        quote = match.group("open")
        return f"{name}{match.group('sep')}{quote}{REDACTED}{quote}"
    return f"{name}{match.group('sep')}{REDACTED}"


def redact(text: str) -> str:
    """``text`` with credential header values and every registered secret masked."""
    global _header_pattern
    if not text:
        return text
    # A header value follows a ':' or '=': a text with neither (an id, an outcome, most
    # messages) is not scanned, which makes redact about five times cheaper for it.
    if ":" in text or "=" in text:
        if _header_pattern is None:
            _header_pattern = re.compile(_AUTH_HEADER, re.IGNORECASE)
        text = _header_pattern.sub(_mask_header, text)
    secrets = _longest_first
    if len(secrets) != len(_secrets):
        with _lock:
            secrets = _sort_secrets()
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact_value(value: Any) -> Any:
    """``redact`` applied to every string inside ``value`` (dicts, lists, tuples); keys stay."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(item) for item in value]
    return value


def exception_text(error: BaseException) -> str:
    """``Type: message`` of an exception, one line, secrets masked."""
    message = " ".join(str(error).split())
    name = type(error).__name__
    return redact(f"{name}: {message}" if message else name)


def stack_trace(error: BaseException) -> str:
    """The formatted traceback of ``error`` (as Error Reporting reads it), secrets masked."""
    return redact("".join(traceback.format_exception(error)))


_MAX_DEPTH = 12


def _safe(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON-ready data with every string redacted. Anything that is not JSON is
    written as its text (then redacted too), so a secret that happens to be a JSON word
    ("true", "null") cannot break the line, and an object's ``str`` cannot leak one."""
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth < _MAX_DEPTH:
        if isinstance(value, Mapping):
            return {str(key): _safe(item, depth + 1) for key, item in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [_safe(item, depth + 1) for item in value]
    return redact(str(value))


# -- per-event context -----------------------------------------------------------------------


class _Trace:
    __slots__ = ("sampled", "span_id", "trace_id")

    def __init__(self, trace_id: str, span_id: str | None, sampled: bool | None) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.sampled = sampled


class _Context:
    __slots__ = ("labels", "trace")

    def __init__(self, labels: Mapping[str, str], trace: _Trace | None) -> None:
        self.labels = labels
        self.trace = trace


_current: contextvars.ContextVar[_Context | None] = contextvars.ContextVar(
    "dli_cancel_log_context", default=None
)

# W3C Trace Context: version-traceid(32 hex)-parentid(16 hex)-flags; a later version may add
# fields after the flags. All-zero ids are invalid, and so is version ff.
_TRACEPARENT = r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?"
# X-Cloud-Trace-Context: TRACE_ID/SPAN_ID;o=OPTIONS, the span id in decimal.
_CLOUD_TRACE = r"([0-9a-fA-F]{32})(?:/([0-9]{1,20}))?(?:;o=([0-9]+))?"
# (Both compiled at first use, by re's cache: not while the server starts.)
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16


def _from_traceparent(header: str | None) -> _Trace | None:
    match = re.fullmatch(_TRACEPARENT, header.strip()) if header else None
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == _ZERO_TRACE:
        return None
    sampled = bool(int(flags, 16) & 1)
    return _Trace(trace_id, None if span_id == _ZERO_SPAN else span_id, sampled)


def _from_cloud_trace(header: str | None) -> _Trace | None:
    match = re.fullmatch(_CLOUD_TRACE, header.strip()) if header else None
    if match is None or match.group(1) == _ZERO_TRACE:
        return None
    trace_id, span, options = match.groups()
    span_number = int(span) if span else 0
    span_id = f"{span_number:016x}" if 0 < span_number < 2**64 else None
    sampled = None if options is None else options == "1"
    return _Trace(trace_id.lower(), span_id, sampled)


def _labels(**values: str | None) -> dict[str, str]:
    return {name: str(value) for name, value in values.items() if value not in (None, "")}


@contextmanager
def event_context(
    event_id: str | None = None,
    *,
    traceparent: str | None = None,
    cloud_trace: str | None = None,
) -> Iterator[None]:
    """Every record logged inside (in this thread, and in the threads ``carry`` starts) has
    the label ``event_id`` and the trace of the request: the W3C ``traceparent`` (a header or
    a CloudEvent's extension) when it is valid, else ``X-Cloud-Trace-Context``."""
    trace = _from_traceparent(traceparent) or _from_cloud_trace(cloud_trace)
    token = _current.set(_Context(_labels(event_id=event_id), trace))
    try:
        yield
    finally:
        _current.reset(token)


def add_labels(**labels: str | None) -> None:
    """Add labels (``event_id`` once the body is read, ``job_id``) to the current context:
    until the enclosing ``event_context`` ends, or for the rest of a ``carry``'d call."""
    current = _current.get()
    added = _labels(**labels)
    if added:
        base = current.labels if current else {}
        _current.set(_Context({**base, **added}, current.trace if current else None))


P = ParamSpec("P")
R = TypeVar("R")


def carry(function: Callable[P, R], **labels: str | None) -> Callable[P, R]:
    """``function``, to be run in another thread (a pool's worker) with the log context of
    the calling thread (event id, trace) plus ``labels`` (the job it works on). Each call
    runs in its own copy, so one wrapper may be run by several threads at once."""
    context = contextvars.copy_context()

    def in_context(*args: P.args, **kwargs: P.kwargs) -> R:
        def call() -> R:
            add_labels(**labels)
            return function(*args, **kwargs)

        return context.copy().run(call)

    return in_context


# -- records ---------------------------------------------------------------------------------

_LOGGER = logging.getLogger("dli_cancel")
_STREAM_ATTRIBUTE = "dli_cancel_stream"
_FIELDS_ATTRIBUTE = "json_fields"  # the key google-cloud-logging's handlers use for the same
# Attributes every LogRecord has: anything else was passed as ``extra`` and is a field.
_RECORD_ATTRIBUTES = frozenset(
    {
        *logging.LogRecord("", 0, "", 0, "", (), None).__dict__,
        "message",
        "asctime",
        "taskName",
        _STREAM_ATTRIBUTE,
        _FIELDS_ATTRIBUTE,
    }
)
_LABELLED_FIELDS = ("event_id", "job_id")
_SPECIAL_PREFIX = "logging.googleapis.com/"
_SEVERITIES = ((50, "CRITICAL"), (40, "ERROR"), (30, "WARNING"), (20, "INFO"), (0, "DEBUG"))
# Libraries that log a line per request or connection at INFO/DEBUG.
NOISY_LOGGERS = ("urllib3", "google", "grpc", "werkzeug")


class RedactionFilter(logging.Filter):
    """Masks secrets in a record (message with its arguments, extra fields, traceback) before
    any formatter sees it. Attached to the root logger's handler: every record passes it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(_message_of(record))
        record.args = None
        if record.exc_info:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info))
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        attributes = record.__dict__
        fields = attributes.get(_FIELDS_ATTRIBUTE)
        if isinstance(fields, Mapping):
            attributes[_FIELDS_ATTRIBUTE] = {
                str(key): _safe(value) for key, value in fields.items() if value is not None
            }
        for key in [key for key in attributes if key not in _RECORD_ATTRIBUTES]:
            attributes[key] = _safe(attributes[key])
        return True


def _message_of(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # a library's bad format string must not lose the record
        return f"{record.msg} (arguments that do not fit: {record.args!r})"


class CloudLoggingFormatter(logging.Formatter):
    """One record -> one JSON line in Cloud Logging's structured format (see the module)."""

    def __init__(self, gcp_project: str | None = None) -> None:
        super().__init__()
        self.gcp_project = gcp_project

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_text:
            message = f"{message}\n{record.exc_text.rstrip()}"
        if record.stack_info:
            message = f"{message}\n{record.stack_info.rstrip()}"
        entry: dict[str, Any] = {
            "severity": _severity(record.levelno),
            "message": message,
            "time": _rfc3339(record.created),
        }
        if record.name != _LOGGER.name:
            entry["logger"] = record.name
        fields: Mapping[str, Any] = getattr(record, _FIELDS_ATTRIBUTE, None) or {}
        attributes = record.__dict__
        extra = {key: attributes[key] for key in attributes if key not in _RECORD_ATTRIBUTES}
        context = _current.get()
        self._add_trace(entry, context)
        labels = dict(context.labels) if context else {}
        for name in _LABELLED_FIELDS:
            value = fields.get(name, extra.get(name))
            if isinstance(value, str | int) and not isinstance(value, bool) and value != "":
                labels[name] = str(value)
        if labels:
            entry["logging.googleapis.com/labels"] = labels
        for key, value in {**extra, **fields}.items():
            # A field cannot replace or forge a Cloud Logging field.
            if key not in entry and not key.startswith(_SPECIAL_PREFIX):
                entry[key] = value
        return _ENCODER.encode(entry)

    def _add_trace(self, entry: dict[str, Any], context: _Context | None) -> None:
        trace = context.trace if context else None
        if trace is None:
            return
        entry["logging.googleapis.com/trace"] = (
            f"projects/{self.gcp_project}/traces/{trace.trace_id}"
            if self.gcp_project
            else trace.trace_id
        )
        if trace.span_id:
            entry["logging.googleapis.com/spanId"] = trace.span_id
        if trace.sampled is not None:
            entry["logging.googleapis.com/trace_sampled"] = trace.sampled


# Values are JSON already (the filter made them so); ``default`` covers a record that was
# formatted without passing the filter.
_ENCODER = json.JSONEncoder(ensure_ascii=False, default=str)


def _severity(levelno: int) -> str:
    return next(name for floor, name in _SEVERITIES if levelno >= floor)


_second: tuple[int, str] = (-1, "")


def _rfc3339(created: float) -> str:
    """RFC 3339 in UTC with microseconds (lines of the same millisecond keep their order)."""
    global _second
    seconds = int(created)
    if _second[0] != seconds:  # one strftime per second, not per line
        _second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    micros = min(999_999, int((created - seconds) * 1_000_000))
    return f"{_second[1]}.{micros:06d}Z"


class JsonLinesHandler(logging.Handler):
    """Writes each formatted record and a newline to its stream, flushed: to the record's own
    stream when ``log`` was given one, else to ``stream``, else to the current ``sys.stdout``
    (looked up at each write, so a redirected stdout is followed)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            out = getattr(record, _STREAM_ATTRIBUTE, None) or self.stream or sys.stdout
            # The newline is a write of its own: functions-framework's LOG_EXECUTION_ID
            # wrapper of stdout rewrites each write as one line, and skips a lone newline.
            out.write(line)
            out.write("\n")
            out.flush()
        except Exception:
            self.handleError(record)


_handler: JsonLinesHandler | None = None


def setup(
    level: str = "INFO", gcp_project: str | None = None, stream: TextIO | None = None
) -> None:
    """Send every record of the process through one JSON-lines handler on the root logger,
    at ``level`` (a ``logging`` level name). Handlers installed on the root logger by others are
    removed, so that each record is written once: functions-framework adds its own with
    ``LOG_EXECUTION_ID`` (and with ``ENTRY_POINT``, legacy runtimes only). ``gcp_project``
    makes trace ids the resource names Cloud Logging links to Cloud Trace. Runs again
    safely; ``stream`` None keeps the current destination."""
    global _handler
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    with _lock:
        if _handler is None:
            _handler = JsonLinesHandler(stream)
            _handler.addFilter(RedactionFilter())
        elif stream is not None:
            _handler.stream = stream
        _handler.setFormatter(CloudLoggingFormatter(gcp_project))
        root = logging.getLogger()
        for other in [h for h in root.handlers if h is not _handler]:
            root.removeHandler(other)
        if _handler not in root.handlers:
            root.addHandler(_handler)
    root.setLevel(numeric)
    library_level = logging.DEBUG if numeric <= logging.DEBUG else max(numeric, logging.WARNING)
    for name in NOISY_LOGGERS:
        # An explicit level, and propagation forced on: google-api-core's client logging turns
        # propagation off on an unconfigured "google" logger, which would hide its records.
        library = logging.getLogger(name)
        library.setLevel(library_level)
        library.propagate = True


def adopt(*names: str) -> None:
    """Let the loggers ``names`` (gunicorn's, which writes plain text with its own handlers)
    write through the root handler instead: JSON and redacted like every other record."""
    for name in names:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True


def send_to(stream: TextIO | None) -> None:
    """Write log lines to ``stream`` instead of stdout (the CLI keeps stdout for results)."""
    _ensure_setup()
    assert _handler is not None
    _handler.stream = stream


def _ensure_setup() -> None:
    if _handler is None:
        setup()


# -- the module's call API -------------------------------------------------------------------


def log(severity: str, message: str, stream: TextIO | None = None, **fields: Any) -> None:
    """Log ``message`` at ``severity`` (DEBUG, INFO, WARNING, ERROR, CRITICAL) with the
    non-None ``fields`` as ``jsonPayload`` fields. ``stream`` is an explicit destination (the
    results a local run prints): the line is written there whatever the level."""
    _ensure_setup()
    levelno = logging.getLevelName(severity.upper())
    if not isinstance(levelno, int):
        raise ValueError(f"unknown severity {severity!r}")
    if stream is None and not _LOGGER.isEnabledFor(levelno):
        return
    extra: dict[str, Any] = {_FIELDS_ATTRIBUTE: fields}
    if stream is not None:
        extra[_STREAM_ATTRIBUTE] = stream
    # Built directly (no caller lookup: the line names no source location), then handled as
    # ``Logger.log`` would after its level check.
    record = _LOGGER.makeRecord(_LOGGER.name, levelno, "", 0, message, (), None, extra=extra)
    _LOGGER.handle(record)


def debug(message: str, **fields: Any) -> None:
    log("DEBUG", message, **fields)


def info(message: str, **fields: Any) -> None:
    log("INFO", message, **fields)


def warning(message: str, **fields: Any) -> None:
    log("WARNING", message, **fields)


def error(message: str, **fields: Any) -> None:
    log("ERROR", message, **fields)
