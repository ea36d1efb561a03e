"""Every real trigger end to end (issue 3): budget-exceeded events (queues across pages, explicit
job ids, limits), Cloud Billing budget notifications as Google sends them, Cloud Monitoring
incidents, and Spark and Flink jobs.

Pub/Sub emulator -> push subscription -> functions-framework (``cancel_dli_job``) -> DLI
simulator -> result topic, read back with a real subscriber. One stack for the module, started
with ``BUDGET_TARGETS`` naming jobs submitted to the simulator beforehand.
"""

from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from devstack.stack import PubSubEmulator
from dli_simulator import Fault, Simulator
from tests.corpus import load_fixture
from tests.e2e_support import (
    ACCESS_KEY,
    OTHER_PROJECT_ID,
    PROJECT_ID,
    SECRET_KEY,
    LocalStack,
    start_stack,
    stop_stack,
)

pytestmark = pytest.mark.emulator

CONCURRENCY = 4
MAX_JOBS = 150
FIXTURE_BUDGET_ID = "de72f49d-779b-4945-a127-4d6ce8def0bb"  # tests/fixtures/budget_notification_*
REPEAT_BUDGET_ID = "7c1e0a52-4b7f-4d8e-9a31-2f6b5c0d9e14"


class Budgets:
    """The jobs named in BUDGET_TARGETS (their ids exist before the function starts)."""

    def __init__(self, sim: Simulator) -> None:
        # the fixture's budget: a queue, a running job elsewhere, a job already over
        self.running = sim.submit_sql_job(PROJECT_ID, queue_name="reporting")
        self.finished = sim.submit_sql_job(PROJECT_ID, queue_name="reporting", status="FINISHED")
        # a second budget, for the repeated notification
        self.repeat_jobs = sim.add_sql_jobs(PROJECT_ID, 2, queue_name="reporting")

    def targets(self) -> dict[str, Any]:
        return {
            FIXTURE_BUDGET_ID: {
                "project_id": PROJECT_ID,
                "queue_names": ["finops"],
                "job_ids": [self.running, self.finished],
            },
            REPEAT_BUDGET_ID: {"queue_names": ["finops_repeat"], "job_ids": self.repeat_jobs},
        }


@pytest.fixture(scope="module")
def budgets_and_stack(emulator: PubSubEmulator) -> Iterator[tuple[Budgets, LocalStack]]:
    sim = Simulator(credentials={ACCESS_KEY: SECRET_KEY})
    sim.start()
    budgets = Budgets(sim)
    env = {
        "BUDGET_TARGETS": json.dumps(budgets.targets()),
        "CANCEL_CONCURRENCY": str(CONCURRENCY),
        "MAX_JOBS_PER_EVENT": str(MAX_JOBS),
    }
    local = start_stack(emulator, env=env, sim=sim)
    try:
        yield budgets, local
    finally:
        stop_stack(local)


@pytest.fixture
def stack(budgets_and_stack: tuple[Budgets, LocalStack]) -> LocalStack:
    local = budgets_and_stack[1]
    local.sim.clear_requests()
    local.sim.clear_faults()
    local.sim.set_cancel_delay(0)
    return local


@pytest.fixture
def budgets(budgets_and_stack: tuple[Budgets, LocalStack]) -> Budgets:
    return budgets_and_stack[0]


# -- helpers ---------------------------------------------------------------------------------


def publish_fixture(stack: LocalStack, topic: str, name: str, **changes: Any) -> str:
    """Publish a real-format fixture (data + attributes) to ``topic``; returns the message id."""
    fixture = load_fixture(name)
    attributes = {**fixture.get("attributes", {}), **changes.pop("attributes", {})}
    return stack.publish(topic, fixture["data"], **attributes)


def incident(name: str, labels: dict[str, Any], where: str = "metric") -> dict[str, Any]:
    """An incident fixture with its job labels replaced (the simulator makes up job ids)."""
    data: dict[str, Any] = copy.deepcopy(load_fixture(name)["data"])
    if where == "policy":
        data["incident"]["policy_user_labels"] = labels
    else:
        data["incident"]["metric"]["labels"] = labels
    return data


def by_job(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    jobs = {r["job_id"]: r for r in results}
    assert len(jobs) == len(results), "one result per job"
    return jobs


def deletes(sim: Simulator) -> Counter[str]:
    """Cancel requests per job id (the last path segment of each SQL/Spark DELETE)."""
    return Counter(r.path.rsplit("/", 1)[-1] for r in sim.cancel_requests() if r.method == "DELETE")


def log_records(stack: LocalStack) -> list[dict[str, Any]]:
    records = []
    for line in stack.server.output().splitlines():
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return records


def wait_for_log(
    stack: LocalStack, message: str, event_id: str, timeout_s: float = 20
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        for record in log_records(stack):
            if record.get("message") == message and record.get("event_id") == event_id:
                return record
        if time.monotonic() > deadline:
            pytest.fail(
                f"no log line {message!r} for event {event_id}:\n{stack.server.output()[-3000:]}"
            )
        time.sleep(0.05)


class InFlight:
    """Samples how many cancel requests the simulator is handling at once."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            open_now = sum(1 for r in self.sim.cancel_requests() if r.status is None)
            self.peak = max(self.peak, open_now)
            time.sleep(0.01)

    def __enter__(self) -> InFlight:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- budget-exceeded: queues, job ids, limits ------------------------------------------------


def test_queue_over_several_pages_cancels_every_active_job_and_nothing_else(
    stack: LocalStack,
) -> None:
    sim = stack.sim
    running = sim.add_sql_jobs(PROJECT_ID, 130, queue_name="etl")
    launching = sim.add_sql_jobs(PROJECT_ID, 3, queue_name="etl", status="LAUNCHING")
    scaling = sim.add_sql_jobs(PROJECT_ID, 2, queue_name="etl", status="SCALING")
    active = set(running + launching + scaling)
    untouched: dict[str, tuple[str, str]] = {}  # job id -> (project, status it must keep)
    for project, queue, status, count in (
        (PROJECT_ID, "etl", "FINISHED", 5),
        (PROJECT_ID, "etl", "FAILED", 2),
        (PROJECT_ID, "etl", "CANCELLED", 1),
        (PROJECT_ID, "adhoc", "RUNNING", 4),
        (OTHER_PROJECT_ID, "etl", "RUNNING", 2),
    ):
        for job in sim.add_sql_jobs(project, count, queue_name=queue, status=status):
            untouched[job] = (project, status)
    sim.set_cancel_delay(0.03)
    event = {
        "event_type": "budget-exceeded",
        "project_id": PROJECT_ID,
        "queue_names": ["etl"],
        "budget": {"name": "dli-monthly", "cost": 1043.2, "amount": 1000, "currency": "EUR"},
    }

    with InFlight(sim) as in_flight:
        message_id = stack.publish("budget-exceeded", event)
        results = stack.results_for(message_id, len(active), timeout_s=40)

    jobs = by_job(results)
    assert set(jobs) == active
    for result in results:
        assert result["outcome"] == "cancelled" and result["is_success"] is True
        assert result["event_type"] == "budget-exceeded"
        assert result["queue_name"] == "etl" and result["job_kind"] == "sql"
        assert result["context"]["budget"]["name"] == "dli-monthly"
    assert stack.no_more_results(message_id, wait_s=1)
    assert deletes(sim) == Counter({job: 1 for job in active})
    assert all(sim.job_status(PROJECT_ID, j) == "CANCELLED" for j in active)
    for job, (project, status) in untouched.items():
        assert sim.job_status(project, job) == status
    listed = [r for r in sim.requests() if r.method == "GET" and r.path.endswith("/jobs")]
    running_pages = sorted(
        int(r.query["current-page"]) for r in listed if r.query.get("job-status") == "RUNNING"
    )
    assert running_pages == [1, 2], "130 RUNNING jobs are two pages of 100"
    assert {r.query.get("queue_name") for r in listed} == {"etl"}
    assert 2 <= in_flight.peak <= CONCURRENCY, f"peak {in_flight.peak} concurrent cancels"


def test_job_ids_a_failure_on_one_job_does_not_stop_the_others(stack: LocalStack) -> None:
    sim = stack.sim
    cancelled = sim.add_sql_jobs(PROJECT_ID, 3, queue_name="etl")
    refused = sim.submit_sql_job(PROJECT_ID, queue_name="etl")
    finished = sim.submit_sql_job(PROJECT_ID, queue_name="etl", status="FINISHED")
    unknown = str(uuid.uuid4())
    sim.add_fault(Fault(status=403, path_contains=refused, method="DELETE"))
    job_ids = [unknown, cancelled[0], refused, cancelled[1], finished, cancelled[2]]

    message_id = stack.publish(
        "budget-exceeded", {"event_type": "budget-exceeded", "job_ids": job_ids}
    )
    jobs = by_job(stack.results_for(message_id, len(job_ids)))

    assert set(jobs) == set(job_ids)
    assert jobs[unknown]["outcome"] == "not_found" and jobs[unknown]["error_code"] == "DLI.0002"
    assert jobs[refused]["outcome"] == "rejected" and jobs[refused]["http_status"] == 403
    assert jobs[finished]["outcome"] == "already_finished"
    for job in cancelled:
        assert jobs[job]["outcome"] == "cancelled"
        assert sim.job_status(PROJECT_ID, job) == "CANCELLED"
    assert sim.job_status(PROJECT_ID, refused) == "RUNNING"
    assert deletes(sim) == Counter({job: 1 for job in job_ids})


def test_idle_queues_publish_nothing_to_cancel(stack: LocalStack) -> None:
    stack.sim.submit_sql_job(PROJECT_ID, queue_name="idle_a", status="FINISHED")
    event = {"event_type": "budget-exceeded", "queue_names": ["idle_a", "idle_b"]}

    message_id = stack.publish("budget-exceeded", event)
    results = stack.results_for(message_id, 2)

    assert {r["queue_name"]: r["outcome"] for r in results} == {
        "idle_a": "nothing_to_cancel",
        "idle_b": "nothing_to_cancel",
    }
    for result in results:
        assert result["job_id"] == "" and result["error_code"] is None
        assert result["project_id"] == PROJECT_ID
        assert result["_attributes"]["outcome"] == "nothing_to_cancel"
    assert stack.sim.cancel_requests() == []


def test_more_active_jobs_than_max_jobs_per_event_is_invalid(stack: LocalStack) -> None:
    stack.sim.add_sql_jobs(PROJECT_ID, MAX_JOBS + 1, queue_name="crowded")

    message_id = stack.publish(
        "budget-exceeded", {"event_type": "budget-exceeded", "queue_names": ["crowded"]}
    )
    [result] = stack.results_for(message_id, 1)

    assert result["outcome"] == "invalid_event"
    assert f"MAX_JOBS_PER_EVENT={MAX_JOBS}" in result["message"]
    assert stack.sim.cancel_requests() == []


def test_a_queue_that_cannot_be_listed_does_not_stop_the_rest(stack: LocalStack) -> None:
    explicit = stack.sim.submit_sql_job(PROJECT_ID, queue_name="etl")
    queued = stack.sim.add_sql_jobs(PROJECT_ID, 2, queue_name="open_q")
    # the first listing request (queue "locked") is refused
    stack.sim.add_fault(Fault(status=403, path_contains=f"/{PROJECT_ID}/jobs", method="GET"))
    event = {
        "event_type": "budget-exceeded",
        "job_ids": [explicit],
        "queue_names": ["locked", "open_q"],
    }

    message_id = stack.publish("budget-exceeded", event)
    results = stack.results_for(message_id, 4)

    [refused] = [r for r in results if r["job_id"] == ""]
    assert refused["outcome"] == "rejected" and refused["queue_name"] == "locked"
    assert refused["message"].startswith("listing queue locked")
    cancelled = by_job([r for r in results if r["job_id"]])
    assert set(cancelled) == {explicit, *queued}
    assert {r["outcome"] for r in cancelled.values()} == {"cancelled"}
    assert stack.no_more_results(message_id, wait_s=0.5), "refused listing: acknowledged"


# -- Cloud Billing budget notifications ------------------------------------------------------


@pytest.mark.parametrize(
    "fixture", ["budget_notification_under.json", "budget_notification_no_threshold.json"]
)
def test_budget_notification_below_threshold_does_nothing(stack: LocalStack, fixture: str) -> None:
    job = stack.sim.submit_sql_job(PROJECT_ID, queue_name="finops")
    try:
        message_id = publish_fixture(stack, "budget-exceeded", fixture)
        record = wait_for_log(stack, "event ignored", message_id)

        assert "below threshold 1.0" in record["reason"]
        assert [r for r in log_records(stack) if r.get("event_id") == message_id] == [record]
        assert stack.no_more_results(message_id, wait_s=0.5)
        assert stack.sim.requests() == []
        assert stack.sim.job_status(PROJECT_ID, job) == "RUNNING"
    finally:  # the budget's queue must be clean for the next notification
        stack.sim.set_job_status(PROJECT_ID, job, "FINISHED")


def test_budget_notification_without_a_target_is_ignored(stack: LocalStack) -> None:
    unknown = {"attributes": {"budgetId": str(uuid.uuid4())}}

    message_id = publish_fixture(
        stack, "budget-exceeded", "budget_notification_over.json", **unknown
    )
    record = wait_for_log(stack, "event ignored", message_id)

    assert "has no target in BUDGET_TARGETS" in record["reason"]
    assert stack.no_more_results(message_id, wait_s=0.5)
    assert stack.sim.requests() == []


def test_budget_notification_of_another_schema_version_is_invalid(stack: LocalStack) -> None:
    message_id = publish_fixture(
        stack,
        "budget-exceeded",
        "budget_notification_over.json",
        attributes={"schemaVersion": "2.0"},
    )
    [result] = stack.results_for(message_id, 1)

    assert result["outcome"] == "invalid_event"
    assert result["message"].startswith("attributes.schemaVersion")
    assert result["event_type"] == "budget-exceeded"
    assert stack.sim.requests() == []


def test_budget_notification_over_threshold_cancels_its_targets(
    stack: LocalStack, budgets: Budgets
) -> None:
    queued = stack.sim.add_sql_jobs(PROJECT_ID, 3, queue_name="finops")
    done = stack.sim.submit_sql_job(PROJECT_ID, queue_name="finops", status="FINISHED")

    message_id = publish_fixture(stack, "budget-exceeded", "budget_notification_over.json")
    jobs = by_job(stack.results_for(message_id, 5))

    assert set(jobs) == {budgets.running, budgets.finished, *queued}
    for job in (budgets.running, *queued):
        assert jobs[job]["outcome"] == "cancelled"
        assert stack.sim.job_status(PROJECT_ID, job) == "CANCELLED"
    assert jobs[budgets.finished]["outcome"] == "already_finished"
    assert "FINISHED" in jobs[budgets.finished]["message"]
    for result in jobs.values():
        assert result["event_type"] == "budget-exceeded"
        assert result["source_event_id"] == message_id
        assert result["reason"] == "budget 'dli-monthly' cost 1043.2 >= 1000 x 1.0"
        assert result["context"]["budget_id"] == FIXTURE_BUDGET_ID
        assert result["context"]["currencyCode"] == "EUR"
    assert stack.no_more_results(message_id, wait_s=1)
    assert stack.sim.job_status(PROJECT_ID, done) == "FINISHED"
    assert deletes(stack.sim) == Counter({job: 1 for job in (budgets.running, *queued)})


def test_budget_notification_repeated_does_not_cancel_again(
    stack: LocalStack, budgets: Budgets
) -> None:
    queued = stack.sim.add_sql_jobs(PROJECT_ID, 2, queue_name="finops_repeat")
    repeat = {"attributes": {"budgetId": REPEAT_BUDGET_ID}}

    first = publish_fixture(stack, "budget-exceeded", "budget_notification_over.json", **repeat)
    first_jobs = by_job(stack.results_for(first, 4))
    second = publish_fixture(stack, "budget-exceeded", "budget_notification_over.json", **repeat)
    second_results = stack.results_for(second, 2)

    assert set(first_jobs) == {*budgets.repeat_jobs, *queued}
    assert {r["outcome"] for r in first_jobs.values()} == {"cancelled"}
    second_jobs = by_job(second_results)
    assert set(second_jobs) == set(budgets.repeat_jobs)
    assert {r["outcome"] for r in second_jobs.values()} == {"already_finished"}
    assert all(r["attempts"] == 0 for r in second_results)
    assert stack.no_more_results(second, wait_s=1)
    # one DELETE per job over both deliveries: the second only read states and listed queues
    assert deletes(stack.sim) == Counter({job: 1 for job in (*budgets.repeat_jobs, *queued)})


# -- Cloud Monitoring incidents --------------------------------------------------------------


def test_open_incident_cancels_the_job_named_by_its_labels(stack: LocalStack) -> None:
    job = stack.sim.submit_sql_job(PROJECT_ID, queue_name="etl")
    labels = {"dli_job_id": job, "dli_project_id": PROJECT_ID, "dli_queue_name": "etl"}

    message_id = stack.publish("job-timeout", incident("incident_open.json", labels))
    [result] = stack.results_for(message_id, 1)

    assert result["outcome"] == "cancelled" and result["job_id"] == job
    assert result["event_type"] == "job-timeout" and result["job_kind"] == "sql"
    assert result["reason"].startswith("DLI job run time for")
    assert result["context"]["incident_id"] == "0.ncg2rvbqh5yr"
    assert result["context"]["dli_queue_name"] == "etl"
    assert stack.sim.job_status(PROJECT_ID, job) == "CANCELLED"


def test_open_incident_with_policy_labels_cancels_a_spark_batch(stack: LocalStack) -> None:
    batch = stack.sim.add_spark_batch(PROJECT_ID)
    labels = {"dli_job_id": batch, "dli_job_kind": "spark", "event_type": "job-timeout"}

    message_id = stack.publish(
        "job-timeout", incident("incident_policy_labels.json", labels, where="policy")
    )
    [result] = stack.results_for(message_id, 1)

    assert result["outcome"] == "cancelled" and result["job_kind"] == "spark"
    assert stack.sim.job_status(PROJECT_ID, batch) == "dead"


def test_closed_incident_does_nothing(stack: LocalStack) -> None:
    job = stack.sim.submit_sql_job(PROJECT_ID, queue_name="etl")
    labels = {"dli_job_id": job, "dli_project_id": PROJECT_ID}

    message_id = stack.publish("job-timeout", incident("incident_closed.json", labels))
    record = wait_for_log(stack, "event ignored", message_id)

    assert "closed" in record["reason"]
    assert stack.no_more_results(message_id, wait_s=0.5)
    assert stack.sim.requests() == []
    assert stack.sim.job_status(PROJECT_ID, job) == "RUNNING"


def test_incident_without_a_job_id_is_invalid(stack: LocalStack) -> None:
    message_id = stack.publish(
        "job-timeout", incident("incident_open.json", {"dli_queue_name": "etl"})
    )
    [result] = stack.results_for(message_id, 1)

    assert result["outcome"] == "invalid_event" and result["error_code"] == "INVALID_EVENT"
    assert "dli_job_id" in result["message"]
    assert stack.no_more_results(message_id, wait_s=0.5)
    assert stack.sim.requests() == []


# -- Spark and Flink -------------------------------------------------------------------------


def test_spark_batch_cancel(stack: LocalStack) -> None:
    batch = stack.sim.add_spark_batch(PROJECT_ID, queue_name="etl")
    event = {"job_id": batch, "job_kind": "spark", "reason": "batch ran 7300 s, limit 7200 s"}

    message_id = stack.publish("job-timeout", event)
    [result] = stack.results_for(message_id, 1)

    assert result["outcome"] == "cancelled" and result["is_success"] is True
    assert result["job_kind"] == "spark" and result["job_id"] == batch
    [call] = stack.sim.cancel_requests()
    assert (call.method, call.path) == ("DELETE", f"/v2.0/{PROJECT_ID}/batches/{batch}")
    assert stack.sim.job_status(PROJECT_ID, batch) == "dead"


def test_flink_job_stop(stack: LocalStack) -> None:
    job = stack.sim.add_flink_job(PROJECT_ID)
    event = {"job_id": job, "job_kind": "flink", "reason": "stream job over its 24 h window"}

    message_id = stack.publish("job-timeout", event)
    [result] = stack.results_for(message_id, 1)

    assert result["outcome"] == "cancelled" and result["is_success"] is True
    assert result["job_kind"] == "flink" and result["job_id"] == str(job)
    assert result["_attributes"]["job_id"] == str(job)
    [call] = stack.sim.cancel_requests()
    assert (call.method, call.path) == ("POST", f"/v1.0/{PROJECT_ID}/streaming/jobs/stop")
    assert json.loads(call.body)["job_ids"] == [job]
    assert stack.sim.job_status(PROJECT_ID, str(job)) == "job_cancel_success"


def test_budget_event_with_flink_job_ids(stack: LocalStack) -> None:
    running = [stack.sim.add_flink_job(PROJECT_ID) for _ in range(2)]
    stopped = stack.sim.add_flink_job(PROJECT_ID, status="job_cancel_success")
    event = {
        "event_type": "budget-exceeded",
        "job_kind": "flink",
        "job_ids": [running[0], str(running[1]), stopped],
    }

    message_id = stack.publish("budget-exceeded", event)
    jobs = by_job(stack.results_for(message_id, 3))

    assert jobs[str(running[0])]["outcome"] == "cancelled"
    assert jobs[str(running[1])]["outcome"] == "cancelled"
    assert jobs[str(stopped)]["outcome"] == "already_finished"
    assert {r["job_kind"] for r in jobs.values()} == {"flink"}
