"""High-performance presets over the process-wide async backend.

These are the functions of the Async Backends page: :func:`setup_async_logging` makes
``kakashi.get_logger(name)`` log through the async backend; the ``get_*_logger``
functions return loggers with their own pipelines on that same backend;
:func:`get_async_stats` and :func:`shutdown_async_backend` watch and stop it.

Every preset shares the one process-wide backend and never replaces it. A queue setting
a preset is given (``max_queue_size``, ``worker_count``, ``batch_size``, ...) is used
when that preset makes the backend (there is none yet, or it was shut down); a setting
left out (``None``) is :class:`~kakashi.core.async_backend.AsyncConfig`'s default. When
the backend already runs with other settings it is kept, and the preset says so once on
stderr; :func:`~kakashi.core.async_backend.configure_async_backend` is the way to change
them.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from typing import Any

from kakashi import _errors
from kakashi._locks import fork_safe_rlock
from kakashi._speedups import Logger
from kakashi.core.async_backend import (
    AsyncBackend,
    AsyncConfig,
    FlushResult,
    configure_async_backend,
    get_async_backend,
    reporting_backend,
    shutdown_async_logging,
)
from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
from kakashi.core.pipeline import PipelineConfig
from kakashi.core.records import LogLevel, to_level
from kakashi.enrichers import (
    context_enricher,
    exception_enricher,
    service_enricher,
    thread_enricher,
)
from kakashi.formatters import default_json_formatter
from kakashi.writers import file_writer
from kakashi.writers.file import checked_path, make_folder
from kakashi.writers.network import SendWriter

__all__ = [
    "configure_async_backend",
    "get_async_stats",
    "get_async_structured_logger",
    "get_high_performance_logger",
    "get_network_logger",
    "setup_async_logging",
    "shutdown_async_backend",
]

#: Per environment: level, and whether thread details are written. Queue settings are
#: the same in every environment (AsyncConfig's defaults).
ENVIRONMENTS: dict[str, tuple[LogLevel, bool]] = {
    "development": (LogLevel.DEBUG, True),
    "production": (LogLevel.INFO, True),
    "testing": (LogLevel.DEBUG, False),
}
_ALIASES = {"dev": "development", "prod": "production", "test": "testing"}
_lock = fork_safe_rlock()
#: get_high_performance_logger's pipelines, one per file (two writers appending to one
#: file would interleave): bounded by the files the application names.
_file_pipelines: dict[str, AsyncPipeline] = {}
#: get_network_logger's pipelines, by name, callable and settings, held weakly: a
#: pipeline lives as long as one of its loggers (or a record it has queued) does.
_send_pipelines: weakref.WeakValueDictionary[tuple[Any, ...], AsyncPipeline] = (
    weakref.WeakValueDictionary()
)


def _asked(**settings: Any) -> dict[str, Any]:
    """The settings a preset was asked for (given as ``None``: not asked), validated.

    Raises:
        ValueError, TypeError: as :class:`~kakashi.core.async_backend.AsyncConfig` does.
    """
    wanted = {key: value for key, value in settings.items() if value is not None}
    AsyncConfig(**wanted)
    return wanted


def _process_wide_backend(preset: str, **asked: Any) -> AsyncBackend:
    """The process-wide backend for *preset*, made from the *asked* settings if needed.

    Settings given as ``None`` were not asked for. The asked ones are validated even when
    the running backend is kept, so a bad value fails here, at configuration time.
    """
    wanted = _asked(**asked)
    backend = get_async_backend(AsyncConfig(**wanted))
    config = backend.config
    differ = {key: value for key, value in wanted.items() if getattr(config, key) != value}
    if differ:
        given = ", ".join(f"{key}={value!r}" for key, value in differ.items())
        running = ", ".join(f"{key}={getattr(config, key)!r}" for key in differ)
        _errors.report(
            f"{preset}({given}): settings ignored",
            detail=f"the process-wide async backend already runs with {running} and is "
            "kept; configure_async_backend changes it",
        )
    return backend


def setup_async_logging(
    environment: str = "production",
    service_name: str | None = None,
    version: str | None = None,
    log_directory: str | os.PathLike[str] | None = None,
    max_queue_size: int | None = None,
    worker_count: int | None = None,
    batch_size: int | None = None,
    *,
    log_file: str = "app.log",
    overflow_strategy: str | None = None,
    batch_timeout: float | None = None,
) -> AsyncPipeline:
    """Make every ``kakashi.get_logger(...)`` log through the async backend.

    Records are written as JSON lines to ``log_directory/log_file`` (the directory is
    created; by default ``./logs``), with the service (*service_name* and *version*,
    when given), context, exception and, except in testing, thread details.
    Environments: ``development`` (DEBUG), ``production`` (INFO), ``testing`` (DEBUG, no
    thread details); the aliases dev, prod and test work too. Loggers handed out earlier
    switch at once.

    The queue settings apply to the process-wide backend when this call makes it; left
    out, they are :class:`~kakashi.core.async_backend.AsyncConfig`'s defaults, in every
    environment. A backend already running is kept (see the module description).

    Returns:
        the :class:`~kakashi.core.async_pipeline.AsyncPipeline` now used by default.

    Raises:
        ValueError: an unknown environment or an invalid queue setting (a duration that
            is NaN, infinite or out of range too).
        TypeError: *log_directory* or *log_file* is not a path.
        OSError: the log's folder cannot be created (the message names the parameter
            and, for a path through an existing file, that file).
    """
    import kakashi

    if not isinstance(environment, str):
        raise TypeError(f"environment must be a str, got {environment!r}")
    name = _ALIASES.get(environment.strip().lower(), environment.strip().lower())
    if name not in ENVIRONMENTS:
        valid = ", ".join([*ENVIRONMENTS, *_ALIASES])
        raise ValueError(f"environment must be one of {valid} (any case), got {environment!r}")
    level, with_thread = ENVIRONMENTS[name]
    asked = _asked(
        max_queue_size=max_queue_size,
        worker_count=worker_count,
        batch_size=batch_size,
        overflow_strategy=overflow_strategy,
        batch_timeout=batch_timeout,
    )
    directory = checked_path("log_directory", "logs" if log_directory is None else log_directory)
    path = directory / checked_path("log_file", log_file)
    make_folder("log_directory", directory)
    make_folder("log_file", path.parent, path)
    enrichers: list[Any] = [exception_enricher, context_enricher]
    if with_thread:
        enrichers.insert(0, thread_enricher)
    if service_name is not None:
        enrichers.append(service_enricher(service_name, version=version, environment=name))
    backend = _process_wide_backend("setup_async_logging", **asked)
    config = PipelineConfig(
        min_level=level,
        enrichers=tuple(enrichers),
        formatter=default_json_formatter,
        writers=(file_writer(path),),
    )
    pipeline = AsyncPipeline(
        AsyncPipelineConfig(pipeline_config=config, async_config=backend.config), backend
    )
    kakashi.configure(pipeline)
    return pipeline


def get_high_performance_logger(
    name: str,
    log_file: str | os.PathLike[str],
    max_queue_size: int | None = None,
    worker_count: int | None = None,
    batch_size: int | None = None,
) -> Logger:
    """Return a logger writing JSON lines to *log_file* through the async backend.

    The caller only captures and enqueues (microseconds); formatting and the file write
    happen on the workers. The queue settings apply to the process-wide backend when
    this call makes it (left out: :class:`~kakashi.core.async_backend.AsyncConfig`'s
    defaults); a backend already running is kept (see the module description). Loggers
    for one file share one pipeline and one writer.

    Raises:
        TypeError: *name* is not a str or *log_file* not a path.
        ValueError: an invalid queue setting (see :class:`~kakashi.core.async_backend.AsyncConfig`).
        OSError: the log file cannot be opened (the message names ``log_file``).
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {name!r}")
    path = checked_path("log_file", log_file)
    make_folder("log_file", path.parent, path)
    backend = _process_wide_backend(
        "get_high_performance_logger",
        max_queue_size=max_queue_size,
        worker_count=worker_count,
        batch_size=batch_size,
    )
    key = str(path.resolve())
    with _lock:
        pipeline = _file_pipelines.get(key)
        if pipeline is not None and pipeline.backend is not backend:
            pipeline.use_backend(backend)  # the backend was shut down and replaced since
        if pipeline is None:
            config = PipelineConfig(
                min_level=LogLevel.INFO,
                enrichers=(exception_enricher,),
                formatter=default_json_formatter,
                writers=(file_writer(path),),
            )
            pipeline = AsyncPipeline(
                AsyncPipelineConfig(pipeline_config=config, async_config=backend.config), backend
            )
            _file_pipelines[key] = pipeline
    return pipeline.get_logger(name)


def get_network_logger(
    name: str,
    network_writer_func: Callable[..., Any],
    max_queue_size: int | None = None,
    batch_size: int | None = None,
    max_error_retries: int | None = None,
    *,
    error_retry_delay: float | None = None,
    min_level: LogLevel | int | str = LogLevel.INFO,
    max_retries: int | None = None,
) -> Logger:
    """Return a logger whose records are passed, as JSON text, to *network_writer_func*.

    The function runs on the writer's own delivery thread, never on the caller nor in
    a worker's turn, once per record in order; or once per batch, with a ``list`` of
    messages, when it is marked with
    :func:`kakashi.batched <kakashi.writers.network.batched>`. A failing call is retried
    up to *max_error_retries* times with exponential backoff (from *error_retry_delay*
    seconds, capped at 2 s) within the backend's ``retry_budget``; after that the
    records count as dropped (``write_error``, by reason in the stats) and the failure
    is reported once on stderr. Raising
    :class:`~kakashi.writers.delivery.DeliveryError` says which records to retry and
    which to drop, and why (see :class:`~kakashi.writers.network.SendWriter`); any other
    exception retries from the message that failed (the whole batch, for a batched
    function). Left out, the retry settings are the process-wide backend's
    (``AsyncConfig.max_error_retries`` and ``error_retry_delay``); *max_retries* is the
    original library's name for *max_error_retries*. The queue settings
    (*max_queue_size*, *batch_size*) apply as in :func:`get_high_performance_logger`.
    Records below *min_level* are not sent.

    The same name, function and settings give the same logger. The pipeline behind a
    logger is held only by its loggers: once none is referenced it is collected.

    Raises:
        TypeError: *network_writer_func* is not callable, *name* is not a str, or both
            *max_error_retries* and *max_retries* are given.
        ValueError: a negative retry count, a retry delay that is not between 0 and one
            day, or an invalid queue setting.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {name!r}")
    if not callable(network_writer_func):
        raise TypeError(f"network_writer_func must be callable, got {network_writer_func!r}")
    if max_retries is not None:
        if max_error_retries is not None:
            raise TypeError("give max_error_retries or its alias max_retries, not both")
        max_error_retries = max_retries
    _asked(max_error_retries=max_error_retries, error_retry_delay=error_retry_delay)
    level = to_level(min_level, "min_level")
    backend = _process_wide_backend(
        "get_network_logger", max_queue_size=max_queue_size, batch_size=batch_size
    )
    retries = backend.config.max_error_retries if max_error_retries is None else max_error_retries
    delay = backend.config.error_retry_delay if error_retry_delay is None else error_retry_delay
    key: tuple[Any, ...] = (name, network_writer_func, retries, delay, level)
    with _lock:
        try:
            pipeline = _send_pipelines.get(key)
        except TypeError:  # an unhashable callable: not cached
            key, pipeline = (), None
        if pipeline is not None and pipeline.backend is not backend:
            pipeline.use_backend(backend)  # the backend was shut down and replaced since
        if pipeline is None:
            writer = SendWriter(
                network_writer_func, max_error_retries=retries, error_retry_delay=delay
            )
            config = PipelineConfig(
                min_level=level,
                enrichers=(thread_enricher, exception_enricher, context_enricher),
                formatter=default_json_formatter,
                writers=(writer,),
            )
            pipeline = AsyncPipeline(
                AsyncPipelineConfig(pipeline_config=config, async_config=backend.config), backend
            )
            if key:
                _send_pipelines[key] = pipeline
    return pipeline.get_logger(name)


def get_async_structured_logger(name: str, **default_fields: Any) -> Logger:
    """Return ``kakashi.get_logger(name)`` bound to *default_fields*, logging asynchronously.

    If async logging was not set up yet, the current default pipeline's stages are moved
    onto the process-wide async backend first.
    """
    import kakashi
    from kakashi.logger import get_default_pipeline

    default = get_default_pipeline()
    if not isinstance(default, AsyncPipeline):
        backend = get_async_backend()
        moved = AsyncPipeline(
            AsyncPipelineConfig(pipeline_config=default.config, async_config=backend.config),
            backend,
        )
        kakashi.configure(moved)
    return kakashi.get_logger(name).bind(**default_fields)


def get_async_stats() -> dict[str, Any]:
    """Return the process-wide backend's counters; never makes a backend.

    After :func:`shutdown_async_backend` (or a replacement by
    :func:`~kakashi.core.async_backend.configure_async_backend`) they are the final
    figures of the backend that was shut down, with ``state`` ``"stopped"``, until the
    next backend takes a record.
    Before any backend exists they are those of an unused default one.

    Keys include ``state``, ``queue_size``, ``max_queue_size``, ``worker_count``,
    ``active_workers``, ``messages_enqueued``, ``messages_written`` (of which
    ``messages_written_sync`` by the synchronous fallback), ``messages_filtered``,
    ``messages_dropped``, ``dropped_by_reason``, ``pending`` (``queue_size`` waiting,
    ``in_flight`` in a worker's batch, ``blocked`` held by callers waiting for room,
    ``in_fallback`` being written by the synchronous fallback), ``batches_written``,
    ``write_error_by_reason`` (the ``write_error`` drops split by why the writer did not
    get them: a :class:`~kakashi.writers.delivery.DeliveryError`'s reason,
    ``circuit_open``, ``backlog_full``, ``shutdown``...; its counts add up to
    ``dropped_by_reason["write_error"]``) and per-writer figures under ``writers``:
    ``writer``, ``batches``, ``records``, ``errors``, ``dropped`` and
    ``dropped_by_reason`` (in lines, drop notices included), ``spooled_at_shutdown``,
    ``circuit`` (``"closed"``, ``"open"`` or ``"trying"``) and ``delivery`` (what the
    writer's own ``delivery_stats()`` gives). At every instant ``messages_enqueued ==
    messages_written + messages_filtered + messages_dropped + pending``.
    """
    backend = reporting_backend()
    if backend is None:
        backend = _unused_backend()
    return backend.get_stats()


_unused: list[AsyncBackend] = []


def _unused_backend() -> AsyncBackend:
    """A backend with the default settings that is never started: the figures of none yet."""
    with _lock:
        if not _unused:
            _unused.append(AsyncBackend())
        return _unused[0]


def shutdown_async_backend(timeout: float = 5.0) -> FlushResult:
    """Stop the process-wide backend: drain, flush and close its writers within *timeout*.

    Never raises while shutting down; the result says whether everything was written
    and, if not, how many records were abandoned (counted as dropped). Safe to pass to
    ``atexit.register``. Its final figures stay readable through :func:`get_async_stats`.

    Raises:
        ValueError: *timeout* is not between 0 and one hour (NaN and infinity too), before
            anything is shut down.
    """
    return shutdown_async_logging(timeout)
