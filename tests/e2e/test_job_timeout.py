"""job-timeout end to end: Pub/Sub emulator -> push -> functions-framework -> simulator ->
result topic, read back with a real subscriber."""

from __future__ import annotations

import uuid

import pytest

from tests.e2e_support import OTHER_PROJECT_ID, PROJECT_ID, LocalStack

pytestmark = pytest.mark.emulator


def test_running_job_is_cancelled_and_result_published(stack: LocalStack) -> None:
    job_id = stack.sim.submit_sql_job(PROJECT_ID, queue_name="adhoc")
    event = {"job_id": job_id, "project_id": PROJECT_ID, "reason": "ran 3700 s, limit 3600 s"}

    message_id = stack.publish("job-timeout", event)
    [result] = stack.results_for(message_id, 1)

    assert result["outcome"] == "cancelled"
    assert result["is_success"] is True
    assert result["error_code"] is None
    assert result["event_type"] == "job-timeout"
    assert result["job_id"] == job_id and result["project_id"] == PROJECT_ID
    assert result["job_kind"] == "sql" and result["http_status"] == 200
    assert result["attempts"] == 1 and result["dry_run"] is False
    assert result["reason"] == "ran 3700 s, limit 3600 s"
    assert result["dli_request_id"]
    assert result["handled_at"].endswith("Z")
    assert result["_attributes"] == {
        "event_type": "job-timeout",
        "outcome": "cancelled",
        "is_success": "true",
        "job_id": job_id,
        "project_id": PROJECT_ID,
    }
    assert stack.sim.job_status(PROJECT_ID, job_id) == "CANCELLED"
    deletes = [r for r in stack.sim.cancel_requests() if job_id in r.path]
    assert len(deletes) == 1 and deletes[0].method == "DELETE"


def test_already_finished_job(stack: LocalStack) -> None:
    job_id = stack.sim.submit_sql_job(PROJECT_ID, status="FINISHED")

    message_id = stack.publish("job-timeout", {"job_id": job_id})
    [result] = stack.results_for(message_id, 1)

    assert result["outcome"] == "already_finished"
    assert result["is_success"] is False
    assert result["error_code"]  # DLI's own code for "cannot be cancelled"
    assert result["http_status"] == 400
    assert "FINISHED" in result["message"]
    assert stack.sim.job_status(PROJECT_ID, job_id) == "FINISHED"


def test_unknown_job_is_not_found(stack: LocalStack) -> None:
    job_id = str(uuid.uuid4())

    message_id = stack.publish("job-timeout", {"job_id": job_id})
    [result] = stack.results_for(message_id, 1)

    assert result["outcome"] == "not_found"
    assert result["error_code"] == "DLI.0002"
    assert result["_attributes"]["error_code"] == "DLI.0002"


def test_bad_event_never_reaches_dli(stack: LocalStack) -> None:
    stack.sim.clear_requests()

    message_id = stack.publish("job-timeout", {"job_id": "../../queues/etl"})
    [result] = stack.results_for(message_id, 1)

    assert result["outcome"] == "invalid_event"
    assert result["error_code"] == "INVALID_EVENT"
    assert "job_id" in result["message"]
    assert stack.no_more_results(message_id), "an invalid event must be acknowledged once"
    assert stack.sim.requests() == []


def test_project_not_allowed_never_reaches_dli(stack: LocalStack) -> None:
    stack.sim.clear_requests()
    job_id = str(uuid.uuid4())

    message_id = stack.publish("job-timeout", {"job_id": job_id, "project_id": OTHER_PROJECT_ID})
    [result] = stack.results_for(message_id, 1)

    assert result["outcome"] == "not_allowed"
    assert result["error_code"] == "PROJECT_NOT_ALLOWED"
    assert result["job_id"] == job_id
    assert stack.sim.requests() == []
