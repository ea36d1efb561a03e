"""No secret anywhere: a whole scenario with known secret values, then a scan of everything the
function said (its server output, HTTP answers, published results, exception texts).

Scenario: AK/SK with a security token (good event, bad event, a 503 whose body echoes every
secret and an Authorization header, on a young and an old event), a wrong SK (DLI's 401)
through the HTTP entry, and IAM token auth (the issued tokens are secrets too). The token server
runs with functions-framework's LOG_EXECUTION_ID, which adds a root handler and wraps stdout:
still one JSON line per record.

Then the lines themselves: trace and labels from a CloudEvent's ``traceparent`` extension and an
HTTP request's ``X-Cloud-Trace-Context``.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from cancel_handler import handler
from cancel_handler.config import ConfigError, Settings, load_settings
from cancel_handler.dli.errors import TransientFailure
from cancel_handler.dli.types import JobRef
from cancel_handler.envelopes import Delivery
from cancel_handler.errors import RetryLater
from cancel_handler.results import MemorySink
from cancel_handler.runtime import build_runtime
from devstack.stack import FunctionServer, PubSubEmulator
from dli_simulator import Fault, Simulator
from tests.e2e_support import (
    OLD,
    PROJECT_ID,
    cloud_event_request,
    post_cloud_event,
    start_all,
    stop_all,
)

pytestmark = pytest.mark.emulator

AK = "LOGSCANAK" + secrets.token_hex(6).upper()
SK = "logscan-sk-" + secrets.token_urlsafe(18)
SECURITY_TOKEN = "logscan-sec-token-" + secrets.token_urlsafe(24)
WRONG_SK = "logscan-wrong-sk-" + secrets.token_urlsafe(12)
IAM_PASSWORD = "logscan-pw-" + secrets.token_urlsafe(10)
IAM_USER, IAM_DOMAIN = "scanner", "scan-domain"
RESULT_TOPIC = "results-scan"
# What a misbehaving proxy in front of DLI might answer: our own request, echoed.
ECHO_BODY = (
    "<html><body>upstream error; request was: "
    f"Authorization: SDK-HMAC-SHA256 Access={AK}, SignedHeaders=host;x-sdk-date, "
    f"Signature=0123abcd\nX-Security-Token: {SECURITY_TOKEN}\n"
    f"debug sk={SK} password={IAM_PASSWORD}</body></html>"
)


@dataclass
class Scan:
    sim: Simulator
    pubsub: PubSubEmulator
    subscription: str
    aksk: FunctionServer  # cancel_dli_job, AK/SK + security token
    wrong: FunctionServer  # cancel_dli_job_http, wrong SK
    token: FunctionServer  # cancel_dli_job, DLI_AUTH=token
    envs: list[dict[str, str]]
    texts: list[str] = field(default_factory=list)  # every answer and exception text

    def secrets(self) -> dict[str, str]:
        found = {
            "AK": AK,
            "SK": SK,
            "security token": SECURITY_TOKEN,
            "wrong SK": WRONG_SK,
            "IAM password": IAM_PASSWORD,
        }
        for number, token in enumerate(self.sim.issued_tokens()):
            found[f"IAM token {number}"] = token
        return found


@pytest.fixture(scope="module")
def scan(emulator: PubSubEmulator) -> Iterator[Scan]:
    sim = Simulator(
        credentials={AK: SK},
        security_tokens={SECURITY_TOKEN},
        iam_users={(IAM_DOMAIN, IAM_USER): IAM_PASSWORD},
    )
    sim.start()
    pubsub = emulator.with_project(f"scan-{uuid.uuid4().hex[:10]}")
    pubsub.create_topic(RESULT_TOPIC)
    subscription = pubsub.create_pull_subscription("results-scan-sub", RESULT_TOPIC)
    common = {
        "DLI_ENDPOINT": sim.base_url,
        "DLI_PROJECT_ID": PROJECT_ID,
        "RESULT_TOPIC": RESULT_TOPIC,
        "DLI_MAX_ATTEMPTS": "2",
        "DLI_RETRY_BASE_S": "0.01",
        "DLI_TIMEOUT_S": "5",  # generous: only the 503 faults may fail a call here
        "MAX_EVENT_AGE_S": "600",
        **pubsub.env(),
    }
    aksk_env = {
        **common,
        "HUAWEICLOUD_SDK_AK": AK,
        "HUAWEICLOUD_SDK_SK": SK,
        "HUAWEICLOUD_SDK_SECURITY_TOKEN": SECURITY_TOKEN,
    }
    wrong_env = {**aksk_env, "HUAWEICLOUD_SDK_SK": WRONG_SK}
    token_env = {
        **common,
        "LOG_EXECUTION_ID": "true",
        "DLI_AUTH": "token",
        "IAM_ENDPOINT": sim.base_url,
        "IAM_USERNAME": IAM_USER,
        "IAM_PASSWORD": IAM_PASSWORD,
        "IAM_DOMAIN": IAM_DOMAIN,
    }
    aksk = FunctionServer("cancel_dli_job", aksk_env)
    wrong = FunctionServer("cancel_dli_job_http", wrong_env)
    token = FunctionServer("cancel_dli_job", token_env)
    try:
        start_all(aksk, wrong, token)
        yield Scan(sim, pubsub, subscription, aksk, wrong, token, [aksk_env, wrong_env, token_env])
    finally:
        stop_all(aksk, wrong, token)
        sim.stop()


def run_scenario(scan: Scan) -> list[dict[str, Any]]:
    """Every kind of event through the three servers; returns the published results."""
    sim, session = scan.sim, requests.Session()

    def ce(server: FunctionServer, event: dict[str, Any], expect: int, **kw: Any) -> None:
        answer = post_cloud_event(server.url, event, session=session, **kw)
        assert answer.status_code == expect, answer.text
        scan.texts.append(answer.text)

    good = sim.submit_sql_job(PROJECT_ID)
    ce(scan.aksk, {"job_id": good}, 200)
    ce(scan.aksk, {"job_id": f"../{AK}"}, 200)  # bad: and it quotes a secret
    echoing = sim.submit_sql_job(PROJECT_ID)
    sim.add_fault(Fault(count=4, status=503, body=ECHO_BODY, path_contains=echoing))
    ce(scan.aksk, {"job_id": echoing}, 500)  # young: delivered again
    ce(scan.aksk, {"job_id": echoing}, 200, age_s=OLD)  # old: failed, with DLI's text

    refused = sim.submit_sql_job(PROJECT_ID)
    answer = session.post(scan.wrong.url, json={"event_type": "job-timeout", "job_id": refused})
    assert answer.status_code == 503  # refused credentials: a configuration fault, retried
    assert "DLI.0014" in answer.text
    scan.texts.append(answer.text)
    sim.add_fault(Fault(count=2, status=503, body=ECHO_BODY, path_contains=refused))
    retry = session.post(scan.wrong.url, json={"event_type": "job-timeout", "job_id": refused})
    assert retry.status_code == 503
    scan.texts.append(retry.text)

    by_token = sim.submit_sql_job(PROJECT_ID)
    ce(scan.token, {"job_id": by_token}, 200)
    assert sim.job_status(PROJECT_ID, by_token) == "CANCELLED"
    assert sim.issued_tokens(), "token auth was used"

    # good, bad, failed (aksk); cancelled (token); one warm-up per server
    messages = scan.pubsub.pull(scan.subscription, 7, timeout_s=20)
    assert len(messages) == 7
    return [message.json() for message in messages]


def in_process_texts(scan: Scan) -> list[str]:
    """The exceptions our code raises on DLI answers, and their messages, in this process,
    configured with the AK/SK server's settings (so it holds the AK, SK and security token,
    not the IAM password)."""
    settings = load_settings(scan.envs[0])
    rt = build_runtime(settings, sink=MemorySink())  # registers the secrets, as at start
    job = scan.sim.submit_sql_job(PROJECT_ID)
    scan.sim.add_fault(Fault(count=4, status=503, body=ECHO_BODY, path_contains=job))
    texts: list[str] = []
    with pytest.raises(TransientFailure) as failure:
        rt.client.cancel(JobRef(PROJECT_ID, job))
    texts += [str(failure.value), repr(failure.value), failure.value.message]
    delivery = Delivery(f'{{"job_id": "{job}"}}'.encode(), {}, "job-timeout", "x", None, "http")
    with pytest.raises(RetryLater) as retry:
        handler.process(delivery, rt)
    texts += [str(retry.value), repr(retry.value)]
    texts += [repr(settings), str(settings), repr(rt.client), repr(rt)]
    return texts


def test_no_secret_in_logs_results_answers_or_exceptions(scan: Scan) -> None:
    results = run_scenario(scan)
    texts = in_process_texts(scan)

    outcomes = sorted(r["outcome"] for r in results)
    assert outcomes.count("invalid_event") == 4  # the bad event and three warm-ups
    assert {"cancelled", "failed"} <= set(outcomes)
    [failed] = [r for r in results if r["outcome"] == "failed"]
    assert "[REDACTED]" in failed["message"]  # DLI's text is kept, the secrets are not

    places = {
        "aksk server output": scan.aksk.output(),
        "http server output": scan.wrong.output(),
        "token server output": scan.token.output(),
        "results": "\n".join(repr(r) for r in results),
        "answers": "\n".join(scan.texts),
    }
    leaks = [
        f"{what} in {where}"
        for where, text in places.items()
        for what, value in scan.secrets().items()
        if value in text
    ]
    own = {"AK": AK, "SK": SK, "security token": SECURITY_TOKEN}
    exception_texts = "\n".join(texts)
    leaks += [f"{what} in exceptions" for what, value in own.items() if value in exception_texts]
    assert leaks == []
    assert "Signature=0123abcd" not in "\n".join(places.values())  # the header, masked whole
    # functions-framework printed no traceback of its own: one JSON object per line
    for server in (scan.aksk, scan.wrong, scan.token):
        assert "Traceback" not in server.output()
        assert all(line.startswith("{") for line in server.output().splitlines())
    # and the scan did see what it looked for
    assert "configuration fault" in places["http server output"]
    assert "transient DLI fault" in places["aksk server output"]


TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLOUD_TRACE_ID = "105445aa7843bc8bf206b12000100000"


def wait_for_line(server: FunctionServer, message: str, timeout_s: float = 10) -> dict[str, Any]:
    """The one JSON line of ``server`` whose message is ``message`` (waits for it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = [
            record
            for record in map(json.loads, server.output().splitlines())
            if record.get("message") == message
        ]
        if found or time.monotonic() > deadline:
            assert len(found) == 1, f"{message!r}: {len(found)} lines"
            return found[0]
        time.sleep(0.05)


def test_lines_carry_the_events_trace_and_labels_once_each(scan: Scan) -> None:
    trace = f"projects/{scan.pubsub.project}/traces"
    job = scan.sim.submit_sql_job(PROJECT_ID)
    headers, body = cloud_event_request(json.dumps({"job_id": job}).encode())
    headers["ce-traceparent"] = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
    answer = requests.post(scan.token.url, data=body, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text

    record = wait_for_line(scan.token, f"job {job}: cancelled")
    assert record["logging.googleapis.com/trace"] == f"{trace}/{TRACE_ID}"
    labels = record["logging.googleapis.com/labels"]
    assert (labels["event_id"], labels["job_id"]) == (headers["ce-id"], job)
    assert labels["execution_id"]  # functions-framework's label, added to ours
    assert "Traceback" not in scan.token.output()
    assert all(line.startswith("{") for line in scan.token.output().splitlines())

    refused = scan.sim.submit_sql_job(PROJECT_ID)
    answer = requests.post(
        scan.wrong.url,
        json={"event_type": "job-timeout", "job_id": refused},
        headers={"X-Cloud-Trace-Context": f"{CLOUD_TRACE_ID}/255;o=1"},
        timeout=30,
    )
    assert answer.status_code == 503, answer.text  # refused credentials: retried
    [record] = [
        r
        for r in map(json.loads, scan.wrong.output().splitlines())
        if r.get("job_id") == refused and r.get("outcome") == "retry"
    ]
    assert record["severity"] == "ERROR" and "configuration fault" in record["message"]
    assert record["logging.googleapis.com/trace"] == f"{trace}/{CLOUD_TRACE_ID}"
    assert record["logging.googleapis.com/spanId"] == "00000000000000ff"
    assert record["logging.googleapis.com/labels"] == {
        "event_id": record["event_id"],
        "job_id": refused,
    }


def test_settings_and_config_errors_hide_secrets() -> None:
    env = {
        "DLI_ENDPOINT": "https://dli.example.com",
        "DLI_PROJECT_ID": PROJECT_ID,
        "HUAWEICLOUD_SDK_AK": AK,
        "HUAWEICLOUD_SDK_SK": SK,
        "HUAWEICLOUD_SDK_SECURITY_TOKEN": SECURITY_TOKEN,
        "RESULT_TOPIC": "projects/p/topics/t",
    }
    settings: Settings = load_settings(env)
    token_settings = load_settings(
        {
            **env,
            "DLI_AUTH": "token",
            "IAM_ENDPOINT": "https://iam.example.com",
            "IAM_USERNAME": IAM_USER,
            "IAM_PASSWORD": IAM_PASSWORD,
            "IAM_DOMAIN": IAM_DOMAIN,
        }
    )
    with pytest.raises(ConfigError) as broken:
        load_settings({**env, "DLI_ENDPOINT": "ftp://x", "DLI_TIMEOUT_S": SK})

    texts = [repr(settings), str(settings), repr(token_settings), repr(token_settings.iam)]
    texts += [str(broken.value), repr(broken.value)]
    for text in texts:
        for value in (AK, SK, SECURITY_TOKEN, IAM_PASSWORD):
            assert value not in text
    assert settings.secret_key is not None and settings.secret_key.reveal() == SK
