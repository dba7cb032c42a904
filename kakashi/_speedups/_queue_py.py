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

import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

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
REASONS: tuple[str, ...] = (
    "queue_full_drop_newest",
    "queue_full_drop_oldest",
    "queue_full_block_timeout",
    "closed",
    "write_error",
    "shutdown_timeout",
)
T = TypeVar("T")
_NEWEST, _OLDEST, _BLOCK_TIMEOUT, _CLOSED, _WRITE_ERROR, _SHUTDOWN = range(6)
_STRATEGIES = (BLOCK, DROP_OLDEST, DROP_NEWEST)
# The compiled ring is a C array of pointers: its byte size must fit in a Py_ssize_t.
_MAX_CAPACITY = sys.maxsize // 8


def checked_arguments(
    capacity: Any,
    strategy: Any,
    block_timeout: Any,
    wake: Any,
    on_drop: Any,
    on_closed: Any,
) -> tuple[int, int, float, Callable[[], Any], Callable[[Any, int], Any], Callable[[Any], bool]]:
    """Return a queue's arguments checked (both twins' constructors use this).

    Raises:
        TypeError: a capacity, strategy or timeout that is not a number, or a callback
            that is not callable; the message names the parameter.
        ValueError: a capacity below 1 (or beyond what memory can index), an unknown
            strategy, a negative or NaN timeout.
    """
    if type(capacity) is bool or not isinstance(capacity, int):
        raise TypeError(f"capacity must be an int, got {type(capacity).__name__}")
    if not 1 <= capacity <= _MAX_CAPACITY:
        raise ValueError(f"capacity must be from 1 to {_MAX_CAPACITY}, got {capacity}")
    if type(strategy) is bool or not isinstance(strategy, int):
        raise TypeError(f"strategy must be an int, got {type(strategy).__name__}")
    if strategy not in _STRATEGIES:
        raise ValueError(
            f"strategy must be BLOCK ({BLOCK}), DROP_OLDEST ({DROP_OLDEST}) or DROP_NEWEST "
            f"({DROP_NEWEST}), got {strategy}"
        )
    if type(block_timeout) is bool or not isinstance(block_timeout, (int, float)):
        raise TypeError(f"block_timeout must be a number, got {type(block_timeout).__name__}")
    if not block_timeout >= 0:  # NaN too
        raise ValueError(f"block_timeout must be a number of seconds >= 0, got {block_timeout}")
    for name, callback in (("wake", wake), ("on_drop", on_drop), ("on_closed", on_closed)):
        if not callable(callback):
            raise TypeError(f"{name} must be callable, got {type(callback).__name__}")
    return int(capacity), int(strategy), float(block_timeout), wake, on_drop, on_closed


# Threads whose offers to a full queue never wait (see never_wait_for_room).
_no_waiting = threading.local()


def never_wait_for_room() -> None:
    """Mark the calling thread (a worker): its offers to a full queue under ``"block"``
    are dropped and counted at once instead of waiting for room, which only it makes.

    A writer, enricher or formatter that logs through the pipeline it serves runs on a
    worker; waiting there would stall every record behind it until the timeout.
    """
    _no_waiting.active = True


def wait_while_full(queue: Any, timeout: float) -> bool:
    """Wait until *queue* has room or is closed; return ``False`` on timeout (at once on
    a thread marked by :func:`never_wait_for_room`).

    The check and the wait happen under the queue's condition, which the worker
    notifies after each drain, so no wake-up is lost.
    """
    if getattr(_no_waiting, "active", False):
        return False
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


class _ReadOnly(Generic[T]):
    """An attribute read from ``_<name>``; assigning it raises AttributeError, as for
    the compiled twin's read-only fields."""

    def __init__(self, doc: str) -> None:
        self.__doc__ = doc
        self._attribute = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name
        self._attribute = "_" + name

    def __get__(self, instance: Any, owner: type | None = None) -> T:
        if instance is None:
            return self  # type: ignore[return-value]  # the class's attribute: its doc
        value: T = getattr(instance, self._attribute)
        return value

    def __set__(self, instance: Any, value: Any) -> None:
        raise AttributeError(f"attribute {self._name!r} of RecordQueue objects is not writable")


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
        (
            self._capacity,
            self._strategy,
            self._block_timeout,
            self._wake,
            self._on_drop,
            self._on_closed,
        ) = checked_arguments(capacity, strategy, block_timeout, wake, on_drop, on_closed)
        self.starter: Callable[[], Any] | None = None
        self._reset()

    def _reset(self) -> None:
        self._items: deque[Any] = deque()
        self._lock = fork_safe_lock()
        self._not_full = fork_safe_condition()
        self.waiters = 0
        self._sleeping = False
        self._wake_at = 1
        self._closed = False
        self._offered = 0
        self._written = 0
        self._filtered = 0
        self._in_flight = 0
        self._blocked = 0
        self._in_fallback = 0
        self._written_sync = 0
        self._dropped = [0] * len(REASONS)

    # Read-only, as in the compiled twin (whose ring is allocated for the capacity).
    capacity: _ReadOnly[int] = _ReadOnly("The most records that may wait.")
    strategy: _ReadOnly[int] = _ReadOnly("BLOCK, DROP_OLDEST or DROP_NEWEST.")
    block_timeout: _ReadOnly[float] = _ReadOnly("How long a caller may wait for room.")
    wake: _ReadOnly[Callable[[], Any]] = _ReadOnly("Called when a sleeping worker has records.")
    on_drop: _ReadOnly[Callable[[Any, int], Any]] = _ReadOnly(
        "Called with each dropped record and its reason."
    )
    on_closed: _ReadOnly[Callable[[Any], bool]] = _ReadOnly(
        "Called with each record offered after close()."
    )
    not_full: _ReadOnly[Any] = _ReadOnly("The condition blocked callers wait on.")
    closed: _ReadOnly[bool] = _ReadOnly("Whether close() was called (and not reopen()).")
    sleeping: _ReadOnly[bool] = _ReadOnly("Whether a worker waits to be woken.")
    wake_at: _ReadOnly[int] = _ReadOnly("How many records wake the sleeping worker.")
    offered: _ReadOnly[int] = _ReadOnly("Records offered to the queue.")
    written: _ReadOnly[int] = _ReadOnly("Records written by a worker.")
    filtered: _ReadOnly[int] = _ReadOnly("Records a filter rejected.")
    in_flight: _ReadOnly[int] = _ReadOnly("Records a worker took and has not settled.")
    blocked: _ReadOnly[int] = _ReadOnly("Records held by callers waiting for room.")
    in_fallback: _ReadOnly[int] = _ReadOnly("Records being written by on_closed.")
    written_sync: _ReadOnly[int] = _ReadOnly("Records on_closed wrote.")

    @property
    def dropped(self) -> list[int]:
        """Dropped records by reason index (see ``REASONS``)."""
        return list(self._dropped)

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
                    self._blocked -= 1
                else:
                    self._offered += 1
                if self._closed:
                    self._in_fallback += 1  # handed to on_closed below
                    break
                items = self._items
                if len(items) < self._capacity:
                    items.append(record)
                    first = self._sleeping and len(items) >= self._wake_at
                    if first:
                        self._sleeping = False
                    record = None
                elif self._strategy == DROP_NEWEST:
                    self._dropped[_NEWEST] += 1
                    dropped, reason, record = record, _NEWEST, None
                elif self._strategy == DROP_OLDEST:
                    self._dropped[_OLDEST] += 1
                    dropped, reason = items.popleft(), _OLDEST
                    items.append(record)
                    first, record = False, None
                else:
                    self._blocked += 1
            if record is None:
                if dropped is not None:
                    self._on_drop(dropped, reason)
                elif first:
                    self._wake()
                return
            # Full, and the strategy is to block: wait for room outside the lock.
            if deadline is None:
                deadline = time.monotonic() + self._block_timeout
            waited = True
            if not wait_while_full(self, max(0.0, deadline - time.monotonic())):
                with self._lock:
                    self._blocked -= 1
                    self._dropped[_BLOCK_TIMEOUT] += 1
                self._on_drop(record, _BLOCK_TIMEOUT)
                return
        self._offer_closed(record)

    def _offer_closed(self, record: Any) -> None:
        try:
            handled = self._on_closed(record)
        except Exception:
            handled = False
        with self._lock:
            self._in_fallback -= 1
            if handled:
                self._written_sync += 1
            else:
                self._dropped[_CLOSED] += 1
        if not handled:
            self._on_drop(record, _CLOSED)

    def sleep(self, threshold: int = 1) -> bool:
        """Say a worker is about to wait for *threshold* records; ``False``: they are here.

        The put that brings the queue to *threshold* records wakes the worker; records
        put before this call are seen here, so no wake-up is lost.
        """
        with self._lock:
            if len(self._items) >= threshold:
                return False
            self._wake_at = threshold
            self._sleeping = True
            return True

    def drain(self, max_items: int) -> list[Any]:
        """Take up to *max_items* records, oldest first; they count as in flight."""
        with self._lock:
            items = self._items
            count = min(max_items, len(items))
            batch = [items.popleft() for _ in range(count)]
            self._in_flight += count
        if count and self.waiters:
            with self._not_full:
                self._not_full.notify_all()
        return batch

    def done(self, written: int, filtered: int, failed: int) -> None:
        """Settle a drained batch: each record written, filtered, or failed (dropped)."""
        with self._lock:
            self._in_flight -= written + filtered + failed
            self._written += written
            self._filtered += filtered
            self._dropped[_WRITE_ERROR] += failed

    def abandon(self) -> list[Any]:
        """Remove every waiting record, counting it as dropped at shutdown."""
        with self._lock:
            batch = list(self._items)
            self._items.clear()
            self._dropped[_SHUTDOWN] += len(batch)
        return batch

    def close(self) -> None:
        """Stop taking records: later offers go to ``on_closed``; blocked callers wake."""
        with self._lock:
            self._closed = True
        with self._not_full:
            self._not_full.notify_all()

    def reopen(self) -> None:
        """Take records again after :meth:`close`."""
        with self._lock:
            self._closed = False

    def reset_after_fork(self) -> None:
        """In a forked child: forget the parent's records and counters, renew the locks."""
        self._reset()

    def counters(self) -> dict[str, Any]:
        """Return every counter, read at one instant."""
        with self._lock:
            return {
                "offered": self._offered,
                "size": len(self._items),
                "in_flight": self._in_flight,
                "blocked": self._blocked,
                "in_fallback": self._in_fallback,
                "written": self._written,
                "filtered": self._filtered,
                "written_sync": self._written_sync,
                "dropped": dict(zip(REASONS, self._dropped, strict=True)),
            }
