"""``dli-cancel demo``: the whole local stack, end to end, then everything stopped again.

DLI simulator + the function under the real functions-framework server + the Pub/Sub emulator
with the trigger topics, push subscriptions and a result subscription. Without gcloud, the
events are delivered in-process and the results printed, and the demo says so.
"""

from __future__ import annotations

import json
import secrets
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

from devstack.stack import FunctionServer, PubSubEmulator, gcloud_available
from dli_simulator import Simulator

PROJECT_ID = "0123456789abcdef0123456789abcdef"
RESULT_TOPIC = "dli-cancel-results"
TRIGGER_TOPICS = ("job-timeout", "budget-exceeded")


def run() -> int:
    access_key, secret_key = "DEMO" + secrets.token_hex(8).upper(), secrets.token_hex(20)
    with ExitStack() as stack:
        sim = Simulator(credentials={access_key: secret_key})
        sim.start()
        stack.callback(sim.stop)
        _say(f"DLI simulator listening on {sim.base_url}")
        jobs = _seed_jobs(sim)
        env = {
            "DLI_ENDPOINT": sim.base_url,
            "DLI_PROJECT_ID": PROJECT_ID,
            "HUAWEICLOUD_SDK_AK": access_key,
            "HUAWEICLOUD_SDK_SK": secret_key,
            "DLI_RETRY_BASE_S": "0.1",
        }
        events = _events(jobs)
        if gcloud_available():
            results = _through_pubsub(stack, env, events)
        else:
            _say(
                "gcloud is not installed: delivering the events in-process instead of "
                "through the Pub/Sub emulator and functions-framework"
            )
            results = _in_process(env, events)
        _print_results(results)
        _print_states(sim, jobs)
        ok = _check(sim, jobs, results)
    _say("everything stopped")
    return 0 if ok else 1


def _seed_jobs(sim: Simulator) -> dict[str, Any]:
    jobs = {
        "runaway": sim.submit_sql_job(PROJECT_ID, queue_name="adhoc", sql="SELECT * FROM big"),
        "etl": sim.add_sql_jobs(PROJECT_ID, 3, queue_name="etl"),
        "etl_done": sim.add_sql_jobs(PROJECT_ID, 1, queue_name="etl", status="FINISHED"),
        "other": sim.add_sql_jobs(PROJECT_ID, 1, queue_name="reporting"),
    }
    _say(
        "submitted simulated jobs: 1 runaway on queue adhoc, 3 running + 1 finished on "
        "queue etl, 1 running on queue reporting"
    )
    return jobs


def _events(jobs: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (
            "job-timeout",
            {
                "job_id": jobs["runaway"],
                "project_id": PROJECT_ID,
                "reason": "ran 3700 s, limit 3600 s",
            },
        ),
        (
            "budget-exceeded",
            {
                "project_id": PROJECT_ID,
                "queue_names": ["etl"],
                "budget": {
                    "name": "dli-monthly",
                    "cost": 1043.2,
                    "amount": 1000,
                    "currency": "EUR",
                },
            },
        ),
    ]


def _through_pubsub(
    stack: ExitStack, env: dict[str, str], events: list[tuple[str, dict[str, Any]]]
) -> list[dict[str, Any]]:
    emulator = PubSubEmulator()
    _say("starting the Pub/Sub emulator (gcloud beta emulators pubsub start) ...")
    emulator.start()
    stack.callback(emulator.stop)
    _say(f"Pub/Sub emulator on {emulator.host}")
    emulator.create_topic(RESULT_TOPIC)
    results_sub = emulator.create_pull_subscription(f"{RESULT_TOPIC}-demo", RESULT_TOPIC)
    server = FunctionServer(
        "cancel_dli_job",
        {**env, **emulator.env(), "RESULT_TOPIC": RESULT_TOPIC},
    )
    server.start()
    stack.callback(server.stop)
    _say(f"function cancel_dli_job under functions-framework on {server.url}")
    for topic in TRIGGER_TOPICS:
        emulator.create_topic(topic)
        emulator.create_push_subscription(
            f"{topic}-push", topic, emulator.push_endpoint(server.url, topic)
        )
    results: list[dict[str, Any]] = []
    for topic, event in events:
        message_id = emulator.publish(topic, json.dumps(event).encode())
        _say(f"published a {topic} event to topic {topic} (message {message_id})")
        expected = 1 if topic == "job-timeout" else 3
        received = emulator.pull(results_sub, expected, timeout_s=30)
        results.extend(message.json() for message in received)
    return results


def _in_process(env: dict[str, str], events: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    from cancel_handler import handler
    from cancel_handler.config import load_settings
    from cancel_handler.envelopes import Delivery
    from cancel_handler.results import MemorySink
    from cancel_handler.runtime import build_runtime

    sink = MemorySink()
    rt = build_runtime(load_settings(env, local_run=True), sink=sink)
    for topic, event in events:
        delivery = Delivery(
            json.dumps(event).encode(),
            {},
            topic,
            f"demo-{uuid.uuid4()}",
            datetime.now(UTC),
            "cloudevent",
        )
        handler.process(delivery, rt)
    return sink.results


def _print_results(results: list[dict[str, Any]]) -> None:
    """The first result event in full, then one line per result."""
    if results:
        _say(f"first result event, as published ({results[0]['event_type']}):")
        print(json.dumps(results[0], indent=2))
    _say(f"all {len(results)} result events:")
    for r in results:
        print(
            f"  {r['event_type']:<16} {r['job_id']}  {r['outcome']:<17} "
            f"is_success={str(r['is_success']).lower():<5} http={r['http_status']} "
            f"attempts={r['attempts']}"
        )


def _print_states(sim: Simulator, jobs: dict[str, Any]) -> None:
    _say("final job states in the simulator:")
    for label, ids in jobs.items():
        for job_id in ids if isinstance(ids, list) else [ids]:
            print(f"  {label:<9} {job_id}  {sim.job_status(PROJECT_ID, job_id)}")


def _check(sim: Simulator, jobs: dict[str, Any], results: list[dict[str, Any]]) -> bool:
    cancelled = {r["job_id"] for r in results if r["outcome"] == "cancelled"}
    expected = {jobs["runaway"], *jobs["etl"]}
    untouched = [*jobs["etl_done"], *jobs["other"]]
    ok = cancelled == expected and all(
        sim.job_status(PROJECT_ID, j) != "CANCELLED" for j in untouched
    )
    _say(
        "demo OK: the runaway job and the etl queue were cancelled, nothing else was touched"
        if ok
        else "demo FAILED: the results are not what was expected"
    )
    return ok


def _say(text: str) -> None:
    print(f"==> {text}", flush=True)
