"""A plain file writer: one open file, one ``write`` system call per batch."""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kakashi._locks import fork_safe_lock

__all__ = ["FileWriter", "checked_path", "file_writer", "make_folder"]

_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)


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


class FileWriter:
    """Append records to a file kept open in append mode.

    The file is opened (and its directory created) when the writer is made, so a bad
    path fails at configuration time. Each batch is written with one ``write`` system
    call (``O_APPEND``, so lines from several processes never interleave within a
    batch); nothing is buffered in the process, so ``flush`` has nothing to push, and
    a crash loses nothing that ``write`` returned from.

    Before each batch the writer checks that its path still names the open file: if
    logrotate (or anyone) moved or deleted it, the path is reopened, so the batch lands
    in the new file. ``copytruncate`` needs nothing: with ``O_APPEND`` writes continue at
    the new end, leaving no NUL padding.

    Args:
        path: the file; parent directories are created.
        mode: permission bits for a file this writer creates (before the umask).
        fsync: also ``fsync`` on every ``flush`` (for audit logs that must survive a
            power loss; slower).

    Raises:
        TypeError: *path* is not a str or path-like object.
        ValueError: *mode* is not within 0..0o777.
        NotADirectoryError: a component of *path* is a file (the message names it).
        OSError: the file cannot be opened.
    """

    def __init__(self, path: str | os.PathLike[str], *, mode: int = 0o644, fsync: bool = False):
        self.path = checked_path("path", path)
        if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o777:
            raise ValueError(f"mode must be permission bits within 0..0o777, got {mode!r}")
        self.mode = mode
        self.fsync = bool(fsync)
        self._lock = fork_safe_lock()
        self._fd = -1
        self._inode: tuple[int, int] | None = None
        self._open()

    def _open(self) -> None:
        make_folder("path", self.path.parent, self.path)
        try:
            self._fd = os.open(self.path, _FLAGS, self.mode)
        except IsADirectoryError as exc:
            raise IsADirectoryError(
                exc.errno, f"path={str(self.path)!r} is a folder, not a file"
            ) from exc
        info = os.fstat(self._fd)
        self._inode = (info.st_dev, info.st_ino)

    def _close_fd(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _moved(self) -> bool:
        """Whether the path no longer names the open file (moved, deleted, replaced)."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return True
        return (info.st_dev, info.st_ino) != self._inode

    def encode(self, batch: Sequence[bytes]) -> bytes:
        """Return the bytes written for *batch*: its records, each ending with a newline."""
        return b"\n".join(batch) + b"\n"

    def _write_all(self, data: bytes) -> None:
        """Write all of *data*, or nothing: a failure (a full disk) takes back what landed.

        The kernel may take part of a batch before failing with ENOSPC; that part is cut
        off again, so no partial line is left and a retry does not repeat records.
        """
        view = memoryview(data)
        done = 0
        try:
            while done < len(data):
                done += os.write(self._fd, view[done:])
        except OSError:
            if done:
                try:
                    os.ftruncate(self._fd, os.fstat(self._fd).st_size - done)
                except OSError:
                    pass
            raise

    def write(self, batch: Sequence[bytes]) -> None:
        """Write the batch with one system call when possible (reopening a moved path)."""
        data = self.encode(batch)
        with self._lock:
            if self._fd < 0 or self._moved():
                self._close_fd()
                self._open()
            self._write_all(data)

    def flush(self) -> None:
        """Nothing is buffered; with ``fsync=True``, force the data to disk."""
        if self.fsync:
            with self._lock:
                if self._fd >= 0:
                    os.fsync(self._fd)

    def close(self) -> None:
        """Flush and close the file; a later write reopens it."""
        with self._lock:
            if self._fd >= 0:
                if self.fsync:
                    os.fsync(self._fd)
                self._close_fd()

    def __repr__(self) -> str:
        return f"<FileWriter {str(self.path)!r}>"


def file_writer(
    path: str | os.PathLike[str], *, mode: int = 0o644, fsync: bool = False
) -> FileWriter:
    """Return a :class:`FileWriter` appending to *path*."""
    return FileWriter(path, mode=mode, fsync=fsync)
