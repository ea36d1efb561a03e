"""Start and stop the local stack: the Pub/Sub emulator, the DLI simulator, the function server.

Used by the end-to-end tests, ``dli-cancel demo`` and the benchmarks; never imported on the
function's path. Standard library plus google-cloud-pubsub (imported lazily, on first use of a
client, so importing this module stays cheap).

Every server runs as a subprocess in its own process group (``start_new_session=True``) and is
stopped by signalling the whole group: ``gcloud beta emulators pubsub start`` is a Python wrapper
around a Java server, and signalling only the wrapper would leave the Java child running. Each
``stop()`` is idempotent and also registered with :mod:`atexit`.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from google.cloud import pubsub_v1

__all__ = [
    "REPO_ROOT",
    "FunctionServer",
    "PubSubEmulator",
    "PulledMessage",
    "SimulatorProcess",
    "child_env",
    "free_port",
    "gcloud_available",
    "push_endpoint",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"

# Configuration that must not leak from the developer's shell into a server we start: the
# function's own settings (SPEC section 4) and the functions-framework / emulator switches.
_STRIPPED_PREFIXES = ("PUBSUB_", "DLI_", "HUAWEICLOUD_", "IAM_", "BUDGET_", "FANOUT_", "PUSH_")
_STRIPPED_NAMES = frozenset(
    {
        "RESULT_TOPIC",
        "DRY_RUN",
        "MAX_EVENT_AGE_S",
        "MAX_JOBS_PER_EVENT",
        "MAX_BODY_BYTES",
        "CANCEL_CONCURRENCY",
        "RUNTIME_LIMITS",
        "GOOGLE_CLOUD_PROJECT",
        "FUNCTION_TARGET",
        "FUNCTION_SOURCE",
        "FUNCTION_SIGNATURE_TYPE",
        "FUNCTION_USE_ASGI",
        "HOST",
        "PORT",
        "DEBUG",
    }
)
_LOG_TAIL_CHARS = 4000


def gcloud_available() -> bool:
    """Whether ``gcloud`` with the Pub/Sub emulator component (and Java) is installed."""
    gcloud = shutil.which("gcloud")
    if gcloud is None or shutil.which("java") is None:
        return False
    sdk_root = Path(gcloud).resolve().parent.parent
    emulator_dir = sdk_root / "platform" / "pubsub-emulator"
    # Installs that keep the SDK elsewhere: trust gcloud, the emulator start reports the rest.
    return emulator_dir.is_dir() or not (sdk_root / "platform").is_dir()


def free_port() -> int:
    """An ephemeral TCP port on the loopback interface that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def child_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``os.environ`` without the function's configuration, plus ``env``.

    Strips ``PUBSUB_*``, ``DLI_*``, ``HUAWEICLOUD_*``, ``IAM_*`` and the other variables of SPEC
    section 4, so a developer's shell cannot change what a test or the demo runs against.
    ``PYTHONUNBUFFERED=1`` is set so that prints reach the captured output at once.
    """
    result = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(_STRIPPED_PREFIXES) and key not in _STRIPPED_NAMES
    }
    result["PYTHONUNBUFFERED"] = "1"
    if env:
        result.update(env)
    return result


def push_endpoint(function_url: str, topic: str, project: str | None = None) -> str:
    """The push endpoint that tells functions-framework which topic a raw push came from.

    functions-framework converts a raw Pub/Sub push envelope into a CloudEvent and takes the
    topic (the CloudEvent ``source``) from ``projects/P/topics/T`` in the request URL path.
    ``topic`` is a full path, or a bare name together with ``project``.
    """
    return f"{function_url.rstrip('/')}/{_topic_path(topic, project)}"


def _topic_path(topic: str, project: str | None) -> str:
    if topic.startswith("projects/"):
        return topic
    if not project:
        raise ValueError(f"topic {topic!r} is a bare name: give the project too")
    return f"projects/{project}/topics/{topic}"


def _wait_port(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs (zombies do not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may contain spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) >= 3 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class _ManagedProcess:
    """A subprocess in its own process group, its output captured to a file in a temp dir."""

    _name = "process"

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._log_path: Path | None = None
        self._saved_output = ""
        self.launched_at = 0.0  # time.perf_counter() just before the last spawn

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """The process id (and process group id) of the running server, else ``None``."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _spawn(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path | None = None) -> None:
        if self._proc is not None:
            raise RuntimeError(f"{self._name} already started")
        self._workdir = Path(tempfile.mkdtemp(prefix=f"dli-cancel-{self._name}-"))
        self._log_path = self._workdir / "output.log"
        try:
            with self._log_path.open("wb") as log:
                self.launched_at = time.perf_counter()
                self._proc = subprocess.Popen(
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=dict(env),
                    cwd=cwd,
                    start_new_session=True,
                )
        except OSError:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = self._log_path = None
            raise
        atexit.register(self.stop)

    def _check_alive(self, what: str) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            code = self._proc.returncode
            tail = self._log_tail()
            self.stop()
            raise RuntimeError(f"{self._name} exited with status {code} {what}:\n{tail}")

    def _fail_start(self, message: str) -> None:
        tail = self._log_tail()
        self.stop()
        raise RuntimeError(f"{message}:\n{tail}")

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM the whole process group, then SIGKILL what is left; idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            atexit.unregister(self.stop)
            pgid = proc.pid
            _signal_group(pgid, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace_s)
            while _group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if proc.poll() is None or _group_alive(pgid):
                _signal_group(pgid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
                deadline = time.monotonic() + 5
                while _group_alive(pgid) and time.monotonic() < deadline:
                    time.sleep(0.05)
        if self._workdir is not None:
            self._saved_output += self._current_output()
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
            self._log_path = None

    # -- output ----------------------------------------------------------------------------
    def _current_output(self) -> str:
        if self._log_path is None:
            return ""
        try:
            return self._log_path.read_bytes().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def output(self) -> str:
        """Everything the process printed so far (stdout and stderr), across restarts."""
        return self._saved_output + self._current_output()

    def _log_tail(self) -> str:
        return self.output()[-_LOG_TAIL_CHARS:]

    def wait_for_output(self, text: str, timeout_s: float = 10) -> bool:
        """Wait until ``text`` appears in :meth:`output`; ``False`` on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            if text in self.output():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def start(self, timeout_s: float = 30) -> object:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass
class PulledMessage:
    """A message received with :meth:`PubSubEmulator.pull` (already acknowledged)."""

    data: bytes
    attributes: dict[str, str]
    message_id: str
    publish_time: str = ""
    ordering_key: str = ""

    def json(self) -> Any:
        """The data parsed as JSON."""
        return json.loads(self.data)


# As google-cloud-pubsub sets on its own channels: a pull of many big results (proposals carry
# their approval token) is larger than gRPC's default 4 MiB.
_UNBOUNDED_MESSAGES = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
]


class PubSubEmulator(_ManagedProcess):
    """``gcloud beta emulators pubsub start`` on a loopback port, with a few admin helpers.

    The clients talk to this emulator whatever ``PUBSUB_EMULATOR_HOST`` says in this process;
    give :meth:`env` to the servers that should use it.
    """

    _name = "pubsub-emulator"

    def __init__(self, project: str = "dli-cancel-local", port: int | None = None) -> None:
        super().__init__()
        self.project = project
        self.port = port or free_port()
        self.host = f"{LOOPBACK}:{self.port}"
        self._publisher: pubsub_v1.PublisherClient | None = None
        self._subscriber: pubsub_v1.SubscriberClient | None = None
        self._data_dirs: list[Path] = []
        self._owner = True

    def start(self, timeout_s: float = 60) -> None:
        """Start the emulator and wait until it answers; ``RuntimeError`` with its log if not."""
        data_dir = Path(tempfile.mkdtemp(prefix="dli-cancel-pubsub-data-"))
        self._data_dirs.append(data_dir)
        self._spawn(
            [
                "gcloud",
                "beta",
                "emulators",
                "pubsub",
                "start",
                f"--project={self.project}",
                f"--host-port={self.host}",
                # Its own data dir: concurrent emulators would otherwise share ~/.config/gcloud.
                f"--data-dir={data_dir}",
                "--quiet",
            ],
            env={**child_env(), "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"},
        )
        deadline = time.monotonic() + timeout_s
        # Import google-cloud-pubsub and build the clients (their channels connect lazily)
        # while the JVM boots: the import alone takes about a second.
        _ = self.publisher, self.subscriber
        while True:
            self._check_alive("while starting")
            if self._http_ok():
                break
            if time.monotonic() >= deadline:
                self._fail_start(f"{self._name} did not answer on {self.host} in {timeout_s} s")
            time.sleep(0.1)
        # One gRPC call, so that callers (and benchmarks) see a ready emulator and channel.
        try:
            list(self.publisher.list_topics(project=f"projects/{self.project}", timeout=30))
        except Exception as exc:
            self._fail_start(f"{self._name} answered HTTP but not gRPC ({exc!r})")

    def _http_ok(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.host}/", timeout=1) as response:
                body: bytes = response.read()
                return response.status == 200 and body.strip() == b"Ok"
        except (OSError, urllib.error.URLError):
            return False

    def with_project(self, project: str) -> PubSubEmulator:
        """A handle on this same emulator for another project (it serves any project name).

        The handle shares the process and the clients; its :meth:`stop` does nothing, the
        emulator stops with the original. Separate projects keep tests apart while the topic
        names stay the real ones.
        """
        view = copy.copy(self)
        view.project = project
        view._owner = False
        return view

    def stop(self, grace_s: float = 5.0) -> None:
        """Close the clients, stop the emulator (the whole process group); idempotent.

        On a :meth:`with_project` handle this does nothing.
        """
        if not self._owner:
            return
        publisher, self._publisher = self._publisher, None
        subscriber, self._subscriber = self._subscriber, None
        if publisher is not None:
            with contextlib.suppress(Exception):
                publisher.stop()
            with contextlib.suppress(Exception):
                publisher.transport.close()
        if subscriber is not None:
            with contextlib.suppress(Exception):
                subscriber.close()
        super().stop(grace_s)
        for data_dir in self._data_dirs:
            shutil.rmtree(data_dir, ignore_errors=True)
        self._data_dirs.clear()

    def env(self) -> dict[str, str]:
        """The environment that points google-cloud-pubsub at this emulator."""
        return {
            "PUBSUB_EMULATOR_HOST": self.host,
            "PUBSUB_PROJECT_ID": self.project,
            "GOOGLE_CLOUD_PROJECT": self.project,
        }

    # -- clients ---------------------------------------------------------------------------
    @property
    def publisher(self) -> pubsub_v1.PublisherClient:
        """A publisher client bound to this emulator (insecure channel, no credentials)."""
        if self._publisher is None:
            import grpc
            from google.cloud import pubsub_v1
            from google.pubsub_v1.services.publisher.transports.grpc import (
                PublisherGrpcTransport,
            )

            channel = grpc.insecure_channel(self.host, options=_UNBOUNDED_MESSAGES)
            transport = PublisherGrpcTransport(channel=channel)
            self._publisher = pubsub_v1.PublisherClient(
                transport=transport,
                batch_settings=pubsub_v1.types.BatchSettings(max_latency=0.001),
            )
        return self._publisher

    @property
    def subscriber(self) -> pubsub_v1.SubscriberClient:
        """A subscriber client bound to this emulator (insecure channel, no credentials)."""
        if self._subscriber is None:
            import grpc
            from google.cloud import pubsub_v1
            from google.pubsub_v1.services.subscriber.transports.grpc import (
                SubscriberGrpcTransport,
            )

            channel = grpc.insecure_channel(self.host, options=_UNBOUNDED_MESSAGES)
            transport = SubscriberGrpcTransport(channel=channel)
            self._subscriber = pubsub_v1.SubscriberClient(transport=transport)
        return self._subscriber

    # -- admin -----------------------------------------------------------------------------
    def topic_path(self, name: str) -> str:
        """``projects/<project>/topics/<name>`` (a full path is returned as is)."""
        return _topic_path(name, self.project)

    def subscription_path(self, name: str) -> str:
        """``projects/<project>/subscriptions/<name>`` (a full path is returned as is)."""
        if name.startswith("projects/"):
            return name
        return f"projects/{self.project}/subscriptions/{name}"

    def push_endpoint(self, function_url: str, topic: str) -> str:
        """See the module-level :func:`push_endpoint`; bare topic names are in this project."""
        return push_endpoint(function_url, topic, self.project)

    def create_topic(self, name: str) -> str:
        """Create the topic unless it exists; returns its path."""
        from google.api_core.exceptions import AlreadyExists

        path = self.topic_path(name)
        with contextlib.suppress(AlreadyExists):
            self.publisher.create_topic(name=path, timeout=30)
        return path

    def delete_topic(self, name: str) -> None:
        """Delete the topic if it exists."""
        from google.api_core.exceptions import NotFound

        with contextlib.suppress(NotFound):
            self.publisher.delete_topic(topic=self.topic_path(name), timeout=30)

    def create_push_subscription(
        self,
        name: str,
        topic: str,
        endpoint: str,
        ack_deadline_s: int = 30,
        min_backoff_s: float | None = None,
        max_backoff_s: float | None = None,
    ) -> str:
        """A push subscription to ``endpoint`` (wrapped envelope); returns its path.

        For our function use :meth:`push_endpoint` to build ``endpoint``. If the subscription
        already exists its push endpoint is updated. ``ack_deadline_s`` is also the push
        request timeout. ``min_backoff_s``/``max_backoff_s`` set a retry policy (the emulator
        may not honour it).
        """
        from google.api_core.exceptions import AlreadyExists

        path = self.subscription_path(name)
        request: dict[str, Any] = {
            "name": path,
            "topic": self.topic_path(topic),
            "push_config": {"push_endpoint": endpoint},
            "ack_deadline_seconds": ack_deadline_s,
        }
        policy: dict[str, Any] = {}
        if min_backoff_s is not None:
            policy["minimum_backoff"] = _duration(min_backoff_s)
        if max_backoff_s is not None:
            policy["maximum_backoff"] = _duration(max_backoff_s)
        if policy:
            request["retry_policy"] = policy
        try:
            self.subscriber.create_subscription(request=request, timeout=30)
        except AlreadyExists:
            self.subscriber.modify_push_config(
                request={"subscription": path, "push_config": {"push_endpoint": endpoint}},
                timeout=30,
            )
        return path

    def create_pull_subscription(self, name: str, topic: str, ack_deadline_s: int = 30) -> str:
        """A pull subscription (idempotent); returns its path."""
        from google.api_core.exceptions import AlreadyExists

        path = self.subscription_path(name)
        with contextlib.suppress(AlreadyExists):
            self.subscriber.create_subscription(
                request={
                    "name": path,
                    "topic": self.topic_path(topic),
                    "ack_deadline_seconds": ack_deadline_s,
                },
                timeout=30,
            )
        return path

    def delete_subscription(self, name: str) -> None:
        """Delete the subscription if it exists."""
        from google.api_core.exceptions import NotFound

        with contextlib.suppress(NotFound):
            self.subscriber.delete_subscription(
                subscription=self.subscription_path(name), timeout=30
            )

    # -- messages --------------------------------------------------------------------------
    def publish(self, topic: str, data: bytes, **attributes: str) -> str:
        """Publish one message and wait for the emulator to confirm it; returns its id."""
        future = self.publisher.publish(self.topic_path(topic), data, **attributes)
        message_id: str = future.result(timeout=30)
        return message_id

    def pull(self, subscription: str, count: int, timeout_s: float = 20) -> list[PulledMessage]:
        """Pull (and acknowledge) until ``count`` messages arrived or ``timeout_s`` passed.

        Returns what arrived, possibly fewer than ``count`` (or more, if the emulator sent more
        in the last batch).
        """
        from google.api_core.exceptions import DeadlineExceeded

        path = self.subscription_path(subscription)
        got: list[PulledMessage] = []
        deadline = time.monotonic() + timeout_s
        while len(got) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                response = self.subscriber.pull(
                    request={"subscription": path, "max_messages": max(count - len(got), 1)},
                    timeout=max(min(remaining, 5.0), 0.1),
                    retry=None,
                )
            except DeadlineExceeded:
                continue
            received = list(response.received_messages)
            if not received:
                time.sleep(0.05)
                continue
            self.subscriber.acknowledge(
                request={"subscription": path, "ack_ids": [r.ack_id for r in received]},
                timeout=30,
            )
            for item in received:
                message = item.message
                publish_time = message.publish_time
                got.append(
                    PulledMessage(
                        data=bytes(message.data),
                        attributes=dict(message.attributes),
                        message_id=message.message_id,
                        publish_time=publish_time.isoformat() if publish_time else "",
                        ordering_key=message.ordering_key,
                    )
                )
        return got


def _duration(seconds: float) -> dict[str, int]:
    whole = int(seconds)
    return {"seconds": whole, "nanos": round((seconds - whole) * 1e9)}


def _python_tool(name: str, module: str) -> list[str]:
    """The console script next to this interpreter, else ``python -m module``."""
    script = Path(sys.executable).parent / name
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", module]


class FunctionServer(_ManagedProcess):
    """A function under the real functions-framework server (gunicorn), as a subprocess."""

    _name = "function-server"

    def __init__(
        self,
        target: str,
        env: Mapping[str, str],
        port: int | None = None,
        source: str | Path = REPO_ROOT / "main.py",
        signature_type: str | None = None,
    ) -> None:
        super().__init__()
        self.target = target
        self.env: dict[str, str] = dict(env)
        self.port = port or free_port()
        self.source = Path(source).resolve()
        self.signature_type = signature_type
        self.url = f"http://{LOOPBACK}:{self.port}"

    def start(self, timeout_s: float = 30) -> None:
        """Start the server and wait until it accepts connections; ``RuntimeError`` if not."""
        self.launch()
        deadline = time.monotonic() + timeout_s
        while True:
            self._check_alive("while starting")
            if _wait_port(LOOPBACK, self.port):
                return
            if time.monotonic() >= deadline:
                self._fail_start(f"{self._name} did not listen on {self.url} in {timeout_s} s")
            time.sleep(0.05)

    def launch(self) -> None:
        """Start the server without waiting for it (``launched_at`` says when: cold starts)."""
        argv = [
            *_python_tool("functions-framework", "functions_framework"),
            "--target",
            self.target,
            "--source",
            str(self.source),
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
        ]
        if self.signature_type:
            argv += ["--signature-type", self.signature_type]
        self._spawn(argv, child_env(self.env), cwd=self.source.parent)

    def restart(
        self,
        env_update: Mapping[str, str] | None = None,
        timeout_s: float = 30,
        grace_s: float = 5.0,
    ) -> None:
        """Stop, apply ``env_update`` to the environment, start again on the same port.

        gunicorn stops gracefully on SIGTERM and waits up to 2 s for idle keep-alive
        connections (the emulator's push client keeps some); a smaller ``grace_s`` kills sooner.
        """
        self.stop(grace_s)
        if env_update:
            self.env.update(env_update)
        self.start(timeout_s)


class SimulatorProcess(_ManagedProcess):
    """The DLI simulator (``python -m dli_simulator``) as a subprocess.

    The simulator prints its base URL as the first line of stdout; :meth:`start` returns it.
    ``env`` is added to the cleaned environment (see :func:`child_env`), as for the function.
    """

    _name = "dli-simulator"

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        host: str = LOOPBACK,
        port: int = 0,
        extra_args: Sequence[str] = (),
        module: str = "dli_simulator",
    ) -> None:
        super().__init__()
        self.env: dict[str, str] = dict(env or {})
        self.host = host
        self.port = port
        self.extra_args = list(extra_args)
        self.module = module
        self.base_url = ""

    def start(self, timeout_s: float = 30) -> str:
        """Start the simulator; returns its base URL (the first line it prints)."""
        argv = [
            sys.executable,
            "-m",
            self.module,
            "--host",
            self.host,
            "--port",
            str(self.port),
            *self.extra_args,
        ]
        self._spawn(argv, child_env(self.env), cwd=REPO_ROOT)
        deadline = time.monotonic() + timeout_s
        while True:
            # stderr shares the file: skip any warning printed before the URL.
            complete = self._current_output().rpartition("\n")[0]
            for line in complete.splitlines():
                if line.strip().startswith(("http://", "https://")):
                    self.base_url = line.strip()
                    return self.base_url
            self._check_alive("before printing its base URL")
            if time.monotonic() >= deadline:
                self._fail_start(f"{self._name} printed no base URL in {timeout_s} s")
            time.sleep(0.05)
