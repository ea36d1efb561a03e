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

Cloud Billing sends the same budget notification several times a day. Its queue targets are
idempotent by nature (a cancelled job is no longer listed as active), but its explicit
``job_ids`` would be cancelled again on every notification; so the plan reads their state first
and cancels only the jobs that are still active.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cancel_handler.config import Settings
from cancel_handler.dli.concurrency import each
from cancel_handler.dli.errors import DliUnavailable, Misconfigured, Refused, TransientFailure
from cancel_handler.dli.types import JobRef, Jobs, is_terminal
from cancel_handler.events import CancelEvent
from cancel_handler.outcomes import Outcome, Verdict


@dataclass
class Plan:
    project_id: str | None
    targets: list[JobRef] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    queue_of: dict[str, str] = field(default_factory=dict)  # job id -> queue it was listed on
    # DLI could not be used to make the plan: no targets, and ``failed`` verdicts for everything
    unavailable: DliUnavailable | None = None


def resolve_project(event: CancelEvent, settings: Settings) -> str | None:
    return event.project_id or settings.default_project_id


def build_plan(event: CancelEvent, settings: Settings, client: Jobs) -> Plan:
    """The plan of ``event``; never raises for what DLI answers."""
    project = resolve_project(event, settings)
    if project is None:
        message = "project_id: no project given and no DLI_PROJECT_ID configured"
        return Plan(
            None, verdicts=[_for_all(event, Outcome.INVALID_EVENT, "INVALID_EVENT", message)]
        )
    if project not in settings.allowed_project_ids:
        message = f"project_id {project} is not in DLI_ALLOWED_PROJECT_IDS"
        return Plan(
            project, verdicts=_per_job(event, Outcome.NOT_ALLOWED, "PROJECT_NOT_ALLOWED", message)
        )
    plan = Plan(project_id=project)
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
