"""``kakashi view``: read JSON-lines logs, plain or compressed, and show them to a person.

It reads any JSON-lines log (not only Kakashi's): plain, ``.zst`` (a sequence of zstd
frames; a torn last frame is skipped with a warning) and ``.gz``. Given the active file of
a rotated set, it reads the rotated files first, oldest to newest. Records are filtered by
level, logger (prefix aware), time range and field values, and shown as coloured text on
a terminal or passed through as JSON with ``--json``. Lines that are not JSON objects are
skipped and counted; the count is reported on stderr at the end. ``--follow`` keeps
reading new records as they are written, across rotations, like ``tail -F``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson
import zstandard

from kakashi.core.records import LogLevel
from kakashi.formatters import colour_wanted, render_event
from kakashi.writers import naming
from kakashi.writers.reading import ZSTD_MAGIC, read_lines

__all__ = ["Query", "rotated_set", "view"]


def rotated_set(path: Path) -> list[Path]:
    """*path* preceded by its rotated files, oldest first (named as
    :mod:`kakashi.writers.naming` says)."""
    files = naming.rotated_files(path.parent, path.name)
    return [*files, path] if path.exists() else files


def _parse_time(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


@dataclass
class Query:
    """Which records to show. Built from the command line; every test is optional."""

    min_level: int = 0
    loggers: tuple[str, ...] = ()
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    where: dict[str, str] = field(default_factory=dict)

    def matches(self, event: dict[str, Any]) -> bool:
        """Whether *event* passes every test."""
        if self.min_level:
            level = _level_number(event.get("level"))
            if level is not None and level < self.min_level:
                return False
        if self.loggers:
            name = str(event.get("logger", ""))
            if not any(name == n or name.startswith(n + ".") for n in self.loggers):
                return False
        if self.since is not None or self.until is not None:
            try:
                when = _parse_time(str(event["timestamp"]))
            except (KeyError, ValueError):
                return False
            if self.since is not None and when < self.since:
                return False
            if self.until is not None and when > self.until:
                return False
        for key, wanted in self.where.items():
            value: Any = event
            for part in key.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            if (value is None and wanted != "null") or not _same(value, wanted):
                return False
        return True


def _same(value: Any, wanted: str) -> bool:
    if isinstance(value, bool):
        return wanted == ("true" if value else "false")
    if value is None:
        return wanted == "null"
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode() == wanted
    return str(value) == wanted


def _level_number(level: Any) -> int | None:
    if isinstance(level, int):
        return level
    try:
        return int(LogLevel.from_name(str(level)))
    except ValueError:
        match = re.fullmatch(r"LEVEL(\d+)", str(level))
        return int(match.group(1)) if match else None


@dataclass
class Skipped:
    """Lines that were not JSON objects: how many, and where the first one was."""

    count: int = 0
    first: str = ""

    def add(self, where: str) -> None:
        """Count one skipped line at *where*."""
        self.count += 1
        if not self.first:
            self.first = where


def _events(
    path: Path, lines: Iterator[bytes], skipped: Skipped
) -> Iterator[tuple[bytes, dict[str, Any]]]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            event = None
        if isinstance(event, dict):
            yield line, event
        else:
            skipped.add(f"{path}:{number}")


def _read(path: Path) -> Iterator[bytes]:
    yield from read_lines(path)


class _Follower:
    """Reads what is appended to one path, across rotations (like ``tail -F``).

    It holds the file open, so records written to it right before a rotation are still
    read; when the path names another file, it finishes the old one and reads the new
    one from its start. Plain and zstd files alike (zstd: complete frames only).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stream: Any = None
        self.inode: tuple[int, int] | None = None
        self._switch()

    def _switch(self) -> None:
        if self.stream is not None:
            self.stream.close()
        try:
            self.stream = self.path.open("rb")
        except FileNotFoundError:
            self.stream, self.inode = None, None
            return
        info = os.fstat(self.stream.fileno())
        self.inode = (info.st_dev, info.st_ino)
        self.raw = b""
        self.pending = b""
        self.zstd: bool | None = None

    def poll(self) -> list[bytes]:
        """Return the complete lines written since the last call."""
        lines = self._drain()
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return lines
        if (info.st_dev, info.st_ino) != self.inode:  # rotated: the old file is finished
            lines += self._drain()
            self._switch()
            lines += self._drain()
        elif self.stream is not None and info.st_size < self.stream.tell():  # copytruncate
            self.stream.seek(0)
            self.raw = self.pending = b""
        return lines

    def _drain(self) -> list[bytes]:
        if self.stream is None:
            return []
        self.raw += self.stream.read()
        if self.zstd is None and len(self.raw) >= 4:
            self.zstd = self.raw[:4] == ZSTD_MAGIC
        if self.zstd:
            self._frames()
        elif self.zstd is False:
            self.pending += self.raw
            self.raw = b""
        *lines, self.pending = self.pending.split(b"\n")
        return lines

    def _frames(self) -> None:
        while self.raw:
            frame = zstandard.ZstdDecompressor().decompressobj()
            try:
                content = frame.decompress(self.raw)
            except zstandard.ZstdError:
                return
            if not frame.eof:
                return  # the frame is still being written: wait for the rest
            self.pending += content
            self.raw = frame.unused_data

    def close(self) -> None:
        """Close the file being followed."""
        if self.stream is not None:
            self.stream.close()


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return (info.st_dev, info.st_ino)


def view(
    paths: Sequence[Path],
    query: Query,
    out: TextIO,
    *,
    as_json: bool,
    follow: bool,
    interval: float = 0.25,
    follow_for: float | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Show the records of *paths* that match *query*; return the exit status.

    With *follow*, keep reading until interrupted, *follow_for* seconds have passed or
    *stop* is set.
    """
    try:
        return _view(paths, query, out, as_json, follow, interval, follow_for, stop)
    except BrokenPipeError:  # the reader went away (| head): stop quietly
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the interpreter closes it
        except OSError:
            pass
        return 0


def _view(
    paths: Sequence[Path],
    query: Query,
    out: TextIO,
    as_json: bool,
    follow: bool,
    interval: float,
    follow_for: float | None,
    stop: threading.Event | None,
) -> int:
    colours = not as_json and colour_wanted(out)
    skipped = Skipped()
    shown = 0

    def emit(line: bytes, event: dict[str, Any]) -> None:
        nonlocal shown
        if query.matches(event):
            shown += 1
            out.write(
                line.decode("utf-8", "replace") if as_json else render_event(event, colours=colours)
            )
            out.write("\n")

    missing = [p for p in paths if not rotated_set(p)]
    for path in missing:
        print(f"kakashi view: {path}: no such file", file=sys.stderr)
    followers = []
    for path in paths:
        # Following: open the active file first and read it through the follower, so a
        # rotation happening meanwhile neither loses nor repeats a record.
        follower = _Follower(path) if follow else None
        files = rotated_set(path)
        if follower is not None:
            followers.append(follower)
            files = [f for f in files if _inode(f) not in (follower.inode, None)]
        for file in files:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                for line, event in _events(file, _read(file), skipped):
                    emit(line, event)
            for warning in caught:
                print(f"kakashi view: {warning.message}", file=sys.stderr)
    for follower in followers:
        for line, event in _events(follower.path, iter(follower.poll()), skipped):
            emit(line, event)
    out.flush()
    deadline = None if follow_for is None else time.monotonic() + follow_for
    try:
        while follow and (deadline is None or time.monotonic() < deadline):
            if stop is not None and stop.is_set():
                break
            for follower in followers:
                for line, event in _events(follower.path, iter(follower.poll()), skipped):
                    emit(line, event)
            out.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        pass
    finally:
        for follower in followers:
            follower.close()
    if skipped.count:
        print(
            f"kakashi view: skipped {skipped.count} line(s) that are not JSON objects "
            f"(first at {skipped.first})",
            file=sys.stderr,
        )
    return 1 if missing else 0


def add_arguments(parser: Any) -> None:
    """Add ``kakashi view``'s arguments to an argparse parser."""
    parser.add_argument("paths", nargs="+", type=Path, help="log files (their rotated files too)")
    parser.add_argument("--level", help="show this level and above (e.g. warning)")
    parser.add_argument("--logger", action="append", default=[], help="logger name or prefix")
    parser.add_argument("--since", help="from this time (ISO 8601; UTC if no zone)")
    parser.add_argument("--until", help="up to this time (ISO 8601; UTC if no zone)")
    parser.add_argument(
        "--where", action="append", default=[], metavar="KEY=VALUE",
        help="only records whose field KEY (dots for nested keys) equals VALUE",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the records as JSON lines")
    parser.add_argument("--follow", "-f", action="store_true", help="keep reading new records")
    parser.add_argument("--follow-for", type=float, default=None, help=argparse_suppress())


def argparse_suppress() -> str:
    """Hidden option marker (``--follow-for`` stops following after N seconds, for tests)."""
    import argparse

    return argparse.SUPPRESS


def run(args: Any, parser: Any) -> int:
    """Run ``kakashi view`` with parsed *args*; bad arguments end through *parser*."""
    query = Query()
    try:
        if args.level:
            query.min_level = int(LogLevel.from_name(args.level))
        query.loggers = tuple(args.logger)
        query.since = _parse_time(args.since) if args.since else None
        query.until = _parse_time(args.until) if args.until else None
    except ValueError as exc:
        parser.error(str(exc))
    for item in args.where:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--where takes KEY=VALUE, got {item!r}")
        query.where[key] = value
    return view(
        args.paths, query, sys.stdout, as_json=args.json, follow=args.follow,
        follow_for=args.follow_for,
    )  # fmt: skip
