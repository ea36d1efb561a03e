"""``cancel_dli_job_http`` end to end: pipelines POST an event JSON or a Pub/Sub push envelope to
the function under functions-framework and get the results back (SPEC section 1); the same
results are published to the result topic on the Pub/Sub emulator.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from devstack.stack import PubSubEmulator
from dli_simulator import Fault
from tests.corpus import encode, load_fixture, push_envelope
from tests.e2e_support import PROJECT_ID, LocalStack, start_stack, stop_stack

pytestmark = pytest.mark.emulator


@pytest.fixture(scope="module")
def http_stack(emulator: PubSubEmulator) -> Iterator[LocalStack]:
    local = start_stack(emulator, target="cancel_dli_job_http")
    try:
        yield local
    finally:
        stop_stack(local)


@pytest.fixture
def stack(http_stack: LocalStack) -> LocalStack:
    http_stack.sim.clear_requests()
    http_stack.sim.clear_faults()
    return http_stack


def post(stack: LocalStack, body: bytes | dict[str, Any], path: str = "/") -> requests.Response:
    data = body if isinstance(body, bytes) else encode(body)
    return requests.post(
        stack.server.url + path,
        data=data,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )


def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sql_event(job_id: str) -> dict[str, Any]:
    """The real-format job-timeout fixture, naming a job of the simulator."""
    return {**load_fixture("job_timeout_sql.json")["data"], "job_id": job_id}


def test_event_json_gets_its_results_back_and_published(stack: LocalStack) -> None:
    job = stack.sim.submit_sql_job(PROJECT_ID, queue_name="etl")

    response = post(stack, sql_event(job))

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    [result] = response.json()["results"]
    assert result["outcome"] == "cancelled" and result["job_id"] == job
    assert result["event_type"] == "job-timeout" and result["reason"] == "ran 3700 s, limit 3600 s"
    assert result["source_event_id"].startswith("http-")
    [published] = stack.results_for(result["source_event_id"], 1)
    assert {k: v for k, v in published.items() if k != "_attributes"} == result
    assert stack.sim.job_status(PROJECT_ID, job) == "CANCELLED"


def test_budget_event_over_http_returns_one_result_per_job(stack: LocalStack) -> None:
    jobs = stack.sim.add_sql_jobs(PROJECT_ID, 3, queue_name="pipeline_q")
    run_id = f"run-{uuid.uuid4()}"
    event = {
        "event_type": "budget-exceeded",
        "queue_names": ["pipeline_q", "idle_q"],
        "source_event_id": run_id,
    }

    response = post(stack, event)

    assert response.status_code == 200
    results = response.json()["results"]
    assert {r["source_event_id"] for r in results} == {run_id}
    assert len(stack.results_for(run_id, 4)) == 4
    assert sorted(r["job_id"] for r in results if r["outcome"] == "cancelled") == sorted(jobs)
    assert [r["queue_name"] for r in results if r["outcome"] == "nothing_to_cancel"] == ["idle_q"]
    assert len(results) == 4


def test_a_queue_over_dlis_rate_limit_is_cancelled_whole_at_its_pace(stack: LocalStack) -> None:
    jobs = stack.sim.add_sql_jobs(PROJECT_ID, 120, queue_name="paced_q")
    stack.sim.set_rate_limit(40)  # 8 cancels at a time ask for far more than 40 a second
    try:
        response = post(stack, {"event_type": "budget-exceeded", "queue_names": ["paced_q"]})
    finally:
        stack.sim.set_rate_limit(None)

    assert response.status_code == 200
    results = response.json()["results"]
    assert sorted(r["job_id"] for r in results if r["outcome"] == "cancelled") == sorted(jobs)
    assert all(r["attempts"] <= 3 for r in results)
    statuses = [r.status for r in stack.sim.cancel_requests()]
    assert 429 in statuses  # DLI's gateway did throttle: the pace was learnt, not given
    assert statuses.count(200) == len(jobs)


def test_flink_and_spark_over_http(stack: LocalStack) -> None:
    flink = stack.sim.add_flink_job(PROJECT_ID)
    batch = stack.sim.add_spark_batch(PROJECT_ID)

    flink_answer = post(stack, {"event_type": "job-timeout", "job_id": flink, "job_kind": "flink"})
    spark_answer = post(stack, {"event_type": "job-timeout", "job_id": batch, "job_kind": "spark"})

    [flink_result] = flink_answer.json()["results"]
    [spark_result] = spark_answer.json()["results"]
    assert flink_result["outcome"] == "cancelled" and flink_result["job_id"] == str(flink)
    assert spark_result["outcome"] == "cancelled" and spark_result["job_id"] == batch
    assert stack.sim.job_status(PROJECT_ID, str(flink)) == "job_cancel_success"
    assert stack.sim.job_status(PROJECT_ID, batch) == "dead"


def test_bad_event_posted_directly_is_400_with_the_invalid_event_result(
    stack: LocalStack,
) -> None:
    response = post(stack, {"event_type": "job-timeout", "job_id": "../../queues/etl"})

    assert response.status_code == 400
    [result] = response.json()["results"]
    assert result["outcome"] == "invalid_event" and result["error_code"] == "INVALID_EVENT"
    assert result["message"].startswith("job_id")
    assert stack.results_for(result["source_event_id"], 1)[0]["outcome"] == "invalid_event"
    assert stack.sim.requests() == []


def test_body_that_is_not_json_is_400(stack: LocalStack) -> None:
    response = post(stack, b"job_id=5a3a2c2e-1111-4222-8333-944455556666")

    assert response.status_code == 400
    assert response.json()["results"][0]["outcome"] == "invalid_event"
    assert stack.sim.requests() == []


def test_push_envelope_posted_directly(stack: LocalStack) -> None:
    job = stack.sim.submit_sql_job(PROJECT_ID)
    message_id = str(uuid.uuid4().int)[:16]
    body = push_envelope(
        encode(sql_event(job)),
        {"origin": "pipeline"},
        message_id=message_id,
        publish_time=now_text(),
    )

    response = post(stack, body, path=f"/projects/{stack.pubsub.project}/topics/job-timeout")

    assert response.status_code == 200
    [result] = response.json()["results"]
    assert result["outcome"] == "cancelled" and result["source_event_id"] == message_id
    assert stack.results_for(message_id, 1)[0]["job_id"] == job


def test_push_envelope_fixture_without_topic_uses_the_event_type_attribute(
    stack: LocalStack,
) -> None:
    """The real-format push fixture (attribute ``event_type``, no topic in the URL)."""
    job = stack.sim.submit_sql_job(PROJECT_ID)
    envelope = load_fixture("push_envelope_job_timeout.json")
    envelope["message"]["data"] = base64.b64encode(encode(sql_event(job))).decode()
    message_id = envelope["message"]["messageId"] = envelope["message"]["message_id"] = str(
        uuid.uuid4().int
    )[:16]
    envelope["message"]["publishTime"] = envelope["message"]["publish_time"] = now_text()

    response = post(stack, envelope)

    assert response.status_code == 200
    [result] = response.json()["results"]
    assert result["outcome"] == "cancelled" and result["event_type"] == "job-timeout"
    assert result["source_event_id"] == message_id


def test_bad_event_inside_a_push_envelope_is_200(stack: LocalStack) -> None:
    message_id = str(uuid.uuid4().int)[:16]
    body = push_envelope(encode({"job_id": "not-a-uuid"}), message_id=message_id)

    response = post(stack, body, path=f"/projects/{stack.pubsub.project}/topics/job-timeout")

    assert response.status_code == 200, "Pub/Sub must not deliver a bad event again"
    [result] = response.json()["results"]
    assert result["outcome"] == "invalid_event" and result["source_event_id"] == message_id
    assert stack.sim.requests() == []


def test_push_subscription_delivers_to_the_http_function(stack: LocalStack) -> None:
    job = stack.sim.submit_sql_job(PROJECT_ID)

    message_id = stack.publish("job-timeout", sql_event(job))
    [result] = stack.results_for(message_id, 1)

    assert result["outcome"] == "cancelled" and result["job_id"] == job
    assert stack.no_more_results(message_id, wait_s=1), "answered 200: acknowledged once"


def test_transient_dli_faults_answer_503_then_a_retry_succeeds(stack: LocalStack) -> None:
    job = stack.sim.submit_sql_job(PROJECT_ID)
    stack.sim.add_fault(Fault(status=503, count=3, path_contains=job, method="DELETE"))

    first = post(stack, sql_event(job))
    second = post(stack, sql_event(job))

    assert first.status_code == 503
    assert "retry" in first.json()["error"]
    assert second.status_code == 200
    assert second.json()["results"][0]["outcome"] == "cancelled"
    statuses = [r.status for r in stack.sim.cancel_requests() if job in r.path]
    assert statuses == [503, 503, 503, 200]


def test_other_methods_are_405(stack: LocalStack) -> None:
    for method in ("GET", "PUT", "DELETE"):
        response = requests.request(method, stack.server.url + "/", timeout=10)
        assert response.status_code == 405, method
        assert "POST" in response.json()["error"]


def test_body_over_the_limit_is_413(stack: LocalStack) -> None:
    event = {**sql_event(str(uuid.uuid4())), "reason": "x" * 70_000}

    sized = post(stack, event)
    chunked = requests.post(
        stack.server.url + "/",
        data=iter([encode(event)]),  # no Content-Length: chunked transfer encoding
        headers={"Content-Type": "application/json"},
        timeout=30,
    )

    assert sized.status_code == 413
    assert chunked.status_code == 413
    assert stack.sim.requests() == []


def test_results_answer_is_json_with_results_only(stack: LocalStack) -> None:
    job = stack.sim.submit_sql_job(PROJECT_ID)

    response = post(stack, sql_event(job))

    assert set(json.loads(response.text)) == {"results"}
