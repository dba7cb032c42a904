"""Taking an exclusive ``flock`` in turn, within a time limit.

``flock`` has no queue a waiter can rely on, and a wait with a time limit has to poll
(``LOCK_NB``): processes that write batch after batch free the lock only for the moment
between two batches, and a waiter that polls rarely catches it free (three processes on
one rotating file kept a waiter out for seconds). So a waiter says that it waits, with a
shared open-file-description lock on one byte of the locked file (:data:`_WAITING`; the
kernel drops it when the waiter's descriptor closes, also when the process dies), and a
process that comes to take the lock while another waits lets the waiter go first: it
takes its turn once nobody waits any more, or after :data:`_DEFER_LIMIT` seconds (a
waiter stopped by a debugger must not stop the others: once a process gave up waiting
for a waiter, it lets nobody go first for :data:`_DEFER_PAUSE` seconds). Where open-file-description
locks are missing (not Linux, a file system without them), nobody says that it waits
and the lock is taken as before.
"""

from __future__ import annotations

import errno
import struct
import time
from collections.abc import Callable

try:
    import fcntl
except ImportError:  # Windows: the writers take no flock there
    fcntl = None  # type: ignore[assignment]

__all__ = ["WAITING_BYTE", "lets_waiters_go_first", "take_exclusive"]

# Next to the file writer's presence byte (kakashi.writers.file._PRESENCE), far past any
# data: a lock there never covers a record.
_WAITING = WAITING_BYTE = (1 << 62) + 1
_FLOCK_STRUCT = "@hhqqi4x"  # struct flock: l_type, l_whence, l_start, l_len, l_pid
# How long a process lets a waiter go first at most, and how long after it gave up (the
# waiter did not take the lock: stopped) it lets nobody go first.
_DEFER_LIMIT = 1.0
_DEFER_PAUSE = 10.0
_defer_from = 0.0  # the monotonic time before which nobody is let go first
_OFD = fcntl is not None and hasattr(fcntl, "F_OFD_GETLK")


def _say_waiting(fd: int, kind: int) -> bool:
    """Set (``F_RDLCK``) or drop (``F_UNLCK``) this descriptor's waiting lock; whether it
    could (no such locks here: ``False``)."""
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack(_FLOCK_STRUCT, kind, 0, _WAITING, 1, 0))
    except OSError:
        return False
    return True


def _ofd_getlk(fd: int, request: bytes) -> bytes:
    answer: bytes = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, request)
    return answer


def _another_waits(fd: int, getlk: Callable[[int, bytes], bytes] = _ofd_getlk) -> bool:
    """Whether a descriptor of the file other than *fd*'s says that it waits (asked with
    *getlk*, ``F_OFD_GETLK``)."""
    request = struct.pack(_FLOCK_STRUCT, fcntl.F_WRLCK, 0, _WAITING, 1, 0)
    try:
        answer = getlk(fd, request)
    except OSError:
        return False
    kind: int = struct.unpack(_FLOCK_STRUCT, answer)[0]
    return kind != fcntl.F_UNLCK


def _let_go_first(fd: int, until: float) -> None:
    """Wait until nobody waits for the lock on *fd* any more, or *until*; if still
    somebody does then, let nobody go first for :data:`_DEFER_PAUSE` seconds."""
    global _defer_from
    while time.monotonic() < until:
        time.sleep(0.0002)
        if not _another_waits(fd):
            return
    _defer_from = time.monotonic() + _DEFER_PAUSE


def lets_waiters_go_first() -> bool:
    """Whether :func:`take_exclusive` would let a process that waits go first now (not
    in the pause after it gave up on one, nor where there are no OFD locks)."""
    return _OFD and time.monotonic() >= _defer_from


def take_exclusive(
    fd: int,
    timeout: float,
    flock: Callable[[int, int], object],
    holder: str,
    getlk: Callable[[int, bytes], bytes] = _ofd_getlk,
) -> None:
    """Take the exclusive ``flock`` on *fd* (with *flock*, ``fcntl.flock`` or a wrapper
    of it), in turn (see the module), waiting at most *timeout* seconds. *getlk* asks
    whether another waits (``F_OFD_GETLK``, or a wrapper of it).

    Raises:
        TimeoutError: another process held it all that time (*holder* names the file in
            the message).
        OSError: what *flock* raises but ``EWOULDBLOCK``.
    """
    request = fcntl.LOCK_EX | fcntl.LOCK_NB
    started = time.monotonic()
    deadline = started + timeout
    if _OFD and started >= _defer_from and _another_waits(fd, getlk):  # the waiter first
        _let_go_first(fd, min(deadline, started + _DEFER_LIMIT))
    try:
        flock(fd, request)
        return
    except BlockingIOError:
        pass
    said = _OFD and _say_waiting(fd, fcntl.F_RDLCK)
    try:
        pause = 0.0002
        while True:
            time.sleep(pause)
            try:
                flock(fd, request)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        errno.ETIMEDOUT,
                        f"{holder}: another process held the lock for more than {timeout:g} s",
                    ) from None
                # At most 1 ms between tries: the lock may be free only for a moment.
                pause = min(pause * 2, 0.001)
    finally:
        if said:
            _say_waiting(fd, fcntl.F_UNLCK)
