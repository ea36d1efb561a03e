"""The DLI client under DLI's rate limit, on a fake clock: every request of the client (and of
its ``bounded`` copies: one instance) waits for the turn its pacer gives, within the deadline."""

from __future__ import annotations

import json
from typing import Any

import pytest
import urllib3

from cancel_handler.config import Secret
from cancel_handler.dli.auth import AkSkAuth, EnvCredentials
from cancel_handler.dli.client import DliClient, RetryPolicy
from cancel_handler.dli.errors import TransientFailure
from cancel_handler.dli.pacing import CUT, GROWTH
from cancel_handler.dli.types import JobRef

ENDPOINT = "https://dli.example.com"
PID = "0123456789abcdef0123456789abcdef"
JOBS = [f"5a3a2c2e-1111-4222-8333-94445555{n:04d}" for n in range(20)]


class Clock:
    def __init__(self) -> None:
        self.now = 500.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Response:
    def __init__(self, status: int, body: Any, headers: dict[str, str]) -> None:
        self.status = status
        self.headers = urllib3.HTTPHeaderDict(headers)
        self.data = json.dumps(body).encode()


class Gateway:
    """Stands in for the connection pool: answers each DELETE 200, except those listed in
    ``throttle`` (by order of arrival) which get 429 with ``Retry-After: 1``. Records the clock
    time of every request."""

    def __init__(self, clock: Clock, throttle: set[int]) -> None:
        self.clock = clock
        self.throttle = throttle
        self.sent_at: list[float] = []

    def request(self, method: str, url: str, **_: Any) -> Response:
        self.sent_at.append(self.clock.now)
        if len(self.sent_at) in self.throttle:
            body = {"error_code": "APIGW.0308", "error_msg": "throttled"}
            return Response(429, body, {"Retry-After": "1"})
        self.clock.now += 0.05  # DLI takes 50 ms
        return Response(200, {"is_success": True, "message": ""}, {})


def client_for(clock: Clock, gateway: Gateway) -> DliClient:
    return DliClient(
        ENDPOINT,
        AkSkAuth(EnvCredentials(Secret("AK"), Secret("SK"), None)),
        RetryPolicy(),
        gateway,  # type: ignore[arg-type]
        sleep=clock.sleep,
        clock=clock,
    )


def test_after_a_429_no_request_of_the_instance_starts_before_retry_after() -> None:
    clock = Clock()
    gateway = Gateway(clock, throttle={4})
    client = client_for(clock, gateway)
    outcomes = [client.bounded(clock.now + 45).cancel(JobRef(PID, job)) for job in JOBS[:5]]

    throttled_at = gateway.sent_at[3]
    after = gateway.sent_at[4:]
    assert [o.outcome for o in outcomes] == ["cancelled"] * 5
    assert outcomes[3].attempts == 2  # the throttled job, sent again
    assert all(t >= throttled_at + 1.0 for t in after)


def test_then_requests_start_at_the_pace_dli_accepted() -> None:
    clock = Clock()
    gateway = Gateway(clock, throttle={10})
    client = client_for(clock, gateway)
    for job in JOBS:
        client.cancel(JobRef(PID, job))

    # 9 accepted in the last second (50 ms each), then the 429: the pace is CUT x 9 a second,
    # growing by GROWTH a second every second; unpaced, they would be 50 ms apart
    gaps = [b - a for a, b in zip(gateway.sent_at[11:], gateway.sent_at[12:], strict=False)]
    assert 1 / (CUT * 9 + 2 * GROWTH) <= gaps[0] <= 1 / (CUT * 9)
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] > 0.08
    assert len(gateway.sent_at) == len(JOBS) + 1


def test_a_turn_past_the_events_deadline_is_not_waited_for() -> None:
    clock = Clock()
    gateway = Gateway(clock, throttle={3})
    client = client_for(clock, gateway)
    client.cancel(JobRef(PID, JOBS[0]))
    client.cancel(JobRef(PID, JOBS[1]))
    with pytest.raises(TransientFailure):
        client.bounded(clock.now + 0.01).cancel(JobRef(PID, JOBS[2]))  # its 429, no time left
    sent = len(gateway.sent_at)

    with pytest.raises(TransientFailure) as raised:
        client.bounded(clock.now + 0.5).cancel(JobRef(PID, JOBS[3]))  # held for 1 s

    assert raised.value.error_code == "DLI_TIMEOUT" and raised.value.attempts == 0
    assert len(gateway.sent_at) == sent
