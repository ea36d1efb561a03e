"""Event models: the payload of a ``Delivery`` -> one ``CancelEvent``, ``Ignored``, or
``InvalidEvent``.

Three payload formats, detected from the data: a Cloud Monitoring incident (``version`` and
``incident``), a Cloud Billing budget notification (``costAmount`` and ``budgetAmount``, or the
``schemaVersion`` and ``budgetId`` attributes), else our own event schema.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cancel_handler.envelopes import Delivery
from cancel_handler.events import budget, incident, ours
from cancel_handler.events.common import (
    EVENT_TYPES,
    CancelEvent,
    EventRules,
    EventType,
    Ignored,
    InvalidEvent,
    Partial,
    SourceFormat,
    load_json_object,
)

__all__ = [
    "CancelEvent",
    "EventRules",
    "EventType",
    "Ignored",
    "InvalidEvent",
    "SourceFormat",
    "detect_format",
    "parse_event",
    "prepare",
]

_Parse = Callable[[dict[str, Any], Delivery, EventRules], CancelEvent | Ignored]
_Salvage = Callable[[dict[str, Any], Delivery, EventRules], Partial]
_FORMATS: dict[SourceFormat, tuple[_Parse, _Salvage]] = {
    "incident": (incident.parse, incident.salvage),
    "budget_notification": (budget.parse, budget.salvage),
    "event": (ours.parse, ours.salvage),
}


def prepare() -> None:
    """Build the validator of our own event schema now (the models are built on first use,
    so a cold start pays only for the formats it meets)."""
    ours.OurEvent.model_rebuild(force=True)


def parse_event(delivery: Delivery, rules: EventRules) -> CancelEvent | Ignored:
    """Raises ``InvalidEvent`` naming the offending field."""
    try:
        payload = load_json_object(delivery.data)
    except InvalidEvent as error:
        error.fill(Partial(event_type=_declared_event_type(delivery)))
        raise
    parse, salvage = _FORMATS[detect_format(payload, delivery.attributes)]
    try:
        return parse(payload, delivery, rules)
    except InvalidEvent as error:
        error.fill(salvage(payload, delivery, rules))
        error.fill(Partial(event_type=_declared_event_type(delivery)))
        raise


def detect_format(payload: dict[str, Any], attributes: dict[str, str]) -> SourceFormat:
    if incident.is_incident(payload):
        return "incident"
    if budget.is_budget_notification(payload, attributes):
        return "budget_notification"
    return "event"


def _declared_event_type(delivery: Delivery) -> EventType | None:
    """The topic's event type, else a known attribute value: best effort for error results."""
    if delivery.topic in EVENT_TYPES:
        return next(t for t in EVENT_TYPES if t == delivery.topic)
    attribute = delivery.attributes.get("event_type")
    return next((t for t in EVENT_TYPES if t == attribute), None)
