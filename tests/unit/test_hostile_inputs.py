"""Inputs are hostile (SPEC 5.2), in process: envelope times that cannot be read count as
absent, and a budget that is not positive never cancels. (The same rules through the real
servers: tests/e2e/test_hostile_inputs.py; every other envelope field: the bad-input corpus.)"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from cloudevents.http import CloudEvent

from cancel_handler.config import BudgetTarget
from cancel_handler.envelopes import from_cloud_event, from_http_body, parse_time
from cancel_handler.events import CancelEvent, EventRules, Ignored, InvalidEvent, parse_event
from tests.corpus import fixture_message

UNREADABLE_TIMES: list[Any] = [
    "0001-01-01T00:00:00+05:00",  # before year 1 once in UTC
    "9999-12-31T23:59:59-05:00",  # after year 9999 once in UTC
    "2026-13-01T00:00:00Z",
    "yesterday",
    "",
    "2026-11-28T12:00:00Z" + " " * 64,  # longer than any time
    1795000000,
    1795000000.5,
    True,
    None,
    [],
    ["2026-11-28T12:00:00Z"],
    {"seconds": 1795000000},
]


@pytest.mark.parametrize("value", UNREADABLE_TIMES, ids=repr)
def test_unreadable_or_out_of_range_time_is_absent(value: Any) -> None:
    assert parse_time(value) is None


def test_readable_times_still_read() -> None:
    expected = datetime(2026, 11, 28, 12, 0, 0, 123456, tzinfo=UTC)
    assert parse_time("2026-11-28T12:00:00.123456789Z") == expected
    assert parse_time("2026-11-28T13:00:00.123456+01:00") == expected
    assert parse_time("0001-01-01T00:00:00Z") == datetime(1, 1, 1, tzinfo=UTC)


def envelope(publish_time: Any) -> dict[str, Any]:
    data = base64.b64encode(b'{"job_id": "5a3a2c2e-1111-4222-8333-944455556666"}').decode()
    message = {"data": data, "messageId": "m1", "publishTime": publish_time}
    return {"message": message, "subscription": "projects/p/subscriptions/s"}


@pytest.mark.parametrize("value", UNREADABLE_TIMES, ids=repr)
def test_push_envelope_with_unreadable_time_has_none(value: Any) -> None:
    body = json.dumps(envelope(value)).encode()

    delivery = from_http_body(body, 65536, "/projects/p/topics/job-timeout")

    assert delivery.published_at is None
    assert (delivery.event_id, delivery.topic) == ("m1", "job-timeout")


@pytest.mark.parametrize("value", [v for v in UNREADABLE_TIMES if isinstance(v, str)], ids=repr)
def test_cloud_event_with_unreadable_time_has_none(value: str) -> None:
    # functions-framework makes the CloudEvent's time from a raw push's publishTime
    source = "//pubsub.googleapis.com/projects/p/topics/job-timeout"
    event = CloudEvent({"id": "m1", "source": source, "type": "t", "time": value}, envelope(value))

    delivery = from_cloud_event(event, 65536)

    assert delivery.published_at is None
    assert (delivery.event_id, delivery.topic) == ("m1", "job-timeout")


# -- budgets that are not positive -----------------------------------------------------------


JOB = "5a3a2c2e-1111-4222-8333-944455556666"
RULES_TIMEOUT = EventRules(default_project_id="0123456789abcdef0123456789abcdef")
RULES = EventRules(
    default_project_id="0123456789abcdef0123456789abcdef",
    budget_targets={"*": BudgetTarget(project_id=None, queue_names=("etl",))},
)


def budget_notification(budget: float, cost: float, alert: float | None) -> Any:
    data, attributes = fixture_message("budget_notification_over.json")
    note = json.loads(data)
    note.update(budgetAmount=budget, costAmount=cost)
    if alert is None:
        note.pop("alertThresholdExceeded")
    else:
        note["alertThresholdExceeded"] = alert
    message = {"data": base64.b64encode(json.dumps(note).encode()).decode(), "messageId": "b1"}
    message["attributes"] = attributes
    source = "//pubsub.googleapis.com/projects/p/topics/budget-exceeded"
    event = CloudEvent({"id": "b1", "source": source, "type": "t"}, {"message": message})
    return parse_event(from_cloud_event(event, 65536), RULES)


@pytest.mark.parametrize(
    ("budget", "cost", "alert"),
    [(0, 0, None), (0, 12.5, None), (0.0, 0.0, 1.0), (-100, 5, 1.0), (-0.01, -3, 2.0)],
)
def test_budget_that_is_not_positive_never_cancels(
    budget: float, cost: float, alert: float | None
) -> None:
    parsed = budget_notification(budget, cost, alert)

    assert isinstance(parsed, Ignored)
    assert "budgetAmount" in parsed.reason and "not positive" in parsed.reason


def test_positive_budget_still_acts_at_its_threshold() -> None:
    acted = budget_notification(1000, 1000, None)
    below = budget_notification(1000, 999.99, None)

    assert isinstance(acted, CancelEvent) and acted.queue_names == ("etl",)
    assert isinstance(below, Ignored) and "below threshold" in below.reason


# -- strings are Unicode text ----------------------------------------------------------------


def test_escaped_surrogate_pairs_are_text() -> None:
    # what json.dumps (ensure_ascii) writes for a character beyond the BMP
    body = json.dumps(
        {
            "event_type": "job-timeout",
            "job_id": "5a3a2c2e-1111-4222-8333-944455556666",
            "reason": "ok \U0001f600",
        }
    )
    assert "\\ud83d\\ude00" in body

    parsed = parse_event(from_http_body(body.encode(), 65536), RULES_TIMEOUT)

    assert isinstance(parsed, CancelEvent) and parsed.reason == "ok \U0001f600"


@pytest.mark.parametrize("escape", ["\\ud800", "\\uDFFF", "\\udc00\\ud800", "x\\ud83d"])
def test_a_lone_surrogate_is_not_text(escape: str) -> None:
    body = f'{{"event_type": "job-timeout", "job_id": "{JOB}", "reason": "{escape}"}}'

    with pytest.raises(InvalidEvent, match="lone surrogate") as caught:
        parse_event(from_http_body(body.encode(), 65536), RULES_TIMEOUT)
    assert caught.value.field == "data"


def test_an_escaped_backslash_before_u_d800_is_text() -> None:
    body = '{"event_type": "job-timeout", "job_id": "' + JOB + '", "reason": "\\\\ud800"}'

    parsed = parse_event(from_http_body(body.encode(), 65536), RULES_TIMEOUT)

    assert isinstance(parsed, CancelEvent) and parsed.reason == "\\ud800"
