"""``dli-cancel cancel``: direct cancels with the configured credentials, against the DLI
simulator (a real HTTP server), as an operator runs them: one output per result, progress on
stderr for a bulk cancel, documented exit codes."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from tests.e2e_support import ACCESS_KEY, PROJECT_ID, SECRET_KEY
from tests.ops_support import Simulator, dli_cancel, free_port, json_lines, table_rows


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    simulator = Simulator(credentials={ACCESS_KEY: SECRET_KEY})
    simulator.start()
    try:
        yield simulator
    finally:
        simulator.stop()


def env(sim: Simulator, **extra: str) -> dict[str, str]:
    return {
        "DLI_ENDPOINT": sim.base_url,
        "DLI_PROJECT_ID": PROJECT_ID,
        "HUAWEICLOUD_SDK_AK": ACCESS_KEY,
        "HUAWEICLOUD_SDK_SK": SECRET_KEY,
        "DLI_RETRY_BASE_S": "0.05",
        **extra,
    }


def test_one_cancel_prints_its_result_once(sim: Simulator) -> None:
    job_id = sim.submit_sql_job(PROJECT_ID)

    done = dli_cancel("cancel", job_id, env=env(sim))

    assert done.returncode == 0, done.stderr
    [row] = table_rows(done.stdout)
    assert row[1:] == ["job-timeout", job_id, "cancelled", "-", "1"]
    assert (done.stdout + done.stderr).count(job_id) == 1, "each result is printed once"
    assert done.stderr == ""  # no progress line for a single job, no log lines
    assert sim.job_status(PROJECT_ID, job_id) == "CANCELLED"


def test_bulk_cancel_of_a_queue_shows_progress_on_stderr(sim: Simulator) -> None:
    queue = f"bulk_{uuid.uuid4().hex[:6]}"
    jobs = sim.add_sql_jobs(PROJECT_ID, 30, queue_name=queue)
    other = sim.submit_sql_job(PROJECT_ID, queue_name="other")

    done = dli_cancel("cancel", "--queue", queue, "--json", env=env(sim))

    assert done.returncode == 0, done.stderr
    printed = json_lines(done.stdout)
    assert sorted(r["job_id"] for r in printed) == sorted(jobs)
    assert {(r["outcome"], r["event_type"], r["queue_name"]) for r in printed} == {
        ("cancelled", "budget-exceeded", queue)
    }
    progress = done.stderr.splitlines()
    assert progress[0].startswith("dli-cancel: cancel: 0/30 results")
    assert progress[-1].startswith("dli-cancel: cancel: 30/30 results, 0 not successful")
    assert all(job not in done.stderr for job in jobs)
    assert all(sim.job_status(PROJECT_ID, j) == "CANCELLED" for j in jobs)
    assert sim.job_status(PROJECT_ID, other) == "RUNNING"


def test_several_jobs_quietly_and_one_not_found_exits_1(sim: Simulator) -> None:
    running = sim.submit_sql_job(PROJECT_ID)
    missing = str(uuid.uuid4())

    done = dli_cancel("cancel", running, missing, "--quiet", env=env(sim))

    assert done.returncode == 1, done.stderr
    outcomes = {row[2]: row[3] for row in table_rows(done.stdout)}
    assert outcomes == {running: "cancelled", missing: "not_found"}
    assert done.stderr == ""


def test_dry_run_cancels_nothing(sim: Simulator) -> None:
    job_id = sim.submit_sql_job(PROJECT_ID)
    done = dli_cancel("cancel", job_id, "--dry-run", "--json", env=env(sim))
    assert done.returncode == 0, done.stderr
    [printed] = json_lines(done.stdout)
    assert (printed["outcome"], printed["dry_run"]) == ("dry_run", True)
    assert sim.job_status(PROJECT_ID, job_id) == "RUNNING"


def test_verbose_adds_the_function_log_lines_on_stderr(sim: Simulator) -> None:
    job_id = sim.submit_sql_job(PROJECT_ID)
    done = dli_cancel("cancel", job_id, "--verbose", "--json", env=env(sim))
    assert done.returncode == 0, done.stderr
    logged = [json.loads(line) for line in done.stderr.splitlines()]
    assert any(r.get("job_id") == job_id and r.get("outcome") == "cancelled" for r in logged)
    assert len(json_lines(done.stdout)) == 1


def test_configuration_error_exits_2_and_names_each_problem(sim: Simulator) -> None:
    job_id = sim.submit_sql_job(PROJECT_ID)
    done = dli_cancel("cancel", job_id, env={"DLI_PROJECT_ID": "nope", "DRY_RUN": "maybe"})
    assert done.returncode == 2
    assert "DLI_ENDPOINT or DLI_REGION is required" in done.stderr
    assert "DRY_RUN must be true or false" in done.stderr
    assert done.stdout == ""
    assert sim.job_status(PROJECT_ID, job_id) == "RUNNING"


def test_unreachable_dli_exits_3(sim: Simulator) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    extra = {"DLI_ENDPOINT": closed, "DLI_MAX_ATTEMPTS": "1", "DLI_TIMEOUT_S": "1"}
    done = dli_cancel("cancel", str(uuid.uuid4()), env=env(sim, **extra))
    assert done.returncode == 3, done.stderr
    assert "not done, try again" in done.stderr and "DLI_UNREACHABLE" in done.stderr
    assert done.stdout == ""


def test_nothing_named_is_a_usage_error() -> None:
    done = dli_cancel("cancel")
    assert done.returncode == 2 and "name a JOB_ID or a --queue" in done.stderr
