"""Result events (SPEC section 3) and where they go: a Pub/Sub topic, or stdout in local runs.

``google.cloud.pubsub_v1`` is imported when the first result is published, not at module
import: it costs ~0.45 s, which would otherwise delay the server's readiness at cold start.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from cancel_handler import logs

if TYPE_CHECKING:
    from google.pubsub_v1 import PublisherClient as GapicPublisher

PUBLISH_TIMEOUT_S = 30.0
MAX_PER_REQUEST = 1000  # Pub/Sub's limit of messages in one Publish request


def utc_now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class ResultEvent:
    event_type: str | None
    source_event_id: str
    project_id: str | None
    job_id: str
    job_kind: str
    outcome: str
    is_success: bool
    error_code: str | None
    message: str
    http_status: int | None
    dli_request_id: str | None
    attempts: int
    dry_run: bool
    reason: str | None
    handled_at: str = field(default_factory=utc_now_text)
    queue_name: str | None = None
    context: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The published JSON object. Text that came from DLI or from the event (messages,
        reasons, context) passes through ``logs.redact``: no registered secret is published."""
        # not dataclasses.asdict: it deep-copies every field; redact_value copies ``context``
        data = {f.name: getattr(self, f.name) for f in _FIELDS}
        if not data["queue_name"]:
            del data["queue_name"]
        if not data["context"]:
            del data["context"]
        redacted: dict[str, Any] = logs.redact_value(data)
        return redacted

    def attributes(self) -> dict[str, str]:
        attrs = {
            "event_type": self.event_type or "",
            "outcome": self.outcome,
            "is_success": "true" if self.is_success else "false",
            "job_id": self.job_id,
            "project_id": self.project_id or "",
        }
        if self.error_code:
            attrs["error_code"] = self.error_code
        return {key: logs.redact(value) for key, value in attrs.items()}

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()


_FIELDS = fields(ResultEvent)


class PublishError(Exception):
    """A result could not be confirmed; the event must be delivered again."""


class ResultSink(Protocol):
    def publish(self, results: Sequence[ResultEvent]) -> None:
        """Publish every result and return once each one is confirmed; else raise."""
        ...


class PubSubSink:
    """Publishes to a topic and waits until every message is confirmed, at most ``timeout_s``
    in all. A missing topic fails at once (``NotFound`` is not retried); an unreachable Pub/Sub
    is retried only within ``timeout_s`` (the library's default is 600 s), so a dead emulator
    or network fails the event in seconds, not minutes.

    It calls the Publish RPC itself (the generated ``google.pubsub_v1`` client), one request per
    up to 1000 results, instead of the high-level client's batching: a lone result is sent at
    once rather than after a batching window, and a bulk event's results still travel in a few
    large requests. Requests run on a small pool, so publishing overlaps with cancelling.
    """

    def __init__(
        self,
        topic: str,
        timeout_s: float = PUBLISH_TIMEOUT_S,
        emulator_host: str | None = None,
        shared: PubSubSink | None = None,
    ) -> None:
        self.topic = topic
        self._timeout_s = timeout_s
        self._emulator_host = emulator_host
        self._shared = shared
        self._client: GapicPublisher | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def to_topic(self, topic: str) -> PubSubSink:
        """A sink for another topic that shares this one's client (one gRPC channel)."""
        return PubSubSink(topic, self._timeout_s, self._emulator_host, shared=self)

    def client(self) -> GapicPublisher:
        if self._shared is not None:
            return self._shared.client()
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = _new_publisher(self._emulator_host)
        return self._client

    def _executor(self) -> ThreadPoolExecutor:
        if self._shared is not None:
            return self._shared._executor()
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(4, thread_name_prefix="publish")
        return self._pool

    def warm_up(self) -> None:
        """Import the Pub/Sub client and build it before the first result."""
        self.client()

    def publish(self, results: Sequence[ResultEvent]) -> None:
        self.start(results)()

    def publish_raw(self, messages: Sequence[tuple[bytes, dict[str, str]]]) -> None:
        self.start_raw(messages)()

    def start(self, results: Sequence[ResultEvent]) -> Callable[[], None]:
        """Send the results now; the returned function waits until each is confirmed (or
        raises ``PublishError``), so publishing overlaps with other work."""
        return self.start_raw([(r.to_bytes(), r.attributes()) for r in results])

    def start_raw(self, messages: Sequence[tuple[bytes, dict[str, str]]]) -> Callable[[], None]:
        if not messages:
            return _nothing
        deadline = time.monotonic() + self._timeout_s
        chunks = [
            messages[i : i + MAX_PER_REQUEST] for i in range(0, len(messages), MAX_PER_REQUEST)
        ]
        futures = [self._executor().submit(self._send, chunk, deadline) for chunk in chunks]

        def wait() -> None:
            try:
                for future in futures:
                    future.result(timeout=max(0.0, deadline - time.monotonic()) + 1.0)
            except (TimeoutError, FutureTimeout):
                raise self._timed_out() from None
            except PublishError:
                raise
            except Exception as exc:  # any publish failure means: not confirmed
                raise self._error(exc) from None

        return wait

    def _send(self, chunk: Sequence[tuple[bytes, dict[str, str]]], deadline: float) -> None:
        from google.api_core import exceptions

        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise self._timed_out()
        client = self.client()
        messages = [_pubsub_message(data, attrs) for data, attrs in chunk]
        try:
            client.publish(
                topic=self.topic, messages=messages, retry=_retry(remaining), timeout=remaining
            )
        except (exceptions.RetryError, exceptions.DeadlineExceeded):
            raise self._timed_out() from None

    def _timed_out(self) -> PublishError:
        return PublishError(
            f"publishing to {self.topic} failed: not confirmed within "
            f"RESULT_PUBLISH_TIMEOUT_S={self._timeout_s:g} s"
        )

    def _error(self, exc: Exception) -> PublishError:
        reason = " ".join(str(exc).split())[:500]
        return PublishError(
            logs.redact(f"publishing to {self.topic} failed: {type(exc).__name__}: {reason}")
        )


def _nothing() -> None:
    return None


def _pubsub_message(data: bytes, attributes: dict[str, str]) -> Any:
    from google.pubsub_v1 import PubsubMessage

    return PubsubMessage(data=data, attributes=attributes)


def _new_publisher(emulator_host: str | None) -> GapicPublisher:
    from google.pubsub_v1 import PublisherClient

    if not emulator_host:
        return PublisherClient()
    import grpc
    from google.auth.credentials import AnonymousCredentials
    from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

    channel = grpc.insecure_channel(emulator_host)
    credentials = AnonymousCredentials()  # type: ignore[no-untyped-call]
    transport = PublisherGrpcTransport(channel=channel, credentials=credentials)
    return PublisherClient(transport=transport)


def _retry(timeout_s: float) -> Any:
    """Retry the transient codes, within the publish timeout (the library default is 600 s)."""
    from google.api_core import exceptions, retry

    transient = retry.if_exception_type(
        exceptions.Aborted,
        exceptions.DeadlineExceeded,
        exceptions.InternalServerError,
        exceptions.ResourceExhausted,
        exceptions.ServiceUnavailable,
        exceptions.Unknown,
    )
    return retry.Retry(
        predicate=transient,
        initial=0.1,
        maximum=max(0.1, min(5.0, timeout_s / 4)),
        multiplier=2.0,
        timeout=timeout_s,
    )


class PrintSink:
    """Local runs without a topic: each result is printed as one JSON line."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def publish(self, results: Sequence[ResultEvent]) -> None:
        stream = self._stream or sys.stdout
        for result in results:
            logs.log("INFO", "result", stream=stream, result=result.to_dict())


def results_json(results: Sequence[ResultEvent], **extra: Any) -> str:
    return json.dumps({"results": [r.to_dict() for r in results], **extra})
