"""deploy.yaml's watchdog schedule (SPEC 7): the Cloud Scheduler job that publishes a sweep to
``job-timeout`` every ``_SWEEP_SCHEDULE``, created or updated idempotently, as an identity that
may publish to that topic only; and ``RUNTIME_LIMITS`` checked by the build's config step.

The step's bash script runs here against a stand-in ``gcloud`` that records each call (and
answers ``describe`` as told): nothing touches Google Cloud."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from cancel_handler.envelopes import from_http_body
from cancel_handler.events import CancelEvent, EventRules, parse_event
from tests.deploy.test_deploy import (
    BUILTINS,
    DECLARED,
    _run_config_step,
    function_env,
    gcloud_calls,
    resolved_flags,
    step,
    substitute,
    substitution_values,
)

PROJECT = BUILTINS["PROJECT_ID"]
SCHEDULER_SA = f"{DECLARED['_SCHEDULER_SA']}@{PROJECT}.iam.gserviceaccount.com"
PUBLISH_URI = f"https://pubsub.googleapis.com/v1/projects/{PROJECT}/topics/job-timeout:publish"
STAND_IN = """\
import json, os, sys
with open(os.environ["GCLOUD_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[1:4] == ["scheduler", "jobs", "describe"]:
    sys.exit(int(os.environ["DESCRIBE_STATUS"]))
"""


def run_schedule_step(
    tmp_path: Path, job_exists: bool, **overrides: str
) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    """The sweep-schedule step as Cloud Build runs it: substituted, bash, its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    gcloud = bin_dir / "gcloud"
    gcloud.write_text(f"#!{sys.executable}\n{STAND_IN}")
    gcloud.chmod(0o755)
    log = tmp_path / "gcloud.log"
    values = substitution_values(**overrides)
    schedule = step("sweep-schedule")
    assert schedule["entrypoint"] == "bash" and schedule["args"][0] == "-c"
    argv = [substitute(str(a), values) for a in schedule["args"][1:]]
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "GCLOUD_LOG": str(log),
        "DESCRIBE_STATUS": "0" if job_exists else "1",
    }
    done = subprocess.run(
        ["bash", "-c", *argv], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return done, calls


def flags(argv: list[str]) -> dict[str, str]:
    return dict(a.removeprefix("--").partition("=")[::2] for a in argv if a.startswith("--"))


def published_event(body: str) -> dict[str, Any]:
    [message] = json.loads(body)["messages"]
    assert message["attributes"] == {"event_type": "job-timeout"}
    event: dict[str, Any] = json.loads(base64.b64decode(message["data"]))
    return event


def test_the_defaults() -> None:
    assert DECLARED["_SWEEP_SCHEDULE"] == "*/5 * * * *"
    assert DECLARED["_SWEEP_TIME_ZONE"] == "Etc/UTC"
    assert DECLARED["_RUNTIME_LIMITS"] == ""  # no policy: a sweep cancels nothing


def test_a_new_schedule_is_created_and_publishes_a_sweep_as_its_own_identity(
    tmp_path: Path,
) -> None:
    done, calls = run_schedule_step(tmp_path, job_exists=False)

    assert done.returncode == 0, done.stderr
    grant, describe, create = calls
    assert grant[:4] == ["pubsub", "topics", "add-iam-policy-binding", "job-timeout"]
    assert flags(grant) == {
        "project": PROJECT,
        "member": f"serviceAccount:{SCHEDULER_SA}",
        "role": "roles/pubsub.publisher",
        "format": "none",
    }
    assert describe[:4] == ["scheduler", "jobs", "describe", "dli-cancel-sweep"]
    assert create[:5] == ["scheduler", "jobs", "create", "http", "dli-cancel-sweep"]
    created = flags(create)
    assert created["schedule"] == "*/5 * * * *" and created["time-zone"] == "Etc/UTC"
    assert created["location"] == DECLARED["_REGION"] and created["project"] == PROJECT
    assert (created["uri"], created["http-method"]) == (PUBLISH_URI, "POST")
    assert created["headers"] == "Content-Type=application/json"
    assert created["oauth-service-account-email"] == SCHEDULER_SA
    assert created["oauth-token-scope"] == "https://www.googleapis.com/auth/pubsub"
    event = published_event(created["message-body"])
    assert event == {"event_type": "job-timeout", "sweep": True}
    parsed = parse_event(from_http_body(json.dumps(event).encode(), 65536), EventRules())
    assert isinstance(parsed, CancelEvent) and parsed.is_sweep


def test_an_existing_schedule_is_updated_to_the_same_settings(tmp_path: Path) -> None:
    done, calls = run_schedule_step(
        tmp_path, job_exists=True, _SWEEP_SCHEDULE="0 * * * *", _SWEEP_TIME_ZONE="Europe/Berlin"
    )

    assert done.returncode == 0, done.stderr
    _, _, update = calls
    assert update[:5] == ["scheduler", "jobs", "update", "http", "dli-cancel-sweep"]
    updated = flags(update)
    assert (updated["schedule"], updated["time-zone"]) == ("0 * * * *", "Europe/Berlin")
    assert updated["update-headers"] == "Content-Type=application/json"
    assert updated["oauth-service-account-email"] == SCHEDULER_SA
    assert published_event(updated["message-body"]) == {"event_type": "job-timeout", "sweep": True}


def test_create_and_update_set_the_same_things() -> None:
    """Only the headers flag is spelled differently."""
    calls = {
        c.argv[2]: resolved_flags(c)
        for c in gcloud_calls()
        if c.argv[:2] == ["scheduler", "jobs"] and c.argv[2] in ("create", "update")
    }
    create, update = calls["create"], calls["update"]
    assert create.pop("--headers") == update.pop("--update-headers")
    assert create == update


def test_an_empty_schedule_schedules_nothing(tmp_path: Path) -> None:
    done, calls = run_schedule_step(tmp_path, job_exists=False, _SWEEP_SCHEDULE="")

    assert done.returncode == 0, done.stderr
    assert calls == []
    assert "no sweep is scheduled" in done.stdout


def test_the_scheduler_identity_may_publish_to_job_timeout_only() -> None:
    granted = [
        (c.argv[:4], resolved_flags(c).get("--role"))
        for c in gcloud_calls()
        if SCHEDULER_SA in (resolved_flags(c).get("--member") or "")
    ]
    assert granted == [
        (["pubsub", "topics", "add-iam-policy-binding", "job-timeout"], "roles/pubsub.publisher")
    ]


def test_the_policy_reaches_the_function_and_is_checked_by_the_build(tmp_path: Path) -> None:
    policy = json.dumps({"etl": {"sql": 3600}, "*": {"sql": 14400}})
    assert function_env(substitution_values(_RUNTIME_LIMITS=policy))["RUNTIME_LIMITS"] == policy

    good = _run_config_step(tmp_path, substitution_values(_RUNTIME_LIMITS=policy))
    assert good.returncode == 0, good.stderr
    assert "RUNTIME_LIMITS" in good.stdout

    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    policy = json.dumps({"etl": {"hive": 60}})
    bad = _run_config_step(bad_dir, substitution_values(_RUNTIME_LIMITS=policy))
    assert bad.returncode != 0
    assert "RUNTIME_LIMITS['etl']['hive']: unknown job kind" in bad.stderr


def test_the_schedule_starts_once_the_function_that_handles_it_is_deployed() -> None:
    assert "deploy-job-timeout" in step("sweep-schedule")["waitFor"]
