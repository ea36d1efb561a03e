"""Helpers for the operator-facing tests (the CLI, the docs' examples, deploy's smoke step).

The one place these tests import the local stack from (it moves packages in the refactor:
change the imports here only).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from devstack.stack import (
    REPO_ROOT,
    FunctionServer,
    PubSubEmulator,
    child_env,
    free_port,
)
from dli_simulator import Fault, Simulator
from tests.e2e_support import RESULT_TOPIC, LocalStack

__all__ = [
    "REPO_ROOT",
    "WATCH_SUBSCRIPTION",
    "Fault",
    "FunctionServer",
    "PubSubEmulator",
    "Simulator",
    "child_env",
    "dli_cancel",
    "dli_cancel_command",
    "free_port",
    "gcloud_emulator_env",
    "json_lines",
    "table_rows",
    "watch_subscription",
]

WATCH_SUBSCRIPTION = "dli-cancel-results-ops"  # what deploy.yaml creates for the operator
_VENV_BIN = Path(sys.executable).parent


def dli_cancel_command() -> list[str]:
    """``.venv/bin/dli-cancel`` as an operator runs it (else ``python -m cancel_handler.cli``)."""
    script = _VENV_BIN / "dli-cancel"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "cancel_handler.cli"]


def dli_cancel(
    *args: str,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    timeout_s: float = 90,
) -> subprocess.CompletedProcess[str]:
    """Run ``dli-cancel ARGS`` with a clean environment plus ``env``."""
    return subprocess.run(
        [*dli_cancel_command(), *args],
        env=child_env(env),
        cwd=REPO_ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def json_lines(stdout: str) -> list[dict[str, Any]]:
    """Every line of ``stdout`` parsed as one JSON object (``--json`` output)."""
    found = []
    for line in stdout.splitlines():
        parsed = json.loads(line)
        assert isinstance(parsed, dict), line
        found.append(parsed)
    return found


def table_rows(stdout: str) -> list[list[str]]:
    """The rows of the results table (header checked and dropped), split into cells."""
    lines = stdout.splitlines()
    assert lines, "no table printed"
    assert lines[0].split() == [
        "TIME",
        "EVENT",
        "TYPE",
        "JOB",
        "OUTCOME",
        "ERROR",
        "CODE",
        "ATTEMPTS",
    ]
    rows = []
    for line in lines[1:]:
        cells = line.split()
        if cells[2] == "queue":  # "queue NAME" is one cell
            cells[2:4] = [f"queue {cells[3]}"]
        rows.append(cells)
    return rows


def watch_subscription(stack: LocalStack, name: str = WATCH_SUBSCRIPTION) -> str:
    """A pull subscription on the stack's result topic, as deploy.yaml creates one."""
    return stack.pubsub.create_pull_subscription(name, RESULT_TOPIC, ack_deadline_s=60)


@contextmanager
def gcloud_emulator_env(emulator_host: str, project: str) -> Iterator[dict[str, str]]:
    """The environment in which the real ``gcloud pubsub`` talks to the emulator: its own
    config directory, no credentials, the Pub/Sub API pointed at the emulator."""
    config_dir = Path(tempfile.mkdtemp(prefix="dli-cancel-gcloud-"))
    try:
        yield {
            "CLOUDSDK_CONFIG": str(config_dir),
            "CLOUDSDK_CORE_PROJECT": project,
            "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
            "CLOUDSDK_CORE_CHECK_GCE_METADATA": "false",
            "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true",
            "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true",
            "CLOUDSDK_AUTH_DISABLE_CREDENTIALS": "true",
            "CLOUDSDK_API_ENDPOINT_OVERRIDES_PUBSUB": f"http://{emulator_host}/",
            "PATH": f"{_VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    finally:
        shutil.rmtree(config_dir, ignore_errors=True)
