"""The configuration rules of SPEC 5.2 through real functions-framework servers: a server started
with a number that is not finite, a plain-http endpoint, a push audience without its service
account and a fan-out topic without a project names every problem once at start, before any
event, and then answers every event with an error (CloudEvent 500, HTTP 503) until fixed."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import requests

from devstack.stack import FunctionServer

BAD = {
    "DLI_ENDPOINT": "http://dli.eu-de.otc.t-systems.com",
    "DLI_PROJECT_ID": "0123456789abcdef0123456789abcdef",
    "HUAWEICLOUD_SDK_AK": "E2ECONFIGAK00000",
    "HUAWEICLOUD_SDK_SK": "e2e-config-secret-0123456789",
    "RESULT_TOPIC": "projects/p/topics/results",
    "MAX_EVENT_AGE_S": "nan",
    "BUDGET_THRESHOLD": "inf",
    "PUSH_AUDIENCE": "https://dli-cancel.example.com/",
    "FANOUT_TOPIC": "dli-cancel-fanout",  # bare, and no GOOGLE_CLOUD_PROJECT
}
PROBLEMS = [
    "DLI_ENDPOINT must be an https:// URL",
    "MAX_EVENT_AGE_S must be a finite number, got 'nan'",
    "BUDGET_THRESHOLD must be a finite number, got 'inf'",
    "FANOUT_TOPIC is a bare name",
    "PUSH_AUDIENCE is set without PUSH_SERVICE_ACCOUNT",
]


def records(server: FunctionServer) -> list[dict[str, Any]]:
    return [json.loads(x) for x in server.output().splitlines() if x.startswith("{")]


def test_server_with_each_rule_broken_reports_at_start_and_answers_errors(
    function_server: Callable[..., FunctionServer],
) -> None:
    env = dict(BAD)
    ce = function_server("cancel_dli_job", env)
    http = function_server("cancel_dli_job_http", env)

    for server in (ce, http):  # before any event
        start = records(server)[0]
        assert start["severity"] == "ERROR" and "event_id" not in start
        assert len(start["problems"]) == len(PROBLEMS), start["problems"]
        for expected in PROBLEMS:
            assert any(p.startswith(expected) for p in start["problems"]), expected
        assert BAD["HUAWEICLOUD_SDK_SK"] not in server.output()

    data = base64.b64encode(b'{"job_id": "5a3a2c2e-1111-4222-8333-944455556666"}').decode()
    body = {"message": {"data": data, "messageId": "m1"}, "subscription": "projects/p/s/s"}
    headers = {
        "ce-id": "m1",
        "ce-source": "//pubsub.googleapis.com/projects/p/topics/job-timeout",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-specversion": "1.0",
        "ce-time": "2026-01-01T00:00:00Z",
    }
    for _ in range(2):  # every event, not only the first
        answer = requests.post(ce.url, json=body, headers=headers, timeout=30)
        assert answer.status_code == 500, answer.text  # Pub/Sub delivers it again
        assert "MAX_EVENT_AGE_S must be a finite number" in answer.text
        direct = requests.post(http.url, json={"job_id": "x"}, timeout=30)
        assert direct.status_code == 503, direct.text

    assert ce.running and http.running
    for server in (ce, http):
        assert len([r for r in records(server) if "problems" in r]) == 1  # reported once
        assert "Traceback" not in server.output()
