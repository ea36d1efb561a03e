"""Configuration errors: every problem named, reported once at start, every event then raises
(CloudEvent: 500, HTTP entry: 503) until it is fixed; secrets never shown."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from cancel_handler import boot, entry, runtime
from cancel_handler.config import KNOWN_VARIABLES, ConfigError, Settings, load_settings
from cancel_handler.errors import RetryLater
from tests.corpus import pubsub_cloud_event

PROJECT = "0123456789abcdef0123456789abcdef"
AK, SK = "CONFIGTESTAK0000", "config-test-secret-key-0123456789"
GOOD: dict[str, str] = {
    "DLI_ENDPOINT": "https://dli.example.com",
    "DLI_PROJECT_ID": PROJECT,
    "HUAWEICLOUD_SDK_AK": AK,
    "HUAWEICLOUD_SDK_SK": SK,
    "RESULT_TOPIC": "projects/p/topics/results",
}
TOKEN = {
    "DLI_AUTH": "token",
    "IAM_ENDPOINT": "https://iam.example.com",
    "IAM_USERNAME": "u",
    "IAM_PASSWORD": "iam-password-0123",
    "IAM_DOMAIN": "d",
}


def problems(env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    return caught.value.problems


def without(*names: str) -> dict[str, str]:
    return {k: v for k, v in GOOD.items() if k not in names}


# -- every problem, named ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (without("DLI_ENDPOINT"), "DLI_ENDPOINT or DLI_REGION is required"),
        ({**GOOD, "DLI_ENDPOINT": "ftp://dli"}, "DLI_ENDPOINT must be an https:// URL"),
        ({**without("DLI_ENDPOINT"), "DLI_REGION": "EU DE"}, "DLI_REGION is not a region id"),
        (
            without("HUAWEICLOUD_SDK_AK", "HUAWEICLOUD_SDK_SK"),
            "set HUAWEICLOUD_SDK_AK and HUAWEICLOUD_SDK_SK or DLI_CREDENTIALS_FILE",
        ),
        (without("HUAWEICLOUD_SDK_SK"), "set HUAWEICLOUD_SDK_SK or DLI_CREDENTIALS_FILE"),
        ({**GOOD, "DLI_CREDENTIALS_FILE": "/nonexistent/creds.json"}, "DLI_CREDENTIALS_FILE"),
        ({**GOOD, "DLI_AUTH": "kerberos"}, "DLI_AUTH must be 'aksk' or 'token', got 'kerberos'"),
        (
            {**GOOD, "DLI_AUTH": "token"},
            "DLI_AUTH=token needs IAM_ENDPOINT, IAM_USERNAME, "
            "IAM_PASSWORD or IAM_PASSWORD_FILE, IAM_DOMAIN",
        ),
        ({**GOOD, **TOKEN, "IAM_DOMAIN": ""}, "DLI_AUTH=token needs IAM_DOMAIN"),
        (without("RESULT_TOPIC"), "RESULT_TOPIC is required"),
        ({**GOOD, "RESULT_TOPIC": "bare-name"}, "set GOOGLE_CLOUD_PROJECT or a full path"),
        ({**GOOD, "RESULT_TOPIC": "projects/p/subs/x"}, "RESULT_TOPIC must look like"),
        ({**GOOD, "DLI_PROJECT_ID": "ABC"}, "DLI_PROJECT_ID must be 32 lower-case hex"),
        ({**GOOD, "DLI_ALLOWED_PROJECT_IDS": "x,y"}, "DLI_ALLOWED_PROJECT_IDS has ids"),
        ({**GOOD, "BUDGET_TARGETS": "{not json"}, "BUDGET_TARGETS is not valid JSON"),
        ({**GOOD, "BUDGET_TARGETS": "[1]"}, "BUDGET_TARGETS must be a JSON object"),
        ({**GOOD, "BUDGET_TARGETS": '{"b": 1}'}, "BUDGET_TARGETS['b'] must be an object"),
        (
            {**GOOD, "BUDGET_TARGETS": '{"b": {"project_id": "x", "job_ids": ["j"]}}'},
            "BUDGET_TARGETS['b'].project_id must be 32 hex",
        ),
        (
            {**GOOD, "BUDGET_TARGETS": '{"b": {"queue_names": "etl"}}'},
            "BUDGET_TARGETS['b'].queue_names must be a list of strings",
        ),
        ({**GOOD, "BUDGET_TARGETS": '{"*": {}}'}, "BUDGET_TARGETS['*'] names no queue_names"),
        ({**GOOD, "DLI_TIMEOUT_S": "ten"}, "DLI_TIMEOUT_S must be a number, got 'ten'"),
        ({**GOOD, "DLI_MAX_ATTEMPTS": "0"}, "DLI_MAX_ATTEMPTS must be >= 1"),
        ({**GOOD, "DLI_MAX_ATTEMPTS": "2.5"}, "DLI_MAX_ATTEMPTS must be an integer"),
        ({**GOOD, "DLI_EVENT_BUDGET_S": "0"}, "DLI_EVENT_BUDGET_S must be >= 0.1"),
        ({**GOOD, "RESULT_PUBLISH_TIMEOUT_S": "-1"}, "RESULT_PUBLISH_TIMEOUT_S must be >="),
        ({**GOOD, "MAX_BODY_BYTES": "10"}, "MAX_BODY_BYTES must be >= 1024"),
        ({**GOOD, "DRY_RUN": "maybe"}, "DRY_RUN must be true or false, got 'maybe'"),
        ({**GOOD, "RUNTIME_LIMITS": "{etl: 1}"}, "RUNTIME_LIMITS is not valid JSON"),
        ({**GOOD, "RUNTIME_LIMITS": '{"etl": {"hive": 60}}'}, "['hive']: unknown job kind"),
        ({**GOOD, "RUNTIME_LIMITS": '{"*": {"sql": 0}}'}, "must be a positive number"),
        ({**GOOD, "RUNTIME_LIMITS": '{"*": {"sql": NaN}}'}, "must be a finite number"),
    ],
)
def test_each_problem_is_named(env: dict[str, str], expected: str) -> None:
    found = problems(env)

    assert len(found) == 1, found
    assert expected in found[0]


def test_every_problem_is_reported_at_once() -> None:
    env = {
        "DLI_AUTH": "ldap",
        "BUDGET_TARGETS": "{",
        "DLI_TIMEOUT_S": "x",
    }

    found = problems(env)

    joined = "; ".join(found)
    for name in ("DLI_ENDPOINT", "DLI_AUTH", "RESULT_TOPIC", "BUDGET_TARGETS", "DLI_TIMEOUT_S"):
        assert name in joined
    assert len(found) == 5
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert str(caught.value) == "invalid configuration: " + joined


def test_a_good_configuration_and_its_defaults() -> None:
    settings = load_settings(GOOD)

    assert settings.dli_endpoint == "https://dli.example.com"
    assert settings.allowed_project_ids == frozenset({PROJECT})
    assert (settings.dli_timeout_s, settings.dli_max_attempts) == (10.0, 3)
    assert settings.max_event_age_s == 3600.0
    assert settings.event_budget_s == 45.0
    assert settings.publish_timeout_s == 30.0
    assert settings.max_body_bytes == 65536
    assert "DLI_EVENT_BUDGET_S" in KNOWN_VARIABLES
    assert load_settings(without("RESULT_TOPIC"), local_run=True).result_topic is None
    assert load_settings({**GOOD, "DLI_EVENT_BUDGET_S": "5"}).event_budget_s == 5.0
    assert not settings.runtime_limits  # no RUNTIME_LIMITS: a sweep cancels nothing
    limits = load_settings({**GOOD, "RUNTIME_LIMITS": '{"etl": {"sql": 60}}'}).runtime_limits
    assert limits.limit_for("etl", "sql") == 60


# -- secrets ---------------------------------------------------------------------------------


def test_repr_of_the_settings_hides_every_secret() -> None:
    settings = load_settings({**GOOD, "HUAWEICLOUD_SDK_SECURITY_TOKEN": "sec-token-0123"})
    token_settings = load_settings({**GOOD, **TOKEN})

    texts = [repr(settings), str(settings), repr(token_settings), f"{token_settings.iam}"]
    for text in texts:
        for value in (AK, SK, "sec-token-0123", TOKEN["IAM_PASSWORD"]):
            assert value not in text
    assert "Secret('**********')" in repr(settings)
    assert settings.access_key is not None and settings.access_key.reveal() == AK


def test_a_secret_in_the_wrong_variable_is_not_quoted() -> None:
    env = {**GOOD, "DLI_TIMEOUT_S": SK, "DLI_REGION": "x", "DRY_RUN": AK}

    found = "; ".join(problems(env))

    assert SK not in found and AK not in found
    assert "DLI_TIMEOUT_S must be a number" in found and "DRY_RUN must be true" in found


# -- reported once at start, then every event raises -----------------------------------------


@pytest.fixture
def fresh_handler(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[dict[str, str]], None]]:
    """Use ``env`` as the process environment, with no runtime built yet."""

    def use(env: dict[str, str]) -> None:
        for name in KNOWN_VARIABLES:
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(runtime, "_runtime", None)

    yield use


def post(body: bytes) -> Any:
    return Request(EnvironBuilder(method="POST", data=body, path="/").get_environ())


def test_startup_names_every_problem_once_and_events_raise(
    fresh_handler: Callable[[dict[str, str]], None], capsys: pytest.CaptureFixture[str]
) -> None:
    fresh_handler({**without("DLI_ENDPOINT"), "DLI_AUTH": "nope", "HUAWEICLOUD_SDK_SK": SK})

    boot.startup()
    [line] = capsys.readouterr().out.splitlines()
    record = json.loads(line)
    assert record["severity"] == "ERROR"
    assert "DLI_ENDPOINT or DLI_REGION is required" in record["message"]
    assert "DLI_AUTH must be 'aksk' or 'token'" in record["message"]
    assert len(record["problems"]) == 2
    assert SK not in line

    event = pubsub_cloud_event(b'{"job_id": "x"}', topic="job-timeout", message_id="e1")
    for _ in range(2):  # every event, not just the first
        with pytest.raises(RetryLater) as raised:
            entry.on_cloud_event(event)
        assert "DLI_ENDPOINT or DLI_REGION is required" in str(raised.value)
        body, status, _ = entry.on_http(post(b'{"event_type": "job-timeout"}'))
        assert status == 503
        assert "configuration error" in json.loads(body)["error"]
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["event_id"] for r in logged if "event_id" in r] == ["e1", "e1"]
    assert all(r["severity"] == "ERROR" for r in logged)


def test_a_configuration_fixed_later_is_used(
    fresh_handler: Callable[[dict[str, str]], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh_handler(without("DLI_ENDPOINT"))
    boot.startup()
    with pytest.raises(RetryLater):
        runtime.runtime()

    monkeypatch.setenv("DLI_ENDPOINT", "https://dli.example.com")  # e.g. a secret mounted late

    settings: Settings = runtime.runtime().settings
    assert settings.dli_endpoint == "https://dli.example.com"
