"""``dli-cancel send --file/--attr/--wait``: saved payloads replayed as they are, and an event's
results read back, through the real servers (Pub/Sub emulator, functions-framework, DLI
simulator).

One stack for the module, started with ``BUDGET_TARGETS`` so that a Cloud Billing budget
notification saved to a file has something to cancel.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.corpus import load_fixture
from tests.e2e_support import (
    ACCESS_KEY,
    PROJECT_ID,
    RESULT_TOPIC,
    SECRET_KEY,
    LocalStack,
    start_stack,
    stop_stack,
)
from tests.ops_support import (
    WATCH_SUBSCRIPTION,
    PubSubEmulator,
    Simulator,
    dli_cancel,
    json_lines,
    table_rows,
    watch_subscription,
)

pytestmark = pytest.mark.emulator

BUDGET_ID = "de72f49d-779b-4945-a127-4d6ce8def0bb"  # tests/fixtures/budget_notification_*
BUDGET_QUEUE = "finops_cli"


@pytest.fixture(scope="module")
def stack(emulator: PubSubEmulator) -> Iterator[LocalStack]:
    sim = Simulator(credentials={ACCESS_KEY: SECRET_KEY})
    sim.start()
    targets = {BUDGET_ID: {"project_id": PROJECT_ID, "queue_names": [BUDGET_QUEUE]}}
    local = start_stack(emulator, env={"BUDGET_TARGETS": json.dumps(targets)}, sim=sim)
    watch_subscription(local)
    try:
        yield local
    finally:
        stop_stack(local)


def saved(tmp_path: Path, name: str, data: Any) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return str(path)


def attrs(fixture: dict[str, Any]) -> list[str]:
    return [arg for k, v in fixture["attributes"].items() for arg in ("--attr", f"{k}={v}")]


def test_budget_notification_file_with_its_attributes_cancels_the_target_queue(
    stack: LocalStack, tmp_path: Path
) -> None:
    jobs = stack.sim.add_sql_jobs(PROJECT_ID, 2, queue_name=BUDGET_QUEUE)
    notification = load_fixture("budget_notification_over.json")
    file = saved(tmp_path, "notification.json", notification["data"])

    done = dli_cancel(
        "send",
        "budget-exceeded",
        "--file",
        file,
        *attrs(notification),
        "--wait",
        "--json",
        env=stack.pubsub.env(),
    )

    assert done.returncode == 0, done.stderr + done.stdout
    printed = json_lines(done.stdout)
    assert sorted(r["job_id"] for r in printed) == sorted(jobs)
    assert {r["outcome"] for r in printed} == {"cancelled"}
    assert {r["event_type"] for r in printed} == {"budget-exceeded"}
    assert printed[0]["context"]["budget_id"] == BUDGET_ID
    [message_id] = {r["source_event_id"] for r in printed}
    assert f"published message {message_id}" in done.stderr
    assert all(stack.sim.job_status(PROJECT_ID, j) == "CANCELLED" for j in jobs)


def test_the_file_is_sent_byte_for_byte(stack: LocalStack, tmp_path: Path) -> None:
    sub = f"raw-{uuid.uuid4().hex[:8]}"
    stack.pubsub.create_topic("replay")
    stack.pubsub.create_pull_subscription(sub, "replay")
    raw = b'{"event_type":"job-timeout",  "job_id": "x"}\n\t'
    file = tmp_path / "raw.json"
    file.write_bytes(raw)

    done = dli_cancel(
        "send", "--file", str(file), "--topic", "replay", "--attr", "k=v=w", env=stack.pubsub.env()
    )

    assert done.returncode == 0, done.stderr
    sent = json.loads(done.stdout)
    [message] = stack.pubsub.pull(sub, 1)
    assert message.data == raw and message.attributes == {"k": "v=w"}
    assert sent["message_id"] == message.message_id and sent["attributes"] == {"k": "v=w"}


def test_incident_from_stdin_and_its_result_as_a_table(stack: LocalStack) -> None:
    job_id = stack.sim.submit_sql_job(PROJECT_ID, queue_name="etl")
    data = copy.deepcopy(load_fixture("incident_open.json")["data"])
    data["incident"]["metric"]["labels"]["dli_job_id"] = job_id

    done = dli_cancel(
        "send",
        "job-timeout",
        "--file",
        "-",
        "--wait",
        stdin=json.dumps(data),
        env=stack.pubsub.env(),
    )

    assert done.returncode == 0, done.stderr
    [row] = table_rows(done.stdout)
    assert row[1:] == ["job-timeout", job_id, "cancelled", "-", "1"]
    assert stack.sim.job_status(PROJECT_ID, job_id) == "CANCELLED"


def test_wait_on_a_failure_outcome_exits_1(stack: LocalStack) -> None:
    missing = str(uuid.uuid4())
    done = dli_cancel(
        "send", "job-timeout", "--job-id", missing, "--wait", "--json", env=stack.pubsub.env()
    )
    assert done.returncode == 1, done.stderr
    [printed] = json_lines(done.stdout)
    assert (printed["job_id"], printed["outcome"]) == (missing, "not_found")


def test_wait_for_an_event_that_publishes_nothing_exits_3(
    stack: LocalStack, tmp_path: Path
) -> None:
    under = load_fixture("budget_notification_under.json")
    file = saved(tmp_path, "under.json", under["data"])
    started = time.monotonic()

    done = dli_cancel(
        "send",
        "budget-exceeded",
        "--file",
        file,
        *attrs(under),
        "--wait",
        "--timeout",
        "4",
        env=stack.pubsub.env(),
    )

    assert done.returncode == 3, done.stderr
    assert "no result for message" in done.stderr and "under its threshold" in done.stderr
    assert done.stdout == ""
    assert time.monotonic() - started < 60


def test_wait_leaves_other_events_results_on_the_subscription(stack: LocalStack) -> None:
    other_job = stack.sim.submit_sql_job(PROJECT_ID)
    other = stack.publish("job-timeout", {"job_id": other_job, "dry_run": True})
    stack.results_for(other, 1)  # the other event's result is on the watch subscription too
    mine = stack.sim.submit_sql_job(PROJECT_ID)

    waited = dli_cancel(
        "send",
        "job-timeout",
        "--job-id",
        mine,
        "--dry-run",
        "--wait",
        "--json",
        env=stack.pubsub.env(),
    )
    later = dli_cancel("results", "--json", env=stack.pubsub.env())

    assert waited.returncode == 0, waited.stderr
    assert [r["job_id"] for r in json_lines(waited.stdout)] == [mine]
    left = [r for r in json_lines(later.stdout) if r["source_event_id"] == other]
    assert [(r["job_id"], r["outcome"]) for r in left] == [(other_job, "dry_run")]


def test_wait_on_a_missing_subscription_sends_nothing(stack: LocalStack) -> None:
    job_id = stack.sim.submit_sql_job(PROJECT_ID)
    audit = f"audit-{uuid.uuid4().hex[:8]}"
    stack.pubsub.create_pull_subscription(audit, "job-timeout")

    done = dli_cancel(
        "send",
        "job-timeout",
        "--job-id",
        job_id,
        "--wait",
        "--subscription",
        "no-such-sub",
        env=stack.pubsub.env(),
    )

    assert done.returncode == 1
    assert "no-such-sub" in done.stderr and done.stdout == ""
    assert stack.pubsub.pull(audit, 1, timeout_s=2) == []
    assert stack.sim.job_status(PROJECT_ID, job_id) == "RUNNING"


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["job-timeout", "--file", "f.json", "--job-id", "x"], "drop --job-id"),
        (["--file", "f.json"], "--file needs the topic"),
        (["job-timeout", "--job-id", "x", "--attr", "novalue"], "write KEY=VALUE"),
        (["job-timeout", "--file", "/no/such/file"], "cannot read /no/such/file"),
        ([], "name the event"),
    ],
)
def test_send_usage_errors_send_nothing(args: list[str], problem: str) -> None:
    done = dli_cancel(
        "send", *args, env={"GOOGLE_CLOUD_PROJECT": "p", "PUBSUB_EMULATOR_HOST": "127.0.0.1:9"}
    )
    assert done.returncode == 2, done.stderr
    assert problem in done.stderr and done.stdout == ""


def test_watch_subscription_default_is_the_one_deploy_creates() -> None:
    from cancel_handler.cli.parser import WATCH_SUBSCRIPTION as DEFAULT

    assert DEFAULT == WATCH_SUBSCRIPTION
    assert RESULT_TOPIC == "dli-cancel-results"
