"""The shell examples of README.md and docs/ work as written.

- Every ``gcloud`` command of every shell block is parsed offline by the real gcloud (no
  credentials, every API pointed at a closed port), with stand-in values for the shell
  variables the docs use.
- Every block that names ``dli-cancel`` or publishes / pulls with ``gcloud pubsub`` runs, in
  the order of its page, in bash, against the local stack as deploy.yaml leaves it: the
  trigger topics pushing to the function (functions-framework + DLI simulator), the result
  topic with the operators' subscription, a dead-letter subscription holding one message.
  gcloud talks to the Pub/Sub emulator; ``dli-cancel`` finds it with PUBSUB_EMULATOR_HOST. A
  block must exit 0, print what its ``doc-test: expect`` marker says, and every event it
  publishes must get its result.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from tests.corpus import load_fixture
from tests.docs_support import REPO, Block, blocks, doc_files, name, runs_against_the_emulator
from tests.e2e_support import (
    ACCESS_KEY,
    PROJECT_ID,
    RESULT_TOPIC,
    SECRET_KEY,
    TRIGGER_TOPICS,
    LocalStack,
    start_stack,
    stop_stack,
)
from tests.gcloud_support import gcloud_path, parse_offline, parsed
from tests.ops_support import (
    PubSubEmulator,
    Simulator,
    child_env,
    gcloud_emulator_env,
    watch_subscription,
)

# Stand-ins for the shell variables of the docs' gcloud commands (offline parsing only).
STAND_INS = {
    "PROJECT": "my-project",
    "REGION": "europe-west3",
    "SA": "iam.gserviceaccount.com",
    "sa": "dli-cancel-runtime",
    "role": "roles/logging.logWriter",
    "fn": "dli-cancel-job-timeout",
    "DEPLOYER": "serviceAccount:dli-cancel-deployer@my-project.iam.gserviceaccount.com",
    "BUILDER": "serviceAccount:dli-cancel-builder@my-project.iam.gserviceaccount.com",
    "BILLING_ACCOUNT": "01D4EE-079462-DFD6EC",
    "NUMBER": "123456789012",
    "URL": "https://dli-cancel-job-timeout-abcdefghij-ey.a.run.app",
}
BUDGET_ID = "de72f49d-779b-4945-a127-4d6ce8def0bb"  # the budget of docs/cli.md's example
DEAD_LETTER_TOPIC = "dli-cancel-dead-letter"
DEAD_LETTER_SUB = "dli-cancel-dead-letter-sub"
BLOCK_TIMEOUT_S = 150

SHELL_BLOCKS = [block for path in doc_files() for block in blocks(path) if block.is_shell]
RUNNABLE = [
    b
    for b in SHELL_BLOCKS
    if b.names_dli_cancel() or any(runs_against_the_emulator(c) for c in b.gcloud_calls())
]
PAGES_THAT_RUN = sorted({b.path for b in RUNNABLE})


def test_blocks_that_run_hold_nothing_that_cannot() -> None:
    for block in RUNNABLE:
        others = [c for c in block.gcloud_calls() if not runs_against_the_emulator(c)]
        assert others == [], (
            f"{block.where}: a block that runs holds gcloud commands that cannot run against "
            f"the emulator ({[' '.join(c[:3]) for c in others]}): split it"
        )
    assert len(RUNNABLE) >= 10 and {name(p) for p in PAGES_THAT_RUN} >= {
        "README.md",
        "docs/cli.md",
        "docs/operations.md",
    }


# -- offline parsing -------------------------------------------------------------------------


def _expand(token: str, where: str) -> str:
    def replace(match: re.Match[str]) -> str:
        variable = match.group(1) or match.group(2)
        assert variable in STAND_INS, f"{where}: add ${variable} to STAND_INS"
        return STAND_INS[variable]

    return re.sub(r"\$\{([A-Za-z_]\w*)\}|\$([A-Za-z_]\w*)", replace, token)


@pytest.mark.skipif(gcloud_path() is None, reason="gcloud not installed")
def test_every_gcloud_command_in_the_docs_parses(tmp_path: Path) -> None:
    calls = [
        (block.where, [_expand(token, block.where) for token in argv])
        for block in SHELL_BLOCKS
        for argv in block.gcloud_calls()
    ]
    assert len(calls) >= 25
    # The reader's directory: the repository's deploy.yaml, and the files the examples write
    # before gcloud reads them (an earlier line of the same block makes them).
    reader = tmp_path / "reader"
    reader.mkdir()
    shutil.copy(REPO / "deploy.yaml", reader / "deploy.yaml")
    for _, argv in calls:
        for token in argv:
            flag, _, value = token.partition("=")
            if flag.endswith("-file") and value not in ("", "-"):
                assert "/" not in value, (
                    f"gcloud {' '.join(argv)}: a file in the reader's directory"
                )
                (reader / value).write_text("stand-in\n", encoding="utf-8")
    errors = parse_offline([argv for _, argv in calls], reader, tmp_path / "gcloud-config")
    for (where, argv), stderr in zip(calls, errors, strict=True):
        assert parsed(stderr), f"{where}: gcloud {' '.join(argv)}\n{stderr}"


# -- running them ----------------------------------------------------------------------------


class DocStack:
    """The local stack as deploy.yaml leaves a project, in its own emulator project."""

    def __init__(self, emulator: PubSubEmulator, workdir: Path) -> None:
        sim = Simulator(credentials={ACCESS_KEY: SECRET_KEY})
        sim.start()
        targets = {BUDGET_ID: {"project_id": PROJECT_ID, "queue_names": ["finops"]}}
        self.stack: LocalStack = start_stack(
            emulator, env={"BUDGET_TARGETS": json.dumps(targets)}, sim=sim
        )
        self.pubsub = self.stack.pubsub
        self.sim = sim
        self.workdir = workdir
        watch_subscription(self.stack)
        for topic in TRIGGER_TOPICS:
            self.pubsub.create_pull_subscription(f"audit-{topic}", topic)
        self.pubsub.create_topic(DEAD_LETTER_TOPIC)
        self.pubsub.create_pull_subscription(DEAD_LETTER_SUB, DEAD_LETTER_TOPIC, ack_deadline_s=10)
        self.pubsub.publish(
            DEAD_LETTER_TOPIC,
            json.dumps({"job_id": sim.submit_sql_job(PROJECT_ID), "dry_run": True}).encode(),
            CloudPubSubDeadLetterSourceSubscription=(
                f"projects/{self.pubsub.project}/subscriptions/"
                "eventarc-europe-west3-dli-cancel-job-timeout-123"
            ),
            CloudPubSubDeadLetterSourceDeliveryCount="15",
        )
        notification = load_fixture("budget_notification_over.json")["data"]
        (workdir / "notification.json").write_text(json.dumps(notification), encoding="utf-8")
        self.handled: set[str] = set()

    def env(self, gcloud_env: dict[str, str]) -> dict[str, str]:
        """What a reader has set up: the project, a running job and a queue to try things on,
        the function's configuration (for `cancel`, `config check`), Google credentials."""
        queue = f"q_{uuid.uuid4().hex[:8]}"
        self.sim.add_sql_jobs(PROJECT_ID, 2, queue_name=queue)
        return child_env(
            {
                **gcloud_env,
                **self.pubsub.env(),
                "PROJECT": self.pubsub.project,
                "REGION": "europe-west3",
                "JOB_ID": self.sim.submit_sql_job(PROJECT_ID),
                "QUEUE": queue,
                "DLI_ENDPOINT": self.sim.base_url,
                "DLI_PROJECT_ID": PROJECT_ID,
                "HUAWEICLOUD_SDK_AK": ACCESS_KEY,
                "HUAWEICLOUD_SDK_SK": SECRET_KEY,
                "RESULT_TOPIC": RESULT_TOPIC,
                "HOME": str(self.workdir),
            }
        )

    def every_event_has_a_result(self, where: str) -> None:
        """The events published so far (by any block) were each handled: a result came."""
        for topic in TRIGGER_TOPICS:
            for message in self.pubsub.pull(f"audit-{topic}", 100, timeout_s=0.2):
                if message.message_id in self.handled:
                    continue
                results = self.stack.results_for(message.message_id, 1, timeout_s=30)
                assert results, f"{where}: no result for the event {message.data!r} on {topic}"
                self.handled.add(message.message_id)

    def stop(self) -> None:
        stop_stack(self.stack)  # the simulator too


def run_block(block: Block, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The block in bash, in a process group of its own: when bash ends, whatever the block
    left running in the background (a simulator it started) is stopped with it. Output goes
    to files, so a background process holding them open does not keep the block waiting."""
    out, err = cwd / ".block.out", cwd / ".block.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", block.text],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
        try:
            code = process.wait(timeout=BLOCK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            code = -1
        finally:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, sig)
                time.sleep(0.2)
            process.wait(timeout=10)
    return subprocess.CompletedProcess(
        block.text, code, out.read_text(errors="replace"), err.read_text(errors="replace")
    )


@pytest.mark.emulator
@pytest.mark.timeout(600)
@pytest.mark.parametrize("page", PAGES_THAT_RUN, ids=name)
def test_the_examples_of_a_page_run_in_order(page: Path, emulator: PubSubEmulator) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="dli-cancel-docs-"))
    docs = DocStack(emulator, workdir)
    try:
        with gcloud_emulator_env(docs.pubsub.host, docs.pubsub.project) as gcloud_env:
            for block in [b for b in RUNNABLE if b.path == page]:
                docs.every_event_has_a_result(f"before {block.where}")
                done = run_block(block, docs.env(gcloud_env), workdir)
                output = done.stdout + done.stderr
                assert done.returncode == 0, f"{block.where} exited {done.returncode}:\n{output}"
                for text in block.expect:
                    assert text in output, f"{block.where}: {text!r} not in:\n{output}"
            docs.every_event_has_a_result(f"after {name(page)}")
    finally:
        docs.stop()
        shutil.rmtree(workdir, ignore_errors=True)
