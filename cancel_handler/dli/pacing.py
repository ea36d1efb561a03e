"""The pace of DLI requests under DLI's rate limit: its API gateway answers ``429`` with
``Retry-After`` beyond so many requests a second.

One ``Pacer`` per DLI client, so one per instance: every event and every thread of the instance
shares it. It learns the pace from DLI's answers alone (two instances sharing one limit each
find their share the same way):

- Until DLI throttles, requests start as soon as their callers send them.
- A 429 that was sent after the last cut ("fresh") cuts the pace to ``CUT`` times the requests
  that started in the second before it and were not throttled (answered or still in flight): the
  limit as the gateway counts it, or this instance's share of it (just after a hold, when that
  second says little, ``CUT`` times the pace; with nothing sent lately and no pace yet, no pace:
  the 429 tells nothing of the limit). The first cut also holds every request back until the
  429's ``Retry-After`` has passed, or sooner, once the requests of the last second are a second
  old: the gateway's window is full, whatever else were sent now would be throttled too. A 429
  sent before the last cut changes nothing (that cut already answers it). The throttled request
  itself waits its ``Retry-After`` (the client's backoff) before it is sent again.
- Requests then start evenly spaced at the pace, which grows by ``GROWTH`` requests a second
  every second (additive increase, multiplicative decrease: instances sharing a limit converge
  to fair shares), so that it follows a limit or a share that grows. A fresh 429 while paced (at
  most one cut per ``RECUT_AFTER_S``) cuts it to ``RECUT`` times the lower of the pace and that
  count: a second that straddled two of the gateway's windows counts up to twice its limit, so
  the first estimate may be high. After ``QUIET_S`` without a 429 the pace is dropped.

The pacer only decides when a request may start (and counts it as sent), and hears of the 429s;
the client sleeps (within the event's budget).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

CUT = 0.97
RECUT = 0.9  # a cut while paced
RECUT_AFTER_S = 0.25  # at most one cut per this, while paced
GROWTH = 2.0  # requests a second, added every second
QUIET_S = 30.0
MIN_PER_S = 1.0
WINDOW_S = 1.0  # the gateway's counting window


class Pacer:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._per_s: float | None = None  # the pace; None: not paced
        self._next = -math.inf  # the earliest start of the next request
        self._resume_at = -math.inf  # no request starts before (the first cut's Retry-After)
        self._cut_at = -math.inf
        self._grown_at = -math.inf
        self._starts: deque[float] = deque()  # start times given lately, in order
        self._throttled: deque[float] = deque()  # start times of the requests DLI throttled
        self.throttled_count = 0

    @property
    def per_s(self) -> float | None:
        """Requests a second the pace allows now; ``None`` when not paced."""
        with self._lock:
            self._grow(self._clock())
            return self._per_s

    def turn(self) -> float:
        """Reserve the next start: the time (on the clock) this request may start at (it is
        counted as sent then)."""
        with self._lock:
            now = self._clock()
            self._grow(now)
            start = max(now, self._resume_at)
            if self._per_s is not None:
                start = max(start, self._next)
                self._next = start + 1.0 / self._per_s
            self._starts.append(start)
            while self._starts[0] < now - 2 * WINDOW_S:
                self._starts.popleft()
            return start

    def throttled(self, started: float, retry_after_s: float | None) -> None:
        """DLI answered 429 to the request that started at ``started``."""
        with self._lock:
            self.throttled_count += 1
            self._throttled.append(started)
            if started < self._cut_at + (RECUT_AFTER_S if self._per_s is not None else 0.0):
                return  # the window that was full at the last cut may still be
            now = self._clock()
            recent = self._admitted_before(started, now - WINDOW_S)
            if self._per_s is None:
                if retry_after_s:
                    self._resume_at = max(self._resume_at, self._hold_until(now, retry_after_s))
                if recent > 0:  # else nothing tells the limit yet
                    self._per_s = max(MIN_PER_S, CUT * recent)
            else:
                # paced and still throttled: the estimate was high (a second that straddled
                # two of the gateway's windows counts up to twice its limit)
                self._per_s = max(MIN_PER_S, RECUT * min(self._per_s, recent or self._per_s))
            self._cut_at = self._grown_at = now
            self._next = max(self._next, now)

    def _hold_until(self, now: float, retry_after_s: float) -> float:
        """The end of the first hold: ``Retry-After`` (whole seconds, an upper bound of the
        gateway's window end), or sooner, once every request sent in the last second has left
        a one-second window (no window, however the gateway aligns it, then holds more of this
        instance's requests than it just admitted)."""
        earliest = next((t for t in self._starts if t >= now - WINDOW_S), now)
        return max(now, min(now + retry_after_s, earliest + WINDOW_S))

    def _admitted_before(self, started: float, since: float) -> int:
        """Requests started in [since, started) and not throttled: what the gateway counted in
        its window before it refused this one (answered or still in flight)."""
        horizon = since - WINDOW_S
        for times in (self._starts, self._throttled):
            while times and times[0] < horizon:
                times.popleft()
        sent = sum(1 for t in self._starts if since <= t < started)
        refused = sum(1 for t in self._throttled if since <= t < started)
        return sent - refused

    def _grow(self, now: float) -> None:
        if self._per_s is None:
            return
        if now - self._cut_at >= QUIET_S:
            self._per_s = None
            return
        elapsed = now - max(self._grown_at, self._resume_at)
        if elapsed > 0:
            self._per_s += GROWTH * elapsed
            self._grown_at = now
