# cython: language_level=3, embedsignature=True
"""The bounded record queue, compiled: the twin of ``_queue_py.py`` (see it for the
behaviour and the accounting).

The ring is a C array of owned references, indexed modulo its capacity: the cyclic
garbage collector never walks it (records form no cycles), which matters when tens of
thousands of records wait. Every state change happens
in C with no Python code in between, so under the GIL it is atomic without a lock; the
callbacks (``wake``, ``on_drop``, ``on_closed``) run only once the ring is consistent.
A free-threaded build will need a critical section around the ring operations.

Re-entry: Python code runs inside :meth:`put` only in the callbacks and the wait for
room, so only those are regions (see :mod:`kakashi._locks`); a put that finds its
thread in a region sets its record aside, as the twin does.
"""

cimport cython
from cpython.mem cimport PyMem_Calloc, PyMem_Free
from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF, Py_INCREF

from collections import deque
from time import monotonic

from kakashi import _locks
from kakashi._locks import fork_safe_condition
from kakashi._speedups import _queue_py as _py


cdef extern from "pythread.h":
    unsigned long PyThread_get_thread_ident()

BLOCK = _py.BLOCK
DROP_OLDEST = _py.DROP_OLDEST
DROP_NEWEST = _py.DROP_NEWEST
REASONS = _py.REASONS
wait_while_full = _py.wait_while_full
never_wait_for_room = _py.never_wait_for_room
wait_while_held = _py.wait_while_held

cdef enum:
    NEWEST = 0
    OLDEST = 1
    BLOCK_TIMEOUT = 2
    CLOSED = 3
    WRITE_ERROR = 4
    SHUTDOWN = 5
    REENTRANT = 6
    REASON_COUNT = 7

cdef enum:
    OPEN = 0
    HOLDING = 1
    REFUSING = 2

cdef object _wait_while_full = _py.wait_while_full
cdef object _wait_while_held = _py.wait_while_held
# The same dictionary as kakashi._locks' (never rebound; cleared in place after a fork).
cdef dict _regions = _locks._regions
cdef object _enter_region = _locks.enter_region
cdef object _leave_region = _locks.leave_region


cdef inline int _enter_once(bint *entered) except -1:
    # enter_region's own work, done in C: calling the Python function would run a
    # pending signal handler at its first bytecode, before the region is marked, while
    # this thread holds a record it has counted as offered and not yet placed.
    cdef object ident
    if not entered[0]:
        ident = PyThread_get_thread_ident()
        _regions[ident] = _regions.get(ident, 0) + 1
        entered[0] = True
    return 0
cdef object _checked = _py.checked_arguments
cdef object _monotonic = monotonic


@cython.final
@cython.auto_pickle(False)
cdef class RecordQueue:
    """A bounded FIFO of records with an overflow strategy and exact counters."""

    def __cinit__(self, capacity, strategy, block_timeout, wake, on_drop, on_closed):
        # Validated and fixed here, once: __init__ cannot be called again to change the
        # capacity under an allocated ring.
        (self.capacity, self.strategy, self.block_timeout, self.wake, self.on_drop,
         self.on_closed) = _checked(capacity, strategy, block_timeout, wake, on_drop, on_closed)
        self.starter = None
        self._reset()

    cdef void _reset_counters(self) noexcept:
        cdef int i
        self.offered = self.written = self.filtered = self.in_flight = self.written_sync = 0
        self.blocked = self.in_fallback = 0
        for i in range(REASON_COUNT):
            self._dropped[i] = 0

    def _reset(self):
        self._clear_ring()
        if self._ring is NULL:
            self._ring = <PyObject **>PyMem_Calloc(self.capacity, sizeof(PyObject *))
            if self._ring is NULL:
                raise MemoryError("cannot allocate the record queue")
        self._head = 0
        self._size = 0
        self.not_full = fork_safe_condition()
        self.waiters = 0
        self.sleeping = False
        self.wake_at = 1
        self.closed = False
        self.gate = OPEN
        self._hold_timeout = None
        self._exempt = frozenset()
        self._deferred = deque()
        self._reset_counters()

    cdef void _clear_ring(self):
        cdef PyObject *item
        while self._size:
            item = self._ring[self._head]
            self._ring[self._head] = NULL
            self._head = (self._head + 1) % self.capacity
            self._size -= 1
            Py_DECREF(<object>item)

    def __dealloc__(self):
        if self._ring is not NULL:
            self._clear_ring()
            PyMem_Free(self._ring)
            self._ring = NULL

    @property
    def size(self):
        """How many records wait in the queue."""
        return self._size

    @property
    def deferred(self):
        """Records offered re-entrantly and not yet taken in (not yet counted as offered)."""
        return len(self._deferred)

    @property
    def dropped(self):
        """Dropped records by reason index (see ``REASONS``)."""
        return [self._dropped[i] for i in range(REASON_COUNT)]

    cdef inline void _push(self, object record):
        cdef Py_ssize_t index = self._head + self._size
        if index >= self.capacity:
            index -= self.capacity
        Py_INCREF(record)  # the ring owns a reference
        self._ring[index] = <PyObject *>record
        self._size += 1

    cdef inline object _pop(self):
        cdef PyObject *item = self._ring[self._head]
        self._ring[self._head] = NULL
        self._head += 1
        if self._head == self.capacity:
            self._head = 0
        self._size -= 1
        record = <object>item  # takes a new reference...
        Py_DECREF(record)      # ...so drop the ring's
        return record

    cpdef put(self, object record):
        """Offer one record (the callers' entry point; never raises for a full queue).

        Re-entrant (the thread is inside the queue already): the record is set aside
        and taken in later, without waiting for anything (see ``_queue_py``).
        """
        if _regions and PyThread_get_thread_ident() in _regions:
            self._deferred.append(record)
            return
        self._offer(record, True)
        if self._deferred:
            self._take_deferred()

    cdef _take_deferred(self):
        """Offer the records set aside by re-entrant puts; none of them may wait."""
        deferred = self._deferred
        while deferred:
            try:
                record = deferred.popleft()
            except IndexError:  # another thread took the last one
                return
            self._offer(record, False)

    cdef _offer(self, object record, bint may_wait):
        # Python code runs here only in the callbacks and the wait for room: the first of
        # them enters a region, which lasts until the record is accounted for (a SIGTERM
        # deferred to the region's end must find it in the queue, not half-way).
        cdef bint entered = False
        try:
            self._offer_in(record, may_wait, &entered)
        finally:
            if entered:
                _leave_region()

    cdef _offer_in(self, object record, bint may_wait, bint *entered):
        cdef object dropped
        cdef int reason = 0
        cdef bint first = False
        cdef double deadline = -1.0
        if self.starter is not None:
            starter = self.starter
            self.starter = None
            _enter_once(entered)
            starter()
        self.offered += 1
        while True:
            if self.closed:
                self.in_fallback += 1  # handed to on_closed below
                break
            dropped = None
            if self._size < self.capacity:
                self._push(record)
                first = self.sleeping and self._size >= self.wake_at
                if first:
                    self.sleeping = False
                record = None
            elif self.strategy == DROP_NEWEST:
                self._dropped[NEWEST] += 1
                dropped = record
                reason = NEWEST
                record = None
            elif self.strategy == DROP_OLDEST:
                self._dropped[OLDEST] += 1
                dropped = self._pop()
                reason = OLDEST
                self._push(record)
                record = None
            elif not may_wait:
                self._dropped[REENTRANT] += 1
                dropped = record
                reason = REENTRANT
                record = None
            if record is None:
                if dropped is not None:
                    _enter_once(entered)
                    self.on_drop(dropped, reason)
                elif first:
                    _enter_once(entered)
                    self.wake()
                return
            # Full, and the strategy is to block: wait for room (releasing the GIL).
            if deadline < 0:
                deadline = _monotonic() + self.block_timeout
            self.blocked += 1
            _enter_once(entered)
            try:
                room = _wait_while_full(self, max(0.0, deadline - _monotonic()))
            finally:
                self.blocked -= 1
            if not room:
                self._dropped[BLOCK_TIMEOUT] += 1
                self.on_drop(record, BLOCK_TIMEOUT)
                return
        _enter_once(entered)
        self._offer_closed(record)

    cdef _offer_closed(self, object record):
        cdef int reason = CLOSED
        handled = False
        if self.gate != OPEN and PyThread_get_thread_ident() not in self._exempt:
            if not _wait_while_held(self, self._hold_timeout):
                reason = SHUTDOWN
        if reason == CLOSED:
            try:
                handled = self.on_closed(record)
            except Exception:
                handled = False
        self.in_fallback -= 1
        if handled:
            self.written_sync += 1
        else:
            self._dropped[reason] += 1
            self.on_drop(record, reason)

    def sleep(self, Py_ssize_t threshold=1):
        """Say a worker is about to wait for *threshold* records; ``False``: they are here."""
        if self._size >= threshold:
            return False
        self.wake_at = threshold
        self.sleeping = True
        return True

    def drain(self, Py_ssize_t max_items):
        """Take up to *max_items* records, oldest first; they count as in flight.

        Records set aside by re-entrant puts are taken in first.
        """
        cdef Py_ssize_t count
        cdef Py_ssize_t i
        cdef list batch
        if self._deferred:
            self._take_deferred()
        count = min(max_items, self._size)
        batch = [None] * count
        for i in range(count):
            batch[i] = self._pop()
        self.in_flight += count
        if count and self.waiters:
            self._notify_all()
        return batch

    def _notify_all(self):
        _enter_region()
        try:
            with self.not_full:
                self.not_full.notify_all()
        finally:
            _leave_region()

    def done(self, long long written, long long filtered, long long failed):
        """Settle a drained batch: each record written, filtered, or failed (dropped)."""
        self.in_flight -= written + filtered + failed
        self.written += written
        self.filtered += filtered
        self._dropped[WRITE_ERROR] += failed

    def abandon(self):
        """Remove every waiting record, counting it as dropped at shutdown.

        Records set aside by re-entrant puts are counted too (as offered, then dropped).
        """
        cdef list batch = []
        while self._size:
            batch.append(self._pop())
        deferred = self._deferred
        while deferred:
            try:
                batch.append(deferred.popleft())
            except IndexError:
                break
            self.offered += 1
        self._dropped[SHUTDOWN] += len(batch)
        return batch

    def close(self):
        """Stop taking records: later offers go to ``on_closed``; blocked callers wake."""
        self.closed = True
        self._notify_all()

    def hold(self, exempt=frozenset(), timeout=None):
        """Make callers that offer a record once the queue is closed wait for :meth:`release`.

        Threads in *exempt* never wait; no caller waits longer than *timeout* seconds
        (``None``: until released), then its record counts as dropped (``shutdown_timeout``).
        """
        self._exempt = frozenset(exempt)
        self._hold_timeout = timeout
        self.gate = HOLDING

    def release(self, bint admit):
        """End :meth:`hold`: waiting callers go on to ``on_closed`` if *admit*, else their
        records, and those of every later closed offer, count as dropped until :meth:`reopen`."""
        self.gate = OPEN if admit else REFUSING
        self._notify_all()

    def reopen(self):
        """Take records again after :meth:`close` (and end a :meth:`hold`)."""
        self.closed = False
        self.gate = OPEN
        self._notify_all()

    def reset_after_fork(self):
        """In a forked child: forget the parent's records and counters, renew the locks."""
        self._reset()

    def counters(self):
        """Return every counter, read at one instant."""
        return {
            "offered": self.offered,
            "size": self._size,
            "in_flight": self.in_flight,
            "blocked": self.blocked,
            "in_fallback": self.in_fallback,
            "written": self.written,
            "filtered": self.filtered,
            "written_sync": self.written_sync,
            "dropped": dict(zip(REASONS, self.dropped)),
        }
