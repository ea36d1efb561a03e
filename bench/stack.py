"""What every benchmark shares: the local stack (Pub/Sub emulator, DLI simulator) and function
servers, all run by devstack's runner, plus the constants the figures are measured with."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from devstack.stack import REPO_ROOT, FunctionServer, PubSubEmulator, SimulatorProcess

APPS = Path(__file__).resolve().parent / "apps"
MAIN = REPO_ROOT / "main.py"
PROJECT_ID = "0123456789abcdef0123456789abcdef"
AK, SK = "BENCHACCESSKEY00", "bench-secret-key-0123456789"
IAM = {"IAM_DOMAIN": "bench", "IAM_USERNAME": "bench", "IAM_PASSWORD": "bench-password"}
RESULT_TOPIC = "bench-results"


class TimedServer(FunctionServer):
    """A function server that is launched without waiting, so that :meth:`wait_answer` measures
    launch to first answer exactly; and reads the memory of its processes."""

    def wait_answer(self, send: Callable[[], requests.Response], timeout_s: float = 30) -> float:
        """Send until the server answers; returns seconds since launch."""
        deadline = time.perf_counter() + timeout_s
        while True:
            try:
                response = send()
                return time.perf_counter() - self.launched_at if response is not None else 0.0
            except requests.ConnectionError:
                if time.perf_counter() > deadline or not self.running:
                    raise RuntimeError(self.output()[-2000:]) from None
                time.sleep(0.003)

    def worker_hwm_kib(self) -> int:
        """Peak RSS of the gunicorn worker (the process that handles requests)."""
        master = self._master_pid()
        children = _children(master)
        pid = children[0] if children else master
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise RuntimeError("no VmHWM")

    def instance_pss_kib(self) -> int:
        """Memory of the whole instance (gunicorn master + worker), shared pages counted once:
        what a container's memory limit sees."""
        master = self._master_pid()
        total = 0
        for pid in [master, *_children(master)]:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        return total

    def _master_pid(self) -> int:
        if self.pid is None:
            raise RuntimeError("the server is not running")
        return self.pid


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def probe(url: str) -> Callable[[], requests.Response]:
    """A GET of ``url``: whatever it answers, the server is up."""
    return lambda: requests.get(url, timeout=10)


@contextmanager
def server(source: Path, target: str, env: dict[str, str]) -> Iterator[TimedServer]:
    """A launched (not yet answering) function server, stopped on exit."""
    s = TimedServer(target, env, source=source)
    s.launch()
    try:
        yield s
    finally:
        s.stop()


class Stack:
    """The Pub/Sub emulator (project ``bench``) and the DLI simulator, for the whole run."""

    def __init__(self) -> None:
        self.emulator = PubSubEmulator(project="bench")
        self.emulator.start()
        self.emulator.create_topic(RESULT_TOPIC)
        self.sim = SimulatorProcess(env={"HUAWEICLOUD_SDK_AK": AK, "HUAWEICLOUD_SDK_SK": SK, **IAM})
        self.sim_url = self.sim.start()
        self.http = requests.Session()
        self.token = self._token()

    def close(self) -> None:
        self.sim.stop()
        self.emulator.stop()

    def _token(self) -> str:
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {
                            "name": IAM["IAM_USERNAME"],
                            "password": IAM["IAM_PASSWORD"],
                            "domain": {"name": IAM["IAM_DOMAIN"]},
                        }
                    },
                },
                "scope": {"project": {"id": PROJECT_ID}},
            }
        }
        answer = self.http.post(f"{self.sim_url}/v3/auth/tokens", json=body, timeout=10)
        return answer.headers["X-Subject-Token"]

    def add_jobs(self, count: int, queue: str = "default") -> list[str]:
        answer = self.http.post(
            f"{self.sim_url}/_sim/jobs",
            json={
                "project_id": PROJECT_ID,
                "kind": "sql",
                "count": count,
                "queue_name": queue,
                "status": "RUNNING",
            },
            timeout=60,
        )
        jobs: list[str] = answer.json()["job_ids"]
        return jobs

    def sim_config(self, **config: float) -> None:
        self.http.post(f"{self.sim_url}/_sim/config", json=config, timeout=10).raise_for_status()

    def function_env(self, **extra: str) -> dict[str, str]:
        return {
            "DLI_ENDPOINT": self.sim_url,
            "DLI_PROJECT_ID": PROJECT_ID,
            "HUAWEICLOUD_SDK_AK": AK,
            "HUAWEICLOUD_SDK_SK": SK,
            "RESULT_TOPIC": self.emulator.topic_path(RESULT_TOPIC),
            **self.emulator.env(),
            **extra,
        }

    def naive_env(self) -> dict[str, str]:
        return {**self.function_env(), "NAIVE_TOKEN": self.token}


def post_cloud_event(session: Any, url: str, job_id: str) -> requests.Response:
    """One job-timeout event as Eventarc POSTs a Pub/Sub CloudEvent (binary mode); raises
    unless it is answered 200 (the result confirmed)."""
    data = base64.b64encode(json.dumps({"job_id": job_id}).encode()).decode()
    message_id = uuid.uuid4().hex
    headers = {
        "ce-id": message_id,
        "ce-specversion": "1.0",
        "ce-source": "//pubsub.googleapis.com/projects/bench/topics/job-timeout",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "Content-Type": "application/json",
    }
    body = json.dumps(
        {
            "message": {"data": data, "messageId": message_id},
            "subscription": "projects/bench/subscriptions/s",
        }
    )
    answer: requests.Response = session.post(url, data=body, headers=headers, timeout=60)
    if answer.status_code != 200:
        raise RuntimeError(f"event answered {answer.status_code}: {answer.text[:300]}")
    return answer
