"""The one exception that crosses layers: an event that must be delivered again."""

from __future__ import annotations

from cancel_handler import logs


class RetryLater(Exception):
    """The event must be delivered again (Pub/Sub: not acknowledged; HTTP: 503).

    The message may quote DLI or Pub/Sub; registered secrets are masked in it, since
    functions-framework answers with it and it may be logged."""

    def __init__(self, message: str) -> None:
        super().__init__(logs.redact(message))
