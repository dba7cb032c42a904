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

Re-entry. A record offered by a thread that is already inside the queue (a signal handler
that logs while its thread is in :meth:`put`, or a callback that logs) must not wait for
the queue's lock or for room: it is set aside (``deque.append`` needs no lock) and offered
by the next :meth:`put` that is not re-entrant, by the worker's next :meth:`drain`, or
counted by :meth:`abandon`. Offered then, it cannot wait either: under ``block`` a full
queue drops it as ``reentrant``. The regions of :mod:`kakashi._locks` say which thread is
inside: every stretch that holds the lock or calls a callback is one.

Holding at the end. :meth:`hold` (before :meth:`close`) makes the callers that offer a
record once the queue is closed wait, so the records already queued are drained first
(by workers that no longer compete with them); :meth:`release` then lets them go on to
``on_closed``, or, if the drain could not finish, counts their records as dropped
(``shutdown_timeout``), since writing them would leave their predecessors missing.
"""

from __future__ import annotations

import functools
import sys
import threading
import time
from _thread import get_ident as _get_ident
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from kakashi import _errors
from kakashi._errors import is_interrupt
from kakashi._locks import (
    _regions,
    fork_safe_condition,
    fork_safe_lock,
    run_in_region,
    when_out_of_region,
)

__all__ = [
    "BLOCK",
    "DROP_NEWEST",
    "DROP_OLDEST",
    "KEPT",
    "REASONS",
    "RecordQueue",
    "keep_despite",
    "wait_while_full",
    "wait_while_held",
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
    "reentrant",
    "stdlib_loop",
)
T = TypeVar("T")
_NEWEST, _OLDEST, _BLOCK_TIMEOUT, _CLOSED, _WRITE_ERROR, _SHUTDOWN, _REENTRANT = range(7)
#: The states of :meth:`RecordQueue.hold`: closed offers go on, wait, or are refused.
OPEN, HOLDING, REFUSING = range(3)


class _Kept:
    """The type of :data:`KEPT`."""

    def __repr__(self) -> str:
        return "KEPT"


#: What ``on_closed`` returns for a record it keeps to write later (during a shutdown's
#: drain, behind the records still queued): the record stays counted in fallback until
#: :meth:`RecordQueue.settle_fallback`.
KEPT = _Kept()
_KEPT_MARK = "kakashi_kept"


def keep_despite(exc: BaseException) -> None:
    """Mark *exc*, raised out of ``on_closed`` once it had kept its record (a signal
    handler's, as the keeping ended): the record stays in fallback, as for :data:`KEPT`,
    for whoever kept it to settle, rather than being counted as dropped by the queue and
    then settled again when it is written."""
    setattr(exc, _KEPT_MARK, True)


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


def wait_while_held(queue: Any, timeout: float | None) -> bool:
    """Wait while *queue* holds its closed offers; return whether they may go on.

    ``False``: the queue refuses them (or *timeout* seconds passed first). A thread
    marked by :func:`never_wait_for_room` (a worker, or a writer's lane, whose thread may
    start after :meth:`RecordQueue.hold` named the exempt ones) goes on at once: the
    drain that holds the callers waits for it.
    """
    if getattr(_no_waiting, "active", False):
        return True
    deadline = None if timeout is None else time.monotonic() + timeout
    condition = queue.not_full
    with condition:
        while queue.gate == HOLDING:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            condition.wait(remaining)
        return bool(queue.gate == OPEN)


def _in_region(method: Callable[..., T]) -> Callable[..., T]:
    """Run *method* inside a region (the methods that take the queue's lock, with a
    ``with`` on it, which a signal handler cannot leave held; see ``run_in_region``)."""

    @functools.wraps(method)
    def in_region(*args: Any, **kwargs: Any) -> T:
        return run_in_region(method, *args, **kwargs)

    return in_region


def _notify_all(condition: Any) -> None:
    with condition:
        condition.notify_all()


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
            count it as dropped, :data:`KEPT` if it keeps it to write later (it stays in
            fallback until :meth:`settle_fallback`).
    """

    def __init__(
        self,
        capacity: int,
        strategy: int,
        block_timeout: float,
        wake: Callable[[], Any],
        on_drop: Callable[[Any, int], Any],
        on_closed: Callable[[Any], Any],
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
        # From how many waiting records a put hands the GIL to a claiming worker (the
        # compiled twin's; see claim_gil); more than the capacity: never.
        self.hand_over_at = self._capacity + 1
        #: Whether the last :meth:`drain` is known to have taken records of one sink
        #: only (the compiled twin tracks where sinks change as records are put, so that
        #: the worker need not read each record to split a batch into runs); never known
        #: here.
        self.drained_one_sink = False
        self._reset()

    def _reset(self) -> None:
        self._items: deque[Any] = deque()
        self._deferred: deque[Any] = deque()  # offered re-entrantly, not yet counted
        self._lock = fork_safe_lock()
        self._not_full = fork_safe_condition()
        self._gate = OPEN
        self._hold_timeout: float | None = None
        self._exempt: frozenset[int] = frozenset()
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
    gate: _ReadOnly[int] = _ReadOnly("OPEN, HOLDING or REFUSING (see hold()).")
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

    @property
    def deferred(self) -> int:
        """Records offered re-entrantly and not yet taken in (not yet counted as offered)."""
        return len(self._deferred)

    def put(self, record: Any) -> None:
        """Offer one record (the callers' entry point; never raises for a full queue).

        Re-entrant (the thread is inside the queue already): the record is set aside
        and taken in later, without waiting for anything (see the module description).
        """
        if _regions and _get_ident() in _regions:  # in_region(), without a call
            self._deferred.append(record)
            return
        run_in_region(self._offer, record, True)
        if self._deferred:
            self._take_deferred()

    def refuse(self, reason: int) -> None:
        """Count one record as offered and at once dropped for *reason* (an index of
        ``REASONS``), without taking it: a record its caller keeps out of the queue (the
        stdlib bridge cuts a loop so, as ``stdlib_loop``) and reports itself (``on_drop``
        is not told, so no drop notice is written for it).

        A thread inside the queue counts it once it leaves (the count waits for nothing)."""
        if not 0 <= reason < len(REASONS):
            raise ValueError(f"reason must be an index of REASONS, got {reason}")
        # A thread inside the queue (a finalizer run by the garbage collector on a worker
        # holding the lock) would wait for itself: it counts once it is out.
        if not when_out_of_region(lambda: self._refused(reason)):
            self._refused(reason)

    def _refused(self, reason: int) -> None:
        with self._lock:
            self._offered += 1
            self._dropped[reason] += 1

    def _take_deferred(self) -> None:
        """Offer the records set aside by re-entrant puts; none of them may wait."""
        deferred = self._deferred
        while deferred:
            try:
                record = deferred.popleft()
            except IndexError:  # another thread took the last one
                return
            run_in_region(self._offer, record, False)

    def _offer(self, record: Any, may_wait: bool) -> None:
        if self.starter is not None:
            starter, self.starter = self.starter, None
            try:
                starter()
            except BaseException as exc:  # the record is queued all the same
                if is_interrupt(exc):
                    raise
                _errors.report("async backend start", exc)
        deadline = None
        # Where this caller's record is counted, each mark set with its count, with no call
        # between them (no signal handler runs there): blocked (waiting for room), or in
        # fallback (the reason it is dropped for if not written). Under the lock, the one
        # call comes before anything changes: a signal handler that raises right after a
        # call (or at a Python function's first instruction) finds the books whole.
        blocked = False
        fallback = -1
        try:
            while True:
                dropped = None
                with self._lock:
                    items = self._items
                    size = len(items)
                    if blocked:
                        self._blocked -= 1
                        blocked = False
                    else:
                        self._offered += 1
                    if self._closed:
                        self._in_fallback += 1  # handed to on_closed below
                        fallback = _CLOSED
                        break
                    if size < self._capacity:
                        first = self._sleeping and size + 1 >= self._wake_at
                        if first:
                            self._sleeping = False
                        items += (record,)  # (an operator, not a call: see above)
                        record = None
                    elif self._strategy == DROP_NEWEST:
                        self._dropped[_NEWEST] += 1
                        dropped, reason, record = record, _NEWEST, None
                    elif self._strategy == DROP_OLDEST:
                        self._dropped[_OLDEST] += 1
                        items += (record,)
                        first, record, reason = False, None, _OLDEST
                        dropped = items.popleft()  # (the call comes last: all is counted)
                    elif not may_wait:
                        self._dropped[_REENTRANT] += 1
                        dropped, reason, record = record, _REENTRANT, None
                    else:
                        self._blocked += 1
                        blocked = True
                if record is None:
                    if dropped is not None:
                        self._on_drop(dropped, reason)
                    elif first:
                        self._wake()
                    return
                # Full, and the strategy is to block: wait for room outside the lock.
                if deadline is None:
                    deadline = time.monotonic() + self._block_timeout
                if not wait_while_full(self, max(0.0, deadline - time.monotonic())):
                    with self._lock:
                        self._blocked -= 1
                        blocked = False
                        self._dropped[_BLOCK_TIMEOUT] += 1
                    self._on_drop(record, _BLOCK_TIMEOUT)
                    return
            # Closed: the record is in fallback.
            if self._gate != OPEN and _get_ident() not in self._exempt:
                fallback = _SHUTDOWN  # unless the drain admits it
                if wait_while_held(self, self._hold_timeout):
                    fallback = _CLOSED
            handled: Any = self._on_closed(record) if fallback == _CLOSED else False
            if handled is KEPT:  # in fallback until settle_fallback
                return
            reason = fallback
            with self._lock:  # settle_fallback's, with the mark taken off with the count
                self._in_fallback -= 1
                fallback = -1
                if handled:
                    self._written_sync += 1
                else:
                    self._dropped[reason] += 1
        except BaseException as exc:
            # Each count comes first, with no call before it: a second interrupt meets a
            # record counted (only its drop notice may be lost).
            if blocked:  # a signal handler's exception (Ctrl-C) while waiting for room
                with self._lock:
                    self._blocked -= 1
                    self._dropped[_BLOCK_TIMEOUT] += 1
                self._on_drop(record, _BLOCK_TIMEOUT)
                raise
            # Placed or counted already; or kept by on_closed all the same (see
            # keep_despite; read without a call): in fallback until settle_fallback.
            if fallback < 0 or _KEPT_MARK in exc.__dict__:
                raise
            # In fallback, from the `break` on (the handler of a signal that lands as the
            # `with` ends too): counted as dropped; a signal handler's exception (Ctrl-C)
            # then goes on up, anything else the fallback raised means it was not written.
            with self._lock:
                self._in_fallback -= 1
                self._dropped[fallback] += 1
            self._on_drop(record, fallback)
            if fallback == _SHUTDOWN or is_interrupt(exc):
                raise
            return
        if not handled:
            self._on_drop(record, reason)

    def settle_fallback(self, written: bool, reason: int = _CLOSED) -> None:
        """Settle a record ``on_closed`` kept (returned :data:`KEPT`): written synchronously
        (*written*), or dropped for *reason* (an index of ``REASONS``; the caller tells
        ``on_drop`` itself)."""
        if not written and not 0 <= reason < len(REASONS):
            raise ValueError(f"reason must be an index of REASONS, got {reason}")
        with self._lock:
            self._in_fallback -= 1
            if written:
                self._written_sync += 1
            else:
                self._dropped[reason] += 1

    @_in_region
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

    @_in_region
    def drain(self, max_items: int) -> tuple[Any, ...]:
        """Take up to *max_items* records, oldest first, as a tuple; they count as in flight.

        Records set aside by re-entrant puts are taken in first.
        """
        if self._deferred:
            self._take_deferred()
        with self._lock:
            items = self._items
            count = max(0, min(max_items, len(items)))  # a count below 1 takes nothing
            batch = tuple([items.popleft() for _ in range(count)])
            self._in_flight += count
        if count and self.waiters:
            self._notify_all()
        return batch

    def retire(self, batch: tuple[Any, ...]) -> None:
        """Take back *batch*, a tuple :meth:`drain` returned, once the worker is done with
        it. The compiled queue keeps it and has the next puts free its records, one a put,
        so the worker's stretch with the GIL is shorter; here the batch is let go
        at once (the worker's reference is the last one)."""

    def free_retired(self) -> int:
        """Let go of every batch :meth:`retire` kept; returns how many (none here)."""
        return 0

    @property
    def retired(self) -> int:
        """How many batches :meth:`retire` kept whose records are not all freed yet
        (always 0 here)."""
        return 0

    def _notify_all(self) -> None:
        run_in_region(_notify_all, self._not_full)

    @_in_region
    def done(self, written: int, filtered: int, failed: int) -> None:
        """Settle a drained batch: each record written, filtered, or failed (dropped)."""
        with self._lock:
            self._in_flight -= written + filtered + failed
            self._written += written
            self._filtered += filtered
            self._dropped[_WRITE_ERROR] += failed

    @_in_region
    def abandon(self) -> list[Any]:
        """Remove every waiting record, counting it as dropped at shutdown.

        Records set aside by re-entrant puts are counted too (as offered, then dropped).
        """
        with self._lock:
            batch = list(self._items)
            self._items.clear()
            deferred = self._deferred
            while deferred:
                try:
                    batch.append(deferred.popleft())
                except IndexError:
                    break
                self._offered += 1
            self._dropped[_SHUTDOWN] += len(batch)
        return batch

    @_in_region
    def close(self) -> None:
        """Stop taking records: later offers go to ``on_closed``; blocked callers wake."""
        with self._lock:
            self._closed = True
        self._notify_all()

    @_in_region
    def hold(self, exempt: frozenset[int] = frozenset(), timeout: float | None = None) -> None:
        """Make callers that offer a record once the queue is closed wait for :meth:`release`.

        Threads in *exempt* (the workers, the thread that drains) never wait; no caller
        waits longer than *timeout* seconds (``None``: until released), then its record
        counts as dropped (``shutdown_timeout``).
        """
        with self._lock:
            self._exempt = frozenset(exempt)
            self._hold_timeout = timeout
            self._gate = HOLDING

    @_in_region
    def release(self, admit: bool) -> None:
        """End :meth:`hold`: the waiting callers go on to ``on_closed`` if *admit*, else
        their records, and those of every later closed offer, count as dropped
        (``shutdown_timeout``) until :meth:`reopen`."""
        with self._lock:
            self._gate = OPEN if admit else REFUSING
        self._notify_all()

    @_in_region
    def reopen(self) -> None:
        """Take records again after :meth:`close` (and end a :meth:`hold`)."""
        with self._lock:
            self._closed = False
            self._gate = OPEN
        self._notify_all()

    def reset_after_fork(self) -> None:
        """In a forked child: forget the parent's records and counters, renew the locks."""
        self._reset()

    @_in_region
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


_claims = threading.local()


def claim_gil() -> None:
    """Claim the GIL for this worker thread until :func:`unclaim_gil`. In the compiled
    twin, a thread that puts a record while a claiming worker waits for the GIL hands it
    over (see ``_queue_c``); here nothing is done: the pure-Python worker holds the GIL
    for all of its batch but its system calls, and callers are as slow as the switch
    interval lets them be either way. The claim is only counted (:func:`claiming`)."""
    _claims.depth = getattr(_claims, "depth", 0) + 1


def unclaim_gil() -> None:
    """End the claim :func:`claim_gil` made (the outermost one, when nested)."""
    depth = getattr(_claims, "depth", 0)
    if depth:
        _claims.depth = depth - 1


def claiming() -> bool:
    """Whether this thread claims the GIL now (between :func:`claim_gil` and
    :func:`unclaim_gil`)."""
    return bool(getattr(_claims, "depth", 0))


def unclaimed(fn: Callable[..., T], *args: Any) -> T:
    """Return ``fn(*args)`` (the compiled twin pauses this thread's claim on the GIL
    meanwhile; see :func:`claim_gil`)."""
    return fn(*args)


def begin_waiting_for_workers() -> None:
    """Say this thread now waits for the workers (the compiled twin's claiming worker
    then waits for no hand-over of the GIL; there are none here, so nothing to do)."""


def end_waiting_for_workers() -> None:
    """End what :func:`begin_waiting_for_workers` began (nothing to do here)."""


def yield_gil() -> None:
    """Let a caller waiting for the GIL have it back for a record (the compiled twin;
    callers never hand the GIL over here, so nothing to do)."""


def park_counts() -> tuple[int, int]:
    """``(parks, timed_out)`` (see the compiled twin); always ``(0, 0)`` here."""
    return 0, 0


def handed_over_here() -> int:
    """How many times this thread handed the GIL over (see the compiled twin); always 0
    here."""
    return 0


def claim_counts() -> tuple[int, int]:
    """``(handed_over, waited_out)`` (see the compiled twin); always ``(0, 0)`` here."""
    return 0, 0
