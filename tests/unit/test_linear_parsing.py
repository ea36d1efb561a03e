"""Parsing is linear (SPEC 5.2): no body up to the size limit, of any shape, makes the envelope
and event parsers do more than linear work; the depth check reads JSON as JSON does.

The speed target itself (a 64 KiB body within 3x of a benign one and under 50 ms of CPU) is
reported by ``python -m bench.hostile``, not asserted here. What is asserted is the absence of
runaway work: each hostile body must be read within a CPU budget about a hundred times what it
takes (a few ms); the backtracking pattern this replaced needed ~30 s for the first one. A
profiling timer stops a runaway parse at the budget, so a regression fails in seconds.
"""

from __future__ import annotations

import base64
import json
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from cloudevents.http import CloudEvent
from hypothesis import given
from hypothesis import strategies as st

from cancel_handler.envelopes import EnvelopeError, from_cloud_event, from_http_body
from cancel_handler.events import EventRules, InvalidEvent, parse_event
from cancel_handler.events.common import MAX_DEPTH, load_json_object

SIZE = 65536
CPU_BUDGET_S = 2.0
JOB_ID = "5a3a2c2e-1111-4222-8333-944455556666"
RULES = EventRules(default_project_id="0123456789abcdef0123456789abcdef")


class RunawayParse(Exception):
    pass


@contextmanager
def cpu_budget(seconds: float) -> Iterator[None]:
    """Raise ``RunawayParse`` in this thread once the process used ``seconds`` of CPU."""

    def stop(signum: int, frame: Any) -> None:
        raise RunawayParse(f"more than {seconds} s of CPU")

    previous = signal.signal(signal.SIGPROF, stop)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


def fill(head: str, unit: str, tail: str = "") -> bytes:
    body = head + unit * ((SIZE - len(head) - len(tail)) // len(unit)) + tail
    return body.encode().ljust(SIZE)


HOSTILE: dict[str, tuple[bytes, str]] = {
    # name: (64 KiB body, what the parser must say about it: the field, or "valid")
    "escape run": (fill("", '\\"'), "data"),
    "escape run after a quote": (fill('"', '\\"'), "data"),
    "escape run in an open string": (fill('{"reason":"', '\\"'), "data"),
    "escape run in a string": (
        fill(f'{{"event_type":"job-timeout","job_id":"{JOB_ID}","reason":"', '\\"', '"}'),
        "valid",
    ),
    "backslash run": (fill('{"reason":"', "\\\\", '"}'), "event_type"),
    "quotes and escapes": (fill("", '"\\"'), "data"),
    "open brackets": (fill("", "["), "data"),
    "balanced brackets": (b"[" * (SIZE // 2) + b"]" * (SIZE // 2), "data"),
    "brackets in an open string": (fill('{"reason":"', "[\\"), "data"),
    "empty arrays": (fill('{"x":[[]', ",[]", "]}"), "data"),
    "many keys": (fill('{"event_type":"job-timeout",', '"k":0,', '"k":0}'), "data"),
    "one long string": (fill('{"event_type":"job-timeout","job_id":"', "a", '"}'), "job_id"),
    "small elements": (fill('{"event_type":"budget-exceeded","job_ids":[0', ",0", "]}"), "job_ids"),
}


def read_http(body: bytes) -> str:
    try:
        parse_event(from_http_body(body, SIZE), RULES)
    except (EnvelopeError, InvalidEvent) as error:
        return error.field
    return "valid"


def read_cloud_event(body: bytes) -> str:
    message = {"data": base64.b64encode(body).decode(), "messageId": "m1"}
    event = CloudEvent(
        {"id": "m1", "source": "//pubsub.googleapis.com/", "type": "t"},
        {"message": message, "subscription": "projects/p/subscriptions/s"},
    )
    try:
        parse_event(from_cloud_event(event, SIZE), RULES)
    except (EnvelopeError, InvalidEvent) as error:
        return error.field
    return "valid"


@pytest.mark.parametrize("read", [read_http, read_cloud_event], ids=["http", "cloudevent"])
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_body_is_read_without_runaway_work(name: str, read: Callable[[bytes], str]) -> None:
    body, expected = HOSTILE[name]
    assert len(body) == SIZE

    with cpu_budget(CPU_BUDGET_S):
        verdict = read(body)

    assert verdict == expected


# -- the depth check reads JSON as JSON does -----------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.sampled_from('ab"\\[]{}/\n\u00e9\u20ac\U0001f600')),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(alphabet=st.sampled_from('k"\\[{'), max_size=3), children, max_size=4
        )
    ),
    max_leaves=40,
)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


def nest(value: Any, levels: int) -> Any:
    for _ in range(levels):
        value = [value]
    return value


@given(json_values, st.integers(min_value=0, max_value=40), st.booleans(), st.booleans())
def test_depth_limit_counts_brackets_outside_strings_only(
    value: Any, extra: int, ascii_only: bool, indented: bool
) -> None:
    document = {"x": nest(value, extra)}
    text = json.dumps(document, ensure_ascii=ascii_only, indent=1 if indented else None)

    if depth(document) <= MAX_DEPTH:
        assert load_json_object(text.encode()) == document
    else:
        with pytest.raises(InvalidEvent, match=f"nested deeper than {MAX_DEPTH} levels"):
            load_json_object(text.encode())


@pytest.mark.parametrize(
    ("text", "nested"),
    [
        (r'{"a": "\\"}', False),  # an escaped backslash, then the closing quote
        (r'{"a": "\\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', False),
        (r'{"a": "\"", "b": ' + "[" * 33 + "]" * 33 + "}", True),
        (r'{"a": "\\\\", "b": ' + "[" * 33 + "]" * 33 + "}", True),
    ],
)
def test_escapes_end_or_continue_strings_as_json_reads_them(text: str, nested: bool) -> None:
    if nested:
        with pytest.raises(InvalidEvent, match="nested deeper"):
            load_json_object(text.encode())
    else:
        assert "a" in load_json_object(text.encode())


# -- bounds on structure -------------------------------------------------------------------------


def with_arrays(count: int) -> bytes:
    """An event with ``count`` objects and arrays (itself included)."""
    arrays = ",".join(["[]"] * (count - 2))
    return f'{{"event_type":"job-timeout","job_id":"{JOB_ID}","x":[{arrays}]}}'.encode()


def with_keys(count: int) -> bytes:
    """An event with ``count`` keys, some of them inside strings' look-alikes."""
    extra = ",".join(f'"k{n}:":"v:{n}"' for n in range(count - 2))
    return f'{{"event_type":"job-timeout","job_id":"{JOB_ID}",{extra}}}'.encode()


def test_up_to_a_thousand_objects_and_arrays() -> None:
    assert len(load_json_object(with_arrays(1000))["x"]) == 998
    with pytest.raises(InvalidEvent, match="data has more than 1000 objects and arrays"):
        load_json_object(with_arrays(1001))


def test_up_to_a_thousand_keys() -> None:
    assert len(load_json_object(with_keys(1000))) == 1000
    with pytest.raises(InvalidEvent, match="data has more than 1000 keys"):
        load_json_object(with_keys(1001))
