"""A zstd-compressed JSON-lines writer.

Each batch is compressed into one complete zstd frame and appended with one ``write``
system call (``O_APPEND``). A zstd file is a sequence of frames, so:

- everything written so far is decodable (by ``zstd -dc`` or the ``zstandard`` module):
  there is no open frame to finish, and ``flush`` has nothing left to push;
- reopening an existing file simply appends frames;
- after a crash at most the frame being written is torn;
  :func:`~kakashi.writers.reading.read_lines` skips a torn final frame with a warning, not
  an error;
- frames from several processes never interleave.

Compression runs on the worker thread; the ``zstandard`` module releases the GIL while it
compresses, so the application's threads keep running.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import zstandard

from kakashi.writers.file import FileWriter
from kakashi.writers.reading import read_lines  # re-exported: it was defined here first

__all__ = ["ZstdFileWriter", "read_lines", "zstd_file_writer"]


class ZstdFileWriter(FileWriter):
    """Append records to a ``.zst`` file, one zstd frame per batch.

    Args:
        path: the file; parent directories are created.
        level: zstd compression level (1 fastest .. 19 smallest; 3 is zstd's default).
        mode: permission bits for a file this writer creates.
        fsync: also ``fsync`` on every ``flush``.

    Raises:
        ValueError: *level* outside 1..22, or a bad *mode*.
        TypeError: *path* is not a str or path-like object.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        level: int = 3,
        mode: int = 0o644,
        fsync: bool = False,
    ) -> None:
        if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 22:
            raise ValueError(f"level must be an int within 1..22, got {level!r}")
        self.level = level
        self._compressor = zstandard.ZstdCompressor(level=level)
        super().__init__(path, mode=mode, fsync=fsync)

    def encode(self, batch: Sequence[bytes]) -> bytes:
        """Return *batch* as one complete zstd frame of newline-terminated lines."""
        return bytes(self._compressor.compress(b"\n".join(batch) + b"\n"))

    def __repr__(self) -> str:
        return f"<ZstdFileWriter {str(self.path)!r} level={self.level}>"


def zstd_file_writer(
    path: str | os.PathLike[str], *, level: int = 3, mode: int = 0o644, fsync: bool = False
) -> ZstdFileWriter:
    """Return a :class:`ZstdFileWriter` appending frames to *path*."""
    return ZstdFileWriter(path, level=level, mode=mode, fsync=fsync)
