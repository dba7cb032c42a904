"""``kakashi view``: read JSON-lines logs, plain or compressed, and show them to a person.

It reads any JSON-lines log (not only Kakashi's), plain, zstd (a sequence of frames; a torn
last frame is skipped with a warning) or gzip, told by the first bytes. Each argument is

- a log's active file: its rotated files are read first, oldest to newest (the names are
  :mod:`kakashi.writers.naming`'s), then the file itself; a rotated file alone is read alone;
- a directory: every log in it, each with its rotated files;
- ``-``: standard input, shown as it arrives (``tail -f app.log | kakashi view -``).

Records are filtered by level, logger (prefix aware), time range and field values, and shown
as text (:func:`kakashi.formatters.render_event`, levels coloured on a terminal) or passed
through as JSON with ``--json``. With several logs, text output starts each with a
``==> path <==`` line, as ``tail`` does. Lines that are not JSON objects are skipped and
counted on stderr at the end. ``--follow`` keeps reading new records as they are written,
across any number of rotations between two looks (see :mod:`kakashi.cli.follow`).
Misuse (a missing or unreadable file, a directory without logs) is a one-line message on
stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import io
import json
import os
import re
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO

import orjson

from kakashi._wording import plural
from kakashi.cli.follow import Follower
from kakashi.core.records import LogLevel, to_level
from kakashi.formatters import colour_wanted, render_event
from kakashi.writers import naming
from kakashi.writers.reading import glued_record, read_batches

__all__ = ["Query", "Source", "sources", "view"]

#: The argument that names standard input.
STDIN = Path("-")


def _parse_time(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


@dataclass
class Query:
    """Which records to show. Built from the command line; every test is optional.

    Attributes:
        min_level: the lowest level shown (``--level``); 0 shows every record.
        loggers: logger names, prefix aware (``--logger``); empty shows every logger.
        since: the earliest timestamp shown (``--since``), aware, or ``None``.
        until: the latest timestamp shown (``--until``), aware, or ``None``.
        where: dotted field names and the text their value must have (``--where``).
    """

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
class Source:
    """What one command-line argument names: one log, or standard input.

    Attributes:
        label: how headers and messages name it.
        files: its files, in the order they were written.
        follow: the path to follow with ``--follow`` (``None``: nothing to follow).
        stdin: it is standard input.
    """

    label: str
    files: list[Path] = field(default_factory=list)
    follow: Path | None = None
    stdin: bool = False


def sources(
    paths: Sequence[Path], namer: Callable[[str], Any] | None = None
) -> tuple[list[Source], list[str]]:
    """The logs that *paths* name, and a message for each path that names none (a path
    with no file yet is still a log to follow). With the writer's *namer*, a log's
    rotated files include those it named."""
    found: list[Source] = []
    problems: list[str] = []
    for path in paths:
        if path == STDIN:
            found.append(Source("standard input", stdin=True))
        elif path.is_dir():
            logs = naming.log_sets(path)
            if not logs:
                problems.append(f"{path}: no logs in this directory")
            for log in logs:
                follow = log.active[0] if log.active else log.path
                found.append(Source(str(log.path), log.files, follow))
        elif path.exists() and naming.parse(path.name) is not None:
            found.append(Source(str(path), [path]))  # a rotated file, read alone
        else:
            files = naming.rotated_files(path.parent, path.name, namer=namer)
            if path.exists():
                files.append(path)
            if not files:
                problems.append(f"{path}: no such file")
            found.append(Source(str(path), files, path))
    return found, problems


@dataclass
class _Skipped:
    """Lines that were not JSON objects: how many, and where the first one was."""

    count: int = 0
    first: str = ""
    glued: int = 0  # of them, lines that end in a whole record (read, the torn start skipped)

    def add(self, where: str) -> None:
        self.count += 1
        if not self.first:
            self.first = where

    def message(self) -> str:
        are = "is not a JSON object" if self.count == 1 else "are not JSON objects"
        said = f"skipped {plural(self.count, 'line')} that {are} (first at {self.first})"
        if self.glued:
            said += (
                f"; {self.glued:,} of them held a torn record glued to a whole one:"
                " the whole one was read"
            )
        return said


def _parse(line: bytes) -> dict[str, Any] | None:
    """The JSON object on *line*, or ``None``."""
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError:
        try:  # what orjson refuses but JSON allows: integers beyond 64 bits, NaN
            event = json.loads(line)
        except (ValueError, RecursionError):
            return None
    return event if isinstance(event, dict) else None


def _standard_input() -> IO[bytes]:
    """The process's standard input as bytes; empty when it was closed (``<&-``)."""
    if sys.stdin is None:
        return io.BytesIO()
    return sys.stdin.buffer


def _say(message: str) -> None:
    print(f"kakashi view: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _warnings_said() -> Iterator[None]:
    """Show the readers' warnings (torn frames, cut lines) as one-line messages, at once."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", RuntimeWarning)
        warnings.showwarning = lambda message, *args, **kwargs: _say(str(message))
        yield


class _Viewer:
    """One run of ``kakashi view``: what to show, where, and what was skipped."""

    def __init__(self, query: Query, out: TextIO, as_json: bool, headers: bool) -> None:
        self.query = query
        self.out = out
        self.as_json = as_json
        self.colours = not as_json and colour_wanted(out)
        self.headers = headers
        self.skipped = _Skipped()
        self.status = 0
        self._shown: Source | None = None
        self._headed = 0

    def header(self, source: Source) -> None:
        """Start *source*'s records with ``==> label <==`` (with several logs, as ``tail``)."""
        if self.headers and source is not self._shown:
            self.out.write(f"{chr(10) if self._headed else ''}==> {source.label} <==\n")
            self._headed += 1
        self._shown = source

    def show(
        self, source: Source, lines: list[bytes], where: str, number: int | None = None
    ) -> int | None:
        """Show the records among *lines* that match; they are the lines of *where* after
        line *number* (``None``: line numbers unknown). Return the number of the last one."""
        for line in lines:
            if number is not None:
                number += 1
            if not line.strip():
                continue
            event = _parse(line)
            if event is not None:
                self._show(source, line, event)
                continue
            self.skipped.add(where if number is None else f"{where}:{number}")
            glued = glued_record(line)
            if glued is not None:  # a torn record, and a whole one after it
                self.skipped.glued += 1
                offset, event = glued
                first = _parse(line[:offset])  # cut just before its newline: whole too
                if first is not None:
                    self._show(source, line[:offset], first)
                self._show(source, line[offset:], event)
        return number

    def _show(self, source: Source, line: bytes, event: dict[str, Any]) -> None:
        """Show one record (its *line* as read, parsed as *event*) if it matches."""
        if self.query.matches(event):
            self.header(source)
            if self.as_json:
                self.out.write(line.decode("utf-8", "replace"))
            else:
                self.out.write(render_event(event, colours=self.colours))
            self.out.write("\n")

    def read_file(self, source: Source, path: Path) -> None:
        """Show the records of one file."""
        # Only errors of reading are this file's; an error of writing the output (a full
        # disk, a closed pipe) goes up to kakashi.cli.main.
        try:
            stream = path.open("rb")
        except OSError as exc:
            self.fail(f"{path}: {exc.strerror or exc}")
            return
        with stream:
            batches = read_batches(stream, str(path))
            number: int | None = 0
            while True:
                try:
                    lines = next(batches)
                except StopIteration:
                    return
                except OSError as exc:
                    self.fail(f"{path}: {exc.strerror or exc}")
                    return
                number = self.show(source, lines, str(path), number)

    def read_stream(self, source: Source, stream: IO[bytes]) -> None:
        """Show the records of a stream as they arrive."""
        number: int | None = 0
        for lines in read_batches(stream, "<stdin>"):
            number = self.show(source, lines, "<stdin>", number)
            self.out.flush()

    def fail(self, message: str) -> None:
        """Say what went wrong; the exit status will be 1."""
        _say(message)
        self.status = 1


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
    stdin: IO[bytes] | None = None,
    namer: Callable[[str], Any] | None = None,
) -> int:
    """Show the records of *paths* that match *query*; return the exit status.

    A path is a log's active file, a rotated file, a directory of logs, or ``-`` for
    *stdin* (default: the process's standard input). With *follow*, keep reading until
    interrupted, *follow_for* seconds have passed or *stop* is set, looking every
    *interval* seconds. *namer* is the writers' ``namer``, for the rotated files it named
    (not with *follow*). Records are written to *out*, as text or, with *as_json*, as
    JSON lines. A closed output (``| head``) raises :class:`BrokenPipeError`.
    """
    if namer is not None and follow:
        raise ValueError("a namer's rotated files are read without --follow only")
    with _warnings_said():
        return _view(paths, query, out, as_json, follow, interval, follow_for, stop, stdin, namer)


def _view(
    paths: Sequence[Path],
    query: Query,
    out: TextIO,
    as_json: bool,
    follow: bool,
    interval: float,
    follow_for: float | None,
    stop: threading.Event | None,
    stdin: IO[bytes] | None,
    namer: Callable[[str], Any] | None,
) -> int:
    found, problems = sources(paths, namer)
    if not follow:  # a log with no file yet is only worth following
        found = [source for source in found if source.files or source.stdin]
    viewer = _Viewer(query, out, as_json, headers=not as_json and len(found) > 1)
    for problem in problems:
        viewer.fail(problem)
    followers: list[tuple[Source, Follower]] = []
    for source in found:
        viewer.header(source)
        if source.stdin:
            viewer.read_stream(source, stdin or _standard_input())
        elif follow and source.follow is not None:
            # The follower reads the whole log first, then what is written next, so a
            # rotation in between neither loses nor repeats a record.
            follower = Follower(source.follow, viewer.fail)
            followers.append((source, follower))
            viewer.show(source, follower.poll(), source.label)
        else:
            for path in source.files:
                viewer.read_file(source, path)
        out.flush()
    deadline = None if follow_for is None else time.monotonic() + follow_for
    try:
        while followers and (deadline is None or time.monotonic() < deadline):
            if stop is not None and stop.is_set():
                break
            for source, follower in followers:
                viewer.show(source, follower.poll(), source.label)
            out.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        pass
    finally:
        for _, follower in followers:
            follower.close()
    if viewer.skipped.count:
        _say(viewer.skipped.message())
    return viewer.status


def add_arguments(parser: Any) -> None:
    """Add ``kakashi view``'s arguments to an argparse parser."""
    parser.add_argument(
        "paths", nargs="+", type=Path, metavar="PATH",
        help="a log file (with its rotated files), a directory of logs, or - for stdin",
    )  # fmt: skip
    parser.add_argument(
        "--level", help="show this level and above: a name (warning) or a number (25)"
    )
    parser.add_argument("--logger", action="append", default=[], help="logger name or prefix")
    parser.add_argument("--since", help="from this time (ISO 8601; UTC if no zone)")
    parser.add_argument("--until", help="up to this time (ISO 8601; UTC if no zone)")
    parser.add_argument(
        "--where", action="append", default=[], metavar="KEY=VALUE",
        help="only records whose field KEY (dots for nested keys) equals VALUE",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the records as JSON lines")
    parser.add_argument("--follow", "-f", action="store_true", help="keep reading new records")
    parser.add_argument(
        "--namer", metavar="MODULE:FUNCTION",
        help="the namer the log's writers use, to find the rotated files it named",
    )  # fmt: skip
    # Hidden: stop following after N seconds (for tests).
    parser.add_argument("--follow-for", type=float, default=None, help=argparse.SUPPRESS)


def run(args: Any, parser: Any) -> int:
    """Run ``kakashi view`` with parsed *args*; bad arguments end through *parser*."""
    query = Query()
    try:
        if args.level:
            level = args.level.strip()
            query.min_level = to_level(int(level) if level.isdigit() else level, "--level")
        query.loggers = tuple(args.logger)
        query.since = _parse_time(args.since) if args.since else None
        query.until = _parse_time(args.until) if args.until else None
    except ValueError as exc:
        parser.error(str(exc))
    namer = None
    if args.namer:
        if args.follow:
            parser.error("--namer cannot be used with --follow")
        if any(path.is_dir() for path in args.paths):
            parser.error("--namer applies to log files, not to directories")
        try:
            namer = _load(args.namer)
        except Exception as exc:  # the user's module may fail any way at import
            parser.error(f"--namer {args.namer}: {type(exc).__name__}: {exc}")
    for item in args.where:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--where takes KEY=VALUE, got {item!r}")
        query.where[key] = value
    return view(
        args.paths, query, sys.stdout, as_json=args.json, follow=args.follow,
        follow_for=args.follow_for, namer=namer,
    )  # fmt: skip


def _load(spec: str) -> Callable[[str], Any]:
    """The callable ``module:name`` (``name`` may be dotted: ``module:Class.method``)."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError("expected MODULE:FUNCTION")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, "")  # as python -m does: a module beside the user
    found: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        found = getattr(found, part)
    if not callable(found):
        raise ValueError(f"{attribute} is not callable")
    sample = os.path.abspath("app.log.1")
    answer = found(sample)
    if not isinstance(answer, (str, os.PathLike)):
        raise ValueError(f"{attribute}({sample!r}) returned {answer!r}, not a file name")
    return found  # type: ignore[no-any-return]
