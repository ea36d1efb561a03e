"""The watchdog end to end (SPEC 7): sweeps through the Pub/Sub emulator (push), as Eventarc
CloudEvents and over HTTP, to the function under functions-framework, against the DLI
simulator seeded with jobs of given ages; results read back from the result topic.

Each test sweeps its own DLI project (all of them in the allow-list), so the tests of this
module share one stack without seeing each other's jobs.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from devstack.stack import FunctionServer, PubSubEmulator
from dli_simulator import Fault, Simulator
from tests.e2e_support import (
    OTHER_PROJECT_ID,
    RESULT_TOPIC,
    LocalStack,
    base_env,
    post_cloud_event,
    start_stack,
    stop_stack,
)

pytestmark = pytest.mark.emulator

POLICY = {
    "etl": {"sql": 3600, "spark": 7200, "flink": 1800},
    "adhoc": {},
    "*": {"sql": 600},
}
PROJECTS = [uuid.uuid4().hex for _ in range(16)]
ENV = {
    "RUNTIME_LIMITS": json.dumps(POLICY),
    "DLI_PROJECT_ID": PROJECTS[0],
    "DLI_ALLOWED_PROJECT_IDS": ",".join(PROJECTS),
}
FANOUT = "dli-cancel-sweep-fanout"


@pytest.fixture(scope="module")
def stack(emulator: PubSubEmulator) -> Iterator[LocalStack]:
    local = start_stack(emulator, env=ENV)
    try:
        yield local
    finally:
        stop_stack(local)


_unused = iter(PROJECTS[1:])


@pytest.fixture
def project() -> str:
    """A DLI project of this test's own."""
    return next(_unused)


def sweep(project: str, **extra: Any) -> dict[str, Any]:
    return {"event_type": "job-timeout", "sweep": True, "project_id": project, **extra}


def requested_ids(sim: Simulator, project: str) -> set[str]:
    """Every job id a request of ``project`` named: in its path (status reads, SQL and Spark
    cancels) or in Flink's stop body."""
    named: set[str] = set()
    for record in sim.requests():
        if f"/{project}/" not in record.path:
            continue
        parts = record.path.rstrip("/").split("/")
        if parts[-1] not in ("jobs", "batches", "stop"):
            named.add(parts[-2] if parts[-1] in ("status", "state") else parts[-1])
        if record.path.endswith("/streaming/jobs/stop"):
            named.update(str(i) for i in json.loads(record.body)["job_ids"])
    return named


def log_records(server: FunctionServer, event_id: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event_id") == event_id]


def summary_of(server: FunctionServer, event_id: str, timeout_s: float = 20) -> dict[str, Any]:
    """The one ``sweep summary`` line the function logged for ``event_id``."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = [r for r in log_records(server, event_id) if r["message"] == "sweep summary"]
        if found or time.monotonic() > deadline:
            assert len(found) == 1, found
            return found[0]
        time.sleep(0.1)


# -- which jobs a sweep cancels ----------------------------------------------------------------


def test_a_limit_per_queue_and_kind_cancels_only_the_jobs_past_it(
    stack: LocalStack, project: str
) -> None:
    sim = stack.sim
    old_sql = sim.submit_sql_job(project, queue_name="etl", age_s=3700)
    young_sql = sim.submit_sql_job(project, queue_name="etl", age_s=60)
    old_spark = sim.add_spark_batch(project, queue_name="etl", age_s=7300)
    young_spark = sim.add_spark_batch(project, queue_name="etl", age_s=3700)
    old_flink = str(sim.add_flink_job(project, queue_name="etl", age_s=1900))
    young_flink = str(sim.add_flink_job(project, queue_name="etl", age_s=60))

    message_id = stack.publish("job-timeout", sweep(project))
    results = stack.results_for(message_id, 3)

    by_job = {r["job_id"]: r for r in results}
    assert set(by_job) == {old_sql, old_spark, old_flink}
    for job, kind, limit in ((old_sql, "sql", 3600), (old_spark, "spark", 7200)):
        result = by_job[job]
        assert (result["outcome"], result["is_success"], result["job_kind"]) == (
            "cancelled",
            True,
            kind,
        )
        runtime = result["context"]["runtime_s"]
        assert result["reason"] == f"ran {runtime} s, limit {limit} s"
        assert result["context"] == {"runtime_s": runtime, "limit_s": limit, "queue_name": "etl"}
        assert result["event_type"] == "job-timeout" and result["project_id"] == project
        assert result["_attributes"]["job_id"] == job
    assert by_job[old_sql]["context"]["runtime_s"] >= 3700
    assert by_job[old_flink]["job_kind"] == "flink"
    assert by_job[old_flink]["reason"].endswith("limit 1800 s")
    assert sim.job_status(project, old_sql) == "CANCELLED"
    assert sim.job_status(project, old_spark) == "dead"
    assert sim.job_status(project, old_flink) == "job_cancel_success"
    for young in (young_sql, young_spark, young_flink):
        assert sim.job_status(project, young) in ("RUNNING", "running", "job_running")
    # the young jobs were listed, never named in a request
    assert requested_ids(sim, project) == {old_sql, old_spark, old_flink}
    assert stack.no_more_results(message_id)


def test_the_star_rule_covers_the_queues_the_policy_does_not_name(
    stack: LocalStack, project: str
) -> None:
    sim = stack.sim
    over = sim.submit_sql_job(project, queue_name="reporting", age_s=700)
    within = sim.submit_sql_job(project, queue_name="reporting", age_s=100)
    kept_out = sim.submit_sql_job(project, queue_name="adhoc", age_s=90_000)  # named, no limit
    own_limit = sim.submit_sql_job(project, queue_name="etl", age_s=700)  # etl's own 3600
    no_star_kind = sim.add_spark_batch(project, queue_name="reporting", age_s=90_000)

    message_id = stack.publish("job-timeout", sweep(project))
    [result] = stack.results_for(message_id, 1)

    assert result["job_id"] == over
    assert result["context"]["limit_s"] == 600
    assert result["context"]["queue_name"] == "reporting"
    assert stack.no_more_results(message_id)
    for job in (within, kept_out, own_limit):
        assert sim.job_status(project, job) == "RUNNING"
    assert sim.job_status(project, no_star_kind) == "running"
    assert requested_ids(sim, project) == {over}


def test_tags_exempt_a_job_or_give_it_its_own_limit(stack: LocalStack, project: str) -> None:
    sim = stack.sim
    exempt = sim.submit_sql_job(
        project, queue_name="etl", age_s=90_000, tags={"dli-cancel": "exempt"}
    )
    strict = sim.submit_sql_job(
        project, queue_name="etl", age_s=120, tags={"dli-cancel-max-runtime-s": "60"}
    )
    lenient = sim.submit_sql_job(
        project, queue_name="etl", age_s=5000, tags={"dli-cancel-max-runtime-s": "86400"}
    )

    message_id = stack.publish("job-timeout", sweep(project))
    [result] = stack.results_for(message_id, 1)

    assert result["job_id"] == strict and result["outcome"] == "cancelled"
    assert result["context"]["limit_s"] == 60
    assert result["reason"].endswith("limit 60 s")
    assert stack.no_more_results(message_id)
    assert sim.job_status(project, exempt) == "RUNNING"
    assert sim.job_status(project, lenient) == "RUNNING"
    assert requested_ids(sim, project) == {strict}


def test_nothing_over_the_limit_publishes_nothing_and_logs_one_summary(
    stack: LocalStack, project: str
) -> None:
    sim = stack.sim
    jobs = [sim.submit_sql_job(project, queue_name="etl", age_s=age) for age in (10, 600)]
    jobs.append(sim.submit_sql_job(project, queue_name="reporting", age_s=30))

    message_id = stack.publish("job-timeout", sweep(project))

    summary = summary_of(stack.server, message_id)
    assert summary["severity"] == "INFO"
    assert summary["queues"] == ["etl", "*"]
    assert (summary["jobs_seen"], summary["over_limit"]) == (3, 0)
    assert stack.no_more_results(message_id), "a sweep over nothing publishes nothing"
    assert requested_ids(sim, project) == set()
    assert all(sim.job_status(project, job) == "RUNNING" for job in jobs)


def test_dry_run_reports_what_it_would_cancel(stack: LocalStack, project: str) -> None:
    sim = stack.sim
    old = sim.submit_sql_job(project, queue_name="etl", age_s=4000)
    sim.submit_sql_job(project, queue_name="etl", age_s=60)

    message_id = stack.publish("job-timeout", sweep(project, dry_run=True))
    [result] = stack.results_for(message_id, 1)

    assert (result["job_id"], result["outcome"], result["dry_run"]) == (old, "dry_run", True)
    assert result["context"]["limit_s"] == 3600 and result["context"]["runtime_s"] >= 4000
    assert result["reason"].startswith("ran ")
    assert sim.job_status(project, old) == "RUNNING"
    assert requested_ids(sim, project) == set()


def test_a_project_outside_the_allow_list_is_one_result_and_never_reaches_dli(
    stack: LocalStack,
) -> None:
    old = stack.sim.submit_sql_job(OTHER_PROJECT_ID, queue_name="etl", age_s=90_000)

    message_id = stack.publish("job-timeout", sweep(OTHER_PROJECT_ID, queue_names=["etl", "bi"]))
    [result] = stack.results_for(message_id, 1)

    assert (result["outcome"], result["job_id"]) == ("not_allowed", "")
    assert result["error_code"] == "PROJECT_NOT_ALLOWED"
    assert stack.no_more_results(message_id)
    assert not [r for r in stack.sim.requests() if OTHER_PROJECT_ID in r.path]
    assert stack.sim.job_status(OTHER_PROJECT_ID, old) == "RUNNING"


def test_an_invalid_sweep_is_one_result(stack: LocalStack, project: str) -> None:
    message_id = stack.publish("job-timeout", sweep(project, job_id=str(uuid.uuid4())))
    [result] = stack.results_for(message_id, 1)

    assert (result["outcome"], result["job_id"]) == ("invalid_event", "")
    assert "a sweep names no job_id" in result["message"]
    assert stack.no_more_results(message_id)


def test_a_sweep_restricted_to_some_queues(stack: LocalStack, project: str) -> None:
    sim = stack.sim
    asked = sim.submit_sql_job(project, queue_name="reporting", age_s=700)
    not_asked = sim.submit_sql_job(project, queue_name="etl", age_s=90_000)

    message_id = stack.publish("job-timeout", sweep(project, queue_names=["reporting"]))
    [result] = stack.results_for(message_id, 1)

    assert result["job_id"] == asked
    assert stack.no_more_results(message_id)
    assert sim.job_status(project, not_asked) == "RUNNING"
    listed = {r.query.get("queue_name") for r in sim.requests() if f"/{project}/" in r.path}
    assert listed == {"reporting", None}  # the listings, then the cancel (no queue filter)


# -- delivery rules ------------------------------------------------------------------------------


def test_a_listing_fault_on_a_young_sweep_delivers_it_again(
    stack: LocalStack, project: str
) -> None:
    sim = stack.sim
    old_sql = sim.submit_sql_job(project, queue_name="etl", age_s=3700)
    old_spark = sim.add_spark_batch(project, queue_name="etl", age_s=7300)
    sim.add_fault(Fault(count=3, status=503, path_contains=f"/v2.0/{project}/batches"))
    event_id = f"sweep-fault-{uuid.uuid4().hex[:8]}"

    first = post_cloud_event(stack.server.url, sweep(project), event_id=event_id)

    assert first.status_code == 500, first.text  # not acknowledged: Pub/Sub delivers it again
    assert "DLI_HTTP_503" in first.text
    # what it could list was cancelled; the queue it could not list has no result yet
    [cancelled] = stack.results_for(event_id, 1)
    assert (cancelled["job_id"], cancelled["outcome"]) == (old_sql, "cancelled")
    assert sim.job_status(project, old_spark) == "running"

    again = post_cloud_event(stack.server.url, sweep(project), event_id=event_id)

    assert again.status_code == 200, again.text
    results = stack.results_for(event_id, 2)
    assert [(r["job_id"], r["outcome"]) for r in results[1:]] == [(old_spark, "cancelled")]
    assert sim.job_status(project, old_spark) == "dead"
    assert stack.no_more_results(event_id)
    deletes = [r.path for r in sim.cancel_requests() if f"/{project}/" in r.path]
    assert len(deletes) == 2  # each job cancelled once


def test_a_sweep_over_http_answers_with_its_results(
    stack: LocalStack, project: str, function_server: Callable[..., FunctionServer]
) -> None:
    env = {**base_env(stack.sim), **stack.pubsub.env(), "RESULT_TOPIC": RESULT_TOPIC, **ENV}
    server = function_server("cancel_dli_job_http", env)
    old = stack.sim.submit_sql_job(project, queue_name="etl", age_s=4000)

    answer = requests.post(server.url, json={"sweep": True, "project_id": project}, timeout=30)

    assert answer.status_code == 200, answer.text
    [result] = answer.json()["results"]
    assert (result["job_id"], result["outcome"], result["event_type"]) == (
        old,
        "cancelled",
        "job-timeout",
    )
    assert result["context"]["limit_s"] == 3600
    nothing = requests.post(server.url, json={"sweep": True, "project_id": project}, timeout=30)
    assert nothing.json() == {"results": []}


# -- fan-out ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fan_stack(emulator: PubSubEmulator) -> Iterator[LocalStack]:
    env = {**ENV, "FANOUT_THRESHOLD": "3", "FANOUT_TOPIC": FANOUT}
    local = start_stack(emulator, env=env)
    local.pubsub.create_topic(FANOUT)
    local.pubsub.create_pull_subscription("sweep-fanout-audit", FANOUT)
    local.pubsub.create_push_subscription(
        "sweep-fanout-push", FANOUT, local.pubsub.push_endpoint(local.server.url, FANOUT)
    )
    try:
        yield local
    finally:
        local.pubsub.delete_subscription("sweep-fanout-push")
        stop_stack(local)


def test_a_sweep_big_enough_fans_out_and_each_job_keeps_its_reason(
    fan_stack: LocalStack, project: str
) -> None:
    sim = fan_stack.sim
    old = [sim.submit_sql_job(project, queue_name="etl", age_s=4000 + n) for n in range(5)]
    young = sim.submit_sql_job(project, queue_name="etl", age_s=5)

    message_id = fan_stack.publish("job-timeout", sweep(project))
    results = fan_stack.results_for(message_id, 5, timeout_s=30)

    assert sorted(r["job_id"] for r in results) == sorted(old)
    assert {r["outcome"] for r in results} == {"cancelled"}
    assert {r["event_type"] for r in results} == {"job-timeout"}
    assert all(r["context"]["limit_s"] == 3600 for r in results)
    assert all(r["reason"] == f"ran {r['context']['runtime_s']} s, limit 3600 s" for r in results)
    shares = [s.json() for s in fan_stack.pubsub.pull("sweep-fanout-audit", 5, timeout_s=10)]
    assert sorted(s["job_id"] for s in shares) == sorted(old)
    assert {s["source_event_id"] for s in shares} == {message_id}
    assert fan_stack.no_more_results(message_id)
    assert sim.job_status(project, young) == "RUNNING"
    assert requested_ids(sim, project) == set(old)
