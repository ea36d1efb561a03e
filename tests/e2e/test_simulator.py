"""The DLI simulator over raw HTTP: AK/SK and token auth, faults, request log, admin API, CLI."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from cancel_handler.dli.signer import authorization, canonical_query, sdk_date
from dli_simulator import Fault, Simulator

AK = "SIMAK0000000000000001"
SK = "sim-secret"
PID = "0123456789abcdef0123456789abcdef"
OTHER_PID = "fedcba9876543210fedcba9876543210"
MISSING_JOB = "5a3a2c2e-1111-4222-8333-944455556666"
IAM_USER = ("acme", "robot")
IAM_PASSWORD = "s3cret!"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(credentials={AK: SK}, iam_users={IAM_USER: IAM_PASSWORD}) as simulator:
        yield simulator


def signed(
    base_url: str,
    method: str,
    path: str,
    *,
    query: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    sk: str = SK,
    date: str | None = None,
    extra_headers: Mapping[str, str] | None = None,
    send_path: str | None = None,
    send_query: list[tuple[str, str]] | None = None,
    session: requests.Session | None = None,
) -> requests.Response:
    """A request signed with our signer (``send_*`` lets a test tamper after signing)."""
    headers = {
        "Host": urlsplit(base_url).netloc,
        "X-Sdk-Date": date or sdk_date(),
        "Content-Type": "application/json",
        **(extra_headers or {}),
    }
    pairs = query or []
    headers["Authorization"] = authorization(
        method=method,
        path=path,
        headers=headers,
        access_key=AK,
        secret_key=sk,
        query=pairs,
        body=body,
    )
    wire_query = canonical_query(send_query if send_query is not None else pairs)
    url = base_url + (send_path or path) + (f"?{wire_query}" if wire_query else "")
    return (session or requests).request(method, url, headers=headers, data=body, timeout=5)


def cancel(sim: Simulator, job_id: str, **kwargs: Any) -> requests.Response:
    return signed(sim.base_url, "DELETE", f"/v1.0/{PID}/jobs/{job_id}", **kwargs)


def issue_token(
    sim: Simulator, *, project: Mapping[str, str] | None = None, password: str = IAM_PASSWORD
) -> requests.Response:
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {
                        "name": IAM_USER[1],
                        "password": password,
                        "domain": {"name": IAM_USER[0]},
                    },
                },
            },
            "scope": {"project": dict(project or {"id": PID})},
        }
    }
    return requests.post(f"{sim.base_url}/v3/auth/tokens", json=body, timeout=5)


def with_token(sim: Simulator, token: str, path: str) -> requests.Response:
    return requests.get(sim.base_url + path, headers={"X-Auth-Token": token}, timeout=5)


# ---- AK/SK ------------------------------------------------------------------------------------
def test_signed_request_is_served_with_unique_request_ids(sim: Simulator) -> None:
    job_id = sim.submit_sql_job(PID)
    first = signed(sim.base_url, "GET", f"/v1.0/{PID}/jobs/{job_id}/status")
    second = signed(sim.base_url, "GET", f"/v1.0/{PID}/jobs", query=[("page-size", "10")])
    assert first.status_code == 200 and first.json()["status"] == "RUNNING"
    assert second.status_code == 200 and second.json()["job_count"] == 1
    ids = {first.headers["X-Request-Id"], second.headers["X-Request-Id"]}
    assert len(ids) == 2 and all(ids)


@pytest.mark.parametrize("skew", [timedelta(minutes=-20), timedelta(minutes=20)])
def test_stale_or_future_sdk_date_is_401(sim: Simulator, skew: timedelta) -> None:
    job_id = sim.submit_sql_job(PID)
    response = cancel(sim, job_id, date=sdk_date(datetime.now(UTC) + skew))
    assert response.status_code == 401
    assert response.json()["error_code"] == "DLI.0014"
    assert "X-Sdk-Date" in response.json()["error_msg"]
    assert sim.job_status(PID, job_id) == "RUNNING"
    # Within the allowed skew (900 s) it is accepted.
    assert cancel(sim, job_id, date=sdk_date(datetime.now(UTC) - timedelta(minutes=5))).ok


def test_tampered_path_query_and_body_are_401(sim: Simulator) -> None:
    signed_for, other = sim.submit_sql_job(PID), sim.submit_sql_job(PID)
    path = cancel(sim, signed_for, send_path=f"/v1.0/{PID}/jobs/{other}")
    query = signed(
        sim.base_url,
        "GET",
        f"/v1.0/{PID}/jobs",
        query=[("page-size", "10")],
        send_query=[("page-size", "20")],
    )
    stop_path = f"/v1.0/{PID}/streaming/jobs/stop"
    body = signed(sim.base_url, "POST", stop_path, body=b'{"job_ids": [1]}')
    assert body.status_code == 200  # correctly signed body
    headers = {
        "Host": urlsplit(sim.base_url).netloc,
        "X-Sdk-Date": sdk_date(),
        "Content-Type": "application/json",
    }
    headers["Authorization"] = authorization(
        method="POST",
        path=stop_path,
        headers=headers,
        access_key=AK,
        secret_key=SK,
        body=b'{"job_ids": [1]}',
    )
    tampered = requests.post(
        sim.base_url + stop_path, data=b'{"job_ids": [2]}', headers=headers, timeout=5
    )
    for response in (path, query, tampered):
        assert response.status_code == 401
        assert response.json()["error_code"] == "DLI.0014"
    assert sim.job_status(PID, other) == "RUNNING"


def test_unknown_ak_wrong_sk_and_no_auth(sim: Simulator) -> None:
    job_id = sim.submit_sql_job(PID)
    wrong_sk = cancel(sim, job_id, sk="nope")
    no_auth = requests.delete(f"{sim.base_url}/v1.0/{PID}/jobs/{job_id}", timeout=5)
    unknown_ak = requests.delete(
        f"{sim.base_url}/v1.0/{PID}/jobs/{job_id}",
        headers={"Authorization": "SDK-HMAC-SHA256 Access=X, SignedHeaders=host, Signature=00"},
        timeout=5,
    )
    assert (wrong_sk.status_code, wrong_sk.json()["error_code"]) == (401, "DLI.0014")
    assert (no_auth.status_code, no_auth.json()["error_code"]) == (401, "DLI.0013")
    assert (unknown_ak.status_code, unknown_ak.json()["error_code"]) == (401, "DLI.0014")
    assert sim.job_status(PID, job_id) == "RUNNING"


def test_bad_project_id_and_unknown_path(sim: Simulator) -> None:
    bad = signed(sim.base_url, "GET", "/v1.0/not-a-project/jobs")
    assert (bad.status_code, bad.json()["error_code"]) == (400, "DLI.0001")
    unknown = signed(sim.base_url, "GET", f"/v1.0/{PID}/nothing-here")
    assert (unknown.status_code, unknown.json()["error_code"]) == (404, "APIGW.0101")


def test_x_project_id_must_match_the_path(sim: Simulator) -> None:
    path = f"/v1.0/{PID}/jobs"
    assert signed(sim.base_url, "GET", path, extra_headers={"X-Project-Id": PID}).ok
    mismatch = signed(sim.base_url, "GET", path, extra_headers={"X-Project-Id": OTHER_PID})
    assert (mismatch.status_code, mismatch.json()["error_code"]) == (401, "DLI.0014")


def test_security_tokens_are_required_when_configured() -> None:
    with Simulator(credentials={AK: SK}, security_tokens={"STS-1"}) as sim:
        path = f"/v1.0/{PID}/jobs"
        assert signed(sim.base_url, "GET", path).status_code == 401
        good = signed(sim.base_url, "GET", path, extra_headers={"X-Security-Token": "STS-1"})
        assert good.status_code == 200
        bad = signed(sim.base_url, "GET", path, extra_headers={"X-Security-Token": "STS-2"})
        assert (bad.status_code, bad.json()["error_code"]) == (401, "DLI.0014")


# ---- SQL API details ----------------------------------------------------------------------
def test_sql_list_parameters_are_validated(sim: Simulator) -> None:
    for value in ("0", "101", "abc"):
        answer = signed(sim.base_url, "GET", f"/v1.0/{PID}/jobs", query=[("page-size", value)])
        assert (answer.status_code, answer.json()["error_code"]) == (400, "DLI.0001")
    jobs = sim.add_sql_jobs(PID, 3, queue_name="q")
    ascending = signed(
        sim.base_url,
        "GET",
        f"/v1.0/{PID}/jobs",
        query=[("order", "start_time_asc"), ("page-size", "2"), ("current-page", "2")],
    ).json()
    assert ascending["job_count"] == 3 and [j["job_id"] for j in ascending["jobs"]] == jobs[2:]
    by_id = signed(sim.base_url, "GET", f"/v1.0/{PID}/jobs", query=[("job-id", jobs[1])]).json()
    assert [j["job_id"] for j in by_id["jobs"]] == [jobs[1]]


def test_submit_job_requires_sql(sim: Simulator) -> None:
    path = f"/v1.0/{PID}/jobs/submit-job"
    missing = signed(sim.base_url, "POST", path, body=b'{"queue_name": "q"}')
    assert (missing.status_code, missing.json()["error_code"]) == (400, "DLI.0001")
    created = signed(sim.base_url, "POST", path, body=b'{"sql": "INSERT INTO t SELECT 1"}')
    assert created.json()["job_type"] == "INSERT"
    assert sim.job_status(PID, created.json()["job_id"]) == "RUNNING"


def test_flink_stop_validates_the_body(sim: Simulator) -> None:
    path = f"/v1.0/{PID}/streaming/jobs/stop"
    for body in (b"{}", b'{"job_ids": ["1"]}', b"not json", b'{"job_ids": []}'):
        answer = signed(sim.base_url, "POST", path, body=body)
        assert (answer.status_code, answer.json()["error_code"]) == (400, "DLI.0001")


# ---- tokens -----------------------------------------------------------------------------------
def test_token_issue_and_use(sim: Simulator) -> None:
    answer = issue_token(sim)
    assert answer.status_code == 201
    token = answer.headers["X-Subject-Token"]
    body = answer.json()["token"]
    assert body["project"]["id"] == PID and body["methods"] == ["password"]
    iso = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(\d{3})?Z$"
    assert re.match(iso, body["expires_at"]) and re.match(iso, body["issued_at"])
    expires = datetime.fromisoformat(body["expires_at"])
    assert timedelta(hours=23) < expires - datetime.now(UTC) <= timedelta(hours=24)
    assert sim.issued_tokens() == [token]

    job_id = sim.submit_sql_job(PID)
    status = with_token(sim, token, f"/v1.0/{PID}/jobs/{job_id}/status")
    assert status.status_code == 200 and status.json()["job_id"] == job_id
    assert (sim.requests()[-1].auth, sim.requests()[-1].access_key) == ("token", None)
    other = with_token(sim, token, f"/v1.0/{OTHER_PID}/jobs")
    assert (other.status_code, other.json()["error_code"]) == (401, "DLI.0013")
    forged = with_token(sim, token + "x", f"/v1.0/{PID}/jobs")
    assert (forged.status_code, forged.json()["error_code"]) == (401, "DLI.0015")


def test_token_wrong_password_and_scope_by_name(sim: Simulator) -> None:
    wrong = issue_token(sim, password="guess")
    assert wrong.status_code == 401
    assert wrong.json() == {
        "error": {
            "code": 401,
            "message": "The username or password is wrong.",
            "title": "Unauthorized",
        }
    }
    assert "X-Subject-Token" not in wrong.headers
    by_name = issue_token(sim, project={"name": "eu-de"})
    project_id = hashlib.md5(b"eu-de").hexdigest()
    assert by_name.json()["token"]["project"] == {
        "id": project_id,
        "name": "eu-de",
        "domain": by_name.json()["token"]["user"]["domain"],
    }
    token = by_name.headers["X-Subject-Token"]
    assert with_token(sim, token, f"/v1.0/{project_id}/jobs").status_code == 200


def test_token_revoke_and_expiry(sim: Simulator) -> None:
    revoked = issue_token(sim).headers["X-Subject-Token"]
    sim.revoke_token(revoked)
    answer = with_token(sim, revoked, f"/v1.0/{PID}/jobs")
    assert (answer.status_code, answer.json()["error_code"]) == (401, "DLI.0015")

    sim.set_token_ttl(0.3)
    short = issue_token(sim)
    lifetime = datetime.fromisoformat(short.json()["token"]["expires_at"]) - datetime.fromisoformat(
        short.json()["token"]["issued_at"]
    )
    assert lifetime == timedelta(milliseconds=300)
    token = short.headers["X-Subject-Token"]
    assert with_token(sim, token, f"/v1.0/{PID}/jobs").status_code == 200
    time.sleep(0.35)
    expired = with_token(sim, token, f"/v1.0/{PID}/jobs")
    assert (expired.status_code, expired.json()["error_code"]) == (401, "DLI.0015")
    assert "expired" in expired.json()["error_msg"]


# ---- faults -----------------------------------------------------------------------------------
def test_status_fault_for_n_requests_then_normal(sim: Simulator) -> None:
    job_id = sim.submit_sql_job(PID)
    sim.add_fault(Fault(count=2, status=503, retry_after="1", method="DELETE"))
    # A GET does not match (method filter) and does not consume the fault.
    assert signed(sim.base_url, "GET", f"/v1.0/{PID}/jobs").status_code == 200
    answers = [cancel(sim, job_id) for _ in range(3)]
    assert [a.status_code for a in answers] == [503, 503, 200]
    assert [a.headers.get("Retry-After") for a in answers] == ["1", "1", None]
    assert answers[0].json()["error_code"] == "DLI.0999"
    assert all(a.headers["X-Request-Id"] for a in answers)
    assert [r.status for r in sim.cancel_requests()] == [503, 503, 200]
    assert sim.job_status(PID, job_id) == "CANCELLED"


def test_throttling_fault_and_path_filter(sim: Simulator) -> None:
    sim.add_fault(Fault(status=429, retry_after="2", path_contains="/batches"))
    assert signed(sim.base_url, "GET", f"/v1.0/{PID}/jobs").status_code == 200
    throttled = signed(sim.base_url, "GET", f"/v2.0/{PID}/batches")
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "2"
    assert throttled.json()["error_code"] == "APIGW.0308"
    assert signed(sim.base_url, "GET", f"/v2.0/{PID}/batches").status_code == 200


def test_rate_limit_answers_429_with_retry_after_like_the_gateway(sim: Simulator) -> None:
    jobs = [sim.submit_sql_job(PID) for _ in range(30)]
    sim.set_rate_limit(2)
    session = requests.Session()

    answers = [cancel(sim, job_id, session=session) for job_id in jobs]
    token = issue_token(sim)

    throttled = [a for a in answers if a.status_code == 429]
    passed = [j for j, a in zip(jobs, answers, strict=True) if a.status_code == 200]
    # 30 quick requests do not spread over 15 seconds: some are over the limit of 2
    assert throttled and len(passed) + len(throttled) == len(jobs)
    assert {a.headers["Retry-After"] for a in throttled} == {"1"}
    assert {a.json()["error_code"] for a in throttled} == {"APIGW.0308"}
    assert [sim.job_status(PID, j) for j in jobs] == [
        "CANCELLED" if j in passed else "RUNNING" for j in jobs
    ]
    assert token.status_code == 201  # IAM is not behind DLI's gateway limit
    sim.set_rate_limit(None)
    assert all(cancel(sim, j, session=session).status_code != 429 for j in jobs)


def test_rate_limit_is_set_through_the_admin_api(sim: Simulator) -> None:
    job_ids = [sim.submit_sql_job(PID) for _ in range(10)]
    config = f"{sim.base_url}/_sim/config"
    assert requests.post(config, json={"rate_limit_per_s": 1}, timeout=10).ok

    statuses = [cancel(sim, job_id).status_code for job_id in job_ids]

    assert 429 in statuses
    assert requests.post(config, json={"rate_limit_per_s": 0}, timeout=10).ok
    assert signed(sim.base_url, "GET", f"/v1.0/{PID}/jobs").status_code == 200


def test_drop_fault_closes_the_connection(sim: Simulator) -> None:
    job_id = sim.submit_sql_job(PID)
    sim.add_fault(Fault(drop=True))
    with pytest.raises(requests.ConnectionError):
        cancel(sim, job_id)
    assert sim.requests()[-1].status == 0
    assert sim.job_status(PID, job_id) == "RUNNING"
    assert cancel(sim, job_id).status_code == 200


def test_non_json_body_fault(sim: Simulator) -> None:
    sim.add_fault(Fault(status=502, body="<html>bad gateway</html>"))
    answer = signed(sim.base_url, "GET", f"/v1.0/{PID}/jobs")
    assert answer.status_code == 502 and answer.text == "<html>bad gateway</html>"
    assert answer.headers["Content-Type"].startswith("text/html")


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        (Fault(status=400, error_code="DLI.0999"), 400, "DLI.0999"),
        (Fault(status=404, error_code="APIG.0101"), 404, "APIG.0101"),
        (Fault(status=401), 401, "DLI.0013"),
        (Fault(status=403), 403, "DLI.0003"),
        (Fault(status=409), 409, "DLI.0001"),
        (Fault(status=500), 500, "DLI.0999"),
    ],
    ids=["dli-0999-with-400", "gateway-404", "401", "403", "409", "500"],
)
def test_error_code_fault(sim: Simulator, fault: Fault, status: int, code: str) -> None:
    sim.add_fault(fault)
    answer = signed(sim.base_url, "GET", f"/v1.0/{PID}/jobs")
    assert answer.status_code == status
    assert answer.json() == {"error_code": code, "error_msg": "Simulated fault."}


@pytest.mark.parametrize(
    "body",
    ['{"is_success": false, "error_code": 12}', '{"error_code": {"a": [1]}}', "[1, 2]", "null"],
)
def test_json_body_fault_of_any_type_and_shape(sim: Simulator, body: str) -> None:
    sim.add_fault(Fault(status=200, body=body, content_type="application/json"))
    answer = signed(sim.base_url, "GET", f"/v1.0/{PID}/jobs")
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/json"
    assert answer.json() == json.loads(body)


def list_page(sim: Simulator, page: int, size: int = 100, state: str = "RUNNING") -> Any:
    query = [("current-page", str(page)), ("job-status", state), ("page-size", str(size))]
    query.append(("queue_name", "capped"))
    answer = signed(sim.base_url, "GET", f"/v1.0/{PID}/jobs", query=query)
    assert answer.status_code == 200
    return answer.json()


def test_page_cap_serves_fewer_jobs_per_page_than_asked(sim: Simulator) -> None:
    jobs = sim.add_sql_jobs(PID, 120, queue_name="capped")
    sim.set_page_cap(50)
    pages = [list_page(sim, n) for n in (1, 2, 3, 4)]
    assert [len(p["jobs"]) for p in pages] == [50, 50, 20, 0]
    assert {p["job_count"] for p in pages} == {120}
    assert sorted(j["job_id"] for p in pages for j in p["jobs"]) == sorted(jobs)
    assert admin(sim, "POST", "config", {"page_cap": None}).ok
    assert len(list_page(sim, 1)["jobs"]) == 100
    assert admin(sim, "POST", "config", {"page_cap": 7}).ok
    assert len(list_page(sim, 1, size=5)["jobs"]) == 5  # a smaller page asked: served


def test_a_job_moves_on_right_after_the_next_listing(sim: Simulator) -> None:
    [job] = sim.add_sql_jobs(PID, 1, queue_name="capped", status="LAUNCHING")
    sim.move_after_next_listing(PID, job, "RUNNING")
    assert list_page(sim, 1, state="RUNNING")["jobs"] == []  # answered before the move
    assert sim.job_status(PID, job) == "RUNNING"
    assert list_page(sim, 1, state="LAUNCHING")["jobs"] == []
    assert [j["job_id"] for j in list_page(sim, 1, state="RUNNING")["jobs"]] == [job]
    assert admin(sim, "POST", "moves", {"project_id": PID, "job_id": job, "status": "SCALING"}).ok
    list_page(sim, 1)
    assert sim.job_status(PID, job) == "SCALING"


def test_delay_only_fault_then_normal_answer(sim: Simulator) -> None:
    sim.add_fault(Fault(delay_s=0.3))
    started = time.monotonic()
    answer = signed(sim.base_url, "GET", f"/v1.0/{PID}/jobs")
    assert answer.status_code == 200 and time.monotonic() - started >= 0.3
    started = time.monotonic()
    assert signed(sim.base_url, "GET", f"/v1.0/{PID}/jobs").ok
    assert time.monotonic() - started < 0.3


def test_cancel_delay_is_served_concurrently(sim: Simulator) -> None:
    jobs = sim.add_sql_jobs(PID, 8, queue_name="q")
    sim.set_cancel_delay(0.3)
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda j: cancel(sim, j), jobs))
    elapsed = time.monotonic() - started
    assert all(a.status_code == 200 for a in answers)
    assert 0.3 <= elapsed < 1.5
    assert all(sim.job_status(PID, j) == "CANCELLED" for j in jobs)


# ---- request log and lifecycle -----------------------------------------------------------
def test_request_log_records_everything_but_admin(sim: Simulator) -> None:
    job_id = sim.submit_sql_job(PID)
    signed(sim.base_url, "GET", f"/v1.0/{PID}/jobs", query=[("queue_name", "q q")])
    cancel(sim, job_id)
    requests.get(f"{sim.base_url}/_sim/requests", timeout=5)
    log = sim.requests()
    assert [(r.method, r.status) for r in log] == [("GET", 200), ("DELETE", 200)]
    listing, cancelled = log
    assert listing.query == {"queue_name": "q q"}
    assert listing.path == f"/v1.0/{PID}/jobs"
    assert (listing.auth, listing.access_key) == ("aksk", AK)
    assert listing.headers["x-sdk-date"] == listing.headers["X-Sdk-Date"]
    assert "Authorization" in listing.headers
    assert [r.request_id for r in sim.cancel_requests()] == [cancelled.request_id]
    sim.clear_requests()
    assert sim.requests() == []


def test_stop_cuts_keep_alive_connections() -> None:
    sim = Simulator(credentials={AK: SK})
    sim.start()
    with requests.Session() as session:
        assert signed(sim.base_url, "GET", f"/v1.0/{PID}/jobs", session=session).ok
        sim.stop()
        with pytest.raises(requests.ConnectionError):
            signed(sim.base_url, "GET", f"/v1.0/{PID}/jobs", session=session)


# ---- admin API ------------------------------------------------------------------------------
def admin(sim: Simulator, method: str, path: str, body: Any = None) -> requests.Response:
    return requests.request(method, f"{sim.base_url}/_sim/{path}", json=body, timeout=5)


def test_admin_jobs_and_state(sim: Simulator) -> None:
    sql = admin(
        sim, "POST", "jobs", {"project_id": PID, "kind": "sql", "count": 3, "queue_name": "etl"}
    ).json()["job_ids"]
    spark = admin(sim, "POST", "jobs", {"project_id": PID, "kind": "spark"}).json()["job_ids"]
    flink = admin(
        sim, "POST", "jobs", {"project_id": PID, "kind": "flink", "status": "job_idle"}
    ).json()["job_ids"]
    assert len(sql) == 3 and len(spark) == 1 and isinstance(flink[0], int)
    assert admin(sim, "GET", f"jobs/{PID}/{sql[0]}").json() == {
        "project_id": PID,
        "job_id": sql[0],
        "kind": "sql",
        "status": "RUNNING",
    }
    assert admin(sim, "GET", f"jobs/{PID}/{spark[0]}").json()["status"] == "running"
    assert admin(sim, "GET", f"jobs/{PID}/{flink[0]}").json()["status"] == "job_idle"
    assert admin(sim, "GET", f"jobs/{PID}/{MISSING_JOB}").status_code == 404
    listed = signed(sim.base_url, "GET", f"/v1.0/{PID}/jobs", query=[("queue_name", "etl")])
    assert listed.json()["job_count"] == 3
    assert admin(sim, "POST", "jobs", {"project_id": PID, "kind": "hive"}).status_code == 400


def test_admin_seeds_jobs_of_a_given_age_with_tags(sim: Simulator) -> None:
    before_ms = time.time() * 1000
    seeded = {
        "project_id": PID,
        "kind": "sql",
        "queue_name": "etl",
        "age_s": 7200,
        "tags": {"dli-cancel": "exempt"},
    }
    [sql] = admin(sim, "POST", "jobs", seeded).json()["job_ids"]
    [spark] = admin(sim, "POST", "jobs", {"project_id": PID, "kind": "spark", "age_s": 600}).json()[
        "job_ids"
    ]
    [flink] = admin(sim, "POST", "jobs", {"project_id": PID, "kind": "flink", "age_s": 90}).json()[
        "job_ids"
    ]

    [job] = signed(sim.base_url, "GET", f"/v1.0/{PID}/jobs").json()["jobs"]
    assert job["job_id"] == sql and job["status"] == "RUNNING"
    assert before_ms - 7_200_000 - 1000 <= job["start_time"] <= before_ms - 7_200_000 + 1000
    assert 7_200_000 <= job["duration"] < 7_300_000
    assert job["tags"] == [{"key": "dli-cancel", "value": "exempt"}]
    [batch] = signed(sim.base_url, "GET", f"/v2.0/{PID}/batches").json()["sessions"]
    assert batch["id"] == spark and 600_000 <= batch["duration"] < 700_000
    assert abs(batch["create_time"] - (before_ms - 600_000)) < 1000
    listing = signed(sim.base_url, "GET", f"/v1.0/{PID}/streaming/jobs").json()
    [stream] = listing["job_list"]["jobs"]
    assert stream["job_id"] == flink and 90_000 <= stream["duration"] < 190_000
    assert abs(stream["start_time"] - (before_ms - 90_000)) < 1000
    bad = {"project_id": PID, "kind": "spark", "tags": {"a": "b"}}
    assert admin(sim, "POST", "jobs", bad).status_code == 400
    assert admin(sim, "POST", "jobs", {"project_id": PID, "age_s": -1}).status_code == 400


def test_admin_faults_requests_config_and_tokens(sim: Simulator) -> None:
    job_id = sim.submit_sql_job(PID)
    assert admin(sim, "POST", "faults", {"status": 500, "count": 1}).ok
    assert admin(sim, "POST", "faults", {"bogus": 1}).status_code == 400
    assert cancel(sim, job_id).status_code == 500
    assert admin(sim, "POST", "config", {"cancel_delay_s": 0.2}).ok
    started = time.monotonic()
    assert cancel(sim, job_id).status_code == 200
    assert time.monotonic() - started >= 0.2
    signed(sim.base_url, "GET", f"/v1.0/{PID}/jobs")

    cancels = admin(sim, "GET", "requests", None)
    assert [r["status"] for r in cancels.json()] == [500, 200, 200]
    only = requests.get(f"{sim.base_url}/_sim/requests?cancel_only=1", timeout=5).json()
    assert [(r["method"], r["status"]) for r in only] == [("DELETE", 500), ("DELETE", 200)]
    assert only[0]["headers"]["Authorization"].startswith("SDK-HMAC-SHA256 Access=" + AK)
    assert admin(sim, "DELETE", "requests").ok
    assert sim.requests() == []

    assert admin(sim, "POST", "config", {"token_ttl_s": 60}).ok
    token_answer = issue_token(sim)
    token = token_answer.headers["X-Subject-Token"]
    lifetime = datetime.fromisoformat(
        token_answer.json()["token"]["expires_at"]
    ) - datetime.fromisoformat(token_answer.json()["token"]["issued_at"])
    assert lifetime == timedelta(seconds=60)
    assert admin(sim, "POST", "tokens/revoke", {"token": token}).ok
    assert with_token(sim, token, f"/v1.0/{PID}/jobs").status_code == 401
    assert admin(sim, "POST", "tokens/revoke", {"token": "unknown"}).status_code == 404
    assert admin(sim, "GET", "nothing").status_code == 404


# ---- command line -----------------------------------------------------------------------------
def test_cli_prints_url_first_and_serves_until_terminated() -> None:
    env = {**os.environ, "HUAWEICLOUD_SDK_AK": AK, "HUAWEICLOUD_SDK_SK": SK}
    command = [
        sys.executable,
        "-m",
        "dli_simulator",
        "--port",
        "0",
        "--fault-status",
        "503",
        "--fault-count",
        "1",
        "--fault-retry-after",
        "1",
    ]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", base_url)
        first = signed(base_url, "GET", f"/v1.0/{PID}/jobs")
        assert first.status_code == 503 and first.headers["Retry-After"] == "1"
        assert signed(base_url, "GET", f"/v1.0/{PID}/jobs").status_code == 200
        assert signed(base_url, "GET", f"/v1.0/{PID}/jobs", sk="other").status_code == 401
        created = admin_post(base_url, {"project_id": PID, "kind": "sql"})
        assert signed(base_url, "DELETE", f"/v1.0/{PID}/jobs/{created[0]}").json()["is_success"]
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_cli_seeds_jobs_of_a_given_age() -> None:
    env = {**os.environ, "HUAWEICLOUD_SDK_AK": AK, "HUAWEICLOUD_SDK_SK": SK}
    seeds = ["--seed", "sql:etl:2h:2", "--seed", "spark:etl:90m", "--seed", "sql:etl:5"]
    command = [sys.executable, "-m", "dli_simulator", "--project-id", PID, *seeds]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        base_url = process.stdout.readline().strip()
        notes = [process.stderr.readline() for _ in seeds[1::2]]
        assert notes[0].startswith("seeded 2 sql job(s) on queue etl, started 7200 s ago: ")
        assert notes[1].startswith("seeded 1 spark job(s) on queue etl, started 5400 s ago: ")
        jobs = signed(base_url, "GET", f"/v1.0/{PID}/jobs").json()["jobs"]
        assert sorted(j["duration"] // 1000 for j in jobs) == [5, 7200, 7200]
        [batch] = signed(base_url, "GET", f"/v2.0/{PID}/batches").json()["sessions"]
        assert batch["duration"] // 1000 == 5400
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_cli_refuses_a_bad_seed() -> None:
    command = [sys.executable, "-m", "dli_simulator", "--project-id", PID, "--seed", "sql:etl"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2
    assert "expected KIND:QUEUE:AGE[:COUNT[:TAGS]]" in done.stderr


def test_cli_generates_credentials_when_none_configured() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUAWEICLOUD_SDK_")}
    command = [sys.executable, "-m", "dli_simulator"]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        base_url = process.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        ak_line, sk_line = process.stderr.readline(), process.stderr.readline()
        ak = ak_line.strip().removeprefix("HUAWEICLOUD_SDK_AK=")
        sk = sk_line.strip().removeprefix("HUAWEICLOUD_SDK_SK=")
        assert ak and sk and ak != ak_line.strip()
        headers = {"Host": urlsplit(base_url).netloc, "X-Sdk-Date": sdk_date()}
        path = f"/v1.0/{PID}/jobs"
        headers["Authorization"] = authorization(
            method="GET", path=path, headers=headers, access_key=ak, secret_key=sk
        )
        assert requests.get(base_url + path, headers=headers, timeout=5).status_code == 200
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_dli_cancel_simulator_runs_outside_the_checkout(tmp_path: Path) -> None:
    """The console script reaches dli_simulator, which is not in the wheel, from anywhere."""
    script = Path(sys.executable).parent / "dli-cancel"
    if not script.is_file():
        pytest.skip("the dli-cancel console script is not installed (make installs it)")
    env = {**os.environ, "HUAWEICLOUD_SDK_AK": AK, "HUAWEICLOUD_SDK_SK": SK}
    process = subprocess.Popen(
        [str(script), "simulator", "--port", "0"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", base_url), process.stdout.read()
        assert signed(base_url, "GET", f"/v1.0/{PID}/jobs").status_code == 200
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def admin_post(base_url: str, body: Mapping[str, Any]) -> list[Any]:
    answer = requests.post(f"{base_url}/_sim/jobs", data=json.dumps(body), timeout=5)
    ids: list[Any] = answer.json()["job_ids"]
    return ids
