"""Hostile bodies (SPEC 5.2): the CPU time of reading a 64 KiB body, envelope and event parsing,
for shapes built to make a parser slow, against a benign body of the same size.

Each body is handled as the function handles it: posted to the HTTP entry point
(``envelopes.from_http_body`` then ``events.parse_event``) and as the data of a Pub/Sub
CloudEvent (``envelopes.from_cloud_event`` then ``events.parse_event``). The figure is the CPU
time (``time.process_time``) of one body, the median of several runs. Target: at most 3x the
benign body and under 50 ms.

Run alone: ``.venv/bin/python -m bench.hostile`` (no emulator, no server needed).
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from cloudevents.http import CloudEvent

from cancel_handler.envelopes import EnvelopeError, from_cloud_event, from_http_body
from cancel_handler.events import EventRules, InvalidEvent, parse_event

SIZE = 65536  # MAX_BODY_BYTES' default: the largest body the function reads
PROJECT_ID = "0123456789abcdef0123456789abcdef"
JOB_ID = "5a3a2c2e-1111-4222-8333-944455556666"
TARGET_RATIO = 3.0
TARGET_MS = 50.0
RULES = EventRules(default_project_id=PROJECT_ID)


def _fill(head: str, unit: str, tail: str) -> bytes:
    """``head`` + as many ``unit`` as fit + ``tail``, padded with spaces to exactly SIZE."""
    room = SIZE - len(head) - len(tail)
    body = (head + unit * (room // len(unit)) + tail).encode()
    return body + b" " * (SIZE - len(body))


def _job_ids(count: int) -> list[str]:
    return [f"5a3a2c2e-1111-4222-8333-{n:012x}" for n in range(count)]


def benign() -> bytes:
    """A valid budget-exceeded event as big as the limit: 1000 jobs (MAX_JOBS_PER_EVENT), the
    budget, and a reason written out at length."""
    event = {
        "event_type": "budget-exceeded",
        "project_id": PROJECT_ID,
        "job_ids": _job_ids(1000),
        "queue_names": ["etl", "adhoc"],
        "budget": {"name": "dli-monthly", "cost": 1043.2, "amount": 1000, "currency": "EUR"},
    }
    head = json.dumps(event)[:-1] + ', "reason": "'
    return _fill(head, "monthly budget exceeded; ", '"}')


SHAPES: dict[str, Callable[[], bytes]] = {
    "benign: budget event, 1000 jobs": benign,
    'escape run \\" (not JSON)': lambda: _fill("", '\\"', ""),
    'escape run \\" in a string': lambda: _fill(
        f'{{"event_type":"job-timeout","job_id":"{JOB_ID}","reason":"', '\\"', '"}'
    ),
    'escape run \\", unterminated': lambda: _fill('{"reason":"', '\\"', ""),
    "escape run \\\\ in a string": lambda: _fill(
        f'{{"event_type":"job-timeout","job_id":"{JOB_ID}","reason":"', "\\\\", '"}'
    ),
    "unicode escapes \\ud800": lambda: _fill(
        f'{{"event_type":"job-timeout","job_id":"{JOB_ID}","reason":"', "\\ud800", '"}'
    ),
    "deep nesting [[[[ (unclosed)": lambda: _fill("", "[", ""),
    "deep nesting [[[[...]]]]": lambda: b"[" * (SIZE // 2) + b"]" * (SIZE // 2),
    "nesting at the limit, repeated": lambda: _fill(
        f'{{"event_type":"job-timeout","job_id":"{JOB_ID}","x":[0',
        "," + "[" * 30 + "]" * 30,
        "]}",
    ),
    "one long string (job_id)": lambda: _fill('{"event_type":"job-timeout","job_id":"', "a", '"}'),
    "one long string (reason)": lambda: _fill(
        f'{{"event_type":"job-timeout","job_id":"{JOB_ID}","reason":"', "a", '"}'
    ),
    "many keys": lambda: _many_keys(),
    "1000 keys, long values": lambda: _thousand_keys(),
    "many keys in the budget": lambda: _many_keys(
        f'{{"event_type":"budget-exceeded","job_ids":["{JOB_ID}"],"budget":{{'
    ),
    "duplicate keys": lambda: _fill('{"event_type":"job-timeout",', '"k":0,', '"k":0}'),
    "many small array elements": lambda: _fill(
        f'{{"event_type":"job-timeout","job_id":"{JOB_ID}","x":[0', ",0", "]}"
    ),
    "many job_ids elements": lambda: _fill(
        '{"event_type":"budget-exceeded","job_ids":[0', ",0", "]}"
    ),
    "many empty arrays": lambda: _fill(
        f'{{"event_type":"job-timeout","job_id":"{JOB_ID}","x":[[]', ",[]", "]}"
    ),
    "long numbers (4000 digits)": lambda: _fill(
        f'{{"event_type":"job-timeout","job_id":"{JOB_ID}","x":[0', "," + "7" * 4000, "]}"
    ),
    "many short strings": lambda: _fill(
        f'{{"event_type":"job-timeout","job_id":"{JOB_ID}","x":[""', ',""', "]}"
    ),
}


def _many_keys(head: str = f'{{"event_type":"job-timeout","job_id":"{JOB_ID}"') -> bytes:
    parts: list[str] = []
    length = len(head) + 2
    n = 0
    while True:
        part = f'"k{n}":{n % 10}'
        if length + len(part) + 1 > SIZE - 2:
            break
        parts.append(part)
        length += len(part) + 1
        n += 1
    opener = "" if head.endswith("{") else ","
    closer = "}}" if head.endswith("{") else "}"
    body = (head + opener + ",".join(parts) + closer).encode()
    return body + b" " * (SIZE - len(body))


def _thousand_keys() -> bytes:
    """As many keys as a body may have, each with a value long enough to fill it."""
    head = f'{{"event_type":"job-timeout","job_id":"{JOB_ID}"'
    value = "v" * ((SIZE - len(head)) // 998 - 12)
    body = (head + "".join(f',"k{n:03}":"{value}"' for n in range(998)) + "}").encode()
    return body + b" " * (SIZE - len(body))


def _cloud_event(body: bytes) -> CloudEvent:
    message = {
        "data": base64.b64encode(body).decode(),
        "attributes": {},
        "messageId": "1",
        "publishTime": "2026-11-28T12:00:00.123Z",
    }
    return CloudEvent(
        {
            "id": "1",
            "source": "//pubsub.googleapis.com/",  # no topic: the body names its event type
            "type": "google.cloud.pubsub.topic.v1.messagePublished",
        },
        {"message": message, "subscription": "projects/p/subscriptions/s"},
    )


def handle_http(body: bytes) -> str:
    """What ``cancel_dli_job_http`` does with a body before it acts on it; the verdict."""
    try:
        return _verdict(parse_event(from_http_body(body, SIZE), RULES))
    except (EnvelopeError, InvalidEvent) as error:
        return f"invalid: {error.field}"


def handle_cloud_event(event: CloudEvent) -> str:
    """What ``cancel_dli_job`` does with a CloudEvent before it acts on it; the verdict."""
    try:
        return _verdict(parse_event(from_cloud_event(event, SIZE), RULES))
    except (EnvelopeError, InvalidEvent) as error:
        return f"invalid: {error.field}"


def _verdict(parsed: Any) -> str:
    return "ignored" if not hasattr(parsed, "job_ids") else f"valid: {len(parsed.job_ids)} jobs"


def cpu_ms(calls: dict[str, Callable[[], str]], runs: int, per_run: int) -> dict[str, float]:
    """Median CPU milliseconds of one call of each; the calls take turns within every run, so
    that a machine busy with something else slows them alike."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(runs):
        for name, call in calls.items():
            started = time.process_time()
            for _ in range(per_run):
                call()
            samples[name].append((time.process_time() - started) / per_run * 1000)
    return {name: statistics.median(values) for name, values in samples.items()}


@dataclass(frozen=True)
class Figure:
    shape: str
    route: str  # "http" (body posted) or "cloudevent" (message data)
    verdict: str
    cpu_ms: float
    benign_ms: float

    @property
    def ratio(self) -> float:
        return self.cpu_ms / self.benign_ms if self.benign_ms else float("inf")

    @property
    def met(self) -> bool:
        return self.ratio <= TARGET_RATIO and self.cpu_ms < TARGET_MS


def measure(runs: int = 9, per_run: int = 5) -> list[Figure]:
    bodies = {name: build() for name, build in SHAPES.items()}
    for name, body in bodies.items():
        assert len(body) == SIZE, (name, len(body))
    events = {name: _cloud_event(body) for name, body in bodies.items()}
    routes: dict[str, dict[str, Callable[[], str]]] = {
        "http": {name: partial(handle_http, body) for name, body in bodies.items()},
        "cloudevent": {name: partial(handle_cloud_event, event) for name, event in events.items()},
    }
    benign_name = next(iter(SHAPES))
    figures = []
    for route, calls in routes.items():
        verdicts = {name: call() for name, call in calls.items()}  # also warms up
        times = cpu_ms(calls, runs, per_run)
        for name in calls:
            figures.append(Figure(name, route, verdicts[name], times[name], times[benign_name]))
    return figures


def print_table(figures: list[Figure]) -> None:
    header = (
        f"{'shape (64 KiB body)':<34} {'route':<10} {'CPU ms':>7} {'x benign':>8}  "
        f"{'target':<20} {'met':<4} verdict"
    )
    print(header)
    print("-" * len(header))
    for f in figures:
        target = f"<= {TARGET_RATIO:g}x, < {TARGET_MS:g} ms"
        print(
            f"{f.shape:<34} {f.route:<10} {f.cpu_ms:>7.2f} {f.ratio:>8.2f}  {target:<20} "
            f"{'yes' if f.met else 'NO':<4} {f.verdict}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile")
    parser.add_argument("--runs", type=int, default=9, help="runs per figure (median)")
    parser.add_argument("--per-run", type=int, default=5, help="bodies handled per run")
    args = parser.parse_args(argv)
    figures = measure(args.runs, args.per_run)
    print_table(figures)
    return 0 if all(f.met for f in figures) else 1


if __name__ == "__main__":
    raise SystemExit(main())
