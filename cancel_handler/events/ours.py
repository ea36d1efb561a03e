"""Our own event schema (SPEC 2.1 job-timeout, 2.2 budget-exceeded)."""

from __future__ import annotations

from typing import Any, ClassVar

from cancel_handler.dli.types import JOB_KINDS, JobKind
from cancel_handler.envelopes import Delivery
from cancel_handler.events import common as c
from cancel_handler.events.common import CancelEvent, EventRules, EventType, InvalidEvent


class OurEvent(c.Model):
    event_type: str | None
    project_id: str | None
    job_id: Any
    job_ids: list[Any] | None
    job_kind: JobKind | None
    queue_names: list[Any] | None
    reason: str | None
    dry_run: bool | None
    budget: dict[str, Any] | None
    context: dict[str, Any] | None
    source_event_id: str | None

    FIELDS: ClassVar[dict[str, c.Schema]] = {
        "event_type": c.optional(c.STR),
        "project_id": c.optional(c.STR),
        "job_id": c.optional(c.ANY),
        "job_ids": c.optional(c.LIST),
        "job_kind": c.optional(c.one_of(*JOB_KINDS)),
        "queue_names": c.optional(c.LIST),
        "reason": c.optional(c.STR),
        "dry_run": c.optional(c.BOOL),
        "budget": c.optional(c.OBJECT),
        "context": c.optional(c.OBJECT),  # echoed (bounded): a sweep's share carries its own
        "source_event_id": c.optional(c.STR),
    }


def parse(payload: dict[str, Any], delivery: Delivery, rules: EventRules) -> CancelEvent:
    event_type = _event_type(payload, delivery)
    event = c.validate_model(OurEvent, payload)
    kind: JobKind = event.job_kind or "sql"
    project = c.project_id(event.project_id, "project_id")
    queues: tuple[str, ...] = ()
    context: dict[str, Any] = c.small_object(event.context) if event.context else {}
    if event_type == "job-timeout":
        ids = _timeout_targets(event, kind)
    else:
        ids, queues = _budget_targets(event, kind, rules.max_jobs_per_event)
        if event.budget:
            context["budget"] = c.small_object(event.budget)
    return CancelEvent(
        event_type=event_type,
        project_id=project,
        job_kind=kind,
        job_ids=ids,
        queue_names=queues,
        dry_run=bool(event.dry_run),
        reason=c.reason(event.reason),
        context=context,
        source_format="event",
        source_event_id=c.source_event_id(event.source_event_id),
    )


def salvage(payload: dict[str, Any], delivery: Delivery, rules: EventRules) -> c.Partial:
    raw_kind = payload.get("job_kind")
    kind: JobKind = raw_kind if raw_kind in JOB_KINDS else "sql"
    many = payload.get("job_ids")
    candidates = [payload.get("job_id")]
    if isinstance(many, list) and len(many) <= rules.max_jobs_per_event:
        candidates.extend(many)
    return c.Partial(
        event_type=c.attempt(lambda: _event_type(payload, delivery)),
        job_ids=c.valid_job_ids(candidates, kind),
        project_id=c.attempt(lambda: c.project_id(payload.get("project_id"), "project_id")),
    )


def _event_type(payload: dict[str, Any], delivery: Delivery) -> EventType:
    return c.resolve_event_type(
        delivery.topic, payload.get("event_type"), delivery.attributes.get("event_type")
    )


def _timeout_targets(event: OurEvent, kind: JobKind) -> tuple[str, ...]:
    if event.job_ids is not None or event.queue_names is not None:
        field = "job_ids" if event.job_ids is not None else "queue_names"
        raise InvalidEvent(
            field, f"{field} is for budget-exceeded events; a job-timeout names one job_id"
        )
    if event.job_id is None:
        raise InvalidEvent("job_id", "job_id is required for a job-timeout event")
    return (c.job_id(event.job_id, kind, "job_id"),)


def _budget_targets(
    event: OurEvent, kind: JobKind, limit: int
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if event.job_id is not None:
        raise InvalidEvent(
            "job_id", "job_id is for job-timeout events; a budget-exceeded event names job_ids"
        )
    ids = c.job_ids(event.job_ids or [], kind, "job_ids", limit)
    queues = c.queue_names(event.queue_names or [], "queue_names")
    if not ids and not queues:
        raise InvalidEvent(
            "job_ids", "a budget-exceeded event needs a non-empty job_ids or queue_names"
        )
    return ids, queues
