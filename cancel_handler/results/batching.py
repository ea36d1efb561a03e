"""Results sent in batches while the cancels of a big event run."""

from __future__ import annotations

from collections.abc import Sequence

from cancel_handler.results.model import ResultEvent
from cancel_handler.results.sinks import Sink, Wait

BATCH_SIZE = 100


class Batches:
    """``add`` collects results and sends a batch whenever ``size`` are waiting, so publishing
    overlaps with cancelling; ``finish`` sends the rest and waits for every confirmation
    (raising ``PublishError`` if one failed)."""

    def __init__(self, sink: Sink, size: int = BATCH_SIZE) -> None:
        self._sink = sink
        self._size = size
        self._pending: list[ResultEvent] = []
        self._waits: list[Wait] = []

    def add(self, results: Sequence[ResultEvent]) -> None:
        self._pending.extend(results)
        if len(self._pending) >= self._size:
            self._send()

    def finish(self) -> None:
        self._send()
        for wait in self._waits:
            wait()

    def _send(self) -> None:
        if self._pending:
            self._waits.append(self._sink.start([r.to_message() for r in self._pending]))
            self._pending = []
