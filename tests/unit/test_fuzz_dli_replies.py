"""Property-based tests: any status, headers and body DLI (or anything in front of it) may send
goes through the classification without raising, and comes out as an answer, a transient fault
or a configuration fault, with string error codes (SPEC 5.1). Then the same replies through the
DLI client (a scripted pool) and the whole handler: an outcome or a ``DliUnavailable``, never
anything else, and an old event always ends acknowledged with one result per job.

The number of examples comes from the active Hypothesis profile (``HYPOTHESIS_PROFILE=deep``
for many more)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import urllib3
from hypothesis import assume, example, given
from hypothesis import strategies as st

from cancel_handler import handler
from cancel_handler.config import Secret
from cancel_handler.dli.auth import AkSkAuth, EnvCredentials
from cancel_handler.dli.client import DliClient, RetryPolicy
from cancel_handler.dli.errors import DliRefused, DliUnavailable
from cancel_handler.dli.replies import (
    BAD_REPLY,
    MAX_REPLY_DEPTH,
    NOT_FOUND_CODES,
    Accepted,
    Answer,
    ConfigFault,
    JobState,
    Page,
    Refusal,
    Reply,
    Transient,
    classify,
    interpret,
    read_cancel,
    read_page,
    read_state,
    retry_after_s,
)
from cancel_handler.dli.types import CallOutcome, JobKind, JobRef
from cancel_handler.errors import RetryLater
from cancel_handler.runtime import Runtime
from tests.unit.fakes import Unit, delivery, job_id

NOW = 1_800_000_000.0
PID = "0123456789abcdef0123456789abcdef"
OLD_S = 2 * 3600.0
KINDS: tuple[JobKind, ...] = ("sql", "spark", "flink")

# -- strategies ----------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=30)
)
any_json = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=16,
)
codes = st.sampled_from(
    ["DLI.0001", "DLI.0002", "DLI.0007", "DLI.0014", "DLI.0023", "DLI.0999", "APIG.0101", ""]
)
flags = st.sampled_from([True, False, "true", "false", "TRUE", "yes", None, 0, 1, [], {}])
state_names = st.sampled_from(
    ["RUNNING", "LAUNCHING", "FINISHED", "CANCELLED", "running", "dead", "job_running", ""]
)
job_ids = st.one_of(st.uuids().map(str), st.integers(-5, 10**12), any_json)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Either a plausible value or any JSON at all."""
    return st.one_of(strategy, any_json)


listed_jobs = st.fixed_dictionaries(
    {},
    optional={
        "job_id": maybe(job_ids),
        "id": maybe(job_ids),
        "status": maybe(state_names),
        "state": maybe(state_names),
        "queue_name": maybe(st.sampled_from(["etl", "default"])),
        "queue": maybe(st.sampled_from(["etl", "default"])),
    },
)
job_lists = st.lists(maybe(listed_jobs), max_size=5)
dli_shaped = st.fixed_dictionaries(
    {},
    optional={
        "error_code": maybe(codes),
        "error_msg": any_json,
        "errorCode": maybe(codes),
        "is_success": maybe(flags),
        "message": any_json,
        "msg": maybe(st.sampled_from(["deleted", "not deleted"])),
        "status": maybe(state_names),
        "state": maybe(state_names),
        "job_detail": maybe(st.fixed_dictionaries({"status": maybe(state_names)})),
        "jobs": maybe(job_lists),
        "sessions": maybe(job_lists),
        "job_count": maybe(st.integers(0, 300)),
        "total": maybe(st.integers(0, 300)),
        "job_list": maybe(
            st.fixed_dictionaries(
                {}, optional={"jobs": maybe(job_lists), "total_count": maybe(st.integers(0, 300))}
            )
        ),
        "error": maybe(st.fixed_dictionaries({"error_code": maybe(codes), "code": any_json})),
    },
)
flink_stop = st.lists(maybe(dli_shaped), max_size=3)


def deep(depth: int, opener: bytes = b"[") -> bytes:
    closer = b"]" if opener == b"[" else b"}"
    if opener == b"[":
        return opener * depth + closer * depth
    return b'{"a":' * depth + b"1" + closer * depth


bodies = st.one_of(
    st.binary(max_size=200),
    any_json.map(lambda v: json.dumps(v).encode()),
    dli_shaped.map(lambda v: json.dumps(v).encode()),
    flink_stop.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 3000).map(deep),
    st.integers(1, 3000).map(lambda n: deep(n, b"{")),
    st.sampled_from([b"", b"null", b"<html>502 Bad Gateway</html>", b"\xff\xfe\x00", b"NaN"]),
)
statuses = st.one_of(
    st.sampled_from([200, 201, 204, 301, 302, 400, 401, 403, 404, 409, 429, 500, 502, 503]),
    st.integers(0, 999),
)
header_names = st.sampled_from(
    ["Retry-After", "retry-after", "RETRY-AFTER", "X-Request-Id", "x-request-id", "Content-Type"]
)
header_values = st.one_of(
    st.text(max_size=40),
    st.integers(-(10**20), 10**20).map(str),
    st.floats().map(str),
    st.datetimes().map(lambda d: d.strftime("%a, %d %b %Y %H:%M:%S GMT")),
    st.sampled_from(["Wed, 21 Oct 2015 07:28:00 GMT", "1e999", "nan", "-1", "  3  ", ""]),
)
headers = st.dictionaries(header_names | st.text(max_size=10), header_values, max_size=4)
replies = st.builds(Reply, statuses, headers, bodies)


# -- invariants ----------------------------------------------------------------------------------


def check_code(code: Any) -> None:
    assert isinstance(code, str) and code, code


def check_classified(result: Any, reply: Reply) -> None:
    assert isinstance(result, Answer | Transient | ConfigFault), result
    if isinstance(result, Transient):
        check_code(result.error_code)
        assert isinstance(result.message, str)
        assert result.http_status == reply.status
        if result.retry_after_s is not None:
            assert math.isfinite(result.retry_after_s) and result.retry_after_s >= 0
    elif isinstance(result, ConfigFault):
        check_code(result.error_code)
        assert isinstance(result.message, str)
        assert result.http_status == reply.status
    else:
        assert result.error_code is None or isinstance(result.error_code, str)
        assert isinstance(result.error_message, str)
        assert result.is_success in (None, True, False)
        assert result.status == reply.status
    request_id = getattr(result, "request_id", None)
    assert request_id is None or isinstance(request_id, str)


def check_refused(refused: Refusal, reply: Reply) -> None:
    check_code(refused.error_code)
    assert isinstance(refused.message, str)
    assert refused.http_status == reply.status
    if refused.not_found:
        assert refused.error_code in NOT_FOUND_CODES


def codes_in(reply: Reply) -> set[str]:
    """Every string under ``error_code``/``errorCode`` in the body's top-level object, the
    objects one level down, or the first entry of a list body (a Flink stop)."""
    try:
        body = json.loads(reply.body)
    except (ValueError, RecursionError):
        return set()
    if isinstance(body, list):
        body = body[0] if body else None
    if not isinstance(body, dict):
        return set()
    holders = [body, *(v for v in body.values() if isinstance(v, dict))]
    found = (h.get(key) for h in holders for key in ("error_code", "errorCode"))
    return {code for code in found if isinstance(code, str)}


# -- properties ----------------------------------------------------------------------------------


@given(replies)
@example(Reply(400, {}, b'{"error_code": "DLI.0999", "error_msg": "server-side error"}'))
@example(Reply(404, {}, b'{"error_code": "APIG.0101", "error_msg": "no such API"}'))
@example(Reply(200, {}, b'{"is_success": false, "error_code": 12}'))
@example(Reply(200, {}, b'{"is_success": false, "error_code": {"a": 1}}'))
@example(Reply(503, {"Retry-After": "Mon, 01 Jan 99999 00:00:00 GMT"}, b""))
@example(Reply(400, {}, b"[" * 100_000))
def test_every_reply_is_classified(reply: Reply) -> None:
    check_classified(classify(reply, NOW), reply)


@given(st.sampled_from(KINDS), replies)
def test_every_cancel_reply_maps_to_an_answer_or_a_fault(kind: JobKind, reply: Reply) -> None:
    result = interpret(reply, read_cancel(kind), NOW)
    assert isinstance(result, Accepted | Refusal | Transient | ConfigFault), result
    if isinstance(result, Accepted):
        assert 200 <= reply.status < 300
        assert isinstance(result.message, str)
    elif isinstance(result, Refusal):
        check_refused(result, reply)
    else:
        check_classified(result, reply)


@given(st.sampled_from(KINDS), replies)
def test_every_state_reply_maps_to_a_state_or_a_fault(kind: JobKind, reply: Reply) -> None:
    result = interpret(reply, read_state(kind), NOW)
    assert isinstance(result, JobState | Refusal | Transient | ConfigFault), result
    if isinstance(result, JobState):
        if result.state is None:  # not found: only DLI's own code says so
            assert codes_in(reply) & NOT_FOUND_CODES
        else:
            assert isinstance(result.state, str) and result.state
    elif isinstance(result, Refusal):
        check_refused(result, reply)
        assert not result.not_found
    else:
        check_classified(result, reply)


@given(st.sampled_from(KINDS), replies)
def test_every_listing_reply_maps_to_a_page_or_a_fault(kind: JobKind, reply: Reply) -> None:
    result = interpret(reply, read_page(kind), NOW)
    assert isinstance(result, Page | Refusal | Transient | ConfigFault), result
    if isinstance(result, Page):
        assert 200 <= reply.status < 300
        assert result.total is None or (isinstance(result.total, int) and result.total >= 0)
        for job in result.jobs:
            assert isinstance(job.job_id, str) and job.job_id
            assert isinstance(job.state, str)
            assert job.queue_name is None or isinstance(job.queue_name, str)
    elif isinstance(result, Refusal):
        check_refused(result, reply)
    else:
        check_classified(result, reply)


@given(header_values | st.text())
def test_retry_after_of_any_text_is_a_finite_delay_or_nothing(value: str) -> None:
    delay = retry_after_s(value, NOW)
    assert delay is None or (math.isfinite(delay) and delay >= 0)


# -- the rules, over arbitrary replies -----------------------------------------------------------

readable_statuses = st.sampled_from([200, 201, 400, 403, 409, 422])
# the other fields of a reply, lighter than ``dli_shaped`` for the rules below
other_fields = st.dictionaries(
    st.sampled_from(["error_msg", "message", "msg", "status", "state", "jobs", "job_count"]),
    scalars | st.lists(scalars, max_size=3),
    max_size=4,
)


@given(st.sampled_from([429, 500, 502, 503, 504, 599, 700]), headers, bodies)
def test_429_and_5xx_are_transient(status: int, hdrs: dict[str, str], body: bytes) -> None:
    result = classify(Reply(status, hdrs, body), NOW)
    assert isinstance(result, Transient)
    assert result.error_code == f"DLI_HTTP_{status}"


@given(readable_statuses | st.just(404), headers, other_fields)
def test_dli_0999_is_transient_whatever_the_status(
    status: int, hdrs: dict[str, str], body: dict[str, Any]
) -> None:
    body = {**body, "error_code": "DLI.0999"}
    result = classify(Reply(status, hdrs, json.dumps(body).encode()), NOW)
    assert isinstance(result, Transient)
    assert result.error_code == "DLI.0999"


@given(headers, any_json)
def test_a_404_without_a_dli_code_is_a_configuration_fault(hdrs: dict[str, str], body: Any) -> None:
    code = body.get("error_code") if isinstance(body, dict) else None
    assume(not (isinstance(code, str) and code.startswith("DLI.")))
    result = classify(Reply(404, hdrs, json.dumps(body).encode()), NOW)
    assert isinstance(result, ConfigFault)
    assert result.error_code == (code if isinstance(code, str) and code else "DLI_HTTP_404")


@given(st.sampled_from(KINDS), readable_statuses, headers, other_fields, any_json)
def test_an_error_code_of_another_type_than_string_is_a_bad_reply(
    kind: JobKind, status: int, hdrs: dict[str, str], body: dict[str, Any], code: Any
) -> None:
    assume(code is not None and not isinstance(code, str))
    reply = Reply(status, hdrs, json.dumps({**body, "error_code": code}).encode())
    for read in (read_cancel(kind), read_state(kind), read_page(kind)):
        result = interpret(reply, read, NOW)
        assert isinstance(result, Transient) and result.error_code == BAD_REPLY


@given(st.sampled_from(KINDS), readable_statuses, headers, other_fields, any_json)
def test_an_is_success_of_an_unexpected_type_is_a_bad_reply(
    kind: JobKind, status: int, hdrs: dict[str, str], body: dict[str, Any], flag: Any
) -> None:
    assume(not isinstance(flag, bool))
    assume(not (isinstance(flag, str) and flag.lower() in ("true", "false")))
    body = {**body, "is_success": flag}
    reply = Reply(status, hdrs, json.dumps(body).encode())
    result = interpret(reply, read_cancel(kind), NOW)
    assert isinstance(result, Transient) and result.error_code == BAD_REPLY


@given(st.sampled_from(KINDS), readable_statuses, headers, st.binary(max_size=100))
def test_a_body_that_is_not_json_is_a_bad_reply(
    kind: JobKind, status: int, hdrs: dict[str, str], body: bytes
) -> None:
    try:
        json.loads(body)
        assume(False)
    except ValueError:
        pass
    result = interpret(Reply(status, hdrs, body), read_cancel(kind), NOW)
    assert isinstance(result, Transient) and result.error_code == BAD_REPLY


@given(readable_statuses, st.integers(MAX_REPLY_DEPTH + 1, 5000), st.sampled_from([b"[", b"{"]))
def test_nesting_too_deep_is_a_bad_reply(status: int, depth: int, opener: bytes) -> None:
    result = classify(Reply(status, {}, deep(depth, opener)), NOW)
    assert isinstance(result, Transient) and result.error_code == BAD_REPLY


@given(st.sampled_from(KINDS), replies)
def test_not_found_only_with_dlis_own_code(kind: JobKind, reply: Reply) -> None:
    for read in (read_cancel(kind), read_state(kind)):
        result = interpret(reply, read, NOW)
        said_not_found = (isinstance(result, Refusal) and result.not_found) or (
            isinstance(result, JobState) and result.state is None
        )
        if said_not_found:
            assert codes_in(reply) & NOT_FOUND_CODES


# -- through the client and the handler ------------------------------------------------------


class ScriptedPool:
    """Stands in for ``urllib3.PoolManager``: answers every request with the next reply of a
    script (the last one repeats)."""

    def __init__(self, script: list[Reply]) -> None:
        self.script = list(script)
        self.sent = 0

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        self.sent += 1
        reply = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        return _Received(reply.status, urllib3.HTTPHeaderDict(dict(reply.headers)), reply.body)


class _Received:
    def __init__(self, status: int, headers: urllib3.HTTPHeaderDict, data: bytes) -> None:
        self.status, self.headers, self.data = status, headers, data


def scripted_client(script: list[Reply]) -> DliClient:
    auth = AkSkAuth(EnvCredentials(Secret("UNITACCESSKEY"), Secret("unit-secret-key"), None))
    policy = RetryPolicy(max_attempts=2, timeout_s=1.0, base_delay_s=0.0, max_delay_s=0.0)
    pool: Any = ScriptedPool(script)
    return DliClient("https://dli.example.invalid", auth, policy, pool, sleep=lambda s: None)


def a_job_of(kind: JobKind) -> str:
    return "1234" if kind == "flink" else job_id()


scripts = st.lists(replies, min_size=1, max_size=5)


@given(st.sampled_from(KINDS), scripts)
def test_the_client_answers_any_replies_with_an_outcome_or_dli_unavailable(
    kind: JobKind, script: list[Reply]
) -> None:
    client = scripted_client(script)
    try:
        outcome = client.cancel(JobRef(PID, a_job_of(kind), kind))
    except DliUnavailable as failure:
        check_code(failure.error_code)
        assert isinstance(failure.message, str)
        return
    assert isinstance(outcome, CallOutcome)
    assert outcome.outcome in ("cancelled", "already_finished", "not_found", "rejected")
    assert outcome.error_code is None or isinstance(outcome.error_code, str)
    assert isinstance(outcome.message, str)
    if outcome.outcome == "not_found":
        assert any(codes_in(reply) & NOT_FOUND_CODES for reply in script)


@given(scripts)
def test_the_listing_answers_any_replies_with_job_ids_or_a_documented_exception(
    script: list[Reply],
) -> None:
    client = scripted_client(script)
    try:
        found = client.list_active_sql_jobs(PID, "etl")
    except (DliRefused, DliUnavailable) as failure:
        check_code(failure.error_code)
        return
    assert all(isinstance(job, str) and job for job in found)


def run_event(body: dict[str, Any], script: list[Reply], age_s: float | None) -> Unit:
    unit = Unit()
    unit.runtime = Runtime(
        settings=unit.settings,
        client=scripted_client(script),
        sink=unit.sink,
        rules=unit.runtime.rules,
    )
    handler.process(delivery(body, "budget-exceeded", age_s=age_s), unit.runtime)
    return unit


def budget_event(kind: JobKind, queue: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_type": "budget-exceeded",
        "job_ids": [a_job_of(kind)],
        "job_kind": kind,
    }
    if queue:
        body["queue_names"] = ["etl"]
    return body


@given(st.sampled_from(KINDS), st.booleans(), scripts)
def test_an_old_event_ends_acknowledged_whatever_dli_replies(
    kind: JobKind, queue: bool, script: list[Reply]
) -> None:
    """No reply may turn an event into a message that is delivered again forever: once the
    event is older than MAX_EVENT_AGE_S it is acknowledged, each job with one result."""
    body = budget_event(kind, queue)
    unit = run_event(body, script, OLD_S)  # returns: acknowledged
    explicit = body["job_ids"][0]
    subjects = [r["job_id"] or r["queue_name"] for r in unit.published]
    assert explicit in subjects and len(subjects) == len(set(subjects))
    for message in unit.sink.messages:
        assert all(isinstance(v, str) for v in message.attributes.values())
    for result in unit.published:
        assert result["error_code"] is None or isinstance(result["error_code"], str)


@given(st.sampled_from(KINDS), st.booleans(), scripts)
def test_a_young_event_is_acknowledged_or_comes_again_whatever_dli_replies(
    kind: JobKind, queue: bool, script: list[Reply]
) -> None:
    body = budget_event(kind, queue)
    try:
        unit = run_event(body, script, None)
    except RetryLater:
        return
    assert body["job_ids"][0] in {r["job_id"] for r in unit.published}


@pytest.mark.parametrize(
    "body",
    [
        b'{"is_success": false, "error_code": 12}',
        b'{"is_success": false, "error_code": {"a": 1}}',
        b"[" * 100_000,
    ],
    ids=["numeric-code", "object-code", "deep"],
)
def test_a_reply_that_once_crashed_the_event_now_fails_it_when_old(body: bytes) -> None:
    unit = run_event(budget_event("sql", False), [Reply(200, {}, body)], OLD_S)
    [result] = unit.published
    assert (result["outcome"], result["error_code"]) == ("failed", "DLI_BAD_REPLY")
