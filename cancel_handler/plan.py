"""An event -> the jobs to cancel: the project allow-list, explicit ids, queue listings.

The plan owns every outcome decided before a cancel call, as ``Verdict``s: ``not_allowed``,
``nothing_to_cancel``, ``invalid_event`` (no project, too many jobs), ``already_finished`` for a
budget notification's job that is already over, ``rejected`` for a queue DLI refuses to list
(the rest of the event goes ahead).

When DLI cannot be used for the listing (``DliUnavailable``: transient faults outlasted the
retries, a configuration fault such as refused credentials or a wrong endpoint, credentials
unreadable) the plan says so in ``unavailable``, with nothing to cancel and a ``failed`` verdict
for every queue and job the event names. Whether those verdicts are published (an old event)
or the event comes again (a young one, or missing credentials) is the handler's decision, not
the plan's.

A sweep (SPEC 7) names no job: the plan lists the active jobs of every queue and kind with a
runtime limit (``RUNTIME_LIMITS``), at most ``CANCEL_CONCURRENCY`` listings at a time, and
targets the jobs past their limit (``limits.over_limit`` decides which). A queue DLI refuses to
list gets a ``rejected`` verdict; when some queues cannot be listed for now, ``unavailable``
says so while the jobs found on the others are still targets, so that a young sweep cancels
what it could before it comes again.

Cloud Billing sends the same budget notification several times a day. Its queue targets are
idempotent by nature (a cancelled job is no longer listed as active), but its explicit
``job_ids`` would be cancelled again on every notification; so the plan reads their state first
and cancels only the jobs that are still active.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from cancel_handler import approvals
from cancel_handler.approvals import (
    ApprovalRefused,
    BudgetFigures,
    KeyRing,
    Proposal,
    ProposedJob,
)
from cancel_handler.config import Settings
from cancel_handler.dli.concurrency import each
from cancel_handler.dli.errors import DliUnavailable, Misconfigured, Refused, TransientFailure
from cancel_handler.dli.types import JOB_KINDS, JobKind, JobRef, Jobs, is_terminal
from cancel_handler.events import ApprovalEvent, CancelEvent
from cancel_handler.limits import ANY_QUEUE, ListedJob, OverLimit, RuntimeLimits, over_limit
from cancel_handler.outcomes import Outcome, Verdict


@dataclass(frozen=True)
class SweepSummary:
    """What a sweep looked at, for its one ``sweep summary`` log line. ``queues``: the queues
    listed (``"*"``: every queue the policy does not name); ``notes``: warnings to log."""

    queues: tuple[str, ...]
    jobs_seen: int
    over_limit: int
    notes: tuple[str, ...] = ()


@dataclass
class Plan:
    project_id: str | None
    targets: list[JobRef] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    queue_of: dict[str, str] = field(default_factory=dict)  # job id -> queue it was listed on
    # DLI could not be used to make the plan: ``failed`` verdicts for what it could not list,
    # and no targets (a sweep keeps the targets found on the queues it could list)
    unavailable: DliUnavailable | None = None
    over_limit: dict[str, OverLimit] = field(default_factory=dict)  # sweep: job id -> why
    sweep: SweepSummary | None = None
    proposal: Proposal | None = None  # an approval's verified proposal


def resolve_project(event: CancelEvent, settings: Settings) -> str | None:
    return event.project_id or settings.default_project_id


def build_plan(
    event: CancelEvent, settings: Settings, client: Jobs, now_ms: float | None = None
) -> Plan:
    """The plan of ``event``; never raises for what DLI answers. ``now_ms``: the time a
    sweep measures runtimes against (default: now)."""
    project = resolve_project(event, settings)
    if project is None:
        message = "project_id: no project given and no DLI_PROJECT_ID configured"
        return Plan(
            None, verdicts=[_for_all(event, Outcome.INVALID_EVENT, "INVALID_EVENT", message)]
        )
    if project not in settings.allowed_project_ids:
        message = f"project_id {project} is not in DLI_ALLOWED_PROJECT_IDS"
        if event.is_sweep:  # refused as a whole: one result
            verdict = _for_all(event, Outcome.NOT_ALLOWED, "PROJECT_NOT_ALLOWED", message)
            return Plan(project, verdicts=[verdict])
        return Plan(
            project, verdicts=_per_job(event, Outcome.NOT_ALLOWED, "PROJECT_NOT_ALLOWED", message)
        )
    plan = Plan(project_id=project)
    if event.is_sweep:
        _add_sweep_targets(plan, event, settings, client, now_ms)
        return plan
    try:
        _add_targets(plan, event, settings, client)
    except DliUnavailable as failure:
        return _unavailable(event, project, failure)
    return plan


def _add_targets(plan: Plan, event: CancelEvent, settings: Settings, client: Jobs) -> None:
    assert plan.project_id is not None
    project = plan.project_id
    plan.targets = [JobRef(project, job_id, event.job_kind) for job_id in event.job_ids]
    known = {t.job_id for t in plan.targets}
    for queue in event.queue_names:
        if len(plan.targets) > settings.max_jobs_per_event:
            break  # refused below; listing more queues would change nothing
        try:
            active = client.list_active_sql_jobs(project, queue)
        except Refused as refused:
            # this queue cannot be listed (permissions, parameters): the other queues and
            # the explicit jobs are still cancelled
            plan.verdicts.append(_listing_refused(queue, refused))
            continue
        listed = [j for j in active if j not in known]
        if not listed and not event.job_ids:
            message = f"queue {queue} has no active job"
            plan.verdicts.append(
                Verdict(Outcome.NOTHING_TO_CANCEL, None, message, queue_name=queue)
            )
        for job_id in listed:
            known.add(job_id)
            plan.queue_of[job_id] = queue
            plan.targets.append(JobRef(project, job_id, "sql"))
    if len(plan.targets) > settings.max_jobs_per_event:
        message = (
            f"queue_names: the event names {len(plan.targets)} jobs, more than "
            f"MAX_JOBS_PER_EVENT={settings.max_jobs_per_event}"
        )
        plan.targets = []
        plan.verdicts = [Verdict(Outcome.INVALID_EVENT, "INVALID_EVENT", message)]
        return
    if event.source_format == "budget_notification" and event.job_ids:
        _skip_finished(plan, client, settings.cancel_concurrency)


# -- the sweep --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Listing:
    """One listing of a sweep: the active jobs of ``kind`` on ``queue`` (``None``: every queue
    the policy does not name, for its ``"*"`` rule)."""

    queue: str | None
    kind: JobKind

    @property
    def subject(self) -> str:
        where = f"queue {self.queue}" if self.queue else "every queue the policy does not name"
        return f"{self.kind} jobs on {where}"


def _add_sweep_targets(
    plan: Plan, event: CancelEvent, settings: Settings, client: Jobs, now_ms: float | None
) -> None:
    assert plan.project_id is not None
    project, limits = plan.project_id, settings.runtime_limits
    listings, notes = _sweep_listings(event, limits)
    jobs = _list_all(plan, project, listings, limits, client, settings.cancel_concurrency)
    decision = over_limit(jobs, limits, time.time() * 1000 if now_ms is None else now_ms)
    chosen = list(decision.over_limit)
    if len(chosen) > settings.max_jobs_per_event:
        notes.append(
            f"{len(chosen)} jobs are over their limit, more than MAX_JOBS_PER_EVENT="
            f"{settings.max_jobs_per_event}: the longest-running are cancelled now, the others "
            "by the next sweep"
        )
        chosen = _longest(chosen, settings.max_jobs_per_event)
    for over in chosen:
        plan.targets.append(JobRef(project, over.job.job_id, _kind(over.job.kind)))
        plan.queue_of[over.job.job_id] = over.job.queue_name
        plan.over_limit[over.job.job_id] = over
    plan.sweep = SweepSummary(
        queues=tuple(dict.fromkeys(listing.queue or ANY_QUEUE for listing in listings)),
        jobs_seen=decision.jobs_seen,
        over_limit=len(decision.over_limit),
        notes=tuple(notes) + decision.notes,
    )


def _list_all(
    plan: Plan,
    project: str,
    listings: list[_Listing],
    limits: RuntimeLimits,
    client: Jobs,
    concurrency: int,
) -> list[ListedJob]:
    """Every job the listings find (the ``"*"`` listings without the queues the policy names);
    a refused listing becomes a ``rejected`` verdict, one DLI is unavailable for a ``failed``
    verdict and ``plan.unavailable``."""

    def list_jobs(listing: _Listing) -> list[ListedJob] | Refused | DliUnavailable:
        try:
            return client.list_active(project, listing.kind, listing.queue)
        except (Refused, DliUnavailable) as failure:
            return failure

    answers = dict(each(listings, list_jobs, concurrency, "list"))
    jobs: list[ListedJob] = []
    for listing in listings:  # in the plan's order, whatever order the listings finished in
        answer = answers[listing]
        if isinstance(answer, Refused | DliUnavailable):
            if isinstance(answer, DliUnavailable):
                plan.unavailable = plan.unavailable or answer
            outcome = Outcome.REJECTED if isinstance(answer, Refused) else Outcome.FAILED
            message = f"listing {listing.subject}: {answer.message}"
            code, status = answer.error_code, answer.http_status
            plan.verdicts.append(
                Verdict(outcome, code, message, "", listing.queue, listing.kind, status)
            )
        elif listing.queue is not None:
            jobs += answer
        else:
            jobs += [j for j in answer if j.queue_name.lower() not in limits.named_queues]
    return jobs


def _longest(over: list[OverLimit], count: int) -> list[OverLimit]:
    """The ``count`` longest-running of ``over``, in their listed order."""
    ranked = sorted(range(len(over)), key=lambda i: over[i].runtime_s, reverse=True)
    kept = set(ranked[:count])
    return [o for i, o in enumerate(over) if i in kept]


def _sweep_listings(event: CancelEvent, limits: RuntimeLimits) -> tuple[list[_Listing], list[str]]:
    """The listings a sweep needs: each kind with a limit on each queue the event names, or on
    each queue the policy names, plus one per kind of the ``"*"`` rule over every queue."""
    notes: list[str] = []
    if event.queue_names:
        listings = [_Listing(q, _kind(k)) for q in event.queue_names for k in limits.kinds_for(q)]
        notes += [
            f"queue {q} has no runtime limit in RUNTIME_LIMITS: not swept"
            for q in event.queue_names
            if not limits.kinds_for(q)
        ]
        return listings, notes
    listings = [_Listing(q, _kind(k)) for q in limits.limited_queues for k in limits.kinds_for(q)]
    listings += [_Listing(None, k) for k in JOB_KINDS if k in limits.default]
    if not listings:
        notes.append("RUNTIME_LIMITS sets no limit: nothing to sweep")
    return listings, notes


def _kind(kind: str) -> JobKind:
    return next(k for k in JOB_KINDS if k == kind)


# -- approval before cancelling (SPEC section 8) ------------------------------------------------


def proposal_of(
    plan: Plan, event: CancelEvent, source_event_id: str, settings: Settings, now: float
) -> Proposal:
    """The plan's targets as a proposal: what a person approves instead of the cancels. A
    proposal made in dry run stays one when approved."""
    assert plan.project_id is not None and plan.targets
    jobs = [ProposedJob(t.job_id, t.kind, plan.queue_of.get(t.job_id)) for t in plan.targets]
    return approvals.new_proposal(
        plan.project_id,
        jobs,
        source_event_id,
        now=now,
        ttl_s=settings.approval_ttl_s,
        budget=_budget_figures(event.context),
        dry_run=event.dry_run or settings.dry_run,
    )


def approval_plan(
    event: ApprovalEvent, settings: Settings, ring: KeyRing | None, now: float
) -> Plan:
    """Exactly the jobs of a verified proposal, without listing anything. A token that
    approves nothing (changed, expired, unknown key, unreadable) is one ``invalid_event``
    verdict saying which; a project no longer allowed, ``not_allowed`` for each job."""
    if ring is None:
        message = "approve: approvals are not enabled here (no APPROVAL_KEY_FILE is configured)"
        return Plan(None, verdicts=[Verdict(Outcome.INVALID_EVENT, "INVALID_EVENT", message)])
    try:
        proposal = approvals.verify(event.token, ring, now)
    except ApprovalRefused as refused:
        verdict = Verdict(Outcome.INVALID_EVENT, "INVALID_EVENT", refused.message)
        return Plan(None, verdicts=[verdict])
    project = proposal.project_id
    plan = Plan(project, proposal=proposal)
    if project not in settings.allowed_project_ids:
        message = f"project_id {project} is not in DLI_ALLOWED_PROJECT_IDS"
        plan.verdicts = [
            Verdict(Outcome.NOT_ALLOWED, "PROJECT_NOT_ALLOWED", message, j.job_id, job_kind=j.kind)
            for j in proposal.jobs
        ]
        return plan
    plan.targets = [JobRef(project, j.job_id, j.kind) for j in proposal.jobs]
    plan.queue_of = {j.job_id: j.queue_name for j in proposal.jobs if j.queue_name}
    return plan


def _budget_figures(context: dict[str, Any]) -> BudgetFigures | None:
    """The budget as the event described it: our ``budget`` object, or a Cloud Billing
    notification's figures."""
    ours = context.get("budget")
    if isinstance(ours, dict):
        figures = BudgetFigures(
            _text(ours.get("name")),
            _number(ours.get("cost")),
            _number(ours.get("amount")),
            _text(ours.get("currency")),
        )
    else:
        figures = BudgetFigures(
            _text(context.get("budgetDisplayName") or context.get("budget_id")),
            _number(context.get("costAmount")),
            _number(context.get("budgetAmount")),
            _text(context.get("currencyCode")),
        )
    return figures if figures != BudgetFigures() else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _listing_refused(queue: str, refused: Refused) -> Verdict:
    message = f"listing queue {queue}: {refused.message}"
    return Verdict(Outcome.REJECTED, refused.error_code, message, queue_name=queue)


def _unavailable(event: CancelEvent, project: str, failure: DliUnavailable) -> Plan:
    """Nothing was cancelled: every queue and every explicit job of the event gets a
    ``failed`` verdict, for the handler to publish if the event is not to come again."""
    message = failure.message
    if event.queue_names:
        message = f"listing queues {', '.join(event.queue_names)}: {message}"
    code, status = failure.error_code, failure.http_status
    verdicts = [
        Verdict(Outcome.FAILED, code, message, queue_name=q, http_status=status)
        for q in event.queue_names
    ]
    verdicts += [
        Verdict(Outcome.FAILED, code, message, j, job_kind=event.job_kind, http_status=status)
        for j in event.job_ids
    ]
    return Plan(project_id=project, verdicts=verdicts, unavailable=failure)


def _skip_finished(plan: Plan, client: Jobs, concurrency: int) -> None:
    """Turn the explicit jobs that are already over into ``already_finished`` verdicts.

    A state that cannot be read (unknown job, refusal, DLI unreachable, a configuration fault)
    leaves the job a target: the cancel call then reports it as it would have without this
    check. Unreadable credentials raise ``CredentialsUnavailable``: the event comes again."""
    explicit = [t for t in plan.targets if t.job_id not in plan.queue_of]

    def state_of(job: JobRef) -> str | None:
        try:
            return client.job_state(job)
        except (Refused, TransientFailure, Misconfigured):
            return None

    states = dict(each(explicit, state_of, concurrency, "state"))
    finished: dict[str, tuple[JobRef, str]] = {}
    for job in explicit:  # in the event's order, whatever order the reads finished in
        state = states[job]
        if state is not None and is_terminal(job.kind, state):
            finished[job.job_id] = (job, state)
    if not finished:
        return
    plan.targets = [t for t in plan.targets if t.job_id not in finished]
    plan.verdicts.extend(
        Verdict(
            Outcome.ALREADY_FINISHED,
            None,
            f"job is {state}: not cancelled again",
            job.job_id,
            job_kind=job.kind,
        )
        for job, state in finished.values()
    )


def _per_job(event: CancelEvent, outcome: Outcome, code: str, message: str) -> list[Verdict]:
    verdicts = [
        Verdict(outcome, code, message, job_id, job_kind=event.job_kind) for job_id in event.job_ids
    ]
    verdicts += [Verdict(outcome, code, message, queue_name=q) for q in event.queue_names]
    return verdicts


def _for_all(event: CancelEvent, outcome: Outcome, code: str, message: str) -> Verdict:
    job_id = event.job_ids[0] if len(event.job_ids) == 1 else ""
    return Verdict(outcome, code, message, job_id, job_kind=event.job_kind)
