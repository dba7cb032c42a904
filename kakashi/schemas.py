"""Formatters for the field schemas log backends read: ECS, Google Cloud, Datadog, Loki.

Each formatter takes a record and returns one line (see :data:`kakashi.typing.Formatter`).
It starts from the record's event (``kakashi._speedups.event_dict``, the keys the JSON
formatter writes) and moves the keys the backend knows to the names it expects; every other
key is kept. A kept key that would land on a name the formatter already wrote is written
as ``field.<key>`` (``field_<key>`` in logfmt), Kakashi's convention for reserved names, so
a field never overwrites what the formatter wrote. Names that set an entry's metadata
(Cloud Logging's special fields, Datadog's reserved attributes) are never taken from a
field; ECS names the formatter did not write may be (``user.id``), as ``ecs-logging``
lets ``extra=`` do.

The JSON schemas are serialised by orjson with the JSON formatter's rules for values it
does not know (``json_default``); a document that still fails falls back to the record's
safe minimal form, so a line is always written. :class:`LokiFormatter` escapes control
characters with the logfmt escaping of :mod:`kakashi.formatters`.

Trace correlation reads the OpenTelemetry names a record carries when a span is active:
``trace_id`` (32 lowercase hex digits), ``span_id`` (16) and ``trace_flags``. HTTP
fields are the access record's (``method``, ``path``, ``query``, ``status``,
``duration_ms``, ``response_size``, ``client_ip``, ``user_agent``, ``http_version``).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping
from typing import Any

import orjson

from kakashi._speedups import Record, Snapshot, event_dict, json_default, minimal_json, snapshot
from kakashi.formatters import _logfmt_key, _logfmt_value

__all__ = [
    "ECS_VERSION",
    "DatadogFormatter",
    "EcsFormatter",
    "GcpFormatter",
    "LokiFormatter",
    "datadog_trace_id",
    "gcp_severity",
    "loki_formatter",
]

#: The ECS version the documents declare, the one the ``ecs-logging`` package declares (so
#: documents from both read the same in Kibana).
ECS_VERSION = "1.6.0"

_HEX = frozenset("0123456789abcdefABCDEF")
_LOW_64_BITS = 0xFFFF_FFFF_FFFF_FFFF  # Datadog's trace id is the lower 64 bits (W3C rule)

# Cloud Logging's LogSeverity names, from the lowest stdlib-style level each one starts at:
# 25..29 is the NOTICE band between INFO and WARNING, 60 and 70 (above CRITICAL) are
# ALERT and EMERGENCY; 0 (NOTSET) has no severity, DEFAULT.
_SEVERITY_FLOORS = (
    (70, "EMERGENCY"),
    (60, "ALERT"),
    (50, "CRITICAL"),
    (40, "ERROR"),
    (30, "WARNING"),
    (25, "NOTICE"),
    (20, "INFO"),
    (1, "DEBUG"),
)


def gcp_severity(level: int) -> str:
    """Return Cloud Logging's severity for a level: ``INFO`` for 20, ``NOTICE`` for 25.

    >>> from kakashi.schemas import gcp_severity
    >>> [gcp_severity(level) for level in (0, 10, 20, 25, 30, 40, 50, 60, 70)]
    ['DEFAULT', 'DEBUG', 'INFO', 'NOTICE', 'WARNING', 'ERROR', 'CRITICAL', 'ALERT', 'EMERGENCY']
    """
    for floor, name in _SEVERITY_FLOORS:
        if level >= floor:
            return name
    return "DEFAULT"


# Levels are ints in 0..100 (the bridge clamps stdlib's); one lookup per record.
_SEVERITIES = tuple(gcp_severity(level) for level in range(101))


def _severity(level: int) -> str:
    return _SEVERITIES[level] if 0 <= level <= 100 else gcp_severity(level)


def _hex_id(value: Any, length: int) -> str | None:
    """*value* when it is a hex id of *length* digits (lowercased), else ``None``."""
    if type(value) is str and len(value) == length and _HEX.issuperset(value):
        return value.lower()
    return None


def datadog_trace_id(trace_id: str) -> str:
    """Return an OpenTelemetry trace id (32 hex digits) as Datadog correlates it in logs.

    Datadog's trace id is a 64-bit unsigned integer written in decimal: the lower 64 bits
    of the 128-bit id (W3C trace context keeps the randomness there).

    >>> from kakashi.schemas import datadog_trace_id
    >>> datadog_trace_id("4bf92f3577b34da6a3ce929d0e0e4736")
    '11803532876627986230'

    Raises:
        ValueError: *trace_id* is not 32 (or 16) hex digits.
    """
    valid = _hex_id(trace_id, 32) or _hex_id(trace_id, 16)
    if valid is None:
        raise ValueError(f"trace_id must be 32 hex digits, got {trace_id!r}")
    return str(int(valid, 16) & _LOW_64_BITS)


def _dumps(document: dict[str, Any], record: Record) -> bytes:
    """*document* as one JSON line, with the JSON formatter's fallbacks: never raises."""
    try:
        return orjson.dumps(document, default=json_default)
    except Exception:
        pass
    # snapshot() retries with lone surrogates and oversized ints made safe.
    frozen = snapshot(document)
    if frozen.json[:1] == b"{":
        return bytes(frozen.json)
    return minimal_json(record, "unserialisable record")


def _text_or_none(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise TypeError(f"{name} must be a non-empty str or None, got {value!r}")
    return value


def _module_file(module: str) -> str | None:
    """The file a module was loaded from, if it is loaded and has one."""
    path = getattr(sys.modules.get(module), "__file__", None)
    return path if isinstance(path, str) else None


def _origin(event: dict[str, Any]) -> tuple[str | None, str | None, Any] | None:
    """Pop ``source`` (and a bridged record's ``pathname``): ``(file, function, line)``.

    The file is the path the stdlib record named, else the file of the module that
    logged, else (a module without a file) ``None``.
    """
    source = event.get("source")
    if type(source) is not dict:
        return None
    del event["source"]
    path = event.get("pathname")
    if type(path) is str:
        del event["pathname"]
    else:
        module = source.get("module")
        path = _module_file(module) if type(module) is str else None
    function = source.get("function")
    return path, function if type(function) is str else None, source.get("line")


def _free_key(document: Mapping[str, Any], key: str, prefix: str = "field.") -> str:
    """*key*, or ``field.<key>`` (repeated) while that name is taken in *document*."""
    while key in document:
        key = prefix + key
    return key


def _keep(document: dict[str, Any], event: Mapping[str, Any], reserved: frozenset[str]) -> None:
    """Add the event's remaining keys to *document*, renaming those that collide."""
    for key, value in event.items():
        if key in reserved:
            key = "field." + key
        document[_free_key(document, key)] = value


def _exception(event: dict[str, Any]) -> dict[str, Any] | None:
    exception = event.get("exception")
    if type(exception) is not dict:
        return None
    del event["exception"]
    return exception


# -- ECS --------------------------------------------------------------------------------

#: Top-level names an ECS document from :class:`EcsFormatter` may hold itself.
_ECS_OWN = frozenset(
    {"@timestamp", "log.level", "message", "ecs.version", "ecs", "log", "process", "error"}
    | {"trace", "span", "service"}
)


def _flat_path_taken(root: Mapping[str, Any], parts: list[str]) -> bool:
    """Whether the document's flat dotted keys (``log.level``, ``ecs.version``) hold the
    path *parts*, a prefix of it, or a path under it (Elasticsearch reads them all as one
    tree)."""
    if any(".".join(parts[:end]) in root for end in range(2, len(parts) + 1)):
        return True
    prefix = ".".join(parts) + "."
    return any(key.startswith(prefix) for key in _ECS_FLAT)


#: The flat dotted keys an ECS document starts with.
_ECS_FLAT = ("log.level", "ecs.version")


def _merge_dotted(
    node: dict[str, Any], key: str, value: Any, owned: set[int], root: dict[str, Any]
) -> None:
    """Put *value* at the dotted path *key* inside *node*, as Elasticsearch reads it.

    ``http.request.method`` becomes ``{"http": {"request": {"method": ...}}}``, merged with
    objects this formatter made (never into a value the record holds). When the path is
    taken, the value is written flat as ``field.<key>`` at the document's top level.
    """
    parts = key.split(".")
    if "" in parts:  # "a..b", ".a": no path to follow; kept flat as given
        root[_free_key(root, key)] = value
        return
    if node is root and _flat_path_taken(root, parts):
        root[_free_key(root, "field." + key)] = value
        return
    target = node
    for part in parts[:-1]:
        child = target.get(part)
        if child is None and part not in target:
            child = target[part] = {}
            owned.add(id(child))
        elif type(child) is not dict or id(child) not in owned:
            root[_free_key(root, "field." + key)] = value
            return
        target = child
    leaf = parts[-1]
    if leaf in target:
        root[_free_key(root, "field." + key)] = value
    else:
        target[leaf] = value


class EcsFormatter:
    """Elastic Common Schema JSON lines, as Filebeat and Elastic Agent ingest them.

    ``@timestamp``, ``log.level`` (lowercase) and ``message`` come first, then
    ``ecs.version``, ``log.logger``, ``log.origin.file.name`` / ``.line`` /
    ``log.origin.function`` (from ``source``; add :func:`~kakashi.enrichers.callsite_enricher`),
    ``process.pid`` and ``process.thread.id`` / ``.name`` (from
    :func:`~kakashi.enrichers.thread_enricher`; the thread id is always known), ``error.type`` /
    ``error.message`` / ``error.stack_trace``, ``trace.id`` / ``span.id`` from ``trace_id``
    / ``span_id``, and ``service.*`` when configured. A ``stack`` (``stack_info=True``)
    goes to ``error.stack_trace`` when there is no exception, as ``ecs-logging`` does.

    Every other field is kept. By default at the top level, a dotted key nested as
    Elasticsearch reads it (``http.request.method=...`` joins the ``http`` object), the
    way ``ecs-logging`` writes ``extra=``; a key whose path is taken (``log.level`` as a
    field) is written as ``field.<key>``. With *namespace*, they all go under that one
    object instead (``{"app": {...}}``), away from ECS names.

    Args:
        service_name: ``service.name``.
        service_version: ``service.version``.
        service_environment: ``service.environment``.
        namespace: put every non-ECS field under this top-level key.

    Raises:
        TypeError: a setting is not a non-empty str (or ``None``).
        ValueError: *namespace* contains a dot or is one of the ECS names written.
    """

    def __init__(
        self,
        *,
        service_name: str | None = None,
        service_version: str | None = None,
        service_environment: str | None = None,
        namespace: str | None = None,
    ) -> None:
        service = {
            "name": _text_or_none("service_name", service_name),
            "version": _text_or_none("service_version", service_version),
            "environment": _text_or_none("service_environment", service_environment),
        }
        self._service = {key: value for key, value in service.items() if value is not None}
        self.namespace = _text_or_none("namespace", namespace)
        if namespace is not None and ("." in namespace or namespace in _ECS_OWN):
            raise ValueError(
                f"namespace must be a name without dots, not one of {sorted(_ECS_OWN)}; "
                f"got {namespace!r}"
            )

    def __call__(self, record: Record) -> bytes:
        event = event_dict(record)
        document: dict[str, Any] = {
            "@timestamp": event.pop("timestamp"),
            "log.level": event.pop("level").lower(),
            "message": event.pop("message"),
            "ecs.version": ECS_VERSION,
        }
        log: dict[str, Any] = {"logger": event.pop("logger")}
        document["log"] = log
        owned = {id(document), id(log)}
        origin = _origin(event)
        if origin is not None:
            path, function, line = origin
            file: dict[str, Any] = {"line": line}
            if path is not None:
                file["name"] = os.path.basename(path)
            log["origin"] = {"file": file, "function": function}
            owned.update((id(log["origin"]), id(file)))
        process: dict[str, Any] = {}
        enriched = event.get("process")
        if type(enriched) is dict:
            del event["process"]
            process["pid"] = enriched.get("id")
        thread = event.get("thread")
        if type(thread) is dict:
            del event["thread"]
            process["thread"] = {"id": thread.get("id"), "name": thread.get("name")}
        else:
            process["thread"] = {"id": record.thread_id}
            if record.thread_name is not None:
                process["thread"]["name"] = record.thread_name
        document["process"] = process
        owned.update((id(process), id(process["thread"])))
        exception = _exception(event)
        if exception is not None:
            document["error"] = {
                "type": exception.get("type"),
                "message": exception.get("message"),
                "stack_trace": exception.get("traceback"),
            }
            owned.add(id(document["error"]))
        elif type(event.get("stack")) is str:
            document["error"] = {"stack_trace": event.pop("stack")}
            owned.add(id(document["error"]))
        for name, key in (("trace", "trace_id"), ("span", "span_id")):
            value = event.get(key)
            if type(value) is str:
                del event[key]
                document[name] = {"id": value}
                owned.add(id(document[name]))
        if self._service:
            document["service"] = dict(self._service)
            owned.add(id(document["service"]))
        if event:
            node = document
            if self.namespace is not None:
                node = document[_free_key(document, self.namespace)] = {}
                owned.add(id(node))
            for key, value in event.items():
                _merge_dotted(node, key, value, owned, document)
        return _dumps(document, record)

    def __repr__(self) -> str:
        return f"<EcsFormatter service={self._service!r} namespace={self.namespace!r}>"


# -- Google Cloud Logging ----------------------------------------------------------------

_GCP = "logging.googleapis.com/"
#: Keys Cloud Logging's agents read specially: a field with one of these names (or any
#: ``logging.googleapis.com/`` name) is written as ``field.<name>``, so it cannot set them.
_GCP_SPECIAL = frozenset(
    {"severity", "time", "timestamp", "timestampSeconds", "timestampNanos", "httpRequest"}
    | {"stack_trace", "serviceContext", "@type", "exception"}
)


def _gcp_latency(duration_ms: float) -> str:
    """A ``google.protobuf.Duration`` in JSON: seconds with up to 9 decimals, ``0.123s``."""
    text = f"{duration_ms / 1000:.9f}".rstrip("0").rstrip(".")
    return text + "s"


def _http_request(event: dict[str, Any]) -> dict[str, Any] | None:
    """Pop an access record's fields into Cloud Logging's ``HttpRequest``, if it is one."""
    method, path = event.get("method"), event.get("path")
    if type(method) is not str or type(path) is not str:
        return None
    del event["method"], event["path"]
    url = path
    query = event.get("query")
    if type(query) is str:
        del event["query"]
        if query:
            url = f"{path}?{query}"
    request: dict[str, Any] = {"requestMethod": method, "requestUrl": url}
    value = event.get("status")
    if type(value) is int:
        request["status"] = event.pop("status")
    value = event.get("response_size")
    if type(value) is int:
        request["responseSize"] = str(event.pop("response_size"))  # int64: a string in JSON
    for key, name in (("user_agent", "userAgent"), ("client_ip", "remoteIp")):
        if type(event.get(key)) is str:
            request[name] = event.pop(key)
    value = event.get("duration_ms")
    if isinstance(value, (int, float)) and type(value) is not bool and 0 <= value < math.inf:
        request["latency"] = _gcp_latency(event.pop("duration_ms"))
    if type(event.get("http_version")) is str:
        request["protocol"] = "HTTP/" + event.pop("http_version")
    return request


class GcpFormatter:
    """Google Cloud Logging structured JSON, as Cloud Run, GKE and the Ops Agent read it.

    ``severity`` (see :func:`gcp_severity`), ``message``, ``time`` (RFC 3339), ``logger``;
    ``logging.googleapis.com/sourceLocation`` ``{file, line, function}`` from ``source``
    (add :func:`~kakashi.enrichers.callsite_enricher`); with *project*,
    ``logging.googleapis.com/trace`` (``projects/PROJECT/traces/TRACE_ID``), ``.../spanId``
    and ``.../trace_sampled`` from ``trace_id``, ``span_id`` and ``trace_flags`` (without a
    project they stay plain fields); ``logging.googleapis.com/labels`` when given;
    ``httpRequest`` from an access record's fields (those are moved, not repeated); an
    exception's traceback as ``stack_trace``, which Error Reporting reads, with
    ``serviceContext`` when a service is configured. Every other field is kept as it is.

    Args:
        project: the Google Cloud project id the trace resource names use.
        service_name: ``serviceContext.service`` (Error Reporting groups by it).
        service_version: ``serviceContext.version``.
        labels: constant ``logging.googleapis.com/labels`` (str to str).

    Raises:
        TypeError: a setting is not a non-empty str (or ``None``), or a label is not str
            to str.
        ValueError: *project* contains a ``/``.
    """

    def __init__(
        self,
        *,
        project: str | None = None,
        service_name: str | None = None,
        service_version: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self.project = _text_or_none("project", project)
        if self.project is not None and "/" in self.project:
            raise ValueError(f"project must be a project id without '/', got {project!r}")
        self._traces = f"projects/{self.project}/traces/" if self.project else None
        service_name = _text_or_none("service_name", service_name)
        service_version = _text_or_none("service_version", service_version)
        if service_version is not None and service_name is None:
            raise ValueError("service_version needs service_name")
        self._service_context: dict[str, str] | None = None
        if service_name is not None:
            self._service_context = {"service": service_name}
            if service_version is not None:
                self._service_context["version"] = service_version
        if labels is not None:
            if not isinstance(labels, Mapping) or not all(
                isinstance(key, str) and isinstance(value, str) for key, value in labels.items()
            ):
                raise TypeError(f"labels must map str to str, got {labels!r}")
            labels = dict(labels) or None
        self._labels = labels

    def __call__(self, record: Record) -> bytes:
        event = event_dict(record)
        document: dict[str, Any] = {
            "severity": _severity(record.level),
            "message": event.pop("message"),
            "time": event.pop("timestamp"),
            "logger": event.pop("logger"),
        }
        del event["level"]
        origin = _origin(event)
        if origin is not None:
            path, function, line = origin
            location: dict[str, Any] = {} if path is None else {"file": path}
            location["line"] = line
            if function is not None:
                location["function"] = function
            document[_GCP + "sourceLocation"] = location
        if self._traces is not None:
            trace_id = _hex_id(event.get("trace_id"), 32)
            if trace_id is not None:
                del event["trace_id"]
                document[_GCP + "trace"] = self._traces + trace_id
                span_id = _hex_id(event.get("span_id"), 16)
                if span_id is not None:
                    del event["span_id"]
                    document[_GCP + "spanId"] = span_id
                flags = event.get("trace_flags")
                if type(flags) is int:
                    del event["trace_flags"]
                    document[_GCP + "trace_sampled"] = bool(flags & 1)
        if self._labels is not None:
            document[_GCP + "labels"] = self._labels
        request = _http_request(event)
        if request is not None:
            document["httpRequest"] = request
        exception = _exception(event)
        if exception is not None:
            document["stack_trace"] = exception.get("traceback")
            if self._service_context is not None:
                document["serviceContext"] = self._service_context
        for key, value in event.items():
            if key in _GCP_SPECIAL or key.startswith(_GCP):
                key = "field." + key
            document[_free_key(document, key)] = value
        return _dumps(document, record)

    def __repr__(self) -> str:
        return f"<GcpFormatter project={self.project!r}>"


# -- Datadog -----------------------------------------------------------------------------

#: Datadog's reserved attributes, and the trace correlation objects this formatter writes:
#: a field of one of these names is written as field.<name>, so it cannot set them.
_DATADOG_RESERVED = frozenset(
    {"status", "service", "host", "source", "trace_id", "span_id", "dd", "otel"}
)


def _datadog_status(level: int) -> str:
    """Datadog's status for a level: the severity's name, lowercase; ``debug`` for 0."""
    severity = _severity(level)
    return "debug" if severity == "DEFAULT" else severity.lower()


class DatadogFormatter:
    """JSON lines with Datadog's reserved and standard attributes, for its Agent.

    ``timestamp``, ``status`` (``debug`` .. ``emergency``, see :func:`gcp_severity`),
    ``message``, ``logger.name`` / ``logger.thread_name`` / ``logger.method_name``;
    ``dd.trace_id`` and ``dd.span_id`` as Datadog correlates OpenTelemetry ids (decimal
    strings, the trace id's lower 64 bits: :func:`datadog_trace_id`), with the
    OpenTelemetry ids kept as ``otel.trace_id`` / ``otel.span_id`` / ``otel.trace_flags``;
    ``dd.service`` / ``dd.env`` / ``dd.version`` and ``service`` when configured;
    ``error.kind`` / ``error.message`` / ``error.stack`` (what Error Tracking reads).
    Attribute paths are written as nested objects, which Datadog reads as the same
    dotted attributes. Every other field is kept (``thread`` too); one named like a
    reserved attribute (``status``, ``service``, ``host``, ``source``, ``trace_id``,
    ``span_id``) or ``dd`` or ``otel`` is written as ``field.<name>``, so a field cannot
    set an entry's status or trace; and Kakashi's ``source`` (the call site) would
    otherwise read as the integration's name.

    Args:
        service: ``service`` and ``dd.service``.
        env: ``dd.env``.
        version: ``dd.version``.

    Raises:
        TypeError: a setting is not a non-empty str (or ``None``).
    """

    def __init__(
        self, *, service: str | None = None, env: str | None = None, version: str | None = None
    ) -> None:
        self.service = _text_or_none("service", service)
        tags = {"service": self.service, "env": _text_or_none("env", env)}
        tags["version"] = _text_or_none("version", version)
        self._tags = {key: value for key, value in tags.items() if value is not None}

    def __call__(self, record: Record) -> bytes:
        event = event_dict(record)
        document: dict[str, Any] = {
            "timestamp": event.pop("timestamp"),
            "status": _datadog_status(record.level),
            "message": event.pop("message"),
        }
        del event["level"]
        logger: dict[str, Any] = {"name": event.pop("logger")}
        thread = event.get("thread")
        name = thread.get("name") if type(thread) is dict else record.thread_name
        if type(name) is str:
            logger["thread_name"] = name
        source = event.get("source")
        if type(source) is dict and type(source.get("function")) is str:
            logger["method_name"] = source["function"]
        document["logger"] = logger
        dd: dict[str, Any] = {}
        trace_id = _hex_id(event.get("trace_id"), 32)
        if trace_id is not None:
            otel: dict[str, Any] = {"trace_id": event.pop("trace_id")}
            dd["trace_id"] = str(int(trace_id, 16) & _LOW_64_BITS)
            span_id = _hex_id(event.get("span_id"), 16)
            if span_id is not None:
                otel["span_id"] = event.pop("span_id")
                dd["span_id"] = str(int(span_id, 16))
            if type(event.get("trace_flags")) is int:
                otel["trace_flags"] = event.pop("trace_flags")
            document["otel"] = otel
        dd.update(self._tags)
        if dd:
            document["dd"] = dd
        if self.service is not None:
            document["service"] = self.service
        exception = _exception(event)
        if exception is not None:
            document["error"] = {
                "kind": exception.get("type"),
                "message": exception.get("message"),
                "stack": exception.get("traceback"),
            }
        _keep(document, event, _DATADOG_RESERVED)
        return _dumps(document, record)

    def __repr__(self) -> str:
        return f"<DatadogFormatter tags={self._tags!r}>"


# -- logfmt for Loki ---------------------------------------------------------------------

_LOKI_DEPTH = 4  # nested objects deeper than this are written as their JSON text


def _flatten(prefix: str, value: Any, depth: int, out: list[tuple[str, Any]]) -> None:
    """Append ``(key, value)`` pairs, objects flattened with ``_`` as Loki's json parser
    names nested keys."""
    if type(value) is Snapshot and value.json[:1] == b"{" and depth < _LOKI_DEPTH:
        value = orjson.loads(value.json)
    if type(value) is dict and value and depth < _LOKI_DEPTH:
        for key, sub in value.items():
            _flatten(f"{prefix}_{key}", sub, depth + 1, out)
    else:
        out.append((prefix, value))


class LokiFormatter:
    """logfmt lines for Grafana Loki: ``ts=... level=info logger=... msg=... key=value``.

    ``level`` is lowercase (what Grafana's level detection reads), ``ts`` RFC 3339 UTC,
    ``msg`` the message. Nested objects (``thread``, ``exception``, a dict field) are
    flattened with ``_`` (``thread_id=``, ``exception_type=``), the names Loki's ``json``
    parser gives nested keys and the only separator its ``logfmt`` parser keeps in label
    names (it turns a ``.`` into ``_`` anyway); lists, and objects nested more than four
    deep, are written as quoted JSON. A key that repeats an earlier one is written as
    ``field_<key>``. Keys and values are escaped as :class:`~kakashi.formatters.LogfmtFormatter`
    escapes them: a traceback is one quoted value with ``\\n`` escapes, and no value can
    break the line or forge a pair.
    """

    def __call__(self, record: Record) -> str:
        event = event_dict(record)
        parts = [
            f"ts={event.pop('timestamp')}",
            f"level={event.pop('level').lower()}",
            f"logger={_logfmt_value(event.pop('logger'))}",
            f"msg={_logfmt_value(event.pop('message'))}",
        ]
        seen = {"ts", "level", "logger", "msg"}
        pairs: list[tuple[str, Any]] = []
        for key, value in event.items():
            _flatten(key, value, 0, pairs)
        for key, value in pairs:
            while key in seen:
                key = "field_" + key
            seen.add(key)
            parts.append(f"{_logfmt_key(key)}={_logfmt_value(value)}")
        return " ".join(parts)

    def __repr__(self) -> str:
        return "<LokiFormatter>"


#: A :class:`LokiFormatter`.
loki_formatter = LokiFormatter()
