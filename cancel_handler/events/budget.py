"""Cloud Billing budget notifications (SPEC 2.3): act at the threshold, on configured targets.

Google sends these several times a day whatever the spend, so a notification below
``BUDGET_THRESHOLD`` (and one whose budget has no entry in ``BUDGET_TARGETS``) is ``Ignored``:
nothing is cancelled and nothing is published. ``forecastThresholdExceeded`` alone never acts,
and neither does a budget whose ``budgetAmount`` is 0 or negative (a "last period's spend"
budget after a month without spend is 0: any cost would pass its threshold).
"""

from __future__ import annotations

from typing import Any, ClassVar

from cancel_handler.config import BudgetTarget
from cancel_handler.envelopes import Delivery
from cancel_handler.events import common as c
from cancel_handler.events.common import CancelEvent, EventRules, Ignored, InvalidEvent

SCHEMA_VERSION = "1.0"

_WHAT = "a Cloud Billing budget notification"  # in error messages


class BudgetNotification(c.Model):
    budget_display_name: str | None
    cost_amount: float
    budget_amount: float
    alert_threshold_exceeded: float | None
    forecast_threshold_exceeded: float | None
    cost_interval_start: str | None
    budget_amount_type: str | None
    currency_code: str | None

    # Cloud Billing writes camelCase: the payload's names are the aliases
    FIELDS: ClassVar[dict[str, c.Schema]] = {
        "budget_display_name": c.optional(c.STR, "budgetDisplayName"),
        "cost_amount": c.required(c.FINITE_NUMBER, "costAmount"),
        "budget_amount": c.required(c.FINITE_NUMBER, "budgetAmount"),
        "alert_threshold_exceeded": c.optional(c.FINITE_NUMBER, "alertThresholdExceeded"),
        "forecast_threshold_exceeded": c.optional(c.FINITE_NUMBER, "forecastThresholdExceeded"),
        "cost_interval_start": c.optional(c.STR, "costIntervalStart"),
        "budget_amount_type": c.optional(c.STR, "budgetAmountType"),
        "currency_code": c.optional(c.STR, "currencyCode"),
    }


def is_budget_notification(payload: dict[str, Any], attributes: dict[str, str]) -> bool:
    return ("costAmount" in payload and "budgetAmount" in payload) or (
        "schemaVersion" in attributes and "budgetId" in attributes
    )


def parse(payload: dict[str, Any], delivery: Delivery, rules: EventRules) -> CancelEvent | Ignored:
    c.require_budget_event(payload, delivery, _WHAT)
    _check_schema_version(delivery.attributes)
    note = c.validate_model(BudgetNotification, payload)
    budget_id = delivery.attributes.get("budgetId")
    name = c.show(note.budget_display_name or budget_id or "unnamed")
    if note.budget_amount <= 0:
        return Ignored(
            f"budget {name} has budgetAmount {_number(note.budget_amount)}: a budget that is "
            "not positive is never acted on"
        )
    verdict = _threshold_reason(note, rules.budget_threshold)
    if verdict is None:
        return Ignored(_below_threshold(note, name, rules.budget_threshold))
    found = _target(budget_id, rules)
    if found is None:
        return Ignored(
            f"budget {name} (budgetId {c.show(budget_id)}) has no target in BUDGET_TARGETS"
        )
    key, target = found
    where = f"BUDGET_TARGETS[{c.show(key)}]"
    return CancelEvent(
        event_type="budget-exceeded",
        project_id=c.project_id(target.project_id, f"{where}.project_id"),
        job_kind="sql",
        job_ids=c.job_ids(
            list(target.job_ids), "sql", f"{where}.job_ids", rules.max_jobs_per_event
        ),
        queue_names=c.queue_names(list(target.queue_names), f"{where}.queue_names"),
        dry_run=False,
        reason=f"budget {name} {verdict}",
        context=_context(note, budget_id),
        source_format="budget_notification",
    )


def salvage(payload: dict[str, Any], delivery: Delivery, rules: EventRules) -> c.Partial:
    return c.Partial(event_type=c.attempt(lambda: c.require_budget_event(payload, delivery, _WHAT)))


def _check_schema_version(attributes: dict[str, str]) -> None:
    version = attributes.get("schemaVersion")
    if version is not None and version != SCHEMA_VERSION:
        raise InvalidEvent(
            "attributes.schemaVersion",
            f"attributes.schemaVersion must be {SCHEMA_VERSION!r}, got {c.show(version)}",
        )


def _threshold_reason(note: BudgetNotification, threshold: float) -> str | None:
    if note.cost_amount >= note.budget_amount * threshold:
        return f"cost {_number(note.cost_amount)} >= {_number(note.budget_amount)} x {threshold!r}"
    alert = note.alert_threshold_exceeded
    if alert is not None and alert >= threshold:
        return f"alertThresholdExceeded {alert!r} >= {threshold!r}"
    return None


def _below_threshold(note: BudgetNotification, name: str, threshold: float) -> str:
    share = note.cost_amount / note.budget_amount
    return f"budget {name} at {share:.0%} of its amount, below threshold {threshold!r}"


def _target(budget_id: str | None, rules: EventRules) -> tuple[str, BudgetTarget] | None:
    for key in (budget_id, "*"):
        if key is not None and key in rules.budget_targets:
            return key, rules.budget_targets[key]
    return None


def _context(note: BudgetNotification, budget_id: str | None) -> dict[str, Any]:
    return {
        "budget_id": c.clip(budget_id),
        "budgetDisplayName": c.clip(note.budget_display_name),
        "costAmount": note.cost_amount,
        "budgetAmount": note.budget_amount,
        "currencyCode": c.clip(note.currency_code),
        "alertThresholdExceeded": note.alert_threshold_exceeded,
        "costIntervalStart": c.clip(note.cost_interval_start),
    }


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
