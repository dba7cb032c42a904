"""The async backend: a bounded queue and worker threads between callers and writers.

The calling thread only captures the record and puts it in the queue (both compiled);
worker threads named ``kakashi-worker-N`` drain it in batches, run each record through its
pipeline's enrichers, filters and formatter, and hand every writer one batch per call.

Guarantees (each is tested):

- Accounting: ``messages_enqueued == messages_written + messages_filtered +
  messages_dropped + pending`` at every instant, with drops counted by reason. After a
  drop, the next batch written for that pipeline starts with a WARNING record saying how
  many records were dropped and why.
- Order: records reach each writer in the order they were enqueued, whatever
  ``worker_count`` is: workers take turns to drain, format and write. Writers that
  declare ``concurrent = True`` (network callbacks) receive their batches, in order, on a
  delivery thread of their own (a :class:`_Lane`), outside that turn.
- :meth:`AsyncBackend.flush` returns once everything enqueued before it was handed to
  the operating system, or says what is still pending when its timeout expires.
- :meth:`AsyncBackend.shutdown` stops intake, drains, flushes, closes the writers and
  returns within its timeout, reporting what it had to abandon. Every live backend is
  shut down at interpreter exit; :func:`install_sigterm_handler` does it on SIGTERM too.
- Exit: the drain at interpreter exit (and :func:`shutdown_all`) closes the intake of
  every backend first; threads still logging (daemon threads) wait until what was queued
  is written, then write synchronously, so each thread's records stay in order. If the
  drain runs out of ``shutdown_timeout``, their records are counted as dropped
  (``shutdown_timeout``) rather than written after predecessors that were abandoned.
- Re-entry: a log call made while its thread is inside the library (a signal handler
  that interrupted a log call) never waits for a lock that thread holds: the queue sets
  the record aside and takes it in right after (``reentrant`` counts the few that find
  a ``block`` queue full and may not wait), the file writer appends it after the write
  it interrupted. SIGTERM drains in a thread of its own, after the log call it
  interrupted, so the process always ends.
- Fork: the child gets an empty queue, fresh locks and its own workers, started when it
  first logs; it never writes the parent's pending records.
- Processes: a ``multiprocessing`` child (fork, forkserver or spawn) whose target
  returns or raises has every record written before it ends, with no call to add.
- Faults: whatever a writer, enricher or formatter raises never reaches the application
  and never ends a worker; it is counted and reported once on stderr. A failed batch is
  retried on the writer's lane (backoff with jitter, never in a worker's turn, so other
  writers are not held up), then counted as dropped; a writer failing again and again is
  skipped fast (a circuit breaker). A writer whose flush or close hangs holds up no flush,
  shutdown or exit beyond its timeout, and no caller afterwards. Records logged from
  inside a worker never wait for room in the queue.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import dataclasses
import functools
import inspect
import itertools
import os
import random
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, cast

from kakashi import _errors
from kakashi._durations import MAX_TIMEOUT, MAX_WAIT, check_seconds
from kakashi._errors import is_interrupt
from kakashi._locks import (
    after_fork_in_child,
    fork_safe_condition,
    fork_safe_event,
    fork_safe_lock,
    fork_safe_rlock,
    run_in_region,
    run_outside_region,
    when_out_of_region,
)
from kakashi._speedups import (
    BLOCK,
    DROP_NEWEST,
    DROP_OLDEST,
    REASONS,
    Record,
    RecordQueue,
    begin_waiting_for_workers,
    claim_gil,
    end_waiting_for_workers,
    format_json,
    minimal_json,
    never_wait_for_room,
    sink_run_end,
    unclaim_gil,
    unclaimed,
    yield_gil,
)
from kakashi._speedups._queue_py import KEPT, keep_despite
from kakashi._wording import plural
from kakashi.typing import AsyncSink, Sink, Writer, is_concurrent
from kakashi.writers.delivery import (
    BACKLOG_FULL,
    CIRCUIT_OPEN,
    SHUTDOWN,
    WRITE_ERROR,
    WRITER_REJECTED,
    DeliveryError,
    status_reason,
)
from kakashi.writers.file import FileWriter

__all__ = [
    "AsyncBackend",
    "AsyncConfig",
    "FlushResult",
    "configure_async_backend",
    "flush_all",
    "get_async_backend",
    "install_sigterm_handler",
    "reporting_backend",
    "shutdown_all",
    "shutdown_async_logging",
]

_STRATEGIES = {"block": BLOCK, "drop_oldest": DROP_OLDEST, "drop_newest": DROP_NEWEST}
_WRITE_ERROR = REASONS.index("write_error")
_CLOSED_REASON = REASONS.index("closed")
_SHUTDOWN_REASON = REASONS.index("shutdown_timeout")
# The part of a shutdown's timeout kept for closing the writers (at most this many
# seconds): the drain stops that much before the deadline (see AsyncBackend.shutdown).
_CLOSE_SHARE = 0.1
_CLOSE_RESERVE_MAX = 0.25
# Per thread: inside the synchronous fallback (a writer that logs from there would recurse).
_thread_state = threading.local()


def _notice_line(notice: Record) -> bytes:
    """A drop notice's JSON line, with its counts, where the sink gave none (it filtered
    the notice out, its render failed or returned no bytes)."""
    try:
        line: object = format_json(notice)
        if type(line) is bytes:
            return line
    except Exception as exc:
        _errors.report("drop notice: format_json", exc)
    return minimal_json(notice, "drop notice")


def _describe(writer: object) -> str:
    """``repr(writer)`` for reports and stats; never raises (a writer's ``__repr__`` that
    does must not end a lane's thread or cost the writer its records)."""
    try:
        return repr(writer)
    except Exception:
        return f"<{type(writer).__name__} object (repr failed)>"


class _Run:
    """One pipeline's run of records in a batch, settled once every writer took it."""

    __slots__ = (
        "filtered",
        "kept",
        "lost",
        "notice",
        "noticed",
        "reasons",
        "sink",
        "told",
        "waiting",
    )

    def __init__(
        self,
        sink: Sink,
        kept: int,
        filtered: int,
        told: list[int] | None,
        notice: bytes | None = None,
    ) -> None:
        self.sink = sink
        self.told = told  # the drop counts its notice line carries
        self.notice = notice  # that notice line (the run's first), if it has one
        self.kept = kept  # records rendered (not filtered out)
        self.filtered = filtered
        self.lost = 0  # the most records any writer could not take
        self.reasons: dict[str, int] = {}  # why that writer did not get them
        self.waiting = 0  # lanes yet to take the run
        # Some writer took the run's drop notice (its first line): the counts it carries
        # are told, and not told again (to that writer a second time) when another
        # writer loses the run.
        self.noticed = False

    def untold(self) -> list[int] | None:
        """The drop counts to carry over to the next notice: none once one writer wrote it."""
        return None if self.noticed else self.told

    def lose(self, reasons: Mapping[str, int]) -> None:
        """One writer did not get these records (a count by reason): a record is lost
        when some writer lost it, so the run loses as many as the writer that lost most."""
        total = sum(reasons.values())
        if total > self.lost:
            self.lost = total
            self.reasons = dict(reasons)

    def took_first(self, lines: Sequence[bytes]) -> None:
        """A writer took *lines*' first line: if that is the notice, its counts are told."""
        if self.notice is not None and lines and lines[0] is self.notice:
            self.noticed = True


def _add(total: dict[str, int], more: Mapping[str, int]) -> dict[str, int]:
    """Add the counts by reason *more* to *total*; return *total*."""
    for reason, count in more.items():
        if count:
            total[reason] = total.get(reason, 0) + count
    return total


def _trimmed(reasons: Mapping[str, int], total: int) -> dict[str, int]:
    """*reasons* cut down to *total* records, from the largest count (a run's lost lines
    include its notice line, which is no record)."""
    out = {reason: count for reason, count in reasons.items() if count}
    excess = sum(out.values()) - total
    for reason in sorted(out, key=out.__getitem__, reverse=True):
        if excess <= 0:
            break
        cut = min(excess, out[reason])
        excess -= cut
        out[reason] -= cut
        if not out[reason]:
            del out[reason]
    return out


class _Outcome:
    """What one write of a batch did (see :meth:`AsyncBackend._attempt`)."""

    __slots__ = ("dropped", "dropped_at", "first", "reason", "rest", "rest_at", "retry_after")

    def __init__(
        self,
        rest: Sequence[bytes] = (),
        reason: str = WRITE_ERROR,
        *,
        dropped: dict[str, int] | None = None,
        first: bool = False,
        retry_after: float | None = None,
        rest_at: Sequence[int] | None = None,
        dropped_at: Mapping[int, str] | None = None,
    ) -> None:
        self.rest = rest  # the lines worth trying again, in order
        self.reason = reason  # why they failed
        self.dropped = dropped or {}  # lost for good, by reason (in the writer's stats)
        self.first = first  # the batch's first line was delivered
        self.retry_after = retry_after  # the server's wish before the next try
        # Where they were in the batch: the indices of *rest* (None: the batch's last
        # len(rest) lines) and of the dropped lines (None: not said, a count only).
        self.rest_at = rest_at
        self.dropped_at = dropped_at


class _Delivery:
    """A run's lines waiting in a lane, with what earlier tries of them left."""

    __slots__ = ("ahead", "lines", "lost", "reason", "retry_after", "run", "shared", "tries")

    def __init__(self, run: _Run, lines: Sequence[bytes], outcome: _Outcome | None) -> None:
        self.run = run
        self.lines = lines
        self.tries = 0 if outcome is None else 1  # writes of them that failed already
        self.reason = WRITE_ERROR if outcome is None else outcome.reason
        self.retry_after = None if outcome is None else outcome.retry_after
        # What the writer did not get of the run so far, by reason.
        self.lost: dict[str, int] = {} if outcome is None else dict(outcome.dropped)
        # Its last failed try was a write joined with an earlier batch, whose giving up
        # counts for the circuit (one failed write is one failure, not one per batch).
        self.shared = False
        # The body of the write it starts, being made ahead of its turn (see _Lane).
        self.ahead: _Prepared | None = None


class _OnTurn:
    """A write a worker makes in its turn, watched (see :meth:`AsyncBackend._watch`):
    where the worker is (the run of *batch* from *start* to *end*, its *index*-th
    writer, the lanes it hands to after) so that, should the write hang, a new worker
    takes the turn and the batch from there, and the writer's lane takes the write's
    outcome when it comes back (*revoked*)."""

    __slots__ = (
        "batch",
        "end",
        "handoffs",
        "index",
        "lane",
        "lines",
        "revoked",
        "run",
        "since",
        "thread",
        "writer",
    )

    def __init__(
        self,
        batch: Sequence[Record],
        end: int,
        run: _Run,
        lines: Sequence[bytes],
        handoffs: list[tuple[_Lane, Sequence[bytes], _Outcome | None]],
        index: int,
        writer: Writer,
    ) -> None:
        self.batch = batch
        self.end = end
        self.run = run
        self.lines = lines
        self.handoffs = handoffs
        self.index = index
        self.writer = writer
        self.thread = threading.current_thread()
        self.since = time.monotonic()
        self.revoked = False
        self.lane: _Lane | None = None


# The outcome of a write that delivered every line (never changed: outcomes are read only).
_DELIVERED = _Outcome(first=True)


class _Prepared:
    """What a writer's ``prepare`` made of *lines* for its ``send``: the ``body``, or the
    ``error`` it raised (raised again in the send's place, as a ``write`` that raised
    it); ``done`` once made. One made ahead (while the write before it waits for its
    answer) is for the waiting batches *group*, joined into *lines* when several."""

    __slots__ = ("body", "done", "error", "group", "lines")

    def __init__(self, lines: Sequence[bytes], group: Sequence[_Delivery] = ()) -> None:
        self.lines = lines
        self.group = group
        self.body: Any = None
        self.error: BaseException | None = None
        self.done = False

    def make(self, writer: Any, backend: AsyncBackend) -> _Prepared:
        """Call ``writer.prepare(lines)``; keep its body, or what it raised (a bad record
        must not end a lane: it is counted as the write's failure); done. Returns self."""
        try:
            with backend._calling(writer):
                self.body = writer.prepare(self.lines)
        except BaseException as exc:
            self.error = exc
        self.done = True
        return self


#: The longest a failing writer is left alone before it is tried again, in seconds.
_MAX_COOL_DOWN = 30.0
#: Batches given up on in a row (each after its retries) that open a writer's circuit.
_TRIP = 3
#: Not delivered because the writer was garbage-collected meanwhile.
_WRITER_GONE = "writer_collected"
#: Not delivered because an enricher, filter or formatter of the pipeline raised.
_PIPELINE_ERROR = "pipeline_error"
#: A request refused as too large (HTTP 413): a verdict on the request, not its records.
_TOO_LARGE = status_reason(413)


#: A writer attribute that is not there (None may be a writer's own value).
_ABSENT = object()


def _policy(writer: Writer, name: str, default: float, kind: type[float]) -> float:
    """A writer's own retry setting *name* if it has a usable one (seconds: a number from 0
    to a day; a count: an int from 0), else *default* (the backend's, already checked):
    a writer with an attribute of that name meaning something else (``max_delay =
    None``) must not lose its records, nor its run, to a TypeError."""
    value: object = default
    try:
        value = getattr(writer, name, _ABSENT)
        if value is _ABSENT:
            return kind(default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(name)
        number = kind(value)
        if not 0 <= number <= (MAX_WAIT if kind is float else sys.maxsize):  # NaN too
            raise ValueError(name)
        return number
    except Exception:
        _errors.report(
            f"writer {_describe(writer)} {name}",
            detail=f"a {type(value).__name__} is not a usable "
            f"{name}; the backend's {default!r} is used",
        )
        return kind(default)


def _count_setting(writer: Writer, name: str, default: int, otherwise: str) -> int:
    """A writer's optional count setting *name* (``max_batch_records``: how many records
    its lane may join into one write; ``max_in_flight``: how many writes it may have at
    once): an int >= 0, else *default* (absent, or unusable: reported, saying
    *otherwise*). Reading it may raise (a proxy writer): that too is reported, and must
    not cost the pipeline its records (the lane is made inside the workers' turn)."""
    try:
        value = getattr(writer, name, None)
    except Exception as exc:
        _errors.report(f"writer {_describe(writer)} {name}", exc)
        return default
    if value is None:
        return default
    if type(value) is int and value >= 0:
        return value
    _errors.report(
        f"writer {_describe(writer)} {name}",
        detail=f"{value!r} is not an int >= 0; {otherwise}",
    )
    return default


def _shares(
    outcome: _Outcome, lines: Sequence[bytes], sizes: Sequence[int]
) -> list[tuple[list[bytes], dict[str, int], bool]]:
    """What one write of several batches joined into *lines* did to each (*sizes*: their
    lengths, in order): its lines to try again, its records lost by reason, and whether
    its first line went through. Drops the writer gave as a count only (an int returned
    by ``write``) are charged to the latest records, where a writer that takes a batch
    in order stops taking them."""
    if not outcome.rest and not outcome.dropped:  # all delivered: the usual answer
        return [([], {}, True) for _ in sizes]
    total = len(lines)
    rest_at = outcome.rest_at
    if rest_at is None:
        rest_at = range(total - len(outcome.rest), total)
    retried = set(rest_at)
    dropped_at = outcome.dropped_at
    unplaced = {} if dropped_at is not None else dict(outcome.dropped)
    shares: list[tuple[list[bytes], dict[str, int], bool]] = []
    end = total
    for size in reversed(sizes):  # from the last batch: count-only drops are charged there
        start = end - size
        rest = [lines[index] for index in range(start, end) if index in retried]
        dropped: dict[str, int] = {}
        if dropped_at is not None:
            for index in range(start, end):
                reason = dropped_at.get(index)
                if reason is not None:
                    dropped[reason] = dropped.get(reason, 0) + 1
        else:
            room = size - len(rest)
            for reason, count in unplaced.items():
                charge = min(count, room)
                if charge:
                    dropped[reason] = charge
                    unplaced[reason] -= charge
                    room -= charge
        first = start not in retried and (dropped_at is None or start not in dropped_at)
        shares.append((rest, dropped, first))
        end = start
    shares.reverse()
    return shares


def _prepares_ahead(writer: Writer) -> bool:
    """Whether *writer* asks for its next write to be prepared while one waits for its
    answer: its ``prepare_ahead`` is ``True`` and it has ``prepare`` and a ``send`` that
    takes ``meanwhile``. Anything else that is not ``False``, or reading it raising (a
    proxy writer), is reported and means no."""
    try:
        value = getattr(writer, "prepare_ahead", False)
        if value is False:
            return False
        if value is not True:
            _errors.report(
                f"writer {_describe(writer)} prepare_ahead",
                detail=f"{value!r} is not a bool; its writes are prepared in their turn",
            )
            return False
        prepare = getattr(writer, "prepare", None)
        send = getattr(writer, "send", None)
        split = callable(prepare) and callable(send) and _takes(send, "meanwhile")
    except Exception as exc:
        _errors.report(f"writer {_describe(writer)} prepare_ahead", exc)
        return False
    if not split:
        _errors.report(
            f"writer {_describe(writer)} prepare_ahead",
            detail="it has no prepare(batch) and send(batch, prepared, meanwhile=None); "
            "its writes are prepared in their turn",
        )
    return split


def _weakly(writer: Writer, forget: Callable[[object], None] | None = None) -> Callable[[], Any]:
    """A callable returning *writer*, held weakly where it can be (else kept)."""
    try:
        return weakref.ref(writer, forget)
    except TypeError:  # not weakly referable: kept
        return lambda: writer


class _Lane:
    """One writer's deliveries off the workers' turn, in order, on a thread of its own.

    The retry policy, the same for every writer: a failed write is tried again after an
    exponential backoff with jitter (``error_retry_delay`` doubled each time, at most
    ``max_delay``, then times 0.5 to 1), or after the ``retry_after`` a
    :class:`~kakashi.writers.delivery.DeliveryError` asks for if that is longer, at most
    ``max_error_retries`` times and within ``retry_budget`` seconds of the batch's first
    try: a retry that could not start by then is not made (a writer may set its own
    ``max_error_retries``, ``error_retry_delay``, ``max_delay`` and ``retry_budget``
    attributes). Only what failed is tried again: the ``retry`` records of a
    DeliveryError (its ``dropped`` ones are counted at once under their reasons), the
    records from ``written`` on for another exception that says so, else the whole
    batch; a try that gets some records through starts the count afresh (not the
    budget). Retries are never made while a worker holds its turn.

    After three batches lost in a row the circuit opens: for a cool-down (doubling from
    about a second up to 30 s) the writer's records are counted as dropped at once
    (``circuit_open``), not tried (a writer that is not ``concurrent``, a local file, is
    still tried once per batch, with no retries, so that it is back as soon as it can
    write); after it, one write decides (closed again, or open for longer). While a lane
    holds records for a writer, later ones queue behind them (order), up to
    ``max_queue_size`` records: beyond, the oldest are counted as dropped
    (``backlog_full``). A writer with ``max_batch_records`` gets the batches waiting
    for it joined into one write of at most that many records (never splitting one);
    each is settled on its own, and what failed of one goes back to the front of the
    lane to be retried on its own (one failed write is one failure for the circuit); a
    joined write refused whole as too large (HTTP 413) is tried again batch by batch
    rather than counted. A writer that sets ``prepare_ahead`` (with ``prepare`` and
    ``send``; one write at a time) has its next write prepared (the batch at the front
    of the lane, with those it will be joined to) while the write before it waits for
    its answer, in that write's ``meanwhile``: sends stay one at a time, in order, on
    the lane's one thread. A body made ahead for batches that then meet an open circuit,
    a shutdown's deadline or a full backlog is not sent; the batches are counted as they
    would have been. A
    shutdown stops the waiting: what is left is tried without
    backoff until its deadline; what a shutdown's deadline leaves, or what fails while
    it runs, is given to the writer's ``spool(lines)`` if it has one, else counted
    (``shutdown``, or the failure's reason), as is what ``spool`` did not keep (it
    raised, returned ``False``, or returned how many it kept).
    """

    def __init__(self, backend: AsyncBackend, writer: Writer) -> None:
        self.backend = backend
        # Held weakly (the records it is handed hold it while they wait): a writer no
        # one uses any more is collected, and its lane forgotten with it.
        key = id(writer)

        def forget(_: object) -> None:  # no lock: the collector may run anywhere
            if backend._lanes.get(key) is self:
                backend._lanes.pop(key, None)

        self._writer: Callable[[], Writer | None] = _weakly(writer, forget)
        self._items: collections.deque[_Delivery] = collections.deque()
        # A write a worker made in its turn that hung (see expect_late): nothing of the
        # lane is written until it returns.
        self._late: _OnTurn | None = None
        self._lock = fork_safe_condition()
        # The threads delivering for it: one, or up to the writer's max_in_flight.
        self._threads: set[threading.Thread] = set()
        self._idle = 0  # of them, waiting for records
        self.records = 0  # lines waiting
        self.pending = 0  # handed and not yet settled (in progress included)
        self.open_until = 0.0
        self.cool_down = 0.0  # > 0 while the circuit is open or being tried again
        self.failures = 0  # batches given up on in a row
        self.failing = False  # its last write failed (or some lines of it), none since took
        config = backend.config
        self.retries = int(_policy(writer, "max_error_retries", config.max_error_retries, int))
        self.delay = _policy(writer, "error_retry_delay", config.error_retry_delay, float)
        self.max_delay = _policy(writer, "max_delay", _MAX_COOL_DOWN, float)
        self.budget = _policy(writer, "retry_budget", config.retry_budget, float)
        self.join = _count_setting(writer, "max_batch_records", 0, "its batches are not joined")
        self.parallel = _count_setting(writer, "max_in_flight", 1, "one write at a time") or 1
        # One write at a time, the next prepared while it waits for its answer.
        self.prepares_ahead = self.parallel == 1 and _prepares_ahead(writer)

    @property
    def writer(self) -> Writer | None:
        """The writer (``None`` once collected)."""
        return self._writer()

    def state(self) -> str:
        """``"busy"`` (holding records), ``"open"`` (circuit open) or ``"ready"``."""
        if self.pending:
            return "busy"
        if self.cool_down and time.monotonic() < self.open_until:
            return "open"
        return "ready"

    def circuit(self) -> str:
        """``"open"`` (records counted at once), ``"trying"`` (the cool-down is over: the
        next write decides) or ``"closed"``."""
        if not self.cool_down:
            return "closed"
        return "open" if time.monotonic() < self.open_until else "trying"

    def lost(self, count: int, reason: str) -> dict[str, int]:
        """*count* records the writer did not get, for *reason*: in its stats; returned
        as a count by reason."""
        if not count:
            return {}
        writer = self.writer
        if writer is not None:
            self.backend._count_lost(writer, {reason: count})
        return {reason: count}

    def succeeded(self) -> None:
        """A write went through: the circuit closes."""
        self.failing = False
        if self.failures or self.cool_down:
            with self._lock:  # writes in flight at once settle on several threads
                self.failures = 0
                self.cool_down = 0.0
                self.open_until = 0.0

    def hand(self, run: _Run, lines: Sequence[bytes], outcome: _Outcome | None = None) -> None:
        """Queue *lines* of *run* for the writer (*outcome*: what a write of them just did).

        Beyond ``max_queue_size`` records the oldest batches are dropped
        (``backlog_full``). For a local writer that is late but not failing (a write
        that hung, :meth:`expect_late`: another process holding its file's lock, say,
        and the backlog behind it) under ``overflow_strategy="block"``, the worker first
        waits up to ``block_timeout`` for the lane to make room, as a caller waits for the
        queue: the queue then fills and callers wait too, rather than records being
        dropped because the writer was slow. A writer that fails (a full disk: retries,
        a circuit) and a concurrent (network) writer drop as before: a failure that lasts
        must not make every log call wait."""
        over = []
        inline = False
        config = self.backend.config
        limit = config.max_queue_size
        writer = self.writer
        with self._lock:
            if outcome is not None and outcome.rest:
                self.failing = True
            if (
                self.records + len(lines) > limit
                and self._items
                and not (self.failing or self.failures or self.cool_down)
                and config.overflow_strategy == "block"
                and writer is not None
                and not is_concurrent(writer)
            ):
                self._wait_for_room(len(lines), limit, config.block_timeout)
            self._items.append(_Delivery(run, lines, outcome))
            self.records += len(lines)
            self.pending += 1
            while self.records > limit and len(self._items) > 1:
                old = self._items.popleft()
                old.ahead = None  # its body, if made ahead, is not sent
                self.records -= len(old.lines)
                self.pending -= 1
                over.append(old)
            inline = self._add_thread()
            self._lock.notify()
        for old in over:
            _errors.report(
                f"writer {_describe(self.writer)}",
                detail="behind by more than max_queue_size records; the oldest are dropped",
            )
            lost = _add(old.lost, self.lost(len(old.lines), BACKLOG_FULL))
            self.backend._part_settled(old.run, lost)
        if inline:
            self._deliver_here()

    def _wait_for_room(self, count: int, limit: int, timeout: float) -> None:
        """Wait (with the lane's lock held, which the wait lets go) until *count* more
        records fit under *limit*, for at most *timeout* seconds and, in a shutdown, no
        later than its deadline; or until the writer fails meanwhile, or nobody can make
        room (no thread, and no late write whose return starts one)."""
        deadline = time.monotonic() + timeout
        while self.records + count > limit and self._items and not self.failing:
            if not self._threads and self._late is None:
                return
            left = deadline - time.monotonic()
            if left <= 0 or self._too_late():
                return
            # Not claiming the GIL meanwhile: callers need not hand it over (see claim_gil).
            unclaimed(self._lock.wait, min(left, 0.1))

    def _add_thread(self) -> bool:
        """Start a thread for the lane if it has none, or fewer than the writer allows
        and more records than idle threads (called with its lock held); whether the
        records must be delivered on the calling thread (none could start)."""
        threads = self._threads
        if not threads or (len(threads) < self.parallel and len(self._items) > self._idle):
            thread = threading.Thread(target=self._loop, name="kakashi-lane", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # no thread left, or interpreter exit (3.12+)
                return not threads
            threads.add(thread)  # under the lock: the thread cannot have ended
        return False

    def expect_late(self, watch: _OnTurn) -> None:
        """A write of the writer that a worker made in its turn has not returned within
        ``writer_hang_threshold`` (*watch*): the turn went on without it. Until it returns
        (:meth:`returned`), the lane counts it as its own write in progress: later
        batches for the writer queue here, behind it, and none is written."""
        with self._lock:
            self._late = watch
            self.pending += 1
        watch.lane = self

    def returned(self, watch: _OnTurn, outcome: _Outcome) -> None:
        """The write :meth:`expect_late` waited for returned with *outcome*: the lane
        settles it as its own (what is to be retried goes first, before the batches that
        queued behind it) and writes on."""
        run = watch.run
        if outcome.first:
            run.took_first(watch.lines)
        with self._lock:
            self._late = None
            if outcome.rest:  # the write's place in the lane (pending) is the retry's
                self._items.appendleft(_Delivery(run, outcome.rest, outcome))
                self.records += len(outcome.rest)
            else:
                self.pending -= 1
            inline = bool(self._items) and self._add_thread()
            self._lock.notify_all()
        if not outcome.rest:
            self.succeeded()
            self.backend._part_settled(run, outcome.dropped)
        if inline:
            self._deliver_here()

    def _deliver_here(self) -> None:
        """Deliver what the lane holds on the calling thread (a worker, in its turn): its
        own thread could not start. Better late than a worker ended or a run unsettled."""
        while True:
            with self._lock:
                if self._threads or not self._items or self._late is not None:
                    return
                item = self._items.popleft()
                self.records -= len(item.lines)
            self._deliver_one(item)

    def finish(self, deadline: float) -> None:
        """Let the lane's threads end once its records are settled (a shutdown), waiting
        for them until *deadline*."""
        with self._lock:
            threads = list(self._threads)
            self._lock.notify_all()
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def abandon(self) -> None:
        """At a shutdown's deadline: what still waits in the lane (not the batch being
        written) goes to the writer's spool, or is counted as dropped (``shutdown``)."""
        with self._lock:
            items = list(self._items)
            self._items.clear()
            self.records = 0
            self.pending -= len(items)
        for item in items:
            item.ahead = None  # its body, if made ahead, is not sent
            lost = _add(item.lost, self.left_over(item.lines, SHUTDOWN))
            self.backend._part_settled(item.run, lost)

    def _loop(self) -> None:
        _leave_signals_to_the_main_thread()
        never_wait_for_room()
        # A worker's thread, for the rules that keep workers from waiting for themselves
        # (a writer's flush or shutdown, a log call while intake is held at exit).
        ident = threading.get_ident()
        self.backend._worker_idents.add(ident)
        try:
            self._deliver_all()
        finally:
            self.backend._worker_idents.discard(ident)

    def _deliver_all(self) -> None:
        stopping = self.backend._stopping
        while True:
            with self._lock:
                while self._late is not None and not stopping.is_set():
                    self._lock.wait(1.0)  # behind a write that hung (see expect_late)
                if not self._items and not stopping.is_set():
                    self._idle += 1
                    self._lock.wait(1.0)
                    self._idle -= 1
                if not self._items or self._late is not None:
                    # idle (the next hand-off starts a thread again), or a shutdown
                    # behind a write that hung: what waits is the shutdown's (abandon)
                    self._threads.discard(threading.current_thread())
                    return
                item = self._items.popleft()
                self.records -= len(item.lines)
                group, prepared = self._unit(item)
                self._lock.notify_all()  # room for a worker waiting to hand (see hand)
            if group is None:
                self._deliver_one(item, prepared)
            else:
                self._deliver_joined(group, prepared)
            # an idle lane holds nothing (the writer is held weakly)
            del item, group, prepared

    def _unit(self, item: _Delivery) -> tuple[list[_Delivery] | None, _Prepared | None]:
        """What one write takes, starting with *item* (just taken from the lane, under its
        lock): the batches joined with it (``None``: it alone), taken from the lane too,
        and their body when it was made ahead (``None``: made in their turn)."""
        prepared, item.ahead = item.ahead, None
        if prepared is not None:
            members = prepared.group
            items = self._items
            following = itertools.islice(items, len(members) - 1)
            if len(items) >= len(members) - 1 and all(
                waiting is member for waiting, member in zip(following, members[1:], strict=True)
            ):
                for member in members[1:]:
                    items.popleft()
                    self.records -= len(member.lines)
                return (list(members) if len(members) > 1 else None), prepared
            # (Not reached while batches leave the lane from its front only; if they did
            # not, the body made ahead is left unsent and the batches are made again.)
        group = self._joinable(item, self._items)
        for joined in group[1:]:
            self._items.popleft()
            self.records -= len(joined.lines)
        return (group if len(group) > 1 else None), None

    def _joinable(self, item: _Delivery, following: Iterable[_Delivery]) -> list[_Delivery]:
        """*item* and the batches of *following* (those waiting behind it) that one write
        may take with it, up to the writer's ``max_batch_records`` (never splitting one).
        Only batches not tried yet are joined."""
        group = [item]
        if not self.join or item.tries or item.lost:
            return group
        total = len(item.lines)
        for waiting in following:
            size = len(waiting.lines)
            if waiting.tries or waiting.lost or total + size > self.join:
                break
            total += size
            group.append(waiting)
        return group

    def _look_ahead(self, writer: Writer) -> Callable[[], Any] | None:
        """What to call while the write about to be sent waits for its answer (its
        ``meanwhile``): the preparing of the next write, the batch at the front of the
        lane with those one write will join to it, so that its body is ready when the
        answer is in. ``None`` when there is none to prepare. Only batches not tried yet:
        a retried one is prepared in its turn (a record's earlier outcome matters)."""
        with self._lock:
            items = self._items
            if not items or items[0].ahead is not None or items[0].tries or items[0].lost:
                return None
            first = items[0]
            group = self._joinable(first, itertools.islice(items, 1, None))
            lines = first.lines if len(group) == 1 else [x for each in group for x in each.lines]
            prepared = first.ahead = _Prepared(lines, group)
        return functools.partial(prepared.make, writer, self.backend)

    def _ready(
        self, writer: Writer, lines: Sequence[bytes], prepared: _Prepared | None
    ) -> _Prepared:
        """The body of *lines* for the writer's ``send``: *prepared* if it was made for
        them (made now, if the write it was to be made during did not get that far), else
        one made now."""
        if prepared is not None and prepared.lines is lines:
            return prepared if prepared.done else prepared.make(writer, self.backend)
        return _Prepared(lines).make(writer, self.backend)

    def _deliver_joined(self, group: list[_Delivery], prepared: _Prepared | None = None) -> None:
        """Write the batches of *group* at once: a collector that fell behind gets fewer,
        larger requests. Each batch is settled on its own; what failed of one goes back
        to the front of the lane, in order, and is retried on its own."""
        settled: list[_Delivery] = []
        try:
            again = self._try_joined(group, settled, prepared)
        except BaseException as exc:  # never leave a run unsettled, nor settle one twice
            _errors.report(f"writer {_describe(self.writer)}", exc)
            for item in group:
                if not any(item is done for done in settled):
                    lost = _add(item.lost, self.lost(len(item.lines), WRITE_ERROR))
                    self._settle(item, lost)
            return
        if again:
            with self._lock:
                self._items.extendleft(reversed(again))
                self.records += sum(len(item.lines) for item in again)

    def _try_joined(
        self, group: list[_Delivery], settled: list[_Delivery], prepared: _Prepared | None
    ) -> list[_Delivery]:
        """One write of *group*'s lines (*prepared*: their body, made ahead); settle what
        it settled (noted in *settled*), return what to retry."""
        writer = self.writer
        late = self._too_late()
        if writer is None or late or (self.cool_down and time.monotonic() < self.open_until):
            for item in group:
                if writer is None:
                    lost = _add(item.lost, {_WRITER_GONE: len(item.lines)})
                else:
                    reason = SHUTDOWN if late else CIRCUIT_OPEN
                    lost = _add(item.lost, self.left_over(item.lines, reason))
                settled.append(item)
                self._settle(item, lost)
            return []
        if prepared is not None:
            lines = prepared.lines
        else:
            lines = [line for item in group for line in item.lines]
        meanwhile = None
        if self.prepares_ahead:
            prepared = self._ready(writer, lines, prepared)
            meanwhile = self._look_ahead(writer)
        outcome = self.backend._attempt(writer, lines, True, prepared, meanwhile)
        if not outcome.rest:
            self.succeeded()
        again: list[_Delivery] = []
        shares = _shares(outcome, lines, [len(item.lines) for item in group])
        for item, (rest, dropped, first) in zip(group, shares, strict=True):
            if first:
                item.run.took_first(item.lines)
            _add(item.lost, dropped)
            if rest:
                item.lines = rest
                item.tries = 1
                item.reason, item.retry_after = outcome.reason, outcome.retry_after
                item.shared = bool(again)  # the first one back stands for the write
                again.append(item)
            else:
                settled.append(item)
                self._settle(item, item.lost)
        return again

    def _settle(self, item: _Delivery, lost: dict[str, int]) -> None:
        with self._lock:
            self.pending -= 1
        self.backend._part_settled(item.run, lost)

    def _deliver_one(self, item: _Delivery, prepared: _Prepared | None = None) -> None:
        try:
            lost = self._deliver(item, prepared)
        except BaseException as exc:  # never leave a run unsettled
            _errors.report(f"writer {_describe(self.writer)}", exc)
            lost = _add(item.lost, self.lost(len(item.lines), WRITE_ERROR))
        self._settle(item, lost)

    def _deliver(self, item: _Delivery, prepared: _Prepared | None = None) -> dict[str, int]:
        """Write *item*'s lines under the policy (*prepared*: their body, made ahead);
        return what the writer did not get, by reason (*item* keeps what is left, should
        this raise). A retry of all of them sends the same body again; of some, a body
        made for those."""
        backend = self.backend
        lost = item.lost
        budget_ends = time.monotonic() + self.budget
        while True:
            lines = item.lines
            now = time.monotonic()
            if self._too_late():  # the writer is being closed: not written to again
                return _add(lost, self.left_over(lines, SHUTDOWN))
            if self.cool_down and now < self.open_until:
                return _add(lost, self.left_over(lines, CIRCUIT_OPEN))  # counted at once
            if item.tries:
                wait = 0.0 if backend._stopping.is_set() else self._wait(item)
                if item.tries > (0 if self.cool_down else self.retries) or now + wait > budget_ends:
                    # Out of retries or of time (or the one try after a cool-down failed).
                    if not item.shared:
                        self._give_up()
                    return _add(lost, self.left_over(lines, item.reason))
                if wait:
                    backend._stopping.wait(wait)
            writer = self.writer
            if writer is None:  # collected: no one reads what it would have written
                return _add(lost, {_WRITER_GONE: len(lines)})
            meanwhile = None
            if self.prepares_ahead:
                prepared = self._ready(writer, lines, prepared)
                meanwhile = self._look_ahead(writer)
            outcome = backend._attempt(writer, lines, False, prepared, meanwhile)
            if prepared is not None and prepared.error is not None:
                prepared = None  # prepare raised: it is called again for a retry
            item.shared = False
            if outcome.first:
                item.run.took_first(lines)
            _add(lost, outcome.dropped)
            if not outcome.rest:
                self.succeeded()
                return lost
            self.failing = True
            # Progress (part of the batch settled) starts the count afresh: a collector
            # that takes some of each try is slow, not down. The time budget goes on.
            item.tries = 1 if len(outcome.rest) < len(lines) else item.tries + 1
            item.lines = outcome.rest
            item.reason, item.retry_after = outcome.reason, outcome.retry_after

    def _too_late(self) -> bool:
        """Whether a shutdown's deadline has passed: what the lane holds then, retried or
        not, is spooled or counted (``shutdown``) rather than written (the writer is
        closed meanwhile; a writer that fails fast would otherwise be tried for as long
        as the retries and the budget allow)."""
        backend = self.backend
        return backend._stopping.is_set() and time.monotonic() >= backend._shutdown_deadline

    def _wait(self, item: _Delivery) -> float:
        """Seconds before the next try of *item*: the backoff, or the server's
        ``retry_after`` if longer (not capped by ``max_delay``; the budget bounds it)."""
        exponent = min(item.tries - 1, 60)  # 2**60 times any delay is past any max_delay
        # Spread within the cap: past it, writers that failed together (a collector down
        # for every process) do not all try again at once.
        backoff = min(self.max_delay, self.delay * 2.0**exponent) * random.uniform(0.5, 1.0)
        return backoff if item.retry_after is None else max(backoff, float(item.retry_after))

    def left_over(self, lines: Sequence[bytes], reason: str) -> dict[str, int]:
        """*lines* given up on (or not tried: an open circuit): kept by the writer's
        ``spool`` while a shutdown runs (none lost), else counted as lost under *reason*."""
        kept = self._spool(lines) if self.backend._stopping.is_set() else 0
        return self.lost(len(lines) - kept, reason)

    def _spool(self, lines: Sequence[bytes]) -> int:
        """Give *lines* to the writer's ``spool(lines)``; how many it kept: all unless
        it returned ``False`` (none) or a number (that many), none if it raised. An
        interrupt it raises goes on up, the lines counted as lost first."""
        writer = self.writer
        spool = getattr(writer, "spool", None)
        if writer is None or not callable(spool):
            return 0
        try:
            with self.backend._calling(writer):
                answer = spool(lines)
        except BaseException as exc:
            if is_interrupt(exc):
                self.lost(len(lines), "shutdown")
                raise
            _errors.report(f"writer {_describe(writer)} spool", exc)
            return 0
        if answer is False:
            kept = 0
        elif isinstance(answer, int) and answer is not True:
            kept = max(0, min(len(lines), answer))
        else:
            kept = len(lines)
        stats = self.backend._stats(writer)
        with self.backend._state_lock:
            stats["spooled_at_shutdown"] += kept
        return kept

    def _give_up(self) -> None:
        """A batch is lost after its retries: after a few in a row (or after the one try
        that follows a cool-down) the circuit opens."""
        with self._lock:  # writes in flight at once settle on several threads
            self.failures += 1
            if self.failures < _TRIP and not self.cool_down:
                return
            first = max(1.0, self.delay * 2 ** min(self.retries + 1, 60))
            self.cool_down = min(_MAX_COOL_DOWN, max(first, self.cool_down * 2))
            self.open_until = time.monotonic() + self.cool_down
        _errors.report(
            f"writer {_describe(self.writer)} circuit",
            detail=f"failing; its records are counted as dropped for {self.cool_down:g}s, "
            "then it is tried again",
        )


def _check_timeout(timeout: object) -> float:
    """A flush, shutdown or drain *timeout*: from 0 to one hour (see ``kakashi._durations``)."""
    return check_seconds("timeout", timeout, at_most=MAX_TIMEOUT, zero=True)


@dataclasses.dataclass(frozen=True)
class AsyncConfig:
    """How the async backend queues and writes; validated when made.

    These are the library's only defaults: :func:`configure_async_backend` and the presets
    of :mod:`kakashi.core.async_interface` take theirs from here (the table in the Async
    Backends page lists them). ``max_queue_size`` and ``batch_size`` are the starting
    points the original documentation recommends (25,000 and 200); ``worker_count`` is 1
    because workers take turns to keep records in order, so more help only writers that
    declare ``concurrent = True`` (slow network callbacks).

    Args:
        max_queue_size: the most records waiting at once (memory is bounded by it).
        worker_count: worker threads. More than one helps only slow writers (network).
        batch_size: the most records a worker formats and writes in one go.
        batch_timeout: the longest a worker waits for a batch to fill once a record
            arrived (a full batch wakes it at once); also how often an idle worker checks.
            ``flush`` and ``shutdown`` do not wait for it. More than 0, at most one day.
        enable_batching: ``False`` writes records one by one (``batch_size`` 1).
        overflow_strategy: what a full queue does: ``"block"`` (the caller waits up to
            ``block_timeout`` seconds, then the record is dropped and counted),
            ``"drop_oldest"`` or ``"drop_newest"``.
        shutdown_timeout: seconds :meth:`AsyncBackend.shutdown` may take by default;
            more than 0, at most one hour.
        block_timeout: the longest a caller waits under ``"block"``; more than 0, at most
            one day.
        max_error_retries: how often a failed batch write is retried before its records
            count as dropped.
        error_retry_delay: the first retry's delay in seconds; it doubles each time. From
            0 to one day.
        retry_budget: the time bound on a failed batch's retries, in seconds from its
            first try: a retry that could not start by then is not made, and the records
            are counted as dropped under the last failure's reason. A writer may carry
            its own ``retry_budget``. From 0 to one day.
        thread_name_prefix: workers are named ``<prefix>-<n>``.
        gil_handover_depth: how full the queue must be (a fraction of
            ``max_queue_size``, from 0 to 1) before a logging call hands the GIL to a
            worker that is waiting for it, and never less than two batches
            (``2 * batch_size``, or the whole queue if it is smaller: see
            the ``handover_threshold`` property); ``None``: never. Below it, a call never waits
            for the worker; at or above it the queue drains faster, and a call that
            hands over waits while the worker settles a batch and takes the next one,
            in pieces of a few microseconds (between two, the worker lets the caller
            have the GIL back for a record), a few times a batch. The default, 0,
            hands over from two batches on: the worker keeps up with the callers, and
            little is left to write when they stop. Compiled build only (see
            :doc:`/performance`).
        writer_hang_threshold: seconds a worker waits in its turn for one writer's
            ``write`` before it counts as hung: the turn passes to a new worker, which
            goes on with the other writers (of this batch and the next ones), while
            that writer's batches wait for it in a lane of its own, in order, and the
            worker left inside the write ends when it returns. More than 0, at most one
            day. The guarantee that a slow or hung writer does not hold up the others.
        queue_overflow_strategy: the original library's name for ``overflow_strategy``.

    Raises:
        ValueError: a size, count or duration out of range (a duration that is NaN or
            infinite too), or an unknown strategy; the message names the field, the value
            and what is allowed.
        TypeError: a field of the wrong type.
    """

    max_queue_size: int = 25_000
    worker_count: int = 1
    batch_size: int = 200
    batch_timeout: float = 0.1
    enable_batching: bool = True
    overflow_strategy: str = "block"
    shutdown_timeout: float = 5.0
    block_timeout: float = 1.0
    max_error_retries: int = 3
    error_retry_delay: float = 0.1
    retry_budget: float = 60.0
    thread_name_prefix: str = "kakashi-worker"
    gil_handover_depth: float | None = 0.0
    writer_hang_threshold: float = 1.0
    queue_overflow_strategy: dataclasses.InitVar[str | None] = None

    def __post_init__(self, queue_overflow_strategy: str | None) -> None:
        if queue_overflow_strategy is not None:
            object.__setattr__(self, "overflow_strategy", queue_overflow_strategy)
        for name, low in (
            ("max_queue_size", 1),
            ("worker_count", 1),
            ("batch_size", 1),
            ("max_error_retries", 0),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            if value < low:
                raise ValueError(f"{name} must be at least {low}, got {value}")
        for name, at_most, zero in (
            ("batch_timeout", MAX_WAIT, False),
            ("block_timeout", MAX_WAIT, False),
            ("error_retry_delay", MAX_WAIT, True),
            ("retry_budget", MAX_WAIT, True),
            ("shutdown_timeout", MAX_TIMEOUT, False),
            ("writer_hang_threshold", MAX_WAIT, False),
        ):
            check_seconds(name, getattr(self, name), at_most=at_most, zero=zero)
        if self.overflow_strategy not in _STRATEGIES:
            raise ValueError(
                f"overflow_strategy must be one of {', '.join(_STRATEGIES)}, "
                f"got {self.overflow_strategy!r}"
            )
        depth = self.gil_handover_depth
        if depth is not None:
            if isinstance(depth, bool) or not isinstance(depth, (int, float)):
                raise TypeError(
                    f"gil_handover_depth must be a fraction or None, got {type(depth).__name__}"
                )
            if not 0 <= depth <= 1:  # a NaN fails too
                raise ValueError(f"gil_handover_depth must be from 0 to 1, got {depth!r}")
        if not isinstance(self.thread_name_prefix, str) or not self.thread_name_prefix:
            raise ValueError("thread_name_prefix must be a non-empty str")

    @property
    def effective_batch_size(self) -> int:
        """``batch_size``, or 1 when batching is off."""
        return self.batch_size if self.enable_batching else 1

    @property
    def handover_threshold(self) -> int | None:
        """How many queued records make a logging call hand the GIL to a waiting worker
        (see ``gil_handover_depth``), or ``None`` for never: the depth's share of the
        queue, and at least two batches (the whole queue, if it holds fewer). Below two
        batches the worker would take part of a batch for each hand-over, and callers
        would wait for it more often than once a batch."""
        if self.gil_handover_depth is None:
            return None
        floor = min(2 * self.effective_batch_size, self.max_queue_size)
        return max(floor, int(self.max_queue_size * self.gil_handover_depth))


@dataclasses.dataclass(frozen=True)
class FlushResult:
    """What :meth:`AsyncBackend.flush` or :meth:`AsyncBackend.shutdown` achieved.

    True when complete. ``pending`` records were still queued or being written when the
    timeout expired. For a shutdown they are abandoned: those left in the queue are
    counted as dropped (``shutdown_timeout``); those in a batch a worker still holds (a
    writer that hangs) stay in flight and are written if that writer ever returns.
    """

    complete: bool
    pending: int = 0

    def __bool__(self) -> bool:
        return self.complete


class AsyncBackend:
    """A bounded queue drained by worker threads; see the module description.

    A backend may serve several pipelines: each record carries its own (``record.sink``),
    and a batch is split into runs of records of the same pipeline.

    Args:
        config: the :class:`AsyncConfig` (default values if omitted).
    """

    def __init__(self, config: AsyncConfig | None = None) -> None:
        if config is None:
            config = AsyncConfig()
        elif not isinstance(config, AsyncConfig):
            raise TypeError(f"config must be an AsyncConfig, got {type(config).__name__}")
        self.config = config
        self._wake = fork_safe_event()
        self.queue = RecordQueue(
            config.max_queue_size,
            _STRATEGIES[config.overflow_strategy],
            float(config.block_timeout),
            self._wake.set,
            self._on_drop,
            self._on_closed,
        )
        if config.handover_threshold is not None:
            self.queue.hand_over_at = config.handover_threshold
        self._turn = fork_safe_lock()  # one worker at a time drains, formats, writes
        # Who holds the turn (a token per taking), so that a turn passed on from a worker
        # whose write hung (see _watch) is not released by that worker when it returns.
        self._turn_holder: object | None = None
        self._on_turn: _OnTurn | None = None  # the write made in the turn now, if any
        self._state_lock = fork_safe_lock()
        self._settled = fork_safe_condition()
        self._settle_waiters = 0
        self._workers: list[threading.Thread] = []
        self._worker_idents: set[int] = set()
        self._drops: dict[Sink, list[int]] = {}
        self._lanes: dict[int, _Lane] = {}  # id(writer): its deliveries off the turn
        self._every_lane: weakref.WeakSet[_Lane] = weakref.WeakSet()  # forgotten ones too
        self._stopping = fork_safe_event()  # set by shutdown: lanes stop waiting to retry
        # The running shutdown's deadline (time.monotonic()): lanes write nothing after it.
        self._shutdown_deadline = float("inf")
        # While a shutdown drains: the records offered since intake closed, to write
        # synchronously behind the queued ones (see _on_closed); None otherwise.
        self._after_drain: list[Record] | None = None
        self._kept_full = False  # the shutdown is writing them: no more are kept
        self._busy: dict[int, int] = {}  # id(writer): threads inside one of its methods
        self._hung: set[int] = set()  # id(writer): a call that a deadline gave up on
        self._batches = 0
        self._writer_stats: dict[int, dict[str, Any]] = {}
        self._writer_refs: dict[int, Callable[[], Any]] = {}  # id(writer): the writer, weakly
        self._undelivered: dict[str, int] = {}  # the write_error drops, by reason
        self.state = "stopped"
        self.queue.starter = self.start
        _live.add(self)

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        """Start the workers (done automatically by the first record).

        Raises:
            RuntimeError: not one worker thread could be started (the interpreter's or
                the system's limit); the backend stays stopped, and the next record
                tries again. When only some could be, the failure is reported and the
                backend runs with those.
        """
        with self._state_lock:
            if self.state in ("running", "stopping"):
                return
            self.queue.starter = None
            self._stop = False
            self._stopping.clear()
            self._shutdown_deadline = float("inf")
            self._workers = []
            try:
                self.queue.reopen()
                for index in range(self.config.worker_count):
                    thread = threading.Thread(
                        target=self._run,
                        name=f"{self.config.thread_name_prefix}-{index}",
                        daemon=True,  # a hung writer must not keep the process alive
                    )
                    try:
                        thread.start()
                    finally:  # a start interrupted (Ctrl-C) once the thread runs: it counts
                        if thread.ident is not None:
                            self._workers.append(thread)
            except BaseException as exc:
                if not self._workers:  # still stopped: the next record tries again
                    self.queue.starter = self.start
                    raise
                self.state = "running"
                if is_interrupt(exc):
                    raise
                _errors.report(
                    "async backend start",
                    exc,
                    detail=f"running with {plural(len(self._workers), 'worker')}",
                )
            self.state = "running"
        _drain_when_multiprocessing_ends_this_process()
        _watch_turns()

    def is_running(self) -> bool:
        """Return whether the workers are running."""
        return self.state == "running"

    def shutdown(self, timeout: float | None = None) -> FlushResult:
        """Stop intake, drain, flush and close the writers, join the workers.

        Returns within *timeout* seconds (default ``shutdown_timeout``) even if a writer
        hangs. Records it could not write in time are abandoned and reported on stderr
        with the time actually spent; the result says how many (see :class:`FlushResult`).
        Records logged meanwhile and written by the synchronous fallback are not abandoned.
        A writer whose ``write``, ``flush`` or ``close`` has not returned by then counts as
        hung (the result is not complete): records logged after the shutdown are counted
        as dropped (``closed``) instead of waiting for it in the synchronous fallback.

        Raises:
            ValueError: *timeout* is not between 0 and one hour (NaN and infinity too).
        """
        timeout = self.config.shutdown_timeout if timeout is None else _check_timeout(timeout)
        started = time.monotonic()
        deadline = started + max(timeout, 0.0)
        # Part of the time is kept for closing the writers (a rotating writer's close waits
        # for its compressions, a zstd writer ends its frame): the drain, and then the
        # wait for the workers' turn and the lanes' deliveries, stop that much earlier.
        reserve = min(timeout * _CLOSE_SHARE, _CLOSE_RESERVE_MAX)
        drain_deadline = deadline - reserve
        turn_deadline = drain_deadline + reserve / 2
        with self._state_lock:
            self.queue.starter = None  # a shut-down backend is not restarted by a record
            if self.state == "stopped" and not self._workers:
                self.queue.close()
                return FlushResult(True, 0)
            self.state = "stopping"
            self._shutdown_deadline = turn_deadline  # the lanes' (see _Lane._too_late)
            self._after_drain = []
        self._stopping.set()
        self.queue.close()
        if threading.get_ident() in self._worker_idents:
            self._write_after_drain(True)  # called from a writer: cannot wait for the drain
            return FlushResult(False, self._pending())
        drained = _wait_drained(self, drain_deadline)
        self._write_after_drain(drained and time.monotonic() < drain_deadline)
        self._stop = True
        self._wake.set()
        # Once the shutdown holds the workers' turn no worker writes any more: a worker
        # late to end (woken, not yet run) finds the queue emptied and ends. Not had in
        # time: a worker is still inside a write (or holds the turn on its way out).
        token = self._take_turn(turn_deadline)
        closed = False  # every writer flushed and closed, in time
        try:
            for lane in list(self._every_lane):
                lane.finish(turn_deadline)
            for lane in list(self._every_lane):
                lane.abandon()  # what the deadline left waiting: spooled, or dropped (shutdown)
            lanes_alive = any(
                thread.is_alive()
                for lane in list(self._every_lane)
                for thread in list(lane._threads)
            )
            if token is None:
                with self._state_lock:
                    # Still inside a write after the deadline: hung, for the fallback's sake.
                    self._hung.update(self._busy)
            else:
                closed = self._close_writers(deadline)
                if lanes_alive:
                    with self._state_lock:
                        # A lane's write that has not returned (its writer was closed all
                        # the same: a spool releases its directory): hung, so that no record
                        # logged after the shutdown waits for it in the synchronous fallback.
                        self._hung.update(self._busy)
            queued = len(self.queue.abandon())
        finally:
            self._give_turn(token)  # (also when a Ctrl-C interrupts the closes)
        joined: set[threading.Thread] = set()
        while waiting := [t for t in list(self._workers) if t not in joined]:
            for thread in waiting:  # (a worker taking over from a hung one joins the list)
                thread.join(max(0.0, deadline - time.monotonic()))
                joined.add(thread)
        alive = [thread for thread in list(self._workers) if thread.is_alive()]
        held = self.queue.in_flight  # in batches whose write has not returned (hung)
        pending = queued + held
        if pending:
            parts = [f"{queued} left in the queue (counted as dropped)"] if queued else []
            if held:
                parts.append(f"{held} in batches whose write has not returned")
            _errors.report(
                "shutdown",
                detail=f"{plural(pending, 'record')} not written after "
                f"{time.monotonic() - started:.2f}s (allowed {timeout:g}s): {', '.join(parts)}",
            )
        with self._state_lock:
            self.state = "stopped"
            # Workers still inside a write, kept to be joined by a later shutdown; once
            # the writers are closed, a late one is not waited for again (it ends alone).
            self._workers = alive if token is None else []
            hung = bool(self._hung)  # a writer not flushed or closed in time
        _unwatch(deadline)
        return FlushResult(drained and pending == 0 and not hung and closed, pending)

    stop = shutdown

    # -- intake ----------------------------------------------------------------------

    def enqueue(self, record: Record) -> None:
        """Offer *record* to the queue (what a logger routed here does)."""
        self.queue.put(record)

    def _on_closed(self, record: Record) -> Any:
        """A record offered after shutdown: written synchronously if its pipeline says so
        (``fallback_to_sync``); else, or when that would block or recurse, counted as
        dropped (``closed``).

        While the shutdown drains the queue, such a record is kept (``KEPT``: pending,
        in fallback) and written by the shutdown once the records queued before it are,
        so that each writer still gets records in the order they were logged; the caller
        never waits. At most ``max_queue_size`` are kept; beyond, they count as dropped
        (``closed``); those kept when the drain does not finish in time count as
        ``shutdown_timeout``, as the records it left in the queue do.
        """
        sink: Sink | None = record.sink
        if sink is None or not getattr(sink, "fallback_to_sync", False):
            return False
        if getattr(_thread_state, "in_fallback", False):
            return False  # logged by a writer from inside the fallback: it would recurse
        if self._after_drain is not None:
            return self._keep(record)
        return self._fallback(record)

    def _keep(self, record: Record) -> Any:
        """Keep *record* for :meth:`_write_after_drain` (``KEPT``). When ``max_queue_size``
        are kept already (or the shutdown is writing them), wait for that to end as a
        full queue makes a caller wait (``block``: up to ``block_timeout``; never on a
        worker's thread), then write it at once; ``False`` (dropped, ``closed``) if it
        did not end in time, or at once under the ``drop_*`` strategies."""
        config = self.config
        until = None
        while True:
            kept_it = False
            try:
                with self._state_lock:
                    kept = self._after_drain
                    if kept is None:
                        break  # drained: written now, behind the kept ones
                    if len(kept) < config.max_queue_size and not self._kept_full:
                        kept += (record,)  # (no call between it and the mark)
                        kept_it = True
                        return KEPT
            except BaseException as exc:
                # A signal handler's, as the lock was let go: the record is kept all the
                # same (the shutdown may be writing it already), which the queue is told.
                if kept_it:
                    keep_despite(exc)
                raise
            if config.overflow_strategy != "block" or threading.get_ident() in self._worker_idents:
                return False
            now = time.monotonic()
            if until is None:
                until = now + config.block_timeout
            if now >= until:
                return False
            with self._settled:
                self._settle_waiters += 1
                try:
                    self._settled.wait(min(until - now, 0.05))
                finally:
                    self._settle_waiters -= 1
        return self._fallback(record)

    def _fallback(self, record: Record) -> bool:
        """Write *record* synchronously through its sink (``fallback_to_sync``), unless
        that would recurse or wait for a hung writer; whether it was."""
        sink: Sink = record.sink
        if getattr(_thread_state, "in_fallback", False):
            return False  # logged by a writer from inside the fallback: it would recurse
        hung = self._hung_writer(sink)
        if hung is not None:
            _errors.report(
                "synchronous fallback",
                detail=f"writer {_describe(hung)} hangs; records logged after shutdown are dropped "
                "and counted instead of blocking the caller",
            )
            return False
        _thread_state.in_fallback = True
        try:
            # The queue's lock is released by now: a writer that logs from here takes the
            # ordinary path and meets the guard above, rather than being set aside and
            # offered again after this call (by the same path, for ever).
            run_outside_region(sink.emit, record)
        finally:
            _thread_state.in_fallback = False
        return True

    def _on_drop(self, record: Record, reason: int) -> None:
        with self._state_lock:
            counts = self._drops.get(record.sink)
            if counts is None:
                counts = self._drops[record.sink] = [0] * len(REASONS)
            counts[reason] += 1
        self._notify_settled()

    # -- the workers -------------------------------------------------------------------

    def _run(self, resume: _OnTurn | None = None, token: object | None = None) -> None:
        """A worker's loop: wait for a batch, take the turn, write batches while they
        wait. A worker started by :meth:`_watch` (*resume*, holding the turn passed on as
        *token*) first finishes the batch whose write hung."""
        _leave_signals_to_the_main_thread()
        never_wait_for_room()  # a writer or enricher that logs must not wait for itself
        self._worker_idents.add(threading.get_ident())
        queue = self.queue
        size = self.config.effective_batch_size
        timeout = self.config.batch_timeout
        # Wait for a full batch (or batch_timeout) before draining: the worker then takes
        # the GIL once per batch rather than once per record.
        fill = min(size, self.config.max_queue_size)
        try:
            while True:
                if resume is None:
                    if queue.sleep():  # idle: the first record wakes us
                        # Records of finished batches that no put freed yet (see retire)
                        # do not outlive the burst: nobody waits for the GIL now.
                        queue.free_retired()
                        self._wake.wait(timeout)
                        self._wake.clear()
                    if fill > 1 and not self._stop and queue.sleep(fill):
                        self._wake.wait(timeout)  # until the batch is full, or batch_timeout
                        self._wake.clear()
                    token = self._take_turn()
                # Claimed from taking the first batch to settling the last one that
                # waits (freeing each one too): see claim_gil. One claim for the
                # batches taken one after the other: a caller handing the GIL over
                # waits for the worker's next long release, not for a gap between two
                # claims, after which it would sleep on the GIL the worker holds and
                # wake up long after the worker let it go. Inside the turn: a worker
                # waiting for it does not claim the GIL it has no use for.
                claim_gil()
                try:
                    if resume is not None:
                        watch, resume = resume, None
                        done = self._process(watch.batch, watch)
                        del watch  # its batch, lines and writer are not this loop's to keep
                        if not done:
                            return  # a write of this batch hung again: passed on again
                    while True:
                        batch = queue.drain(size)
                        if not batch:
                            break
                        if not self._process(batch, one_sink=queue.drained_one_sink):
                            return  # this worker's write hung: the turn went on without it
                        # Its records are freed by the next puts, a few each, rather
                        # than here, with the GIL that a caller handed over waiting.
                        queue.retire(batch)
                        # The worker holds the GIL from one long release to the next
                        # (settling this batch, taking the next, opening its write):
                        # a caller that handed it over logs a record between pieces
                        # of that rather than wait for all of it (see yield_gil).
                        yield_gil()
                finally:
                    unclaim_gil()
                    self._give_turn(token)
                if self._stop and queue.size == 0:
                    return
        except BaseException as exc:  # the loop itself failed: report, never die silently
            _errors.report("worker", exc)
            raise
        finally:
            self._worker_idents.discard(threading.get_ident())

    def _take_turn(self, deadline: float | None = None) -> object | None:
        """Wait for the workers' turn (until *deadline*, if given); the token that gives
        it back, or ``None`` if the deadline came first."""
        if deadline is None:
            self._turn.acquire()
        elif not self._turn.acquire(True, max(0.0, deadline - time.monotonic())):
            return None
        token = self._turn_holder = object()
        return token

    def _give_turn(self, token: object | None) -> None:
        """Give the turn back, unless it was passed on (see :meth:`_watch`) since *token*."""
        with self._state_lock:
            mine = token is not None and self._turn_holder is token
            if mine:
                self._turn_holder = None
        if mine:
            self._turn.release()

    def _watch(self) -> None:
        """The watchdog's look at this backend (see :func:`_watch_turns`): a write made in
        the workers' turn that has not returned within ``writer_hang_threshold`` seconds
        counts as hung, and the turn goes on without it.

        The turn passes to a new worker, which finishes the batch from the next writer
        on; the writer's lane holds the write's place (:meth:`_Lane.expect_late`), so the
        writer's later batches wait behind it, in order, and the write's outcome is
        settled there when it returns; the worker left inside it ends then. The writer
        counts as hung meanwhile (the synchronous fallback does not wait for it).
        """
        threshold = self.config.writer_hang_threshold
        watch = self._on_turn
        if watch is None or time.monotonic() - watch.since < threshold:
            return
        writer = watch.writer
        lane = self._lane(writer)
        # Started first, told what to do once the turn is passed on: should no thread
        # start, the worker inside the write keeps the turn and the batch.
        handed: list[tuple[_OnTurn, object]] = []
        go = threading.Event()
        thread = threading.Thread(
            target=self._take_over,
            args=(go, handed),
            name=f"{self.config.thread_name_prefix}-{len(self._workers)}",
            daemon=True,
        )
        try:
            thread.start()
        except RuntimeError:  # no thread left, or interpreter exit
            return
        with self._state_lock:
            if self._on_turn is watch and not watch.revoked and self.state != "stopped":
                watch.revoked = True
                self._on_turn = None
                watch.run.waiting += 1  # the part the lane settles when the write returns
                lane.expect_late(watch)
                handed.append((watch, self._pass_turn()))
                if watch.thread in self._workers:
                    self._workers.remove(watch.thread)
                self._workers.append(thread)
                self._hung.add(id(writer))
        go.set()
        if handed:
            _errors.report(
                f"writer {_describe(writer)}",
                detail=f"its write has not returned after {threshold:g}s; the other "
                "writers go on, its own batches wait for it in order",
            )

    def _pass_turn(self) -> object:
        # (With the state lock held.) The turn, held by a worker whose write hung, is a
        # new holder's now: the lock stays taken, the token changes.
        token = self._turn_holder = object()
        return token

    def _take_over(self, go: threading.Event, handed: list[tuple[_OnTurn, object]]) -> None:
        """A worker started by :meth:`_watch`: once told (*go*), finish the batch whose
        write hung and go on as a worker (or end, if the turn was not passed on)."""
        go.wait()
        if handed:
            self._run(*handed.pop())

    def _process(
        self, batch: Sequence[Record], resume: _OnTurn | None = None, one_sink: bool = False
    ) -> bool:
        """Format one batch and write it (called in turn); ``False`` if a write of this
        worker hung and the turn, with the rest of the batch, went on without it.

        A run of records is written at once to each ordered writer that is well; it goes
        to a writer's :class:`_Lane` instead when the writer is concurrent, when a write
        just failed (the lane retries it with backoff, off the turn) or when the lane
        still holds earlier records for it (order). A writer whose circuit is open is
        skipped: the run counts as lost for it at once. The run is settled (counted
        written, filtered or dropped) once every writer took it or gave up; until then it
        stays in flight, and a flush waits for it. Nothing that user code raises (an
        enricher, a formatter, a writer, even ``SystemExit``) leaves a record unsettled or
        ends the worker. A write in the turn that hangs is the watchdog's (:meth:`_watch`):
        *resume* is where a new worker takes the batch up. *one_sink*: every record of
        the batch goes to the same sink (the queue knows: see ``drained_one_sink``), so
        the records need not be read to find where a run ends.
        """
        if resume is None:
            start = 0
        else:
            if not self._write_run(batch, resume.end, resume):
                return False
            start = resume.end
        while start < len(batch):
            end = len(batch) if one_sink else sink_run_end(batch, start)
            if not self._write_run(batch, end, None, start):
                return False
            start = end
        self._batches += 1
        return True

    def _write_run(
        self, batch: Sequence[Record], end: int, resume: _OnTurn | None, start: int = 0
    ) -> bool:
        """Render the run of *batch* from *start* to *end* and write it to its sink's
        writers (from the one after *resume*'s, for a run taken up from a worker whose
        write hung); settle it, or leave it to the lanes. ``False``: this worker's write
        hung, and the run is a new worker's."""
        handoffs: list[tuple[_Lane, Sequence[bytes], _Outcome | None]]
        if resume is None:
            sink: Sink = batch[start].sink
            told = None
            try:
                lines, run_filtered = self._render(sink, batch[start:end])
                yield_gil()  # a piece of the worker's stretch ends (see _run)
                notice, told = self._drop_notice(sink)
                if notice:
                    lines = [*notice, *lines]
            except BaseException as exc:  # user code: an enricher, a filter, a formatter
                self._run_failed(sink, end - start, told, exc)
                return True
            kept = end - start - run_filtered
            run = _Run(sink, kept, run_filtered, told, notice[0] if notice else None)
            run.waiting = 1  # this turn's part, settled below once every writer took it
            handoffs = []
            index = 0
        else:
            run, lines, handoffs = resume.run, resume.lines, resume.handoffs
            index = resume.index + 1
            sink = run.sink
        try:
            writers = sink.writers if lines else ()
            while index < len(writers):
                writer = writers[index]
                lane = self._lanes.get(id(writer))
                if lane is not None and lane.writer is not writer:
                    lane = None  # another writer's, with the same id once
                state = "ready" if lane is None else lane.state()
                cooling = lane if state == "open" else None  # its circuit open
                if cooling is not None and is_concurrent(writer):
                    # Skipped fast: a remote writer is not tried during its cool-down.
                    run.lose(cooling.left_over(lines, CIRCUIT_OPEN))
                elif state == "busy" or (cooling is None and is_concurrent(writer)):
                    handoffs.append((self._lane(writer), lines, None))
                else:
                    outcome = self._attempt_in_turn(
                        _OnTurn(batch, end, run, lines, handoffs, index, writer)
                    )
                    if outcome is None:
                        return False
                    if outcome.first:
                        run.took_first(lines)
                    if not outcome.rest:
                        if lane is not None:
                            lane.succeeded()
                        run.lose(outcome.dropped)
                    elif cooling is not None:
                        # A local writer during its cool-down (a full disk) is tried
                        # once, with no retries, so that it is back as soon as it can
                        # write: what it did not take is lost now.
                        failed_now = cooling.lost(len(outcome.rest), outcome.reason)
                        run.lose(_add(dict(outcome.dropped), failed_now))
                    else:  # retried off the turn
                        handoffs.append((self._lane(writer), outcome.rest, outcome))
                index += 1
        except BaseException as exc:  # user code outside a writer's write
            if resume is None:  # no lane has a part of it yet: the run fails whole
                self._run_failed(sink, end - start, run.told, exc)
                return True
            # Taken up after a hang (a lane has a part of it): the writers left lose it.
            _errors.report("worker", exc)
            run.lose({_PIPELINE_ERROR: run.kept})
        yield_gil()  # a piece of the worker's stretch ends (see _run)
        if handoffs:
            with self._state_lock:
                run.waiting += len(handoffs)
            for lane, rest, tried in handoffs:
                lane.hand(run, rest, tried)
        self._part_settled(run, {})  # this turn's part
        return True

    def _attempt_in_turn(self, watch: _OnTurn) -> _Outcome | None:
        """:meth:`_attempt` the write *watch* describes, in the turn, watched; ``None`` if
        it hung and the watchdog passed the turn on meanwhile (its outcome is then the
        writer's lane's)."""
        self._on_turn = watch
        outcome = self._attempt(watch.writer, watch.lines)
        with self._state_lock:
            self._on_turn = None
            late = watch.revoked
        if not late:
            return outcome
        lane = watch.lane
        assert lane is not None
        lane.returned(watch, outcome)
        return None

    def _run_failed(
        self, sink: Sink, count: int, told: list[int] | None, exc: BaseException
    ) -> None:
        """A run of *count* records that user code outside a writer's write failed (an
        enricher, a formatter): reported, and counted as dropped (``pipeline_error``)."""
        _errors.report("worker", exc)
        with self._state_lock:
            _add(self._undelivered, {_PIPELINE_ERROR: count})
        self._note_drops(sink, count, told)
        self.queue.done(0, 0, count)
        self._notify_settled()

    def _render(self, sink: Sink, records: Sequence[Record]) -> tuple[Sequence[bytes], int]:
        """A run's lines and how many of its records were filtered out. For a sink whose
        only writer is a plain :class:`~kakashi.writers.file.FileWriter` with no lane
        holding anything (its last batch was written, or failed and is settled), lines
        the writer formats as it appends them (:class:`~kakashi.writers.file.PendingLines`):
        one release of the GIL for both, so a logging thread hands it back once a batch,
        not twice."""
        writers = sink.writers
        only = writers[0] if len(writers) == 1 else None
        if type(only) is FileWriter and self._lane_ready(only):
            pending_batch = getattr(sink, "pending_batch", None)
            if pending_batch is not None:
                pending = pending_batch(records)
                if pending is not None:
                    return pending, 0
        return sink.render_batch(records)

    def _lane_ready(self, writer: Writer) -> bool:
        """Whether *writer* has no lane, or one that holds nothing and whose circuit is
        closed (it failed once and is well again): its batches are written in the turn."""
        lane = self._lanes.get(id(writer))
        return lane is None or (lane.writer is writer and lane.state() == "ready")

    def _part_settled(self, run: _Run, lost: Mapping[str, int]) -> None:
        """A lane is done with *run* (*lost*: what its writer did not get, by reason);
        the run is settled once every lane is."""
        with self._state_lock:
            run.lose(lost)
            run.waiting -= 1
            last = run.waiting == 0
            count = min(run.kept, run.lost)
            if last and count:
                _add(self._undelivered, _trimmed(run.reasons, count))
        if last:
            self.queue.done(run.kept - count, run.filtered, count)
            if run.lost:
                self._note_drops(run.sink, count, run.untold())
            self._notify_settled()

    def _lane(self, writer: Writer) -> _Lane:
        lane = self._lanes.get(id(writer))
        if lane is None or lane.writer is not writer:
            with self._state_lock:
                lane = self._lanes.get(id(writer))
                if lane is None or lane.writer is not writer:
                    lane = self._lanes[id(writer)] = _Lane(self, writer)
                    self._every_lane.add(lane)
        return lane

    def _note_drops(self, sink: Sink, count: int, told: list[int] | None = None) -> None:
        """Records of *sink* that no write could take, and the counts a notice that was
        not written either carried: the next batch says so."""
        with self._state_lock:
            counts = self._drops.get(sink)
            if counts is None:
                counts = self._drops[sink] = [0] * len(REASONS)
            counts[_WRITE_ERROR] += count
            for reason, earlier in enumerate(told or ()):
                counts[reason] += earlier

    def _drop_notice(self, sink: Sink) -> tuple[list[bytes], list[int] | None]:
        """The notice line of the records of *sink* dropped since its last one, and their
        counts by reason (to restore if the notice itself is not written)."""
        if sink not in self._drops:  # the usual case, without the lock: a drop noted just
            return [], None  # after this look is told by the next run, as if after the pop
        with self._state_lock:
            counts = self._drops.pop(sink, None)
        if not counts:
            return [], None
        reasons = ", ".join(f"{n} {REASONS[i]}" for i, n in enumerate(counts) if n)
        notice = Record(
            time.time_ns(),
            30,
            "kakashi",
            f"dropped {sum(counts)} records ({reasons})",
            fields={"dropped": sum(counts)} | {REASONS[i]: n for i, n in enumerate(counts) if n},
            thread_id=threading.get_ident(),
        )
        notice.sink = sink
        # No filter of the pipeline may hide it: a sink of Kakashi's renders it without
        # them; one of another kind that filters it out, or fails, still has its line.
        render_notice = getattr(sink, "render_notice", None)
        try:
            line = render_notice(notice) if render_notice is not None else sink.render(notice)
        except BaseException as exc:  # a sink of another kind: its render failed
            if is_interrupt(exc):
                self._note_drops(sink, 0, counts)  # the next notice tells them
                raise
            _errors.report(f"sink {type(sink).__name__} render", exc)
            line = None
        if type(line) is not bytes:
            line = _notice_line(notice)
        return [line], counts

    def _stats(self, writer: Writer) -> dict[str, Any]:
        """*writer*'s entry in the stats, made on its first batch.

        The entry is added under the state lock, which :meth:`_writers_stats` holds while
        it walks the entries; call this without holding it.
        """
        stats = self._writer_stats.get(id(writer))
        if stats is None:
            described = _describe(writer)
            with self._state_lock:
                stats = self._writer_stats.get(id(writer))
                if stats is None:
                    stats = self._writer_stats[id(writer)] = {
                        "writer": described,
                        "batches": 0,
                        "records": 0,
                        "errors": 0,
                        "dropped": 0,
                        "dropped_by_reason": {},
                        "spooled_at_shutdown": 0,
                    }
                    self._writer_refs[id(writer)] = _weakly(writer)
        return stats

    def _count_lost(self, writer: Writer, reasons: Mapping[str, int]) -> None:
        """Records *writer* did not get, by reason, in its stats."""
        stats = self._stats(writer)
        with self._state_lock:
            stats["dropped"] += sum(reasons.values())
            _add(stats["dropped_by_reason"], reasons)

    def _attempt(
        self,
        writer: Writer,
        lines: Sequence[bytes],
        joined: bool = False,
        prepared: _Prepared | None = None,
        meanwhile: Callable[[], Any] | None = None,
    ) -> _Outcome:
        """Write *lines* to *writer* once and say what happened (see :class:`_Outcome`):
        ``write(lines)``, or ``send(lines, body, meanwhile=meanwhile)`` when *prepared*
        holds their body (or, if its ``prepare`` raised, that exception, as if the write
        had raised it).

        What ``write`` returning or raising means is the :class:`~kakashi.typing.Writer`
        contract: a :class:`~kakashi.writers.delivery.DeliveryError` says record by
        record what to retry and what to drop; another exception means the whole batch
        failed, or the records from its ``written`` on. Whatever it raises
        (``SystemExit`` from a callback included) is counted and reported, never the
        caller's end. Records lost for good are counted in the writer's stats here.
        """
        yield_gil()  # a piece of the worker's stretch ends (see _run)
        stats = self._stats(writer)
        key = self._enter_writer(writer)  # (as _calling, without a generator: hot path)
        try:
            try:
                if prepared is None:
                    if getattr(writer, "keeps_gil_claim", False) is True:
                        result = writer.write(lines)
                        yield_gil()  # (see _run)
                    else:  # its releases are its own: nobody hands it the GIL
                        result = unclaimed(writer.write, lines)
                elif prepared.error is not None:
                    raise prepared.error
                else:
                    send = cast(Any, writer).send
                    result = send(lines, prepared.body, meanwhile=meanwhile)
            finally:
                self._leave_writer(key)
        except BaseException as exc:
            stats["errors"] += 1
            _errors.report(f"writer {_describe(writer)}", exc)
            if isinstance(exc, DeliveryError):
                return self._partly_delivered(writer, lines, exc, joined)
            written = getattr(exc, "written", 0)
            if type(written) is int and 0 < written < len(lines):
                stats["records"] += written  # on disk already: retry only the rest
                return _Outcome(lines[written:], first=True)
            return _Outcome(lines)
        stats["batches"] += 1
        if result is None:  # the usual answer: every line taken
            stats["records"] += len(lines)
            return _DELIVERED
        lost = result if type(result) is int and 0 < result <= len(lines) else 0
        stats["records"] += len(lines) - lost
        if not lost:
            return _DELIVERED
        dropped = {WRITER_REJECTED: lost}
        self._count_lost(writer, dropped)
        return _Outcome(dropped=dropped, first=True)

    def _partly_delivered(
        self, writer: Writer, lines: Sequence[bytes], error: DeliveryError, joined: bool = False
    ) -> _Outcome:
        """What a :class:`~kakashi.writers.delivery.DeliveryError` says of *lines*.

        Indices outside the batch (a writer's mistake: beyond it, or negative, which
        Python would read from its end) are ignored. One that names no record at all is
        read as the whole batch failing, retried: raising says that something was not
        delivered, and nothing may be lost uncounted.
        """
        size = len(lines)
        retry, named = error.within(size)
        if joined and len(named) == size and set(named.values()) == {_TOO_LARGE}:
            # A joined write (*joined*) refused whole as too large: its batches are tried
            # again one by one, each a request the collector may take.
            retry, named = list(range(size)), {}
        named = {index: str(why) or error.reason for index, why in named.items()}
        dropped: dict[str, int] = {}
        for reason in named.values():
            dropped[reason] = dropped.get(reason, 0) + 1
        failed = len(retry) + sum(dropped.values())
        stats = self._stats(writer)
        with self._state_lock:
            stats["records"] += size - failed
        if dropped:
            self._count_lost(writer, dropped)
        wait = error.retry_after
        if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait:
            wait = None  # absent, or not a usable number of seconds (NaN too)
        return _Outcome(
            lines if len(retry) == size else [lines[index] for index in retry],
            error.reason,
            dropped=dropped,
            first=0 not in named and (not retry or retry[0] != 0),
            retry_after=None if wait is None else min(float(wait), MAX_WAIT),
            rest_at=retry,
            dropped_at=named,
        )

    # -- writers that hang ------------------------------------------------------------------

    @contextlib.contextmanager
    def _calling(self, writer: Writer) -> Iterator[None]:
        """Note that a thread is inside one of *writer*'s methods (see :meth:`_hung`)."""
        key = self._enter_writer(writer)
        try:
            yield
        finally:
            self._leave_writer(key)

    def _enter_writer(self, writer: Writer) -> int:
        """A thread enters one of *writer*'s methods (see :meth:`_calling`); its key."""
        key = id(writer)
        with self._state_lock:
            self._busy[key] = self._busy.get(key, 0) + 1
        return key

    def _leave_writer(self, key: int) -> None:
        """A thread left the writer method :meth:`_enter_writer` noted."""
        with self._state_lock:
            left = self._busy.pop(key) - 1
            if left:
                self._busy[key] = left
            else:
                self._hung.discard(key)  # it returned: not hung after all

    def _bounded(self, writer: Writer, what: str, call: Callable[[], Any], deadline: float) -> bool:
        """Run ``call`` (a writer's flush or close) on a helper thread and wait for it until
        *deadline*; whether it returned in time without raising. A call still running then
        is left to finish (it may never: fsync on a hung mount) and the writer counts as
        hung, so no caller waits for it again."""
        failure: list[BaseException] = []

        def run() -> None:
            try:
                with self._calling(writer):
                    call()
            except BaseException as exc:
                failure.append(exc)

        thread = threading.Thread(target=run, name=f"kakashi-{what}", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # no new thread at this point of interpreter shutdown
            run()  # here, then: it has returned
        else:
            thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            with self._state_lock:
                if id(writer) in self._busy:
                    self._hung.add(id(writer))
            _errors.report(
                f"writer {_describe(writer)} {what}",
                detail="did not return in time; it is left running, and records are not "
                "written to this writer synchronously while it hangs",
            )
            return False
        if failure:
            _errors.report(f"writer {_describe(writer)} {what}", failure[0])
            return False
        return True

    def _hung_writer(self, sink: Sink) -> Writer | None:
        """A writer of *sink* that a flush, close or shutdown gave up waiting for and that
        has not returned since, if any."""
        if self._hung:
            for writer in sink.writers:
                if id(writer) in self._hung:
                    return writer
        return None

    # -- flushing ------------------------------------------------------------------------

    def _settled_count(self) -> int:
        counters = self.queue.counters()
        return int(
            counters["written"]
            + counters["filtered"]
            + counters["written_sync"]
            + sum(counters["dropped"].values())
        )

    def _pending(self) -> int:
        queue = self.queue
        return queue.size + queue.in_flight + queue.blocked + queue.in_fallback

    def _notify_settled(self) -> None:
        # Only a flush or shutdown waits on this: skip the lock when none does (a drop
        # notifies from the caller's thread, under overload).
        if self._settle_waiters:
            with self._settled:
                self._settled.notify_all()

    def _write_after_drain(self, write: bool) -> None:
        """Write the records :meth:`_on_closed` kept during the drain, in order, through
        the synchronous fallback (*write*), or count them as dropped
        (``shutdown_timeout``: the drain did not finish in time, and they would land
        ahead of records still on their way, or in a write still running). Records
        offered meanwhile find the kept list full (see :meth:`_keep`); from the end of
        this call on they are written at once."""
        with self._state_lock:
            kept = self._after_drain or []
            self._kept_full = True
        reason = _CLOSED_REASON if write else _SHUTDOWN_REASON  # of those not written
        try:
            for record in kept:
                written = False
                if write:
                    try:
                        written = self._fallback(record)
                    except Exception as exc:  # a sink's emit: counted, not the shutdown's end
                        _errors.report("synchronous fallback", exc)
                self.queue.settle_fallback(written, reason)
                if not written:
                    self._on_drop(record, reason)
        finally:
            with self._state_lock:
                self._after_drain = None
                self._kept_full = False
            self._notify_settled()  # and callers waiting for the kept ones to be written

    def _wait_for_workers(self, done: Callable[[], bool], deadline: float) -> bool:
        """Wake the workers and wait until ``done()`` (asked as each batch settles, and
        every 50 ms); whether it is, at *deadline* or once no worker lives. Meanwhile the
        workers know that this thread hands them no GIL (they neither spin nor park for
        it: see ``begin_waiting_for_workers``)."""
        begin_waiting_for_workers()
        try:
            with self._settled:
                self._settle_waiters += 1
                try:
                    while not done():
                        remaining = deadline - time.monotonic()
                        if remaining <= 0 or not any(t.is_alive() for t in self._workers):
                            return done()
                        self._wake.set()
                        self._settled.wait(min(remaining, 0.05))  # re-checks even if not told
                finally:
                    self._settle_waiters -= 1
        finally:
            end_waiting_for_workers()
        return True

    def _wait_settled(self, target: int, deadline: float) -> bool:
        return self._wait_for_workers(lambda: self._settled_count() >= target, deadline)

    def flush(self, timeout: float = 5.0) -> FlushResult:
        """Wait until every record enqueued before this call is written, then flush writers.

        Returns a :class:`FlushResult`: complete, or how many records are still pending
        when *timeout* seconds have passed (not complete, with no record pending: a
        writer's own ``flush`` had not returned). Called from a worker (a writer that
        logs), it does not wait.

        Raises:
            ValueError: *timeout* is not between 0 and one hour (NaN and infinity too).
        """
        deadline = time.monotonic() + _check_timeout(timeout)
        target = self.queue.offered
        if threading.get_ident() in self._worker_idents:
            return FlushResult(False, self._pending())
        if self.state != "running":
            return FlushResult(self._pending() == 0, self._pending())
        done = self._wait_settled(target, deadline)
        if done:
            # Not in the workers' turn: a writer whose flush hangs holds up no other
            # writer's records (each writer's own lock keeps its flush and writes apart).
            for writer in self._all_writers():
                if id(writer) not in self._hung:
                    self._bounded(writer, "flush", writer.flush, deadline)
            hung = any(id(writer) in self._hung for writer in self._all_writers())
            # Incomplete while a writer's flush has not returned; ``pending`` stays a
            # count of records (those logged since, by now), not of writers.
            return FlushResult(not hung, self._pending() if hung else 0)
        return FlushResult(False, max(self._pending(), 1))

    def _all_writers(self) -> list[Writer]:
        writers: dict[int, Writer] = {}
        for pipeline in list(_pipelines_of(self)):
            for writer in pipeline.writers:
                writers[id(writer)] = writer
        return list(writers.values())

    def _close_writers(self, deadline: float | None = None) -> bool:
        """Flush and close every writer; whether each was, in time and without an error.
        A writer whose ``close`` takes a ``timeout`` is given what is left until
        *deadline* (a rotating file writer would otherwise wait for its pending
        compressions, which may wait for another process's lock)."""
        if deadline is None:
            deadline = time.monotonic() + self.config.shutdown_timeout
        every = True
        for writer in self._all_writers():
            if id(writer) in self._hung:
                every = False
                continue  # still inside a call that a flush gave up on
            close = writer.close
            if _takes_timeout(close):
                # A little less than what is left: a close that uses all of its time must
                # still be back before the deadline, or it would count as hung.
                left = max(0.0, (deadline - time.monotonic()) * 0.9 - 0.01)
                close = functools.partial(close, timeout=left)  # type: ignore[call-arg]
            flushed: list[bool] = []

            def flush_and_close(
                writer: Writer = writer,
                close: Callable[[], Any] = close,
                flushed: list[bool] = flushed,
            ) -> None:
                try:
                    writer.flush()
                    flushed.append(True)
                except BaseException as exc:  # even SystemExit: the writer is closed all the same
                    _errors.report(f"writer {_describe(writer)} flush", exc)
                close()

            # (The close is made first: neither a failed flush nor an earlier writer skips it.)
            every = (
                self._bounded(writer, "close", flush_and_close, deadline)
                and bool(flushed)
                and every
            )
        return every

    # -- stats -----------------------------------------------------------------------------

    def get_stats(self) -> dict[str, Any]:
        """Return the counters (see :func:`kakashi.core.async_interface.get_async_stats`)."""
        with self._state_lock:
            undelivered = dict(self._undelivered)
        counters = self.queue.counters()
        dropped = counters["dropped"]
        return {
            "state": self.state,
            "queue_size": counters["size"],
            "max_queue_size": self.config.max_queue_size,
            "worker_count": self.config.worker_count,
            "active_workers": sum(t.is_alive() for t in self._workers),
            "messages_enqueued": counters["offered"],
            "messages_written": counters["written"] + counters["written_sync"],
            "messages_written_sync": counters["written_sync"],
            "messages_filtered": counters["filtered"],
            "messages_dropped": sum(dropped.values()),
            "dropped_by_reason": dropped,
            "in_flight": counters["in_flight"],
            "blocked": counters["blocked"],
            "in_fallback": counters["in_fallback"],
            "pending": counters["size"]
            + counters["in_flight"]
            + counters["blocked"]
            + counters["in_fallback"],
            "batches_written": self._batches,
            "overflow_strategy": self.config.overflow_strategy,
            "write_error_by_reason": undelivered,
            "writers": self._writers_stats(),
            "internal_errors": _errors.error_counts(),
        }

    stats = get_stats

    def _writers_stats(self) -> list[dict[str, Any]]:
        """Each writer's figures (see :func:`~kakashi.core.async_interface.get_async_stats`)."""
        with self._state_lock:
            entries = [
                (self._writer_refs.get(key), dict(stats, dropped_by_reason=dict(by)))
                for key, stats in self._writer_stats.items()
                for by in (stats["dropped_by_reason"],)
            ]
        for ref, entry in entries:
            writer = None if ref is None else ref()
            lane = None if writer is None else self._lanes.get(id(writer))
            entry["circuit"] = "closed" if lane is None else lane.circuit()
            entry["delivery"] = {} if writer is None else _delivery_stats(writer)
        return [entry for _, entry in entries]

    def _after_fork_in_child(self) -> None:
        # The locks, the condition and the wake event are fork-safe: already released.
        # Shut down in the parent: so in the child, whose records then go to the
        # synchronous fallback as the parent's would (a reset queue takes records that
        # no worker would ever start for).
        shut_down = self.state == "stopped" and self.queue.closed
        self.queue.reset_after_fork()
        if shut_down:
            self.queue.close()
        self._settle_waiters = 0
        self._workers = []
        self._worker_idents = set()
        self._turn_holder = None  # the turn's lock is released here; its holder is gone
        self._after_drain = None
        self._kept_full = False
        self._on_turn = None
        self._drops = {}
        self._lanes = {}
        self._every_lane = weakref.WeakSet()
        self._busy = {}
        self._hung = set()
        self._writer_stats = {}
        self._writer_refs = {}
        self._undelivered = {}
        self._batches = 0
        if self.state != "stopped":
            self.state = "stopped"
            self.queue.starter = self.start  # the child's workers start with its first record

    def __repr__(self) -> str:
        return f"<AsyncBackend {self.state} queue={self.queue.size}/{self.config.max_queue_size}>"


# Pipelines register with the backend they use, so flush/shutdown reach their writers.
_pipelines: weakref.WeakKeyDictionary[AsyncBackend, weakref.WeakSet[AsyncSink]] = (
    weakref.WeakKeyDictionary()
)


def _delivery_stats(writer: Writer) -> dict[str, int]:
    """The extra figures a writer's ``delivery_stats()`` gives (a spool's ``spooled``,
    ``replayed``...): its int values by name; ``{}`` if it has none or it fails."""
    method = getattr(writer, "delivery_stats", None)
    if not callable(method):
        return {}
    try:
        figures = method()
        return {
            str(name): value
            for name, value in dict(figures).items()
            if type(value) is int  # not a bool, not a float
        }
    except Exception as exc:
        _errors.report(f"writer {_describe(writer)} delivery_stats", exc)
        return {}


def _takes(method: Callable[..., Any], name: str) -> bool:
    """Whether *method* accepts a keyword argument *name* (or any keyword)."""
    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        return False
    return any(
        parameter.name == name or parameter.kind is inspect.Parameter.VAR_KEYWORD
        for parameter in parameters
    )


def _takes_timeout(method: Callable[..., Any]) -> bool:
    """Whether *method* (a writer's ``close``) accepts a ``timeout`` keyword."""
    try:
        return "timeout" in inspect.signature(method).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        return False


def register_pipeline(backend: AsyncBackend, pipeline: AsyncSink) -> None:
    """Tell *backend* that *pipeline*'s writers receive its records.

    The backend's flush and shutdown then reach them, and
    :func:`configure_async_backend` moves *pipeline* to its replacement (see
    :class:`~kakashi.typing.AsyncSink`). Held weakly: a pipeline dropped is forgotten.
    """
    _pipelines.setdefault(backend, weakref.WeakSet()).add(pipeline)


def _pipelines_of(backend: AsyncBackend) -> Iterable[AsyncSink]:
    return list(_pipelines.get(backend, ()))


def _leave_signals_to_the_main_thread() -> None:
    """Block, in the calling worker, the signals a Python handler may be waiting for.

    Python runs signal handlers on the main thread only. A signal the kernel hands to a
    worker thread is noted, but a main thread blocked in a system call (a
    multiprocessing Pool worker waiting for its next task) is not interrupted and never
    runs the handler: with a SIGTERM handler installed, the process would not end.
    ``signal`` is imported with this module, not here: a fork while a worker thread was
    importing it would leave the module's import lock held in the child, whose first
    worker would then wait for it forever.
    """
    if hasattr(signal, "pthread_sigmask"):
        names = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM")
        signal.pthread_sigmask(
            signal.SIG_BLOCK, {getattr(signal, n) for n in names if hasattr(signal, n)}
        )


_live: weakref.WeakSet[AsyncBackend] = weakref.WeakSet()
_global_lock = fork_safe_rlock()
#: The process-wide backend (the presets' and get_async_stats'); None until one is made.
_global: AsyncBackend | None = None
#: The process-wide backend last shut down or replaced: get_async_stats reports its final
#: figures until the next one takes a record.
_retired: AsyncBackend | None = None


#: The watchdog of every backend's turn (see AsyncBackend._watch), started with the first
#: backend that starts; it ends when none runs.
_watchdog: threading.Thread | None = None
_watchdog_lock = fork_safe_lock()
_watchdog_wake = fork_safe_event()  # a backend stopped: the watchdog looks at once


def _watch_turns() -> None:
    """Make sure the watchdog runs (a backend just started)."""
    global _watchdog
    with _watchdog_lock:
        if _watchdog is None or not _watchdog.is_alive():
            thread = threading.Thread(target=_watch_all, name="kakashi-watch", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # no thread left, or interpreter exit: nobody watches
                return
            _watchdog = thread


def _watch_all() -> None:
    """The watchdog's loop: every running backend looked at (:meth:`AsyncBackend._watch`)
    four times per the smallest ``writer_hang_threshold`` among them (at most once a
    second, at least every 5 ms); it ends once no backend runs (the next start starts
    it again)."""
    global _watchdog
    _leave_signals_to_the_main_thread()
    while True:
        running = [backend for backend in list(_live) if backend.state != "stopped"]
        if not running:
            with _watchdog_lock:  # a backend starting now finds it gone, and starts another
                if not any(backend.state != "stopped" for backend in list(_live)):
                    if _watchdog is threading.current_thread():
                        _watchdog = None
                    return
            continue
        period = min(backend.config.writer_hang_threshold for backend in running) / 4
        del running  # not held while asleep: a backend no one uses is collected
        if _watchdog_wake.wait(min(max(period, 0.005), 1.0)):
            _watchdog_wake.clear()
            continue
        for backend in list(_live):
            if backend.state != "stopped":
                try:
                    backend._watch()
                except Exception as exc:  # never the watchdog's end
                    _errors.report("watchdog", exc)


def _unwatch(deadline: float) -> None:
    """A backend stopped: if none runs any more, let the watchdog end now, waiting for it
    until *deadline* (at most a second), so that a shutdown leaves no thread of ours."""
    with _watchdog_lock:
        thread = _watchdog
    if thread is None or thread is threading.current_thread():
        return
    _watchdog_wake.set()
    if not any(backend.state != "stopped" for backend in list(_live)):
        thread.join(max(0.0, min(1.0, deadline - time.monotonic())))


def _is_shut_down(backend: AsyncBackend) -> bool:
    """Whether *backend* was shut down (its queue closed), not merely never started."""
    return backend.state == "stopped" and bool(backend.queue.closed)


def get_async_backend(config: AsyncConfig | None = None) -> AsyncBackend:
    """Return the process-wide backend, making one if there is none or it was shut down.

    It is never replaced behind anyone's back: *config* is used only when a backend is
    made now. The presets call this and say on stderr when the running backend's
    settings differ from those they were asked for; :func:`configure_async_backend` is
    the way to change them.

    Args:
        config: the settings of a backend made by this call (default: :class:`AsyncConfig`'s).

    Raises:
        TypeError: *config* is not an :class:`AsyncConfig`.
    """
    global _global, _retired
    if config is not None and not isinstance(config, AsyncConfig):
        raise TypeError(f"config must be an AsyncConfig, got {type(config).__name__}")
    with _global_lock:
        if _global is None or _is_shut_down(_global):
            if _global is not None:
                _retired = _global
            _global = AsyncBackend(config)
        return _global


def reporting_backend() -> AsyncBackend | None:
    """Return the backend whose figures :func:`~kakashi.core.async_interface.get_async_stats`
    reports, without making one.

    That is the process-wide backend once it is running or has taken a record; before
    that, the one last shut down or replaced (so its final figures stay readable, with
    state ``"stopped"``); ``None`` if there has been none.
    """
    with _global_lock:
        current, retired = _global, _retired
    if current is not None and (
        retired is None or current.state != "stopped" or current.queue.offered > 0
    ):
        return current
    return retired


def configure_async_backend(
    max_queue_size: int = AsyncConfig.max_queue_size,
    worker_count: int = AsyncConfig.worker_count,
    batch_size: int = AsyncConfig.batch_size,
    enable_batching: bool = AsyncConfig.enable_batching,
    overflow_strategy: str = AsyncConfig.overflow_strategy,
    **options: Any,
) -> AsyncBackend:
    """Replace the process-wide backend with one built from these settings.

    This is the one call that changes the process-wide backend's settings (the presets
    never do). The old backend stops taking records and drains into its writers first;
    every pipeline that used it moves to the new one. Until the new backend takes a
    record, :func:`~kakashi.core.async_interface.get_async_stats` still reports the old
    one's final figures. Further :class:`AsyncConfig` fields can be passed as keyword
    *options*; the defaults are :class:`AsyncConfig`'s.

    Raises:
        ValueError: an invalid setting (see :class:`AsyncConfig`).
        TypeError: a setting of the wrong type, or an unknown keyword.
    """
    global _global, _retired
    config = AsyncConfig(
        max_queue_size=max_queue_size,
        worker_count=worker_count,
        batch_size=batch_size,
        enable_batching=enable_batching,
        overflow_strategy=overflow_strategy,
        **options,
    )
    new = AsyncBackend(config)
    with _global_lock:
        old, _global = _global, new
        if old is not None:
            _retired = old
            for pipeline in _pipelines_of(old):
                pipeline.use_backend(new)
    if old is not None:
        old.shutdown()
    return new


def shutdown_async_logging(timeout: float = 5.0) -> FlushResult:
    """Shut down the process-wide backend (see :meth:`AsyncBackend.shutdown`).

    Its pipelines fall back to synchronous writing (if configured so); the next preset
    or :func:`get_async_backend` call makes a new backend. Its final figures stay
    readable through :func:`~kakashi.core.async_interface.get_async_stats` (state
    ``"stopped"``) until that new backend takes a record.

    Raises:
        ValueError: *timeout* is not between 0 and one hour (NaN and infinity too).
    """
    global _global, _retired
    timeout = _check_timeout(timeout)
    with _global_lock:
        backend, _global = _global, None
        if backend is not None:
            _retired = backend
    if backend is None:
        return FlushResult(True, 0)
    return backend.shutdown(timeout)


def flush_all(timeout: float = 5.0) -> FlushResult:
    """Flush every running backend (see :meth:`AsyncBackend.flush`) within *timeout* overall.

    Raises:
        ValueError: *timeout* is not between 0 and one hour (NaN and infinity too).
    """
    deadline = time.monotonic() + _check_timeout(timeout)
    pending = 0
    complete = True
    for backend in list(_live):
        if backend.state == "running":
            result = backend.flush(max(0.0, deadline - time.monotonic()))
            complete = complete and result.complete
            pending += result.pending
    return FlushResult(complete, pending)


def shutdown_all(timeout: float | None = None) -> None:
    """Shut down every live backend (interpreter exit does this), then forget the global one.

    Intake closes first and what was queued is written first, in order (see
    ``_shut_down_in_order``). Workers still busy in a hung writer are given until
    *timeout* to finish. The final figures of the global backend are forgotten too (a
    full reset, as between tests).
    """
    global _global, _retired
    if timeout is not None:
        timeout = _check_timeout(timeout)
    with _draining():
        _shut_down_in_order(list(_live), timeout)
        for backend in list(_live):
            for thread in list(backend._workers):
                thread.join(backend.config.shutdown_timeout if timeout is None else timeout)
        with _global_lock:
            _global = _retired = None


def _shut_down_in_order(backends: list[AsyncBackend], timeout: float | None) -> None:
    """Shut *backends* down so that what each had queued is written before anything else.

    The intake of every running backend closes at once, holding the callers that log
    meanwhile (daemon threads at exit): they neither compete with the workers that drain
    nor write a record of theirs before their earlier ones that wait in the queue. Each
    backend then drains within its ``shutdown_timeout`` (or *timeout*); if it drained
    everything, the held callers go on to the synchronous fallback, in order; if not,
    their records are counted as dropped (``shutdown_timeout``), as the rest of the queue
    is, and no later record of theirs is written after the gap either.
    """
    running = [backend for backend in backends if backend.state == "running"]
    drainer = threading.get_ident()
    for backend in running:
        backend.queue.hold(frozenset(backend._worker_idents) | {drainer})
        backend.queue.close()
    released = 0
    try:
        for backend in running:
            limit = backend.config.shutdown_timeout if timeout is None else float(timeout)
            deadline = time.monotonic() + max(limit, 0.0)
            backend.queue.release(_wait_drained(backend, deadline))
            released += 1
            backend.shutdown(max(0.0, deadline - time.monotonic()))
    finally:
        for backend in running[released:]:  # a drain that failed: nobody waits any longer
            backend.queue.release(False)
    for backend in backends:
        if backend not in running and backend.state != "stopped":
            backend.shutdown(timeout)


def _wait_drained(backend: AsyncBackend, deadline: float) -> bool:
    """Wait until *backend*'s workers wrote every record queued; ``False`` at *deadline*."""
    queue = backend.queue
    # A region: a signal handler that logs meanwhile must not wait for _settled.
    return run_in_region(
        backend._wait_for_workers,
        lambda: not (queue.size or queue.in_flight or queue.deferred),
        deadline,
    )


# The thread draining every backend now (shutdown_all, or the drain at exit), and what a
# SIGTERM that interrupted that drain on that same thread left to do once it finishes.
_drainer: int | None = None
_after_drain: list[Callable[[], None]] = []
# The thread a SIGTERM handler drains in, while it runs (a second SIGTERM then waits).
_sigterm_drain: threading.Thread | None = None


@contextlib.contextmanager
def _draining() -> Iterator[None]:
    global _drainer
    outer = _drainer
    _drainer = threading.get_ident()
    try:
        yield
    finally:
        _drainer = outer
        while outer is None and _after_drain:
            _after_drain.pop(0)()


def install_sigterm_handler(timeout: float = 3.0) -> None:
    """Opt in: on SIGTERM, drain every backend (within *timeout* seconds), then go on.

    Python's default SIGTERM action ends the process without running ``atexit``, so
    records still queued would be lost. The handler shuts every backend down (see
    :func:`shutdown_all`) in a thread of its own, which it waits for at most *timeout*
    seconds, then calls the handler that was installed before it, or, if that was the
    default action, re-delivers SIGTERM so the process ends as it would have. A SIGTERM
    that arrives inside a log call (which may hold a lock the drain needs) is acted on
    as that call leaves the library. Keep *timeout* under your supervisor's grace
    period (Docker waits 10 s before SIGKILL).

    Raises:
        ValueError: not called from the main thread (a Python rule for signal handlers),
            or a *timeout* that is not between 0 and one hour (NaN and infinity too).
    """
    timeout = _check_timeout(timeout)
    previous = signal.getsignal(signal.SIGTERM)

    def drain_then_terminate(signum: int, frame: Any) -> None:
        if _drainer == threading.get_ident():
            # SIGTERM interrupted a drain on this thread (a process draining at its exit):
            # draining again here would wait for a lock the interrupted drain holds. Let
            # that drain finish, then go on as SIGTERM says.
            _after_drain.append(lambda: go_on(signum, frame))
            return
        if when_out_of_region(lambda: drain_then_terminate(signum, frame)):
            return  # inside a log call that may hold a lock the drain needs: right after it
        if _sigterm_drain is not None:
            return  # a second SIGTERM while the first drains: the first goes on
        _drain_in_a_thread(timeout)
        go_on(signum, frame)

    def go_on(signum: int, frame: Any) -> None:
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, drain_then_terminate)


def _drain_in_a_thread(timeout: float) -> None:
    """Run :func:`shutdown_all` in a new thread and wait for it at most *timeout* seconds.

    Off the signal handler: the handler's thread may hold locks (the interpreter's, a
    writer's) that the drain would otherwise wait for; a drain that hangs regardless is
    left behind, so the process still ends.
    """
    global _sigterm_drain

    def drain() -> None:
        _leave_signals_to_the_main_thread()
        try:
            shutdown_all(timeout)
        except Exception as exc:
            _errors.report("SIGTERM drain", exc)

    thread = threading.Thread(target=drain, name="kakashi-sigterm-drain", daemon=True)
    _sigterm_drain = thread
    try:
        thread.start()
        thread.join(timeout)
    finally:
        _sigterm_drain = None


def _shutdown_all_at_exit() -> None:
    with _draining():
        _shut_down_in_order(list(_live), None)


def _after_fork_in_child() -> None:
    global _drainer, _sigterm_drain
    _drainer = None  # a drain running in the parent is not the child's
    _sigterm_drain = None
    _after_drain.clear()
    for backend in list(_live):
        backend._after_fork_in_child()


# -- multiprocessing children -------------------------------------------------------------
# A multiprocessing child started by fork or forkserver ends with os._exit() right after
# running multiprocessing.util's finalizers: atexit never runs there. So while a backend
# runs in a process that has imported multiprocessing, one such finalizer drains it too.
# multiprocessing is not imported for this: a process that has not imported it is no
# multiprocessing child, and an import made later is seen when a backend next starts (a
# forked child's backend restarts with the child's first record).

#: Above the finalizers multiprocessing registers itself (a Queue's feeder thread is told
#: to stop at 10, a Pool's workers are terminated at 15), so that a writer that hands its
#: records to a multiprocessing.Queue can still do so.
_EXIT_PRIORITY = 20
_exit_lock = fork_safe_lock()
_exit_finalizer: Any = None
_after_forker_registered = False


def _drain_when_multiprocessing_ends_this_process() -> None:
    """Make sure multiprocessing's exit path shuts every running backend down in time.

    Each backend gets its own ``shutdown_timeout``, so the process never hangs on exit.
    """
    global _exit_finalizer, _after_forker_registered
    util = sys.modules.get("multiprocessing.util")
    if util is None:
        return
    with _exit_lock:
        if _exit_finalizer is None or not _exit_finalizer.still_active():
            _exit_finalizer = util.Finalize(
                None, _shutdown_all_at_exit, exitpriority=_EXIT_PRIORITY
            )
        if not _after_forker_registered:
            # A child's bootstrap forgets every finalizer (after the fork hooks ran; in a
            # forkserver or spawn child, after the target's module was imported, which may
            # have started a backend), then runs the after-fork callbacks: renew it there.
            util.register_after_fork(_shutdown_all_at_exit, _renew_in_multiprocessing_child)
            _after_forker_registered = True


def _renew_in_multiprocessing_child(_: object) -> None:
    if any(backend.state == "running" for backend in list(_live)):
        _drain_when_multiprocessing_ends_this_process()


atexit.register(_shutdown_all_at_exit)
after_fork_in_child(_after_fork_in_child)
