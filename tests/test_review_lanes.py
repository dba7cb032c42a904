"""Attacks on the lanes' joined writes and writes in flight (issue #14): each test is a
way the guarantees of ARCHITECTURE.md could break (books that do not balance, a record
delivered twice, a deadline not kept, a caller blocked by a writer that hangs)."""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from kakashi.writers.delivery import DeliveryError
from tests.conftest import balanced
from tests.conftest import keeping_pipeline as pipeline
from tests.test_delivery_join import Held, fall_behind, numbers


class Stuck:
    """A concurrent writer whose every ``write`` waits for ``release`` (a collector that
    never answers); ``close`` returns at once, as an HTTP client's does."""

    concurrent = True
    error_retry_delay = 0.0
    max_delay = 0.01

    def __init__(self, max_in_flight: int = 1, max_batch_records: int = 0) -> None:
        self.max_in_flight = max_in_flight
        self.max_batch_records = max_batch_records
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)
        self.delivered: list[Any] = []
        self.lock = threading.Lock()

    def write(self, batch: Sequence[bytes]) -> None:
        self.entered.release()
        self.release.wait(20)
        with self.lock:
            self.delivered.extend(json.loads(line) for line in batch)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class Flaky:
    """A concurrent writer with ``max_batch_records`` and ``max_in_flight``: ``answer``
    (given the write's numbers) decides what each write does; notes what arrived."""

    concurrent = True
    error_retry_delay = 0.0
    max_delay = 0.01

    def __init__(self, join: int, in_flight: int, answer: Any) -> None:
        self.max_batch_records = join
        self.max_in_flight = in_flight
        self.answer = answer
        self.lock = threading.Lock()
        self.delivered: list[int] = []
        self.writes = 0

    def write(self, batch: Sequence[bytes]) -> Any:
        items = [json.loads(line) for line in batch]
        with self.lock:
            self.writes += 1
            calls = self.writes
        time.sleep(0.001)
        failed: set[int] = set()
        try:
            result = self.answer(calls, items)
        except DeliveryError as exc:
            failed = {*exc.retry, *exc.dropped}
            raise
        except BaseException:
            failed = set(range(len(items)))
            raise
        else:
            if type(result) is int:  # the last *result* records not taken
                failed = set(range(len(items) - result, len(items)))
        finally:
            with self.lock:
                self.delivered += [
                    item["i"] for k, item in enumerate(items) if k not in failed and "i" in item
                ]
        return result

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.parametrize("error", [SystemExit, KeyboardInterrupt, GeneratorExit])
def test_joined_writes_that_raise_base_exceptions_are_retried_and_counted(error: Any) -> None:
    """A joined write that raises SystemExit, KeyboardInterrupt or another BaseException
    every third time: the lane's threads go on, every record arrives once, books balance."""

    def answer(calls: int, items: list[Any]) -> None:
        if calls % 3 == 0:
            raise error("from the writer")

    writer = Flaky(50, 2, answer)
    pipe = pipeline(writer, batch_size=5, max_error_retries=100)
    log = pipe.get_logger("t")
    for i in range(400):
        log.info("r", i=i)
    assert pipe.flush(30).complete
    assert list(range(400)) == sorted(writer.delivered)
    stats = pipe.stats()
    assert 400 == stats["messages_written"]
    assert balanced(stats)
    assert pipe.shutdown(10)


def test_joined_writes_in_flight_failing_now_and_then_keep_the_books() -> None:
    """Joined writes, two at once, some failing whole (retried), some refusing records
    (dropped), some returning a count of records not taken: every record arrives once
    or is counted once, and the lane's threads end once it is idle."""

    def answer(calls: int, items: list[Any]) -> Any:
        if calls % 5 == 0:
            raise ConnectionError("down")
        if calls % 7 == 0:
            dropped = {k: "refused" for k, item in enumerate(items) if item.get("i", 1) % 13 == 0}
            if dropped:
                raise DeliveryError("bulk", dropped=dropped)
        if calls % 11 == 0 and len(items) > 1:
            return 1  # the last record not taken
        return None

    writer = Flaky(30, 2, answer)
    pipe = pipeline(writer, batch_size=5, max_error_retries=100)
    log = pipe.get_logger("t")
    for i in range(1000):
        log.info("r", i=i)
    assert pipe.flush(30).complete
    stats = pipe.stats()
    delivered = writer.delivered
    assert len(delivered) == len(set(delivered))  # none twice
    assert 1000 == len(delivered) + stats["messages_dropped"]
    assert stats["messages_written"] == len(delivered)
    assert balanced(stats)
    (lane,) = pipe.backend._lanes.values()
    deadline = time.monotonic() + 10
    while lane._threads and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not lane._threads
    assert pipe.shutdown(10)


def two_in_flight(log: Any, writer: Any, count: int) -> None:
    """Log *count* records (``i`` from 0) as batches of 5 so that the first two batches
    are inside *writer*'s two writes (each waits there) and the rest wait behind them."""
    for i in range(5):
        log.info("r", i=i)
    assert writer.entered.acquire(timeout=10)
    for i in range(5, 10):
        log.info("r", i=i)
    assert writer.entered.acquire(timeout=10)
    for i in range(10, count):
        log.info("r", i=i)


def test_shutdown_with_writes_in_flight_hanging_counts_what_waits() -> None:
    """Two writes in flight hang past the shutdown's deadline with more batches waiting:
    the shutdown returns, what waited is counted (``shutdown``), what is in flight is
    reported pending, and the books balance."""
    writer = Stuck(max_in_flight=2)
    pipe = pipeline(writer, batch_size=5, batch_timeout=0.01)
    log = pipe.get_logger("t")
    two_in_flight(log, writer, 30)
    assert pipe.flush(0.3).pending == 30
    result = pipe.shutdown(0.5)
    assert not result.complete
    assert 10 == result.pending
    stats = pipe.stats()
    assert {"shutdown": 20} == stats["write_error_by_reason"]
    assert 10 == stats["pending"]
    assert balanced(stats)
    writer.release.set()
    for lane in list(pipe.backend._every_lane):
        lane.finish(time.monotonic() + 10)
    stats = pipe.stats()
    assert 0 == stats["pending"]
    assert 10 == stats["messages_written"]
    assert balanced(stats)


class PerProcess:
    """A concurrent writer (two writes in flight, joined batches) appending each record's
    ``i`` to a file of the process that writes it; in the process that made it, a write
    waits for ``release``."""

    concurrent = True
    max_in_flight = 2
    max_batch_records = 50

    def __init__(self, directory: Any) -> None:
        self.directory = directory
        self.parent = os.getpid()
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)

    def write(self, batch: Sequence[bytes]) -> None:
        if os.getpid() == self.parent:
            self.entered.release()
            self.release.wait(20)
        with open(self.directory / f"{os.getpid()}.txt", "a") as out:
            for line in batch:
                item = json.loads(line)
                if "i" in item:
                    out.write(f"{item['i']}\n")

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def log_in_a_child(pipe: Any) -> None:
    """In a forked child: log three records and flush; exit 0 if the flush completed."""
    log = pipe.get_logger("child")
    for i in (1000, 1001, 1002):
        log.info("c", i=i)
    os._exit(0 if pipe.flush(10).complete and pipe.stats()["messages_written"] == 3 else 1)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_fork_while_writes_are_in_flight_gives_the_child_fresh_lanes(tmp_path: Any) -> None:
    """A process forks while its lane has two writes in flight and more batches waiting:
    the child logs and delivers its own records, none of the parent's (not in flight,
    not waiting); the parent then delivers all of its own, once."""
    writer = PerProcess(tmp_path)
    pipe = pipeline(writer, batch_size=5, batch_timeout=0.01)
    log = pipe.get_logger("t")
    two_in_flight(log, writer, 30)
    child = multiprocessing.get_context("fork").Process(target=log_in_a_child, args=(pipe,))
    child.start()
    child.join(30)
    assert 0 == child.exitcode
    writer.release.set()
    assert pipe.flush(10).complete
    assert pipe.shutdown(10)
    files = {path.stem: path.read_text().split() for path in tmp_path.iterdir()}
    assert list(range(30)) == sorted(int(i) for i in files.pop(str(os.getpid())))
    (child_lines,) = files.values()
    assert ["1000", "1001", "1002"] == child_lines


def test_elasticsearch_two_in_flight_joined_with_per_item_failures(collector: Any) -> None:
    """A real HTTP bulk endpoint, slow enough for batches to wait and be joined, two
    requests at once, some refused whole (503), some items to retry (429) or refused for
    good (400): every record is stored once or counted once, by reason; only the 429
    ones (and the 503 requests' records) are sent twice."""
    pytest.importorskip("urllib3")
    from kakashi.writers.stores import ElasticsearchWriter
    from tests.test_stores import FakeElasticsearch

    bad = {n for n in range(600) if n % 31 == 5}

    def rule(document: dict[str, Any], attempt: int) -> int | None:
        if document["n"] in bad:
            return 400
        return 429 if document["n"] % 7 == 0 and attempt == 1 else None

    store = FakeElasticsearch(rule)
    requests = 0
    count = threading.Lock()

    def answer(path: str, headers: dict[str, str], body: bytes) -> Any:
        nonlocal requests
        with count:
            requests += 1
            refused = requests % 9 == 4
        if refused:
            return 503, {}, b"busy", 0.01
        return (*store(path, headers, body), 0.01)

    collector.answers.extend([answer] * 10_000)
    writer = ElasticsearchWriter(collector.url, "logs", max_batch_records=120, max_in_flight=2)
    assert 2 == writer.max_in_flight
    pipe = pipeline(writer, batch_size=10, error_retry_delay=0.005, max_error_retries=50)
    log = pipe.get_logger("app")
    for n in range(600):
        log.info(f"m{n}", n=n)
    assert pipe.flush(30).complete
    stats = pipe.stats()
    assert balanced(stats)
    stored = sorted(d["n"] for d in store.stored.values() if d["logger"] == "app")
    assert [n for n in range(600) if n not in bad] == stored
    assert 600 - len(bad) == stats["messages_written"]
    assert {"mapper_parsing_exception": len(bad)} == stats["write_error_by_reason"]
    assert max(len(request) for request in store.requests) > 10  # batches were joined
    sent: dict[int, int] = {}
    for request in store.requests:
        for _, document in request:
            if document["logger"] == "app":
                sent[document["n"]] = sent.get(document["n"], 0) + 1
    assert {n for n, times in sent.items() if times > 1} == {
        n for n in range(600) if n % 7 == 0 and n not in bad
    }
    assert pipe.shutdown(10)


@pytest.mark.parametrize("bogus", [-1, 10**9, True])
def test_a_joined_write_returning_a_bogus_count_counts_all_written(bogus: Any) -> None:
    """A joined write returning something that is no count of records not taken (negative,
    more than the write, a bool) is read as 0 (the Writer contract):
    every record counts as written, once, and the books balance."""
    writer = Held(100, lambda items: bogus if len(items) > 1 else None)
    pipe = pipeline(writer, batch_size=10)
    fall_behind(pipe, writer, 3)
    writer.release.set()
    assert pipe.flush(10).complete
    assert 2 == len(writer.calls)
    stats = pipe.stats()
    assert (31, 0) == (stats["messages_written"], stats["messages_dropped"])
    assert balanced(stats)
    pipe.shutdown(5)


def test_a_delivery_error_naming_records_beyond_a_joined_write_is_read_within_it() -> None:
    """A joined write's DeliveryError that names indices beyond the write (a writer's
    mistake) besides some within it: those beyond are ignored, those within settled in
    their own batches; nothing is retried that was not named, nothing counted twice."""

    def answer(items: list[Any]) -> None:
        if len(items) > 1:
            raise DeliveryError("bulk", retry=[3, 500], dropped={15: "refused", 900: "x"})

    writer = Held(100, answer)
    pipe = pipeline(writer, batch_size=10)
    fall_behind(pipe, writer, 3)
    writer.release.set()
    assert pipe.flush(10).complete
    assert [[4]] == [numbers(call) for call in writer.calls[2:]]  # the 4th record of the write
    assert sorted(numbers(writer.delivered)) == [i for i in range(31) if i != 16]
    stats = pipe.stats()
    assert (30, 1) == (stats["messages_written"], stats["messages_dropped"])
    assert {"refused": 1} == stats["write_error_by_reason"]
    assert balanced(stats)
    pipe.shutdown(5)


def test_a_backlog_over_its_limit_drops_retried_batches_first_and_keeps_the_books() -> None:
    """Joined writes, two at once, failing whole now and then while more batches arrive
    than the lane may hold: the oldest waiting (retried ones, put back at the front,
    first) are counted as ``backlog_full``; every record is delivered once or counted
    once."""

    def answer(calls: int, items: list[Any]) -> None:
        time.sleep(0.005)
        if calls % 3 == 0:
            raise DeliveryError.whole(len(items), "http_503", retryable=True)

    writer = Flaky(40, 2, answer)
    pipe = pipeline(writer, batch_size=10, max_queue_size=60, max_error_retries=100)
    log = pipe.get_logger("t")
    for i in range(2000):
        log.info("r", i=i)
    assert pipe.flush(30).complete
    stats = pipe.stats()
    delivered = writer.delivered
    assert len(delivered) == len(set(delivered))
    assert 2000 == len(delivered) + stats["messages_dropped"]
    assert stats["messages_written"] == len(delivered)
    assert stats["write_error_by_reason"].get("backlog_full", 0) > 0
    assert stats["messages_dropped"] == sum(stats["write_error_by_reason"].values())
    assert balanced(stats)
    assert pipe.shutdown(10)


def test_flush_with_writes_in_flight_hanging_returns_what_is_pending() -> None:
    """Two writes in flight that hang and joined batches waiting: a flush returns (not
    complete) with every record still pending; once they answer, a flush completes."""
    writer = Stuck(max_in_flight=2, max_batch_records=100)
    pipe = pipeline(writer, batch_size=5, batch_timeout=0.01)
    log = pipe.get_logger("t")
    two_in_flight(log, writer, 40)
    result = pipe.flush(0.3)
    assert (False, 40) == (result.complete, result.pending)
    assert balanced(pipe.stats())
    writer.release.set()
    assert pipe.flush(10).complete
    assert list(range(40)) == sorted(item["i"] for item in writer.delivered)
    assert pipe.shutdown(10)


class Unreadable:
    """A concurrent writer whose ``max_batch_records`` or ``max_in_flight`` raises when
    read (a proxy that asks an object not there yet)."""

    concurrent = True

    def __init__(self, broken: str) -> None:
        self.broken = broken
        self.delivered: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        if name == self.broken:
            raise RuntimeError(f"{name}: the client is not connected")
        raise AttributeError(name)

    def write(self, batch: Sequence[bytes]) -> None:
        self.delivered.extend(json.loads(line)["i"] for line in batch)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.parametrize("broken", ["max_batch_records", "max_in_flight"])
def test_a_lane_setting_that_raises_when_read_costs_no_record(broken: str) -> None:
    """Reading a writer's ``max_batch_records`` or ``max_in_flight`` raises: it is
    reported and the default used (as for the retry settings); the writer and the other
    writers of the pipeline get every record."""
    from tests.conftest import Keeper

    writer, other = Unreadable(broken), Keeper()
    pipe = pipeline(other, writer, batch_size=10)
    log = pipe.get_logger("t")
    for i in range(30):
        log.info("r", i=i)
    assert pipe.flush(10).complete
    stats = pipe.stats()
    assert (30, 0) == (stats["messages_written"], stats["messages_dropped"])
    assert list(range(30)) == writer.delivered
    assert list(range(30)) == [line["i"] for line in other.lines]
    assert any(broken in key for key in stats["internal_errors"])
    assert balanced(stats)
    assert pipe.shutdown(10)


class Failing:
    """A concurrent writer (two writes at once) whose every write fails after *pause*
    seconds; counts its writes, and those made after ``closed`` is set."""

    concurrent = True
    max_in_flight = 2
    max_batch_records = 100
    error_retry_delay = 0.0
    max_delay = 0.01

    def __init__(self, pause: float) -> None:
        self.pause = pause
        self.writes = 0
        self.closed = threading.Event()
        self.after_close = 0
        self.spooled: list[Any] = []

    def write(self, batch: Sequence[bytes]) -> None:
        self.writes += 1
        if self.closed.is_set():
            self.after_close += 1
        time.sleep(self.pause)
        raise ConnectionError("refused")

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed.set()


def test_retries_stop_at_the_shutdown_s_deadline() -> None:
    """Writes that keep failing (fast, never hanging) with retries to spare: at the
    shutdown's deadline the retrying stops, what is left is counted (``shutdown``), the
    lane's threads end, and the writer is not written to once it is closed."""
    writer = Failing(0.01)
    pipe = pipeline(
        writer, batch_size=5, batch_timeout=0.01, max_error_retries=3000, retry_budget=600
    )
    log = pipe.get_logger("t")
    for i in range(20):
        log.info("r", i=i)
    result = pipe.shutdown(0.3)
    lanes = list(pipe.backend._every_lane)
    for lane in lanes:
        lane.finish(time.monotonic() + 5)
    assert not any(lane._threads for lane in lanes)
    assert writer.after_close <= 2  # at most the writes in flight when it was closed
    stats = pipe.stats()
    assert (0, 20, 0) == (stats["messages_written"], stats["messages_dropped"], stats["pending"])
    assert {"shutdown": 20} == stats["write_error_by_reason"]
    assert balanced(stats)
    assert result.pending <= 20


def test_clickhouse_joined_inserts_isolate_bad_rows_as_their_batches_would(clickhouse: Any) -> None:
    """A real ClickHouse, two inserts at once, 150 batches of 10 waiting (joined into one
    insert of up to 1,500 rows), one row in 97 that the server cannot read: the writer
    bisects the joined insert around the bad rows with the split budget its batches would
    have had, so every other row is stored once and only the bad ones are dropped,
    counted once, by reason (a budget of one batch for the whole insert dropped most of
    the good rows with them)."""
    pytest.importorskip("urllib3")
    from kakashi.writers.clickhouse import ClickHouseWriter, create_table

    create_table(clickhouse.url, "review_lanes", columns={"user_id": "UInt64"})
    writer = ClickHouseWriter(
        clickhouse.url, "review_lanes", error_retry_delay=0.01, max_in_flight=2
    )
    assert (2, 10_000) == (writer.max_in_flight, writer.max_batch_records)
    gate = threading.Event()
    post = writer.post

    def gated(*args: Any, **kwargs: Any) -> Any:
        gate.wait(10)  # the first requests wait until every batch waits in the lane
        return post(*args, **kwargs)

    writer.post = gated  # type: ignore[method-assign]
    pipe = pipeline(writer, batch_size=10, batch_timeout=0.01)
    log = pipe.get_logger("lanes")
    bad = {i for i in range(1500) if i % 97 == 13}
    for i in range(1500):
        log.info("r", seq=i, user_id="not a number" if i in bad else i)
    deadline = time.monotonic() + 10
    while pipe.stats()["queue_size"] and time.monotonic() < deadline:
        time.sleep(0.005)  # every batch formatted: all but the first ones wait in the lane
    gate.set()
    assert pipe.flush(30).complete
    stats = pipe.stats()
    assert pipe.shutdown(10)
    rows = clickhouse.rows("SELECT fields FROM review_lanes WHERE logger = 'lanes'")
    stored = sorted(json.loads(row["fields"])["seq"] for row in rows)
    assert [i for i in range(1500) if i not in bad] == stored
    assert (1500 - len(bad), len(bad)) == (stats["messages_written"], stats["messages_dropped"])
    assert {"clickhouse_27": len(bad)} == stats["write_error_by_reason"]
    assert balanced(stats)


def test_a_joined_request_refused_as_too_large_is_sent_again_batch_by_batch(
    collector: Any,
) -> None:
    """A collector that refuses requests of more than 50 records (413, as a proxy's body
    limit does) and batches of 10 waiting behind a slow first request: the joined request
    is refused as a whole, and its batches, each small enough, are sent again one by one
    rather than dropped (``http_413``) for a size none of them has."""
    from kakashi.writers.http import HttpWriter

    gate = threading.Event()

    def answer(path: str, headers: dict[str, str], body: bytes) -> Any:
        gate.wait(10)  # the first request waits until every batch waits in the lane
        if body.count(b"\n") > 50:
            return 413, {}, b"request entity too large"
        return 200, {}, b"{}"

    collector.answers.extend([answer] * 1000)
    writer = HttpWriter(collector.url, compression=None, timeout=20)
    pipe = pipeline(writer, batch_size=10, batch_timeout=0.01, error_retry_delay=0.001)
    log = pipe.get_logger("t")
    for i in range(300):
        log.info("r", i=i)
    deadline = time.monotonic() + 10
    while pipe.stats()["queue_size"] and time.monotonic() < deadline:
        time.sleep(0.005)
    gate.set()
    assert pipe.flush(30).complete
    stats = pipe.stats()
    arrived = [
        json.loads(line)["i"]
        for _, _, body, status in collector.received
        if status == 200
        for line in body.splitlines()
    ]
    assert any(status == 413 for *_, status in collector.received)  # it was joined
    assert list(range(300)) == sorted(arrived)
    assert (300, 0) == (stats["messages_written"], stats["messages_dropped"])
    assert balanced(stats)
    assert pipe.shutdown(10)


def test_an_elasticsearch_bulk_refused_as_too_large_is_sent_again_batch_by_batch(
    collector: Any,
) -> None:
    """The same with Elasticsearch (``http.max_content_length``): the store writer does
    not take the joined request's 413 for a refusal of its records (which it would not
    send again), so each batch is sent again alone and stored."""
    pytest.importorskip("urllib3")
    from kakashi.writers.stores import ElasticsearchWriter
    from tests.test_stores import FakeElasticsearch

    gate = threading.Event()
    store = FakeElasticsearch()

    def answer(path: str, headers: dict[str, str], body: bytes) -> Any:
        gate.wait(10)
        if body.count(b"\n") > 100:  # 50 records: an action and a document each
            return 413, {}, b"request entity too large"
        return store(path, headers, body)

    collector.answers.extend([answer] * 1000)
    writer = ElasticsearchWriter(collector.url, "logs", compression=None, timeout=20)
    pipe = pipeline(writer, batch_size=10, batch_timeout=0.01, error_retry_delay=0.001)
    log = pipe.get_logger("app")
    for n in range(300):
        log.info(f"m{n}", n=n)
    deadline = time.monotonic() + 10
    while pipe.stats()["queue_size"] and time.monotonic() < deadline:
        time.sleep(0.005)
    gate.set()
    assert pipe.flush(30).complete
    stats = pipe.stats()
    assert any(status == 413 for *_, status in collector.received)  # it was joined
    assert list(range(300)) == sorted(d["n"] for d in store.stored.values() if "n" in d)
    assert (300, 0) == (stats["messages_written"], stats["messages_dropped"])
    assert balanced(stats)
    assert pipe.shutdown(10)


def test_a_record_after_shutdown_never_waits_for_a_lane_write_that_hangs() -> None:
    """A lane's write hangs past the shutdown's deadline: the writer counts as hung
    (whether the workers are still ending or already gone: a lane thread alive in a write
    marks it too), so a record logged after the shutdown is counted as dropped
    (``closed``) instead of waiting in the synchronous fallback for the hung writer (its
    ``close`` returns at once, which alone does not mark it)."""
    writer = Stuck()
    pipe = pipeline(writer, batch_size=5)
    log = pipe.get_logger("t")
    log.info("r", i=0)
    assert writer.entered.acquire(timeout=10)  # the lane is inside the write, stuck
    result = pipe.shutdown(0.3)
    assert (False, 1) == (result.complete, result.pending)
    assert id(writer) in pipe.backend._hung
    after = threading.Thread(target=log.info, args=("after",), kwargs={"i": 1}, daemon=True)
    after.start()
    after.join(10)  # only detects a caller left waiting for the hung writer
    try:
        assert not after.is_alive()
        stats = pipe.stats()
        assert 1 == stats["dropped_by_reason"]["closed"]
        assert balanced(stats)
    finally:
        writer.release.set()
        for lane in list(pipe.backend._every_lane):
            for thread in list(lane._threads):
                thread.join(10)
