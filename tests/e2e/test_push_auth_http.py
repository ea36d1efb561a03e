"""Push OIDC token verification through ``cancel_dli_job_http`` under functions-framework: a
valid token is handled, a bad one is answered 401 and never reaches DLI. The verification
rules, in process: tests/unit/test_push_auth.py.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import pytest
import requests

from devstack.stack import PubSubEmulator
from tests.corpus import encode, push_envelope
from tests.e2e_support import PROJECT_ID, LocalStack, start_stack, stop_stack
from tests.push_tokens import (
    AUDIENCE,
    BAD_TOKEN_CASES,
    SERVICE_ACCOUNT,
    CertsServer,
    SigningKey,
    bad_token,
    claims,
)


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture(scope="module")
def other_key() -> SigningKey:
    return SigningKey.generate()


# -- through functions-framework -------------------------------------------------------------


@pytest.fixture(scope="module")
def auth_stack(
    emulator: PubSubEmulator, key: SigningKey
) -> Iterator[tuple[LocalStack, CertsServer]]:
    server = CertsServer([key])
    server.start()
    env = {
        "PUSH_AUDIENCE": AUDIENCE,
        "PUSH_SERVICE_ACCOUNT": SERVICE_ACCOUNT,
        "PUSH_CERTS_URL": server.url,
    }
    local = start_stack(emulator, env=env, target="cancel_dli_job_http")
    try:
        yield local, server
    finally:
        stop_stack(local)
        server.stop()


def post_with(local: LocalStack, body: bytes, authorization: str | None) -> requests.Response:
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    return requests.post(local.server.url + "/", data=body, headers=headers, timeout=30)


@pytest.mark.emulator
def test_http_push_with_a_valid_token_is_handled(
    auth_stack: tuple[LocalStack, CertsServer], key: SigningKey
) -> None:
    local, _ = auth_stack
    job = local.sim.submit_sql_job(PROJECT_ID)
    message_id = str(uuid.uuid4().int)[:16]
    body = push_envelope(
        encode({"event_type": "job-timeout", "job_id": job}),
        message_id=message_id,
        publish_time=dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
    )

    response = post_with(local, body, f"Bearer {key.sign(claims())}")

    assert response.status_code == 200
    [result] = response.json()["results"]
    assert result["outcome"] == "cancelled" and result["source_event_id"] == message_id
    assert local.results_for(message_id, 1)[0]["job_id"] == job
    assert local.sim.job_status(PROJECT_ID, job) == "CANCELLED"


@pytest.mark.emulator
@pytest.mark.parametrize("case", [*BAD_TOKEN_CASES, "missing header"])
def test_http_push_with_a_bad_token_is_401_and_never_reaches_dli(
    auth_stack: tuple[LocalStack, CertsServer],
    key: SigningKey,
    other_key: SigningKey,
    case: str,
) -> None:
    local, _ = auth_stack
    local.sim.clear_requests()
    job = local.sim.submit_sql_job(PROJECT_ID)
    token = None if case == "missing header" else bad_token(case, key, other_key)
    body = push_envelope(encode({"event_type": "job-timeout", "job_id": job}))

    response = post_with(local, body, None if token is None else f"Bearer {token}")

    assert response.status_code == 401
    assert set(response.json()) == {"error"}
    assert local.sim.requests() == []
    assert local.sim.job_status(PROJECT_ID, job) == "RUNNING"
    if token is not None:
        assert token not in response.text and token not in local.server.output()
