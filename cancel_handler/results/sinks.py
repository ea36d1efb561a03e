"""Where messages go, behind one protocol: a Pub/Sub topic (``results.pubsub``), stdout in local
runs, or a list in memory (tests, the in-process demo).

Every sink sends with ``start(messages)`` and returns a ``Wait``: calling it returns once every
message is confirmed, or raises ``PublishError``. ``start`` itself does not raise
``PublishError``, so a caller can send batches while it does other work and collect the
confirmations at the end.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TextIO

from cancel_handler import logs
from cancel_handler.results.model import Message

Wait = Callable[[], None]


class PublishError(Exception):
    """A message could not be confirmed; the event must be delivered again."""


class Sink(Protocol):
    def start(self, messages: Sequence[Message]) -> Wait:
        """Send ``messages`` now; the returned function waits for every confirmation."""
        ...

    def warm_up(self) -> None:
        """Prepare what the first send would otherwise pay for (imports, clients)."""
        ...


def publish(sink: Sink, messages: Sequence[Message]) -> None:
    """Send and wait: returns once every message is confirmed; else ``PublishError``."""
    sink.start(messages)()


def nothing_to_wait_for() -> None:
    return None


class PrintSink:
    """Local runs without a topic: each result is printed as one JSON line."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def start(self, messages: Sequence[Message]) -> Wait:
        stream = self._stream or sys.stdout
        for message in messages:
            logs.log("INFO", "result", stream=stream, result=json.loads(message.data))
        return nothing_to_wait_for

    def warm_up(self) -> None:
        return None


class MemorySink:
    """Keeps every message (tests, the in-process demo). ``fail`` makes every confirmation
    fail with it (a Pub/Sub outage, in tests)."""

    def __init__(self, fail: PublishError | None = None) -> None:
        self.messages: list[Message] = []
        self.fail = fail
        self._lock = threading.Lock()

    def start(self, messages: Sequence[Message]) -> Wait:
        failure = self.fail
        if failure is not None:

            def fails() -> None:
                raise PublishError(str(failure))

            return fails
        with self._lock:
            self.messages.extend(messages)
        return nothing_to_wait_for

    def warm_up(self) -> None:
        return None

    @property
    def results(self) -> list[dict[str, Any]]:
        """The published JSON objects, in the order they were sent."""
        return [json.loads(message.data) for message in self.messages]
