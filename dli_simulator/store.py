"""The simulator's job state: SQL jobs, Spark batches, Flink jobs, per project (thread-safe)."""

from __future__ import annotations

import itertools
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dli_simulator.model import (
    NO_RESOURCE,
    NOT_FOUND,
    NOT_SUPPORTED,
    PARAM_ERROR,
    ApiError,
    Seed,
)

SQL_ACTIVE = frozenset({"RUNNING", "LAUNCHING", "SCALING"})
SQL_ORDERS = ("start_time_desc", "start_time_asc", "duration_desc", "duration_asc")
SPARK_TERMINAL = frozenset({"success", "dead"})
FLINK_TERMINAL = frozenset(
    {"job_submit_fail", "job_cancel_success", "job_finish", "job_arrearage_stopped"}
)
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
OWNER = "sim_user"

Query = dict[str, list[str]]


def now_ms() -> int:
    return int(time.time() * 1000)


def sql_job_type(sql: str) -> str:
    words = sql.strip().split(None, 1)
    first = words[0].upper() if words else ""
    return {
        "SELECT": "QUERY",
        "WITH": "QUERY",
        "INSERT": "INSERT",
        "UPDATE": "UPDATE",
        "DELETE": "DELETE",
        "CREATE": "DDL",
        "DROP": "DDL",
        "ALTER": "DDL",
        "GRANT": "DCL",
        "REVOKE": "DCL",
    }.get(first, "QUERY")


@dataclass
class SqlJob:
    job_id: str
    queue_name: str
    status: str
    sql: str
    job_type: str
    start_time: int
    seq: int
    end_time: int | None = None
    database_name: str = ""
    tags: list[dict[str, str]] = field(default_factory=list)

    def duration(self) -> int:
        return (self.end_time or now_ms()) - self.start_time

    def finish(self, status: str) -> None:
        self.status = status
        if status not in SQL_ACTIVE and self.end_time is None:
            self.end_time = now_ms()

    def common(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "job_type": self.job_type,
            "queue_name": self.queue_name,
            "owner": OWNER,
            "start_time": self.start_time,
            "duration": self.duration(),
            "status": self.status,
            "input_row_count": 0,
            "bad_row_count": 0,
            "input_size": 0,
            "result_count": 0,
            "database_name": self.database_name,
            "table_name": "",
            "detail": "{}",
            "statement": self.sql,
            "tags": self.tags,
            "result_format": "CSV",
            "result_path": "",
            "execution_details_path": "",
        }

    def status_json(self) -> dict[str, Any]:
        return {"is_success": True, "message": "", "job_mode": "async", "user_conf": "{}"} | (
            self.common()
        )

    def list_json(self) -> dict[str, Any]:
        data = self.common() | {
            "with_column_header": False,
            "engine_type": "spark",
            "message": "",
        }
        if self.end_time is not None:
            data["end_time"] = self.end_time
        return data


@dataclass
class SparkBatch:
    batch_id: str
    queue: str
    state: str
    create_time: int
    seq: int
    update_time: int = 0

    def json(self) -> dict[str, Any]:
        return {
            "id": self.batch_id,
            "state": self.state,
            "appId": f"application_{self.create_time}_{self.seq:04d}",
            "log": [],
            "sc_type": "A",
            "cluster_name": self.queue,
            "queue": self.queue,
            "create_time": self.create_time,
            "update_time": self.update_time or self.create_time,
            "duration": (self.update_time or now_ms()) - self.create_time,
            "name": f"batch-{self.seq}",
            "owner": OWNER,
            "proxyUser": "",
            "kind": "",
            "image": "",
            "req_body": "{}",
        }


@dataclass
class FlinkJob:
    job_id: int
    project_id: str
    queue_name: str
    status: str
    create_time: int
    seq: int
    update_time: int = 0

    def json(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "name": f"flink-{self.job_id}",
            "desc": "",
            "user_name": OWNER,
            "job_type": "flink_sql_job",
            "status": self.status,
            "status_desc": "",
            "create_time": self.create_time,
            "start_time": self.create_time,
            "update_time": self.update_time or self.create_time,
            "duration": (self.update_time or now_ms()) - self.create_time,
            "root_id": -1,
            "project_id": self.project_id,
            "queue_name": self.queue_name,
            "run_mode": "exclusive_cluster",
        }


def _started(age_s: float) -> int:
    """The start (ms epoch) of a job that started ``age_s`` seconds ago."""
    return now_ms() - round(age_s * 1000)


def _first(query: Query, *names: str) -> str | None:
    for name in names:
        values = query.get(name)
        if values:
            return values[0]
    return None


def _int_param(query: Query, name: str, default: int, low: int, high: int | None) -> int:
    raw = _first(query, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, PARAM_ERROR, f"Parameter {name} must be an integer: {raw!r}") from None
    if value < low or (high is not None and value > high):
        upper = "" if high is None else f", {high}"
        raise ApiError(400, PARAM_ERROR, f"Parameter {name} out of range [{low}{upper}]: {value}")
    return value


class JobStore:
    """Every job of every project; all methods are thread-safe."""

    def __init__(self) -> None:
        # at most this many jobs per listing page, whatever page size the request asks for
        # (a DLI that serves fewer than asked); None: as asked
        self.page_cap: int | None = None
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self._flink_ids = itertools.count(1001)
        self._sql: dict[tuple[str, str], SqlJob] = {}
        self._spark: dict[tuple[str, str], SparkBatch] = {}
        self._flink: dict[tuple[str, int], FlinkJob] = {}

    # ---- creation -------------------------------------------------------------------------
    # ``age_s``: the job started that many seconds ago (its start_time / create_time), so the
    # watchdog's runtime limits can be tried without waiting. ``tags``: DLI job tags (SQL jobs
    # report them in the status and list answers, as DLI does).
    def add_sql(
        self,
        project_id: str,
        queue_name: str,
        status: str,
        sql: str,
        job_type: str,
        *,
        age_s: float = 0.0,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        job = SqlJob(
            str(uuid.uuid4()), queue_name, "", sql, job_type, _started(age_s), next(self._seq)
        )
        job.tags = [{"key": key, "value": value} for key, value in (tags or {}).items()]
        job.finish(status)
        with self._lock:
            self._sql[(project_id, job.job_id)] = job
        return job.job_id

    def add_spark(self, project_id: str, queue: str, state: str, *, age_s: float = 0.0) -> str:
        batch = SparkBatch(str(uuid.uuid4()), queue, state, _started(age_s), next(self._seq))
        if state.lower() in SPARK_TERMINAL:
            batch.update_time = batch.create_time
        with self._lock:
            self._spark[(project_id, batch.batch_id)] = batch
        return batch.batch_id

    def add_flink(
        self, project_id: str, queue_name: str, status: str, *, age_s: float = 0.0
    ) -> int:
        job = FlinkJob(next(self._flink_ids), project_id, queue_name, status, _started(age_s), 0)
        job.seq = next(self._seq)
        with self._lock:
            self._flink[(project_id, job.job_id)] = job
        return job.job_id

    def seed(self, project_id: str, seed: Seed) -> list[str | int]:
        made: list[str | int] = []
        for _ in range(seed.count):
            if seed.kind == "sql":
                tags = dict(seed.tags)
                made.append(
                    self.add_sql(
                        project_id,
                        seed.queue_name,
                        seed.job_status,
                        "SELECT 1",
                        "QUERY",
                        age_s=seed.age_s,
                        tags=tags,
                    )
                )
            elif seed.kind == "spark":
                made.append(
                    self.add_spark(project_id, seed.queue_name, seed.job_status, age_s=seed.age_s)
                )
            else:
                made.append(
                    self.add_flink(project_id, seed.queue_name, seed.job_status, age_s=seed.age_s)
                )
        return made

    # ---- admin views ----------------------------------------------------------------------
    def find(self, project_id: str, job_id: str) -> tuple[str, str] | None:
        """``(kind, status)`` of any job with this id, or ``None``."""
        with self._lock:
            if (sql := self._sql.get((project_id, job_id))) is not None:
                return "sql", sql.status
            if (spark := self._spark.get((project_id, job_id))) is not None:
                return "spark", spark.state
            if job_id.isdigit() and (flink := self._flink.get((project_id, int(job_id)))):
                return "flink", flink.status
        return None

    def set_status(self, project_id: str, job_id: str, status: str) -> bool:
        with self._lock:
            if (sql := self._sql.get((project_id, job_id))) is not None:
                sql.finish(status)
            elif (spark := self._spark.get((project_id, job_id))) is not None:
                spark.state = status
            elif job_id.isdigit() and (flink := self._flink.get((project_id, int(job_id)))):
                flink.status = status
            else:
                return False
        return True

    def _capped(self, page_size: int) -> int:
        cap = self.page_cap
        return page_size if cap is None else min(page_size, cap)

    # ---- SQL --------------------------------------------------------------------------------
    def sql_status(self, project_id: str, job_id: str) -> dict[str, Any]:
        with self._lock:
            return self._sql_job(project_id, job_id).status_json()

    def cancel_sql(self, project_id: str, job_id: str) -> dict[str, Any]:
        with self._lock:
            job = self._sql_job(project_id, job_id)
            if job.status not in SQL_ACTIVE:
                raise ApiError(
                    400,
                    NOT_SUPPORTED,
                    f"Job {job_id} cannot be canceled because it is in state {job.status}.",
                )
            job.finish("CANCELLED")
        return {"is_success": True, "message": ""}

    def list_sql(self, project_id: str, query: Query) -> dict[str, Any]:
        page_size = self._capped(_int_param(query, "page-size", 50, 1, 100))
        page = _int_param(query, "current-page", 1, 1, None)
        order = _first(query, "order") or "start_time_desc"
        if order not in SQL_ORDERS:
            raise ApiError(400, PARAM_ERROR, f"Unsupported order: {order}")
        keep = _sql_filter(query)
        with self._lock:
            jobs = [j for (pid, _), j in self._sql.items() if pid == project_id and keep(j)]
            jobs.sort(key=_sql_sort_key(order), reverse=order.endswith("_desc"))
            start = (page - 1) * page_size
            page_jobs = [j.list_json() for j in jobs[start : start + page_size]]
        return {"is_success": True, "message": "", "job_count": len(jobs), "jobs": page_jobs}

    def _sql_job(self, project_id: str, job_id: str) -> SqlJob:
        job = self._sql.get((project_id, job_id))
        if job is None:
            raise ApiError(400, NOT_FOUND, f"The job {job_id} does not exist.")
        return job

    # ---- Spark ------------------------------------------------------------------------------
    def spark_batch(self, project_id: str, batch_id: str) -> dict[str, Any]:
        with self._lock:
            return self._batch(project_id, batch_id).json()

    def spark_state(self, project_id: str, batch_id: str) -> dict[str, Any]:
        with self._lock:
            batch = self._batch(project_id, batch_id)
            return {"id": batch.batch_id, "state": batch.state}

    def cancel_spark(self, project_id: str, batch_id: str) -> dict[str, Any]:
        with self._lock:
            batch = self._batch(project_id, batch_id)
            if batch.state.lower() in SPARK_TERMINAL:
                raise ApiError(
                    400,
                    NOT_SUPPORTED,
                    f"Batch job {batch_id} cannot be canceled because it is in state "
                    f"{batch.state}.",
                )
            batch.state = "dead"
            batch.update_time = now_ms()
        return {"msg": "deleted"}

    def list_spark(self, project_id: str, query: Query) -> dict[str, Any]:
        offset = _int_param(query, "from", 0, 0, None)
        size = self._capped(_int_param(query, "size", 100, 1, 1000))
        keep = _spark_filter(query)
        ascending = (_first(query, "order") or "").endswith("_asc")
        with self._lock:
            batches = [b for (pid, _), b in self._spark.items() if pid == project_id and keep(b)]
            batches.sort(key=lambda b: (b.create_time, b.seq), reverse=not ascending)
            sessions = [b.json() for b in batches[offset : offset + size]]
        return {
            "from": offset,
            "total": len(batches),
            "create_time": now_ms(),
            "sessions": sessions,
        }

    def _batch(self, project_id: str, batch_id: str) -> SparkBatch:
        if not UUID_RE.match(batch_id):
            raise ApiError(400, PARAM_ERROR, f"Invalid batch id: {batch_id}")
        batch = self._spark.get((project_id, batch_id))
        if batch is None:
            raise ApiError(404, NO_RESOURCE, f"The batch job {batch_id} does not exist.")
        return batch

    # ---- Flink ------------------------------------------------------------------------------
    def stop_flink(self, project_id: str, job_ids: list[int]) -> list[dict[str, str]]:
        with self._lock:
            return [self._stop_one(project_id, job_id) for job_id in job_ids]

    def _stop_one(self, project_id: str, job_id: int) -> dict[str, str]:
        job = self._flink.get((project_id, job_id))
        if job is None:
            return {"is_success": "false", "message": f"The job {job_id} does not exist."}
        if job.status in FLINK_TERMINAL:
            return {
                "is_success": "false",
                "message": f"Job {job_id} cannot be stopped because it is in state {job.status}.",
            }
        job.status = "job_cancel_success"
        job.update_time = now_ms()
        return {
            "is_success": "true",
            "message": f"The request for stopping DLI job {job_id} is delivered successfully.",
        }

    def flink_detail(self, project_id: str, job_id: str) -> dict[str, Any]:
        if not job_id.isdigit():
            raise ApiError(400, PARAM_ERROR, f"Invalid job id: {job_id}")
        with self._lock:
            job = self._flink.get((project_id, int(job_id)))
            if job is None:
                raise ApiError(400, NOT_FOUND, f"The job {job_id} does not exist.")
            detail = job.json()
        return {
            "is_success": "true",
            "message": "Querying of the job details succeeds.",
            "job_detail": detail,
        }

    def list_flink(self, project_id: str, query: Query) -> dict[str, Any]:
        offset = _int_param(query, "offset", 0, 0, None)
        limit = self._capped(_int_param(query, "limit", 10, 0, 100))
        keep = _flink_filter(query)
        ascending = (_first(query, "order") or "desc") == "asc"
        with self._lock:
            jobs = [j for (pid, _), j in self._flink.items() if pid == project_id and keep(j)]
            jobs.sort(key=lambda j: (j.create_time, j.seq), reverse=not ascending)
            page = [j.json() for j in jobs[offset : offset + limit]]
        return {
            "is_success": "true",
            "message": "Querying of the job list succeeds.",
            "job_list": {"total_count": len(jobs), "jobs": page},
        }


def _sql_sort_key(order: str) -> Callable[[SqlJob], tuple[int, int]]:
    if order.startswith("duration"):
        return lambda j: (j.duration(), j.seq)
    return lambda j: (j.start_time, j.seq)


def _all(checks: Iterable[Callable[[Any], bool]]) -> Callable[[Any], bool]:
    kept = list(checks)
    return lambda item: all(check(item) for check in kept)


def _sql_filter(query: Query) -> Callable[[SqlJob], bool]:
    checks: list[Callable[[SqlJob], bool]] = []
    if (status := _first(query, "job-status")) is not None:
        checks.append(lambda j: j.status == status.upper())
    if (queue := _first(query, "queue_name")) is not None:
        checks.append(lambda j: j.queue_name == queue)
    if (job_id := _first(query, "job-id")) is not None:
        checks.append(lambda j: j.job_id == job_id)
    job_type = _first(query, "job-type")
    if job_type is not None and job_type.upper() != "ALL":
        checks.append(lambda j: j.job_type == job_type.upper())
    if types := query.get("job_types"):
        wanted = {t.upper() for t in types}
        checks.append(lambda j: j.job_type in wanted)
    if (pattern := _first(query, "sql_pattern")) is not None:
        checks.append(lambda j: pattern.lower() in j.sql.lower())
    if (owner := _first(query, "owner")) is not None:
        checks.append(lambda j: owner == OWNER)
    checks.extend(_time_window(query))
    return _all(checks)


def _time_window(query: Query) -> list[Callable[[SqlJob], bool]]:
    checks: list[Callable[[SqlJob], bool]] = []
    start = _int_param(query, "start", -1, -1, None)
    end = _int_param(query, "end", -1, -1, None)
    if start >= 0:
        checks.append(lambda j: j.start_time > start)
    if end >= 0:
        checks.append(lambda j: j.start_time < end)
    return checks


def _spark_filter(query: Query) -> Callable[[SparkBatch], bool]:
    checks: list[Callable[[SparkBatch], bool]] = []
    if (queue := _first(query, "queue_name", "cluster_name")) is not None:
        checks.append(lambda b: b.queue == queue)
    if (state := _first(query, "state")) is not None:
        checks.append(lambda b: b.state.lower() == state.lower())
    if (job_id := _first(query, "job-id")) is not None:
        checks.append(lambda b: b.batch_id == job_id)
    return _all(checks)


def _flink_filter(query: Query) -> Callable[[FlinkJob], bool]:
    checks: list[Callable[[FlinkJob], bool]] = []
    if (queue := _first(query, "queue_name")) is not None:
        checks.append(lambda j: j.queue_name == queue)
    if (status := _first(query, "status")) is not None:
        checks.append(lambda j: j.status == status)
    if (name := _first(query, "name")) is not None:
        checks.append(lambda j: name in f"flink-{j.job_id}")
    return _all(checks)
