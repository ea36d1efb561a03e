"""``dli-cancel demo``: the whole local stack, end to end, then everything stopped again.

DLI simulator + the function under the real functions-framework server + the Pub/Sub emulator
with the trigger topics, push subscriptions and a result subscription. Without gcloud, the
events are delivered in-process and the results printed, and the demo says so.

Three events: a job-timeout for one runaway job, a budget-exceeded for a queue, and a watchdog
sweep (RUNTIME_LIMITS gives queue nightly one hour for SQL jobs) that catches the job running
there for two hours while a young one keeps running.

Then approval before cancelling (BUDGET_ACTION=propose, docs/approval.md): the HTTP entry
point in propose mode gets a budget event, answers with a proposal and its approval link,
shows the approval page, and cancels exactly the proposed jobs once the approval comes.
"""

from __future__ import annotations

import json
import secrets
import tempfile
import urllib.request
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devstack.stack import FunctionServer, PubSubEmulator, free_port, gcloud_available
from dli_simulator import Simulator

PROJECT_ID = "0123456789abcdef0123456789abcdef"
RESULT_TOPIC = "dli-cancel-results"
TRIGGER_TOPICS = ("job-timeout", "budget-exceeded")
RUNTIME_LIMITS = {"nightly": {"sql": 3600}}
Event = tuple[str, dict[str, Any], int]  # topic, event, how many results it gives


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
            "RUNTIME_LIMITS": json.dumps(RUNTIME_LIMITS),
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
        ok = _approval(stack, sim, env) and ok
    _say("everything stopped")
    return 0 if ok else 1


def _seed_jobs(sim: Simulator) -> dict[str, Any]:
    jobs = {
        "runaway": sim.submit_sql_job(PROJECT_ID, queue_name="adhoc", sql="SELECT * FROM big"),
        "etl": sim.add_sql_jobs(PROJECT_ID, 3, queue_name="etl"),
        "etl_done": sim.add_sql_jobs(PROJECT_ID, 1, queue_name="etl", status="FINISHED"),
        "other": sim.add_sql_jobs(PROJECT_ID, 1, queue_name="reporting"),
        "long": sim.submit_sql_job(PROJECT_ID, queue_name="nightly", age_s=2 * 3600),
        "young": sim.submit_sql_job(PROJECT_ID, queue_name="nightly", age_s=5 * 60),
    }
    _say(
        "submitted simulated jobs: 1 runaway on queue adhoc, 3 running + 1 finished on "
        "queue etl, 1 running on queue reporting, and on queue nightly one running for 2 h "
        "and one for 5 min"
    )
    _say(f"RUNTIME_LIMITS={json.dumps(RUNTIME_LIMITS)}: the watchdog allows 1 h on nightly")
    return jobs


def _events(jobs: dict[str, Any]) -> list[Event]:
    return [
        (
            "job-timeout",
            {
                "job_id": jobs["runaway"],
                "project_id": PROJECT_ID,
                "reason": "ran 3700 s, limit 3600 s",
            },
            1,
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
            3,
        ),
        # what Cloud Scheduler publishes every 5 minutes (deploy.yaml, sweep-schedule)
        ("job-timeout", {"event_type": "job-timeout", "sweep": True}, 1),
    ]


def _through_pubsub(
    stack: ExitStack, env: dict[str, str], events: list[Event]
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
    for topic, event, expected in events:
        message_id = emulator.publish(topic, json.dumps(event).encode())
        what = "watchdog sweep" if event.get("sweep") else f"{topic} event"
        _say(f"published a {what} to topic {topic} (message {message_id})")
        received = emulator.pull(results_sub, expected, timeout_s=30)
        results.extend(message.json() for message in received)
    return results


def _in_process(env: dict[str, str], events: list[Event]) -> list[Any]:
    from cancel_handler import handler
    from cancel_handler.config import load_settings
    from cancel_handler.envelopes import Delivery
    from cancel_handler.results import MemorySink
    from cancel_handler.runtime import build_runtime

    sink = MemorySink()
    rt = build_runtime(load_settings(env, local_run=True), sink=sink)
    for topic, event, _ in events:
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
            f"attempts={r['attempts']}" + (f"  ({r['reason']})" if r.get("reason") else "")
        )


def _print_states(sim: Simulator, jobs: dict[str, Any]) -> None:
    _say("final job states in the simulator:")
    for label, ids in jobs.items():
        for job_id in ids if isinstance(ids, list) else [ids]:
            print(f"  {label:<9} {job_id}  {sim.job_status(PROJECT_ID, job_id)}")


def _check(sim: Simulator, jobs: dict[str, Any], results: list[dict[str, Any]]) -> bool:
    cancelled = {r["job_id"] for r in results if r["outcome"] == "cancelled"}
    expected = {jobs["runaway"], *jobs["etl"], jobs["long"]}
    untouched = [*jobs["etl_done"], *jobs["other"], jobs["young"]]
    ok = cancelled == expected and all(
        sim.job_status(PROJECT_ID, j) != "CANCELLED" for j in untouched
    )
    _say(
        "demo OK: the runaway job and the etl queue were cancelled, the watchdog caught the "
        "job past its limit on nightly while the young one keeps running; nothing else was "
        "touched"
        if ok
        else "demo FAILED: the results are not what was expected"
    )
    return ok


def _approval(stack: ExitStack, sim: Simulator, env: dict[str, str]) -> bool:
    """A budget event proposed, its page shown, its approval cancelling exactly its jobs."""
    _say("approval before cancelling (BUDGET_ACTION=propose)")
    key_dir = tempfile.TemporaryDirectory(prefix="dli-cancel-demo-")
    stack.callback(key_dir.cleanup)
    key_file = Path(key_dir.name) / "approval-keys"
    key_file.write_text(secrets.token_urlsafe(48) + "\n")
    port = free_port()
    server = FunctionServer(
        "cancel_dli_job_http",
        {
            **env,
            "DLI_LOCAL_RUN": "true",  # results in the HTTP answers (and the server's log)
            "BUDGET_ACTION": "propose",
            "APPROVAL_KEY_FILE": str(key_file),
            "APPROVAL_BASE_URL": f"http://127.0.0.1:{port}",
        },
        port=port,
    )
    server.start()
    stack.callback(server.stop)
    _say(f"function cancel_dli_job_http in propose mode on {server.url}")
    planned = sim.add_sql_jobs(PROJECT_ID, 2, queue_name="finance")
    event = {"event_type": "budget-exceeded", "queue_names": ["finance"], **_BUDGET}
    proposal = _post_json(server.url, event)
    _say("POSTed a budget-exceeded event for queue finance: proposed, nothing cancelled")
    for r in proposal:
        print(f"  {r['job_id']}  {r['outcome']}  queue={r.get('queue_name')}")
    token, link = proposal[0]["approval_token"], proposal[0]["approval_url"]
    _say(f"the approval link ({len(token)}-character token, signed and expiring):")
    print(f"  {link}")
    with urllib.request.urlopen(link, timeout=30) as page:
        html = page.read().decode()
    title = html.split("<h1>", 1)[1].split("</h1>", 1)[0]
    _say(f"GET the link: the approval page says {title!r}, with an Approve button")
    later = sim.submit_sql_job(PROJECT_ID, queue_name="finance")
    _say("a new job starts on queue finance after the proposal")
    approval = _post_json(server.url, {"event_type": "budget-exceeded", "approve": token})
    _say('POSTed {"event_type": "budget-exceeded", "approve": TOKEN}:')
    for r in approval:
        print(f"  {r['job_id']}  {r['outcome']}  reason={r['reason']}")
    _say("final job states on queue finance:")
    for job_id in [*planned, later]:
        label = "proposed" if job_id in planned else "later"
        print(f"  {label:<9} {job_id}  {sim.job_status(PROJECT_ID, job_id)}")
    ok = (
        {r["outcome"] for r in proposal} == {"awaiting_approval"}
        and {r["job_id"]: r["outcome"] for r in approval} == {j: "cancelled" for j in planned}
        and sim.job_status(PROJECT_ID, later) == "RUNNING"
    )
    _say(
        "approval OK: exactly the proposed jobs were cancelled, the later one runs on"
        if ok
        else "approval FAILED: the results are not what was expected"
    )
    return ok


_BUDGET = {"budget": {"name": "finance-monthly", "cost": 512.0, "amount": 500, "currency": "EUR"}}


def _post_json(url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        results: list[dict[str, Any]] = json.loads(answer.read())["results"]
    return results


def _say(text: str) -> None:
    print(f"==> {text}", flush=True)
