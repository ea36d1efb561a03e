"""Credentials and authentication without a network: the mounted credentials file (stat per
use, re-read on change), AK/SK signing with a security token, IAM token caching (threads, a
fake clock, lifetime and renewal margin), and the credential parts of the configuration."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import requests

from cancel_handler.config import (
    ConfigError,
    IamSettings,
    Secret,
    load_settings,
    read_credentials_file,
)
from cancel_handler.dli import auth
from cancel_handler.dli.auth import (
    IAM_REFUSAL_PAUSE_S,
    AkSkAuth,
    Call,
    EnvCredentials,
    FileCredentials,
    TokenAuth,
    build_auth,
    renew_margin_s,
)
from cancel_handler.dli.errors import AuthRefused, CredentialsUnavailable, TransientFault
from dli_simulator.auth import AkSkVerifier, SignedRequest
from dli_simulator.model import ApiError, Headers

PID = "0123456789abcdef0123456789abcdef"
PID2 = "fedcba9876543210fedcba9876543210"
IAM_URL = "http://iam.test"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data), encoding="utf-8")


# -- the credentials file ------------------------------------------------------------------


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts reads of the credentials file and ``stat`` calls on it."""
    counts = {"reads": 0, "stats": 0}
    real_stat = os.stat

    def read(path: str) -> tuple[str, str, str | None]:
        counts["reads"] += 1
        return read_credentials_file(path)

    def stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if str(path).endswith("credentials.json"):
            counts["stats"] += 1
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(auth, "read_credentials_file", read)
    monkeypatch.setattr(os, "stat", stat)
    return counts


def test_unchanged_file_costs_one_stat_per_use_and_no_read(
    tmp_path: Path, counted: dict[str, int]
) -> None:
    path = tmp_path / "credentials.json"
    write_json(path, {"ak": "AK1", "sk": "SK1"})
    source = FileCredentials(str(path))
    for _ in range(100):
        assert source.current() == auth.AkSk("AK1", "SK1")
    assert counted == {"reads": 1, "stats": 100}


def test_atomic_replace_is_seen_even_with_same_size_and_mtime(
    tmp_path: Path, counted: dict[str, int]
) -> None:
    path = tmp_path / "credentials.json"
    write_json(path, {"ak": "AK1", "sk": "SK1"})
    source = FileCredentials(str(path))
    assert source.current().access_key == "AK1"
    new = tmp_path / "new.json"
    write_json(new, {"ak": "AK2", "sk": "SK2"})  # same size
    old_stat = os.stat(path)
    os.utime(new, ns=(old_stat.st_atime_ns, old_stat.st_mtime_ns))  # same mtime too
    os.replace(new, path)
    assert source.current() == auth.AkSk("AK2", "SK2")
    assert source.current().access_key == "AK2"
    assert counted["reads"] == 2


def test_kubernetes_style_symlink_swap_is_seen(tmp_path: Path) -> None:
    # Secret volumes: credentials.json -> ..data/credentials.json, ..data -> ..<timestamp>
    first, second = tmp_path / "..2026_01", tmp_path / "..2026_02"
    first.mkdir()
    second.mkdir()
    write_json(first / "credentials.json", {"ak": "AK1", "sk": "SK1", "security_token": "T1"})
    write_json(second / "credentials.json", {"ak": "AK2", "sk": "SK2", "security_token": "T2"})
    (tmp_path / "..data").symlink_to(first.name)
    (tmp_path / "credentials.json").symlink_to("..data/credentials.json")
    source = FileCredentials(str(tmp_path / "credentials.json"))
    assert source.current() == auth.AkSk("AK1", "SK1", "T1")
    (tmp_path / "..data_tmp").symlink_to(second.name)
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")  # atomic swap of the symlink
    assert source.current() == auth.AkSk("AK2", "SK2", "T2")


def test_in_place_rewrite_with_restored_mtime_is_seen(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    write_json(path, {"ak": "AK1", "sk": "SK1"})
    source = FileCredentials(str(path))
    assert source.current().access_key == "AK1"
    before = os.stat(path)
    time.sleep(0.05)  # past the file system's timestamp granularity
    write_json(path, {"ak": "AK2", "sk": "SK2"})
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # ctime still moves
    assert source.current().access_key == "AK2"


def test_file_is_read_again_after_max_age_even_if_stat_is_unchanged(
    tmp_path: Path, counted: dict[str, int]
) -> None:
    path = tmp_path / "credentials.json"
    write_json(path, {"ak": "AK1", "sk": "SK1"})
    clock = Clock()
    source = FileCredentials(str(path), max_age_s=300, monotonic=clock)
    source.current()
    clock.now += 299
    source.current()
    assert counted["reads"] == 1
    clock.now += 1
    source.current()
    assert counted["reads"] == 2


def test_refresh_after_401_says_whether_the_credentials_changed(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    write_json(path, {"ak": "AK1", "sk": "SK1"})
    source = FileCredentials(str(path))
    source.current()
    assert source.refresh() is False  # same file: a retry cannot help
    write_json(path, {"ak": "AK1", "sk": "SK-new"})
    assert source.refresh() is True
    assert source.current().secret_key == "SK-new"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "unreadable"),
        ("{not json", "not valid JSON"),
        ('["ak", "sk"]', "JSON object"),
        ('{"ak": "AK1"}', "'ak' and 'sk'"),
        ('{"ak": "AK1", "sk": "  "}', "'ak' and 'sk'"),
        ('{"ak": "AK1", "sk": "TOPSECRET", "security_token": 5}', "security_token"),
    ],
)
def test_a_file_that_goes_bad_later_raises_without_secrets(
    tmp_path: Path, content: str | None, expected: str
) -> None:
    path = tmp_path / "credentials.json"
    write_json(path, {"ak": "AK1", "sk": "TOPSECRET"})
    source = FileCredentials(str(path))
    source.current()
    if content is None:
        path.unlink()
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(CredentialsUnavailable) as raised:
        source.current()
    assert expected in str(raised.value)
    assert "TOPSECRET" not in str(raised.value)


# -- AK/SK signing ---------------------------------------------------------------------------


def _verify(headers: dict[str, str], call: Call, tokens: set[str] | None) -> str:
    verifier = AkSkVerifier({"AK1": "SK1"}, tokens, clock_skew_s=900)
    request = SignedRequest(call.method, call.path, list(call.query), Headers(headers), call.body)
    return verifier.verify(request, call.project_id)


def test_security_token_is_sent_and_signed() -> None:
    call = Call("DELETE", f"/v1.0/{PID}/jobs/j-1", PID)
    signing = AkSkAuth(EnvCredentials(Secret("AK1"), Secret("SK1"), Secret("tok")))
    headers = signing.headers(call, "dli.test")
    assert headers["X-Security-Token"] == "tok"
    assert "x-security-token" in headers["Authorization"].split("SignedHeaders=")[1]
    assert _verify(headers, call, {"tok"}) == "AK1"
    with pytest.raises(ApiError, match="security token"):
        _verify(headers, call, {"another"})
    tampered = {**headers, "X-Security-Token": "other"}
    with pytest.raises(ApiError, match="signature"):
        _verify(tampered, call, {"other"})


def test_without_a_security_token_none_is_sent() -> None:
    call = Call("DELETE", f"/v1.0/{PID}/jobs/j-1", PID)
    headers = AkSkAuth(EnvCredentials(Secret("AK1"), Secret("SK1"), None)).headers(call, "h")
    assert "X-Security-Token" not in headers
    assert _verify(headers, call, None) == "AK1"
    with pytest.raises(ApiError, match="X-Security-Token is required"):
        _verify(headers, call, {"tok"})


def test_env_credentials_cannot_refresh() -> None:
    signing = AkSkAuth(EnvCredentials(Secret("AK1"), Secret("SK1"), None))
    assert signing.after_unauthorized(Call("GET", "/", PID)) is False


# -- IAM tokens ------------------------------------------------------------------------------


def iam_time(moment: datetime) -> str:
    """The simulator's (and IAM's) format: ``2026-11-29T12:00:00.123000Z``."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}000Z"


def token_response(
    value: str, lifetime_s: float = 86400.0, issued: datetime | None = None, status: int = 201
) -> requests.Response:
    issued = issued or datetime(2026, 11, 29, 12, 0, 0, 123000, tzinfo=UTC)
    body = {
        "token": {
            "issued_at": iam_time(issued),
            "expires_at": iam_time(issued + timedelta(seconds=lifetime_s)),
            "methods": ["password"],
        }
    }
    return make_response(status, body, {"X-Subject-Token": value})


def make_response(
    status: int, body: Any, headers: dict[str, str] | None = None
) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response.headers.update(headers or {})
    return response


class FakeIam:
    """Stands in for ``requests.Session``: answers token requests from ``answer``."""

    def __init__(self, answer: Callable[[int], requests.Response], delay_s: float = 0.0) -> None:
        self.answer = answer
        self.delay_s = delay_s
        self.calls: list[dict[str, Any]] = []
        self.release: threading.Event | None = None
        self.entered = threading.Event()
        self._lock = threading.Lock()

    def post(self, url: str, data: str, headers: dict[str, str], timeout: float) -> Any:
        with self._lock:
            self.calls.append({"url": url, "body": json.loads(data), "headers": headers})
            number = len(self.calls)
        self.entered.set()
        if self.release is not None:
            assert self.release.wait(5)
        time.sleep(self.delay_s)
        return self.answer(number)


def numbered_tokens(lifetime_s: float = 86400.0) -> Callable[[int], requests.Response]:
    return lambda n: token_response(f"token-{n}", lifetime_s)


def token_auth(
    iam: FakeIam, clock: Clock | None = None, password_file: str | None = None
) -> TokenAuth:
    settings = IamSettings(
        IAM_URL, "robot", None if password_file else Secret("pw-1"), password_file, "dom"
    )
    session = cast(requests.Session, iam)
    return TokenAuth(settings, session, timeout_s=2.0, monotonic=clock or Clock())


def test_token_request_is_password_method_with_project_scope() -> None:
    iam = FakeIam(numbered_tokens())
    tokens = token_auth(iam)
    headers = tokens.headers(Call("DELETE", f"/v1.0/{PID}/jobs/j", PID), "dli.test")
    assert headers == {
        "Host": "dli.test",
        "Content-Type": "application/json",
        "X-Auth-Token": "token-1",
    }
    [call] = iam.calls
    assert call["url"] == f"{IAM_URL}/v3/auth/tokens"
    assert call["headers"]["Content-Type"] == "application/json;charset=utf8"
    assert call["body"] == {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": "robot", "password": "pw-1", "domain": {"name": "dom"}}
                },
            },
            "scope": {"project": {"id": PID}},
        }
    }


@pytest.mark.parametrize(
    ("lifetime_s", "margin_s"), [(86400, 300), (3600, 300), (3000, 300), (1000, 100), (10, 1)]
)
def test_token_is_renewed_when_less_than_the_margin_remains(
    lifetime_s: float, margin_s: float
) -> None:
    assert renew_margin_s(lifetime_s) == margin_s
    clock = Clock(1000.0)
    iam = FakeIam(numbered_tokens(lifetime_s))
    tokens = token_auth(iam, clock)
    assert tokens.token(PID) == "token-1"
    clock.now = 1000.0 + lifetime_s - margin_s - 0.001
    assert tokens.token(PID) == "token-1"
    assert tokens.fetch_count == 1
    clock.now = 1000.0 + lifetime_s - margin_s
    assert tokens.token(PID) == "token-2"
    assert tokens.fetch_count == 2


def test_lifetime_is_counted_on_iams_clock_from_before_the_request() -> None:
    clock = Clock(1000.0)
    issued = datetime(2001, 1, 1, tzinfo=UTC)  # IAM's clock far from ours: does not matter

    def answer(n: int) -> requests.Response:
        clock.now += 5  # the request itself takes 5 s
        return token_response(f"token-{n}", 3600, issued)

    tokens = token_auth(FakeIam(answer), clock)
    tokens.token(PID)
    clock.now = 1000.0 + 3600 - 300 - 0.001  # renew_at counts from 1000, not 1005
    tokens.token(PID)
    assert tokens.fetch_count == 1
    clock.now = 1000.0 + 3600 - 300
    tokens.token(PID)
    assert tokens.fetch_count == 2


def test_expires_at_without_issued_at_is_counted_from_now() -> None:
    expires = datetime.now(UTC) + timedelta(seconds=1000)
    body = {"token": {"expires_at": iam_time(expires)}}
    clock = Clock(0.0)
    tokens = token_auth(
        FakeIam(lambda n: make_response(201, body, {"X-Subject-Token": "t"})), clock
    )
    tokens.token(PID)
    clock.now = 880.0  # lifetime ~1000 s, margin ~100 s
    tokens.token(PID)
    assert tokens.fetch_count == 1
    clock.now = 905.0
    tokens.token(PID)
    assert tokens.fetch_count == 2


def test_a_body_without_expiry_counts_as_one_hour() -> None:
    clock = Clock(0.0)
    answer = make_response(201, b"not json", {"X-Subject-Token": "t"})
    tokens = token_auth(FakeIam(lambda n: answer), clock)
    tokens.token(PID)
    clock.now = 3299.0
    tokens.token(PID)
    assert tokens.fetch_count == 1
    clock.now = 3300.0
    tokens.token(PID)
    assert tokens.fetch_count == 2


def test_tokens_are_per_project() -> None:
    iam = FakeIam(numbered_tokens())
    tokens = token_auth(iam)
    assert [tokens.token(PID), tokens.token(PID2), tokens.token(PID)] == [
        "token-1",
        "token-2",
        "token-1",
    ]
    assert [c["body"]["auth"]["scope"]["project"]["id"] for c in iam.calls] == [PID, PID2]


def _in_threads(count: int, work: Callable[[], Any]) -> list[Any]:
    """Run ``work`` in ``count`` threads started together; results or raised exceptions."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = work()
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return results


def test_twenty_threads_at_a_cold_start_fetch_one_token() -> None:
    iam = FakeIam(numbered_tokens(), delay_s=0.2)
    tokens = token_auth(iam)
    assert _in_threads(20, lambda: tokens.token(PID)) == ["token-1"] * 20
    assert tokens.fetch_count == 1 and len(iam.calls) == 1


@pytest.mark.parametrize(
    ("status", "error"), [(503, TransientFault), (401, AuthRefused)], ids=["5xx", "refused"]
)
def test_threads_waiting_for_a_failed_fetch_share_its_failure(
    status: int, error: type[Exception]
) -> None:
    body = {"error": {"code": status, "message": "no", "title": "x"}}
    iam = FakeIam(lambda n: make_response(status, body), delay_s=0.2)
    tokens = token_auth(iam)
    results = _in_threads(20, lambda: tokens.token(PID))
    assert all(isinstance(r, error) for r in results)
    assert len({id(r) for r in results}) == 20  # each thread raises its own instance
    assert len(iam.calls) == 1


def test_a_later_request_asks_iam_again_after_an_outage() -> None:
    iam = FakeIam(lambda n: make_response(503, {"error": {"code": 503}}))
    tokens = token_auth(iam)
    for _ in range(2):
        with pytest.raises(TransientFault):
            tokens.token(PID)
    assert len(iam.calls) == 2


def test_after_iam_refuses_the_password_it_is_asked_again_once_per_minute() -> None:
    """SPEC 5.1: a retry storm would lock the account. Every request of the instance (any
    project, any thread) shares the refusal until IAM_REFUSAL_PAUSE_S has passed."""
    clock = Clock(1000.0)
    refusal = {"error": {"code": 401, "message": "The username or password is wrong."}}
    answers = [make_response(401, refusal), make_response(401, refusal)]
    iam = FakeIam(lambda n: answers[n - 1] if n <= 2 else token_response("token-3"))
    tokens = token_auth(iam, clock)
    for second in range(60):  # one request a second, alternating projects, for a minute
        clock.now = 1000.0 + second
        with pytest.raises(AuthRefused) as raised:
            tokens.token(PID if second % 2 else PID2)
        assert (raised.value.error_code, raised.value.http_status) == ("IAM_HTTP_401", 401)
        assert "wrong" in raised.value.message
    assert len(iam.calls) == 1
    assert all(isinstance(r, AuthRefused) for r in _in_threads(20, lambda: tokens.token(PID)))
    assert len(iam.calls) == 1  # twenty threads at 1059 s: still the same refusal
    clock.now = 1000.0 + IAM_REFUSAL_PAUSE_S
    with pytest.raises(AuthRefused):
        tokens.token(PID)  # a minute later: IAM is asked again (and refuses again)
    assert len(iam.calls) == 2
    clock.now += IAM_REFUSAL_PAUSE_S - 1
    with pytest.raises(AuthRefused):
        tokens.token(PID)
    clock.now += 1
    assert tokens.token(PID) == "token-3"  # the password was fixed meanwhile
    assert len(iam.calls) == 3


def test_renewal_in_the_margin_does_not_hold_up_other_threads() -> None:
    clock = Clock(1000.0)
    iam = FakeIam(numbered_tokens(1000))  # margin 100 s
    tokens = token_auth(iam, clock)
    assert tokens.token(PID) == "token-1"
    clock.now = 1000 + 950  # due for renewal, still valid
    iam.release, iam.entered = threading.Event(), threading.Event()
    renewing = _Background(lambda: tokens.token(PID))
    assert iam.entered.wait(5)
    assert tokens.token(PID) == "token-1"  # at once, while the renewal is in flight
    iam.release.set()
    assert renewing.result() == "token-2"
    assert tokens.token(PID) == "token-2"
    assert tokens.fetch_count == 2


def test_failed_renewal_keeps_the_valid_token_until_it_expires() -> None:
    clock = Clock(1000.0)
    answers = [token_response("token-1", 1000), make_response(503, {"error": {"code": 503}})]
    iam = FakeIam(lambda n: answers[min(n, 2) - 1])
    tokens = token_auth(iam, clock)
    tokens.token(PID)
    clock.now = 1000 + 950
    assert tokens.token(PID) == "token-1"
    clock.now = 1000 + 1000  # expired: the failure shows now
    with pytest.raises(TransientFault) as raised:
        tokens.token(PID)
    assert raised.value.error_code == "IAM_HTTP_503"


def test_a_late_401_for_a_replaced_token_costs_no_fetch() -> None:
    iam = FakeIam(numbered_tokens())
    tokens = token_auth(iam)
    call = Call("DELETE", f"/v1.0/{PID}/jobs/j", PID)
    first, second = threading.Event(), threading.Event()
    seen: list[str] = []

    def slow_request() -> None:
        seen.append(tokens.headers(call, "h")["X-Auth-Token"])  # sends token-1
        first.set()
        assert second.wait(5)
        tokens.after_unauthorized(call)  # its 401 arrives after the refresh
        seen.append(tokens.token(PID))

    worker = threading.Thread(target=slow_request)
    worker.start()
    assert first.wait(5)
    tokens.headers(call, "h")
    tokens.after_unauthorized(call)  # this thread's 401: drops token-1
    assert tokens.token(PID) == "token-2"
    second.set()
    worker.join(5)
    assert seen == ["token-1", "token-2"]
    assert tokens.fetch_count == 2


def test_password_file_is_read_for_every_fetch(tmp_path: Path) -> None:
    secret = tmp_path / "iam-password"
    secret.write_text("pw-1\n", encoding="utf-8")
    iam = FakeIam(numbered_tokens())
    tokens = token_auth(iam, password_file=str(secret))
    tokens.token(PID)
    secret.write_text("pw-2\n", encoding="utf-8")
    tokens.token(PID2)
    passwords = [c["body"]["auth"]["identity"]["password"]["user"]["password"] for c in iam.calls]
    assert passwords == ["pw-1", "pw-2"]
    secret.unlink()
    with pytest.raises(CredentialsUnavailable, match="IAM_PASSWORD_FILE"):
        tokens.token("00000000000000000000000000000000")


@pytest.mark.parametrize(
    ("response", "error", "code"),
    [
        (
            make_response(401, {"error": {"code": 401, "message": "wrong", "title": "x"}}),
            AuthRefused,
            "IAM_HTTP_401",
        ),
        (
            make_response(400, {"error": {"code": "IAM.0101", "message": "m"}}),
            AuthRefused,
            "IAM.0101",
        ),
        (
            make_response(403, {"error_code": "APIGW.0301", "error_msg": "m"}),
            AuthRefused,
            "APIGW.0301",
        ),
        (make_response(403, b"<html>denied</html>"), AuthRefused, "IAM_HTTP_403"),
        (make_response(201, {"token": {}}), AuthRefused, "IAM_NO_TOKEN"),
        (make_response(429, {}), TransientFault, "IAM_HTTP_429"),
        (make_response(502, b"bad gateway"), TransientFault, "IAM_HTTP_502"),
    ],
)
def test_iam_refusals_carry_iams_code(
    response: requests.Response, error: type[AuthRefused | TransientFault], code: str
) -> None:
    tokens = token_auth(FakeIam(lambda n: response))
    with pytest.raises(error) as raised:
        tokens.token(PID)
    refused = raised.value
    assert isinstance(refused, AuthRefused | TransientFault)
    assert refused.error_code == code
    assert "pw-1" not in str(refused) + refused.message


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (requests.ConnectTimeout("t"), "IAM_TIMEOUT"),
        (requests.ConnectionError("c"), "IAM_UNREACHABLE"),
    ],
)
def test_iam_unreachable_is_transient(exc: Exception, code: str) -> None:
    def answer(n: int) -> requests.Response:
        raise exc

    with pytest.raises(TransientFault) as raised:
        token_auth(FakeIam(answer)).token(PID)
    assert (raised.value.error_code, raised.value.http_status) == (code, None)


class _Background:
    """Runs ``work`` on a thread; ``result()`` joins it and returns (or raises) its outcome."""

    def __init__(self, work: Callable[[], Any]) -> None:
        self._outcome: list[Any] = []
        self._thread = threading.Thread(target=self._run, args=(work,))
        self._thread.start()

    def _run(self, work: Callable[[], Any]) -> None:
        try:
            self._outcome.append(work())
        except Exception as exc:
            self._outcome.append(exc)

    def result(self) -> Any:
        self._thread.join(10)
        [outcome] = self._outcome
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


# -- configuration ---------------------------------------------------------------------------


def settings_env(**extra: str) -> dict[str, str]:
    return {"DLI_ENDPOINT": "https://dli.test", "DLI_PROJECT_ID": PID, **extra}


@pytest.fixture
def creds_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "credentials.json"
    write_json(path, {"ak": "FILEAK", "sk": "FILESK"})
    yield path


def test_the_file_wins_over_the_environment(creds_file: Path) -> None:
    env = settings_env(
        HUAWEICLOUD_SDK_AK="ENVAK",
        HUAWEICLOUD_SDK_SK="ENVSK",
        HUAWEICLOUD_SDK_SECURITY_TOKEN="ENVTOKEN",
        DLI_CREDENTIALS_FILE=str(creds_file),
    )
    settings = load_settings(env, local_run=True)
    signing = build_auth(settings, requests.Session())
    headers = signing.headers(Call("GET", f"/v1.0/{PID}/jobs", PID), "dli.test")
    assert "Access=FILEAK," in headers["Authorization"]
    assert "X-Security-Token" not in headers  # the file has none: nothing mixed in from env


def test_environment_credentials_with_a_security_token() -> None:
    env = settings_env(
        HUAWEICLOUD_SDK_AK="ENVAK", HUAWEICLOUD_SDK_SK="ENVSK", HUAWEICLOUD_SDK_SECURITY_TOKEN="T"
    )
    signing = build_auth(load_settings(env, local_run=True), requests.Session())
    headers = signing.headers(Call("GET", f"/v1.0/{PID}/jobs", PID), "dli.test")
    assert "Access=ENVAK," in headers["Authorization"]
    assert headers["X-Security-Token"] == "T"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, "set HUAWEICLOUD_SDK_AK and HUAWEICLOUD_SDK_SK or DLI_CREDENTIALS_FILE"),
        ({"HUAWEICLOUD_SDK_AK": "A"}, "set HUAWEICLOUD_SDK_SK or DLI_CREDENTIALS_FILE"),
        ({"DLI_CREDENTIALS_FILE": "/nonexistent/creds.json"}, "unreadable"),
        ({"DLI_AUTH": "token"}, "DLI_AUTH=token needs IAM_ENDPOINT, IAM_USERNAME"),
        ({"DLI_AUTH": "magic"}, "DLI_AUTH must be 'aksk' or 'token'"),
    ],
)
def test_missing_credentials_are_configuration_errors(extra: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(settings_env(**extra), local_run=True)
    assert any(expected in problem for problem in raised.value.problems), raised.value.problems


def test_a_malformed_file_at_start_is_a_configuration_error_without_secrets(
    creds_file: Path,
) -> None:
    write_json(creds_file, {"sk": "NEVER-PRINT-ME"})
    with pytest.raises(ConfigError) as raised:
        load_settings(settings_env(DLI_CREDENTIALS_FILE=str(creds_file)), local_run=True)
    assert "needs non-empty strings 'ak' and 'sk'" in str(raised.value)
    assert "NEVER-PRINT-ME" not in str(raised.value)


def iam_env(**extra: str) -> dict[str, str]:
    return settings_env(
        DLI_AUTH="token",
        IAM_ENDPOINT="https://iam.eu-de.otc.t-systems.com/v3/",
        IAM_USERNAME="robot",
        IAM_DOMAIN="dom",
        **extra,
    )


def test_token_settings(tmp_path: Path) -> None:
    password_file = tmp_path / "pw"
    password_file.write_text("from-file\n", encoding="utf-8")
    settings = load_settings(
        iam_env(IAM_PASSWORD="from-env", IAM_PASSWORD_FILE=str(password_file)), local_run=True
    )
    assert settings.iam is not None
    assert settings.iam.endpoint == "https://iam.eu-de.otc.t-systems.com"
    iam = FakeIam(numbered_tokens())
    session = cast(requests.Session, iam)
    TokenAuth(settings.iam, session, 1.0).token(PID)
    assert iam.calls[0]["body"]["auth"]["identity"]["password"]["user"]["password"] == "from-file"


@pytest.mark.parametrize("content", [None, "  \n"], ids=["missing", "empty"])
def test_a_bad_password_file_at_start_is_a_configuration_error(
    tmp_path: Path, content: str | None
) -> None:
    password_file = tmp_path / "pw"
    if content is not None:
        password_file.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match="IAM_PASSWORD_FILE"):
        load_settings(iam_env(IAM_PASSWORD_FILE=str(password_file)), local_run=True)
