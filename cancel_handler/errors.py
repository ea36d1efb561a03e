"""The one exception that crosses layers: an event that must be delivered again.

The transports (``entry``) understand only ``RetryLater``. Below them, "try later" has two
sources, each declared with its package: ``dli.errors.DliUnavailable`` (DLI or its credentials
cannot be used now) and ``results.PublishError`` (a result was not confirmed). The handler
catches both and decides: raise ``RetryLater``, or (an old event's DLI faults) publish
``failed`` and return. A configuration error found when the runtime is built is a
``RetryLater`` too (``runtime.load_settings_or_raise``).
"""

from __future__ import annotations

from cancel_handler import logs


class RetryLater(Exception):
    """The event must be delivered again (Pub/Sub: not acknowledged; HTTP: 503).

    The message may quote DLI or Pub/Sub; registered secrets are masked in it, since
    functions-framework answers with it and it may be logged."""

    def __init__(self, message: str) -> None:
        super().__init__(logs.redact(message))
