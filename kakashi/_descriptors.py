"""The file descriptors Kakashi opens, and a forked child's copies of them.

A child of ``os.fork()`` inherits every descriptor its parent has open. The writers'
fork hooks close the ones the writers hold, but at the moment of the fork a descriptor
can be in other hands: a write in progress on another thread holds the file's handle,
the compressor thread holds a rotated file and its compressed copy, a thread is
between ``open(2)`` and noting the number, or inside ``close(2)``. That thread does not
exist in the child and its frame is never unwound, so its copy stayed open for the
child's whole life: a rotated or deleted file's space held while the child ran, and a
lock on a shared open file description never released.

So every descriptor the writers open goes through :func:`open_owned` and is closed
through :func:`close_owned`, and the child closes its copies before any fork hook runs
(the writers reopen their files at their next write):

- every descriptor open at the fork (noted in :func:`open_owned`, until
  :func:`close_owned` lets it go);
- one that :func:`close_owned` was closing, if the child still has it and it is still
  the same file (the number may have gone to another open since the close);
- one that :func:`open_owned` was opening, found among the child's descriptors by the
  path it names and the way it was opened (on Linux, from ``/proc/self/fd``; elsewhere
  such a copy is kept, as before).

Nothing here takes a lock: the parent never waits for a fork, nor a fork for an open
that hangs (a lock that ``fork`` waited for deadlocked with the writers' own locks).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from itertools import count
from typing import IO, Any

__all__ = ["close_owned", "open_owned", "owned_file"]

_owned: dict[int, None] = {}  # open now: descriptor -> None
_closing: dict[int, tuple[int, int] | None] = {}  # inside close(2): its (device, inode)
_opening: dict[int, tuple[str, int]] = {}  # inside open(2): key -> (absolute path, flags)
_keys = count()
# The open flags a descriptor's copy is recognised by (F_GETFL answers them).
_KEPT_FLAGS = os.O_ACCMODE | os.O_APPEND if hasattr(os, "O_ACCMODE") else 0
_FD_LISTING = "/proc/self/fd"


def open_owned(
    path: str | os.PathLike[str], flags: int, mode: int = 0o777, *, dir_fd: int | None = None
) -> int:
    """``os.open(path, flags, mode)``, the descriptor noted as Kakashi's.

    Close it with :func:`close_owned` (not ``os.close``): a forked child closes its copy.

    Raises:
        OSError: as ``os.open``.
    """
    key = next(_keys)
    _opening[key] = (os.path.abspath(path), flags)
    try:
        fd = os.open(path, flags, mode, dir_fd=dir_fd)
        _owned[fd] = None  # before the opening is forgotten: a fork sees one or the other
    finally:
        del _opening[key]
    return fd


def close_owned(
    fd: int,
    _owned: dict[int, None] = _owned,
    _closing: dict[int, tuple[int, int] | None] = _closing,
    _close: Any = os.close,
    _fstat: Any = os.fstat,
) -> None:
    """Close *fd*, opened with :func:`open_owned`; nothing if it is not open (already
    closed, or closed in a forked child by this module).

    In a forked child, close only what the child opened: what the parent had open was
    closed there already, and its number may be another file's now.

    (The defaults keep what it needs: it runs from ``__del__`` at exit too, when module
    globals may be gone.)

    Raises:
        OSError: as ``os.close``.
    """
    if fd not in _owned:
        return
    try:
        info = _fstat(fd)
        _closing[fd] = (info.st_dev, info.st_ino)
    except OSError:
        _closing[fd] = None
    _owned.pop(fd, None)
    try:
        _close(fd)
    finally:
        _closing.pop(fd, None)


@contextlib.contextmanager
def owned_file(path: str | os.PathLike[str], mode: str) -> Iterator[IO[bytes]]:
    """A binary file object on a descriptor from :func:`open_owned`, closed on leaving.

    *mode* is ``"rb"``, ``"wb"`` or ``"r+b"`` (as :func:`open`; created files get
    ``0o666`` less the umask).
    """
    flags = {
        "rb": os.O_RDONLY,
        "wb": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
        "r+b": os.O_RDWR,
    }[mode] | getattr(os, "O_CLOEXEC", 0)
    fd = open_owned(path, flags, 0o666)
    try:
        with open(fd, mode, closefd=False) as file:
            yield file
    finally:
        close_owned(fd)


def _after_fork_in_child() -> None:
    """Close the child's copies of Kakashi's descriptors (see the module)."""
    try:
        _close_copies()
    finally:  # whatever happened, the parent's numbers are not the child's to close
        _owned.clear()
        _closing.clear()
        _opening.clear()


def _close_copies() -> None:
    fcntl: Any = None
    with contextlib.suppress(ImportError):
        import fcntl
    for fd in list(_owned):
        with contextlib.suppress(OSError):
            os.close(fd)
    for fd, identity in list(_closing.items()):
        with contextlib.suppress(OSError):
            info = os.fstat(fd)
            if identity is not None and (info.st_dev, info.st_ino) == identity:
                os.close(fd)
    opening = set(_opening.values())
    if not opening or fcntl is None or not os.path.isdir(_FD_LISTING):
        return
    skip = set(_owned) | set(_closing)
    for name in os.listdir(_FD_LISTING):
        fd = int(name)
        if fd <= 2 or fd in skip:
            continue
        with contextlib.suppress(OSError):
            target = os.readlink(f"{_FD_LISTING}/{name}")
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
            if any(_same_opening(target, flags, *entry) for entry in opening):
                os.close(fd)


def _same_opening(target: str, flags: int, path: str, wanted: int) -> bool:
    """Whether a descriptor naming *target* (``/proc``'s link) and opened with *flags*
    is the copy of an opening of *path* with *wanted* flags.

    The name is read after the fork, while the parent's threads go on: by then a file
    may have been rotated (``app.log.1``, ...) or deleted (`` (deleted)``). So it is the
    same folder and a name that begins with the file's, opened the same way (reading,
    writing, appending), that identify it; a descriptor of the application's on such a
    file, opened the same way, is closed too (a rare coincidence with a fork).
    """
    if flags & _KEPT_FLAGS != wanted & _KEPT_FLAGS:
        return False
    if target == path:
        return True
    folder, name = os.path.split(path)
    return os.path.dirname(target) == folder and os.path.basename(target).startswith(name)
