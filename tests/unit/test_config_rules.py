"""Configuration rules of SPEC 5.2: numbers are finite; DLI_ENDPOINT, IAM_ENDPOINT and
PUSH_CERTS_URL are https:// (http:// only to a loopback host); PUSH_AUDIENCE needs
PUSH_SERVICE_ACCOUNT; FANOUT_TOPIC needs a project like RESULT_TOPIC. Each is a configuration
error. (Reported at start and answered 500 by a real server: tests/e2e/test_config_errors.py.)"""

from __future__ import annotations

import dataclasses
import math

import pytest

from cancel_handler.config import KNOWN_VARIABLES, ConfigError, Settings, load_settings

PROJECT = "0123456789abcdef0123456789abcdef"
GOOD: dict[str, str] = {
    "DLI_ENDPOINT": "https://dli.example.com",
    "DLI_PROJECT_ID": PROJECT,
    "HUAWEICLOUD_SDK_AK": "RULESAK000000000",
    "HUAWEICLOUD_SDK_SK": "rules-secret-key-0123456789",
    "RESULT_TOPIC": "projects/p/topics/results",
}
TOKEN = {
    "DLI_AUTH": "token",
    "IAM_ENDPOINT": "https://iam.example.com",
    "IAM_USERNAME": "u",
    "IAM_PASSWORD": "iam-password-0123",
    "IAM_DOMAIN": "d",
}
FLOAT_VARIABLES = (
    "DLI_TIMEOUT_S",
    "DLI_RETRY_BASE_S",
    "DLI_RETRY_MAX_S",
    "DLI_EVENT_BUDGET_S",
    "RESULT_PUBLISH_TIMEOUT_S",
    "MAX_EVENT_AGE_S",
    "BUDGET_THRESHOLD",
)
NOT_FINITE = ("nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e999", "-1e999")


def problems(env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    return caught.value.problems


def floats(settings: Settings) -> list[float]:
    values = (getattr(settings, f.name) for f in dataclasses.fields(settings))
    return [v for v in values if isinstance(v, float)]


# -- numbers are finite ----------------------------------------------------------------------


@pytest.mark.parametrize("value", NOT_FINITE)
@pytest.mark.parametrize("name", FLOAT_VARIABLES)
def test_a_number_that_is_not_finite_is_refused(name: str, value: str) -> None:
    assert problems({**GOOD, name: value}) == [f"{name} must be a finite number, got {value!r}"]


@pytest.mark.parametrize("value", NOT_FINITE)
@pytest.mark.parametrize("name", KNOWN_VARIABLES)
def test_no_variable_lets_a_number_that_is_not_finite_in(name: str, value: str) -> None:
    try:
        settings = load_settings({**GOOD, name: value})
    except ConfigError as error:
        assert any(name in problem for problem in error.problems), error.problems
        return
    assert all(math.isfinite(v) for v in floats(settings)), name


def test_finite_numbers_are_still_read() -> None:
    settings = load_settings({**GOOD, "MAX_EVENT_AGE_S": "1e3", "BUDGET_THRESHOLD": "0.9"})

    assert (settings.max_event_age_s, settings.budget_threshold) == (1000.0, 0.9)


# -- endpoints are https:// unless they are loopback -------------------------------------------


def with_url(name: str, url: str) -> dict[str, str]:
    env = {**GOOD, **TOKEN} if name == "IAM_ENDPOINT" else dict(GOOD)
    return {**env, name: url}


URL_VARIABLES = ("DLI_ENDPOINT", "IAM_ENDPOINT", "PUSH_CERTS_URL")
REFUSED_URLS = (
    "http://dli.example.com",
    "http://10.0.0.1:8080",
    "http://192.168.1.10",
    "http://localhost.example.com",
    "http://127.0.0.1.nip.io",
    "http://[::2]:80",
    "http://[::ffff:8.8.8.8]",
    "ftp://dli.example.com",
    "https://",
    "https:///path",
    "dli.example.com",
    "https://dli.example.com:port",
    "https://dli.example.com/a b",
    "http://[::1",
)
ACCEPTED_URLS = (
    "https://dli.eu-de.otc.t-systems.com",
    "https://10.0.0.1:8443/",
    "HTTPS://DLI.EXAMPLE.COM",
    "http://localhost:8080",
    "http://127.0.0.1:9",
    "http://127.45.6.7",
    "http://[::1]:9000",
)


@pytest.mark.parametrize("url", REFUSED_URLS)
@pytest.mark.parametrize("name", URL_VARIABLES)
def test_an_endpoint_that_is_not_https_is_refused(name: str, url: str) -> None:
    [problem] = problems(with_url(name, url))

    assert problem.startswith(f"{name} must be an https:// URL (http:// only to a loopback host")
    assert repr(url) in problem


@pytest.mark.parametrize("url", ACCEPTED_URLS)
@pytest.mark.parametrize("name", URL_VARIABLES)
def test_https_or_loopback_endpoints_are_accepted(name: str, url: str) -> None:
    settings = load_settings(with_url(name, url))

    read = {
        "DLI_ENDPOINT": settings.dli_endpoint,
        "IAM_ENDPOINT": settings.iam.endpoint if settings.iam else "",
        "PUSH_CERTS_URL": settings.push_certs_url,
    }[name]
    assert read.rstrip("/") == url.rstrip("/")


def test_endpoint_from_a_region_is_https() -> None:
    env = {k: v for k, v in GOOD.items() if k != "DLI_ENDPOINT"}
    settings = load_settings({**env, "DLI_REGION": "eu-west-101"})

    assert settings.dli_endpoint == "https://dli.eu-west-101.myhuaweicloud.eu"


# -- push authentication names its service account -------------------------------------------


def test_push_audience_needs_a_service_account() -> None:
    [problem] = problems({**GOOD, "PUSH_AUDIENCE": "https://fn.example.com/"})

    assert problem.startswith("PUSH_AUDIENCE is set without PUSH_SERVICE_ACCOUNT")


def test_push_audience_with_its_service_account_is_accepted() -> None:
    account = "pusher@p.iam.gserviceaccount.com"
    settings = load_settings(
        {**GOOD, "PUSH_AUDIENCE": "https://fn.example.com/", "PUSH_SERVICE_ACCOUNT": account}
    )

    assert (settings.push_audience, settings.push_service_account) == (
        "https://fn.example.com/",
        account,
    )


# -- the fan-out topic has a project ---------------------------------------------------------


def test_bare_fanout_topic_without_a_project_is_refused() -> None:
    [problem] = problems({**GOOD, "FANOUT_TOPIC": "dli-cancel-fanout"})

    assert problem == "FANOUT_TOPIC is a bare name: set GOOGLE_CLOUD_PROJECT or a full path"


def test_fanout_topic_must_be_a_topic_path() -> None:
    [problem] = problems({**GOOD, "FANOUT_TOPIC": "projects/p/subscriptions/fanout"})

    assert problem.startswith("FANOUT_TOPIC must look like projects/P/topics/T")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"FANOUT_TOPIC": "fan", "GOOGLE_CLOUD_PROJECT": "acme"}, "projects/acme/topics/fan"),
        ({"FANOUT_TOPIC": "projects/other/topics/fan"}, "projects/other/topics/fan"),
        ({}, None),
    ],
)
def test_fanout_topic_with_a_project_is_accepted(extra: dict[str, str], expected: str) -> None:
    assert load_settings({**GOOD, **extra}).fanout_topic == expected
