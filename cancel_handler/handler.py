"""One delivery, start to finish: parse -> plan -> propose | fan out | cancel -> publish ->
return or raise.

With BUDGET_ACTION=propose a budget event's plan is signed and published as
``awaiting_approval`` instead of cancelled; an approval cancels exactly its token's jobs
(SPEC section 8, docs/approval.md).

This module owns one decision: acknowledge or retry. ``process`` returns when every job of the
event has a published result, and raises ``RetryLater`` when the event must be delivered again:
- DLI unavailable (``DliUnavailable``) while the event is young (younger than
  MAX_EVENT_AGE_S); an old event publishes ``failed`` instead. Unreadable credentials are a
  configuration fault: retried whatever the event's age. A young sweep that could list only
  some of its queues first cancels what it found on those, then raises;
- a result (or a fan-out share) that could not be published;
- approval keys that cannot be read (a configuration fault).
Bad events are acknowledged with an ``invalid_event`` result; ignored events publish nothing.

All DLI calls of one event (listing, state reads, cancels, their retries) share one deadline,
``DLI_EVENT_BUDGET_S`` after the event arrived: no attempt starts and no backoff sleeps past it,
so an event ends (acknowledged, or raised for redelivery) within the function's timeout.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NoReturn

from cancel_handler import approvals, logs
from cancel_handler.approval_page import approval_link
from cancel_handler.approvals import KeyRing
from cancel_handler.dli.concurrency import each
from cancel_handler.dli.errors import CredentialsUnavailable, DliUnavailable, Misconfigured
from cancel_handler.dli.types import CallOutcome, JobRef, Jobs
from cancel_handler.envelopes import Delivery, EnvelopeError
from cancel_handler.errors import RetryLater
from cancel_handler.events import ApprovalEvent, CancelEvent, Ignored, InvalidEvent, parse_event
from cancel_handler.outcomes import EventResults, Outcome, invalid_event
from cancel_handler.plan import Plan, approval_plan, build_plan, proposal_of
from cancel_handler.results import Batches, Message, PublishError, ResultEvent, publish
from cancel_handler.runtime import Runtime

__all__ = ["Report", "process", "reject_envelope"]


@dataclass
class Report:
    results: list[ResultEvent] = field(default_factory=list)
    ignored: str | None = None
    invalid: bool = False
    fanned_out: int = 0


def process(delivery: Delivery, rt: Runtime) -> Report:
    """Handle one delivery; raises ``RetryLater`` when it must come again."""
    deadline = time.monotonic() + rt.settings.event_budget_s
    try:
        parsed = parse_event(delivery, rt.rules)
    except InvalidEvent as invalid:
        return _acknowledge_invalid(rt, delivery, invalid.field, invalid.message, invalid)
    except Exception as error:  # a payload the validators did not foresee: still acknowledged
        logs.error(
            "event could not be read; acknowledged as invalid_event",
            event_id=delivery.event_id,
            error=logs.exception_text(error),
            stack_trace=logs.stack_trace(error),
        )
        message = f"could not be read ({type(error).__name__})"
        return _acknowledge_invalid(rt, delivery, "event", message, None)
    if isinstance(parsed, Ignored):
        logs.info("event ignored", event_id=delivery.event_id, reason=parsed.reason)
        return Report(ignored=parsed.reason)
    if isinstance(parsed, ApprovalEvent):
        return _handle_approval(rt, delivery, parsed, deadline)
    return _handle_event(rt, delivery, parsed, deadline)


def reject_envelope(rt: Runtime, error: EnvelopeError) -> Report:
    """Acknowledge a malformed envelope with an ``invalid_event`` result."""
    event_id = error.event_id or "unknown"
    delivery = Delivery(b"", {}, error.topic, event_id, None, error.transport or "http")
    return _acknowledge_invalid(rt, delivery, error.field, error.message, None)


def _acknowledge_invalid(
    rt: Runtime, delivery: Delivery, field_name: str, message: str, invalid: InvalidEvent | None
) -> Report:
    result = invalid_event(delivery, field_name, message, invalid)
    logs.warning(
        "invalid event", event_id=delivery.event_id, field=field_name, error=result.message
    )
    _publish(rt, [result], delivery)
    return Report(results=[result], invalid=True)


# -- the decision: acknowledge or retry -------------------------------------------------------


def _retries(rt: Runtime, delivery: Delivery, failure: DliUnavailable) -> bool:
    """Whether ``failure`` sends the event back: always when it does not age out (a
    configuration fault), else while the event is younger than MAX_EVENT_AGE_S."""
    return not failure.ages_out or _age_s(delivery) < rt.settings.max_event_age_s


def _age_s(delivery: Delivery) -> float:
    if delivery.published_at is None:
        return 0.0
    return max(0.0, (datetime.now(UTC) - delivery.published_at).total_seconds())


def _handle_event(rt: Runtime, delivery: Delivery, event: CancelEvent, deadline: float) -> Report:
    client = rt.client.bounded(deadline)
    plan = build_plan(event, rt.settings, client)
    _log_sweep(delivery, plan)
    unlisted = plan.unavailable
    if unlisted is not None and not _retries(rt, delivery, unlisted):
        unlisted = None  # an old event: its ``failed`` verdicts are published below
    if unlisted is not None and not plan.targets:
        _retry_unlisted(delivery, unlisted)
    results = EventResults.of_event(
        delivery, event, plan.project_id, plan.queue_of, rt.settings.dry_run, plan.over_limit
    )
    # While the event is to come again, what could not be listed gets no result now.
    verdicts = [
        results.from_verdict(v)
        for v in plan.verdicts
        if unlisted is None or v.outcome is not Outcome.FAILED
    ]
    if rt.progress is not None:
        rt.progress.planned(len(verdicts) + len(plan.targets))
    if rt.settings.budget_action == "propose" and event.event_type == "budget-exceeded":
        return _propose(rt, delivery, event, plan, results, verdicts)
    if unlisted is None and _should_fan_out(rt, event, plan):
        return _fan_out(rt, delivery, event, plan, verdicts)
    report = _cancel(rt, delivery, client, plan, results, verdicts)
    if unlisted is not None:
        # a young sweep cancelled what it found on the queues it could list; it comes again
        # for the others (and the jobs it cancelled are no longer listed then)
        _retry_unlisted(delivery, unlisted)
    return report


# -- approval before cancelling (SPEC section 8) ------------------------------------------------


def _propose(
    rt: Runtime,
    delivery: Delivery,
    event: CancelEvent,
    plan: Plan,
    results: EventResults,
    verdicts: list[ResultEvent],
) -> Report:
    """BUDGET_ACTION=propose: the plan's targets are signed into one token and published as
    ``awaiting_approval``, one result per job; nothing is cancelled."""
    report = list(verdicts)
    if plan.targets:
        ring = _approval_ring(rt, delivery)
        if ring is None:  # load_settings refuses propose without a key file
            _deliver_again(delivery, "no approval keys", RetryLater("APPROVAL_KEY_FILE unset"))
        source_event_id = event.source_event_id or delivery.event_id
        proposal = proposal_of(plan, event, source_event_id, rt.settings, time.time())
        token = approvals.sign(proposal, ring)
        base = rt.settings.approval_base_url
        url = approval_link(base, token) if base else None
        message = (
            f"proposed, not cancelled: approve before {approvals.utc_text(proposal.expires_at)}"
        )
        report += [results.awaiting_approval(job, token, url, message) for job in plan.targets]
        logs.info(
            f"proposed cancelling {len(plan.targets)} jobs; awaiting approval",
            event_id=delivery.event_id,
            jobs=len(plan.targets),
            key_id=ring.signing.key_id.hex(),
            expires_at=approvals.utc_text(proposal.expires_at),
        )
    _publish(rt, report, delivery)
    _log_results(delivery, report)
    return Report(results=report)


def _approval_ring(rt: Runtime, delivery: Delivery) -> KeyRing | None:
    try:
        return rt.approval_ring()
    except RetryLater as error:  # the key file went missing or bad since the start
        _deliver_again(delivery, "approval keys unreadable", error)


def _handle_approval(
    rt: Runtime, delivery: Delivery, event: ApprovalEvent, deadline: float
) -> Report:
    """Cancel exactly the jobs of a verified proposal (no listing, no fan-out); a token that
    approves nothing is one ``invalid_event`` result and no DLI call."""
    plan = approval_plan(event, rt.settings, _approval_ring(rt, delivery), time.time())
    proposal = plan.proposal
    dry_run = event.dry_run or rt.settings.dry_run or bool(proposal and proposal.dry_run)
    results = EventResults.of_approval(delivery, proposal, plan.queue_of, dry_run)
    verdicts = [results.from_verdict(v) for v in plan.verdicts]
    if proposal is None:
        logs.warning(
            "approval refused",
            event_id=delivery.event_id,
            key_id=approvals.token_key_id(event.token),
            error=plan.verdicts[0].message,
        )
        _publish(rt, verdicts, delivery)
        _log_results(delivery, verdicts)
        return Report(results=verdicts, invalid=True)
    logs.info(
        f"approval of {len(proposal.jobs)} jobs",
        event_id=delivery.event_id,
        proposal_event_id=proposal.source_event_id,
        jobs=len(proposal.jobs),
    )
    client = rt.client.bounded(deadline)
    return _cancel(rt, delivery, client, plan, results, verdicts)


def _retry_unlisted(delivery: Delivery, failure: DliUnavailable) -> NoReturn:
    if isinstance(failure, CredentialsUnavailable):
        _deliver_again(delivery, "DLI credentials unavailable", failure)
    log, what = _retry_reason(failure, "DLI unreachable")
    log(
        f"{what} while listing jobs; the event will be delivered again",
        event_id=delivery.event_id,
        error_code=failure.error_code,
        attempts=failure.attempts,
        error=failure.message,
    )
    raise RetryLater(str(failure)) from None


def _cancel(
    rt: Runtime,
    delivery: Delivery,
    client: Jobs,
    plan: Plan,
    results: EventResults,
    verdicts: list[ResultEvent],
) -> Report:
    """Cancel every target; each result is published as soon as it is known (in batches), the
    verdicts first. Jobs DLI was unavailable for are published ``failed`` unless the event is
    to come again, in which case they get no result now."""
    batches = Batches(rt.sink)
    _settle(rt, batches, verdicts)
    decided: dict[JobRef, ResultEvent] = {}

    def on_result(job: JobRef, result: ResultEvent) -> None:
        decided[job] = result
        _settle(rt, batches, [result])

    unavailable = _cancel_all(client, rt.settings.cancel_concurrency, plan, results, on_result)
    report = verdicts + [decided[job] for job in plan.targets if job in decided]
    retry = any(_retries(rt, delivery, failure) for _, failure in unavailable)
    if not retry:
        failed = [results.from_failure(job, failure) for job, failure in unavailable]
        _settle(rt, batches, failed)
        report += failed
    try:
        batches.finish()
    except PublishError as error:
        _deliver_again(delivery, "result publish failed", error)
    _log_results(delivery, report)
    if retry:
        _retry_unavailable(delivery, unavailable)
    return Report(results=report)


def _settle(rt: Runtime, batches: Batches, settled: Sequence[ResultEvent]) -> None:
    batches.add(settled)
    if rt.progress is not None:
        rt.progress.settled(r.outcome for r in settled)


def _cancel_all(
    client: Jobs,
    concurrency: int,
    plan: Plan,
    results: EventResults,
    on_result: Callable[[JobRef, ResultEvent], None],
) -> list[tuple[JobRef, DliUnavailable]]:
    """Each definitive result goes to ``on_result`` (in this thread, as soon as it is known);
    the jobs DLI was unavailable for are returned, in the plan's order."""
    if results.dry_run:
        for job in plan.targets:
            on_result(job, results.dry_run_of(job))
        return []

    def cancel(job: JobRef) -> CallOutcome | DliUnavailable:
        try:
            return client.cancel(job)
        except DliUnavailable as failure:
            return failure

    unavailable: dict[JobRef, DliUnavailable] = {}
    for job, answer in each(plan.targets, cancel, concurrency, "cancel"):
        if isinstance(answer, DliUnavailable):
            unavailable[job] = answer
        else:
            on_result(job, results.from_call(job, answer))
    return [(job, unavailable[job]) for job in plan.targets if job in unavailable]


def _retry_unavailable(
    delivery: Delivery, unavailable: list[tuple[JobRef, DliUnavailable]]
) -> NoReturn:
    missing = [f for _, f in unavailable if isinstance(f, CredentialsUnavailable)]
    if missing:
        _deliver_again(delivery, "DLI credentials unavailable", missing[0])
    misconfigured = [(j, f) for j, f in unavailable if isinstance(f, Misconfigured)]
    first_job, first_fault = (misconfigured or unavailable)[0]
    log, what = _retry_reason(first_fault, "transient DLI fault outlasted the retries")
    log(
        f"{what}; the event will be delivered again",
        event_id=delivery.event_id,
        job_id=first_job.job_id,
        outcome="retry",
        error_code=first_fault.error_code,
        attempts=first_fault.attempts,
        error=first_fault.message,
        jobs_to_retry=len(unavailable),
    )
    if misconfigured:
        raise RetryLater(f"{len(unavailable)} job(s) hit a {first_fault}")
    raise RetryLater(f"{len(unavailable)} job(s) hit transient faults: {first_fault}")


def _retry_reason(failure: DliUnavailable, transient: str) -> tuple[Callable[..., None], str]:
    """How to log a redelivery: a configuration fault (refused credentials, a wrong endpoint)
    needs the operator, so it is an ERROR; a transient fault a WARNING."""
    if isinstance(failure, Misconfigured):
        return logs.error, "configuration fault (credentials refused, or DLI_ENDPOINT wrong)"
    return logs.warning, transient


# -- fan-out ----------------------------------------------------------------------------------


def _should_fan_out(rt: Runtime, event: CancelEvent, plan: Plan) -> bool:
    """Big budget events and sweeps are shared out over FANOUT_TOPIC, so many instances cancel
    them;
    a message that is itself a fan-out share (it names its source event) is never split."""
    return (
        rt.fanout is not None
        and event.source_event_id is None
        and len(plan.targets) > rt.settings.fanout_threshold
    )


def _fan_out(
    rt: Runtime, delivery: Delivery, event: CancelEvent, plan: Plan, verdicts: list[ResultEvent]
) -> Report:
    """One message per job on FANOUT_TOPIC; each comes back as an event of one job (a budget
    event's share, or a sweep's job-timeout with its reason) whose results carry this event's
    type and id. Only the plan's own verdicts are
    published here."""
    assert rt.fanout is not None
    messages = [_fan_out_message(delivery, event, plan, job) for job in plan.targets]
    try:
        publish(rt.fanout, messages)
    except PublishError as error:
        _deliver_again(delivery, "fan-out publish failed", error)
    logs.info(
        f"fanned out {len(messages)} jobs to {rt.settings.fanout_topic}",
        event_id=delivery.event_id,
        event_type=event.event_type,
        jobs=len(messages),
    )
    _publish(rt, verdicts, delivery)
    _log_results(delivery, verdicts)
    return Report(results=verdicts, fanned_out=len(messages))


def _fan_out_message(delivery: Delivery, event: CancelEvent, plan: Plan, job: JobRef) -> Message:
    share: dict[str, Any] = {
        "event_type": event.event_type,
        "project_id": job.project_id,
        "job_kind": job.kind,
        "source_event_id": delivery.event_id,
        "dry_run": event.dry_run,
    }
    why = plan.over_limit.get(job.job_id)
    if why is not None:  # a sweep's share: a job-timeout of one job, with its own reason
        share.update(job_id=job.job_id, reason=why.reason, context=why.context)
    else:
        share["job_ids"] = [job.job_id]
        if event.reason:
            share["reason"] = event.reason
        if isinstance(event.context.get("budget"), dict):
            share["budget"] = event.context["budget"]
    data = json.dumps(share, separators=(",", ":")).encode()
    return Message(data, {"event_type": event.event_type})


# -- publishing and logging -------------------------------------------------------------------


def _publish(rt: Runtime, results: Sequence[ResultEvent], delivery: Delivery) -> None:
    try:
        publish(rt.sink, [r.to_message() for r in results])
    except PublishError as error:
        _deliver_again(delivery, "result publish failed", error)


def _deliver_again(delivery: Delivery, what: str, error: Exception) -> NoReturn:
    """One ERROR line saying why, then ``RetryLater``: the platform delivers the event again."""
    logs.error(
        f"{what}; the event will be delivered again", event_id=delivery.event_id, error=str(error)
    )
    raise RetryLater(str(error)) from None


_LOG_AT = {logging.INFO: logs.info, logging.WARNING: logs.warning}


def _log_results(delivery: Delivery, results: Sequence[ResultEvent]) -> None:
    for result in results:
        outcome = Outcome(result.outcome)
        _LOG_AT[outcome.severity](
            f"{_subject(result)}: {outcome}",
            event_id=delivery.event_id,
            event_type=result.event_type,
            job_id=result.job_id,
            project_id=result.project_id,
            outcome=str(outcome),
            error_code=result.error_code,
            attempts=result.attempts,
        )


def _log_sweep(delivery: Delivery, plan: Plan) -> None:
    """A sweep's warnings (a malformed tag, a runtime that cannot be known), then its one
    ``sweep summary`` line, whatever it found."""
    if plan.sweep is None:
        return
    for note in plan.sweep.notes:
        logs.warning(f"sweep: {note}", event_id=delivery.event_id)
    logs.info(
        "sweep summary",
        event_id=delivery.event_id,
        project_id=plan.project_id,
        queues=list(plan.sweep.queues),
        jobs_seen=plan.sweep.jobs_seen,
        over_limit=plan.sweep.over_limit,
    )


def _subject(result: ResultEvent) -> str:
    if result.job_id:
        return f"job {result.job_id}"
    if result.queue_name:
        return f"queue {result.queue_name}"
    return "event"
