"""The two transports: a CloudEvent delivery and a direct HTTP call. ``main.py`` delegates here.

A CloudEvent is acknowledged by returning and delivered again by raising. An HTTP caller gets
200 with the results, 400 for a bad event it posted directly, 503 when it should retry.
"""

from __future__ import annotations

import json
from typing import Any

from cancel_handler import handler, logs
from cancel_handler.envelopes import EnvelopeError, from_cloud_event, from_http_body
from cancel_handler.handler import RetryLater, results_json

JSON_HEADERS = {"Content-Type": "application/json"}
HttpAnswer = tuple[str, int, dict[str, str]]


def on_cloud_event(event: Any) -> None:
    """Raises ``RetryLater`` (-> HTTP 500, Pub/Sub redelivers) when the event must come again."""
    try:
        rt = handler.runtime()
    except RetryLater as error:
        logs.error(
            "event not handled: configuration error", event_id=_event_id(event), error=str(error)
        )
        raise
    try:
        delivery = from_cloud_event(event, rt.settings.max_body_bytes)
    except EnvelopeError as error:
        handler.reject_envelope(rt, error)
        return
    handler.process(delivery, rt)


def on_http(request: Any) -> HttpAnswer:
    if request.method != "POST":
        return _error(405, "only POST is accepted")
    try:
        rt = handler.runtime()
    except RetryLater as error:
        logs.error("request not handled: configuration error", error=str(error))
        return _error(503, "configuration error: see the function's log")
    length = request.content_length
    if length is not None and length > rt.settings.max_body_bytes:
        return _error(413, f"body over {rt.settings.max_body_bytes} bytes")
    if rt.settings.push_audience:
        from cancel_handler.push_auth import PushAuthError, verify_push_token

        try:
            verify_push_token(request.headers.get("Authorization", ""), rt.settings)
        except PushAuthError as error:
            logs.warning("push token refused", error=str(error))
            return _error(401, str(error))
    body = request.get_data(cache=False, as_text=False)
    if len(body) > rt.settings.max_body_bytes:
        return _error(413, f"body over {rt.settings.max_body_bytes} bytes")
    return _answer_http(rt, body, request.path)


def _answer_http(rt: handler.Runtime, body: bytes, path: str) -> HttpAnswer:
    try:
        try:
            delivery = from_http_body(body, rt.settings.max_body_bytes, path)
        except EnvelopeError as error:
            report = handler.reject_envelope(rt, error)
            return results_json(report.results), 400, JSON_HEADERS
        report = handler.process(delivery, rt)
    except RetryLater as error:
        return _error(503, f"retry later: {error}")
    status = 400 if report.invalid and delivery.transport == "http" else 200
    extra = {"ignored": report.ignored} if report.ignored else {}
    return results_json(report.results, **extra), status, JSON_HEADERS


def _error(status: int, message: str) -> HttpAnswer:
    return json.dumps({"error": logs.redact(message)}), status, JSON_HEADERS


def _event_id(event: Any) -> str | None:
    try:
        return str(event["id"])
    except (KeyError, TypeError):
        return None
