"""DLI's replies as it really sends them -> what they mean (SPEC 5.1), case by case."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cancel_handler.dli.replies import (
    BAD_REPLY,
    Accepted,
    Answer,
    ConfigFault,
    JobState,
    Page,
    PageJob,
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
from cancel_handler.dli.types import JobKind

NOW = 1_800_000_000.0


def reply(status: int, body: Any, **headers: str) -> Reply:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Reply(status, {k.replace("_", "-"): v for k, v in headers.items()}, raw)


def error(code: Any, msg: str = "text") -> dict[str, Any]:
    return {"error_code": code, "error_msg": msg}


# -- transient -----------------------------------------------------------------------------------


def test_dli_0999_with_400_is_transient_like_a_5xx() -> None:
    result = classify(reply(400, error("DLI.0999", "server-side error"), Retry_After="2"), NOW)
    assert result == Transient("DLI.0999", "server-side error", 400, None, 2.0)


def test_dli_0999_in_a_200_that_says_is_success_false_is_transient() -> None:
    body = {"is_success": False, "error_code": "DLI.0999", "message": "busy"}
    result = classify(reply(200, body), NOW)
    assert isinstance(result, Transient) and result.error_code == "DLI.0999"


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_429_and_5xx_keep_their_status_code(status: int) -> None:
    result = classify(reply(status, b"<html>busy</html>", X_Request_Id="req-1"), NOW)
    assert isinstance(result, Transient)
    assert (result.error_code, result.http_status, result.request_id) == (
        f"DLI_HTTP_{status}",
        status,
        "req-1",
    )
    assert "busy" in result.message


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"<html><title>502 Bad Gateway</title></html>", "not JSON"),
        (b"", "not JSON"),
        (b"\xff\xfe{", "not JSON"),
        (b"[" * 50_000, "deeper"),
        (b"[" * 70 + b"]" * 70, "deeper"),
        (json.dumps(error(12)).encode(), "error_code is a number"),
        (json.dumps(error({"code": "DLI.0002"})).encode(), "error_code is an object"),
        (json.dumps(error(["DLI.0002"])).encode(), "error_code is an array"),
        (json.dumps({"is_success": None}).encode(), "is_success is null"),
        (json.dumps({"is_success": 1}).encode(), "is_success is a number"),
        (json.dumps({"is_success": "maybe"}).encode(), "is_success is a string"),
    ],
)
@pytest.mark.parametrize("status", [200, 400])
def test_replies_that_cannot_be_interpreted_are_bad_replies(
    status: int, body: bytes, says: str
) -> None:
    result = classify(Reply(status, {}, body), NOW)
    assert isinstance(result, Transient)
    assert (result.error_code, result.http_status) == (BAD_REPLY, status)
    assert says in result.message


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("sql", {"message": "no flag"}),
        ("sql", ["is_success", True]),
        ("sql", "cancelled"),
        ("spark", {"msg": 1}),
        ("spark", {}),
        ("flink", []),
        ("flink", [1]),
        ("flink", [{"message": "no flag"}]),
        ("flink", {"job_ids": [1]}),
    ],
)
def test_a_cancel_answer_of_an_unexpected_shape_is_a_bad_reply(kind: JobKind, body: Any) -> None:
    result = interpret(reply(200, body), read_cancel(kind), NOW)
    assert isinstance(result, Transient) and result.error_code == BAD_REPLY


# -- configuration faults ------------------------------------------------------------------------


def test_a_gateway_404_is_a_configuration_fault_not_a_missing_job() -> None:
    body = error("APIG.0101", "The API does not exist or has not been published")
    result = classify(reply(404, body, X_Request_Id="gw-1"), NOW)
    assert isinstance(result, ConfigFault)
    assert (result.error_code, result.http_status, result.request_id) == ("APIG.0101", 404, "gw-1")
    assert not result.unauthorized
    assert "DLI_ENDPOINT" in result.message and "not been published" in result.message


@pytest.mark.parametrize("body", [b"<html>Not Found</html>", b"{}", b'{"error_code": 404}'])
def test_a_404_without_any_code_is_a_configuration_fault(body: bytes) -> None:
    result = classify(Reply(404, {}, body), NOW)
    assert isinstance(result, ConfigFault) and result.error_code == "DLI_HTTP_404"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (error("DLI.0014", "verify aksk signature fail"), "DLI.0014"),
        (error(7), "DLI_HTTP_401"),
        (b"Unauthorized", "DLI_HTTP_401"),
    ],
)
def test_a_401_is_a_configuration_fault_the_client_may_refresh_once(body: Any, code: str) -> None:
    result = classify(reply(401, body), NOW)
    assert isinstance(result, ConfigFault)
    assert (result.error_code, result.http_status, result.unauthorized) == (code, 401, True)


def test_a_redirect_is_a_configuration_fault() -> None:
    result = classify(reply(301, b"", Location="https://elsewhere/"), NOW)
    assert isinstance(result, ConfigFault) and result.error_code == "DLI_HTTP_301"


# -- definitive answers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("sql", {"is_success": True, "message": ""}),
        ("spark", {"msg": "deleted"}),
        ("flink", [{"is_success": "true", "message": "delivered"}]),
        ("flink", [{"is_success": True}]),
    ],
)
def test_accepted_cancels(kind: JobKind, body: Any) -> None:
    assert isinstance(interpret(reply(200, body), read_cancel(kind), NOW), Accepted)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (404, error("DLI.0023", "no batch"), Refusal("DLI.0023", "no batch", 404)),
        (400, error("DLI.0002", "no job"), Refusal("DLI.0002", "no job", 400)),
        (400, error("DLI.0007", "finished"), Refusal("DLI.0007", "finished", 400)),
        (400, {"is_success": False, "message": "nope"}, Refusal(None, "nope", 400)),
        (200, {"is_success": False, "message": "nope"}, Refusal(None, "nope", 200)),
        (403, {"error": error("DLI.0003", "denied")}, Refusal("DLI.0003", "denied", 403)),
        (400, error(None, "no code"), Refusal(None, "no code", 400)),
    ],
)
def test_refused_cancels_keep_dlis_code(status: int, body: Any, expected: Refusal) -> None:
    assert interpret(reply(status, body), read_cancel("sql"), NOW) == expected


def test_not_found_only_with_dlis_own_codes() -> None:
    assert Refusal("DLI.0002", "", 400).not_found
    assert Refusal("DLI.0023", "", 404).not_found
    assert not Refusal(None, "", 404).not_found
    assert not Refusal("DLI.0007", "", 400).not_found


def test_a_403_needs_no_state_read_a_400_does() -> None:
    assert not Refusal("DLI.0003", "", 403).needs_state_read
    assert Refusal("DLI.0007", "", 400).needs_state_read
    assert not Refusal("DLI.0002", "", 400).needs_state_read  # already known: not found


def test_a_flink_stop_result_of_false_is_refused_with_its_message() -> None:
    body = [{"is_success": "false", "message": "Job 7 cannot be stopped"}]
    result = interpret(reply(200, body), read_cancel("flink"), NOW)
    assert result == Refusal(None, "Job 7 cannot be stopped", 200)


def test_a_numeric_error_code_never_reaches_a_result() -> None:
    """The 200 with a numeric error_code that raised TypeError in the result's attributes."""
    body = {"is_success": False, "error_code": 500, "message": "odd"}
    result = interpret(reply(200, body), read_cancel("sql"), NOW)
    assert isinstance(result, Transient) and result.error_code == BAD_REPLY


# -- state reads ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "body", "state"),
    [
        ("sql", {"is_success": True, "status": "RUNNING"}, "RUNNING"),
        ("spark", {"id": "x", "state": "dead"}, "dead"),
        ("flink", {"is_success": "true", "job_detail": {"status": "job_running"}}, "job_running"),
    ],
)
def test_state_reads(kind: JobKind, body: Any, state: str) -> None:
    assert interpret(reply(200, body), read_state(kind), NOW) == JobState(state)


def test_a_state_read_confirms_not_found_only_with_dlis_code() -> None:
    gone = interpret(reply(400, error("DLI.0002")), read_state("sql"), NOW)
    assert gone == JobState(None)
    gateway = interpret(reply(404, error("APIG.0101")), read_state("sql"), NOW)
    assert isinstance(gateway, ConfigFault)
    refused = interpret(reply(400, error("DLI.0001", "bad id")), read_state("sql"), NOW)
    assert refused == Refusal("DLI.0001", "bad id", 400)


@pytest.mark.parametrize("body", [{"is_success": True}, {"status": 3}, {"status": ""}, []])
def test_a_state_answer_without_a_state_is_a_bad_reply_not_a_missing_job(body: Any) -> None:
    result = interpret(reply(200, body), read_state("sql"), NOW)
    assert isinstance(result, Transient) and result.error_code == BAD_REPLY


# -- listings ------------------------------------------------------------------------------------


def sql_page(jobs: list[dict[str, Any]], total: Any) -> dict[str, Any]:
    return {"is_success": True, "message": "", "job_count": total, "jobs": jobs}


def test_a_sql_page_and_its_total() -> None:
    jobs = [{"job_id": "a", "status": "RUNNING", "queue_name": "etl", "start_time": 5}]
    page = interpret(reply(200, sql_page(jobs, 120)), read_page("sql"), NOW)
    assert isinstance(page, Page) and page.total == 120
    assert page.jobs == (PageJob("a", "RUNNING", "etl", jobs[0]),)
    assert page.jobs[0].fields["start_time"] == 5


def test_spark_and_flink_pages() -> None:
    spark = {"from": 0, "total": 3, "sessions": [{"id": "b", "state": "running", "queue": "q"}]}
    page = interpret(reply(200, spark), read_page("spark"), NOW)
    assert isinstance(page, Page)
    assert (page.total, page.jobs[0].job_id, page.jobs[0].queue_name) == (3, "b", "q")
    flink = {
        "is_success": "true",
        "job_list": {"total_count": 1, "jobs": [{"job_id": 1001, "status": "job_running"}]},
    }
    page = interpret(reply(200, flink), read_page("flink"), NOW)
    assert isinstance(page, Page)
    assert (page.total, page.jobs[0].job_id, page.jobs[0].state) == (1, "1001", "job_running")


@pytest.mark.parametrize(
    "body",
    [
        sql_page([], "12"),
        sql_page([], -1),
        sql_page([], True),
        {"is_success": True, "jobs": {"a": 1}},
        {"is_success": True, "jobs": "a"},
        {"is_success": "maybe", "jobs": []},
        [{"job_id": "a", "status": "RUNNING"}],
    ],
)
def test_a_page_of_the_wrong_structure_is_a_bad_reply(body: Any) -> None:
    result = interpret(reply(200, body), read_page("sql"), NOW)
    assert isinstance(result, Transient) and result.error_code == BAD_REPLY


def test_entries_that_name_no_job_are_left_out_of_the_page() -> None:
    good = {"job_id": "a", "status": "RUNNING"}
    odd = [
        {"job_id": 1.5, "status": "RUNNING"},
        {"status": "RUNNING"},
        {"job_id": None, "status": "RUNNING"},
        {"job_id": "b", "status": None},
        {"job_id": "", "status": "RUNNING"},
        "c",
        7,
    ]
    page = interpret(reply(200, sql_page([*odd, good], 8)), read_page("sql"), NOW)
    assert isinstance(page, Page) and page.total == 8
    assert [job.job_id for job in page.jobs] == ["a"]


def test_a_flink_listing_that_says_false_is_refused() -> None:
    body = {"is_success": "false", "message": "no permission", "job_list": {"jobs": []}}
    assert interpret(reply(200, body), read_page("flink"), NOW) == Refusal(
        None, "no permission", 200
    )


# -- Retry-After ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("2", 2.0),
        (" 1.5 ", 1.5),
        ("-3", 0.0),
        ("nan", None),
        ("1e999", None),
        ("", None),
        ("soon", None),
        ("Mon, 01 Jan 99999 00:00:00 GMT", None),
        ("Fri, 15 Jan 2027 08:00:10 GMT", 10.0),
        ("Fri, 15 Jan 2027 07:00:00 GMT", 0.0),
    ],
)
def test_retry_after(value: str, seconds: float | None) -> None:
    assert retry_after_s(value, NOW) == seconds


def test_answer_ok_means_2xx_and_not_is_success_false() -> None:
    assert Answer(200, {}, None, is_success=True).ok
    assert Answer(204, None, None).ok
    assert not Answer(200, {}, None, is_success=False).ok
    assert not Answer(400, {}, None, is_success=True).ok
