"""The two transports: a CloudEvent delivery and a direct HTTP call. ``main.py`` delegates here.

A CloudEvent is acknowledged by returning and delivered again by raising. An HTTP caller gets
200 with the results, 400 for a bad event it posted directly, 503 when it should retry.
``on_error`` is registered with functions-framework: it turns an exception into one structured
log line and a short answer (no multi-line traceback on stderr, no secret in either).

Each delivery runs inside ``logs.event_context``: its log lines carry the event id and the
trace of the request (a CloudEvent's ``traceparent`` extension, else the HTTP request's
``traceparent`` or ``X-Cloud-Trace-Context`` header).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

from cancel_handler import boot, logs
from cancel_handler.envelopes import EnvelopeError, from_cloud_event, from_http_body
from cancel_handler.errors import RetryLater
from cancel_handler.results import results_json

if TYPE_CHECKING:
    from cancel_handler.runtime import Runtime

JSON_HEADERS = {"Content-Type": "application/json"}
HttpAnswer = tuple[str, int, dict[str, str]]
_CRASH_HEADERS = {"Content-Type": "text/plain; charset=utf-8", "X-Google-Status": "crash"}


def start() -> None:
    """At import of ``main.py``: report the configuration, and arrange the warm-up.

    The heavy part of the function (pydantic models, requests, google-cloud-pubsub and its
    client) is not imported here, so the server answers its first request about as soon as
    a hello-world function would. It is loaded by a background thread in the worker right
    after gunicorn forks it (a thread started here, in gunicorn's master, would not survive
    the fork), while the instance waits for its first event; an event that arrives sooner
    simply finishes the same imports itself.
    """
    boot.startup()
    os.register_at_fork(after_in_child=_after_fork)


def _after_fork() -> None:
    # gunicorn has given its worker's logger a plain-text handler by now: JSON lines instead.
    logs.adopt("gunicorn.error", "gunicorn.access")
    threading.Thread(target=_warm_up, name="warm-up", daemon=True).start()


def _warm_up() -> None:
    try:
        rt = _runtime()
        from cancel_handler.events import prepare

        prepare()
        rt.sink.warm_up()
    except Exception as error:  # a configuration error is reported by every event instead
        logs.debug("warm-up skipped", error=logs.exception_text(error))


def _handler() -> ModuleType:
    from cancel_handler import handler

    return handler


def _runtime() -> Runtime:
    """The instance's runtime; the first call imports the function's heavy part."""
    from cancel_handler.runtime import runtime

    return runtime()


def on_cloud_event(event: Any) -> None:
    """Raises ``RetryLater`` (-> HTTP 500, Pub/Sub redelivers) when the event must come again."""
    headers = _request_headers()
    with logs.event_context(
        _event_id(event),
        traceparent=_ce_extension(event, "traceparent") or headers.get("traceparent"),
        cloud_trace=headers.get("X-Cloud-Trace-Context"),
    ):
        _handle_cloud_event(event)


def _handle_cloud_event(event: Any) -> None:
    try:
        rt = _runtime()
    except RetryLater as error:
        logs.error(
            "event not handled: configuration error; it will be delivered again",
            event_id=_event_id(event),
            outcome="retry",
            error=str(error),
        )
        raise
    handler = _handler()
    try:
        delivery = from_cloud_event(event, rt.settings.max_body_bytes)
    except EnvelopeError as error:
        handler.reject_envelope(rt, error)
        return
    logs.add_labels(event_id=delivery.event_id)
    handler.process(delivery, rt)


def on_http(request: Any) -> HttpAnswer:
    with logs.event_context(
        traceparent=request.headers.get("traceparent"),
        cloud_trace=request.headers.get("X-Cloud-Trace-Context"),
    ):
        return _handle_http(request)


def _handle_http(request: Any) -> HttpAnswer:
    if request.method != "POST":
        return _error(405, "only POST is accepted")
    try:
        rt = _runtime()
    except RetryLater as error:
        logs.error("request not handled: configuration error", outcome="retry", error=str(error))
        return _error(503, "configuration error: see the function's log")
    limit = rt.settings.max_body_bytes
    length = request.content_length
    if length is not None and length > limit:
        logs.warning("request refused: body too large", bytes=length, limit=limit)
        return _error(413, f"body over {limit} bytes")
    if rt.settings.push_audience:
        from cancel_handler.push_auth import PushAuthError, verify_push_token

        try:
            verify_push_token(request.headers.get("Authorization", ""), rt.settings)
        except PushAuthError as error:
            logs.warning("push token refused", error=str(error))
            return _error(401, str(error))
    body = _read_at_most(request.stream, limit + 1)
    if len(body) > limit:
        logs.warning("request refused: body too large", bytes=f"> {limit}", limit=limit)
        return _error(413, f"body over {limit} bytes")
    return _answer_http(rt, body, request.path)


def _answer_http(rt: Runtime, body: bytes, path: str) -> HttpAnswer:
    handler = _handler()
    try:
        try:
            delivery = from_http_body(body, rt.settings.max_body_bytes, path)
        except EnvelopeError as error:
            report = handler.reject_envelope(rt, error)
            # A bad message inside a push envelope is acknowledged (200) so that Pub/Sub does
            # not deliver it again; a bad body posted directly is the caller's error (400).
            status = 200 if error.transport == "push" else 400
            return results_json(report.results), status, JSON_HEADERS
        logs.add_labels(event_id=delivery.event_id)
        report = handler.process(delivery, rt)
    except RetryLater as error:
        return _error(503, f"retry later: {error}")
    status = 400 if report.invalid and delivery.transport == "http" else 200
    extra: dict[str, Any] = {"ignored": report.ignored} if report.ignored else {}
    if report.fanned_out:
        extra["fanned_out"] = report.fanned_out
    return results_json(report.results, **extra), status, JSON_HEADERS


def on_error(error: Exception) -> Any:
    """functions-framework's handler for any exception a function raised.

    ``RetryLater`` was already logged where it was raised: the answer is a 500 (Pub/Sub
    delivers the event again) whose body says why. Anything else is a bug: one ERROR line with
    the stack trace (Error Reporting picks it up), and the 500 functions-framework would give.
    HTTP errors raised by functions-framework itself (its 400 for a body that is no CloudEvent)
    pass through unchanged.
    """
    from werkzeug.exceptions import HTTPException

    if isinstance(error, HTTPException):
        return error
    if isinstance(error, RetryLater):
        return f"retry later: {error}", 500, _CRASH_HEADERS
    logs.error(
        "unhandled error; the request is answered 500",
        error=logs.exception_text(error),
        stack_trace=logs.stack_trace(error),
    )
    return "internal error: see the function's log", 500, _CRASH_HEADERS


def _read_at_most(stream: Any, size: int) -> bytes:
    """At most ``size`` bytes of the body, even when it is chunked (no Content-Length)."""
    chunks: list[bytes] = []
    remaining = size
    while remaining > 0:
        chunk = stream.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _error(status: int, message: str) -> HttpAnswer:
    return json.dumps({"error": logs.redact(message)}), status, JSON_HEADERS


def _request_headers() -> Mapping[str, str]:
    """The headers of the HTTP request being served (functions-framework calls the function
    inside Flask's request context); none outside one. Flask is looked up, not imported: it
    is loaded whenever a request is being served."""
    flask: Any = sys.modules.get("flask")
    if flask is None or not flask.has_request_context():
        return {}
    headers: Mapping[str, str] = flask.request.headers
    return headers


def _ce_extension(event: Any, name: str) -> str | None:
    try:
        value = event[name]
    except (KeyError, TypeError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _event_id(event: Any) -> str | None:
    try:
        return str(event["id"])
    except (KeyError, TypeError):
        return None
