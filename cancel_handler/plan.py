"""An event -> the jobs to cancel: the project allow-list, explicit ids, queue listings.

Results that need no cancel call (``not_allowed``, ``nothing_to_cancel``, ``invalid_event`` for
too many jobs) come out of the plan directly as ``Verdict``s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cancel_handler.config import Settings
from cancel_handler.dli.client import DliClient, JobRef
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
    """Raises ``TransientFailure`` (from listing) when DLI cannot be reached."""
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
        listed = [j for j in client.list_active_sql_jobs(project, queue) if j not in known]
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


def _per_job(event: CancelEvent, outcome: str, code: str, message: str) -> list[Verdict]:
    verdicts = [
        Verdict(outcome, code, message, job_id, job_kind=event.job_kind) for job_id in event.job_ids
    ]
    verdicts += [Verdict(outcome, code, message, queue_name=q) for q in event.queue_names]
    return verdicts


def _for_all(event: CancelEvent, outcome: str, code: str, message: str) -> Verdict:
    job_id = event.job_ids[0] if len(event.job_ids) == 1 else ""
    return Verdict(outcome, code, message, job_id, job_kind=event.job_kind)
