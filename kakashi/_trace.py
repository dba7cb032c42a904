"""Trace correlation: the OpenTelemetry span active on the calling thread, as record fields.

Both implementations of the capture call :func:`reader` once they see that the
application has imported ``opentelemetry.trace`` (until then a log call pays one
comparison of ``len(sys.modules)``, see the capture twins) and then call the reader it
returns on every log call, on the caller's thread. This module never imports
OpenTelemetry itself: it takes the module the application already loaded from
``sys.modules``, so ``import kakashi`` costs nothing where OpenTelemetry is absent.

The fields are the names OpenTelemetry's trace-context-in-non-OTLP-logs compatibility
specification gives: ``trace_id`` (32 lowercase hex digits), ``span_id`` (16) and
``trace_flags`` (an int; 1 = sampled).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any

from kakashi import _errors

__all__ = ["TRACE_MODULE", "TraceReader", "reader", "set_correlation"]

#: The module whose presence in ``sys.modules`` switches correlation on: every span is
#: made through it, so before it is imported no span can be active.
TRACE_MODULE = "opentelemetry.trace"

#: Returns the trace fields of the span active on the calling thread, or ``None``.
TraceReader = Callable[[], "dict[str, Any] | None"]


def reader(modules: Mapping[str, Any]) -> TraceReader | None:
    """Return a reader of the active span's ids, or ``None`` while OpenTelemetry's trace
    API is not (or not yet completely) imported."""
    module = modules.get(TRACE_MODULE)
    if module is None:
        return None
    spec = getattr(module, "__spec__", None)
    if getattr(spec, "_initializing", False):  # another thread is importing it right now
        return None
    get_current_span = getattr(module, "get_current_span", None)
    if get_current_span is None:
        return None
    lookup = _span_lookup(modules)
    if lookup is not None:
        get_context, key = lookup
    else:  # the public function, behind the same two reads (None: no span)

        def get_context() -> dict[Any, Any]:
            return {None: get_current_span()}

        key = None
    # (span, its fields or None for an invalid one), one tuple so that threads always read
    # a matching pair: a span's context never changes, so its ids are formatted once.
    last: tuple[Any, tuple[str, str, int] | None] = (None, None)

    def read_trace() -> dict[str, Any] | None:
        nonlocal last
        try:
            span = get_context().get(key)  # two C calls, no Python frame of its own
            if span is None:
                return None
            seen, fields = last
            if span is not seen:
                context = span.get_span_context()
                fields = (
                    (
                        f"{context.trace_id:032x}",
                        f"{context.span_id:016x}",
                        int(context.trace_flags),
                    )
                    if context.is_valid
                    else None
                )
                last = (span, fields)
            if fields is None:
                return None
            # A new dict per record: enrichers add their keys to it.
            return {"trace_id": fields[0], "span_id": fields[1], "trace_flags": fields[2]}
        except Exception as exc:  # a broken tracer must not cost the record
            _errors.report("opentelemetry trace context", exc)
            return None

    return read_trace


def _span_lookup(modules: Mapping[str, Any]) -> tuple[Callable[[], Any], str] | None:
    """How to read the current span straight from OpenTelemetry's context variable:
    ``get_context().get(key)`` is the span, or ``None``.

    ``opentelemetry.trace.get_current_span()`` goes through four Python calls to read
    one :class:`~contextvars.ContextVar` and one dict entry: about 4,000 instructions on
    every log call. With OpenTelemetry's default runtime context (contextvars), this does
    the same two reads directly. It relies on two private names of ``opentelemetry-api``
    (``_RUNTIME_CONTEXT._current_context`` and ``_SPAN_KEY``); where either is missing or
    another runtime context is configured, ``None``: the public function is used.
    """
    context_module = modules.get("opentelemetry.context")
    runtime_module = modules.get("opentelemetry.context.contextvars_context")
    propagation = modules.get("opentelemetry.trace.propagation")
    runtime = getattr(context_module, "_RUNTIME_CONTEXT", None)
    runtime_class = getattr(runtime_module, "ContextVarsRuntimeContext", None)
    variable = getattr(runtime, "_current_context", None)
    key = getattr(propagation, "_SPAN_KEY", None)
    if (
        runtime_class is None
        or type(runtime) is not runtime_class
        or type(variable) is not ContextVar
        or type(key) is not str
    ):
        return None
    return variable.get, key


def set_correlation(enabled: bool) -> None:
    """Switch trace correlation on (the default) or off, in every loaded capture twin."""
    for name in ("kakashi._speedups._capture_py", "kakashi._speedups._capture_c"):
        module = sys.modules.get(name)
        if module is not None:
            module.set_trace_correlation(enabled)
