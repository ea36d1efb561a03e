"""Results (and fan-out shares) to a Pub/Sub topic.

``google.cloud.pubsub_v1`` is imported when the first message is published, not at module
import: it costs ~0.45 s, which would otherwise delay the server's readiness at cold start.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

from cancel_handler import logs
from cancel_handler.results.model import Message
from cancel_handler.results.sinks import PublishError, Wait, nothing_to_wait_for

if TYPE_CHECKING:
    from google.pubsub_v1 import PublisherClient as GapicPublisher

PUBLISH_TIMEOUT_S = 30.0
MAX_PER_REQUEST = 1000  # Pub/Sub's limit of messages in one Publish request
# Publish requests in flight at once (threads start only as needed): the events of every
# request thread (deploy.yaml runs 32) each wait for their own, on a channel that multiplexes.
PUBLISH_THREADS = 16
# Pub/Sub takes 10 MB per request; gRPC servers (the emulator) often 4 MiB. Proposals carry
# their approval token in every result (about 31 KB for 1,000 jobs), so size counts too.
MAX_REQUEST_BYTES = 3_500_000


class Publisher:
    """One gRPC client and a small request pool, shared by every topic of an instance
    (results and fan-out use one channel). Both are built on first use."""

    def __init__(self, timeout_s: float = PUBLISH_TIMEOUT_S, emulator_host: str | None = None):
        self.timeout_s = timeout_s
        self._emulator_host = emulator_host
        self._client: GapicPublisher | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def client(self) -> GapicPublisher:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = _new_publisher(self._emulator_host)
        return self._client

    def executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(PUBLISH_THREADS, thread_name_prefix="publish")
        return self._pool


class PubSubSink:
    """Publishes to a topic and waits until every message is confirmed, at most ``timeout_s``
    in all. A missing topic fails at once (``NotFound`` is not retried); an unreachable Pub/Sub
    is retried only within ``timeout_s`` (the library's default is 600 s), so a dead emulator
    or network fails the event in seconds, not minutes.

    It calls the Publish RPC itself (the generated ``google.pubsub_v1`` client), one request per
    up to 1000 results (and MAX_REQUEST_BYTES), instead of the high-level client's batching: a
    lone result is sent at once rather than after a batching window, and a bulk event's results
    still travel in a few large requests. Requests run on a small pool, so publishing overlaps
    with cancelling.
    """

    def __init__(self, topic: str, publisher: Publisher) -> None:
        self.topic = topic
        self._publisher = publisher
        self._timeout_s = publisher.timeout_s

    def warm_up(self) -> None:
        """Import the Pub/Sub client and build it before the first result."""
        self._publisher.client()

    def start(self, messages: Sequence[Message]) -> Wait:
        """Send the messages now; the returned function waits until each is confirmed (or
        raises ``PublishError``), so publishing overlaps with other work."""
        if not messages:
            return nothing_to_wait_for
        deadline = time.monotonic() + self._timeout_s
        chunks = _chunks(messages)
        futures = [
            self._publisher.executor().submit(self._send, chunk, deadline) for chunk in chunks
        ]

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

    def _send(self, chunk: Sequence[Message], deadline: float) -> None:
        from google.api_core import exceptions

        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise self._timed_out()
        client = self._publisher.client()
        request = _publish_request(self.topic, chunk)
        try:
            client.publish(request=request, retry=_retry(remaining), timeout=remaining)
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


def _chunks(messages: Sequence[Message]) -> list[Sequence[Message]]:
    """Consecutive runs of at most MAX_PER_REQUEST messages and about MAX_REQUEST_BYTES."""
    chunks: list[Sequence[Message]] = []
    start, size = 0, 0
    for i, (data, attributes) in enumerate(messages):
        weight = len(data) + sum(len(k) + len(v) for k, v in attributes.items()) + 64
        if i > start and (i - start == MAX_PER_REQUEST or size + weight > MAX_REQUEST_BYTES):
            chunks.append(messages[start:i])
            start, size = i, 0
        size += weight
    chunks.append(messages[start:])
    return chunks


def _publish_request(topic: str, chunk: Sequence[Message]) -> Any:
    """The Publish request, built on the protobuf message itself: wrapping each message in
    the generated (proto-plus) types costs ~45 us a message, this ~5 us."""
    from google.pubsub_v1 import PublishRequest

    request = PublishRequest.pb()(topic=topic)
    for data, attributes in chunk:
        request.messages.add(data=data).attributes.update(attributes)
    return PublishRequest.wrap(request)


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
