"""The bounded record queue between the callers and the workers.

Pure-Python twin of ``_queue_c.pyx`` and the reference for it.

The queue owns every counter of the accounting, so that at every instant::

    offered == written + written_sync + filtered + dropped + size + in_flight + blocked
               + in_fallback

``offered`` is every record handed to the backend; ``size`` records wait in the queue;
``blocked`` are held by callers waiting for room; ``in_flight`` were taken by a worker
and are being formatted and written; ``in_fallback`` were offered after :meth:`close`
and are being written synchronously by their callers (``on_closed``); ``written``,
``filtered`` and ``dropped`` (by reason) are final. The worker calls :meth:`drain` and,
when the batch is done, :meth:`done`; nothing is ever removed without being counted.

A full queue follows its overflow strategy: ``block`` (the caller waits up to
``block_timeout`` seconds, then the record is dropped and counted), ``drop_oldest`` or
``drop_newest``. The ``wake`` callback runs only when the queue goes from empty to
non-empty while a worker sleeps (the worker sets :attr:`sleeping` before it waits);
``on_drop(record, reason)`` runs for every dropped record, after the queue
is consistent again; ``on_closed(record)`` takes records offered after :meth:`close`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from kakashi._locks import fork_safe_condition, fork_safe_lock

__all__ = [
    "BLOCK",
    "DROP_NEWEST",
    "DROP_OLDEST",
    "REASONS",
    "RecordQueue",
    "wait_while_full",
]

BLOCK = 0
DROP_OLDEST = 1
DROP_NEWEST = 2

#: Why a record was dropped; ``dropped_by_reason`` in the stats uses these names.
REASONS = (
    "queue_full_drop_newest",
    "queue_full_drop_oldest",
    "queue_full_block_timeout",
    "closed",
    "write_error",
    "shutdown_timeout",
)
_NEWEST, _OLDEST, _BLOCK_TIMEOUT, _CLOSED, _WRITE_ERROR, _SHUTDOWN = range(6)


def wait_while_full(queue: Any, timeout: float) -> bool:
    """Wait until *queue* has room or is closed; return ``False`` on timeout.

    The check and the wait happen under the queue's condition, which the worker
    notifies after each drain, so no wake-up is lost.
    """
    deadline = time.monotonic() + timeout
    condition = queue.not_full
    with condition:
        queue.waiters += 1
        try:
            while queue.size >= queue.capacity and not queue.closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                condition.wait(remaining)
        finally:
            queue.waiters -= 1
    return True


class RecordQueue:
    """A bounded FIFO of records with an overflow strategy and exact counters.

    Args:
        capacity: the most records that may wait.
        strategy: :data:`BLOCK`, :data:`DROP_OLDEST` or :data:`DROP_NEWEST`.
        block_timeout: how long a caller may wait for room under :data:`BLOCK`.
        wake: called when the queue goes from empty to non-empty.
        on_drop: called as ``on_drop(record, reason_index)`` for each dropped record.
        on_closed: called with each record offered after :meth:`close`; returns
            ``True`` if it took care of the record (written synchronously), ``False`` to
            count it as dropped.
    """

    def __init__(
        self,
        capacity: int,
        strategy: int,
        block_timeout: float,
        wake: Callable[[], Any],
        on_drop: Callable[[Any, int], Any],
        on_closed: Callable[[Any], bool],
    ) -> None:
        self.capacity = capacity
        self.strategy = strategy
        self.block_timeout = block_timeout
        self.wake = wake
        self.on_drop = on_drop
        self.on_closed = on_closed
        self.starter: Callable[[], Any] | None = None
        self._reset()

    def _reset(self) -> None:
        self._items: deque[Any] = deque()
        self._lock = fork_safe_lock()
        self.not_full = fork_safe_condition()
        self.waiters = 0
        self.sleeping = False
        self.wake_at = 1
        self.closed = False
        self.offered = 0
        self.written = 0
        self.filtered = 0
        self.in_flight = 0
        self.blocked = 0
        self.in_fallback = 0
        self.written_sync = 0
        self.dropped = [0] * len(REASONS)

    @property
    def size(self) -> int:
        """How many records wait in the queue."""
        return len(self._items)

    def put(self, record: Any) -> None:
        """Offer one record (the callers' entry point; never raises for a full queue)."""
        if self.starter is not None:
            starter, self.starter = self.starter, None
            starter()
        deadline = None
        waited = False
        while True:
            dropped = None
            with self._lock:
                if waited:
                    self.blocked -= 1
                else:
                    self.offered += 1
                if self.closed:
                    self.in_fallback += 1  # handed to on_closed below
                    break
                items = self._items
                if len(items) < self.capacity:
                    items.append(record)
                    first = self.sleeping and len(items) >= self.wake_at
                    if first:
                        self.sleeping = False
                    record = None
                elif self.strategy == DROP_NEWEST:
                    self.dropped[_NEWEST] += 1
                    dropped, reason, record = record, _NEWEST, None
                elif self.strategy == DROP_OLDEST:
                    self.dropped[_OLDEST] += 1
                    dropped, reason = items.popleft(), _OLDEST
                    items.append(record)
                    first, record = False, None
                else:
                    self.blocked += 1
            if record is None:
                if dropped is not None:
                    self.on_drop(dropped, reason)
                elif first:
                    self.wake()
                return
            # Full, and the strategy is to block: wait for room outside the lock.
            if deadline is None:
                deadline = time.monotonic() + self.block_timeout
            waited = True
            if not wait_while_full(self, max(0.0, deadline - time.monotonic())):
                with self._lock:
                    self.blocked -= 1
                    self.dropped[_BLOCK_TIMEOUT] += 1
                self.on_drop(record, _BLOCK_TIMEOUT)
                return
        self._offer_closed(record)

    def _offer_closed(self, record: Any) -> None:
        try:
            handled = self.on_closed(record)
        except Exception:
            handled = False
        with self._lock:
            self.in_fallback -= 1
            if handled:
                self.written_sync += 1
            else:
                self.dropped[_CLOSED] += 1
        if not handled:
            self.on_drop(record, _CLOSED)

    def sleep(self, threshold: int = 1) -> bool:
        """Say a worker is about to wait for *threshold* records; ``False``: they are here.

        The put that brings the queue to *threshold* records wakes the worker; records
        put before this call are seen here, so no wake-up is lost.
        """
        with self._lock:
            if len(self._items) >= threshold:
                return False
            self.wake_at = threshold
            self.sleeping = True
            return True

    def drain(self, max_items: int) -> list[Any]:
        """Take up to *max_items* records, oldest first; they count as in flight."""
        with self._lock:
            items = self._items
            count = min(max_items, len(items))
            batch = [items.popleft() for _ in range(count)]
            self.in_flight += count
        if count and self.waiters:
            with self.not_full:
                self.not_full.notify_all()
        return batch

    def done(self, written: int, filtered: int, failed: int) -> None:
        """Settle a drained batch: each record written, filtered, or failed (dropped)."""
        with self._lock:
            self.in_flight -= written + filtered + failed
            self.written += written
            self.filtered += filtered
            self.dropped[_WRITE_ERROR] += failed

    def abandon(self) -> list[Any]:
        """Remove every waiting record, counting it as dropped at shutdown."""
        with self._lock:
            batch = list(self._items)
            self._items.clear()
            self.dropped[_SHUTDOWN] += len(batch)
        return batch

    def close(self) -> None:
        """Stop taking records: later offers go to ``on_closed``; blocked callers wake."""
        with self._lock:
            self.closed = True
        with self.not_full:
            self.not_full.notify_all()

    def reopen(self) -> None:
        """Take records again after :meth:`close`."""
        with self._lock:
            self.closed = False

    def reset_after_fork(self) -> None:
        """In a forked child: forget the parent's records and counters, renew the locks."""
        self._reset()

    def counters(self) -> dict[str, Any]:
        """Return every counter, read at one instant."""
        with self._lock:
            return {
                "offered": self.offered,
                "size": len(self._items),
                "in_flight": self.in_flight,
                "blocked": self.blocked,
                "in_fallback": self.in_fallback,
                "written": self.written,
                "filtered": self.filtered,
                "written_sync": self.written_sync,
                "dropped": dict(zip(REASONS, self.dropped, strict=True)),
            }
