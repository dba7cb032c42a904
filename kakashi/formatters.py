"""Standard formatters: JSON lines, human text, logfmt and a coloured console format.

A formatter takes a record and returns one line without its terminator. Every formatter
here renders the same event (its keys and their order are in :doc:`/formats`). The JSON
formatter is compiled; the text formats are Python.

Text formats escape every control character (newlines included) in messages, keys and
values, so one log call can never produce a line that looks like a second record. An
exception's traceback is written on continuation lines that all start with ``"    | "``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import IO, Any

from kakashi._speedups import Record, Snapshot, event_dict, format_json

__all__ = [
    "ConsoleFormatter",
    "LogfmtFormatter",
    "TextFormatter",
    "console_formatter",
    "default_json_formatter",
    "json_formatter",
    "logfmt_formatter",
    "simple_text_formatter",
    "text_formatter",
]

#: JSON lines (orjson, compiled): one object per record. See :doc:`/formats`.
default_json_formatter: Callable[[Record], bytes] = format_json
json_formatter = default_json_formatter

_CONTINUATION = "    | "
# Every C0 control character, DEL and the C1 range, plus the Unicode line and paragraph
# separators that some viewers treat as line breaks.
_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}
_ESCAPES.update({0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x2028: "\\u2028", 0x2029: "\\u2029"})
_ESCAPE_TABLE = str.maketrans(_ESCAPES)
_BACKSLASH_TABLE = str.maketrans({**_ESCAPES, 0x5C: "\\\\", 0x22: '\\"'})
_NESTED = ("exception", "source", "thread", "process")


def escape(text: str) -> str:
    """Return *text* with every control character written as a visible escape."""
    if text.isprintable():
        return text
    return text.translate(_ESCAPE_TABLE)


def _plain(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, Snapshot):
        return str(value)
    try:
        return str(value)
    except Exception:
        return f"<{type(value).__qualname__}>"


def _flat_items(event: dict[str, Any]) -> list[tuple[str, Any]]:
    """The event's keys after the core four, nested dicts flattened with dots."""
    items: list[tuple[str, Any]] = []
    for key, value in event.items():
        if key in ("timestamp", "level", "logger", "message"):
            continue
        if isinstance(value, dict) and key in _NESTED:
            items.extend((f"{key}.{sub}", subvalue) for sub, subvalue in value.items())
        else:
            items.append((key, value))
    return items


def _logfmt_value(value: Any) -> str:
    text = _plain(value)
    if text and not any(c in text for c in ' ="\\') and text.isprintable():
        return text
    return '"' + text.translate(_BACKSLASH_TABLE) + '"'


def _logfmt_key(key: str) -> str:
    cleaned = "".join(c if c.isprintable() and c not in ' ="\\' else "_" for c in key)
    return cleaned or "_"


class LogfmtFormatter:
    """``key=value`` pairs, one record per line (the format Heroku, Loki and Grafana read).

    Keys are ``timestamp level logger message`` then the fields; nested values are
    flattened (``exception.type=...``). Values containing spaces, ``=``, quotes,
    backslashes or control characters are double-quoted with backslash escapes.
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

    Args:
        show_timestamp: start each line with the RFC 3339 timestamp.
    """

    def __init__(self, *, show_timestamp: bool = True) -> None:
        self.show_timestamp = show_timestamp

    def _paint(self, level: str, text: str) -> str:
        return text

    def __call__(self, record: Record) -> str:
        event = event_dict(record)
        level = event["level"]
        head = f"{self._paint(level, f'{level:<8}')} {escape(event['logger'])}: "
        if self.show_timestamp:
            head = f"{event['timestamp']} {head}"
        parts = [head + escape(event["message"])]
        exception = event.get("exception")
        stack = event.get("stack")
        for key, value in _flat_items(event):
            if key.startswith("exception.") or key == "stack":
                continue
            parts.append(f"{escape(key)}={_logfmt_value(value)}")
        line = " ".join(parts)
        for block in (exception["traceback"] if exception else None, stack):
            if block:
                line += "".join("\n" + _CONTINUATION + escape(text) for text in block.split("\n"))
        return line


_COLOURS = {
    "DEBUG": "\x1b[2m",
    "INFO": "\x1b[32m",
    "WARNING": "\x1b[33m",
    "ERROR": "\x1b[31m",
    "CRITICAL": "\x1b[1;41m",
}
_RESET = "\x1b[0m"


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

    def _paint(self, level: str, text: str) -> str:
        if not self.colors:
            return text
        return f"{_COLOURS.get(level, '')}{text}{_RESET}"


text_formatter = TextFormatter()
simple_text_formatter = text_formatter
logfmt_formatter = LogfmtFormatter()


def console_formatter(record: Record) -> str:
    """Format for a terminal: coloured when stderr is one (see :class:`ConsoleFormatter`)."""
    return _console(record)


_console = ConsoleFormatter()
