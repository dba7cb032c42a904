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
import traceback
from collections.abc import Iterable, Mapping
from time import time_ns
from typing import Any

import orjson

from kakashi import _trace
from kakashi._speedups import RESERVED_KEYS, Record, Snapshot, level_name, snapshot
from kakashi._state import SURROGATES
from kakashi.integrations.logging import ORIGIN_KEY

__all__ = [
    "OTLPJsonFormatter",
    "otel_enricher",
    "otlp_any_value",
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
    if cls is dict or isinstance(value, Mapping):
        if not value:
            return {"kvlistValue": {}}
        return {"kvlistValue": {"values": _key_values(value.items())}}
    if cls is list or cls is tuple:
        if not value:
            return {"arrayValue": {}}
        return {"arrayValue": {"values": [otlp_any_value(item) for item in value]}}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"bytesValue": base64.b64encode(bytes(value)).decode("ascii")}
    # Subclasses (enums, str subclasses), sets, dates, objects: made JSON as every
    # formatter makes them (snapshot never raises), then encoded.
    frozen = snapshot(value)
    return otlp_any_value(orjson.loads(frozen.json) if type(frozen) is Snapshot else frozen)


def _key_values(items: Iterable[tuple[Any, Any]]) -> list[dict[str, Any]]:
    return [{"key": str(key), "value": otlp_any_value(value)} for key, value in items]


# -- the log record -------------------------------------------------------------------

# The keys an enricher may not take (as in every formatter's event): the record's own.
_CORE_KEYS = RESERVED_KEYS - {"thread", "process"}
_TRACE_KEYS = ("trace_id", "span_id", "trace_flags")
_HEX = frozenset("0123456789abcdef")


def _is_hex_id(value: object, digits: int) -> bool:
    return type(value) is str and len(value) == digits and _HEX.issuperset(value)


def _fields(record: Record) -> dict[str, Any]:
    """The record's fields as every formatter names them (see :doc:`/formats`)."""
    fields: dict[str, Any] = {}
    extra = record.extra
    if extra:
        for key, value in extra.items():
            fields["field." + key if key in _CORE_KEYS else key] = value
    bound = record.bound
    if bound is not None:
        for key, value in bound.fields.items():
            fields["field." + key if key in RESERVED_KEYS else key] = value
    call = record.fields
    if call:
        for key, value in call.items():
            fields["field." + key if key in RESERVED_KEYS else key] = value
    return fields


def _exception_attributes(exc_info: Any) -> list[dict[str, Any]]:
    cls, exc, tb = exc_info
    module, name = cls.__module__, cls.__qualname__
    try:
        message = str(exc)
    except Exception:
        message = f"<{name} with failing str>"
    try:
        stacktrace = "".join(traceback.format_exception(cls, exc, tb))
    except Exception as failure:
        stacktrace = f"<traceback unavailable: {type(failure).__name__}>"
    return [
        # The fully qualified class name (builtins bare), as the semantic conventions ask.
        {"key": "exception.type", "value": {"stringValue": f"{module}.{name}"}}
        if module and module != "builtins"
        else {"key": "exception.type", "value": {"stringValue": name}},
        {"key": "exception.message", "value": {"stringValue": message}},
        {"key": "exception.stacktrace", "value": {"stringValue": stacktrace}},
    ]


def _log_record(record: Record, observed: int) -> dict[str, Any]:
    """One OTLP/JSON ``LogRecord``; keys left out where proto3's JSON mapping omits them."""
    fields = _fields(record)
    ids = [fields.get(key) for key in _TRACE_KEYS]
    traced = _is_hex_id(ids[0], 32) and _is_hex_id(ids[1], 16)
    if traced:
        for key in _TRACE_KEYS:
            fields.pop(key, None)
    attributes: list[dict[str, Any]] = []
    if record.exc_info is not None:
        attributes.extend(_exception_attributes(record.exc_info))
    stdlib = fields.get(ORIGIN_KEY) == "stdlib"
    for key, value in fields.items():
        if key == "thread" and type(value) is dict:
            attributes.append({"key": "thread.id", "value": otlp_any_value(value.get("id"))})
            attributes.append({"key": "thread.name", "value": otlp_any_value(value.get("name"))})
        elif key == "process" and type(value) is dict:
            attributes.append({"key": "process.pid", "value": otlp_any_value(value.get("id"))})
        elif key == "pathname" and stdlib:
            attributes.append({"key": "code.file.path", "value": otlp_any_value(value)})
        else:
            attributes.append({"key": key, "value": otlp_any_value(value)})
    source = record.source
    if source is not None:
        module, function, line = source
        attributes.append(
            {"key": "code.function.name", "value": {"stringValue": f"{module}.{function}"}}
        )
        attributes.append({"key": "code.line.number", "value": otlp_any_value(line)})
    if record.stack_info is not None:
        attributes.append({"key": "code.stacktrace", "value": {"stringValue": record.stack_info}})
    level = record.level
    out: dict[str, Any] = {"timeUnixNano": str(record.time_ns)}
    number = severity_number(level)
    if number:
        out["severityNumber"] = number
    out["severityText"] = severity_text(level)
    out["body"] = {"stringValue": record.message}
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
        scopes: dict[str, list[dict[str, Any]]] = {}
        for record in records:
            logged = scopes.get(record.logger)
            if logged is None:
                logged = scopes[record.logger] = []
            logged.append(_log_record(record, observed))
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
