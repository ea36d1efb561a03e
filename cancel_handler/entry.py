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
import time
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from cancel_handler import approvals, boot, logs
from cancel_handler.approval_page import (
    PAGE_HEADERS,
    PROOF_FIELD,
    TOKEN_FIELD,
    cross_site_refusal,
    render_approval_page,
    render_refusal_page,
    render_results_page,
    render_retry_page,
)
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
    approving_page = request.method == "GET" and TOKEN_FIELD in request.args
    if request.method != "POST" and not approving_page:
        return _error(405, "only POST is accepted (and GET ?approve=TOKEN, the approval page)")
    content_type = request.headers.get("Content-Type", "").partition(";")[0].strip().lower()
    form = content_type == "application/x-www-form-urlencoded"
    try:
        rt = _runtime()
    except RetryLater as error:
        logs.error("request not handled: configuration error", outcome="retry", error=str(error))
        if approving_page or form:
            return _page(503, render_retry_page("The function's configuration is wrong."))
        return _error(503, "configuration error: see the function's log")
    if approving_page:
        return _approval_page(rt, request.args.get(TOKEN_FIELD, ""))
    refusal = cross_site_refusal(
        request.headers.get("Origin"), request.headers.get("Sec-Fetch-Site"), _hosts(rt, request)
    )
    if refusal is not None:
        logs.warning("request refused: sent from another site", error=refusal)
        return _page(403, render_refusal_page(refusal)) if form else _error(403, refusal)
    limit = rt.settings.max_body_bytes
    length = request.content_length
    if length is not None and length > limit:
        logs.warning("request refused: body too large", bytes=length, limit=limit)
        return _error(413, f"body over {limit} bytes")
    if form:  # the approval page's form: the token and its proof authorise it
        return _approve_from_form(rt, _read_at_most(request.stream, limit + 1))
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


# -- the approval page (SPEC section 8) ---------------------------------------------------------


def _approval_page(rt: Runtime, token: str) -> HttpAnswer:
    """The plan of ``token`` and, when it is valid, the form that approves it."""
    try:
        ring = rt.approval_ring()
    except RetryLater as error:
        logs.error("approval page not shown: configuration error", error=str(error))
        return _page(503, render_retry_page("The approval keys cannot be read."))
    if ring is None:
        return _page(404, render_refusal_page("Approvals are not enabled here."))
    now = time.time()
    check = approvals.check(token, ring, now)
    logs.info(
        "approval page",
        valid=check.valid,
        problem=check.refusal.problem if check.refusal else None,
        key_id=approvals.token_key_id(token),
    )
    proof = approvals.form_proof(token, ring) if check.valid else None
    html = render_approval_page(check, token=token, proof=proof, now=now)
    return _page(200 if check.valid else 400, html)


def _approve_from_form(rt: Runtime, body: bytes) -> HttpAnswer:
    """The page's Approve button: the token with its proof -> the approval event -> a page
    with what happened to each job."""
    if len(body) > rt.settings.max_body_bytes:
        return _page(413, render_refusal_page("The approval is larger than MAX_BODY_BYTES."))
    fields = _form_fields(body)
    token, proof = fields.get(TOKEN_FIELD, ""), fields.get(PROOF_FIELD, "")
    try:
        ring = rt.approval_ring()
    except RetryLater as error:
        logs.error("approval not handled: configuration error", error=str(error))
        return _page(503, render_retry_page("The approval keys cannot be read."))
    if ring is None or not approvals.check_form_proof(token, proof, ring):
        logs.warning("approval form refused: no valid proof", key_id=approvals.token_key_id(token))
        message = "This approval was not sent from this function's approval page."
        return _page(403, render_refusal_page(message))
    event = json.dumps({"event_type": "budget-exceeded", TOKEN_FIELD: token}).encode()
    handler = _handler()
    try:
        delivery = from_http_body(event, len(event))
        logs.add_labels(event_id=delivery.event_id)
        report = handler.process(delivery, rt)
    except RetryLater:
        return _page(503, render_retry_page("DLI or Pub/Sub could not be reached."))
    if report.invalid:
        return _page(400, render_refusal_page(report.results[0].message))
    dry_run = any(r.dry_run for r in report.results)
    return _page(200, render_results_page(report.results, dry_run=dry_run))


def _form_fields(body: bytes) -> dict[str, str]:
    """The fields of a url-encoded form (the first value of each); nothing when unreadable."""
    try:
        pairs = parse_qsl(body.decode("ascii"), max_num_fields=8, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        return {}
    fields: dict[str, str] = {}
    for name, value in pairs:
        fields.setdefault(name, value)
    return fields


def _hosts(rt: Runtime, request: Any) -> list[str]:
    """The hosts a same-site request names in its ``Origin``: the one it was sent to, and the
    configured page's (a proxy in front may rewrite ``Host``)."""
    hosts = [request.headers.get("Host", "")]
    if rt.settings.approval_base_url:
        hosts.append(urlsplit(rt.settings.approval_base_url).netloc)
    return hosts


def _page(status: int, html: str) -> HttpAnswer:
    return html, status, dict(PAGE_HEADERS)


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
