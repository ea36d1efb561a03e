"""The watchdog's policy (SPEC 7): runtime limits per queue and job kind, a job's runtime, the
tags that change a job's limit, and which listed jobs are over their limit.

Pure code, standard library only and no import from this package: ``config.py`` parses
``RUNTIME_LIMITS`` with ``parse_runtime_limits`` at start, and the sweep's plan hands the jobs
it listed to ``over_limit``.

Decisions the spec leaves open, taken here:
- Limits are whole seconds (``3600`` or ``3600.0``; ``90.5`` is refused), like the runtimes
  they are compared with. A job is over its limit when its runtime, in whole seconds (rounded
  down), is greater than the limit: the reason "ran R s, limit L s" then always has R > L.
- Queue names are DLI queue names, compared lower-case (DLI is case-insensitive about them).
  A queue named with an empty object (``{"adhoc": {}}``) has no limit at all: the way to keep
  one queue out of a ``"*"`` rule.
- A job's runtime is DLI's ``duration`` (ms) when it is a positive number; DLI reports 0 (or
  nothing) for some running jobs, which must not read as "just started". Otherwise it is now
  minus ``start_time``, else ``create_time`` (ms epoch). A start in the future (clock skew)
  is a runtime of 0, never negative. A start before 2000-01-01 is not a millisecond epoch
  (seconds sent by mistake, a placeholder 0): the runtime is unknown. A job whose runtime is
  unknown is never cancelled (the sweep logs it): the watchdog does not guess.
- Tags are read on every kind whose listing carries them (SPEC names SQL; DLI also tags
  Flink and Spark jobs). ``dli-cancel=exempt`` (value case-insensitive) wins over everything.
  ``dli-cancel-max-runtime-s=N`` replaces the limit of a job whose queue and kind have one
  (it never makes a job on an unlimited queue swept: such jobs are not even listed); N must be
  a positive whole number of seconds in digits, otherwise the tag is ignored, the queue's limit
  applies and the sweep logs a note naming the job. Tag keys are compared exactly.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cancel_handler.jsonbody import kind_of

KINDS = ("sql", "spark", "flink")
ANY_QUEUE = "*"
EXEMPT_TAG = "dli-cancel"
EXEMPT_VALUE = "exempt"
MAX_RUNTIME_TAG = "dli-cancel-max-runtime-s"
# 2000-01-01T00:00:00Z in ms: an earlier "start" is no millisecond epoch a running job has.
EARLIEST_START_MS = 946_684_800_000

_QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_]{0,127}")
_TAG_SECONDS = re.compile(r"[0-9]{1,12}")
_SHOWN_CHARS = 40


class LimitsError(ValueError):
    """``RUNTIME_LIMITS`` is not a valid policy; ``problems`` names each issue."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True)
class RuntimeLimits:
    """Limits in whole seconds: per named queue (lower-case), and ``default`` for every queue
    not named (the ``"*"`` rule). A kind absent from a queue's limits is never swept there."""

    by_queue: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    default: Mapping[str, int] = field(default_factory=dict)

    def limit_for(self, queue_name: str, kind: str) -> int | None:
        queue = queue_name.lower()
        limits = self.by_queue.get(queue, self.default)
        return limits.get(kind)

    def kinds_for(self, queue_name: str) -> tuple[str, ...]:
        """The kinds with a limit on this queue, in ``KINDS`` order."""
        return tuple(k for k in KINDS if self.limit_for(queue_name, k) is not None)

    @property
    def limited_queues(self) -> tuple[str, ...]:
        """The named queues with at least one limit, sorted."""
        return tuple(sorted(q for q, limits in self.by_queue.items() if limits))

    @property
    def named_queues(self) -> frozenset[str]:
        """Every named queue, with limits or without (those the ``"*"`` rule does not cover)."""
        return frozenset(self.by_queue)

    def __bool__(self) -> bool:
        return bool(self.default) or any(self.by_queue.values())


def parse_runtime_limits(raw: str | None) -> RuntimeLimits:
    """``RUNTIME_LIMITS`` -> the policy; unset or blank is no limit at all. Raises
    ``LimitsError`` naming every problem (bad JSON, a bad queue name, an unknown kind, a limit
    that is not a positive, finite, whole number of seconds)."""
    if raw is None or not raw.strip():
        return RuntimeLimits()
    problems: list[str] = []
    try:
        parsed = json.loads(raw, object_pairs_hook=_pairs)
    except ValueError as error:
        raise LimitsError([f"RUNTIME_LIMITS is not valid JSON: {str(error)[:100]}"]) from None
    if not isinstance(parsed, _Pairs):
        raise LimitsError(
            [
                'RUNTIME_LIMITS must be a JSON object of queue name (or "*") -> '
                '{"sql"|"spark"|"flink": seconds}, e.g. {"etl": {"sql": 3600}}'
            ]
        )
    rules: dict[str, Mapping[str, int]] = {}
    for key, spec in parsed.pairs:
        queue = _queue_key(key, problems)
        if queue is None:
            continue
        where = f"RUNTIME_LIMITS[{_show(key)}]"
        if queue in rules:
            problems.append(f"{where} appears more than once (queue names ignore case)")
            continue
        rules[queue] = _kind_limits(where, spec, problems)
    if problems:
        raise LimitsError(problems)
    default = rules.pop(ANY_QUEUE, {})
    return RuntimeLimits(by_queue=rules, default=default)


class _Pairs:
    """A JSON object kept as its list of pairs, so repeated keys can be reported."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        self.pairs = pairs


def _pairs(pairs: list[tuple[str, Any]]) -> _Pairs:
    return _Pairs(pairs)


def _queue_key(key: str, problems: list[str]) -> str | None:
    if key == ANY_QUEUE:
        return key
    if not _QUEUE_NAME.fullmatch(key) or key.isdigit():
        problems.append(
            f"RUNTIME_LIMITS has {_show(key)}, which is not a DLI queue name (1-128 letters, "
            'digits and underscores, not starting with an underscore, not only digits) nor "*"'
        )
        return None
    return key.lower()


def _kind_limits(where: str, spec: Any, problems: list[str]) -> dict[str, int]:
    if not isinstance(spec, _Pairs):
        problems.append(
            f'{where} must be an object of job kind -> seconds, e.g. {{"sql": 3600}}, '
            f"got {_kind_of(spec)}"
        )
        return {}
    limits: dict[str, int] = {}
    for kind, value in spec.pairs:
        here = f"{where}[{_show(kind)}]"
        if kind not in KINDS:
            problems.append(f"{here}: unknown job kind (use {', '.join(KINDS)})")
            continue
        if kind in limits:
            problems.append(f"{here} appears more than once")
            continue
        seconds = _seconds(here, value, problems)
        if seconds is not None:
            limits[kind] = seconds
    return limits


def _seconds(where: str, value: Any, problems: list[str]) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.append(f"{where} must be a number of seconds, got {_kind_of(value)}")
        return None
    if isinstance(value, float) and not math.isfinite(value):
        problems.append(f"{where} must be a finite number of seconds, got {value}")
        return None
    if value <= 0:
        problems.append(f"{where} must be a positive number of seconds, got {value}")
        return None
    if isinstance(value, float) and not value.is_integer():
        problems.append(f"{where} must be a whole number of seconds, got {value}")
        return None
    return int(value)


# -- runtime ---------------------------------------------------------------------------------


def runtime_seconds(duration_ms: Any, start_ms: Any, now_ms: float) -> int | None:
    """Whole seconds a job has run: DLI's ``duration`` when it is a positive number, else
    ``now_ms`` minus the start (0 for a start in the future); ``None`` when neither is known.
    Both fields are milliseconds, as DLI reports them; numbers sent as strings of digits are
    read too."""
    duration = _number(duration_ms)
    if duration is not None and duration > 0:
        return int(duration // 1000)
    start = _number(start_ms)
    if start is None or start < EARLIEST_START_MS:
        return None
    return int(max(0.0, now_ms - start) // 1000)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


# -- tags ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TagRule:
    """What a job's tags say: exempt, a limit of its own, or a malformed override (a note)."""

    exempt: bool = False
    max_runtime_s: int | None = None
    note: str | None = None


def tag_rule(tags: Iterable[tuple[str, str]]) -> TagRule:
    """Read the ``dli-cancel`` tags from ``(key, value)`` pairs (the first of a key counts)."""
    seen: dict[str, str] = {}
    for key, value in tags:
        seen.setdefault(key, value)
    if seen.get(EXEMPT_TAG, "").strip().lower() == EXEMPT_VALUE:
        return TagRule(exempt=True)
    if MAX_RUNTIME_TAG not in seen:
        return TagRule()
    raw = seen[MAX_RUNTIME_TAG].strip()
    if _TAG_SECONDS.fullmatch(raw) and int(raw) > 0:
        return TagRule(max_runtime_s=int(raw))
    return TagRule(
        note=f"tag {MAX_RUNTIME_TAG}={_show(raw)} is not a positive whole number of seconds: "
        "ignored, the queue's limit applies"
    )


def tag_pairs(raw: Any) -> tuple[tuple[str, str], ...]:
    """DLI's ``tags`` (``[{"key": k, "value": v}, ...]``) as pairs; anything else is no tag."""
    if not isinstance(raw, list):
        return ()
    pairs = []
    for tag in raw:
        if isinstance(tag, Mapping):
            key, value = tag.get("key"), tag.get("value")
            if isinstance(key, str):
                pairs.append((key, value if isinstance(value, str) else ""))
    return tuple(pairs)


# -- the decision ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ListedJob:
    """An active job as a listing reported it; ``duration_ms`` and ``start_ms`` as DLI sent
    them (``start_ms``: ``start_time``, else Spark's or Flink's ``create_time``)."""

    job_id: str
    kind: str
    queue_name: str
    duration_ms: Any = None
    start_ms: Any = None
    tags: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class OverLimit:
    job: ListedJob
    runtime_s: int
    limit_s: int

    @property
    def reason(self) -> str:
        return f"ran {self.runtime_s} s, limit {self.limit_s} s"

    @property
    def context(self) -> dict[str, Any]:
        return {
            "runtime_s": self.runtime_s,
            "limit_s": self.limit_s,
            "queue_name": self.job.queue_name,
        }


@dataclass(frozen=True)
class SweepDecision:
    """Which listed jobs to cancel. ``notes`` are log lines (a malformed tag, a runtime that
    cannot be known); ``exempt`` the ids of jobs the ``dli-cancel=exempt`` tag kept."""

    over_limit: tuple[OverLimit, ...]
    jobs_seen: int
    exempt: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def over_limit(jobs: Iterable[ListedJob], limits: RuntimeLimits, now_ms: float) -> SweepDecision:
    """The jobs whose runtime is greater than their limit, in the order listed (each job once).
    A job on a queue and kind without a limit, an exempt job, a job within its limit and a job
    whose runtime is unknown are never in it."""
    over: list[OverLimit] = []
    exempt: list[str] = []
    notes: list[str] = []
    seen: set[tuple[str, str]] = set()
    for job in jobs:
        if (job.kind, job.job_id) in seen:
            continue
        seen.add((job.kind, job.job_id))
        limit = limits.limit_for(job.queue_name, job.kind)
        if limit is None:
            continue
        rule = tag_rule(job.tags)
        if rule.exempt:
            exempt.append(job.job_id)
            continue
        if rule.note:
            notes.append(f"{job.kind} job {job.job_id}: {rule.note}")
        runtime = runtime_seconds(job.duration_ms, job.start_ms, now_ms)
        if runtime is None:
            notes.append(
                f"{job.kind} job {job.job_id} on queue {job.queue_name}: no usable duration, "
                "start_time or create_time: its runtime is unknown, not cancelled"
            )
            continue
        limit = rule.max_runtime_s or limit
        if runtime > limit:
            over.append(OverLimit(job, runtime, limit))
    return SweepDecision(tuple(over), len(seen), tuple(exempt), tuple(notes))


def _show(value: Any) -> str:
    if isinstance(value, str):
        text = ascii(value[:_SHOWN_CHARS])
        return text + "..." if len(value) > _SHOWN_CHARS else text
    return _kind_of(value)


def _kind_of(value: Any) -> str:
    return "an object" if isinstance(value, _Pairs) else kind_of(value)
