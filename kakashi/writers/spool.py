"""A disk spool in front of a network writer: what the collector cannot take now is kept
in local files and delivered later, in order, also after a restart.

:class:`SpoolingWriter` wraps a network writer (an ``HttpWriter``
or any writer that reports failures with ``kakashi.writers.delivery.DeliveryError``).
While its spool is empty, a batch goes straight to the inner writer. Records the inner
writer could not deliver but that are worth retrying are appended to the spool instead of
failing; so is every batch while the spool holds anything, so that the order is kept. A
replay thread (``kakashi-spool``) delivers the spool oldest first, in batches, with
backoff while the collector is down.

The semantics, stated once (docs/shipping-spool.md says the same):

- At least once. A replayed batch is removed from the spool only after the inner writer
  delivered it: the position of the next record to replay is committed to the file
  ``offset`` (written to a temporary file, fsynced, renamed over the old one, the
  directory fsynced). A crash between the delivery and that commit replays that one batch
  again: at most ``replay_batch`` records are delivered twice.
- Durability. An appended batch is in the operating system's hands when ``write`` returns
  (it survives ``kill -9``); with ``fsync=True`` it is on the disk (it survives a power
  cut, at the cost of one fsync per spooled batch).
- Bounded. The spool's files never exceed ``max_bytes``: to make room, the oldest segment
  files are deleted and their records counted (``spool_full``). A failing disk (full,
  over quota, read-only) makes the records counted (``spool_write_failed``), reported once
  on stderr, never an exception.
- One owner. A directory is used by one writer of one process at a time (an ``flock`` on
  the file ``lock``); a second is refused with :class:`SpoolInUseError`. A forked child
  does not use its parent's spool: its writer passes batches straight to the inner writer.

The files: ``<16-digit sequence number>.spool`` segments, each a series of frames (a
4-byte big-endian length, the CRC-32 of the record, the record: records may hold any
bytes, newlines included), ``offset`` (``<segment> <byte offset>``, the next record to
replay) and ``lock``.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import inspect
import os
import random
import re
import struct
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Sequence
from typing import Any, Final

from kakashi import _errors
from kakashi._descriptors import close_owned, open_owned, owned_file
from kakashi._durations import MAX_WAIT, check_seconds
from kakashi._locks import after_fork_in_child, fork_safe_condition
from kakashi._speedups import gil_held_writes
from kakashi.typing import Writer
from kakashi.writers.delivery import DeliveryError

__all__ = ["SpoolInUseError", "SpoolingWriter"]

#: A frame's header: the record's length and its CRC-32 (a torn or damaged frame is
#: recognised, not replayed as garbage).
_FRAME: Final = struct.Struct(">II")
_SEGMENT_NAME: Final = re.compile(r"^(\d{16})\.spool$")
_OFFSET_FILE: Final = "offset"
_LOCK_FILE: Final = "lock"
#: The most bytes read from a segment at once when replaying (a batch of records).
_READ_CHUNK: Final = 1 << 20
#: The largest record a frame can hold (the length field's range).
_MAX_RECORD: Final = (1 << 32) - 1


class SpoolInUseError(RuntimeError):
    """The spool directory is held by another :class:`SpoolingWriter` (this process or
    another one): each needs a directory of its own."""


class _Segment:
    """One spool file: its sequence number, path, size in bytes and record count."""

    __slots__ = ("path", "records", "seq", "size")

    def __init__(self, seq: int, path: str, size: int, records: int) -> None:
        self.seq = seq
        self.path = path
        self.size = size
        self.records = records


class _Replay:
    """A batch read from the spool and being delivered: the segment it came from, the
    byte offset after it, how many records it was read with and those still to deliver."""

    __slots__ = ("end", "lines", "segment", "total")

    def __init__(self, segment: _Segment, end: int, lines: list[bytes]) -> None:
        self.segment = segment
        self.end = end
        self.total = len(lines)
        self.lines: Sequence[bytes] = lines


def _frame(line: bytes) -> bytes:
    return _FRAME.pack(len(line), zlib.crc32(line)) + line


def _parse(data: bytes, limit: int) -> tuple[list[bytes], int, bool]:
    """Up to *limit* whole frames from the start of *data*: the records, the bytes they
    take, and whether a damaged frame (CRC mismatch) stopped the parse."""
    records: list[bytes] = []
    position = 0
    header = _FRAME.size
    while len(records) < limit and position + header <= len(data):
        length, crc = _FRAME.unpack_from(data, position)
        end = position + header + length
        if end > len(data):
            break
        record = data[position + header : end]
        if zlib.crc32(record) != crc:
            return records, position, True
        records.append(record)
        position = end
    return records, position, False


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_directory(directory: str, hold: bool = False) -> None:
    fd = open_owned(directory, os.O_RDONLY, hold=hold)
    try:
        os.fsync(fd)
    finally:
        close_owned(fd)


class SpoolingWriter:
    """Deliver through *inner*; keep on disk, in *directory*, what it cannot take now.

    See the module description for the semantics. Wrap the network writer and give this
    writer to the pipeline in its place::

        SpoolingWriter(HttpWriter("https://logs.example/ingest"), "/var/spool/myapp")

    Args:
        inner: the network writer that delivers (its ``write`` reports failures with
            ``DeliveryError``, or any exception with an
            optional ``written`` count).
        directory: the spool directory (created if missing), one per process.
        max_bytes: the most bytes the spool files may take; the oldest are deleted beyond.
        segment_bytes: the size at which a spool file is closed and the next one started
            (the unit in which the oldest records are deleted when the spool is full).
        replay_batch: the most records delivered from the spool in one ``inner.write``
            (also the bound on records delivered twice after a crash).
        retry_delay: the first wait, in seconds, after a failed replay; it doubles with
            each failure (times 0.5 to 1.5), up to *max_delay*. A server's
            ``Retry-After`` is honoured.
        max_delay: the longest wait between two replay attempts, in seconds.
        flush_timeout: how long :meth:`flush` waits for the spool to be delivered.
        fsync: fsync each spooled batch (survives a power cut, not only a crash).

    Raises:
        TypeError: *inner* is not a writer.
        ValueError: a size or duration out of range (the message names the parameter).
        SpoolInUseError: another writer holds *directory*.
        OSError: *directory* cannot be created or read.
    """

    #: Delivered off the workers' turn, like the network writer it wraps.
    concurrent = True

    @property
    def max_batch_records(self) -> int:
        """The wrapped writer's ``max_batch_records`` (0 when it has none): batches
        waiting for this writer are joined as they would be for the wrapped one (each
        goes to it, or to the spool, record by record as before). Its ``max_in_flight``
        is not passed on: the spool's replay keeps one write at a time, in order."""
        value = getattr(self.inner, "max_batch_records", 0)
        return value if type(value) is int and value >= 0 else 0

    def __init__(
        self,
        inner: Writer,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = 256 * 1024 * 1024,
        segment_bytes: int = 8 * 1024 * 1024,
        replay_batch: int = 500,
        retry_delay: float = 0.5,
        max_delay: float = 30.0,
        flush_timeout: float = 1.0,
        fsync: bool = False,
    ) -> None:
        if not all(callable(getattr(inner, name, None)) for name in ("write", "flush", "close")):
            raise TypeError(f"inner must be a writer (write, flush, close), got {inner!r}")
        for name, value, low in (
            ("max_bytes", max_bytes, 1024),
            ("segment_bytes", segment_bytes, 64),
            ("replay_batch", replay_batch, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if segment_bytes > max_bytes:
            raise ValueError(
                f"segment_bytes must be at most max_bytes ({max_bytes}), got {segment_bytes}"
            )
        self.inner = inner
        self.directory = os.path.abspath(os.fspath(directory))
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.replay_batch = replay_batch
        self.retry_delay = check_seconds("retry_delay", retry_delay, at_most=MAX_WAIT)
        self.max_delay = check_seconds("max_delay", max_delay, at_most=MAX_WAIT)
        self.flush_timeout = check_seconds(
            "flush_timeout", flush_timeout, at_most=MAX_WAIT, zero=True
        )
        self.fsync = bool(fsync)
        os.makedirs(self.directory, exist_ok=True)
        self._lock_fd = self._take_lock()
        # Whether the spool's files are on a local filesystem, opened holding the GIL
        # (see kakashi._descriptors).
        self._hold = gil_held_writes(self._lock_fd)
        self._cond = fork_safe_condition()
        self._reset_counts()
        self._segments: collections.deque[_Segment] = collections.deque()
        self._write_fd = -1  # open on the newest segment while appending to it
        self._read_fd = -1
        self._read_seq = -1  # the segment _read_fd is open on
        self._read_offset = 0  # in the oldest segment: the next record to replay
        self._read_records = 0  # records of the oldest segment before _read_offset
        self._next_seq = 0
        self._records = 0  # records spooled and not yet delivered or dropped
        self._bytes = 0
        self._thread: threading.Thread | None = None
        self._not_before = 0.0  # no replay attempt before this monotonic time
        self._hurry = False  # a flush asks for an attempt now
        self._failures = 0  # replay attempts that failed (a flush stops waiting at one)
        self._closed = False
        self._owner = True  # False in a forked child, and after close
        try:
            self._open()
        except BaseException:
            fd, self._lock_fd = self._lock_fd, -1
            close_owned(fd)
            raise
        _writers.add(self)
        if self._records:
            with self._cond:
                self._start_replay()

    # -- the lock and the files -----------------------------------------------------------

    def _take_lock(self) -> int:
        import fcntl

        path = os.path.join(self.directory, _LOCK_FILE)
        fd = open_owned(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            close_owned(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise SpoolInUseError(
                    f"spool directory {self.directory!r} is in use by another "
                    f"SpoolingWriter (process {holder}); give each process its own directory"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def _segment_path(self, seq: int) -> str:
        return os.path.join(self.directory, f"{seq:016d}.spool")

    def _open(self) -> None:
        """Read what a previous process left: the segments and the replay position."""
        saved_seq, saved_offset = self._load_offset()
        seqs = sorted(
            int(match.group(1))
            for name in os.listdir(self.directory)
            if (match := _SEGMENT_NAME.match(name))
        )
        self._next_seq = max(saved_seq, seqs[-1] + 1 if seqs else 0)
        for seq in seqs:
            path = self._segment_path(seq)
            if seq < saved_seq:  # replayed before a crash kept it from being deleted
                self._unlink(path)
                continue
            offset = saved_offset if seq == saved_seq else 0
            records, size, before = self._scan(path, offset)
            if records == 0:
                self._unlink(path)
                continue
            segment = _Segment(seq, path, size, records)
            if not self._segments:
                self._read_offset, self._read_records = (offset, before) if before >= 0 else (0, 0)
                if before < 0:
                    _errors.report(
                        f"spool {self.directory} offset position",
                        detail=f"{offset} is not a record's start in {path}; that file is "
                        "replayed from its start (its records may be delivered twice)",
                    )
            self._segments.append(segment)
            self._records += records
            self._bytes += size
        self._records -= self._read_records  # replayed before, by the last owner
        self.recovered = self._records

    def _load_offset(self) -> tuple[int, int]:
        try:
            offset_file = os.path.join(self.directory, _OFFSET_FILE)
            with owned_file(offset_file, "rb", hold=self._hold) as file:
                seq, offset = file.read(64).split()
                return int(seq), int(offset)
        except FileNotFoundError:
            return 0, 0
        except ValueError:
            _errors.report(
                f"spool {self.directory} offset file",
                detail="unreadable; the spool is replayed from its oldest record",
            )
            return 0, 0

    def _scan(self, path: str, offset: int) -> tuple[int, int, int]:
        """Check the frames of segment *path*: return its record count, its size once a
        damaged tail is cut off (counted), and the records before byte *offset* (-1 when
        *offset* is not the start of a record: the segment is then replayed whole)."""
        with owned_file(path, "r+b", hold=self._hold) as file:
            data = file.read()
            records, size, damaged = _parse(data, len(data) + 1)
            if size < len(data):
                file.truncate(size)
                reason = "damaged record" if damaged else "torn last record"
                _errors.report(
                    f"spool {self.directory} damaged file",
                    detail=f"{path}: a {reason}; {len(data) - size} bytes cut off",
                )
                self._count_dropped("spool_corrupt", 1)  # how many it held is unknowable
        before, position = 0, 0
        while position < offset and before < len(records):
            position += _FRAME.size + len(records[before])
            before += 1
        return len(records), size, before if position == offset else -1

    def _unlink(self, path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            _errors.report(f"spool {self.directory} delete", exc)

    def _save_offset(self) -> None:
        """Commit the replay position durably (tmp file, fsync, rename, fsync directory)."""
        if self._segments:
            seq, offset = self._segments[0].seq, self._read_offset
        else:
            seq, offset = self._next_seq, 0
        path = os.path.join(self.directory, _OFFSET_FILE)
        temporary = f"{path}.tmp"
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
            fd = open_owned(temporary, flags, 0o600, hold=self._hold)
            try:
                _write_all(fd, f"{seq} {offset}\n".encode())
                os.fsync(fd)
            finally:
                close_owned(fd)
            os.replace(temporary, path)
            _fsync_directory(self.directory, self._hold)
        except OSError as exc:
            # The batch stays uncommitted on disk: replayed once more after a restart.
            _errors.report(f"spool {self.directory} offset", exc)

    # -- counting ---------------------------------------------------------------------------

    def _reset_counts(self) -> None:
        self.delivered = 0
        self.spooled = 0
        self.replayed = 0
        self.recovered = 0
        self.dropped_by_reason: collections.Counter[str] = collections.Counter()

    def _count_dropped(self, reason: str, count: int) -> None:
        if count > 0:
            self.dropped_by_reason[reason] += count

    def delivery_stats(self) -> dict[str, int]:
        """What became of the records, as ints.

        ``delivered``: records delivered straight through; ``spooled``: records handed to
        the spool; ``recovered``: records found in the spool when it was opened;
        ``replayed``: records delivered from the spool; ``spool_dropped``: records the
        spool lost, also by reason as ``spool_dropped:<reason>``; ``spool_records`` and
        ``spool_bytes``: what the spool holds now. At every instant
        ``recovered + spooled == replayed + spool_dropped + spool_records``, leaving out
        ``spool_dropped:spool_corrupt``: a damaged tail found when the spool was opened
        counts 1 there, though it was never part of ``recovered``.
        """
        with self._cond:
            stats = {
                "delivered": self.delivered,
                "spooled": self.spooled,
                "recovered": self.recovered,
                "replayed": self.replayed,
                "spool_dropped": sum(self.dropped_by_reason.values()),
                "spool_records": self._records,
                "spool_bytes": self._bytes,
            }
            for reason, count in sorted(self.dropped_by_reason.items()):
                stats[f"spool_dropped:{reason}"] = count
        return stats

    # -- writing ----------------------------------------------------------------------------

    def write(self, batch: Sequence[bytes]) -> int | None:
        """Deliver *batch* through the inner writer, or append it to the spool.

        Straight through while the spool is empty; records the inner writer reports as
        worth retrying (and, for any other exception, those from its ``written`` on) are
        spooled. While the spool holds records, the batch is spooled behind them.

        Records the inner writer dropped (no retry can help them) are not spooled: a
        ``DeliveryError`` carrying only those is raised, for the backend to count them
        under their reasons. Nothing else is raised.
        """
        if not batch:
            return None
        inner = self.inner
        return self._through(batch, lambda: inner.write(batch))

    @property
    def prepare_ahead(self) -> bool:
        """Whether the wrapped writer prepares its next batch while a request waits for
        its answer (its ``prepare_ahead``, with ``prepare`` and a ``send`` taking
        ``meanwhile``): then so does this one, handing its batches to the wrapped
        writer's ``send`` (those it spools instead leave their prepared body unused; the
        replay writes with ``write``)."""
        inner = self.inner
        send = getattr(inner, "send", None)
        if getattr(inner, "prepare_ahead", False) is not True or not callable(send):
            return False
        try:
            takes = "meanwhile" in inspect.signature(send).parameters
        except (TypeError, ValueError):  # no signature to read
            takes = False
        return takes and callable(getattr(inner, "prepare", None))

    def prepare(self, batch: Sequence[bytes]) -> Any:
        """The wrapped writer's ``prepare(batch)`` (see :attr:`prepare_ahead`)."""
        inner: Any = self.inner
        return inner.prepare(batch)

    def send(
        self,
        batch: Sequence[bytes],
        prepared: Any,
        meanwhile: Callable[[], object] | None = None,
    ) -> int | None:
        """:meth:`write` with *batch* made ready by :meth:`prepare` (*prepared*), through
        the wrapped writer's ``send`` (given *meanwhile*)."""
        if not batch:
            return None
        inner: Any = self.inner
        return self._through(batch, lambda: inner.send(batch, prepared, meanwhile=meanwhile))

    def _through(self, batch: Sequence[bytes], deliver: Callable[[], int | None]) -> int | None:
        """:meth:`write` of *batch*, which ``deliver()`` delivers through the wrapped
        writer (while the spool is empty)."""
        with self._cond:
            direct = not self._owner or self._records == 0
        if not direct:
            self.spool(batch)
            return None
        try:
            result = deliver()
        except DeliveryError as exc:
            if not self._owner:
                raise
            size = len(batch)
            retry, dropped = exc.within(size)
            keep = [batch[index] for index in retry]
            self._spool_failed(keep, exc, size - len(keep) - len(dropped))
            if dropped:
                reasons = collections.Counter(dropped.values())
                raise DeliveryError(
                    reasons.most_common(1)[0][0], dropped=dropped, detail=exc.detail
                ) from exc
            return None
        except Exception as exc:
            if not self._owner:
                raise
            written = getattr(exc, "written", 0)
            written = written if type(written) is int and 0 <= written < len(batch) else 0
            self._spool_failed(batch[written:], exc, written)
            return None
        if self._owner:
            with self._cond:
                self.delivered += len(batch) - (result if type(result) is int else 0)
        return result

    def _spool_failed(self, lines: Sequence[bytes], exc: Exception, delivered: int) -> None:
        """Spool *lines*, which the inner writer failed to deliver with *exc*; the replay
        waits the first backoff (or the server's ``Retry-After``) before trying again."""
        with self._cond:
            self.delivered += delivered
            if lines:
                self._not_before = max(self._not_before, time.monotonic() + self._backoff(1, exc))
        if lines:
            self.spool(lines)

    def spool(self, lines: Sequence[bytes]) -> int:
        """Append *lines* to the spool, behind what it holds, for the replay thread.

        What the backend calls at shutdown for records it could not deliver in time.
        Returns how many it kept, the newest (0 for a closed spool, a forked child's
        copy or a failed write; fewer than given for a batch larger than the whole
        spool), so that the backend counts the others as dropped too rather than as
        spooled. Records that cannot be kept are counted (``spool_dropped``). Raises
        only an interrupt (``KeyboardInterrupt``, a signal handler's ``SystemExit``)
        that lands in the write, after cutting off what it wrote and counting the batch.
        """
        if not lines:
            return 0
        frames = [_frame(bytes(line)) for line in lines]
        with self._cond:
            self.spooled += len(frames)
            if not self._owner:
                reason = "spool_closed" if self._closed else "forked_child"
                self._count_dropped(reason, len(frames))
                _errors.report(
                    f"spool {self.directory} not the owner",
                    detail=f"records handed to a spool that is not this process's ({reason}) "
                    "are dropped and counted",
                )
                return 0
            size = sum(map(len, frames))
            first = 0
            while size > self.max_bytes:  # one batch larger than the whole spool
                size -= len(frames[first])
                first += 1
            if first:
                self._count_dropped("spool_full", first)
                _errors.report(
                    f"spool {self.directory} oversize batch",
                    detail=f"a batch larger than max_bytes ({self.max_bytes}): its oldest "
                    "records are dropped and counted",
                )
            if first == len(frames):
                return 0
            while self._bytes + size > self.max_bytes and self._segments:
                self._discard_oldest()
            try:
                fd = self._writable()
                before = self._segments[-1].size
                try:
                    _write_all(fd, b"".join(frames[first:]))
                    if self.fsync:
                        os.fsync(fd)
                except BaseException:  # an interrupt too: no torn frame left behind
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, before)
                    raise
            except BaseException as exc:
                self._count_dropped("spool_write_failed", len(frames) - first)
                if not isinstance(exc, OSError):
                    raise  # an interrupt, counted: it goes on up
                _errors.report(f"spool {self.directory} write", exc)
                return 0
            segment = self._segments[-1]
            segment.size += size
            segment.records += len(frames) - first
            self._records += len(frames) - first
            self._bytes += size
            self._start_replay()
            self._cond.notify_all()
            return len(frames) - first

    def _writable(self) -> int:
        """The descriptor of the segment to append to; a new one once the newest is full."""
        if self._write_fd >= 0 and self._segments[-1].size < self.segment_bytes:
            return self._write_fd
        self._close_write()
        seq = self._next_seq
        path = self._segment_path(seq)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        self._write_fd = open_owned(path, flags, 0o600, hold=self._hold)
        self._next_seq = seq + 1
        self._segments.append(_Segment(seq, path, 0, 0))
        if self.fsync:
            _fsync_directory(self.directory, self._hold)
        return self._write_fd

    def _close_write(self) -> None:
        fd, self._write_fd = self._write_fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                close_owned(fd)

    def _close_read(self) -> None:
        fd, self._read_fd = self._read_fd, -1
        self._read_seq = -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                close_owned(fd)

    def _discard_oldest(self) -> None:
        """Delete the oldest segment to make room; count its records not yet replayed
        (those of a batch being delivered are not: they are still delivered or counted)."""
        segment = self._segments.popleft()
        lost = segment.records - self._read_records
        replay = self._in_flight
        if replay is not None and replay.segment is segment:
            lost -= replay.total  # read already: the replay thread settles them
        self._count_dropped("spool_full", lost)
        self._records -= lost
        self._bytes -= segment.size
        self._read_offset = self._read_records = 0
        if self._read_seq == segment.seq:
            self._close_read()
        if not self._segments:
            self._close_write()
        self._save_offset()
        self._unlink(segment.path)
        _errors.report(
            f"spool {self.directory} size cap",
            detail=f"the spool is full (max_bytes={self.max_bytes}): its oldest records are "
            "dropped and counted",
        )

    # -- replaying --------------------------------------------------------------------------

    _in_flight: _Replay | None = None

    def _start_replay(self) -> None:
        """Start the replay thread if it is not running (under the lock)."""
        if self._thread is not None or self._closed or not self._owner:
            return
        thread = threading.Thread(target=self._replay_loop, name="kakashi-spool", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # interpreter exit: the records stay on disk for the next run
            return
        self._thread = thread

    def _backoff(self, tries: int, exc: BaseException | None) -> float:
        # Spread within the cap: past it, processes that failed together do not all
        # retry together.
        delay = min(self.max_delay, self.retry_delay * 2.0 ** min(tries - 1, 60))
        delay *= random.uniform(0.5, 1.0)
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, (int, float)) and retry_after > delay:
            delay = float(retry_after)
        return delay

    def _stopped(self) -> bool:
        return self._closed or not self._owner

    def _replay_loop(self) -> None:
        try:
            self._replay()
        except BaseException as exc:  # a bug: reported; the records stay on disk
            _errors.report(f"spool {self.directory} replay thread", exc)
            with self._cond:
                self._thread = None

    def _replay(self) -> None:
        tries = 0
        while True:
            with self._cond:
                replay = self._in_flight
                while True:
                    if self._stopped() or (replay is None and not self._records):
                        self._thread = None
                        return
                    wait = self._not_before - time.monotonic()
                    if wait <= 0 or self._hurry:
                        break
                    self._cond.wait(wait)
                self._hurry = False
                if replay is None:
                    try:
                        replay = self._in_flight = self._read_batch()
                    except OSError as exc:
                        _errors.report(f"spool {self.directory} read", exc)
                        self._failures += 1
                        self._cond.notify_all()
                        tries += 1
                        self._not_before = time.monotonic() + self._backoff(tries, None)
                        continue
                    if replay is None:  # nothing to read after all
                        self._thread = None
                        return
            lines = replay.lines
            failure: Exception | None = None
            lost = 0
            try:
                result = self.inner.write(lines)
                # An int: records the writer could not take and gave up on itself.
                lost = result if type(result) is int and 0 < result <= len(lines) else 0
                retry: list[int] = []
                dropped: dict[int, str] = {}
            except DeliveryError as exc:
                failure = exc
                retry, dropped = exc.within(len(lines))
            except Exception as exc:
                failure = exc
                written = getattr(exc, "written", 0)
                written = written if type(written) is int and 0 <= written < len(lines) else 0
                retry, dropped = list(range(written, len(lines))), {}
            if failure is not None:
                _errors.report(f"spool {self.directory} replay", failure)
            with self._cond:
                self.replayed += len(lines) - len(retry) - len(dropped) - lost
                for why in dropped.values():
                    self._count_dropped(why, 1)
                self._count_dropped("writer_dropped", lost)
                self._records -= len(lines) - len(retry)
                if self._stopped():
                    # Left uncommitted on disk: the next owner replays the batch once more
                    # (a batch whose file was deleted to make room is lost: counted).
                    if retry and not self._holds(replay.segment):
                        self._count_dropped("spool_full", len(retry))
                        self._records -= len(retry)
                    self._thread = None
                    return
                if retry:
                    replay.lines = [lines[index] for index in retry]
                    self._failures += 1
                    self._cond.notify_all()
                    tries += 1
                    self._not_before = time.monotonic() + self._backoff(tries, failure)
                    continue
                self._in_flight = None
                tries = 0
                self._not_before = 0.0
                self._commit(replay)
                self._cond.notify_all()

    def _read_batch(self) -> _Replay | None:
        """The next records of the oldest segment (under the lock); a segment read to its
        end is deleted, a damaged one is counted and deleted."""
        while self._segments:
            segment = self._segments[0]
            if self._read_offset >= segment.size:
                if len(self._segments) == 1:
                    return None  # the newest, appended to: read to its end for now
                self._finish_oldest()
                continue
            if self._read_seq != segment.seq:
                self._close_read()
                self._read_fd = open_owned(
                    segment.path, os.O_RDONLY | os.O_CLOEXEC, hold=self._hold
                )
                self._read_seq = segment.seq
            start = self._read_offset
            data = os.pread(self._read_fd, min(segment.size - start, _READ_CHUNK), start)
            lines, used, damaged = _parse(data, self.replay_batch)
            if not lines and not damaged and len(data) >= _FRAME.size:
                length = _FRAME.unpack_from(data)[0]  # one record larger than a chunk
                data = os.pread(self._read_fd, _FRAME.size + length, start)
                lines, used, damaged = _parse(data, 1)
            if lines:
                return _Replay(segment, start + used, lines)
            _errors.report(
                f"spool {self.directory} damaged record",
                detail=f"{segment.path}: a damaged record; the rest of that file is dropped",
            )
            lost = segment.records - self._read_records
            self._count_dropped("spool_corrupt", lost)
            self._records -= lost
            self._finish_oldest()
        return None

    def _commit(self, replay: _Replay) -> None:
        """*replay* was delivered: move the replay position past it (durably)."""
        segment = replay.segment
        if not self._holds(segment):
            return  # its segment was deleted to make room meanwhile: nothing to move
        self._read_offset = replay.end
        self._read_records += replay.total
        if self._read_offset >= segment.size and (len(self._segments) > 1 or not self._records):
            self._finish_oldest()
        else:
            self._save_offset()

    def _holds(self, segment: _Segment) -> bool:
        """Whether *segment* is still the oldest (not deleted to make room)."""
        return bool(self._segments) and self._segments[0] is segment

    def _finish_oldest(self) -> None:
        """The oldest segment is replayed (or given up): commit, then delete it."""
        segment = self._segments.popleft()
        self._bytes -= segment.size
        self._read_offset = self._read_records = 0
        if self._read_seq == segment.seq:
            self._close_read()
        if not self._segments:
            self._close_write()
        self._save_offset()
        self._unlink(segment.path)

    # -- flush, close, fork ---------------------------------------------------------------

    def flush(self) -> None:
        """Ask for a replay attempt now and wait, up to ``flush_timeout``, until the
        spool is empty or an attempt failed (the collector is still down: waiting longer
        would not help); then flush the inner writer."""
        deadline = time.monotonic() + self.flush_timeout
        with self._cond:
            if self._owner and self._records:
                failures = self._failures
                self._hurry = True
                self._start_replay()
                self._cond.notify_all()
                while self._records and self._thread and self._failures == failures:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
        self.inner.flush()

    def close(self) -> None:
        """Stop the replay thread (waiting up to ``flush_timeout`` for the batch it is
        delivering), close the inner writer and release the directory. The spool files
        stay: the next writer on this directory replays them."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            owner, self._owner = self._owner, False
            thread = self._thread
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.flush_timeout)
        with self._cond:
            self._close_write()
            self._close_read()
            if owner and self._lock_fd >= 0:
                close_owned(self._lock_fd)  # releases the flock
            self._lock_fd = -1
            self._in_flight = None
        self.inner.close()

    def __del__(self, _close: Any = close_owned) -> None:
        # Dropped without close() (a replay thread keeps it alive while it has records):
        # its descriptors go, the directory's lock with them, so another writer of this
        # process can take the directory; what it spooled stays there for that one.
        # (_close kept: module globals may be gone at exit.)
        for name in ("_write_fd", "_read_fd", "_lock_fd"):
            fd = getattr(self, name, -1)
            if fd >= 0:
                setattr(self, name, -1)
                try:
                    _close(fd)
                except OSError:
                    pass

    def _after_fork_in_child(self) -> None:
        # The parent owns the directory: the child neither replays nor appends to it. Its
        # copies of the descriptors were closed without unlocking (an flock belongs to the
        # open file, which the parent still holds) by kakashi._descriptors: forgotten here.
        self._write_fd = self._read_fd = self._lock_fd = -1
        self._read_seq = -1
        self._owner = False
        self._thread = None
        self._in_flight = None
        self._segments = collections.deque()
        self._records = self._bytes = 0
        self._reset_counts()

    def __repr__(self) -> str:
        return f"<SpoolingWriter {self.directory} -> {self.inner!r}>"


_writers: weakref.WeakSet[SpoolingWriter] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for writer in list(_writers):
        writer._after_fork_in_child()


after_fork_in_child(_after_fork_in_child)
