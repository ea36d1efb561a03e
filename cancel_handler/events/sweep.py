"""The watchdog's sweep (SPEC 7): a ``job-timeout`` event with ``"sweep": true`` and optionally
``project_id``, ``queue_names`` (sweep only those) and ``dry_run``. It names no job: the plan
lists the queues and applies ``RUNTIME_LIMITS``.

A sweep is a job-timeout event by definition: where neither the topic nor the body says which
event it is (an HTTP call), it is one; on the budget-exceeded topic, or declared as one, it is
an invalid event.
"""

from __future__ import annotations

from typing import Any, ClassVar

from cancel_handler.envelopes import Delivery
from cancel_handler.events import common as c
from cancel_handler.events.common import CancelEvent, EventRules, InvalidEvent


class SweepEvent(c.Model):
    event_type: str | None
    sweep: bool
    project_id: str | None
    queue_names: list[Any] | None
    dry_run: bool | None

    FIELDS: ClassVar[dict[str, c.Schema]] = {
        "event_type": c.optional(c.STR),
        "sweep": c.required(c.BOOL),
        "project_id": c.optional(c.STR),
        "queue_names": c.optional(c.LIST),
        "dry_run": c.optional(c.BOOL),
    }


def is_sweep(payload: dict[str, Any]) -> bool:
    """A payload that asks for a sweep (``"sweep": false`` or ``null`` is an ordinary event)."""
    return payload.get("sweep") not in (None, False)


def parse(payload: dict[str, Any], delivery: Delivery, rules: EventRules) -> CancelEvent:
    _job_timeout(payload, delivery)
    event = c.validate_model(SweepEvent, payload)
    for field in ("job_id", "job_ids"):
        if payload.get(field) is not None:
            raise InvalidEvent(field, f"a sweep names no {field}: it finds the jobs itself")
    queues: tuple[str, ...] = ()
    if event.queue_names is not None:
        queues = c.queue_names(event.queue_names, "queue_names")
        if not queues:
            raise InvalidEvent(
                "queue_names", "queue_names must name at least one queue (or be left out)"
            )
    return CancelEvent(
        event_type="job-timeout",
        project_id=c.project_id(event.project_id, "project_id"),
        job_kind="sql",
        job_ids=(),
        queue_names=queues,
        dry_run=bool(event.dry_run),
        reason=None,
        context={},
        source_format="sweep",
    )


def salvage(payload: dict[str, Any], delivery: Delivery, rules: EventRules) -> c.Partial:
    return c.Partial(
        event_type=c.attempt(lambda: _job_timeout(payload, delivery)),
        project_id=c.attempt(lambda: c.project_id(payload.get("project_id"), "project_id")),
    )


def _job_timeout(payload: dict[str, Any], delivery: Delivery) -> str:
    event_type = c.resolve_event_type(
        delivery.topic,
        payload.get("event_type"),
        delivery.attributes.get("event_type"),
        default="job-timeout",
    )
    if event_type != "job-timeout":
        raise InvalidEvent(
            "sweep",
            f"a sweep is a job-timeout event, this one is {event_type}",
            event_type=event_type,
        )
    return event_type
