"""The sweep event (SPEC 7): ``{"event_type": "job-timeout", "sweep": true}`` with optional
``project_id``, ``queue_names`` and ``dry_run``, through each transport's delivery."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cancel_handler.envelopes import Delivery, from_cloud_event, from_http_body
from cancel_handler.events import CancelEvent, EventRules, InvalidEvent, parse_event
from tests.corpus import PROJECT_ID, encode, pubsub_cloud_event

RULES = EventRules(default_project_id=PROJECT_ID)
SWEEP = {"event_type": "job-timeout", "sweep": True}


def on_topic(payload: Any, topic: str | None = "job-timeout") -> Delivery:
    return from_cloud_event(pubsub_cloud_event(json.dumps(payload).encode(), {}, topic), 65536)


def parsed(delivery: Delivery) -> CancelEvent:
    event = parse_event(delivery, RULES)
    assert isinstance(event, CancelEvent)
    return event


def refused(delivery: Delivery) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as caught:
        parse_event(delivery, RULES)
    return caught.value


def test_a_sweep_from_the_scheduler() -> None:
    event = parsed(on_topic(SWEEP))

    assert event.is_sweep and event.source_format == "sweep"
    assert event.event_type == "job-timeout"
    assert (event.project_id, event.job_ids, event.queue_names) == (None, (), ())
    assert event.dry_run is False
    assert event.reason is None and event.context == {}


def test_a_sweep_with_every_option() -> None:
    payload = {**SWEEP, "project_id": PROJECT_ID, "queue_names": ["ETL", "adhoc"], "dry_run": True}

    event = parsed(on_topic(payload))

    assert event.project_id == PROJECT_ID
    assert event.queue_names == ("etl", "adhoc")
    assert event.dry_run is True


@pytest.mark.parametrize(
    "delivery",
    [
        on_topic({"sweep": True}),  # the topic says job-timeout
        from_http_body(encode({"sweep": True}), 65536),  # nothing says: a sweep is a job-timeout
        from_http_body(encode(SWEEP), 65536),
        on_topic({"sweep": True}, topic="dli-cancel-fanout"),
    ],
    ids=["topic", "http-bare", "http", "other-topic"],
)
def test_a_sweep_is_a_job_timeout_event_whatever_the_transport(delivery: Delivery) -> None:
    event = parsed(delivery)
    assert event.is_sweep and event.event_type == "job-timeout"


@pytest.mark.parametrize(
    ("delivery", "field", "says"),
    [
        (on_topic(SWEEP, topic="budget-exceeded"), "event_type", "contradicts the topic"),
        (on_topic({"sweep": True}, topic="budget-exceeded"), "sweep", "is budget-exceeded"),
        (
            from_http_body(encode({"sweep": True, "event_type": "budget-exceeded"}), 65536),
            "sweep",
            "a sweep is a job-timeout event",
        ),
        (on_topic({"sweep": "yes"}), "sweep", "sweep must be true or false"),
        (on_topic({"sweep": 1}), "sweep", "sweep must be true or false"),
        (
            on_topic({**SWEEP, "job_id": "5a3a2c2e-1111-4222-8333-944455556666"}),
            "job_id",
            "a sweep names no job_id",
        ),
        (on_topic({**SWEEP, "job_ids": []}), "job_ids", "a sweep names no job_ids"),
        (on_topic({**SWEEP, "queue_names": ["../x"]}), "queue_names[0]", "DLI queue name"),
        (on_topic({**SWEEP, "queue_names": []}), "queue_names", "at least one queue"),
        (on_topic({**SWEEP, "queue_names": "etl"}), "queue_names", "must be a list"),
        (on_topic({**SWEEP, "project_id": "ABC"}), "project_id", "32 lower-case hex"),
        (on_topic({**SWEEP, "dry_run": "true"}), "dry_run", "true or false"),
    ],
)
def test_bad_sweeps_are_invalid_events(delivery: Delivery, field: str, says: str) -> None:
    error = refused(delivery)

    assert error.field == field
    assert says in error.message
    assert error.job_ids == ()


def test_sweep_false_is_an_ordinary_event() -> None:
    error = refused(on_topic({"sweep": False}))
    assert error.field == "job_id"  # an ordinary job-timeout names its job


def test_an_invalid_sweep_keeps_what_validated() -> None:
    error = refused(on_topic({**SWEEP, "project_id": PROJECT_ID, "queue_names": [5]}))
    assert (error.event_type, error.project_id) == ("job-timeout", PROJECT_ID)
