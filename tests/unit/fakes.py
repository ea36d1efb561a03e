"""In-process stand-ins for the unit tier: a scripted DLI and a runtime around it.

``FakeDli`` answers the plan and the handler the way ``DliClient`` does (``dli.types.Jobs``),
from a script per job and per queue, and records every call. The runtime uses the real
settings loader, event rules, handler and plan; only DLI and Pub/Sub are replaced
(``results.MemorySink``).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from cancel_handler.approvals import KeyFile
from cancel_handler.config import load_settings
from cancel_handler.dli.errors import (
    AuthRefused,
    CredentialsUnavailable,
    DliRefused,
    Misconfigured,
    TransientFailure,
)
from cancel_handler.dli.types import CallOutcome, JobRef
from cancel_handler.envelopes import Delivery
from cancel_handler.events import EventRules
from cancel_handler.limits import ListedJob
from cancel_handler.results import MemorySink
from cancel_handler.runtime import Runtime

PROJECT_ID = "0123456789abcdef0123456789abcdef"
OTHER_PROJECT_ID = "fedcba9876543210fedcba9876543210"
FANOUT_TOPIC = "projects/unit/topics/dli-cancel-fanout"

Answer = CallOutcome | Exception


def job_id() -> str:
    return str(uuid.uuid4())


def cancelled(attempts: int = 1) -> CallOutcome:
    return CallOutcome("cancelled", True, None, "", 200, "req-ok", attempts)


def transient(code: str = "DLI_HTTP_503", attempts: int = 3) -> TransientFailure:
    return TransientFailure(code, "service unavailable", attempts, 503, "req-503")


def credentials_missing() -> CredentialsUnavailable:
    return CredentialsUnavailable("DLI_CREDENTIALS_FILE /secrets/dli.json unreadable: gone")


def misconfigured(code: str = "DLI.0014", status: int = 401) -> Misconfigured:
    """A refused authentication (DLI's 401 after one refresh) or the gateway's 404."""
    return Misconfigured(code, "DLI refused the credentials (HTTP 401)", 2, status, "req-401")


def iam_refused() -> AuthRefused:
    return AuthRefused(401, "IAM_HTTP_401", "The username or password is wrong.")


def refused(code: str = "DLI.0003", status: int = 400) -> DliRefused:
    return DliRefused(status, code, "no permission on this queue", "req-400")


class FakeDli:
    """A scripted DLI. ``cancels[job_id]``: what cancelling that job answers (a
    ``CallOutcome``, or an exception to raise; default: cancelled). ``states[job_id]``: its
    state (default RUNNING; ``None``: no such job). ``listings[queue]``: the active SQL jobs
    of a queue, or an exception (default: none). ``active[(kind, queue)]``: what the watchdog's
    listing of that kind on that queue (``None``: every queue) finds, or an exception."""

    def __init__(self) -> None:
        self.cancels: dict[str, Answer] = {}
        self.states: dict[str, str | Exception | None] = {}
        self.listings: dict[str, list[str] | Exception] = {}
        self.active: dict[tuple[str, str | None], list[ListedJob] | Exception] = {}
        self.calls: list[tuple[str, str]] = []
        self.deadlines: list[float | None] = []
        self._lock = threading.Lock()

    def bounded(self, deadline: float | None) -> FakeDli:
        self.deadlines.append(deadline)
        return self

    def cancel(self, job: JobRef) -> CallOutcome:
        answer = self._record("cancel", job.job_id, self.cancels.get(job.job_id, cancelled()))
        assert isinstance(answer, CallOutcome)
        return answer

    def job_state(self, job: JobRef) -> str | None:
        answer = self._record("state", job.job_id, self.states.get(job.job_id, "RUNNING"))
        assert answer is None or isinstance(answer, str)
        return answer

    def list_active_sql_jobs(self, project_id: str, queue_name: str) -> list[str]:
        answer = self._record("list", queue_name, self.listings.get(queue_name, []))
        assert isinstance(answer, list)
        return answer

    def list_active(
        self, project_id: str, kind: str, queue_name: str | None = None
    ) -> list[ListedJob]:
        subject = f"{kind}:{queue_name or '*'}"
        answer = self._record("list_active", subject, self.active.get((kind, queue_name), []))
        assert isinstance(answer, list)
        return answer

    def _record(self, what: str, subject: str, answer: Any) -> Any:
        with self._lock:
            self.calls.append((what, subject))
        if isinstance(answer, Exception):
            raise answer
        return answer

    def called(self, what: str) -> list[str]:
        """The subjects (job ids, queue names) of every call of one kind, in call order."""
        return [subject for kind, subject in self.calls if kind == what]


class Unit:
    """A runtime around a ``FakeDli`` and memory sinks, with ``env`` on top of a minimal
    valid configuration (a local run: no RESULT_TOPIC needed)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        base = {
            "DLI_ENDPOINT": "https://dli.example.invalid",
            "DLI_PROJECT_ID": PROJECT_ID,
            "HUAWEICLOUD_SDK_AK": "UNITACCESSKEY",
            "HUAWEICLOUD_SDK_SK": "unit-secret-key",
            "FANOUT_TOPIC": FANOUT_TOPIC,
        }
        self.settings = load_settings({**base, **(env or {})}, local_run=True)
        self.dli = FakeDli()
        self.sink = MemorySink()
        self.fanout = MemorySink()
        self.runtime = Runtime(
            settings=self.settings,
            client=self.dli,
            sink=self.sink,
            rules=EventRules.from_settings(self.settings),
            fanout=self.fanout if self.settings.fanout_topic else None,
            approval_keys=KeyFile(path) if (path := self.settings.approval_key_file) else None,
        )

    @property
    def published(self) -> list[dict[str, Any]]:
        return self.sink.results

    def by_job(self) -> dict[str, dict[str, Any]]:
        results = {r["job_id"]: r for r in self.published}
        assert len(results) == len(self.published), "one result per job"
        return results


def delivery(
    body: Mapping[str, Any] | bytes,
    topic: str | None = "job-timeout",
    *,
    age_s: float | None = None,
    attributes: Mapping[str, str] | None = None,
    event_id: str | None = None,
) -> Delivery:
    """A Pub/Sub delivery of ``body`` (an object is sent as JSON) published ``age_s`` ago
    (``None``: no publish time, handled as young)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    published = None if age_s is None else datetime.now(UTC) - timedelta(seconds=age_s)
    return Delivery(
        data,
        dict(attributes or {}),
        topic,
        event_id or f"unit-{uuid.uuid4().hex[:12]}",
        published,
        "cloudevent",
    )
