"""kakashi.schemas: ECS (against ecs-logging), Google Cloud Logging, Datadog, logfmt for Loki."""

from __future__ import annotations

import datetime
import json
import logging
import os
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kakashi
from kakashi._speedups import Bound
from kakashi.integrations.logging import to_record
from kakashi.schemas import (
    ECS_VERSION,
    DatadogFormatter,
    EcsFormatter,
    GcpFormatter,
    LokiFormatter,
    datadog_trace_id,
    gcp_severity,
    loki_formatter,
)
from tests.test_formatters import parse_logfmt

TIME_NS = 1_795_798_641_123_456_789  # 2026-11-27T16:57:21.123456789Z
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
ACCESS = {
    "request_id": "r-1",
    "method": "GET",
    "path": "/items/7",
    "route": "/items/{id}",
    "query": "q=shoes&token=***",
    "status": 200,
    "duration_ms": 123.0,
    "response_size": 5120,
    "client_ip": "10.0.0.9",
    "client_port": 51234,
    "user_agent": "curl/8.5",
    "http_version": "1.1",
    "scheme": "https",
}


def record(msg: object = "hello", level: int = 20, **attributes: Any) -> kakashi.Record:
    return kakashi.Record(TIME_NS, level, "app.payments", msg, **attributes)


def exc_info() -> Any:
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
        return sys.exc_info()


def doc(line: bytes | str) -> dict[str, Any]:
    assert "\n" not in (line.decode() if isinstance(line, bytes) else line)
    parsed: dict[str, Any] = json.loads(line)
    return parsed


def flatten(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A document's leaves by dotted path (``{"log": {"logger": x}}`` -> ``log.logger``)."""
    out: dict[str, Any] = {}
    for key, sub in value.items():
        path = f"{prefix}{key}"
        if isinstance(sub, dict) and sub:
            out.update(flatten(sub, path + "."))
        else:
            out[path] = sub
    return out


# -- ECS --------------------------------------------------------------------------------


class TestEcs:
    def test_required_fields(self) -> None:
        """The fields ecs-logging's spec requires, first three in order, and the others."""
        rec = record(
            "card declined",
            level=40,
            source=("json", "dumps", 42),
            thread_name="worker-1",
            thread_id=7,
            extra={"process": {"id": 4242}},
        )
        document = doc(EcsFormatter()(rec))

        assert ["@timestamp", "log.level", "message"] == list(document)[:3]
        assert {
            "@timestamp": "2026-11-27T16:57:21.123456Z",
            "log.level": "error",
            "message": "card declined",
            "ecs.version": ECS_VERSION,
            "log.logger": "app.payments",
            "log.origin.file.name": os.path.basename(json.__file__),
            "log.origin.file.line": 42,
            "log.origin.function": "dumps",
            "process.pid": 4242,
            "process.thread.id": 7,
            "process.thread.name": "worker-1",
        } == flatten(document)

    def test_same_document_as_ecs_logging(self) -> None:
        """One stdlib LogRecord through ecs_logging.StdlibFormatter and through the bridge
        and EcsFormatter: every key is the same except the documented differences."""
        ecs_logging = pytest.importorskip("ecs_logging")
        log_record = logging.LogRecord(
            "app.payments",
            logging.ERROR,
            "/srv/app/payments.py",
            42,
            "card %s declined",
            ("visa",),
            exc_info(),
            func="charge",
        )
        log_record.order_id = 7
        log_record.http = {"request": {"method": "GET"}}
        log_record.__dict__["url.path"] = "/pay"  # a dotted extra= key, nested by both

        theirs = flatten(json.loads(ecs_logging.StdlibFormatter().format(log_record)))
        ours = flatten(doc(EcsFormatter()(to_record(log_record))))

        # Only ecs-logging: log.original repeats message (deprecated in later ECS) and
        # process.name, which Kakashi records do not carry.
        assert {"log.original", "process.name"} == theirs.keys() - ours.keys()
        # Only Kakashi: the bridge's own fields (the %-template and its arguments, and
        # where the record came from), kept as the JSON formatter keeps them.
        assert {"msg_template", "msg_args", "kakashi_origin"} == ours.keys() - theirs.keys()
        differing = {key for key in ours.keys() & theirs.keys() if ours[key] != theirs[key]}
        # @timestamp: microseconds against milliseconds (same instant, see below);
        # error.stack_trace: Kakashi writes the whole traceback (header, chained causes,
        # the exception line), ecs-logging only the frames.
        assert {"@timestamp", "error.stack_trace"} == differing
        assert theirs["@timestamp"][:23] == ours["@timestamp"][:23]
        assert ours["error.stack_trace"].startswith("Traceback (most recent call last):")
        assert theirs["error.stack_trace"].strip() in ours["error.stack_trace"]
        assert ours["error.stack_trace"].endswith("ZeroDivisionError: division by zero")
        assert "GET" == ours["http.request.method"] == theirs["http.request.method"]
        assert "/pay" == ours["url.path"]

    def test_qualified_error_type(self) -> None:
        """error.type names the exception's module (ecs-logging writes the bare class
        name): two ConnectionErrors from different libraries stay apart."""

        class LocalError(Exception):
            pass

        try:
            raise LocalError("no")
        except LocalError:
            info = sys.exc_info()
        document = doc(EcsFormatter()(record(exc_info=info)))

        assert document["error"]["type"].endswith("LocalError")
        assert document["error"]["type"].startswith(__name__)

    def test_stack_info_without_exception(self) -> None:
        """A stack (stack_info=True) goes to error.stack_trace, as ecs-logging does."""
        document = doc(EcsFormatter()(record(stack_info="Stack (most recent call last):\n x")))

        assert {"stack_trace": "Stack (most recent call last):\n x"} == document["error"]

    def test_trace_and_service(self) -> None:
        """trace_id and span_id become trace.id and span.id; service.* when configured;
        trace_flags (no ECS field) is kept."""
        formatter = EcsFormatter(
            service_name="payments", service_version="1.4.2", service_environment="prod"
        )
        fields = {"trace_id": TRACE_ID, "span_id": SPAN_ID, "trace_flags": 1}
        document = flatten(doc(formatter(record(fields=fields))))

        assert TRACE_ID == document["trace.id"]
        assert SPAN_ID == document["span.id"]
        assert 1 == document["trace_flags"]
        assert ("payments", "1.4.2", "prod") == (
            document["service.name"],
            document["service.version"],
            document["service.environment"],
        )

    def test_dotted_fields_nest_and_conflicts_are_renamed(self) -> None:
        """A dotted field nests as Elasticsearch reads it and joins an ECS object; one
        whose path is taken is written as field.<key>, never replacing an ECS value."""
        fields = {
            "http.request.method": "POST",
            "error.code": "E42",
            "log.level": "forged",
            "error.type": "forged",
            "user": {"id": 1},
            "user.name": "ann",  # "user" is the record's own value: not merged into
        }
        document = doc(EcsFormatter()(record(level=30, exc_info=exc_info(), fields=fields)))

        assert "warning" == document["log.level"]
        assert "POST" == document["http"]["request"]["method"]
        assert "E42" == document["error"]["code"]
        assert "ZeroDivisionError" == document["error"]["type"]
        assert "forged" == document["field.log.level"] == document["field.error.type"]
        assert {"id": 1} == document["user"]
        assert "ann" == document["field.user.name"]

    def test_namespace(self) -> None:
        """With namespace=, every non-ECS field goes under that one object."""
        fields = {"order_id": 7, "log.level": "x", "trace_flags": 1}
        document = doc(EcsFormatter(namespace="app")(record(fields=fields)))

        assert {"order_id": 7, "log": {"level": "x"}, "trace_flags": 1} == document["app"]
        assert "info" == document["log.level"]

    def test_through_a_pipeline(self) -> None:
        """A Kakashi logger with the call-site and thread enrichers gives a full document."""
        lines: list[Any] = []
        pipeline = kakashi.Pipeline(
            min_level="DEBUG",
            formatter=EcsFormatter(service_name="svc"),
            enrichers=(kakashi.callsite_enricher, kakashi.thread_enricher),
            writers=(kakashi.callable_writer(lines.append),),
        )
        pipeline.get_logger("orders").warning("slow", ms=250)
        pipeline.flush()
        document = flatten(doc(lines[0]))

        assert "test_through_a_pipeline" == document["log.origin.function"]
        assert "test_schemas.py" == document["log.origin.file.name"]
        assert os.getpid() == document["process.pid"]
        assert "MainThread" == document["process.thread.name"]
        assert ("orders", "warning", 250) == (
            document["log.logger"],
            document["log.level"],
            document["ms"],
        )

    @pytest.mark.parametrize(
        ("options", "error"),
        [
            ({"service_name": ""}, TypeError),
            ({"service_version": 3}, TypeError),
            ({"namespace": "a.b"}, ValueError),
            ({"namespace": "log"}, ValueError),
        ],
    )
    def test_bad_configuration(self, options: dict[str, Any], error: type[Exception]) -> None:
        """Bad settings raise at construction, naming the parameter."""
        with pytest.raises(error, match=next(iter(options))):
            EcsFormatter(**options)


# -- Google Cloud Logging ----------------------------------------------------------------


class TestGcp:
    @pytest.mark.parametrize(
        ("level", "severity"),
        [
            (0, "DEFAULT"),
            (5, "DEBUG"),
            (10, "DEBUG"),
            (20, "INFO"),
            (25, "NOTICE"),
            (30, "WARNING"),
            (40, "ERROR"),
            (50, "CRITICAL"),
            (60, "ALERT"),
            (70, "EMERGENCY"),
            (100, "EMERGENCY"),
        ],
    )
    def test_severity(self, level: int, severity: str) -> None:
        """Levels map to Cloud Logging's LogSeverity names."""
        assert severity == gcp_severity(level)
        assert severity == doc(GcpFormatter()(record(level=level)))["severity"]

    def test_required_fields_and_trace(self) -> None:
        """severity, message, time, sourceLocation and the trace fields with a project."""
        fields = {"trace_id": TRACE_ID, "span_id": SPAN_ID, "trace_flags": 1, "order": 7}
        rec = record("paid", source=("json", "dumps", 42), fields=fields)
        document = doc(GcpFormatter(project="shop-prod", labels={"team": "pay"})(rec))

        assert {
            "severity": "INFO",
            "message": "paid",
            "time": "2026-11-27T16:57:21.123456Z",
            "logger": "app.payments",
            "logging.googleapis.com/sourceLocation": {
                "file": json.__file__,
                "line": 42,
                "function": "dumps",
            },
            "logging.googleapis.com/trace": f"projects/shop-prod/traces/{TRACE_ID}",
            "logging.googleapis.com/spanId": SPAN_ID,
            "logging.googleapis.com/trace_sampled": True,
            "logging.googleapis.com/labels": {"team": "pay"},
            "order": 7,
        } == document
        assert datetime.datetime.fromisoformat(document["time"].replace("Z", "+00:00"))

    def test_trace_without_project_stays_plain(self) -> None:
        """Without a project no trace resource name can be made: the ids stay fields."""
        fields = {"trace_id": TRACE_ID, "span_id": SPAN_ID, "trace_flags": 0}
        document = doc(GcpFormatter()(record(fields=fields)))

        assert not [key for key in document if key.startswith("logging.googleapis.com/")]
        assert (TRACE_ID, SPAN_ID, 0) == (
            document["trace_id"],
            document["span_id"],
            document["trace_flags"],
        )

    def test_http_request_from_the_access_record(self) -> None:
        """An access record's fields fill httpRequest; the others stay fields."""
        document = doc(GcpFormatter()(record("request", fields=dict(ACCESS))))

        assert {
            "requestMethod": "GET",
            "requestUrl": "/items/7?q=shoes&token=***",
            "status": 200,
            "responseSize": "5120",
            "userAgent": "curl/8.5",
            "remoteIp": "10.0.0.9",
            "latency": "0.123s",
            "protocol": "HTTP/1.1",
        } == document["httpRequest"]
        kept = {"request_id": "r-1", "route": "/items/{id}", "client_port": 51234}
        assert kept | {"scheme": "https"} == {
            key: document[key] for key in ("request_id", "route", "client_port", "scheme")
        }

    @pytest.mark.parametrize(
        ("duration_ms", "latency"),
        [(0, "0s"), (0.5, "0.0005s"), (1500.25, "1.50025s"), (61_000, "61s")],
    )
    def test_latency(self, duration_ms: float, latency: str) -> None:
        """latency is a protobuf Duration: seconds, no trailing zeros."""
        fields = {"method": "GET", "path": "/", "duration_ms": duration_ms}
        assert latency == doc(GcpFormatter()(record(fields=fields)))["httpRequest"]["latency"]

    def test_not_an_access_record(self) -> None:
        """A record with a status but no method and path has no httpRequest."""
        document = doc(GcpFormatter()(record(fields={"status": "ok", "duration_ms": 3.0})))

        assert "httpRequest" not in document
        assert ("ok", 3.0) == (document["status"], document["duration_ms"])

    def test_exception_for_error_reporting(self) -> None:
        """The traceback goes to stack_trace in Python's format, with serviceContext."""
        formatter = GcpFormatter(service_name="payments", service_version="1.4.2")
        document = doc(formatter(record("failed", level=40, exc_info=exc_info())))

        trace = document["stack_trace"]
        assert trace.startswith("Traceback (most recent call last):\n  File ")
        assert trace.endswith("\nZeroDivisionError: division by zero")
        assert {"service": "payments", "version": "1.4.2"} == document["serviceContext"]
        assert "exception" not in document

    def test_fields_cannot_set_special_fields(self) -> None:
        """A field named like a special field is renamed: it cannot set the severity, the
        trace or the labels of the entry."""
        fields = {
            "severity": "EMERGENCY",
            "httpRequest": {"status": 500},
            "logging.googleapis.com/trace": "projects/evil/traces/1",
            "logging.googleapis.com/labels": {"a": "b"},
        }
        document = doc(GcpFormatter()(record(fields=fields)))

        assert "INFO" == document["severity"]
        assert {"severity", "message", "time", "logger"} | {
            f"field.{key}" for key in fields
        } == set(document)

    @pytest.mark.parametrize(
        ("options", "error", "match"),
        [
            ({"project": "a/b"}, ValueError, "project"),
            ({"project": ""}, TypeError, "project"),
            ({"labels": {"a": 1}}, TypeError, "labels"),
            ({"labels": ["a"]}, TypeError, "labels"),
            ({"service_version": "1"}, ValueError, "service_name"),
        ],
    )
    def test_bad_configuration(
        self, options: dict[str, Any], error: type[Exception], match: str
    ) -> None:
        """Bad settings raise at construction, naming the parameter."""
        with pytest.raises(error, match=match):
            GcpFormatter(**options)


# -- Datadog -----------------------------------------------------------------------------


class TestDatadog:
    def test_trace_ids(self) -> None:
        """dd.trace_id is the decimal of the trace id's lower 64 bits, dd.span_id the
        decimal span id; the OpenTelemetry ids are kept under otel."""
        fields = {"trace_id": TRACE_ID, "span_id": SPAN_ID, "trace_flags": 1}
        document = doc(DatadogFormatter()(record(fields=fields)))

        assert {
            "trace_id": str(int(TRACE_ID[16:], 16)),
            "span_id": str(int(SPAN_ID, 16)),
        } == document["dd"]
        assert "11803532876627986230" == document["dd"]["trace_id"] == datadog_trace_id(TRACE_ID)
        assert {"trace_id": TRACE_ID, "span_id": SPAN_ID, "trace_flags": 1} == document["otel"]

    def test_attributes(self) -> None:
        """status, logger.*, dd.service/env/version, service and error.* attributes."""
        rec = record(
            "failed",
            level=50,
            exc_info=exc_info(),
            source=("app.pay", "charge", 9),
            extra={"thread": {"id": 3, "name": "worker-1"}},
        )
        formatter = DatadogFormatter(service="payments", env="prod", version="1.4.2")
        document = doc(formatter(rec))

        assert ("critical", "failed", "2026-11-27T16:57:21.123456Z") == (
            document["status"],
            document["message"],
            document["timestamp"],
        )
        assert {"name": "app.payments", "thread_name": "worker-1", "method_name": "charge"} == (
            document["logger"]
        )
        assert {"service": "payments", "env": "prod", "version": "1.4.2"} == document["dd"]
        assert "payments" == document["service"]
        assert ["kind", "message", "stack"] == list(document["error"])
        assert "ZeroDivisionError" == document["error"]["kind"]
        assert document["error"]["stack"].endswith("ZeroDivisionError: division by zero")
        # the call site would read as Datadog's reserved "source" (the integration)
        assert {"module": "app.pay", "function": "charge", "line": 9} == document["field.source"]

    @pytest.mark.parametrize(("level", "status"), [(0, "debug"), (10, "debug"), (30, "warning")])
    def test_status(self, level: int, status: str) -> None:
        """status names are ones Datadog's status remapper knows."""
        assert status == doc(DatadogFormatter()(record(level=level)))["status"]

    def test_reserved_and_invalid_ids(self) -> None:
        """A field named like a reserved attribute is renamed; an id that is not an
        OpenTelemetry id is not converted."""
        fields = {"trace_id": "not-hex", "status": "ok", "service": "other", "host": "h"}
        fields["dd"] = {"trace_id": "1"}
        document = doc(DatadogFormatter()(record(fields=fields)))

        assert "dd" not in document
        assert "info" == document["status"]
        assert ["not-hex", "ok", "other", "h", {"trace_id": "1"}] == [
            document[f"field.{key}"] for key in ("trace_id", "status", "service", "host", "dd")
        ]

    def test_bad_trace_id(self) -> None:
        """datadog_trace_id takes only hex ids."""
        with pytest.raises(ValueError, match="trace_id"):
            datadog_trace_id("0x" + TRACE_ID[2:])

    def test_bad_configuration(self) -> None:
        """A setting that is not a non-empty str raises, naming the parameter."""
        with pytest.raises(TypeError, match="env"):
            DatadogFormatter(env="")


# -- Loki --------------------------------------------------------------------------------


class TestLoki:
    def test_keys(self) -> None:
        """ts, lowercase level, logger, msg; nested objects flattened with _."""
        rec = record(
            "paid",
            level=30,
            exc_info=exc_info(),
            extra={"thread": {"id": 3, "name": "w 1"}},
            fields={"order": {"id": 7, "items": [1, 2], "buyer": {"country": "NL"}}},
        )
        line = loki_formatter(rec)
        parsed = parse_logfmt(line)

        assert line.startswith("ts=2026-11-27T16:57:21.123456Z level=warning logger=app.payments")
        assert {
            "ts": "2026-11-27T16:57:21.123456Z",
            "level": "warning",
            "logger": "app.payments",
            "msg": "paid",
            "thread_id": "3",
            "thread_name": "w 1",
            "order_id": "7",
            "order_items": "[1,2]",
            "order_buyer_country": "NL",
            "exception_type": "ZeroDivisionError",
            "exception_message": "division by zero",
        } == {key: value for key, value in parsed.items() if key != "exception_traceback"}
        assert parsed["exception_traceback"].endswith("\nZeroDivisionError: division by zero")

    def test_hostile_values_stay_on_one_line(self) -> None:
        """Control characters, quotes, = and bidi controls are escaped: one line, the
        same pairs back, no forged key."""
        hostile = 'a\nts=forged level=error\r"\x1b[31m\u202e= b\\'
        rec = record(hostile, fields={"note": hostile, "k ey=x": 1, "msg": "dup"})
        line = LokiFormatter()(rec)
        parsed = parse_logfmt(line)

        assert line.isprintable()
        assert hostile == parsed["msg"] == parsed["note"]
        assert "info" == parsed["level"]
        assert "dup" == parsed["field_msg"]
        assert "1" == parsed["k\\x20ey\\x3dx"]  # the key's space and = escaped

    def test_deep_objects_are_json(self) -> None:
        """Objects nested more than four deep are written as their JSON text."""
        deep = {"a": {"b": {"c": {"d": {"e": 1}}}}}
        parsed = parse_logfmt(loki_formatter(record(fields={"deep": deep})))

        assert '{"e":1}' == parsed["deep_a_b_c_d"]


# -- every schema ------------------------------------------------------------------------

JSON_FORMATTERS = [
    EcsFormatter(),
    EcsFormatter(namespace="app"),
    GcpFormatter(project="p"),
    DatadogFormatter(service="s"),
]


class Unrepresentable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


@pytest.mark.parametrize("formatter", JSON_FORMATTERS, ids=repr)
def test_unserialisable_values(formatter: Any) -> None:
    """Values orjson cannot take are written as the JSON formatter writes them; a lone
    surrogate and an int beyond 64 bits still give one valid line."""
    fields = {"obj": Unrepresentable(), "big": 2**70, "text": "a\ud800b\n", "when": {1, 2}}
    document = flatten(doc(formatter(record(fields=fields))))
    prefix = "app." if "app.big" in document else ""

    assert str(2**70) == document[prefix + "big"]
    assert "a\ufffdb\n" == document[prefix + "text"]
    assert document[prefix + "obj"].startswith("!repr:")
    assert [1, 2] == document[prefix + "when"]


@pytest.mark.parametrize("formatter", [*JSON_FORMATTERS, loki_formatter], ids=repr)
def test_every_record_shape(formatter: Any) -> None:
    """Bound fields, context keys, snapshots and odd values never make a formatter fail."""
    bound = Bound({"request_id": "r1"})
    rec = record(
        "x",
        bound=bound,
        fields={"trace_id": 5, "span_id": None, "thread": "t", "source": [1], "": 0},
        extra={"user": {"id": 1}, "process": "p", "thread": 3},
    )
    line = formatter(rec)
    text = line.decode() if isinstance(line, bytes) else line

    assert "\n" not in text
    assert "r1" in text
    if isinstance(line, bytes):
        assert "x" == doc(line)["message"]


def test_import_kakashi_loads_no_schema_library() -> None:
    """import kakashi imports neither kakashi.schemas nor ecs_logging."""
    names = "{'kakashi.schemas', 'ecs_logging'}"
    code = f"import sys, kakashi; print(sorted({names} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "[]" == result.stdout.strip()


text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
field_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), text),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(text, children, max_size=3)
    ),
    max_leaves=8,
)
field_keys = st.one_of(
    text.filter(lambda key: key not in {"exc_info", "stack_info", "stacklevel"}),
    st.sampled_from(["log.level", "severity", "status", "msg", "ts", "dd", "error.type"]),
    st.sampled_from(["logging.googleapis.com/trace", "http.request.method", "ecs", "log"]),
)


@settings(max_examples=150, deadline=None)
@given(msg=text, fields=st.dictionaries(field_keys, field_values, max_size=6))
def test_fields_never_break_a_schema(msg: str, fields: dict[str, Any]) -> None:
    """Whatever the fields are called and hold, each schema writes one line whose own
    fields hold the record's values (no field overwrites them), and the logfmt line
    re-parses to the message."""
    lines: list[Any] = []
    formatters = [EcsFormatter(), GcpFormatter(project="p"), DatadogFormatter(), loki_formatter]
    for formatter in formatters:
        pipeline = kakashi.Pipeline(
            min_level="DEBUG", formatter=formatter, writers=(kakashi.callable_writer(lines.append),)
        )
        pipeline.get_logger("prop").info(msg, **fields)
    ecs, gcp, datadog, loki = (line.decode() if isinstance(line, bytes) else line for line in lines)

    assert not any("\n" in line for line in (ecs, gcp, datadog, loki))
    ecs_document, gcp_document, dd_document = json.loads(ecs), json.loads(gcp), json.loads(datadog)
    assert (msg, "info", ECS_VERSION, "prop") == (
        ecs_document["message"],
        ecs_document["log.level"],
        ecs_document["ecs.version"],
        ecs_document["log"]["logger"],
    )
    assert (msg, "INFO", "prop") == (
        gcp_document["message"],
        gcp_document["severity"],
        gcp_document["logger"],
    )
    assert not [key for key in gcp_document if key.startswith("logging.googleapis.com/")]
    assert (msg, "info", "prop") == (
        dd_document["message"],
        dd_document["status"],
        dd_document["logger"]["name"],
    )
    assert "dd" not in dd_document  # no trace, no tags: a field cannot make one
    parsed = parse_logfmt(loki)
    assert (msg, "info", "prop") == (parsed["msg"], parsed["level"], parsed["logger"])
