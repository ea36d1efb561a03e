"""The result event (SPEC section 3) and the message it travels as.

Results are built in ``cancel_handler.outcomes`` only; this module says how one is written:
field names and order of the JSON object, and the message attributes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, NamedTuple

from cancel_handler import logs


class Message(NamedTuple):
    """What a sink sends: the data and the attributes of one Pub/Sub message."""

    data: bytes
    attributes: dict[str, str]


def utc_now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class ResultEvent:
    event_type: str | None
    source_event_id: str
    project_id: str | None
    job_id: str
    job_kind: str
    outcome: str  # an ``outcomes.Outcome``
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
    approval_token: str | None = None  # a proposal (SPEC section 8)
    approval_url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The published JSON object. Text that came from DLI or from the event (messages,
        reasons, context) passes through ``logs.redact``: no registered secret is published."""
        # not dataclasses.asdict: it deep-copies every field; redact_value copies ``context``
        data = {f.name: getattr(self, f.name) for f in _FIELDS}
        data["outcome"] = str(self.outcome)  # the enum's text
        if not data["queue_name"]:
            del data["queue_name"]
        if not data["context"]:
            del data["context"]
        for name in ("approval_token", "approval_url"):
            if data[name] is None:
                del data[name]
        redacted: dict[str, Any] = logs.redact_value(data)
        return redacted

    def attributes(self) -> dict[str, str]:
        attrs = {
            "event_type": self.event_type or "",
            "outcome": str(self.outcome),
            "is_success": "true" if self.is_success else "false",
            "job_id": self.job_id,
            "project_id": self.project_id or "",
        }
        if self.error_code:
            attrs["error_code"] = self.error_code
        return {key: logs.redact(value) for key, value in attrs.items()}

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()

    def to_message(self) -> Message:
        return Message(self.to_bytes(), self.attributes())


_FIELDS = fields(ResultEvent)


def results_json(results: Sequence[ResultEvent], **extra: Any) -> str:
    """The HTTP entry point's answer: ``{"results": [...], **extra}``."""
    return json.dumps({"results": [r.to_dict() for r in results], **extra})
