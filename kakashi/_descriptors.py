"""The file descriptors Kakashi opens, and a forked child's copies of them.

A child of ``os.fork()`` inherits every descriptor its parent has open. The writers'
fork hooks close the ones the writers hold, but at the moment of the fork a descriptor
can be in other hands: a write in progress on another thread holds the file's handle,
the compressor thread holds a rotated file and its compressed copy. That thread does
not exist in the child and its frame is never unwound, so its copy stayed open for the
child's whole life: a rotated or deleted file's space held while the child ran, and a
lock on a shared open file description never released.

So every descriptor the writers open goes through :func:`open_owned` and is closed
through :func:`close_owned`, and the child closes its copies of all that were open at
the fork before any fork hook runs (the writers reopen their files at their next
write). Nothing here takes a lock: the parent never waits for a fork, nor a fork for an
open that hangs (a lock that ``fork`` waited for deadlocked with the writers' own
locks).

A descriptor opened at the fork could be the child's without being noted yet: its
thread waits for the GIL between ``open(2)`` and the note, for as long as other threads
keep it, and may be forked meanwhile. So a writer that knows its files are on a local
filesystem opens and closes them holding the GIL (compiled build), and no thread can
fork in between. What is still kept: such a copy in the pure build, or for a file of
unknown filesystem (a writer's first open), opened or being closed at the fork.
Telling those copies apart from the application's own descriptors on the same files
is guesswork (by name, flags or inode: a review found each guess closing an
application's descriptor), so they are left open, which only costs the space they
hold. A fork made inside a signal handler resumes, in the child, the code the handler
interrupted, which may be in the middle of opening or closing one of these
descriptors: not supported.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from typing import IO, Any

__all__ = ["close_owned", "forks", "open_owned", "owned_file"]

# Open now: descriptor -> None, or for one opened holding the GIL, what closes it so.
_owned: dict[int, Any] = {}
# How many forks made this process, a child of a child counting two: what a finalizer
# reads to know a descriptor object from before a fork (a list: read without a call).
# Counted by the fork hook: a fork that runs no Python hooks (a C extension calling
# fork(2) and going on in Python, uWSGI without py-call-osafterfork) is not seen; such a
# child keeps the parent's descriptors, and one of the parent's descriptor objects
# freed there closes that number (the inherited copy, or whatever the child opened
# under the number after closing the copy itself).
forks = [0]


def open_owned(
    path: str | os.PathLike[str], flags: int, mode: int = 0o777, *, hold: bool = False
) -> int:
    """``os.open(path, flags, mode)``, the descriptor noted as Kakashi's.

    With *hold* (a file on a local filesystem, as the writer found its last one), the
    compiled build opens without letting the interpreter lock go, so that no thread
    forks between the ``open`` and the note (see the module); what would make the open
    wait (a FIFO nobody reads, another process's lease on the file) makes it open the
    usual way instead, with the lock let go.

    Close it with :func:`close_owned` (not ``os.close``): a forked child closes its copy.

    Raises:
        OSError: as ``os.open``.
    """
    if hold:
        from kakashi._speedups import close_holding_gil, open_holding_gil

        try:
            return int(open_holding_gil(path, flags, mode, _owned, close_holding_gil))
        except OSError as exc:
            # A FIFO nobody reads (ENXIO), a lease another process holds on the file
            # (EAGAIN, where the usual open waits for the holder to let go).
            if exc.errno not in (errno.ENXIO, errno.EAGAIN, errno.EWOULDBLOCK):
                raise
    fd = os.open(path, flags, mode)
    _owned[fd] = None
    return fd


def close_owned(fd: int, _owned: dict[int, Any] = _owned, _close: Any = os.close) -> None:
    """Close *fd*, opened with :func:`open_owned`; nothing if it is not open (already
    closed, or closed in a forked child by this module). One opened holding the GIL is
    closed holding it (``close_holding_gil``), so that no fork comes between forgetting
    it and closing it.

    In a forked child, close only what the child opened: what the parent had open was
    closed there already, and its number may be another file's now.

    (The defaults keep what it needs: it runs from ``__del__`` at exit too, when module
    globals may be gone.)

    Raises:
        OSError: as ``os.close``.
    """
    # No call before the close (a finalizer calls this): a signal handler's exception
    # can come only at this function's first instruction, not between looking the
    # descriptor up and closing it. (Two steps that no other thread comes between
    # under the GIL; a free-threaded build would need a lock here.)
    if fd not in _owned:
        return
    closer = _owned[fd]
    if closer is None:
        del _owned[fd]  # (forgotten first: a fork meanwhile keeps a copy)
        _close(fd)
    else:
        closer(fd, _owned)


@contextlib.contextmanager
def owned_file(
    path: str | os.PathLike[str], mode: str, *, hold: bool = False
) -> Iterator[IO[bytes]]:
    """A binary file object on a descriptor from :func:`open_owned` (with *hold*), closed
    on leaving.

    *mode* is ``"rb"``, ``"wb"`` or ``"r+b"`` (as :func:`open`; created files get
    ``0o666`` less the umask).
    """
    flags = {
        "rb": os.O_RDONLY,
        "wb": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
        "r+b": os.O_RDWR,
    }[mode] | getattr(os, "O_CLOEXEC", 0)
    fd = open_owned(path, flags, 0o666, hold=hold)
    try:
        with open(fd, mode, closefd=False) as file:
            yield file
    finally:
        close_owned(fd)


def _after_fork_in_child() -> None:
    """Close the child's copies of Kakashi's descriptors (see the module)."""
    forks[0] += 1
    try:
        for fd in list(_owned):
            with contextlib.suppress(OSError):
                os.close(fd)
    finally:  # whatever happened, the parent's numbers are not the child's to close
        _owned.clear()
