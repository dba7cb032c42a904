"""The names of rotated files: which log a file belongs to, and in what order.

One set of rules, used by :class:`~kakashi.writers.rotating.RotatingFileWriter` to name, shift and
prune its rotated files and by ``kakashi view`` to read a log whole. A file name parses to
exactly one :class:`RotatedName` or to nothing (an active file, a lock, anything else):

- **numbered**: ``<active>.<N>``, then ``.zst`` or ``.gz`` once compressed:
  ``app.log.1`` (the newest), ``app.log.2.zst``, ``app.log.zst.3`` (rotated from a
  ``.zst`` active file, compressed already);
- **timestamped**: ``<stem>.<stamp>[.<counter>]<suffix>``, then ``.zst`` or ``.gz``, where
  ``app.log`` splits into the stem ``app`` and the suffix ``.log`` at its first dot, the
  stamp is ``2026-11-27``, ``2026-11-27T16`` (hourly) or ``2026-11-27T16-59-00``, and the
  counter ``.1``, ``.2``... is added when a name is taken already:
  ``app.2026-11-27.log``, ``app.2026-11-27.1.log.gz``. A stamp in local time that carries
  a time of day carries its UTC offset too, ``2026-11-01T01-05-00-0500``, so that the
  hour the clocks go back through twice names each of its files once.

A log's rotated files are ordered by the moment their stamps name (:attr:`RotatedName.order`),
not by the letters of their names: on the night the clocks go back, ``T01-05-00-0500`` (the
second pass) comes after ``T01-40-00-0400`` (the first). A stamp without an offset (UTC, a
day, or a local one named before offsets were written) is read in the local time of the
process, which keeps such names in the order of their letters (see :func:`stamp_instant`).

Names are compared literally (no glob), and the stem ends at the first dot, so the files of
``app.log`` and ``app.access.log`` never mix: ``app.2026-11-27.access.log`` belongs to the
latter only. A ``.zst`` active file is the same log as its plain name (their timestamped
names coincide: ``app.2026-11-27.log.zst`` is what both ``app.log.zst`` and ``app.log``
with zstd compression make), so the files of a log are grouped by :func:`log_name`.

A rotated file and its compressed copy side by side (``app.log.2`` and ``app.log.2.zst``,
left by a crash in the middle of a compression) are one file: the listings name only the
copy, which is complete.

A ``namer`` (see :class:`~kakashi.writers.rotating.RotatingFileWriter`) may give other
names, ``app.1.log`` for ``app.log.1`` say. Given the namer, :func:`named_files` recognises
them: the namer is asked for a few sample names, and the part of its answer that carries the
number or stamp becomes the pattern (so a namer must keep the number or stamp in the name, as
every recipe does).

Two readings are ruled out on purpose: a suffix never ends in a number (``x.log.1`` is a
numbered file, never the active file of a timestamped set), and after a stamp a number is
the counter (``app.2026-11-27.1.log`` is a second file of ``app.log``, not of ``app.1.log``).
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "COMPRESSION_SUFFIXES",
    "LogSet",
    "NamerNames",
    "RotatedName",
    "compressed_name",
    "lock_name",
    "log_name",
    "log_sets",
    "named_files",
    "next_timestamped_name",
    "numbered_name",
    "parse",
    "rotated_files",
    "split_name",
    "stamp_instant",
    "timestamped_name",
    "utc_offset",
]

#: What each compression appends to a rotated file's name.
COMPRESSION_SUFFIXES = {"zstd": ".zst", "gzip": ".gz"}
# Files next to a log that are not part of it: the rotation lock, a compression in progress.
_NOT_LOGS = (".lock", ".partial")

# A date, an hour or a time of day, and (local time) the UTC offset: 2026-11-01T01-05-00-0500.
_STAMP = r"\d{4}-\d\d-\d\d(?:T\d\d(?:-\d\d-\d\d)?(?:[+-]\d{4})?)?"
_STAMP_PARTS = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)(?:T(\d\d)(?:-(\d\d)-(\d\d))?(?:([+-])(\d\d)(\d\d))?)?"
)
_NUMBERED = re.compile(r"(?P<active>.+)\.(?P<number>\d+)(?P<compression>\.zst|\.gz)?")
_TIMESTAMPED = re.compile(
    rf"(?P<stem>\.*[^.]+)\.(?P<stamp>{_STAMP})"
    r"(?:\.(?P<counter>\d+))?(?P<suffix>(?:\.[^.]+)*?)(?P<compression>\.zst|\.gz)?"
)
_ENDS_IN_NUMBER = re.compile(r"\.\d+$")
_COMPRESSED = r"(?P<compression>\.zst|\.gz)?"
# Sample keys a namer is asked about: they differ in their first and last characters, so the
# part of the answers they share is what the namer adds around them.
_NUMBERS = ("1", "2", "37")
_STAMPS = (("1971-01-01", 0), ("2088-12-31T23", 0), ("2000-02-02T22-22-22", 5))


@dataclass(frozen=True)
class RotatedName:
    """What a rotated file's name says.

    Attributes:
        log: the log it belongs to (see :func:`log_name`): ``app.log``.
        active: the active file's name as the rotated name spells it (``app.log.zst`` for
            ``app.log.zst.1``; for a timestamped name a trailing ``.zst`` is read as
            compression, so always the plain name).
        number: ``N`` of a numbered name (1 is the newest), else ``None``.
        stamp: the stamp of a timestamped name, else ``None``.
        counter: the counter of a timestamped name (0 when it has none).
        compression: ``""``, ``".zst"`` or ``".gz"``.
    """

    log: str
    active: str
    number: int | None
    stamp: str | None
    counter: int
    compression: str

    @property
    def order(self) -> tuple[int, float, str, int]:
        """The sort key that puts a log's rotated files oldest first.

        Timestamped files come by the moment their stamps name (:func:`stamp_instant`),
        then by stamp and counter, numerically; then numbered files from the highest
        number down (``.10`` before ``.2``).
        """
        if self.number is not None:
            return (1, 0.0, "", -self.number)
        stamp = self.stamp or ""
        return (0, stamp_instant(stamp), stamp, self.counter)

    def renumbered(self, number: int) -> str:
        """This numbered file's name with *number* instead (compression kept)."""
        return f"{self.active}.{number}{self.compression}"


def split_name(name: str) -> tuple[str, str]:
    """Split a file name into stem and suffix at its first dot: ``("app", ".log.zst")``.

    Leading dots belong to the stem (``.hidden.log``: ``(".hidden", ".log")``); a name
    ending in a dot has no suffix.
    """
    body = name.lstrip(".")
    dot = body.find(".")
    if dot < 0 or name.endswith("."):
        return name, ""
    cut = len(name) - len(body) + dot
    return name[:cut], name[cut:]


def log_name(active: str) -> str:
    """The log an active file of this name writes: the name without a trailing ``.zst``."""
    return active[: -len(".zst")] if active.endswith(".zst") and len(active) > 4 else active


def parse(name: str) -> RotatedName | None:
    """What *name* says as a rotated file, or ``None`` when it is not one."""
    if name.endswith(_NOT_LOGS):
        return None
    match = _TIMESTAMPED.fullmatch(name)
    if match is not None and not _ENDS_IN_NUMBER.search(match["suffix"]):
        active = match["stem"] + match["suffix"]
        return RotatedName(
            log=log_name(active),
            active=active,
            number=None,
            stamp=match["stamp"],
            counter=int(match["counter"] or 0),
            compression=match["compression"] or "",
        )
    match = _NUMBERED.fullmatch(name)
    if match is not None:
        return RotatedName(
            log=log_name(match["active"]),
            active=match["active"],
            number=int(match["number"]),
            stamp=None,
            counter=0,
            compression=match["compression"] or "",
        )
    return None


def utc_offset(seconds: int) -> str:
    """How a stamp writes a UTC offset of *seconds*: ``-0500``, ``+0530``, ``+0000``
    (whole minutes, as zones have had them since 1972)."""
    sign = "-" if seconds < 0 else "+"
    minutes = abs(int(seconds)) // 60
    return f"{sign}{minutes // 60:02d}{minutes % 60:02d}"


def stamp_instant(stamp: str) -> float:
    """The moment *stamp* names, in seconds since the epoch (what orders rotated files).

    A stamp with an offset (``2026-11-01T01-05-00-0500``) names one moment. One without is
    read in the local time of the process: a time the clocks went through twice as its
    first pass, and a time they skipped as the moment they skipped it, so that a later
    stamp never names an earlier moment and names without offsets keep the order of their
    letters, whatever zone reads them. A stamp that is no date (``2026-13-45``) comes
    before every other.
    """
    parts = _STAMP_PARTS.fullmatch(stamp)
    if parts is None:
        return -math.inf
    year, month, day, hour, minute, second, sign, off_hours, off_minutes = parts.groups()
    try:
        wall = dt.datetime(
            int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0)
        )
        if sign is not None:
            offset = (int(off_hours) * 60 + int(off_minutes)) * 60
            return calendar.timegm(wall.timetuple()) - (offset if sign == "+" else -offset)
        return _local_instant(wall)
    except (ValueError, OverflowError, OSError):  # no such date, or outside the platform's range
        return -math.inf


def _local_instant(wall: dt.datetime) -> float:
    """The moment the local clock read *wall* (its first pass when it read it twice; the
    moment the clocks skipped it when they did)."""
    first, second = wall.replace(fold=0).timestamp(), wall.replace(fold=1).timestamp()
    if first <= second:
        return first  # an ordinary time (both the same), or a repeated one
    # A skipped time: fold 0 reads it with the offset before the change, fold 1 with the
    # one after, so the change lies between; find it to the second.
    low, high = int(second), math.ceil(first)
    before = time.localtime(low).tm_gmtoff
    while high - low > 1:
        middle = (low + high) // 2
        if time.localtime(middle).tm_gmtoff == before:
            low = middle
        else:
            high = middle
    return float(high)


def lock_name(active: str) -> str:
    """The name of the lock file the writers of *active* rotate under: ``app.log.lock``."""
    return active + ".lock"


def numbered_name(active: str, number: int) -> str:
    """The numbered rotated name of the *active* file's *number*: ``app.log`` and 1
    make ``app.log.1``."""
    return f"{active}.{number}"


def compressed_name(name: str, compression: str) -> str:
    """The name of *name* once compressed with *compression* (``"zstd"`` or ``"gzip"``)."""
    return name + COMPRESSION_SUFFIXES[compression]


def timestamped_name(active: str, stamp: str, counter: int = 0) -> str:
    """The timestamped rotated name of the *active* file for *stamp*: ``app.log`` and
    ``2026-11-27`` make ``app.2026-11-27.log`` (with *counter* 2:
    ``app.2026-11-27.2.log``)."""
    stem, suffix = split_name(active)
    return f"{stem}.{stamp}.{counter}{suffix}" if counter else f"{stem}.{stamp}{suffix}"


def next_timestamped_name(active: str, stamp: str, existing: Iterable[str]) -> str:
    """The timestamped name for *active*'s next rotated file, given the *existing* names.

    ``app.2026-11-27.log`` when no file of the log has that stamp, else the counter after
    the highest one taken (compressed or not): after ``app.2026-11-27.1.log.zst``,
    ``app.2026-11-27.2.log``. Never a lower, freed one, so the newest file sorts last even
    after retention deleted the first ones.
    """
    log = log_name(active)
    counters = [
        parsed.counter
        for parsed in map(parse, existing)
        if parsed is not None and parsed.stamp == stamp and parsed.log == log
    ]
    return timestamped_name(active, stamp, max(counters) + 1 if counters else 0)


def _namer_pattern(
    namer: Callable[[str], Any], samples: list[tuple[str, str]], key: str, numbered: bool
) -> tuple[Path, re.Pattern[str]] | None:
    """The directory and name pattern of what *namer* makes of the *samples* (default
    path, key), or ``None`` when its answers do not carry the key between a fixed prefix
    and suffix."""
    try:
        answers = [os.fspath(namer(default)) for default, _ in samples]
    except Exception:
        return None
    if not all(isinstance(answer, str) for answer in answers):
        return None
    if answers[0] == samples[0][0]:
        return None  # the default names: parse() reads them
    # Character by character on purpose: the key may sit inside a file name.
    prefix = os.path.commonprefix(answers)  # noqa: RUF071
    suffix = os.path.commonprefix([answer[::-1] for answer in answers])[::-1]  # noqa: RUF071
    if numbered:  # a namer may pad the number: app.log.001
        prefix, suffix = prefix.rstrip("0123456789"), suffix.lstrip("0123456789")
    for answer, (_, wanted) in zip(answers, samples, strict=True):
        if len(prefix) + len(suffix) >= len(answer):
            return None
        middle = answer[len(prefix) : len(answer) - len(suffix)]
        padded = numbered and middle.isdigit() and int(middle) == int(wanted)
        if middle != wanted and not padded:
            return None
    directory, sep, head = prefix.rpartition(os.sep)
    if not sep or os.sep in suffix:
        return None
    regex = re.compile(re.escape(head) + key + re.escape(suffix) + _COMPRESSED)
    return Path(directory or os.sep), regex


class NamerNames:
    """The names a *namer* gives the rotated files of the active file *path*.

    ``namer`` is called as :mod:`logging` calls it, with the default name's full path
    (``/var/log/app.log.1``, ``/var/log/app.2026-11-27.log``) and returns the name to use.
    A namer that gives the default names (or names :func:`parse` reads) needs none of this;
    one that does not keep the number or stamp in its names has none to find.
    """

    def __init__(self, path: str | os.PathLike[str], namer: Callable[[str], Any]) -> None:
        self.path = Path(os.path.abspath(path))  # as logging passes it to a namer
        name = self.path.name
        numbered = [(str(self.path.with_name(numbered_name(name, int(n)))), n) for n in _NUMBERS]
        stamped = [
            (str(self.path.with_name(timestamped_name(name, stamp, counter))),
             f"{stamp}.{counter}" if counter else stamp)
            for stamp, counter in _STAMPS
        ]  # fmt: skip
        self._patterns: list[tuple[Path, re.Pattern[str], bool]] = []
        for samples, key, is_numbered in (
            (numbered, r"(?P<number>\d+)", True),
            (stamped, rf"(?P<stamp>{_STAMP})(?:\.(?P<counter>\d+))?", False),
        ):
            pattern = _namer_pattern(namer, samples, key, is_numbered)
            if pattern is not None:
                self._patterns.append((*pattern, is_numbered))

    def __bool__(self) -> bool:
        """Whether the namer's names can be recognised at all."""
        return bool(self._patterns)

    def read(self, file: str | os.PathLike[str]) -> RotatedName | None:
        """What *file*'s name says as a file the namer named, or ``None``."""
        file = Path(os.path.abspath(file))
        if file.name.endswith(_NOT_LOGS):
            return None
        for directory, regex, is_numbered in self._patterns:
            match = regex.fullmatch(file.name) if file.parent == directory else None
            if match is None:
                continue
            groups = match.groupdict()
            return RotatedName(
                log=log_name(self.path.name),
                active=self.path.name,
                number=int(groups["number"]) if is_numbered else None,
                stamp=groups.get("stamp"),
                counter=int(groups.get("counter") or 0),
                compression=groups["compression"] or "",
            )
        return None

    def files(self) -> list[tuple[RotatedName, Path]]:
        """The files the namer named that exist, unordered."""
        found: dict[Path, tuple[RotatedName, Path]] = {}
        for directory in dict.fromkeys(directory for directory, _, _ in self._patterns):
            for entry in _entries(directory):
                rotated = self.read(entry.path)
                if rotated is not None:
                    found[Path(entry.path)] = (rotated, Path(entry.path))
        return list(found.values())


def named_files(
    path: str | os.PathLike[str], namer: Callable[[str], Any]
) -> list[tuple[RotatedName, Path]]:
    """The rotated files of the active file *path* that *namer* named, unordered (see
    :class:`NamerNames`)."""
    return NamerNames(path, namer).files()


def _entries(directory: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as entries:
            return list(entries)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _in_order(found: list[tuple[tuple[int, float, str, int], str, Path]]) -> list[Path]:
    """The paths of *found*, oldest first, each file once.

    A rotated file whose compressed copy exists beside it (``app.log.2`` and
    ``app.log.2.zst``: a compression that was interrupted between putting the copy in
    place and removing the original) is left out: the copy is complete, and reading both
    would show every record twice.
    """
    names = {name for _, name, _ in found}
    kept = [
        item
        for item in found
        if not any(item[1] + suffix in names for suffix in COMPRESSION_SUFFIXES.values())
    ]
    return [path for _, _, path in sorted(kept)]


def rotated_files(
    directory: str | os.PathLike[str],
    active: str,
    *,
    namer: Callable[[str], Any] | None = None,
) -> list[Path]:
    """The rotated files of the active file named *active* in *directory*, oldest first.

    With the writer's *namer*, the files it named too (see :func:`named_files`). Each file
    once: an original beside its compressed copy is left out (see the module).
    """
    wanted = log_name(active)
    found: dict[Path, tuple[tuple[int, float, str, int], str, Path]] = {}
    for entry in _entries(Path(directory)):
        parsed = parse(entry.name)
        if parsed is not None and parsed.log == wanted:
            found[Path(entry.path)] = (parsed.order, entry.name, Path(entry.path))
    if namer is not None:
        for named, path in named_files(Path(directory, active), namer):
            found.setdefault(path, (named.order, path.name, path))
    return _in_order(list(found.values()))


@dataclass
class LogSet:
    """One log in a directory: its rotated files, oldest first, then its active file(s).

    Attributes:
        path: the log's path (``dir/app.log``), whether or not that file exists now.
        rotated: the rotated files, oldest first.
        active: the active files (usually one: ``app.log`` or ``app.log.zst``).
    """

    path: Path
    rotated: list[Path] = field(default_factory=list)
    active: list[Path] = field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        """Every file of the log, in the order its records were written."""
        return [*self.rotated, *self.active]


def log_sets(directory: str | os.PathLike[str]) -> list[LogSet]:
    """Every log in *directory*, by name: each regular file that is not a rotated one is an
    active file; a log whose active file is gone but whose rotated files remain counts too.
    Dot-files, ``.lock`` and ``.partial`` files and sub-directories are left out."""
    directory = Path(directory)
    sets: dict[str, LogSet] = {}
    ordered: dict[str, list[tuple[tuple[int, float, str, int], str, Path]]] = {}
    for entry in _entries(directory):
        if entry.name.startswith("."):
            continue
        try:
            if not entry.is_file():
                continue
        except OSError:
            continue
        if entry.name.endswith(_NOT_LOGS):
            continue
        parsed = parse(entry.name)
        log = parsed.log if parsed is not None else log_name(entry.name)
        logset = sets.setdefault(log, LogSet(directory / log))
        if parsed is None:
            logset.active.append(Path(entry.path))
        else:
            ordered.setdefault(log, []).append((parsed.order, entry.name, Path(entry.path)))
    for log, files in ordered.items():
        sets[log].rotated = _in_order(files)
    for logset in sets.values():
        logset.active.sort(key=lambda path: (path.name != logset.path.name, path.name))
    return [sets[log] for log in sorted(sets)]
