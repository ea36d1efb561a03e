"""Transport envelopes -> one ``Delivery``: message bytes, attributes, topic, event id, time.

Three transports reach the function: an Eventarc Pub/Sub CloudEvent (or a raw push envelope
that functions-framework converted into one), a Pub/Sub push envelope posted to the HTTP entry
point, and a plain HTTP body. This module only unwraps them; ``events`` validates the payload.
Message data is size-checked on its base64 length before it is decoded.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from cancel_handler.jsonbody import JsonRead, is_text, read_object

Transport = Literal["cloudevent", "push", "http"]

_TOPIC_IN_SOURCE = re.compile(r"projects/[^/?]+/topics/([^/?]+)/?$")
_TOPIC_IN_PATH = re.compile(r"projects/[^/?]+/topics/([^/?]+)")
_STANDARD_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_URLSAFE_B64 = re.compile(r"[A-Za-z0-9_-]*={0,2}")
_FRACTION = re.compile(r"(\.\d{6})\d+")
_MAX_ID_CHARS = 200


@dataclass(frozen=True)
class Delivery:
    data: bytes
    attributes: dict[str, str]
    topic: str | None
    event_id: str
    published_at: datetime | None
    transport: Transport
    # An HTTP body is read as JSON once, to tell a push envelope from an event: kept here so
    # that the event is not read a second time.
    read: JsonRead | None = field(default=None, compare=False, repr=False)


class EnvelopeError(ValueError):
    """The transport itself is malformed; ``str(e)`` starts with the offending field."""

    def __init__(
        self,
        field: str,
        message: str,
        *,
        event_id: str | None = None,
        topic: str | None = None,
        transport: Transport | None = None,
    ) -> None:
        self.field = field
        self.message = message
        self.event_id = event_id
        self.topic = topic
        self.transport = transport
        super().__init__(message)


def from_cloud_event(event: Any, max_bytes: int) -> Delivery:
    """Unwrap a Pub/Sub ``messagePublished`` CloudEvent as functions-framework passes it."""
    with _failing_as("cloudevent"):
        return _unwrap_cloud_event(event, max_bytes)


def from_http_body(body: bytes, max_bytes: int, path: str = "/") -> Delivery:
    """A POST body: a Pub/Sub push envelope, or the event JSON itself (validated later)."""
    if len(body) > max_bytes:
        raise EnvelopeError(
            "body", f"body exceeds {max_bytes} bytes ({len(body)} bytes)", transport="http"
        )
    read = read_object(body)
    envelope = read.value
    if envelope is None or "message" not in envelope or "subscription" not in envelope:
        return Delivery(
            data=body,
            attributes={},
            topic=None,
            event_id=f"http-{uuid.uuid4()}",
            published_at=None,
            transport="http",
            read=read,
        )
    with _failing_as("push"):
        return _unwrap_push(envelope, max_bytes, path)


def _unwrap_cloud_event(event: Any, max_bytes: int) -> Delivery:
    ce_id = _text(_ce_attribute(event, "id"))
    topic = topic_from_source(_text(_ce_attribute(event, "source")) or "")
    message = _message_of(_ce_data(event, ce_id, topic), ce_id, topic)
    event_id = ce_id or _message_id(message) or f"cloudevent-{uuid.uuid4()}"
    return Delivery(
        data=_message_data(message, max_bytes, event_id, topic),
        attributes=_attributes(message, event_id, topic),
        topic=topic,
        event_id=event_id,
        published_at=parse_time(_ce_attribute(event, "time")) or parse_time(_publish_time(message)),
        transport="cloudevent",
    )


def topic_from_source(source: str) -> str | None:
    """``//pubsub.googleapis.com/projects/P/topics/T`` -> ``T``; None when there is no topic."""
    match = _TOPIC_IN_SOURCE.search(source)
    return match.group(1) if match else None


def topic_from_path(path: str) -> str | None:
    """The topic in a push URL path ``/projects/P/topics/T``, found as functions-framework does."""
    match = _TOPIC_IN_PATH.search(path)
    return match.group(1) if match and is_text(match.group(1)) else None


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 time (nanoseconds allowed) as aware UTC; None when absent, unreadable or out
    of range (a time that is not in years 1 to 9999 once in UTC): the event then counts as
    young, so a bad time can never make it be given up."""
    try:
        if isinstance(value, datetime):
            parsed = value
        elif isinstance(value, str) and 0 < len(value) <= 64:
            parsed = datetime.fromisoformat(_FRACTION.sub(r"\1", value.strip()))
        else:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def _unwrap_push(envelope: dict[str, Any], max_bytes: int, path: str) -> Delivery:
    topic = topic_from_path(path)
    message = _message_of(envelope, None, topic)
    event_id = _message_id(message) or f"push-{uuid.uuid4()}"
    return Delivery(
        data=_message_data(message, max_bytes, event_id, topic),
        attributes=_attributes(message, event_id, topic),
        topic=topic,
        event_id=event_id,
        published_at=parse_time(_publish_time(message)),
        transport="push",
    )


@contextmanager
def _failing_as(transport: Transport) -> Iterator[None]:
    try:
        yield
    except EnvelopeError as error:
        error.transport = transport
        raise


def _ce_attribute(event: Any, name: str) -> Any:
    try:
        return event[name]
    except (KeyError, TypeError, AttributeError):
        return None


def _ce_data(event: Any, event_id: str | None, topic: str | None) -> dict[str, Any]:
    data = getattr(event, "data", None)
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data)
        except (ValueError, RecursionError):
            data = None
    if not isinstance(data, dict):
        raise EnvelopeError(
            "data",
            "data of the CloudEvent must be a Pub/Sub MessagePublishedData object",
            event_id=event_id,
            topic=topic,
        )
    return data


def _message_of(container: dict[str, Any], event_id: str | None, topic: str | None) -> Any:
    message = container.get("message")
    if not isinstance(message, dict):
        raise EnvelopeError(
            "message",
            "message must be a Pub/Sub message object",
            event_id=event_id,
            topic=topic,
        )
    return message


def _message_id(message: dict[str, Any]) -> str | None:
    for key in ("messageId", "message_id"):
        value = _text(message.get(key))
        if value:
            return value
    return None


def _publish_time(message: dict[str, Any]) -> Any:
    return message.get("publishTime") or message.get("publish_time")


def _attributes(message: dict[str, Any], event_id: str, topic: str | None) -> dict[str, str]:
    raw = message.get("attributes")
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and is_text(k + v) for k, v in raw.items()
    ):
        raise EnvelopeError(
            "message.attributes",
            "message.attributes must be an object of text strings (keys and values)",
            event_id=event_id,
            topic=topic,
        )
    return dict(raw)


def _message_data(
    message: dict[str, Any], max_bytes: int, event_id: str, topic: str | None
) -> bytes:
    raw = message.get("data")
    if raw is None:
        return b""

    def fail(reason: str) -> EnvelopeError:
        return EnvelopeError(
            "message.data", f"message.data {reason}", event_id=event_id, topic=topic
        )

    if not isinstance(raw, str):
        raise fail("must be a base64 string")
    if _decoded_length(raw) > max_bytes:
        raise fail(f"exceeds {max_bytes} bytes (about {_decoded_length(raw)} bytes decoded)")
    try:
        return _b64decode(raw)
    except (binascii.Error, ValueError):
        raise fail("is not valid base64") from None


def _decoded_length(encoded: str) -> int:
    padding = len(encoded) - len(encoded.rstrip("="))
    return len(encoded) * 3 // 4 - padding


def _b64decode(encoded: str) -> bytes:
    padded = encoded + "=" * (-len(encoded) % 4)
    if _STANDARD_B64.fullmatch(encoded):
        return base64.b64decode(padded, validate=True)
    if _URLSAFE_B64.fullmatch(encoded):
        return base64.urlsafe_b64decode(padded)
    raise ValueError("not base64")


def _text(value: Any) -> str | None:
    """An id or a source: a string (or an integer) of Unicode text, cut to a bounded length."""
    if isinstance(value, str | int) and not isinstance(value, bool):
        text = str(value)[:_MAX_ID_CHARS]
        return text if text and is_text(text) else None
    return None
