"""Fan-out: a budget event above FANOUT_THRESHOLD jobs is split into per-job messages on
FANOUT_TOPIC, which Pub/Sub pushes back to the function; results keep the original event."""

from __future__ import annotations

import collections
from collections.abc import Iterator

import pytest

from devstack.stack import PubSubEmulator
from tests.e2e_support import PROJECT_ID, LocalStack, start_stack, stop_stack

pytestmark = pytest.mark.emulator

FANOUT = "dli-cancel-fanout"


@pytest.fixture(scope="module")
def fan_stack(emulator: PubSubEmulator) -> Iterator[LocalStack]:
    local = start_stack(emulator, env={"FANOUT_THRESHOLD": "5", "FANOUT_TOPIC": FANOUT})
    local.pubsub.create_topic(FANOUT)
    local.pubsub.create_pull_subscription("fanout-audit", FANOUT)
    local.pubsub.create_push_subscription(
        "fanout-push", FANOUT, local.pubsub.push_endpoint(local.server.url, FANOUT)
    )
    try:
        yield local
    finally:
        local.pubsub.delete_subscription("fanout-push")
        stop_stack(local)


def test_big_budget_event_is_shared_out_and_each_job_cancelled_once(
    fan_stack: LocalStack,
) -> None:
    jobs = fan_stack.sim.add_sql_jobs(PROJECT_ID, 12, queue_name="wide")
    fan_stack.sim.clear_requests()

    message_id = fan_stack.publish("budget-exceeded", {"queue_names": ["wide"]})
    results = fan_stack.results_for(message_id, 12, timeout_s=30)

    assert sorted(r["job_id"] for r in results) == sorted(jobs)
    assert {r["outcome"] for r in results} == {"cancelled"}
    assert {r["event_type"] for r in results} == {"budget-exceeded"}
    deletes = collections.Counter(
        r.path.rsplit("/", 1)[-1] for r in fan_stack.sim.cancel_requests()
    )
    assert deletes == dict.fromkeys(jobs, 1)
    shares = fan_stack.pubsub.pull("fanout-audit", 12, timeout_s=10)
    assert len(shares) == 12
    assert {s.json()["source_event_id"] for s in shares} == {message_id}
    assert fan_stack.no_more_results(message_id)


def test_small_budget_event_is_not_fanned_out(fan_stack: LocalStack) -> None:
    jobs = fan_stack.sim.add_sql_jobs(PROJECT_ID, 3, queue_name="narrow")

    message_id = fan_stack.publish("budget-exceeded", {"queue_names": ["narrow"]})
    results = fan_stack.results_for(message_id, 3)

    assert sorted(r["job_id"] for r in results) == sorted(jobs)
    assert fan_stack.pubsub.pull("fanout-audit", 1, timeout_s=2) == []
