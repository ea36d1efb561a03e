"""``make bench``: every figure of issues 7 and 15 on the local stack, with ratios against
baselines measured in the same run. Prints a table; exits 0 (targets are reported, not
asserted). The machine it ran on is printed with it."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from bench.fanout import bench_fanout
from bench.report import Row, print_table
from bench.scale import bench_burst, bench_rate_fanout, bench_rate_limited, bench_warm_vs_naive
from bench.stack import (
    AK,
    APPS,
    MAIN,
    PROJECT_ID,
    RESULT_TOPIC,
    SK,
    Stack,
    post_cloud_event,
    probe,
    server,
)
from bench.sweep import bench_sweep
from devstack.stack import gcloud_available


def cloud_event_request(url: str, job_id: str) -> Callable[[], requests.Response]:
    return lambda: post_cloud_event(requests, url, job_id)


def median(values: list[float]) -> float:
    return statistics.median(values)


# -- 1 and 2: cold start ------------------------------------------------------------------


def bench_cold(stack: Stack, runs: int) -> list[Row]:
    ours_first: list[float] = []
    naive_first: list[float] = []
    ours_ready: list[float] = []
    hello_ready: list[float] = []
    for _ in range(runs):
        for job_list, source, target, env in (
            (ours_first, MAIN, "cancel_dli_job", stack.function_env()),
            (naive_first, APPS / "naive_main.py", "naive", stack.naive_env()),
        ):
            job = stack.add_jobs(1)[0]
            with server(source, target, env) as s:
                job_list.append(s.wait_answer(cloud_event_request(s.url, job)))
        for ready_list, source, target, env in (
            (ours_ready, MAIN, "cancel_dli_job_http", stack.function_env()),
            (hello_ready, APPS / "hello_main.py", "hello", {}),
        ):
            with server(source, target, env) as s:
                ready_list.append(s.wait_answer(probe(s.url)))
    return [
        Row(
            "cold first result vs naive (median)",
            median(ours_first),
            median(naive_first),
            "s",
            "<= 1.1x naive",
            1.1,
            note=f"{len(ours_first)} runs each",
        ),
        Row(
            "cold start to ready vs hello (median)",
            median(ours_ready),
            median(hello_ready),
            "s",
            "<= 1.3x hello world",
            1.3,
        ),
    ]


# -- 3 and 4: warm latency, throughput -------------------------------------------------------


def _floor_round(
    stack: Stack, hello_url: str, session: requests.Session, publisher: Any, topic: str, job: str
) -> None:
    session.post(hello_url, data=b"{}", timeout=10).raise_for_status()
    session.delete(
        f"{stack.sim_url}/v1.0/{PROJECT_ID}/jobs/{job}",
        headers={"X-Auth-Token": stack.token},
        timeout=10,
    ).raise_for_status()
    publisher.publish(topic, b'{"floor": true}').result()


def _low_latency_publisher(stack: Stack) -> Any:
    from google.cloud import pubsub_v1

    os.environ["PUBSUB_EMULATOR_HOST"] = stack.emulator.host
    return pubsub_v1.PublisherClient(
        batch_settings=pubsub_v1.types.BatchSettings(max_messages=1, max_latency=0.0005)
    )


def bench_warm(stack: Stack, events: int) -> list[Row]:
    publisher = _low_latency_publisher(stack)
    topic = stack.emulator.topic_path(RESULT_TOPIC)
    env = stack.function_env(THREADS="8")
    with (
        server(MAIN, "cancel_dli_job_http", env) as ours,
        server(APPS / "hello_main.py", "hello", {"THREADS": "8"}) as hello,
    ):
        session = requests.Session()
        ours.wait_answer(lambda: session.get(ours.url, timeout=10))
        hello.wait_answer(lambda: session.get(hello.url, timeout=10))
        ours_times = _sequential_events(stack, session, ours.url, events)
        floor_times = []
        for job in stack.add_jobs(events):
            started = time.perf_counter()
            _floor_round(stack, hello.url, session, publisher, topic, job)
            floor_times.append(time.perf_counter() - started)
        ours_rate = _concurrent_rate(
            stack, 16, events * 2, lambda s, job: _post_event(s, ours.url, job)
        )
        floor_rate = _concurrent_rate(
            stack,
            16,
            events * 2,
            lambda s, job: _floor_round(stack, hello.url, s, publisher, topic, job),
        )
    return [
        Row(
            "warm per-event latency vs floor (median)",
            median(ours_times) * 1000,
            median(floor_times) * 1000,
            "ms",
            "<= 1.3x floor",
            1.3,
        ),
        Row(
            "throughput, 16 clients, THREADS=8 vs floor",
            ours_rate,
            floor_rate,
            "ev/s",
            ">= 0.8x floor",
            0.8,
            higher_is_better=True,
        ),
    ]


def _post_event(session: requests.Session, url: str, job: str) -> None:
    answer = session.post(url, json={"event_type": "job-timeout", "job_id": job}, timeout=30)
    if answer.status_code != 200 or answer.json()["results"][0]["outcome"] != "cancelled":
        raise RuntimeError(f"event failed: {answer.status_code} {answer.text[:300]}")


def _sequential_events(stack: Stack, session: requests.Session, url: str, n: int) -> list[float]:
    times = []
    for job in stack.add_jobs(n):
        started = time.perf_counter()
        _post_event(session, url, job)
        times.append(time.perf_counter() - started)
    return times


def _concurrent_rate(
    stack: Stack, clients: int, total: int, one: Callable[[requests.Session, str], None]
) -> float:
    jobs = stack.add_jobs(total)
    shares = [jobs[i::clients] for i in range(clients)]

    def client(share: list[str]) -> None:
        session = requests.Session()
        for job in share:
            one(session, job)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, shares))
    return total / (time.perf_counter() - started)


# -- 5: bulk -----------------------------------------------------------------------------------


def bench_bulk(stack: Stack, jobs: int = 1000, delay_s: float = 0.05, concurrency: int = 8) -> Row:
    queue = f"bulk{uuid.uuid4().hex[:6]}"
    stack.add_jobs(jobs, queue)
    listing = _listing_time(stack, queue)
    stack.sim_config(cancel_delay_s=delay_s)
    env = stack.function_env(CANCEL_CONCURRENCY=str(concurrency))
    try:
        with server(MAIN, "cancel_dli_job_http", env) as ours:
            session = requests.Session()
            ours.wait_answer(lambda: session.get(ours.url, timeout=10))
            started = time.perf_counter()
            answer = session.post(
                ours.url,
                json={"event_type": "budget-exceeded", "queue_names": [queue]},
                timeout=600,
            )
            elapsed = time.perf_counter() - started
    finally:
        stack.sim_config(cancel_delay_s=0)
    results = answer.json()["results"]
    cancelled = sum(r["outcome"] == "cancelled" for r in results)
    ideal = jobs * delay_s / concurrency + listing
    return Row(
        f"{jobs} jobs, 50 ms each, concurrency {concurrency} vs ideal",
        elapsed,
        ideal,
        "s",
        "<= 1.12x N x 50 ms / 8 + listing",
        1.12,
        note=f"{cancelled} cancelled, listing {listing:.2f} s",
    )


def _listing_time(stack: Stack, queue: str) -> float:
    from cancel_handler.config import Secret
    from cancel_handler.dli.auth import AkSkAuth, EnvCredentials
    from cancel_handler.dli.client import DliClient, RetryPolicy

    client = DliClient(
        stack.sim_url, AkSkAuth(EnvCredentials(Secret(AK), Secret(SK), None)), RetryPolicy()
    )
    started = time.perf_counter()
    found = client.list_active_sql_jobs(PROJECT_ID, queue)
    assert found, "listing found no job"
    return time.perf_counter() - started


# -- 6: memory ---------------------------------------------------------------------------------


def bench_memory(stack: Stack) -> list[Row]:
    with (
        server(MAIN, "cancel_dli_job_http", stack.function_env()) as ours,
        server(APPS / "hello_pubsub_main.py", "hello", {}) as hello,
    ):
        session = requests.Session()
        ours.wait_answer(lambda: session.get(ours.url, timeout=10))
        hello.wait_answer(lambda: session.get(hello.url, timeout=10))
        jobs = stack.add_jobs(1000)
        for job in jobs[:10]:
            _post_event(session, ours.url, job)
            session.post(hello.url, data=b"{}", timeout=10)
        after_10 = ours.worker_hwm_kib()
        hello_rss = hello.worker_hwm_kib()
        hello_pss = hello.instance_pss_kib()
        for job in jobs[10:]:
            _post_event(session, ours.url, job)
        after_1000 = ours.worker_hwm_kib()
        ours_pss = ours.instance_pss_kib()
    return [
        Row(
            "peak RSS after 1000 events vs 10",
            after_1000 / 1024,
            after_10 / 1024,
            "MiB",
            "<= 1.1x",
            1.1,
        ),
        Row(
            "worker peak RSS vs hello+pubsub",
            after_1000 / 1024,
            hello_rss / 1024,
            "MiB",
            "<= 1.2x",
            1.2,
            note="hello imports pubsub in the master: shared, not counted",
        ),
        Row(
            "instance memory (PSS) vs hello+pubsub",
            ours_pss / 1024,
            hello_pss / 1024,
            "MiB",
            "<= 1.2x",
            1.2,
            note="master + worker, shared pages counted once",
        ),
    ]


# -- 7: signer ---------------------------------------------------------------------------------


def bench_signer(n: int = 20000) -> Row:
    from cancel_handler.dli import signer

    path = f"/v1.0/{PROJECT_ID}/jobs/5a3a2c2e-1111-4222-8333-944455556666"
    headers = {
        "Host": "dli.example.com",
        "Content-Type": "application/json",
        "X-Project-Id": PROJECT_ID,
        "X-Sdk-Date": "20261128T120000Z",
    }
    signed = sorted((name.lower(), value) for name, value in headers.items())
    started = time.perf_counter()
    for _ in range(n):  # what the DLI client runs for each request
        signer.sign_prepared("DELETE", path, signed, "20261128T120000Z", AK, SK)
    ours = (time.perf_counter() - started) / n
    os.environ["HOME"] = tempfile.mkdtemp(prefix="bench-home-")  # the SDK writes $HOME
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.sdk_request import SdkRequest
    from huaweicloudsdkcore.signer.signer import Signer

    official = Signer(BasicCredentials(AK, SK))
    started = time.perf_counter()
    for _ in range(n // 4):
        request = SdkRequest(
            method="DELETE",
            schema="https",
            host="dli.example.com",
            resource_path=path,
            query_params=[],
            header_params=dict(headers),
            body=None,
        )
        official.sign(request)
    theirs = (time.perf_counter() - started) / (n // 4)
    return Row(
        "signer, per signature vs official",
        ours * 1e6,
        theirs * 1e6,
        "us",
        "<= 0.25x official",
        0.25,
    )


# -- report ------------------------------------------------------------------------------------


FIGURES = "signer,cold,warm,naive,bulk,rate,fanrate,burst,memory,fanout,sweep"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench")
    parser.add_argument("--runs", type=int, default=7, help="cold-start runs per app")
    parser.add_argument("--events", type=int, default=200, help="events for warm figures")
    parser.add_argument("--only", default=FIGURES, help=f"comma list of: {FIGURES}")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    if not gcloud_available():
        print("make bench needs gcloud with the Pub/Sub emulator", file=sys.stderr)
        return 2
    started = time.perf_counter()
    rows = [bench_signer()] if "signer" in only else []
    stack = Stack()
    try:
        if "cold" in only:
            rows += bench_cold(stack, args.runs)
        if "naive" in only:
            rows.append(bench_warm_vs_naive(stack, args.events))
        if "bulk" in only:
            rows.append(bench_bulk(stack))
        if "rate" in only:
            rows += [bench_rate_limited(stack, limit) for limit in (100, 50)]
        if "fanrate" in only:
            rows.append(bench_rate_fanout(stack, 100))
        if "burst" in only:
            rows.append(bench_burst(stack))
        if "warm" in only:
            rows += bench_warm(stack, args.events)
        if "memory" in only:
            rows += bench_memory(stack)
        if "fanout" in only:
            rows.append(bench_fanout(stack))
        if "sweep" in only:
            rows.append(bench_sweep(stack))
    finally:
        stack.close()
    print()
    print(machine())
    print(f"make bench took {time.perf_counter() - started:.0f} s")
    print()
    print_table(rows)
    return 0


def machine() -> str:
    """The machine the figures were measured on: CPU model, cores, memory, load, Python."""
    import platform

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in open("/proc/cpuinfo", encoding="utf-8")  # noqa: SIM115
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )
    with open("/proc/meminfo", encoding="utf-8") as meminfo:
        mem_kib = int(meminfo.readline().split()[1])
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"machine: {cpu}, {os.cpu_count()} cores, {mem_kib / 1024 / 1024:.1f} GiB; "
        f"load average {load}; Python {platform.python_version()} on {platform.system()}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
