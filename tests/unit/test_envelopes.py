"""Envelopes: Eventarc CloudEvents, raw push converted by functions-framework, push, HTTP."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from functions_framework import create_app

from cancel_handler import envelopes
from cancel_handler.envelopes import (
    Delivery,
    EnvelopeError,
    from_cloud_event,
    from_http_body,
    parse_time,
    topic_from_source,
)
from tests.corpus import (
    JOB_ID,
    encode,
    fixture_cloud_event,
    load_fixture,
    pubsub_cloud_event,
    push_envelope,
)

MAX = 65536
SQL_EVENT = load_fixture("job_timeout_sql.json")["data"]

CAPTURE_MODULE = """
import functions_framework

CAPTURED = []


@functions_framework.cloud_event
def capture(event):
    CAPTURED.append(event)
"""


@pytest.fixture
def through_functions_framework(tmp_path: Path) -> Callable[..., Any]:
    """POST a request to a real functions-framework cloudevent app; return the event it built."""
    name = f"ff_capture_{uuid.uuid4().hex}"
    source = tmp_path / f"{name}.py"
    source.write_text(CAPTURE_MODULE)
    client = create_app("capture", str(source), "cloudevent").test_client()  # type: ignore[no-untyped-call]

    def post(path: str, headers: dict[str, str], body: bytes) -> Any:
        import sys

        response = client.post(path, headers=headers, data=body)
        assert response.status_code == 200, response.data
        captured: list[Any] = sys.modules[name].CAPTURED
        return captured.pop()

    return post


def test_eventarc_fixture() -> None:
    delivery = from_cloud_event(fixture_cloud_event("eventarc_job_timeout.json"), MAX)
    assert delivery == Delivery(
        data=encode(SQL_EVENT),
        attributes={"origin": "dli-watchdog"},
        topic="job-timeout",
        event_id="11672835467345678",
        published_at=datetime(2026, 11, 28, 12, 0, 0, 123000, tzinfo=UTC),
        transport="cloudevent",
    )


def test_eventarc_binary_mode_through_functions_framework(
    through_functions_framework: Callable[..., Any],
) -> None:
    headers, body = to_binary(fixture_cloud_event("eventarc_job_timeout.json"))
    event = through_functions_framework("/", headers, body)
    delivery = from_cloud_event(event, MAX)
    assert delivery.topic == "job-timeout"
    assert json.loads(delivery.data) == SQL_EVENT
    assert delivery.event_id == "11672835467345678"


def test_raw_push_converted_without_topic_in_path(
    through_functions_framework: Callable[..., Any],
) -> None:
    body = json.dumps(load_fixture("push_envelope_job_timeout.json")).encode()
    event = through_functions_framework("/", {"Content-Type": "application/json"}, body)
    assert event["source"] == "//pubsub.googleapis.com/"
    delivery = from_cloud_event(event, MAX)
    assert delivery.topic is None
    assert delivery.event_id == "2070443601311540"
    assert delivery.attributes == {"event_type": "job-timeout"}
    assert delivery.published_at == datetime(2026, 11, 28, 12, 0, 1, 123456, tzinfo=UTC)
    assert json.loads(delivery.data) == SQL_EVENT


def test_raw_push_converted_with_topic_in_path(
    through_functions_framework: Callable[..., Any],
) -> None:
    body = json.dumps(load_fixture("push_envelope_job_timeout.json")).encode()
    event = through_functions_framework(
        "/projects/acme-ops/topics/budget-exceeded", {"Content-Type": "application/json"}, body
    )
    assert from_cloud_event(event, MAX).topic == "budget-exceeded"


def test_minimal_message_as_in_google_samples() -> None:
    data = base64.b64encode(encode(SQL_EVENT)).decode()
    event = CloudEvent(
        {
            "id": "my-id",
            "source": "//pubsub.googleapis.com/projects/P/topics/job-timeout",
            "type": "google.cloud.pubsub.topic.v1.messagePublished",
            "time": "2025-05-09T18:32:46.572Z",
        },
        {"message": {"data": data}},
    )
    delivery = from_cloud_event(event, MAX)
    assert delivery.attributes == {}
    assert delivery.event_id == "my-id"
    assert delivery.published_at == datetime(2025, 5, 9, 18, 32, 46, 572000, tzinfo=UTC)


class BareEvent:
    """A CloudEvent without the optional ``time`` (the SDK's CloudEvent always sets one)."""

    def __init__(self, attributes: dict[str, str], data: Any) -> None:
        self.attributes = attributes
        self.data = data

    def __getitem__(self, key: str) -> str:
        return self.attributes[key]


def test_snake_case_keys_only() -> None:
    message = {
        "data": base64.b64encode(b"{}").decode(),
        "message_id": "m-1",
        "publish_time": "2026-01-02T03:04:05Z",
    }
    event = BareEvent(
        {"source": "//pubsub.googleapis.com/projects/P/topics/T"}, {"message": message}
    )
    delivery = from_cloud_event(event, MAX)
    assert delivery.topic == "T"
    assert delivery.event_id == "m-1"
    assert delivery.published_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_attribute_only_message_has_empty_data() -> None:
    event = pubsub_cloud_event(b"", {"event_type": "job-timeout"}, "job-timeout")
    event.data["message"].pop("data")
    delivery = from_cloud_event(event, MAX)
    assert delivery.data == b""
    assert delivery.attributes == {"event_type": "job-timeout"}


def test_data_given_as_json_bytes() -> None:
    event = pubsub_cloud_event(b'{"a":1}', topic="job-timeout")
    event.data = json.dumps(event.data).encode()
    assert from_cloud_event(event, MAX).data == b'{"a":1}'


@pytest.mark.parametrize(
    "encoded",
    [
        base64.b64encode(b'{"x":">>>???"}').decode(),
        base64.urlsafe_b64encode(b'{"x":">>>???"}').decode(),
        base64.b64encode(b'{"x":">>>???"}').decode().rstrip("="),
    ],
    ids=["standard", "urlsafe", "unpadded"],
)
def test_base64_variants(encoded: str) -> None:
    event = pubsub_cloud_event(b"", topic="job-timeout", raw_data=encoded)
    assert from_cloud_event(event, MAX).data == b'{"x":">>>???"}'


@pytest.mark.parametrize("raw", ["not base64!", "abcde", "ab+c_d==", "====", "YWJj\n"])
def test_not_base64(raw: str) -> None:
    event = pubsub_cloud_event(b"", topic="job-timeout", message_id="77", raw_data=raw)
    with pytest.raises(EnvelopeError) as caught:
        from_cloud_event(event, MAX)
    assert caught.value.field == "message.data"
    assert caught.value.event_id == "77"
    assert caught.value.topic == "job-timeout"
    assert caught.value.transport == "cloudevent"
    assert str(caught.value).startswith("message.data")


def test_size_limit_is_exact() -> None:
    assert len(from_cloud_event(pubsub_cloud_event(b"x" * 1024), 1024).data) == 1024
    with pytest.raises(EnvelopeError, match="exceeds 1024 bytes") as caught:
        from_cloud_event(pubsub_cloud_event(b"x" * 1025), 1024)
    assert caught.value.field == "message.data"


def test_huge_data_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(encoded: str) -> bytes:
        raise AssertionError("decoded a body over the limit")

    monkeypatch.setattr(envelopes, "_b64decode", never)
    event = pubsub_cloud_event(b"", topic="job-timeout", raw_data="A" * 10_000_000)
    with pytest.raises(EnvelopeError, match="exceeds"):
        from_cloud_event(event, MAX)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (None, "data"),
        ([1, 2], "data"),
        ({"subscription": "s"}, "message"),
        ({"message": "text"}, "message"),
        ({"message": {"data": 5}}, "message.data"),
        ({"message": {"data": "", "attributes": ["a"]}}, "message.attributes"),
        ({"message": {"data": "", "attributes": {"a": 1}}}, "message.attributes"),
    ],
)
def test_malformed_cloud_event(data: Any, field: str) -> None:
    event = CloudEvent({"id": "1", "source": "//pubsub.googleapis.com/", "type": "t"}, data)
    with pytest.raises(EnvelopeError) as caught:
        from_cloud_event(event, MAX)
    assert caught.value.field == field
    assert caught.value.event_id == "1"


def test_http_event_body() -> None:
    body = encode(SQL_EVENT)
    delivery = from_http_body(body, MAX)
    assert delivery.transport == "http"
    assert delivery.data == body
    assert delivery.attributes == {}
    assert delivery.topic is None
    assert delivery.published_at is None
    assert delivery.event_id.startswith("http-")
    uuid.UUID(delivery.event_id.removeprefix("http-"))


@pytest.mark.parametrize(
    "body",
    [b"not json", b"\xff\xfe\x00", b"[" * 60000, b"", b'{"message": {"data": "x"}}'],
    ids=["text", "not-utf8", "deep", "empty", "message-without-subscription"],
)
def test_http_body_that_is_not_a_push_envelope_passes_unchanged(body: bytes) -> None:
    delivery = from_http_body(body, MAX)
    assert delivery.transport == "http"
    assert delivery.data == body


def test_http_push_envelope_fixture() -> None:
    body = json.dumps(load_fixture("push_envelope_job_timeout.json")).encode()
    delivery = from_http_body(body, MAX)
    assert delivery == Delivery(
        data=encode(SQL_EVENT),
        attributes={"event_type": "job-timeout"},
        topic=None,
        event_id="2070443601311540",
        published_at=datetime(2026, 11, 28, 12, 0, 1, 123456, tzinfo=UTC),
        transport="push",
    )


def test_http_push_topic_from_path() -> None:
    body = push_envelope(b"{}")
    path = "/projects/acme-ops/topics/budget-exceeded"
    assert from_http_body(body, MAX, path).topic == "budget-exceeded"
    assert from_http_body(body, MAX, "/cancel").topic is None


def test_http_push_without_message_id() -> None:
    envelope = {"message": {"data": base64.b64encode(b"{}").decode()}, "subscription": "s"}
    delivery = from_http_body(encode(envelope), MAX)
    assert delivery.event_id.startswith("push-")
    assert delivery.published_at is None


def test_http_body_over_limit() -> None:
    with pytest.raises(EnvelopeError) as caught:
        from_http_body(b"{" + b" " * 2048 + b"}", 1024)
    assert (caught.value.field, caught.value.transport) == ("body", "http")
    assert "1024" in str(caught.value)


def test_http_push_envelope_errors_say_push() -> None:
    envelope = {"message": {"data": "%%", "messageId": "5"}, "subscription": "s"}
    path = "/projects/acme-ops/topics/job-timeout"
    with pytest.raises(EnvelopeError) as caught:
        from_http_body(encode(envelope), MAX, path)
    error = caught.value
    assert (error.field, error.transport, error.event_id, error.topic) == (
        "message.data",
        "push",
        "5",
        "job-timeout",
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-28T12:00:00Z", datetime(2026, 11, 28, 12, tzinfo=UTC)),
        ("2026-11-28T12:00:00.123456789Z", datetime(2026, 11, 28, 12, 0, 0, 123456, tzinfo=UTC)),
        ("2026-11-28T14:00:00+02:00", datetime(2026, 11, 28, 12, tzinfo=UTC)),
        ("2026-11-28T12:00:00", datetime(2026, 11, 28, 12, tzinfo=UTC)),
        (
            datetime(2026, 1, 1, 1, tzinfo=timezone(timedelta(hours=1))),
            datetime(2026, 1, 1, tzinfo=UTC),
        ),
        ("yesterday", None),
        ("", None),
        (None, None),
        (1795867200, None),
    ],
)
def test_parse_time(value: Any, expected: datetime | None) -> None:
    assert parse_time(value) == expected


@pytest.mark.parametrize(
    ("source", "topic"),
    [
        ("//pubsub.googleapis.com/projects/p/topics/job-timeout", "job-timeout"),
        ("//pubsub.googleapis.com/projects/p/topics/budget-exceeded/", "budget-exceeded"),
        ("//pubsub.googleapis.com/", None),
        ("", None),
        ("//storage.googleapis.com/projects/_/buckets/b", None),
    ],
)
def test_topic_from_source(source: str, topic: str | None) -> None:
    assert topic_from_source(source) == topic


def test_job_id_constant_is_the_fixture_id() -> None:
    assert SQL_EVENT["job_id"] == JOB_ID
