"""The watchdog's listings (``DliClient.list_active``) against DLI's replies as its API
reference writes them: each kind's paging and total, active states in lifecycle order, what a
listed job carries (start, duration, tags, queue), and replies that do not add up."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from cancel_handler.dli.client import DliClient
from cancel_handler.dli.errors import DliRefused
from cancel_handler.limits import ListedJob
from tests.unit.test_client_replies import PID, RecordedDli, Reply, client_for, dli_error

SQL_LIST = f"/v1.0/{PID}/jobs"
SPARK_LIST = f"/v2.0/{PID}/batches"
FLINK_LIST = f"/v1.0/{PID}/streaming/jobs"
START = 1_795_000_000_000


@pytest.fixture
def dli() -> RecordedDli:
    return RecordedDli()


@pytest.fixture
def client(dli: RecordedDli) -> DliClient:
    return client_for(dli, [])


def sql_job(status: str, queue: str = "etl", **extra: Any) -> dict[str, Any]:
    return {"job_id": str(uuid.uuid4()), "queue_name": queue, "status": status, **extra}


def test_sql_states_in_lifecycle_order_each_to_its_total(
    dli: RecordedDli, client: DliClient
) -> None:
    running = [sql_job("RUNNING", start_time=START + n, duration=n) for n in range(120)]
    launching = [sql_job("LAUNCHING")]

    def jobs(query: dict[str, str]) -> Reply:
        page, state = int(query["current-page"]), query["job-status"]
        if state == "RUNNING":  # this DLI serves 50 per page, whatever page-size asked
            return Reply(200, {"job_count": 120, "jobs": running[(page - 1) * 50 : page * 50]})
        if state == "LAUNCHING":
            return Reply(200, {"job_count": 1, "jobs": launching})
        return Reply(200, {"job_count": 0, "jobs": []})

    dli.routes[("GET", SQL_LIST)] = jobs

    found = client.list_active(PID, "sql", "etl")

    assert [j.job_id for j in found] == [j["job_id"] for j in launching + running]
    asked = [(s.query["job-status"], s.query["current-page"]) for s in dli.sent]
    assert asked == [
        ("LAUNCHING", "1"),
        ("RUNNING", "1"),
        ("RUNNING", "2"),
        ("RUNNING", "3"),
        ("SCALING", "1"),
    ]
    assert {s.query["queue_name"] for s in dli.sent} == {"etl"}
    assert found[1] == ListedJob(running[0]["job_id"], "sql", "etl", 0, START, ())


def test_sql_job_carries_its_tags_and_jobs_that_do_not_belong_are_left_out(
    dli: RecordedDli, client: DliClient
) -> None:
    tagged = sql_job("RUNNING", tags=[{"key": "dli-cancel", "value": "exempt"}])
    elsewhere = sql_job("RUNNING", queue="other")
    finished = sql_job("FINISHED")
    bad_ids = [{**sql_job("RUNNING"), "job_id": bad} for bad in ("../x", 7, None, "")]
    page = {"job_count": 7, "jobs": [tagged, elsewhere, finished, *bad_ids]}
    dli.routes[("GET", SQL_LIST)] = lambda q: Reply(
        200, page if q["job-status"] == "RUNNING" else {"job_count": 0, "jobs": []}
    )

    [job] = client.list_active(PID, "sql", "ETL")  # queue names ignore case

    assert job.job_id == tagged["job_id"]
    assert job.tags == (("dli-cancel", "exempt"),)


def test_every_queue_is_listed_without_a_queue_filter(dli: RecordedDli, client: DliClient) -> None:
    mine, theirs = sql_job("RUNNING", queue="etl"), sql_job("RUNNING", queue="adhoc")
    dli.routes[("GET", SQL_LIST)] = lambda q: Reply(
        200,
        {"job_count": 2, "jobs": [mine, theirs]}
        if q["job-status"] == "RUNNING"
        else {"job_count": 0, "jobs": []},
    )

    found = client.list_active(PID, "sql")

    assert {(j.job_id, j.queue_name) for j in found} == {
        (mine["job_id"], "etl"),
        (theirs["job_id"], "adhoc"),
    }
    assert all("queue_name" not in s.query for s in dli.sent)


def test_spark_batches_page_by_offset_to_the_total(dli: RecordedDli, client: DliClient) -> None:
    batches = [
        {"id": str(uuid.uuid4()), "state": "Running", "queue": "etl", "create_time": START + n}
        for n in range(130)
    ]

    def sessions(query: dict[str, str]) -> Reply:
        if query["state"] != "running":
            return Reply(200, {"from": 0, "total": 0, "sessions": []})
        start = int(query["from"])  # this DLI serves at most 60, whatever size asked
        return Reply(200, {"from": start, "total": 130, "sessions": batches[start : start + 60]})

    dli.routes[("GET", SPARK_LIST)] = sessions

    found = client.list_active(PID, "spark", "etl")

    assert [j.job_id for j in found] == [b["id"] for b in batches]
    assert found[0] == ListedJob(batches[0]["id"], "spark", "etl", None, START, ())
    asked = [(s.query["state"], s.query["from"]) for s in dli.sent]
    assert asked == [
        ("starting", "0"),
        ("running", "0"),
        ("running", "60"),
        ("running", "120"),
        ("recovering", "0"),
    ]
    assert {s.query["size"] for s in dli.sent} == {"100"}


def test_flink_jobs_page_by_offset_with_their_integer_ids(
    dli: RecordedDli, client: DliClient
) -> None:
    jobs = [
        {"job_id": 1000 + n, "status": "job_running", "queue_name": "etl", "create_time": START}
        for n in range(3)
    ]
    jobs[0]["start_time"] = START + 5
    jobs[0]["duration"] = 42_000
    failing = {**jobs[2], "job_id": 2000, "status": "job_running_exception"}

    def listing(query: dict[str, str]) -> Reply:
        offset = int(query["offset"])
        found = jobs if query["status"] == "job_running" else [failing]
        page = found[offset : offset + 2]
        return Reply(
            200, {"is_success": "true", "job_list": {"total_count": len(found), "jobs": page}}
        )

    dli.routes[("GET", FLINK_LIST)] = listing

    found = client.list_active(PID, "flink", "etl")

    assert [j.job_id for j in found] == ["1000", "1001", "1002", "2000"]
    assert found[0] == ListedJob("1000", "flink", "etl", 42_000, START + 5, ())
    assert found[1].start_ms == START  # no start_time: create_time
    asked = [(s.query["status"], s.query["offset"], s.query["limit"]) for s in dli.sent]
    assert asked == [
        ("job_running", "0", "100"),
        ("job_running", "2", "100"),
        ("job_running_exception", "0", "100"),
    ]


def test_flinks_string_false_is_a_refusal(dli: RecordedDli, client: DliClient) -> None:
    dli.on("GET", FLINK_LIST, Reply(200, {"is_success": "false", "message": "no such queue"}))

    with pytest.raises(DliRefused) as raised:
        client.list_active(PID, "flink", "etl")

    assert raised.value.message == "no such queue"


def test_an_empty_page_ends_the_listing_whatever_the_total_says(
    dli: RecordedDli, client: DliClient
) -> None:
    dli.on("GET", SQL_LIST, Reply(200, {"job_count": 500, "jobs": []}))

    assert client.list_active(PID, "sql", "etl") == []
    assert len(dli.sent) == 3  # one page per state


def test_a_dli_that_ignores_the_offset_does_not_loop(dli: RecordedDli, client: DliClient) -> None:
    batch = {"id": str(uuid.uuid4()), "state": "running", "queue": "etl"}
    dli.on("GET", SPARK_LIST, Reply(200, {"total": 1000, "sessions": [batch]}))

    found = client.list_active(PID, "spark", "etl")

    assert [j.job_id for j in found] == [batch["id"]]
    assert len(dli.sent) == 2 * 3  # the same page twice per state, then it stops


def test_a_refused_listing_raises(dli: RecordedDli, client: DliClient) -> None:
    dli.on("GET", SPARK_LIST, dli_error(403, "DLI.0003", "no permission on queue etl"))

    with pytest.raises(DliRefused) as raised:
        client.list_active(PID, "spark", "etl")

    assert (raised.value.error_code, raised.value.http_status) == ("DLI.0003", 403)
