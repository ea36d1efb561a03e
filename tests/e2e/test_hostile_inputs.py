"""Inputs are hostile (SPEC 5.2), through the real servers: an unreadable ``publishTime`` counts
as absent (the event is young: a transient fault makes it come again, never ``failed``), a
budget that is not positive cancels nothing, and hostile envelope fields in a raw Pub/Sub push
to ``cancel_dli_job`` (converted by functions-framework) are acknowledged as ``invalid_event``.

(Hostile envelope fields as Eventarc CloudEvents and as push envelopes posted to
``cancel_dli_job_http``: the bad-input corpus, tests/test_e2e_bad_inputs.py. Linear parsing:
tests/unit/test_linear_parsing.py and ``python -m bench.hostile``.)
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from devstack.stack import FunctionServer, PubSubEmulator
from dli_simulator import Fault
from tests.corpus import fixture_message, load_bad_inputs
from tests.e2e_support import (
    CE_GCP_PROJECT,
    MESSAGE_TYPE,
    PROJECT_ID,
    LocalStack,
    event_time,
    start_all,
    start_stack,
    stop_all,
    stop_stack,
)

pytestmark = pytest.mark.emulator

OUT_OF_RANGE = "0001-01-01T00:00:00+05:00"  # year 0 once in UTC: was an OverflowError, HTTP 500
NOW = event_time()
BUDGET_TARGETS = {
    "budget-cloudevent": {"queue_names": ["q_cloudevent"]},
    "budget-http": {"queue_names": ["q_http"]},
}


@dataclass
class Stack:
    local: LocalStack  # cancel_dli_job, results on the local stack's result topic
    http: FunctionServer  # cancel_dli_job_http, same configuration and result topic

    @property
    def ce(self) -> FunctionServer:
        return self.local.server

    def records(self, server: FunctionServer, event_id: str) -> list[dict[str, Any]]:
        lines = [json.loads(x) for x in server.output().splitlines() if x.startswith("{")]
        return [r for r in lines if r.get("event_id") == event_id]


@pytest.fixture(scope="module")
def stack(emulator: PubSubEmulator) -> Iterator[Stack]:
    env = {"BUDGET_TARGETS": json.dumps(BUDGET_TARGETS), "MAX_EVENT_AGE_S": "600"}
    local = start_stack(emulator, env=env)
    http = FunctionServer("cancel_dli_job_http", {**local.server.env})
    try:
        start_all(http)
        yield Stack(local, http)
    finally:
        stop_all(http)
        stop_stack(local)


def deliver(
    stack: Stack, route: str, payload: bytes, event_id: str, topic: str, /, **fields: Any
) -> requests.Response:
    """One delivery of ``payload`` published at ``OUT_OF_RANGE``, by ``route``: an Eventarc
    CloudEvent, a raw push to ``cancel_dli_job``, or a push to ``cancel_dli_job_http``.
    ``fields`` replace the Pub/Sub message's own (``publishTime``, ``attributes``, ...)."""
    message = {
        "data": base64.b64encode(payload).decode(),
        "attributes": {},
        "messageId": event_id,
        "publishTime": OUT_OF_RANGE,
        **fields,
    }
    publish_time = message["publishTime"]
    body = {"message": message, "subscription": f"projects/{CE_GCP_PROJECT}/subscriptions/s"}
    path = f"/projects/{CE_GCP_PROJECT}/topics/{topic}"
    if route == "cloudevent":
        headers = {
            "ce-id": event_id,
            "ce-source": f"//pubsub.googleapis.com/{path.lstrip('/')}",
            "ce-type": MESSAGE_TYPE,
            "ce-specversion": "1.0",
            "ce-time": str(publish_time),
            "Content-Type": "application/json",
        }
        return requests.post(stack.ce.url, json=body, headers=headers, timeout=60)
    server = stack.ce if route == "raw-push" else stack.http
    return requests.post(server.url + path, json=body, timeout=60)


ROUTES = ["cloudevent", "raw-push", "http-push"]


@pytest.mark.parametrize("route", ROUTES)
def test_unreadable_publish_time_is_handled_as_young(stack: Stack, route: str) -> None:
    sim = stack.local.sim
    job_id = sim.submit_sql_job(PROJECT_ID)
    sim.add_fault(Fault(count=3, status=503, path_contains=job_id, method="DELETE"))
    event_id = f"young-{route}-{uuid.uuid4().hex[:6]}"
    data = json.dumps({"job_id": job_id}).encode()

    first = deliver(stack, route, data, event_id, "job-timeout")

    # young: delivered again (CloudEvent 500, HTTP 503), no `failed` result
    assert first.status_code == (503 if route == "http-push" else 500), first.text
    assert "retry later" in first.text and "DLI_HTTP_503" in first.text
    assert stack.local.no_more_results(event_id, wait_s=1.0)
    server = stack.http if route == "http-push" else stack.ce
    [retry] = [r for r in stack.records(server, event_id) if r.get("outcome") == "retry"]
    assert retry["error_code"] == "DLI_HTTP_503"

    again = deliver(stack, route, data, event_id, "job-timeout")  # the fault is over

    assert again.status_code == 200, again.text
    [result] = stack.local.results_for(event_id, 1)
    assert (result["outcome"], result["job_id"]) == ("cancelled", job_id)
    assert sim.job_status(PROJECT_ID, job_id) == "CANCELLED"


def budget_notification(budget_id: str, amount: float, cost: float) -> tuple[bytes, dict[str, str]]:
    data, attributes = fixture_message("budget_notification_over.json")
    note = {**json.loads(data), "budgetAmount": amount, "costAmount": cost}
    return json.dumps(note).encode(), {**attributes, "budgetId": budget_id}


@pytest.mark.parametrize("route", ["cloudevent", "http-push"])
def test_budget_that_is_not_positive_never_cancels(stack: Stack, route: str) -> None:
    sim = stack.local.sim
    queue = "q_http" if route == "http-push" else "q_cloudevent"
    job_id = sim.submit_sql_job(PROJECT_ID, queue_name=queue)

    def send(amount: float, cost: float) -> tuple[str, requests.Response]:
        data, attributes = budget_notification(f"budget-{queue[2:]}", amount, cost)
        event_id = f"budget-{uuid.uuid4().hex[:8]}"
        fields = {"attributes": attributes, "publishTime": NOW}
        return event_id, deliver(stack, route, data, event_id, "budget-exceeded", **fields)

    for amount, cost in ((0, 12.5), (0, 0), (-50, 3)):
        sim.clear_requests()
        event_id, answer = send(amount, cost)

        assert answer.status_code == 200, answer.text
        assert sim.requests() == [], "nothing is listed or cancelled"
        assert stack.local.no_more_results(event_id, wait_s=0.5)
        if route == "http-push":
            assert answer.json()["results"] == []
            assert "not positive" in answer.json()["ignored"]
        else:
            [ignored] = stack.records(stack.ce, event_id)
            assert ignored["message"] == "event ignored" and "budgetAmount" in ignored["reason"]
    assert sim.job_status(PROJECT_ID, job_id) == "RUNNING"

    _, acted = send(10, 12.5)  # the same budget, positive and exceeded: its queue is cancelled

    assert acted.status_code == 200
    assert sim.job_status(PROJECT_ID, job_id) == "CANCELLED"


ENVELOPE_CASES = [case for case in load_bad_inputs() if case.message]


def test_raw_push_with_hostile_envelope_fields_is_acknowledged(stack: Stack) -> None:
    stack.local.sim.clear_requests()
    expected: dict[str, str] = {}
    for case in ENVELOPE_CASES:
        event_id = f"raw-{case.name}"
        fields = {"publishTime": NOW, **case.message}
        answer = deliver(stack, "raw-push", case.data, event_id, case.topic or "", **fields)

        assert answer.status_code == 200, (case.name, answer.status_code, answer.text)
        message_id = fields.get("messageId", event_id)
        if isinstance(message_id, str) and message_id.isascii():  # else: an id of our own
            expected[message_id] = case.expect_field

    assert len(expected) >= 10
    for event_id, field in expected.items():
        [result] = stack.local.results_for(event_id, 1)
        assert (result["outcome"], result["error_code"]) == ("invalid_event", "INVALID_EVENT")
        assert result["message"].startswith(field), (event_id, result["message"])
    assert stack.local.sim.requests() == [], "a bad envelope reached DLI"
