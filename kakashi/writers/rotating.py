"""A rotating file writer: by size, by time or both, with retention and compression.

The seams are the standard library's: :meth:`RotatingFileWriter.should_rollover` and
:meth:`RotatingFileWriter.do_rollover`, and the ``namer``/``rotator`` hooks. Rotated files
are compressed on a background thread (zstd by default, gzip as an option), so neither the
application nor the write path waits for compression. A record is never split across two
files: a batch is cut between records, and a record larger than ``max_bytes`` goes alone
into a fresh file.

Several processes may write and rotate the same file (gunicorn-style workers): batches
are appended with one ``write`` each, so lines never interleave; a rotation is decided
under an exclusive lock on ``<path>.lock``, where a process that finds the file already
rotated by another just reopens it, so each rotation happens once; and every process
checks before each batch that its path still names its file.

A path ending in ``.zst`` is written compressed from the start (one frame per batch, see
:mod:`kakashi.writers.zstd`), and its rotated files need no further compression.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import os
import queue
import re
import shutil
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import zstandard

from kakashi import _errors
from kakashi._platform import posix_module
from kakashi.writers import naming as names
from kakashi.writers.file import FileWriter

__all__ = ["RotatingFileWriter", "rotating_file_writer"]

_WHEN = re.compile(r"^(hourly|midnight|daily(?:@(\d\d):(\d\d))?|weekly|w([0-6]))$")


def _compress(source: Path, compression: str, level: int) -> Path:
    """Compress *source* next to itself, then remove it; return the compressed path."""
    target = source.with_name(names.compressed_name(source.name, compression))
    partial = target.with_name(target.name + ".partial")
    with source.open("rb") as src, partial.open("wb") as dst:
        if compression == "zstd":
            zstandard.ZstdCompressor(level=level).copy_stream(src, dst)
        else:
            with gzip.GzipFile(fileobj=dst, mode="wb") as zipped:
                shutil.copyfileobj(src, zipped)
    os.replace(partial, target)
    source.unlink()
    return target


class RotatingFileWriter(FileWriter):
    """Append to *path*, rotating it by size and/or time.

    Args:
        path: the active file. Ending in ``.zst``, it is written as zstd frames.
        max_bytes: rotate before the file would exceed this many bytes.
        when: rotate on a schedule: ``"hourly"``, ``"midnight"`` (same as ``"daily"``),
            ``"daily@HH:MM"``, ``"weekly"`` (Monday 00:00) or ``"w0"``..``"w6"`` (that
            weekday, Monday = 0, at 00:00).
        utc: read the schedule in UTC (``False``: local time).
        naming: ``"numbered"`` (``app.log.1`` is the newest) or ``"timestamped"``
            (``app.2026-11-27.log``; hourly files carry the hour).
        backup_count: keep at most this many rotated files (``None``: no limit).
        max_age: delete rotated files older than this many seconds (or a timedelta).
        compression: ``"zstd"`` (default), ``"gzip"`` or ``None`` for rotated files.
        level: the zstd level for compression and for a ``.zst`` active file.
        namer: ``namer(default_name) -> name`` for a rotated file, as in :mod:`logging`.
        rotator: ``rotator(source, dest)`` moves the active file (default ``os.rename``).
        mode: permission bits for new files.
        fsync: ``fsync`` on every flush.
        clock: the time source (seconds since the epoch), for tests.

    Raises:
        ValueError: a non-positive size, an unknown schedule, naming or compression.
        TypeError: a hook that is not callable.
        kakashi.UnsupportedPlatformError: the platform has no ``fcntl`` (Windows).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int | None = None,
        when: str | None = None,
        utc: bool = True,
        naming: str = "numbered",
        backup_count: int | None = None,
        max_age: float | dt.timedelta | None = None,
        compression: str | None = "zstd",
        level: int = 3,
        namer: Callable[[str], str] | None = None,
        rotator: Callable[[str, str], Any] | None = None,
        mode: int = 0o644,
        fsync: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_bytes is not None and (
            isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1
        ):
            raise ValueError(f"max_bytes must be a positive int or None, got {max_bytes!r}")
        schedule = None
        if when is not None:
            schedule = _WHEN.match(str(when).lower())
            if schedule is None:
                raise ValueError(
                    "when must be 'hourly', 'midnight', 'daily', 'daily@HH:MM', 'weekly' "
                    f"or 'w0'..'w6', got {when!r}"
                )
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
        self.namer = namer
        self.rotator = rotator
        self.clock = clock
        self._schedule = schedule
        self._fcntl = posix_module(
            "fcntl", "RotatingFileWriter (the lock that lets processes share a file)"
        )
        self._zstd = zstandard.ZstdCompressor(level=level)
        self.compressed_active = str(path).endswith(".zst")
        self.compression = None if self.compressed_active else compression
        self._jobs: queue.Queue[Path] = queue.Queue()
        self._jobs_lock = threading.Lock()
        self._compressor: threading.Thread | None = None
        self._size = 0
        self._rollover_at = 0.0
        self.rotations = 0
        super().__init__(path, mode=mode, fsync=fsync)
        _writers.add(self)

    def _after_fork_in_child(self) -> None:
        # The compressor thread did not survive the fork: start afresh; files the parent
        # had queued are the parent's to compress.
        self._jobs = queue.Queue()
        self._jobs_lock = threading.Lock()
        self._compressor = None

    # -- opening and sizes ------------------------------------------------------------

    def _open(self) -> None:
        super()._open()
        self._size = os.fstat(self._fd).st_size
        self._opened_at = self.clock()  # a timestamped name says which period a file holds
        if self._schedule is not None:
            self._rollover_at = self._next_rollover(self.clock())

    def encode(self, batch: Sequence[bytes]) -> bytes:
        """Plain lines, or one zstd frame when the active file is ``.zst``."""
        data = b"\n".join(batch) + b"\n"
        return bytes(self._zstd.compress(data)) if self.compressed_active else data

    # -- the schedule -------------------------------------------------------------------

    def _next_rollover(self, now: float) -> float:
        zone = dt.timezone.utc if self.utc else None
        current = dt.datetime.fromtimestamp(now, zone)
        assert self._schedule is not None
        kind, hour, minute, weekday = self._schedule.groups()
        if kind == "hourly":
            start = current.replace(minute=0, second=0, microsecond=0)
            return (start + dt.timedelta(hours=1)).timestamp()
        if kind.startswith(("midnight", "daily")):
            at = current.replace(
                hour=int(hour or 0), minute=int(minute or 0), second=0, microsecond=0
            )
            if at <= current:
                at += dt.timedelta(days=1)
            return at.timestamp()
        target_day = int(weekday) if weekday is not None else 0
        start = current.replace(hour=0, minute=0, second=0, microsecond=0)
        days = (target_day - start.weekday()) % 7 or 7
        return (start + dt.timedelta(days=days)).timestamp()

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
        stamp_format = "%Y-%m-%dT%H" if self.when == "hourly" else "%Y-%m-%d"
        if self._schedule is None:
            stamp_format = "%Y-%m-%dT%H-%M-%S"
        stamp = dt.datetime.fromtimestamp(self._opened_at, zone).strftime(stamp_format)
        existing = os.listdir(self.path.parent)
        return self.path.with_name(names.next_timestamped_name(self.path.name, stamp, existing))

    def _shift_numbered(self) -> None:
        """Make room for ``.1``: ``.n`` becomes ``.n+1`` (compressed or not), oldest first."""
        self.wait_for_compression()
        found = []
        for name in os.listdir(self.path.parent):
            parsed = names.parse(name)
            if parsed is not None and parsed.number is not None and parsed.active == self.path.name:
                found.append((parsed.number, name, parsed))
        for number, name, parsed in sorted(found, reverse=True):
            os.rename(self.path.with_name(name), self.path.with_name(parsed.renumbered(number + 1)))

    def do_rollover(self) -> None:
        """Close the active file, move it to its rotated name, open a fresh one."""
        self._close_fd()
        if self.naming == "numbered":
            self._shift_numbered()
        default = str(self._rotated_name())
        destination = self.namer(default) if self.namer is not None else default
        if self.path.exists():
            if self.rotator is not None:
                self.rotator(str(self.path), destination)
            else:
                os.rename(self.path, destination)
        self.rotations += 1
        self._open()
        if Path(destination).exists() and self.compression is not None:
            self._submit(Path(destination))
        elif self.backup_count is not None or self.max_age is not None:
            self._submit(Path(""))  # retention only

    # -- writing --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _rotation_lock(self) -> Any:
        """Hold the exclusive lock that makes one process rotate at a time."""
        fd = os.open(
            self.path.with_name(names.lock_name(self.path.name)), os.O_RDWR | os.O_CREAT, 0o644
        )
        try:
            self._fcntl.flock(fd, self._fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _rotate_once(self) -> None:
        """Rotate, unless another process did it since this one last looked."""
        with self._rotation_lock():
            if self._moved():
                self._close_fd()
                self._open()
            else:
                self.do_rollover()

    def write(self, batch: Sequence[bytes]) -> None:
        """Write the batch, rotating between records when a limit is reached."""
        with self._lock:
            if self._fd < 0 or self._moved():
                self._close_fd()
                self._open()
            if self.max_bytes is not None:
                self._size = os.fstat(self._fd).st_size  # other processes append too
            start = 0
            while start < len(batch):
                # A .zst file's sizes are known only once compressed: it rotates once it
                # has reached max_bytes (the "next record" then counts as one byte).
                upcoming = 1 if self.compressed_active else len(batch[start]) + 1
                if self.should_rollover(upcoming):
                    self._rotate_once()
                end = max(self._fitting(batch, start), start + 1)  # an oversized record goes alone
                data = self.encode(batch[start:end])
                self._write_all(data)
                self._size += len(data)
                start = end

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

    def _submit(self, job: Path) -> None:
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
                    source = self._jobs.get_nowait()
                except queue.Empty:
                    self._compressor = None
                    return
            try:
                if source.name and self.compression is not None and source.exists():
                    _compress(source, self.compression, self.level)
                self._apply_retention()
            except Exception as exc:
                _errors.report(f"compressing {source}", exc)
            finally:
                self._jobs.task_done()

    def wait_for_compression(self, timeout: float = 30.0) -> bool:
        """Wait until every rotated file is compressed; return ``False`` on timeout."""
        deadline = time.monotonic() + timeout
        while self._jobs.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def rotated_files(self) -> list[Path]:
        """The rotated files of this writer, newest first (see :mod:`kakashi.writers.naming`)."""
        return names.rotated_files(self.path.parent, self.path.name)[::-1]

    def _apply_retention(self) -> None:
        files = self.rotated_files()
        doomed: list[Path] = []
        if self.backup_count is not None:
            doomed.extend(files[self.backup_count :])
        if self.max_age is not None:
            limit = self.clock() - self.max_age
            doomed.extend(p for p in files if p.stat().st_mtime < limit and p not in doomed)
        for path in doomed:
            path.unlink(missing_ok=True)

    def close(self) -> None:
        """Close the file and wait (bounded) for pending compression."""
        super().close()
        self.wait_for_compression()
        thread = self._compressor
        if thread is not None:
            thread.join(5.0)

    def __repr__(self) -> str:
        return f"<RotatingFileWriter {str(self.path)!r}>"


def rotating_file_writer(path: str | os.PathLike[str], **options: Any) -> RotatingFileWriter:
    """Return a :class:`RotatingFileWriter` (see it for the options)."""
    return RotatingFileWriter(path, **options)


_writers: weakref.WeakSet[RotatingFileWriter] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for writer in list(_writers):
        writer._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
