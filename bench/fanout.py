"""Target 8: a budget event for a 2000-job queue fans out over FANOUT_TOPIC and is shared by two
function servers. A round-robin proxy stands in for Cloud Run's front end, which spreads one
push endpoint's requests over the service's instances."""

from __future__ import annotations

import base64
import collections
import http.client
import itertools
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import requests

from bench.report import Row
from bench.stack import MAIN, PROJECT_ID, RESULT_TOPIC, Stack, probe, server

FANOUT_TOPIC = "bench-fanout"


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """The emulator drops idle push connections at the end: not worth a traceback."""


class RoundRobinProxy:
    def __init__(self, backends: list[str]) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        cycle = itertools.cycle(backends)
        lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                with lock:
                    backend = next(cycle)
                    proxy.counts[backend] += 1
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                parts = urlsplit(backend)
                conn = http.client.HTTPConnection(str(parts.hostname), parts.port, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                conn.request("POST", self.path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                conn.close()
                self.send_response(answer.status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()


class PushRelay:
    """Pub/Sub's push delivery, with its concurrency: messages of a pull subscription are POSTed
    as push envelopes to ``url``, up to ``concurrency`` at a time, acknowledged on a 2xx and
    sent again otherwise. The emulator's own push sends about one request at a time (~30
    deliveries a second when each takes 50 ms), which the service does not."""

    def __init__(self, stack: Stack, topic: str, url: str, concurrency: int = 64) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from google.cloud import pubsub_v1
        from google.cloud.pubsub_v1.subscriber.scheduler import ThreadScheduler

        emulator = stack.emulator
        self.subscription = f"relay-{uuid.uuid4().hex[:6]}"
        emulator.create_pull_subscription(self.subscription, topic, ack_deadline_s=60)
        session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=concurrency)
        session.mount("http://", adapter)

        def deliver(message: Any) -> None:
            envelope = {
                "message": {
                    "data": base64.b64encode(message.data).decode(),
                    "attributes": dict(message.attributes),
                    "messageId": message.message_id,
                    "publishTime": message.publish_time.isoformat().replace("+00:00", "Z"),
                },
                "subscription": emulator.subscription_path(self.subscription),
            }
            try:
                answer = session.post(url, json=envelope, timeout=120)
            except requests.RequestException:
                message.nack()
                return
            (message.ack if answer.ok else message.nack)()

        scheduler = ThreadScheduler(ThreadPoolExecutor(concurrency))
        self.future = emulator.subscriber.subscribe(
            emulator.subscription_path(self.subscription),
            deliver,
            flow_control=pubsub_v1.types.FlowControl(max_messages=concurrency),
            scheduler=scheduler,
        )
        self.stack = stack

    def stop(self) -> None:
        self.future.cancel()
        self.stack.emulator.delete_subscription(self.subscription)


def fanout_setup(
    stack: Stack, jobs: int, name: str, threads: int
) -> tuple[str, str, dict[str, str]]:
    """The fan-out topic, a pull subscription on the results, a queue of ``jobs`` active jobs
    and the function's environment for two instances sharing them: ``(subscription, queue,
    env)``."""
    emulator = stack.emulator
    emulator.create_topic(FANOUT_TOPIC)
    results_sub = emulator.create_pull_subscription(
        f"{name}-results-{uuid.uuid4().hex[:6]}", RESULT_TOPIC
    )
    queue = f"{name}{uuid.uuid4().hex[:6]}"
    stack.add_jobs(jobs, queue)
    env = stack.function_env(
        FANOUT_TOPIC=emulator.topic_path(FANOUT_TOPIC),
        FANOUT_THRESHOLD="100",
        MAX_JOBS_PER_EVENT=str(jobs),
        THREADS=str(threads),
    )
    return results_sub, queue, env


def bench_fanout(stack: Stack, jobs: int = 2000) -> Row:
    emulator = stack.emulator
    results_sub, queue, env = fanout_setup(stack, jobs, "fan", threads=8)
    first_server = server(MAIN, "cancel_dli_job", env)
    with first_server as first, server(MAIN, "cancel_dli_job", env) as second:
        for s in (first, second):
            s.wait_answer(probe(s.url))
        proxy = RoundRobinProxy([first.url, second.url])
        emulator.create_push_subscription(
            f"fanout-push-{uuid.uuid4().hex[:6]}", FANOUT_TOPIC, proxy.url, ack_deadline_s=60
        )
        started = time.perf_counter()
        event = {"event_type": "budget-exceeded", "project_id": PROJECT_ID, "queue_names": [queue]}
        answer = requests.post(
            f"{first.url}/projects/bench/topics/budget-exceeded",
            data=json.dumps(push_envelope(event, "fanout-bench")),
            headers={"Content-Type": "application/json"},
            timeout=300,
        )
        answer.raise_for_status()
        received = emulator.pull(results_sub, jobs, timeout_s=300)
        elapsed = time.perf_counter() - started
        proxy.stop()
    results = [m.json() for m in received]
    job_ids = [r["job_id"] for r in results if r["outcome"] == "cancelled"]
    deletes = collections.Counter(
        r["path"].rsplit("/", 1)[-1]
        for r in requests.get(f"{stack.sim_url}/_sim/requests?cancel_only=1", timeout=60).json()
        if r["method"] == "DELETE"
    )
    exactly_once = len(set(job_ids)) == jobs and all(deletes[j] == 1 for j in job_ids)
    shares = "/".join(str(proxy.counts[u]) for u in (first.url, second.url))
    same_source = {r["source_event_id"] for r in results} == {"fanout-bench"}
    return Row(
        f"8 fan-out {jobs} jobs over 2 servers",
        len(set(job_ids)),
        jobs,
        "jobs",
        "all, exactly once",
        1.0,
        higher_is_better=True,
        note=f"{elapsed:.1f} s, shares {shares}, exactly once: {exactly_once}, "
        f"one source_event_id: {same_source}",
    )


def push_envelope(event: dict[str, Any], message_id: str) -> dict[str, Any]:
    return {
        "message": {
            "data": base64.b64encode(json.dumps(event).encode()).decode(),
            "messageId": message_id,
            "publishTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        "subscription": "projects/bench/subscriptions/budget-exceeded",
    }
