"""The active jobs of one kind, as DLI's three listing APIs report them (the watchdog's input).

- sql: ``GET /v1.0/{project}/jobs``, pages ``current-page``/``page-size``, total ``job_count``;
  states LAUNCHING, RUNNING, SCALING.
- spark: ``GET /v2.0/{project}/batches``, ``from`` (an offset)/``size``, total ``total``;
  states starting, running, recovering.
- flink: ``GET /v1.0/{project}/streaming/jobs``, ``offset``/``limit``, total
  ``job_list.total_count``; states job_running, job_running_exception.

Each active state is listed on its own (the APIs filter one state at a time), in lifecycle
order, so a job that moves on between two listings is still seen once. Pages are followed
until the jobs collected reach the total DLI reports, or a page comes back empty (or brings no
job not seen yet: a DLI that ignored the offset), whatever page size DLI really used.

What one page says is ``dli.replies.read_page``'s decision (a page of the wrong structure is a
``DLI_BAD_REPLY``). A listed job whose id has the wrong shape for its kind (ids reach URL paths
and Flink's stop body) is left out; so is one listed on another queue than the one asked for.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from cancel_handler.dli.auth import Call
from cancel_handler.dli.replies import Page, PageJob
from cancel_handler.dli.types import SQL_ACTIVE_STATES, JobKind
from cancel_handler.limits import ListedJob, tag_pairs

PAGE_SIZE = 100
MAX_PAGES = 1000  # 100,000 jobs of one state: past that, DLI's paging is not to be trusted

SPARK_ACTIVE_STATES = ("starting", "running", "recovering")
FLINK_ACTIVE_STATES = ("job_running", "job_running_exception")

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_FLINK_ID = re.compile(r"[1-9][0-9]{0,18}")
_FLINK_MAX_ID = 2**63 - 1

# a signed GET -> the page it answered (``replies.read_page``); raises DliRefused, DliUnavailable
Read = Callable[[Call], Page]


@dataclass(frozen=True)
class _Api:
    kind: JobKind
    path: str  # after the prefix, with {project}
    states: tuple[str, ...]
    state_field: str

    def query(
        self, state: str, queue: str | None, page: int, offset: int
    ) -> tuple[tuple[str, str], ...]:
        pairs: list[tuple[str, str]] = []
        if self.kind == "sql":
            pairs += [("current-page", str(page)), ("job-status", state)]
            pairs += [("page-size", str(PAGE_SIZE))]
        elif self.kind == "spark":
            pairs += [("from", str(offset)), ("size", str(PAGE_SIZE)), ("state", state)]
        else:
            pairs += [("limit", str(PAGE_SIZE)), ("offset", str(offset)), ("status", state)]
        if queue is not None:
            pairs.append(("queue_name", queue))
        return tuple(pairs)

    def in_state(self, job: PageJob, state: str) -> bool:
        return job.state == state if self.kind == "sql" else job.state.lower() == state


APIS = {
    "sql": _Api("sql", "/v1.0/{project}/jobs", SQL_ACTIVE_STATES, "status"),
    "spark": _Api("spark", "/v2.0/{project}/batches", SPARK_ACTIVE_STATES, "state"),
    "flink": _Api("flink", "/v1.0/{project}/streaming/jobs", FLINK_ACTIVE_STATES, "status"),
}


def list_active(
    read: Read, prefix: str, project_id: str, kind: JobKind, queue_name: str | None
) -> list[ListedJob]:
    """Every active job of ``kind`` on ``queue_name`` (``None``: on every queue), each once, in
    the order listed. Raises what ``read`` raises (``DliRefused``, ``DliUnavailable``)."""
    api = APIS[kind]
    path = prefix + api.path.format(project=quote(project_id, safe=""))
    wanted = queue_name.lower() if queue_name is not None else None
    seen: dict[str, ListedJob] = {}
    for state in api.states:
        for entry in _pages(read, api, Call("GET", path, project_id), state, queue_name):
            job = _listed(kind, entry, queue_name)
            if job is None or job.job_id in seen or not api.in_state(entry, state):
                continue
            if wanted is not None and job.queue_name.lower() != wanted:
                continue
            seen[job.job_id] = job
    return list(seen.values())


def _pages(read: Read, api: _Api, base: Call, state: str, queue: str | None) -> Iterator[PageJob]:
    ids: set[str] = set()
    for page in range(1, MAX_PAGES + 1):
        query = api.query(state, queue, page, len(ids))
        answered = read(Call(base.method, base.path, base.project_id, query=query))
        new = [job for job in answered.jobs if job.job_id not in ids]
        ids.update(job.job_id for job in new)
        yield from new
        if not new or (answered.total is not None and len(ids) >= answered.total):
            return


def _listed(kind: JobKind, entry: PageJob, queue_name: str | None) -> ListedJob | None:
    """One listed job, or ``None`` when its id is not one of its kind."""
    raw = entry.fields
    if kind == "sql":
        start = raw.get("start_time")
    elif kind == "spark":
        start = raw.get("create_time")
    else:
        start = (
            raw.get("start_time") if raw.get("start_time") is not None else raw.get("create_time")
        )
    text = _job_id(kind, entry.job_id)
    if text is None:
        return None
    return ListedJob(
        job_id=text,
        kind=kind,
        queue_name=entry.queue_name or queue_name or "",
        duration_ms=raw.get("duration"),
        start_ms=start,
        tags=tag_pairs(raw.get("tags")),
    )


def _job_id(kind: JobKind, value: Any) -> str | None:
    if kind == "flink":
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        valid = (
            isinstance(value, str) and _FLINK_ID.fullmatch(value) and int(value) <= _FLINK_MAX_ID
        )
        return value if valid else None
    return value if isinstance(value, str) and _UUID.fullmatch(value) else None
