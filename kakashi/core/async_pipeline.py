"""An async pipeline: a pipeline's stages, run by an async backend's workers.

``AsyncPipeline(AsyncPipelineConfig(pipeline_config, async_config, enable_async,
fallback_to_sync))``: loggers from :meth:`AsyncPipeline.get_logger` (or
``kakashi.get_logger(name, pipeline=...)``) capture on the caller and enqueue; the
backend's workers enrich, filter, format and write. With ``fallback_to_sync=True`` a
record the backend cannot take (shut down, or after :meth:`AsyncPipeline.shutdown`) is
written synchronously instead of dropped; with ``False`` it is dropped and counted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from kakashi._durations import MAX_TIMEOUT, check_seconds
from kakashi._speedups import Logger, Record, RecordQueue
from kakashi.core.async_backend import (
    AsyncBackend,
    AsyncConfig,
    FlushResult,
    register_pipeline,
)
from kakashi.core.logger_cache import LoggerCache
from kakashi.core.pipeline import Pipeline, PipelineConfig
from kakashi.typing import Writer
from kakashi.writers.file import PendingLines

__all__ = ["AsyncPipeline", "AsyncPipelineConfig"]


@dataclasses.dataclass(frozen=True)
class AsyncPipelineConfig:
    """A pipeline configuration plus how to run it asynchronously.

    Args:
        pipeline_config: the stages (see :class:`~kakashi.core.pipeline.PipelineConfig`).
        async_config: queue and worker settings for this pipeline's own backend.
        enable_async: ``False`` runs the stages on the caller (sync), as a plain pipeline.
        fallback_to_sync: write a record synchronously when the backend cannot take it.

    Raises:
        TypeError: a field of the wrong type.
    """

    pipeline_config: PipelineConfig
    async_config: AsyncConfig = dataclasses.field(default_factory=AsyncConfig)
    enable_async: bool = True
    fallback_to_sync: bool = True

    def __post_init__(self) -> None:
        checks: tuple[tuple[str, object, type], ...] = (
            ("pipeline_config", self.pipeline_config, PipelineConfig),
            ("async_config", self.async_config, AsyncConfig),
        )
        for name, value, expected in checks:
            if not isinstance(value, expected):
                kind = type(value).__name__
                raise TypeError(f"{name} must be a {expected.__name__}, got {kind}")


class AsyncPipeline:
    """Runs a :class:`~kakashi.core.pipeline.Pipeline`'s stages on an async backend.

    It composes the pipeline (:attr:`pipeline`): the stages, level, capture flags and
    writers are the pipeline's, read through it; what this class adds is where the
    loggers' records go (the backend's queue) and the backend's lifecycle. It satisfies
    :class:`~kakashi.typing.LoggerSource` and :class:`~kakashi.typing.AsyncSink`.

    Args:
        config: the :class:`AsyncPipelineConfig`.
        backend: share this backend instead of creating one from ``config.async_config``
            (as the presets share the process-wide backend).
    """

    def __init__(self, config: AsyncPipelineConfig, backend: AsyncBackend | None = None) -> None:
        if not isinstance(config, AsyncPipelineConfig):
            raise TypeError(f"config must be an AsyncPipelineConfig, got {type(config).__name__}")
        self.config = config
        #: The pipeline whose stages run on the backend's workers.
        self.pipeline = Pipeline(config.pipeline_config)
        #: When the backend cannot take a record (shut down), write it synchronously
        #: instead of dropping it (from ``config.fallback_to_sync``).
        self.fallback_to_sync = config.fallback_to_sync
        #: The loggers this pipeline handed out, one per name.
        self.loggers = LoggerCache(self)
        #: The backend whose queue and workers this pipeline's records go through.
        self.backend = backend if backend is not None else AsyncBackend(config.async_config)
        register_pipeline(self.backend, self)

    # -- the composed pipeline's stages: what the backend's workers call ------------------

    @property
    def min_level(self) -> int:
        """The pipeline's level; records below it are not captured."""
        return self.pipeline.min_level

    @property
    def capture_flags(self) -> int:
        """What the pipeline's enrichers ask loggers to capture on the caller."""
        return self.pipeline.capture_flags

    @property
    def writers(self) -> Sequence[Writer]:
        """The pipeline's writers (the backend flushes and closes them)."""
        return self.pipeline.writers

    def render(self, record: Record) -> bytes | None:
        """Render *record* with the pipeline's stages (see ``Pipeline.render``)."""
        return self.pipeline.render(record)

    def render_notice(self, record: Record) -> bytes | None:
        """Render a drop notice, never filtered out (see ``Pipeline.render_notice``)."""
        return self.pipeline.render_notice(record)

    def render_batch(self, records: Sequence[Record]) -> tuple[Sequence[bytes], int]:
        """Render *records* with the pipeline's stages (see ``Pipeline.render_batch``)."""
        return self.pipeline.render_batch(records)

    def pending_batch(self, records: Sequence[Record]) -> PendingLines | None:
        """*records*' lines for the file writer to format as it appends them, or ``None``
        (see ``Pipeline.pending_batch``)."""
        return self.pipeline.pending_batch(records)

    def emit(self, record: Record) -> None:
        """Process *record* now, on the calling thread (the synchronous path)."""
        self.pipeline.emit(record)

    # -- where the loggers' records go ----------------------------------------------------

    @property
    def route_emit(self) -> Callable[[Record], None] | RecordQueue:
        """The entry point this pipeline's loggers hand records to (the backend's queue)."""
        if self.config.enable_async:
            return self.backend.queue
        return self.emit

    def process(self, record: Record) -> None:
        """Hand *record* to this pipeline the way its loggers do (async when enabled)."""
        record.sink = self
        if self.config.enable_async:
            self.backend.queue.put(record)
        else:
            self.emit(record)

    def get_logger(self, name: str) -> Logger:
        """Return the logger called *name* that logs through this pipeline (cached)."""
        return self.loggers.get(name)

    def use_backend(self, backend: AsyncBackend) -> None:
        """Move to *backend*: every logger of this pipeline enqueues there from now on."""
        from kakashi.logger import reroute

        self.backend = backend
        register_pipeline(backend, self)
        self.loggers.reroute()  # reads route_emit, so after self.backend is set
        reroute(self)  # the default loggers, when this is the default pipeline

    # -- lifecycle -------------------------------------------------------------------------

    def flush(self, timeout: float = 5.0) -> FlushResult:
        """Wait until everything logged so far is written (see ``AsyncBackend.flush``).

        Raises:
            ValueError: *timeout* is not between 0 and one hour (NaN and infinity too).
        """
        check_seconds("timeout", timeout, at_most=MAX_TIMEOUT, zero=True)
        if not self.config.enable_async:
            self.pipeline.flush()
            return FlushResult(True, 0)
        return self.backend.flush(timeout)

    def shutdown(self, timeout: float = 5.0) -> FlushResult:
        """Shut down this pipeline's backend: drain, flush, close the writers.

        Raises:
            ValueError: *timeout* is not between 0 and one hour (NaN and infinity too).
        """
        check_seconds("timeout", timeout, at_most=MAX_TIMEOUT, zero=True)
        if not self.config.enable_async:
            self.pipeline.close()
            return FlushResult(True, 0)
        return self.backend.shutdown(timeout)

    def stats(self) -> dict[str, Any]:
        """Return the backend's counters (see ``AsyncBackend.get_stats``)."""
        return self.backend.get_stats()

    get_performance_stats = stats

    def __repr__(self) -> str:
        return f"<AsyncPipeline {self.backend!r} writers={list(self.writers)!r}>"
