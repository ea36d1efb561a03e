"""``dli-cancel``'s arguments: every command, option and help text, and the exit codes in
every ``--help`` (docs/cli.md documents the same). Standard library only."""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable
from typing import Any

from cancel_handler.cli.output import EXIT_CODES_HELP

JOB_KINDS = ("sql", "spark", "flink")
WATCH_SUBSCRIPTION = "dli-cancel-results-ops"  # created by deploy.yaml for the operators


def build_parser() -> argparse.ArgumentParser:
    """Every command, option and help text; each command sets ``command_name``, which
    ``cli.main`` dispatches on."""
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
    _sweep_parser(sub)
    _approve_parser(sub)
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


def _command(sub: Any, name: str, summary: str, run: str) -> Any:
    description = textwrap.fill(summary, 88)
    parser = _new_parser(sub.add_parser, name, help=summary, description=description)
    parser.set_defaults(command_name=run)
    return parser


def _demo_parser(sub: Any) -> None:
    _command(
        sub,
        "demo",
        "Run the whole local stack end to end (DLI simulator, the function under "
        "functions-framework, the Pub/Sub emulator), then stop it again.",
        "demo",
    )


def _serve_parser(sub: Any) -> None:
    serve = _command(
        sub,
        "serve",
        "Run the function locally under functions-framework with the configuration in the "
        "environment (DLI_LOCAL_RUN=true prints results instead of publishing them).",
        "serve",
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
        "simulator",
    )
    sim.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    sim.add_argument("--port", type=int, default=0, help="port (default: a free one)")


def _cancel_parser(sub: Any) -> None:
    cancel = _command(
        sub,
        "cancel",
        "Cancel jobs directly with the configured DLI credentials (the function's "
        "environment variables) and print one result per job. Nothing is published.",
        "cancel",
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
        "send",
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
    _wait_options(send)


def _sweep_parser(sub: Any) -> None:
    sweep = _command(
        sub,
        "sweep",
        "One watchdog sweep in this process, with the configuration in the environment "
        "(RUNTIME_LIMITS, the DLI credentials, DRY_RUN): cancel the jobs past their limits and "
        "print a table of them; nothing is published (docs/watchdog.md).",
        "sweep",
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


def _approve_parser(sub: Any) -> None:
    approve = _command(
        sub,
        "approve",
        'Publish the approval of a proposal ({"event_type": "budget-exceeded", "approve": '
        "TOKEN}): the function cancels exactly the jobs of the proposal (docs/approval.md).",
        "approve",
    )
    approve.add_argument(
        "token", help="the approval_token of a proposal's results, or its approval_url"
    )
    approve.add_argument("--dry-run", action="store_true", help="approve as a dry run")
    approve.add_argument(
        "--topic", default="budget-exceeded", help="topic name or path (%(default)s)"
    )
    _wait_options(approve)


def _wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait",
        action="store_true",
        help="then print the results of what was published, read from --subscription",
    )
    _subscription_option(parser)
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="--wait: give up after S seconds without a result (%(default)g)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=5.0,
        metavar="S",
        help="--wait: stop once no new result came for S seconds (%(default)g)",
    )
    _output_options(parser)


def _results_parser(sub: Any) -> None:
    results = _command(
        sub,
        "results",
        "Print the result events waiting on a subscription, and acknowledge them: use a "
        "subscription of your own (deploy.yaml creates dli-cancel-results-ops).",
        "results",
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
        "config check",
    )
    check.add_argument("--json", action="store_true", help="one JSON object, for scripts")


def _subscription_option(parser: argparse.ArgumentParser) -> None:
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
