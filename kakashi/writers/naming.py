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
  ``app.2026-11-27.log``, ``app.2026-11-27.1.log.gz``.

Names are compared literally (no glob), and the stem ends at the first dot, so the files of
``app.log`` and ``app.access.log`` never mix: ``app.2026-11-27.access.log`` belongs to the
latter only. A ``.zst`` active file is the same log as its plain name (their timestamped
names coincide: ``app.2026-11-27.log.zst`` is what both ``app.log.zst`` and ``app.log``
with zstd compression make), so the files of a log are grouped by :func:`log_name`.

A rotated file and its compressed copy side by side (``app.log.2`` and ``app.log.2.zst``,
left by a crash in the middle of a compression) are one file: the listings name only the
copy, which is complete.

Two readings are ruled out on purpose: a suffix never ends in a number (``x.log.1`` is a
numbered file, never the active file of a timestamped set), and after a stamp a number is
the counter (``app.2026-11-27.1.log`` is a second file of ``app.log``, not of ``app.1.log``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "COMPRESSION_SUFFIXES",
    "LogSet",
    "RotatedName",
    "compressed_name",
    "lock_name",
    "log_name",
    "log_sets",
    "next_timestamped_name",
    "numbered_name",
    "parse",
    "rotated_files",
    "split_name",
    "timestamped_name",
]

#: What each compression appends to a rotated file's name.
COMPRESSION_SUFFIXES = {"zstd": ".zst", "gzip": ".gz"}
# Files next to a log that are not part of it: the rotation lock, a compression in progress.
_NOT_LOGS = (".lock", ".partial")

_NUMBERED = re.compile(r"(?P<active>.+)\.(?P<number>\d+)(?P<compression>\.zst|\.gz)?")
_TIMESTAMPED = re.compile(
    r"(?P<stem>\.*[^.]+)\.(?P<stamp>\d{4}-\d\d-\d\d(?:T\d\d(?:-\d\d-\d\d)?)?)"
    r"(?:\.(?P<counter>\d+))?(?P<suffix>(?:\.[^.]+)*?)(?P<compression>\.zst|\.gz)?"
)
_ENDS_IN_NUMBER = re.compile(r"\.\d+$")


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
    def order(self) -> tuple[int, str, int]:
        """The sort key that puts a log's rotated files oldest first.

        Timestamped files come by stamp then counter, numerically, then numbered files
        from the highest number down (``.10`` before ``.2``).
        """
        if self.number is not None:
            return (1, "", -self.number)
        return (0, self.stamp or "", self.counter)

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


def lock_name(active: str) -> str:
    """The name of the lock file the writers of *active* rotate under: ``app.log.lock``."""
    return active + ".lock"


def numbered_name(active: str, number: int) -> str:
    """The numbered rotated name: ``app.log`` and 1 make ``app.log.1``."""
    return f"{active}.{number}"


def compressed_name(name: str, compression: str) -> str:
    """The name of *name* once compressed with *compression* (``"zstd"`` or ``"gzip"``)."""
    return name + COMPRESSION_SUFFIXES[compression]


def timestamped_name(active: str, stamp: str, counter: int = 0) -> str:
    """The timestamped rotated name: ``app.log`` and ``2026-11-27`` make
    ``app.2026-11-27.log`` (with *counter* 2: ``app.2026-11-27.2.log``)."""
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


def _entries(directory: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as entries:
            return list(entries)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _in_order(found: list[tuple[tuple[int, str, int], str, Path]]) -> list[Path]:
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


def rotated_files(directory: str | os.PathLike[str], active: str) -> list[Path]:
    """The rotated files of the active file named *active* in *directory*, oldest first.

    Each file once: an original beside its compressed copy is left out (see the module).
    """
    wanted = log_name(active)
    found: list[tuple[tuple[int, str, int], str, Path]] = []
    for entry in _entries(Path(directory)):
        parsed = parse(entry.name)
        if parsed is not None and parsed.log == wanted:
            found.append((parsed.order, entry.name, Path(entry.path)))
    return _in_order(found)


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
    ordered: dict[str, list[tuple[tuple[int, str, int], str, Path]]] = {}
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
