"""`make demo` runs `dli-cancel demo`: the whole local stack, end to end, then stopped."""

from __future__ import annotations

import subprocess
import sys

import pytest

from devstack.stack import REPO_ROOT, child_env

pytestmark = pytest.mark.emulator


def test_demo_cancels_the_runaway_job_and_the_queue_and_stops_everything() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cancel_handler.cli", "demo"],
        cwd=REPO_ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "Pub/Sub emulator on 127.0.0.1:" in out  # the real emulator, not the fallback
    assert "all 4 result events:" in out
    assert out.count(" cancelled ") == 4
    assert "demo OK" in out and out.rstrip().endswith("everything stopped")
    lines = [line.split() for line in out.splitlines() if line.startswith("  etl_done ")]
    assert lines and lines[0][-1] == "FINISHED"
