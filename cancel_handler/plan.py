"""An event -> the jobs to cancel: the project allow-list, explicit ids, queue listings.

Results that need no cancel call (``not_allowed``, ``nothing_to_cancel``, ``invalid_event`` for
too many jobs, ``already_finished`` for a budget notification's job that is already over) come
out of the plan directly as ``Verdict``s.

Cloud Billing sends the same budget notification several times a day. Its queue targets are
idempotent by nature (a cancelled job is no longer listed as active), but its explicit
``job_ids`` would be cancelled again on every notification; so the plan reads their state first
and cancels only the jobs that are still active.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from cancel_handler import logs
from cancel_handler.config import Settings
from cancel_handler.dli.auth import AuthRefused
from cancel_handler.dli.client import (
    FLINK_TERMINAL_STATES,
    SPARK_TERMINAL_STATES,
    SQL_TERMINAL_STATES,
    DliClient,
    DliRefused,
    JobRef,
    TransientFailure,
)
from cancel_handler.events import CancelEvent


@dataclass(frozen=True)
class Verdict:
    """A result decided without calling the cancel API."""

    outcome: str
    error_code: str | None
    message: str
    job_id: str = ""
    queue_name: str | None = None
    job_kind: str = "sql"


@dataclass
class Plan:
    project_id: str | None
    targets: list[JobRef] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    queue_of: dict[str, str] = field(default_factory=dict)  # job id -> queue it was listed on


class ProjectNotAllowed(Exception):
    pass


def resolve_project(event: CancelEvent, settings: Settings) -> str | None:
    return event.project_id or settings.default_project_id


def build_plan(event: CancelEvent, settings: Settings, client: DliClient) -> Plan:
    """Raises ``TransientFailure`` (from listing) when DLI cannot be reached. A queue whose
    listing DLI refuses gets a ``rejected`` verdict; the rest of the event goes ahead."""
    project = resolve_project(event, settings)
    plan = Plan(project_id=project)
    if project is None:
        plan.verdicts.append(
            _for_all(
                event,
                "invalid_event",
                "INVALID_EVENT",
                "project_id: no project given and no DLI_PROJECT_ID configured",
            )
        )
        return plan
    if project not in settings.allowed_project_ids:
        message = f"project_id {project} is not in DLI_ALLOWED_PROJECT_IDS"
        plan.verdicts.extend(_per_job(event, "not_allowed", "PROJECT_NOT_ALLOWED", message))
        return plan
    plan.targets = [JobRef(project, job_id, event.job_kind) for job_id in event.job_ids]
    known = {t.job_id for t in plan.targets}
    for queue in event.queue_names:
        if len(plan.targets) > settings.max_jobs_per_event:
            break  # refused below; listing more queues would change nothing
        try:
            active = client.list_active_sql_jobs(project, queue)
        except (DliRefused, AuthRefused) as refused:
            # this queue cannot be listed (permissions, parameters): the other queues and
            # the explicit jobs are still cancelled
            plan.verdicts.append(_listing_refused(queue, refused))
            continue
        listed = [j for j in active if j not in known]
        if not listed and not event.job_ids:
            plan.verdicts.append(
                Verdict(
                    "nothing_to_cancel", None, f"queue {queue} has no active job", queue_name=queue
                )
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
        plan.verdicts = [Verdict("invalid_event", "INVALID_EVENT", message)]
        return plan
    if event.source_format == "budget_notification" and event.job_ids:
        _skip_finished(plan, client, settings.cancel_concurrency)
    return plan


def _listing_refused(queue: str, refused: DliRefused | AuthRefused) -> Verdict:
    if isinstance(refused, AuthRefused):
        code, message = refused.error_code, refused.message
    else:
        code = refused.answer.error_code or f"DLI_HTTP_{refused.answer.status}"
        message = refused.answer.error_message
    return Verdict("rejected", code, f"listing queue {queue}: {message}", queue_name=queue)


def _skip_finished(plan: Plan, client: DliClient, concurrency: int) -> None:
    """Turn the explicit jobs that are already over into ``already_finished`` verdicts.

    A state that cannot be read (unknown job, refusal, DLI unreachable) leaves the job a
    target: the cancel call then reports it as it would have without this check."""
    explicit = [t for t in plan.targets if t.job_id not in plan.queue_of]

    def state_of(job: JobRef) -> str | None:
        try:
            return client.job_state(job)
        except (DliRefused, AuthRefused, TransientFailure):
            return None

    if len(explicit) <= 1:
        states = [state_of(job) for job in explicit]
    else:
        workers = min(concurrency, len(explicit))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="state") as pool:
            states = list(pool.map(logs.carry(state_of), explicit))  # with the event's labels
    finished = {
        job.job_id: (job, state)
        for job, state in zip(explicit, states, strict=True)
        if state is not None and is_terminal(job.kind, state)
    }
    if not finished:
        return
    plan.targets = [t for t in plan.targets if t.job_id not in finished]
    plan.verdicts.extend(
        Verdict(
            "already_finished",
            None,
            f"job is {state}: not cancelled again",
            job.job_id,
            job_kind=job.kind,
        )
        for job, state in finished.values()
    )


def is_terminal(kind: str, state: str) -> bool:
    """Whether a job in ``state`` is over (FINISHED, FAILED, CANCELLED and their Spark and
    Flink counterparts)."""
    if kind == "spark":
        return state.lower() in SPARK_TERMINAL_STATES
    if kind == "flink":
        return state.lower() in FLINK_TERMINAL_STATES
    return state.upper() in SQL_TERMINAL_STATES


def _per_job(event: CancelEvent, outcome: str, code: str, message: str) -> list[Verdict]:
    verdicts = [
        Verdict(outcome, code, message, job_id, job_kind=event.job_kind) for job_id in event.job_ids
    ]
    verdicts += [Verdict(outcome, code, message, queue_name=q) for q in event.queue_names]
    return verdicts


def _for_all(event: CancelEvent, outcome: str, code: str, message: str) -> Verdict:
    job_id = event.job_ids[0] if len(event.job_ids) == 1 else ""
    return Verdict(outcome, code, message, job_id, job_kind=event.job_kind)
