"""A zstd-compressed JSON-lines writer, and a reader for plain and compressed logs.

Each batch is compressed into one complete zstd frame and appended with one ``write``
system call (``O_APPEND``). A zstd file is a sequence of frames, so:

- everything written so far is decodable (by ``zstd -dc`` or the ``zstandard`` module):
  there is no open frame to finish, and ``flush`` has nothing left to push;
- reopening an existing file simply appends frames;
- after a crash at most the frame being written is torn; :func:`read_lines` skips a torn
  final frame with a warning, not an error;
- frames from several processes never interleave.

Compression runs on the worker thread; the ``zstandard`` module releases the GIL while it
compresses, so the application's threads keep running.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import zstandard

from kakashi.writers.file import FileWriter

__all__ = ["ZstdFileWriter", "read_lines", "zstd_file_writer"]

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


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


def _zstd_lines(stream: io.BufferedReader, name: str) -> Iterator[bytes]:
    """Decode frame by frame, so a torn last frame is noticed (and skipped) reliably."""
    data = stream.read()
    decompressor = zstandard.ZstdDecompressor()
    pending = b""
    while data:
        frame = decompressor.decompressobj()
        try:
            out = frame.decompress(data)
        except zstandard.ZstdError as exc:
            warnings.warn(f"{name}: skipped a corrupt zstd frame ({exc})", RuntimeWarning, 3)
            return
        if not frame.eof:
            warnings.warn(
                f"{name}: skipped a torn or corrupt zstd frame at the end ({len(data)} bytes)",
                RuntimeWarning,
                stacklevel=3,
            )
            return
        pending += out
        *lines, pending = pending.split(b"\n")
        yield from lines
        data = frame.unused_data
    if pending:
        warnings.warn(f"{name}: skipped an unterminated last line", RuntimeWarning, stacklevel=3)


def read_lines(path: str | os.PathLike[str]) -> Iterator[bytes]:
    """Yield each complete line (without its newline) of a plain or zstd-compressed log.

    A file is read as zstd when it starts with the zstd magic number. A torn final frame
    (a crash in the middle of a write) or an unterminated last line is skipped with a
    :class:`RuntimeWarning`; everything before it is yielded.
    """
    name = str(path)
    with Path(path).open("rb") as stream:
        if stream.peek(4)[:4] == ZSTD_MAGIC:
            yield from _zstd_lines(stream, name)
            return
        pending = b""
        for block in iter(lambda: stream.read(1 << 16), b""):
            pending += block
            *lines, pending = pending.split(b"\n")
            yield from lines
        if pending:
            warnings.warn(
                f"{name}: skipped an unterminated last line", RuntimeWarning, stacklevel=2
            )
