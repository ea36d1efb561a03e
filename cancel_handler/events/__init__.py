"""Event models: the payload of a ``Delivery`` -> one ``CancelEvent``, ``ApprovalEvent``,
``Ignored``, or ``InvalidEvent``.

Five payload formats, detected from the data: an approval (``approve``), a Cloud Monitoring
incident (``version`` and ``incident``), a Cloud Billing budget notification (``costAmount``
and ``budgetAmount``, or the ``schemaVersion`` and ``budgetId`` attributes), the watchdog's
sweep (``"sweep": true``), else our own event schema.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cancel_handler.envelopes import Delivery
from cancel_handler.events import approve, budget, incident, ours, sweep
from cancel_handler.events.approve import ApprovalEvent
from cancel_handler.events.common import (
    EVENT_TYPES,
    CancelEvent,
    EventRules,
    EventType,
    Ignored,
    InvalidEvent,
    Partial,
    SourceFormat,
    json_object,
)
from cancel_handler.jsonbody import read_object

__all__ = [
    "ApprovalEvent",
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

Parsed = CancelEvent | ApprovalEvent | Ignored
_Parse = Callable[[dict[str, Any], Delivery, EventRules], Parsed]
_Salvage = Callable[[dict[str, Any], Delivery, EventRules], Partial]
_FORMATS: dict[SourceFormat, tuple[_Parse, _Salvage]] = {
    "approval": (approve.parse, approve.salvage),
    "incident": (incident.parse, incident.salvage),
    "budget_notification": (budget.parse, budget.salvage),
    "sweep": (sweep.parse, sweep.salvage),
    "event": (ours.parse, ours.salvage),
}


def prepare() -> None:
    """Build the validator of our own event schema now (the models are built on first use,
    so a cold start pays only for the formats it meets)."""
    ours.OurEvent.validator()
    sweep.SweepEvent.validator()


def parse_event(delivery: Delivery, rules: EventRules) -> Parsed:
    """Raises ``InvalidEvent`` naming the offending field."""
    try:
        payload = json_object(delivery.read or read_object(delivery.data))
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
    if approve.is_approval(payload):
        return "approval"
    if incident.is_incident(payload):
        return "incident"
    if budget.is_budget_notification(payload, attributes):
        return "budget_notification"
    if sweep.is_sweep(payload):
        return "sweep"
    return "event"


def _declared_event_type(delivery: Delivery) -> EventType | None:
    """The topic's event type, else a known attribute value: best effort for error results."""
    if delivery.topic in EVENT_TYPES:
        return next(t for t in EVENT_TYPES if t == delivery.topic)
    attribute = delivery.attributes.get("event_type")
    return next((t for t in EVENT_TYPES if t == attribute), None)
