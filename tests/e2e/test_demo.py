"""`make demo` runs `dli-cancel demo`: the whole local stack, end to end, then stopped."""

from __future__ import annotations

import subprocess
import sys

import pytest

from devstack.stack import REPO_ROOT, child_env

pytestmark = pytest.mark.emulator


def test_demo_cancels_the_runaway_job_the_queue_and_what_the_sweep_finds_then_stops() -> None:
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
    cancelling, _, approving = out.partition("==> approval before cancelling")
    assert "Pub/Sub emulator on 127.0.0.1:" in out  # the real emulator, not the fallback
    assert "all 5 result events:" in out
    assert cancelling.count(" cancelled ") == 5
    assert "published a watchdog sweep to topic job-timeout" in out
    assert "demo OK" in out and out.rstrip().endswith("everything stopped")
    lines = [line.split() for line in out.splitlines() if line.startswith("  etl_done ")]
    assert lines and lines[0][-1] == "FINISHED"
    jobs = {
        line.split()[0]: line.split()[-1] for line in cancelling.splitlines() if line[:2] == "  "
    }
    assert (jobs["long"], jobs["young"]) == ("CANCELLED", "RUNNING")  # the watchdog's catch
    assert ", limit 3600 s)" in cancelling
    # approval before cancelling: a proposal, its page, its approval
    assert approving.count(" awaiting_approval  queue=finance") == 2
    assert "the approval page says 'Approve cancelling 2 DLI jobs'" in approving
    assert approving.count(" cancelled  reason=approved") == 2
    states = [
        line.split()
        for line in approving.splitlines()
        if line.startswith(("  proposed", "  later"))
    ]
    assert sorted(s[-1] for s in states) == ["CANCELLED", "CANCELLED", "RUNNING"]
    assert "approval OK" in out
