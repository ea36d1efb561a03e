"""The bad-input corpus against both entry points, over the real functions-framework servers.

Every case goes to ``cancel_dli_job`` as a binary CloudEvent and to ``cancel_dli_job_http``
(posted directly, or inside a Pub/Sub push envelope), whatever transport the case was written
for. A delivery that is valid in the other transport (a body that only lacks its topic, say)
is left out; every other one must be acknowledged with an ``invalid_event`` result naming the
field (HTTP 400 posted directly, 200 for a CloudEvent or a push envelope, 413 over the size
limit), never a 5xx, never a request to DLI; the servers stay up and a good event still works.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
import requests
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

from cancel_handler.config import load_settings
from cancel_handler.envelopes import (
    Delivery,
    EnvelopeError,
    from_cloud_event,
    from_http_body,
)
from cancel_handler.events import EventRules, InvalidEvent, parse_event
from devstack.stack import FunctionServer, PubSubEmulator
from dli_simulator import Simulator
from tests.corpus import GCP_PROJECT, BadInput, load_bad_inputs, pubsub_cloud_event
from tests.e2e_support import (
    ACCESS_KEY,
    PROJECT_ID,
    SECRET_KEY,
    base_env,
    event_time,
    start_all,
    stop_all,
)

pytestmark = pytest.mark.emulator

MAX_BYTES = 65536
CASES = load_bad_inputs(MAX_BYTES)
CE_TOPIC = "results-ce"
HTTP_TOPIC = "results-http"


@dataclass
class Servers:
    sim: Simulator
    pubsub: PubSubEmulator
    ce: FunctionServer
    http: FunctionServer
    ce_results: str  # pull subscription on the cloudevent server's results
    rules: EventRules


@pytest.fixture(scope="module")
def servers(emulator: PubSubEmulator) -> Iterator[Servers]:
    sim = Simulator(credentials={ACCESS_KEY: SECRET_KEY})
    sim.start()
    pubsub = emulator.with_project(f"bad-{uuid.uuid4().hex[:10]}")
    pubsub.create_topic(CE_TOPIC)
    pubsub.create_topic(HTTP_TOPIC)
    ce_results = pubsub.create_pull_subscription("results-ce-sub", CE_TOPIC)
    env = {**base_env(sim), **pubsub.env()}
    ce = FunctionServer("cancel_dli_job", {**env, "RESULT_TOPIC": CE_TOPIC})
    http = FunctionServer("cancel_dli_job_http", {**env, "RESULT_TOPIC": HTTP_TOPIC})
    rules = EventRules.from_settings(load_settings({**env, "RESULT_TOPIC": CE_TOPIC}))
    try:
        start_all(ce, http)
        yield Servers(sim, pubsub, ce, http, ce_results, rules)
    finally:
        stop_all(ce, http)
        sim.stop()


# -- deliveries ------------------------------------------------------------------------------


@dataclass
class Sent:
    """One delivery of a case and what it must give."""

    case: BadInput
    route: str  # "ce" (binary CloudEvent), "http" (posted directly), "push" (push envelope)
    event_id: str
    expect_field: str
    expect_status: int
    event: CloudEvent | None = None
    body: bytes = b""
    path: str = "/"
    status: int = 0
    answer: str = ""


def refusal(deliver: Callable[[], Delivery], rules: EventRules) -> str | None:
    """The field the function must name for this delivery; None when it is a valid event."""
    try:
        parse_event(deliver(), rules)
    except (EnvelopeError, InvalidEvent) as error:
        return error.field
    return None


def as_cloud_event(case: BadInput) -> CloudEvent:
    """The case as the CloudEvent the function receives (a body case: as the message data,
    with no topic, as from a push subscription whose URL does not name it)."""
    if case.transport == "cloudevent":
        return pubsub_cloud_event(
            case.data,
            case.attributes,
            case.topic,
            message_id=f"ce-{case.name}",
            publish_time=event_time(),
            raw_data=case.message_data,
            message_fields=case.message,
        )
    return pubsub_cloud_event(
        case.http_body(), message_id=f"ce-x-{case.name}", publish_time=event_time()
    )


def as_http_request(case: BadInput) -> tuple[bytes, str]:
    """The case as a POST to the HTTP entry: its body, or for a cloudevent case the Pub/Sub
    push request (the envelope, the topic in the URL path)."""
    if case.transport == "http":
        return case.http_body(), case.path
    envelope = as_cloud_event(case).data
    path = f"/projects/{GCP_PROJECT}/topics/{case.topic}" if case.topic else "/"
    return json.dumps(envelope).encode(), path


def is_push_envelope(body: bytes) -> bool:
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        return False
    return isinstance(parsed, dict) and "message" in parsed and "subscription" in parsed


def plan(rules: EventRules) -> list[Sent]:
    """Every delivery to make; the native transport of each case must name its field."""
    sent: list[Sent] = []
    for case in CASES:
        event = as_cloud_event(case)
        field = refusal(partial(from_cloud_event, event, MAX_BYTES), rules)
        if case.transport == "cloudevent":
            assert field == case.expect_field, case.name
        if field is not None:
            sent.append(Sent(case, "ce", event["id"], field, 200, event=event))

        body, path = as_http_request(case)
        field = refusal(partial(from_http_body, body, MAX_BYTES, path), rules)
        if case.transport == "http":
            assert field == case.expect_field, case.name
        if field is None:
            continue
        push = is_push_envelope(body)
        status = 413 if len(body) > MAX_BYTES else 200 if push else 400
        route = "push" if push else "http"
        sent.append(Sent(case, route, "", field, status, body=body, path=path))
    return sent


def send(servers: Servers, session: requests.Session, item: Sent) -> None:
    if item.event is not None:
        headers, data = to_binary(item.event)
        answer = session.post(servers.ce.url, data=data, headers=headers, timeout=30)
    else:
        headers = {"Content-Type": "application/json"}
        url = servers.http.url + item.path
        answer = session.post(url, data=item.body, headers=headers, timeout=30)
    item.status, item.answer = answer.status_code, answer.text


# -- the run ---------------------------------------------------------------------------------


def good_event(servers: Servers, session: requests.Session) -> None:
    """A good event still works on both servers after the corpus."""
    job_ce = servers.sim.submit_sql_job(PROJECT_ID)
    event_id = "good-after-corpus"
    event = pubsub_cloud_event(
        json.dumps({"job_id": job_ce}).encode(),
        topic="job-timeout",
        message_id=event_id,
        publish_time=event_time(),
    )
    headers, data = to_binary(event)
    assert session.post(servers.ce.url, data=data, headers=headers, timeout=30).status_code == 200
    assert servers.sim.job_status(PROJECT_ID, job_ce) == "CANCELLED"

    job_http = servers.sim.submit_sql_job(PROJECT_ID)
    body = {"event_type": "job-timeout", "job_id": job_http}
    answer = session.post(servers.http.url, json=body, timeout=30)
    assert answer.status_code == 200
    [result] = answer.json()["results"]
    assert (result["outcome"], result["job_id"]) == ("cancelled", job_http)


def test_bad_input_corpus_on_both_entry_points(servers: Servers) -> None:
    items = plan(servers.rules)
    servers.sim.clear_requests()
    assert len(items) >= 2 * len(CASES) * 0.9, "most cases must be refused in both transports"

    with requests.Session() as session:
        session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=8))
        with ThreadPoolExecutor(max_workers=6) as pool:
            list(pool.map(lambda item: send(servers, session, item), items))

        problems: list[str] = []
        for item in items:
            where = f"{item.case.name} via {item.route}"
            if item.status != item.expect_status:
                problems.append(f"{where}: HTTP {item.status}, expected {item.expect_status}")
                continue
            if item.route == "ce" or item.status == 413:
                continue
            [result] = json.loads(item.answer)["results"]
            problems += check_result(where, result, item.expect_field)

        ce_items = [item for item in items if item.route == "ce"]
        results = pull_all(servers, {item.event_id for item in ce_items})
        for item in ce_items:
            got = results.get(item.event_id, [])
            where = f"{item.case.name} via ce"
            if len(got) != 1:
                problems.append(f"{where}: {len(got)} results published")
                continue
            problems += check_result(where, got[0], item.expect_field)

        assert problems == [], "\n".join(problems)
        assert servers.sim.requests() == [], "a bad input reached DLI"
        assert servers.ce.running and servers.http.running
        good_event(servers, session)


def check_result(where: str, result: dict[str, Any], field: str) -> list[str]:
    wrong = []
    if (result["outcome"], result["error_code"]) != ("invalid_event", "INVALID_EVENT"):
        wrong.append(f"{where}: {result['outcome']} {result['error_code']}")
    if result["is_success"] is not False or result["attempts"] != 0:
        wrong.append(f"{where}: is_success {result['is_success']}, attempts {result['attempts']}")
    if not result["message"].startswith(field):
        wrong.append(f"{where}: message {result['message']!r} does not name {field!r}")
    return wrong


def pull_all(servers: Servers, event_ids: set[str]) -> dict[str, list[dict[str, Any]]]:
    """The published results, by source event id, once each of ``event_ids`` has one."""
    by_event: dict[str, list[dict[str, Any]]] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        missing = event_ids - by_event.keys()
        if not missing:
            break
        for message in servers.pubsub.pull(servers.ce_results, len(missing), timeout_s=5):
            result = message.json()
            by_event.setdefault(result["source_event_id"], []).append(result)
    return by_event


def test_oversized_http_body_is_refused_before_parsing(servers: Servers) -> None:
    body = b"{" * (MAX_BYTES + 1)  # not JSON either: a 413 shows it was never parsed
    answer = requests.post(servers.http.url, data=body, timeout=30)

    assert answer.status_code == 413
    assert "65536" in answer.json()["error"]


def test_chunked_oversized_http_body_is_refused(servers: Servers) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(MAX_BYTES // 1024 + 2):
            yield b" " * 1024

    answer = requests.post(servers.http.url, data=chunks(), timeout=30)  # no Content-Length

    assert answer.status_code == 413


def test_http_entry_refuses_other_methods(servers: Servers) -> None:
    assert requests.get(servers.http.url, timeout=30).status_code == 405
