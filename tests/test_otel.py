"""kakashi.integrations.otel: trace ids on records, and the OTLP/JSON log format.

The OTLP/JSON documents are compared with what OpenTelemetry's own SDK makes of the same
record: emitted through its ``Logger.emit``, encoded by its OTLP encoder
(``encode_logs``) and turned into JSON by protobuf's ``MessageToDict`` with the two
rules by which OTLP/JSON departs from protobuf's JSON mapping: trace and span ids in
hex (not base64), enums as ints.
"""

from __future__ import annotations

import base64
import contextvars
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import warnings
from typing import Any

import pytest

import kakashi
from kakashi import _errors, _trace
from kakashi._speedups import Record
from kakashi.core.pipeline import Pipeline, PipelineConfig
from kakashi.enrichers import callsite_enricher, context_enricher, thread_enricher
from kakashi.integrations.logging import KakashiHandler
from kakashi.testing import capture_logs
from kakashi.writers import callable_writer

trace = pytest.importorskip("opentelemetry.trace")
pytest.importorskip("opentelemetry.sdk")
pytest.importorskip("opentelemetry.exporter.otlp.proto.common")

from google.protobuf.json_format import MessageToDict, ParseDict  # noqa: E402
from opentelemetry._logs import SeverityNumber  # noqa: E402
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs  # noqa: E402
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (  # noqa: E402
    ExportLogsServiceRequest,
)
from opentelemetry.sdk._logs import LoggerProvider  # noqa: E402
from opentelemetry.sdk._logs._internal import std_to_otel as sdk_std_to_otel  # noqa: E402
from opentelemetry.sdk._logs.export import (  # noqa: E402
    InMemoryLogRecordExporter,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags  # noqa: E402

from kakashi.integrations.otel import (  # noqa: E402
    OTLPJsonFormatter,
    otel_enricher,
    otlp_any_value,
    severity_number,
    severity_text,
    trace_correlation,
    trace_enricher,
)

from .conftest import (  # noqa: E402
    OTLP_FIELD_VALUES,
    Implementation,
    Keeper,
    keeping_pipeline,
    without_observed_time,
)

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN_ID = 0x00F067AA0BA902B7
TRACE_HEX = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_HEX = "00f067aa0ba902b7"
TRACE_FIELDS = {"trace_id": TRACE_HEX, "span_id": SPAN_HEX, "trace_flags": 1}


def span(flags: int = 1, trace_id: int = TRACE_ID, span_id: int = SPAN_ID) -> NonRecordingSpan:
    """A span with known ids (the API alone makes it; no SDK involved)."""
    context = SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(flags))
    return NonRecordingSpan(context)


@pytest.fixture(autouse=True)
def _correlation_on() -> Any:
    """Every test starts and ends with automatic correlation on (the default)."""
    trace_correlation(True)
    yield
    trace_correlation(True)


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """Run *code* in a fresh interpreter with this checkout first on the path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (os.getcwd(), *sys.path)))}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


# -- no cost, no import ---------------------------------------------------------------


def test_importing_kakashi_and_the_integration_does_not_import_opentelemetry() -> None:
    """``import kakashi`` (and the otel integration itself, and the OTLP writer that
    shares its mapping) leaves OpenTelemetry unloaded, and a log call does not load it
    either."""
    result = run_python(
        """
        import sys
        import kakashi
        import kakashi.integrations.otel
        import kakashi.writers.stores
        kakashi.get_logger("x").info("hello")
        print(sorted(name for name in sys.modules if name.startswith("opentelemetry")))
        """
    )
    assert "[]" == result.stdout.strip(), result.stderr


def test_correlation_starts_when_the_application_imports_opentelemetry_later() -> None:
    """Logging before OpenTelemetry is imported, then importing it and starting a span:
    the record in the span carries its ids (on this build, whichever it is)."""
    result = run_python(
        """
        import json, kakashi
        from kakashi.testing import capture_logs
        log = kakashi.get_logger("x")
        with capture_logs() as logs:
            log.info("before")
            from opentelemetry import trace
            context = trace.SpanContext(0xAB, 0xCD, is_remote=False,
                                        trace_flags=trace.TraceFlags(1))
            with trace.use_span(trace.NonRecordingSpan(context)):
                log.info("inside")
            log.info("after")
        keys = ("message", "trace_id", "span_id", "trace_flags")
        print(json.dumps([{k: entry[k] for k in keys if k in entry} for entry in logs]))
        """
    )
    assert [
        {"message": "before"},
        {"message": "inside", "trace_id": f"{0xAB:032x}", "span_id": f"{0xCD:016x}",
         "trace_flags": 1},
        {"message": "after"},
    ] == json.loads(result.stdout), result.stderr  # fmt: skip


# -- trace correlation ----------------------------------------------------------------


def test_records_in_a_span_carry_its_ids_on_both_implementations(impl: Implementation) -> None:
    """The capture of each twin reads the active span: ids as lowercase hex, the flags
    as an int; outside any span, nothing is added."""
    kept: list[Any] = []

    class Sink:
        emit = kept.append

    log = impl.capture.Logger("t", impl.capture.Route(Sink(), 10))
    log.info("outside")
    with trace.use_span(span(flags=1)):
        log.info("sampled")
    with trace.use_span(span(flags=0, span_id=0xFF)):
        log.info("not sampled")
    assert [
        None,
        TRACE_FIELDS,
        {"trace_id": TRACE_HEX, "span_id": f"{0xFF:016x}", "trace_flags": 0},
    ] == [record.extra for record in kept]


def test_the_default_pipeline_writes_the_trace_fields() -> None:
    """Through the default pipeline (captured as the JSON formatter writes records), a
    record in a span has trace_id, span_id and trace_flags as top-level fields."""
    log = kakashi.get_logger("tests.otel")
    with capture_logs() as logs, trace.use_span(span()):
        log.info("in a span", order=7)
    assert [{"message": "in a span", **TRACE_FIELDS, "order": 7}] == [
        {k: v for k, v in entry.items() if k not in ("timestamp", "level", "levelno", "logger")}
        for entry in logs
    ]


def test_a_hand_built_pipeline_writes_the_trace_fields() -> None:
    """A synchronous Pipeline built by hand, with its own enrichers, writes them too."""
    lines: list[dict[str, Any]] = []
    pipeline = Pipeline(
        PipelineConfig(
            enrichers=(context_enricher,),
            writers=(callable_writer(lambda line: lines.append(json.loads(line))),),
        )
    )
    log = pipeline.get_logger("hand")
    with trace.use_span(span()):
        log.info("hello")
    log.info("no span")
    assert [TRACE_HEX, None] == [line.get("trace_id") for line in lines]
    assert [SPAN_HEX, None] == [line.get("span_id") for line in lines]


@pytest.mark.parametrize("enrichers", [(), (thread_enricher,)], ids=["plain-json", "enriched"])
def test_an_async_pipeline_writes_the_ids_of_the_callers_span(enrichers: Any) -> None:
    """The worker writes the record later, on its own thread; the ids are the span's
    that was active where the call was made, read at capture. Without enrichers the
    worker formats a whole batch in one compiled call; with one, record by record."""
    keeper = Keeper()
    pipeline = keeping_pipeline(keeper, enrichers=enrichers)
    log = pipeline.get_logger("async")
    try:
        with trace.use_span(span()):
            log.info("queued")
        with trace.use_span(span(span_id=0x1234)):
            log.warning("queued too")
        log.info("no span")
        assert pipeline.flush(10)
    finally:
        pipeline.shutdown(10)
    assert [
        (TRACE_HEX, SPAN_HEX, 1),
        (TRACE_HEX, f"{0x1234:016x}", 1),
        (None, None, None),
    ] == [(r.get("trace_id"), r.get("span_id"), r.get("trace_flags")) for r in keeper.lines]


def test_a_span_on_one_thread_is_not_seen_by_another() -> None:
    """Spans are per thread (per context): a thread logging while another is inside a
    span writes no ids."""
    log = kakashi.get_logger("threads")
    inside, done = threading.Event(), threading.Event()

    def in_span() -> None:
        with trace.use_span(span()):
            log.info("mine")
            inside.set()
            done.wait(10)

    with capture_logs() as logs:
        worker = threading.Thread(target=in_span)
        worker.start()
        assert inside.wait(10)
        log.info("other thread")
        done.set()
        worker.join(10)
    by_message = {entry["message"]: entry.get("trace_id") for entry in logs}
    assert {"mine": TRACE_HEX, "other thread": None} == by_message


def test_the_stdlib_bridge_writes_the_ids_of_the_span_the_stdlib_call_was_made_in() -> None:
    """A record logged with :mod:`logging` inside a span, through KakashiHandler."""
    stdlib = logging.getLogger("tests.otel.stdlib")
    stdlib.propagate = False
    stdlib.setLevel(logging.INFO)
    logs: list[dict[str, Any]] = []
    pipeline = Pipeline(writers=(callable_writer(lambda line: logs.append(json.loads(line))),))
    handler = KakashiHandler(pipeline=pipeline)
    stdlib.addHandler(handler)
    try:
        with trace.use_span(span()):
            stdlib.info("from stdlib %s", "inside")
        stdlib.info("outside")
    finally:
        stdlib.removeHandler(handler)
    assert [(TRACE_HEX, SPAN_HEX, 1), (None, None, None)] == [
        (e.get("trace_id"), e.get("span_id"), e.get("trace_flags")) for e in logs
    ]


def test_a_stdlib_record_made_on_another_thread_gets_no_ids_here() -> None:
    """A LogRecord handed over from another thread (as a QueueListener hands them) is
    not given the ids of a span that happens to be active where it is handled."""
    logs: list[dict[str, Any]] = []
    pipeline = Pipeline(writers=(callable_writer(lambda line: logs.append(json.loads(line))),))
    handler = KakashiHandler(pipeline=pipeline)
    made: list[logging.LogRecord] = []
    maker = threading.Thread(
        target=lambda: made.append(logging.makeLogRecord({"msg": "elsewhere", "levelno": 20}))
    )
    maker.start()
    maker.join(10)
    with trace.use_span(span()):
        handler.handle(made[0])
        handler.handle(logging.makeLogRecord({"msg": "here", "levelno": 20}))
    assert [("elsewhere", None), ("here", TRACE_HEX)] == [
        (e["message"], e.get("trace_id")) for e in logs
    ]


def test_an_invalid_span_adds_nothing_and_fields_of_the_call_win() -> None:
    """The API's invalid span (no tracer configured) adds no fields; a call's own
    ``trace_id`` field replaces the captured one, as call fields replace enricher keys."""
    log = kakashi.get_logger("precedence")
    with capture_logs() as logs:
        with trace.use_span(trace.INVALID_SPAN):
            log.info("invalid")
        with trace.use_span(span()):
            log.info("overridden", trace_id="mine")
    assert [(None, None), ("mine", SPAN_HEX)] == [
        (e.get("trace_id"), e.get("span_id")) for e in logs
    ]


def test_correlation_can_be_switched_off_and_on() -> None:
    """Off, loggers add no ids even in a span; on again, they do."""
    log = kakashi.get_logger("switch")
    with capture_logs() as logs, trace.use_span(span()):
        trace_correlation(False)
        log.info("off")
        trace_correlation(True)
        log.info("on")
    assert [None, TRACE_HEX] == [e.get("trace_id") for e in logs]
    with pytest.raises(TypeError, match="enabled must be a bool"):
        trace_correlation("yes")  # type: ignore[arg-type]


def test_a_broken_span_costs_its_ids_not_the_record() -> None:
    """A span whose context cannot be read: the record is written without ids, and the
    failure is reported once on stderr, never raised into the caller."""

    class Broken(NonRecordingSpan):
        def get_span_context(self) -> SpanContext:
            raise RuntimeError("no context for you")

    log = kakashi.get_logger("broken")
    with capture_logs() as logs, trace.use_span(Broken(trace.INVALID_SPAN_CONTEXT)):
        log.info("first")
        log.info("second")
    assert [("first", None), ("second", None)] == [(e["message"], e.get("trace_id")) for e in logs]
    assert 2 == _errors.error_counts()["opentelemetry trace context: RuntimeError"]


def test_trace_enricher_fills_records_made_by_hand() -> None:
    """``trace_enricher`` (alias ``otel_enricher``) adds the ids of the span active where
    it runs, here a synchronous pipeline given records built by hand; a record that
    already has ids keeps them."""
    lines: list[dict[str, Any]] = []
    pipeline = Pipeline(
        enrichers=(otel_enricher,),
        writers=(callable_writer(lambda line: lines.append(json.loads(line))),),
    )
    assert otel_enricher is trace_enricher
    trace_correlation(False)  # only the enricher adds ids now
    with trace.use_span(span()):
        pipeline.emit(Record(1_700_000_000_000_000_000, 20, "hand", "by hand"))
        pipeline.emit(
            Record(1_700_000_000_000_000_000, 20, "hand", "has ids", extra={"trace_id": "x"})
        )
        pipeline.get_logger("hand").info("through a logger")
    pipeline.emit(Record(1_700_000_000_000_000_000, 20, "hand", "no span"))
    assert [TRACE_HEX, "x", TRACE_HEX, None] == [line.get("trace_id") for line in lines]


def test_the_direct_span_lookup_agrees_with_the_public_api() -> None:
    """The reader takes the current span straight from OpenTelemetry's context variable
    (its default runtime context is in use here); it finds the span
    ``trace.get_current_span()`` finds, outside a span, in nested spans, after them, and
    in a copied context. Without the private names it relies on, the reader falls back
    to the public function and reads the same ids."""
    lookup = _trace._span_lookup(sys.modules)
    assert lookup is not None
    get_context, key = lookup

    def agree() -> None:
        public = trace.get_current_span()
        assert (None if public is trace.INVALID_SPAN else public) is get_context().get(key)

    agree()
    with trace.use_span(span()):
        agree()
        with trace.use_span(span(span_id=0x99)):
            agree()
        agree()
        contextvars.copy_context().run(agree)
    agree()
    public_only = {
        name: module for name, module in sys.modules.items() if name != "opentelemetry.context"
    }
    assert _trace._span_lookup(public_only) is None
    fallback, direct = _trace.reader(public_only), _trace.reader(sys.modules)
    assert fallback is not None and direct is not None
    with trace.use_span(span(flags=0)):
        assert {**TRACE_FIELDS, "trace_flags": 0} == fallback() == direct()
    assert None is fallback() is direct()


# -- severity -------------------------------------------------------------------------


def test_severity_numbers_are_the_sdks_for_every_level() -> None:
    """Every level 0..100 maps to the number OpenTelemetry's SDK gives the stdlib level."""
    assert [sdk_std_to_otel(level).value for level in range(101)] == [
        severity_number(level) for level in range(101)
    ]
    assert [5, 9, 13, 17, 21] == [severity_number(level) for level in (10, 20, 30, 40, 50)]
    assert ["DEBUG", "INFO", "WARN", "ERROR", "FATAL", "LEVEL25"] == [
        severity_text(level) for level in (10, 20, 30, 40, 50, 25)
    ]


# -- OTLP/JSON against the SDK --------------------------------------------------------


def otlp_json(request: ExportLogsServiceRequest) -> dict[str, Any]:
    """The OTLP/JSON form of an encoded request: protobuf's JSON mapping with enums as
    ints, then trace and span ids from base64 to lowercase hex, as OTLP/JSON writes them."""
    document = MessageToDict(request, use_integers_for_enums=True)
    for resource in document["resourceLogs"]:
        for scope in resource["scopeLogs"]:
            for record in scope["logRecords"]:
                for key in ("traceId", "spanId"):
                    if key in record:
                        record[key] = base64.b64decode(record[key]).hex()
    return document


def sdk_document(emits: list[tuple[str, dict[str, Any]]], resource: dict[str, Any]) -> Any:
    """What the OpenTelemetry SDK emits and encodes for ``(scope, emit kwargs)`` pairs."""
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=Resource(resource))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    for scope, kwargs in emits:
        provider.get_logger(scope).emit(**kwargs)
    provider.shutdown()
    return otlp_json(encode_logs(exporter.get_finished_logs()))


def sdk_emit(record: Any, attributes: dict[str, Any], **more: Any) -> dict[str, Any]:
    """The SDK ``Logger.emit`` arguments for a Kakashi *record*: same time, severity,
    body, and the attributes Kakashi documents for its fields."""
    return {
        "timestamp": record.time_ns,
        "observed_timestamp": record.time_ns,
        "severity_number": SeverityNumber(severity_number(record.level)),
        "severity_text": severity_text(record.level),
        "body": record.message,
        "attributes": attributes,
        **more,
    }


class RecordKeeper:
    """A writer that also keeps the formatted lines; records are kept by a sink."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def write(self, batch: Any) -> None:
        self.lines.extend(batch)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_record_matches_the_sdks_encoding_of_the_same_record() -> None:
    """One record with fields of every type, context, bound fields, thread, call site,
    an exception and a span, formatted by OTLPJsonFormatter, equals the document the SDK
    makes of the same record (only ``observedTimeUnixNano`` removed from both)."""
    kept: list[Any] = []
    writer = RecordKeeper()
    formatter = OTLPJsonFormatter(
        service_name="checkout", resource={"service.version": "1.2.3", "host.cores": 8}
    )
    pipeline = Pipeline(
        PipelineConfig(
            min_level="DEBUG",
            enrichers=(context_enricher, thread_enricher, callsite_enricher, kept_by(kept)),
            formatter=formatter,
            writers=(writer,),
        )
    )
    log = pipeline.get_logger("shop.orders").bind(tenant="acme")
    values = dict(OTLP_FIELD_VALUES)
    with kakashi.context_scope(request_id="r-9"), trace.use_span(span()):
        try:
            raise ValueError("card declined")
        except ValueError:
            log.exception("payment failed for %s", "order-1", **values)
    [record] = kept
    [line] = writer.lines
    attributes = {
        "request_id": "r-9",
        "thread.id": threading.get_ident(),
        "thread.name": threading.current_thread().name,
        "process.pid": os.getpid(),
        "tenant": "acme",
        **values,
        "code.function.name": f"{__name__}.{record.source[1]}",
        "code.line.number": record.source[2],
    }
    expected = sdk_document(
        [
            (
                "shop.orders",
                sdk_emit(
                    record,
                    attributes,
                    exception=record.exc_info[1],
                    context=trace.set_span_in_context(span()),
                ),
            )
        ],
        {"service.version": "1.2.3", "host.cores": 8, "service.name": "checkout"},
    )
    assert without_observed_time(expected) == without_observed_time(json.loads(line))


def kept_by(kept: list[Any]) -> Any:
    """An enricher that keeps each record it sees (to build the SDK's side from it)."""

    def keep(record: Any) -> Any:
        kept.append(record)
        return record

    return keep


def test_a_batch_matches_the_sdks_encoding_of_the_same_records() -> None:
    """Several records of two loggers, levels from DEBUG to CRITICAL and a custom one, in
    one document: one scopeLogs per logger in the order they first appear, records in
    order; equal to the SDK's encoding of the same records."""
    kept: list[Any] = []
    pipeline = Pipeline(min_level=0, enrichers=(kept_by(kept),), writers=(RecordKeeper(),))
    orders, payments = pipeline.get_logger("orders"), pipeline.get_logger("payments")
    orders.debug("d", step=1)
    payments.log(25, "custom level")
    with trace.use_span(span(flags=0)):
        orders.warning("w")
    payments.error("e", code=500)
    orders.critical("c")
    orders.log(5, "below debug")
    formatter = OTLPJsonFormatter()
    document = json.loads(formatter.format_batch(kept))
    assert (
        formatter.to_document(kept)["resourceLogs"][0]["resource"]
        == (document["resourceLogs"][0]["resource"])
    )

    def emit(record: Any) -> tuple[str, dict[str, Any]]:
        more = {}
        if record.extra and "trace_id" in record.extra:
            more["context"] = trace.set_span_in_context(span(flags=0))
        return record.logger, sdk_emit(record, dict(record.fields or {}), **more)

    expected = sdk_document([emit(r) for r in kept], {"service.name": "unknown_service"})
    assert without_observed_time(expected) == without_observed_time(document)
    assert ["orders", "payments"] == [
        s["scope"]["name"] for s in document["resourceLogs"][0]["scopeLogs"]
    ]


def test_documents_are_valid_export_requests() -> None:
    """Every line parses as an ``ExportLogsServiceRequest`` (no unknown or mistyped
    field), once its hex ids are given back the base64 that protobuf's parser expects."""
    writer = RecordKeeper()
    pipeline = Pipeline(
        enrichers=(thread_enricher, callsite_enricher),
        formatter=OTLPJsonFormatter(resource={"deployment.environment.name": "test"}),
        writers=(writer,),
    )
    log = pipeline.get_logger("valid")
    with trace.use_span(span()):
        log.info("x", big=2**70, nan=float("nan"), inf=float("-inf"), raw=b"\x00\xff",
                 when={1, 2}, stack_info=True)  # fmt: skip
    log.info("lone \udc80 surrogate", key="\ud800")
    for line in writer.lines:
        document = json.loads(line)
        for scope in document["resourceLogs"][0]["scopeLogs"]:
            for record in scope["logRecords"]:
                for key in ("traceId", "spanId"):
                    if key in record:
                        record[key] = base64.b64encode(bytes.fromhex(record[key])).decode()
        ParseDict(document, ExportLogsServiceRequest())
    first = json.loads(writer.lines[0])["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    attributes = {a["key"]: a["value"] for a in first["attributes"]}
    assert {"stringValue": str(2**70)} == attributes["big"]
    assert {"doubleValue": "NaN"} == attributes["nan"]
    assert {"doubleValue": "-Infinity"} == attributes["inf"]
    assert {"arrayValue": {"values": [{"intValue": "1"}, {"intValue": "2"}]}} == attributes["when"]
    assert attributes["code.stacktrace"]["stringValue"].startswith("Stack (most recent call last)")
    second = json.loads(writer.lines[1])["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    assert {"stringValue": "lone \ufffd surrogate"} == second["body"]


def test_any_value_of_bytes_and_objects() -> None:
    """Bytes are base64 (protobuf's JSON for bytes); an object is made JSON first, as
    every Kakashi formatter makes it (a repr marked ``!repr:``)."""

    class Thing:
        def __repr__(self) -> str:
            return "<thing>"

    assert {"bytesValue": "AP8="} == otlp_any_value(b"\x00\xff")
    assert {"stringValue": "!repr:<thing>"} == otlp_any_value(Thing())
    assert {} == otlp_any_value(None)


def test_a_stdlib_record_through_the_bridge_names_its_code_location() -> None:
    """A record from :mod:`logging` carries the file, function and line the call was
    made at as ``code.file.path``, ``code.function.name`` and ``code.line.number``."""
    writer = RecordKeeper()
    pipeline = Pipeline(formatter=OTLPJsonFormatter(), writers=(writer,))
    stdlib = logging.getLogger("tests.otel.bridge")
    stdlib.propagate = False
    stdlib.setLevel(logging.INFO)
    handler = KakashiHandler(pipeline=pipeline)
    stdlib.addHandler(handler)
    try:
        stdlib.warning("careful")
        line_number = sys._getframe().f_lineno - 1
    finally:
        stdlib.removeHandler(handler)
    [line] = writer.lines
    record = json.loads(line)["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    attributes = {a["key"]: a["value"] for a in record["attributes"]}
    assert {"stringValue": __file__} == attributes["code.file.path"]
    assert {"stringValue": f"{__name__.rsplit('.', 1)[-1]}.{sys._getframe().f_code.co_name}"} == (
        attributes["code.function.name"]
    )
    assert {"intValue": str(line_number)} == attributes["code.line.number"]
    assert (13, "WARN") == (record["severityNumber"], record["severityText"])


def test_bad_configuration_fails_when_the_formatter_is_made() -> None:
    """service_name and resource are checked at construction, naming what is wrong."""
    with pytest.raises(TypeError, match="service_name must be a non-empty str"):
        OTLPJsonFormatter(service_name="")
    with pytest.raises(TypeError, match="resource must be a mapping"):
        OTLPJsonFormatter(resource=[("a", 1)])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"resource\['when'\] must be a str, bool"):
        OTLPJsonFormatter(resource={"when": object()})
    with pytest.raises(TypeError, match="resource keys must be non-empty str"):
        OTLPJsonFormatter(resource={1: "x"})  # type: ignore[dict-item]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "<OTLPJsonFormatter service.name='svc'>" == repr(OTLPJsonFormatter("svc"))
