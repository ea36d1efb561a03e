"""The DLI client against DLI's replies as its API reference writes them (bodies, status codes,
headers), served by a stand-in for the urllib3 pool: what each reply means, which replies are
retried, what is sent. No server, no sleeping (backoff waits are recorded)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from uuid import NAMESPACE_OID, uuid5

import pytest
import urllib3
from urllib3.exceptions import NewConnectionError, ReadTimeoutError

from cancel_handler.config import Secret
from cancel_handler.dli.auth import AkSkAuth, Call, EnvCredentials
from cancel_handler.dli.client import DliClient, RetryPolicy
from cancel_handler.dli.errors import (
    AuthRefused,
    CredentialsUnavailable,
    DliRefused,
    DliUnavailable,
    Misconfigured,
    TransientFailure,
    TransientFault,
)
from cancel_handler.dli.types import JobRef

PID = "0123456789abcdef0123456789abcdef"
JOB = "5a3a2c2e-1111-4222-8333-944455556666"
BATCH = "0a324461-d9d9-45da-a52a-3b3c7a3d809e"
FLINK = "1234"
ENDPOINT = "https://dli.eu-de.otc.t-systems.com"
AK, SK = "UNITACCESSKEY", "unit-secret-key"

SQL_PATH = f"/v1.0/{PID}/jobs/{JOB}"
SPARK_PATH = f"/v2.0/{PID}/batches/{BATCH}"
FLINK_STOP = f"/v1.0/{PID}/streaming/jobs/stop"
LIST_PATH = f"/v1.0/{PID}/jobs"


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any = None  # JSON, or bytes sent as they are
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Sent:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes | None
    timeout: float


@dataclass(frozen=True)
class Received:
    """What the client reads of a urllib3 response."""

    status: int
    headers: urllib3.HTTPHeaderDict
    data: bytes


Route = list[Reply | Exception] | Callable[[dict[str, str]], Reply]


class RecordedDli:
    """Stands in for ``urllib3.PoolManager``: per method and path, replies given in turn (the
    last one repeats) or a function of the query; records every request."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Route] = {}
        self.sent: list[Sent] = []

    def on(self, method: str, path: str, *replies: Reply | Exception) -> None:
        self.routes[(method, path)] = list(replies)

    def request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 0.0,
        retries: Any = None,
        redirect: Any = None,
    ) -> Received:
        parts = urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}" == ENDPOINT
        assert retries is False and redirect is False  # retries are the client's own
        query = dict(parse_qsl(parts.query))
        self.sent.append(Sent(method, parts.path, query, dict(headers or {}), body, timeout))
        route = self.routes[(method, parts.path)]
        if callable(route):
            answer: Reply | Exception = route(query)
        else:
            answer = route.pop(0) if len(route) > 1 else route[0]
        if isinstance(answer, Exception):
            raise answer
        data = answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode()
        return Received(answer.status, urllib3.HTTPHeaderDict(answer.headers), data)

    def paths(self) -> list[tuple[str, str]]:
        return [(s.method, s.path) for s in self.sent]


def dli_error(status: int, code: str, message: str, request_id: str = "req-err") -> Reply:
    """DLI's error body (API reference: error codes), with its request id header."""
    return Reply(status, {"error_code": code, "error_msg": message}, {"X-Request-Id": request_id})


def sql_status(state: str) -> Reply:
    body = {"is_success": True, "message": "", "job_id": JOB, "status": state, "job_type": "QUERY"}
    return Reply(200, body)


class Auth:
    """An ``Auth`` whose ``headers`` raise the given exceptions in turn, then sign nothing."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)

    def headers(self, call: Call, host: str) -> dict[str, str]:
        if self.failures:
            raise self.failures.pop(0)
        return {"Host": host}

    def after_unauthorized(self, call: Call) -> bool:
        return False


@pytest.fixture
def dli() -> RecordedDli:
    return RecordedDli()


@pytest.fixture
def waits() -> list[float]:
    return []


def client_for(
    dli: RecordedDli, waits: list[float], auth: Any = None, **policy: float
) -> DliClient:
    settings = {"max_attempts": 3, "timeout_s": 5.0, "base_delay_s": 0.5, "max_delay_s": 10.0}
    auth = auth or AkSkAuth(EnvCredentials(Secret(AK), Secret(SK), None))
    now = [1000.0]

    def sleep(seconds: float) -> None:  # recorded, and the client's clock moves on
        waits.append(seconds)
        now[0] += seconds

    return DliClient(
        ENDPOINT,
        auth,
        RetryPolicy(**{**settings, **policy}),
        dli,
        sleep=sleep,
        clock=lambda: now[0],
    )


@pytest.fixture
def client(dli: RecordedDli, waits: list[float]) -> DliClient:
    return client_for(dli, waits)


# -- SQL cancel: what DLI's answer means -----------------------------------------------------


def test_an_accepted_sql_cancel_is_cancelled(dli: RecordedDli, client: DliClient) -> None:
    dli.on(
        "DELETE",
        SQL_PATH,
        Reply(200, {"is_success": True, "message": ""}, {"X-Request-Id": "req-1"}),
    )

    outcome = client.cancel(JobRef(PID, JOB))

    assert (outcome.outcome, outcome.is_success, outcome.error_code) == ("cancelled", True, None)
    assert (outcome.http_status, outcome.request_id, outcome.attempts) == (200, "req-1", 1)
    [sent] = dli.sent
    assert (sent.method, sent.path, sent.query, sent.body) == ("DELETE", SQL_PATH, {}, None)
    assert sent.headers["X-Project-Id"] == PID
    assert sent.headers["Authorization"].startswith(f"SDK-HMAC-SHA256 Access={AK}, SignedHeaders=")
    assert SK not in json.dumps(sent.headers)


def test_a_200_without_is_success_is_not_a_cancel(dli: RecordedDli, client: DliClient) -> None:
    dli.on("DELETE", SQL_PATH, Reply(200, {"is_success": False, "message": "job is busy"}))
    dli.on("GET", SQL_PATH + "/status", sql_status("RUNNING"))

    outcome = client.cancel(JobRef(PID, JOB))

    assert (outcome.outcome, outcome.is_success, outcome.error_code) == (
        "rejected",
        False,
        "DLI_HTTP_200",
    )
    assert outcome.message == "job is busy"


@pytest.mark.parametrize("state", ["FINISHED", "FAILED", "CANCELLED"])
def test_a_refused_cancel_of_a_job_that_is_over_is_already_finished(
    dli: RecordedDli, client: DliClient, state: str
) -> None:
    dli.on("DELETE", SQL_PATH, dli_error(400, "DLI.0007", "Operation not supported"))
    dli.on("GET", SQL_PATH + "/status", sql_status(state))

    outcome = client.cancel(JobRef(PID, JOB))

    assert (outcome.outcome, outcome.is_success, outcome.error_code) == (
        "already_finished",
        False,
        "DLI.0007",
    )
    assert (outcome.message, outcome.http_status, outcome.request_id) == (
        f"job is {state}",
        400,
        "req-err",
    )
    assert dli.paths() == [("DELETE", SQL_PATH), ("GET", SQL_PATH + "/status")]


def test_a_refused_cancel_of_a_running_job_is_rejected(dli: RecordedDli, client: DliClient) -> None:
    dli.on("DELETE", SQL_PATH, dli_error(400, "DLI.0003", "SQL permission verification fails"))
    dli.on("GET", SQL_PATH + "/status", sql_status("RUNNING"))

    outcome = client.cancel(JobRef(PID, JOB))

    assert (outcome.outcome, outcome.error_code, outcome.message) == (
        "rejected",
        "DLI.0003",
        "SQL permission verification fails",
    )


@pytest.mark.parametrize(
    "reply",
    [dli_error(400, "DLI.0002", "Object does not exist"), dli_error(404, "DLI.0023", "none")],
    ids=["DLI.0002", "DLI.0023"],
)
def test_dlis_own_not_found_codes_need_no_state_read(
    dli: RecordedDli, client: DliClient, reply: Reply
) -> None:
    dli.on("DELETE", SQL_PATH, reply)

    outcome = client.cancel(JobRef(PID, JOB))

    assert (outcome.outcome, outcome.error_code) == ("not_found", reply.body["error_code"])
    assert len(dli.sent) == 1


def test_a_state_read_that_finds_no_job_is_not_found(dli: RecordedDli, client: DliClient) -> None:
    dli.on("DELETE", SQL_PATH, dli_error(400, "DLI.0001", "Parameter check errors"))
    dli.on("GET", SQL_PATH + "/status", dli_error(400, "DLI.0002", "Object does not exist"))

    outcome = client.cancel(JobRef(PID, JOB))

    assert (outcome.outcome, outcome.error_code) == ("not_found", "DLI.0001")


def test_a_refused_signature_is_a_configuration_fault_without_a_state_read(
    dli: RecordedDli, client: DliClient
) -> None:
    dli.on("DELETE", SQL_PATH, dli_error(401, "DLI.0014", "Service authentication errors"))

    with pytest.raises(Misconfigured) as raised:
        client.cancel(JobRef(PID, JOB))

    fault = raised.value
    assert fault.ages_out  # delivered again while young, ``failed`` when old
    assert (fault.error_code, fault.http_status, fault.attempts) == ("DLI.0014", 401, 1)
    assert fault.request_id == "req-err" and "Service authentication errors" in fault.message
    assert len(dli.sent) == 1  # environment credentials: nothing to re-read, no retry


class Refreshing(Auth):
    """An ``Auth`` whose credentials a 401 makes it renew (a rotated file, a new token)."""

    def __init__(self) -> None:
        super().__init__()
        self.refreshes = 0

    def after_unauthorized(self, call: Call) -> bool:
        self.refreshes += 1
        return True


def test_a_401_is_believed_after_one_credential_refresh(
    dli: RecordedDli, waits: list[float]
) -> None:
    auth = Refreshing()
    client = client_for(dli, waits, auth)
    dli.on("DELETE", SQL_PATH, dli_error(401, "DLI.0015", "The token has expired."))

    with pytest.raises(Misconfigured) as raised:
        client.cancel(JobRef(PID, JOB))

    assert (raised.value.error_code, raised.value.http_status) == ("DLI.0015", 401)
    assert (auth.refreshes, len(dli.sent), raised.value.attempts) == (1, 2, 2)
    assert waits == []  # a configuration fault is not retried with backoff


def test_a_401_that_a_refresh_cures_is_a_cancel(dli: RecordedDli, waits: list[float]) -> None:
    client = client_for(dli, waits, Refreshing())
    dli.on(
        "DELETE", SQL_PATH, dli_error(401, "DLI.0015", "expired"), Reply(200, {"is_success": True})
    )

    outcome = client.cancel(JobRef(PID, JOB))

    assert (outcome.outcome, outcome.attempts) == ("cancelled", 2)


@pytest.mark.parametrize(
    "reply",
    [
        dli_error(404, "APIG.0101", "The API does not exist or has not been published"),
        Reply(404, b"<html><body>404 Not Found</body></html>"),
        Reply(404, {}),
    ],
    ids=["gateway-code", "html", "no-code"],
)
def test_a_404_without_a_dli_code_is_a_configuration_fault_not_a_missing_job(
    dli: RecordedDli, client: DliClient, waits: list[float], reply: Reply
) -> None:
    dli.on("DELETE", SQL_PATH, reply)

    with pytest.raises(Misconfigured) as raised:
        client.cancel(JobRef(PID, JOB))

    code = reply.body["error_code"] if isinstance(reply.body, dict) and reply.body else None
    assert (raised.value.error_code, raised.value.http_status) == (code or "DLI_HTTP_404", 404)
    assert "DLI_ENDPOINT" in raised.value.message
    assert dli.paths() == [("DELETE", SQL_PATH)] and waits == []  # no retry, no state read


def test_a_state_read_that_only_the_gateway_answers_404_is_no_missing_job(
    dli: RecordedDli, client: DliClient
) -> None:
    dli.on("DELETE", SQL_PATH, dli_error(400, "DLI.0001", "Parameter check errors"))
    dli.on("GET", SQL_PATH + "/status", dli_error(404, "APIG.0101", "no such API"))

    with pytest.raises(Misconfigured):
        client.cancel(JobRef(PID, JOB))


def test_dli_0999_with_400_is_retried_like_a_5xx(
    dli: RecordedDli, client: DliClient, waits: list[float]
) -> None:
    dli.on("DELETE", SQL_PATH, dli_error(400, "DLI.0999", "Server-side errors"))

    with pytest.raises(TransientFailure) as raised:
        client.cancel(JobRef(PID, JOB))

    assert (raised.value.error_code, raised.value.http_status) == ("DLI.0999", 400)
    assert raised.value.attempts == 3 and len(waits) == 2


@pytest.mark.parametrize(
    "body",
    [
        {"is_success": False, "error_code": 500, "message": "odd"},
        {"is_success": False, "error_code": {"code": "DLI.0002"}},
        {"is_success": "yes"},
        {"message": "no flag at all"},
        ["is_success"],
    ],
    ids=["numeric-code", "object-code", "odd-flag", "no-flag", "list"],
)
def test_a_200_of_an_unexpected_shape_is_a_bad_reply_retried(
    dli: RecordedDli, client: DliClient, waits: list[float], body: Any
) -> None:
    dli.on("DELETE", SQL_PATH, Reply(200, body))

    with pytest.raises(TransientFailure) as raised:
        client.cancel(JobRef(PID, JOB))

    assert (raised.value.error_code, raised.value.http_status) == ("DLI_BAD_REPLY", 200)
    assert raised.value.attempts == 3 and len(waits) == 2


def test_a_state_answer_without_a_state_is_no_missing_job(
    dli: RecordedDli, client: DliClient
) -> None:
    dli.on("DELETE", SQL_PATH, dli_error(400, "DLI.0001", "Parameter check errors"))
    dli.on("GET", SQL_PATH + "/status", Reply(200, {"is_success": True, "message": ""}))

    with pytest.raises(TransientFailure) as raised:
        client.cancel(JobRef(PID, JOB))

    assert raised.value.error_code == "DLI_BAD_REPLY"


# -- Spark and Flink -------------------------------------------------------------------------


def test_spark_batch_cancel(dli: RecordedDli, client: DliClient) -> None:
    dli.on("DELETE", SPARK_PATH, Reply(200, {"msg": "deleted"}))

    outcome = client.cancel(JobRef(PID, BATCH, "spark"))

    assert (outcome.outcome, outcome.is_success) == ("cancelled", True)


def test_spark_batch_that_succeeded_is_already_finished(
    dli: RecordedDli, client: DliClient
) -> None:
    dli.on("DELETE", SPARK_PATH, dli_error(400, "DLI.0007", "batch is over"))
    dli.on("GET", SPARK_PATH + "/state", Reply(200, {"id": BATCH, "state": "Success"}))

    outcome = client.cancel(JobRef(PID, BATCH, "spark"))

    assert (outcome.outcome, outcome.message) == ("already_finished", "job is Success")


def test_flink_stop_with_dlis_string_flag(dli: RecordedDli, client: DliClient) -> None:
    accepted = [{"is_success": "true", "message": "The request for stopping DLI jobs is delivered"}]
    dli.on("POST", FLINK_STOP, Reply(200, accepted))

    outcome = client.cancel(JobRef(PID, FLINK, "flink"))

    assert (outcome.outcome, outcome.is_success) == ("cancelled", True)
    [sent] = dli.sent
    assert json.loads(sent.body or b"") == {"job_ids": [1234], "trigger_savepoint": False}


def test_flink_stop_refused_for_a_finished_job_is_already_finished(
    dli: RecordedDli, client: DliClient
) -> None:
    dli.on("POST", FLINK_STOP, Reply(200, [{"is_success": "false", "message": "job is over"}]))
    detail = {
        "is_success": "true",
        "message": "",
        "job_detail": {"job_id": 1234, "status": "job_finish"},
    }
    dli.on("GET", f"/v1.0/{PID}/streaming/jobs/{FLINK}", Reply(200, detail))

    outcome = client.cancel(JobRef(PID, FLINK, "flink"))

    assert (outcome.outcome, outcome.http_status) == ("already_finished", 200)


# -- transient faults ------------------------------------------------------------------------


def test_a_503_then_an_answer_is_absorbed_by_the_retries(
    dli: RecordedDli, client: DliClient, waits: list[float]
) -> None:
    dli.on("DELETE", SQL_PATH, Reply(503, b"busy"), Reply(200, {"is_success": True}))

    outcome = client.cancel(JobRef(PID, JOB))

    assert (outcome.outcome, outcome.attempts) == ("cancelled", 2)
    [wait] = waits
    assert 0 <= wait <= 1.0  # full jitter under base_delay_s * 2


@pytest.mark.parametrize(("retry_after", "waited"), [("2", 2.0), ("120", 10.0)])
def test_retry_after_of_a_429_is_honoured_up_to_the_cap(
    dli: RecordedDli, client: DliClient, waits: list[float], retry_after: str, waited: float
) -> None:
    dli.on(
        "DELETE",
        SQL_PATH,
        Reply(429, b"", {"Retry-After": retry_after}),
        Reply(200, {"is_success": True}),
    )

    assert client.cancel(JobRef(PID, JOB)).outcome == "cancelled"
    assert waits == [waited]


@pytest.mark.parametrize(
    ("reply", "code", "status"),
    [
        (
            Reply(503, b"<html>Service Unavailable</html>", {"X-Request-Id": "req-5"}),
            "DLI_HTTP_503",
            503,
        ),
        (Reply(429, {"error_code": "APIGW.0308", "error_msg": "throttled"}), "DLI_HTTP_429", 429),
        (Reply(200, b"<html>gateway</html>"), "DLI_BAD_REPLY", 200),
        (NewConnectionError(None, "Connection refused"), "DLI_UNREACHABLE", None),
        (ReadTimeoutError(None, ENDPOINT, "Read timed out."), "DLI_TIMEOUT", None),
    ],
    ids=["503", "429", "not-json", "refused", "read-timeout"],
)
def test_faults_that_outlast_the_retries_end_in_transient_failure(
    dli: RecordedDli,
    client: DliClient,
    waits: list[float],
    reply: Reply | Exception,
    code: str,
    status: int | None,
) -> None:
    dli.on("DELETE", SQL_PATH, reply)

    with pytest.raises(TransientFailure) as raised:
        client.cancel(JobRef(PID, JOB))

    failure = raised.value
    assert isinstance(failure, DliUnavailable) and failure.ages_out
    assert (failure.error_code, failure.attempts, failure.http_status) == (code, 3, status)
    assert len(dli.sent) == 3 and len(waits) == 2
    assert ENDPOINT not in failure.message  # the library's text carries the URL; ours does not


def test_no_attempt_starts_after_the_events_deadline(dli: RecordedDli, waits: list[float]) -> None:
    now = [100.0]
    client = DliClient(
        ENDPOINT,
        AkSkAuth(EnvCredentials(Secret(AK), Secret(SK), None)),
        RetryPolicy(),
        dli,
        sleep=waits.append,
        clock=lambda: now[0],
    )

    with pytest.raises(TransientFailure) as raised:
        client.bounded(99.0).cancel(JobRef(PID, JOB))

    assert (raised.value.error_code, raised.value.attempts) == ("DLI_TIMEOUT", 0)
    assert dli.sent == []


def test_each_attempt_gets_at_most_the_time_left(dli: RecordedDli, waits: list[float]) -> None:
    client = DliClient(
        ENDPOINT,
        AkSkAuth(EnvCredentials(Secret(AK), Secret(SK), None)),
        RetryPolicy(timeout_s=10.0),
        dli,
        clock=lambda: 100.0,
    )
    dli.on("DELETE", SQL_PATH, Reply(200, {"is_success": True}))

    client.bounded(102.5).cancel(JobRef(PID, JOB))

    assert dli.sent[0].timeout == 2.5


# -- authentication faults -------------------------------------------------------------------


def test_an_iam_outage_is_retried_like_dlis_own(dli: RecordedDli, waits: list[float]) -> None:
    client = client_for(dli, waits, Auth(TransientFault("IAM_HTTP_503", "IAM busy", 503)))
    dli.on("DELETE", SQL_PATH, Reply(200, {"is_success": True}))

    outcome = client.cancel(JobRef(PID, JOB))

    assert (outcome.outcome, outcome.attempts) == ("cancelled", 2)


def test_a_password_iam_refuses_is_a_configuration_fault(
    dli: RecordedDli, waits: list[float]
) -> None:
    client = client_for(dli, waits, Auth(AuthRefused(401, "IAM_HTTP_401", "wrong password")))

    with pytest.raises(Misconfigured) as raised:
        client.cancel(JobRef(PID, JOB))

    assert raised.value.ages_out
    assert (raised.value.error_code, raised.value.http_status) == ("IAM_HTTP_401", 401)
    assert dli.sent == [] and waits == []


def test_unreadable_credentials_are_not_retried_here(dli: RecordedDli, waits: list[float]) -> None:
    client = client_for(dli, waits, Auth(CredentialsUnavailable("file gone")))

    with pytest.raises(CredentialsUnavailable) as raised:
        client.cancel(JobRef(PID, JOB))

    assert not raised.value.ages_out and str(raised.value) == "file gone"
    assert dli.sent == [] and waits == []


# -- job states and listings -----------------------------------------------------------------


def test_job_state_of_an_unknown_job_is_none(dli: RecordedDli, client: DliClient) -> None:
    dli.on("GET", SQL_PATH + "/status", dli_error(400, "DLI.0002", "Object does not exist"))

    assert client.job_state(JobRef(PID, JOB)) is None


def test_job_state_refused_raises_dli_refused(dli: RecordedDli, client: DliClient) -> None:
    dli.on("GET", SQL_PATH + "/status", dli_error(400, "DLI.0003", "no permission"))

    with pytest.raises(DliRefused) as raised:
        client.job_state(JobRef(PID, JOB))

    assert (raised.value.error_code, raised.value.http_status) == ("DLI.0003", 400)


def listed(queue: str, status: str, count: int, start: int = 0) -> list[dict[str, Any]]:
    """``count`` listed SQL jobs; the same arguments give the same (UUID) ids."""
    return [
        {"job_id": str(uuid5(NAMESPACE_OID, f"{queue}/{status}/{n}")), "queue_name": queue}
        | {"status": status}
        for n in range(start, start + count)
    ]


def test_listing_follows_pages_to_the_total_and_keeps_only_active_jobs_of_the_queue(
    dli: RecordedDli, client: DliClient
) -> None:
    running = listed("etl", "RUNNING", 120)

    def jobs(query: dict[str, str]) -> Reply:
        page, state = int(query["current-page"]), query["job-status"]
        if state == "RUNNING":
            found = running[(page - 1) * 100 : page * 100]
            extra = listed("other", "RUNNING", 1) + listed("etl", "FINISHED", 1)
            return Reply(200, {"is_success": True, "job_count": 120, "jobs": found + extra})
        if state == "LAUNCHING":
            return Reply(200, {"is_success": True, "job_count": 1, "jobs": listed("etl", state, 1)})
        return Reply(200, {"is_success": True, "job_count": 0, "jobs": []})

    dli.routes[("GET", LIST_PATH)] = jobs

    found = client.list_active_sql_jobs(PID, "etl")

    assert found == [listed("etl", "LAUNCHING", 1)[0]["job_id"]] + [j["job_id"] for j in running]
    asked = [(s.query["job-status"], s.query["current-page"]) for s in dli.sent]
    assert asked == [("LAUNCHING", "1"), ("RUNNING", "1"), ("RUNNING", "2"), ("SCALING", "1")]
    assert {s.query["queue_name"] for s in dli.sent} == {"etl"}
    assert {s.query["page-size"] for s in dli.sent} == {"100"}


@pytest.mark.parametrize(
    ("reply", "code", "message"),
    [
        (
            dli_error(400, "DLI.0002", "There is no queue named etl"),
            "DLI.0002",
            "There is no queue named etl",
        ),
        (Reply(200, {"is_success": False, "message": "denied"}), "DLI_HTTP_200", "denied"),
    ],
    ids=["error-body", "is_success-false"],
)
def test_a_refused_listing_raises_dli_refused(
    dli: RecordedDli, client: DliClient, reply: Reply, code: str, message: str
) -> None:
    dli.on("GET", LIST_PATH, reply)

    with pytest.raises(DliRefused) as raised:
        client.list_active_sql_jobs(PID, "etl")

    assert (raised.value.error_code, raised.value.message) == (code, message)


def serving(jobs: dict[str, list[dict[str, Any]]], cap: int, total: bool = True) -> Route:
    """A listing route that serves at most ``cap`` jobs per page, whatever page-size asks."""

    def answer(query: dict[str, str]) -> Reply:
        page, found = int(query["current-page"]), jobs.get(query["job-status"], [])
        body: dict[str, Any] = {"is_success": True, "jobs": found[(page - 1) * cap : page * cap]}
        if total:
            body["job_count"] = len(found)
        return Reply(200, body)

    return answer


@pytest.mark.parametrize("total", [True, False], ids=["with-job_count", "without-total"])
def test_a_dli_serving_50_per_page_lists_all_120(
    dli: RecordedDli, client: DliClient, total: bool
) -> None:
    running = listed("etl", "RUNNING", 120)
    dli.routes[("GET", LIST_PATH)] = serving({"RUNNING": running}, cap=50, total=total)

    found = client.list_active_sql_jobs(PID, "etl")

    assert found == [j["job_id"] for j in running]
    pages = [s.query["current-page"] for s in dli.sent if s.query["job-status"] == "RUNNING"]
    # to the total (1, 2, 3), or without one to the first empty page (4)
    assert pages == (["1", "2", "3"] if total else ["1", "2", "3", "4"])


def test_a_job_that_moves_on_between_two_listings_is_still_seen(
    dli: RecordedDli, client: DliClient
) -> None:
    jobs = {"LAUNCHING": listed("etl", "LAUNCHING", 1)}
    moving = jobs["LAUNCHING"][0]
    inner = serving(jobs, cap=100)

    def answer(query: dict[str, str]) -> Reply:
        reply = inner(query)
        # it starts running right after the first listing request, whichever state it asked
        jobs["LAUNCHING"], jobs["RUNNING"] = [], [{**moving, "status": "RUNNING"}]
        return reply

    dli.routes[("GET", LIST_PATH)] = answer

    assert client.list_active_sql_jobs(PID, "etl") == [moving["job_id"]]


@pytest.mark.parametrize(
    "body",
    [
        {"is_success": True, "job_count": 3, "jobs": {"a": 1}},
        {"is_success": True, "job_count": "3", "jobs": []},
        {"is_success": "maybe", "jobs": []},
        ["jobs"],
    ],
    ids=["jobs-not-a-list", "total-not-a-count", "odd-flag", "not-an-object"],
)
def test_a_listing_page_of_the_wrong_structure_is_a_bad_reply(
    dli: RecordedDli, client: DliClient, body: Any
) -> None:
    dli.on("GET", LIST_PATH, Reply(200, body))

    with pytest.raises(TransientFailure) as raised:
        client.list_active_sql_jobs(PID, "etl")

    assert (raised.value.error_code, raised.value.attempts) == ("DLI_BAD_REPLY", 3)
