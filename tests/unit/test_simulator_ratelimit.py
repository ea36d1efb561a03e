"""The simulator's API-gateway rate limit, on a fake clock: N requests a second, then 429."""

from __future__ import annotations

import pytest

from dli_simulator.ratelimit import RateLimit, retry_after_header


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_first_n_requests_of_each_second_pass_and_the_rest_wait_for_the_next() -> None:
    clock = Clock()
    limit = RateLimit(3, clock)

    first = [limit.admit() for _ in range(5)]
    clock.now += 0.25
    later = limit.admit()
    clock.now += 0.75  # the next window
    next_window = [limit.admit() for _ in range(4)]

    assert first[:3] == [None, None, None]
    assert first[3:] == [1.0, 1.0]
    assert later == pytest.approx(0.75)
    assert next_window[:3] == [None, None, None] and next_window[3] == pytest.approx(1.0)


def test_a_throttled_request_does_not_use_up_the_next_window() -> None:
    clock = Clock()
    limit = RateLimit(2, clock)
    for _ in range(10):
        limit.admit()

    clock.now += 1.5

    assert [limit.admit() for _ in range(3)][:2] == [None, None]


def test_retry_after_is_whole_seconds_rounded_up_at_least_one() -> None:
    assert [retry_after_header(s) for s in (0.0, 0.01, 0.999, 1.0, 1.2)] == [
        "1",
        "1",
        "1",
        "1",
        "2",
    ]


def test_a_limit_admits_at_least_one_request_a_second() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RateLimit(0)
