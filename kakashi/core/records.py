"""Levels and the per-call record.

A :class:`~kakashi.Record` is what one log call captures on the caller's thread: the time
(nanoseconds), the level, the logger name, the message and its ``%`` arguments, the
fields, the bound fields, the thread, the context snapshot, the exception and, when
asked for, the call site. Everything else (formatting, serialisation, I/O) happens later,
in the pipeline. The class itself lives in ``kakashi._speedups`` (compiled, with a
pure-Python twin); this module is its public home.
"""

from __future__ import annotations

import enum
from typing import Final

from kakashi._speedups import Record

__all__ = [
    "LOG_LEVEL_CRITICAL",
    "LOG_LEVEL_DEBUG",
    "LOG_LEVEL_ERROR",
    "LOG_LEVEL_INFO",
    "LOG_LEVEL_WARNING",
    "LogLevel",
    "Record",
    "level_name",
    "to_level",
]


class LogLevel(enum.IntEnum):
    """The standard levels, as ints, so a ``LogLevel`` works wherever an int level does.

    The values are those of the standard library's :mod:`logging`, so levels compare and
    mix freely with ``logging.INFO`` and friends.
    """

    DEBUG = 10
    INFO = 20
    WARNING = 30
    ERROR = 40
    CRITICAL = 50

    @classmethod
    def from_name(cls, name: str) -> LogLevel:
        """Return the level called *name*, in any case; ``WARN`` and ``FATAL`` are aliases.

        Raises:
            ValueError: *name* is not a level name (the message lists the valid ones).
        """
        if not isinstance(name, str):
            raise TypeError(f"level name must be a str, not {type(name).__name__}")
        key = name.strip().upper()
        key = _ALIASES.get(key, key)
        try:
            return cls[key]
        except KeyError:
            valid = ", ".join([*cls.__members__, *_ALIASES])
            raise ValueError(f"unknown level name {name!r}; expected one of {valid}") from None


_ALIASES: Final = {"WARN": "WARNING", "FATAL": "CRITICAL"}

#: The level numbers as constants (the original library's names), equal to
#: :class:`LogLevel`'s members and to :mod:`logging`'s levels.
LOG_LEVEL_DEBUG: Final = 10
#: See :data:`LOG_LEVEL_DEBUG`.
LOG_LEVEL_INFO: Final = 20
#: See :data:`LOG_LEVEL_DEBUG`.
LOG_LEVEL_WARNING: Final = 30
#: See :data:`LOG_LEVEL_DEBUG`.
LOG_LEVEL_ERROR: Final = 40
#: See :data:`LOG_LEVEL_DEBUG`.
LOG_LEVEL_CRITICAL: Final = 50


def to_level(value: object, parameter: str = "level") -> int:
    """Turn *value*, a level given as a :class:`LogLevel`, an int or a name, into an int.

    This is the configuration-time check: anything else raises with a message that
    names *parameter*.

    Raises:
        ValueError: an unknown name, or an int outside 0..100.
        TypeError: neither an int nor a str.
    """
    if isinstance(value, bool):
        raise TypeError(f"{parameter} must be a level (int, LogLevel or name), not a bool")
    if isinstance(value, int):
        level = int(value)
        if not 0 <= level <= 100:
            raise ValueError(f"{parameter} must be between 0 and 100, got {level}")
        return level
    if isinstance(value, str):
        try:
            return int(LogLevel.from_name(value))
        except ValueError as exc:
            raise ValueError(f"{parameter}: {exc}") from None
    raise TypeError(
        f"{parameter} must be a level (int, LogLevel or name), not {type(value).__name__}"
    )


def level_name(level: int) -> str:
    """Return the name written for *level*: ``INFO`` for 20, ``LEVEL25`` for 25."""
    from kakashi._speedups import level_name as _name

    return _name(level)
