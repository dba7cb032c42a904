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
  declare ``concurrent = True`` (slow network callbacks) receive their batches outside
  that turn, so several workers may deliver to them at once; within a batch, order holds.
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
- A writer that raises never reaches the application and never kills a worker: it is
  counted, reported once on stderr, retried with backoff, then its batch is counted as
  dropped.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import inspect
import os
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from kakashi import _errors
from kakashi._locks import (
    after_fork_in_child,
    enter_region,
    fork_safe_condition,
    fork_safe_event,
    fork_safe_lock,
    fork_safe_rlock,
    leave_region,
    when_out_of_region,
)
from kakashi._speedups import (
    BLOCK,
    DROP_NEWEST,
    DROP_OLDEST,
    REASONS,
    Record,
    RecordQueue,
)
from kakashi._wording import plural
from kakashi.typing import AsyncSink, Sink, Writer, is_concurrent

__all__ = [
    "AsyncBackend",
    "AsyncConfig",
    "FlushResult",
    "configure_async_backend",
    "flush_all",
    "get_async_backend",
    "install_sigterm_handler",
    "shutdown_all",
    "shutdown_async_logging",
]

_STRATEGIES = {"block": BLOCK, "drop_oldest": DROP_OLDEST, "drop_newest": DROP_NEWEST}


@dataclasses.dataclass(frozen=True)
class AsyncConfig:
    """How the async backend queues and writes; validated when made.

    Args:
        max_queue_size: the most records waiting at once (memory is bounded by it).
        worker_count: worker threads. More than one helps only slow writers (network).
        batch_size: the most records a worker formats and writes in one go.
        batch_timeout: the longest a worker waits for a batch to fill once a record
            arrived (a full batch wakes it at once); also how often an idle worker checks.
            ``flush`` and ``shutdown`` do not wait for it.
        enable_batching: ``False`` writes records one by one (``batch_size`` 1).
        overflow_strategy: what a full queue does: ``"block"`` (the caller waits up to
            ``block_timeout`` seconds, then the record is dropped and counted),
            ``"drop_oldest"`` or ``"drop_newest"``.
        shutdown_timeout: seconds :meth:`AsyncBackend.shutdown` may take by default.
        block_timeout: the longest a caller waits under ``"block"``.
        max_error_retries: how often a failed batch write is retried before its records
            count as dropped.
        error_retry_delay: the first retry's delay in seconds; it doubles each time.
        thread_name_prefix: workers are named ``<prefix>-<n>``.
        queue_overflow_strategy: the original library's name for ``overflow_strategy``.

    Raises:
        ValueError: a size, count or timeout out of range, or an unknown strategy; the
            message names the field.
        TypeError: a field of the wrong type.
    """

    max_queue_size: int = 10_000
    worker_count: int = 1
    batch_size: int = 100
    batch_timeout: float = 0.1
    enable_batching: bool = True
    overflow_strategy: str = "block"
    shutdown_timeout: float = 5.0
    block_timeout: float = 1.0
    max_error_retries: int = 3
    error_retry_delay: float = 0.1
    thread_name_prefix: str = "kakashi-worker"
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
        for name in ("batch_timeout", "shutdown_timeout", "block_timeout", "error_retry_delay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
            if not value > 0 and not (name == "error_retry_delay" and value == 0):
                raise ValueError(f"{name} must be positive, got {value}")
        if self.overflow_strategy not in _STRATEGIES:
            raise ValueError(
                f"overflow_strategy must be one of {', '.join(_STRATEGIES)}, "
                f"got {self.overflow_strategy!r}"
            )
        if not isinstance(self.thread_name_prefix, str) or not self.thread_name_prefix:
            raise ValueError("thread_name_prefix must be a non-empty str")

    @property
    def effective_batch_size(self) -> int:
        """``batch_size``, or 1 when batching is off."""
        return self.batch_size if self.enable_batching else 1


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
        self._turn = fork_safe_lock()  # one worker at a time drains, formats, writes
        self._state_lock = fork_safe_lock()
        self._settled = fork_safe_condition()
        self._settle_waiters = 0
        self._workers: list[threading.Thread] = []
        self._worker_idents: set[int] = set()
        self._drops: dict[Sink, list[int]] = {}
        self._batches = 0
        self._writer_stats: dict[int, dict[str, Any]] = {}
        self.state = "stopped"
        self.queue.starter = self.start
        _live.add(self)

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        """Start the workers (done automatically by the first record)."""
        with self._state_lock:
            if self.state in ("running", "stopping"):
                return
            self.queue.starter = None
            self.queue.reopen()
            self.state = "running"
            self._stop = False
            self._workers = []
            for index in range(self.config.worker_count):
                thread = threading.Thread(
                    target=self._run,
                    name=f"{self.config.thread_name_prefix}-{index}",
                    daemon=True,  # a hung writer must not keep the process alive
                )
                self._workers.append(thread)
                thread.start()
        _drain_when_multiprocessing_ends_this_process()

    def is_running(self) -> bool:
        """Return whether the workers are running."""
        return self.state == "running"

    def shutdown(self, timeout: float | None = None) -> FlushResult:
        """Stop intake, drain, flush and close the writers, join the workers.

        Returns within *timeout* seconds (default ``shutdown_timeout``) even if a writer
        hangs. Records it could not write in time are abandoned and reported on stderr
        with the time actually spent; the result says how many (see :class:`FlushResult`).
        Records logged meanwhile and written by the synchronous fallback are not abandoned.
        """
        timeout = self.config.shutdown_timeout if timeout is None else float(timeout)
        started = time.monotonic()
        deadline = started + max(timeout, 0.0)
        with self._state_lock:
            self.queue.starter = None  # a shut-down backend is not restarted by a record
            if self.state == "stopped" and not self._workers:
                self.queue.close()
                return FlushResult(True, 0)
            self.state = "stopping"
        self.queue.close()
        if threading.get_ident() in self._worker_idents:
            return FlushResult(False, self._pending())  # called from a writer: cannot wait
        drained = self._wait_settled(self.queue.offered, deadline)
        self._stop = True
        self._wake.set()
        for thread in self._workers:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [thread for thread in self._workers if thread.is_alive()]
        if not alive:
            self._close_writers(deadline)
        queued = len(self.queue.abandon())
        held = self.queue.in_flight  # in batches that workers still write (a hung writer)
        pending = queued + held
        if pending:
            parts = [f"{queued} left in the queue (counted as dropped)"] if queued else []
            if held:
                parts.append(f"{held} in batches that {plural(len(alive), 'worker')} still write")
            _errors.report(
                "shutdown",
                detail=f"{plural(pending, 'record')} not written after "
                f"{time.monotonic() - started:.2f}s (allowed {timeout:g}s): {', '.join(parts)}",
            )
        with self._state_lock:
            self.state = "stopped"
            self._workers = alive
        return FlushResult(drained and pending == 0, pending)

    stop = shutdown

    # -- intake ----------------------------------------------------------------------

    def enqueue(self, record: Record) -> None:
        """Offer *record* to the queue (what a logger routed here does)."""
        self.queue.put(record)

    def _on_closed(self, record: Record) -> bool:
        sink: Sink | None = record.sink
        if sink is not None and getattr(sink, "fallback_to_sync", False):
            sink.emit(record)
            return True
        return False

    def _on_drop(self, record: Record, reason: int) -> None:
        with self._state_lock:
            counts = self._drops.get(record.sink)
            if counts is None:
                counts = self._drops[record.sink] = [0] * len(REASONS)
            counts[reason] += 1
        self._notify_settled()

    # -- the workers -------------------------------------------------------------------

    def _run(self) -> None:
        _leave_signals_to_the_main_thread()
        self._worker_idents.add(threading.get_ident())
        queue = self.queue
        size = self.config.effective_batch_size
        timeout = self.config.batch_timeout
        # Wait for a full batch (or batch_timeout) before draining: the worker then takes
        # the GIL once per batch rather than once per record.
        fill = min(size, self.config.max_queue_size)
        try:
            while True:
                if queue.sleep():  # idle: the first record wakes us
                    self._wake.wait(timeout)
                    self._wake.clear()
                if fill > 1 and not self._stop and queue.sleep(fill):
                    self._wake.wait(timeout)  # until the batch is full, or batch_timeout
                    self._wake.clear()
                while True:
                    with self._turn:
                        batch = queue.drain(size)
                        if not batch:
                            break
                        later = self._process(batch)
                    for writer, lines in later:
                        self._deliver(writer, lines)
                if self._stop and queue.size == 0:
                    return
        except BaseException as exc:  # the loop itself failed: report, never die silently
            _errors.report("worker", exc)
            raise
        finally:
            self._worker_idents.discard(threading.get_ident())

    def _process(self, batch: list[Record]) -> list[tuple[Writer, list[bytes]]]:
        """Format and write one batch (called in turn); return the concurrent deliveries."""
        later: list[tuple[Writer, list[bytes]]] = []
        written = filtered = failed = 0
        start = 0
        while start < len(batch):
            sink: Sink = batch[start].sink
            end = start + 1
            while end < len(batch) and batch[end].sink is sink:
                end += 1
            lines, run_filtered = sink.render_batch(batch[start:end])
            notice = self._drop_notice(sink)
            if notice:
                lines[:0] = notice
            kept = end - start - run_filtered
            lost = min(kept, self._write_all(sink, lines, later)) if lines else 0
            written += kept - lost
            failed += lost
            filtered += run_filtered
            start = end
        self._batches += 1
        self.queue.done(written, filtered, failed)
        self._notify_settled()
        return later

    def _drop_notice(self, sink: Sink) -> list[bytes]:
        with self._state_lock:
            counts = self._drops.pop(sink, None)
        if not counts:
            return []
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
        line = sink.render(notice)
        return [line] if line is not None else []

    def _write_all(
        self, sink: Sink, lines: list[bytes], later: list[tuple[Writer, list[bytes]]]
    ) -> int:
        """Hand *lines* to every writer; return how many records some writer could not take.

        Records one writer could not take count once (the most any writer missed); each
        writer's own figures are in the stats.
        """
        failed = 0
        for writer in sink.writers:
            if is_concurrent(writer):
                later.append((writer, lines))
            else:
                failed = max(failed, self._deliver(writer, lines))
        return failed

    def _deliver(self, writer: Writer, lines: Sequence[bytes]) -> int:
        """Write *lines* to *writer*, retrying with backoff; return how many were lost.

        What ``write`` returning or raising means is the :class:`~kakashi.typing.Writer`
        contract.
        """
        stats = self._writer_stats.get(id(writer))
        if stats is None:
            stats = self._writer_stats[id(writer)] = {
                "writer": repr(writer),
                "batches": 0,
                "records": 0,
                "errors": 0,
                "dropped": 0,
            }
        delay = self.config.error_retry_delay
        for attempt in range(self.config.max_error_retries + 1):
            try:
                result = writer.write(lines)
            except Exception as exc:
                stats["errors"] += 1
                _errors.report(f"writer {writer!r}", exc)
                written = getattr(exc, "written", 0)
                if type(written) is int and 0 < written < len(lines):
                    stats["records"] += written  # on disk already: retry only the rest
                    lines = lines[written:]
                if attempt < self.config.max_error_retries and not self._stop:
                    time.sleep(delay)
                    delay *= 2
                continue
            lost = result if type(result) is int and 0 < result <= len(lines) else 0
            stats["batches"] += 1
            stats["records"] += len(lines) - lost
            stats["dropped"] += lost
            return lost
        stats["dropped"] += len(lines)
        return len(lines)

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

    def _wait_settled(self, target: int, deadline: float) -> bool:
        with self._settled:
            self._settle_waiters += 1
            try:
                while self._settled_count() < target:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not any(t.is_alive() for t in self._workers):
                        return self._settled_count() >= target
                    self._wake.set()
                    self._settled.wait(min(remaining, 0.05))  # re-checks even if not told
            finally:
                self._settle_waiters -= 1
        return True

    def flush(self, timeout: float = 5.0) -> FlushResult:
        """Wait until every record enqueued before this call is written, then flush writers.

        Returns a :class:`FlushResult`: complete, or how many records are still pending
        when *timeout* seconds have passed. Called from a worker (a writer that logs), it
        does not wait.
        """
        deadline = time.monotonic() + max(float(timeout), 0.0)
        target = self.queue.offered
        if threading.get_ident() in self._worker_idents:
            return FlushResult(False, self._pending())
        if self.state != "running":
            return FlushResult(self._pending() == 0, self._pending())
        done = self._wait_settled(target, deadline)
        if done and self._turn.acquire(timeout=max(0.0, deadline - time.monotonic())):
            try:
                for writer in self._all_writers():
                    try:
                        writer.flush()
                    except Exception as exc:
                        _errors.report(f"writer {writer!r} flush", exc)
            finally:
                self._turn.release()
            return FlushResult(True, 0)
        return FlushResult(False, max(self._pending(), 1 if done else 0))

    def _all_writers(self) -> list[Writer]:
        writers: dict[int, Writer] = {}
        for pipeline in list(_pipelines_of(self)):
            for writer in pipeline.writers:
                writers[id(writer)] = writer
        return list(writers.values())

    def _close_writers(self, deadline: float | None = None) -> None:
        """Flush and close every writer; a writer whose ``close`` takes a ``timeout`` is
        given what is left until *deadline* (a rotating file writer would otherwise wait
        for its pending compressions, which may wait for another process's lock)."""
        for writer in self._all_writers():
            close = writer.close
            if deadline is not None and _takes_timeout(close):
                left = max(0.0, deadline - time.monotonic())
                close = functools.partial(close, timeout=left)  # type: ignore[call-arg]
            for method in (writer.flush, close):
                try:
                    method()
                except Exception as exc:
                    _errors.report(f"writer {writer!r} close", exc)

    # -- stats -----------------------------------------------------------------------------

    def get_stats(self) -> dict[str, Any]:
        """Return the counters (see :func:`kakashi.core.async_interface.get_async_stats`)."""
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
            "writers": [dict(stats) for stats in list(self._writer_stats.values())],
            "internal_errors": _errors.error_counts(),
        }

    stats = get_stats

    def _after_fork_in_child(self) -> None:
        # The locks, the condition and the wake event are fork-safe: already released.
        self.queue.reset_after_fork()
        self._settle_waiters = 0
        self._workers = []
        self._worker_idents = set()
        self._drops = {}
        self._writer_stats = {}
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
_global: AsyncBackend | None = None


def get_async_backend() -> AsyncBackend:
    """Return the process-wide backend, creating one with default settings if needed."""
    global _global
    with _global_lock:
        if _global is None:
            _global = AsyncBackend()
        return _global


def configure_async_backend(
    max_queue_size: int = 25_000,
    worker_count: int = 2,
    batch_size: int = 200,
    enable_batching: bool = True,
    overflow_strategy: str = "drop_oldest",
    **options: Any,
) -> AsyncBackend:
    """Replace the process-wide backend with one built from these settings.

    The old backend stops taking records and drains into its writers first; every
    pipeline that used it moves to the new one. Further :class:`AsyncConfig` fields can
    be passed as keyword arguments.

    Raises:
        ValueError: an invalid setting (see :class:`AsyncConfig`).
    """
    global _global
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
            for pipeline in _pipelines_of(old):
                pipeline.use_backend(new)
    if old is not None:
        old.shutdown()
    return new


def shutdown_async_logging(timeout: float = 5.0) -> FlushResult:
    """Shut down the process-wide backend (see :meth:`AsyncBackend.shutdown`).

    Its pipelines fall back to synchronous writing (if configured so); the next preset
    or :func:`get_async_backend` call makes a new backend.
    """
    global _global
    with _global_lock:
        backend, _global = _global, None
    if backend is None:
        return FlushResult(True, 0)
    return backend.shutdown(timeout)


def flush_all(timeout: float = 5.0) -> FlushResult:
    """Flush every running backend (see :meth:`AsyncBackend.flush`) within *timeout* overall."""
    deadline = time.monotonic() + max(float(timeout), 0.0)
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
    :func:`_shut_down_in_order`). Workers still busy in a hung writer are given until
    *timeout* to finish.
    """
    global _global
    with _draining():
        _shut_down_in_order(list(_live), timeout)
        for backend in list(_live):
            for thread in list(backend._workers):
                thread.join(backend.config.shutdown_timeout if timeout is None else timeout)
        with _global_lock:
            _global = None


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
    enter_region()
    try:
        with backend._settled:
            backend._settle_waiters += 1
            try:
                while queue.size or queue.in_flight or queue.deferred:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not any(t.is_alive() for t in backend._workers):
                        return False
                    backend._wake.set()
                    backend._settled.wait(min(remaining, 0.05))  # re-checks even if not told
            finally:
                backend._settle_waiters -= 1
    finally:
        leave_region()
    return True


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
            or a negative *timeout*.
    """
    if timeout < 0:
        raise ValueError(f"timeout must not be negative, got {timeout!r}")
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
