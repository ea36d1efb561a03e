"""Bounded concurrency for DLI calls: the one place that runs calls side by side.

The plan reads job states and the handler cancels jobs through ``each``; both stay within
``CANCEL_CONCURRENCY`` calls at a time, per event. Every call runs with the event's log context
(its labels and trace) plus the item's ``job_id`` label, in whichever thread it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, TypeVar

from cancel_handler import logs

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
            yield item, _labelled(call, item)(item)
        return
    workers = min(concurrency, len(items))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name) as pool:
        futures = {pool.submit(_labelled(call, item), item): item for item in items}
        for future in as_completed(futures):
            yield futures[future], future.result()


def _labelled(call: Callable[[T], R], item: T) -> Callable[[T], R]:
    """``call`` in a copy of the caller's log context, labelled with the item's job id."""
    job_id: Any = getattr(item, "job_id", None)
    return logs.carry(call, job_id=job_id if isinstance(job_id, str) else None)
