"""Test data shared by unit and end-to-end tests: payload fixtures and the bad-input corpus.

Fixtures (``tests/fixtures/*.json``) come in three shapes: a structured CloudEvent as Eventarc
sends it (``eventarc_*``), a raw Pub/Sub push body (``push_envelope_*``), and a Pub/Sub message
with its data decoded for readability (``{"attributes": {...}, "data": {...}}``, every other
file); ``fixture_message`` returns the latter's data bytes and attributes, ready to wrap with
``pubsub_cloud_event`` or ``push_envelope``.

Bad inputs (``tests/bad_inputs/*.json``): one case per file::

    {"name", "description", "transport": "cloudevent" | "http",
     one of "data" (a JSON value, encoded compactly), "body" (raw text, UTF-8),
            "body_b64" (raw bytes), "generate" (built here: see ``_GENERATORS``),
     "message_data"? (cloudevent only: the literal message.data string instead of base64),
     "message"? (cloudevent only: fields that replace the Pub/Sub message's own, of any JSON
                 type: "publishTime", "attributes", "messageId", ...; a string publishTime is
                 the CloudEvent's time too, as functions-framework makes it for a raw push),
     "attributes"?, "topic"? (cloudevent only), "path"? (http only, the request path),
     "expect_error": "InvalidEvent" | "EnvelopeError", "expect_field"}
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cloudevents.http import CloudEvent

TESTS = Path(__file__).parent
FIXTURES = TESTS / "fixtures"
BAD_INPUTS = TESTS / "bad_inputs"
PROJECT_ID = "0123456789abcdef0123456789abcdef"
JOB_ID = "5a3a2c2e-1111-4222-8333-944455556666"
GCP_PROJECT = "acme-ops"
PUBLISH_TIME = "2026-11-28T12:00:00.123Z"
MESSAGE_TYPE = "google.cloud.pubsub.topic.v1.messagePublished"


@dataclass(frozen=True)
class BadInput:
    name: str
    description: str
    transport: Literal["cloudevent", "http"]
    data: bytes
    expect_field: str
    expect_error: Literal["InvalidEvent", "EnvelopeError"]
    attributes: dict[str, str] = field(default_factory=dict)
    topic: str | None = None
    path: str = "/"
    message_data: str | None = None
    message: dict[str, Any] = field(default_factory=dict)

    def cloud_event(self) -> CloudEvent:
        """The case as the Eventarc CloudEvent ``cancel_dli_job`` receives."""
        return pubsub_cloud_event(
            self.data,
            self.attributes,
            self.topic,
            message_id=f"bad-{self.name}",
            raw_data=self.message_data,
            message_fields=self.message,
        )

    def http_body(self) -> bytes:
        """The case as the body POSTed to ``cancel_dli_job_http``."""
        return self.data


def load_bad_inputs(max_bytes: int = 65536, max_jobs: int = 1000) -> list[BadInput]:
    """Every bad-input case, with generated bodies sized against the given limits."""
    return [_bad_input(path, max_bytes, max_jobs) for path in sorted(BAD_INPUTS.glob("*.json"))]


def load_fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def fixture_message(name: str) -> tuple[bytes, dict[str, str]]:
    fixture = load_fixture(name)
    return encode(fixture["data"]), dict(fixture.get("attributes") or {})


def fixture_cloud_event(name: str) -> CloudEvent:
    """A structured-mode CloudEvent fixture as functions-framework hands it to the function."""
    envelope = load_fixture(name)
    data = envelope.pop("data")
    return CloudEvent(envelope, data)


def encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def pubsub_cloud_event(
    data: bytes,
    attributes: dict[str, str] | None = None,
    topic: str | None = None,
    *,
    message_id: str = "1234567890",
    publish_time: str = PUBLISH_TIME,
    raw_data: str | None = None,
    message_fields: dict[str, Any] | None = None,
) -> CloudEvent:
    """A Pub/Sub ``messagePublished`` CloudEvent; no topic gives the source functions-framework
    builds for a raw push to a URL without the topic path. ``message_fields`` replace the
    message's own (a string ``publishTime`` among them is the CloudEvent's time too)."""
    resource = f"projects/{GCP_PROJECT}/topics/{topic}" if topic else ""
    message: dict[str, Any] = {
        "data": base64.b64encode(data).decode() if raw_data is None else raw_data,
        "attributes": dict(attributes or {}),
        "messageId": message_id,
        "message_id": message_id,
        "publishTime": publish_time,
        "publish_time": publish_time,
    }
    message.update(message_fields or {})
    time = message.get("publishTime")
    return CloudEvent(
        {
            "id": message_id,
            "source": f"//pubsub.googleapis.com/{resource}",
            "type": MESSAGE_TYPE,
            "time": time if isinstance(time, str) else publish_time,
            "datacontenttype": "application/json",
        },
        {"message": message, "subscription": f"projects/{GCP_PROJECT}/subscriptions/dli-cancel"},
    )


def push_envelope(
    data: bytes,
    attributes: dict[str, str] | None = None,
    *,
    message_id: str = "2070443601311540",
    publish_time: str = PUBLISH_TIME,
) -> bytes:
    """A wrapped Pub/Sub push request body."""
    message = {
        "data": base64.b64encode(data).decode(),
        "attributes": dict(attributes or {}),
        "messageId": message_id,
        "message_id": message_id,
        "publishTime": publish_time,
        "publish_time": publish_time,
    }
    return encode({"message": message, "subscription": f"projects/{GCP_PROJECT}/subscriptions/s"})


def _huge(max_bytes: int, max_jobs: int) -> bytes:
    reason = "x" * (max_bytes + 4096)
    return encode({"event_type": "job-timeout", "job_id": JOB_ID, "reason": reason})


def _deep_array(max_bytes: int, max_jobs: int) -> bytes:
    depth = min(5000, max_bytes // 2 - 16)
    return ("[" * depth + "]" * depth).encode()


def _deep_object(max_bytes: int, max_jobs: int) -> bytes:
    depth = 40
    return (
        '{"event_type":"job-timeout","job_id":"'
        + JOB_ID
        + '","x":'
        + '{"a":' * depth
        + "1"
        + "}" * depth
        + "}"
    ).encode()


def _too_many_job_ids(max_bytes: int, max_jobs: int) -> bytes:
    ids = [f"5a3a2c2e-1111-4222-8333-{n:012x}" for n in range(max_jobs + 1)]
    return encode({"event_type": "budget-exceeded", "job_ids": ids})


_GENERATORS: dict[str, Callable[[int, int], bytes]] = {
    "huge": _huge,
    "deep_array": _deep_array,
    "deep_object": _deep_object,
    "too_many_job_ids": _too_many_job_ids,
}


def _bad_input(path: Path, max_bytes: int, max_jobs: int) -> BadInput:
    case = json.loads(path.read_text())
    return BadInput(
        name=case["name"],
        description=case.get("description", ""),
        transport=case["transport"],
        data=_case_bytes(case, max_bytes, max_jobs),
        expect_field=case["expect_field"],
        expect_error=case["expect_error"],
        attributes=case.get("attributes", {}),
        topic=case.get("topic"),
        path=case.get("path", "/"),
        message_data=case.get("message_data"),
        message=case.get("message", {}),
    )


def _case_bytes(case: dict[str, Any], max_bytes: int, max_jobs: int) -> bytes:
    if "data" in case:
        return encode(case["data"])
    if "body" in case:
        return str(case["body"]).encode()
    if "body_b64" in case:
        return base64.b64decode(case["body_b64"])
    if "generate" in case:
        return _GENERATORS[case["generate"]](max_bytes, max_jobs)
    if "message_data" in case:
        return b""
    raise ValueError(f"bad input {case['name']!r} has no data, body, body_b64 or generate")
