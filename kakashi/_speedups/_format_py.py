"""Formatting: a :class:`Record` to its event (an ordered dict) and to one JSON line.

Pure-Python twin of ``_format_c.pyx`` and the reference for it: for the same record both
return the same bytes.

The event's keys, in order: ``timestamp`` (RFC 3339, UTC, microseconds), ``level``,
``logger``, ``message``; then the keys enrichers added; then the bound fields, then the
call's fields (a later one replaces an earlier one with the same key); then
``exception``, ``stack`` and ``source`` when present. A field named like one of
:data:`RESERVED_KEYS` is written as ``field.<name>``.
"""

from __future__ import annotations

import datetime
import functools
import os
import re
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any, overload

import orjson

from kakashi._errors import is_interrupt
from kakashi._speedups._capture_py import (
    RESERVED_KEYS,
    ExcInfo,
    Record,
    _safe_repr,
    _scrub,
    json_default,
    level_name,
)

__all__ = [
    "flock_holding_gil",
    "fstat_size_holding_gil",
    "ofd_getlk_holding_gil",
    "stat_identity_holding_gil",
    "bulk_body",
    "clickhouse_body",
    "clickhouse_rows",
    "clickhouse_tsv_rows",
    "event_dict",
    "format_batch",
    "exception_dict",
    "Lines",
    "format_json",
    "minimal_json",
    "render_timestamp",
]

#: The keys an enricher may not replace: they are the record itself.
_CORE_KEYS = frozenset({"timestamp", "level", "logger", "message", "exception", "stack", "source"})
_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS

# (second, "YYYY-MM-DDTHH:MM:SS.") of the last timestamp rendered; one tuple, so a
# reader always sees a matching pair.
_second_cache: tuple[int, str] = (-1, "")


def render_timestamp(time_ns: int) -> str:
    """Return *time_ns* as RFC 3339 UTC with microseconds: ``2026-11-27T18:06:00.123456Z``."""
    global _second_cache
    second, rest = divmod(time_ns, 1_000_000_000)
    cached_second, prefix = _second_cache
    if second != cached_second:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
        _second_cache = (second, prefix)
    return f"{prefix}{rest // 1000:06d}Z"


def _type_name(cls: type) -> str:
    module = cls.__module__
    if module in ("builtins", "__main__"):
        return cls.__qualname__
    return f"{module}.{cls.__qualname__}"


def exception_dict(exc_info: ExcInfo) -> dict[str, str]:
    """Return ``{"type", "message", "traceback"}`` for an ``exc_info`` tuple.

    The traceback is the full text :func:`traceback.format_exception` gives, chained
    causes included.
    """
    cls, exc, tb = exc_info
    try:
        message = str(exc)
    except BaseException as caught:
        if is_interrupt(caught):
            raise
        message = _safe_repr(exc)
    try:
        text = "".join(traceback.format_exception(cls, exc, tb)).rstrip("\n")
    except BaseException as failure:
        if is_interrupt(failure):
            raise
        text = f"<traceback unavailable: {type(failure).__name__}>"
    return {"type": _type_name(cls), "message": message, "traceback": text}


def event_dict(record: Record) -> dict[str, Any]:
    """Return the record as the ordered dict every formatter renders."""
    try:
        time_ns = record.time_ns
    except AttributeError:  # as the compiled twin, which takes only a Record
        raise _not_a_record(record) from None
    event: dict[str, Any] = {
        "timestamp": render_timestamp(time_ns),
        "level": level_name(record.level),
        "logger": record.logger,
        "message": record.message,
    }
    extra = record.extra
    if extra:
        for key, value in extra.items():
            event["field." + key if key in _CORE_KEYS else key] = value
    bound = record.bound
    if bound is not None:
        for key, value in bound.fields.items():
            event["field." + key if key in RESERVED_KEYS else key] = value
    fields = record.fields
    if fields:
        for key, value in fields.items():
            event["field." + key if key in RESERVED_KEYS else key] = value
    if record.exc_info is not None:
        event["exception"] = exception_dict(record.exc_info)
    if record.stack_info is not None:
        event["stack"] = record.stack_info
    source = record.source
    if source is not None:
        event["source"] = {"module": source[0], "function": source[1], "line": source[2]}
    return event


def minimal_json(record: Record, problem: str) -> bytes:
    """Return the record in a safe minimal form, marked with ``kakashi_error``.

    Used when an enricher or formatter failed: the timestamp, level, logger and message
    still reach the log, with *problem* saying what went wrong.
    """
    try:
        timestamp = render_timestamp(record.time_ns)
    except BaseException as caught:
        if is_interrupt(caught):
            raise
        timestamp = render_timestamp(time.time_ns())
    try:
        message = record.message
    except BaseException as caught:
        if is_interrupt(caught):
            raise
        message = _safe_repr(record.msg)
    event = {
        "timestamp": timestamp,
        "level": level_name(record.level) if type(record.level) is int else "ERROR",
        "logger": _safe_repr(record.logger) if type(record.logger) is not str else record.logger,
        "message": message,
        "kakashi_error": problem,
    }
    return orjson.dumps(_scrub(event))


def format_json(record: Record) -> bytes:
    """Return the record as one line of JSON (no trailing newline), via orjson.

    Never raises: a value orjson cannot take is made safe (see ``json_default``); a
    structure that still fails is scrubbed of lone surrogates and oversized ints; if even
    that fails, the safe minimal form is returned.
    """
    try:
        event = event_dict(record)
    except BaseException as exc:
        if is_interrupt(exc):
            raise
        if not hasattr(record, "time_ns"):  # as the compiled twin, which takes only a Record
            raise _not_a_record(record) from None
        return minimal_json(record, f"unformattable record: {type(exc).__name__}: {exc}")
    try:
        return orjson.dumps(event, json_default)  # top-level keys are str: no options needed
    except BaseException as caught:
        if is_interrupt(caught):
            raise
    try:
        return orjson.dumps(_scrub(event), default=json_default, option=_JSON_OPTIONS)
    except BaseException as exc:
        if is_interrupt(exc):
            raise
        return minimal_json(record, f"unserialisable record: {exc}")


def _not_a_record(value: object) -> TypeError:
    return TypeError(f"record must be a Record, got {type(value).__name__}")


def format_batch(
    records: Sequence[Record],
    render: Callable[[Record], bytes | None] | None = None,
    context: bool = False,
    constants: dict[str, Any] | None = None,
    thread: bool = False,
    fd: int = -1,
    gate: tuple[bytes, int, int, int, int] | None = None,
) -> Lines:
    """Return :func:`format_json` of each record, in order, as :class:`Lines` (one call
    for a whole batch; the compiled twin writes the bytes without holding the GIL).

    For a pipeline whose enrichers format_batch can stand in for: *render* (the
    pipeline's, which runs them) makes the line of a record they would change. Those
    are ``exception_enricher`` (a record with an active exception), ``context_enricher``
    when *context* is true (a record with a non-empty context), and enrichers of
    constant fields, merged in *constants* (every record; they come after
    ``context_enricher``), and ``thread_enricher`` when *thread* is true (every record;
    it comes first). Every other record's line is the same without them. (The compiled
    twin writes a context and constants of scalars, and the thread and process of a
    record whose thread name was captured, itself, as the enrichers would, without
    calling *render*.)

    *fd*: where the compiled twin writes the lines in the same release of the GIL as
    the rendering; this twin holds the GIL throughout and writes nothing (the result's
    ``written`` is 0, its ``write_error`` 0: the caller writes them). *gate*: the
    conditions the compiled twin checks before that write (a file writer's locked
    append); here its ``gate`` is 0, no write tried.

    Raises:
        ValueError: *context*, *constants* or *thread* without *render*.
        TypeError: *constants* is not a dict.
    """
    _check_batch_options(render, context, constants, thread)
    if not constants:
        constants = None
    if render is None:
        return Lines._of([format_json(record) for record in records])
    lines = []
    for record in records:
        if (
            constants is None
            and not thread
            and record.active_exc is None
            and not (context and record.context)
        ):
            lines.append(format_json(record))
            continue
        line = render(record)
        if type(line) is not bytes:
            raise TypeError(f"render returned {type(line).__name__}, not bytes")
        lines.append(line)
    return Lines._of(lines)


def _check_batch_options(render: object, context: bool, constants: object, thread: bool) -> None:
    if constants is not None and type(constants) is not dict:
        raise TypeError(f"format_batch: constants must be a dict, got {type(constants).__name__}")
    if render is None and (context or constants or thread):
        raise ValueError("format_batch: context=True, constants or thread=True need render")


class Lines(Sequence[bytes]):
    """A batch's JSON lines (what :func:`format_batch` returns): a read-only sequence of
    ``bytes`` (no newline), kept as one buffer, :attr:`joined`, in which each line ends
    with a newline. Writers that append lines write :attr:`joined` as it is; the lines
    are made ``bytes`` only when one is asked for (then all at once, and kept: a line is
    the same object each time). A slice is a ``Lines`` on the same buffer and lines."""

    __slots__ = ("_items", "_joined")

    _items: list[bytes]
    _joined: bytes | None
    #: Bytes of :attr:`joined` that format_batch wrote to its *fd*: none in this twin.
    written = 0
    #: The ``errno`` that stopped that write: none here.
    write_error = 0
    #: What became of format_batch's *gate*: 0, no write tried (this twin writes none).
    gate = 0

    def __init__(self) -> None:
        raise TypeError("Lines are made by format_batch")

    @classmethod
    def _of(cls, items: list[bytes]) -> Lines:
        lines = object.__new__(cls)
        lines._items = items
        lines._joined = None
        return lines

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[bytes]: ...
    def __getitem__(self, index: int | slice) -> bytes | Sequence[bytes]:
        if isinstance(index, slice):
            part = self._items[index]
            if index.step not in (None, 1):
                return part
            return Lines._of(part)
        try:
            return self._items[index]
        except IndexError:
            raise IndexError("Lines index out of range") from None

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Lines, list, tuple)):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Lines({self._items!r})"

    @property
    def joined(self) -> bytes:
        """The lines as one ``bytes``, each followed by a newline (empty for none)."""
        if self._joined is None:
            self._joined = b"\n".join(self._items) + b"\n" if self._items else b""
        return self._joined


def _json_objects(
    lines: Sequence[bytes], first: int, dropped: dict[int, str]
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each line of *lines* that is a JSON object, parsed, with its index (from *first*);
    the others go to *dropped* as ``"not_json"``."""
    for index, line in enumerate(lines, first):
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            dropped[index] = "not_json"
            continue
        if type(event) is not dict:
            dropped[index] = "not_json"
            continue
        yield index, event


def clickhouse_rows(
    lines: Sequence[bytes],
    kinds: dict[str, int],
    micros: str | None,
    fields: str | None,
    microseconds: Callable[[Any], int],
    first: int = 0,
) -> tuple[list[Any], list[int], dict[int, str]]:
    """The ClickHouse JSONEachRow rows of JSON *lines* (``kakashi.writers.clickhouse``).

    Each line's keys that are in *kinds* (column name -> 0: as it is; 1: a String
    column, a value that is not a string goes as its JSON text; 2: a number column, a
    boolean goes as 0/1) go to their columns, in the line's order, a ``null`` left to the
    column's default; then *micros* (when not None and not a key of the line) gets
    ``microseconds(line's timestamp)``; then *fields* (when not None and some key is not
    a column) the other keys as one JSON object, as text.

    Returns the rows (what :func:`clickhouse_body` serialises: here dicts, compiled the
    JSON of each), the index of each, and the lines that are not JSON objects (index ->
    ``"not_json"``); indices count from *first* (where *lines* start in a batch). Raises
    what ``orjson.dumps`` raises for a value it cannot write (an integer beyond 64 bits).
    """
    dumps = orjson.dumps
    rows: list[Any] = []
    indices: list[int] = []
    dropped: dict[int, str] = {}
    for index, event in _json_objects(lines, first, dropped):
        row: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        # One pass, no call per key in the common case (a string for a String column).
        for key, value in event.items():
            kind = kinds.get(key)
            if kind is None:
                extra[key] = value
            elif value is None:
                continue  # the column's default
            elif kind == 1:
                row[key] = value if type(value) is str else dumps(value).decode()
            elif kind == 2 and type(value) is bool:
                row[key] = int(value)
            else:
                row[key] = value
        if micros is not None and micros not in row:
            row[micros] = microseconds(event.get("timestamp"))
        if extra and fields is not None:
            row[fields] = dumps(extra).decode()
        rows.append(row)
        indices.append(index)
    return rows, indices, dropped


def clickhouse_body(rows: list[Any]) -> bytes:
    """The JSONEachRow request body of *rows* (from :func:`clickhouse_rows`): each row's
    JSON, separated by commas (JSONEachRow reads them, ClickHouse 18.16 on). Here
    serialised at once, as an array without its brackets."""
    return orjson.dumps(rows)[1:-1]


# TabSeparated escapes, as ClickHouse writes them (it reads these and raw bytes alike;
# only the tab and the newline must be escaped, and the backslash that starts escapes).
_TSV_ESCAPES = str.maketrans(
    {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\b": "\\b", "\f": "\\f", "\0": "\\0"}
)
#: The JSON formatter's timestamp, ``2026-11-27T18:06:00.123456Z``.
_STAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")


def _unix_time_text(seconds: int) -> str:
    """*seconds* since the epoch as ``YYYY-MM-DD hh:mm:ssZ`` (a TabSeparated ``DateTime``
    that ``best_effort`` reads in UTC, where a bare number is misread); its JSON text
    when out of range."""
    try:
        moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return str(seconds)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def clickhouse_tsv_rows(
    lines: Sequence[bytes],
    columns: Sequence[tuple[str, int, bytes]],
    micros: str | None,
    fields: str | None,
    microseconds: Callable[[Any], int],
    first: int = 0,
) -> tuple[list[bytes], list[int], dict[int, str]]:
    """The ClickHouse TabSeparated rows of JSON *lines* (``kakashi.writers.clickhouse``).

    *columns*: the insert's columns in order, each ``(name, kind, default)``: *kind* is
    how a value is fitted (0: as it is; 1: a String column, a value that is not a string
    as its JSON text; 2: a number column, a boolean as 0/1; 3: a ``DateTime`` column,
    the JSON formatter's timestamp as ``YYYY-MM-DD hh:mm:ssZ`` (shorter to read than
    the whole stamp, still in UTC whatever the column's time zone) and an integer as
    the UTC time of that Unix time); *default*: the text for a key the line lacks or
    holds ``null`` (the type's default: ``0``, empty, ``\\N``...). A name given twice
    gets the value the first time, its default after. *micros*, when a column's name
    and not a key of the line, gets ``microseconds(line's timestamp)``; *fields*, when a
    column's name, gets the keys that are not columns as one JSON object (its default
    when there are none). Text is escaped as ClickHouse escapes it.

    Returns the rows (bytes, each ending in a newline: the body is their concatenation),
    the index of each, and the lines that are not JSON objects (index -> ``"not_json"``);
    indices count from *first*. Raises what ``orjson.dumps`` raises for a value it cannot
    write (an integer beyond 64 bits).
    """
    dumps, escapes = orjson.dumps, _TSV_ESCAPES
    names = {name for name, _, _ in columns if name != fields}  # the rest go to fields
    # Each column with whether it takes the line's value: a name given again takes its
    # default (the compiled build matches a key to the first column of its name).
    table: list[tuple[str, int, bytes, bool]] = []
    for name, kind, default in columns:
        table.append((name, kind, default, all(name != taken[0] for taken in table)))
    rows: list[bytes] = []
    indices: list[int] = []
    dropped: dict[int, str] = {}
    for index, event in _json_objects(lines, first, dropped):
        texts: list[str] = []
        for name, kind, default, takes in table:
            value = event.get(name) if takes else None
            if name == fields:
                extra = {key: item for key, item in event.items() if key not in names}
                text = dumps(extra).decode().translate(escapes) if extra else None
            elif value is None:
                text = str(microseconds(event.get("timestamp"))) if name == micros else None
            elif type(value) is str:
                if kind == 3 and len(value) == 27 and _STAMP.fullmatch(value):
                    text = f"{value[:10]} {value[11:19]}Z"
                else:
                    text = value.translate(escapes)
            elif kind == 3 and type(value) is int:
                text = _unix_time_text(value)
            elif type(value) is bool and kind != 1:
                text = ("1" if value else "0") if kind == 2 else ("true" if value else "false")
            else:
                text = dumps(value).decode().translate(escapes)
            texts.append(default.decode() if text is None else text)
        rows.append(("\t".join(texts) + "\n").encode())
        indices.append(index)
    return rows, indices, dropped


#: How the JSON formatter's lines start (its timestamp is the first key).
_LINE_START = b'{"timestamp":'
_NEXT_LINE = b"\n" + _LINE_START
#: A key an action line may carry as it is: printable ASCII, no quote, no backslash.
_PLAIN_KEY = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")


@functools.lru_cache(maxsize=8)
def _outside(hour: bytes) -> re.Pattern[bytes]:
    """A search for a line (after a newline) whose timestamp is not in *hour*
    (``YYYY-MM-DDTHH``) in the JSON formatter's form."""
    return re.compile(rb'\n\{"timestamp":"(?!' + re.escape(hour) + rb':\d\d:\d\d\.\d{6}Z")')


def bulk_body(
    lines: Sequence[bytes],
    keys: Sequence[str | None] | None,
    prefix: bytes,
    hour: bytes | None,
    head: bytes,
    skip: int,
    field_key: bytes | None,
) -> bytes | None:
    """The Elasticsearch ``_bulk`` body of the JSON formatter's *lines*, one action prefix
    for them all; ``None`` when a line is not in the form this takes (the writer then
    frames it its general way).

    Per line: *prefix* (``{"create":{"_index":"name"``), then ``,"_id":"KEY"}}`` with its
    key from *keys* (or ``}}`` when *keys* is ``None``) and a newline, then *head* and
    the line without its first *skip* bytes (the timestamp key renamed), and a newline.

    A line is taken when it is ``bytes`` without a newline that starts with the
    timestamp key, holds no *field_key* (a key named like the renamed one) and, with an
    *hour* (``YYYY-MM-DDTHH``), has its timestamp in that hour in the formatter's form
    (``...:MM:SS.ffffffZ``); a key when it is a str of printable ASCII without a quote
    or backslash. Done batch-wide here (one join, counts and one search); the compiled
    twin checks and copies each line without the GIL.

    Raises:
        ValueError: *skip* is not from 0 to the timestamp key's length (13).
    """
    if not 0 <= skip <= len(_LINE_START):
        raise ValueError(f"skip must be from 0 to {len(_LINE_START)}, got {skip!r}")
    count = len(lines)
    if not count:
        return b""
    if not all(type(line) is bytes for line in lines):
        return None
    joined = b"\n".join(lines)
    if (
        joined.count(b"\n") != count - 1
        or not joined.startswith(_LINE_START)
        or joined.count(_NEXT_LINE) != count - 1
        or (field_key is not None and field_key in joined)
    ):
        return None
    if hour is not None:
        outside = _outside(hour)
        if outside.match(b"\n" + lines[0][:42]) or outside.search(joined):
            return None
    columns: list[Sequence[bytes]] = []
    if keys is not None:
        if len(keys) != count or not all(
            type(key) is str and _PLAIN_KEY.fullmatch(key) for key in keys
        ):
            return None
        columns.append("\n".join(keys).encode("ascii").split(b"\n"))  # type: ignore[arg-type]
    if skip == len(_LINE_START):  # each line without its timestamp key: one split
        columns.append(joined[skip:].split(_NEXT_LINE))
    else:
        columns.append([line[skip:] for line in lines] if skip else lines)
    action = prefix.replace(b"%", b"%%") + (b',"_id":"%b"}}\n' if keys is not None else b"}}\n")
    template = (action + head.replace(b"%", b"%%") + b"%b\n") * count
    values: list[bytes] = [b""] * (count * len(columns))
    for offset, column in enumerate(columns):
        values[offset :: len(columns)] = column
    return template % tuple(values)


# -- one record's write ----------------------------------------------------------------------


def gil_held_writes(fd: int, any_filesystem: bool = False) -> bool:
    """Whether :func:`write_holding_gil` keeps the interpreter lock writing to *fd*.

    Never here: Python code cannot make a system call without releasing the lock. The
    compiled twin says True for a regular file on a local filesystem (ext4, XFS, Btrfs,
    F2FS, ZFS, tmpfs, overlayfs; Linux) written to the page cache (not O_SYNC or O_DSYNC,
    not mounted ``sync``, not ``chattr +S``), or any regular file with *any_filesystem*.
    """
    return False


def fstat_size_holding_gil(fd: int) -> int:
    """``os.fstat(fd).st_size`` (the compiled twin keeps the interpreter lock meanwhile).

    Raises:
        OSError: as ``os.fstat``.
    """
    return os.fstat(fd).st_size


def open_holding_gil(
    path: str | os.PathLike[str] | bytes,
    flags: int,
    mode: int,
    owned: dict[int, Any],
    note: Any = None,
) -> int:
    """``os.open(path, flags, mode)``, the descriptor put in *owned* (``owned[fd] =
    note``). The compiled twin keeps the interpreter lock from the ``open`` to that
    (Python code cannot: a thread may fork between the two here), and answers ``ENXIO``
    for a FIFO nobody reads and ``EAGAIN`` for a file another process holds a lease on,
    rather than wait.

    Raises:
        OSError: as ``os.open``.
    """
    fd = os.open(path, flags, mode)
    owned[fd] = note
    return fd


def close_holding_gil(fd: int, owned: dict[int, Any]) -> None:
    """``del owned[fd]`` (if there) and ``os.close(fd)``; the compiled twin keeps the
    interpreter lock from one to the other.

    Raises:
        OSError: as ``os.close``.
    """
    owned.pop(fd, None)
    os.close(fd)


def stat_identity_holding_gil(path: str | os.PathLike[str] | bytes) -> tuple[int, int]:
    """``(st_dev, st_ino)`` of ``os.stat(path)`` (the compiled twin keeps the lock).

    Raises:
        OSError: as ``os.stat`` (``FileNotFoundError`` for a path that is gone).
    """
    info = os.stat(path)
    return info.st_dev, info.st_ino


def ofd_getlk_holding_gil(fd: int, request: bytes) -> bytes:
    """``fcntl.fcntl(fd, fcntl.F_OFD_GETLK, request)`` (the compiled twin keeps the
    interpreter lock meanwhile): *request* is a packed ``struct flock``.

    Raises:
        OSError: as ``fcntl.fcntl``.
    """
    import fcntl

    answer: bytes = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, request)
    return answer


def flock_holding_gil(fd: int, operation: int) -> None:
    """``fcntl.flock(fd, operation)`` for an operation that never waits (``LOCK_NB``, or
    ``LOCK_UN``); the compiled twin keeps the interpreter lock meanwhile.

    Raises:
        ValueError: an operation that could wait.
        OSError: as ``fcntl.flock`` (``BlockingIOError`` when another holds the lock).
    """
    import fcntl

    if not (operation & fcntl.LOCK_NB or operation == fcntl.LOCK_UN):
        raise ValueError("flock_holding_gil takes LOCK_NB or LOCK_UN operations only")
    fcntl.flock(fd, operation)


def write_releasing_gil(fd: int, data: bytes) -> int:
    """Write *data* to *fd* with one ``write`` system call and return how many bytes the
    kernel took: ``os.write``. (The compiled twin also pauses a worker's claim on the GIL
    while it writes; see :func:`kakashi._speedups._queue_py.claim_gil`.)

    Raises:
        TypeError: *data* is not exactly ``bytes``.
        OSError: the write failed (``ENOSPC``...).
    """
    if type(data) is not bytes:
        raise TypeError(
            f"Argument 'data' has incorrect type (expected bytes, got {type(data).__name__})"
        )
    return os.write(fd, data)


def write_holding_gil(fd: int, data: bytes) -> int:
    """Write *data* to *fd* with one ``write`` system call and return how many bytes the
    kernel took: ``os.write``, which releases the interpreter lock meanwhile (the
    compiled twin keeps it for up to 64 KiB; see :func:`gil_held_writes`).

    Raises:
        TypeError: *data* is not exactly ``bytes`` (as the compiled twin: a
            ``bytearray`` or a ``memoryview`` is refused, not written).
        OSError: the write failed (``ENOSPC``...).
    """
    if type(data) is not bytes:
        raise TypeError(
            f"Argument 'data' has incorrect type (expected bytes, got {type(data).__name__})"
        )
    return os.write(fd, data)
