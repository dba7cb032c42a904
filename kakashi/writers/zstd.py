"""A zstd-compressed JSON-lines writer.

Each batch is compressed into one complete zstd frame and appended with one ``write``
system call (``O_APPEND``). A zstd file is a sequence of frames, so:

- everything written so far is decodable (by ``zstd -dc`` or the ``zstandard`` module):
  there is no open frame to finish, and ``flush`` has nothing left to push;
- reopening an existing file simply appends frames;
- after a crash at most the frame being written is torn: the next writer to append
  cuts it off first (see :func:`tail_frames_end`: it reads the last frames, not the
  whole file), and until then
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

import functools
import os
from collections.abc import Callable, Sequence

import zstandard

from kakashi._locks import fork_safe_rlock
from kakashi._speedups import unclaimed
from kakashi.writers.file import FileWriter, newline_joined
from kakashi.writers.reading import (
    ZSTD_MAGIC,
    read_lines,  # re-exported: it was defined here first
)

__all__ = [
    "ZstdFileWriter",
    "clean_frames_end",
    "read_lines",
    "tail_frames_end",
    "zstd_file_writer",
]

# Skippable frames: magic 0x184D2A50..0x184D2A5F (little-endian), then a 4-byte size.
_SKIPPABLE_TAIL = b"\x2a\x4d\x18"
_MAX_HEADER = 18  # the longest zstd frame header
# The tail check (tail_frames_end): the bytes it reads first (a few hundred one-record
# frames, or the end of one batch's), how much wider each next look is, and the most it
# reads before walking the frames from the start instead (a frame that long has few
# block headers, so that walk is short).
_TAIL_WINDOW = 16 * 1024
_WIDEN = 8
_TAIL_LIMIT = 16 * 1024 * 1024
# Largest declared content of a frame the tail check decodes to prove it whole (a batch
# is kilobytes; bounds what one check holds in memory).
_PROOF_LIMIT = 16 * 1024 * 1024

# ``read(count, offset)``: up to *count* bytes of the file from *offset*, as ``os.pread``.
_Read = Callable[[int, int], bytes]


def _frame_end(read: _Read, pos: int, size: int) -> int | None:
    """The end of the frame that starts at *pos*, or ``None`` when it is not a frame.

    Walks the frame's block headers; an end past *size* means the frame is torn.
    """
    head = read(_MAX_HEADER, pos)
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
        block = read(3, at)
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


def _walk(read: _Read, size: int, start: int) -> int:
    """:func:`clean_frames_end` over *read*: the frames from *start*, by their headers."""
    pos = start
    while pos < size:
        end = _frame_end(read, pos, size)
        if end is None:
            return size
        if end > size:
            rest = read(size - pos, pos)
            return size if ZSTD_MAGIC in rest[1:] else pos
        pos = end
    return size


def clean_frames_end(fd: int, size: int, start: int = 0) -> int:
    """The end of the last whole frame of the zstd file open as *fd*, of *size* bytes.

    Frames are walked from *start* (known to be a frame boundary) by their headers,
    without decompressing. A frame that runs past the end is torn: the result is where it
    starts. When the bytes do not parse as frames, or the would-be torn frame contains
    another frame's magic number (so it may not be the last), *size* is returned: the
    file is left as it is, for the reader to resynchronise.

    This reads every frame header after *start*; :func:`tail_frames_end` gives the same
    answer from the end of the file (see it for the files where they differ).
    """
    return _walk(functools.partial(os.pread, fd), size, start)


def tail_frames_end(fd: int, size: int, start: int = 0, *, window: int = _TAIL_WINDOW) -> int:
    """:func:`clean_frames_end`'s answer, from the end of the file: reads about as many
    bytes as the last frames hold, not the whole file.

    It reads the last *window* bytes (the bytes from *start* if that is less) and looks
    there for the first frame that proves itself: a zstd magic number where a frame
    starts that has a checksum, declares its content size, and decodes, from its first
    byte to the last, to exactly that size with the checksum matching. From that frame on
    the frames are walked as :func:`clean_frames_end` walks them, with the same rules (a
    torn last frame is cut off only when no magic number follows its start). When no
    frame in the window proves itself (a torn frame longer than the window, frames without
    a checksum), the window is made 8 times wider, up to 16 MiB; past that the frames are
    walked from *start*. A window that reaches *start* is walked from *start* (a known
    boundary), as :func:`clean_frames_end` does, and so is a file with no whole frame at
    *start* (a file that is not zstd frames, or one torn frame): that walk ends there.

    Why the answer is the full walk's: a frame that proves itself starts where a frame
    was written. The full walk from *start* steps on the start of every frame written
    after it (unless damage stops it first, below), and from any of them both walk the
    same frames with the same code, so the answer is the same. For anything else to
    pass, the four bytes of the magic number would have to occur inside a frame (in
    compressed data, about once in 2**32 positions; never inside a line Kakashi
    formats, which is UTF-8, where the magic's last byte, 0xFD, cannot occur) and be
    followed by a header and blocks that decode to the declared size with a matching
    32-bit checksum. A magic number that does not start such a frame (the common false
    candidate) is passed over. Only bytes crafted for it (a whole zstd frame with a
    checksum inside a record written as raw bytes, not a formatted line) could pass, and
    only when the frame holding them cannot prove itself first: it starts before the
    window (a frame that starts in the window proves itself first, and the walk from it
    steps over them) or has no checksum (not a Kakashi writer's). Even then they change
    the answer only if what follows them reads as a torn frame with no magic number
    after it: only in the file's last frame, so one longer than the window.

    Where the bytes before the window do not parse as frames (damage that nothing could
    repair: a torn frame another writer left in the middle), :func:`clean_frames_end`
    from 0 stops there and leaves the file as it is; this judges the tail on its own, so
    a torn last frame is still cut off.

    Args:
        fd: the file, open for reading.
        size: its size; nothing after it is read.
        start: a frame boundary: nothing before it is read.
        window: the bytes read first (16 KiB; tests make it small to look inside
            small files).

    Raises:
        ValueError: *window* is not a positive int.
    """
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive int, got {window!r}")
    if start >= size:
        return size  # nothing after the boundary (clean_frames_end's answer too)
    end = _frame_end(functools.partial(os.pread, fd), start, size)
    if end is None or end > size:
        # No whole frame at start (not a zstd file, or one torn frame): the full walk's
        # answer is one step away, and the window would find no frame to prove.
        return clean_frames_end(fd, size, start)
    span = window
    while True:
        first = max(start, size - span)
        if size - first > _TAIL_LIMIT:
            return clean_frames_end(fd, size, start)
        data = _read_exactly(fd, size - first, first)
        if data is None:  # the file shrank: judge it with the reads of the full walk
            return clean_frames_end(fd, size, start)

        def read(count: int, offset: int, data: bytes = data, first: int = first) -> bytes:
            return data[offset - first : offset - first + count]

        if first == start:
            return _walk(read, size, start)
        anchor = _proven_frame(data, first, size, read)
        if anchor is not None:
            return _walk(read, size, anchor)
        span *= _WIDEN


def _read_exactly(fd: int, count: int, offset: int) -> bytes | None:
    """*count* bytes of the file from *offset*, or ``None`` if it ends before."""
    data = os.pread(fd, count, offset)
    while len(data) < count:
        more = os.pread(fd, count - len(data), offset + len(data))
        if not more:
            return None
        data += more
    return data


def _proven_frame(data: bytes, first: int, size: int, read: _Read) -> int | None:
    """Where the first frame that proves itself (see :func:`tail_frames_end`) starts in
    *data*, the file's bytes from *first* to *size*; ``None`` if none does."""
    at = data.find(ZSTD_MAGIC)
    while at >= 0:
        end = _frame_end(read, first + at, size)
        if end is not None and end <= size and _decodes_whole(data[at : end - first]):
            return first + at
        at = data.find(ZSTD_MAGIC, at + 1)
    return None


def _decodes_whole(frame: bytes) -> bool:
    """Whether *frame* is exactly one zstd frame with a checksum and a declared content
    size (at most :data:`_PROOF_LIMIT`) that it decodes to, the checksum matching."""
    try:
        declared = zstandard.get_frame_parameters(frame)
        if not declared.has_checksum or declared.content_size > _PROOF_LIMIT:
            return False  # also an unknown size (CONTENTSIZE_UNKNOWN is 2**64 - 1)
        decoder = zstandard.ZstdDecompressor().decompressobj()
        content = decoder.decompress(frame)  # zstd fails a checksum that does not match
    except zstandard.ZstdError:
        return False
    return decoder.eof and not decoder.unused_data and len(content) == declared.content_size


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
        """Where the whole frames of the file end, read from its tail (see
        :func:`tail_frames_end`)."""
        return tail_frames_end(fd, size, start)

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
            return bytes(unclaimed(self._compressor.compress, data))

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
