"""Test helpers: capture what your code logs, as dicts, and assert on it.

:func:`capture_logs` makes a capturing sink the default pipeline for the duration of a
``with`` block: every logger from :func:`kakashi.get_logger` (module-level ones included,
and loggers bound from them) logs into it, synchronously, with the logging context and
the exception enricher applied as the default pipeline applies them. Each record becomes
the dict the JSON formatter would write (``timestamp``, ``level``, ``logger``,
``message``, the fields, ``exception``...), plus ``levelno``. On leaving the block the
pipeline that was the default before is the default again.

Loggers made with their own pipeline (``get_logger(name, pipeline=...)``, an
``AsyncPipeline``'s loggers) keep logging there: they are not captured.

With pytest, add ``pytest_plugins = ["kakashi.testing"]`` to your ``conftest.py`` for the
:func:`kakashi_logs` fixture.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import orjson

from kakashi._locks import fork_safe_lock
from kakashi._speedups import Record, Snapshot, event_dict
from kakashi.core.records import to_level
from kakashi.enrichers import context_enricher, exception_enricher
from kakashi.logger import _levels, _restore_levels, configure, get_default_pipeline

__all__ = ["LogCapture", "capture_logs"]


def _plain(value: Any) -> Any:
    """A value as a test compares it: snapshots (dicts, lists, objects frozen at the
    call as JSON) decoded to what the JSON line holds."""
    if type(value) is Snapshot:
        return orjson.loads(value.json)
    if type(value) is dict:
        return {key: _plain(item) for key, item in value.items()}
    return value


class LogCapture:
    """A sink that keeps every record as a dict (see the module).

    Args:
        level: the lowest level kept (a name or a number).

    Attributes:
        entries: the captured records, in the order they were logged.
    """

    def __init__(self, level: int | str = "DEBUG") -> None:
        self.min_level = to_level(level, "level")
        self.capture_flags = 0
        self.entries: list[dict[str, Any]] = []
        self._lock = fork_safe_lock()

    def emit(self, record: Record) -> None:
        """Keep *record* unless it is below ``min_level`` (the entry point loggers
        call; never raises)."""
        if record.level < self.min_level:  # a logger given a lower level of its own
            return
        for enricher in (exception_enricher, context_enricher):
            record = enricher(record)
        entry = {key: _plain(value) for key, value in event_dict(record).items()}
        entry["levelno"] = int(record.level)
        with self._lock:
            self.entries.append(entry)

    #: What the stdlib bridge (``KakashiHandler``) hands its records to.
    process = emit

    def flush(self) -> None:
        """Nothing is buffered."""

    def clear(self) -> None:
        """Forget the records captured so far."""
        with self._lock:
            self.entries.clear()

    def __repr__(self) -> str:
        return f"<LogCapture {len(self.entries)} entries, min_level={self.min_level}>"


@contextlib.contextmanager
def capture_logs(level: int | str = "DEBUG") -> Iterator[list[dict[str, Any]]]:
    """Capture the records logged inside the ``with`` block, as dicts (see the module).

    >>> import kakashi
    >>> from kakashi.testing import capture_logs
    >>> with capture_logs() as logs:
    ...     kakashi.get_logger("payments").info("charged", amount=42)
    >>> [(entry["logger"], entry["message"], entry["amount"]) for entry in logs]
    [('payments', 'charged', 42)]

    Raises:
        ValueError: an unknown *level*.
    """
    capture = LogCapture(level)
    previous = get_default_pipeline()
    levels = _levels()
    configure(capture)  # type: ignore[arg-type]  # any sink with emit() serves
    try:
        yield capture.entries
    finally:
        configure(previous)
        _restore_levels(levels)  # set_level's, which configure would leave behind


try:  # the fixture, when pytest is there (``pytest_plugins = ["kakashi.testing"]``)
    import pytest
except ImportError:  # pragma: no cover - pytest is a test dependency
    pass
else:

    @pytest.fixture
    def kakashi_logs() -> Iterator[list[dict[str, Any]]]:
        """The records the test logs through Kakashi's default pipeline, as dicts."""
        with capture_logs() as entries:
            yield entries
