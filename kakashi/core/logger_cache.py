"""The loggers one pipeline hands out: made once per name, re-pointed together.

:class:`~kakashi.core.pipeline.Pipeline` and
:class:`~kakashi.core.async_pipeline.AsyncPipeline` keep theirs in a :class:`LoggerCache`
(their ``loggers`` attribute); ``pipeline.get_logger(name)`` is ``pipeline.loggers.get(name)``.
"""

from __future__ import annotations

from kakashi._locks import fork_safe_lock
from kakashi._speedups import Logger, Route
from kakashi.typing import LoggerSource

__all__ = ["LoggerCache"]


class LoggerCache:
    """The loggers of one :class:`~kakashi.typing.LoggerSource`, one per name.

    Each logger gets its own ``Route`` to the source, made from the source's
    ``min_level``, ``capture_flags`` and ``route_emit`` when the logger is first asked
    for; loggers bound from it share that route. The cache keeps the routes it made, so
    :meth:`reroute` can point them all at the source's current entry point.

    Safe from any thread: a name already made is a dict read; making one takes a lock
    that a forked child finds released.

    Args:
        source: the pipeline whose loggers these are.
    """

    __slots__ = ("_lock", "_loggers", "_routes", "_source")

    def __init__(self, source: LoggerSource) -> None:
        self._source = source
        self._loggers: dict[str, Logger] = {}
        self._routes: list[Route] = []
        self._lock = fork_safe_lock()

    def get(self, name: str) -> Logger:
        """Return the logger called *name*, making it on first use.

        Raises:
            TypeError: *name* is not a str.
        """
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        logger = self._loggers.get(name)
        if logger is None:
            with self._lock:
                logger = self._loggers.get(name)
                if logger is None:
                    source = self._source
                    route = Route(source, source.min_level, source.capture_flags, source.route_emit)
                    self._routes.append(route)
                    logger = self._loggers[name] = Logger(name, route)
        return logger

    def all(self) -> list[Logger]:
        """Return every logger made so far, in the order they were made."""
        return list(self._loggers.values())

    def reroute(self) -> None:
        """Point every logger at the source's current ``route_emit``.

        Each keeps its level and capture flags. An async pipeline calls this when it
        moves to another backend; a logger made meanwhile already reads the new one.
        """
        with self._lock:
            source = self._source
            emit = source.route_emit
            for route in self._routes:
                route.set(source, route.level, route.flags, emit)

    def __repr__(self) -> str:
        return f"<LoggerCache {len(self._loggers)} loggers>"
