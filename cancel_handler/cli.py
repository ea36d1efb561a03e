"""``dli-cancel``: demo, serve, cancel, send, sweep, approve, simulator (SPEC section 6)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "simulator":
        from dli_simulator import main as simulator_main

        return simulator_main(rest + _simulator_args(args))
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    commands = {
        "demo": _demo,
        "serve": _serve,
        "cancel": _cancel,
        "send": _send,
        "sweep": _sweep,
        "approve": _approve,
    }
    command: Any = commands[args.command]
    result: int = command(args)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dli-cancel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="the whole local stack, end to end")
    serve = sub.add_parser("serve", help="run the function locally under functions-framework")
    serve.add_argument(
        "--target", default="cancel_dli_job", choices=["cancel_dli_job", "cancel_dli_job_http"]
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    cancel = sub.add_parser("cancel", help="cancel one job with the configured credentials")
    cancel.add_argument("job_id")
    cancel.add_argument("--project-id")
    cancel.add_argument("--kind", choices=["sql", "spark", "flink"], default="sql")
    cancel.add_argument("--dry-run", action="store_true")
    send = sub.add_parser("send", help="publish an event to Pub/Sub")
    send.add_argument("event_type", choices=["job-timeout", "budget-exceeded"])
    send.add_argument("--job-id", action="append", default=[], dest="job_ids")
    send.add_argument("--queue", action="append", default=[], dest="queue_names")
    send.add_argument("--project-id")
    send.add_argument("--kind", choices=["sql", "spark", "flink"])
    send.add_argument("--reason")
    send.add_argument("--dry-run", action="store_true")
    send.add_argument("--topic", help="topic name or path (default: the event type)")
    from cancel_handler import cli_sweep

    cli_sweep.add_parser(sub)
    approve = sub.add_parser(
        "approve",
        help="publish the approval of a proposal (BUDGET_ACTION=propose)",
        description='Publish {"event_type": "budget-exceeded", "approve": TOKEN}: the '
        "function cancels exactly the jobs of the proposal (docs/approval.md).",
    )
    approve.add_argument(
        "token", help="the approval_token of a proposal's results, or its approval_url"
    )
    approve.add_argument("--dry-run", action="store_true", help="approve as a dry run")
    approve.add_argument(
        "--topic", help="topic name or path (default: budget-exceeded)", default="budget-exceeded"
    )
    sim = sub.add_parser("simulator", help="run the DLI simulator alone")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=0)
    return parser


def _simulator_args(args: argparse.Namespace) -> list[str]:
    return ["--host", args.host, "--port", str(args.port)]


def _demo(args: argparse.Namespace) -> int:
    from devstack.demo import run

    return run()


def _serve(args: argparse.Namespace) -> int:
    source = REPO_ROOT / "main.py"
    if not source.is_file():
        print(
            f"dli-cancel serve: {source} not found; run from a source checkout (pip install -e .)",
            file=sys.stderr,
        )
        return 2
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


def _cancel(args: argparse.Namespace) -> int:
    from cancel_handler import handler, logs

    logs.send_to(sys.stderr)  # stdout is for the result event
    from cancel_handler.config import ConfigError, load_settings
    from cancel_handler.envelopes import Delivery
    from cancel_handler.errors import RetryLater
    from cancel_handler.outcomes import Outcome
    from cancel_handler.results import PrintSink
    from cancel_handler.runtime import build_runtime

    try:
        settings = load_settings(local_run=True)
    except ConfigError as error:
        print(f"dli-cancel: {error}", file=sys.stderr)
        return 2
    logs.setup(settings.log_level)  # still on stderr
    event: dict[str, Any] = {
        "event_type": "job-timeout",
        "job_id": args.job_id,
        "job_kind": args.kind,
        "dry_run": args.dry_run,
        "reason": "dli-cancel cancel",
    }
    if args.project_id:
        event["project_id"] = args.project_id
    rt = build_runtime(settings, sink=PrintSink(sys.stderr))
    delivery = Delivery(json.dumps(event).encode(), {}, None, f"cli-{uuid.uuid4()}", None, "http")
    try:
        report = handler.process(delivery, rt)
    except RetryLater as error:
        print(f"dli-cancel: not done, try again: {error}", file=sys.stderr)
        return 3
    for result in report.results:
        print(json.dumps(result.to_dict(), indent=2))
    return 0 if all(Outcome(r.outcome).good for r in report.results) else 1


def _sweep(args: argparse.Namespace) -> int:
    from cancel_handler import cli_sweep

    return cli_sweep.run(args)


def _send(args: argparse.Namespace) -> int:
    event: dict[str, Any] = {"event_type": args.event_type}
    if args.event_type == "job-timeout":
        if len(args.job_ids) != 1:
            print("dli-cancel send job-timeout needs exactly one --job-id", file=sys.stderr)
            return 2
        event["job_id"] = args.job_ids[0]
    else:
        if not args.job_ids and not args.queue_names:
            print("dli-cancel send budget-exceeded needs --job-id or --queue", file=sys.stderr)
            return 2
        if args.job_ids:
            event["job_ids"] = args.job_ids
        if args.queue_names:
            event["queue_names"] = args.queue_names
    for key, value in (
        ("project_id", args.project_id),
        ("job_kind", args.kind),
        ("reason", args.reason),
    ):
        if value:
            event[key] = value
    if args.dry_run:
        event["dry_run"] = True
    return _publish("send", args.topic or args.event_type, event)


def _approve(args: argparse.Namespace) -> int:
    token = _token_of(args.token.strip())
    event: dict[str, Any] = {"event_type": "budget-exceeded", "approve": token}
    if args.dry_run:
        event["dry_run"] = True
    return _publish("approve", args.topic, event)


def _token_of(text: str) -> str:
    """The token itself, or the ``approve`` query parameter of an approval link."""
    if "://" not in text:
        return text
    from urllib.parse import parse_qs, urlsplit

    values = parse_qs(urlsplit(text).query).get("approve")
    return values[0] if values else text


def _publish(command: str, name: str, event: dict[str, Any]) -> int:
    from cancel_handler.config import topic_path

    topic = topic_path(name) or _default_credentials_topic(name)
    if topic is None:
        print(
            f"dli-cancel {command}: give --topic projects/P/topics/T or set GOOGLE_CLOUD_PROJECT",
            file=sys.stderr,
        )
        return 2
    from google.cloud import pubsub_v1

    # The usual Google credentials chain; with PUBSUB_EMULATOR_HOST set, the emulator.
    publisher = pubsub_v1.PublisherClient()
    try:
        message_id = publisher.publish(topic, json.dumps(event).encode()).result(timeout=60)
    except Exception as error:  # NotFound, PermissionDenied, timeouts: say which, exit 1
        print(f"dli-cancel {command}: publishing to {topic} failed: {error}", file=sys.stderr)
        return 1
    print(json.dumps({"topic": topic, "message_id": message_id, "event": event}))
    return 0


def _default_credentials_topic(name: str) -> str | None:
    """``projects/<P>/topics/<name>`` with P from the Google default credentials (gcloud's
    project for user credentials), when neither the name nor the environment gives one."""
    if name.startswith("projects/") or os.environ.get("PUBSUB_EMULATOR_HOST"):
        return None
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        _, project = google.auth.default()
    except DefaultCredentialsError:
        return None
    return f"projects/{project}/topics/{name}" if project else None


if __name__ == "__main__":
    raise SystemExit(main())
