"""Faults between an HttpWriter and its collector (#14 section 5), each counted: records
logged == delivered (what the collector stored) + dropped (get_async_stats), nothing
pending after a flush, and no log call held up by the collector."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

pytest.importorskip("urllib3")

from kakashi.writers.delivery import DeliveryError
from kakashi.writers.http import HttpWriter, Response
from tests.conftest import HeldPort, HttpCollector, balanced
from tests.conftest import keeping_pipeline as pipeline


def stored(*collectors: HttpCollector) -> list[int]:
    """The ``i`` of every record the collectors answered 2xx for, in arrival order (drop
    notices left out)."""
    ids = []
    for collector in collectors:
        for _path, _headers, body, status in collector.received:
            if 200 <= status < 300:
                ids.extend(item["i"] for item in map(json.loads, body.splitlines()) if "i" in item)
    return ids


def writer_stats(stats: dict[str, Any], writer: object) -> dict[str, Any]:
    (entry,) = [entry for entry in stats["writers"] if entry["writer"] == repr(writer)]
    return entry


def account(logged: int, delivered: list[int], stats: dict[str, Any]) -> None:
    """The books: every record logged was delivered once or counted as dropped."""
    assert len(delivered) == len(set(delivered)), "a record was delivered twice"
    assert (logged, 0) == (len(delivered) + stats["messages_dropped"], stats["pending"])
    assert balanced(stats)
    assert sum(stats["write_error_by_reason"].values()) == stats["dropped_by_reason"]["write_error"]


def log_until_delivered(log: Any, pipe: Any, start: int, collectors: Any, limit: float) -> int:
    """Log a record every few tenths of a second until the collector stores one; return
    the next ``i``. Bounded by *limit* seconds (a collector that never comes back fails)."""
    deadline = time.monotonic() + limit
    i = start
    while not set(stored(*collectors)) & set(range(start, i)):
        assert time.monotonic() < deadline, "delivery did not resume"
        log.info("r", i=i)
        i += 1
        pipe.flush(10)
        time.sleep(0.2)
    return i


def test_a_collector_down_at_start_then_up(held_port: HeldPort) -> None:
    """Nothing listens at first: records are retried, then counted (``connect``) and the
    circuit opens; once the collector is up, delivery resumes and the circuit closes."""
    port = held_port.port  # no other process can take it before the collector does
    writer = HttpWriter(
        f"http://127.0.0.1:{port}/logs",
        compression=None,
        timeout=5,
        max_error_retries=1,
        error_retry_delay=0.01,
    )
    pipe = pipeline(writer, batch_size=1)
    log = pipe.get_logger("t")
    for i in range(4):
        log.info("r", i=i)
        assert pipe.flush(10).complete
    down = pipe.stats()
    assert "open" == writer_stats(down, writer)["circuit"]
    assert 3 == down["write_error_by_reason"]["connect"]
    collector = HttpCollector(port).start()
    try:
        i = log_until_delivered(log, pipe, 4, [collector], limit=30)
        for j in range(i, i + 10):
            log.info("r", i=j)
        assert pipe.flush(10).complete
        stats = pipe.stats()
        assert "closed" == writer_stats(stats, writer)["circuit"]
        assert set(range(i, i + 10)) <= set(stored(collector))
        account(i + 10, stored(collector), stats)
        assert {"connect", "circuit_open"} >= set(stats["write_error_by_reason"])
    finally:
        collector.kill()


def test_a_collector_dying_mid_stream_and_coming_back(held_port: HeldPort) -> None:
    """The collector dies (kept-alive connections cut) and comes back on its port: the
    records meanwhile are retried or counted, never lost uncounted, and delivery resumes
    in order."""
    port = held_port.port  # held while the collector is down, so it can come back on it
    first = HttpCollector(port).start()
    writer = HttpWriter(f"{first.url}/logs", compression="gzip", timeout=5, error_retry_delay=0.01)
    pipe = pipeline(writer, batch_size=5)
    log = pipe.get_logger("t")
    try:
        for i in range(20):
            log.info("r", i=i)
        assert pipe.flush(10).complete
        assert list(range(20)) == stored_gzip(first)
    finally:
        first.kill()
    for i in range(20, 40):
        log.info("r", i=i)
    assert pipe.flush(30).complete
    second = HttpCollector(port).start()
    try:
        i = log_until_delivered_gzip(log, pipe, 40, second, limit=30)
        for j in range(i, i + 20):
            log.info("r", i=j)
        assert pipe.flush(10).complete
        stats = pipe.stats()
        delivered = stored_gzip(first) + stored_gzip(second)
        assert delivered == sorted(delivered)
        assert set(range(i, i + 20)) <= set(delivered)
        account(i + 20, delivered, stats)
        assert stats["messages_dropped"] >= 20  # what was logged while it was down
    finally:
        second.kill()


def stored_gzip(collector: HttpCollector) -> list[int]:
    """As :func:`stored`, for gzip request bodies."""
    import gzip

    ids = []
    for _path, headers, body, status in collector.received:
        assert "gzip" == headers.get("Content-Encoding")
        if 200 <= status < 300:
            lines = gzip.decompress(body).splitlines()
            ids.extend(item["i"] for item in map(json.loads, lines) if "i" in item)
    return ids


def log_until_delivered_gzip(log: Any, pipe: Any, start: int, collector: Any, limit: float) -> int:
    deadline = time.monotonic() + limit
    i = start
    while not set(stored_gzip(collector)):
        assert time.monotonic() < deadline, "delivery did not resume"
        log.info("r", i=i)
        i += 1
        pipe.flush(10)
        time.sleep(0.2)
    return i


def test_a_collector_that_never_answers(collector: HttpCollector) -> None:
    """The collector accepts requests and never answers: the writer's timeout bounds each
    try, and the records are retried (delivered once the collector answers again) or
    counted (``timeout``)."""
    timeout = 1.0
    collector.answers = [(200, {}, b"{}", "never")] * 2
    writer = HttpWriter(
        f"{collector.url}/logs",
        compression=None,
        timeout=timeout,
        max_error_retries=0,
        error_retry_delay=0.01,
    )
    pipe = pipeline(writer, batch_size=10)
    log = pipe.get_logger("t")
    logged = 0
    deadline = time.monotonic() + 2 * timeout  # log while the collector hangs
    while time.monotonic() < deadline:
        log.info("r", i=logged)
        logged += 1
        time.sleep(0.002)
    assert pipe.flush(30).complete
    stats = pipe.stats()
    delivered = stored(collector)
    assert writer_stats(stats, writer)["errors"] >= 1
    assert {"timeout"} >= set(stats["write_error_by_reason"])
    assert stats["messages_dropped"] > 0
    assert delivered == sorted(delivered)
    account(logged, delivered, stats)


def test_log_calls_return_while_the_collector_holds_a_request(collector: HttpCollector) -> None:
    """The caller is never held up by the collector: while the collector holds the one
    request in flight (until the test lets it go), every log call returns, and the request
    is still unanswered when they all have. A regression that made log calls wait for
    delivery would see the request answered first (the hold ends after 60 s at most)."""
    arrived, release = threading.Event(), threading.Event()

    def hold(path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        arrived.set()
        release.wait(60)  # bounded: a failing test never leaves the server thread waiting
        return (200, {}, b"{}")

    collector.answers = [hold]
    writer = HttpWriter(f"{collector.url}/logs", compression=None, timeout=120)
    pipe = pipeline(writer, batch_size=10)
    log = pipe.get_logger("t")
    log.info("r", i=0)
    assert arrived.wait(60), "the first request never came"
    for i in range(1, 1000):
        log.info("r", i=i)
    answered, held = list(collector.received), pipe.stats()
    release.set()
    assert ([], 1000) == (answered, held["messages_enqueued"])
    assert 0 == writer_stats(held, writer)["errors"]
    assert pipe.flush(30).complete
    account(1000, stored(collector), pipe.stats())
    assert list(range(1000)) == stored(collector)


def test_a_host_name_that_does_not_resolve() -> None:
    """A collector host that does not resolve: each record is counted under ``dns``."""
    writer = HttpWriter(
        "http://collector.invalid/logs", timeout=5, max_error_retries=1, error_retry_delay=0.01
    )
    pipe = pipeline(writer)
    log = pipe.get_logger("t")
    for i in range(5):
        log.info("r", i=i)
    assert pipe.flush(60).complete
    stats = pipe.stats()
    assert {"dns": 5} == stats["write_error_by_reason"]
    assert 5 == writer_stats(stats, writer)["dropped_by_reason"]["dns"]
    account(5, [], stats)


def test_429_with_retry_after_is_waited_for(collector: HttpCollector) -> None:
    """A 429 with ``Retry-After: 1``: the batch is sent again no sooner than a second
    later (the writer's own backoff is 10 ms), then delivered once."""
    arrivals: list[float] = []

    def slow_down(path: str, headers: Any, body: bytes) -> Any:
        arrivals.append(time.monotonic())
        return (429, {"Retry-After": "1"}, b"slow down")

    def fine(path: str, headers: Any, body: bytes) -> Any:
        arrivals.append(time.monotonic())
        return (200, {}, b"{}")

    collector.answers = [slow_down, fine]
    writer = HttpWriter(
        f"{collector.url}/logs", compression=None, error_retry_delay=0.01, max_delay=0.05
    )
    pipe = pipeline(writer, batch_size=10)
    log = pipe.get_logger("t")
    for i in range(10):
        log.info("r", i=i)
    assert pipe.flush(30).complete
    stats = pipe.stats()
    assert 1.0 <= arrivals[1] - arrivals[0]
    assert 429 == collector.received[0][3]
    account(10, stored(collector), stats)
    assert 0 == stats["messages_dropped"]


class BulkWriter(HttpWriter):
    """A bulk API in miniature: the answer lists each item's status, as Elasticsearch's
    ``_bulk`` does; 429 items are retried, others that failed are dropped."""

    def check(self, batch: Sequence[bytes], response: Response) -> None:
        items = json.loads(response.body)["items"]
        retry = [k for k, item in enumerate(items) if item["status"] == 429]
        dropped = {k: item["error"] for k, item in enumerate(items) if item["status"] == 400}
        if retry or dropped:
            raise DeliveryError("bulk_items", retry=retry, dropped=dropped)


def test_a_bulk_partial_failure(collector: HttpCollector) -> None:
    """A 200 answer that reports some items failed: the rejected ones (every third) are
    counted under the server's reason, the throttled ones (seen for the first time) are
    sent again alone, and each record is stored once."""
    kept: list[int] = []
    seen: set[int] = set()

    def bulk(path: str, headers: Any, body: bytes) -> Any:
        answers = []
        for item in map(json.loads, body.splitlines()):
            i = item.get("i")
            if i is not None and i % 3 == 2:
                answers.append({"status": 400, "error": "mapper_parsing_exception"})
            elif i is not None and i % 3 == 1 and i not in seen:
                seen.add(i)
                answers.append({"status": 429})
            else:
                if i is not None:
                    kept.append(i)
                answers.append({"status": 201})
        return (200, {}, json.dumps({"items": answers}).encode())

    collector.answers = [bulk] * 1000
    writer = BulkWriter(f"{collector.url}/_bulk", compression=None, error_retry_delay=0.01)
    pipe = pipeline(writer, batch_size=8)
    log = pipe.get_logger("t")
    for i in range(60):
        log.info("r", i=i)
    assert pipe.flush(30).complete
    stats = pipe.stats()
    assert sorted(kept) == [i for i in range(60) if i % 3 != 2]
    assert {"mapper_parsing_exception": 20} == stats["write_error_by_reason"]
    account(60, kept, stats)
