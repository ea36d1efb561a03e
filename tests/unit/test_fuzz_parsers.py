"""Property-based tests of the input side: arbitrary bytes, JSON, attributes and envelopes fed to
``envelopes.from_cloud_event``, ``envelopes.from_http_body`` and ``events.parse_event``.

Whatever comes in, nothing raises but the documented ``EnvelopeError`` and ``InvalidEvent``,
and every result is well formed: a ``Delivery`` within bounds whose strings are all text, a
``CancelEvent`` whose ids would be safe in a DLI URL, an ``Ignored`` with a reason, an error
naming its field. Examples: the hypothesis profile (tests/conftest.py): a moderate number by
default, many more with ``HYPOTHESIS_PROFILE=deep`` (``make fuzz``).
"""

from __future__ import annotations

import base64
import json
import re
import string
from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import Any

from cloudevents.http import CloudEvent
from hypothesis import given
from hypothesis import strategies as st

from cancel_handler.config import BudgetTarget
from cancel_handler.dli.types import JOB_KINDS
from cancel_handler.envelopes import (
    Delivery,
    EnvelopeError,
    from_cloud_event,
    from_http_body,
)
from cancel_handler.events import CancelEvent, EventRules, Ignored, InvalidEvent, parse_event
from cancel_handler.events.common import EVENT_TYPES, FLINK_MAX_ID, MAX_REASON_CHARS
from cancel_handler.jsonbody import is_text

PROJECT = "0123456789abcdef0123456789abcdef"
OTHER_PROJECT = "fedcba9876543210fedcba9876543210"
RULES = EventRules(
    default_project_id=PROJECT,
    budget_targets={
        "*": BudgetTarget(project_id=None, queue_names=("etl",)),
        "b-jobs": BudgetTarget(
            project_id=OTHER_PROJECT, job_ids=("5a3a2c2e-1111-4222-8333-944455556666",)
        ),
    },
    max_jobs_per_event=20,
)
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
QUEUE = re.compile(r"[a-z0-9][a-z0-9_]{0,127}")
HEX32 = re.compile(r"[0-9a-f]{32}")
ENVELOPE_FIELDS = {"body", "data", "message", "message.attributes", "message.data"}

# -- strategies ------------------------------------------------------------------------------

# Text of any kind, lone surrogates included (JSON's \ud800 escape makes them).
lone_surrogates = st.integers(min_value=0xD800, max_value=0xDFFF).map(chr)
any_text = st.text(st.characters() | lone_surrogates, max_size=12)
short_text = st.one_of(st.text(max_size=12), any_text, st.sampled_from(["", " ", "\n", "\x00"]))

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),  # NaN and infinities too: json.dumps writes them as NaN/Infinity literals
    short_text,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(short_text, inner, max_size=5),
    max_leaves=12,
)

uuids = st.uuids().map(str) | st.sampled_from(["5a3a2c2e-1111-4222-8333-944455556666"])
flink_ids = st.integers(min_value=-2, max_value=FLINK_MAX_ID + 2) | st.integers().map(str)
job_ids = st.one_of(uuids, flink_ids, json_values)
queue_names = st.from_regex(r"[A-Za-z0-9_]{1,8}", fullmatch=True) | json_values
projects = st.sampled_from([PROJECT, OTHER_PROJECT, PROJECT.upper(), "p"]) | json_values
event_types = st.sampled_from([*EVENT_TYPES, "Job-Timeout", "other"]) | json_values


def maybe(keys: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with any subset of ``keys`` (values from their strategies), plus other keys."""
    extra = st.dictionaries(short_text, json_values, max_size=2)
    return st.tuples(st.fixed_dictionaries({}, optional=keys), extra).map(
        lambda parts: {**parts[1], **parts[0]}
    )


our_events = maybe(
    {
        "event_type": event_types,
        "job_id": job_ids,
        "job_ids": st.lists(job_ids, max_size=25) | json_values,
        "job_kind": st.sampled_from([*JOB_KINDS, "hive"]) | json_values,
        "project_id": projects,
        "queue_names": st.lists(queue_names, max_size=4) | json_values,
        "reason": st.text(max_size=1200) | any_text | json_values,
        "dry_run": st.booleans() | json_values,
        "budget": st.dictionaries(short_text, json_values, max_size=8) | json_values,
        "source_event_id": st.text(string.printable, max_size=210) | json_values,
    }
)
budget_notifications = maybe(
    {
        "costAmount": st.floats() | st.integers() | json_values,
        "budgetAmount": st.floats() | st.integers() | json_values,
        "alertThresholdExceeded": st.floats(min_value=0, max_value=2) | json_values,
        "forecastThresholdExceeded": st.floats(min_value=0, max_value=2) | json_values,
        "budgetDisplayName": short_text | json_values,
        "currencyCode": st.sampled_from(["EUR", "USD"]) | json_values,
        "event_type": event_types,
    }
)
labels = st.dictionaries(
    st.sampled_from(["dli_job_id", "job_id", "dli_project_id", "project_id", "dli_job_kind"])
    | short_text,
    st.one_of(job_ids, projects, st.sampled_from(JOB_KINDS)),
    max_size=4,
)
incidents = st.fixed_dictionaries(
    {
        "version": st.sampled_from(["1.2", "test"]) | json_values,
        "incident": maybe(
            {
                "state": st.sampled_from(["open", "OPEN", "closed", "other"]) | json_values,
                "incident_id": short_text | json_values,
                "metric": maybe({"labels": labels | json_values}) | json_values,
                "resource": maybe({"labels": labels | json_values}) | json_values,
                "policy_user_labels": labels | json_values,
                "summary": short_text | json_values,
            }
        )
        | json_values,
    }
)
# Valid events with arbitrary extras: the fields that pass validation reach the model's output.
context = {
    "reason": st.text(max_size=1200) | any_text,
    "dry_run": st.booleans(),
    "project_id": st.sampled_from([PROJECT, OTHER_PROJECT]),
    "source_event_id": st.text(string.printable, max_size=210),
    "budget": st.dictionaries(short_text, json_values, max_size=8),
    "unknown": json_values,
}
valid_timeouts = st.fixed_dictionaries(
    {"event_type": st.just("job-timeout"), "job_id": uuids}, optional=context
)
valid_budgets = st.fixed_dictionaries(
    {
        "event_type": st.just("budget-exceeded"),
        "job_ids": st.lists(uuids, min_size=1, max_size=5),
        "queue_names": st.lists(st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)),
    },
    optional=context,
)
payloads = st.one_of(
    valid_timeouts, valid_budgets, our_events, budget_notifications, incidents, json_values
)
attributes = st.one_of(
    st.dictionaries(short_text, json_values, max_size=4),
    maybe(
        {
            "event_type": event_types,
            "budgetId": st.sampled_from(["b-jobs", "b-none"]) | json_values,
            "schemaVersion": st.sampled_from(["1.0", "2.0"]) | json_values,
            "billingAccountId": short_text,
        }
    ),
    json_values,
)
times = st.one_of(
    st.datetimes(timezones=st.just(UTC)).map(lambda t: t.isoformat()),
    st.datetimes().map(lambda t: t.isoformat() + "Z"),
    st.datetimes(timezones=st.timezones() | st.just(UTC)).map(lambda t: t.isoformat()),
    st.sampled_from(["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-14:00"]),
    st.timedeltas(max_value=timedelta(hours=23)).map(
        lambda d: f"0001-01-01T00:00:00+{int(d.total_seconds()) // 3600:02}:00"
    ),
    json_values,
)


def encoded(value: Any) -> bytes:
    return json.dumps(value).encode()  # NaN and lone surrogates as JSON writes them


message_data = st.one_of(
    payloads.map(lambda v: base64.b64encode(encoded(v)).decode()),
    payloads.map(lambda v: base64.urlsafe_b64encode(encoded(v)).decode().rstrip("=")),
    st.binary(max_size=80).map(lambda b: base64.b64encode(b).decode()),
    json_values,
)
messages = maybe(
    {
        "data": message_data,
        "attributes": attributes,
        "messageId": short_text | st.integers() | json_values,
        "message_id": short_text | json_values,
        "publishTime": times,
        "publish_time": times,
        "orderingKey": short_text,
    }
)
topics = st.sampled_from(["job-timeout", "budget-exceeded", "fan", "t/x", ""]) | short_text
envelopes = maybe(
    {
        "message": messages | json_values,
        "subscription": st.sampled_from(["projects/p/subscriptions/s"]) | json_values,
    }
)
limits = st.sampled_from([65536, 65536, 1024])


@dataclass
class LooseEvent:
    """A CloudEvent as functions-framework might hand it over, with attributes of any type."""

    attributes: dict[str, Any]
    data: Any

    def __getitem__(self, name: str) -> Any:
        return self.attributes[name]


loose_events = st.builds(
    LooseEvent,
    attributes=maybe(
        {
            "id": short_text | json_values,
            "source": topics.map(lambda t: f"//pubsub.googleapis.com/projects/p/topics/{t}")
            | json_values,
            "time": times,
        }
    ),
    data=envelopes | json_values | st.binary(max_size=40) | st.text(max_size=40),
)

# -- what a well-formed answer is --------------------------------------------------------------


def encodable(value: Any) -> bool:
    """JSON and UTF-8 both: what a result or a log line is made of."""
    try:
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (ValueError, TypeError):
        return False
    return True


def check_delivery(delivery: Delivery, max_bytes: int) -> None:
    assert isinstance(delivery.data, bytes) and len(delivery.data) <= max_bytes
    assert isinstance(delivery.attributes, dict) and encodable(delivery.attributes)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in delivery.attributes.items())
    assert delivery.topic is None or (isinstance(delivery.topic, str) and is_text(delivery.topic))
    assert isinstance(delivery.event_id, str) and 0 < len(delivery.event_id) <= 200
    assert is_text(delivery.event_id)
    if delivery.published_at is not None:
        assert delivery.published_at.utcoffset() == timedelta(0)
    assert delivery.transport in ("cloudevent", "push", "http")


def check_job_id(job: str, kind: str) -> None:
    if kind == "flink":
        assert job.isascii() and job.isdigit() and 1 <= int(job) <= FLINK_MAX_ID
    else:
        assert UUID.fullmatch(job), job


def check_parsed(parsed: CancelEvent | Ignored) -> None:
    if isinstance(parsed, Ignored):
        assert isinstance(parsed.reason, str) and parsed.reason and is_text(parsed.reason)
        return
    assert isinstance(parsed, CancelEvent)
    assert parsed.event_type in EVENT_TYPES and parsed.job_kind in JOB_KINDS
    assert parsed.source_format in ("event", "budget_notification", "incident")
    assert isinstance(parsed.job_ids, tuple) and len(set(parsed.job_ids)) == len(parsed.job_ids)
    assert len(parsed.job_ids) <= RULES.max_jobs_per_event
    for job in parsed.job_ids:
        check_job_id(job, parsed.job_kind)
    assert all(QUEUE.fullmatch(q) and not q.isdigit() for q in parsed.queue_names)
    if parsed.event_type == "job-timeout":
        assert len(parsed.job_ids) == 1 and not parsed.queue_names
    else:
        assert parsed.job_ids or parsed.queue_names
    assert parsed.project_id is None or HEX32.fullmatch(parsed.project_id)
    assert isinstance(parsed.dry_run, bool)
    assert parsed.reason is None or (0 < len(parsed.reason) <= MAX_REASON_CHARS)
    assert encodable(parsed.context) and encodable(parsed.reason)
    source = parsed.source_event_id
    assert source is None or re.fullmatch(r"[\x21-\x7e]{1,200}", source)


def check_error(error: EnvelopeError | InvalidEvent) -> None:
    assert isinstance(error.field, str) and error.field
    assert isinstance(error.message, str) and 0 < len(error.message) < 600
    assert encodable(error.message) and encodable(error.field)
    if isinstance(error, EnvelopeError):
        assert error.field in ENVELOPE_FIELDS, error.field
        assert error.event_id is None or is_text(error.event_id)
        return
    assert error.event_type is None or error.event_type in EVENT_TYPES
    assert error.project_id is None or HEX32.fullmatch(error.project_id)
    for job in error.job_ids:
        assert isinstance(job, str) and job.isascii()


def read(deliver: Any, *args: Any) -> None:
    """Deliver, parse, and check whatever comes out; any other exception fails the test."""
    try:
        delivery = deliver(*args)
    except EnvelopeError as error:
        check_error(error)
        return
    check_delivery(delivery, args[1])
    try:
        parsed = parse_event(delivery, RULES)
    except InvalidEvent as error:
        check_error(error)
        return
    check_parsed(parsed)


# -- the properties ----------------------------------------------------------------------------


@given(st.binary(max_size=300), limits, st.text(max_size=40))
def test_arbitrary_bytes_posted(body: bytes, limit: int, path: str) -> None:
    read(from_http_body, body, limit, path)


@given(payloads, limits)
def test_arbitrary_json_posted(value: Any, limit: int) -> None:
    read(from_http_body, encoded(value), limit, "/")


@given(envelopes, limits, topics)
def test_arbitrary_push_envelopes(envelope: Any, limit: int, topic: str) -> None:
    read(from_http_body, encoded(envelope), limit, f"/projects/p/topics/{topic}")


@given(payloads, attributes, topics, times, limits)
def test_arbitrary_messages_in_cloud_events(
    payload: Any, attrs: Any, topic: str, time: Any, limit: int
) -> None:
    message = {"data": base64.b64encode(encoded(payload)).decode(), "attributes": attrs}
    message |= {"messageId": "m1", "publishTime": time}
    source = f"//pubsub.googleapis.com/projects/p/topics/{topic}"
    event = CloudEvent(
        {
            "id": "m1",
            "source": source,
            "type": "t",
            "time": time if isinstance(time, str) else None,
        },
        {"message": message, "subscription": "projects/p/subscriptions/s"},
    )
    read(from_cloud_event, event, limit)


@given(loose_events, limits)
def test_arbitrary_cloud_events(event: LooseEvent, limit: int) -> None:
    read(from_cloud_event, event, limit)


@given(st.binary(max_size=200) | payloads.map(encoded), attributes, topics)
def test_arbitrary_deliveries_to_the_event_parser(data: bytes, attrs: Any, topic: str) -> None:
    attrs = attrs if isinstance(attrs, dict) else {}
    attrs = {str(k): v for k, v in attrs.items() if isinstance(v, str)}
    delivery = Delivery(data, attrs, topic or None, "e1", None, "cloudevent")
    try:
        parsed = parse_event(delivery, RULES)
    except InvalidEvent as error:
        check_error(error)
        return
    check_parsed(parsed)
