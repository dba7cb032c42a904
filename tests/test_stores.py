"""kakashi.writers.stores: Elasticsearch ``_bulk``, Loki push and OTLP/HTTP JSON against a
local HTTP server that parses every request body and answers as the store would."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest

import kakashi
from kakashi.formatters import epoch_ns
from kakashi.writers.delivery import DeliveryError

pytest.importorskip("urllib3")

from kakashi.writers.stores import (
    ElasticsearchWriter,
    LokiWriter,
    OtlpHttpWriter,
)
from tests.conftest import (
    OTLP_FIELD_VALUES,
    balanced,
    keeping_pipeline,
    wait_or_kill,
    without_observed_time,
)

#: A bulk answer with no item in error.
ES_OK = (200, {}, b'{"errors":false,"items":[]}')
# 2026-12-01T10:00:00Z, a record's time as the JSON formatter writes it.
BASE = 1_796_119_200


def _stamp(seconds: float) -> str:
    import datetime

    when = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _line(n: int, *, at: float | None = None, **fields: Any) -> bytes:
    """A JSON line as the default formatter renders one."""
    event = {
        "timestamp": _stamp(BASE + n if at is None else at),
        "level": fields.pop("level", "INFO"),
        "logger": fields.pop("logger", "app"),
        "message": f"m{n}",
        "n": n,
        **fields,
    }
    return json.dumps(event, separators=(",", ":")).encode()


def _body(headers: dict[str, str], body: bytes) -> bytes:
    return gzip.decompress(body) if headers.get("Content-Encoding") == "gzip" else body


def _pairs(body: bytes) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The (action, document) pairs of a bulk body, checking the NDJSON framing."""
    assert body.endswith(b"\n")
    lines = body[:-1].split(b"\n")
    assert 0 == len(lines) % 2
    parsed = [json.loads(line) for line in lines]
    return list(zip(parsed[::2], parsed[1::2], strict=True))


def _writer_stats(pipeline: Any, writer: Any) -> dict[str, Any]:
    (stats,) = [s for s in pipeline.backend.get_stats()["writers"] if s["writer"] == repr(writer)]
    return dict(stats)


class FakeElasticsearch:
    """A bulk endpoint that stores documents by ``_id`` (a ``create`` of a stored id is
    409) and answers each item with ``rule(document, attempt)``: a status, or ``None``
    for "store it". ``attempt`` counts the times that document's id was seen."""

    def __init__(self, rule: Callable[[dict[str, Any], int], int | None] = lambda d, a: None):
        self.rule = rule
        self.stored: dict[str, dict[str, Any]] = {}
        self.seen: dict[str, int] = {}
        self.requests: list[list[tuple[dict[str, Any], dict[str, Any]]]] = []
        self.lock = threading.Lock()

    def __call__(self, path: str, headers: dict[str, str], body: bytes) -> Any:
        assert path.startswith("/_bulk?filter_path=")
        assert "application/x-ndjson" == headers["Content-Type"]
        pairs = _pairs(_body(headers, body))
        items = []
        with self.lock:
            self.requests.append(pairs)
            for action, document in pairs:
                ((op, meta),) = action.items()
                key = meta["_id"]
                self.seen[key] = attempt = self.seen.get(key, 0) + 1
                # the backend's own drop notices (logger "kakashi") are always stored
                status = self.rule(document, attempt) if "n" in document else None
                if status is None and key in self.stored and op == "create":
                    status = 409
                if status is None:
                    self.stored[key] = document
                    items.append({op: {"status": 201}})
                elif status == 400:
                    error = {"type": "mapper_parsing_exception", "reason": "failed to parse"}
                    items.append({op: {"status": 400, "error": error}})
                elif status == 409:
                    error = {"type": "version_conflict_engine_exception", "reason": "exists"}
                    items.append({op: {"status": 409, "error": error}})
                else:
                    error = {"type": "es_rejected_execution_exception", "reason": "busy"}
                    items.append({op: {"status": status, "error": error}})
        errors = any(next(iter(item.values()))["status"] >= 300 for item in items)
        answer = json.dumps({"errors": errors, "items": items}).encode()
        return 200, {"Content-Type": "application/json"}, answer

    def messages(self) -> list[str]:
        """The messages of the records stored (the backend's notices left out)."""
        with self.lock:
            return sorted(d["message"] for d in self.stored.values() if d["logger"] == "app")

    def notices(self) -> int:
        """How many of the backend's drop notices were stored."""
        with self.lock:
            return sum(d["logger"] == "kakashi" for d in self.stored.values())


# -- Elasticsearch: framing ---------------------------------------------------------------


def test_bulk_body_is_action_and_document_pairs(collector: Any) -> None:
    """A batch is one gzip NDJSON request to ``/_bulk``: per record a ``create`` action
    (its index, an ``_id`` of its own) then the line with ``timestamp`` renamed
    ``@timestamp``, every other key as logged."""
    collector.answers.append(ES_OK)
    writer = ElasticsearchWriter(collector.url, "logs-app")
    lines = [_line(1), _line(2, user="é")]
    assert writer.write(lines) is None
    ((path, headers, body, _),) = collector.received
    assert path == "/_bulk?filter_path=errors,items.*.status,items.*.error"
    assert "gzip" == headers["Content-Encoding"]
    pairs = _pairs(gzip.decompress(body))
    assert ["logs-app", "logs-app"] == [action["create"]["_index"] for action, _ in pairs]
    ids = [action["create"]["_id"] for action, _ in pairs]
    assert len(set(ids)) == 2
    expected = []
    for line in lines:
        event = json.loads(line)
        expected.append({"@timestamp": event.pop("timestamp"), **event})
    assert expected == [document for _, document in pairs]
    assert list(expected[0]) == list(pairs[0][1])  # @timestamp first
    assert {"requests": 1, "delivered": 2, "retryable": 0, "rejected": 0} == (
        writer.delivery_stats()
    )
    writer.close()


@pytest.mark.parametrize("index", ["logs-%Y.%m.%d-%H", "logs-app", "pct%%-%Y"])
@pytest.mark.parametrize("document_ids", [True, False])
@pytest.mark.parametrize("timestamp_field", ["@timestamp", None, "ts%s"])
def test_a_batch_is_framed_at_once_exactly_as_record_by_record(
    monkeypatch: pytest.MonkeyPatch, index: str, document_ids: bool, timestamp_field: str | None
) -> None:
    """The JSON formatter's lines are framed a batch at a time (one join, one split, one
    template); any other line sends the batch through the record-by-record framing. For
    batches of both kinds (a line with a newline, a field named like the timestamp
    field, an offset or a malformed fraction in the timestamp, no timestamp, not JSON,
    ``%`` in names and values) the body is byte for byte the record-by-record one."""
    import random

    import kakashi.writers.stores as stores

    monkeypatch.setattr(stores.time, "time_ns", lambda: (BASE + 5) * 1_000_000_000)
    odd = [
        _line(1, **{"@timestamp": "x", "ts%s": "y"}),
        _line(2, message="a\nb").replace(b"\\n", b"\n"),
        json.dumps({"timestamp": "2026-12-01T12:00:00.5+02:00", "n": 3}).encode(),
        json.dumps({"timestamp": "2026-12-01T10:00:00.12345xZ"}).encode(),
        json.dumps({"message": "no timestamp"}).encode(),
        b"not json",
        b"",
    ]
    writer = ElasticsearchWriter(
        "http://127.0.0.1:9", index, document_ids=document_ids, timestamp_field=timestamp_field
    )
    chooser = random.Random(7)
    for trial in range(80):
        # Half the batches span a day (many index names), half lie within one hour (one
        # name, found with one search), some of them with a line of that hour whose
        # timestamp is not in the formatter's form or a line of the next hour.
        spread = (-90_000, 90_000) if trial < 40 else (0, 3600)
        lines = [
            _line(n, at=BASE + chooser.randrange(*spread), note="100%")
            for n in range(chooser.randint(1, 20))
        ]
        if trial % 2:
            lines.insert(chooser.randrange(len(lines) + 1), chooser.choice(odd))
        if trial >= 40 and trial % 4 == 2:
            other = _line(99, at=BASE + 1800).replace(b'Z"', b'+00:00"', 1)
            lines.insert(chooser.randrange(len(lines) + 1), other)
        if trial >= 40 and trial % 4 == 0:  # one line of the next hour
            lines.insert(chooser.randrange(1, len(lines) + 1), _line(98, at=BASE + 4000))
        keys = writer._new_keys(len(lines))
        assert writer._encode_each(lines, keys) == writer.encode_batch(lines, keys)
    # The formatter's lines take the batch framing; one other line, the record by record.
    each = writer._encode_each
    calls: list[int] = []
    monkeypatch.setattr(writer, "_encode_each", lambda *args: calls.append(1) or each(*args))
    clean = [_line(n) for n in range(5)]
    writer.encode_batch(clean, writer._new_keys(5))
    assert [] == calls
    writer.encode_batch([*clean, b"not json"], writer._new_keys(6))
    assert [1] == calls


def test_index_named_from_each_records_timestamp(collector: Any) -> None:
    """``logs-%Y.%m.%d`` names each record's index from its own time, in UTC, across a
    day boundary inside one batch; a line from another formatter goes to today's."""
    collector.answers.append(ES_OK)
    writer = ElasticsearchWriter(collector.url, "logs-%Y.%m.%d", compression=None)
    late = _line(1, at=BASE + 13 * 3600 + 59 * 60 + 59.5)  # 2026-12-01T23:59:59.5Z
    early = _line(2, at=BASE + 14 * 3600)  # 2026-12-02T00:00:00Z
    odd = _line(3, at=BASE, logger="x").replace(b'{"timestamp"', b'{"ts":0,"timestamp"')
    writer.write([late, early, odd, b"plain text line"])
    pairs = _pairs(collector.received[0][2])
    indices = [action["create"]["_index"] for action, _ in pairs]
    today = __import__("time").strftime("logs-%Y.%m.%d", __import__("time").gmtime())
    assert ["logs-2026.12.01", "logs-2026.12.02", "logs-2026.12.01", today] == indices
    assert "2026-12-01T10:00:00.000000Z" == pairs[2][1]["@timestamp"]
    assert ["@timestamp", "ts"] == list(pairs[2][1])[:2]
    assert "plain text line" == pairs[3][1]["message"]
    assert pairs[3][1]["@timestamp"].startswith(today[5:].replace(".", "-"))


def test_lines_unchanged_and_ids_left_to_the_cluster(collector: Any) -> None:
    """``timestamp_field=None`` sends each line as it is; ``document_ids=False`` sends
    no ``_id``; ``op_type="index"`` and an ingest pipeline are honoured."""
    collector.answers.append(ES_OK)
    writer = ElasticsearchWriter(
        f"{collector.url}/",
        "logs",
        op_type="index",
        document_ids=False,
        timestamp_field=None,
        pipeline="geo ip",
        compression=None,
    )
    line = _line(1, **{"@timestamp": "mine"})
    writer.write([line])
    path, _, body, _ = collector.received[0]
    assert path.endswith("&pipeline=geo%20ip")
    assert b'{"index":{"_index":"logs"}}\n' + line + b"\n" == body


def test_a_field_named_like_the_timestamp_field_is_kept_aside(collector: Any) -> None:
    """A record's own ``@timestamp`` field does not replace the record's time: it is
    sent as ``field.@timestamp`` (as reserved keys are in every format)."""
    collector.answers.append(ES_OK)
    writer = ElasticsearchWriter(collector.url, compression=None)
    writer.write([_line(1, **{"@timestamp": "mine"})])
    ((_, document),) = _pairs(collector.received[0][2])
    assert ("2026-12-01T10:00:01.000000Z", "mine") == (
        document["@timestamp"],
        document["field.@timestamp"],
    )
    assert "timestamp" not in document


# -- Elasticsearch: the bulk answer -------------------------------------------------------


def test_per_item_failures_are_retried_or_dropped_by_status(collector: Any) -> None:
    """Items answered 429 or 5xx are to be retried; a ``mapper_parsing_exception`` is
    dropped under that reason; the others are delivered. Retrying the retry indices
    (as the backend does) sends only those records, with the ``_id`` they had."""
    store = FakeElasticsearch(
        lambda document, attempt: (
            {1: 429, 2: 400, 3: 503}.get(document["n"]) if attempt == 1 else None
        )
    )
    collector.answers.extend([store, store])
    writer = ElasticsearchWriter(collector.url)
    batch = [_line(n) for n in range(5)]
    with pytest.raises(DeliveryError) as caught:
        writer.write(batch)
    error = caught.value
    assert ("http_429", (1, 3), {2: "mapper_parsing_exception"}) == (
        error.reason,
        error.retry,
        error.dropped,
    )
    first_ids = {doc["n"]: action["create"]["_id"] for action, doc in store.requests[0]}
    assert writer.write([batch[1], batch[3]]) is None
    assert [(first_ids[1], 1), (first_ids[3], 3)] == [
        (action["create"]["_id"], doc["n"]) for action, doc in store.requests[1]
    ]
    assert ["m0", "m1", "m3", "m4"] == store.messages()
    assert {"mapper_parsing_exception": 1} == dict(writer.rejected_by_reason)
    assert {"requests": 2, "delivered": 4, "retryable": 2, "rejected": 1} == (
        writer.delivery_stats()
    )


def test_a_batch_handed_back_whole_sends_only_what_is_undecided(collector: Any) -> None:
    """A backend that hands back everything from the first failed record (the
    ``written`` contract) gets no duplicate: records already stored are not sent
    again, a refused one is not sent again and is returned as dropped once."""
    store = FakeElasticsearch(
        lambda document, attempt: {1: 400, 2: 429}.get(document["n"]) if attempt == 1 else None
    )
    collector.answers.extend([store, store])
    writer = ElasticsearchWriter(collector.url)
    batch = [_line(n) for n in range(4)]
    with pytest.raises(DeliveryError) as caught:
        writer.write(batch)
    assert 1 == caught.value.written
    assert 1 == writer.write(batch[1:])  # record 1: refused before, counted now
    assert [2] == [document["n"] for _, document in store.requests[1]]
    assert ["m0", "m2", "m3"] == store.messages()
    assert 5 == sum(store.seen.values())  # four records, and the retried one again
    assert {"mapper_parsing_exception": 1} == dict(writer.rejected_by_reason)


def test_a_create_answered_409_is_a_duplicate_and_counts_as_delivered(collector: Any) -> None:
    """With ``_id``s a ``create`` refused with 409 means an earlier request stored the
    record (its answer was lost): delivered. Without ids a 409 is a refusal like any."""
    conflict = {
        "errors": True,
        "items": [
            {"create": {"status": 201}},
            {"create": {"status": 409, "error": {"type": "version_conflict_engine_exception"}}},
        ],
    }
    answer = (200, {}, json.dumps(conflict).encode())
    collector.answers.extend([answer, answer])
    assert ElasticsearchWriter(collector.url).write([_line(1), _line(2)]) is None
    with pytest.raises(DeliveryError) as caught:
        ElasticsearchWriter(collector.url, document_ids=False).write([_line(1), _line(2)])
    assert {1: "version_conflict_engine_exception"} == caught.value.dropped


@pytest.mark.parametrize(
    "answer",
    [b"<html>proxy</html>", b'{"errors":true}', b'{"errors":true,"items":[{"index":{}}]}'],
)
def test_an_unreadable_bulk_answer_retries_the_batch(collector: Any, answer: bytes) -> None:
    """A 2xx whose items cannot be matched to the batch says nothing of what was stored:
    every record is retried (their ``_id``s make the stored ones duplicates)."""
    collector.answers.append((200, {}, answer))
    with pytest.raises(DeliveryError) as caught:
        ElasticsearchWriter(collector.url).write([_line(1), _line(2)])
    assert ("bad_bulk_answer", (0, 1), {}) == (
        caught.value.reason,
        caught.value.retry,
        caught.value.dropped,
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"index": "Logs"}, "lowercase"),
        ({"index": "logs app"}, "lowercase"),
        ({"index": "_logs"}, "lowercase"),
        ({"index": "logs-%M"}, "directives"),
        ({"op_type": "update"}, "op_type"),
        ({"timestamp_field": ""}, "timestamp_field"),
        ({"timeout": -1}, "timeout"),
    ],
)
def test_elasticsearch_settings_are_checked(options: dict[str, Any], message: str) -> None:
    """Bad settings fail when the writer is made, naming the parameter."""
    with pytest.raises(ValueError, match=message):
        ElasticsearchWriter("http://127.0.0.1:9", **options)


# -- Loki ---------------------------------------------------------------------------------


def test_loki_push_groups_streams_by_labels_in_time_order(collector: Any) -> None:
    """One push: a stream per label set (static labels plus level and logger), each
    entry ``[ns as a string, the line]``, a stream's entries in timestamp order (ties
    in the order logged); ``X-Scope-OrgID`` carries the tenant; gzip; 204 is success."""
    collector.answers.append((204, {}, b""))
    writer = LokiWriter(
        collector.url, labels={"service": "api"}, tenant_id="team-a", headers={"X-A": "1"}
    )
    lines = [
        _line(3),
        _line(1, level="ERROR"),
        _line(2),
        _line(0, at=BASE + 2),  # the same time as record 2, logged after it
        _line(5, logger="db", status=7),
        b"not json",
    ]
    writer.write(lines)
    ((path, headers, body, _),) = collector.received
    assert "/loki/api/v1/push" == path
    assert ("team-a", "1", "application/json") == (
        headers["X-Scope-OrgID"],
        headers["X-A"],
        headers["Content-Type"],
    )
    streams = json.loads(gzip.decompress(body))["streams"]
    text = [line.decode() for line in lines]
    ns = [(BASE + n) * 10**9 for n in range(6)]
    assert [
        {
            "stream": {"service": "api", "level": "INFO", "logger": "app"},
            "values": [[str(ns[2]), text[2]], [str(ns[2]), text[3]], [str(ns[3]), text[0]]],
        },
        {
            "stream": {"service": "api", "level": "ERROR", "logger": "app"},
            "values": [[str(ns[1]), text[1]]],
        },
        {
            "stream": {"service": "api", "level": "INFO", "logger": "db"},
            "values": [[str(ns[5]), text[4]]],
        },
        {"stream": {"service": "api"}, "values": [[streams[3]["values"][0][0], "not json"]]},
    ] == streams
    assert int(streams[3]["values"][0][0]) > ns[5]  # written now


def test_loki_refusal_is_dropped_not_retried(collector: Any) -> None:
    """Loki's 400 (entries out of order or too old) drops the request's records under
    ``http_400``; handed back, they are not sent again."""
    collector.answers.append((400, {}, b"entry out of order"))
    writer = LokiWriter(collector.url)
    batch = [_line(1), _line(2)]
    with pytest.raises(DeliveryError) as caught:
        writer.write(batch)
    assert ((), {0: "http_400", 1: "http_400"}) == (caught.value.retry, caught.value.dropped)
    assert 2 == writer.write(batch)
    assert 1 == len(collector.received)
    assert {"http_400": 2} == dict(writer.rejected_by_reason)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"labels": {}}, "labels"),
        ({"labels": {"bad-name": "x"}}, "label names"),
        ({"labels": {"__name__": "x"}}, "label names"),
        ({"labels": {"job": ""}}, "non-empty"),
        ({"label_keys": ["http.status"]}, "label names"),
        ({"tenant_id": ""}, "tenant_id"),
    ],
)
def test_loki_settings_are_checked(options: dict[str, Any], message: str) -> None:
    """Label names Loki refuses fail when the writer is made."""
    with pytest.raises(ValueError, match=message):
        LokiWriter("http://127.0.0.1:9", **options)


# -- OTLP ---------------------------------------------------------------------------------


def test_otlp_request_maps_each_line_to_a_log_record(collector: Any) -> None:
    """One ``ExportLogsServiceRequest``: the resource (``service.name`` and more), a
    scope per logger, each record's time in ns, severity, body, typed attributes, the
    trace context and the exception as OpenTelemetry's semantic attributes."""
    writer = OtlpHttpWriter(
        f"{collector.url}/v1/logs", service_name="api", resource={"service.version": "1.2"}
    )
    trace = {"trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331"}
    lines = [
        _line(
            1,
            level="WARNING",
            exception={"type": "ValueError", "message": "bad", "traceback": "Traceback..."},
            thread={"id": 5, "name": "main"},
            big=str(2**70),  # as the JSON formatter writes an int beyond 64 bits
            ratio=0.5,
            ok=True,
            none=None,
            tags=["a", 1],
            nested={"k": {"v": 2}},
            trace_flags=1,
            **trace,
        ),
        _line(2, logger="db", level="LEVEL25"),
        b"plain text",
    ]
    writer.write(lines)
    ((path, headers, body, _),) = collector.received
    assert ("/v1/logs", "application/json") == (path, headers["Content-Type"])
    ((resource_logs),) = json.loads(gzip.decompress(body))["resourceLogs"]
    assert {
        "attributes": [
            {"key": "service.version", "value": {"stringValue": "1.2"}},
            {"key": "service.name", "value": {"stringValue": "api"}},
        ]
    } == resource_logs["resource"]
    scopes = resource_logs["scopeLogs"]
    assert [{"name": "app"}, {"name": "db"}, {}] == [scope["scope"] for scope in scopes]
    first = scopes[0]["logRecords"][0]
    observed = first.pop("observedTimeUnixNano")
    assert int(observed) > (BASE + 1) * 10**9
    assert {
        "timeUnixNano": str((BASE + 1) * 10**9),
        "severityNumber": 13,
        "severityText": "WARN",
        "body": {"stringValue": "m1"},
        "attributes": [
            {"key": "exception.type", "value": {"stringValue": "ValueError"}},
            {"key": "exception.message", "value": {"stringValue": "bad"}},
            # The newline that ends every formatted traceback, which the line drops.
            {"key": "exception.stacktrace", "value": {"stringValue": "Traceback...\n"}},
            # The fields in the line's order, as OTLPJsonFormatter writes them.
            {"key": "n", "value": {"intValue": "1"}},
            {"key": "thread.id", "value": {"intValue": "5"}},
            {"key": "thread.name", "value": {"stringValue": "main"}},
            {"key": "big", "value": {"stringValue": str(2**70)}},
            {"key": "ratio", "value": {"doubleValue": 0.5}},
            {"key": "ok", "value": {"boolValue": True}},
            {"key": "none", "value": {}},
            {
                "key": "tags",
                "value": {"arrayValue": {"values": [{"stringValue": "a"}, {"intValue": "1"}]}},
            },
            {
                "key": "nested",
                "value": {
                    "kvlistValue": {
                        "values": [
                            {
                                "key": "k",
                                "value": {
                                    "kvlistValue": {
                                        "values": [{"key": "v", "value": {"intValue": "2"}}]
                                    }
                                },
                            }
                        ]
                    }
                },
            },
        ],
        "flags": 1,
        "traceId": trace["trace_id"],
        "spanId": trace["span_id"],
    } == first
    second = scopes[1]["logRecords"][0]
    assert (12, "LEVEL25") == (second["severityNumber"], second["severityText"])
    third = scopes[2]["logRecords"][0]
    assert {"stringValue": "plain text"} == third["body"]


def test_otlp_document_lines_are_merged_as_they_are(collector: Any) -> None:
    """Lines that are OTLP/JSON documents already (one per record, as an OTLP formatter
    writes them) are merged: one resource entry, one scope per name, records in order."""
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "x"}}]}

    def document(scope: str, n: int) -> bytes:
        record = {"timeUnixNano": str(n), "body": {"stringValue": f"m{n}"}}
        scope_logs = [{"scope": {"name": scope}, "logRecords": [record]}]
        return json.dumps({"resourceLogs": [{"resource": resource, "scopeLogs": scope_logs}]})

    writer = OtlpHttpWriter(collector.url, compression=None)
    writer.write([document("a", 1).encode(), document("b", 2).encode(), document("a", 3).encode()])
    path, _, body, _ = collector.received[0]
    assert "/v1/logs" == path
    ((entry,),) = [json.loads(body)["resourceLogs"]]
    assert resource == entry["resource"]
    assert [("a", ["m1", "m3"]), ("b", ["m2"])] == [
        (scope["scope"]["name"], [r["body"]["stringValue"] for r in scope["logRecords"]])
        for scope in entry["scopeLogs"]
    ]


class CardDeclined(ValueError):
    """An exception class of a module: its qualified name is the same in both mappings."""


def _otlp_records() -> list[Any]:
    """Records with all a JSON line can carry: fields of every JSON type, enricher keys
    (context, thread, process), bound fields, a reserved name, trace fields, an
    exception, a stack, a call site, a stdlib record's path; levels from below DEBUG to
    CRITICAL and a custom one; two loggers. Times in whole microseconds (what the line
    keeps)."""
    from kakashi._speedups import Bound, Record

    try:
        raise CardDeclined("card declined")
    except CardDeclined:
        exc_info = sys.exc_info()
    at = (BASE + 1) * 10**9 + 123_456_000
    thread = {"thread": {"id": 5, "name": "main"}, "process": {"id": 77}}
    trace = {"trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331"}
    values = {**OTLP_FIELD_VALUES, "big": 2**70, "message": "a field named like the message"}
    return [
        Record(
            at,
            40,
            "shop.orders",
            "payment failed",
            fields={**values, **trace, "trace_flags": 1},
            bound=Bound({"tenant": "acme"}),
            extra={"request_id": "r-9", **thread},
            exc_info=exc_info,
            source=("shop.orders", "pay", 42),
        ),
        Record(
            at + 1000,
            25,
            "shop.db",
            "custom level",
            fields={"ms": 250},
            stack_info="Stack (most recent call last):\n  File x",
        ),
        Record(
            at + 2000,
            30,
            "urllib3",
            "from stdlib",
            extra={"kakashi_origin": "stdlib", "pathname": "/srv/a.py"},
        ),
        Record(at + 3000, 5, "shop.orders", "below debug"),
        Record(at + 4000, 50, "shop.db", "fatal", fields={"trace_flags": 0, **trace}),
        Record(at + 5000, 10, "shop.orders", "debug"),
    ]


def test_otlp_request_equals_the_formatters_document_for_the_same_records(
    collector: Any,
) -> None:
    """The writer's request for the JSON lines of some records equals the document
    ``OTLPJsonFormatter`` (held to OpenTelemetry's SDK by tests/test_otel.py) makes of
    the records themselves: one mapping, whichever side applies it."""
    from kakashi.formatters import default_json_formatter
    from kakashi.integrations.otel import OTLPJsonFormatter

    records = _otlp_records()
    resource = {"service.version": "1.2", "host.cores": 8, "tags": ["a", "b"]}
    writer = OtlpHttpWriter(collector.url, compression=None, service_name="api", resource=resource)
    writer.write([default_json_formatter(record) for record in records])
    ((_, _, body, _),) = collector.received
    expected = OTLPJsonFormatter(service_name="api", resource=resource).to_document(records)
    assert without_observed_time(expected) == without_observed_time(json.loads(body))


def test_otlp_request_of_formatter_lines_equals_the_formatters_batch(collector: Any) -> None:
    """With ``OTLPJsonFormatter`` as the pipeline's formatter, the writer merges its lines:
    the request equals ``format_batch`` of the same records, to the nanosecond (a time
    that is not whole microseconds included)."""
    from kakashi.integrations.otel import OTLPJsonFormatter

    records = _otlp_records()
    records[0].time_ns += 789  # the line keeps it: it is the formatter's own
    formatter = OTLPJsonFormatter(service_name="api")
    writer = OtlpHttpWriter(collector.url, compression=None)
    writer.write([formatter(record) for record in records])
    ((_, _, body, _),) = collector.received
    expected = json.loads(formatter.format_batch(records))
    assert without_observed_time(expected) == without_observed_time(json.loads(body))


def test_otlp_log_record_of_lines_other_formatters_wrote() -> None:
    """A line not from Kakashi's JSON formatter: a level name Kakashi does not write is
    kept as text with no number, lowercase names are read, a missing or unreadable time
    is the observed time, and an ``exception`` or ``source`` that is not an object is
    an attribute like any other; nothing raises."""
    from kakashi.integrations.otel import otlp_log_record

    assert {
        "timeUnixNano": "7",
        "severityText": "notice",
        "body": {"stringValue": "m"},
        "attributes": [
            {"key": "exception", "value": {"stringValue": "text"}},
            {"key": "source", "value": {"intValue": "3"}},
            {"key": "trace_id", "value": {"stringValue": "not hex"}},
            {"key": "span_id", "value": {"stringValue": "b7ad6b7169203331"}},
        ],
        "observedTimeUnixNano": "7",
    } == otlp_log_record(
        {"timestamp": "yesterday", "level": "notice", "message": "m", "exception": "text",
         "source": 3, "trace_id": "not hex", "span_id": "b7ad6b7169203331"},
        observed=7,
    )  # fmt: skip
    assert {"severityNumber": 13, "severityText": "WARN"} == {
        key: value
        for key, value in otlp_log_record({"level": "warn"}, observed=7).items()
        if key.startswith("severity")
    }
    assert {"timeUnixNano": "7", "observedTimeUnixNano": "7"} == otlp_log_record({}, 7)


def test_otlp_partial_success_drops_the_rejected_count(collector: Any) -> None:
    """``partialSuccess.rejectedLogRecords`` (an int64, so a string in JSON) counts that
    many records as dropped (``otlp_rejected``): the last ones, as OTLP does not say
    which; handed back, none is sent again. A zero count with a message is a warning."""
    partial = {"partialSuccess": {"rejectedLogRecords": "2", "errorMessage": "too big"}}
    collector.answers.append((200, {}, json.dumps(partial).encode()))
    warning = {"partialSuccess": {"errorMessage": "deprecated field"}}
    collector.answers.append((200, {}, json.dumps(warning).encode()))
    writer = OtlpHttpWriter(collector.url)
    batch = [_line(n) for n in range(4)]
    with pytest.raises(DeliveryError) as caught:
        writer.write(batch)
    assert ("otlp_rejected", (), {2: "otlp_rejected", 3: "otlp_rejected"}) == (
        caught.value.reason,
        caught.value.retry,
        caught.value.dropped,
    )
    assert "too big" in str(caught.value)
    assert 2 == writer.write(batch[2:])
    assert writer.write([_line(9)]) is None
    assert 2 == len(collector.received)
    assert {"requests": 2, "delivered": 3, "retryable": 0, "rejected": 2} == (
        writer.delivery_stats()
    )


@pytest.mark.parametrize(
    ("status", "retried"), [(429, True), (502, True), (503, True), (504, True), (500, False)]
)
def test_otlp_retries_only_the_statuses_otlp_names(
    collector: Any, status: int, retried: bool
) -> None:
    """OTLP/HTTP retries 429, 502, 503 and 504 (after ``Retry-After``); any other status,
    500 included, drops the request's records."""
    collector.answers.append((status, {"Retry-After": "3"}, b"no"))
    with pytest.raises(DeliveryError) as caught:
        OtlpHttpWriter(collector.url).write([_line(1)])
    if retried:
        assert ((0,), {}, 3.0) == (
            caught.value.retry,
            caught.value.dropped,
            caught.value.retry_after,
        )
    else:
        assert ((), {0: "http_500"}) == (caught.value.retry, caught.value.dropped)


def test_otlp_settings_are_checked() -> None:
    """A resource that is not a mapping of JSON values fails when the writer is made."""
    with pytest.raises(TypeError, match="resource"):
        OtlpHttpWriter("http://127.0.0.1:9", resource=["a"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="resource"):
        OtlpHttpWriter("http://127.0.0.1:9", resource={"a": object()})
    with pytest.raises(TypeError, match="service_name"):
        OtlpHttpWriter("http://127.0.0.1:9", service_name="")


def test_a_forked_child_starts_with_fresh_delivery_state(collector: Any) -> None:
    """A child forked while its parent's writer remembers a failed batch sends every
    record it is given (nothing of the parent's is taken as delivered) with ``_id``s
    of its own prefix, so a parent's and a child's ids never meet."""
    collector.answers.append((503, {}, b"busy"))
    writer = ElasticsearchWriter(collector.url)
    batch = [_line(1), _line(2)]
    with pytest.raises(DeliveryError):
        writer.write(batch)
    collector.answers.append(ES_OK)
    pid = os.fork()
    if pid == 0:  # the child: report by exit status only
        code = 1
        try:
            code = 0 if writer.write(batch) is None else 2
        finally:
            os._exit(code)
    assert 0 == os.waitstatus_to_exitcode(wait_or_kill(pid))
    parent_ids, child_ids = (
        [action["create"]["_id"] for action, _ in _pairs(gzip.decompress(body))]
        for _, _, body, _ in collector.received
    )
    assert 2 == len(child_ids)
    assert parent_ids[0][:12] != child_ids[0][:12]


def test_epoch_ns_reads_rfc3339() -> None:
    """Timestamps in ns from RFC 3339 text: fractions of 1 to 9 digits, Z or offsets;
    anything else is None."""
    assert (BASE * 10**9 + 123_456_000) == epoch_ns("2026-12-01T10:00:00.123456Z")
    assert (BASE * 10**9 + 5) == epoch_ns("2026-12-01T10:00:00.000000005Z")
    assert BASE * 10**9 == epoch_ns("2026-12-01T11:30:00+01:30")
    assert BASE * 10**9 == epoch_ns("2026-12-01T08:00:00-02:00")
    assert BASE * 10**9 == epoch_ns("2026-12-01 10:00:00")
    for junk in ("2026-13-01T10:00:00Z", "yesterday", "", 5, None, "2026-12-01T10:00:00Zx"):
        assert epoch_ns(junk) is None


def test_import_kakashi_does_not_load_the_http_client() -> None:
    """``import kakashi`` (and the writers package) load neither urllib3 nor the stores
    module: the HTTP writers cost nothing until used."""
    code = (
        "import sys, kakashi, kakashi.writers; "
        "print(sorted(m for m in ('urllib3', 'kakashi.writers.stores') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "[]" == out.stdout.strip()


# -- end to end through an AsyncPipeline ------------------------------------------------


def _assert_reasons(stats: dict[str, Any], expected: dict[str, int]) -> None:
    """The writer's drops by reason, as the backend counts them in its stats."""
    assert expected == {k: v for k, v in stats["dropped_by_reason"].items() if v}


def _log(pipeline: Any, count: int, **fields: Any) -> None:
    logger = kakashi.get_logger("app", pipeline)
    for n in range(count):
        logger.info(f"m{n}", n=n, **fields)


def _settled(pipeline: Any, writer: Any, logged: int) -> dict[str, Any]:
    """Flush, check the backend's books balance, and return the writer's stats."""
    assert pipeline.flush(timeout=30.0).complete
    stats = pipeline.backend.get_stats()
    assert balanced(stats)
    assert 0 == stats["pending"]
    assert logged == stats["messages_enqueued"]
    return _writer_stats(pipeline, writer)


def test_end_to_end_503_then_success_delivers_everything_once(collector: Any) -> None:
    """A 503 for the first request: the backend retries; every record lands once."""
    store = FakeElasticsearch()
    collector.answers.extend([(503, {}, b"unavailable"), *[store] * 200])
    writer = ElasticsearchWriter(collector.url, "logs")
    pipeline = keeping_pipeline(writer, error_retry_delay=0.01, batch_size=50)
    _log(pipeline, 120)
    stats = _settled(pipeline, writer, 120)
    assert [f"m{n}" for n in range(120)] == sorted(store.messages(), key=lambda m: int(m[1:]))
    assert (120, 0, 0) == (stats["records"], stats["dropped"], store.notices())
    assert 120 == sum(store.seen.values())  # none sent twice
    assert 503 == collector.received[0][3]
    pipeline.shutdown()


def test_end_to_end_per_item_failures(collector: Any) -> None:
    """Bulk items refused as malformed are dropped under their reason; items answered 429
    arrive in a later request; nothing is stored twice, and logged = delivered +
    dropped."""
    bad = {3, 17, 40}

    def rule(document: dict[str, Any], attempt: int) -> int | None:
        if document["n"] in bad:
            return 400
        return 429 if document["n"] % 7 == 0 and attempt == 1 else None

    store = FakeElasticsearch(rule)
    collector.answers.extend([store] * 200)
    writer = ElasticsearchWriter(collector.url, "logs-%Y.%m.%d")
    pipeline = keeping_pipeline(writer, error_retry_delay=0.01, batch_size=25)
    _log(pipeline, 60)
    stats = _settled(pipeline, writer, 60)
    stored = sorted(d["n"] for d in store.stored.values() if d["logger"] == "app")
    assert [n for n in range(60) if n not in bad] == stored
    # what the writer took: the records, and the backend's notices of the drops if any
    assert (57 + store.notices(), 3) == (stats["records"], stats["dropped"])
    assert {"mapper_parsing_exception": 3} == dict(writer.rejected_by_reason)
    _assert_reasons(stats, {"mapper_parsing_exception": 3})
    # The records answered 429 were sent again in a later request; every other record
    # was sent once (the refused ones too).
    requests: dict[int, list[int]] = {}
    for i, request in enumerate(store.requests):
        for _, document in request:
            if document["logger"] == "app":
                requests.setdefault(document["n"], []).append(i)
    retried = {n for n in range(60) if n % 7 == 0 and n not in bad}
    assert {n for n, seen in requests.items() if len(seen) > 1} == retried
    for n in retried:
        first, later = requests[n]
        assert first < later
    assert set(range(60)) == set(requests)
    pipeline.shutdown()


def test_end_to_end_429_waits_for_retry_after(collector: Any) -> None:
    """A 429 with ``Retry-After: 1``: the next request comes at least a second later,
    although the backend's own backoff is 10 ms; then everything is delivered."""
    store = FakeElasticsearch()
    collector.answers.extend([(429, {"Retry-After": "1"}, b"slow down"), *[store] * 50])
    writer = ElasticsearchWriter(collector.url)
    pipeline = keeping_pipeline(writer, error_retry_delay=0.01, batch_size=10, batch_timeout=30)
    _log(pipeline, 10)
    stats = _settled(pipeline, writer, 10)
    assert (10, 0) == (stats["records"], stats["dropped"])
    assert 10 == len(store.messages())
    assert collector.received_at[1] - collector.received_at[0] >= 1.0
    pipeline.shutdown()


def test_end_to_end_loki_counts_a_refused_push(collector: Any) -> None:
    """Loki takes the first push and refuses the second with 400: the refused records are
    dropped (not retried), the rest delivered, and the counts add up."""
    collector.answers.extend([(204, {}, b""), (400, {}, b"entry too far behind")])
    writer = LokiWriter(collector.url, labels={"app": "t"})
    # a batch of exactly the first ten (full: sent at once), then the rest at the flush
    pipeline = keeping_pipeline(writer, error_retry_delay=0.01, batch_size=10, batch_timeout=30)
    _log(pipeline, 10)
    pipeline.flush(30.0)
    _log(pipeline, 7)
    stats = _settled(pipeline, writer, 17)
    assert 2 == len(collector.received)
    delivered = json.loads(gzip.decompress(collector.received[0][2]))["streams"]
    assert [{"app": "t", "level": "INFO", "logger": "app"}] == [s["stream"] for s in delivered]
    assert 10 == len(delivered[0]["values"])
    assert (10, 7) == (stats["records"], stats["dropped"])
    assert {"http_400": 7} == dict(writer.rejected_by_reason)
    _assert_reasons(stats, {"http_400": 7})
    pipeline.shutdown()


def test_end_to_end_otlp_partial_success(collector: Any) -> None:
    """An OTLP collector that rejects 3 records of a request: they are dropped under
    ``otlp_rejected`` and the counts add up with what the collector kept."""
    partial = {"partialSuccess": {"rejectedLogRecords": 3, "errorMessage": "invalid"}}
    collector.answers.append((200, {}, json.dumps(partial).encode()))
    writer = OtlpHttpWriter(collector.url, service_name="t")
    pipeline = keeping_pipeline(writer, error_retry_delay=0.01, batch_size=12, batch_timeout=30)
    _log(pipeline, 12)
    stats = _settled(pipeline, writer, 12)
    sent = [
        len(scope["logRecords"])
        for _, headers, body, _ in collector.received
        for resource in json.loads(_body(headers, body))["resourceLogs"]
        for scope in resource["scopeLogs"]
    ]
    assert 12 == sum(sent)  # each record sent once
    assert (9, 3) == (stats["records"], stats["dropped"])
    assert {"otlp_rejected": 3} == dict(writer.rejected_by_reason)
    _assert_reasons(stats, {"otlp_rejected": 3})
    pipeline.shutdown()


def test_end_to_end_a_slow_answer_below_the_timeout_is_delivered(collector: Any) -> None:
    """A server that takes half a second to answer, under a 5 s timeout: delivered, with
    no retry."""
    store = FakeElasticsearch()
    collector.answers.append(lambda *request: (*store(*request), 0.5))
    writer = ElasticsearchWriter(collector.url, timeout=5.0)
    pipeline = keeping_pipeline(writer, error_retry_delay=0.01, batch_size=8, batch_timeout=30)
    _log(pipeline, 8)
    stats = _settled(pipeline, writer, 8)
    assert (8, 0, 1) == (stats["records"], stats["dropped"], len(collector.received))
    assert 8 == len(store.messages())
    pipeline.shutdown()


def test_end_to_end_a_server_that_never_answers_times_out(collector: Any) -> None:
    """A server that takes the request and never answers: each try ends at the timeout,
    is retried, and after the retries the records are counted as dropped; the next
    records, answered, are delivered."""
    never = (200, {}, b"", "never")
    collector.answers.extend([never, never])
    writer = LokiWriter(collector.url, timeout=0.3)
    pipeline = keeping_pipeline(
        writer, error_retry_delay=0.01, max_error_retries=1, batch_size=5, batch_timeout=30
    )
    _log(pipeline, 5)
    pipeline.flush(30.0)
    _log(pipeline, 4)
    stats = _settled(pipeline, writer, 9)
    assert 2 == len(collector.unanswered)  # the try and its retry, both unanswered
    sent = [json.loads(gzip.decompress(body))["streams"] for _, _, body in collector.unanswered]
    assert sent[0] == sent[1]
    ((_, _, body, _),) = collector.received
    streams = {
        s["stream"]["logger"]: s["values"] for s in json.loads(gzip.decompress(body))["streams"]
    }
    assert 4 == len(streams["app"])
    # the backend's notice of the drop went with them
    ((_, notice),) = streams["kakashi"]
    assert 5 == json.loads(notice)["dropped"]
    assert (4 + 1, 5) == (stats["records"], stats["dropped"])
    _assert_reasons(stats, {"timeout": 5})
    pipeline.shutdown()


@pytest.mark.parametrize(
    "body",
    [b'{"errors":false,"items":[{"create":{"status":201}}]}', b' { "errors" : false }'],
)
def test_a_bulk_answer_without_errors_is_not_read_item_by_item(
    monkeypatch: pytest.MonkeyPatch, body: bytes
) -> None:
    """An answer that starts with ``"errors": false`` (what Elasticsearch writes first once
    filter_path drops ``took``) is taken without parsing its items; one that says
    ``true`` is read item by item."""
    import kakashi.writers.stores as stores
    from kakashi.writers.http import Response

    writer = ElasticsearchWriter("http://127.0.0.1:9")
    parsed: list[bytes] = []
    loads = stores.orjson.loads
    monkeypatch.setattr(stores, "orjson", type("Spy", (), {}))
    stores.orjson.loads = staticmethod(lambda data: parsed.append(data) or loads(data))  # type: ignore[attr-defined]
    stores.orjson.JSONDecodeError = ValueError  # type: ignore[attr-defined]
    writer.check([b"{}"], Response(200, {}, body))
    assert [] == parsed
    failed = b'{"errors":true,"items":[{"create":{"status":429}}]}'
    with pytest.raises(DeliveryError) as raised:
        writer.check([b"{}"], Response(200, {}, failed))
    assert ([failed], (0,)) == (parsed, tuple(raised.value.retry))


# -- bulk_body, both builds --------------------------------------------------------------

BULK_LINES = [
    b'{"timestamp":"2026-12-01T23:29:02.903874Z","level":"INFO","i":0,"m":"100%"}',
    b'{"timestamp":"2026-12-01T23:59:59.999999Z","level":"INFO","i":1,"m":"\\u00e9 %s"}',
]
BULK_PREFIX = b'{"create":{"_index":"logs-2026.12.01"'


@pytest.mark.parametrize(
    ("keys", "head", "skip", "field_key", "hour"),
    [
        (None, b'{"@timestamp":', 13, b'"@timestamp":', b"2026-12-01T23"),
        (["a1", "b-2_Z"], b'{"@timestamp":', 13, b'"@timestamp":', None),
        (["a1", "b2"], b"", 0, None, b"2026-12-01T23"),
        (None, b"{", 1, None, None),
    ],
)
def test_bulk_body_frames_each_line_with_its_action(
    impl: Any, keys: Any, head: bytes, skip: int, field_key: Any, hour: Any
) -> None:
    """An action line per record (with its ``_id`` when keyed), then the line with its
    first *skip* bytes replaced by *head*; ``%`` in the lines or the prefix is kept."""
    body = impl.format.bulk_body(BULK_LINES, keys, BULK_PREFIX + b"%", hour, head, skip, field_key)
    expected = b""
    for index, line in enumerate(BULK_LINES):
        action = BULK_PREFIX + b"%"
        action += b"}}" if keys is None else b',"_id":"' + keys[index].encode() + b'"}}'
        expected += action + b"\n" + head + line[skip:] + b"\n"
    assert expected == body
    assert b"" == impl.format.bulk_body([], keys, BULK_PREFIX, hour, head, skip, field_key)


@pytest.mark.parametrize(
    ("lines", "keys", "hour", "field_key"),
    [
        ([BULK_LINES[0], b'{"timestamp":"2026-12-01T23:00:00.000000Z",\n"i":2}'], None, None, None),
        (
            [BULK_LINES[0], b'{"level":"INFO","timestamp":"2026-12-01T23:00:00.000000Z"}'],
            None,
            None,
            None,
        ),
        ([BULK_LINES[0], bytearray(BULK_LINES[1])], None, None, None),
        (BULK_LINES, None, b"2026-12-01T22", None),  # another hour
        (
            [BULK_LINES[0], b'{"timestamp":"2026-12-01T23:00:00Z","i":2}'],
            None,
            b"2026-12-01T23",
            None,
        ),
        (
            [BULK_LINES[0], b'{"timestamp":"2026-12-01T23:00:00.00000xZ"}'],
            None,
            b"2026-12-01T23",
            None,
        ),
        (
            [BULK_LINES[1], b'{"timestamp":"2026-12-01T23:00:00.000000Z","@timestamp":1}'],
            None,
            None,
            b'"@timestamp":',
        ),
        (BULK_LINES, ["a", None], None, None),
        (BULK_LINES, ["a", 'b"c'], None, None),
        (BULK_LINES, ["a", "b\\c"], None, None),
        (BULK_LINES, ["a", "b\nc"], None, None),
        (BULK_LINES, ["a", "é"], None, None),
        (BULK_LINES, ["a"], None, None),
        ([b"{"], None, None, None),
    ],
)
def test_bulk_body_leaves_other_lines_to_the_general_framing(
    impl: Any, lines: Any, keys: Any, hour: Any, field_key: Any
) -> None:
    """A line not in the JSON formatter's form, not in the hour, holding the renamed key,
    or a key that cannot go in the action as it is: ``None`` (framed record by record)."""
    assert impl.format.bulk_body(lines, keys, BULK_PREFIX, hour, b"", 0, field_key) is None


def test_bulk_body_checks_its_arguments(impl: Any) -> None:
    """*skip* beyond the timestamp key is a mistake of the caller's, said as such."""
    with pytest.raises(ValueError, match="skip"):
        impl.format.bulk_body(BULK_LINES, None, BULK_PREFIX, None, b"", 14, None)
    with pytest.raises(ValueError, match="skip"):
        impl.format.bulk_body(BULK_LINES, None, BULK_PREFIX, None, b"", -1, None)
