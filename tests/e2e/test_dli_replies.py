"""DLI as it really answers (SPEC 5.1), through the real servers: the function under
functions-framework, the DLI simulator (fault plans, page cap, a job moving between listings),
the Pub/Sub emulator for results.

Events are binary CloudEvents POSTed to ``cancel_dli_job`` directly, so its HTTP status is
observable: 2xx acknowledges, 500 makes Pub/Sub deliver the event again. Each rule is tried on
a young event (delivered again, no result for the job yet) and an old one (acknowledged, the
job ``failed`` with the code DLI, the gateway or IAM gave).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from devstack.stack import FunctionServer, PubSubEmulator
from dli_simulator import Fault, RequestRecord, Simulator
from tests.e2e_support import (
    ACCESS_KEY,
    OLD,
    PROJECT_ID,
    RESULT_TOPIC,
    SECRET_KEY,
    YOUNG,
    LocalStack,
    base_env,
    post_cloud_event,
    start_all,
    stop_all,
)

pytestmark = pytest.mark.emulator

MAX_ATTEMPTS = 3
FAST = {
    "DLI_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
    "DLI_RETRY_BASE_S": "0.02",
    "DLI_RETRY_MAX_S": "0.5",
    "DLI_TIMEOUT_S": "2",
    "MAX_EVENT_AGE_S": "600",
    "RESULT_PUBLISH_TIMEOUT_S": "5",
}
IAM_DOMAIN, IAM_USER, IAM_PASSWORD = "dli-domain", "dli-robot", "iam-password-1d9c7e2a"
WRONG_PASSWORD = "wrong-password-6f3a8b0c"
TOKEN_PATH = "/v3/auth/tokens"
JSON = "application/json"


@dataclass
class Stacks:
    local: LocalStack  # AK/SK from the environment, fast retries, MAX_EVENT_AGE_S=600
    wrong_password: FunctionServer  # token auth with a password IAM refuses

    @property
    def sim(self) -> Simulator:
        return self.local.sim

    @property
    def url(self) -> str:
        return self.local.server.url


@pytest.fixture(scope="module")
def stacks(emulator: PubSubEmulator) -> Iterator[Stacks]:
    sim = Simulator(
        credentials={ACCESS_KEY: SECRET_KEY}, iam_users={(IAM_DOMAIN, IAM_USER): IAM_PASSWORD}
    )
    sim.start()
    pubsub = emulator.with_project(f"replies-{uuid.uuid4().hex[:10]}")
    pubsub.create_topic(RESULT_TOPIC)
    subscription = pubsub.create_pull_subscription("results-replies", RESULT_TOPIC)
    env = {**base_env(sim), "RESULT_TOPIC": RESULT_TOPIC, **pubsub.env(), **FAST}
    main = FunctionServer("cancel_dli_job", env)
    token_env = {
        "DLI_AUTH": "token",
        "IAM_ENDPOINT": sim.base_url,
        "IAM_DOMAIN": IAM_DOMAIN,
        "IAM_USERNAME": IAM_USER,
        "IAM_PASSWORD": WRONG_PASSWORD,
    }
    wrong_password = FunctionServer("cancel_dli_job", {**env, **token_env})
    try:
        start_all(main, wrong_password)
        yield Stacks(LocalStack(sim, pubsub, main, subscription), wrong_password)
    finally:
        stop_all(main, wrong_password)
        sim.stop()


@pytest.fixture(autouse=True)
def clean_simulator(stacks: Stacks) -> Iterator[None]:
    stacks.sim.clear_faults()
    stacks.sim.clear_requests()
    yield
    stacks.sim.clear_faults()
    stacks.sim.set_page_cap(None)


# -- helpers ---------------------------------------------------------------------------------


def requests_for(sim: Simulator, job_id: str, method: str | None = None) -> list[RequestRecord]:
    return [r for r in sim.requests() if job_id in r.path and method in (None, r.method)]


def token_requests(sim: Simulator) -> list[RequestRecord]:
    return [r for r in sim.requests() if r.path == TOKEN_PATH]


def log_records(server: FunctionServer, event_id: str) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    return [r for r in records if r.get("event_id") == event_id]


def one_result(stacks: Stacks, event_id: str) -> dict[str, Any]:
    results = stacks.local.results_for(event_id, 1)
    assert len(results) == 1, results
    return results[0]


def event_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def budget(*, job_ids: list[str] | None = None, queues: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"event_type": "budget-exceeded"}
    if job_ids:
        body["job_ids"] = job_ids
    if queues:
        body["queue_names"] = queues
    return body


# -- replies that are transient: retried, then delivered again or failed ------------------------

DEEP = "[" * 5000 + "]" * 5000
TRANSIENT = {
    # DLI's "server-side error" is documented with HTTP 400: transient like a 5xx
    "dli-0999-with-400": (Fault(status=400, error_code="DLI.0999"), "DLI.0999", 400),
    # a 200 whose error_code is a number or an object (once a TypeError: 500 forever)
    "numeric-error-code": (
        Fault(status=200, body='{"is_success": false, "error_code": 12}', content_type=JSON),
        "DLI_BAD_REPLY",
        200,
    ),
    "object-error-code": (
        Fault(
            status=200,
            body='{"is_success": false, "error_code": {"code": "DLI.0002"}}',
            content_type=JSON,
        ),
        "DLI_BAD_REPLY",
        200,
    ),
    # replies the client cannot interpret
    "html": (Fault(status=200, body="<html>502 Bad Gateway</html>"), "DLI_BAD_REPLY", 200),
    "list-body": (Fault(status=200, body="[1, 2]", content_type=JSON), "DLI_BAD_REPLY", 200),
    "no-is_success": (
        Fault(status=200, body='{"message": "accepted?"}', content_type=JSON),
        "DLI_BAD_REPLY",
        200,
    ),
    "odd-is_success": (
        Fault(status=400, body='{"is_success": null, "message": "?"}', content_type=JSON),
        "DLI_BAD_REPLY",
        400,
    ),
    "too-deep": (Fault(status=200, body=DEEP, content_type=JSON), "DLI_BAD_REPLY", 200),
}


def inject(sim: Simulator, fault: Fault, job_id: str, count: int) -> None:
    fields = {**fault.__dict__, "count": count, "path_contains": job_id, "method": "DELETE"}
    sim.add_fault(Fault(**fields))


@pytest.mark.parametrize("kind", sorted(TRANSIENT))
def test_a_transient_reply_on_a_young_event_is_retried_then_delivered_again(
    stacks: Stacks, kind: str
) -> None:
    fault, code, _ = TRANSIENT[kind]
    job_id = stacks.sim.submit_sql_job(PROJECT_ID)
    inject(stacks.sim, fault, job_id, MAX_ATTEMPTS)
    eid = event_id(f"young-{kind}")

    answer = post_cloud_event(stacks.url, {"job_id": job_id}, event_id=eid, age_s=YOUNG)

    assert answer.status_code == 500, answer.text  # not acknowledged: delivered again
    assert code in answer.text
    assert len(requests_for(stacks.sim, job_id, "DELETE")) == MAX_ATTEMPTS  # retried
    assert stacks.local.no_more_results(eid, wait_s=0.3), "no result while it comes again"
    [retry] = [r for r in log_records(stacks.local.server, eid) if r.get("outcome") == "retry"]
    assert (retry["severity"], retry["error_code"]) == ("WARNING", code)

    again = post_cloud_event(stacks.url, {"job_id": job_id}, event_id=eid)  # the fault is over

    assert again.status_code == 200
    assert one_result(stacks, eid)["outcome"] == "cancelled"
    assert stacks.sim.job_status(PROJECT_ID, job_id) == "CANCELLED"


@pytest.mark.parametrize("kind", sorted(TRANSIENT))
def test_a_transient_reply_on_an_old_event_publishes_failed(stacks: Stacks, kind: str) -> None:
    fault, code, status = TRANSIENT[kind]
    job_id = stacks.sim.submit_sql_job(PROJECT_ID)
    inject(stacks.sim, fault, job_id, MAX_ATTEMPTS)
    eid = event_id(f"old-{kind}")

    answer = post_cloud_event(stacks.url, {"job_id": job_id}, event_id=eid, age_s=OLD)

    assert answer.status_code == 200  # acknowledged: an old event is not retried any more
    result = one_result(stacks, eid)
    assert (result["outcome"], result["error_code"], result["http_status"]) == (
        "failed",
        code,
        status,
    )
    assert result["attempts"] == MAX_ATTEMPTS
    assert result["_attributes"]["error_code"] == code
    assert stacks.sim.job_status(PROJECT_ID, job_id) == "RUNNING"


def test_a_listing_dli_cannot_be_understood_fails_the_queue_of_an_old_event(
    stacks: Stacks,
) -> None:
    queue = f"q{uuid.uuid4().hex[:6]}"
    stacks.sim.add_sql_jobs(PROJECT_ID, 2, queue_name=queue)
    odd = '{"is_success": true, "job_count": "two", "jobs": []}'
    fault = Fault(count=MAX_ATTEMPTS, status=200, body=odd, content_type=JSON, method="GET")
    stacks.sim.add_fault(fault)
    eid = event_id("odd-listing")

    answer = post_cloud_event(
        stacks.url, budget(queues=[queue]), event_id=eid, topic="budget-exceeded", age_s=OLD
    )

    assert answer.status_code == 200
    result = one_result(stacks, eid)
    assert (result["outcome"], result["error_code"]) == ("failed", "DLI_BAD_REPLY")
    assert result["queue_name"] == queue and "job_count" in result["message"]
    assert stacks.sim.cancel_requests() == []


# -- configuration faults: not retried within the event, delivered again or failed -------------


def test_a_gateway_404_is_a_configuration_fault_not_a_missing_job(stacks: Stacks) -> None:
    """A wrong endpoint, path or region: the API gateway answers 404 without a DLI code.
    Once every job came out ``not_found``."""
    job_id = stacks.sim.submit_sql_job(PROJECT_ID)
    gateway = Fault(status=404, error_code="APIG.0101")
    inject(stacks.sim, gateway, job_id, 1)
    young = event_id("gateway-young")

    answer = post_cloud_event(stacks.url, {"job_id": job_id}, event_id=young)

    assert answer.status_code == 500 and "APIG.0101" in answer.text
    assert [r.status for r in requests_for(stacks.sim, job_id)] == [404]  # no retry, no read
    assert stacks.local.no_more_results(young, wait_s=0.3)
    [logged] = [r for r in log_records(stacks.local.server, young) if r.get("outcome") == "retry"]
    assert logged["severity"] == "ERROR" and "configuration fault" in logged["message"]

    inject(stacks.sim, gateway, job_id, 1)
    old = event_id("gateway-old")
    answer = post_cloud_event(stacks.url, {"job_id": job_id}, event_id=old, age_s=OLD)

    assert answer.status_code == 200
    result = one_result(stacks, old)
    assert (result["outcome"], result["error_code"], result["http_status"]) == (
        "failed",
        "APIG.0101",
        404,
    )
    assert result["attempts"] == 1
    assert stacks.sim.job_status(PROJECT_ID, job_id) == "RUNNING"

    # the configuration is fixed: the young event, delivered again, cancels the job
    assert post_cloud_event(stacks.url, {"job_id": job_id}, event_id=young).status_code == 200
    assert one_result(stacks, young)["outcome"] == "cancelled"


def test_iam_refusing_the_password_is_a_configuration_fault_asked_once_a_minute(
    stacks: Stacks,
) -> None:
    """Once ``rejected`` and acknowledged (every event lost during a bad rotation), with about
    90 password attempts for an event of 200 jobs."""
    jobs = stacks.sim.add_sql_jobs(PROJECT_ID, 40, queue_name="iam")
    server = stacks.wrong_password
    young = event_id("iam-young")

    answer = post_cloud_event(
        server.url, budget(job_ids=jobs), event_id=young, topic="budget-exceeded"
    )

    assert answer.status_code == 500 and "IAM_HTTP_401" in answer.text
    assert stacks.local.no_more_results(young, wait_s=0.3)
    old = event_id("iam-old")
    answer = post_cloud_event(
        server.url, budget(job_ids=jobs), event_id=old, topic="budget-exceeded", age_s=OLD
    )

    assert answer.status_code == 200
    results = stacks.local.results_for(old, len(jobs))
    assert sorted(r["job_id"] for r in results) == sorted(jobs)
    for result in results:
        assert (result["outcome"], result["error_code"], result["http_status"]) == (
            "failed",
            "IAM_HTTP_401",
            401,
        )
        assert "username or password is wrong" in result["message"]
    # 80 cancels in two events: IAM was asked once, DLI never called
    assert [r.status for r in token_requests(stacks.sim)] == [401]
    assert stacks.sim.cancel_requests() == []
    assert WRONG_PASSWORD not in server.output() + json.dumps(results)


# -- listings ----------------------------------------------------------------------------------


def test_a_dli_serving_50_per_page_has_all_120_jobs_of_a_queue_cancelled(stacks: Stacks) -> None:
    queue = f"q{uuid.uuid4().hex[:6]}"
    jobs = stacks.sim.add_sql_jobs(PROJECT_ID, 120, queue_name=queue)
    stacks.sim.set_page_cap(50)
    eid = event_id("page-cap")

    answer = post_cloud_event(
        stacks.url, budget(queues=[queue]), event_id=eid, topic="budget-exceeded"
    )

    assert answer.status_code == 200
    results = stacks.local.results_for(eid, len(jobs))
    assert sorted(r["job_id"] for r in results) == sorted(jobs)
    assert {r["outcome"] for r in results} == {"cancelled"}
    assert {stacks.sim.job_status(PROJECT_ID, j) for j in jobs} == {"CANCELLED"}
    pages = [
        r.query["current-page"]
        for r in stacks.sim.requests()
        if r.method == "GET" and r.query.get("job-status") == "RUNNING"
    ]
    assert pages == ["1", "2", "3"]  # 50 + 50 + 20: the total DLI reported


def test_a_job_that_starts_running_between_two_listings_is_cancelled(stacks: Stacks) -> None:
    queue = f"q{uuid.uuid4().hex[:6]}"
    [job_id] = stacks.sim.add_sql_jobs(PROJECT_ID, 1, queue_name=queue, status="LAUNCHING")
    stacks.sim.move_after_next_listing(PROJECT_ID, job_id, "RUNNING")
    eid = event_id("moving")

    answer = post_cloud_event(
        stacks.url, budget(queues=[queue]), event_id=eid, topic="budget-exceeded"
    )

    assert answer.status_code == 200
    result = one_result(stacks, eid)
    assert (result["job_id"], result["outcome"], result["queue_name"]) == (
        job_id,
        "cancelled",
        queue,
    )
    assert stacks.sim.job_status(PROJECT_ID, job_id) == "CANCELLED"
