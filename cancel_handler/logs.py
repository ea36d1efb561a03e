"""Structured logs for Cloud Logging: one JSON object per line on stdout.

Cloud Logging reads ``severity`` and ``message`` from each line (and ``time``); every other
key becomes a field of ``jsonPayload``, so an operator can filter on ``event_id`` or ``job_id``
and follow one event from its arrival to its outcome.

Secrets never reach the output: every string value passes through ``redact``, which masks the
values registered with ``register_secret`` (AK, SK, security token, IAM password, IAM tokens:
registered when they are loaded) and the value of any credential header (``Authorization``,
``X-Auth-Token``, ``X-Subject-Token``, ``X-Security-Token``) that appears in a text.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import traceback
from datetime import UTC, datetime
from typing import Any, TextIO

_secrets: set[str] = set()
_lock = threading.Lock()
_HEADER_NAMES = r"(?:Authorization|X-Auth-Token|X-Subject-Token|X-Security-Token)"
# A credential header's value, wherever a header shows up in a text: a JSON or Python dict
# ('Authorization': '...' or "Authorization": "...", also with escaped quotes inside a JSON
# string), or a raw HTTP header line (Authorization: ...). A quoted value runs to its closing
# quote; an unquoted one to the end of the line. Comma-separated parts (an SDK-HMAC-SHA256
# header's Access=..., SignedHeaders=..., Signature=...) are masked together.
_AUTH_HEADER_RE = re.compile(
    _HEADER_NAMES
    + r"""(?P<close>\\?['"])?(?P<sep>\s*[:=]\s*)"""
    + r"""(?:(?P<open>\\?['"])(?P<quoted>.*?)(?P=open)|(?P<bare>[^\r\n]+))""",
    re.IGNORECASE,
)
REDACTED = "[REDACTED]"
MIN_SECRET_CHARS = 4


def register_secret(value: str | None) -> None:
    """Never print ``value`` (an AK, SK, token or password) from now on."""
    if value and len(value) >= MIN_SECRET_CHARS:
        with _lock:
            _secrets.add(value)


def _mask_header(match: re.Match[str]) -> str:
    name = match.group(0)[: match.start("sep") - match.start(0)]
    if match.group("open") is not None:
        quote = match.group("open")
        return f"{name}{match.group('sep')}{quote}{REDACTED}{quote}"
    return f"{name}{match.group('sep')}{REDACTED}"


def redact(text: str) -> str:
    """``text`` with credential header values and every registered secret masked."""
    if not text:
        return text
    text = _AUTH_HEADER_RE.sub(_mask_header, text)
    # Longest first, so that a secret containing another one is masked whole.
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact_value(value: Any) -> Any:
    """``redact`` applied to every string inside ``value`` (dicts, lists, tuples); keys stay."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(item) for item in value]
    return value


def exception_text(error: BaseException) -> str:
    """``Type: message`` of an exception, one line, secrets masked."""
    message = " ".join(str(error).split())
    name = type(error).__name__
    return redact(f"{name}: {message}" if message else name)


def stack_trace(error: BaseException) -> str:
    """The formatted traceback of ``error`` (as Error Reporting reads it), secrets masked."""
    return redact("".join(traceback.format_exception(error)))


_default_stream: TextIO | None = None


def send_to(stream: TextIO | None) -> None:
    """Write log lines to ``stream`` instead of stdout (the CLI keeps stdout for results)."""
    global _default_stream
    _default_stream = stream


def log(severity: str, message: str, stream: TextIO | None = None, **fields: Any) -> None:
    """Write one JSON line: ``severity``, ``message``, ``time`` and the non-None ``fields``."""
    record: dict[str, Any] = {
        "severity": severity,
        "message": message,
        "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
    record.update({key: value for key, value in fields.items() if value is not None})
    # Values are made JSON-safe first (default=str), then redacted one by one, so a secret
    # that happens to be a JSON word ("true", "null") cannot break the line.
    safe = json.loads(json.dumps(record, default=str, ensure_ascii=False))
    line = json.dumps(redact_value(safe), ensure_ascii=False)
    out = stream or _default_stream or sys.stdout
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
