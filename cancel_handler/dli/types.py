"""The DLI package's vocabulary: job kinds, job references, what a cancel call ended in, and
which job states are over. Standard library only, so the event models can use it cheaply."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, get_args

if TYPE_CHECKING:
    from cancel_handler.limits import ListedJob

JobKind = Literal["sql", "spark", "flink"]
JOB_KINDS: tuple[JobKind, ...] = get_args(JobKind)

# What DLI's answer to a cancel means (the client's decision); ``failed`` is not among them:
# it is what the handler publishes when transient faults outlast an old event.
CallResult = Literal["cancelled", "already_finished", "not_found", "rejected"]

# In lifecycle order: a job that moves on between two listings is still seen (SPEC 5.1).
SQL_ACTIVE_STATES = ("LAUNCHING", "RUNNING", "SCALING")
SQL_TERMINAL_STATES = frozenset({"FINISHED", "FAILED", "CANCELLED"})
SPARK_TERMINAL_STATES = frozenset({"success", "dead"})
FLINK_TERMINAL_STATES = frozenset(
    {"job_cancel_success", "job_finish", "job_submit_fail", "job_arrearage_stopped"}
)


@dataclass(frozen=True)
class JobRef:
    project_id: str
    job_id: str
    kind: JobKind = "sql"


@dataclass(frozen=True)
class CallOutcome:
    """A definitive answer to one cancel call."""

    outcome: CallResult
    is_success: bool
    error_code: str | None = None
    message: str = ""
    http_status: int | None = None
    request_id: str | None = None
    attempts: int = 0


def is_terminal(kind: JobKind, state: str) -> bool:
    """Whether a job in ``state`` is over (FINISHED, FAILED, CANCELLED and their Spark and
    Flink counterparts; Spark and Flink states are compared case-insensitively)."""
    if kind == "spark":
        return state.lower() in SPARK_TERMINAL_STATES
    if kind == "flink":
        return state.lower() in FLINK_TERMINAL_STATES
    return state.upper() in SQL_TERMINAL_STATES


class Jobs(Protocol):
    """What the plan and the handler need from DLI (``DliClient``; a fake in unit tests).

    ``cancel`` returns a ``CallOutcome`` or raises ``DliUnavailable``; ``job_state`` and
    ``list_active_sql_jobs`` and ``list_active`` also raise ``Refused`` (see ``dli.errors``)."""

    def bounded(self, deadline: float | None) -> Jobs: ...

    def cancel(self, job: JobRef) -> CallOutcome: ...

    def job_state(self, job: JobRef) -> str | None: ...

    def list_active_sql_jobs(self, project_id: str, queue_name: str) -> list[str]: ...

    def list_active(
        self, project_id: str, kind: JobKind, queue_name: str | None = None
    ) -> list[ListedJob]: ...
