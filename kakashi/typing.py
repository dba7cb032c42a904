"""The contracts between the pipeline's stages, written down once.

A record flows: logger (capture) → enrichers → filters → formatter → writers.

The stages are :data:`Enricher`, :data:`Filter`, :data:`Formatter` and :class:`Writer`.
Around them, two contracts say what the machinery calls on a pipeline: a
:class:`LoggerSource` hands out loggers and tells their routes where records go, and a
:class:`Sink` is what an async backend's workers call on each record's pipeline
(:class:`AsyncSink` when the pipeline is registered with a backend). Both
:class:`~kakashi.core.pipeline.Pipeline` and
:class:`~kakashi.core.async_pipeline.AsyncPipeline` satisfy them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, TypeAlias, runtime_checkable

from kakashi._speedups import Logger, Record, RecordQueue

if TYPE_CHECKING:
    from kakashi.core.async_backend import AsyncBackend

__all__ = [
    "AsyncSink",
    "Enricher",
    "Filter",
    "Formatter",
    "LoggerSource",
    "Record",
    "Sink",
    "Writer",
    "is_concurrent",
]

#: Takes a record and returns it (or a replacement), with top-level keys added to
#: ``record.extra``. Runs where the record is processed (the caller in sync mode, a
#: worker in async mode), so it must not read anything that depends on the calling
#: thread: that is captured by the logger. An enricher with a ``captures`` attribute (an
#: int of ``CAPTURE_*`` flags) asks the logger to capture more on the caller.
Enricher: TypeAlias = Callable[[Record], "Record | None"]

#: Takes a record and returns whether it is written.
Filter: TypeAlias = Callable[[Record], bool]

#: Takes a record and returns one line of output, without its newline, as ``bytes``
#: (UTF-8) or ``str`` (encoded as UTF-8, lone surrogates replaced).
Formatter: TypeAlias = Callable[[Record], "bytes | str"]


@runtime_checkable
class Writer(Protocol):
    """Where formatted records go.

    ``write`` takes a batch: a sequence of formatted records, each without its line
    terminator, to be written in order. Its outcome tells the async backend what to
    count:

    - it raises: the whole batch failed. The backend reports the error, retries the
      batch with backoff (``AsyncConfig.max_error_retries`` times, from
      ``error_retry_delay`` seconds, doubling), then counts its records as dropped.
      An exception with an int attribute ``written`` between 1 and ``len(batch) - 1``
      (:class:`~kakashi.writers.file.PartialWriteError`) says that the first
      ``written`` records are written: only the rest is retried, so none is written
      twice.
    - it returns an int *n* between 1 and ``len(batch)``: it retried on its own and
      still could not take *n* records, which are counted as dropped, not retried.
    - it returns ``None`` or 0 (anything else is read as 0): every record was taken.

    ``flush`` pushes anything buffered to the operating system (``AsyncBackend.flush``
    calls it once the records enqueued before the flush are written); ``close`` flushes
    and releases the resource (at shutdown).

    Optional attribute ``concurrent``: a writer that sets ``concurrent = True`` (a
    class or instance attribute) receives its batches outside the workers' turn, so
    with ``worker_count > 1`` several workers may call its ``write`` at once (each
    batch still in order); use it for slow network writers that are safe to call
    from several threads. It is not a member of this protocol, because a protocol
    attribute would be mandatory for every writer: the backend reads it with
    :func:`is_concurrent`, that is ``getattr(writer, "concurrent", False)``.

    Optional attribute ``max_batch_records`` (an int): for a concurrent writer, when
    batches wait for it (it fell behind), up to that many records of them are joined
    into one ``write`` (never splitting a batch): fewer, larger requests to a store. A
    failure it reports is settled batch by batch, and what is retried is retried batch
    by batch (a joined write refused whole as too large, HTTP 413, is written again
    batch by batch). Absent or 0: each batch is written as the workers formatted it.
    The HTTP writers join up to 10,000.

    Optional attribute ``max_in_flight`` (an int): how many writes a concurrent writer
    may be given at once, each on a thread of its lane (absent or 1: one at a time, in
    order). More than one gives up the order of its batches for throughput.

    Optional attribute ``keeps_gil_claim = True``: the worker keeps its claim on the
    interpreter lock through this writer's ``write`` (compiled build; see
    ``AsyncConfig.gil_handover_depth``), so a logging thread that takes the lock while
    ``write`` lets it go briefly hands it back at its next record. Only for a writer
    whose releases of the lock are short (a local file's ``stat``, ``flock``, page-cache
    ``write``); the file writers set it. Absent: the claim is paused for the call, and
    the worker waits for the lock afterwards as any thread does.

    Optional methods ``prepare(batch)`` and ``send(batch, prepared, meanwhile=None)``,
    with an attribute ``prepare_ahead = True``: a write split in two, ``write(batch)``
    being ``send(batch, prepare(batch))``. ``prepare`` does the CPU part (encoding,
    compressing) and returns what ``send`` takes; ``send`` does the I/O and returns or
    raises as ``write`` does, and calls ``meanwhile()`` (when given; it never raises)
    once, after its request is sent and before it reads the answer. A concurrent
    writer with one write at a time then has its lane prepare the next write there, on
    the lane's thread, while the server works: its writes still go one at a time, in
    order. (A ``send`` that never calls it loses the overlap, nothing else.) A retry of
    a whole batch sends the same prepared value again; a retry of part of it prepares
    that part. What ``prepare`` raises counts as the write raising it. The HTTP writers
    do this by default.

    Optional method ``write_record(line)``: one record, without its line terminator,
    from a synchronous :class:`~kakashi.core.pipeline.Pipeline` on the calling thread
    (several threads may call it at once); it raises if the record was not written. A
    writer without it gets ``write((line,))``. The file writers append the record with
    one system call and no lock (see :class:`~kakashi.writers.file.FileWriter`).
    """

    def write(self, batch: Sequence[bytes]) -> int | None:
        """Write every record of *batch*, in order."""

    def flush(self) -> None:
        """Hand everything written so far to the operating system."""

    def close(self) -> None:
        """Flush and release the underlying resource."""


def is_concurrent(writer: Writer) -> bool:
    """Return whether *writer* declared ``concurrent = True`` (absent means ``False``).

    The one place the optional ``concurrent`` attribute of a :class:`Writer` is read.
    """
    return bool(getattr(writer, "concurrent", False))


@runtime_checkable
class Sink(Protocol):
    """What an async backend calls on the pipeline a record belongs to (``record.sink``).

    A logger stamps its route's sink on every record it captures. A worker splits each
    batch it drains into runs of records with the same sink and, for each run, calls
    :meth:`render_batch` once and hands the lines to each of :attr:`writers` (see
    :class:`Writer`). A sink is also a key of the backend's drop counts, so it must hash
    by identity (the default for a class). None of these methods may raise: they run
    on a worker, or on the caller's thread inside a log call.
    """

    @property
    def writers(self) -> Sequence[Writer]:
        """The writers every rendered batch goes to, in this order.

        The backend's ``flush`` flushes them and its ``shutdown`` flushes and closes
        them (each writer once, however many sinks share it).
        """

    @property
    def fallback_to_sync(self) -> bool:
        """Whether a record the backend cannot take (shut down) goes to :meth:`emit`.

        ``False``: it is dropped and counted. Read on the caller's thread, inside the
        log call, as ``getattr(sink, "fallback_to_sync", False)``.
        """

    def render(self, record: Record) -> bytes | None:
        """Return *record*'s line (enriched, filtered, formatted), or ``None`` if filtered.

        The backend renders its drop notices (a WARNING record) with the sink's
        ``render_notice(record)`` when it has one (Kakashi's pipelines do: enriched and
        formatted, never filtered out), else with this; a notice this filters out is
        written as plain JSON, counts included.
        """

    def render_batch(self, records: Sequence[Record]) -> tuple[Sequence[bytes], int]:
        """Render *records* in order; return a new list of lines and how many were filtered.

        The caller owns the list (the backend prepends a drop notice to it).
        """

    def emit(self, record: Record) -> None:
        """Process *record* now, on the calling thread: render it and write it.

        What the fallback path calls (see :attr:`fallback_to_sync`), and what a route
        hands records to when it is given no other entry point.
        """


@runtime_checkable
class AsyncSink(Sink, Protocol):
    """A :class:`Sink` registered with an async backend (``register_pipeline``).

    The backend's ``flush`` and ``shutdown`` reach the writers of every sink registered
    with it, and ``configure_async_backend``, replacing the process-wide backend, moves
    each of them to the new one with :meth:`use_backend`.
    """

    def use_backend(self, backend: AsyncBackend) -> None:
        """Move to *backend*: from now on every logger of this sink enqueues there."""


@runtime_checkable
class LoggerSource(Sink, Protocol):
    """What hands out loggers, and what their routes read when they are made.

    ``kakashi.get_logger(name, pipeline=source)`` returns ``source.get_logger(name)``.
    A logger's route (see ``Route`` in ``kakashi._speedups``) is made from the
    source's :attr:`min_level`, :attr:`capture_flags` and :attr:`route_emit`, and
    stamps the source as the :class:`Sink` of every record, so a logger source is a
    sink too. Loggers never call their source per record except through the entry
    point :attr:`route_emit`.
    """

    @property
    def min_level(self) -> int:
        """The level a new logger's gate starts with; lower records are not captured."""

    @property
    def capture_flags(self) -> int:
        """What loggers capture on the caller beyond the basics (``CAPTURE_*`` flags)."""

    @property
    def route_emit(self) -> Callable[[Record], None] | RecordQueue:
        """Where loggers hand each record (a callable, or an async backend's queue)."""

    def get_logger(self, name: str) -> Logger:
        """Return the logger called *name* that logs through this source (cached)."""
