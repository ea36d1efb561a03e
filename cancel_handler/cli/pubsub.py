"""``dli-cancel send``, ``approve`` and ``results``: the Pub/Sub side of the CLI.

``send`` publishes an event (built from options, or a saved payload as it is), ``approve`` the
approval of a proposal; with ``--wait`` either reads the results of what it published.
``results`` reads the result events from a subscription of the operator's own and
acknowledges what it printed: a watch subscription must not be one that another consumer
relies on.

google-cloud-pubsub uses the usual Google credentials chain; with ``PUBSUB_EMULATOR_HOST``
set it talks to the emulator instead. It is imported only when a command needs it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cancel_handler import config
from cancel_handler.cli.output import (
    FAILED,
    OK,
    RETRY,
    USAGE,
    ResultPrinter,
    exit_code_for,
    say,
)

if TYPE_CHECKING:
    from google.cloud import pubsub_v1

PUBLISH_TIMEOUT_S = 60.0
IDLE_S = 3.0  # `results` without --follow stops after this long without a message
PULL_WAIT_S = 2.0
FIELD_OPTIONS = ("job_ids", "queue_names", "project_id", "kind", "reason", "dry_run")


class UsageError(Exception):
    """Bad arguments: nothing was sent (exit code 2)."""


# -- names -----------------------------------------------------------------------------------


def resource_path(kind: str, name: str) -> str | None:
    """``projects/P/<kind>/<name>`` for a bare name; P from ``GOOGLE_CLOUD_PROJECT``, else
    the Google default credentials' project (not with the emulator)."""
    if name.startswith("projects/"):
        return name
    project = config.gcp_project() or _default_credentials_project()
    return f"projects/{project}/{kind}/{name}" if project else None


def _default_credentials_project() -> str | None:
    if config.pubsub_emulator_host():
        return None
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        _, project = google.auth.default()
    except DefaultCredentialsError:
        return None
    return str(project) if project else None


def _path_or_usage(kind: str, name: str) -> str:
    path = resource_path(kind, name)
    if path is None:
        singular = kind.removesuffix("s")
        raise UsageError(
            f"{name!r} is a bare name: give projects/P/{kind}/{name}, set "
            f"GOOGLE_CLOUD_PROJECT, or log in with gcloud (a {singular} needs a project)"
        )
    return path


def _exit_code_for_error(error: Exception) -> int:
    """Pub/Sub refused (no such topic, no permission, bad request): 1; anything else
    (unreachable, timed out): 3, try again."""
    from google.api_core import exceptions

    refused = (
        exceptions.NotFound,
        exceptions.PermissionDenied,
        exceptions.Unauthenticated,
        exceptions.InvalidArgument,
        exceptions.FailedPrecondition,
    )
    return FAILED if isinstance(error, refused) else RETRY


# -- send ------------------------------------------------------------------------------------


@dataclass
class Payload:
    data: bytes
    attributes: dict[str, str]
    event: Any  # what was sent, parsed (None for a file that is not JSON)


def send(args: argparse.Namespace) -> int:
    try:
        payload = _payload(args)
    except UsageError as error:
        say(str(error))
        return USAGE
    return _publish_and_report(args, payload, args.topic or args.event_type)


def approve(args: argparse.Namespace) -> int:
    """Publish ``{"event_type": "budget-exceeded", "approve": TOKEN}`` (docs/approval.md)."""
    event: dict[str, Any] = {"event_type": "budget-exceeded", "approve": token_of(args.token)}
    if args.dry_run:
        event["dry_run"] = True
    return _publish_and_report(args, Payload(json.dumps(event).encode(), {}, event), args.topic)


def token_of(text: str) -> str:
    """The token itself, or the ``approve`` query parameter of an approval link."""
    text = text.strip()
    if "://" not in text:
        return text
    from urllib.parse import parse_qs, urlsplit

    values = parse_qs(urlsplit(text).query).get("approve")
    return values[0] if values else text


def _publish_and_report(args: argparse.Namespace, payload: Payload, topic_name: str) -> int:
    """Publish; then print the message id, or with ``--wait`` the message's results."""
    try:
        topic = _path_or_usage("topics", topic_name)
        subscription = _path_or_usage("subscriptions", args.subscription) if args.wait else ""
    except UsageError as error:
        say(str(error))
        return USAGE
    reader = None
    if args.wait:  # before publishing: a missing subscription sends nothing
        try:
            reader = ResultReader(subscription)
            reader.check()
        except Exception as error:
            say(f"reading {subscription} failed, nothing was published: {error}")
            return _exit_code_for_error(error)
    try:
        message_id = _publish(topic, payload)
    except Exception as error:  # NotFound, PermissionDenied, timeouts: say which
        say(f"publishing to {topic} failed: {error}")
        return _exit_code_for_error(error)
    if reader is None:
        sent = {"topic": topic, "message_id": message_id, "event": payload.event}
        if payload.attributes:
            sent["attributes"] = payload.attributes
        print(json.dumps(sent))
        return OK
    say(f"published message {message_id} to {topic}; its results on {subscription}:")
    printer = ResultPrinter(args.json)
    return wait_for_results(reader, message_id, printer, args.timeout, args.settle)


def _payload(args: argparse.Namespace) -> Payload:
    attributes = _attributes(args.attr)
    if args.file is not None:
        given = [f"--{name.replace('_', '-')}" for name in FIELD_OPTIONS if getattr(args, name)]
        if given:
            raise UsageError(f"--file sends the file as it is; drop {', '.join(given)}")
        if not (args.topic or args.event_type):
            raise UsageError("--file needs the topic: job-timeout, budget-exceeded or --topic")
        data = _read(args.file)
        if not data and not attributes:
            raise UsageError(f"{args.file} is empty (a message needs data or attributes)")
        try:
            event = json.loads(data)
        except ValueError:
            event = None
        return Payload(data, attributes, event)
    if args.event_type is None:
        raise UsageError("name the event: send job-timeout|budget-exceeded (or --file F)")
    event = _event_from_options(args)
    return Payload(json.dumps(event).encode(), attributes, event)


def _attributes(pairs: Sequence[str]) -> dict[str, str]:
    attributes = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise UsageError(f"--attr {pair!r}: write KEY=VALUE")
        attributes[key] = value
    return attributes


def _read(file: str) -> bytes:
    try:
        return sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read {file}: {error.strerror}") from None


def _event_from_options(args: argparse.Namespace) -> dict[str, Any]:
    event: dict[str, Any] = {"event_type": args.event_type}
    if args.event_type == "job-timeout":
        if len(args.job_ids) != 1 or args.queue_names:
            raise UsageError("send job-timeout needs exactly one --job-id (and no --queue)")
        event["job_id"] = args.job_ids[0]
    else:
        if not args.job_ids and not args.queue_names:
            raise UsageError("send budget-exceeded needs --job-id or --queue")
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
    return event


def _publish(topic: str, payload: Payload) -> str:
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    future = publisher.publish(topic, payload.data, **payload.attributes)
    message_id: str = future.result(timeout=PUBLISH_TIMEOUT_S)
    return message_id


# -- reading results -------------------------------------------------------------------------


@dataclass
class Received:
    ack_id: str
    message_id: str
    result: dict[str, Any] | None  # None: not a JSON object


class ResultReader:
    """Synchronous pulls from one subscription; acknowledges only what it is told to."""

    def __init__(self, subscription: str) -> None:
        from google.cloud import pubsub_v1

        self.subscription = subscription
        self._client: pubsub_v1.SubscriberClient = pubsub_v1.SubscriberClient()

    def check(self) -> None:
        """Raises ``NotFound`` / ``PermissionDenied`` when the subscription cannot be read."""
        self._client.get_subscription(request={"subscription": self.subscription}, timeout=30)

    def pull(self, wait_s: float, max_messages: int = 100) -> list[Received]:
        from google.api_core.exceptions import DeadlineExceeded

        try:
            response = self._client.pull(
                request={"subscription": self.subscription, "max_messages": max_messages},
                timeout=max(wait_s, 0.1),
                retry=None,
            )
        except DeadlineExceeded:
            return []
        return [
            Received(item.ack_id, item.message.message_id, _result(bytes(item.message.data)))
            for item in response.received_messages
        ]

    def ack(self, ack_ids: Sequence[str]) -> None:
        if ack_ids:
            request = {"subscription": self.subscription, "ack_ids": list(ack_ids)}
            self._client.acknowledge(request=request, timeout=30)

    def release(self, ack_ids: Sequence[str]) -> None:
        """Give messages back at once (ack deadline 0), for the next reader."""
        if ack_ids:
            request = {
                "subscription": self.subscription,
                "ack_ids": list(ack_ids),
                "ack_deadline_seconds": 0,
            }
            with contextlib.suppress(Exception):  # expired leases come back by themselves
                self._client.modify_ack_deadline(request=request, timeout=30)


def _result(data: bytes) -> dict[str, Any] | None:
    try:
        parsed = json.loads(data)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def results(args: argparse.Namespace) -> int:
    try:
        subscription = _path_or_usage("subscriptions", args.subscription)
    except UsageError as error:
        say(str(error))
        return USAGE
    printer = ResultPrinter(args.json)
    try:
        reader = ResultReader(subscription)
        reader.check()
        if args.follow:
            say(f"following {subscription} (Ctrl-C to stop)")
        printer.header()
        _read_results(reader, printer, args.follow, args.limit)
    except KeyboardInterrupt:
        return OK
    except Exception as error:
        say(f"reading {subscription} failed: {error}")
        return _exit_code_for_error(error)
    if not printer.printed:
        say(f"no result waiting on {subscription}")
    return OK


def _read_results(
    reader: ResultReader, printer: ResultPrinter, follow: bool, limit: int | None
) -> None:
    idle_until = time.monotonic() + IDLE_S
    while limit is None or len(printer.printed) < limit:
        room = 100 if limit is None else min(100, limit - len(printer.printed))
        batch = reader.pull(PULL_WAIT_S, max_messages=room)
        for item in batch:
            if item.result is None:
                say(f"message {item.message_id} is not a result event (not a JSON object)")
            else:
                printer.print(item.result)
        reader.ack([item.ack_id for item in batch])
        if batch:
            idle_until = time.monotonic() + IDLE_S
        elif not follow and time.monotonic() >= idle_until:
            return
        else:
            time.sleep(0.2)


def wait_for_results(
    reader: ResultReader, message_id: str, printer: ResultPrinter, timeout_s: float, settle_s: float
) -> int:
    """Print the results whose ``source_event_id`` is ``message_id`` until none came for
    ``settle_s`` (or ``timeout_s`` passed); other events' results are left on the
    subscription."""
    deadline = time.monotonic() + timeout_s
    settle_until: float | None = None
    held: dict[str, str] = {}  # message id -> ack id, of other events' results
    seen: set[tuple[str, str]] = set()
    try:
        while True:
            now = time.monotonic()
            if now >= deadline or (settle_until is not None and now >= settle_until):
                break
            batch = reader.pull(min(PULL_WAIT_S, deadline - now))
            mine = [m for m in batch if _is_result_of(m, message_id)]
            for item in mine:
                assert item.result is not None
                key = (str(item.result.get("job_id")), str(item.result.get("queue_name")))
                if key not in seen:  # delivery is at least once: the first result counts
                    seen.add(key)
                    printer.print(item.result)
            reader.ack([m.ack_id for m in mine])
            held.update({m.message_id: m.ack_id for m in batch if m not in mine})
            if mine:
                settle_until = time.monotonic() + settle_s
            elif not batch:
                time.sleep(0.2)
    finally:
        reader.release(list(held.values()))
    if not printer.printed:
        say(
            f"no result for message {message_id} within {timeout_s:g} s. A budget "
            "notification under its threshold or a closed incident publishes none; "
            "otherwise look at the function's logs (jsonPayload.event_id)"
        )
        return RETRY
    return exit_code_for(printer.printed)


def _is_result_of(item: Received, message_id: str) -> bool:
    return item.result is not None and item.result.get("source_event_id") == message_id
