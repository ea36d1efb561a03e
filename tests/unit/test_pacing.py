"""The pace of DLI requests under its gateway's rate limit, on a fake clock.

``run`` plays a bulk cancel the way the client sends it (each of ``workers`` threads takes the
next job, waits for its turn, sends; a 429 makes it wait ``Retry-After`` and send again, at
most ``MAX_ATTEMPTS`` times) against the simulator's own gateway limit, as a discrete-event
simulation: every figure is exact and the same on every run.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from cancel_handler.dli.pacing import CUT, GROWTH, QUIET_S, Pacer
from dli_simulator.ratelimit import RateLimit

LATENCY_S = 0.05  # a cancel DLI accepts
THROTTLE_LATENCY_S = 0.002  # the gateway's 429 comes back at once
RETRY_AFTER_S = 1.0  # what the gateway sends (whole seconds)
MAX_ATTEMPTS = 3


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Outcome:
    elapsed_s: float
    requests: int = 0
    throttled: int = 0
    failed: int = 0
    attempts: list[int] = field(default_factory=list)

    @property
    def throttled_share(self) -> float:
        return self.throttled / self.requests


Worker = Iterator[float]  # yields the clock time it waits for


def run(
    jobs: int, limit_per_s: int, instances: int = 1, workers: int = 8, phase_s: float = 0.0
) -> Outcome:
    """``phase_s``: how far into one of the gateway's one-second windows the first request
    comes (the gateway counts on its own clock)."""
    clock = Clock()
    clock.now = -phase_s
    gateway = RateLimit(limit_per_s, clock)
    clock.now = 0.0
    pacers = [Pacer(clock) for _ in range(instances)]
    queue = iter(range(jobs))
    outcome = Outcome(0.0)

    def worker(pacer: Pacer) -> Worker:
        for _ in queue:
            for attempt in range(1, MAX_ATTEMPTS + 1):
                start = pacer.turn()
                yield start
                outcome.requests += 1
                if gateway.admit() is None:
                    yield start + LATENCY_S
                    outcome.attempts.append(attempt)
                    break
                outcome.throttled += 1
                yield start + THROTTLE_LATENCY_S
                pacer.throttled(start, RETRY_AFTER_S)
                if attempt < MAX_ATTEMPTS:
                    yield clock.now + RETRY_AFTER_S
            else:
                outcome.failed += 1

    # Round robin over the instances, as Cloud Run's front end spreads one push endpoint.
    threads = [worker(pacers[i % instances]) for i in range(workers * instances)]
    _play(clock, threads)
    outcome.elapsed_s = clock.now
    return outcome


def _play(clock: Clock, threads: list[Worker]) -> None:
    order = itertools.count()
    ready: list[tuple[float, int, Worker]] = [(0.0, next(order), t) for t in threads]
    heapq.heapify(ready)
    while ready:
        at, _, thread = heapq.heappop(ready)
        clock.now = max(clock.now, at)
        wake = next(thread, None)
        if wake is not None:
            heapq.heappush(ready, (max(wake, clock.now), next(order), thread))


@pytest.mark.parametrize("limit_per_s", [100, 50])
def test_a_bulk_cancel_runs_at_the_limit_with_few_throttled_and_none_failed(
    limit_per_s: int,
) -> None:
    outcome = run(1000, limit_per_s)

    ideal_s = 1000 / limit_per_s
    assert outcome.failed == 0 and len(outcome.attempts) == 1000
    assert outcome.elapsed_s <= 1.1 * ideal_s
    assert outcome.throttled_share <= 0.10
    assert max(outcome.attempts) <= 2  # no job comes close to running out of attempts


@pytest.mark.parametrize("phase_s", [0.25, 0.5, 0.75])
@pytest.mark.parametrize("limit_per_s", [100, 50])
def test_wherever_the_gateways_second_begins_none_fails(limit_per_s: int, phase_s: float) -> None:
    """A burst that straddles two of the gateway's windows first counts up to twice the limit
    in its last second: the pace comes down over the next windows."""
    outcome = run(1000, limit_per_s, phase_s=phase_s)

    assert outcome.failed == 0 and max(outcome.attempts) <= 2
    assert outcome.elapsed_s <= 1.4 * 1000 / limit_per_s
    assert outcome.throttled_share <= 0.10


@pytest.mark.parametrize("phase_s", [0.0, 0.25, 0.5, 0.75])
@pytest.mark.parametrize("limit_per_s", [100, 50])
def test_two_instances_share_one_limit(limit_per_s: int, phase_s: float) -> None:
    outcome = run(1000, limit_per_s, instances=2, phase_s=phase_s)

    assert outcome.failed == 0 and len(outcome.attempts) == 1000
    assert outcome.elapsed_s <= 1.25 * 1000 / limit_per_s
    assert outcome.throttled_share <= 0.10


def test_without_a_limit_nothing_is_paced() -> None:
    outcome = run(400, limit_per_s=10_000)

    assert outcome.throttled == 0
    assert outcome.elapsed_s == pytest.approx(400 / 8 * LATENCY_S)


def sent(clock: Clock, pacer: Pacer, times: list[float]) -> None:
    """Requests started at ``times`` (unpaced)."""
    for moment in times:
        clock.now = moment
        assert pacer.turn() == moment


def test_the_first_throttle_holds_every_request_until_retry_after() -> None:
    clock = Clock()
    pacer = Pacer(clock)
    sent(clock, pacer, [0.5 + n / 100 for n in range(11)])  # the last one is throttled
    clock.now = 0.61

    pacer.throttled(0.60, 0.5)

    assert pacer.turn() == pytest.approx(1.11)  # Retry-After: 0.5 s
    assert pacer.per_s == pytest.approx(CUT * 10)  # the ten sent before it passed


def test_or_until_the_requests_of_the_last_second_are_a_second_old() -> None:
    clock = Clock()
    pacer = Pacer(clock)
    sent(clock, pacer, [0.5 + n / 100 for n in range(11)])
    clock.now = 0.61

    pacer.throttled(0.60, RETRY_AFTER_S)

    # the first of them started at 0.5: by 1.5 no one-second window holds any of them
    assert pacer.turn() == pytest.approx(1.5)


def test_paced_requests_start_evenly_and_a_stale_throttle_changes_nothing() -> None:
    clock = Clock()
    pacer = Pacer(clock)
    sent(clock, pacer, [n / 20 for n in range(21)])
    pacer.throttled(1.0, None)  # no Retry-After: nothing held
    pace = pacer.per_s
    assert pace == pytest.approx(CUT * 20)

    starts = [pacer.turn() for _ in range(3)]
    pacer.throttled(0.5, RETRY_AFTER_S)  # sent before the cut

    assert starts == pytest.approx([1.0, 1.0 + 1 / pace, 1.0 + 2 / pace])
    assert pacer.per_s == pytest.approx(pace)


def test_a_throttle_with_nothing_accepted_lately_holds_but_sets_no_pace() -> None:
    clock = Clock()
    pacer = Pacer(clock)

    pacer.throttled(0.0, RETRY_AFTER_S)

    assert pacer.per_s is None
    assert pacer.turn() == pacer.turn() == pytest.approx(RETRY_AFTER_S)


def test_the_pace_grows_and_is_dropped_after_a_quiet_spell() -> None:
    clock = Clock()
    pacer = Pacer(clock)
    sent(clock, pacer, [0.5 + n / 100 for n in range(11)])
    clock.now = 1.0
    pacer.throttled(0.6, None)
    cut = pacer.per_s
    assert cut is not None

    clock.now = 3.0
    grown = pacer.per_s
    clock.now = 1.0 + QUIET_S

    assert grown == pytest.approx(cut + 2 * GROWTH)
    assert pacer.per_s is None
    assert pacer.turn() == clock.now
