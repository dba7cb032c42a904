"""The pipeline: enrichers → filters → formatter → writers.

A :class:`PipelineConfig` says what to do with a record; a :class:`Pipeline` does it.
Used directly, a pipeline processes each record on the calling thread (sync mode); the
async backend runs the same stages on its worker threads.

The standard stages are importable from here as well as from their own modules.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from kakashi import _errors
from kakashi._errors import is_interrupt
from kakashi._speedups import USING_SPEEDUPS, Logger, Record, format_batch, minimal_json
from kakashi._state import SURROGATES
from kakashi._tally import Tally
from kakashi.core.logger_cache import LoggerCache
from kakashi.core.records import LogLevel, to_level
from kakashi.enrichers import (
    callsite_enricher,
    constant_fields,
    context_enricher,
    exception_enricher,
    fields_enricher,
    service_enricher,
    thread_enricher,
)
from kakashi.filters import field_filter, level_filter, logger_name_filter
from kakashi.formatters import (
    console_formatter,
    default_json_formatter,
    logfmt_formatter,
    simple_text_formatter,
    text_formatter,
)
from kakashi.typing import Enricher, Filter, Formatter, Writer
from kakashi.writers import (
    callable_writer,
    console_writer,
    file_writer,
    null_writer,
    stderr_writer,
    stdout_writer,
)
from kakashi.writers.file import PendingLines

__all__ = [
    "LogLevel",
    "Pipeline",
    "PipelineConfig",
    # enrichers
    "callsite_enricher",
    "context_enricher",
    "exception_enricher",
    "fields_enricher",
    "service_enricher",
    "thread_enricher",
    # filters
    "field_filter",
    "level_filter",
    "logger_name_filter",
    # formatters
    "console_formatter",
    "default_json_formatter",
    "logfmt_formatter",
    "simple_text_formatter",
    "text_formatter",
    # writers
    "callable_writer",
    "console_writer",
    "file_writer",
    "null_writer",
    "stderr_writer",
    "stdout_writer",
]


def _batch_plan(
    enrichers: Sequence[Any],
) -> tuple[bool, dict[str, Any] | None, bool] | None:
    """How format_batch stands in for *enrichers*: ``(context, constants, thread)``, or
    ``None`` when it cannot. Besides exception_enricher, anywhere: thread_enricher,
    then context_enricher, then the enrichers of constant fields (fields_enricher,
    service_enricher), merged in order as they update a record's fields (a later key
    replaces an earlier one in place), each part optional."""
    thread = context = False
    constants: dict[str, Any] | None = None
    for position, enricher in enumerate(e for e in enrichers if e is not exception_enricher):
        if enricher is thread_enricher and position == 0:
            thread = True
            continue
        if enricher is context_enricher and not context and constants is None:
            context = True
            continue
        fields = constant_fields(enricher)
        if fields is None:
            return None
        if constants is None:
            constants = {}
        constants.update(fields)
    return context, constants or None, thread


def _callables(name: str, stages: Any) -> tuple[Any, ...]:
    if callable(stages) or isinstance(stages, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of callables, got {type(stages).__name__}")
    try:
        items = tuple(stages)
    except TypeError:
        raise TypeError(f"{name} must be a sequence, got {type(stages).__name__}") from None
    for index, stage in enumerate(items):
        if not callable(stage):
            raise TypeError(f"{name}[{index}] must be callable, got {type(stage).__name__}")
    return items


def _writers(writers: Any) -> tuple[Writer, ...]:
    if isinstance(writers, (str, bytes)) or hasattr(writers, "write"):
        raise TypeError("writers must be a sequence of writers, e.g. (file_writer('app.log'),)")
    try:
        items = tuple(writers)
    except TypeError:
        raise TypeError(f"writers must be a sequence, got {type(writers).__name__}") from None
    for index, writer in enumerate(items):
        for method in ("write", "flush", "close"):
            if not callable(getattr(writer, method, None)):
                hint = " (wrap a function with callable_writer(fn))" if callable(writer) else ""
                raise TypeError(
                    f"writers[{index}] ({type(writer).__name__}) has no {method}() method{hint}"
                )
    return items


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """What a pipeline does with a record; validated when made.

    Args:
        min_level: records below this level are not logged (a
            :class:`~kakashi.core.records.LogLevel`, an int
            or a level name).
        enrichers: callables run first, in order, each adding keys to the record.
        filters: callables run next; a record any of them rejects is not written.
        formatter: turns the record into one line (default: JSON lines).
        writers: where lines go (default: standard output).

    Raises:
        ValueError: unknown level name or a level outside 0..100.
        TypeError: a stage that is not callable, a writer missing ``write``, ``flush`` or
            ``close``; the message names the parameter and the position.
    """

    min_level: LogLevel | int | str = LogLevel.INFO
    enrichers: Sequence[Enricher] = ()
    filters: Sequence[Filter] = ()
    formatter: Formatter | None = None
    writers: Sequence[Writer] = ()

    def __post_init__(self) -> None:
        level = to_level(self.min_level, "min_level")
        set_field = object.__setattr__
        standard = level in LogLevel._value2member_map_
        set_field(self, "min_level", LogLevel(level) if standard else level)
        set_field(self, "enrichers", _callables("enrichers", self.enrichers))
        set_field(self, "filters", _callables("filters", self.filters))
        formatter = default_json_formatter if self.formatter is None else self.formatter
        if not callable(formatter):
            raise TypeError(f"formatter must be callable, got {type(formatter).__name__}")
        set_field(self, "formatter", formatter)
        set_field(self, "writers", _writers(self.writers) or (console_writer,))


class Pipeline:
    """Runs records through a :class:`PipelineConfig`'s stages.

    ``emit(record)`` processes one record on the calling thread. Nothing raises out of
    it: a failing enricher or formatter is reported once on stderr and the record is
    written in a safe minimal form (with ``kakashi_error`` saying what failed); a failing
    filter lets the record through; a failing writer is counted and reported.

    Args:
        config: the configuration; or pass its fields as keyword arguments instead.
        options: :class:`PipelineConfig`'s fields, when *config* is not given.
    """

    def __init__(self, config: PipelineConfig | None = None, **options: Any) -> None:
        if config is None:
            config = PipelineConfig(**options)
        elif options:
            raise TypeError("pass either a PipelineConfig or keyword options, not both")
        elif not isinstance(config, PipelineConfig):
            raise TypeError(f"config must be a PipelineConfig, got {type(config).__name__}")
        self.config = config
        self.min_level = int(config.min_level)
        self.capture_flags = 0
        for enricher in config.enrichers:
            self.capture_flags |= int(getattr(enricher, "captures", 0))
        self._enrichers = config.enrichers
        self._filters = config.filters
        self._format: Callable[[Record], bytes | str] = config.formatter  # type: ignore[assignment]
        # The whole batch is formatted by one compiled call with the JSON formatter, no
        # filters, and enrichers format_batch can stand in for (see _batch_plan): the
        # two that leave most records alone and those of constant fields. A record it
        # cannot write itself is rendered on its own (format_batch's render).
        batching = _batch_plan(config.enrichers)
        self._plain_json = (
            not config.filters
            and config.formatter is default_json_formatter
            and batching is not None
        )
        self._batch_render = self.render if config.enrichers else None
        self._batch_context, self._batch_constants, self._batch_thread = batching or (
            False,
            None,
            False,
        )
        self._writers = self.writers = config.writers
        # Each writer's way in for one record, chosen here: its write_record (a file
        # writer appends it with one system call and no lock), else a batch of one.
        self._record_writes = tuple((writer, _record_write(writer)) for writer in config.writers)
        #: When an async backend cannot take a record of this pipeline (not started,
        #: shut down), write it synchronously instead of dropping it.
        self.fallback_to_sync = True
        #: The loggers this pipeline handed out, one per name.
        self.loggers = LoggerCache(self)
        # Counted from every thread that logs (and every worker): exact without a lock.
        self._emitted = Tally()
        self._written = Tally()
        self._filtered = Tally()
        self._errors = Tally()

    # -- the stages -------------------------------------------------------------------

    def render(self, record: Record, *, filtered: bool = True) -> bytes | None:
        """Run enrichers, filters and the formatter on *record*; return the line, or ``None``
        if it is filtered out.

        *filtered*: ``False`` skips the filters (the async backend's drop notices, which
        no filter may hide). Never raises (see the class description).
        """
        try:
            for enricher in self._enrichers:
                enriched = enricher(record)
                if enriched is not None:
                    record = enriched
        except BaseException as exc:
            if is_interrupt(exc):
                raise
            _errors.report(f"enricher {_name(enricher)}", exc)
            return minimal_json(record, f"enricher {_name(enricher)} failed: {exc!r}")
        for filter_ in self._filters if filtered else ():
            try:
                if not filter_(record):
                    self._filtered.add()
                    return None
            except BaseException as exc:
                if is_interrupt(exc):
                    raise
                _errors.report(f"filter {_name(filter_)}", exc)
        try:
            line: object = self._format(record)
            if type(line) is bytes:
                return line
            if isinstance(line, str):
                return line.encode("utf-8", SURROGATES)
            if isinstance(line, (bytearray, memoryview)):
                return bytes(line)
            raise TypeError(f"formatter returned {type(line).__name__}, not bytes or str")
        except BaseException as exc:
            if is_interrupt(exc):
                raise
            _errors.report(f"formatter {_name(self._format)}", exc)
            return minimal_json(record, f"formatter failed: {exc!r}")

    def render_notice(self, record: Record) -> bytes | None:
        """*record*'s line, enriched and formatted, never filtered out: how the async
        backend renders its drop notices. Never raises."""
        return self.render(record, filtered=False)

    def pending_batch(self, records: Sequence[Record]) -> PendingLines | None:
        """*records*' lines to be formatted by the file writer that appends them, in the
        same release of the GIL as the write (see :class:`~kakashi.writers.file.PendingLines`),
        or ``None`` where :meth:`render_batch` would not format the batch in one compiled
        call (then render it). Used by the async backend; never raises."""
        if not (self._plain_json and USING_SPEEDUPS):
            return None
        return PendingLines(len(records), lambda fd, gate: self._format_batch(records, fd, gate))

    def _format_batch(
        self,
        records: Sequence[Record],
        fd: int = -1,
        gate: tuple[bytes, int, int, int, int] | None = None,
    ) -> Sequence[bytes]:
        """:meth:`render_batch`'s lines of a batch without filters, written to *fd* as they
        are formatted when *fd* is not -1, through *gate* if given (see ``format_batch``).
        Never raises."""
        try:
            return format_batch(
                records,
                self._batch_render,
                self._batch_context,
                self._batch_constants,
                self._batch_thread,
                fd,
                gate,
            )
        except BaseException as exc:  # e.g. a record of the other implementation
            if is_interrupt(exc):
                raise
            _errors.report("format_batch", exc)
        return self._render_each(records)

    def _render_each(self, records: Sequence[Record]) -> list[bytes]:
        """The lines of *records* rendered one by one (those not filtered out)."""
        lines: list[bytes] = []
        render = self.render
        for record in records:
            line = render(record)
            if line is not None:
                lines.append(line)
        return lines

    def render_batch(self, records: Sequence[Record]) -> tuple[Sequence[bytes], int]:
        """Render *records* in order; return the lines and how many were filtered out.

        With the JSON formatter, no filters and no enrichers but ``exception_enricher``,
        ``thread_enricher`` (first), ``context_enricher`` and enrichers of constant
        fields (``fields_enricher``, ``service_enricher``, after ``context_enricher``),
        the whole batch is formatted by one compiled call (a record it cannot write
        itself is rendered on its own).
        Never raises.
        """
        if self._plain_json:
            return self._format_batch(records), 0  # no filters: none filtered out
        lines = self._render_each(records)
        return lines, len(records) - len(lines)

    def write(self, batch: Sequence[bytes]) -> int:
        """Hand *batch* to every writer; return how many writers failed (counted, reported)."""
        failures = 0
        for writer in self._writers:
            try:
                writer.write(batch)
            except BaseException as exc:
                if is_interrupt(exc):
                    raise
                failures += 1
                _errors.report(f"writer {writer!r}", exc)
        return failures

    def emit(self, record: Record) -> None:
        """Process one record now, on the calling thread."""
        self._emitted.add()
        line = self.render(record)
        if line is None:
            return
        failed = False
        for writer, write in self._record_writes:
            try:
                write(line)
            except BaseException as exc:
                if is_interrupt(exc):
                    raise
                failed = True
                _errors.report(f"writer {writer!r}", exc)
        if failed:
            self._errors.add()
        else:
            self._written.add()

    process = emit

    @property
    def route_emit(self) -> Callable[[Record], None]:
        """The entry point this pipeline's loggers hand records to (here :meth:`emit`)."""
        return self.emit

    # -- loggers ------------------------------------------------------------------------

    def get_logger(self, name: str) -> Logger:
        """Return the logger called *name* that logs through this pipeline (cached)."""
        return self.loggers.get(name)

    # -- lifecycle ------------------------------------------------------------------------

    def flush(self) -> None:
        """Flush every writer (failures are reported, not raised)."""
        for writer in self._writers:
            try:
                writer.flush()
            except BaseException as exc:
                if is_interrupt(exc):
                    raise
                _errors.report(f"writer {writer!r} flush", exc)

    def close(self) -> None:
        """Flush and close every writer (failures are reported, not raised)."""
        for writer in self._writers:
            try:
                writer.close()
            except BaseException as exc:
                if is_interrupt(exc):
                    raise
                _errors.report(f"writer {writer!r} close", exc)

    def stats(self) -> dict[str, int]:
        """Return counts: records ``emitted``, ``written``, ``filtered``, write ``errors``.

        Exact, however many threads log through the pipeline (or workers render for it).
        """
        written, filtered, errors = self._written.value, self._filtered.value, self._errors.value
        return {
            "emitted": self._emitted.value,
            "written": written,
            "filtered": filtered,
            "errors": errors,
        }

    # -- derived pipelines -------------------------------------------------------------

    def _replace(self, **changes: Any) -> Pipeline:
        return Pipeline(dataclasses.replace(self.config, **changes))

    def with_enricher(self, enricher: Enricher) -> Pipeline:
        """Return a new pipeline with *enricher* appended."""
        return self._replace(enrichers=(*self.config.enrichers, enricher))

    def with_filter(self, filter_func: Filter) -> Pipeline:
        """Return a new pipeline with *filter_func* appended."""
        return self._replace(filters=(*self.config.filters, filter_func))

    def with_writer(self, writer: Writer) -> Pipeline:
        """Return a new pipeline with *writer* appended."""
        return self._replace(writers=(*self.config.writers, writer))

    def __repr__(self) -> str:
        return f"<Pipeline min_level={self.min_level} writers={list(self._writers)!r}>"


def _record_write(writer: Writer) -> Callable[[bytes], object]:
    """The callable that writes one record to *writer*: its ``write_record`` if it has
    one (see :class:`kakashi.typing.Writer`), else its ``write`` with a batch of one."""
    write_record = getattr(writer, "write_record", None)
    if callable(write_record):
        return write_record  # type: ignore[no-any-return]
    write = writer.write
    return lambda line: write((line,))


def _name(stage: object) -> str:
    name = getattr(stage, "__qualname__", None) or type(stage).__qualname__
    return str(name).rsplit("<locals>.", 1)[-1]
