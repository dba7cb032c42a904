"""Standard filters: by level, by field value, by logger name.

A filter takes a record and returns whether it is written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from kakashi._speedups import Record, Snapshot, snapshot
from kakashi.core.records import to_level

__all__ = ["field_filter", "level_filter", "logger_name_filter"]

_MISSING = object()


def level_filter(min_level: int | str) -> Callable[[Record], bool]:
    """Return a filter that keeps records at *min_level* or above.

    Raises:
        ValueError: unknown level name.
    """
    threshold = to_level(min_level, "min_level")

    def by_level(record: Record) -> bool:
        return record.level >= threshold

    return by_level


def _lookup(record: Record, name: str) -> Any:
    if record.fields and name in record.fields:
        return record.fields[name]
    if record.bound is not None and name in record.bound.fields:
        return record.bound.fields[name]
    if record.extra and name in record.extra:
        return record.extra[name]
    if record.context and name in record.context:
        return record.context[name]
    return _MISSING


def field_filter(field_name: str, expected_value: Any) -> Callable[[Record], bool]:
    """Return a filter that keeps records whose field *field_name* equals *expected_value*.

    The field is looked up in the call's fields, then the bound fields, the enrichers'
    keys and the context. Containers compare by their JSON form (they are snapshotted).
    """
    if not isinstance(field_name, str):
        raise TypeError(f"field_name must be a str, got {type(field_name).__name__}")
    expected = snapshot(expected_value)
    expected_json = expected.json if isinstance(expected, Snapshot) else None

    def by_field(record: Record) -> bool:
        value = _lookup(record, field_name)
        if value is _MISSING:
            return False
        if isinstance(value, Snapshot):
            return value.json == expected_json
        return bool(value == expected_value)

    return by_field


def logger_name_filter(
    allowed_names: Iterable[str] | str, *, exclude: bool = False
) -> Callable[[Record], bool]:
    """Return a filter on the logger's name, prefix aware.

    *allowed_names* is one name or several. ``"app"`` matches the loggers ``app`` and
    ``app.db`` but not ``apple``. With ``exclude=True`` the matching loggers are dropped
    instead of kept.
    """
    names = (allowed_names,) if isinstance(allowed_names, str) else tuple(allowed_names)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"allowed_names must hold str, got {type(name).__name__}")
    exact = frozenset(names)
    prefixes = tuple(name + "." for name in names)

    def by_name(record: Record) -> bool:
        name = record.logger
        matched = name in exact or name.startswith(prefixes)
        return matched != exclude

    return by_name
