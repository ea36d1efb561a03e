"""The DLI client against the real simulator (HTTP on loopback): outcomes per job kind,
listing across pages, retries of transient faults, token auth."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import requests

from cancel_handler.config import IamSettings, Secret
from cancel_handler.dli.auth import AkSkAuth, EnvCredentials, TokenAuth
from cancel_handler.dli.client import DliClient, RetryPolicy
from cancel_handler.dli.errors import Misconfigured, TransientFailure
from cancel_handler.dli.types import JobRef
from dli_simulator import Fault, Simulator

PID = "0123456789abcdef0123456789abcdef"
AK, SK = "UNITACCESSKEY", "unit-secret-key"


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    simulator = Simulator(credentials={AK: SK}, iam_users={("domain", "robot"): "robot-password"})
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture(autouse=True)
def _clean(sim: Simulator) -> None:
    sim.clear_faults()
    sim.clear_requests()


@pytest.fixture
def client(sim: Simulator) -> DliClient:
    auth = AkSkAuth(EnvCredentials(Secret(AK), Secret(SK), None))
    policy = RetryPolicy(max_attempts=3, timeout_s=1.0, base_delay_s=0.01, max_delay_s=0.2)
    return DliClient(sim.base_url, auth, policy)


def test_sql_cancel_running_job(sim: Simulator, client: DliClient) -> None:
    job_id = sim.submit_sql_job(PID)
    outcome = client.cancel(JobRef(PID, job_id))
    assert (outcome.outcome, outcome.is_success, outcome.http_status) == ("cancelled", True, 200)
    assert outcome.attempts == 1
    assert outcome.request_id == sim.cancel_requests()[-1].request_id
    assert sim.job_status(PID, job_id) == "CANCELLED"


@pytest.mark.parametrize("state", ["FINISHED", "FAILED", "CANCELLED"])
def test_sql_terminal_job_is_already_finished(
    sim: Simulator, client: DliClient, state: str
) -> None:
    job_id = sim.submit_sql_job(PID, status=state)
    outcome = client.cancel(JobRef(PID, job_id))
    assert outcome.outcome == "already_finished"
    assert outcome.is_success is False
    assert outcome.error_code == "DLI.0007"
    assert state in outcome.message


def test_sql_unknown_job_is_not_found(client: DliClient) -> None:
    outcome = client.cancel(JobRef(PID, str(uuid.uuid4())))
    assert (outcome.outcome, outcome.error_code, outcome.http_status) == (
        "not_found",
        "DLI.0002",
        400,
    )


def test_wrong_secret_key_is_a_configuration_fault(sim: Simulator) -> None:
    auth = AkSkAuth(EnvCredentials(Secret(AK), Secret("wrong"), None))
    client = DliClient(sim.base_url, auth, RetryPolicy(timeout_s=1.0))
    job_id = sim.submit_sql_job(PID)
    with pytest.raises(Misconfigured) as raised:
        client.cancel(JobRef(PID, job_id))
    assert (raised.value.http_status, raised.value.error_code) == (401, "DLI.0014")
    assert "wrong" not in raised.value.message
    assert [r.status for r in sim.requests()] == [401]  # nothing to refresh: believed at once


def test_spark_cancel_and_finished(sim: Simulator, client: DliClient) -> None:
    running = sim.add_spark_batch(PID)
    done = sim.add_spark_batch(PID, state="success")
    assert client.cancel(JobRef(PID, running, "spark")).outcome == "cancelled"
    assert sim.job_status(PID, running) == "dead"
    assert client.cancel(JobRef(PID, done, "spark")).outcome == "already_finished"
    assert client.cancel(JobRef(PID, str(uuid.uuid4()), "spark")).outcome == "not_found"


def test_flink_stop_running_finished_unknown(sim: Simulator, client: DliClient) -> None:
    running = sim.add_flink_job(PID)
    finished = sim.add_flink_job(PID, status="job_finish")
    cancelled = client.cancel(JobRef(PID, str(running), "flink"))
    assert (cancelled.outcome, cancelled.is_success) == ("cancelled", True)
    assert client.cancel(JobRef(PID, str(finished), "flink")).outcome == "already_finished"
    assert client.cancel(JobRef(PID, "987654321", "flink")).outcome == "not_found"


def test_listing_walks_every_page_and_filters(sim: Simulator, client: DliClient) -> None:
    queue = f"q{uuid.uuid4().hex[:6]}"
    running = sim.add_sql_jobs(PID, 230, queue_name=queue)
    launching = sim.add_sql_jobs(PID, 2, queue_name=queue, status="LAUNCHING")
    sim.add_sql_jobs(PID, 5, queue_name=queue, status="FINISHED")
    sim.add_sql_jobs(PID, 3, queue_name="elsewhere")
    found = client.list_active_sql_jobs(PID, queue)
    assert sorted(found) == sorted(running + launching)
    pages = [r for r in sim.requests() if r.path.endswith("/jobs") and r.method == "GET"]
    assert len(pages) >= 3  # 230 RUNNING jobs need three pages of 100


def test_transient_faults_are_retried_then_succeed(sim: Simulator, client: DliClient) -> None:
    job_id = sim.submit_sql_job(PID)
    sim.add_fault(Fault(count=2, status=503, path_contains=job_id))
    outcome = client.cancel(JobRef(PID, job_id))
    assert (outcome.outcome, outcome.attempts) == ("cancelled", 3)


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        (Fault(count=5, status=503), "DLI_HTTP_503"),
        (Fault(count=5, status=429, retry_after="0"), "DLI_HTTP_429"),
        (Fault(count=5, drop=True), "DLI_UNREACHABLE"),
        (Fault(count=5, delay_s=1.5), "DLI_TIMEOUT"),
        (Fault(count=5, status=200, body="<html>gateway</html>"), "DLI_BAD_REPLY"),
    ],
)
def test_faults_outlasting_retries_raise_transient(
    sim: Simulator, client: DliClient, fault: Fault, code: str
) -> None:
    job_id = sim.submit_sql_job(PID)
    sim.add_fault(Fault(**{**fault.__dict__, "path_contains": job_id}))
    with pytest.raises(TransientFailure) as raised:
        client.cancel(JobRef(PID, job_id))
    assert raised.value.error_code == code
    assert raised.value.attempts == 3
    assert len([r for r in sim.requests() if job_id in r.path]) == 3


def test_retry_after_is_honoured(sim: Simulator) -> None:
    waits: list[float] = []
    slept = [0.0]

    def sleep(seconds: float) -> None:  # recorded, not waited: the client's clock moves on
        waits.append(seconds)
        slept[0] += seconds

    auth = AkSkAuth(EnvCredentials(Secret(AK), Secret(SK), None))
    policy = RetryPolicy(max_attempts=3, timeout_s=1.0, base_delay_s=0.01, max_delay_s=5)
    clock = lambda: time.monotonic() + slept[0]  # noqa: E731
    client = DliClient(sim.base_url, auth, policy, sleep=sleep, clock=clock)
    job_id = sim.submit_sql_job(PID)
    sim.add_fault(Fault(count=1, status=429, retry_after="2", path_contains=job_id))
    assert client.cancel(JobRef(PID, job_id)).outcome == "cancelled"
    assert waits == [2.0]


def test_token_auth_fetches_once_and_refreshes_after_revoke(sim: Simulator) -> None:
    iam = IamSettings(sim.base_url, "robot", Secret("robot-password"), None, "domain")
    session = requests.Session()
    auth = TokenAuth(iam, session, timeout_s=2.0)
    client = DliClient(sim.base_url, auth, RetryPolicy(timeout_s=2.0))
    first, second = sim.submit_sql_job(PID), sim.submit_sql_job(PID)
    assert client.cancel(JobRef(PID, first)).outcome == "cancelled"
    assert auth.fetch_count == 1
    sim.revoke_token(auth.token(PID))
    assert client.cancel(JobRef(PID, second)).outcome == "cancelled"
    assert auth.fetch_count == 2
