"""The result event (SPEC section 3) and the message it travels as.

Results are built in ``cancel_handler.outcomes`` only; this module says how one is written:
field names and order of the JSON object, and the message attributes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any, NamedTuple

from cancel_handler import logs


class Message(NamedTuple):
    """What a sink sends: the data and the attributes of one Pub/Sub message."""

    data: bytes
    attributes: dict[str, str]


_second: tuple[int, str] = (-1, "")


def utc_now_text() -> str:
    """Now in UTC, ``2026-11-29T12:00:00.123Z``: one ``strftime`` per second, not per result
    (a 1,000-job event builds 1,000 of these)."""
    global _second
    now = time.time()
    seconds = int(now)
    if _second[0] != seconds:
        _second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    millis = min(999, int((now - seconds) * 1000))
    return f"{_second[1]}.{millis:03d}Z"


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
        data = {name: getattr(self, name) for name in _FIELD_NAMES}
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
        """The published JSON: compact, UTF-8. Written once per result; the message and the
        HTTP answer share it."""
        return self._json

    @cached_property
    def _json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()

    def to_message(self) -> Message:
        return Message(self.to_bytes(), self.attributes())


_FIELD_NAMES = tuple(f.name for f in fields(ResultEvent))


def results_json(results: Sequence[ResultEvent], **extra: Any) -> str:
    """The HTTP entry point's answer: ``{"results": [...], **extra}``, each result as it was
    published (its JSON is not written again)."""
    listed = b",".join(r.to_bytes() for r in results).decode()
    rest = "".join(f",{json.dumps(key)}:{json.dumps(value)}" for key, value in extra.items())
    return f'{{"results":[{listed}]{rest}}}'
