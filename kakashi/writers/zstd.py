"""A zstd-compressed JSON-lines writer.

Each batch is compressed into one complete zstd frame and appended with one ``write``
system call (``O_APPEND``). A zstd file is a sequence of frames, so:

- everything written so far is decodable (by ``zstd -dc`` or the ``zstandard`` module):
  there is no open frame to finish, and ``flush`` has nothing left to push;
- reopening an existing file simply appends frames;
- after a crash at most the frame being written is torn: the next writer to append
  cuts it off first (see :func:`clean_frames_end`), and until then
  :func:`~kakashi.writers.reading.read_lines` skips it with a warning, not an error (a
  torn or damaged frame anywhere in a file is skipped the same way, and reading goes on
  at the next frame);
- frames from several processes never interleave (see
  :class:`~kakashi.writers.file.FileWriter`: a batch is written under the lock they
  share, a synchronous pipeline's record as one atomic append);
- each frame carries a checksum of its content, so a reader tells a torn or damaged
  frame from a good one.

Compression runs on the worker thread; the ``zstandard`` module releases the GIL while it
compresses, so the application's threads keep running.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import zstandard

from kakashi._locks import fork_safe_rlock
from kakashi.writers.file import FileWriter, newline_joined
from kakashi.writers.reading import (
    ZSTD_MAGIC,
    read_lines,  # re-exported: it was defined here first
)

__all__ = ["ZstdFileWriter", "clean_frames_end", "read_lines", "zstd_file_writer"]

# Skippable frames: magic 0x184D2A50..0x184D2A5F (little-endian), then a 4-byte size.
_SKIPPABLE_TAIL = b"\x2a\x4d\x18"
_MAX_HEADER = 18  # the longest zstd frame header


def _frame_end(fd: int, pos: int, size: int) -> int | None:
    """The end of the frame that starts at *pos*, or ``None`` when it is not a frame.

    Walks the frame's block headers; an end past *size* means the frame is torn.
    """
    head = os.pread(fd, _MAX_HEADER, pos)
    if head[1:4] == _SKIPPABLE_TAIL and 0x50 <= head[0] <= 0x5F:
        return pos + 8 + int.from_bytes(head[4:8], "little") if len(head) >= 8 else size + 1
    if not ZSTD_MAGIC.startswith(head[:4]):
        return None
    try:
        header = zstandard.frame_header_size(head)
        checksum = zstandard.get_frame_parameters(head).has_checksum
    except zstandard.ZstdError:
        # Too few bytes for a header is a torn frame; enough bytes that do not parse is not a frame.
        return size + 1 if pos + len(head) >= size else None
    at = pos + header
    while True:
        block = os.pread(fd, 3, at)
        if len(block) < 3:
            return size + 1
        value = int.from_bytes(block, "little")
        kind, length = (value >> 1) & 3, value >> 3
        if kind == 3:  # reserved: not a block
            return None
        at += 3 + (1 if kind == 1 else length)  # an RLE block holds one byte
        if at > size:
            return size + 1
        if value & 1:  # the last block
            return at + (4 if checksum else 0)


def clean_frames_end(fd: int, size: int, start: int = 0) -> int:
    """The end of the last whole frame of the zstd file open as *fd*, of *size* bytes.

    Frames are walked from *start* (known to be a frame boundary) by their headers,
    without decompressing. A frame that runs past the end is torn: the result is where it
    starts. When the bytes do not parse as frames, or the would-be torn frame contains
    another frame's magic number (so it may not be the last), *size* is returned: the
    file is left as it is, for the reader to resynchronise.
    """
    pos = start
    while pos < size:
        end = _frame_end(fd, pos, size)
        if end is None:
            return size
        if end > size:
            rest = os.pread(fd, size - pos, pos)
            return size if ZSTD_MAGIC in rest[1:] else pos
        pos = end
    return size


class ZstdFileWriter(FileWriter):
    """Append records to a ``.zst`` file, one zstd frame per batch.

    Args:
        path: the file; parent directories are created.
        level: zstd compression level (1 fastest .. 19 smallest; 3 is zstd's default).
        mode: permission bits for a file this writer creates.
        fsync: also ``fsync`` on every ``flush``.
        lock_timeout: the longest a write waits for another process's lock (see
            :class:`~kakashi.writers.file.FileWriter`).
        reopen_check_interval: the most seconds a synchronous pipeline's records go
            without checking the path and the tail (see
            :class:`~kakashi.writers.file.FileWriter`).
        hold_gil: whether a synchronous pipeline's record keeps the interpreter lock
            through its ``write`` (see :class:`~kakashi.writers.file.FileWriter`).

    Raises:
        ValueError: *level* outside 1..22, or a bad *mode*, *lock_timeout*,
            *reopen_check_interval* or *hold_gil*.
        TypeError: *path* is not a str or path-like object.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        level: int = 3,
        mode: int = 0o644,
        fsync: bool = False,
        lock_timeout: float = 10.0,
        reopen_check_interval: float = 1.0,
        hold_gil: bool | None = None,
    ) -> None:
        if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 22:
            raise ValueError(f"level must be an int within 1..22, got {level!r}")
        self.level = level
        self._compressor = zstandard.ZstdCompressor(level=level, write_checksum=True)
        # A compressor is one zstd context, which zstandard lets the GIL go to use: two
        # threads compressing with it at once (a synchronous pipeline's, each logging a
        # record) fail ("Src size is incorrect") or corrupt each other's frame.
        # Re-entrant: a signal handler that logs on a thread about to compress compresses
        # first (never inside the call, which runs no Python code).
        self._compressing = fork_safe_rlock()
        super().__init__(
            path,
            mode=mode,
            fsync=fsync,
            lock_timeout=lock_timeout,
            reopen_check_interval=reopen_check_interval,
            hold_gil=hold_gil,
        )

    @staticmethod
    def _clean_end(fd: int, size: int, start: int) -> int:
        """Where the whole frames of the file end (see :func:`clean_frames_end`)."""
        return clean_frames_end(fd, size, start)

    def encode(self, batch: Sequence[bytes]) -> bytes:
        """Return *batch* as one complete zstd frame of newline-terminated lines."""
        return self._compress(newline_joined(batch))

    def _whole_records(self, part: memoryview) -> int:
        """A frame the disk cut short holds no whole record: a frame decodes entirely or
        not at all (see :meth:`FileWriter._append <kakashi.writers.file.FileWriter>`)."""
        return 0

    def encode_record(self, line: bytes) -> bytes:
        """Return one record as a complete zstd frame of one newline-terminated line."""
        return self._compress(line + b"\n")

    def _compress(self, data: bytes) -> bytes:
        """*data* as one complete zstd frame, one thread at a time."""
        with self._compressing:
            return bytes(self._compressor.compress(data))

    def _after_fork_in_child(self) -> None:
        super()._after_fork_in_child()
        # Another thread of the parent may have been compressing with it at the fork.
        self._compressor = zstandard.ZstdCompressor(level=self.level, write_checksum=True)

    def __repr__(self) -> str:
        return f"<ZstdFileWriter {str(self.path)!r} level={self.level}>"


def zstd_file_writer(
    path: str | os.PathLike[str],
    *,
    level: int = 3,
    mode: int = 0o644,
    fsync: bool = False,
    lock_timeout: float = 10.0,
    reopen_check_interval: float = 1.0,
    hold_gil: bool | None = None,
) -> ZstdFileWriter:
    """Return a :class:`ZstdFileWriter` appending frames to *path* (see it for the options)."""
    return ZstdFileWriter(
        path,
        level=level,
        mode=mode,
        fsync=fsync,
        lock_timeout=lock_timeout,
        reopen_check_interval=reopen_check_interval,
        hold_gil=hold_gil,
    )
