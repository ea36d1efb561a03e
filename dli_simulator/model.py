"""Shared types of the DLI simulator: faults, seeded jobs, request records, DLI errors,
responses.

Test and demo code only: never imported on the function's path.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

PROJECT_ID_RE = re.compile(r"^[0-9a-f]{32}$")

# Error codes the simulator answers with (see the README table / the module docstring).
PARAM_ERROR = "DLI.0001"  # 400: bad parameter, bad project id, bad body
NOT_FOUND = "DLI.0002"  # 400: unknown SQL job / Flink job
NOT_SUPPORTED = "DLI.0007"  # 400: cancel of a job already in a terminal state
USER_AUTH_ERROR = "DLI.0013"  # 401: no credentials at all; token scoped to another project
SERVICE_AUTH_ERROR = "DLI.0014"  # 401: AK/SK problems (unknown AK, bad signature, stale date)
TOKEN_ERROR = "DLI.0015"  # 401: unknown, expired or revoked X-Auth-Token
NO_RESOURCE = "DLI.0023"  # 404: unknown Spark batch
SERVER_ERROR = "DLI.0999"  # injected 5xx faults
THROTTLED = "APIGW.0308"  # injected 429 faults
NO_SUCH_API = "APIGW.0101"  # 404: path not served


class ApiError(Exception):
    """A DLI error answer: ``{"error_code": code, "error_msg": msg}`` with ``status``."""

    def __init__(self, status: int, code: str, msg: str) -> None:
        super().__init__(f"{status} {code}: {msg}")
        self.status = status
        self.code = code
        self.msg = msg


ACTIVE_STATUS = {"sql": "RUNNING", "spark": "running", "flink": "job_running"}
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class SeedError(ValueError):
    """A ``--seed`` text or an admin ``/_sim/jobs`` body that does not describe jobs."""


@dataclass(frozen=True)
class Seed:
    """``count`` jobs of ``kind`` on ``queue_name`` that started ``age_s`` seconds ago, in
    ``status`` (default: running), with ``tags`` (SQL jobs only, as DLI reports them)."""

    kind: str
    queue_name: str
    age_s: float = 0.0
    count: int = 1
    tags: tuple[tuple[str, str], ...] = ()
    status: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ACTIVE_STATUS:
            raise SeedError(f"unknown kind {self.kind!r} (sql, spark, flink)")
        if not self.queue_name:
            raise SeedError("a seed needs a queue name")
        if not 0 <= self.age_s < 10 * 365 * 86400:
            raise SeedError(f"age must be between 0 and 10 years, got {self.age_s} s")
        if not 1 <= self.count <= 100_000:
            raise SeedError(f"count must be between 1 and 100000, got {self.count}")
        if self.tags and self.kind != "sql":
            raise SeedError("tags are for SQL jobs")

    @property
    def job_status(self) -> str:
        return self.status or ACTIVE_STATUS[self.kind]

    @classmethod
    def parse(cls, text: str) -> Seed:
        """``KIND:QUEUE:AGE[:COUNT[:TAGS]]``: ``sql:etl:2h``, ``flink:stream:90m:3``,
        ``sql:etl:3h:1:dli-cancel=exempt,team=bi``. AGE is seconds, or a number with s, m,
        h or d."""
        parts = text.split(":")
        if not 3 <= len(parts) <= 5:
            raise SeedError(f"--seed {text!r}: expected KIND:QUEUE:AGE[:COUNT[:TAGS]]")
        count = parts[3] if len(parts) > 3 else "1"
        if not count.isdigit():
            raise SeedError(f"--seed {text!r}: COUNT must be a whole number")
        tags = _tags(parts[4]) if len(parts) > 4 else ()
        return cls(parts[0], parts[1], _age(parts[2]), int(count), tags)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Seed:
        """An admin ``POST /_sim/jobs`` body: ``kind``, ``queue_name``, ``count``, ``status``,
        ``age_s``, ``tags`` (an object of key -> value)."""
        tags = data.get("tags") or {}
        if not isinstance(tags, dict):
            raise SeedError("tags must be an object of key -> value")
        status = data.get("status")
        return cls(
            kind=str(data.get("kind", "sql")),
            queue_name=str(data.get("queue_name", "default")),
            age_s=float(data.get("age_s", 0)),
            count=int(data.get("count", 1)),
            tags=tuple((str(k), str(v)) for k, v in tags.items()),
            status=None if status is None else str(status),
        )

    def describe(self) -> str:
        tags = f" tagged {','.join(f'{k}={v}' for k, v in self.tags)}" if self.tags else ""
        return (
            f"{self.count} {self.kind} job(s) on queue {self.queue_name}, "
            f"started {self.age_s:g} s ago{tags}"
        )


def _age(text: str) -> float:
    unit = text[-1:] if text[-1:] in _AGE_UNITS else "s"
    number = text[:-1] if text[-1:] in _AGE_UNITS else text
    try:
        return float(number) * _AGE_UNITS[unit]
    except ValueError:
        raise SeedError(
            f"AGE must be seconds or a number with s, m, h or d, got {text!r}"
        ) from None


def _tags(text: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SeedError(f"TAGS must be k=v[,k=v], got {text!r}")
        pairs.append((key, value))
    return tuple(pairs)


@dataclass
class Fault:
    """Applied to the next ``count`` requests that match ``path_contains`` and ``method``.

    ``delay_s`` first; then ``drop`` closes the connection without an answer, or ``status``
    (+ ``Retry-After``) is answered with ``body`` (sent as it is, as ``content_type``, default
    ``text/html``: any bytes, or JSON of any type and shape) or else a DLI-style error JSON
    with ``error_code`` (default by status: 400 ``DLI.0001``, 401 ``DLI.0013``, 403
    ``DLI.0003``, 404 ``DLI.0023``, 429 ``APIGW.0308``, 5xx ``DLI.0999``, others
    ``DLI.0001``). A fault with only a delay lets the
    request continue normally afterwards. ``body`` or ``retry_after`` without ``status`` answer
    502 / 503.
    """

    count: int = 1
    status: int | None = None
    retry_after: str | None = None
    delay_s: float = 0.0
    drop: bool = False
    body: str | None = None
    content_type: str | None = None
    error_code: str | None = None
    path_contains: str | None = None
    method: str | None = None

    def matches(self, method: str, path: str) -> bool:
        if self.count <= 0:
            return False
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self.path_contains is None or self.path_contains in path

    def answer_status(self) -> int | None:
        """The status to answer, or ``None`` when the request should continue normally."""
        if self.status is not None:
            return self.status
        if self.body is not None:
            return 502
        if self.retry_after is not None:
            return 503
        return None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        fault = cls(**data)
        if fault.retry_after is not None:
            fault.retry_after = str(fault.retry_after)
        return fault


class Headers(dict[str, str]):
    """Request headers as received (original names), looked up case-insensitively."""

    def _key(self, name: object) -> object:
        if isinstance(name, str) and not super().__contains__(name):
            lowered = name.lower()
            for key in self:
                if key.lower() == lowered:
                    return key
        return name

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(str(self._key(name)))

    def __contains__(self, name: object) -> bool:
        return super().__contains__(self._key(name))

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(str(self._key(name)), default)


@dataclass
class RequestRecord:
    """One request the simulator received (admin ``/_sim/`` requests excepted).

    ``status`` is the status answered: 0 when the connection was dropped, ``None`` while the
    request is still being handled. ``auth`` is the kind of credentials presented
    (``aksk`` | ``token`` | ``none``), whether valid or not.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: Headers
    auth: str
    access_key: str | None
    status: int | None = None
    query_pairs: list[tuple[str, str]] = field(default_factory=list)
    body: str = ""
    request_id: str = ""
    received_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["headers"] = dict(self.headers)
        data["query_pairs"] = [list(pair) for pair in self.query_pairs]
        return data


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False

    @classmethod
    def json(cls, status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
        all_headers = {"Content-Type": "application/json;charset=UTF-8", **(headers or {})}
        return cls(status, json.dumps(payload).encode("utf-8"), all_headers)

    @classmethod
    def error(cls, error: ApiError) -> Response:
        return cls.json(error.status, {"error_code": error.code, "error_msg": error.msg})
