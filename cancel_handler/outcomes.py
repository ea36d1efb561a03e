"""The outcome vocabulary, and the one place a ``ResultEvent`` is built.

``Outcome`` lists every outcome of SPEC section 3 with what the rest of the code needs to know
about it: ``good`` (the event's purpose is met for that job: cancelled, already over, nothing
to do, a dry run) and ``severity`` (of the log line that reports it).

A result comes from one of six things, each with its constructor here:
- a ``Verdict`` of the plan (decided without a cancel call: ``not_allowed``, ``nothing_to_cancel``,
  ``already_finished``, a refused or failed listing) -> ``EventResults.from_verdict``;
- a ``CallOutcome`` of the DLI client -> ``EventResults.from_call``;
- a job whose cancel was skipped (dry run) -> ``EventResults.dry_run_of``;
- a ``DliUnavailable`` that an old event gives up on -> ``EventResults.from_failure``;
- a job proposed for approval (``BUDGET_ACTION=propose``) -> ``EventResults.awaiting_approval``;
- an event that could not be read -> ``invalid_event``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from cancel_handler.approvals import Proposal
from cancel_handler.dli.errors import DliUnavailable
from cancel_handler.dli.types import CallOutcome, JobKind, JobRef
from cancel_handler.envelopes import Delivery
from cancel_handler.events import CancelEvent, InvalidEvent
from cancel_handler.limits import OverLimit
from cancel_handler.results import ResultEvent

DRY_RUN_MESSAGE = "dry run: the cancel API was not called"
APPROVED = "approved"  # the reason of every result of an approval (SPEC section 8)


class Outcome(StrEnum):
    good: bool
    severity: int

    # The defaults only let type checkers accept ``Outcome("failed")``, a lookup by value
    # (which does not call ``__new__``); every member below gives both.
    def __new__(cls, value: str, good: bool = False, severity: int = logging.WARNING) -> Outcome:
        member = str.__new__(cls, value)
        member._value_ = value
        member.good = good
        member.severity = severity
        return member

    CANCELLED = "cancelled", True, logging.INFO
    ALREADY_FINISHED = "already_finished", True, logging.INFO
    NOT_FOUND = "not_found", False, logging.WARNING
    REJECTED = "rejected", False, logging.WARNING
    FAILED = "failed", False, logging.WARNING
    DRY_RUN = "dry_run", True, logging.INFO
    NOT_ALLOWED = "not_allowed", False, logging.WARNING
    INVALID_EVENT = "invalid_event", False, logging.WARNING
    NOTHING_TO_CANCEL = "nothing_to_cancel", True, logging.INFO
    # BUDGET_ACTION=propose: the job is in a signed plan that waits for a person's approval
    AWAITING_APPROVAL = "awaiting_approval", True, logging.INFO


@dataclass(frozen=True)
class Verdict:
    """A result the plan decided without calling the cancel API."""

    outcome: Outcome
    error_code: str | None
    message: str
    job_id: str = ""
    queue_name: str | None = None
    job_kind: JobKind = "sql"
    http_status: int | None = None  # of DLI's (or IAM's) last reply, when one decided it


@dataclass(frozen=True)
class _Shared:
    """What every result of one event has in common."""

    event_type: str | None
    source_event_id: str
    project_id: str | None
    dry_run: bool = False
    reason: str | None = None
    context: dict[str, Any] = field(default_factory=dict)


def _result(
    shared: _Shared,
    job_id: str,
    job_kind: str,
    outcome: Outcome,
    *,
    is_success: bool = False,
    error_code: str | None = None,
    message: str = "",
    http_status: int | None = None,
    request_id: str | None = None,
    attempts: int = 0,
    queue_name: str | None = None,
    why: OverLimit | None = None,
) -> ResultEvent:
    """``why``: a sweep's reason to cancel this job, which replaces the event's own."""
    return ResultEvent(
        event_type=shared.event_type,
        source_event_id=shared.source_event_id,
        project_id=shared.project_id,
        job_id=job_id,
        job_kind=job_kind,
        outcome=outcome,
        is_success=is_success,
        error_code=error_code,
        message=message,
        http_status=http_status,
        dli_request_id=request_id,
        attempts=attempts,
        dry_run=shared.dry_run,
        reason=why.reason if why else shared.reason,
        queue_name=queue_name,
        context=why.context if why else shared.context,
    )


class EventResults:
    """The results of one parsed event. A fan-out share reports under the id of the event it
    came from; ``queue_of`` names the queue each listed job was found on; ``over_limit`` why a
    sweep cancels a job (its results carry that reason and context: SPEC 7)."""

    def __init__(
        self,
        shared: _Shared,
        queue_of: Mapping[str, str],
        over_limit: Mapping[str, OverLimit] | None = None,
    ) -> None:
        self.dry_run = shared.dry_run
        self._queue_of = queue_of
        self._over_limit = over_limit or {}
        self._shared = shared

    @classmethod
    def of_event(
        cls,
        delivery: Delivery,
        event: CancelEvent,
        project_id: str | None,
        queue_of: Mapping[str, str],
        dry_run_default: bool,
        over_limit: Mapping[str, OverLimit] | None = None,
    ) -> EventResults:
        shared = _Shared(
            event_type=event.event_type,
            source_event_id=event.source_event_id or delivery.event_id,
            project_id=project_id,
            dry_run=event.dry_run or dry_run_default,
            reason=event.reason,
            context=event.context,
        )
        return cls(shared, queue_of, over_limit)

    @classmethod
    def of_approval(
        cls,
        delivery: Delivery,
        proposal: Proposal | None,
        queue_of: Mapping[str, str],
        dry_run: bool,
    ) -> EventResults:
        """The results of an approval: under the approval's own id, with reason "approved"
        and the proposal's event id in the context (without a valid ``proposal``: neither)."""
        shared = _Shared(
            event_type="budget-exceeded",
            source_event_id=delivery.event_id,
            project_id=proposal.project_id if proposal else None,
            dry_run=dry_run,
            reason=APPROVED if proposal else None,
            context={"proposal_event_id": proposal.source_event_id} if proposal else {},
        )
        return cls(shared, queue_of)

    def from_verdict(self, verdict: Verdict) -> ResultEvent:
        return _result(
            self._shared,
            verdict.job_id,
            verdict.job_kind,
            verdict.outcome,
            error_code=verdict.error_code,
            message=verdict.message,
            http_status=verdict.http_status,
            queue_name=verdict.queue_name,
        )

    def from_call(self, job: JobRef, call: CallOutcome) -> ResultEvent:
        return _result(
            self._shared,
            job.job_id,
            job.kind,
            Outcome(call.outcome),
            is_success=call.is_success,
            error_code=call.error_code,
            message=call.message,
            http_status=call.http_status,
            request_id=call.request_id,
            attempts=call.attempts,
            queue_name=self._queue_of.get(job.job_id),
            why=self._over_limit.get(job.job_id),
        )

    def awaiting_approval(
        self, job: JobRef, token: str, url: str | None, message: str
    ) -> ResultEvent:
        """A job of a proposal: not cancelled, in the signed plan ``token``."""
        result = _result(
            self._shared,
            job.job_id,
            job.kind,
            Outcome.AWAITING_APPROVAL,
            message=message,
            queue_name=self._queue_of.get(job.job_id),
        )
        return replace(result, approval_token=token, approval_url=url)

    def dry_run_of(self, job: JobRef) -> ResultEvent:
        return _result(
            self._shared,
            job.job_id,
            job.kind,
            Outcome.DRY_RUN,
            message=DRY_RUN_MESSAGE,
            queue_name=self._queue_of.get(job.job_id),
            why=self._over_limit.get(job.job_id),
        )

    def from_failure(self, job: JobRef, failure: DliUnavailable) -> ResultEvent:
        return _result(
            self._shared,
            job.job_id,
            job.kind,
            Outcome.FAILED,
            error_code=failure.error_code,
            message=failure.message,
            http_status=failure.http_status,
            request_id=failure.request_id,
            attempts=failure.attempts,
            queue_name=self._queue_of.get(job.job_id),
            why=self._over_limit.get(job.job_id),
        )


def invalid_event(
    delivery: Delivery, field_name: str, message: str, invalid: InvalidEvent | None = None
) -> ResultEvent:
    """The one result of an event that could not be read: it names the offending field and
    carries whatever did validate (event type, project, a single job id)."""
    job_ids: tuple[str, ...] = invalid.job_ids if invalid else ()
    shared = _Shared(
        event_type=(invalid.event_type if invalid else None) or delivery.topic,
        source_event_id=delivery.event_id,
        project_id=invalid.project_id if invalid else None,
    )
    text = message if message.startswith(field_name) else f"{field_name}: {message}"
    job_id = job_ids[0] if len(job_ids) == 1 else ""
    return _result(
        shared, job_id, "sql", Outcome.INVALID_EVENT, error_code="INVALID_EVENT", message=text
    )
