"""Reading logs back: the lines of a plain, zstd or gzip log, streaming, in bounded memory.

The format is told by the first bytes (the zstd and gzip magic numbers), not by the name, so
standard input and misnamed files read too. A file or a stream is read in chunks and each
chunk is decoded as it comes (zstd frame by frame, gzip member by member), so memory stays
bounded by the chunk, the longest line and what one chunk decompresses to, whatever the
size of the log, and a pipe's lines come out as soon as they arrive.

Two stages, usable alone: a :class:`Decoder` turns the bytes of a log into its content, and
a :class:`LineSplitter` cuts content into lines. What cannot be read is skipped with a
:class:`RuntimeWarning`, never an error: a torn last zstd frame or gzip member (a crash in
the middle of a write), a corrupt zstd frame (reading resumes at the next frame), an
unterminated last line, and a line longer than :data:`MAX_LINE` bytes.
"""

from __future__ import annotations

import os
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import zstandard

__all__ = [
    "GZIP_MAGIC",
    "MAX_LINE",
    "ZSTD_MAGIC",
    "Decoder",
    "LineSplitter",
    "read_batches",
    "read_lines",
]

#: The first four bytes of every zstd frame.
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: The first two bytes of every gzip member.
GZIP_MAGIC = b"\x1f\x8b"
#: Longest line kept, in bytes. A longer one is skipped, since no log record is that long
#: and keeping it would let a stream of binary data (``/dev/zero``) fill the memory.
MAX_LINE = 64 * 1024 * 1024
#: Bytes read at a time, enough to amortise system calls and few enough to stream.
CHUNK = 64 * 1024
# Read size of compressed input: logs compress 10 to 100 times, and what one read
# decompresses to is held at once.
_COMPRESSED_CHUNK = 8 * 1024


def _warn(name: str, problem: str) -> None:
    warnings.warn(f"{name}: {problem}", RuntimeWarning, stacklevel=4)


class Decoder:
    """The bytes of a log in, its content out, incrementally: plain, zstd or gzip.

    Feed the log's bytes in pieces of any size to :meth:`feed`, then call :meth:`finish`
    at the end of the input. The format is decided by the first bytes.

    Args:
        name: how warnings name the log (a path, ``<stdin>``).

    Attributes:
        kind: ``"plain"``, ``"zstd"`` or ``"gzip"``, or ``None`` until the first bytes came.
        torn: whether the input ended inside a zstd frame or gzip member (set by
            :meth:`finish`).
    """

    def __init__(self, name: str = "<stream>") -> None:
        self.name = name
        self.kind: str | None = None
        self.torn = False
        self._head = b""
        self._frame: Any = None  # the zstd frame or gzip member being decoded
        self._frame_fed = 0  # compressed bytes fed to it
        self._scanning = False  # after a corrupt zstd frame: looking for the next one
        self._carry = b""  # the last bytes seen while scanning (a magic may straddle chunks)
        self._corrupt = False  # a corrupt frame was reported and no good frame came since
        self._dead = False  # after corrupt gzip data: the rest cannot be read
        self._zstd = zstandard.ZstdDecompressor()

    def feed(self, data: bytes) -> bytes:
        """Decode *data*, the next bytes of the log; return the content they complete."""
        if self.kind is None:
            self._head += data
            if len(self._head) < len(ZSTD_MAGIC):
                return b""
            data, self._head = self._head, b""
            self._detect(data)
        if self.kind == "zstd":
            return self._zstd_content(data)
        if self.kind == "gzip":
            return self._gzip_content(data)
        return data

    def finish(self) -> bytes:
        """End of input: return the last content; warn when it ended inside a frame."""
        content = b""
        if self.kind is None:
            data, self._head = self._head, b""
            self._detect(data)
            content = self.feed(data)
        if self.kind == "gzip" and self._frame is not None and not self._dead:
            content += self._frame.flush()
            if not self._frame.eof:
                _warn(self.name, f"skipped a torn gzip member at the end ({self._frame_fed} bytes)")
                self.torn = True
        elif self.kind == "zstd" and self._frame is not None and self._frame_fed:
            _warn(
                self.name,
                f"skipped a torn or corrupt zstd frame at the end ({self._frame_fed} bytes)",
            )
            self.torn = True
        self._frame = None
        return content

    def _detect(self, head: bytes) -> None:
        if head.startswith(ZSTD_MAGIC):
            self.kind = "zstd"
        elif head.startswith(GZIP_MAGIC):
            self.kind = "gzip"
        else:
            self.kind = "plain"

    def _zstd_content(self, data: bytes) -> bytes:
        """Frame by frame, so the end of each frame (and a torn last one) is known."""
        out: list[bytes] = []
        while data:
            if self._scanning:
                data = self._resynchronise(data)
                continue
            if self._frame is None:
                self._frame, self._frame_fed = self._zstd.decompressobj(), 0
            try:
                out.append(self._frame.decompress(data))
            except zstandard.ZstdError as exc:
                if not self._corrupt:
                    _warn(self.name, f"skipped a corrupt zstd frame ({exc})")
                    self._corrupt = True
                # Look for the next frame past this one's start (when it is in *data*).
                data = data[1:] if self._frame_fed == 0 else data
                self._frame, self._scanning, self._carry = None, True, b""
                continue
            self._frame_fed += len(data)
            if self._frame.eof:
                data, self._frame, self._corrupt = self._frame.unused_data, None, False
            else:
                data = b""
        return b"".join(out)

    def _resynchronise(self, data: bytes) -> bytes:
        """Skip to the next zstd magic number; return the data from there (or nothing)."""
        data = self._carry + data
        found = data.find(ZSTD_MAGIC)
        if found < 0:
            self._carry = data[-(len(ZSTD_MAGIC) - 1) :]
            return b""
        self._scanning, self._carry = False, b""
        return data[found:]

    def _gzip_content(self, data: bytes) -> bytes:
        out: list[bytes] = []
        while data and not self._dead:
            if self._frame is None:
                if not data.strip(b"\0"):  # zero padding after the last member, as gzip allows
                    break
                self._frame, self._frame_fed = zlib.decompressobj(16 + zlib.MAX_WBITS), 0
            try:
                out.append(self._frame.decompress(data))
            except zlib.error as exc:
                _warn(self.name, f"skipped the rest: corrupt gzip data ({exc})")
                self._dead, self._frame = True, None
                break
            self._frame_fed += len(data)
            if self._frame.eof:
                data, self._frame = self._frame.unused_data, None
            else:
                data = b""
        return b"".join(out)


class LineSplitter:
    """Content in, complete lines (without their newline) out, incrementally.

    The unterminated rest is kept as a list of pieces, so a long line costs time linear in
    its length; one growing past :data:`MAX_LINE` bytes is dropped up to its newline.

    Args:
        name: how warnings name the log.
        fingerprint: an object with ``update(bytes)`` that receives all the content, in
            order (a ``hashlib`` hash, for example).

    Attributes:
        size: how many bytes of content came in so far.
    """

    def __init__(self, name: str = "<stream>", *, fingerprint: Any = None) -> None:
        self.name = name
        self.fingerprint = fingerprint
        self.size = 0
        self._partial: list[bytes] = []
        self._partial_size = 0
        self._overlong = False

    @property
    def pending(self) -> bool:
        """Whether an unterminated line is waiting for its end."""
        return bool(self._partial) or self._overlong

    def feed(self, content: bytes) -> list[bytes]:
        """Return the lines *content* completes."""
        if not content:
            return []
        self.size += len(content)
        if self.fingerprint is not None:
            self.fingerprint.update(content)
        lines = content.split(b"\n")
        rest = lines.pop()
        if lines:
            if self._overlong:
                del lines[0]  # the end of the line that was too long
                self._overlong = False
                _warn(self.name, f"skipped a line longer than {MAX_LINE:,} bytes")
            elif self._partial:
                lines[0] = b"".join(self._partial) + lines[0]
            self._partial, self._partial_size = [], 0
        if rest and not self._overlong:
            self._partial.append(rest)
            self._partial_size += len(rest)
            if self._partial_size > MAX_LINE:
                self._partial, self._partial_size, self._overlong = [], 0, True
        return lines

    def finish(self, *, torn: bool = False) -> None:
        """End of content: warn about an unterminated last line (unless the input was
        *torn*, already reported) or an overlong one."""
        if self._overlong:
            _warn(self.name, f"skipped a line longer than {MAX_LINE:,} bytes")
        elif self._partial and not torn:
            _warn(self.name, "skipped an unterminated last line")
        self._partial, self._partial_size, self._overlong = [], 0, False


def read_batches(stream: IO[bytes], name: str = "<stream>") -> Iterator[list[bytes]]:
    """Yield the lines of a binary *stream* as they arrive, one list per chunk read.

    A pipe's lines come out as soon as its writer wrote them (the stream's ``read1`` is
    used when it has one), so a caller can flush its own output after each list.
    """
    decoder = Decoder(name)
    splitter = LineSplitter(name)
    read = getattr(stream, "read1", stream.read)
    size = _COMPRESSED_CHUNK  # until the first bytes tell the format
    while chunk := read(size):
        lines = splitter.feed(decoder.feed(chunk))
        if decoder.kind == "plain":
            size = CHUNK
        if lines:
            yield lines
    lines = splitter.feed(decoder.finish())
    splitter.finish(torn=decoder.torn)
    if lines:
        yield lines


def read_lines(path: str | os.PathLike[str] | IO[bytes]) -> Iterator[bytes]:
    """Yield each complete line (without its newline) of a plain, zstd or gzip log.

    *path* is a file's path or a binary stream open for reading (``sys.stdin.buffer``).
    The format is told by the first bytes. A torn final zstd frame or gzip member (a crash
    in the middle of a write) or an unterminated last line is skipped with a
    :class:`RuntimeWarning`; everything before it is yielded.
    """
    if isinstance(path, (str, os.PathLike)):
        with Path(path).open("rb") as stream:
            for lines in read_batches(stream, str(path)):
                yield from lines
    else:
        for lines in read_batches(path, str(getattr(path, "name", "<stream>"))):
            yield from lines
