"""The local stack for end-to-end tests: DLI simulator + function under functions-framework +
Pub/Sub emulator (topics, push subscriptions to the function, a pull subscription on results).

Each stack lives in its own emulator project, so the topic names stay the real ones
(``job-timeout``, ``budget-exceeded``) without two stacks seeing each other's messages.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

from devstack.stack import FunctionServer, PubSubEmulator
from dli_simulator import Simulator

PROJECT_ID = "0123456789abcdef0123456789abcdef"
OTHER_PROJECT_ID = "fedcba9876543210fedcba9876543210"
ACCESS_KEY = "E2EACCESSKEY0000"
SECRET_KEY = "e2e-secret-key-9f8e7d6c5b4a3210"
RESULT_TOPIC = "dli-cancel-results"
TRIGGER_TOPICS = ("job-timeout", "budget-exceeded")


def base_env(sim: Simulator) -> dict[str, str]:
    return {
        "DLI_ENDPOINT": sim.base_url,
        "DLI_PROJECT_ID": PROJECT_ID,
        "HUAWEICLOUD_SDK_AK": ACCESS_KEY,
        "HUAWEICLOUD_SDK_SK": SECRET_KEY,
        "DLI_RETRY_BASE_S": "0.05",
        "DLI_RETRY_MAX_S": "2",
        "DLI_TIMEOUT_S": "3",
    }


@dataclass
class LocalStack:
    sim: Simulator
    pubsub: PubSubEmulator
    server: FunctionServer
    results_subscription: str
    _buffer: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def publish(self, topic: str, event: Mapping[str, Any] | bytes, **attributes: str) -> str:
        data = event if isinstance(event, bytes) else json.dumps(event).encode()
        return self.pubsub.publish(topic, data, **attributes)

    def results_for(self, event_id: str, count: int, timeout_s: float = 20) -> list[dict[str, Any]]:
        """The results whose ``source_event_id`` is ``event_id`` (waits for ``count``).

        Results of other events pulled meanwhile are kept for their own ``results_for``."""
        got = self._buffer.setdefault(event_id, [])
        deadline = time.monotonic() + timeout_s
        while len(got) < count and (remaining := deadline - time.monotonic()) > 0:
            for message in self.pubsub.pull(self.results_subscription, count - len(got), remaining):
                result = message.json()
                result["_attributes"] = message.attributes
                self._buffer.setdefault(result["source_event_id"], []).append(result)
        return got

    def no_more_results(self, event_id: str, wait_s: float = 2.0) -> bool:
        before = len(self._buffer.get(event_id, []))
        return len(self.results_for(event_id, before + 1, timeout_s=wait_s)) == before


def start_stack(
    emulator: PubSubEmulator,
    env: Mapping[str, str] | None = None,
    sim: Simulator | None = None,
    target: str = "cancel_dli_job",
) -> LocalStack:
    """A fresh stack in its own emulator project; stop it with ``stop_stack``."""
    if sim is None:
        sim = Simulator(credentials={ACCESS_KEY: SECRET_KEY})
        sim.start()
    pubsub = emulator.with_project(f"e2e-{uuid.uuid4().hex[:10]}")
    pubsub.create_topic(RESULT_TOPIC)
    results_sub = pubsub.create_pull_subscription("results-test", RESULT_TOPIC)
    server = FunctionServer(
        target,
        {**base_env(sim), **pubsub.env(), "RESULT_TOPIC": RESULT_TOPIC, **(env or {})},
    )
    server.start()
    for topic in TRIGGER_TOPICS:
        pubsub.create_topic(topic)
        pubsub.create_push_subscription(
            f"{topic}-push", topic, pubsub.push_endpoint(server.url, topic), ack_deadline_s=20
        )
    return LocalStack(sim, pubsub, server, results_sub)


def stop_stack(stack: LocalStack) -> None:
    for topic in TRIGGER_TOPICS:
        stack.pubsub.delete_subscription(f"{topic}-push")
    stack.server.stop()
    stack.sim.stop()


CE_GCP_PROJECT = "P"
MESSAGE_TYPE = "google.cloud.pubsub.topic.v1.messagePublished"


# -- sending events ----------------------------------------------------------------------------


def event_time(age_s: float = 0.0) -> str:
    moment = datetime.now(UTC) - timedelta(seconds=age_s)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


YOUNG = 0.0
OLD = 2 * 3600.0


def cloud_event_request(
    data: bytes,
    *,
    event_id: str | None = None,
    topic: str | None = "job-timeout",
    age_s: float = YOUNG,
    attributes: dict[str, str] | None = None,
    raw_data: str | None = None,
) -> tuple[dict[str, str], bytes]:
    """Headers and body of a binary-mode Pub/Sub CloudEvent, as Eventarc POSTs it."""
    event_id = event_id or f"ce-{uuid.uuid4().hex[:12]}"
    published = event_time(age_s)
    resource = f"projects/{CE_GCP_PROJECT}/topics/{topic}" if topic else ""
    message = {
        "data": base64.b64encode(data).decode() if raw_data is None else raw_data,
        "attributes": dict(attributes or {}),
        "messageId": event_id,
        "publishTime": published,
    }
    body = {"message": message, "subscription": f"projects/{CE_GCP_PROJECT}/subscriptions/s"}
    headers = {
        "ce-id": event_id,
        "ce-source": f"//pubsub.googleapis.com/{resource}",
        "ce-type": MESSAGE_TYPE,
        "ce-specversion": "1.0",
        "ce-time": published,
        "Content-Type": "application/json",
    }
    return headers, json.dumps(body).encode()


def post_cloud_event(
    url: str,
    event: dict[str, Any] | bytes,
    *,
    session: requests.Session | None = None,
    timeout_s: float = 30,
    **kwargs: Any,
) -> requests.Response:
    """POST one binary CloudEvent to the function; ``kwargs`` go to ``cloud_event_request``."""
    data = event if isinstance(event, bytes) else json.dumps(event).encode()
    headers, body = cloud_event_request(data, **kwargs)
    poster = session or requests
    return poster.post(url, data=body, headers=headers, timeout=timeout_s)


def start_all(*servers: FunctionServer) -> None:
    """Start servers side by side (each takes ~2 s to import and listen), then send each a
    bad event so that its lazy start (runtime, Pub/Sub client) is behind it: timings in the
    tests are then the function's own."""

    def start(server: FunctionServer) -> None:
        server.start()
        warm_up = f"warm-up-{server.port}"
        post_cloud_event(server.url, b"warm-up", event_id=warm_up, timeout_s=15)

    with ThreadPoolExecutor(max_workers=len(servers)) as pool:
        list(pool.map(start, servers))


def stop_all(*servers: FunctionServer) -> None:
    with ThreadPoolExecutor(max_workers=len(servers)) as pool:
        list(pool.map(lambda server: server.stop(grace_s=1), servers))
