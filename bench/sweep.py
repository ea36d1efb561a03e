"""Figure 9: a watchdog sweep (SPEC 7) of 10 queues with 1,000 active jobs in all, half of them
past their limit, against the ideal: the DLI calls it made (listings and cancels, as the
simulator's request log counts them), each taking ``delay_s``, run ``concurrency`` at a time
without a gap (issue 12: within 1.2x)."""

from __future__ import annotations

import json
import time
import uuid

import requests

from bench.report import Row
from bench.stack import MAIN, PROJECT_ID, Stack, server


def bench_sweep(
    stack: Stack,
    queues: int = 10,
    jobs: int = 1000,
    delay_s: float = 0.05,
    concurrency: int = 8,
) -> Row:
    names = [f"sweep{n}_{uuid.uuid4().hex[:6]}" for n in range(queues)]
    per_queue = jobs // queues
    for queue in names:  # half started two hours ago, half a minute ago; the limit is one hour
        _seed(stack, queue, per_queue // 2, age_s=7200)
        _seed(stack, queue, per_queue - per_queue // 2, age_s=60)
    limits = {queue: {"sql": 3600} for queue in names}
    env = stack.function_env(RUNTIME_LIMITS=json.dumps(limits), CANCEL_CONCURRENCY=str(concurrency))
    admin = f"{stack.sim_url}/_sim"
    listing_delay = {"count": 1_000_000, "delay_s": delay_s, "method": "GET"}
    listing_delay["path_contains"] = f"/v1.0/{PROJECT_ID}/jobs"
    try:
        with server(MAIN, "cancel_dli_job_http", env) as ours:
            session = requests.Session()
            ours.wait_answer(lambda: session.get(ours.url, timeout=10))
            stack.http.post(f"{admin}/faults", json=listing_delay, timeout=10).raise_for_status()
            stack.sim_config(cancel_delay_s=delay_s)
            stack.http.delete(f"{admin}/requests", timeout=10).raise_for_status()
            started = time.perf_counter()
            answer = session.post(ours.url, json={"sweep": True}, timeout=600)
            elapsed = time.perf_counter() - started
            answer.raise_for_status()
    finally:
        stack.sim_config(cancel_delay_s=0)
        stack.http.delete(f"{admin}/faults", timeout=10)
    calls = stack.http.get(f"{admin}/requests", timeout=60).json()
    listings = sum(r["method"] == "GET" for r in calls)
    cancels = sum(r["method"] == "DELETE" for r in calls)
    cancelled = sum(r["outcome"] == "cancelled" for r in answer.json()["results"])
    ideal = (listings + cancels) * delay_s / concurrency
    return Row(
        f"9 sweep {queues} queues, {jobs} active jobs, {delay_s * 1000:.0f} ms per DLI call, "
        f"concurrency {concurrency}",
        elapsed,
        ideal,
        "s",
        "<= 1.2x its DLI calls at the concurrency",
        1.2,
        note=f"{listings} listings + {cancels} cancels, {cancelled} cancelled "
        f"(expected {queues * (per_queue // 2)})",
    )


def _seed(stack: Stack, queue: str, count: int, age_s: float) -> None:
    body = {"project_id": PROJECT_ID, "kind": "sql", "queue_name": queue, "count": count}
    body["age_s"] = age_s
    stack.http.post(f"{stack.sim_url}/_sim/jobs", json=body, timeout=60).raise_for_status()
