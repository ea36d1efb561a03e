"""The local stack runner: emulator, function server, simulator process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import textwrap
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devstack.stack import (
    FunctionServer,
    PubSubEmulator,
    SimulatorProcess,
    child_env,
    free_port,
    gcloud_available,
    push_endpoint,
)

RECORDER = """
import base64, json, os
import functions_framework

@functions_framework.cloud_event
def record(event):
    message = event.data["message"]
    data = base64.b64decode(message["data"]).decode()
    print("recorder got", event["id"], flush=True)
    line = json.dumps(
        {"source": event["source"], "id": event["id"], "data": data,
         "attributes": message.get("attributes", {})}
    )
    with open(os.environ["RECORD_FILE"], "a") as out:
        out.write(line + "\\n")
"""

GREETER = """
import os
import functions_framework

@functions_framework.http
def greet(request):
    greeting = os.environ.get("GREETING", "")
    print("greeting:", greeting)
    return greeting
"""


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_lines(path: Path, count: int, timeout_s: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            lines = [line for line in path.read_text().splitlines() if line.strip()]
            if len(lines) >= count:
                return [json.loads(line) for line in lines]
        time.sleep(0.05)
    return []


# -- no emulator needed -------------------------------------------------------------------


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_push_endpoint_carries_the_topic_path() -> None:
    assert (
        push_endpoint("http://127.0.0.1:8080/", "job-timeout", "proj")
        == "http://127.0.0.1:8080/projects/proj/topics/job-timeout"
    )
    assert (
        push_endpoint("http://h:1", "projects/p/topics/budget-exceeded")
        == "http://h:1/projects/p/topics/budget-exceeded"
    )
    with pytest.raises(ValueError):
        push_endpoint("http://h:1", "bare-name")
    emu = PubSubEmulator(project="p1", port=12345)
    assert emu.host == "127.0.0.1:12345"
    assert emu.push_endpoint("http://h:1", "t-x") == "http://h:1/projects/p1/topics/t-x"
    assert emu.topic_path("t-x") == "projects/p1/topics/t-x"
    assert emu.env() == {
        "PUBSUB_EMULATOR_HOST": "127.0.0.1:12345",
        "PUBSUB_PROJECT_ID": "p1",
        "GOOGLE_CLOUD_PROJECT": "p1",
    }
    emu.stop()  # never started: a no-op


def test_child_env_strips_the_function_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PUBSUB_EMULATOR_HOST", "DLI_ENDPOINT", "HUAWEICLOUD_SDK_AK", "IAM_USERNAME"):
        monkeypatch.setenv(name, "leaked")
    monkeypatch.setenv("RESULT_TOPIC", "leaked")
    monkeypatch.setenv("KEEP_ME", "kept")
    env = child_env({"DLI_PROJECT_ID": "given"})
    assert env["KEEP_ME"] == "kept"
    assert env["DLI_PROJECT_ID"] == "given"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert not {k for k, v in env.items() if v == "leaked"}


def test_gcloud_available_is_a_bool() -> None:
    assert isinstance(gcloud_available(), bool)


def test_function_server_captures_output_and_restarts(tmp_path: Path) -> None:
    source = tmp_path / "greeter.py"
    source.write_text(GREETER)
    server = FunctionServer("greet", {"GREETING": "hello"}, source=source)
    with server:
        with urllib.request.urlopen(server.url, timeout=10) as response:
            assert response.read() == b"hello"
        assert server.wait_for_output("greeting: hello", 5), server.output()
        port = server.port
        server.restart({"GREETING": "again"})
        assert server.port == port
        with urllib.request.urlopen(server.url, timeout=10) as response:
            assert response.read() == b"again"
        assert server.wait_for_output("greeting: again", 5), server.output()
    assert not server.running
    assert not _port_open(server.port)
    out = server.output()  # still readable after stop, across the restart
    assert "greeting: hello" in out and "greeting: again" in out
    server.stop()  # idempotent


def test_function_server_start_failure_shows_the_log(tmp_path: Path) -> None:
    source = tmp_path / "broken.py"
    source.write_text("raise RuntimeError('boom at import')\n")
    server = FunctionServer("nothing", {}, source=source)
    with pytest.raises(RuntimeError, match="boom at import"):
        server.start(timeout_s=20)
    assert not server.running


def test_simulator_process_reports_its_base_url(tmp_path: Path) -> None:
    (tmp_path / "fake_sim.py").write_text(
        textwrap.dedent(
            """
            import argparse, http.server, threading
            parser = argparse.ArgumentParser()
            parser.add_argument("--host"); parser.add_argument("--port", type=int)
            args = parser.parse_args()
            handler = http.server.BaseHTTPRequestHandler
            server = http.server.HTTPServer((args.host, args.port), handler)
            print(f"http://{args.host}:{server.server_port}")
            print("second line")
            server.serve_forever()
            """
        )
    )
    sim = SimulatorProcess(env={"PYTHONPATH": str(tmp_path)}, module="fake_sim")
    with sim:
        assert sim.base_url.startswith("http://127.0.0.1:")
        port = int(sim.base_url.rsplit(":", 1)[1])
        assert _port_open(port)
        assert sim.wait_for_output("second line", 5)
    assert not _port_open(port)


def test_simulator_process_runs_the_real_simulator() -> None:
    sim = SimulatorProcess()  # no credentials given: it prints generated ones on stderr first
    base_url = sim.start()
    try:
        assert base_url == sim.base_url
        assert base_url.startswith("http://127.0.0.1:")
        assert _port_open(int(base_url.rsplit(":", 1)[1]))
    finally:
        sim.stop()
    assert not _port_open(int(base_url.rsplit(":", 1)[1]))
    assert base_url in sim.output()


# -- with the Pub/Sub emulator ------------------------------------------------------------


@pytest.mark.emulator
def test_pull_round_trip_with_attributes(
    emulator: PubSubEmulator, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("topic")
    assert emulator.create_topic(topic) == emulator.create_topic(topic)  # idempotent
    sub = emulator.create_pull_subscription(unique_name("sub"), topic)
    body = {"event_type": "job-timeout", "job_id": "abc"}
    message_id = emulator.publish(topic, json.dumps(body).encode(), event_type="job-timeout")
    got = emulator.pull(sub, 1, timeout_s=10)
    assert len(got) == 1
    assert got[0].message_id == message_id
    assert got[0].json() == body
    assert got[0].attributes == {"event_type": "job-timeout"}
    assert emulator.pull(sub, 1, timeout_s=0.5) == []  # acknowledged: not delivered again
    emulator.delete_topic(topic)
    emulator.delete_topic(topic)  # idempotent


@pytest.mark.emulator
def test_with_project_is_a_separate_namespace_on_the_same_emulator(
    emulator: PubSubEmulator, unique_name: Callable[[str], str]
) -> None:
    other = emulator.with_project(unique_name("other-project"))
    assert other.host == emulator.host
    assert other.env()["PUBSUB_PROJECT_ID"] == other.project
    topic = unique_name("shared-name")
    sub = other.create_pull_subscription(topic, other.create_topic(topic))
    emulator.create_topic(topic)  # same name, other project: no clash
    assert sub.startswith(f"projects/{other.project}/")
    message_id = other.publish(topic, b"x")
    assert [m.message_id for m in other.pull(sub, 1, timeout_s=10)] == [message_id]
    other.stop()  # a handle: the shared emulator keeps running
    assert emulator.running
    emulator.delete_topic(topic)


@pytest.mark.emulator
def test_push_subscription_reaches_functions_framework_with_the_topic(
    emulator: PubSubEmulator,
    unique_name: Callable[[str], str],
    function_server: Callable[..., FunctionServer],
    tmp_path: Path,
) -> None:
    source = tmp_path / "recorder.py"
    source.write_text(RECORDER)
    record_file = tmp_path / "record.jsonl"
    server = function_server("record", {"RECORD_FILE": str(record_file)}, source=source)
    topic = unique_name("job-timeout")
    emulator.create_topic(topic)
    emulator.create_push_subscription(
        unique_name("push"), topic, emulator.push_endpoint(server.url, topic)
    )
    message_id = emulator.publish(topic, b'{"job_id": "x"}', event_type="job-timeout")
    records = _wait_lines(record_file, 1, timeout_s=15)
    assert records, server.output()
    assert records[0]["source"].endswith(f"/projects/{emulator.project}/topics/{topic}")
    assert records[0]["data"] == '{"job_id": "x"}'
    assert records[0]["attributes"] == {"event_type": "job-timeout"}
    assert records[0]["id"] == message_id
    assert server.wait_for_output(f"recorder got {message_id}", 5), server.output()


@pytest.mark.emulator
def test_stop_leaves_no_emulator_process() -> None:
    emu = PubSubEmulator(project="stop-check")
    emu.start()
    pgid = emu.pid
    assert pgid is not None
    assert emu.create_topic("stop-check-topic").endswith("/topics/stop-check-topic")
    assert _port_open(emu.port)
    emu.stop()
    emu.stop()  # idempotent
    assert not _port_open(emu.port)
    with pytest.raises(ProcessLookupError):
        # Zombies awaiting their reaper would still answer signal 0; none may be running.
        _killpg_live(pgid)
    ps = subprocess.run(["ps", "-eo", "stat=,args="], capture_output=True, text=True, check=True)
    live = [
        line
        for line in ps.stdout.splitlines()
        if f"--port={emu.port}" in line and not line.lstrip().startswith("Z")
    ]
    assert live == []


def _killpg_live(pgid: int) -> None:
    """Raise ProcessLookupError unless a non-zombie process of the group is alive."""
    os.killpg(pgid, 0)  # raises when the group is empty
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return
    raise ProcessLookupError(pgid)
