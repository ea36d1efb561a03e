"""Configuration errors through real processes: ``import main`` logs every problem before any
event, and functions-framework servers with a bad configuration answer 500 (CloudEvent) and
503 (HTTP) and keep running. The in-process rules are in tests/unit/test_config.py."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Callable

import requests

from devstack.stack import REPO_ROOT, FunctionServer, child_env

PROJECT = "0123456789abcdef0123456789abcdef"
GOOD: dict[str, str] = {
    "DLI_ENDPOINT": "https://dli.example.com",
    "DLI_PROJECT_ID": PROJECT,
    "HUAWEICLOUD_SDK_AK": "CONFIGTESTAK0000",
    "HUAWEICLOUD_SDK_SK": "config-test-secret-key-0123456789",
    "RESULT_TOPIC": "projects/p/topics/results",
}


def without(*names: str) -> dict[str, str]:
    return {k: v for k, v in GOOD.items() if k not in names}


def test_importing_main_logs_the_problems_before_any_event() -> None:
    env = child_env({"DLI_AUTH": "kerberos", "BUDGET_TARGETS": "[]"})
    done = subprocess.run(
        [sys.executable, "-c", "import main"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    [line] = done.stdout.splitlines()
    record = json.loads(line)
    assert record["severity"] == "ERROR"
    assert record["problems"] == [
        "DLI_ENDPOINT or DLI_REGION is required",
        "DLI_AUTH must be 'aksk' or 'token', got 'kerberos'",
        "RESULT_TOPIC is required (or DLI_LOCAL_RUN=true to print results)",
        "BUDGET_TARGETS must be a JSON object of budgetId -> target",
    ]


def test_servers_with_a_bad_configuration_answer_500_and_503_and_keep_running(
    function_server: Callable[..., FunctionServer],
) -> None:
    env = without("HUAWEICLOUD_SDK_AK", "HUAWEICLOUD_SDK_SK")
    ce = function_server("cancel_dli_job", env)
    http = function_server("cancel_dli_job_http", env)
    data = base64.b64encode(b'{"job_id": "5a3a2c2e-1111-4222-8333-944455556666"}').decode()
    body = {"message": {"data": data, "messageId": "m1"}, "subscription": "projects/p/s/s"}
    headers = {
        "ce-id": "m1",
        "ce-source": "//pubsub.googleapis.com/projects/p/topics/job-timeout",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-specversion": "1.0",
        "ce-time": "2026-01-01T00:00:00Z",
    }

    for _ in range(2):
        answer = requests.post(ce.url, json=body, headers=headers, timeout=30)
        assert answer.status_code == 500  # Pub/Sub delivers it again
        assert "HUAWEICLOUD_SDK_AK and HUAWEICLOUD_SDK_SK" in answer.text
        direct = requests.post(http.url, json={"job_id": "x"}, timeout=30)
        assert direct.status_code == 503

    assert ce.running and http.running
    for server in (ce, http):
        records = [json.loads(x) for x in server.output().splitlines() if x.startswith("{")]
        assert records[0]["severity"] == "ERROR"  # the start, before any event
        assert "AK/SK credentials missing" in records[0]["message"]
        assert "event_id" not in records[0]
        assert len([r for r in records if "problems" in r]) == 1  # reported once
        assert "Traceback" not in server.output()
