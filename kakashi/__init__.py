"""Kakashi: structured logging with a compiled hot path.

Quick start::

    import kakashi

    log = kakashi.get_logger(__name__)
    log.info("user logged in", user_id=42)

See the documentation's :doc:`Getting started </getting-started>` page for configuring
pipelines, formatters and writers.
"""

from typing import TYPE_CHECKING, Any

from kakashi._errors import error_counts
from kakashi._platform import UnsupportedPlatformError
from kakashi._speedups import USING_SPEEDUPS, Logger, Record
from kakashi.context import (
    bind_context,
    clear_context,
    clear_request_context,
    context_scope,
    get_context,
    reset_context,
    set_custom_context,
    set_request_context,
    set_user_context,
    unbind_context,
)
from kakashi.core.pipeline import Pipeline, PipelineConfig
from kakashi.core.records import (
    LOG_LEVEL_CRITICAL,
    LOG_LEVEL_DEBUG,
    LOG_LEVEL_ERROR,
    LOG_LEVEL_INFO,
    LOG_LEVEL_WARNING,
    LogLevel,
)
from kakashi.enrichers import (
    callsite_enricher,
    context_enricher,
    exception_enricher,
    fields_enricher,
    service_enricher,
    thread_enricher,
)
from kakashi.filters import field_filter, level_filter, logger_name_filter
from kakashi.formatters import (
    ConsoleFormatter,
    LogfmtFormatter,
    TextFormatter,
    console_formatter,
    default_json_formatter,
    json_formatter,
    logfmt_formatter,
    simple_text_formatter,
    text_formatter,
)
from kakashi.logger import configure, flush, get_default_pipeline, get_logger, set_level
from kakashi.writers import (
    CallableWriter,
    FileWriter,
    NullWriter,
    StreamWriter,
    batched,
    callable_writer,
    console_writer,
    file_writer,
    null_writer,
    stderr_writer,
    stdout_writer,
)

__version__ = "0.3.0.dev0"

if TYPE_CHECKING:
    from kakashi.info import build_info
    from kakashi.integrations.logging import capture_stdlib


def __getattr__(name: str) -> Any:
    # build_info imports importlib.metadata and platform: only for those who ask.
    if name == "build_info":
        from kakashi.info import build_info

        return build_info
    # The stdlib bridge is loaded only by those who use it.
    if name == "capture_stdlib":
        from kakashi.integrations.logging import capture_stdlib

        return capture_stdlib
    raise AttributeError(f"module 'kakashi' has no attribute {name!r}")


__all__ = [
    "USING_SPEEDUPS",
    "__version__",
    "build_info",
    "UnsupportedPlatformError",
    # levels and records
    "LOG_LEVEL_CRITICAL",
    "LOG_LEVEL_DEBUG",
    "LOG_LEVEL_ERROR",
    "LOG_LEVEL_INFO",
    "LOG_LEVEL_WARNING",
    "LogLevel",
    "Record",
    # loggers
    "Logger",
    "configure",
    "flush",
    "get_default_pipeline",
    "get_logger",
    "set_level",
    "error_counts",
    "capture_stdlib",
    # pipeline
    "Pipeline",
    "PipelineConfig",
    # context
    "bind_context",
    "clear_context",
    "clear_request_context",
    "context_scope",
    "get_context",
    "reset_context",
    "set_custom_context",
    "set_request_context",
    "set_user_context",
    "unbind_context",
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
    "ConsoleFormatter",
    "LogfmtFormatter",
    "TextFormatter",
    "console_formatter",
    "default_json_formatter",
    "json_formatter",
    "logfmt_formatter",
    "simple_text_formatter",
    "text_formatter",
    # writers
    "CallableWriter",
    "FileWriter",
    "NullWriter",
    "StreamWriter",
    "batched",
    "callable_writer",
    "console_writer",
    "file_writer",
    "null_writer",
    "stderr_writer",
    "stdout_writer",
]
