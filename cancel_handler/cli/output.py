"""What ``dli-cancel`` prints: one line per result (a table row for people, a JSON object for
scripts), progress on stderr, and the exit codes.

Standard library only: the function never imports this module, and the CLI imports it before
anything heavy.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

# Exit codes, the same for every command (docs/cli.md, `dli-cancel --help`).
OK = 0
FAILED = 1  # a result with a failure outcome, or Pub/Sub refused the request
USAGE = 2  # bad arguments or configuration: nothing was sent or cancelled
RETRY = 3  # not finished: a transient fault, or --wait saw no result in time
INTERRUPTED = 130  # Ctrl-C

EXIT_CODES_HELP = """\
exit codes:
  0    done; every result printed has a success outcome (cancelled, already_finished,
       dry_run, nothing_to_cancel, awaiting_approval)
  1    at least one result has a failure outcome (not_found, rejected, failed,
       not_allowed, invalid_event), or Pub/Sub refused the request (no such topic or
       subscription, permission denied)
  2    usage or configuration error: nothing was sent and nothing was cancelled
  3    not finished, try again: DLI or Pub/Sub unreachable, or --wait saw no result in time
  130  interrupted (Ctrl-C); `results --follow` ends with 0 on Ctrl-C"""

# Outcomes that mean "nothing is wrong" for an operator: the job is stopped, was already over,
# or nothing was asked of DLI on purpose. Everything else needs a look (SPEC section 3).
SUCCESS_OUTCOMES = frozenset(
    {"cancelled", "already_finished", "dry_run", "nothing_to_cancel", "awaiting_approval"}
)

COLUMNS = (
    ("TIME", 24),
    ("EVENT TYPE", 15),
    ("JOB", 36),
    ("OUTCOME", 17),
    ("ERROR CODE", 19),
    ("ATTEMPTS", 0),
)


def exit_code_for(results: Iterable[Mapping[str, Any]]) -> int:
    """``OK`` when every result's outcome is a success outcome, else ``FAILED``."""
    return OK if all(r.get("outcome") in SUCCESS_OUTCOMES for r in results) else FAILED


class ResultPrinter:
    """Prints results as they come: a table (header once) or one JSON object per line."""

    def __init__(self, as_json: bool, stream: TextIO | None = None) -> None:
        self.as_json = as_json
        self._stream = stream
        self._header_done = False
        self.printed: list[Mapping[str, Any]] = []

    def header(self) -> None:
        """The table header, once (nothing in JSON mode)."""
        if not self.as_json and not self._header_done:
            self._write(_row([name for name, _ in COLUMNS]))
            self._header_done = True

    def print(self, result: Mapping[str, Any]) -> None:
        self.printed.append(result)
        if self.as_json:
            self._write(json.dumps(result, ensure_ascii=False, separators=(",", ":")))
            return
        self.header()
        self._write(_row(table_cells(result)))

    def _write(self, line: str) -> None:
        out = self._stream or sys.stdout
        out.write(line + "\n")
        out.flush()


def table_cells(result: Mapping[str, Any]) -> list[str]:
    job = str(result.get("job_id") or "")
    if not job and result.get("queue_name"):
        job = f"queue {result['queue_name']}"
    return [
        str(result.get("handled_at") or "-"),
        str(result.get("event_type") or "-"),
        job or "-",
        str(result.get("outcome") or "-"),
        str(result.get("error_code") or "-"),
        str(result.get("attempts", "-")),
    ]


def _row(cells: list[str]) -> str:
    padded = [cell.ljust(width) for cell, (_, width) in zip(cells, COLUMNS, strict=True)]
    return "  ".join(padded).rstrip()


def say(message: str) -> None:
    """A line for the operator on stderr (stdout is kept for results)."""
    sys.stderr.write(f"dli-cancel: {message}\n")
    sys.stderr.flush()


class Progress:
    """``N/M results`` on stderr while a long operation runs: at most one line a second, and
    a last line when it ends. Silent for operations of one job, or when ``quiet``."""

    def __init__(self, what: str, quiet: bool = False, interval_s: float = 1.0) -> None:
        self._what = what
        self._quiet = quiet
        self._interval_s = interval_s
        self._total: int | None = None
        self._done = 0
        self._failures = 0
        self._last = 0.0
        self._started = time.monotonic()

    def planned(self, total: int) -> None:
        self._total = total
        if total > 1:
            self._emit(force=True)

    def settled(self, outcomes: Iterable[str]) -> None:
        for outcome in outcomes:
            self._done += 1
            self._failures += outcome not in SUCCESS_OUTCOMES
        self._emit(force=False)

    def finish(self) -> None:
        if self._done > 1 or (self._total or 0) > 1:
            self._emit(force=True)

    def _emit(self, force: bool) -> None:
        now = time.monotonic()
        if self._quiet or ((self._total or 0) <= 1 and self._done <= 1):
            return
        if not force and now - self._last < self._interval_s:
            return
        self._last = now
        total = "?" if self._total is None else str(self._total)
        say(
            f"{self._what}: {self._done}/{total} results, {self._failures} not successful, "
            f"{now - self._started:.1f} s"
        )
