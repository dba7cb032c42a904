"""The logger registry: ``get_logger`` and the default pipeline.

Loggers are cached by name. A logger got without a pipeline logs through the *default
pipeline*; :func:`configure` replaces it and re-routes every such logger at once (a
logger whose level was set explicitly keeps it). Until configured, the default pipeline
writes human-readable text to stderr at INFO and above, coloured on a terminal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

from kakashi._locks import fork_safe_rlock
from kakashi._speedups import Logger, Record, RecordQueue, Route
from kakashi.core.pipeline import Pipeline, PipelineConfig
from kakashi.core.records import to_level
from kakashi.enrichers import context_enricher, exception_enricher
from kakashi.formatters import ConsoleFormatter
from kakashi.typing import LoggerSource
from kakashi.writers import stderr_writer

if TYPE_CHECKING:
    from kakashi.core.async_backend import FlushResult
    from kakashi.core.async_pipeline import AsyncPipeline

AnyPipeline: TypeAlias = "Pipeline | AsyncPipeline"

__all__ = [
    "configure",
    "flush",
    "get_default_pipeline",
    "get_logger",
    "reset_registry",
    "set_level",
]

_lock = fork_safe_rlock()
_routes: dict[str, Route] = {}
_loggers: dict[str, Logger] = {}
_default: AnyPipeline | None = None
#: The level that ``set_level(level)`` without a name gave every logger, those got later
#: too; ``None`` until then, and again once :func:`configure` installs a pipeline.
_default_level: int | None = None


def _initial_pipeline() -> Pipeline:
    return Pipeline(
        PipelineConfig(
            min_level="INFO",
            enrichers=(exception_enricher, context_enricher),
            formatter=ConsoleFormatter(),
            writers=(stderr_writer,),
        )
    )


def get_default_pipeline() -> AnyPipeline:
    """Return the pipeline that loggers without their own pipeline log through."""
    global _default
    if _default is None:
        with _lock:
            if _default is None:
                _default = _initial_pipeline()
    return _default


def get_logger(name: str = "root", pipeline: LoggerSource | None = None) -> Logger:
    """Return the logger called *name* (cached; safe to call from any thread).

    Args:
        name: dotted name, conventionally ``__name__``.
        pipeline: log through this pipeline instead of the default one: a
            :class:`~kakashi.core.pipeline.Pipeline`, an
            :class:`~kakashi.core.async_pipeline.AsyncPipeline`, or anything else that
            is a :class:`~kakashi.typing.LoggerSource`.

    Raises:
        TypeError: *name* is not a str, or *pipeline* has no ``get_logger``.
    """
    if pipeline is not None:
        if not callable(getattr(pipeline, "get_logger", None)):
            kind = type(pipeline).__name__
            raise TypeError(f"pipeline must be a Pipeline or an AsyncPipeline, got {kind}")
        return pipeline.get_logger(name)
    logger = _loggers.get(name)
    if logger is not None:
        return logger
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    with _lock:  # the default read inside: a configure() running now cannot be missed
        default = get_default_pipeline()
        logger = _loggers.get(name)
        if logger is None:
            level = default.min_level if _default_level is None else _default_level
            route = Route(default, level, default.capture_flags, _emit_of(default))
            _routes[name] = route
            logger = _loggers[name] = Logger(name, route)
    return logger


def configure(pipeline: AnyPipeline | PipelineConfig | None = None, **options: Any) -> AnyPipeline:
    """Make *pipeline* (or one built from a config or keyword options) the default.

    Every logger from :func:`get_logger` without an explicit pipeline (and every logger
    bound from one) switches to it at once, at the new pipeline's ``min_level`` unless
    :func:`set_level` gave it a level by name (a level set for every logger, without a
    name, gives way to the new pipeline's). Returns the new default pipeline. The old one
    is flushed; its writers stay open for anyone still holding it.
    """
    global _default, _default_level
    new: AnyPipeline
    if pipeline is None:
        new = Pipeline(PipelineConfig(**options)) if options else _initial_pipeline()
    elif isinstance(pipeline, PipelineConfig):
        new = Pipeline(pipeline)
    elif callable(getattr(pipeline, "emit", None)):
        new = pipeline
    else:
        kind = type(pipeline).__name__
        raise TypeError(f"pipeline must be a Pipeline or PipelineConfig, got {kind}")
    with _lock:
        old, _default = _default, new
        _default_level = None
        for route in _routes.values():
            level = route.level if route.explicit_level else new.min_level
            route.set(new, level, new.capture_flags, _emit_of(new))
    if old is not None and old is not new:
        old.flush()
    return new


def _emit_of(pipeline: LoggerSource) -> Callable[[Record], None] | RecordQueue:
    # A pipeline configured as the default may have emit but no route_emit.
    emit: Callable[[Record], None] | RecordQueue | None = getattr(pipeline, "route_emit", None)
    return pipeline.emit if emit is None else emit


def reroute(pipeline: LoggerSource) -> None:
    """Re-read *pipeline*'s entry point for every default-routed logger using it.

    An async pipeline calls this when it moves to another backend.
    """
    with _lock:
        for route in _routes.values():
            if route.sink is pipeline:
                route.set(pipeline, route.level, pipeline.capture_flags, _emit_of(pipeline))


def set_level(level: int | str, name: str | None = None) -> None:
    """Set the level of the logger called *name*, or of every default-routed logger.

    Without a name, every logger takes *level*: those handed out so far (a level set by
    name included) and those got later, until :func:`configure` installs a pipeline,
    whose ``min_level`` then applies. A logger given its own level by name keeps it when
    :func:`configure` changes the default.

    Raises:
        ValueError: unknown level name.
    """
    global _default_level
    value = to_level(level)
    with _lock:
        if name is None:
            _default_level = value
            for route in _routes.values():
                route.level = value
                route.explicit_level = False
            return
        get_logger(name)
        route = _routes[name]
        route.level = value
        route.explicit_level = True


def flush(timeout: float = 5.0) -> FlushResult:
    """Wait until everything logged so far is handed to the operating system.

    Flushes every running async backend (records enqueued before the call are written,
    then the writers flushed) and the default pipeline's writers. Returns a
    ``FlushResult``: true when complete, else ``pending`` says how many records were
    still waiting when *timeout* seconds had passed.

    Raises:
        ValueError: *timeout* is not between 0 and one hour (NaN and infinity too).
    """
    from kakashi.core.async_backend import flush_all

    result = flush_all(timeout)
    default = _default
    if default is not None and not hasattr(default, "backend"):
        default.flush()
    return result


def _levels() -> tuple[int | None, dict[str, tuple[int, bool]]]:
    """The levels :func:`set_level` and :func:`configure` gave: the level of every
    logger, those got later too, and each logger's (level, set by name)."""
    with _lock:
        return _default_level, {name: (r.level, r.explicit_level) for name, r in _routes.items()}


def _restore_levels(saved: tuple[int | None, dict[str, tuple[int, bool]]]) -> None:
    """Put back the levels :func:`_levels` returned (``kakashi.testing.capture_logs``):
    a logger got since takes the level every logger had, or its pipeline's."""
    global _default_level
    every, levels = saved
    with _lock:
        _default_level = every
        for name, route in _routes.items():
            if name in levels:
                route.level, route.explicit_level = levels[name]
            else:  # got since: as a logger got now would be
                route.explicit_level = False
                route.level = route.sink.min_level if every is None else every


def reset_registry() -> None:
    """Forget every cached logger and the configured default pipeline (for tests).

    Loggers handed out before keep working through the pipeline they had.
    """
    global _default, _default_level
    with _lock:
        _routes.clear()
        _loggers.clear()
        _default = None
        _default_level = None
