"""Issue 15's scale figures: warm events against the naive function, bulk cancels under DLI's
rate limit (one instance; two sharing the limit through fan-out), and a burst of events on one
instance against the naive function."""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import requests

from bench.fanout import FANOUT_TOPIC, PushRelay, RoundRobinProxy, fanout_setup, push_envelope
from bench.report import Row
from bench.stack import (
    APPS,
    MAIN,
    PROJECT_ID,
    Stack,
    post_cloud_event,
    probe,
    server,
)

BULK_JOBS = 1000
CANCEL_DELAY_S = 0.05
CONCURRENCY = 8
BURST_EVENTS = 128
BURST_DELAY_S = 0.2
BURST_THREADS = 32


# -- warm: one event at a time on a warm instance --------------------------------------------


def bench_warm_vs_naive(stack: Stack, events: int) -> Row:
    """Median time of one CloudEvent (cancel + result confirmed) on a warm instance, ours and
    the naive function's, sent in turn to each so that both see the same machine."""
    with (
        server(MAIN, "cancel_dli_job", stack.function_env()) as ours,
        server(APPS / "naive_main.py", "naive", stack.naive_env()) as naive,
    ):
        session = requests.Session()
        for s in (ours, naive):
            s.wait_answer(_first_event(stack, session, s.url))
        ours_times: list[float] = []
        naive_times: list[float] = []
        for job_a, job_b in zip(stack.add_jobs(events), stack.add_jobs(events), strict=True):
            for url, job, times in ((ours.url, job_a, ours_times), (naive.url, job_b, naive_times)):
                started = time.perf_counter()
                post_cloud_event(session, url, job)
                times.append(time.perf_counter() - started)
    return Row(
        "warm per event vs naive (median)",
        statistics.median(ours_times) * 1000,
        statistics.median(naive_times) * 1000,
        "ms",
        "<= 1.0x naive",
        1.0,
        note=f"{events} events each",
    )


# -- bulk under DLI's rate limit -------------------------------------------------------------


def _throttled(stack: Stack) -> tuple[int, int]:
    """(429 answers, all answers) to cancels since the request log was cleared."""
    records = stack.http.get(f"{stack.sim_url}/_sim/requests?cancel_only=1", timeout=60).json()
    return sum(r["status"] == 429 for r in records), len(records)


def _limited(stack: Stack, limit: int) -> None:
    stack.http.delete(f"{stack.sim_url}/_sim/requests", timeout=10).raise_for_status()
    stack.sim_config(cancel_delay_s=CANCEL_DELAY_S, rate_limit_per_s=limit)


def bench_rate_limited(stack: Stack, limit: int) -> Row:
    """A 1,000-job queue on one instance, DLI throttling beyond ``limit`` requests a second."""
    queue = f"rate{uuid.uuid4().hex[:6]}"
    stack.add_jobs(BULK_JOBS, queue)
    env = stack.function_env(CANCEL_CONCURRENCY=str(CONCURRENCY))
    with server(MAIN, "cancel_dli_job_http", env) as ours:
        session = requests.Session()
        ours.wait_answer(lambda: session.get(ours.url, timeout=10))
        _limited(stack, limit)
        try:
            started = time.perf_counter()
            answer = session.post(
                ours.url,
                json={"event_type": "budget-exceeded", "queue_names": [queue]},
                timeout=600,
            )
            elapsed = time.perf_counter() - started
        finally:
            stack.sim_config(cancel_delay_s=0, rate_limit_per_s=0)
    if answer.status_code != 200:
        raise RuntimeError(f"bulk event answered {answer.status_code}: {answer.text[:300]}")
    results = answer.json()["results"]
    failed = sum(r["outcome"] != "cancelled" for r in results)
    throttled, sent = _throttled(stack)
    return Row(
        f"1,000 jobs under a {limit}/s DLI limit, 1 instance",
        elapsed,
        BULK_JOBS / limit,
        "s",
        "~1.0x N/limit, <= 10 % throttled",
        1.1,
        note=f"{throttled / max(sent, 1):.1%} of {sent} requests throttled, {failed} failed",
    )


def bench_rate_fanout(stack: Stack, limit: int, threads: int = 32) -> Row:
    """A 1,000-job queue fanned out over FANOUT_TOPIC to two instances that share the limit,
    each with deploy.yaml's 32 request threads (a throttled event holds its thread for its
    Retry-After); Pub/Sub's push stood in for by ``PushRelay``, Cloud Run's front end by the
    proxy."""
    emulator = stack.emulator
    results_sub, queue, env = fanout_setup(stack, BULK_JOBS, "rfan", threads)
    with (
        server(MAIN, "cancel_dli_job", env) as first,
        server(MAIN, "cancel_dli_job", env) as second,
    ):
        for s in (first, second):
            s.wait_answer(probe(s.url))
        proxy = RoundRobinProxy([first.url, second.url])
        relay = PushRelay(stack, FANOUT_TOPIC, proxy.url)
        _limited(stack, limit)
        try:
            started = time.perf_counter()
            event = {
                "event_type": "budget-exceeded",
                "project_id": PROJECT_ID,
                "queue_names": [queue],
            }
            requests.post(
                f"{first.url}/projects/bench/topics/budget-exceeded",
                json=push_envelope(event, f"rate-{uuid.uuid4().hex[:8]}"),
                timeout=300,
            ).raise_for_status()
            received = emulator.pull(results_sub, BULK_JOBS, timeout_s=300)
            elapsed = time.perf_counter() - started
        finally:
            stack.sim_config(cancel_delay_s=0, rate_limit_per_s=0)
            relay.stop()
            proxy.stop()
    results = [m.json() for m in received]
    cancelled = len({r["job_id"] for r in results if r["outcome"] == "cancelled"})
    throttled, sent = _throttled(stack)
    return Row(
        f"1,000 jobs under a {limit}/s limit, 2 instances x {threads} threads (fan-out)",
        elapsed,
        BULK_JOBS / limit,
        "s",
        "<= 1.25x N/limit",
        1.25,
        note=f"{cancelled} cancelled, {throttled / max(sent, 1):.1%} of {sent} requests throttled",
    )


# -- burst: many events at once on one instance -----------------------------------------------


def bench_burst(stack: Stack) -> Row:
    """128 CloudEvents at once, DLI answering each cancel after 200 ms, one instance with 32
    request threads: time until the last is answered, ours against the naive function."""
    times: dict[str, float] = {}
    stack.sim_config(cancel_delay_s=BURST_DELAY_S)
    try:
        for name, source, target, env in (
            ("ours", MAIN, "cancel_dli_job", stack.function_env(THREADS=str(BURST_THREADS))),
            ("naive", APPS / "naive_main.py", "naive", {**stack.naive_env(), "THREADS": "32"}),
        ):
            with server(source, target, env) as s:
                s.wait_answer(_first_event(stack, requests.Session(), s.url))
                times[name] = _burst(s.url, stack.add_jobs(BURST_EVENTS))
    finally:
        stack.sim_config(cancel_delay_s=0)
    ideal = BURST_EVENTS / BURST_THREADS * BURST_DELAY_S
    return Row(
        f"burst {BURST_EVENTS} events, {BURST_DELAY_S * 1000:.0f} ms DLI, {BURST_THREADS} threads",
        times["ours"],
        times["naive"],
        "s",
        "<= 1.1x naive (parity)",
        1.1,
        note=f"ideal {ideal:.2f} s",
    )


def _first_event(
    stack: Stack, session: requests.Session, url: str
) -> Callable[[], requests.Response]:
    """Sends one event (once the server answers at all): its start-up is then behind it."""
    job = stack.add_jobs(1)[0]
    return lambda: post_cloud_event(session, url, job)


def _burst(url: str, jobs: list[str]) -> float:
    def one(job: str) -> None:
        post_cloud_event(requests, url, job)

    started = time.perf_counter()
    with ThreadPoolExecutor(len(jobs)) as pool:
        list(pool.map(one, jobs))
    return time.perf_counter() - started
