"""Bounded concurrency for DLI calls: the one place that runs calls side by side.

The plan reads job states and the handler cancels jobs through ``each``; both stay within
``CANCEL_CONCURRENCY`` calls at a time, per event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def each(
    items: Sequence[T], call: Callable[[T], R], concurrency: int, name: str = "dli"
) -> Iterator[tuple[T, R]]:
    """``call(item)`` for every item, at most ``concurrency`` at a time, yielding ``(item,
    result)`` in this thread as each one finishes (so the caller can act on it while the
    others run). A single item runs in this thread. An exception from ``call`` propagates
    when its item comes up (the calls already started still finish first)."""
    if len(items) <= 1 or concurrency <= 1:
        for item in items:
            yield item, call(item)
        return
    workers = min(concurrency, len(items))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name) as pool:
        futures = {pool.submit(call, item): item for item in items}
        for future in as_completed(futures):
            yield futures[future], future.result()
