"""Cloud Monitoring incident notifications, schema version 1.2 (SPEC 2.3).

Only ``version`` "1.2" is accepted: the console's test notifications (``version`` "test") are
rejected as invalid, so a test shows up as an ``invalid_event`` result rather than a cancel.
The job is named by labels; ``resource.labels.project_id`` is the Google Cloud project, so it
is never read as a DLI project.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from cancel_handler.dli.types import JOB_KINDS, JobKind
from cancel_handler.envelopes import Delivery
from cancel_handler.events import common as c
from cancel_handler.events.common import (
    CancelEvent,
    EventRules,
    EventType,
    Ignored,
    InvalidEvent,
)

VERSION = "1.2"
_METRIC = "incident.metric.labels"
_RESOURCE = "incident.resource.labels"
_POLICY = "incident.policy_user_labels"

Labels = list[tuple[str, Mapping[str, Any]]]


class _Labelled(c.Model):
    labels: dict[str, Any] | None

    FIELDS: ClassVar[dict[str, c.Schema]] = {"labels": c.optional(c.OBJECT)}


class Incident(c.Model):
    incident_id: str | None
    state: str
    summary: str | None
    policy_name: str | None
    url: str | None
    metric: _Labelled | None
    resource: _Labelled | None
    policy_user_labels: dict[str, Any] | None

    FIELDS: ClassVar[dict[str, c.Schema]] = {
        "incident_id": c.optional(c.STR),
        "state": c.required(c.STR),
        "summary": c.optional(c.STR),
        "policy_name": c.optional(c.STR),
        "url": c.optional(c.STR),
        "metric": c.optional(_Labelled.schema()),
        "resource": c.optional(_Labelled.schema()),
        "policy_user_labels": c.optional(c.OBJECT),
    }


class IncidentNotification(c.Model):
    version: str
    incident: Incident

    FIELDS: ClassVar[dict[str, c.Schema]] = {
        "version": c.required(c.STR),
        "incident": c.required(Incident.schema()),
    }


def is_incident(payload: dict[str, Any]) -> bool:
    return "version" in payload and "incident" in payload


def parse(payload: dict[str, Any], delivery: Delivery, rules: EventRules) -> CancelEvent | Ignored:
    note = c.validate_model(IncidentNotification, payload)
    if note.version != VERSION:
        raise InvalidEvent(
            "version",
            f"version must be {VERSION!r} (Cloud Monitoring notification schema), got "
            f"{c.show(note.version)}; test notifications are not acted on",
        )
    incident = note.incident
    state = incident.state.lower()
    if state == "closed":
        return Ignored(f"incident {c.show(incident.incident_id)} is closed")
    if state != "open":
        raise InvalidEvent(
            "incident.state",
            f"incident.state must be 'open' or 'closed', got {c.show(incident.state)}",
        )
    labels = _labels(incident)
    kind = _job_kind(labels)
    return CancelEvent(
        event_type=_event_type(incident, delivery),
        project_id=_project(labels),
        job_kind=kind,
        job_ids=(_job_id(labels, kind),),
        queue_names=(),
        dry_run=False,
        reason=c.reason(incident.summary or _policy_reason(incident)),
        context=_context(incident, labels),
        source_format="incident",
    )


def salvage(payload: dict[str, Any], delivery: Delivery, rules: EventRules) -> c.Partial:
    incident = c.attempt(lambda: c.validate_model(IncidentNotification, payload).incident)
    if incident is None:
        return c.Partial()
    labels = _labels(incident)
    kind = c.attempt(lambda: _job_kind(labels)) or "sql"
    job = c.attempt(lambda: _job_id(labels, kind))
    return c.Partial(
        event_type=c.attempt(lambda: _event_type(incident, delivery)),
        job_ids=(job,) if job else (),
        project_id=c.attempt(lambda: _project(labels)),
    )


def _labels(incident: Incident) -> Labels:
    return [
        (_METRIC, (incident.metric.labels if incident.metric else None) or {}),
        (_RESOURCE, (incident.resource.labels if incident.resource else None) or {}),
        (_POLICY, incident.policy_user_labels or {}),
    ]


def _lookup(labels: Labels, keys: Mapping[str, tuple[str, ...]]) -> tuple[str, Any] | None:
    for where, values in labels:
        for key in keys.get(where, ()):
            if values.get(key) is not None:
                return f"{where}.{key}", values[key]
    return None


def _everywhere(*keys: str) -> dict[str, tuple[str, ...]]:
    return {_METRIC: keys, _RESOURCE: keys, _POLICY: keys}


def _job_id(labels: Labels, kind: JobKind) -> str:
    found = _lookup(labels, _everywhere("dli_job_id", "job_id"))
    if found is None:
        raise InvalidEvent(
            f"{_METRIC}.dli_job_id",
            "the incident names no DLI job: set the label dli_job_id (or job_id) in the metric, "
            "the resource or the policy user labels",
        )
    path, value = found
    return c.job_id(value, kind, path)


def _job_kind(labels: Labels) -> JobKind:
    found = _lookup(labels, _everywhere("dli_job_kind"))
    if found is None:
        return "sql"
    path, value = found
    for kind in JOB_KINDS:
        if value == kind:
            return kind
    raise InvalidEvent(path, f"{path} must be 'sql', 'spark' or 'flink', got {c.show(value)}")


def _project(labels: Labels) -> str | None:
    keys = {_METRIC: ("dli_project_id", "project_id"), _RESOURCE: ("dli_project_id",)}
    found = _lookup(labels, {**keys, _POLICY: ("dli_project_id",)})
    return c.project_id(found[1], found[0]) if found else None


def _event_type(incident: Incident, delivery: Delivery) -> EventType:
    return c.resolve_event_type(
        delivery.topic,
        (incident.policy_user_labels or {}).get("event_type"),
        delivery.attributes.get("event_type"),
        declared_field=f"{_POLICY}.event_type",
        default="job-timeout",
    )


def _policy_reason(incident: Incident) -> str | None:
    return f"incident of policy {incident.policy_name}" if incident.policy_name else None


def _context(incident: Incident, labels: Labels) -> dict[str, Any]:
    queue = _lookup(labels, _everywhere("dli_queue_name"))
    return {
        "incident_id": c.clip(incident.incident_id),
        "policy_name": c.clip(incident.policy_name),
        "url": c.clip(incident.url, 500),
        "dli_queue_name": c.clip(queue[1]) if queue else None,
    }
