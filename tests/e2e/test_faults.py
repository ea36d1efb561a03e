"""Fault injection through the real servers: DLI simulator faults and Pub/Sub failures.

The function (``cancel_dli_job`` under functions-framework) receives binary CloudEvents POSTed
here directly, so its HTTP status is observable: 2xx acknowledges the event, anything else
makes Pub/Sub deliver it again. (Through a push subscription a 500 would loop.) Results are
read from the result topic on the emulator.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from devstack.stack import FunctionServer, PubSubEmulator, free_port
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
    "DLI_RETRY_MAX_S": "1.5",
    "DLI_TIMEOUT_S": "0.6",
    "MAX_EVENT_AGE_S": "600",
    "RESULT_PUBLISH_TIMEOUT_S": "5",
}
HTML_PAGE = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"


# -- the stack -------------------------------------------------------------------------------


@dataclass
class Stacks:
    local: LocalStack  # the main function server, fast retries, MAX_EVENT_AGE_S=600
    tight: FunctionServer  # DLI_EVENT_BUDGET_S=1.5: the deadline stops the retries
    no_topic: FunctionServer  # RESULT_TOPIC does not exist (yet)
    no_topic_name: str
    dead_pubsub: FunctionServer  # Pub/Sub unreachable, RESULT_PUBLISH_TIMEOUT_S=1.5

    @property
    def sim(self) -> Simulator:
        return self.local.sim

    @property
    def url(self) -> str:
        return self.local.server.url


@pytest.fixture(scope="module")
def stacks(emulator: PubSubEmulator) -> Iterator[Stacks]:
    sim = Simulator(credentials={ACCESS_KEY: SECRET_KEY})
    sim.start()
    pubsub = emulator.with_project(f"faults-{uuid.uuid4().hex[:10]}")
    pubsub.create_topic(RESULT_TOPIC)
    subscription = pubsub.create_pull_subscription("results-faults", RESULT_TOPIC)
    env = {**base_env(sim), "RESULT_TOPIC": RESULT_TOPIC, **pubsub.env(), **FAST}
    no_topic_name = f"results-later-{uuid.uuid4().hex[:6]}"
    main = FunctionServer("cancel_dli_job", env)
    tight = FunctionServer(
        "cancel_dli_job",
        {**env, "DLI_EVENT_BUDGET_S": "1.5", "DLI_TIMEOUT_S": "1", "DLI_RETRY_MAX_S": "30"},
    )
    no_topic = FunctionServer("cancel_dli_job", {**env, "RESULT_TOPIC": no_topic_name})
    dead_pubsub = FunctionServer(
        "cancel_dli_job",
        {
            **env,
            "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{free_port()}",
            "RESULT_PUBLISH_TIMEOUT_S": "1.5",
        },
    )
    servers = (main, tight, no_topic, dead_pubsub)
    try:
        start_all(*servers)
        yield Stacks(
            LocalStack(sim, pubsub, main, subscription),
            tight,
            no_topic,
            no_topic_name,
            dead_pubsub,
        )
    finally:
        stop_all(*servers)
        sim.stop()


@pytest.fixture(autouse=True)
def clean_simulator(stacks: Stacks) -> Iterator[None]:
    stacks.sim.clear_faults()
    stacks.sim.clear_requests()
    yield
    stacks.sim.clear_faults()


# -- helpers ---------------------------------------------------------------------------------


def log_records(server: FunctionServer, event_id: str | None = None) -> list[dict[str, Any]]:
    """The function's structured log lines (of one event)."""
    records = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    return [r for r in records if event_id is None or r.get("event_id") == event_id]


def job_requests(sim: Simulator, job_id: str, method: str | None = None) -> list[RequestRecord]:
    return [
        r for r in sim.requests() if job_id in r.path and (method is None or r.method == method)
    ]


def settled(sim: Simulator, timeout_s: float = 5) -> list[RequestRecord]:
    """The request log once every request has been answered (delayed faults finish late)."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = sim.requests()
        if all(r.status is not None for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


def one_result(stacks: Stacks, event_id: str) -> dict[str, Any]:
    results = stacks.local.results_for(event_id, 1)
    assert len(results) == 1, results
    return results[0]


FAULTS: dict[str, dict[str, Any]] = {
    "http_503": {"status": 503},
    "http_429_retry_after": {"status": 429, "retry_after": "0"},
    "timeout": {"delay_s": 1.2},
    "dropped_connection": {"drop": True},
    "html_body": {"status": 200, "body": HTML_PAGE},
}
EXPECTED_CODE = {
    "http_503": "DLI_HTTP_503",
    "http_429_retry_after": "DLI_HTTP_429",
    "timeout": "DLI_TIMEOUT",
    "dropped_connection": "DLI_UNREACHABLE",
    "html_body": "DLI_BAD_REPLY",
}
RECORDED_STATUS = {
    "http_503": 503,
    "http_429_retry_after": 429,
    "dropped_connection": 0,
    "html_body": 200,
}


def inject(sim: Simulator, kind: str, job_id: str, count: int) -> None:
    sim.add_fault(Fault(count=count, path_contains=job_id, method="DELETE", **FAULTS[kind]))


def assert_fault_log(sim: Simulator, kind: str, job_id: str, count: int) -> None:
    deletes = [r for r in settled(sim) if job_id in r.path and r.method == "DELETE"]
    assert len(deletes) == count, [(r.method, r.status) for r in deletes]
    if kind in RECORDED_STATUS:
        assert [r.status for r in deletes] == [RECORDED_STATUS[kind]] * count


# -- transient DLI faults ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(FAULTS))
def test_fault_on_young_event_is_redelivered_without_result(stacks: Stacks, kind: str) -> None:
    job_id = stacks.sim.submit_sql_job(PROJECT_ID)
    inject(stacks.sim, kind, job_id, MAX_ATTEMPTS)

    answer = post_cloud_event(stacks.url, {"job_id": job_id}, event_id=f"young-{kind}", age_s=YOUNG)

    assert answer.status_code == 500, answer.text  # not acknowledged: Pub/Sub delivers it again
    assert EXPECTED_CODE[kind] in answer.text
    assert_fault_log(stacks.sim, kind, job_id, MAX_ATTEMPTS)
    assert stacks.local.no_more_results(f"young-{kind}", wait_s=0.3), "no result while retried"
    [retry] = [r for r in log_records(stacks.local.server, f"young-{kind}")]
    assert (retry["severity"], retry["outcome"]) == ("WARNING", "retry")
    assert (retry["job_id"], retry["error_code"]) == (job_id, EXPECTED_CODE[kind])
    assert retry["attempts"] == MAX_ATTEMPTS

    # Pub/Sub delivers the same event again; the fault is over.
    again = post_cloud_event(stacks.url, {"job_id": job_id}, event_id=f"young-{kind}")

    assert again.status_code == 200
    result = one_result(stacks, f"young-{kind}")
    # A timed-out cancel may have reached DLI: the redelivery then finds the job cancelled.
    expected = {"already_finished", "cancelled"} if kind == "timeout" else {"cancelled"}
    assert result["outcome"] in expected
    assert stacks.sim.job_status(PROJECT_ID, job_id) == "CANCELLED"


@pytest.mark.parametrize("kind", sorted(FAULTS))
def test_fault_on_old_event_publishes_failed(stacks: Stacks, kind: str) -> None:
    job_id = stacks.sim.submit_sql_job(PROJECT_ID)
    inject(stacks.sim, kind, job_id, MAX_ATTEMPTS)

    answer = post_cloud_event(stacks.url, {"job_id": job_id}, event_id=f"old-{kind}", age_s=OLD)

    assert answer.status_code == 200  # acknowledged: an old event is not retried any more
    result = one_result(stacks, f"old-{kind}")
    assert result["outcome"] == "failed"
    assert result["is_success"] is False
    assert result["error_code"] == EXPECTED_CODE[kind]
    assert result["attempts"] == MAX_ATTEMPTS
    assert result["_attributes"]["error_code"] == EXPECTED_CODE[kind]
    assert result["_attributes"]["outcome"] == "failed"
    assert_fault_log(stacks.sim, kind, job_id, MAX_ATTEMPTS)
    if kind != "timeout":  # a delayed cancel still goes through at DLI, later
        assert stacks.sim.job_status(PROJECT_ID, job_id) == "RUNNING"


@pytest.mark.parametrize("kind", sorted(FAULTS))
def test_fault_shorter_than_the_retries_is_absorbed(stacks: Stacks, kind: str) -> None:
    job_id = stacks.sim.submit_sql_job(PROJECT_ID)
    count = MAX_ATTEMPTS - 1
    inject(stacks.sim, kind, job_id, count)

    answer = post_cloud_event(stacks.url, {"job_id": job_id}, event_id=f"absorb-{kind}")

    assert answer.status_code == 200
    result = one_result(stacks, f"absorb-{kind}")
    if kind == "timeout":
        # the delayed cancels went through at DLI behind the client's back
        assert result["outcome"] in ("cancelled", "already_finished")
    else:
        assert result["outcome"] == "cancelled"
        assert result["is_success"] is True
        assert result["attempts"] == count + 1
    deletes = [r for r in settled(stacks.sim) if job_id in r.path and r.method == "DELETE"]
    assert len(deletes) == count + 1
    if kind in RECORDED_STATUS:
        assert [r.status for r in deletes] == [RECORDED_STATUS[kind]] * count + [200]


def test_retry_after_is_honoured(stacks: Stacks) -> None:
    job_id = stacks.sim.submit_sql_job(PROJECT_ID)
    inject_429 = Fault(count=1, status=429, retry_after="1", path_contains=job_id, method="DELETE")
    stacks.sim.add_fault(inject_429)

    answer = post_cloud_event(stacks.url, {"job_id": job_id}, event_id="retry-after")

    assert answer.status_code == 200
    assert one_result(stacks, "retry-after")["attempts"] == 2
    first, second = job_requests(stacks.sim, job_id, "DELETE")
    # base backoff is 0.02 s: only Retry-After explains a pause of a second
    assert second.received_at - first.received_at >= 0.95


def test_retry_after_is_capped(stacks: Stacks) -> None:
    job_id = stacks.sim.submit_sql_job(PROJECT_ID)
    fault = Fault(count=1, status=429, retry_after="3600", path_contains=job_id, method="DELETE")
    stacks.sim.add_fault(fault)

    answer = post_cloud_event(stacks.url, {"job_id": job_id}, event_id="retry-after-cap")

    assert answer.status_code == 200
    assert one_result(stacks, "retry-after-cap")["outcome"] == "cancelled"
    first, second = job_requests(stacks.sim, job_id, "DELETE")
    assert 1.4 <= second.received_at - first.received_at < 3.5  # DLI_RETRY_MAX_S=1.5


def test_connection_refused_while_the_simulator_is_stopped(stacks: Stacks) -> None:
    job_id = stacks.sim.submit_sql_job(PROJECT_ID)
    port = stacks.sim.port
    stacks.sim.stop()
    try:
        young = post_cloud_event(stacks.url, {"job_id": job_id}, event_id="refused-young")
        old = post_cloud_event(stacks.url, {"job_id": job_id}, event_id="refused-old", age_s=OLD)
    finally:
        stacks.sim.start()
    assert stacks.sim.port == port

    assert young.status_code == 500
    assert "DLI_UNREACHABLE" in young.text
    assert stacks.local.no_more_results("refused-young", wait_s=0.3)
    assert old.status_code == 200
    result = one_result(stacks, "refused-old")
    assert (result["outcome"], result["error_code"]) == ("failed", "DLI_UNREACHABLE")
    assert result["attempts"] == MAX_ATTEMPTS
    assert result["http_status"] is None
    assert "connection refused" in result["message"]
    assert stacks.sim.requests() == []
    assert stacks.sim.job_status(PROJECT_ID, job_id) == "RUNNING"

    # The simulator is back: the next delivery of the young event cancels the job.
    again = post_cloud_event(stacks.url, {"job_id": job_id}, event_id="refused-young")
    assert again.status_code == 200
    assert one_result(stacks, "refused-young")["outcome"] == "cancelled"


# -- the event's time budget -------------------------------------------------------------------


def test_time_budget_stops_timeouts(stacks: Stacks) -> None:
    job_id = stacks.sim.submit_sql_job(PROJECT_ID)
    stacks.sim.add_fault(
        Fault(count=3, delay_s=2.5, drop=True, path_contains=job_id, method="DELETE")
    )

    answer = post_cloud_event(stacks.tight.url, {"job_id": job_id}, event_id="budget-t", age_s=OLD)

    assert answer.status_code == 200
    result = one_result(stacks, "budget-t")
    assert (result["outcome"], result["error_code"]) == ("failed", "DLI_TIMEOUT")
    # DLI_EVENT_BUDGET_S=1.5 and DLI_TIMEOUT_S=1: one timeout, then a second attempt cut to
    # the time left, then no more (three full attempts would take 3 s)
    # (under a heavy CPU load the second attempt may find no time left at all)
    assert result["attempts"] in (1, 2)
    assert "budget" in result["message"]
    deletes = job_requests(stacks.sim, job_id, "DELETE")
    assert len(deletes) == result["attempts"]
    handled_at = datetime.fromisoformat(result["handled_at"]).timestamp()
    assert handled_at - deletes[0].received_at < 3.0  # three full attempts: over 3 s


def test_time_budget_stops_a_long_retry_after(stacks: Stacks) -> None:
    job_id = stacks.sim.submit_sql_job(PROJECT_ID)
    fault = Fault(count=3, status=429, retry_after="20", path_contains=job_id, method="DELETE")
    stacks.sim.add_fault(fault)

    started = time.monotonic()
    young = post_cloud_event(stacks.tight.url, {"job_id": job_id}, event_id="budget-ra")

    assert young.status_code == 500  # delivered again later instead of sleeping 20 s now
    assert time.monotonic() - started < 5
    assert "DLI_HTTP_429 after 1 attempts" in young.text
    assert "budget" in young.text
    assert len(job_requests(stacks.sim, job_id, "DELETE")) == 1


# -- result publishing -------------------------------------------------------------------------


def test_missing_result_topic_then_redelivery(stacks: Stacks) -> None:
    job_id = stacks.sim.submit_sql_job(PROJECT_ID)
    pubsub = stacks.local.pubsub

    first = post_cloud_event(stacks.no_topic.url, {"job_id": job_id}, event_id="no-topic")

    assert first.status_code == 500
    assert "NotFound" in first.text
    log = log_records(stacks.no_topic, "no-topic")
    [failure] = [r for r in log if r["message"].startswith("result publish failed")]
    assert failure["severity"] == "ERROR"
    assert stacks.no_topic_name in failure["error"] and "NotFound" in failure["error"]
    assert stacks.sim.job_status(PROJECT_ID, job_id) == "CANCELLED"  # DLI was called

    # The operator creates the topic; Pub/Sub delivers the event again.
    pubsub.create_topic(stacks.no_topic_name)
    subscription = pubsub.create_pull_subscription(
        f"{stacks.no_topic_name}-sub", stacks.no_topic_name
    )
    second = post_cloud_event(stacks.no_topic.url, {"job_id": job_id}, event_id="no-topic")

    assert second.status_code == 200
    [message] = pubsub.pull(subscription, 1)
    result = message.json()
    assert (result["outcome"], result["source_event_id"]) == ("already_finished", "no-topic")
    assert result["job_id"] == job_id
    assert len(job_requests(stacks.sim, job_id, "DELETE")) == 2


def test_unreachable_pubsub_fails_within_the_publish_timeout(stacks: Stacks) -> None:
    job_id = stacks.sim.submit_sql_job(PROJECT_ID)
    server = stacks.dead_pubsub

    started = time.monotonic()
    answer = post_cloud_event(server.url, {"job_id": job_id}, event_id="dead-pubsub", age_s=OLD)
    elapsed = time.monotonic() - started

    assert answer.status_code == 500  # even an old event: its result was not confirmed
    assert elapsed < 4  # RESULT_PUBLISH_TIMEOUT_S=1.5, not the library's 600 s
    assert "publishing to" in answer.text
    [failure] = [
        r
        for r in log_records(server, "dead-pubsub")
        if r["message"].startswith("result publish failed")
    ]
    assert failure["severity"] == "ERROR"
    assert "Connection refused" in failure["error"] or "not confirmed" in failure["error"]
