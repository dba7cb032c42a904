"""A plain file writer: one open file, one ``write`` system call per batch."""

from __future__ import annotations

import contextlib
import errno
import math
import os
import stat
import struct
import sys
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

from kakashi import _errors
from kakashi._descriptors import close_owned, forks, open_owned
from kakashi._locks import after_fork_in_child, fork_safe_rlock, run_in_region
from kakashi._platform import UnsupportedPlatformError, posix_module
from kakashi._speedups import (
    Lines,
    flock_holding_gil,
    fstat_size_holding_gil,
    gil_held_writes,
    ofd_getlk_holding_gil,
    stat_identity_holding_gil,
    write_holding_gil,
    write_releasing_gil,
    yield_gil,
)
from kakashi._turns import WAITING_BYTE, lets_waiters_go_first, take_exclusive

__all__ = [
    "FileWriter",
    "ATOMIC_APPEND",
    "PartialWriteError",
    "PendingLines",
    "checked_interval",
    "checked_path",
    "clean_end",
    "file_writer",
    "make_folder",
]

_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
_TAIL_CHUNK = 64 * 1024
# Where one write(2) of a regular file opened O_APPEND lands whole, never interleaved with
# another's (Linux takes the inode's lock for the whole write: ext4, xfs, btrfs, tmpfs), and
# where open-file-description locks tell a writer whether others append without the flock.
# Elsewhere every record takes the flock, as a batch does.
try:
    import fcntl as _fcntl
except ImportError:  # Windows
    _fcntl = None  # type: ignore[assignment]
#: Whether a synchronous pipeline's records are appended with one ``write`` and no lock
#: (:meth:`FileWriter.write_record`): on Linux, with open-file-description locks.
ATOMIC_APPEND = sys.platform == "linux" and hasattr(_fcntl, "F_OFD_SETLK")
# Every writer that appends without the flock holds a shared OFD lock on this one byte,
# far past any real end of file, for as long as its descriptor is open (the kernel drops
# it when the process dies, even by kill -9): a writer that can take it exclusively knows
# that nobody else is appending, so cutting the file's tail cannot cut a record in flight.
# OFD locks and flock do not interact.
_PRESENCE = 1 << 62
_FLOCK_STRUCT = "@hhqqi4x"  # struct flock: l_type, l_whence, l_start, l_len, l_pid
_monotonic = time.monotonic  # the clock of reopen_check_interval (tests replace it)


#: ``format_batch``'s gate for a file writer's append: ``(path, st_dev, st_ino, end,
#: waiting byte)``, and what became of it (``Lines.gate``).
_Gate = tuple[bytes, int, int, int, int]
GATE_CLOSED = 1  # a condition failed: nothing written, no lock held
GATE_WRITTEN = 2  # appended whole, the flock released
GATE_LOCKED = 3  # the flock held, the append stopped short


def newline_joined(batch: Sequence[bytes]) -> bytes:
    """*batch*'s lines, each followed by a newline: for a formatted batch
    (:class:`~kakashi._speedups.Lines`) the buffer it already is, with no copy."""
    if type(batch) is Lines:
        return batch.joined
    return b"\n".join(batch) + b"\n"


def _held_flock(fd: int, operation: int) -> None:
    """``flock`` for :func:`~kakashi._turns.take_exclusive`: its tries that never wait
    (``LOCK_NB``) keep the GIL; any other operation releases it, as ``fcntl.flock``."""
    if operation & _fcntl.LOCK_NB:
        flock_holding_gil(fd, operation)
    else:
        _fcntl.flock(fd, operation)


class PendingLines(Sequence[bytes]):
    """A batch's lines, formatted when first used, or by a file writer that formats and
    appends them with the GIL released once (:meth:`write_to`).

    The async backend hands these to a run's only writer when that is a plain
    :class:`FileWriter`: formatting the batch and writing it in one release of the GIL,
    rather than one for each, halves the times a logging thread hands the GIL back to
    the worker for a batch. Used as a sequence (anything else that takes the batch: a
    retry, another writer), the lines are formatted then, once.
    """

    __slots__ = ("_count", "_format", "_lines")

    def __init__(
        self, count: int, format_into: Callable[[int, _Gate | None], Sequence[bytes]]
    ) -> None:
        """*count*: the lines there will be; *format_into(fd, gate)*: the lines, written
        to *fd* as they are formatted when it can (``-1``: not written), through
        *gate* when it is not ``None`` (``format_batch``'s)."""
        self._count = count
        self._format: Callable[[int, _Gate | None], Sequence[bytes]] | None = format_into
        self._lines: Sequence[bytes] | None = None

    def lines(self) -> Sequence[bytes]:
        """The lines, formatted now if they were not yet."""
        if self._lines is None:
            return self._format_into(-1)
        return self._lines

    def _format_into(self, fd: int, gate: _Gate | None = None) -> Sequence[bytes]:
        # Kept only once made: a format that raised is tried again by the next use.
        format_into = self._format
        assert format_into is not None
        lines = self._lines = format_into(fd, gate)
        self._format = None
        return lines

    def write_to(self, fd: int, gate: _Gate | None = None) -> tuple[bytes, int, int, int]:
        """Format the lines, written to *fd* as they are (when not formatted yet), through
        *gate* if given (see ``format_batch``); return ``(data, written, errno, gate)``:
        what is to be appended (each line and a newline), how much of it is written
        already, the ``errno`` that stopped that (0: none), and what became of the gate
        (``GATE_CLOSED``, ``GATE_WRITTEN``, ``GATE_LOCKED``; 0: no write was tried)."""
        if self._lines is not None:
            return newline_joined(self._lines), 0, 0, 0
        lines = self._format_into(fd, gate)
        if fd < 0:
            return newline_joined(lines), 0, 0, 0
        return (
            newline_joined(lines),
            getattr(lines, "written", 0),
            getattr(lines, "write_error", 0),
            getattr(lines, "gate", 0),
        )

    def __len__(self) -> int:
        return self._count if self._lines is None else len(self._lines)

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[bytes]: ...
    def __getitem__(self, index: int | slice) -> bytes | Sequence[bytes]:
        return self.lines()[index]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.lines())


class _Descriptor:
    """An open file descriptor, closed when the last reference to it goes.

    A record written without the thread lock holds a reference for its ``write``, so a
    reopen or a ``close`` on another thread never closes (and the process never reuses)
    the number under it.
    """

    __slots__ = ("fd", "forks")
    _close = staticmethod(close_owned)  # kept: module globals may be gone at exit
    _forks = forks  # (kept, as _close is)

    def __init__(self) -> None:
        # Made before the open, and given its descriptor by an assignment (see
        # FileWriter._open): only this object ever closes it, so a signal handler's
        # exception around the open leaves at worst a descriptor open, never one closed
        # twice (the second time, perhaps, another thread's file that took the number).
        # No call here: both are set or neither.
        self.fd = -1  # from open_owned: a forked child closes its copy first thing
        self.forks = self._forks[0]

    def __del__(self) -> None:
        # No call before close_owned's, which makes none before the close either: a
        # signal handler's exception (ignored in a finalizer) can leave the descriptor
        # open only at the first instruction of either.
        try:
            fd, forks = self.fd, self.forks
        except AttributeError:  # __init__ stopped at its first instruction
            return
        # Only in the process that opened it: in a forked child, the number was closed
        # before the fork hooks ran and may be another file's now.
        if fd >= 0 and forks == self._forks[0]:
            try:
                self._close(fd)
            except OSError:
                pass


def _presence(fd: int, kind: int) -> bool:
    """Set this descriptor's lock on the :data:`_PRESENCE` byte to *kind* (``F_RDLCK``,
    ``F_WRLCK`` or ``F_UNLCK``) without waiting; whether it was set.

    Raises:
        OSError: the file system has no such locks (``ENOLCK``, ``EINVAL``, ...).
    """
    request = struct.pack(_FLOCK_STRUCT, kind, os.SEEK_SET, _PRESENCE, 1, 0)
    try:
        _fcntl.fcntl(fd, _fcntl.F_OFD_SETLK, request)
    except (BlockingIOError, PermissionError):  # EAGAIN or EACCES: someone else holds it
        return False
    return True


def checked_interval(parameter: str, value: Any) -> float:
    """Return *value* as a number of seconds >= 0, or say which parameter was wrong.

    Raises:
        ValueError: *value* is not a finite real number >= 0 (a bool is not one); the
            message names *parameter*.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{parameter} must be a number of seconds >= 0, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{parameter} must be a number of seconds >= 0, got {value!r}")
    return float(value)


def checked_path(parameter: str, value: Any) -> Path:
    """Return *value* as a :class:`~pathlib.Path`, or say which parameter was not a path.

    Raises:
        TypeError: *value* is not a str or path-like object; the message names *parameter*.
        ValueError: *value* is empty.
    """
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{parameter} must be a file path (str or os.PathLike), got {value!r}")
    if os.fspath(value) == "":
        raise ValueError(f"{parameter} must be a file path, got an empty one")
    return Path(value)


def make_folder(parameter: str, folder: Path, value: Path | None = None) -> None:
    """Create *folder* and its parents for *parameter* (set to *value*, default *folder*).

    Raises:
        NotADirectoryError: a component of the path is an existing file (as in
            ``/etc/passwd/x.log``); the message names the parameter and that file.
        OSError: the folders cannot be created (permissions, ...); the message names the
            parameter and the folder.
    """
    shown = str(folder if value is None else value)
    for ancestor in (folder, *folder.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                raise NotADirectoryError(
                    errno.ENOTDIR, f"{parameter}={shown!r}: {ancestor} is a file, not a folder"
                )
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise type(exc)(
            exc.errno, f"{parameter}={shown!r}: cannot create {folder}: {exc.strerror}"
        ) from exc


class PartialWriteError(OSError):
    """A writer failed after the first :attr:`written` records of its batch were written.

    The async backend retries only the rest of the batch, so no record is written twice
    (see :class:`kakashi.typing.Writer`). The original error, *cause*, is
    ``__cause__``; its ``errno`` is copied (``ENOSPC`` for a full disk).

    Attributes:
        written: how many records at the start of the batch are written, whole.
    """

    def __init__(self, written: int, cause: OSError) -> None:
        super().__init__(cause.errno, f"{cause.strerror or cause} (after {written} records)")
        self.written = written


class FileWriter:
    """Append records to a file kept open in append mode.

    The file is opened (and its directory created) when the writer is made, so a bad
    path fails at configuration time. Nothing is buffered in the process, so ``flush``
    has nothing to push and a crash loses nothing that ``write`` returned from. Any
    number of writers, in this process and others, share one file, and records never
    interleave. There are two ways in:

    - :meth:`write` takes a batch (the async backend's worker, or a direct call) and
      writes it with one ``write`` system call (``O_APPEND``) while the writer holds an
      exclusive ``flock`` on the file. Before each batch it checks that its path still
      names the open file (see logrotate below) and repairs a torn tail.
    - :meth:`write_record` takes one record (a synchronous pipeline calls it) and, where
      the platform makes an ``O_APPEND`` write atomic and says who else appends
      (``ATOMIC_APPEND``: Linux), writes it with one ``write`` system call and no lock
      at all, so threads and processes logging at once do not wait for each other. The
      checks that :meth:`write` makes before every batch run at most once per
      *reopen_check_interval* seconds, under the locks; elsewhere each record goes
      through :meth:`write`, as they do for a FIFO (where a ``write`` over
      ``PIPE_BUF`` bytes is not atomic).

    What a failure or a crash can leave is repaired under the ``flock``:

    - a batch write that fails part-way (a full disk) is cut off again (the file is
      truncated to its size before the write) and raises; nothing of the batch stays;
    - a record torn by a crash (``kill -9`` during a large write) is removed by the next
      writer before it appends, so the next record starts on its own line. The writer
      looks at the tail whenever the file's size is not what its own last write left, so
      a process that is the only writer never pays for it.

    Writers that append records without the lock hold a shared lock on one byte far past
    the end of the file (an open-file-description lock, dropped by the kernel when the
    process dies). While any does, a tail that looks torn may be a record on its way in,
    so nothing is cut: a failed batch keeps the whole records that landed
    (:class:`PartialWriteError`), and a torn tail is left to share its line with the
    next record, which readers skip with a warning; it is reported once that record
    lands right where it stops (a record still on its way in never is). A lock-free
    record the kernel took only part of (a short write) is counted in
    :attr:`short_writes` and reported; a newline ends the part and the record is
    written again, whole.

    logrotate: the writer checks that its path still names the open file (before each
    batch of :meth:`write`; at most once per *reopen_check_interval* for
    :meth:`write_record`); if logrotate (or anyone) moved or deleted it, the path is
    reopened. Records written between the move and that check go on into the moved
    file (give logrotate ``delaycompress`` so it does not compress a file still being
    written; ``reopen_check_interval=0`` checks before every record). ``copytruncate``
    needs nothing: with ``O_APPEND`` writes continue at the new end, leaving no NUL
    padding (what logrotate copies and truncates is its own window: records written
    between its copy and its truncation are lost).

    A write made while the same thread is inside a locked write to this writer (a
    signal handler that logs to the file its thread is writing) does not wait for the
    writer's lock: its bytes are appended, in order, once that outer write is done (or
    by the next write, flush or close).

    A forked child reopens the file on its first write, so it shares no lock with its
    parent. Where there is no ``fcntl`` (Windows) the lock is only between the threads
    of one process.

    Args:
        path: the file; parent directories are created.
        mode: permission bits for a file this writer creates (before the umask).
        fsync: also ``fsync`` on every ``flush`` (for audit logs that must survive a
            power loss; slower).
        lock_timeout: the longest a write waits for another process's lock, in seconds;
            then it raises :class:`TimeoutError` (the async backend retries, then counts
            the batch as dropped).
        reopen_check_interval: the most seconds :meth:`write_record` goes without
            checking that the path still names its file and that the tail is whole
            (0: before every record).
        hold_gil: whether :meth:`write_record` keeps the interpreter lock through its
            ``write`` (compiled build, records up to 64 KiB). ``None`` (the default):
            where the file is on a local filesystem (ext4, XFS, Btrfs, F2FS, ZFS, tmpfs,
            overlayfs; Linux), where such a write goes to the page cache in a
            microsecond or two (not where writes wait for the disk: a ``sync`` mount,
            a file with the sync attribute, ``chattr +S``); then threads logging at
            once take turns without waking each other at every record (with 4
            threads, twice the records a second of releasing it). ``True``: on any
            filesystem; ``False``: never. While a write waits (a network filesystem's
            server, or the kernel throttling a writer on a saturated disk), no other
            thread of the process runs Python code: give ``False`` where that must not
            happen. :attr:`holds_gil` says what applies to the open file.

    Raises:
        TypeError: *path* is not a str or path-like object.
        ValueError: *mode* is not within 0..0o777, *lock_timeout* is not positive,
            *reopen_check_interval* is not a number of seconds >= 0, or *hold_gil* is
            not None, True or False.
        NotADirectoryError: a component of *path* is a file (the message names it).
        OSError: the file cannot be opened.
    """

    #: The async worker keeps its claim on the GIL (``kakashi._speedups.claim_gil``)
    #: through :meth:`write`: its checks and locks are short, and its long release, the
    #: write itself, pauses the claim. A writer without it is called unclaimed.
    keeps_gil_claim = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        mode: int = 0o644,
        fsync: bool = False,
        lock_timeout: float = 10.0,
        reopen_check_interval: float = 1.0,
        hold_gil: bool | None = None,
    ):
        self.path = checked_path("path", path)
        if hold_gil is not None and not isinstance(hold_gil, bool):
            raise ValueError(f"hold_gil must be None, True or False, got {hold_gil!r}")
        self.hold_gil = hold_gil
        self._name = str(self.path)
        self._name_bytes = os.fsencode(self._name)  # for format_batch's gate
        if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o777:
            raise ValueError(f"mode must be permission bits within 0..0o777, got {mode!r}")
        if isinstance(lock_timeout, bool) or not (
            isinstance(lock_timeout, (int, float)) and lock_timeout > 0
        ):
            raise ValueError(f"lock_timeout must be a positive number, got {lock_timeout!r}")
        self.mode = mode
        self.fsync = bool(fsync)
        self.lock_timeout = float(lock_timeout)
        self.reopen_check_interval = checked_interval(
            "reopen_check_interval", reopen_check_interval
        )
        #: Lock-free records the kernel took only part of (see the class).
        self.short_writes = 0
        #: Batches written as they were formatted, the GIL released once for both (an
        #: async backend's :class:`PendingLines`; compiled build).
        self.fused_writes = 0
        self._hold = False  # set when the file is opened (see hold_gil)
        self._local = False  # (the same, for opening and closing: see _open)
        try:
            self._fcntl: Any = posix_module("fcntl", "the lock that lets processes share a file")
        except UnsupportedPlatformError:
            self._fcntl = None  # one process per file, then (Windows)
        # Re-entrant, with _busy saying that this thread is in the middle of a write: a
        # signal handler that writes then sets its bytes aside in _deferred.
        self._lock = fork_safe_rlock()
        self._busy = False
        self._deferred: list[bytes] = []
        self._fd = -1
        self._handle: _Descriptor | None = None  # owns _fd (see _Descriptor)
        self._inode: tuple[int, int] | None = None
        self._end = -1  # the file's size after this writer's last write; -1: check the tail
        self._check_at = 0.0  # monotonic time of write_record's next check
        # Whether this writer holds the presence lock on its descriptor (see _PRESENCE).
        self._present = False
        # Where a tail that looked torn stopped, while others appended without the lock
        # (-1: none): a crash's leftover if this writer's next write lands right there.
        self._torn_at = -1
        # Whether an OFD lock request of this writer failed (see _join, _may_cut).
        self._no_ofd_locks = False
        # Decided here, not per record: without an atomic append, or a way to know who
        # appends without the lock, every record takes the locked path (and so it does
        # into a FIFO: _open turns this off for one).
        self._lock_free = ATOMIC_APPEND and self._fcntl is not None
        self._open()
        _writers.add(self)

    def _open(self) -> None:
        make_folder("path", self.path.parent, self.path)
        # The descriptor's owner, before there is one: an exception from the assignment
        # on (a signal handler's, Ctrl-C) drops the handle, which closes it.
        handle = _Descriptor()
        try:
            # (Holding the GIL where the last file was local: see kakashi._descriptors.)
            handle.fd = fd = open_owned(self.path, _FLAGS, self.mode, hold=self._local)
        except IsADirectoryError as exc:
            raise IsADirectoryError(
                exc.errno, f"path={str(self.path)!r} is a folder, not a file"
            ) from exc
        # How records are written to this file (see hold_gil), decided before the handle
        # is seen; a thread still writing to the old descriptor may use either way.
        hold = self.hold_gil is not False and gil_held_writes(fd, self.hold_gil is True)
        # Whether the next file is opened and closed holding the GIL too (see
        # kakashi._descriptors): a local filesystem only, whatever hold_gil says of writes.
        local = self.hold_gil is not False and gil_held_writes(fd, False)
        info = os.fstat(fd)
        # A pipe takes a write whole only up to PIPE_BUF (4 KiB): a longer one is copied in
        # as the reader makes room, interleaved with other writers' records.
        fifo = stat.S_ISFIFO(info.st_mode)
        # The new file's state, set with no call in between (so all of it or none of it),
        # the handle last: every thread's next record takes the checked way, which makes
        # this descriptor present before any record goes on it without a lock.
        self._check_at = 0.0
        self._present = False
        self._torn_at = -1
        self._inode = (info.st_dev, info.st_ino)
        self._end = -1
        self._fd = fd
        self._hold = hold
        self._local = local
        if fifo:
            self._lock_free = False
        self._handle = handle

    def _close_fd(self) -> None:
        # Dropping the handle closes the descriptor, or, if a lock-free write on another
        # thread holds it, lets that write end first.
        self._handle = None
        self._fd = -1
        self._present = False

    def _moved(self) -> bool:
        """Whether the path no longer names the open file (moved, deleted, replaced)."""
        try:
            if self._hold:  # a local filesystem: keep the GIL for the microsecond
                return stat_identity_holding_gil(self._name) != self._inode
            info = os.stat(self._name)
        except FileNotFoundError:
            return True
        return (info.st_dev, info.st_ino) != self._inode

    def _after_fork_in_child(self) -> None:
        # The descriptors are shared with the parent, and so are the locks held on them:
        # close them (closing a copy does not release the parent's lock) and reopen on the
        # first write. The thread lock is renewed by kakashi._locks. A write another thread
        # was making is not the child's, nor is what a handler set aside in the parent.
        self._busy = False
        self._deferred = []
        # Closed already (kakashi._descriptors), with any copy a write in progress on
        # another thread of the parent held: forgotten here, or the child could never
        # write.
        self._handle = None
        self._fd = -1
        self._present = False  # the parent's presence lock stays the parent's

    # -- the lock ---------------------------------------------------------------------------

    def _lock_fd(self) -> int:
        """The descriptor the writers of this file lock: the file itself."""
        return self._fd

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold the exclusive ``flock`` shared by every writer of the file (bounded wait)."""
        fd = self._acquire()
        try:
            yield
        finally:
            self._release(fd)

    def _release(self, fd: int) -> None:
        if fd >= 0:  # explicitly: a child may hold a copy
            (flock_holding_gil if self._hold else self._fcntl.flock)(fd, self._fcntl.LOCK_UN)

    def _acquire(self) -> int:
        """Take the lock on :meth:`_lock_fd`, waiting at most ``lock_timeout``; return the fd
        (-1 where there are no locks)."""
        if self._fcntl is None:
            return -1
        fd = self._lock_fd()
        if self._hold:  # the tries that never wait keep the GIL (a local filesystem)
            take_exclusive(
                fd, self.lock_timeout, _held_flock, str(self.path), ofd_getlk_holding_gil
            )
        else:
            take_exclusive(fd, self.lock_timeout, self._fcntl.flock, str(self.path))
        return fd

    # -- writing, under the lock -------------------------------------------------------------

    def _ready(self) -> int:
        """Make the path's file the open one, repair a torn tail; return its size.

        Called with the lock held (for :class:`FileWriter`, on the descriptor it opens).
        """
        size = fstat_size_holding_gil(self._fd) if self._hold else os.fstat(self._fd).st_size
        if size != self._end:
            size = self._repair_tail(size)
        return size

    def _repair_tail(self, size: int) -> int:
        """Cut off a record torn by a crash at the end of the file; return the new size.

        Another writer appended since this one last wrote (or this one just opened the
        file): what it left ends on a newline unless it died in the middle of a write.
        Cut only when nobody can be appending without the lock (:meth:`_may_cut`);
        otherwise what looks torn may be a record still on its way in (the kernel makes
        a large write visible page by page), so it is only reported once this writer's
        next write shows that it is not (:meth:`_landed`).
        """
        start = self._end if 0 <= self._end <= size else 0
        end = self._clean_end(self._fd, size, start)
        if end < size:
            if not self._may_cut():
                # Most often a large record of another writer, its pages still being
                # copied in: only this writer's next write can tell (see _landed).
                self._torn_at = size
                return size
            # Nobody appends now, but between the look and the question the record may
            # have landed, others after it, and their writers gone: judge what is there
            # now. Appends only grow the file, so an unchanged size means unchanged bytes.
            now = os.fstat(self._fd).st_size
            if now != size:
                # (smaller only if cut outside the lock, by logrotate's copytruncate)
                size, end = now, self._clean_end(self._fd, now, start if start <= now else 0)
                if end == size:
                    return size
            os.ftruncate(self._fd, end)
            _errors.report(
                f"{self.path}: removed a record torn by a crash ({size - end} bytes at the end)"
            )
        return end

    def _may_cut(self) -> bool:
        """Whether cutting the file's tail is safe: called with the flock held, so no
        batch is on its way in; no record of a lock-free writer is either if this
        writer appends none and can take the presence byte (see :data:`_PRESENCE`).

        Asked even by a writer whose own records take the flock (a rotating writer, one
        on a file system without OFD locks): other writers of the file may not.
        """
        if not ATOMIC_APPEND:
            return True  # no writer here appends without the flock
        if self._present:
            return False
        try:
            if not _presence(self._fd, _fcntl.F_WRLCK):
                return False
        except OSError:
            # ENOLCK is both "no such locks here" and a lock the kernel could not
            # allocate (memory pressure) while others hold theirs: cut only where this
            # writer's own shared lock failed already (the file system has none).
            return self._no_ofd_locks
        _presence(self._fd, _fcntl.F_UNLCK)
        return True

    def _landed(self, fd: int, data: bytes) -> None:
        """After *data* was appended whole (with the thread lock held): if a tail looked
        torn while others appended (:attr:`_torn_at`), report it when *data* landed right
        where it stopped.

        A record on its way in holds the file's inode lock for its whole ``write``, so
        a later append lands after all of it: one that starts where the torn bytes stop
        shows that they are all there will ever be (a writer died in the middle). If
        another writer's record landed there first, nothing is known and nothing is
        said (readers still skip the torn part with a warning). The descriptor's offset
        says where *data* ended; the bytes are read back in case another thread's write
        on the same descriptor moved it.
        """
        torn_at, self._torn_at = self._torn_at, -1
        try:
            start = os.lseek(fd, 0, os.SEEK_CUR) - len(data)
            if start != torn_at or os.pread(fd, len(data), start) != data:
                return
            if start == 0 or os.pread(fd, 1, start - 1) == b"\n":  # the file was cut since
                return
        except OSError:  # the records are written; only the report is given up
            return
        _errors.report(
            f"{self.path}: a record torn by a crash",
            detail="left before the next record: other writers append without the lock; "
            "readers skip the torn part",
        )

    @staticmethod
    def _clean_end(fd: int, size: int, start: int) -> int:
        """Where the whole records of the file end (see :func:`clean_end`)."""
        return clean_end(fd, size, start)

    def encode(self, batch: Sequence[bytes]) -> bytes:
        """Return the bytes written for *batch*: its records, each ending with a newline."""
        return newline_joined(batch)

    def _append(self, data: bytes | PendingLines, size: int) -> None:
        """Append all of *data* to a file of *size* bytes, or nothing.

        Called with the lock held. The kernel may take part of the data before failing
        (ENOSPC): the file is truncated back to *size*, which only this writer can have
        changed, so no partial line is left and a retry does not repeat records.
        """
        done = error = 0
        if isinstance(data, PendingLines):  # formatted now, written as it is when it can be
            data, done, error, _ = data.write_to(self._fd)
            if done:
                self.fused_writes += 1
        self._append_rest(data, size, done, error)

    def _append_rest(self, data: bytes, size: int, done: int, error: int) -> None:
        """:meth:`_append` once the first *done* bytes of *data* are written (*error*: the
        ``errno`` that stopped that, 0: none)."""
        view = memoryview(data)
        try:
            if error:
                raise OSError(error, os.strerror(error))
            while done < len(data):
                if done == 0 and type(data) is bytes:  # the worker's claim paused meanwhile
                    done = write_releasing_gil(self._fd, data)
                else:  # what a short write left, or an encode that returned another buffer
                    done += os.write(self._fd, view[done:])
        except OSError as exc:
            self._end = -1
            if done:
                if not self._may_cut():  # records of others may follow: keep what landed
                    whole = self._whole_records(view[:done])
                    if whole:
                        raise PartialWriteError(whole, exc) from exc
                    raise
                try:
                    os.ftruncate(self._fd, size)
                except OSError as cut_exc:  # the tail check of the next write cuts it off
                    _errors.report(f"{self.path}: cutting off a failed write", cut_exc)
            raise
        self._end = size + done
        if self._torn_at >= 0:
            self._landed(self._fd, data)

    def _whole_records(self, part: memoryview) -> int:
        """How many whole records the start *part* of an encoded batch holds."""
        return bytes(part).count(b"\n")

    def write(self, batch: Sequence[bytes]) -> None:
        """Write the batch with one system call (reopening a moved path) under the lock.

        A :class:`PendingLines` batch is formatted under the lock, and written as it is
        formatted, with the GIL released once (see :attr:`fused_writes`).

        Re-entered on this thread (a signal handler), the batch is written right after
        the write it interrupted, without waiting for the lock (see the class).
        """
        data: bytes | PendingLines
        if type(batch) is PendingLines and type(self) is FileWriter:
            data = batch
        else:
            data = self.encode(batch.lines() if type(batch) is PendingLines else batch)
        run_in_region(self._write_held, data)

    def _write_held(self, data: bytes | PendingLines) -> None:
        with self._lock:
            if self._busy:
                if isinstance(data, PendingLines):
                    data = newline_joined(data.lines())
                self._deferred.append(data)
                return
            self._busy = True
            try:
                if self._deferred:
                    self._write_deferred()
                self._write_now(data)
                if self._deferred:
                    self._write_deferred()
            except BaseException:
                self._let_go_of_flock()
                raise
            finally:
                self._busy = False

    def _let_go_of_flock(self) -> None:
        """After an exception out of a locked write (holding the thread lock): unlock the
        file's flock. A signal handler's exception can land between taking it and the
        ``try`` that gives it back: it stayed held until this writer's next write, other
        processes' writers of the file waiting meanwhile. Unlocking it when it is not
        held changes nothing (no other thread of the process holds it: the thread lock
        is held)."""
        if self._fd >= 0 and self._fcntl is not None:
            with contextlib.suppress(OSError):
                self._fcntl.flock(self._fd, self._fcntl.LOCK_UN)

    def encode_record(self, line: bytes) -> bytes:
        """Return the bytes written for one record: *line* and a newline."""
        return line + b"\n"

    def write_record(self, line: bytes) -> None:
        """Write one record, *line* (a synchronous pipeline's call), with one ``write``,
        no lock.

        Every *reopen_check_interval* seconds, and after a short write, the record goes
        the way of :meth:`write` instead (see the class).

        Raises:
            OSError: nothing of the record was written (a full disk, ...).
        """
        if not self._lock_free:  # no atomic append, or no OFD locks: the locked way
            self.write((line,))
            return
        data = self.encode_record(line)
        handle = self._handle
        # The rare cases go the locked way: a check due, a closed file, a locked write
        # under way (a signal handler's record then waits its turn), records set aside.
        if handle is None or _monotonic() >= self._check_at or self._busy or self._deferred:
            self._write_record_checked(data)
            return
        written = (write_holding_gil if self._hold else os.write)(handle.fd, data)
        if written != len(data):
            self._short_write(handle, data, written)

    @property
    def holds_gil(self) -> bool:
        """Whether :meth:`write_record` keeps the interpreter lock through its ``write``
        to the open file (see *hold_gil*)."""
        return self._lock_free and self._hold

    def _write_record_checked(self, data: bytes) -> None:
        """Reopen a moved path, join the lock-free writers of the file (repairing a torn
        tail if none is there yet), then append *data*; the checks under the locks."""
        run_in_region(self._write_record_locked, data)

    def _write_record_locked(self, data: bytes) -> None:
        with self._lock:
            if self._busy:  # a signal handler, inside this thread's locked write
                self._deferred.append(data)
                return
            self._busy = True
            try:
                self._check()
                if not self._present:  # no OFD locks (or not joined): the locked way
                    self._deferred.append(data)
                    self._write_deferred()
                    return
                handle = self._handle
                assert handle is not None  # _check opened it
                # What was set aside goes first, and what a signal handler sets aside
                # meanwhile right after; it stays set aside if the write fails.
                while True:
                    taken = len(self._deferred)
                    if taken:
                        data = b"".join(self._deferred[:taken]) + data
                    written = os.write(handle.fd, data)
                    del self._deferred[:taken]
                    if written != len(data):
                        self._short_write(handle, data, written)
                    elif self._torn_at >= 0:
                        self._landed(handle.fd, data)
                    if not self._deferred:
                        break
                    data = b""
            except BaseException:
                self._let_go_of_flock()
                raise
            finally:
                self._busy = False

    def _check(self) -> None:
        """Reopen a moved path; on a descriptor not yet present, repair a torn tail
        (only if no other writer appends without the lock) and take the presence lock.

        Called with the thread lock held.
        """
        if self._fd < 0 or self._moved():
            self._close_fd()
            self._open()
        if not self._present:
            fd = self._acquire()
            try:
                self._ready()
                self._present = self._join()
            finally:
                self._release(fd)
        if self._present:  # else every record checks again (and takes the locked way)
            self._check_at = _monotonic() + self.reopen_check_interval

    def _join(self) -> bool:
        """Take the presence lock (with the flock held, so no writer of this class is
        holding it exclusively; a rotating writer, under a lock of its own, may be for
        a moment); whether this writer holds it.

        Where the file system has no such locks, nobody could tell that this writer
        appends without the flock: from then on its records take the lock, as batches do.
        """
        try:
            return _presence(self._fd, _fcntl.F_RDLCK)
        except OSError as exc:
            self._lock_free = False
            self._no_ofd_locks = True
            _errors.report(f"{self.path}: records take the lock (no OFD locks here)", exc)
            return False

    def _short_write(self, handle: _Descriptor, data: bytes, written: int) -> None:
        """The kernel took the first *written* bytes of *data* only (a full disk): end
        that line and write the whole record after it, in one write; counted, reported.

        Others may have appended after the part already (without the lock, nothing
        keeps them out), so the part is never cut: it stays one line readers skip (if a
        record of another writer came first, the newline makes an empty line instead).

        Raises:
            OSError: the record could not be written again (the disk is still full);
                the writer's next write then starts with the newline that ends the part.
        """
        self.short_writes += 1
        _errors.report(
            f"{self.path}: a short write",
            detail=f"{written} of {len(data)} bytes; that part is left as a line of its "
            "own, which readers skip, and the record is written again",
        )
        data = b"\n" + data
        written = 0
        try:
            written = os.write(handle.fd, data)
        finally:
            if written != len(data):
                self._deferred.append(b"\n")  # ends the part before the next write
        if written != len(data):
            self.short_writes += 1
            raise OSError(errno.EIO, f"{self.path}: a short write again ({written} bytes)")

    def _write_now(self, data: bytes | PendingLines) -> None:
        """Append *data* (called with the thread lock held and ``_busy`` set)."""
        if type(data) is PendingLines:
            rest = self._write_gated(data)
            if rest is None:
                return
            data = rest
        if self._fd < 0:
            self._open()
        yield_gil()  # a piece of an async worker's stretch with the GIL ends here
        fd = self._acquire()  # no context manager: this is the hot path
        # Looked at with the flock held: a rotating writer of the path moves the file
        # only holding it, so the batch cannot land in a file it has just moved away.
        while self._moved():
            self._release(fd)
            self._close_fd()
            self._open()
            fd = self._acquire()
        try:
            self._append(data, self._ready())
        finally:
            self._release(fd)

    def _write_gated(self, pending: PendingLines) -> bytes | PendingLines | None:
        """Append *pending* the way :meth:`_write_now` does, its checks, locks and
        write made in the release of the GIL that formats it (``format_batch``'s gate),
        when the file is as this writer left it: ``None`` once appended, else what is
        left to append the usual way (nothing of it written, no lock held).

        The gate asks what :meth:`_acquire` (its first, waitless try), :meth:`_moved`
        and :meth:`_ready` ask: whether the flock is free and nobody waits for it (when
        :func:`~kakashi._turns.take_exclusive` would let one go first), the path names
        the open file, and the file ends where this writer's last write did.
        Anything else (moved, contended, appended to by others, torn) takes the usual
        way, which knows what to do. The pure build's ``format_batch`` tries no write.
        """
        inode = self._inode
        if self._fd < 0 or self._end < 0 or self._torn_at >= 0 or inode is None:
            return pending
        if self._fcntl is None:
            return pending
        fd = self._fd
        waiting = WAITING_BYTE if lets_waiters_go_first() else -1  # as _acquire would
        gate = (self._name_bytes, inode[0], inode[1], self._end, waiting)
        data, done, error, outcome = pending.write_to(fd, gate)
        if outcome == GATE_WRITTEN:
            self._end += done
            self.fused_writes += 1
            return None
        if outcome != GATE_LOCKED:
            return data
        try:  # the flock is held: finish (or undo) the append as _append does
            if done:
                self.fused_writes += 1
            self._append_rest(data, self._end, done, error)
        finally:
            self._release(fd)
        return None

    def _write_deferred(self) -> None:
        """Write what re-entrant writes set aside (it stays there if the write fails)."""
        while self._deferred:
            taken = len(self._deferred)
            self._write_now(b"".join(self._deferred[:taken]))
            del self._deferred[:taken]  # one step: a handler may append meanwhile

    def _catch_up(self) -> None:
        """Write what re-entrant writes set aside, unless a write of this thread is under way."""
        if self._deferred and not self._busy:
            self._busy = True
            try:
                self._write_deferred()
            finally:
                self._busy = False

    def flush(self) -> None:
        """Nothing is buffered; with ``fsync=True``, force the data to disk."""
        if not self.fsync and not self._deferred:
            return
        run_in_region(self._flush_locked)

    def _flush_locked(self) -> None:
        with self._lock:
            self._catch_up()
            if self.fsync and self._fd >= 0:
                os.fsync(self._fd)

    def close(self, timeout: float | None = None) -> None:
        """Flush and close the file; a later write reopens it.

        Waits at most *timeout* seconds (``None``: as long as it takes) for a write of
        another thread to end; after that, the file is left open.
        """
        run_in_region(self._close_locked, timeout)

    def _close_locked(self, timeout: float | None) -> None:
        wait = -1 if timeout is None else max(0.0, timeout)
        # Taken inside the `try`, with no call before it: a signal handler that raises as
        # the lock is taken (before *taken* is set) finds it released by the `finally`.
        taken = False
        try:
            taken = self._lock.acquire(timeout=wait)
            if not taken or self._busy:  # busy: re-entered during a write of this thread
                return
            self._catch_up()
            if self._fd >= 0:
                if self.fsync:
                    os.fsync(self._fd)
                self._close_fd()
        finally:
            if taken or self._lock._is_owned():  # type: ignore[attr-defined]
                self._lock.release()

    def __repr__(self) -> str:
        return f"<FileWriter {str(self.path)!r}>"


def clean_end(fd: int, size: int, start: int = 0) -> int:
    """The end of the last whole line of the plain file open as *fd*, of *size* bytes
    (0 if none).

    The bytes before *start* are known to end on a line boundary; only what follows is
    read, backwards, in chunks.
    """
    if size <= start or os.pread(fd, 1, size - 1) == b"\n":
        return size  # nothing new, or it ends on a newline: the common case
    end = size
    while end > start:
        begin = max(start, end - _TAIL_CHUNK)
        chunk = os.pread(fd, end - begin, begin)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            return begin + newline + 1
        end = begin
    return start


def file_writer(
    path: str | os.PathLike[str],
    *,
    mode: int = 0o644,
    fsync: bool = False,
    lock_timeout: float = 10.0,
    reopen_check_interval: float = 1.0,
    hold_gil: bool | None = None,
) -> FileWriter:
    """Return a :class:`FileWriter` appending to *path* (see it for the options)."""
    return FileWriter(
        path,
        mode=mode,
        fsync=fsync,
        lock_timeout=lock_timeout,
        reopen_check_interval=reopen_check_interval,
        hold_gil=hold_gil,
    )


_writers: weakref.WeakSet[FileWriter] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for writer in list(_writers):
        writer._after_fork_in_child()


after_fork_in_child(_after_fork_in_child)
