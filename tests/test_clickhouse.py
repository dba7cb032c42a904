"""kakashi.writers.clickhouse against a real ClickHouse server (Debian's 18.16), started
once for the session by the ``clickhouse`` fixture; each test has tables of its own."""

from __future__ import annotations

import datetime
import itertools
import json
import math
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

import kakashi
from kakashi import _errors
from kakashi.writers.delivery import DeliveryError
from tests.conftest import ClickHouseServer, balanced, keeping_pipeline

pytest.importorskip("urllib3")

from kakashi.writers.clickhouse import (
    DATA_ERROR_CODES,
    ClickHouseWriter,
    create_table,
    create_table_sql,
    drop_expired_partitions,
    server_version,
)

_names = itertools.count()
FIELDS = {"user_id": "UInt64", "path": "String"}


@pytest.fixture
def table(clickhouse: ClickHouseServer, request: pytest.FixtureRequest) -> str:
    """A fresh recommended table (with ``user_id`` and ``path`` columns) for this test."""
    name = f"logs_{next(_names)}_{request.node.name[:40]}".replace("[", "_").replace("]", "")
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    create_table(clickhouse.url, name, columns=FIELDS)
    return name


def _line(seq: int, **fields: Any) -> bytes:
    """A JSON line as the default formatter writes it."""
    event = {
        "timestamp": "2026-11-27T18:06:00.123456Z",
        "level": "INFO",
        "logger": "app",
        "message": f"record {seq}",
        "seq": seq,
        **fields,
    }
    return json.dumps(event).encode()


def _seqs(server: ClickHouseServer, table: str) -> list[int]:
    rows = server.rows(f"SELECT fields FROM {table}")
    return sorted(json.loads(row["fields"])["seq"] for row in rows)


def test_import_kakashi_loads_neither_the_writer_nor_urllib3() -> None:
    """The ClickHouse writer and its HTTP client are loaded only when asked for."""
    code = (
        "import sys, kakashi, kakashi.writers;"
        "print(sorted(m for m in ('urllib3', 'kakashi.writers.clickhouse',"
        " 'kakashi.writers.http') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "[]" == out.stdout.strip()


def test_the_server_is_the_old_one_the_issue_describes(clickhouse: ClickHouseServer) -> None:
    """The tests run against Debian's ClickHouse (18.16 on Debian 12): no DateTime64 and
    no TTL, which is what the legacy table shape is for."""
    version = server_version(clickhouse.url)
    assert version >= (18, 16)
    if version < (19, 6):
        assert "TTL" not in create_table_sql("t", version=version)


def test_logged_records_land_with_fields_in_their_own_columns(
    clickhouse: ClickHouseServer, table: str
) -> None:
    """Through the async backend: each record is a row; timestamp (seconds and
    microseconds), level, logger and message in their columns, a field the table has a
    column for in it (typed), every other key in ``fields`` as JSON."""
    writer = ClickHouseWriter(clickhouse.url, table)
    pipeline = keeping_pipeline(writer)
    log = kakashi.get_logger("shop.orders", pipeline)
    log.info("order placed", user_id=42, path="/cart", amount=9.5, tags=["a", "é"])
    log.warning("slow\nquery", user_id=7, path="/search")
    assert pipeline.flush(10.0).complete
    rows = clickhouse.rows(f"SELECT * FROM {table} ORDER BY user_id DESC")
    pipeline.shutdown()
    assert 2 == len(rows)
    first, second = rows
    assert ("INFO", "shop.orders", "order placed") == (
        first["level"],
        first["logger"],
        first["message"],
    )
    assert ("42", "/cart") == (first["user_id"], first["path"])  # UInt64 quoted on output
    fields = json.loads(first["fields"])
    assert 9.5 == fields["amount"]
    assert ["a", "é"] == fields["tags"]
    assert "user_id" not in fields and "message" not in fields
    assert ("WARNING", "slow\nquery", "7") == (
        second["level"],
        second["message"],
        second["user_id"],
    )
    # The timestamp is stored to the second, its microseconds beside it: together, the
    # record's own time.
    stored = datetime.datetime.fromisoformat(first["timestamp"]).replace(
        tzinfo=datetime.timezone.utc
    ) + datetime.timedelta(microseconds=first["timestamp_us"])
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - stored).total_seconds()) < 600
    assert stored.microsecond == first["timestamp_us"]
    assert 2 == writer.rows_delivered


def test_columns_given_skip_the_question_and_microseconds_are_exact(
    clickhouse: ClickHouseServer, table: str
) -> None:
    """With ``columns=`` the writer does not DESCRIBE the table; an RFC 3339 timestamp
    is read by ``date_time_input_format=best_effort`` (UTC), its fraction kept apart."""
    columns = {
        "timestamp": "DateTime('UTC')",
        "timestamp_us": "UInt32",
        "level": "String",
        "logger": "String",
        "message": "String",
        "user_id": "UInt64",
        "path": "String",
        "fields": "String",
    }
    writer = ClickHouseWriter(clickhouse.url, table, columns=columns, compression=None)
    writer.write(
        [
            _line(1, timestamp="2026-01-02T03:04:05.000007Z", user_id=True, path=12),
            _line(2, timestamp="2026-01-02T05:04:05.5+02:00"),
        ]
    )
    rows = clickhouse.rows(f"SELECT timestamp, timestamp_us, user_id, path FROM {table}")
    assert [
        {"timestamp": "2026-01-02 03:04:05", "timestamp_us": 7, "user_id": "1", "path": "12"},
        {"timestamp": "2026-01-02 03:04:05", "timestamp_us": 500000, "user_id": "0", "path": ""},
    ] == sorted(rows, key=lambda row: row["timestamp_us"])
    assert 1 == writer.requests  # the insert only: no DESCRIBE


def test_nulls_leave_the_column_default_and_odd_values_are_fitted(
    clickhouse: ClickHouseServer, table: str
) -> None:
    """A ``null`` leaves a column its default (and is not repeated in ``fields``); a
    list or a number for a String column is stored as its JSON text; a boolean for a
    number column as 1/0."""
    writer = ClickHouseWriter(clickhouse.url, table)
    writer.write(
        [
            _line(1, user_id=None, path=None, message=None),
            _line(2, user_id=True, path=["a", 1], message=3.5),
        ]
    )
    rows = clickhouse.rows(f"SELECT message, user_id, path, fields FROM {table} ORDER BY fields")
    assert [
        {"message": "", "user_id": "0", "path": "", "fields": '{"seq":1}'},
        {"message": "3.5", "user_id": "1", "path": '["a",1]', "fields": '{"seq":2}'},
    ] == rows


def test_gzip_bodies_are_sent_and_taken(clickhouse: ClickHouseServer, table: str) -> None:
    """The default gzip body is decoded by the server (no setting needed on 18.16), and
    is much smaller than the rows."""
    writer = ClickHouseWriter(clickhouse.url, table)
    lines = [_line(i, path="/same/path/again") for i in range(500)]
    writer.write(lines)
    assert 500 == int(clickhouse.query(f"SELECT count() FROM {table}"))
    assert "gzip" == writer.headers["Content-Encoding"]
    assert writer.bytes_sent * 5 < sum(len(line) for line in lines)


def test_zstd_is_refused_by_this_server_and_dropped_not_retried(
    clickhouse: ClickHouseServer, table: str
) -> None:
    """18.16 knows only gzip and deflate bodies: its error (code 89, a 500) is a
    configuration error, so the batch is dropped under it rather than retried forever."""
    if server_version(clickhouse.url) >= (19, 0):
        pytest.skip("this server may take zstd bodies")
    writer = ClickHouseWriter(clickhouse.url, table, compression="zstd")
    with pytest.raises(DeliveryError) as caught:
        writer.write([_line(1), _line(2)])
    assert () == caught.value.retry
    assert {0: "clickhouse_89", 1: "clickhouse_89"} == caught.value.dropped
    assert "Content-Encoding" in str(caught.value)


def test_one_bad_row_in_200_is_isolated_and_the_rest_land(
    clickhouse: ClickHouseServer, table: str
) -> None:
    """ClickHouse refuses the whole insert for one row it cannot parse; the writer bisects
    (about two requests per level, log2(200) levels), stores the 199 others and reports
    the bad one as dropped with ClickHouse's code and message."""
    lines = [_line(i, user_id=i) for i in range(200)]
    lines[150] = _line(150, user_id="not a number")
    writer = ClickHouseWriter(clickhouse.url, table)
    writer.write([_line(-1)])  # the DESCRIBE and a first insert, not counted below
    posts = []
    post = writer.post

    def counting(*args: Any, **kwargs: Any) -> Any:
        posts.append(args[1])  # the number of rows in the request
        return post(*args, **kwargs)

    writer.post = counting  # type: ignore[method-assign]
    with pytest.raises(DeliveryError) as caught:
        writer.write(lines)
    error = caught.value
    # The whole batch, then two halves per level down to the bad row: 1 + 2 * 8.
    assert len(posts) <= 1 + 2 * math.ceil(math.log2(200))
    assert [200, 100, 100] == posts[:3]
    assert 1 in posts  # the bad row, alone
    assert {150: "clickhouse_27"} == error.dropped
    assert () == error.retry
    assert "not a number" in error.detail
    assert [-1] + [i for i in range(200) if i != 150] == _seqs(clickhouse, table)
    assert {"clickhouse_27": 1} == writer.rejected
    assert 200 == writer.rows_delivered
    assert "not a number" in writer.last_rejection


def test_a_bad_row_through_the_async_backend_is_counted_once_and_nothing_repeats(
    clickhouse: ClickHouseServer, table: str
) -> None:
    """End to end: one record whose ``user_id`` ClickHouse cannot read among 200; the
    other 199 are stored exactly once and the bad one is counted as dropped."""
    writer = ClickHouseWriter(clickhouse.url, table, error_retry_delay=0.01)
    pipeline = keeping_pipeline(writer, batch_size=1000, batch_timeout=0.5)
    log = kakashi.get_logger("bad.rows", pipeline)
    for i in range(200):
        log.info("r", seq=i, user_id="not a number" if i == 150 else i)
    assert pipeline.flush(30.0).complete
    stats = pipeline.stats()
    pipeline.shutdown()
    rows = clickhouse.rows(f"SELECT fields FROM {table} WHERE logger = 'bad.rows'")
    stored = sorted(json.loads(row["fields"])["seq"] for row in rows)
    assert [i for i in range(200) if i != 150] == stored
    assert balanced(stats)
    assert 1 == stats["messages_dropped"]


def test_many_bad_rows_are_bounded_by_the_split_budget(
    clickhouse: ClickHouseServer, table: str
) -> None:
    """With every other row bad, isolating each would take hundreds of requests: after
    ``max_split_requests`` the parts still failing are dropped whole, and every record is
    either stored or counted."""
    lines = [_line(i, user_id=i if i % 2 else -1) for i in range(64)]
    writer = ClickHouseWriter(clickhouse.url, table, max_split_requests=8)
    with pytest.raises(DeliveryError) as caught:
        writer.write(lines)
    dropped = caught.value.dropped
    stored = _seqs(clickhouse, table)
    assert 64 == len(stored) + len(dropped)
    assert set(stored).isdisjoint(dropped)
    assert {0, 2, 4, 62} <= set(dropped)
    assert {"clickhouse_72"} == set(dropped.values())  # "must not contain '-'"


def test_a_line_that_is_not_json_is_dropped_and_the_rest_land(
    clickhouse: ClickHouseServer, table: str
) -> None:
    """The writer needs the JSON formatter: a text line cannot become a row, and is
    counted as dropped (``not_json``) while the JSON lines around it are stored."""
    writer = ClickHouseWriter(clickhouse.url, table)
    with pytest.raises(DeliveryError) as caught:
        writer.write([_line(0), b"2026-01-01 INFO plain text", b"[1, 2]", _line(3)])
    assert {1: "not_json", 2: "not_json"} == caught.value.dropped
    assert "JSON formatter" in str(caught.value)
    assert [0, 3] == _seqs(clickhouse, table)


@pytest.mark.parametrize(("insert_format", "code"), [("JSONEachRow", 117), ("TabSeparated", 16)])
def test_a_column_dropped_since_the_describe_is_asked_again(
    clickhouse: ClickHouseServer, table: str, insert_format: str, code: int
) -> None:
    """The table's columns are learnt once; when one is dropped later, the insert that
    names it (a JSONEachRow row with the key; every TabSeparated insert, which lists the
    columns) is retried, not bisected into drops, and the next one asks again."""
    writer = ClickHouseWriter(clickhouse.url, table, insert_format=insert_format)
    writer.write([_line(0, path="/a")])
    clickhouse.query(f"ALTER TABLE {table} DROP COLUMN path")
    with pytest.raises(DeliveryError) as caught:
        writer.write([_line(1, path="/b"), _line(2)])
    assert (f"clickhouse_{code}", (0, 1), {}) == (
        caught.value.reason,
        caught.value.retry,
        caught.value.dropped,
    )
    writer.write([_line(1, path="/b"), _line(2)])  # the backend's retry
    assert [0, 1, 2] == _seqs(clickhouse, table)
    fields = [json.loads(row["fields"]) for row in clickhouse.rows(f"SELECT fields FROM {table}")]
    assert {1: "/b"} == {f["seq"]: f["path"] for f in fields if "path" in f}


def test_a_table_that_does_not_exist_drops_the_batch_with_the_server_message(
    clickhouse: ClickHouseServer,
) -> None:
    """The writer asks for the table's columns first; a missing table is a configuration
    error, not a reason to retry: dropped, with ClickHouse's message."""
    writer = ClickHouseWriter(clickhouse.url, "no_such_table")
    with pytest.raises(DeliveryError) as caught:
        writer.write([_line(1), _line(2)])
    assert () == caught.value.retry
    assert {0, 1} == set(caught.value.dropped)
    assert "doesn't exist" in str(caught.value)


def test_wrong_password_is_dropped_right_password_lands(
    clickhouse: ClickHouseServer, table: str
) -> None:
    """Basic authentication: the server's ``writer`` user (password ``s3cret``)."""
    columns = {"message": "String", "fields": "String"}
    wrong = ClickHouseWriter(
        clickhouse.url, table, columns=columns, username="writer", password="nope"
    )
    with pytest.raises(DeliveryError) as caught:
        wrong.write([_line(1)])
    assert {0: "clickhouse_193"} == caught.value.dropped
    ClickHouseWriter(
        clickhouse.url, table, columns=columns, username="writer", password="s3cret"
    ).write([_line(2)])
    assert [2] == _seqs(clickhouse, table)


def test_a_server_that_is_down_means_retry_everything(tmp_path: Path) -> None:
    """Connection refused (before the DESCRIBE, or at the insert): every record is to
    be retried, none dropped."""
    server = ClickHouseServer(tmp_path / "down")  # configured, never started
    try:
        for columns in (None, {"message": "String"}):
            writer = ClickHouseWriter(server.url, "logs", columns=columns, timeout=2)
            with pytest.raises(DeliveryError) as caught:
                writer.write([_line(1), _line(2)])
            assert ("connect", (0, 1), {}) == (
                caught.value.reason,
                caught.value.retry,
                caught.value.dropped,
            )
    finally:
        server.stop()  # lets its ports go


def test_settings_go_with_each_insert(clickhouse: ClickHouseServer, table: str) -> None:
    """``settings=`` are ClickHouse settings in the insert's URL: a query size limit too
    small for the INSERT statement, and ``readonly``, make the server refuse it."""
    roomy = ClickHouseWriter(clickhouse.url, table, settings={"max_query_size": 1000})
    assert "max_query_size=1000" in roomy.target()
    assert "date_time_input_format=best_effort" in roomy.target()
    roomy.write([_line(1)])
    tight = ClickHouseWriter(clickhouse.url, table, settings={"max_query_size": 10})
    with pytest.raises(DeliveryError) as caught:
        tight.write([_line(2)])
    assert ({0: "http_400"}, ()) == (caught.value.dropped, caught.value.retry)
    assert "Max query size exceeded" in str(caught.value)
    readonly = ClickHouseWriter(clickhouse.url, table, settings={"readonly": True})
    with pytest.raises(DeliveryError) as caught:
        readonly.write([_line(3)])
    assert {0: "clickhouse_164"} == caught.value.dropped
    assert [1] == _seqs(clickhouse, table)


@pytest.mark.parametrize("insert_format", ["JSONEachRow", "TabSeparated"])
def test_the_server_killed_mid_stream_and_restarted(
    clickhouse: ClickHouseServer, tmp_path: Path, insert_format: str
) -> None:
    """A server of its own is killed while records stream in and started again on the
    same port and data: the async backend retries; every record logged is stored or
    counted as dropped, and duplicates (an insert taken just before the kill, its answer
    lost) are at most one batch. In both insert formats."""
    server = ClickHouseServer(tmp_path / "restarting", clickhouse.binary)  # not the shared one
    server.start()
    try:
        create_table(server.url, "logs", columns={"seq": "UInt64"})
        writer = ClickHouseWriter(
            server.url,
            "logs",
            timeout=5,
            max_error_retries=100,
            error_retry_delay=0.05,
            max_delay=0.5,
            insert_format=insert_format,
        )
        pipeline = keeping_pipeline(writer, batch_size=500, max_queue_size=100_000)
        log = kakashi.get_logger("stream", pipeline)
        logged = 0

        def produce(until: int) -> None:
            nonlocal logged
            while logged < until:
                log.info("tick", seq=logged)
                logged += 1
                if logged % 100 == 0:
                    time.sleep(0.005)

        producer = threading.Thread(target=produce, args=(4_000,))
        producer.start()
        while logged < 2_000 and producer.is_alive():
            time.sleep(0.01)
        server.stop(restart=True)  # mid-stream (unless the producer ends first)
        producer.join()
        produce(logged + 1_000)  # logged while the server is down, whatever the timing
        server.start()
        produce(logged + 1_000)  # and after it is back
        assert pipeline.flush(60.0).complete
        stats = pipeline.stats()
        rows = server.rows(
            "SELECT count() AS n, uniqExact(seq) AS distinct FROM logs WHERE logger = 'stream'"
        )[0]
        pipeline.shutdown()
    finally:
        server.stop()
    stored, distinct = int(rows["n"]), int(rows["distinct"])
    assert balanced(stats)
    dropped = stats["messages_dropped"]
    assert logged == distinct + dropped
    assert stored - distinct <= 500


def test_drop_expired_partitions_is_retention_without_ttl(
    clickhouse: ClickHouseServer, table: str
) -> None:
    """Day partitions older than *days* are dropped whole; the others stay."""
    writer = ClickHouseWriter(clickhouse.url, table)
    days = ["2026-01-01", "2026-01-20", "2026-01-30", "2026-01-31"]
    writer.write([_line(i, timestamp=f"{day}T12:00:00Z") for i, day in enumerate(days)])
    dropped = drop_expired_partitions(
        clickhouse.url, table, days=10, today=datetime.date(2026, 1, 31)
    )
    assert ["20260101", "20260120"] == dropped
    assert [2, 3] == _seqs(clickhouse, table)


def test_create_table_sql_modern_and_legacy() -> None:
    """The recommended table: DateTime64 and TTL on current servers; seconds plus a
    microseconds column, and no TTL, on 18.16; extra columns before ``fields``."""
    modern = create_table_sql("logs", database="ops", columns={"user_id": "UInt64"}, ttl_days=7)
    assert "CREATE TABLE IF NOT EXISTS `ops`.`logs`" in modern
    assert "`timestamp` DateTime64(6, 'UTC')" in modern
    assert "PARTITION BY toYYYYMMDD(timestamp)" in modern
    assert "TTL toDateTime(timestamp) + INTERVAL 7 DAY" in modern
    assert modern.index("`user_id` UInt64") < modern.index("`fields`")
    legacy = create_table_sql("logs", version=(18, 16))
    assert "`timestamp` DateTime('UTC')" in legacy and "`timestamp_us` UInt32" in legacy
    assert "TTL" not in legacy
    assert "TTL toDateTime(timestamp) + INTERVAL 30 DAY" in create_table_sql(
        "logs", version=(19, 6)
    )
    assert "TTL" not in create_table_sql("logs", ttl_days=None)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ClickHouseWriter("http://h:8123", ""), "table"),
        (lambda: ClickHouseWriter("http://h:8123", "t", database=""), "database"),
        (lambda: ClickHouseWriter("http://h:8123", "t", settings={"a b": 1}), "setting name"),
        (lambda: ClickHouseWriter("http://h:8123", "t", settings={"query": "x"}), "setting"),
        (lambda: ClickHouseWriter("http://h:8123", "t", settings={"x": [1]}), "settings: x"),
        (lambda: ClickHouseWriter("http://h:8123", "t", max_split_requests=-1), "max_split"),
        (lambda: ClickHouseWriter("http://h:8123", "t", columns=["a"]), "columns"),
        (lambda: ClickHouseWriter("ftp://h", "t"), "url"),
        (lambda: create_table_sql("t", ttl_days=0), "ttl_days"),
        (lambda: create_table_sql("t", columns={"level": "String"}), "reserved"),
        (lambda: drop_expired_partitions("http://h", "t", days=0), "days"),
    ],
)
def test_bad_configuration_is_refused_at_once(call: Any, message: str) -> None:
    """Each mistake raises ValueError naming the parameter, before any request."""
    with pytest.raises(ValueError, match=message):
        call()


def test_the_shipping_benchmark_runs_and_prints_the_ratios(clickhouse: ClickHouseServer) -> None:
    """benchmarks/shipping.py (a server of its own, both targets, every record counted)
    runs to the end with tiny figures; the numbers themselves are not judged here."""
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "shipping.py"
    result = subprocess.run(
        [sys.executable, str(script), "--records", "500", "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert 0 == result.returncode, result.stdout + result.stderr
    assert "ratio clickhouse/file: caller cost" in result.stdout
    assert "ratio clickhouse-tsv/file: caller cost" in result.stdout


def _expected_row(event: dict[str, Any], kinds: dict[str, int]) -> dict[str, Any]:
    """The row the writer makes of *event*, spelled out (the reference for both builds)."""
    row: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in event.items():
        if key not in kinds:
            extra[key] = value
        elif value is None:
            pass
        elif kinds[key] == 1 and not isinstance(value, str):
            row[key] = orjson.dumps(value).decode()
        elif kinds[key] == 2 and isinstance(value, bool):
            row[key] = int(value)
        else:
            row[key] = value
    if "timestamp_us" not in row:
        from kakashi.writers.clickhouse import _microseconds

        row["timestamp_us"] = _microseconds(event.get("timestamp"))
    if extra:
        row["fields"] = orjson.dumps(extra).decode()
    return row


def test_rows_are_the_same_json_in_both_builds(impl: Any) -> None:
    """The compiled build writes each row's JSON itself, the pure one serialises row dicts
    at once: for lines with every kind of value (nulls, booleans in number columns,
    lists in String columns, escapes, non-ASCII, the microseconds column given) the
    body is the rows' JSON separated by commas, the same bytes from both; lines that
    are not JSON objects are reported by index. The microseconds column gets the
    timestamp's (the JSON formatter's form read in C, any other by _microseconds)."""
    kinds = {"timestamp": 0, "timestamp_us": 2, "level": 1, "message": 1, "user_id": 2}
    events: list[dict[str, Any]] = [
        {"timestamp": "2026-11-27T18:06:00.123456Z", "level": "INFO", "message": "plain"},
        {"timestamp": "2026-11-27T18:06:00.000042Z", "user_id": True, "message": None},
        {"timestamp": "2026-11-27T18:06:00.12345xZ", "user_id": False},
        {"timestamp": "2026-11-27T19:06:00.5+01:00", "user_id": 0},
        {"message": ["a", 1, None], "level": {"k": 1.5}, "seq": 2**64 - 1, "x": None},
        {"message": 'quote " backslash \\ newline \n tab \t bell \x07 é 🎉 \u2028'},
        {"timestamp_us": 7, "timestamp": "2026-11-27T18:06:00.999999Z", "deep": {"a": [{}]}},
        {"user_id": 3, "f": 0.1, "g": -0.0, "h": 1e-7, "i": 1e22, "fields": "mine"},
        {},
    ]
    lines = [json.dumps(event, ensure_ascii=False).encode() for event in events]
    lines[2:2] = [b"not json", b"[1, 2]"]
    from kakashi.writers.clickhouse import _microseconds

    rows, indices, dropped = impl.format.clickhouse_rows(
        lines, kinds, "timestamp_us", "fields", _microseconds
    )
    expected = [_expected_row(event, kinds) for event in events]
    assert [0, 1, 4, 5, 6, 7, 8, 9, 10] == indices
    assert {2: "not_json", 3: "not_json"} == dropped
    body = impl.format.clickhouse_body(rows)
    assert b",".join(orjson.dumps(row) for row in expected) == body
    assert expected == json.loads(b"[" + body + b"]")


def _edge_lines() -> list[Any]:
    """Lines at the edges of the canonical form (see the test below), and beyond."""
    stamp = '"timestamp":"2026-11-27T18:06:00.123456Z"'
    bodies = [
        '"level":"INFO","message":"plain","seq":1',
        '"message":"q\\"b\\\\n\\n\\t\\u0007\\u001f\\u007f é 🎉"',
        '"user_id":123456789012345678,"big":123456789012345678,"neg":-42,"zero":0',
        '"a":1.5,"b":9.0,"c":0.25,"d":-0.5,"e":123456789012345.0,"f":0.123456789012345',
        '"user_id":true,"level":false,"message":7,"x":null,"timestamp_us":null',
        '"user_id":7.5,"level":1.25,"flag":false,"none":null',
        '"timestamp_us":5,"fields":"mine","é":"key"',
    ]
    # Each alone in a line, in a place where copying it as it is would show.
    bodies += [
        f'"level":"INFO","x":{value}'
        for value in (
            '"\\u0041"',
            '"\\/"',
            '"\\u0008"',
            '"\\ud83c\\udf89"',
            '"\\u00e9"',
            '"\\u001F"',
            "1234567890123456789",
            "-0",
            "1.50",
            "0.05",
            "0.0000001",
            "0.0",
            "1e5",
            "1E2",
            "12345678901234.56",
            "1.0e1",
            '{"k":[1,"a",null]}',
            "[1]",
        )
    ]
    bodies += ['"level":"WARN","level":"INFO"', '"a\\"q":1', '"message":-0']
    lines = [f"{{{stamp},{body}}}".encode() for body in bodies]
    lines += [f"{{{body}}}".encode() for body in bodies[:2]]  # no timestamp: _microseconds
    lines += [
        b'{"timestamp":"2026-11-27T18:06:00.12345xZ","level":"INFO"}',
        b'{"timestamp":5}',
        b"{}",
        b'{"message":"a" }',
        b'{"message": "a"}',
        b'{"message":"a"}\n',
        b'{"timestamp":"2026-11-27T18:06:00.123456Z","message":"bad \xed\xa0\x80 surrogate"}',
        b'{"timestamp":"2026-11-27T18:06:00.123456Z","message":"overlong \xc0\xaf"}',
        b'{"message":"cut',
        b'{"timestamp":"2026-11-27T18:06:00.123456Z","message":"\x01 raw control"}',
        bytearray(b'{"level":"INFO"}'),
    ]
    return lines


def test_canonical_lines_give_the_rows_parsed_lines_give(impl: Any) -> None:
    """The compiled build copies the lines in the form orjson writes (the JSON
    formatter's) into rows piece by piece, without the GIL, and parses any other: lines
    at the edges of that form (escapes orjson writes and ones it does not, non-ASCII and
    malformed UTF-8, ints at 18 and 19 digits, decimals in and out of their shortest
    spelling, exponents, -0, a key twice, nested values, trailing bytes) give the rows
    the reference makes of what they parse to, in both builds, or are reported as not
    JSON objects."""
    kinds = {"timestamp": 0, "timestamp_us": 2, "level": 1, "message": 1, "user_id": 2}
    lines = _edge_lines()
    from kakashi.writers.clickhouse import _microseconds

    rows, indices, dropped = impl.format.clickhouse_rows(
        lines, kinds, "timestamp_us", "fields", _microseconds
    )
    expected: list[bytes] = []
    not_json: dict[int, str] = {}
    for index, line in enumerate(lines):
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            not_json[index] = "not_json"
            continue
        expected.append(orjson.dumps(_expected_row(event, kinds)))
    assert not_json == dropped
    assert [i for i in range(len(lines)) if i not in not_json] == indices
    assert expected == [impl.format.clickhouse_body([row]) for row in rows]
    assert b",".join(expected) == impl.format.clickhouse_body(rows)


def test_a_long_batch_is_made_into_rows_a_chunk_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch longer than a chunk is made into rows chunk by chunk (the compiled rows
    let the application's threads run between chunks): the same rows, and the lines
    that are not JSON objects reported at their place in the whole batch."""
    import kakashi.writers.clickhouse as module

    columns = {"timestamp": "DateTime('UTC')", "timestamp_us": "UInt32", "message": "String"}
    writer = ClickHouseWriter("http://127.0.0.1:9", "t", columns=columns)
    batch = [_line(n) for n in range(10)]
    batch[0:0], batch[5:5], batch[11:11] = [b"not json"], [b"[1]"], [b"{"]
    whole = writer._rows(batch)
    monkeypatch.setattr(module, "_CHUNK", 3)
    chunked = writer._rows(batch)
    assert {0: "not_json", 5: "not_json", 11: "not_json"} == chunked[2] == whole[2]
    assert [i for i in range(13) if i not in (0, 5, 11)] == chunked[1] == whole[1]
    assert module.clickhouse_body(whole[0]) == module.clickhouse_body(chunked[0])


def test_a_taken_port_is_replaced_on_first_start(tmp_path: Path) -> None:
    """The harness itself: another process binding the chosen port between the probe and
    the server's start (as on a shared CI machine) makes the first start try fresh ports
    instead of failing the run."""
    if shutil.which("clickhouse-server") is None:
        pytest.skip("clickhouse-server is not installed")
    server = ClickHouseServer(tmp_path / "taken")
    taken = server.http_port
    with socket.socket() as squatter:  # SO_REUSEADDR, as servers bind: it shares the hold
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        server.start()
        try:
            assert taken != server.http_port
            assert "1\n" == server.query("SELECT 1")
        finally:
            server.stop()


# -- TabSeparated inserts -------------------------------------------------------------------

TSV_COLUMNS = [
    ("timestamp", 3, b"0"),
    ("timestamp_us", 2, b"0"),
    ("level", 1, b""),
    ("message", 1, b""),
    ("user_id", 2, b"0"),
    ("note", 0, b"\\N"),
    ("fields", 1, b""),
]


def _tsv_text(text: str) -> str:
    """*text* escaped as ClickHouse writes TabSeparated text, spelled out."""
    out = []
    for char in text:
        out.append(
            {
                "\\": "\\\\",
                "\t": "\\t",
                "\n": "\\n",
                "\r": "\\r",
                "\b": "\\b",
                "\f": "\\f",
                "\0": "\\0",
            }.get(char, char)
        )
    return "".join(out)


def _expected_tsv_row(event: dict[str, Any]) -> bytes:
    """The TabSeparated row the writer makes of *event* for TSV_COLUMNS, spelled out."""
    from kakashi.writers.clickhouse import _microseconds

    names = {name for name, _, _ in TSV_COLUMNS if name != "fields"}
    texts = []
    for name, kind, default in TSV_COLUMNS:
        value = event.get(name)
        if name == "fields":
            extra = {key: item for key, item in event.items() if key not in names}
            text = _tsv_text(orjson.dumps(extra).decode()) if extra else default.decode()
        elif value is None:
            text = (
                str(_microseconds(event.get("timestamp")))
                if name == "timestamp_us"
                else default.decode()
            )
        elif isinstance(value, bool) and kind == 2:
            text = str(int(value))
        elif isinstance(value, str):
            shape = "dddd-dd-ddTdd:dd:dd.ddddddZ"  # the shape only: a bad date is the server's
            stamp = kind == 3 and len(value) == len(shape)
            stamp = stamp and all(
                char in "0123456789" if form == "d" else char == form
                for char, form in zip(value, shape, strict=False)
            )
            text = value[:10] + " " + value[11:19] + "Z" if stamp else _tsv_text(value)
        elif kind == 3 and type(value) is int:
            text = datetime.datetime.fromtimestamp(value, datetime.timezone.utc).strftime(
                "%Y-%m-%d %H:%M:%SZ"
            )
        else:
            text = _tsv_text(orjson.dumps(value).decode())
        texts.append(text)
    return ("\t".join(texts) + "\n").encode()


def test_tab_separated_rows_are_the_same_in_both_builds(impl: Any) -> None:
    """The compiled build copies canonical lines into TabSeparated rows without the GIL
    (orjson's escapes are ClickHouse's but for the quote and \\u00XX); every line at the
    edges of that form, and beyond it, gives the row spelled out here in both builds:
    columns in the insert's order, a missing key or null as the column's default,
    booleans as 1/0 in number columns, the JSON formatter's timestamp as
    ``YYYY-MM-DD hh:mm:ss`` in a DateTime column, other keys as JSON in ``fields``."""
    from kakashi.writers.clickhouse import _microseconds

    lines = _edge_lines()
    lines += [
        b'{"timestamp":"2026-11-27T18:06:00.123456Z","note":"a\\u0000b\\u0001c","user_id":"7"}',
        b'{"timestamp":"2026-13-27T18:06:00.123456Z","note":true,"fields":{"k":"\\\\"}}',
        b'{"timestamp":"2026-11-27 18:06:00.123456Z","note":1.5,"message":false}',
        b'{"timestamp":1764680405,"level":"INFO"}',
        b'{"timestamp":1764680405.5,"level":"INFO"}',
    ]
    rows, indices, dropped = impl.format.clickhouse_tsv_rows(
        lines, TSV_COLUMNS, "timestamp_us", "fields", _microseconds, 3
    )
    expected: list[bytes] = []
    not_json: dict[int, str] = {}
    for index, line in enumerate(lines, 3):
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            not_json[index] = "not_json"
            continue
        if not isinstance(event, dict):
            not_json[index] = "not_json"
            continue
        expected.append(_expected_tsv_row(event))
    assert not_json == dropped
    assert [i for i in range(3, len(lines) + 3) if i not in not_json] == indices
    assert expected == rows
    # A batch the compiled build makes without parsing.
    batch = [_line(n, user_id=n, note=f"n\t{n}") for n in range(50)]
    canonical = [orjson.dumps(orjson.loads(line)) for line in batch]
    rows = impl.format.clickhouse_tsv_rows(
        canonical, TSV_COLUMNS, "timestamp_us", "fields", _microseconds
    )[0]
    assert [_expected_tsv_row(orjson.loads(line)) for line in canonical] == rows
    # A name given twice gets the value once, its default after.
    twice = [("level", 1, b""), ("level", 2, b"0"), ("message", 1, b"")]
    rows = impl.format.clickhouse_tsv_rows(canonical[:1], twice, None, None, _microseconds)[0]
    assert [b"INFO\t0\trecord 0\n"] == rows


def _tsv_events() -> list[dict[str, Any]]:
    """Records with every kind of value a log line holds, each with its ``seq``."""
    return [
        {"message": "plain", "user_id": 1},
        {"message": 'quote " backslash \\ tab \t newline \n cr \r nul \0 bell \x07 é 🎉'},
        {"message": None, "user_id": None, "path": None, "extra": None},
        {"user_id": True, "path": ["a", 1], "level": 3.5},
        {"timestamp": "2026-01-02T05:04:05.5+02:00", "user_id": 2**63},
        {"path": {"k": "v\\"}, "tags": ["x", "\t"], "n": 0.1},
        {"logger": "l\\n", "message": "\\N"},
        {},
    ]


def test_tab_separated_inserts_store_what_json_inserts_store(
    clickhouse: ClickHouseServer,
) -> None:
    """The same records, inserted as TabSeparated into one table and as JSONEachRow
    into another, are the same rows: every column, escapes, non-ASCII, nulls and
    missing keys (the recommended table's columns have no DEFAULT expression), a
    timestamp in another form (read by ``best_effort``), fields as JSON."""
    tables = {}
    for insert_format in ("JSONEachRow", "TabSeparated"):
        name = f"logs_{next(_names)}_{insert_format}"
        create_table(clickhouse.url, name, columns=FIELDS)
        writer = ClickHouseWriter(clickhouse.url, name, insert_format=insert_format)
        writer.write([_line(seq, **event) for seq, event in enumerate(_tsv_events())])
        assert len(_tsv_events()) == writer.rows_delivered
        tables[insert_format] = name
    assert "FORMAT%20TabSeparated" in writer.target()
    stored = {
        insert_format: clickhouse.rows(f"SELECT * FROM {name} ORDER BY fields")
        for insert_format, name in tables.items()
    }
    assert stored["JSONEachRow"] == stored["TabSeparated"]
    by_seq = {json.loads(row["fields"])["seq"]: row for row in stored["TabSeparated"]}
    assert _tsv_events()[1]["message"] == by_seq[1]["message"]
    assert ("0", "", "") == (by_seq[2]["user_id"], by_seq[2]["path"], by_seq[2]["message"])
    assert "\\N" == by_seq[6]["message"]


def test_a_bad_row_in_a_tab_separated_insert_is_isolated(
    clickhouse: ClickHouseServer, table: str
) -> None:
    """A value the column cannot take fails a TabSeparated insert as it fails a
    JSONEachRow one: the writer bisects, drops the row under ClickHouse's code and
    stores the others."""
    lines = [_line(i, user_id=i) for i in range(60)]
    lines[41] = _line(41, user_id="not a number")
    writer = ClickHouseWriter(clickhouse.url, table, insert_format="TabSeparated")
    with pytest.raises(DeliveryError) as caught:
        writer.write(lines)
    error = caught.value
    assert [41] == list(error.dropped)
    code = int(error.dropped[41].removeprefix("clickhouse_"))
    assert code in DATA_ERROR_CODES
    assert () == error.retry
    assert [i for i in range(60) if i != 41] == _seqs(clickhouse, table)


def test_a_table_tab_separated_cannot_fill_is_inserted_as_json(
    clickhouse: ClickHouseServer,
) -> None:
    """Columns the insert cannot name (MATERIALIZED) are left out of a TabSeparated
    insert; a column whose default has no known text (an Enum) makes the writer insert
    as JSONEachRow, said once; with ``columns=`` given, that is an error at once."""
    name = f"logs_{next(_names)}_computed"
    clickhouse.query(
        f"CREATE TABLE {name} (timestamp DateTime('UTC'), message String, fields String, "
        "day Date MATERIALIZED toDate(timestamp)) ENGINE = MergeTree ORDER BY timestamp"
    )
    writer = ClickHouseWriter(clickhouse.url, name, insert_format="TabSeparated")
    writer.write([_line(1), _line(2)])
    assert "FORMAT%20TabSeparated" in writer.target() and "day" not in writer.target()
    assert [{"day": "2026-11-27", "message": "record 1"}] == clickhouse.rows(
        f"SELECT day, message FROM {name} ORDER BY message LIMIT 1"
    )

    enum = f"logs_{next(_names)}_enum"
    clickhouse.query(
        f"CREATE TABLE {enum} (timestamp DateTime('UTC'), level Enum8('INFO' = 1, "
        "'WARNING' = 2), message String) ENGINE = MergeTree ORDER BY timestamp"
    )
    writer = ClickHouseWriter(clickhouse.url, enum, insert_format="TabSeparated")
    writer.write([_line(1), _line(2, level="WARNING")])
    assert "FORMAT%20JSONEachRow" in writer.target()
    assert ["INFO", "WARNING"] == [
        row["level"] for row in clickhouse.rows(f"SELECT level FROM {enum} ORDER BY level")
    ]
    assert [1] == list(_errors.error_counts().values())
    with pytest.raises(ValueError, match="Enum8"):
        ClickHouseWriter(
            clickhouse.url,
            enum,
            insert_format="TabSeparated",
            columns={"timestamp": "DateTime('UTC')", "level": "Enum8('INFO' = 1)"},
        )
    with pytest.raises(ValueError, match="insert_format"):
        ClickHouseWriter(clickhouse.url, enum, insert_format="CSV")


def test_tab_separated_times_and_arrays_are_stored_as_json_stores_them(
    clickhouse: ClickHouseServer,
) -> None:
    """DateTime columns in any time zone get the same moment in both formats (the
    formatter's timestamp is sent with its ``Z``, a Unix time as a UTC time, a missing
    or null one as the epoch, not as ``best_effort``'s reading of a bare ``0``, the year
    2000); arrays of numbers go as they are; an ``Array(String)`` column, whose text
    would need single quotes, makes the writer insert as JSONEachRow."""
    stamp = "2026-12-02T13:00:05.123456Z"
    events: list[dict[str, Any]] = [
        {"at": stamp, "plain": stamp, "nums": [1, 2]},
        {"at": 1764680405, "plain": 1764680405, "nums": []},
        {"at": None, "plain": None, "nums": None},
        {"timestamp": None},
        {"timestamp": "2026-12-02T13:00:05+09:00"},
    ]
    stored = {}
    for insert_format in ("JSONEachRow", "TabSeparated"):
        name = f"logs_{next(_names)}_times_{insert_format}"
        clickhouse.query(
            f"CREATE TABLE {name} (timestamp DateTime('UTC'), message String, "
            "at DateTime('Asia/Tokyo'), plain DateTime, nums Array(UInt32), fields String) "
            "ENGINE = MergeTree ORDER BY message"
        )
        writer = ClickHouseWriter(clickhouse.url, name, insert_format=insert_format)
        writer.write([_line(seq, **event) for seq, event in enumerate(events)])
        assert f"FORMAT%20{insert_format}" in writer.target()
        stored[insert_format] = clickhouse.rows(
            f"SELECT *, toUnixTimestamp(at) AS at_unix, toUnixTimestamp(plain) AS plain_unix, "
            f"toUnixTimestamp(timestamp) AS stamp_unix FROM {name} ORDER BY message"
        )
    assert stored["JSONEachRow"] == stored["TabSeparated"]
    first, second, third, fourth = stored["TabSeparated"][:4]
    assert (1796216405, 1796216405) == (first["at_unix"], first["plain_unix"])  # the stamp
    assert (1764680405, 1764680405) == (second["at_unix"], second["plain_unix"])
    assert "2026-12-02 22:00:05" == first["at"]  # shown in Tokyo time
    assert (0, 0, 0) == (third["at_unix"], third["plain_unix"], fourth["stamp_unix"])
    assert [1, 2] == first["nums"]

    strings = f"logs_{next(_names)}_strings"
    clickhouse.query(
        f"CREATE TABLE {strings} (timestamp DateTime('UTC'), tags Array(String)) "
        "ENGINE = MergeTree ORDER BY timestamp"
    )
    writer = ClickHouseWriter(clickhouse.url, strings, insert_format="TabSeparated")
    writer.write([_line(1, tags=["q'q", "b\\s", "n\nl"])])
    assert "FORMAT%20JSONEachRow" in writer.target()
    assert [{"tags": ["q'q", "b\\s", "n\nl"]}] == clickhouse.rows(f"SELECT tags FROM {strings}")
