"""Standard formatters: JSON lines, human text, logfmt and a coloured console format.

A formatter takes a record and returns one line without its terminator. Every formatter
here renders the same event (its keys and their order are in :doc:`/formats`). The JSON
formatter is compiled; the text formats are Python.

Text formats escape every control character (newlines included) and bidirectional
control in messages, keys and values, so one log call can never produce a line that looks
like a second record or text shown reordered; a key that is not a plain word is quoted
(text) or backslash-escaped (logfmt), so it cannot pass for two fields. An
exception's traceback is written on continuation lines that all start with ``"    | "``.
"""

from __future__ import annotations

import calendar
import functools
import os
import re
import sys
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import IO, Any

import orjson

from kakashi._speedups import Record, Snapshot, event_dict, format_json, snapshot

__all__ = [
    "LEVEL_COLOURS",
    "RESET",
    "ConsoleFormatter",
    "LogfmtFormatter",
    "TextFormatter",
    "console_formatter",
    "default_json_formatter",
    "json_formatter",
    "logfmt_formatter",
    "render_event",
    "render_value",
    "simple_text_formatter",
    "text_formatter",
    "colour_wanted",
    "epoch_ns",
    "escape",
]

#: JSON lines (orjson, compiled): one object per record. See :doc:`/formats`.
default_json_formatter: Callable[[Record], bytes] = format_json
json_formatter = default_json_formatter

_CONTINUATION = "    | "
# Every C0 control character, DEL and the C1 range, plus the Unicode line and paragraph
# separators that some viewers treat as line breaks.
_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}
_ESCAPES.update({0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x2028: "\\u2028", 0x2029: "\\u2029"})
# The bidirectional controls (Unicode's Bidi_Control property): embeddings, overrides and
# isolates reorder what a terminal shows (so "k=1" can be made to read "1=k"), marks too.
_BIDI_CONTROLS = frozenset((0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)))
_ESCAPES.update({code: f"\\u{code:04x}" for code in _BIDI_CONTROLS})
_ESCAPE_TABLE = str.maketrans(_ESCAPES)
_BACKSLASH_TABLE = str.maketrans({**_ESCAPES, 0x5C: "\\\\", 0x22: '\\"'})
_NEEDS_QUOTES = frozenset(' ="\\')
_CORE = ("timestamp", "level", "logger", "message")
_NESTED = ("exception", "source", "thread", "process")

#: ANSI colours of the level names in coloured text output.
LEVEL_COLOURS: Mapping[str, str] = MappingProxyType(
    {
        "DEBUG": "\x1b[2m",
        "INFO": "\x1b[32m",
        "WARNING": "\x1b[33m",
        "ERROR": "\x1b[31m",
        "CRITICAL": "\x1b[1;41m",
    }
)
#: The ANSI code that ends a colour.
RESET = "\x1b[0m"


def escape(text: str) -> str:
    """Return *text* with every control character written as a visible escape."""
    if text.isprintable():
        return text
    return text.translate(_ESCAPE_TABLE)


class _Json(str):
    """The JSON text of a dict or a list, shown as it is."""

    __slots__ = ()


def _as_logged(value: Any) -> Any:
    """*value* as the JSON formatter writes it: ``str``, ``int``, ``float``, ``bool``,
    ``None``, or the JSON text of a dict or list (a snapshot is decoded, a datetime or any
    other object becomes what the JSON line holds for it)."""
    cls = type(value)
    if cls is str or cls is int or cls is float or cls is bool or value is None:
        return value
    if cls is not Snapshot:
        value = snapshot(value)
        if type(value) is not Snapshot:
            return value
    text = value.json
    if text[:1] in (b"{", b"["):
        return _Json(text.decode("utf-8"))
    return orjson.loads(text)


def _scalar_text(value: Any) -> str:
    """The text of a non-string value: ``null``, ``true``, ``42``, ``1.5``, JSON text."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is float:
        return orjson.dumps(value).decode()  # as in the JSON line: NaN and infinities are null
    return str(value)


def _quoted(text: str) -> str:
    """*text* bare when it is a plain word, else double-quoted with backslash escapes."""
    if text and text.isprintable() and _NEEDS_QUOTES.isdisjoint(text):
        return text
    return '"' + text.translate(_BACKSLASH_TABLE) + '"'


def render_value(value: Any) -> str:
    """Show one field's value to a person, as :class:`TextFormatter` and ``kakashi view`` do.

    A string is bare when it is a plain word, else double-quoted with backslash escapes; a
    snapshot is decoded (a dict or list shows as compact JSON, a date as its ISO text); any
    other object shows as the JSON line holds it. Control characters are always escaped.

    >>> import datetime
    >>> from kakashi.formatters import render_value
    >>> [render_value(v) for v in ("ok", "a b", None, True, 1.5, {"id": 1}, [1, "x"])]
    ['ok', '"a b"', 'null', 'true', '1.5', '{"id":1}', '[1,"x"]']
    >>> render_value(datetime.datetime(2026, 1, 1))
    '2026-01-01T00:00:00'
    """
    value = _as_logged(value)
    if type(value) is str:
        return _quoted(value)
    if type(value) is _Json:
        return escape(value)
    return _scalar_text(value)


def _logfmt_value(value: Any) -> str:
    """A logfmt value: like :func:`render_value`, but a dict or list is quoted too."""
    value = _as_logged(value)
    return _quoted(value if isinstance(value, str) else _scalar_text(value))


def _escaped_char(char: str) -> str:
    """One character as a visible backslash escape: ``\n``, ``\x20``, ``\u202e``, ``\\``."""
    code = ord(char)
    known = _ESCAPES.get(code)
    if known is not None:
        return known
    if char == "\\":
        return "\\\\"
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _logfmt_key(key: str) -> str:
    """A logfmt key: bare, with a space, ``=``, quote, backslash or any character that is
    not printable written as a backslash escape (``k\x20ey``), so it cannot forge a pair."""
    if key.isprintable() and _NEEDS_QUOTES.isdisjoint(key):
        return key or "_"  # logfmt has no empty key
    return "".join(
        char if char.isprintable() and char not in _NEEDS_QUOTES else _escaped_char(char)
        for char in key
    )


def _flat_items(event: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The event's keys after the core four, nested dicts flattened with dots."""
    items: list[tuple[str, Any]] = []
    for key, value in event.items():
        if key in _CORE:
            continue
        if isinstance(value, dict) and key in _NESTED:
            items.extend((f"{key}.{sub}", subvalue) for sub, subvalue in value.items())
        else:
            items.append((key, value))
    return items


def _text(value: Any, default: str) -> str:
    """A core value (timestamp, logger, message) as text, control characters escaped."""
    if value is None:
        return default
    return escape(value if type(value) is str else render_value(value))


def render_event(
    event: Mapping[str, Any], *, colours: bool = False, show_timestamp: bool = True
) -> str:
    """One event as a line of text: ``timestamp LEVEL logger: message key=value ...``.

    The event is a record's event (the keys a JSON line has, in order) or what a JSON
    line holds, from any program (missing core keys show as ``-``). ``exception``, ``source``,
    ``thread`` and ``process`` dicts are flattened (``thread.name=main``); an exception's
    traceback and a stack are written on continuation lines that start with ``"    | "``.
    Values are shown by :func:`render_value`.

    Args:
        event: the event.
        colours: colour the level name (see :data:`LEVEL_COLOURS`).
        show_timestamp: start the line with the timestamp.
    """
    level = _text(event.get("level"), "-")
    shown = f"{level:<8}"
    if colours:
        shown = f"{LEVEL_COLOURS.get(level.upper(), '')}{shown}{RESET}"
    head = f"{shown} {_text(event.get('logger'), '-')}: {_text(event.get('message'), '')}"
    if show_timestamp:
        head = f"{_text(event.get('timestamp'), '-')} {head}"
    parts = [head]
    exception = event.get("exception")
    traceback = exception.get("traceback") if isinstance(exception, dict) else None
    stack = event.get("stack")
    for key, value in _flat_items(event):
        if (traceback and key.startswith("exception.")) or (key == "stack" and stack):
            continue
        parts.append(f"{_quoted(key)}={render_value(value)}")
    line = " ".join(parts)
    for block in (traceback, stack):
        if block:
            text = block if type(block) is str else render_value(block)
            line += "".join("\n" + _CONTINUATION + escape(part) for part in text.split("\n"))
    return line


class LogfmtFormatter:
    """``key=value`` pairs, one record per line (the format Heroku, Loki and Grafana read).

    Keys are ``timestamp level logger message`` then the fields; nested values are
    flattened (``exception.type=...``). Values containing spaces, ``=``, quotes,
    backslashes or control characters are double-quoted with backslash escapes; a dict or
    list is written as its compact JSON, quoted, and a date as its ISO text.
    """

    def __call__(self, record: Record) -> str:
        event = event_dict(record)
        parts = [
            f"timestamp={event['timestamp']}",
            f"level={event['level'].lower()}",
            f"logger={_logfmt_value(event['logger'])}",
            f"message={_logfmt_value(event['message'])}",
        ]
        parts.extend(f"{_logfmt_key(k)}={_logfmt_value(v)}" for k, v in _flat_items(event))
        return " ".join(parts)


class TextFormatter:
    """Human-readable lines: ``timestamp LEVEL logger: message key=value ...``.

    The line is :func:`render_event` of the record's event, the same text ``kakashi view``
    shows for its JSON line.

    Args:
        show_timestamp: start each line with the RFC 3339 timestamp.
    """

    #: Whether the level name is coloured (:class:`ConsoleFormatter` decides).
    colors = False

    def __init__(self, *, show_timestamp: bool = True) -> None:
        self.show_timestamp = show_timestamp

    def __call__(self, record: Record) -> str:
        return render_event(
            event_dict(record), colours=self.colors, show_timestamp=self.show_timestamp
        )


def colour_wanted(stream: IO[str] | None) -> bool:
    """Decide whether to colour output to *stream*.

    ``NO_COLOR`` (any non-empty value) turns colours off and ``FORCE_COLOR`` turns them
    on (see no-color.org and force-color.org); otherwise colour only a terminal.
    """
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    try:
        return bool(stream is not None and stream.isatty())
    except Exception:
        return False


class ConsoleFormatter(TextFormatter):
    """:class:`TextFormatter` with the level coloured when writing to a terminal.

    Args:
        stream: the stream the output goes to, to decide on colour (default stderr).
        colors: ``True`` or ``False`` to force; ``None`` decides from the environment
            and the stream (see :func:`colour_wanted`).
    """

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        colors: bool | None = None,
        show_timestamp: bool = True,
    ) -> None:
        super().__init__(show_timestamp=show_timestamp)
        self.colors = colour_wanted(stream or sys.stderr) if colors is None else bool(colors)


#: Human-readable lines, never coloured (a :class:`TextFormatter`).
text_formatter = TextFormatter()
#: The original library's name for :data:`text_formatter`.
simple_text_formatter = text_formatter
#: ``key=value`` lines (a :class:`LogfmtFormatter`).
logfmt_formatter = LogfmtFormatter()


def console_formatter(record: Record) -> str:
    """Format *record* for a terminal: coloured when stderr is one (see
    :class:`ConsoleFormatter`)."""
    return _console(record)


_console = ConsoleFormatter()


# -- reading a JSON line's timestamp back ----------------------------------------------

_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?([Zz]|[+-]\d\d:\d\d)?"
)


def epoch_ns(text: object) -> int | None:
    """Return the nanoseconds since the epoch of an RFC 3339 *text*, or ``None`` when it
    is not one: the JSON formatter's ``timestamp`` (``2026-11-27T18:06:00.123456Z``)
    read back, for a writer that needs a record's time from its line. A time without an
    offset is read as UTC; digits beyond nanoseconds are refused."""
    if type(text) is not str:
        return None
    if len(text) == 27 and text[19] == "." and text[26] == "Z" and text[20:26].isdigit():
        # The JSON formatter's form: the second is parsed once, the fraction is six digits.
        seconds = _whole_seconds(text[:19])
        if seconds is not None:
            return seconds + int(text[20:26]) * 1000
    return _parse_ns(text)


@functools.lru_cache(maxsize=256)  # a batch's records share few distinct seconds
def _whole_seconds(text: str) -> int | None:
    """``YYYY-MM-DDTHH:MM:SS`` (UTC) in nanoseconds since the epoch."""
    return _parse_ns(text + "Z")


def _parse_ns(text: str) -> int | None:
    match = _RFC3339.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        seconds = calendar.timegm(
            (int(year), int(month), int(day), int(hour), int(minute), int(second))
        )
    except (ValueError, OverflowError):
        return None
    if offset and offset not in "Zz":
        shift = int(offset[1:3]) * 3600 + int(offset[4:6]) * 60
        seconds -= shift if offset[0] == "+" else -shift
    return seconds * 1_000_000_000 + (int(fraction.ljust(9, "0")) if fraction else 0)
