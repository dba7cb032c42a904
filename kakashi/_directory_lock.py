"""An exclusive lock on a directory, which nobody can delete or replace while it is held.

The writers that rotate a file take a lock that every process writing the file must
share. A lock on a separate file (``app.log.lock``) fails the day something deletes that
file while a writer holds it: the next writer creates a fresh one, locks it at once and
goes ahead beside the first (a clean-up job deleting the lock files lost a fifth of the
records of four processes rotating one path). A directory cannot be deleted while it holds
the log, nor replaced under its name without renaming or deleting the whole directory and
its files; a writer then finds its lock file gone and locks the directory the name names
now (:meth:`DirectoryLock.renew`). So the rotating writers take an exclusive ``flock`` on
the directory of their file first, then their lock file.

What it costs and where it does not work:

- Every log of one directory shares the lock: the writers of ``app.log`` and
  ``access.log`` in one folder take turns for the moment of each batch (a ``write``
  system call, or a rotation). In one process, the writers of a directory share one
  :class:`DirectoryLock`, which the thread holding it may take again (a signal handler, a
  ``rotator`` hook, that logs to another file of the directory), so a process never waits
  for itself.
- Opening a directory needs permission to read it (the writers list it anyway, to find
  their rotated files). Where it cannot be opened or locked (``EACCES``; NFS, which gives
  ``flock`` exclusive locks only on files open for writing: ``EBADF``; a filesystem
  without locks: ``ENOLCK``, ``EOPNOTSUPP``), :meth:`DirectoryLock.acquire` raises
  :class:`DirectoryLockUnsupported` and the writer keeps to its lock file alone (with the
  old limit, reported once).
- A forked child drops the descriptor it inherited (closing its copy does not release the
  parent's lock) and opens its own at its first write.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
import weakref

from kakashi._descriptors import close_owned, open_owned
from kakashi._locks import after_fork_in_child, fork_safe_lock, fork_safe_rlock
from kakashi._turns import take_exclusive

try:
    import fcntl
except ImportError:  # Windows: no rotating writer (it needs fcntl), so no directory lock
    fcntl = None  # type: ignore[assignment]

__all__ = ["DirectoryLock", "DirectoryLockUnsupported", "directory_lock"]

# What open(2) or flock(2) of a directory answers where such a lock cannot be had.
_UNSUPPORTED = frozenset(
    code
    for code in (
        errno.EACCES,  # no permission to read the directory
        errno.EPERM,
        errno.EBADF,  # NFS: an exclusive flock needs a file open for writing
        errno.ENOLCK,
        errno.EOPNOTSUPP,
        getattr(errno, "ENOTSUP", errno.EOPNOTSUPP),
        errno.EINVAL,
        errno.ENOSYS,
    )
)
_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)


class DirectoryLockUnsupported(OSError):
    """The directory cannot be opened or locked here (see the module); ``errno`` says why."""


class DirectoryLock:
    """The exclusive ``flock`` on *directory*, shared by this process's writers of files in it.

    :meth:`acquire` and :meth:`release` pair up; the thread that holds the lock may
    acquire it again. Between threads of the process a thread lock decides, between
    processes the ``flock``.
    """

    __slots__ = ("__weakref__", "_depth", "_fd", "_inode", "_name", "_thread_lock", "directory")
    _close = staticmethod(close_owned)  # kept: module globals may be gone at exit

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._name = directory
        self._thread_lock = fork_safe_rlock()
        self._fd = -1
        self._inode: tuple[int, int] | None = None
        self._depth = 0  # how many acquires of the holding thread are not released yet
        _every_lock.add(self)

    def acquire(self, timeout: float) -> None:
        """Hold the lock, waiting at most *timeout* seconds.

        Raises:
            TimeoutError: another thread or process held it all that time.
            DirectoryLockUnsupported: the directory cannot be opened or locked here.
            OSError: the directory cannot be made or opened (a full disk, ...).
        """
        # The common case first, without reading the clock: nobody holds it.
        if not self._thread_lock.acquire(False):
            started = time.monotonic()
            if not self._thread_lock.acquire(timeout=timeout):
                raise TimeoutError(
                    errno.ETIMEDOUT,
                    f"{self._name}: another thread held the lock for {timeout:g} s",
                )
            timeout = max(0.0, timeout - (time.monotonic() - started))
        if self._depth:
            self._depth += 1  # taken again by the thread holding it
            return
        try:
            if self._fd < 0:
                self._open()
            take_exclusive(self._fd, timeout, _flock, self._name)
            self._depth = 1
        except BaseException:
            # The flock may be taken (a signal handler's exception as it returned): the
            # thread lock is held, so no other thread of the process holds it.
            if self._fd >= 0 and not self._depth:
                with contextlib.suppress(OSError):
                    _flock(self._fd, _UNLOCK)
            self._thread_lock.release()
            raise

    def held_here(self) -> int:
        """How many acquires of the calling thread are not released yet (0: it holds no
        acquire of this lock)."""
        return self._depth if self._thread_lock._is_owned() else 0  # type: ignore[attr-defined]

    def let_go(self, keep: int) -> None:
        """Give back what the calling thread holds beyond *keep* acquires (what it held
        before a call that a signal handler's exception interrupted): its counted
        acquires, and a thread lock taken but not yet counted; unlock the directory if
        none is kept. Nothing to do on an interpreter without ``RLock._recursion_count``
        (before 3.11, where no stretch of Python is safe from a handler anyway)."""
        lock = self._thread_lock
        count = getattr(lock, "_recursion_count", None)
        if count is None or not lock._is_owned():  # type: ignore[attr-defined]
            return
        extra = count() - keep
        if extra <= 0:
            return
        self._depth = keep
        if not keep and self._fd >= 0:
            with contextlib.suppress(OSError):
                _flock(self._fd, _UNLOCK)
        for _ in range(extra):
            lock.release()

    def release(self) -> None:
        """Give back one :meth:`acquire`; the last one unlocks the directory."""
        self._depth -= 1
        try:
            if not self._depth and self._fd >= 0:
                # Explicitly: a forked child may hold a copy of the descriptor.
                _flock(self._fd, _UNLOCK)
        finally:
            self._thread_lock.release()

    def renew(self, timeout: float) -> None:
        """Make sure the lock held is on the directory the name names now, or lock that one.

        The holder calls it when something under the name changed (its lock file is gone
        or replaced): the directory may have been renamed or deleted meanwhile. Not
        checked at every acquire, which would cost a ``stat`` a batch. Only the outermost
        acquire of the holding thread renews (an inner one keeps what the outer locked).

        Raises:
            As :meth:`acquire`.
        """
        if self._depth != 1 or self._inode == _identity(self._name):
            return
        _flock(self._fd, _UNLOCK)
        self._forget()
        self._open()
        take_exclusive(self._fd, timeout, _flock, self._name)

    def _open(self) -> None:
        try:
            try:
                fd = open_owned(self._name, _FLAGS)
            except FileNotFoundError:  # deleted with its files: the writer makes it again
                os.makedirs(self._name, exist_ok=True)
                fd = open_owned(self._name, _FLAGS)
        except OSError as exc:
            _raise_unsupported(exc, f"{self._name}: cannot open the directory")
            raise
        info = os.fstat(fd)
        self._fd, self._inode = fd, (info.st_dev, info.st_ino)

    def _forget(self) -> None:
        """Close the descriptor (:meth:`renew` unlocked it first)."""
        fd, self._fd, self._inode = self._fd, -1, None
        if fd >= 0:
            with contextlib.suppress(OSError):
                self._close(fd)

    def _after_fork_in_child(self) -> None:
        self._depth = 0  # the thread lock is renewed by kakashi._locks
        # Closed already, without unlocking (kakashi._descriptors): forgotten here.
        self._fd, self._inode = -1, None

    def __del__(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                self._close(self._fd)

    def __repr__(self) -> str:
        return f"<DirectoryLock {self._name!r}>"


def _identity(name: str) -> tuple[int, int] | None:
    """The device and inode of the directory *name* names now (``None``: gone)."""
    try:
        info = os.stat(name)
    except FileNotFoundError:
        return None
    return (info.st_dev, info.st_ino)


def _flock(fd: int, operation: int) -> None:
    """``flock``, with what says the directory cannot be locked raised as such."""
    try:
        _flock_call(fd, operation)
    except BlockingIOError:
        raise
    except OSError as exc:
        _raise_unsupported(exc, "cannot lock the directory")
        raise


def _raise_unsupported(exc: OSError, what: str) -> None:
    """Raise *exc* as :class:`DirectoryLockUnsupported` when its errno says the
    directory cannot be locked here (see the module); return otherwise."""
    if exc.errno in _UNSUPPORTED:
        raise DirectoryLockUnsupported(exc.errno, f"{what}: {exc.strerror}") from exc


if fcntl is not None:  # module constants: one lookup fewer a batch
    _flock_call = fcntl.flock
    _UNLOCK = fcntl.LOCK_UN


# The one lock object per directory in this process (weakly held: gone with its writers).
_by_directory: weakref.WeakValueDictionary[str, DirectoryLock] = weakref.WeakValueDictionary()
_every_lock: weakref.WeakSet[DirectoryLock] = weakref.WeakSet()
_making = fork_safe_lock()


def directory_lock(directory: str | os.PathLike[str]) -> DirectoryLock:
    """The process's :class:`DirectoryLock` on *directory* (made on first use)."""
    name = os.path.abspath(directory)
    with _making:  # two threads making the first writers of a directory get one lock
        lock = _by_directory.get(name)
        if lock is None:
            lock = _by_directory[name] = DirectoryLock(name)
    return lock


def _after_fork_in_child_hook() -> None:
    for lock in list(_every_lock):
        lock._after_fork_in_child()


after_fork_in_child(_after_fork_in_child_hook)
