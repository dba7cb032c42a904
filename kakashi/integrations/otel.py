"""OpenTelemetry: trace ids on every record, and the OTLP/JSON log format.

Trace correlation needs no setup. Once the application has imported OpenTelemetry's
trace API (``opentelemetry-api``, the ``kakashi[otel]`` extra), every record logged
while a span is active carries ``trace_id`` (32 lowercase hex digits), ``span_id`` (16)
and ``trace_flags`` (an int, 1 = sampled) as top-level fields: the names OpenTelemetry's
compatibility specification gives for logs in formats other than OTLP. The ids are read
on the thread that logs, when the record is captured, so they are right however late a
worker writes the record; this holds for the default pipeline, hand-built
:class:`~kakashi.core.pipeline.Pipeline` and
:class:`~kakashi.core.async_pipeline.AsyncPipeline` loggers and records from the stdlib
bridge alike. Until OpenTelemetry is imported a log call pays one integer comparison for
this; :func:`trace_correlation` switches it off.

:class:`OTLPJsonFormatter` writes each record as OpenTelemetry's log data model in the
OTLP/JSON encoding (an ``ExportLogsServiceRequest`` per line, what the collector's
``otlpjsonfile`` receiver reads); :meth:`OTLPJsonFormatter.format_batch` puts several
records in one document, the body of a POST to ``/v1/logs``.

Nothing here imports OpenTelemetry: the formatter needs no OpenTelemetry package, and
the trace API is taken from ``sys.modules`` once the application has loaded it.
"""

from __future__ import annotations

import base64
import math
import sys
from collections.abc import Iterable, Mapping
from time import time_ns
from typing import Any

import orjson

from kakashi import _trace
from kakashi._speedups import Record, Snapshot, event_dict, level_name, snapshot
from kakashi._state import SURROGATES
from kakashi.formatters import epoch_ns
from kakashi.integrations.logging import ORIGIN_KEY

__all__ = [
    "OTLPJsonFormatter",
    "otel_enricher",
    "otlp_any_value",
    "otlp_log_record",
    "severity_number",
    "severity_text",
    "trace_correlation",
    "trace_enricher",
]

# -- trace correlation ----------------------------------------------------------------


def trace_correlation(enabled: bool) -> None:
    """Switch the automatic trace fields on (the default) or off, for every logger.

    Off, a log call does not even look for OpenTelemetry; :func:`trace_enricher` still
    adds the fields in a pipeline that has it.

    Raises:
        TypeError: *enabled* is not a bool.
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {type(enabled).__name__}")
    _trace.set_correlation(enabled)


_explicit_reader: _trace.TraceReader | None = None


def trace_enricher(record: Record) -> Record:
    """Add ``trace_id``, ``span_id`` and ``trace_flags`` of the span active on the
    thread that runs this enricher, to a record that has none yet.

    Loggers capture these fields by themselves (see the module description); this
    enricher is for records made by hand and handed to
    :meth:`~kakashi.core.pipeline.Pipeline.emit`, and for pipelines used while
    :func:`trace_correlation` is off. It must run on the thread that logged: in a
    synchronous pipeline it does; in an async pipeline enrichers run on the worker,
    where no span is active, and it adds nothing.
    """
    global _explicit_reader
    extra = record.extra
    if extra is not None and "trace_id" in extra:
        return record
    read = _explicit_reader
    if read is None:
        read = _explicit_reader = _trace.reader(sys.modules)
        if read is None:  # OpenTelemetry's trace API is not imported: no span can exist
            return record
    fields = read()
    if fields is not None:
        if extra is None:
            record.extra = fields
        else:
            extra.update(fields)
    return record


#: The same enricher under the name other libraries use for it.
otel_enricher = trace_enricher

# -- severity -------------------------------------------------------------------------


def severity_number(level: int) -> int:
    """Return OpenTelemetry's ``SeverityNumber`` for a Kakashi (stdlib) *level*.

    As the OpenTelemetry Python SDK maps :mod:`logging` levels: DEBUG (10) is 5, INFO
    (20) 9, WARNING (30) 13, ERROR (40) 17, CRITICAL (50) 21; the three levels above
    each take the next three numbers (21 is INFO2, 22 INFO3, 23 to 29 INFO4); below 10
    is 0 (unspecified), above 53 is 24 (FATAL4).
    """
    if level < 10:
        return 0
    if level > 53:
        return 24
    # Each decade of stdlib levels is one OpenTelemetry range of four numbers.
    return 4 * (level // 10) + 1 + min(level % 10, 3)


_SEVERITY_TEXTS = {30: "WARN", 50: "FATAL"}  # OpenTelemetry's short names, as the SDK writes


def severity_text(level: int) -> str:
    """Return the severity text written for *level*: ``DEBUG``, ``INFO``, ``WARN``,
    ``ERROR``, ``FATAL`` (OpenTelemetry's names, as its SDK writes them) or Kakashi's
    name for another level (``LEVEL25``)."""
    return _SEVERITY_TEXTS.get(level) or level_name(level)


# -- AnyValue -------------------------------------------------------------------------

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# Non-finite doubles as proto3's JSON mapping spells them.
_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def otlp_any_value(value: Any) -> dict[str, Any]:
    """Return *value* as an OTLP/JSON ``AnyValue``.

    ``str``, ``bool``, ``int`` (as a decimal string, as OTLP/JSON writes 64-bit ints; one
    beyond 64 bits becomes a ``stringValue``), ``float``, ``bytes`` (base64), ``None``
    (an empty ``AnyValue``), mappings (``kvlistValue``) and sequences (``arrayValue``);
    a value snapshotted at call time is decoded first; anything else is first made JSON
    the way every Kakashi formatter does (a set as a list, a date as its ISO
    text, an unknown object as its ``repr`` marked ``!repr:``).
    """
    cls = type(value)
    if cls is str:
        return {"stringValue": value}
    if cls is bool:
        return {"boolValue": value}
    if cls is int:
        if _INT64_MIN <= value <= _INT64_MAX:
            return {"intValue": str(value)}
        return {"stringValue": str(value)}
    if cls is float:
        if math.isfinite(value):
            return {"doubleValue": value}
        return {"doubleValue": _NON_FINITE[repr(value)]}
    if value is None:
        return {}
    if cls is Snapshot:
        return otlp_any_value(orjson.loads(value.json))
    if cls is list or cls is tuple:
        if not value:
            return {"arrayValue": {}}
        return {"arrayValue": {"values": [otlp_any_value(item) for item in value]}}
    if cls is dict or isinstance(value, Mapping):
        if not value:
            return {"kvlistValue": {}}
        return {"kvlistValue": {"values": _key_values(value.items())}}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"bytesValue": base64.b64encode(bytes(value)).decode("ascii")}
    # Subclasses (enums, str subclasses), sets, dates, objects: made JSON as every
    # formatter makes them (snapshot never raises), then encoded.
    frozen = snapshot(value)
    return otlp_any_value(orjson.loads(frozen.json) if type(frozen) is Snapshot else frozen)


def _key_values(items: Iterable[tuple[Any, Any]]) -> list[dict[str, Any]]:
    return [{"key": str(key), "value": otlp_any_value(value)} for key, value in items]


# -- the log record -------------------------------------------------------------------

_TRACE_KEYS = ("trace_id", "span_id", "trace_flags")
_HEX = frozenset("0123456789abcdef")
_LEVEL_NUMBERS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "WARN": 30, "ERROR": 40}
_LEVEL_NUMBERS.update(CRITICAL=50, FATAL=50)
# Fields given OpenTelemetry's semantic-convention names (one set look-up per field).
_RENAMED = frozenset({"thread", "process", "pathname"})
_EXCEPTION_KEYS = (("type", "type"), ("message", "message"), ("traceback", "stacktrace"))


def _is_hex_id(value: object, digits: int) -> bool:
    return type(value) is str and len(value) == digits and _HEX.issuperset(value)


def _level_number(name: object) -> int | None:
    """The level a JSON event's ``level`` names (``INFO``, ``LEVEL25``), or ``None``."""
    if type(name) is not str:
        return None
    upper = name.upper()
    number = _LEVEL_NUMBERS.get(upper)
    if number is None and upper.startswith("LEVEL"):
        digits = upper[5:]
        if digits.isascii() and digits.isdigit():
            number = int(digits)
    return number


def _exception_attributes(exception: Mapping[str, Any]) -> list[dict[str, Any]]:
    attributes = []
    for key, name in _EXCEPTION_KEYS:
        if key in exception:
            value = exception[key]
            if name == "stacktrace" and type(value) is str and not value.endswith("\n"):
                # The event drops the newline that ends every formatted traceback; the
                # SDK keeps it.
                value += "\n"
            attributes.append({"key": "exception." + name, "value": otlp_any_value(value)})
    return attributes


def _log_record(event: dict[str, Any], observed: int, time_ns: int | None = None) -> dict[str, Any]:
    """THE mapping of a record's event (see :doc:`/formats`; *event* is consumed) to one
    OTLP/JSON ``LogRecord``, whether the event is the record's own
    (:class:`OTLPJsonFormatter`) or read back from its JSON line
    (:func:`otlp_log_record`). *time_ns*, when given, is the record's exact time (the
    event's ``timestamp`` has microseconds). Keys are left out where proto3's JSON
    mapping omits them.
    """
    timestamp = event.pop("timestamp", None)
    stamp = epoch_ns(timestamp) if time_ns is None else time_ns
    level = event.pop("level", None)
    body = event.pop("message", None)
    event.pop("logger", None)
    exception = event.pop("exception") if type(event.get("exception")) is dict else None
    stack = event.pop("stack", None)
    source = event.pop("source") if type(event.get("source")) is dict else None
    ids = [event.get(key) for key in _TRACE_KEYS]
    traced = _is_hex_id(ids[0], 32) and _is_hex_id(ids[1], 16)
    if traced:
        for key in _TRACE_KEYS:
            event.pop(key, None)
    # What is left are the fields: the enrichers' keys, bound fields, the call's.
    attributes: list[dict[str, Any]] = []
    if exception is not None:
        attributes.extend(_exception_attributes(exception))
    stdlib = event.get(ORIGIN_KEY) == "stdlib"
    append = attributes.append
    for key, value in event.items():
        if key not in _RENAMED:
            append({"key": key, "value": otlp_any_value(value)})
        elif key == "thread" and type(value) is dict:
            append({"key": "thread.id", "value": otlp_any_value(value.get("id"))})
            append({"key": "thread.name", "value": otlp_any_value(value.get("name"))})
        elif key == "process" and type(value) is dict:
            append({"key": "process.pid", "value": otlp_any_value(value.get("id"))})
        elif key == "pathname" and stdlib:
            append({"key": "code.file.path", "value": otlp_any_value(value)})
        else:
            append({"key": key, "value": otlp_any_value(value)})
    if source is not None:
        function = f"{source.get('module', '')}.{source.get('function', '')}"
        attributes.append({"key": "code.function.name", "value": {"stringValue": function}})
        attributes.append({"key": "code.line.number", "value": otlp_any_value(source.get("line"))})
    if stack is not None:
        attributes.append({"key": "code.stacktrace", "value": otlp_any_value(stack)})
    out: dict[str, Any] = {"timeUnixNano": str(observed if stamp is None else stamp)}
    number = _level_number(level)
    if number is not None:
        severity = severity_number(number)
        if severity:
            out["severityNumber"] = severity
        out["severityText"] = severity_text(number)
    elif type(level) is str:  # a name Kakashi does not write: its text, no number
        out["severityText"] = level
    if body is not None:
        out["body"] = otlp_any_value(body)
    if attributes:
        out["attributes"] = attributes
    if traced:
        flags = ids[2]
        if type(flags) is int and 0 < flags < 2**32:
            out["flags"] = flags
        out["traceId"] = ids[0]
        out["spanId"] = ids[1]
    out["observedTimeUnixNano"] = str(observed)
    return out


def _record_log_record(record: Record, observed: int) -> dict[str, Any]:
    """The ``LogRecord`` of a record at hand: its event, with its exact time, and its
    exception's class named as OpenTelemetry's SDK names it."""
    event = event_dict(record)
    exc_info = record.exc_info
    if exc_info is not None:
        # Fully qualified, builtins bare (the semantic conventions); the event leaves
        # out ``__main__.`` too.
        module, name = exc_info[0].__module__, exc_info[0].__qualname__
        qualified = f"{module}.{name}" if module and module != "builtins" else name
        event["exception"]["type"] = qualified
    return _log_record(event, observed, record.time_ns)


def otlp_log_record(event: Mapping[str, Any], observed: int | None = None) -> dict[str, Any]:
    """Return one OTLP/JSON ``LogRecord`` for a JSON line's *event* (see :doc:`/formats`).

    The mapping :class:`OTLPJsonFormatter` applies to a record (it maps the record's
    event with this same code), from what the line holds: ``timestamp`` as
    ``timeUnixNano`` (microseconds, as the line has it; *observed* when there is
    none), ``level`` as severity (a name Kakashi does not write keeps its text, with no
    number), ``message`` as the body, ``exception``, ``thread``, ``process``,
    ``source`` and ``stack`` as OpenTelemetry's semantic attributes,
    ``trace_id``/``span_id``/``trace_flags`` as the trace context and every other key
    as an attribute. ``logger`` names the scope, which is not part of a ``LogRecord``.
    *observed* (ns since the epoch, default now) is ``observedTimeUnixNano``.

    What the line no longer holds cannot come back: the time below the microsecond,
    bytes (they arrive as text), NaN and infinities (``null``, an empty value), and
    the ``__main__.`` of an exception class defined there.
    """
    return _log_record(dict(event), time_ns() if observed is None else observed)


def _scrub(value: Any) -> Any:
    """*value* with lone surrogates replaced (orjson refuses them), so the line is UTF-8."""
    if type(value) is str:
        return value.encode("utf-8", SURROGATES).decode("utf-8")
    if type(value) is dict:
        return {key: _scrub(item) for key, item in value.items()}
    if type(value) is list:
        return [_scrub(item) for item in value]
    return value


def _dumps(document: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(document)
    except TypeError:  # a lone surrogate somewhere in the text
        return orjson.dumps(_scrub(document))


class OTLPJsonFormatter:
    """Each record as OpenTelemetry's log data model, encoded as OTLP/JSON, one per line.

    A line is a whole ``ExportLogsServiceRequest``: ``resourceLogs`` (the resource
    given here) / ``scopeLogs`` (the scope is the logger's name, as OpenTelemetry's own
    logging handler makes it) / ``logRecords``. Each log record has ``timeUnixNano``
    and ``observedTimeUnixNano`` (when it was formatted) as decimal strings,
    ``severityNumber`` and ``severityText`` (see :func:`severity_number`), the message
    as ``body``, the fields as typed ``attributes`` (see :func:`otlp_any_value`), and
    ``traceId``, ``spanId`` (hex, as OTLP/JSON writes them) and ``flags`` when the
    record was logged inside a span. An exception is written as the attributes
    ``exception.type``, ``exception.message`` and ``exception.stacktrace``; the
    ``thread`` and ``process`` keys as ``thread.id``, ``thread.name`` and
    ``process.pid``; the call site as ``code.function.name`` and ``code.line.number``;
    a stack as ``code.stacktrace``; a stdlib record's ``pathname`` as ``code.file.path``.

    Args:
        service_name: the resource's ``service.name`` (default ``"unknown_service"``,
            as OpenTelemetry's SDK says when none is set).
        resource: more resource attributes (``service.version``,
            ``deployment.environment.name``...): str keys; values str, bool, int,
            float, or sequences or mappings of them.

    Raises:
        TypeError: *service_name* is not a non-empty str, *resource* is not a mapping
            with str keys, or one of its values cannot be an attribute value.
    """

    def __init__(
        self, service_name: str | None = None, resource: Mapping[str, Any] | None = None
    ) -> None:
        if service_name is not None and (not isinstance(service_name, str) or not service_name):
            raise TypeError(f"service_name must be a non-empty str, got {service_name!r}")
        given: object = {} if resource is None else resource
        if not isinstance(given, Mapping):
            kind = type(given).__name__
            raise TypeError(f"resource must be a mapping of attributes, got {kind}")
        attributes: dict[str, Any] = {}
        for key, value in given.items():
            if not isinstance(key, str) or not key:
                raise TypeError(f"resource keys must be non-empty str, got {key!r}")
            _check_attribute(f"resource[{key!r}]", value)
            attributes[key] = value
        if service_name is not None:
            attributes["service.name"] = service_name
        attributes.setdefault("service.name", "unknown_service")
        self.resource: Mapping[str, Any] = attributes
        self._resource = {"attributes": _key_values(attributes.items())}

    def __call__(self, record: Record) -> bytes:
        """Return *record* as one OTLP/JSON document (no line terminator)."""
        return _dumps(self.to_document((record,)))

    def to_document(self, records: Iterable[Record]) -> dict[str, Any]:
        """Return *records* as one ``ExportLogsServiceRequest`` (a dict, for JSON).

        One ``resourceLogs`` entry; one ``scopeLogs`` entry per logger name, in the order
        the names first appear; each logger's records in the order given.
        """
        observed = time_ns()
        return self.assemble(
            (record.logger, _record_log_record(record, observed)) for record in records
        )

    def assemble(self, log_records: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
        """Return one ``ExportLogsServiceRequest`` (a dict) for *log_records*, OTLP/JSON
        ``LogRecord`` dicts, each given with the name of its scope (``""`` for none), under this
        formatter's resource: one ``scopeLogs`` entry per name, in the order the names
        first appear; each scope's records in the order given. :meth:`to_document`
        builds on it, and so does :class:`~kakashi.writers.stores.OtlpHttpWriter` with
        the records :func:`otlp_log_record` maps from JSON lines.
        """
        scopes: dict[str, list[dict[str, Any]]] = {}
        for name, log_record in log_records:
            logged = scopes.get(name)
            if logged is None:
                logged = scopes[name] = []
            logged.append(log_record)
        scope_logs = [
            {"scope": {"name": name} if name else {}, "logRecords": logged}
            for name, logged in scopes.items()
        ]
        return {"resourceLogs": [{"resource": self._resource, "scopeLogs": scope_logs}]}

    def format_batch(self, records: Iterable[Record]) -> bytes:
        """Return *records* as one OTLP/JSON document: the body of a POST to ``/v1/logs``."""
        return _dumps(self.to_document(records))

    def __repr__(self) -> str:
        return f"<OTLPJsonFormatter service.name={self.resource['service.name']!r}>"


def _check_attribute(where: str, value: Any) -> None:
    if isinstance(value, (str, bool, int, float)):
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_attribute(f"{where}[{key!r}]", item)
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_attribute(f"{where}[{index}]", item)
        return
    kind = type(value).__name__
    raise TypeError(f"{where} must be a str, bool, int, float, list or mapping, got {kind}")
