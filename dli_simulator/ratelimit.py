"""The API gateway's rate limit in front of DLI: at most ``per_s`` requests in each second.

Huawei Cloud's API gateway counts the calls of each second (a fixed window) and answers the ones
beyond its threshold ``429`` (``APIGW.0308``) with ``Retry-After``. The simulator does the same
for DLI's API (IAM and the admin API are not counted): ``Retry-After`` is the whole seconds,
rounded up, until the window ends (so ``1`` for a one-second window), as HTTP writes it. A
throttled request does not count toward the window.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class RateLimit:
    def __init__(self, per_s: int, clock: Callable[[], float] = time.monotonic) -> None:
        if per_s < 1:
            raise ValueError("a rate limit admits at least 1 request per second")
        self.per_s = per_s
        self._clock = clock
        self._lock = threading.Lock()
        self._origin = clock()
        self._window = 0
        self._count = 0

    def admit(self) -> float | None:
        """``None`` when the request may go on (it is counted); else the seconds until the
        current window ends."""
        with self._lock:
            elapsed = self._clock() - self._origin
            window = math.floor(elapsed)
            if window != self._window:
                self._window, self._count = window, 0
            if self._count < self.per_s:
                self._count += 1
                return None
            return window + 1 - elapsed


def retry_after_header(wait_s: float) -> str:
    """``Retry-After`` as HTTP writes it: whole seconds, at least 1."""
    return str(max(1, math.ceil(wait_s)))
