"""``dli-cancel sweep [--dry-run]`` as an operator runs it: a real subprocess with the
configuration in its environment, against the DLI simulator."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from devstack.stack import child_env
from dli_simulator import Simulator
from tests.e2e_support import ACCESS_KEY, PROJECT_ID, SECRET_KEY, base_env

DLI_CANCEL = str(Path(sys.executable).parent / "dli-cancel")
LIMITS = json.dumps({"etl": {"sql": 3600, "spark": 7200}, "*": {"sql": 600}})


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(credentials={ACCESS_KEY: SECRET_KEY}) as simulator:
        yield simulator


def sweep(sim: Simulator, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    variables: Mapping[str, str] = {**base_env(sim), "RUNTIME_LIMITS": LIMITS, **env}
    return subprocess.run(
        [DLI_CANCEL, "sweep", *args],
        env=child_env(variables),  # no RESULT_TOPIC: nothing is published
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def table(stdout: str) -> list[list[str]]:
    return [line.split() for line in stdout.splitlines()]


def test_dry_run_prints_what_it_would_cancel_and_cancels_nothing(sim: Simulator) -> None:
    old = sim.submit_sql_job(PROJECT_ID, queue_name="etl", age_s=3700)
    young = sim.submit_sql_job(PROJECT_ID, queue_name="etl", age_s=60)

    done = sweep(sim, "--dry-run")

    assert done.returncode == 0, done.stderr
    header, row = table(done.stdout)
    assert header == ["JOB", "KIND", "QUEUE", "RAN_S", "LIMIT_S", "OUTCOME", "ERROR"]
    assert row[:3] == [old, "sql", "etl"] and row[4:] == ["3600", "dry_run"]
    assert int(row[3]) >= 3700
    assert f"{old}: dry_run (ran " in done.stderr  # progress
    assert "dry run: nothing is cancelled" in done.stderr
    assert sim.job_status(PROJECT_ID, old) == "RUNNING"
    assert sim.job_status(PROJECT_ID, young) == "RUNNING"
    assert sim.cancel_requests() == []


def test_a_sweep_cancels_the_jobs_past_their_limit(sim: Simulator) -> None:
    old_sql = sim.submit_sql_job(PROJECT_ID, queue_name="etl", age_s=3700)
    old_spark = sim.add_spark_batch(PROJECT_ID, queue_name="etl", age_s=7300)
    other = sim.submit_sql_job(PROJECT_ID, queue_name="reporting", age_s=700)
    young = sim.submit_sql_job(PROJECT_ID, queue_name="reporting", age_s=60)

    done = sweep(sim)

    assert done.returncode == 0, done.stderr
    rows = {row[0]: row for row in table(done.stdout)[1:]}
    assert set(rows) == {old_sql, old_spark, other}
    assert {row[5] for row in rows.values()} == {"cancelled"}
    assert rows[other][2:3] + rows[other][4:5] == ["reporting", "600"]
    assert sim.job_status(PROJECT_ID, old_sql) == "CANCELLED"
    assert sim.job_status(PROJECT_ID, old_spark) == "dead"
    assert sim.job_status(PROJECT_ID, young) == "RUNNING"
    summary = [json.loads(line) for line in done.stderr.splitlines() if "sweep summary" in line]
    assert [(s["jobs_seen"], s["over_limit"]) for s in summary] == [(4, 3)]


def test_json_lines_and_a_queue_of_ones_own(sim: Simulator) -> None:
    old = sim.submit_sql_job(PROJECT_ID, queue_name="reporting", age_s=700)
    sim.submit_sql_job(PROJECT_ID, queue_name="etl", age_s=90_000)

    done = sweep(sim, "--json", "--queue", "reporting", "--dry-run")

    assert done.returncode == 0, done.stderr
    [result] = [json.loads(line) for line in done.stdout.splitlines()]
    assert (result["job_id"], result["outcome"]) == (old, "dry_run")
    assert result["context"]["limit_s"] == 600


def test_nothing_over_its_limit(sim: Simulator) -> None:
    sim.submit_sql_job(PROJECT_ID, queue_name="etl", age_s=60)

    done = sweep(sim)

    assert done.returncode == 0, done.stderr
    assert done.stdout == "no job is over its limit\n"
    assert sim.cancel_requests() == []


def test_a_bad_policy_is_a_configuration_error(sim: Simulator) -> None:
    done = sweep(sim, RUNTIME_LIMITS='{"etl": {"hive": 60}}')

    assert done.returncode == 2
    assert "RUNTIME_LIMITS['etl']['hive']: unknown job kind" in done.stderr
    assert done.stdout == ""
    assert sim.requests() == []


def test_a_queue_dli_cannot_list_for_now_asks_to_run_again(sim: Simulator) -> None:
    from dli_simulator import Fault

    old = sim.submit_sql_job(PROJECT_ID, queue_name="etl", age_s=3700)
    sim.add_fault(Fault(count=100, status=503, path_contains="/batches"))

    done = sweep(sim, DLI_RETRY_BASE_S="0.01", DLI_MAX_ATTEMPTS="2")

    assert done.returncode == 3
    assert "run it again" in done.stderr
    [_, row] = table(done.stdout)
    assert row[0] == old and row[5] == "cancelled"  # what it could list was cancelled
