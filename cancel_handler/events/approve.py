"""Approvals (SPEC section 8): ``{"event_type": "budget-exceeded", "approve": "<token>"}``.

The event only carries the token; what it approves, and whether it may, is decided when the
token is verified (``cancel_handler.plan.approval_plan``), not here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cancel_handler.envelopes import Delivery
from cancel_handler.events import common as c
from cancel_handler.events.common import EventRules, InvalidEvent

FIELD = "approve"
# The token names the project and the jobs: an approval that also names some is ambiguous.
_NOT_BESIDE = ("job_id", "job_ids", "queue_names", "project_id", "job_kind", "sweep")


@dataclass(frozen=True)
class ApprovalEvent:
    token: str
    dry_run: bool = False


_WHAT = "an approval"  # in error messages


def is_approval(payload: dict[str, Any]) -> bool:
    return FIELD in payload


def parse(payload: dict[str, Any], delivery: Delivery, rules: EventRules) -> ApprovalEvent:
    c.require_budget_event(payload, delivery, _WHAT)
    token = payload[FIELD]
    if not isinstance(token, str) or not token:
        raise InvalidEvent(
            FIELD,
            f"{FIELD} must be the approval_token of a proposal (a non-empty string), "
            f"got {c.show(token)}",
        )
    for name in _NOT_BESIDE:
        if name in payload:
            raise InvalidEvent(
                name, f"{name} is not allowed beside {FIELD}: the token names the jobs it approves"
            )
    dry_run = payload.get("dry_run")
    if dry_run is not None and not isinstance(dry_run, bool):
        raise InvalidEvent("dry_run", f"dry_run must be true or false, got {c.show(dry_run)}")
    return ApprovalEvent(token, bool(dry_run))


def salvage(payload: dict[str, Any], delivery: Delivery, rules: EventRules) -> c.Partial:
    return c.Partial(event_type=c.attempt(lambda: c.require_budget_event(payload, delivery, _WHAT)))
