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
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from cancel_handler import logs

if TYPE_CHECKING:
    from google.cloud.pubsub_v1 import PublisherClient

PUBLISH_TIMEOUT_S = 30.0


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
        data = asdict(self)
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


class PublishError(Exception):
    """A result could not be confirmed; the event must be delivered again."""


class ResultSink(Protocol):
    def publish(self, results: Sequence[ResultEvent]) -> None:
        """Publish every result and return once each one is confirmed; else raise."""
        ...


class PubSubSink:
    """Publishes to a topic and waits for every message to be confirmed, at most ``timeout_s``
    in all. A missing topic fails at once (``NotFound`` is not retried); an unreachable Pub/Sub
    is retried by the client library only within ``timeout_s`` (its default retry deadline is
    600 s), so a dead emulator or network fails the event in seconds, not minutes."""

    def __init__(
        self, topic: str, timeout_s: float = PUBLISH_TIMEOUT_S, shared: PubSubSink | None = None
    ) -> None:
        self.topic = topic
        self._timeout_s = timeout_s
        self._client: PublisherClient | None = None
        self._lock = threading.Lock()
        self._shared = shared

    def to_topic(self, topic: str) -> PubSubSink:
        """A sink for another topic that shares this one's client (one gRPC channel)."""
        return PubSubSink(topic, self._timeout_s, shared=self)

    def client(self) -> PublisherClient:
        if self._shared is not None:
            return self._shared.client()
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = _new_publisher(self._timeout_s)
        return self._client

    def warm_up(self) -> None:
        """Import google-cloud-pubsub and build the client before the first result."""
        self.client()

    def publish(self, results: Sequence[ResultEvent]) -> None:
        self.publish_raw([(r.to_bytes(), r.attributes()) for r in results])

    def publish_raw(self, messages: Sequence[tuple[bytes, dict[str, str]]]) -> None:
        self.start_raw(messages)()

    def start(self, results: Sequence[ResultEvent]) -> Callable[[], None]:
        """Hand the results to the publisher now; the returned function waits until each is
        confirmed (or raises ``PublishError``), so publishing overlaps with other work."""
        return self.start_raw([(r.to_bytes(), r.attributes()) for r in results])

    def start_raw(self, messages: Sequence[tuple[bytes, dict[str, str]]]) -> Callable[[], None]:
        if not messages:
            return _nothing
        deadline = time.monotonic() + self._timeout_s
        try:
            client = self.client()
            futures = [client.publish(self.topic, data, **attrs) for data, attrs in messages]
        except Exception as exc:  # e.g. the client could not be built
            error = self._error(exc)

            def fail() -> None:
                raise error

            return fail

        def wait() -> None:
            try:
                for future in futures:
                    future.result(timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise PublishError(
                    f"publishing to {self.topic} failed: not confirmed within "
                    f"RESULT_PUBLISH_TIMEOUT_S={self._timeout_s:g} s"
                ) from None
            except Exception as exc:  # any publish failure means: not confirmed
                raise self._error(exc) from None

        return wait

    def _error(self, exc: Exception) -> PublishError:
        reason = " ".join(str(exc).split())[:500]
        return PublishError(
            logs.redact(f"publishing to {self.topic} failed: {type(exc).__name__}: {reason}")
        )


def _nothing() -> None:
    return None


def _new_publisher(timeout_s: float) -> PublisherClient:
    from google.api_core import exceptions, retry
    from google.cloud import pubsub_v1

    # Short batch latency: a lone result waits 0.5 ms for company instead of the default
    # 10 ms batching window; bulk results published in a loop still share batches.
    batch = pubsub_v1.types.BatchSettings(max_messages=500, max_latency=0.0005)
    # The library's default publish retry gives up only after 600 s: far past the function's
    # own timeout. Retry the transient codes within the publish timeout instead.
    transient = retry.if_exception_type(
        exceptions.Aborted,
        exceptions.DeadlineExceeded,
        exceptions.InternalServerError,
        exceptions.ResourceExhausted,
        exceptions.ServiceUnavailable,
        exceptions.Unknown,
    )
    options = pubsub_v1.types.PublisherOptions(
        retry=retry.Retry(
            predicate=transient,
            initial=0.1,
            maximum=max(0.1, min(5.0, timeout_s / 4)),
            multiplier=2.0,
            timeout=timeout_s,
        ),
        timeout=timeout_s,
    )
    return pubsub_v1.PublisherClient(batch_settings=batch, publisher_options=options)


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
