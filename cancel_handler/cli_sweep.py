"""``dli-cancel sweep``: one watchdog sweep (SPEC 7) in this process, with the configuration in
the environment (``RUNTIME_LIMITS``, the DLI credentials, ``DRY_RUN``...).

It runs the function's own handler on a sweep event, so it lists, decides and cancels exactly
as the deployed function would, but nothing is published and nothing is fanned out: stdout gets
a table of what was cancelled (or, with ``--dry-run``, would be), stderr the progress (one line
per job as it is settled) and the function's log lines.

Exit codes: 0 every job over its limit was cancelled (or nothing was over); 1 some cancel was
refused or failed; 2 the configuration or the options are wrong; 3 DLI could not be reached
for now (some queue could not be listed): run it again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:  # the handler and its models are imported when a sweep runs, not for --help
    from cancel_handler.results import Message

OK, FAILED, USAGE, RETRY = 0, 1, 2, 3
COLUMNS = ("JOB", "KIND", "QUEUE", "RAN_S", "LIMIT_S", "OUTCOME", "ERROR")


def add_parser(sub: Any) -> None:
    sweep = sub.add_parser(
        "sweep",
        help="one watchdog sweep: cancel the jobs past their RUNTIME_LIMITS, print a table",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sweep.add_argument(
        "--dry-run", action="store_true", help="list and decide, cancel nothing (DRY_RUN too)"
    )
    sweep.add_argument("--project-id", help="DLI project (default: DLI_PROJECT_ID)")
    sweep.add_argument(
        "--queue",
        action="append",
        default=[],
        dest="queue_names",
        metavar="QUEUE",
        help="sweep only this queue (repeatable; default: every queue with a limit)",
    )
    sweep.add_argument(
        "--json", action="store_true", help="one result event per line instead of the table"
    )


class _Progress:
    """A result sink that keeps every result and says one line about each on ``stream`` as
    it is settled (nothing is published)."""

    def __init__(self, stream: TextIO) -> None:
        self.results: list[dict[str, Any]] = []
        self._stream = stream
        self._lock = threading.Lock()

    def start(self, messages: Sequence[Message]) -> Callable[[], None]:
        for message in messages:
            result = json.loads(message.data)
            with self._lock:
                self.results.append(result)
            subject = result["job_id"] or f"queue {result.get('queue_name') or '*'}"
            why = f" ({result['reason']})" if result.get("reason") else ""
            print(f"{subject}: {result['outcome']}{why}", file=self._stream, flush=True)
        return lambda: None

    def warm_up(self) -> None:
        return None


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    from cancel_handler import logs
    from cancel_handler.config import ConfigError, load_settings
    from cancel_handler.envelopes import Delivery
    from cancel_handler.errors import RetryLater
    from cancel_handler.handler import process
    from cancel_handler.outcomes import Outcome
    from cancel_handler.runtime import build_runtime

    out, err = out or sys.stdout, err or sys.stderr
    logs.send_to(err)
    try:
        settings = load_settings(local_run=True)
    except ConfigError as error:
        print(f"dli-cancel sweep: {error}", file=err)
        return USAGE
    logs.setup(settings.log_level)  # still on stderr
    if not settings.runtime_limits:
        print("dli-cancel sweep: RUNTIME_LIMITS sets no limit: nothing to sweep", file=err)
    progress = _Progress(err)
    rt = dataclasses.replace(build_runtime(settings, sink=progress), fanout=None)
    event: dict[str, Any] = {"event_type": "job-timeout", "sweep": True, "dry_run": args.dry_run}
    if args.project_id:
        event["project_id"] = args.project_id
    if args.queue_names:
        event["queue_names"] = args.queue_names
    delivery = Delivery(json.dumps(event).encode(), {}, None, f"cli-{uuid.uuid4()}", None, "http")
    mode = "dry run: nothing is cancelled" if args.dry_run or settings.dry_run else "cancelling"
    print(f"dli-cancel sweep: listing the queues with a limit ({mode})", file=err)
    retry: RetryLater | None = None
    try:
        process(delivery, rt)
    except RetryLater as error:
        retry = error
    results = progress.results
    _print(results, out, as_json=args.json)
    if retry is not None:
        print(f"dli-cancel sweep: not finished, run it again: {retry}", file=err)
        return RETRY
    if any(r["outcome"] == "invalid_event" for r in results):
        return USAGE
    return OK if all(Outcome(r["outcome"]).good for r in results) else FAILED


def _print(results: list[dict[str, Any]], out: TextIO, as_json: bool) -> None:
    if as_json:
        for result in results:
            print(json.dumps(result), file=out)
        return
    if not results:
        print("no job is over its limit", file=out)
        return
    rows = [COLUMNS] + [_row(r) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip(), file=out)


def _row(result: dict[str, Any]) -> tuple[str, ...]:
    from cancel_handler.outcomes import Outcome

    context = result.get("context") or {}
    return (
        result["job_id"] or "-",
        result["job_kind"],
        str(result.get("queue_name") or context.get("queue_name") or "-"),
        str(context.get("runtime_s", "-")),
        str(context.get("limit_s", "-")),
        result["outcome"],
        "" if Outcome(result["outcome"]).good else str(result.get("error_code") or "-"),
    )
