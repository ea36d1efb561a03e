"""Result events (SPEC section 3) and where they go.

- ``model``: the ``ResultEvent`` (its JSON and attributes) and the ``Message`` it travels as;
- ``sinks``: the ``Sink`` protocol (``start(messages) -> wait``), ``PrintSink`` (stdout, local
  runs), ``MemorySink`` (tests, the in-process demo), ``PublishError``;
- ``pubsub``: ``PubSubSink`` (a topic) over one shared ``Publisher`` (the gRPC client);
- ``batching``: results sent in batches while the cancels run.

This package only writes and sends results; ``cancel_handler.outcomes`` builds them.
"""

from __future__ import annotations

from cancel_handler.results.batching import Batches
from cancel_handler.results.model import Message, ResultEvent, results_json
from cancel_handler.results.pubsub import Publisher, PubSubSink
from cancel_handler.results.sinks import MemorySink, PrintSink, PublishError, Sink, publish

__all__ = [
    "Batches",
    "MemorySink",
    "Message",
    "PrintSink",
    "PubSubSink",
    "PublishError",
    "Publisher",
    "ResultEvent",
    "Sink",
    "publish",
    "results_json",
]
