"""``dli-cancel results``: the operator's watch over the result topic, through the real servers.

Results come from the function (Pub/Sub emulator -> push -> functions-framework -> DLI
simulator -> result topic) or are published straight to the result topic when a test needs
exact contents. ``results`` reads the operator's own subscription and acknowledges what it
printed.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from typing import Any

import pytest

from tests.e2e_support import PROJECT_ID, RESULT_TOPIC, LocalStack
from tests.ops_support import (
    REPO_ROOT,
    child_env,
    dli_cancel,
    dli_cancel_command,
    json_lines,
    table_rows,
    watch_subscription,
)

pytestmark = pytest.mark.emulator


def result(job_id: str, outcome: str, **fields: Any) -> dict[str, Any]:
    return {
        "event_type": "job-timeout",
        "source_event_id": f"evt-{uuid.uuid4().hex[:8]}",
        "project_id": PROJECT_ID,
        "job_id": job_id,
        "job_kind": "sql",
        "outcome": outcome,
        "is_success": outcome == "cancelled",
        "error_code": None,
        "message": "",
        "http_status": 200,
        "dli_request_id": None,
        "attempts": 1,
        "dry_run": False,
        "reason": None,
        "handled_at": "2026-11-28T12:00:00.123Z",
        **fields,
    }


def fresh_subscription(stack: LocalStack) -> str:
    name = f"watch-{uuid.uuid4().hex[:8]}"
    watch_subscription(stack, name)
    return name


def test_results_prints_a_table_and_acknowledges_what_it_read(stack: LocalStack) -> None:
    subscription = fresh_subscription(stack)
    published = [
        result("5a3a2c2e-1111-4222-8333-944455556666", "cancelled"),
        result("", "nothing_to_cancel", event_type="budget-exceeded", queue_name="etl"),
        result(
            "9e2c5a71-3333-4444-9555-b66677778888", "failed", error_code="DLI_TIMEOUT", attempts=3
        ),
    ]
    for item in published:
        stack.publish(RESULT_TOPIC, item)
    stack.publish(RESULT_TOPIC, b"not json")

    done = dli_cancel("results", "--subscription", subscription, env=stack.pubsub.env())
    again = dli_cancel("results", "--subscription", subscription, env=stack.pubsub.env())

    assert done.returncode == 0, done.stderr
    rows = sorted(table_rows(done.stdout), key=lambda row: row[3])
    assert rows == [
        [
            "2026-11-28T12:00:00.123Z",
            "job-timeout",
            "5a3a2c2e-1111-4222-8333-944455556666",
            "cancelled",
            "-",
            "1",
        ],
        [
            "2026-11-28T12:00:00.123Z",
            "job-timeout",
            "9e2c5a71-3333-4444-9555-b66677778888",
            "failed",
            "DLI_TIMEOUT",
            "3",
        ],
        ["2026-11-28T12:00:00.123Z", "budget-exceeded", "queue etl", "nothing_to_cancel", "-", "1"],
    ]
    assert "is not a result event" in done.stderr
    assert again.returncode == 0 and table_rows(again.stdout) == []
    assert "no result waiting" in again.stderr


def test_results_json_is_one_object_per_result(stack: LocalStack) -> None:
    subscription = fresh_subscription(stack)
    published = [
        result(str(uuid.uuid4()), "cancelled"),
        result(str(uuid.uuid4()), "rejected", error_code="DLI.0003"),
    ]
    for item in published:
        stack.publish(RESULT_TOPIC, item)

    done = dli_cancel("results", "--subscription", subscription, "--json", env=stack.pubsub.env())

    assert done.returncode == 0, done.stderr
    printed = json_lines(done.stdout)
    key = lambda r: r["job_id"]  # noqa: E731
    assert sorted(printed, key=key) == sorted(published, key=key)


def test_results_limit_leaves_the_rest_for_the_next_read(stack: LocalStack) -> None:
    subscription = fresh_subscription(stack)
    jobs = [str(uuid.uuid4()) for _ in range(3)]
    for job in jobs:
        stack.publish(RESULT_TOPIC, result(job, "cancelled"))

    first = dli_cancel(
        "results", "--subscription", subscription, "--limit", "2", "--json", env=stack.pubsub.env()
    )
    rest = dli_cancel("results", "--subscription", subscription, "--json", env=stack.pubsub.env())

    assert first.returncode == 0 and rest.returncode == 0, first.stderr + rest.stderr
    seen = [r["job_id"] for r in json_lines(first.stdout)]
    assert len(seen) == 2
    assert sorted(seen + [r["job_id"] for r in json_lines(rest.stdout)]) == sorted(jobs)


def test_results_follow_shows_the_function_results_as_they_come(stack: LocalStack) -> None:
    subscription = fresh_subscription(stack)
    queue = f"q{uuid.uuid4().hex[:8]}"
    jobs = stack.sim.add_sql_jobs(PROJECT_ID, 2, queue_name=queue)
    follower = subprocess.Popen(
        [
            *dli_cancel_command(),
            "results",
            "--subscription",
            subscription,
            "--follow",
            "--limit",
            "2",
            "--json",
        ],
        env=child_env(stack.pubsub.env()),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1)  # already following, before the event is sent
        sent = dli_cancel("send", "budget-exceeded", "--queue", queue, env=stack.pubsub.env())
        assert sent.returncode == 0, sent.stderr
        out, err = follower.communicate(timeout=60)
    finally:
        follower.kill()

    assert follower.returncode == 0, err
    printed = json_lines(out)
    message_id = json.loads(sent.stdout)["message_id"]
    assert {r["source_event_id"] for r in printed} == {message_id}
    assert sorted(r["job_id"] for r in printed) == sorted(jobs)
    assert {r["outcome"] for r in printed} == {"cancelled"}
    assert "following" in err


def test_results_follow_ends_cleanly_on_ctrl_c(stack: LocalStack) -> None:
    subscription = fresh_subscription(stack)
    job = str(uuid.uuid4())
    stack.publish(RESULT_TOPIC, result(job, "cancelled"))
    follower = subprocess.Popen(
        [*dli_cancel_command(), "results", "--subscription", subscription, "--follow"],
        env=child_env(stack.pubsub.env()),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        lines = [follower.stdout.readline(), follower.stdout.readline()]  # header, the row
        follower.send_signal(signal.SIGINT)
        rest, err = follower.communicate(timeout=30)
    finally:
        follower.kill()

    assert follower.returncode == 0, err
    assert lines[0].startswith("TIME") and job in lines[1] and "cancelled" in lines[1]
    assert rest == ""
    assert "Traceback" not in err


def test_results_from_a_missing_subscription_fails(stack: LocalStack) -> None:
    done = dli_cancel("results", "--subscription", "no-such-sub", env=stack.pubsub.env())
    assert done.returncode == 1
    assert "reading projects/" in done.stderr and "no-such-sub" in done.stderr
    assert done.stdout == ""


def test_results_without_a_project_is_a_usage_error() -> None:
    done = dli_cancel("results", env={"PUBSUB_EMULATOR_HOST": "127.0.0.1:9"})
    assert done.returncode == 2
    assert "GOOGLE_CLOUD_PROJECT" in done.stderr
