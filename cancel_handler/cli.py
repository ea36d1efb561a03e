"""``dli-cancel``: the operator's command line (SPEC section 6, docs/cli.md).

Commands: demo, serve, simulator (local runs); cancel (one direct cancel, or a bulk one);
send and results (the deployed function's topics); config check.

Every command prints its results on stdout (a table, or one JSON object per line with
``--json``) and everything else on stderr. Heavy modules (the handler, google-cloud-pubsub) are
imported by the command that needs them, so ``--help`` and ``config check`` stay fast.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import textwrap
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cancel_handler.cli_output import (
    EXIT_CODES_HELP,
    INTERRUPTED,
    OK,
    RETRY,
    USAGE,
    Progress,
    ResultPrinter,
    exit_code_for,
    say,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
JOB_KINDS = ("sql", "spark", "flink")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "simulator":
        from cancel_handler.local.simulator import main as simulator_main

        extra = [arg for arg in rest if arg != "--"]  # its own options, e.g. --cancel-delay
        return simulator_main(_simulator_args(args) + extra)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    command: Callable[[argparse.Namespace], int] = args.run
    try:
        return command(args)
    except KeyboardInterrupt:
        return INTERRUPTED


# -- the parser ------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = _new_parser(
        argparse.ArgumentParser,
        prog="dli-cancel",
        description="Cancel Data Lake Insight jobs, and operate the dli-cancel function.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _demo_parser(sub)
    _serve_parser(sub)
    _simulator_parser(sub)
    _cancel_parser(sub)
    _send_parser(sub)
    _results_parser(sub)
    _config_parser(sub)
    return parser


def _new_parser(factory: Callable[..., argparse.ArgumentParser], *args: Any, **kwargs: Any) -> Any:
    return factory(
        *args,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXIT_CODES_HELP,
        **kwargs,
    )


def _command(sub: Any, name: str, summary: str, run: Callable[..., int]) -> Any:
    description = textwrap.fill(summary, 88)
    parser = _new_parser(sub.add_parser, name, help=summary, description=description)
    parser.set_defaults(run=run)
    return parser


def _demo_parser(sub: Any) -> None:
    _command(
        sub,
        "demo",
        "Run the whole local stack end to end (DLI simulator, the function under "
        "functions-framework, the Pub/Sub emulator), then stop it again.",
        _demo,
    )


def _serve_parser(sub: Any) -> None:
    serve = _command(
        sub,
        "serve",
        "Run the function locally under functions-framework with the configuration in the "
        "environment (DLI_LOCAL_RUN=true prints results instead of publishing them).",
        _serve,
    )
    serve.add_argument(
        "--target",
        default="cancel_dli_job",
        choices=["cancel_dli_job", "cancel_dli_job_http"],
        help="entry point: the CloudEvent one (default) or the HTTP one",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on (%(default)s)")


def _simulator_parser(sub: Any) -> None:
    sim = _command(
        sub,
        "simulator",
        "Run the DLI simulator alone; it prints its base URL on the first line. More "
        "options: dli-cancel simulator -- --help.",
        _simulator_only,
    )
    sim.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    sim.add_argument("--port", type=int, default=0, help="port (default: a free one)")


def _cancel_parser(sub: Any) -> None:
    cancel = _command(
        sub,
        "cancel",
        "Cancel jobs directly with the configured DLI credentials (the function's "
        "environment variables) and print one result per job. Nothing is published.",
        _cancel,
    )
    cancel.add_argument("job_ids", nargs="*", metavar="JOB_ID", help="the job(s) to cancel")
    cancel.add_argument(
        "--queue",
        action="append",
        default=[],
        dest="queue_names",
        metavar="QUEUE",
        help="also cancel every active SQL job on this queue (repeatable): a bulk cancel",
    )
    cancel.add_argument("--project-id", help="DLI project (default: DLI_PROJECT_ID)")
    cancel.add_argument("--kind", choices=JOB_KINDS, default="sql", help="job kind (sql)")
    cancel.add_argument("--dry-run", action="store_true", help="plan and print, call no cancel API")
    _output_options(cancel)
    cancel.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    cancel.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also show the function's own log lines (JSON) on stderr",
    )


def _send_parser(sub: Any) -> None:
    send = _command(
        sub,
        "send",
        "Publish an event to the function's topic: built from the options, or a saved "
        "payload as it is (--file: a budget notification, an incident, a dead-lettered "
        "message). Prints the message id, or with --wait the event's results.",
        _send,
    )
    send.add_argument(
        "event_type",
        nargs="?",
        choices=["job-timeout", "budget-exceeded"],
        help="the event, and the topic it goes to (unless --topic)",
    )
    send.add_argument(
        "--job-id",
        action="append",
        default=[],
        dest="job_ids",
        metavar="JOB_ID",
        help="job to cancel (repeatable)",
    )
    send.add_argument(
        "--queue",
        action="append",
        default=[],
        dest="queue_names",
        metavar="QUEUE",
        help="budget-exceeded: every active SQL job on this queue (repeatable)",
    )
    send.add_argument("--project-id", help="DLI project (default: the function's)")
    send.add_argument("--kind", choices=JOB_KINDS, help="job kind (default: sql)")
    send.add_argument("--reason", help="why; echoed into the results")
    send.add_argument("--dry-run", action="store_true", help="ask for a dry run: cancel nothing")
    send.add_argument(
        "--file", metavar="F", help="publish this file's bytes as the message data ('-': stdin)"
    )
    send.add_argument(
        "--attr",
        action="append",
        default=[],
        metavar="K=V",
        help="a message attribute (repeatable), e.g. --attr schemaVersion=1.0",
    )
    send.add_argument("--topic", help="topic name or projects/P/topics/T (default: the event type)")
    send.add_argument(
        "--wait",
        action="store_true",
        help="then print the event's results, read from --subscription",
    )
    _subscription_option(send)
    send.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="--wait: give up after S seconds without a result (%(default)g)",
    )
    send.add_argument(
        "--settle",
        type=float,
        default=5.0,
        metavar="S",
        help="--wait: stop once no new result came for S seconds (%(default)g)",
    )
    _output_options(send)


def _results_parser(sub: Any) -> None:
    results = _command(
        sub,
        "results",
        "Print the result events waiting on a subscription, and acknowledge them: use a "
        "subscription of your own (deploy.yaml creates dli-cancel-results-ops).",
        _results,
    )
    _subscription_option(results)
    results.add_argument(
        "--follow", action="store_true", help="keep reading until Ctrl-C (or --limit)"
    )
    results.add_argument("--limit", type=int, metavar="N", help="stop after N results")
    _output_options(results)


def _config_parser(sub: Any) -> None:
    config = _new_parser(
        sub.add_parser,
        "config",
        help="Configuration commands.",
        description="Configuration commands.",
    )
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    check = _command(
        config_sub,
        "check",
        "Validate the configuration in the environment as the function does at start "
        "(credential files are read); list every problem.",
        _config_check,
    )
    check.add_argument("--json", action="store_true", help="one JSON object, for scripts")


def _subscription_option(parser: argparse.ArgumentParser) -> None:
    from cancel_handler.cli_pubsub import WATCH_SUBSCRIPTION

    parser.add_argument(
        "--subscription",
        default=WATCH_SUBSCRIPTION,
        metavar="S",
        help="subscription on the result topic: a name or projects/P/subscriptions/S (%(default)s)",
    )


def _output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="one JSON object per result (for scripts)"
    )


# -- local runs ------------------------------------------------------------------------------


def _simulator_args(args: argparse.Namespace) -> list[str]:
    return ["--host", args.host, "--port", str(args.port)]


def _simulator_only(args: argparse.Namespace) -> int:  # dispatched in main (extra options)
    raise AssertionError("unreachable")


def _demo(args: argparse.Namespace) -> int:
    from cancel_handler.local.demo import run

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


class _KeepSink:
    """Keeps the results for the CLI to print once (nothing is published)."""

    def __init__(self) -> None:
        self.results: list[Any] = []

    def publish(self, results: Sequence[Any]) -> None:
        self.results.extend(results)


def _cancel(args: argparse.Namespace) -> int:
    if not args.job_ids and not args.queue_names:
        say("cancel: name a JOB_ID or a --queue")
        return USAGE
    _route_function_logs(args.verbose)
    from cancel_handler import handler
    from cancel_handler.config import ConfigError, load_settings
    from cancel_handler.envelopes import Delivery

    try:
        settings = load_settings(local_run=True)
    except ConfigError as error:
        say(f"{error}")
        return USAGE
    sink = _KeepSink()
    progress = Progress("cancel", quiet=args.quiet)
    rt = handler.build_runtime(settings, sink=sink)
    rt.fanout = None  # a direct cancel runs here, never shared out over FANOUT_TOPIC
    rt.progress = progress
    event_id = f"cli-{uuid.uuid4()}"
    delivery = Delivery(json.dumps(_cancel_event(args)).encode(), {}, None, event_id, None, "http")
    try:
        handler.process(delivery, rt)
    except handler.RetryLater as error:
        say(f"not done, try again: {error}")
        return RETRY
    progress.finish()
    printer = ResultPrinter(args.json)
    for result in sink.results:
        printer.print(result.to_dict())
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


def _route_function_logs(verbose: bool) -> None:
    """The function's own JSON log lines repeat every result: on stderr only with
    --verbose, else dropped (results are printed once, on stdout)."""
    from cancel_handler import logs

    logs.send_to(sys.stderr if verbose else io.StringIO())


# -- Pub/Sub ---------------------------------------------------------------------------------


def _send(args: argparse.Namespace) -> int:
    from cancel_handler.cli_pubsub import send

    return send(args)


def _results(args: argparse.Namespace) -> int:
    from cancel_handler.cli_pubsub import results

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


if __name__ == "__main__":
    raise SystemExit(main())
