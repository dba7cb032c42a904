"""Reading logs back: the lines of a plain, zstd or gzip log, streaming, in bounded memory.

The format is told by the first bytes (the zstd and gzip magic numbers), not by the name, so
standard input and misnamed files read too. A file or a stream is read in chunks and each
chunk is decoded as it comes (zstd frame by frame, gzip member by member), so memory stays
bounded by the chunk, the longest line and what one chunk decompresses to, whatever the
size of the log, and a pipe's lines come out as soon as they arrive.

Two stages, usable alone: a :class:`Decoder` turns the bytes of a log into its content, and
a :class:`LineSplitter` cuts content into lines. What cannot be read is skipped, never an
error: with one :class:`RuntimeWarning` per unreadable stretch, saying what it took, and
counted in a :class:`ReadStats`.

A zstd log is one frame per batch, appended. A writer killed in the middle of a write
leaves a torn frame, and a writer started later appends whole frames after it:

- A frame's content is held until the frame ends and checks out, so nothing of a torn
  or corrupt frame comes out. When one fails, the next frame is searched for from its
  second byte, in the bytes it was fed: the frames after a torn one are all read.
- zstd itself fails a frame whose content does not match its checksum (writers write one
  from now on) or the size its header declares (a writer's frame declares it).
- Without a checksum, a torn frame whose last block is stored raw (incompressible data)
  can take the bytes of the frames after it for its own and end as if whole. Such a frame
  has (part of) a magic number inside it, and is rejected when a whole frame is inside it
  or when the bytes after it are no frame's start. A frame without a checksum that ends
  with the first bytes of a magic number therefore comes out only once the next bytes
  came (or the input ended).

What the reader cannot tell:

- A torn frame that takes the bytes after it for its own and happens to end exactly where
  a frame starts, with no whole frame inside it, and no checksum: its content (garbage in
  its last block) comes out. Frames with a checksum are safe from this.
- A frame longer than 1 MiB (a rotated file compressed whole) is passed on line by line
  as it decodes; when it fails, what it gave stays given, and whole frames that followed
  a torn piece inside it are lost.
- A line of a plain log cut by a crash and glued to the next one is a line like any
  other: writers keep that from happening except while other writers append records
  without the lock (see docs/writers.md, "The synchronous path"), and
  :func:`glued_record` finds the whole record at the end of such a line. Only an
  unterminated *last* line is skipped, as is a line longer than :data:`MAX_LINE` bytes.
- A torn gzip member (or corrupt gzip data) ends what can be read: gzip has no magic
  number to search for.
- A line that goes on from one zstd frame to the next (not written by a Kakashi writer)
  and a skipped stretch between them: its two pieces are glued.
"""

from __future__ import annotations

import os
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
import zstandard

__all__ = [
    "GZIP_MAGIC",
    "MAX_LINE",
    "ZSTD_MAGIC",
    "Decoder",
    "LineSplitter",
    "ReadStats",
    "glued_record",
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
# Most bytes of one zstd frame, compressed or decoded, held until the frame checks out. A
# writer's frame is one batch (kilobytes); a longer one (a rotated file compressed whole)
# is passed on as it decodes, line by line, so memory stays bounded.
_HOLD = 1024 * 1024
# The longest zstd frame header: magic, descriptor, window, dictionary id, content size.
_MAX_FRAME_HEADER = 18
_BLIND = " (a frame too long to keep: whole frames after a torn piece inside it are lost)"


def _warn(name: str, problem: str) -> None:
    warnings.warn(f"{name}: {problem}", RuntimeWarning, stacklevel=4)


@dataclass
class ReadStats:
    """What reading a log skipped, counted as it goes (one can add up several logs).

    Attributes:
        skipped_frames: torn or corrupt zstd frames and gzip members skipped.
        skipped_bytes: the bytes of the log they and any unreadable bytes around them took.
        skipped_lines: lines skipped: an unterminated last line, lines over :data:`MAX_LINE`.
        skipped_line_bytes: the bytes of those lines.
    """

    skipped_frames: int = 0
    skipped_bytes: int = 0
    skipped_lines: int = 0
    skipped_line_bytes: int = 0


class Decoder:
    """The bytes of a log in, its content out, incrementally: plain, zstd or gzip.

    Feed the log's bytes in pieces of any size to :meth:`feed`, then call :meth:`finish`
    at the end of the input. The format is decided by the first bytes.

    Args:
        name: how warnings name the log (a path, ``<stdin>``).
        stats: where to count what is skipped (a new :class:`ReadStats` when not given).

    Attributes:
        kind: ``"plain"``, ``"zstd"`` or ``"gzip"``, or ``None`` until the first bytes came.
        torn: whether the input ended inside a torn or corrupt zstd frame or gzip member
            (set by :meth:`finish`).
        stats: what was skipped so far.
    """

    def __init__(self, name: str = "<stream>", *, stats: ReadStats | None = None) -> None:
        self.name = name
        self.kind: str | None = None
        self.torn = False
        self.stats = ReadStats() if stats is None else stats
        self._head = b""
        self._zstd = zstandard.ZstdDecompressor()
        self._frame: Any = None  # the zstd frame or gzip member being decoded
        # gzip: the compressed bytes fed to the member, and whether corrupt data ended it all
        self._frame_fed = 0
        self._dead = False
        self._dead_bytes = 0
        self._dead_reason = ""
        # zstd: the input from the start of the frame being decoded (or of the search for
        # one), kept so that a frame that fails can be searched for the next one.
        self._input = bytearray()
        self._input_start = 0  # where _input[0] is in the log
        self._frame_start = 0  # where the frame being decoded starts in the log
        self._fed = 0  # how much of _input the frame was fed
        self._end = -1  # where in _input the frame ended, until it is judged
        self._streaming = False  # a long frame: its content is passed on as it decodes
        self._content: list[bytes] = []  # the frame's content, until the frame checks out
        self._content_size = 0
        self._gap: _Gap | None = None  # the unreadable stretch being skipped

    def feed(self, data: bytes) -> bytes:
        """Decode *data*, the next bytes of the log; return the content they complete."""
        if self.kind is None:
            self._head += data
            self.kind = _detect(self._head, final=False)
            if self.kind is None:
                return b""
            data, self._head = self._head, b""
        if self.kind == "zstd":
            self._input += data
            return self._zstd_content()
        if self.kind == "gzip":
            return self._gzip_content(data)
        return data

    def finish(self) -> bytes:
        """End of input: return the last content; warn about what could not be read."""
        content = b""
        if self.kind is None:
            self.kind = _detect(self._head, final=True)
            data, self._head = self._head, b""
            content = self.feed(data)
        if self.kind == "gzip":
            content += self._gzip_finish()
        elif self.kind == "zstd":
            content += self._zstd_finish()
        return content

    def _zstd_content(self) -> bytes:
        """Frame by frame, so the end of each frame (and a torn last one) is known."""
        out: list[bytes] = []
        while self._zstd_step(out):
            pass
        return b"".join(out)

    def _zstd_step(self, out: list[bytes]) -> bool:
        """Go one step further in _input; return whether another step can be taken."""
        if self._frame is None:
            return self._next_frame()
        if self._end < 0:
            if self._fed == len(self._input):
                return False
            try:
                content = self._frame.decompress(bytes(self._input[self._fed :]))
            except zstandard.ZstdError as exc:
                self._reject(str(exc))
                return True
            self._fed = len(self._input)
            self._content.append(content)
            self._content_size += len(content)
            if not self._frame.eof:
                if self._streaming or max(self._fed, self._content_size) > _HOLD:
                    self._stream(out)
                return False
            self._end = self._fed - len(self._frame.unused_data)
        return self._judge(out, final=False)

    def _next_frame(self) -> bool:
        """Start a frame at the next magic number in _input; skip what comes before it."""
        found = self._input.find(ZSTD_MAGIC)
        # Without a magic number, keep the last bytes: they may be the start of one.
        skip = found if found >= 0 else max(0, len(self._input) - len(ZSTD_MAGIC) + 1)
        if skip:
            self._skip(skip)
        if found < 0:
            return False
        self._frame, self._frame_start = self._zstd.decompressobj(), self._input_start
        self._fed, self._end, self._streaming = 0, -1, False
        return True

    def _skip(self, size: int) -> None:
        """Skip the first *size* bytes of _input: no frame starts in them."""
        if self._gap is None:
            self._gap = _Gap(self._input_start)
            if size < len(ZSTD_MAGIC) and ZSTD_MAGIC.startswith(self._input[:size]):
                self._gap.reason, self._gap.frames = "torn inside its magic number", 1
        del self._input[:size]
        self._input_start += size

    def _judge(self, out: list[bytes], *, final: bool) -> bool:
        """The frame ended: pass its content on, unless it is a torn frame whose last block
        took the bytes of the frames after it for its own.

        Only a frame without a checksum can end so unnoticed, and only with (part of) a
        magic number inside it. It is rejected when a whole frame is inside it, or when the
        bytes after it are no frame's start. They may be yet to come: wait for them, unless
        *final*.
        """
        end = self._end
        inner = self._input.find(ZSTD_MAGIC, 1, end)
        suspect = not self._streaming and (inner > 0 or self._ends_in_magic())
        if suspect and not self._has_checksum():
            after = bytes(self._input[end : end + len(ZSTD_MAGIC)])
            if not ZSTD_MAGIC.startswith(after) or self._holds_a_frame(inner, end):
                self._reject("a torn frame ran into the frames after it")
                return True
            if len(after) < len(ZSTD_MAGIC) and not final:
                return False
        out += self._content
        self._close_gap(self._frame_start, at_end=False)
        del self._input[:end]
        self._input_start += end
        self._frame, self._content, self._content_size = None, [], 0
        return True

    def _ends_in_magic(self) -> bool:
        """Whether the frame ends with the first bytes of a magic number."""
        end = self._end
        if self._input[end - 1] not in ZSTD_MAGIC[:-1]:  # most frames: one test
            return False
        return any(
            self._input[end - size : end] == ZSTD_MAGIC[:size]
            for size in range(1, min(len(ZSTD_MAGIC), end))
        )

    def _has_checksum(self) -> bool:
        header = bytes(self._input[: min(self._end, _MAX_FRAME_HEADER)])
        return bool(zstandard.get_frame_parameters(header).has_checksum)

    def _holds_a_frame(self, start: int, end: int) -> bool:
        """Whether a whole frame starts at a magic number in _input[start:end] and ends
        there too."""
        while start >= 0:
            try:
                frame = self._zstd.decompressobj()
                frame.decompress(bytes(self._input[start:end]))
                if frame.eof:
                    return True
            except zstandard.ZstdError:
                pass
            start = self._input.find(ZSTD_MAGIC, start + 1, end)
        return False

    def _stream(self, out: list[bytes]) -> None:
        """A frame too long to hold: pass on its lines as they decode and keep none of its
        input. It can still fail: its unterminated last line is then dropped, but what it
        gave cannot be taken back, and whole frames after a torn piece inside it (which
        it was fed) cannot be searched for."""
        if not self._streaming:
            self._streaming, self._content = True, [b"".join(self._content)]
        last = self._content[-1]  # the pieces before it hold no newline
        cut = last.rfind(b"\n") + 1
        if cut or self._content_size > _HOLD:  # a line that long is passed on unfinished
            cut = cut or len(last)
            out += self._content[:-1]
            out.append(last[:cut])
            self._content, self._content_size = [last[cut:]], len(last) - cut
        del self._input[: self._fed]
        self._input_start += self._fed
        self._fed = 0

    def _reject(self, reason: str) -> None:
        """The frame is torn or corrupt: look for the next one from its second byte, in the
        bytes it was fed (or from here, when the frame was too long to keep them)."""
        if self._gap is None:
            self._gap = _Gap(self._frame_start, reason)
        self._gap.frames += 1
        if self._streaming:
            self._gap.blind = True
        else:
            del self._input[:1]
            self._input_start += 1
        self._frame, self._content, self._content_size = None, [], 0

    def _close_gap(self, end: int, *, at_end: bool) -> None:
        """An unreadable stretch ended at *end* (in the log): count it and warn once."""
        gap, self._gap = self._gap, None
        if gap is None:
            return
        skipped = end - gap.start
        self.stats.skipped_frames += gap.frames
        self.stats.skipped_bytes += skipped
        where = " at the end" if at_end else ""
        if gap.frames:
            plural = "" if gap.frames == 1 else "s"
            what = f"{gap.frames} torn or corrupt zstd frame{plural}{where} ({skipped:,} bytes)"
            why = f": {gap.reason}" + (_BLIND if gap.blind else "")
        else:
            what, why = f"{skipped:,} bytes that are no zstd frame{where}", ""
        _warn(self.name, f"skipped {what}{why}")

    def _zstd_finish(self) -> bytes:
        """The input ended: a frame still open is torn; search its bytes for whole frames."""
        out: list[bytes] = []
        while True:
            while self._zstd_step(out):
                pass
            if self._frame is None:
                break
            if self._end >= 0:
                self._judge(out, final=True)
            else:
                self._reject("it runs past the end of the log")
        if self._input:  # no magic number in the last bytes
            self._skip(len(self._input))
        self.torn = self._gap is not None
        self._close_gap(self._input_start, at_end=True)
        return b"".join(out)

    def _gzip_content(self, data: bytes) -> bytes:
        out: list[bytes] = []
        if self._dead:
            self._dead_bytes += len(data)
            return b""
        while data:
            if self._frame is None:
                if not data.strip(b"\0"):  # zero padding after the last member, as gzip allows
                    break
                self._frame, self._frame_fed = zlib.decompressobj(16 + zlib.MAX_WBITS), 0
            try:
                out.append(self._frame.decompress(data))
            except zlib.error as exc:
                # The rest cannot be read: gzip members have no mark to search for.
                self._dead, self._dead_reason = True, str(exc)
                self._dead_bytes = self._frame_fed + len(data)
                self._frame = None
                break
            self._frame_fed += len(data)
            if self._frame.eof:
                data, self._frame = self._frame.unused_data, None
            else:
                data = b""
        return b"".join(out)

    def _gzip_finish(self) -> bytes:
        content = b""
        if self._dead:
            self.stats.skipped_frames += 1
            self.stats.skipped_bytes += self._dead_bytes
            self.torn = True
            _warn(
                self.name,
                f"skipped the rest ({self._dead_bytes:,} bytes): corrupt gzip data"
                f" ({self._dead_reason})",
            )
        elif self._frame is not None:
            content = self._frame.flush()
            if not self._frame.eof:
                self.stats.skipped_frames += 1
                self.stats.skipped_bytes += self._frame_fed
                self.torn = True
                _warn(
                    self.name,
                    f"skipped a torn gzip member at the end ({self._frame_fed:,} bytes)",
                )
        self._frame = None
        return content


@dataclass
class _Gap:
    """A stretch of a zstd log that could not be read, while it is being skipped."""

    start: int  # where it starts in the log
    reason: str = ""  # why its first frame failed
    frames: int = 0  # frames that failed in it
    blind: bool = False  # a frame too long to keep failed: frames inside it were lost


def _detect(head: bytes, *, final: bool) -> str | None:
    """The format of a log that starts with *head*; ``None`` until enough bytes came.

    A zstd log may start with the first bytes of a frame torn inside its magic number,
    then a whole frame: up to 7 bytes tell."""
    if len(head) < len(ZSTD_MAGIC) and not final:
        return None
    for torn in range(len(ZSTD_MAGIC)):
        if head[:torn] != ZSTD_MAGIC[:torn]:
            break
        after = head[torn : torn + len(ZSTD_MAGIC)]
        if after == ZSTD_MAGIC:
            return "zstd"
        if ZSTD_MAGIC.startswith(after) and not final:
            return None  # may be a magic number still coming
    return "gzip" if head.startswith(GZIP_MAGIC) else "plain"


class LineSplitter:
    """Content in, complete lines (without their newline) out, incrementally.

    The unterminated rest is kept as a list of pieces, so a long line costs time linear in
    its length; one growing past :data:`MAX_LINE` bytes is dropped up to its newline.

    Args:
        name: how warnings name the log.
        fingerprint: an object with ``update(bytes)`` that receives all the content, in
            order (a ``hashlib`` hash, for example).
        stats: where to count the lines skipped (a new :class:`ReadStats` when not given).

    Attributes:
        size: how many bytes of content came in so far.
        stats: what was skipped so far.
    """

    def __init__(
        self, name: str = "<stream>", *, fingerprint: Any = None, stats: ReadStats | None = None
    ) -> None:
        self.name = name
        self.fingerprint = fingerprint
        self.size = 0
        self.stats = ReadStats() if stats is None else stats
        self._partial: list[bytes] = []
        self._partial_size = 0
        self._overlong = -1  # the bytes dropped of a line too long, until its end (or -1)

    @property
    def pending(self) -> bool:
        """Whether an unterminated line is waiting for its end."""
        return bool(self._partial) or self._overlong >= 0

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
            if self._overlong >= 0:
                self._skip_overlong(self._overlong + len(lines.pop(0)))
            elif self._partial:
                lines[0] = b"".join(self._partial) + lines[0]
            self._partial, self._partial_size = [], 0
        if rest:
            if self._overlong >= 0:
                self._overlong += len(rest)
            else:
                self._partial.append(rest)
                self._partial_size += len(rest)
                if self._partial_size > MAX_LINE:
                    self._partial, self._overlong = [], self._partial_size
        return lines

    def finish(self, *, torn: bool = False) -> None:
        """End of content: count and warn about an unterminated last line (no warning when
        the input was *torn*: that was reported) or an overlong one."""
        if self._overlong >= 0:
            self._skip_overlong(self._overlong)
        elif self._partial:
            self.stats.skipped_lines += 1
            self.stats.skipped_line_bytes += self._partial_size
            if not torn:
                size = self._partial_size
                _warn(self.name, f"skipped an unterminated last line ({size:,} bytes)")
        self._partial, self._partial_size, self._overlong = [], 0, -1

    def _skip_overlong(self, size: int) -> None:
        self._overlong = -1
        self.stats.skipped_lines += 1
        self.stats.skipped_line_bytes += size
        _warn(self.name, f"skipped a line longer than {MAX_LINE:,} bytes ({size:,} bytes)")


def read_batches(
    stream: IO[bytes], name: str = "<stream>", *, stats: ReadStats | None = None
) -> Iterator[list[bytes]]:
    """Yield the lines of a binary *stream* as they arrive, one list per chunk read.

    A pipe's lines come out as soon as its writer wrote them (the stream's ``read1`` is
    used when it has one), so a caller can flush its own output after each list. What is
    skipped is counted in *stats* as it goes, when given, and reported under *name*.
    """
    decoder = Decoder(name, stats=stats)
    splitter = LineSplitter(name, stats=decoder.stats)
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


def read_lines(
    path: str | os.PathLike[str] | IO[bytes], *, stats: ReadStats | None = None
) -> Iterator[bytes]:
    """Yield each complete line (without its newline) of a plain, zstd or gzip log.

    *path* is a file's path or a binary stream open for reading (``sys.stdin.buffer``).
    The format is told by the first bytes. What cannot be read (see the module's
    documentation) is skipped with a :class:`RuntimeWarning` and counted in *stats*, when
    given; everything else is yielded.
    """
    if isinstance(path, (str, os.PathLike)):
        with Path(path).open("rb") as stream:
            for lines in read_batches(stream, str(path), stats=stats):
                yield from lines
    else:
        name = str(getattr(path, "name", "<stream>"))
        for lines in read_batches(path, name, stats=stats):
            yield from lines


def glued_record(line: bytes) -> tuple[int, dict[str, Any]] | None:
    """The whole JSON object a torn record's bytes were glued to, if *line* is that.

    A process killed in the middle of a write leaves part of a record without its
    newline; while other writers append without the lock, the next record lands right
    after it, and the two make one line that is not JSON. The record is the first suffix
    of the line that starts with ``{"`` and is a JSON object: one starting inside the torn
    part does not parse (the torn part never closes what it opened), nor does one starting
    inside the record (its closing brace is left over).

    Returns ``(offset, record)``, the torn part being ``line[:offset]``; ``None`` when the
    line does not start as a record does (``{``: a line of text that ends in JSON is not
    taken for one) or no suffix is a JSON object. Call it only for a line that does not
    parse as it is: it tries each ``{"`` in turn.
    """
    if not line.startswith(b"{"):
        return None
    start = line.find(b'{"', 1)
    while start > 0:
        try:
            event = orjson.loads(line[start:])
        except orjson.JSONDecodeError:
            pass
        else:
            if isinstance(event, dict):
                return start, event
        start = line.find(b'{"', start + 1)
    return None
