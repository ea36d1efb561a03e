"""Many events at once on one instance, as deploy.yaml runs it (``--concurrency`` =
``THREADS`` = ``_CONCURRENCY``): the runtime, the DLI connection pool, the credentials and
the result publisher are shared by every request thread, and each event still gets exactly
its own results.

Events are POSTed as Eventarc does (binary CloudEvents) all at once to one functions-framework
server; the DLI simulator answers each cancel after a delay, so the events overlap.
"""

from __future__ import annotations

import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e_support import (
    ACCESS_KEY,
    PROJECT_ID,
    SECRET_KEY,
    LocalStack,
    post_cloud_event,
    start_stack,
    stop_stack,
)
from tests.ops_support import REPO_ROOT, PubSubEmulator, Simulator

pytestmark = pytest.mark.emulator

CANCEL_DELAY_S = 0.4
SINGLE_EVENTS = 40
QUEUE_EVENTS = 4
JOBS_PER_QUEUE = 12


def deployed_threads() -> str:
    deploy = yaml.safe_load(Path(REPO_ROOT / "deploy.yaml").read_text(encoding="utf-8"))
    return str(deploy["substitutions"]["_CONCURRENCY"])


IAM_USER = ("docs-domain", "dli-robot")
IAM_PASSWORD = "iam-password-3c9e1f7a"


def auth_env(auth: str, sim: Simulator) -> dict[str, str]:
    if auth == "aksk":
        return {}
    return {
        "DLI_AUTH": "token",
        "IAM_ENDPOINT": sim.base_url,
        "IAM_DOMAIN": IAM_USER[0],
        "IAM_USERNAME": IAM_USER[1],
        "IAM_PASSWORD": IAM_PASSWORD,
    }


@pytest.mark.parametrize("auth", ["aksk", "token"])
def test_one_instance_serves_many_events_at_once(emulator: PubSubEmulator, auth: str) -> None:
    sim = Simulator(credentials={ACCESS_KEY: SECRET_KEY}, iam_users={IAM_USER: IAM_PASSWORD})
    sim.start()
    env = {"THREADS": deployed_threads(), "CANCEL_CONCURRENCY": "8", **auth_env(auth, sim)}
    stack = start_stack(emulator, env=env, sim=sim)
    try:
        stack.sim.set_cancel_delay(CANCEL_DELAY_S)
        singles = [stack.sim.submit_sql_job(PROJECT_ID) for _ in range(SINGLE_EVENTS)]
        queues = {f"conc_{uuid.uuid4().hex[:6]}": [] for _ in range(QUEUE_EVENTS)}
        for queue in queues:
            queues[queue] = stack.sim.add_sql_jobs(PROJECT_ID, JOBS_PER_QUEUE, queue_name=queue)
        events: list[tuple[str, dict[str, Any], list[str]]] = [
            (f"single-{i}", {"job_id": job}, [job]) for i, job in enumerate(singles)
        ] + [(f"queue-{q}", {"queue_names": [q]}, jobs) for q, jobs in queues.items()]

        def deliver(item: tuple[str, dict[str, Any], list[str]]) -> int:
            event_id, event, _ = item
            topic = "job-timeout" if "job_id" in event else "budget-exceeded"
            return post_cloud_event(
                stack.server.url, event, event_id=event_id, topic=topic, timeout_s=60
            ).status_code

        with ThreadPoolExecutor(max_workers=len(events)) as pool:
            statuses = list(pool.map(deliver, events))

        assert statuses == [200] * len(events)
        for event_id, _, jobs in events:
            results = stack.results_for(event_id, len(jobs))
            assert sorted(r["job_id"] for r in results) == sorted(jobs), event_id
            assert {r["outcome"] for r in results} == {"cancelled"}, event_id
        all_jobs = [job for _, _, jobs in events for job in jobs]
        assert all(stack.no_more_results(event_id, wait_s=0.5) for event_id, _, _ in events[:3])
        cancels = stack.sim.cancel_requests()
        per_job = Counter(r.path.rstrip("/").rsplit("/", 1)[-1] for r in cancels)
        assert per_job == Counter(all_jobs), "each job cancelled exactly once"
        assert max_in_flight(stack) > 1, "the events were served one after another"
        assert {r.auth for r in cancels} == {auth}
        if auth == "token":  # one token for the project, shared by every request thread
            tokens = [r for r in stack.sim.requests() if r.path == "/v3/auth/tokens"]
            assert len(tokens) == 1 and len(stack.sim.issued_tokens()) == 1
        output = stack.server.output()
        assert "Traceback" not in output and '"severity": "ERROR"' not in output
    finally:
        stop_stack(stack)


def max_in_flight(stack: LocalStack) -> int:
    """How many cancels were received within one simulated DLI delay of each other: the
    most that can have been in flight at once."""
    times = sorted(r.received_at for r in stack.sim.cancel_requests())
    best, start = 0, 0
    for end, moment in enumerate(times):
        while moment - times[start] >= CANCEL_DELAY_S:
            start += 1
        best = max(best, end - start + 1)
    return best
