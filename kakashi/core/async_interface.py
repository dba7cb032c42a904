"""High-performance presets over the process-wide async backend.

These are the functions of the Async Backends page: :func:`setup_async_logging` makes
``kakashi.get_logger(name)`` log through the async backend; the ``get_*_logger``
functions return loggers with their own pipelines on that same backend;
:func:`get_async_stats` and :func:`shutdown_async_backend` watch and stop it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from kakashi._locks import fork_safe_rlock
from kakashi._speedups import Logger
from kakashi.core.async_backend import (
    AsyncBackend,
    FlushResult,
    configure_async_backend,
    get_async_backend,
    shutdown_async_logging,
)
from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
from kakashi.core.pipeline import PipelineConfig
from kakashi.core.records import LogLevel
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

#: Per environment: level, overflow strategy, and whether thread details are written.
ENVIRONMENTS: dict[str, tuple[LogLevel, str, bool]] = {
    "development": (LogLevel.DEBUG, "block", True),
    "production": (LogLevel.INFO, "drop_oldest", True),
    "testing": (LogLevel.DEBUG, "block", False),
}
_ALIASES = {"dev": "development", "prod": "production", "test": "testing"}
_lock = fork_safe_rlock()
_pipelines: dict[tuple[Any, ...], AsyncPipeline] = {}


def _backend_for(
    max_queue_size: int, worker_count: int, batch_size: int, **options: Any
) -> AsyncBackend:
    """The process-wide backend, replaced only if it does not have these settings."""
    current = get_async_backend()
    config = current.config
    wanted = {
        "max_queue_size": max_queue_size,
        "worker_count": worker_count,
        "batch_size": batch_size,
        **options,
    }
    if all(getattr(config, key) == value for key, value in wanted.items()):
        return current
    return configure_async_backend(**{"overflow_strategy": config.overflow_strategy, **wanted})


def setup_async_logging(
    environment: str = "production",
    service_name: str | None = None,
    version: str | None = None,
    log_directory: str | os.PathLike[str] | None = None,
    max_queue_size: int = 25_000,
    worker_count: int = 2,
    batch_size: int = 200,
    *,
    log_file: str = "app.log",
    overflow_strategy: str | None = None,
    batch_timeout: float = 0.1,
) -> AsyncPipeline:
    """Make every ``kakashi.get_logger(...)`` log through the async backend.

    Records are written as JSON lines to ``log_directory/log_file`` (the directory is
    created; by default ``./logs``), with the service, context, exception and, except
    in testing, thread details. Environments: ``development`` (DEBUG, ``block``),
    ``production`` (INFO, ``drop_oldest``), ``testing`` (DEBUG, ``block``); the aliases
    dev, prod and test work too. Loggers handed out earlier switch at once.

    Returns:
        the :class:`~kakashi.core.async_pipeline.AsyncPipeline` now used by default.

    Raises:
        ValueError: an unknown environment or an invalid queue setting.
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
    level, strategy, with_thread = ENVIRONMENTS[name]
    directory = checked_path("log_directory", "logs" if log_directory is None else log_directory)
    path = directory / checked_path("log_file", log_file)
    make_folder("log_directory", directory)
    make_folder("log_file", path.parent, path)
    enrichers: list[Any] = [exception_enricher, context_enricher]
    if with_thread:
        enrichers.insert(0, thread_enricher)
    if service_name is not None:
        enrichers.append(service_enricher(service_name, version=version, environment=name))
    backend = _backend_for(
        max_queue_size,
        worker_count,
        batch_size,
        overflow_strategy=overflow_strategy or strategy,
        batch_timeout=batch_timeout,
    )
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
    max_queue_size: int = 50_000,
    worker_count: int = 2,
    batch_size: int = 500,
) -> Logger:
    """Return a logger writing JSON lines to *log_file* through the async backend.

    The caller only captures and enqueues (microseconds); formatting and the file write
    happen on the workers. Queue settings apply to the process-wide backend.

    Raises:
        TypeError: *name* is not a str or *log_file* not a path.
        ValueError: an invalid queue setting (see :class:`~kakashi.core.async_backend.AsyncConfig`).
        OSError: the log file cannot be opened (the message names ``log_file``).
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {name!r}")
    path = checked_path("log_file", log_file)
    make_folder("log_file", path.parent, path)
    backend = _backend_for(max_queue_size, worker_count, batch_size)
    key = ("file", str(path.resolve()))
    with _lock:
        pipeline = _pipelines.get(key)
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
            _pipelines[key] = pipeline
    return pipeline.get_logger(name)


def get_network_logger(
    name: str,
    network_writer_func: Callable[[str], Any],
    max_queue_size: int = 20_000,
    batch_size: int = 100,
    max_retries: int = 5,
    *,
    retry_delay: float = 0.1,
    min_level: LogLevel | int | str = LogLevel.INFO,
) -> Logger:
    """Return a logger whose records are passed, as JSON text, to *network_writer_func*.

    The function runs on a worker thread, never on the caller, once per record in order.
    A failing call is retried up to *max_retries* times with exponential backoff (from
    *retry_delay*, capped at 2 s); after that the record counts as dropped
    (``write_error``) and is reported once on stderr.

    Raises:
        TypeError: *network_writer_func* is not callable, or *name* is not a str.
        ValueError: a negative retry count or delay, or an invalid queue setting.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {name!r}")
    if not callable(network_writer_func):
        raise TypeError(f"network_writer_func must be callable, got {network_writer_func!r}")
    backend = _backend_for(max_queue_size, get_async_backend().config.worker_count, batch_size)
    writer = SendWriter(network_writer_func, max_retries=max_retries, retry_delay=retry_delay)
    config = PipelineConfig(
        min_level=min_level,
        enrichers=(thread_enricher, exception_enricher, context_enricher),
        formatter=default_json_formatter,
        writers=(writer,),
    )
    pipeline = AsyncPipeline(
        AsyncPipelineConfig(pipeline_config=config, async_config=backend.config), backend
    )
    with _lock:
        _pipelines[("send", id(pipeline))] = pipeline
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
    """Return the process-wide backend's counters.

    Keys include ``state``, ``queue_size``, ``max_queue_size``, ``worker_count``,
    ``active_workers``, ``messages_enqueued``, ``messages_written`` (of which
    ``messages_written_sync`` by the synchronous fallback), ``messages_filtered``,
    ``messages_dropped``, ``dropped_by_reason``, ``pending`` (``queue_size`` waiting,
    ``in_flight`` in a worker's batch, ``blocked`` held by callers waiting for room,
    ``in_fallback`` being written by the synchronous fallback), ``batches_written`` and
    per-writer figures under ``writers``. At every instant ``messages_enqueued ==
    messages_written + messages_filtered + messages_dropped + pending``.
    """
    return get_async_backend().get_stats()


def shutdown_async_backend(timeout: float = 5.0) -> FlushResult:
    """Stop the process-wide backend: drain, flush and close its writers within *timeout*.

    Never raises; the result says whether everything was written and, if not, how many
    records were abandoned (counted as dropped). Safe to pass to ``atexit.register``.
    """
    return shutdown_async_logging(timeout)
