"""A rotating file writer: by size, by time or both, with retention and compression.

The seams are the standard library's: :meth:`RotatingFileWriter.should_rollover` and
:meth:`RotatingFileWriter.do_rollover`, and the ``namer``/``rotator`` hooks. Rotated files
are compressed on a background thread (zstd by default, gzip as an option), so neither the
application nor the write path waits for compression. A record is never split across two
files: a batch is cut between records, and a record larger than ``max_bytes`` goes alone
into a fresh file.

Any number of writers, in any number of processes, may write and rotate the same file
(gunicorn-style workers), with compression and retention on, and each record lands once:

- every batch is written, and every rotation, shift, compression swap and retention pass
  is made, under one exclusive ``flock`` on the file's directory, which nobody can delete
  while it is held (see ``kakashi._directory_lock``), then on ``<path>.lock`` (for
  older versions and ``kakashi view --follow``; alone where a directory cannot be
  locked); a writer checks under that lock that its path still names its file (another
  process may have rotated it), so no batch lands in a file that was rotated away and no
  rotation happens twice;
- a rotated file is compressed in the background without the lock (into a temporary file
  named after the process, so two compressors never share one); the lock is taken again
  only to swap: the file is found by its inode, wherever shifting moved it meanwhile, the
  compressed copy takes its name plus ``.zst`` (or ``.gz``) and the original is removed;
- a crash at any point leaves each record readable once: between the swap's rename and
  its unlink, the reader (:mod:`kakashi.writers.naming`) prefers the complete compressed
  copy, and the next retention pass removes the original; a temporary file left by a dead
  process is removed; a record torn by a crash is cut off by the next writer (see
  :class:`~kakashi.writers.file.FileWriter`).

A forked child shares no lock with its parent: it reopens the file and the lock file on
its first write, and the parent's pending compressions stay the parent's.

A path ending in ``.zst`` is written compressed from the start (one frame per batch, see
:mod:`kakashi.writers.zstd`), and its rotated files need no further compression.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import gzip
import itertools
import os
import queue
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import zstandard

from kakashi import _errors
from kakashi._descriptors import close_owned, open_owned, owned_file
from kakashi._directory_lock import DirectoryLock, DirectoryLockUnsupported, directory_lock
from kakashi._locks import fork_safe_lock
from kakashi._platform import posix_module
from kakashi._speedups import unclaimed
from kakashi._turns import take_exclusive
from kakashi.writers import naming as names
from kakashi.writers.file import FileWriter, PartialWriteError, newline_joined
from kakashi.writers.zstd import tail_frames_end

__all__ = ["RotatingFileWriter", "rotating_file_writer"]

_WHEN = re.compile(r"(hourly|midnight|daily(?:@(\d\d):(\d\d))?|weekly|w([0-6])|monthly)")
_WHEN_HELP = (
    "'hourly', 'midnight', 'daily', 'daily@HH:MM', 'weekly', 'w0'..'w6', 'monthly', "
    "or an interval (a timedelta or a number of seconds)"
)


class _Schedule:
    """When a file's period ends: a calendar boundary, or the end of an interval.

    Calendar boundaries are wall-clock times in the schedule's zone (UTC, or local time
    read through the operating system's zone rules): each happens once a day (or week or
    month), on the first pass of a repeated hour when the clocks go back; a time the
    clocks skip when they go forward is read with the offset before the change (02:30 is
    03:30 summer time). Hourly boundaries are every real hour, at the zone's full hours
    and at each change of offset. Intervals are counted from the epoch in the zone.
    """

    __slots__ = ("hour", "kind", "minute", "seconds", "weekday")

    def __init__(self, when: object) -> None:
        self.hour = self.minute = self.weekday = 0
        self.seconds = 0.0
        if isinstance(when, dt.timedelta):
            when = when.total_seconds()
        if isinstance(when, (int, float)) and not isinstance(when, bool):
            if not 0 < when < float("inf"):
                raise ValueError(f"when must be a positive interval, got {when!r}")
            self.kind, self.seconds = "interval", float(when)
            return
        match = _WHEN.fullmatch(when.strip().lower()) if isinstance(when, str) else None
        if match is None:
            raise ValueError(f"when must be {_WHEN_HELP}, got {when!r}")
        kind, hour, minute, weekday = match.groups()
        if kind.startswith(("midnight", "daily")):
            self.kind = "daily"
            self.hour, self.minute = int(hour or 0), int(minute or 0)
            if self.hour > 23 or self.minute > 59:
                raise ValueError(f"when={when!r}: no such time of day")
        elif kind.startswith("w"):
            self.kind, self.weekday = "weekly", int(weekday or 0)
        else:
            self.kind = kind  # hourly, monthly

    @property
    def stamp_format(self) -> str:
        """How a timestamped name writes the time a file starts."""
        if self.kind == "hourly":
            return "%Y-%m-%dT%H"
        return "%Y-%m-%dT%H-%M-%S" if self.kind == "interval" else "%Y-%m-%d"

    def next_after(self, start: float, utc: bool) -> float:
        """The end of the period holding the time *start* (seconds since the epoch)."""
        if self.kind == "interval":
            # Periods counted from the epoch in the schedule's zone, so every process (and
            # every run of a short command) agrees on them, and an interval that divides a
            # day starts each day at midnight.
            offset = 0 if utc else time.localtime(start).tm_gmtoff
            end = ((start + offset) // self.seconds + 1) * self.seconds - offset
            return end if end > start else end + self.seconds
        # A naive local time carries its fold (the first or second pass of a repeated
        # hour), and .timestamp() reads it back through the zone's rules.
        current = dt.datetime.fromtimestamp(start, dt.timezone.utc if utc else None)
        if self.kind == "hourly":
            return _next_hour(start) if not utc else (start // 3600 + 1) * 3600
        midnight = current.replace(hour=0, minute=0, second=0, microsecond=0, fold=0)
        if self.kind == "daily":
            at = midnight.replace(hour=self.hour, minute=self.minute)
            if at.timestamp() <= start:
                at += dt.timedelta(days=1)
            return at.timestamp()
        if self.kind == "weekly":
            days = (self.weekday - midnight.weekday()) % 7 or 7
            return (midnight + dt.timedelta(days=days)).timestamp()
        first = midnight.replace(day=1)  # monthly
        if first.month == 12:
            return first.replace(year=first.year + 1, month=1).timestamp()
        return first.replace(month=first.month + 1).timestamp()


def _next_hour(start: float) -> float:
    """The first moment after *start* when the local clock reads a full hour or changes
    its offset: every real hour, the repeated hour (or half hour, in Lord Howe) of the
    night the clocks go back a file of its own, and a file begun just after a gap ends at
    the next full hour (one wall-clock hour later is two real hours, or none, or a half).

    Offsets, and the moments they change, are whole quarter hours of UTC, so the quarter
    hours after *start* are the only candidates.
    """
    offset = time.localtime(start).tm_gmtoff
    moment = (start // 900 + 1) * 900
    for _ in range(12):
        local = time.localtime(moment)
        if (local.tm_min, local.tm_sec) == (0, 0) or local.tm_gmtoff != offset:
            return moment
        moment += 900
    return start + 3600  # a zone with an offset in odd minutes (history only)


class _Job:
    """A rotated file to compress (or, with no file, a retention pass)."""

    __slots__ = ("inode", "path")

    def __init__(self, path: Path | None, inode: tuple[int, int] | None = None) -> None:
        self.path = path
        self.inode = inode


_partial_numbers = itertools.count()


def _inode(info: os.stat_result) -> tuple[int, int]:
    return (info.st_dev, info.st_ino)


def _partial_of(name: str) -> tuple[str, int] | None:
    """For a compression's temporary file ``<target>.<pid>-<n>.partial`` (as
    :meth:`RotatingFileWriter._compress` names it): the target's name and the pid."""
    if not name.endswith(".partial"):
        return None
    target, _, owner = name[: -len(".partial")].rpartition(".")
    pid = owner.partition("-")[0]
    return (target, int(pid)) if pid.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RotatingFileWriter(FileWriter):
    """Append to *path*, rotating it by size and/or time.

    Args:
        path: the active file. Ending in ``.zst``, it is written as zstd frames.
        max_bytes: rotate before the file would exceed this many bytes.
        when: rotate on a schedule (any case): ``"hourly"``, ``"midnight"`` (same as
            ``"daily"``), ``"daily@HH:MM"``, ``"weekly"`` (Monday 00:00), ``"w0"``..``"w6"``
            (that weekday, Monday = 0, at 00:00), ``"monthly"`` (the 1st at 00:00), or an
            interval (a :class:`~datetime.timedelta` or seconds), its periods counted from
            the epoch in the schedule's zone (15 minutes: at :00, :15, :30 and :45). A
            file that has records when the writer opens it started at its last
            modification (as in ``logging.handlers``): one left by an earlier period
            (a process that ran before, a short-lived command) is rotated at the first
            write.
        utc: read the schedule in UTC (``False``: local time; a day then has 23 or 25
            hours when the clocks change, and ``daily@HH:MM`` still rotates once).
        naming: ``"numbered"`` (``app.log.1`` is the newest) or ``"timestamped"``
            (``app.2026-11-27.log``; hourly files carry the hour, files rotated by size or
            an interval the time; in local time, a stamp with a time of day carries the
            UTC offset too: ``app.2026-11-01T01-05-00-0500.log``). Rotated files are
            ordered, kept and deleted by the moment their stamps name, not by their
            letters (see :mod:`kakashi.writers.naming`).
        backup_count: keep at most this many rotated files (``None``: no limit). With
            ``naming="numbered"`` a rotation renames every file it keeps (``.1`` becomes
            ``.2``, and so on), so an unlimited numbered set makes each rotation slower
            than the last: set a limit, or name files ``"timestamped"``, which are
            never renamed.
        max_age: delete rotated files older than this many seconds (or a timedelta).
        compression: ``"zstd"`` (default), ``"gzip"`` or ``None`` for rotated files.
        level: the zstd level for compression and for a ``.zst`` active file.
        namer: ``namer(default_name) -> name`` (a str or a path) for a rotated file, as
            in :mod:`logging` (a subclass may define a ``namer`` method instead). The names
            it gives are shifted, kept or deleted by ``backup_count`` and listed like the
            default ones.
        rotator: ``rotator(source, dest)`` moves the active file (default ``os.rename``;
            a subclass may define a ``rotator`` method instead).
        mode: permission bits for new files.
        fsync: ``fsync`` on every flush.
        lock_timeout: the longest a write waits for another process's lock, in seconds
            (then :class:`TimeoutError`; see :class:`~kakashi.writers.file.FileWriter`).
        clock: the time source (seconds since the epoch), for tests.

    Raises:
        ValueError: a non-positive size, an unknown schedule, naming or compression.
        TypeError: a hook that is not callable.
        kakashi.UnsupportedPlatformError: the platform has no ``fcntl`` (Windows).
    """

    #: ``namer(default_name) -> name``: a hook, or a method of a subclass (see the class).
    namer: Callable[[str], str | os.PathLike[str]] | None = None
    #: ``rotator(source, dest)``: a hook, or a method of a subclass (see the class).
    rotator: Callable[[str, str], Any] | None = None

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int | None = None,
        when: str | float | dt.timedelta | None = None,
        utc: bool = True,
        naming: str = "numbered",
        backup_count: int | None = None,
        max_age: float | dt.timedelta | None = None,
        compression: str | None = "zstd",
        level: int = 3,
        namer: Callable[[str], str | os.PathLike[str]] | None = None,
        rotator: Callable[[str, str], Any] | None = None,
        mode: int = 0o644,
        fsync: bool = False,
        lock_timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_bytes is not None and (
            isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1
        ):
            raise ValueError(f"max_bytes must be a positive int or None, got {max_bytes!r}")
        schedule = None if when is None else _Schedule(when)
        if naming not in ("numbered", "timestamped"):
            raise ValueError(f"naming must be 'numbered' or 'timestamped', got {naming!r}")
        if backup_count is not None and (not isinstance(backup_count, int) or backup_count < 0):
            raise ValueError(f"backup_count must be an int >= 0 or None, got {backup_count!r}")
        if isinstance(max_age, dt.timedelta):
            max_age = max_age.total_seconds()
        if max_age is not None and not max_age > 0:
            raise ValueError(f"max_age must be positive, got {max_age!r}")
        if compression is not None and compression not in names.COMPRESSION_SUFFIXES:
            raise ValueError(f"compression must be 'zstd', 'gzip' or None, got {compression!r}")
        for name, hook in (("namer", namer), ("rotator", rotator)):
            if hook is not None and not callable(hook):
                raise TypeError(f"{name} must be callable, got {type(hook).__name__}")
        self.max_bytes = max_bytes
        self.when = when
        self.utc = utc
        self.naming = naming
        self.backup_count = backup_count
        self.max_age = max_age
        self.level = level
        # Set only when given: a subclass's namer or rotator method stays visible, as in
        # logging.handlers.
        if namer is not None:
            self.namer = namer
        if rotator is not None:
            self.rotator = rotator
        self.clock = clock
        self._schedule = schedule
        self._fcntl = posix_module(
            "fcntl", "RotatingFileWriter (the lock that lets processes share a file)"
        )
        self._zstd = zstandard.ZstdCompressor(level=level, write_checksum=True)
        self.compressed_active = str(path).endswith(".zst")
        self.compression = None if self.compressed_active else compression
        if self.compressed_active:
            self._clean_end = tail_frames_end  # type: ignore[method-assign]
        self._jobs: queue.Queue[_Job] = queue.Queue()
        self._jobs_lock = fork_safe_lock()
        self._compressor: threading.Thread | None = None
        self._lock_file = -1
        self._lock_inode: tuple[int, int] | None = None
        self._holder: int | None = None  # the thread holding the lock
        self._data_held = -1  # the active file's descriptor whose own flock is held
        self._size = 0
        self._rollover_at = 0.0
        self._file_time = 0.0  # when the open file's records begin (see _open)
        self.rotations = 0
        self._adopted = False  # whether rotated files left uncompressed were looked for
        super().__init__(path, mode=mode, fsync=fsync, lock_timeout=lock_timeout)
        # Every record takes the lock: a rotation must see each one before it lands.
        self._lock_free = False
        self._log = names.log_name(self.path.name)
        self._lock_name = str(self.path.with_name(names.lock_name(self.path.name)))
        # The lock nobody can delete (see kakashi._directory_lock): None where the
        # directory cannot be locked, then the lock file alone excludes.
        self._directory: DirectoryLock | None = directory_lock(self.path.parent)
        self._directories: list[DirectoryLock | None] = []  # what each _acquire took

    def _after_fork_in_child(self) -> None:
        super()._after_fork_in_child()
        # Closed already (kakashi._descriptors): the parent's lock stays the parent's.
        self._lock_file = -1
        # The compressor thread did not survive the fork: start afresh; files the parent
        # had queued are the parent's to compress.
        self._jobs = queue.Queue()
        self._compressor = None
        self._holder = None
        self._data_held = -1
        self._directories = []  # the directory lock renews itself (kakashi._directory_lock)

    # -- opening, sizes and the lock --------------------------------------------------------

    def _open(self) -> None:
        known = self._inode
        super()._open()
        if self._holder == threading.get_ident():  # opened under the lock: hold it too
            self._hold_data()
        info = os.fstat(self._fd)
        self._size = info.st_size
        if self._inode == known:
            return  # reopened (after close, or a failed rotation): it keeps its period
        # The period a file holds starts when it is created, or, for a file that has records
        # already (a process restarted, another opened it first), at its last write, as in
        # logging.handlers: a file of yesterday is rotated at the first write today, under
        # yesterday's stamp. Its age is read on the real clock, in whole seconds, and
        # applied to self.clock, so a test clock (even one on a boundary) sees a file
        # written less than a second ago as new.
        now = self.clock()
        age = max(0, int(time.time() - info.st_mtime))
        self._begin(now - age if info.st_size else now)

    def _begin(self, start: float) -> None:
        """The open file's records begin at *start*: its period, and when that ends."""
        self._file_time = start
        if self._schedule is not None:
            self._rollover_at = self._schedule.next_after(start, self.utc)

    def _lock_fd(self) -> int:
        """The lock file ``<path>.lock``, opened once (and again if it was replaced)."""
        if self._lock_file < 0:
            self._lock_file = open_owned(
                self._lock_name,
                os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0),
                self.mode,
                hold=self._local,
            )
            self._lock_inode = _inode(os.fstat(self._lock_file))
        return self._lock_file

    def _acquire(self) -> int:
        """Lock the directory, then the lock file (checking it is still the one the path
        names); return the lock file's descriptor.

        The directory's lock is what excludes: someone may delete or replace
        ``<path>.lock`` while a writer holds it, and a writer that opens the path then
        locks a fresh file. The lock file is locked too, for the writers of earlier
        versions, which lock only it, and for ``kakashi view --follow``; and alone where
        the directory cannot be locked (see ``kakashi._directory_lock``).
        """
        directory = self._directory
        if directory is not None:
            try:
                directory.acquire(self.lock_timeout)
            except DirectoryLockUnsupported as exc:
                self._directory = directory = None
                _errors.report(
                    f"{self.path}: locking its directory",
                    exc,
                    detail=f"the writers lock {self._lock_name} alone; deleting it while "
                    "they run can let two of them rotate at once",
                )
        try:
            fd = self._acquire_lock_file(directory)
        except BaseException:
            if directory is not None:
                directory.release()
            raise
        self._directories.append(directory)
        self._holder = threading.get_ident()
        try:
            self._hold_data()
        except BaseException:
            self._release(fd)
            raise
        return fd

    def _hold_data(self) -> None:
        """Take the exclusive flock of the active file itself as well (called with this
        writer's locks held, for as long as they are).

        Plain file writers (:class:`~kakashi.writers.file.FileWriter`) of the same path
        lock only that: while this writer holds it, none of them is between its look at
        the file's end and its append (where this writer's tail check would take their
        batch on its way in for a torn record, and cut it), nor appending to the file
        this writer is about to move away and compress.
        """
        if self._fd >= 0 and self._data_held < 0:
            take_exclusive(self._fd, self.lock_timeout, self._fcntl.flock, str(self.path))
            self._data_held = self._fd

    def _close_fd(self) -> None:
        # Unlocked explicitly: closing the descriptor releases its flock only if no other
        # descriptor shares its open file description. A child forked while a thread of
        # this process was opening the file (after open(2), before the handle owned the
        # descriptor) keeps such a copy, which its fork hook cannot know of: the rotated
        # file stayed locked for the child's life, and a writer of any process whose
        # descriptor was still on it waited lock_timeout at every batch (in _hold_data,
        # with the directory's lock held, so every other writer of the path waited too).
        data, self._data_held = self._data_held, -1
        if data >= 0 and data == self._fd:
            with contextlib.suppress(OSError):  # the close below releases it at worst
                self._fcntl.flock(data, self._fcntl.LOCK_UN)
        super()._close_fd()

    def _acquire_lock_file(self, directory: DirectoryLock | None) -> int:
        """Lock the lock file, checking it is still the one the path names (if not, the
        directory held may be another than the path's now: see
        :meth:`DirectoryLock.renew <kakashi._directory_lock.DirectoryLock.renew>`)."""
        deadline = time.monotonic() + self.lock_timeout
        while True:
            fd = super()._acquire()
            try:
                current = _inode(os.stat(self._lock_name))
            except FileNotFoundError:
                current = None
            if current == self._lock_inode:
                return fd
            if directory is not None and time.monotonic() > deadline:
                # Something deletes the lock file faster than it can be checked (a
                # cleanup job, every millisecond in the tests, on a loaded machine):
                # the directory's lock, held, keeps the other writers out all the same.
                _errors.report(
                    f"{self.path}: its lock file keeps being replaced",
                    detail="writing under the directory's lock alone",
                )
                return fd
            super()._release(fd)
            self._lock_file = -1
            close_owned(fd)
            if directory is not None:
                directory.renew(self.lock_timeout)
            elif time.monotonic() > deadline:
                raise OSError(f"{self.path}: its lock file keeps being replaced")

    def _release(self, fd: int) -> None:
        self._holder = None
        data, self._data_held = self._data_held, -1
        try:
            if data >= 0 and data == self._fd:
                self._fcntl.flock(data, self._fcntl.LOCK_UN)
            super()._release(fd)
        finally:
            directory = self._directories.pop() if self._directories else None
            if directory is not None:
                directory.release()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold this writer's thread lock and the lock of every writer of the path.

        Re-entrant for the thread that holds it, so :meth:`do_rollover` (a public seam) is
        safe whether :meth:`write` calls it or a program does.
        """
        if self._holder == threading.get_ident():
            yield
            return
        with self._lock, self._exclusive():
            yield

    def encode(self, batch: Sequence[bytes]) -> bytes:
        """The bytes to append for *batch*: plain lines, or one zstd frame when the
        active file is ``.zst``."""
        data = newline_joined(batch)
        return bytes(unclaimed(self._zstd.compress, data)) if self.compressed_active else data

    # -- the seams ------------------------------------------------------------------------

    def should_rollover(self, size: int) -> bool:
        """Whether to rotate before writing *size* more bytes (the next record).

        :meth:`write` asks this before each run of records; override it to change when
        files rotate.
        """
        if self._schedule is not None and self.clock() >= self._rollover_at:
            return True
        return bool(
            self.max_bytes is not None and self._size > 0 and self._size + size > self.max_bytes
        )

    def _rotated_name(self) -> Path:
        """The name the active file moves to (see :mod:`kakashi.writers.naming`)."""
        if self.naming == "numbered":
            return self.path.with_name(names.numbered_name(self.path.name, 1))
        zone = dt.timezone.utc if self.utc else None
        stamp_format = "%Y-%m-%dT%H-%M-%S"
        if self._schedule is not None:
            stamp_format = self._schedule.stamp_format
        stamp = dt.datetime.fromtimestamp(self._file_time, zone).strftime(stamp_format)
        if not self.utc and "T" in stamp_format:
            # The offset tells the two passes of the hour the clocks go back through apart
            # (see naming): a day's stamp needs none, a day happens once.
            stamp += names.utc_offset(time.localtime(self._file_time).tm_gmtoff)
        existing = os.listdir(self.path.parent)
        if self.namer is not None:  # the stamps and counters its names took
            existing += [
                names.timestamped_name(self.path.name, rotated.stamp, rotated.counter)
                for rotated, _ in names.named_files(self.path, self.namer)
                if rotated.stamp is not None
            ]
        return self.path.with_name(names.next_timestamped_name(self.path.name, stamp, existing))

    def _shift_numbered(self) -> None:
        """Make room for ``.1``: ``.n`` becomes ``.n+1`` (compressed or not), oldest first,
        and so do the files a *namer* named, through it, as :mod:`logging` shifts them
        (``namer(app.log.n)`` becomes ``namer(app.log.n+1)``: ``app.1.log`` would otherwise
        be replaced by the next rotation's file).

        Called under the lock. Nothing moves while ``.1`` is free (a rotation that failed
        after shifting leaves it so), so numbers do not creep up while rotations fail. A
        file a compressor is working on may move: it is found by its inode when the
        compressed copy is ready.
        """
        default: list[tuple[int, Path, str]] = []
        for name in os.listdir(self.path.parent):
            path = self.path.with_name(name)
            parsed = names.parse(name)
            if parsed is None or parsed.number is None or parsed.active != self.path.name:
                continue
            if self.namer is None or self._numbered_here(path):  # else a namer's: below
                default.append((parsed.number, path, parsed.compression))
        named: list[tuple[int, Path, str]] = []
        if self.namer is not None:
            named = [
                (rotated.number, path, rotated.compression)
                for rotated, path in names.named_files(self.path, self.namer)
                if rotated.number is not None and not self._numbered_here(path)
            ]
        if all(number != 1 for number, _, _ in (*default, *named)):
            return
        for number, path, compression in sorted(default, key=lambda item: -item[0]):
            os.rename(path, self.path.with_name(f"{self.path.name}.{number + 1}{compression}"))
        for number, path, compression in sorted(named, key=lambda item: -item[0]):
            os.rename(path, f"{self._named(number + 1)}{compression}")

    def _numbered_here(self, path: Path) -> bool:
        """Whether *path* has one of this log's default numbered names, exactly as this
        writer spells them (``app.log.001`` is a namer's name, not ``app.log.1``)."""
        parsed = names.parse(path.name)
        return (
            path.parent == self.path.parent
            and parsed is not None
            and parsed.number is not None
            and parsed.active == self.path.name
            and path.name == parsed.renumbered(parsed.number)
        )

    def _named(self, number: int) -> Path:
        """What the namer calls the numbered rotated file *number*."""
        assert self.namer is not None
        default = self.path.with_name(names.numbered_name(self.path.name, number))
        return Path(self.namer(str(default)))

    def do_rollover(self) -> None:
        """Close the active file, move it to its rotated name, open a fresh one.

        Runs under the lock of every writer of the path (:meth:`write` holds it already),
        so no other writer is between its check and its write.
        """
        with self._locked():
            self._do_rollover()

    def _do_rollover(self) -> None:
        # The active file stays open, and its flock held, until it is moved away (closed
        # below, before the fresh one opens): a plain writer of the path waiting for that
        # flock then finds the path moved and reopens it, rather than appending to the
        # file about to be compressed.
        if self.naming == "numbered":
            self._shift_numbered()
        default = str(self._rotated_name())
        # A namer may answer with a path object, as logging.handlers allows.
        destination = os.fspath(self.namer(default)) if self.namer is not None else default
        moved = None
        if self.path.exists():
            for suffix in ("", *names.COMPRESSION_SUFFIXES.values()):
                if os.path.lexists(destination + suffix):
                    # A namer that gave a name in use: replacing it would lose its records.
                    raise FileExistsError(
                        errno.EEXIST, f"the rotated name is taken: {destination + suffix}"
                    )
            if self.rotator is not None:
                self.rotator(str(self.path), destination)
            else:
                os.rename(self.path, destination)
            try:
                moved = _inode(os.stat(destination))
            except FileNotFoundError:  # a rotator that did something else
                moved = None
        self.rotations += 1
        self._close_fd()
        self._open()
        compressed = names.parse(Path(destination).name)
        if compressed is not None and compressed.compression:
            moved = None  # the name says it is compressed already (a namer or rotator did it)
        if moved is not None and self.compression is not None:
            self._submit(_Job(Path(destination), moved))
        elif self.backup_count is not None or self.max_age is not None:
            self._submit(_Job(None))  # retention only
        if not self._adopted and self.compression is not None:
            self._adopted = True
            self._adopt_orphans(Path(destination))

    def _adopt_orphans(self, rotated: Path) -> None:
        """Queue the rotated files a process that died (kill -9, OOM, interpreter exit) or
        whose compression failed left uncompressed. Called under the lock, at this writer's
        first rotation.

        A file that a live process is compressing (its ``.partial`` exists) is left to it;
        one that another process only has queued may be compressed twice, harmlessly: the
        second swap finds the file gone.
        """
        listing = os.listdir(self.path.parent)
        busy = set()
        for name in listing:
            partial = _partial_of(name)
            if partial is not None and _alive(partial[1]):
                busy.add(partial[0])
        for path in self.rotated_files():
            if path == rotated or path.name.endswith(tuple(names.COMPRESSION_SUFFIXES.values())):
                continue
            if names.compressed_name(path.name, self.compression or "zstd") in busy:
                continue
            with contextlib.suppress(FileNotFoundError):
                self._submit(_Job(path, _inode(os.stat(path))))

    # -- writing --------------------------------------------------------------------------

    def _rotate(self) -> None:
        """Rotate now (the lock is held); a rotation that fails is reported, not raised.

        The records go on into the file that is open then: a full file is better than
        records lost to a rename that failed.
        """
        try:
            self.do_rollover()
        except Exception as exc:
            _errors.report(f"rotating {self.path}", exc)
            if self._fd < 0 or self._moved():
                # Still the same file, it keeps its period (see _open): the rotation it
                # missed is tried again at the next write, not put off to the next one.
                self._close_fd()
                self._open()

    def write(self, batch: Sequence[bytes]) -> None:
        """Write the batch, rotating between records when a limit is reached.

        Raises:
            PartialWriteError: a write failed after the first records were written (in
                this file or the one rotated before it); they are not to be written again.
            OSError: nothing of the batch was written.
        """
        with self._lock:
            outermost = self._holder != threading.get_ident()
            directory = self._directory
            kept = 0 if directory is None else directory.held_here()
            try:
                fd = self._acquire()  # no context manager: this is the hot path
                try:
                    self._write_locked(batch)
                finally:
                    self._release(fd)
            except BaseException:
                if outermost:
                    self._let_go(directory, kept)
                raise

    def _let_go(self, directory: DirectoryLock | None, kept: int) -> None:
        """After an exception out of :meth:`write` (holding the thread lock): let go of
        every lock of the path that it took, wherever the exception landed. A signal
        handler's (Ctrl-C) can land between taking a lock and the ``try`` that gives it
        back, in any of the steps of :meth:`_acquire`: the directory's lock was then left
        held for good, and every writer of another thread in that directory (the
        compressor too) timed out at every batch. Nothing is left to do after an
        ordinary failure, which :meth:`_release` has settled."""
        self._holder = None
        data, self._data_held = self._data_held, -1
        # The active file's flock may be taken and not yet noted (_data_held): this
        # writer's own descriptors, which no other thread locks meanwhile (the thread
        # lock is held), so unlocking one not locked costs nothing.
        for fd in {data, self._fd, self._lock_file}:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    self._fcntl.flock(fd, self._fcntl.LOCK_UN)
        self._directories.clear()
        if directory is not None:
            directory.let_go(kept)

    def write_record(self, line: bytes) -> None:
        """Write one record, *line*, as a batch of one (under the lock: see :meth:`write`)."""
        self.write((line,))

    def _write_locked(self, batch: Sequence[bytes]) -> None:
        if self._fd < 0 or self._moved():  # another process rotated it
            self._close_fd()
            self._open()
        self._size = self._ready()
        start = 0
        while start < len(batch):
            try:
                start = self._write_run(batch, start)
            except OSError as exc:
                # Whatever failed after the first records were written (the append, or
                # reopening the active file after a rotation: ENOSPC, EMFILE...), those
                # records are on disk and must not be written again.
                if start:
                    raise PartialWriteError(start, exc) from exc
                raise

    def _write_run(self, batch: Sequence[bytes], start: int) -> int:
        """Write the run of records from *start* that fits (rotating first if it is time);
        return where the next run starts."""
        # A .zst file's sizes are known only once compressed: it rotates once it
        # has reached max_bytes (the "next record" then counts as one byte).
        upcoming = 1 if self.compressed_active else len(batch[start]) + 1
        if not self._size and self._schedule is not None and self.clock() >= self._rollover_at:
            self._begin(self.clock())  # an empty file is not rotated: it starts afresh
        if self.should_rollover(upcoming):
            self._rotate()
            self._size = self._ready()
        end = max(self._fitting(batch, start), start + 1)  # an oversized record goes alone
        data = self.encode(batch[start:end])
        self._append(data, self._size)
        self._size += len(data)
        return end

    def _fitting(self, batch: Sequence[bytes], start: int) -> int:
        """End of the longest run of records from *start* that fits in the current file.

        For a ``.zst`` active file sizes are known only once compressed, so the whole
        batch fits unless the file already reached ``max_bytes``.
        """
        if self.max_bytes is None:
            return len(batch)
        if self.compressed_active:
            return len(batch) if self._size < self.max_bytes else start
        room = self.max_bytes - self._size
        end = start
        while end < len(batch) and len(batch[end]) + 1 <= room:
            room -= len(batch[end]) + 1
            end += 1
        return end

    # -- compression and retention, in the background ---------------------------------------

    def _submit(self, job: _Job) -> None:
        """Queue a compression (or retention) job; start the background thread if idle."""
        with self._jobs_lock:
            self._jobs.put(job)
            if self._compressor is None:
                self._compressor = threading.Thread(
                    target=self._compress_loop, name="kakashi-compress", daemon=True
                )
                self._compressor.start()

    def _compress_loop(self) -> None:
        # Runs while there is work, then ends: rotations are rare, an idle thread is waste.
        while True:
            with self._jobs_lock:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    self._compressor = None
                    return
            try:
                if job.path is not None:
                    self._compress(job)
                with self._locked():
                    self._apply_retention()
            except Exception as exc:
                _errors.report(f"compressing {job.path}", exc)
            finally:
                self._jobs.task_done()

    def _find(self, job: _Job) -> Path | None:
        """Where the file of *job* is now (shifting may have renamed it), or ``None``.

        Called under the lock.
        """
        assert job.path is not None
        candidates = [job.path]
        for name in os.listdir(self.path.parent):
            parsed = names.parse(name)
            if parsed is not None and parsed.log == self._log and not parsed.compression:
                candidates.append(self.path.with_name(name))
        if self.namer is not None:  # files it named (and shifted)
            candidates.extend(
                path
                for rotated, path in names.named_files(self.path, self.namer)
                if not rotated.compression
            )
        for candidate in candidates:
            try:
                if _inode(os.stat(candidate)) == job.inode:
                    return candidate
            except FileNotFoundError:
                continue
        return None

    def _compress(self, job: _Job) -> None:
        """Compress a rotated file beside itself, then swap it for the compressed copy."""
        assert self.compression is not None
        with self._locked():
            source = self._find(job)
            if source is None:
                return  # deleted by retention, or compressed already
            # (Descriptors from kakashi._descriptors: a child forked while this thread
            # compresses closes its copies.)
            source_fd = open_owned(
                source, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0), hold=self._local
            )
        pid = os.getpid()
        partial = source.with_name(
            f"{names.compressed_name(source.name, self.compression)}"
            f".{pid}-{next(_partial_numbers)}.partial"
        )
        try:
            # The original stays open until the swap is done: an open file keeps its inode
            # number, so no other file can take it (files are found by inode) if retention
            # or another compressor removes this one meanwhile. Closed before the swap, the
            # number went to a newer file, whose name got this file's records and whose own
            # records were deleted (4 processes, timestamped: 563 records lost, 567 twice).
            with open(source_fd, "rb", closefd=False) as reading:
                with owned_file(partial, "wb", hold=self._local) as dst:
                    if self.compression == "zstd":
                        zstandard.ZstdCompressor(level=self.level, write_checksum=True).copy_stream(
                            reading, dst
                        )
                    else:
                        # No name in the header (gzip would store the temporary one, and
                        # shifting renames the file anyway): ``gunzip -N`` then restores
                        # the name the file has. The time is the original's.
                        mtime = int(os.fstat(reading.fileno()).st_mtime)
                        with gzip.GzipFile("", "wb", fileobj=dst, mtime=mtime) as zipped:
                            shutil.copyfileobj(reading, zipped)
                    dst.flush()
                    os.fsync(dst.fileno())  # complete on disk before it replaces the original
                with self._locked():
                    source = self._find(job)
                    if source is not None:
                        target = source.with_name(
                            names.compressed_name(source.name, self.compression)
                        )
                        if os.path.lexists(target):  # never replace another file's records
                            raise FileExistsError(
                                errno.EEXIST, f"{target} exists; {source} is kept"
                            )
                        os.replace(partial, target)
                        # Closed while it still has its name (holding the GIL, cheap),
                        # so that deleting it frees its blocks with no descriptor left.
                        fd, source_fd = source_fd, -1
                        close_owned(fd)
                        source.unlink()
        finally:
            if source_fd >= 0:
                close_owned(source_fd)
            partial.unlink(missing_ok=True)

    def wait_for_compression(self, timeout: float = 30.0) -> bool:
        """Wait until every rotated file is compressed; return ``False`` on timeout."""
        deadline = time.monotonic() + timeout
        while self._jobs.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def rotated_files(self) -> list[Path]:
        """The rotated files of this writer, newest first, including those its namer named
        (see :mod:`kakashi.writers.naming`)."""
        return names.rotated_files(self.path.parent, self.path.name, namer=self.namer)[::-1]

    def _apply_retention(self) -> None:
        """Tidy up, then delete what retention says. Called under the lock.

        Tidying is what a crash can leave: an original beside its complete compressed
        copy (the copy stays), a temporary file of a process that is gone.
        """
        for name in os.listdir(self.path.parent):
            path = self.path.with_name(name)
            if name.endswith(".partial"):
                partial = _partial_of(name)
                if partial is not None and not _alive(partial[1]):
                    parsed = names.parse(partial[0])
                    if parsed is None and self.namer is not None:
                        parsed = names.NamerNames(self.path, self.namer).read(
                            path.with_name(partial[0])
                        )
                    if parsed is not None and parsed.log == self._log:
                        path.unlink(missing_ok=True)
                continue
            parsed = names.parse(name)
            if parsed is not None and parsed.log == self._log and not parsed.compression:
                for suffix in names.COMPRESSION_SUFFIXES.values():
                    if path.with_name(name + suffix).exists():
                        path.unlink(missing_ok=True)
        files = self.rotated_files()
        doomed: list[Path] = []
        if self.backup_count is not None:
            doomed.extend(files[self.backup_count :])
        if self.max_age is not None:
            limit = self.clock() - self.max_age
            for path in files:
                try:
                    if path.stat().st_mtime < limit and path not in doomed:
                        doomed.append(path)
                except FileNotFoundError:
                    continue
        for path in doomed:
            path.unlink(missing_ok=True)

    def close(self, timeout: float | None = None) -> None:
        """Close the file and wait for pending compression, at most *timeout* seconds in
        all (``None``: 30 s for the compression, then 5 s for its thread).

        The compressor may be waiting for another process's lock (a process stopped or
        hung): a shutdown must not wait for it beyond its own timeout. What is not
        compressed by then stays behind, whole and readable under its rotated name (the
        compressor is a daemon thread, which interpreter exit ends).
        """
        deadline = time.monotonic() + (35.0 if timeout is None else max(0.0, timeout))

        def left(most: float) -> float:
            return max(0.0, min(most, deadline - time.monotonic()))

        super().close(left(35.0))
        if self.backup_count is not None or self.max_age is not None:
            # Retention at close too (a process may never rotate), unless no thread can
            # start any more (interpreter shutdown): the next rotation or close prunes.
            with contextlib.suppress(RuntimeError):
                self._submit(_Job(None))
        self.wait_for_compression(left(30.0))
        thread = self._compressor
        if thread is not None:
            thread.join(left(5.0))
        if not self._lock.acquire(timeout=left(5.0)):
            return  # the compressor holds it (and uses the lock file)
        try:
            if self._lock_file >= 0:
                fd, self._lock_file = self._lock_file, -1
                close_owned(fd)
        finally:
            self._lock.release()

    def __repr__(self) -> str:
        return f"<RotatingFileWriter {str(self.path)!r}>"


def rotating_file_writer(path: str | os.PathLike[str], **options: Any) -> RotatingFileWriter:
    """Return a :class:`RotatingFileWriter` (see it for the options)."""
    return RotatingFileWriter(path, **options)
