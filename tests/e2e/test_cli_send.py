"""``dli-cancel send`` and ``dli-cancel serve`` as an operator runs them: real subprocesses.

``send`` publishes with the standard google-cloud-pubsub client, so with
``PUBSUB_EMULATOR_HOST`` set it reaches the emulator, and the module's stack (push
subscriptions -> the function -> the DLI simulator -> the result topic) shows the function
handled the event. Those tests need gcloud (marker ``emulator``). ``serve`` needs only the
simulator: those tests run everywhere.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from devstack.stack import REPO_ROOT, child_env, free_port
from dli_simulator import Simulator
from tests.e2e_support import ACCESS_KEY, PROJECT_ID, SECRET_KEY, LocalStack, base_env

CLI = [sys.executable, "-m", "cancel_handler.cli"]


def dli_cancel(*args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        env=child_env(env),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )


def sent(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    printed: dict[str, Any] = json.loads(done.stdout)
    return printed


# -- send, against the emulator --------------------------------------------------------------


@pytest.mark.emulator
def test_send_job_timeout_is_handled_by_the_function(stack: LocalStack) -> None:
    job_id = stack.sim.submit_sql_job(PROJECT_ID, queue_name="adhoc")

    out = sent(
        dli_cancel(
            "send",
            "job-timeout",
            "--job-id",
            job_id,
            "--project-id",
            PROJECT_ID,
            "--reason",
            "ran 3700 s, limit 3600 s",
            env=stack.pubsub.env(),
        )
    )

    assert out["topic"] == stack.pubsub.topic_path("job-timeout")
    assert out["event"] == {
        "event_type": "job-timeout",
        "job_id": job_id,
        "project_id": PROJECT_ID,
        "reason": "ran 3700 s, limit 3600 s",
    }
    [result] = stack.results_for(out["message_id"], 1)
    assert result["outcome"] == "cancelled" and result["is_success"] is True
    assert result["event_type"] == "job-timeout" and result["job_id"] == job_id
    assert result["reason"] == "ran 3700 s, limit 3600 s"
    assert stack.sim.job_status(PROJECT_ID, job_id) == "CANCELLED"


@pytest.mark.emulator
def test_send_budget_exceeded_for_a_queue(stack: LocalStack) -> None:
    queue = f"q{uuid.uuid4().hex[:8]}"
    jobs = stack.sim.add_sql_jobs(PROJECT_ID, 2, queue_name=queue)

    out = sent(dli_cancel("send", "budget-exceeded", "--queue", queue, env=stack.pubsub.env()))

    assert out["topic"] == stack.pubsub.topic_path("budget-exceeded")
    results = stack.results_for(out["message_id"], 2)
    assert sorted(r["job_id"] for r in results) == sorted(jobs)
    assert {r["outcome"] for r in results} == {"cancelled"}
    assert {r["event_type"] for r in results} == {"budget-exceeded"}
    assert all(stack.sim.job_status(PROJECT_ID, j) == "CANCELLED" for j in jobs)


@pytest.mark.emulator
def test_send_dry_run_to_a_full_topic_path(stack: LocalStack) -> None:
    job_id = stack.sim.submit_sql_job(PROJECT_ID)
    topic = stack.pubsub.topic_path("job-timeout")
    # Only the emulator's address: the project comes from the topic path.
    env = {"PUBSUB_EMULATOR_HOST": stack.pubsub.env()["PUBSUB_EMULATOR_HOST"]}

    out = sent(
        dli_cancel(
            "send", "job-timeout", "--job-id", job_id, "--dry-run", "--topic", topic, env=env
        )
    )

    assert out["topic"] == topic and out["event"]["dry_run"] is True
    [result] = stack.results_for(out["message_id"], 1)
    assert result["outcome"] == "dry_run" and result["dry_run"] is True
    assert stack.sim.job_status(PROJECT_ID, job_id) == "RUNNING"


@pytest.mark.emulator
def test_send_to_a_missing_topic_says_so(stack: LocalStack) -> None:
    done = dli_cancel(
        "send",
        "job-timeout",
        "--job-id",
        str(uuid.uuid4()),
        "--topic",
        f"no-such-topic-{uuid.uuid4().hex[:6]}",
        env=stack.pubsub.env(),
    )

    assert done.returncode == 1
    assert "publishing to projects/" in done.stderr and "no-such-topic" in done.stderr
    assert done.stdout == ""


# -- send, argument errors (no Pub/Sub needed) -----------------------------------------------


def test_send_without_a_project_is_refused() -> None:
    # PUBSUB_EMULATOR_HOST set: no fallback to the default credentials' project.
    done = dli_cancel(
        "send", "job-timeout", "--job-id", "x", env={"PUBSUB_EMULATOR_HOST": "127.0.0.1:9"}
    )
    assert done.returncode == 2
    assert "GOOGLE_CLOUD_PROJECT" in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["job-timeout"],
        ["job-timeout", "--job-id", "a", "--job-id", "b"],
        ["budget-exceeded"],
    ],
)
def test_send_needs_the_right_targets(args: list[str]) -> None:
    done = dli_cancel("send", *args, env={"GOOGLE_CLOUD_PROJECT": "p"})
    assert done.returncode == 2
    assert "needs" in done.stderr


# -- serve -----------------------------------------------------------------------------------


@dataclass
class Served:
    url: str
    process: subprocess.Popen[bytes]
    output: Path

    def text(self) -> str:
        return self.output.read_text(encoding="utf-8", errors="replace")

    def lines(self) -> list[dict[str, Any]]:
        found = []
        for line in self.text().splitlines():
            with contextlib.suppress(ValueError):
                found.append(json.loads(line))
        return found


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    simulator = Simulator(credentials={ACCESS_KEY: SECRET_KEY})
    simulator.start()
    try:
        yield simulator
    finally:
        simulator.stop()


@contextlib.contextmanager
def serve(target: str | None, env: Mapping[str, str], output: Path) -> Iterator[Served]:
    """``dli-cancel serve`` in its own process group; the whole group is stopped after."""
    port = free_port()
    args = ["serve", "--port", str(port)] + (["--target", target] if target else [])
    with output.open("wb") as out:
        process = subprocess.Popen(
            [*CLI, *args],
            env=child_env(env),
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    served = Served(f"http://127.0.0.1:{port}", process, output)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"serve exited {process.returncode}:\n{served.text()}"
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            assert time.monotonic() < deadline, f"serve did not listen:\n{served.text()}"
            time.sleep(0.05)
        yield served
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def post(url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def local_env(sim: Simulator) -> dict[str, str]:
    return {**base_env(sim), "DLI_LOCAL_RUN": "true"}


def test_serve_http_target_answers_a_post(sim: Simulator, tmp_path: Path) -> None:
    job_id = sim.submit_sql_job(PROJECT_ID)

    with serve("cancel_dli_job_http", local_env(sim), tmp_path / "serve.log") as served:
        status, body = post(
            served.url,
            json.dumps({"event_type": "job-timeout", "job_id": job_id}).encode(),
            {"Content-Type": "application/json"},
        )
        wrong_method = urllib.request.Request(served.url, method="GET")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(wrong_method, timeout=30)

    assert status == 200, body
    [result] = json.loads(body)["results"]
    assert result["outcome"] == "cancelled" and result["job_id"] == job_id
    assert result["event_type"] == "job-timeout"
    assert refused.value.code == 405
    assert sim.job_status(PROJECT_ID, job_id) == "CANCELLED"


def test_serve_event_target_takes_a_pubsub_cloud_event(sim: Simulator, tmp_path: Path) -> None:
    """The default target, as Eventarc calls it: a binary-mode CloudEvent."""
    job_id = sim.submit_sql_job(PROJECT_ID)
    message_id = str(uuid.uuid4().int)[:16]
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    data = base64.b64encode(json.dumps({"job_id": job_id}).encode()).decode()
    envelope = {
        "message": {"data": data, "attributes": {}, "messageId": message_id, "publishTime": now},
        "subscription": "projects/local/subscriptions/eventarc-job-timeout",
    }
    headers = {
        "Content-Type": "application/json",
        "ce-id": message_id,
        "ce-specversion": "1.0",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-source": "//pubsub.googleapis.com/projects/local/topics/job-timeout",
        "ce-time": now,
    }

    with serve(None, local_env(sim), tmp_path / "serve.log") as served:
        status, body = post(served.url, json.dumps(envelope).encode(), headers)
        deadline = time.monotonic() + 10
        while not [r for r in served.lines() if r.get("message") == "result"]:
            assert time.monotonic() < deadline, served.text()
            time.sleep(0.05)
        printed = served.lines()

    assert status == 200, body
    [result] = [r["result"] for r in printed if r.get("message") == "result"]
    assert result["outcome"] == "cancelled" and result["job_id"] == job_id
    assert result["source_event_id"] == message_id
    assert sim.job_status(PROJECT_ID, job_id) == "CANCELLED"
    # the operator's view: one JSON log line for the job, with the event's id
    logged = [r for r in printed if r.get("job_id") == job_id and r.get("outcome")]
    assert logged and logged[0]["event_id"] == message_id
    assert logged[0]["severity"] == "INFO"
