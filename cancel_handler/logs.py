"""Structured logs for Cloud Logging: one JSON object per line on stdout.

Cloud Logging reads ``severity`` and ``message`` from each line; every other key becomes a
field of ``jsonPayload``, so an operator can filter on ``event_id`` or ``job_id``. Values pass
through ``redact`` so that secrets registered at start never reach the output.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from datetime import UTC, datetime
from typing import Any, TextIO

_secrets: set[str] = set()
_lock = threading.Lock()
_AUTH_HEADER_RE = re.compile(
    r"((?:Authorization|X-Auth-Token|X-Subject-Token|X-Security-Token)['\"]?\s*[:=]\s*['\"]?)"
    r"[^'\",}\n]+",
    re.IGNORECASE,
)
REDACTED = "[REDACTED]"


def register_secret(value: str | None) -> None:
    """Never print ``value`` (an AK, SK, token or password) from now on."""
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    text = _AUTH_HEADER_RE.sub(lambda m: m.group(1) + REDACTED, text)
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def log(severity: str, message: str, stream: TextIO | None = None, **fields: Any) -> None:
    record: dict[str, Any] = {
        "severity": severity,
        "message": message,
        "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
    record.update({key: value for key, value in fields.items() if value is not None})
    line = redact(json.dumps(record, default=str, ensure_ascii=False))
    out = stream or sys.stdout
    with _lock:
        out.write(line + "\n")
        out.flush()


def debug(message: str, **fields: Any) -> None:
    log("DEBUG", message, **fields)


def info(message: str, **fields: Any) -> None:
    log("INFO", message, **fields)


def warning(message: str, **fields: Any) -> None:
    log("WARNING", message, **fields)


def error(message: str, **fields: Any) -> None:
    log("ERROR", message, **fields)
