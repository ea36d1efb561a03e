"""``dli-cancel``: the operator's command line (docs/cli.md).

Commands: demo, serve, simulator (local runs); cancel (one direct cancel, or a bulk one);
send, approve and results (the deployed function's topics); sweep (one watchdog sweep here);
config check.

Every command prints its results on stdout (a table, or one JSON object per line with
``--json``) and everything else on stderr. Heavy modules (the handler, google-cloud-pubsub) are
imported by the command that needs them, so ``--help`` and ``config check`` stay fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cancel_handler.cli.output import (
    INTERRUPTED,
    OK,
    RETRY,
    USAGE,
    Progress,
    ResultPrinter,
    exit_code_for,
    say,
)
from cancel_handler.cli.parser import build_parser

REPO_ROOT = Path(__file__).resolve().parents[2]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "simulator":
        from dli_simulator import main as simulator_main

        extra = [arg for arg in rest if arg != "--"]  # its own options, e.g. --cancel-delay
        return simulator_main(_simulator_args(args) + extra)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    command = _COMMANDS[args.command_name]
    try:
        return command(args)
    except KeyboardInterrupt:
        return INTERRUPTED


# -- local runs ------------------------------------------------------------------------------


def _simulator_args(args: argparse.Namespace) -> list[str]:
    return ["--host", args.host, "--port", str(args.port)]


def _demo(args: argparse.Namespace) -> int:
    from devstack.demo import run

    return run()


def _serve(args: argparse.Namespace) -> int:
    source = REPO_ROOT / "main.py"
    if not source.is_file():
        say(f"serve: {source} not found; run from a source checkout (pip install -e .)")
        return USAGE
    command = [
        sys.executable,
        "-m",
        "functions_framework",
        "--target",
        args.target,
        "--source",
        str(source),
        "--host",
        args.host,
        "--port",
        str(args.port),
    ]
    os.execv(sys.executable, command)


# -- cancel ----------------------------------------------------------------------------------


def _cancel(args: argparse.Namespace) -> int:
    if not args.job_ids and not args.queue_names:
        say("cancel: name a JOB_ID or a --queue")
        return USAGE
    from cancel_handler import handler
    from cancel_handler.config import ConfigError, load_settings
    from cancel_handler.envelopes import Delivery
    from cancel_handler.errors import RetryLater
    from cancel_handler.results import MemorySink
    from cancel_handler.runtime import build_runtime

    try:
        settings = load_settings(local_run=True)
    except ConfigError as error:
        say(f"{error}")
        return USAGE
    _route_function_logs(args.verbose, settings.log_level)
    # A direct cancel is the operator's own decision: it never waits for an approval.
    settings = dataclasses.replace(settings, budget_action="cancel")
    sink = MemorySink()  # printed below, once; nothing is published
    progress = Progress("cancel", quiet=args.quiet)
    rt = build_runtime(settings, sink=sink)
    rt.fanout = None  # a direct cancel runs here, never shared out over FANOUT_TOPIC
    rt.progress = progress
    event_id = f"cli-{uuid.uuid4()}"
    delivery = Delivery(json.dumps(_cancel_event(args)).encode(), {}, None, event_id, None, "http")
    try:
        handler.process(delivery, rt)
    except RetryLater as error:
        say(f"not done, try again: {error}")
        return RETRY
    progress.finish()
    printer = ResultPrinter(args.json)
    for result in sink.results:
        printer.print(result)
    return exit_code_for(printer.printed)


def _cancel_event(args: argparse.Namespace) -> dict[str, Any]:
    """One job: a job-timeout event. Several, or queues: a budget-exceeded event, the event
    that names many jobs (its results carry that event type)."""
    event: dict[str, Any] = {"job_kind": args.kind, "reason": "dli-cancel cancel"}
    if len(args.job_ids) == 1 and not args.queue_names:
        event.update(event_type="job-timeout", job_id=args.job_ids[0])
    else:
        event["event_type"] = "budget-exceeded"
        if args.job_ids:
            event["job_ids"] = args.job_ids
        if args.queue_names:
            event["queue_names"] = args.queue_names
    if args.dry_run:
        event["dry_run"] = True
    if args.project_id:
        event["project_id"] = args.project_id
    return event


def _route_function_logs(verbose: bool, level: str) -> None:
    """The function's own JSON log lines repeat every result: on stderr (at LOG_LEVEL) only
    with --verbose, else dropped (results are printed once, on stdout)."""
    from cancel_handler import logs

    stream = sys.stderr if verbose else open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
    logs.setup(level, stream=stream)


# -- Pub/Sub ---------------------------------------------------------------------------------


def _send(args: argparse.Namespace) -> int:
    from cancel_handler.cli.pubsub import send

    return send(args)


def _sweep(args: argparse.Namespace) -> int:
    from cancel_handler.cli.sweep import run

    return run(args)


def _approve(args: argparse.Namespace) -> int:
    from cancel_handler.cli.pubsub import approve

    return approve(args)


def _results(args: argparse.Namespace) -> int:
    from cancel_handler.cli.pubsub import results

    return results(args)


# -- config check ----------------------------------------------------------------------------


def _config_check(args: argparse.Namespace) -> int:
    from cancel_handler.config import ConfigError, load_settings

    try:
        settings = load_settings()
    except ConfigError as error:
        if args.json:
            print(json.dumps({"ok": False, "problems": error.problems}))
        else:
            say("configuration error:")
            for problem in error.problems:
                sys.stderr.write(f"  - {problem}\n")
        return USAGE
    summary = {
        "dli_endpoint": settings.dli_endpoint,
        "auth": settings.auth_mode,
        "credentials_file": settings.credentials_file,
        "default_project_id": settings.default_project_id,
        "allowed_project_ids": sorted(settings.allowed_project_ids),
        "result_topic": settings.result_topic or "(none: results printed, DLI_LOCAL_RUN)",
        "dry_run": settings.dry_run,
        "budget_targets": sorted(settings.budget_targets),
        "fanout_topic": settings.fanout_topic,
    }
    if args.json:
        print(json.dumps({"ok": True, "settings": summary}))
    else:
        for key, value in summary.items():
            shown = ", ".join(value) if isinstance(value, list) else value
            print(f"{key:20} {'-' if shown in (None, '') else shown}")
        say("configuration OK")
    return OK


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "demo": _demo,
    "serve": _serve,
    "cancel": _cancel,
    "send": _send,
    "sweep": _sweep,
    "approve": _approve,
    "results": _results,
    "config check": _config_check,
}
_parser = build_parser  # the tests' name for it


if __name__ == "__main__":
    raise SystemExit(main())
