"""Following a log across rotations, like ``tail -F``, never missing or repeating a record.

A :class:`Follower` watches one log: an active file and its rotated files, named as
:mod:`kakashi.writers.naming` says. It keeps the active file open and reads what is
appended. When the path names another file, the writer rotated, perhaps many times since
the last look: the follower finishes the file it held, reads every rotated file newer than
the newest one it has read, oldest first, then holds the new active file.

Names shift with every numbered rotation, so files are known again by identity:

- by inode, checked against the first bytes the file had (a deleted file's inode is soon
  reused by a new file);
- a compressed copy (zstd or gzip) is a new file with a new inode, so it is known by
  content: its decompressed length and the CRC-32 of the content already read from the
  file it copies; anything after that is read too.

A process that wrote to the active file just as another rotated it appends to the rotated
file: the follower keeps the last files it read open and reads such late records too,
putting them before what it read from newer files in the same look, so each process's
records stay in their order.

Retention may delete rotated files before they could be read (rotations faster than the
looks, and few files kept). When the newest file read is gone, the files after it may have
gone too: the follower says so through *report* rather than silently.

While it lists the directory it holds a shared lock on the writers' ``<path>.lock`` (when
there is one, and for at most a few milliseconds of listing and opening), so no rotation
renames files under it, and it opens the files it needs before letting go. Without the
lock, several processes rotating one file make names change between two agreeing
listings, and records would be read twice.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from kakashi._platform import UnsupportedPlatformError, posix_module
from kakashi.writers import naming
from kakashi.writers.reading import CHUNK, Decoder, LineSplitter

__all__ = ["Follower"]

_RAW_HEAD = 512  # bytes kept of each file's start, to tell a reused inode from the old file
_CONTENT_HEAD = 4096  # bytes kept of each file's content, to turn away a non-copy quickly
_MAX_OPEN = 256  # files opened per listing (the newest); older ones are opened when read
_MAX_ROUNDS = 100  # listings per look; a writer rotating faster is caught up at the next
_LIST_ATTEMPTS = 20  # listings until one holds still (compression changes one file at a time)
_MISSING_KEPT = 32  # files gone from the directory, kept to recognise their compressed copies
_RECENT_KEPT = 4  # files kept open after reading, for records appended late
_LOCK_WAIT = 2.0  # seconds to wait for a rotation to finish before listing without the lock

Inode = tuple[int, int]


class _Fingerprint:
    """Length, CRC-32 and first bytes of a file's content, updated as it is read."""

    __slots__ = ("crc", "head", "size")

    def __init__(self) -> None:
        self.size = 0
        self.crc = 0
        self.head = b""

    def update(self, content: bytes) -> None:
        """Account for the next *content*."""
        if len(self.head) < _CONTENT_HEAD:
            self.head += content[: _CONTENT_HEAD - len(self.head)]
        self.crc = zlib.crc32(content, self.crc)
        self.size += len(content)


@dataclass(eq=False)
class _Read:
    """A file read: what it takes to know it again and to go on reading it.

    Attributes:
        rank: when it was first read (older files were read first): output order.
        decoder: decodes what is appended to the file (``None`` for a compressed copy,
            which is written once).
        splitter: cuts its content into lines, holding an unterminated last one.
        fingerprint: what its content was.
        raw_head: its first bytes, to tell it from a new file on its inode.
        raw_size: how many of its bytes were read.
    """

    rank: int
    decoder: Decoder | None
    splitter: LineSplitter
    fingerprint: _Fingerprint
    raw_head: bytes = b""
    raw_size: int = 0

    def read_on(self, stream: IO[bytes]) -> list[bytes]:
        """Read *stream* (this file) from where this read stopped to its end."""
        if self.decoder is None:
            return []
        stream.seek(self.raw_size)
        lines: list[bytes] = []
        while chunk := stream.read(CHUNK):
            if len(self.raw_head) < _RAW_HEAD:
                self.raw_head += chunk[: _RAW_HEAD - len(self.raw_head)]
            self.raw_size += len(chunk)
            lines += self.splitter.feed(self.decoder.feed(chunk))
        return lines


@dataclass(eq=False)
class _File:
    """A file of the log as the listing found it, opened while the listing held."""

    path: Path
    inode: Inode
    size: int = 0
    compressed: bool = False
    stream: IO[bytes] | None = None


@dataclass
class _Listing:
    """The log's files at one moment: rotated files in groups (a file and its compressed
    copy while compression runs share a group), oldest first, then the active file."""

    groups: list[list[_File]] = field(default_factory=list)
    active: _File | None = None
    stale: bool = False  # a file changed between listing and opening: list again

    def files(self) -> Iterator[_File]:
        """Every file listed."""
        for group in self.groups:
            yield from group
        if self.active is not None:
            yield self.active

    def close(self) -> None:
        """Close the files opened for the listing that nobody took."""
        for file in self.files():
            if file.stream is not None:
                file.stream.close()


class Follower:
    """Reads one log as it is written, across rotations (see the module's description).

    Args:
        path: the active file (it may not exist yet).
        report: called with a one-line message when records may have been missed.
    """

    def __init__(self, path: Path, report: Callable[[str], None]) -> None:
        self.path = path
        self.report = report
        self._log = naming.log_name(path.name)
        self._held: tuple[Inode, _Read, IO[bytes]] | None = None  # the active file
        self._recent: deque[tuple[_Read, IO[bytes]]] = deque()  # last files read, open
        self._present: dict[Inode, _Read] = {}  # files read, by inode, as last listed
        self._missing: deque[_Read] = deque(maxlen=_MISSING_KEPT)  # read, then gone
        self._newest: _Read | None = None  # the newest file read that had content
        self._ranks = itertools.count()
        self._out: dict[int, list[bytes]] = {}  # this look's lines, by the rank of their file
        try:
            self._fcntl: Any = posix_module("fcntl", "following a log's rotations")
        except UnsupportedPlatformError:  # no POSIX locks: list without one
            self._fcntl = None

    def poll(self) -> list[bytes]:
        """Return the complete lines written since the last call (all of them, the first
        time): each file's in order, older files' first."""
        self._out = {}
        self._drain()
        held = self._held
        info = _stat(self.path)
        if held is not None and info is not None and _inode(info) == held[0]:
            if info.st_size < held[1].raw_size:  # copytruncate: start again at the top
                self._hold(held[0], held[2], self._new_read(self.path))
        else:
            self._catch_up()
        for read, stream in self._recent:  # after reading newer files: see the module
            self._emit(read, read.read_on(stream))
        lines = [line for rank in sorted(self._out) for line in self._out[rank]]
        self._out = {}
        return lines

    def close(self) -> None:
        """Close the files held open."""
        if self._held is not None:
            self._held[2].close()
            self._held = None
        while self._recent:
            self._recent.popleft()[1].close()

    # -- reading ---------------------------------------------------------------------------

    def _emit(self, read: _Read, lines: list[bytes]) -> None:
        if lines:
            self._out.setdefault(read.rank, []).extend(lines)
        if read.fingerprint.size and (self._newest is None or read.rank > self._newest.rank):
            self._newest = read

    def _drain(self) -> None:
        """Read what was appended to the held file."""
        if self._held is not None:
            _, read, stream = self._held
            self._emit(read, read.read_on(stream))

    def _new_read(self, path: Path) -> _Read:
        fingerprint = _Fingerprint()
        splitter = LineSplitter(str(path), fingerprint=fingerprint)
        return _Read(next(self._ranks), Decoder(str(path)), splitter, fingerprint)

    def _hold(self, inode: Inode, stream: IO[bytes], read: _Read) -> None:
        """Hold the active file and read it."""
        self._present[inode] = read
        self._held = (inode, read, stream)
        self._drain()

    def _keep_open(self, read: _Read, stream: IO[bytes]) -> None:
        """Keep a file just read open a while, for records appended late."""
        if read.decoder is None:  # a compressed copy never grows
            stream.close()
            return
        self._recent.append((read, stream))
        if len(self._recent) > _RECENT_KEPT:
            self._recent.popleft()[1].close()

    def _let_go(self) -> None:
        """Read the held file, rotated away, to its end, and keep it open a while."""
        if self._held is not None:
            self._drain()
            _, read, stream = self._held
            self._held = None
            self._keep_open(read, stream)

    # -- catching up after rotations ---------------------------------------------------------

    def _catch_up(self) -> None:
        """Let go of the held file, read the rotated files newer than the newest one read,
        then hold the active file."""
        self._let_go()
        rechecked = False
        for _ in range(_MAX_ROUNDS):
            listing = self._list()
            try:
                position, newest_found = self._locate(listing)
                if self._newest is not None and not newest_found:
                    if not rechecked:  # a file may be between two names: look again
                        rechecked = True
                        continue
                    self.report(
                        f"{self.path}: rotated files were deleted before they could be read "
                        "(rotation outran --follow and retention); records may be missing"
                    )
                    self._newest = None
                if not all(self._read_whole(group) for group in listing.groups[position + 1 :]):
                    continue  # a file not opened with the listing was renamed: list again
                active = listing.active
                if active is None or active.stream is None:
                    return  # between a rotation and the new file: wait for it
                read = self._present.get(active.inode)
                if read is None or read.decoder is None:
                    read = self._new_read(active.path)
                self._hold(active.inode, active.stream, read)
                active.stream = None
            finally:
                listing.close()
            info = _stat(self.path)
            if info is not None and self._held is not None and _inode(info) == self._held[0]:
                return
            self._let_go()  # rotated again meanwhile

    def _locate(self, listing: _Listing) -> tuple[int, bool]:
        """Know the listed files again; return the index of the newest group read before
        and whether the newest file read is still there. Appended content is read too."""
        known: dict[Inode, _Read] = {}
        for file in listing.files():
            read = self._present.get(file.inode)
            if read is not None and _same_file(file, read):
                known[file.inode] = read
        for inode, gone in self._present.items():  # deleted, or replaced by a copy
            if inode not in known and gone.fingerprint.size and gone not in self._missing:
                self._missing.append(gone)
        position, newest_found = -1, False
        for index, group in enumerate(listing.groups):
            for file in group:
                found = known.get(file.inode)
                if found is None and file.compressed and self._missing:
                    found = self._copy_of(file)
                    if found is not None:
                        known[file.inode] = found
                if found is None:
                    continue
                position = index
                newest_found = newest_found or found is self._newest
                if file.stream is not None and file.size > found.raw_size:
                    self._emit(found, found.read_on(file.stream))  # appended late
        active = listing.active
        if active is not None and (again := known.get(active.inode)) is not None:
            newest_found = newest_found or again is self._newest
        self._present = known
        return position, newest_found

    def _copy_of(self, file: _File) -> _Read | None:
        """The earlier read of the file that *file* is a compressed copy of, if any (what
        the copy holds beyond what was read is read too)."""
        if file.stream is None:
            return None
        candidates = sorted(self._missing, key=lambda read: read.fingerprint.size)
        fingerprint = _Fingerprint()
        decoder = Decoder(str(file.path))
        match: _Read | None = None
        extra: list[bytes] = []
        file.stream.seek(0)
        raw_head = b""
        while candidates or match is not None:
            chunk = file.stream.read(CHUNK)
            if len(raw_head) < _RAW_HEAD:
                raw_head += chunk[: _RAW_HEAD - len(raw_head)]
            content = decoder.feed(chunk) if chunk else decoder.finish()
            while content and match is None and candidates:
                take = content[: candidates[0].fingerprint.size - fingerprint.size]
                fingerprint.update(take)
                content = content[len(take) :]
                candidates = [c for c in candidates if _same_start(c.fingerprint, fingerprint)]
                while candidates and candidates[0].fingerprint.size == fingerprint.size:
                    candidate = candidates.pop(0)
                    if candidate.fingerprint.crc == fingerprint.crc:
                        match = candidate
                        break
            if match is not None and content:
                extra.append(content)
            if not chunk:
                break
        if match is None:
            return None
        self._emit(match, match.splitter.feed(b"".join(extra)))
        match.decoder, match.raw_head, match.raw_size = None, raw_head, file.size
        self._missing.remove(match)
        return match

    def _read_whole(self, group: list[_File]) -> bool:
        """Read a rotated file not read before (``False``: it no longer opens as listed)."""
        file = group[0]
        stream, file.stream = file.stream or _open_as_listed(file), None
        if stream is None:
            return False
        read = self._new_read(file.path)
        self._present[file.inode] = read
        self._emit(read, read.read_on(stream))
        if file.compressed and read.decoder is not None:  # a copy, complete: it never grows
            self._emit(read, read.splitter.feed(read.decoder.finish()))
            read.decoder = None
        self._keep_open(read, stream)
        return True

    # -- listing ---------------------------------------------------------------------------------

    def _list(self) -> _Listing:
        """The log's files, each opened as listed.

        Listed and opened under the writers' rotation lock, so no rotation renames a file in
        between. Compression (which replaces a file by its copy) and retention do not take
        the lock, so the directory is listed until two listings agree and every file opens
        as listed.
        """
        with self._rotation_lock():
            previous: dict[str, Inode] | None = None
            for attempt in range(_LIST_ATTEMPTS):
                names = self._scan()
                if names != previous:
                    previous = names
                    continue
                listing = self._open(names, final=attempt == _LIST_ATTEMPTS - 1)
                if not listing.stale:
                    return listing
                listing.close()
                previous = None
            return self._open(previous or {}, final=True)

    def _scan(self) -> dict[str, Inode]:
        """The names of the log's files in the directory, with their inodes."""
        found: dict[str, Inode] = {}
        try:
            entries = list(os.scandir(self.path.parent))
        except OSError:
            return found
        for entry in entries:
            parsed = naming.parse(entry.name)
            if entry.name != self.path.name and (parsed is None or parsed.log != self._log):
                continue
            try:
                if entry.is_file():
                    found[entry.name] = _inode(entry.stat())
            except OSError:  # gone since the directory was read
                continue
        return found

    def _open(self, names: dict[str, Inode], final: bool) -> _Listing:
        """Group and open the listed files (the newest :data:`_MAX_OPEN`; older ones are
        opened when read). A file that no longer opens as listed makes the listing stale,
        or, when *final*, is left out."""
        groups: dict[tuple[Any, ...], list[_File]] = {}
        listing = _Listing()
        newest_first = sorted(names, key=lambda name: _age(self.path.name, name), reverse=True)
        for count, name in enumerate(newest_first):
            file = _File(self.path.with_name(name), names[name])
            if count < _MAX_OPEN:
                file.stream = _open_as_listed(file)
                if file.stream is None:
                    listing.stale = not final
                    continue
                file.size = os.fstat(file.stream.fileno()).st_size
            parsed = naming.parse(name)
            if name == self.path.name:
                listing.active = file
            elif parsed is not None:
                file.compressed = bool(parsed.compression)
                groups.setdefault((parsed.order, parsed.active), []).append(file)
        listing.groups = [
            sorted(groups[key], key=lambda file: file.path.name) for key in sorted(groups)
        ]
        return listing

    @contextlib.contextmanager
    def _rotation_lock(self) -> Iterator[None]:
        """Hold a shared lock on the writers' lock file, if there is one and it comes soon."""
        fd = -1
        if self._fcntl is not None:
            try:
                fd = os.open(self.path.with_name(naming.lock_name(self.path.name)), os.O_RDONLY)
            except OSError:
                fd = -1
        try:
            if fd >= 0:
                deadline = time.monotonic() + _LOCK_WAIT
                while True:
                    try:
                        self._fcntl.flock(fd, self._fcntl.LOCK_SH | self._fcntl.LOCK_NB)
                        break
                    except OSError:
                        if time.monotonic() > deadline:
                            break
                        time.sleep(0.001)
            yield
        finally:
            if fd >= 0:
                os.close(fd)  # closing releases the lock


def _age(active: str, name: str) -> tuple[int, float, str, int]:
    """Sort key of a log's file names: rotated files oldest first, the active file last."""
    parsed = naming.parse(name)
    return (2, 0.0, "", 0) if name == active or parsed is None else parsed.order


def _same_file(file: _File, read: _Read) -> bool:
    """Whether *file*, on the inode of an earlier *read*, is that file: its first bytes are
    the same (a deleted file's inode is soon reused by a new file). A file that was empty
    when read has no bytes to know it by: it is that file only while it is still empty (if
    it grew, reading it whole from the start is right either way)."""
    if file.stream is None:
        return True  # one of the oldest files, not opened: too old to be on a reused inode
    if not read.raw_head:
        return file.size == 0
    fd = file.stream.fileno()
    where = os.lseek(fd, 0, os.SEEK_CUR)  # os.pread is POSIX-only; this is not
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, len(read.raw_head)) == read.raw_head
    finally:
        os.lseek(fd, where, os.SEEK_SET)


def _same_start(one: _Fingerprint, other: _Fingerprint) -> bool:
    size = min(len(one.head), len(other.head))
    return one.head[:size] == other.head[:size]


def _open_as_listed(file: _File) -> IO[bytes] | None:
    """Open *file* if its path still names the listed inode."""
    try:
        stream = file.path.open("rb")
    except OSError:
        return None
    if _inode(os.fstat(stream.fileno())) != file.inode:
        stream.close()
        return None
    return stream


def _stat(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _inode(info: os.stat_result) -> Inode:
    return (info.st_dev, info.st_ino)
