"""Stored credentials end to end (issue 5): the function under functions-framework, the
Pub/Sub emulator and the DLI simulator, with each way operators keep credentials.

- AK/SK from the environment; from a mounted JSON file rotated between two events (the old key
  is then refused by DLI); with a security token (signed). A refused key is a configuration
  fault: delivered again while young, ``failed`` with DLI's code when old.
- IAM token auth: one token for 20 concurrent requests at a cold start, renewed before it
  expires, refreshed once after it was revoked (a second 401 is believed); a wrong password is
  a configuration fault with IAM's code, and IAM is asked once.
- ``dli-cancel cancel`` as a subprocess with either kind of auth.
- No secret in any captured output or result.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
import requests

from devstack.stack import REPO_ROOT, PubSubEmulator, child_env
from dli_simulator import Fault, RequestRecord, Simulator
from tests.e2e_support import (
    ACCESS_KEY,
    OLD,
    PROJECT_ID,
    SECRET_KEY,
    YOUNG,
    LocalStack,
    start_stack,
    stop_stack,
)
from tests.e2e_support import post_cloud_event as post_aged_event

emulator_test = pytest.mark.emulator

OLD_AK, OLD_SK = "ROTATEDOUTKEY000001", "old-secret-key-5c1f0e9a7b"
NEW_AK, NEW_SK = "ROTATEDINKEY0000002", "new-secret-key-8d2e4f6a1c"
STS_TOKEN = "sts-security-token-3e7d9b1f"
IAM_DOMAIN, IAM_USER, IAM_PASSWORD = "dli-domain", "dli-robot", "iam-password-7a4c2e9f"
WRONG_PASSWORD = "wrong-password-0b5d8e3a"
TOKEN_PATH = "/v3/auth/tokens"


# -- helpers ---------------------------------------------------------------------------------


def token_requests(sim: Simulator) -> list[RequestRecord]:
    return [r for r in sim.requests() if r.method == "POST" and r.path == TOKEN_PATH]


def requests_for(sim: Simulator, job_id: str) -> list[RequestRecord]:
    return [r for r in sim.requests() if job_id in r.path]


def write_credentials(path: Path, **fields: str) -> None:
    """Replace the file atomically, as a secret mount does (a new inode, then a rename)."""
    staging = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    staging.write_text(json.dumps(fields), encoding="utf-8")
    os.replace(staging, path)


def assert_no_secrets(texts: Iterable[str], secrets: Iterable[str]) -> None:
    joined = "\n".join(texts)
    leaked = [s for s in secrets if s and s in joined]
    assert not leaked, f"secrets in the output: {leaked}"


def stack_texts(stack: LocalStack, results: Iterable[dict[str, Any]] = ()) -> list[str]:
    return [stack.server.output(), *(json.dumps(r) for r in results)]


def post_cloud_event(url: str, event: dict[str, Any], event_id: str) -> requests.Response:
    """A binary-mode Pub/Sub CloudEvent, as Eventarc delivers it."""
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    data = base64.b64encode(json.dumps(event).encode()).decode()
    headers = {
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-source": "//pubsub.googleapis.com/projects/e2e/topics/job-timeout",
        "ce-time": now,
        "Content-Type": "application/json",
    }
    body = {
        "message": {"data": data, "messageId": event_id, "publishTime": now},
        "subscription": "projects/e2e/subscriptions/job-timeout",
    }
    return requests.post(url, json=body, headers=headers, timeout=30)


def cancel_one(stack: LocalStack, job_id: str) -> dict[str, Any]:
    message_id = stack.publish("job-timeout", {"job_id": job_id, "project_id": PROJECT_ID})
    [result] = stack.results_for(message_id, 1)
    return result


def iam_env(sim: Simulator, **extra: str) -> dict[str, str]:
    return {
        "DLI_AUTH": "token",
        "IAM_ENDPOINT": sim.base_url,
        "IAM_DOMAIN": IAM_DOMAIN,
        "IAM_USERNAME": IAM_USER,
        "HUAWEICLOUD_SDK_AK": "",  # base_env's keys: unused with token auth
        "HUAWEICLOUD_SDK_SK": "",
        **extra,
    }


# -- AK/SK from the environment ----------------------------------------------------------------


@emulator_test
def test_environment_access_key_is_used(stack: LocalStack) -> None:
    job_id = stack.sim.submit_sql_job(PROJECT_ID)
    result = cancel_one(stack, job_id)
    assert (result["outcome"], result["is_success"]) == ("cancelled", True)
    [delete] = requests_for(stack.sim, job_id)
    assert (delete.auth, delete.access_key, delete.status) == ("aksk", ACCESS_KEY, 200)
    assert "X-Security-Token" not in delete.headers
    assert_no_secrets(stack_texts(stack, [result]), [SECRET_KEY])


# -- AK/SK from a mounted file, with a security token ------------------------------------------


@pytest.fixture(scope="module")
def secret_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("secrets")


@pytest.fixture(scope="module")
def file_stack(emulator: PubSubEmulator, secret_dir: Path) -> Iterator[LocalStack]:
    """AK/SK in ``DLI_CREDENTIALS_FILE`` (the environment's pair is refused by this DLI: the
    file must win); every AK/SK request needs the security token."""
    path = secret_dir / "credentials.json"
    write_credentials(path, ak=OLD_AK, sk=OLD_SK, security_token=STS_TOKEN)
    sim = Simulator(credentials={OLD_AK: OLD_SK}, security_tokens={STS_TOKEN})
    sim.start()
    local = start_stack(emulator, env={"DLI_CREDENTIALS_FILE": str(path)}, sim=sim)
    try:
        yield local
    finally:
        stop_stack(local)


FILE_SECRETS = (OLD_SK, NEW_SK, STS_TOKEN, SECRET_KEY)


@emulator_test
def test_rotated_file_is_used_by_the_next_event(file_stack: LocalStack, secret_dir: Path) -> None:
    sim, path = file_stack.sim, secret_dir / "credentials.json"
    sim.set_credentials({OLD_AK: OLD_SK})
    write_credentials(path, ak=OLD_AK, sk=OLD_SK, security_token=STS_TOKEN)
    first, second = sim.submit_sql_job(PROJECT_ID), sim.submit_sql_job(PROJECT_ID)

    before = cancel_one(file_stack, first)

    write_credentials(path, ak=NEW_AK, sk=NEW_SK, security_token=STS_TOKEN)
    sim.set_credentials({NEW_AK: NEW_SK})  # the old key is deleted after the rotation
    after = cancel_one(file_stack, second)

    assert (before["outcome"], after["outcome"]) == ("cancelled", "cancelled")
    [old] = requests_for(sim, first)
    [new] = requests_for(sim, second)  # no 401 first: the change was seen before the request
    assert (old.access_key, old.status) == (OLD_AK, 200)
    assert (new.access_key, new.status) == (NEW_AK, 200)
    for record in (old, new):
        assert record.headers["X-Security-Token"] == STS_TOKEN
        signed = record.headers["Authorization"].split("SignedHeaders=")[1].split(",")[0]
        assert "x-security-token" in signed.split(";")
    assert ACCESS_KEY not in {r.access_key for r in sim.requests()}
    assert_no_secrets(stack_texts(file_stack, [before, after]), FILE_SECRETS)


@pytest.mark.parametrize(
    "fields",
    [
        {"ak": NEW_AK, "sk": NEW_SK},  # the security token is missing
        {"ak": NEW_AK, "sk": "wrong-secret-key-2f8a", "security_token": STS_TOKEN},
    ],
    ids=["no-security-token", "wrong-sk"],
)
@emulator_test
def test_refused_aksk_is_a_configuration_fault_with_dlis_code(
    file_stack: LocalStack, secret_dir: Path, fields: dict[str, str]
) -> None:
    """Once ``rejected`` and acknowledged: every event of a bad key rotation was lost."""
    sim = file_stack.sim
    sim.set_credentials({NEW_AK: NEW_SK})
    write_credentials(secret_dir / "credentials.json", **fields)
    job_id = sim.submit_sql_job(PROJECT_ID)
    event = {"job_id": job_id, "project_id": PROJECT_ID}
    young, old = f"refused-young-{uuid.uuid4().hex[:8]}", f"refused-old-{uuid.uuid4().hex[:8]}"

    answer = post_aged_event(file_stack.server.url, event, event_id=young, age_s=YOUNG)

    assert answer.status_code == 500 and "DLI.0014" in answer.text  # delivered again
    # the 401 made the function read the file again: unchanged, so no second attempt
    assert [r.status for r in requests_for(sim, job_id)] == [401]
    assert file_stack.no_more_results(young, wait_s=0.3)

    answer = post_aged_event(file_stack.server.url, event, event_id=old, age_s=OLD)

    assert answer.status_code == 200  # old: acknowledged, the job failed with DLI's code
    [result] = file_stack.results_for(old, 1)
    assert (result["outcome"], result["error_code"], result["http_status"]) == (
        "failed",
        "DLI.0014",
        401,
    )
    assert result["_attributes"]["error_code"] == "DLI.0014"
    assert sim.job_status(PROJECT_ID, job_id) == "RUNNING"
    texts = [*stack_texts(file_stack, [result]), answer.text]
    assert_no_secrets(texts, [*FILE_SECRETS, fields["sk"]])


@emulator_test
def test_credentials_file_gone_later_makes_the_event_retry(
    file_stack: LocalStack, secret_dir: Path
) -> None:
    sim, path = file_stack.sim, secret_dir / "credentials.json"
    sim.set_credentials({NEW_AK: NEW_SK})
    path.unlink()
    job_id = sim.submit_sql_job(PROJECT_ID)
    event_id = f"gone-{uuid.uuid4().hex[:8]}"
    event = {"job_id": job_id, "project_id": PROJECT_ID}

    refused = post_cloud_event(file_stack.server.url, event, event_id)
    assert refused.status_code >= 500  # not acknowledged: Pub/Sub delivers it again
    assert requests_for(sim, job_id) == []
    assert file_stack.server.wait_for_output(f"DLI_CREDENTIALS_FILE {path}")

    write_credentials(path, ak=NEW_AK, sk=NEW_SK, security_token=STS_TOKEN)
    assert post_cloud_event(file_stack.server.url, event, event_id).status_code == 200
    [result] = file_stack.results_for(event_id, 1)
    assert result["outcome"] == "cancelled"
    assert_no_secrets(stack_texts(file_stack, [result]), FILE_SECRETS)


# -- IAM token auth ----------------------------------------------------------------------------


def token_secrets(sim: Simulator) -> list[str]:
    return [IAM_PASSWORD, WRONG_PASSWORD, *sim.issued_tokens()]


@emulator_test
def test_twenty_concurrent_requests_at_a_cold_start_fetch_one_token(
    emulator: PubSubEmulator,
) -> None:
    sim = Simulator(iam_users={(IAM_DOMAIN, IAM_USER): IAM_PASSWORD})
    sim.start()
    env = iam_env(sim, IAM_PASSWORD=IAM_PASSWORD, THREADS="32")
    local = start_stack(emulator, env=env, sim=sim, target="cancel_dli_job_http")
    try:
        jobs = [sim.submit_sql_job(PROJECT_ID) for _ in range(20)]
        # IAM answers slowly, so every request needs the token while it is being fetched
        sim.add_fault(Fault(count=1, delay_s=0.5, path_contains=TOKEN_PATH))

        def call(job_id: str) -> requests.Response:
            body = {"event_type": "job-timeout", "job_id": job_id, "project_id": PROJECT_ID}
            return requests.post(local.server.url, json=body, timeout=30)

        with ThreadPoolExecutor(max_workers=20) as pool:
            answers = list(pool.map(call, jobs))

        assert [a.status_code for a in answers] == [200] * 20
        results = [r for a in answers for r in a.json()["results"]]
        assert sorted(r["job_id"] for r in results) == sorted(jobs)
        assert {r["outcome"] for r in results} == {"cancelled"}
        assert len(token_requests(sim)) == 1
        [token] = sim.issued_tokens()
        deletes = sim.cancel_requests()
        assert len(deletes) == 20
        assert {(d.auth, d.headers["X-Auth-Token"], d.status) for d in deletes} == {
            ("token", token, 200)
        }
        assert_no_secrets(stack_texts(local, results), token_secrets(sim))
    finally:
        stop_stack(local)


@pytest.fixture(scope="module")
def token_stack(emulator: PubSubEmulator, secret_dir: Path) -> Iterator[LocalStack]:
    password_file = secret_dir / "iam-password"
    password_file.write_text(IAM_PASSWORD + "\n", encoding="utf-8")
    sim = Simulator(iam_users={(IAM_DOMAIN, IAM_USER): IAM_PASSWORD})
    sim.start()
    env = iam_env(sim, IAM_PASSWORD_FILE=str(password_file))
    local = start_stack(emulator, env=env, sim=sim)
    try:
        yield local
    finally:
        stop_stack(local)


def revoke_all(sim: Simulator) -> None:
    for token in sim.issued_tokens():
        sim.revoke_token(token)


@emulator_test
def test_token_is_renewed_before_it_expires(token_stack: LocalStack) -> None:
    sim, ttl_s = token_stack.sim, 3.0
    sim.set_token_ttl(ttl_s)
    try:
        revoke_all(sim)  # the next event needs a new token: a short-lived one
        sim.clear_requests()
        first = cancel_one(token_stack, sim.submit_sql_job(PROJECT_ID))
        [fetched] = token_requests(sim)
        time.sleep(max(0.0, fetched.received_at + ttl_s + 0.1 - time.time()))  # it expired
        sim.clear_requests()

        second = cancel_one(token_stack, sim.submit_sql_job(PROJECT_ID))

        assert (first["outcome"], second["outcome"]) == ("cancelled", "cancelled")
        assert len(token_requests(sim)) == 1
        dli = [r for r in sim.requests() if r.path != TOKEN_PATH]
        assert [r.status for r in dli] == [200]  # renewed before use: DLI never saw it expired
    finally:
        sim.set_token_ttl(86400)
    assert_no_secrets(stack_texts(token_stack, [first, second]), token_secrets(sim))


@emulator_test
def test_revoked_token_is_refreshed_once(token_stack: LocalStack) -> None:
    sim = token_stack.sim
    assert cancel_one(token_stack, sim.submit_sql_job(PROJECT_ID))["outcome"] == "cancelled"
    revoke_all(sim)
    sim.clear_requests()
    job_id = sim.submit_sql_job(PROJECT_ID)

    result = cancel_one(token_stack, job_id)

    assert result["outcome"] == "cancelled"
    assert len(token_requests(sim)) == 1
    assert [r.status for r in requests_for(sim, job_id)] == [401, 200]
    assert_no_secrets(stack_texts(token_stack, [result]), token_secrets(sim))


@emulator_test
def test_a_401_after_one_token_refresh_is_a_configuration_fault(token_stack: LocalStack) -> None:
    sim = token_stack.sim
    job_id = sim.submit_sql_job(PROJECT_ID)
    refused = Fault(count=4, status=401, error_code="DLI.0015", path_contains=job_id)
    sim.add_fault(refused)
    sim.clear_requests()
    event = {"job_id": job_id, "project_id": PROJECT_ID}
    young, old = f"401-young-{uuid.uuid4().hex[:8]}", f"401-old-{uuid.uuid4().hex[:8]}"

    answer = post_aged_event(token_stack.server.url, event, event_id=young, age_s=YOUNG)

    assert answer.status_code == 500 and "DLI.0015" in answer.text
    # the 401 dropped the token; one new token, one more try, and then DLI is believed
    assert [r.status for r in requests_for(sim, job_id)] == [401, 401]
    assert len(token_requests(sim)) == 1
    assert token_stack.no_more_results(young, wait_s=0.3)

    answer = post_aged_event(token_stack.server.url, event, event_id=old, age_s=OLD)

    assert answer.status_code == 200
    [result] = token_stack.results_for(old, 1)
    assert (result["outcome"], result["error_code"], result["http_status"]) == (
        "failed",
        "DLI.0015",
        401,
    )
    assert result["attempts"] == 2
    assert sim.job_status(PROJECT_ID, job_id) == "RUNNING"


# Keep this the last test on token_stack: after IAM refuses the password the instance does not
# ask IAM again for IAM_REFUSAL_PAUSE_S (60 s), whatever the password file says meanwhile.
@emulator_test
def test_wrong_iam_password_is_a_configuration_fault_with_iams_code(
    token_stack: LocalStack, secret_dir: Path
) -> None:
    sim, password_file = token_stack.sim, secret_dir / "iam-password"
    password_file.write_text(WRONG_PASSWORD + "\n", encoding="utf-8")
    young, old = f"iam-young-{uuid.uuid4().hex[:8]}", f"iam-old-{uuid.uuid4().hex[:8]}"
    try:
        revoke_all(sim)  # the next request needs a new token, from the wrong password
        sim.clear_requests()
        job_id = sim.submit_sql_job(PROJECT_ID)
        event = {"job_id": job_id, "project_id": PROJECT_ID}

        answer = post_aged_event(token_stack.server.url, event, event_id=young, age_s=YOUNG)
        assert answer.status_code == 500 and "IAM_HTTP_401" in answer.text
        assert token_stack.no_more_results(young, wait_s=0.3)

        answer = post_aged_event(token_stack.server.url, event, event_id=old, age_s=OLD)
        assert answer.status_code == 200
        [result] = token_stack.results_for(old, 1)
    finally:
        password_file.write_text(IAM_PASSWORD + "\n", encoding="utf-8")

    assert (result["outcome"], result["error_code"], result["http_status"]) == (
        "failed",
        "IAM_HTTP_401",
        401,
    )
    assert "username or password is wrong" in result["message"]
    assert [r.status for r in token_requests(sim)] == [401]  # asked once for both events
    assert sim.job_status(PROJECT_ID, job_id) == "RUNNING"
    assert_no_secrets(stack_texts(token_stack, [result]), token_secrets(sim))


# -- dli-cancel cancel -------------------------------------------------------------------------

CLI_AK, CLI_SK = "CLIACCESSKEY0000003", "cli-secret-key-6b3e1d9f"


@pytest.fixture(scope="module")
def cli_sim() -> Iterator[Simulator]:
    sim = Simulator(
        credentials={CLI_AK: CLI_SK},
        security_tokens={STS_TOKEN},
        iam_users={(IAM_DOMAIN, IAM_USER): IAM_PASSWORD},
    )
    sim.start()
    yield sim
    sim.stop()


def run_cli(sim: Simulator, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "dli-cancel"
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "cancel_handler.cli"]
    base = {"DLI_ENDPOINT": sim.base_url, "DLI_PROJECT_ID": PROJECT_ID, "DLI_TIMEOUT_S": "3"}
    return subprocess.run(
        [*command, "cancel", "--json", *args],
        env=child_env({**base, **env}),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def printed_result(stdout: str) -> dict[str, Any]:
    """The one result event among the JSON documents the CLI printed (log lines too)."""
    decoder, documents, index = json.JSONDecoder(), [], 0
    while index < len(stdout):
        if stdout[index].isspace():
            index += 1
            continue
        document, index = decoder.raw_decode(stdout, index)
        documents.append(document)
    [result] = [d for d in documents if "source_event_id" in d and "outcome" in d]
    return cast(dict[str, Any], result)


def cancels(record: RequestRecord, kind: str, job_id: str) -> bool:
    if kind == "flink":
        return bool(json.loads(record.body or "{}").get("job_ids") == [int(job_id)])
    return record.path.rstrip("/").endswith("/" + job_id)


AKSK_ENV = {
    "HUAWEICLOUD_SDK_AK": CLI_AK,
    "HUAWEICLOUD_SDK_SK": CLI_SK,
    "HUAWEICLOUD_SDK_SECURITY_TOKEN": STS_TOKEN,
}
TOKEN_ENV = {
    "DLI_AUTH": "token",
    "IAM_DOMAIN": IAM_DOMAIN,
    "IAM_USERNAME": IAM_USER,
    "IAM_PASSWORD": IAM_PASSWORD,
}


@pytest.mark.parametrize(
    ("auth", "kind"), [("aksk", "sql"), ("token", "spark"), ("token", "flink")]
)
def test_cli_cancels_with_either_auth(cli_sim: Simulator, auth: str, kind: str) -> None:
    job_id = {
        "sql": lambda: cli_sim.submit_sql_job(PROJECT_ID),
        "spark": lambda: cli_sim.add_spark_batch(PROJECT_ID),
        "flink": lambda: str(cli_sim.add_flink_job(PROJECT_ID)),
    }[kind]()
    env = AKSK_ENV if auth == "aksk" else {**TOKEN_ENV, "IAM_ENDPOINT": cli_sim.base_url}

    done = run_cli(cli_sim, env, job_id, "--project-id", PROJECT_ID, "--kind", kind)

    assert done.returncode == 0, done.stderr
    result = printed_result(done.stdout)
    assert (result["outcome"], result["job_id"], result["job_kind"]) == ("cancelled", job_id, kind)
    assert result["project_id"] == PROJECT_ID and result["source_event_id"].startswith("cli-")
    [call] = [r for r in cli_sim.cancel_requests() if cancels(r, kind, job_id)]
    assert call.auth == auth
    if auth == "aksk":
        assert (call.access_key, call.headers["X-Security-Token"]) == (CLI_AK, STS_TOKEN)
    assert_no_secrets([done.stdout, done.stderr], [CLI_SK, *token_secrets(cli_sim)])


def test_cli_dry_run_calls_no_cancel_api(cli_sim: Simulator) -> None:
    job_id = cli_sim.submit_sql_job(PROJECT_ID)
    done = run_cli(cli_sim, AKSK_ENV, job_id, "--dry-run")
    assert done.returncode == 0, done.stderr
    assert printed_result(done.stdout)["outcome"] == "dry_run"
    assert requests_for(cli_sim, job_id) == []
    assert cli_sim.job_status(PROJECT_ID, job_id) == "RUNNING"


@pytest.mark.parametrize(
    ("env", "code"),
    [
        ({**AKSK_ENV, "HUAWEICLOUD_SDK_SECURITY_TOKEN": ""}, "DLI.0014"),
        ({**TOKEN_ENV, "IAM_PASSWORD": WRONG_PASSWORD}, "IAM_HTTP_401"),
    ],
    ids=["aksk-without-security-token", "token-wrong-password"],
)
def test_cli_refused_credentials_say_try_again_with_the_code(
    cli_sim: Simulator, env: dict[str, str], code: str
) -> None:
    job_id = cli_sim.submit_sql_job(PROJECT_ID)
    done = run_cli(cli_sim, {**env, "IAM_ENDPOINT": cli_sim.base_url}, job_id)
    assert done.returncode == 3, done.stderr  # not done: a configuration fault
    assert "dli-cancel: not done, try again" in done.stderr
    assert f"configuration fault: {code} (HTTP 401)" in done.stderr
    assert "source_event_id" not in done.stdout  # no result: nothing was decided
    assert cli_sim.job_status(PROJECT_ID, job_id) == "RUNNING"
    assert_no_secrets([done.stdout, done.stderr], [CLI_SK, STS_TOKEN, WRONG_PASSWORD])


def test_cli_without_credentials_is_a_configuration_error(cli_sim: Simulator) -> None:
    done = run_cli(cli_sim, {}, str(uuid.uuid4()))
    assert done.returncode == 2
    assert "HUAWEICLOUD_SDK_AK and HUAWEICLOUD_SDK_SK or DLI_CREDENTIALS_FILE" in done.stderr
    assert done.stdout == ""
