"""A lane that fell behind joins the batches waiting in it into one write (a writer's
``max_batch_records``): fewer, larger requests, with every batch still settled on its own,
in order, and every record that did not arrive counted once, by reason."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from kakashi.writers.delivery import DeliveryError
from kakashi.writers.http import HttpWriter
from tests.conftest import balanced
from tests.conftest import keeping_pipeline as pipeline


class Held:
    """A concurrent writer whose first write waits for ``release``; ``answer(items)``
    may raise a DeliveryError or return a count of records it could not take."""

    concurrent = True
    error_retry_delay = 0.0
    max_delay = 0.01

    def __init__(self, limit: Any, answer: Callable[[list[Any]], Any] | None = None) -> None:
        self.max_batch_records = limit
        self.answer = answer
        self.release = threading.Event()
        self.entered = threading.Event()
        self.calls: list[list[Any]] = []
        self.delivered: list[Any] = []

    def write(self, batch: Sequence[bytes]) -> int | None:
        items = [json.loads(line) for line in batch]
        self.entered.set()
        self.release.wait(10)
        self.calls.append(items)
        try:
            result = None if self.answer is None else self.answer(items)
        except DeliveryError as exc:
            failed = {*exc.retry, *exc.dropped}
            self.delivered.extend(item for k, item in enumerate(items) if k not in failed)
            raise
        taken = len(items) - (result or 0)
        self.delivered.extend(items[:taken])
        return result

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def numbers(items: list[Any]) -> list[int]:
    """The ``i`` of each logged record among *items* (drop notices left out)."""
    return [item["i"] for item in items if "i" in item]


def fall_behind(pipe: Any, writer: Held, batches: int, size: int = 10) -> list[int]:
    """Log a first record (its write waits), then *batches* batches of *size* records,
    each handed to the lane before the next is logged; return once all wait there, with
    the sizes of the batches the workers formatted of them (a worker may take a batch
    in two turns)."""
    log = pipe.get_logger("t")
    log.info("r", i=0)
    assert writer.entered.wait(10)
    (lane,) = pipe.backend._lanes.values()
    for batch in range(batches):
        for k in range(size):
            log.info("r", i=1 + batch * size + k)
        deadline = time.monotonic() + 10
        while lane.records < (batch + 1) * size and time.monotonic() < deadline:
            time.sleep(0.001)
        assert lane.records == (batch + 1) * size
    return [len(item.lines) for item in lane._items]


def packed(sizes: list[int], limit: int) -> list[int]:
    """The writes joining batches of *sizes* in order, none over *limit* records."""
    writes: list[int] = []
    for size in sizes:
        if writes and writes[-1] + size <= limit:
            writes[-1] += size
        else:
            writes.append(size)
    return writes


def test_waiting_batches_go_in_one_write_up_to_the_limit() -> None:
    """Five batches of 10 wait behind a slow write: with a limit of 25 they go as writes
    of 20, 20 and 10 (a batch is never split), in order, and each counts as written."""
    writer = Held(25)
    pipe = pipeline(writer, batch_size=10)
    sizes = fall_behind(pipe, writer, 5)
    writer.release.set()
    assert pipe.flush(10).complete
    assert [1, *packed(sizes, 25)] == [len(call) for call in writer.calls]
    assert len(writer.calls) < 1 + len(sizes)
    assert list(range(51)) == numbers(writer.delivered)
    stats = pipe.stats()
    assert 51 == stats["messages_written"]
    assert 0 == stats["messages_dropped"]
    assert balanced(stats)
    pipe.shutdown(5)


@pytest.mark.parametrize("limit", [None, 0, 1, 5])
def test_without_a_limit_or_below_a_batch_batches_go_as_they_came(limit: Any) -> None:
    """No ``max_batch_records`` (or 0), or a limit of one record or smaller than every
    batch: no batch is split or joined; one write per batch the workers formatted, in
    order."""
    writer = Held(limit)
    pipe = pipeline(writer, batch_size=10)
    sizes = fall_behind(pipe, writer, 3)
    writer.release.set()
    assert pipe.flush(10).complete
    assert [1, *sizes] == [len(call) for call in writer.calls]
    assert list(range(31)) == numbers(writer.delivered)
    assert balanced(pipe.stats())
    pipe.shutdown(5)


def test_an_unusable_limit_is_reported_and_batches_are_not_joined(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A ``max_batch_records`` that is no int >= 0 is said once; nothing is lost over it."""
    writer = Held("many")
    pipe = pipeline(writer, batch_size=10)
    sizes = fall_behind(pipe, writer, 2)
    writer.release.set()
    assert pipe.flush(10).complete
    assert [1, *sizes] == [len(call) for call in writer.calls]
    assert "max_batch_records" in capfd.readouterr().err
    pipe.shutdown(5)


def test_what_a_joined_write_did_not_deliver_is_settled_batch_by_batch() -> None:
    """A joined write of three batches fails for records of two of them: the ones to
    retry go again (alone, before anything logged later) and arrive; the dropped ones
    count under their reasons; every record is written or dropped exactly once."""
    tried: set[int] = set()

    def answer(items: list[Any]) -> None:
        fresh = {item["i"] for item in items if "i" in item} - tried
        tried.update(fresh)
        index = {item.get("i"): k for k, item in enumerate(items)}
        retry = [index[i] for i in (3, 15, 16) if i in fresh]
        dropped = {index[i]: "mapper" for i in (4, 25) if i in fresh}
        if retry or dropped:
            raise DeliveryError("bulk", retry=retry, dropped=dropped)

    writer = Held(100, answer)
    pipe = pipeline(writer, batch_size=10)
    fall_behind(pipe, writer, 3)
    writer.release.set()
    log = pipe.get_logger("t")
    log.info("r", i=31)
    assert pipe.flush(10).complete
    delivered = numbers(writer.delivered)
    assert sorted(delivered) == sorted(set(range(32)) - {4, 25})
    assert delivered.index(31) > delivered.index(16)  # retried before what came later
    assert 30 == len(writer.calls[1])  # the three batches went in one write
    again = [numbers(call) for call in writer.calls[2:] if 31 not in numbers(call)]
    assert [3, 15, 16] == [i for call in again for i in call]  # alone, batch by batch
    stats = pipe.stats()
    assert {"mapper": 2} == stats["write_error_by_reason"]
    assert 2 == stats["messages_dropped"]
    assert 30 == stats["messages_written"]
    assert balanced(stats)
    pipe.shutdown(5)


def test_a_count_of_records_not_taken_is_charged_to_the_latest() -> None:
    """A joined write that returns a count (records it could not take) loses that many,
    counted once, from the last batch back."""
    writer = Held(100, lambda items: 12 if len(items) == 30 else None)
    pipe = pipeline(writer, batch_size=10)
    fall_behind(pipe, writer, 3)
    writer.release.set()
    assert pipe.flush(10).complete
    stats = pipe.stats()
    assert 12 == stats["messages_dropped"]
    assert {"writer_rejected": 12} == stats["write_error_by_reason"]
    assert 19 == stats["messages_written"]
    assert list(range(19)) == numbers(writer.delivered)
    assert balanced(stats)
    pipe.shutdown(5)


def test_a_record_lost_by_a_joined_writer_and_another_counts_once(tmp_path: Any) -> None:
    """Two writers (a file that takes everything, a joined remote that drops some): a
    record counts as dropped once, whichever writers lost it."""
    from kakashi.writers import FileWriter

    def answer(items: list[Any]) -> None:
        index = {item.get("i"): k for k, item in enumerate(items)}
        dropped = {index[i]: "mapper" for i in (2, 12, 22) if i in index}
        if dropped:
            raise DeliveryError("bulk", dropped=dropped)

    remote = Held(100, answer)
    file = FileWriter(str(tmp_path / "out.log"))
    pipe = pipeline(file, remote, batch_size=10)
    fall_behind(pipe, remote, 3)
    remote.release.set()
    assert pipe.flush(10).complete
    stats = pipe.stats()
    assert 3 == stats["messages_dropped"]
    assert 28 == stats["messages_written"]
    assert balanced(stats)
    pipe.shutdown(5)
    assert 31 == len((tmp_path / "out.log").read_bytes().splitlines())


def test_a_joined_write_that_raises_is_retried_batch_by_batch() -> None:
    """A joined write that raises (no DeliveryError) fails all of it: each batch goes
    back to the lane and is retried on its own, in order, and arrives."""
    failed = []

    def answer(items: list[Any]) -> None:
        if len(items) > 10 and not failed:
            failed.append(len(items))
            raise OSError("connection reset")

    writer = Held(100, answer)
    pipe = pipeline(writer, batch_size=10)
    sizes = fall_behind(pipe, writer, 3)
    writer.release.set()
    assert pipe.flush(10).complete
    assert [30] == failed
    assert [1, 30, *sizes] == [len(call) for call in writer.calls]
    assert list(range(31)) == numbers(writer.delivered)
    stats = pipe.stats()
    assert 0 == stats["messages_dropped"]
    assert balanced(stats)
    pipe.shutdown(5)


def test_one_failed_joined_write_is_one_failure_for_the_circuit() -> None:
    """Three batches lost in one joined write (no retries allowed) are one failed write:
    the circuit (which opens after three in a row) stays closed, and what is logged next
    is delivered, not counted as ``circuit_open``."""

    def answer(items: list[Any]) -> None:
        if len(items) == 30:
            raise OSError("connection reset")

    writer = Held(100, answer)
    writer.max_error_retries = 0  # type: ignore[attr-defined]
    pipe = pipeline(writer, batch_size=10)
    fall_behind(pipe, writer, 3)
    writer.release.set()
    assert pipe.flush(10).complete
    pipe.get_logger("t").info("r", i=31)
    assert pipe.flush(10).complete
    stats = pipe.stats()
    assert {"write_error": 30} == stats["write_error_by_reason"]
    assert [0, 31] == numbers(writer.delivered)
    assert balanced(stats)
    pipe.shutdown(5)


def test_shutdown_spools_or_counts_what_a_joined_write_left() -> None:
    """A collector that fails every write of more than one record, retried without end:
    at the shutdown's deadline what is left is counted (``shutdown``), or reported
    pending while a write of it is under way; once that write returns, the lane makes no
    more tries (a shutdown stops the backoff, and its deadline the retries), so it is
    counted too. Never lost uncounted."""

    def answer(items: list[Any]) -> None:
        if len(items) > 1:
            raise DeliveryError.whole(len(items), "http_503", retryable=True)

    writer = Held(100, answer)
    pipe = pipeline(writer, batch_size=10, max_error_retries=1_000_000, retry_budget=3600)
    fall_behind(pipe, writer, 3)
    writer.release.set()
    pipe.shutdown(1)
    stats = pipe.stats()
    assert 1 == stats["messages_written"]
    assert 30 == stats["messages_dropped"] + stats["pending"]
    assert stats["pending"] <= 10  # at most the batch inside a write at the deadline
    assert balanced(stats)
    deadline = time.monotonic() + 30  # only detects a lane retrying for ever
    while pipe.stats()["pending"] and time.monotonic() < deadline:
        time.sleep(0.01)
    stats = pipe.stats()
    assert 30 == stats["messages_dropped"]
    assert {"shutdown": 30} == stats["write_error_by_reason"]
    assert balanced(stats)


def test_http_writers_join_by_default_and_check_the_limit() -> None:
    """HttpWriter (and so the store writers) join up to 10,000 records; the limit must be
    an int >= 0."""
    assert 10_000 == HttpWriter("http://127.0.0.1:9/").max_batch_records
    assert 0 == HttpWriter("http://127.0.0.1:9/", max_batch_records=0).max_batch_records
    for bad in (-1, 1.5, "10", True):
        with pytest.raises(ValueError, match="max_batch_records"):
            HttpWriter("http://127.0.0.1:9/", max_batch_records=bad)


class Parallel:
    """A concurrent writer that notes how many of its writes run at once; each write
    takes *pause* seconds and may fail as *answer* says."""

    concurrent = True
    error_retry_delay = 0.0
    max_delay = 0.01
    max_batch_records = 0

    def __init__(self, in_flight: Any, pause: float, answer: Any = None) -> None:
        self.max_in_flight = in_flight
        self.pause = pause
        self.answer = answer
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.delivered: list[Any] = []

    def write(self, batch: Sequence[bytes]) -> None:
        items = [json.loads(line) for line in batch]
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(self.pause)
            failed: set[int] = set()
            try:
                if self.answer is not None:
                    self.answer(items)
            except DeliveryError as exc:
                failed = {*exc.retry, *exc.dropped}
                raise
            finally:
                with self.lock:
                    self.delivered += [item for k, item in enumerate(items) if k not in failed]
        finally:
            with self.lock:
                self.running -= 1

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.parametrize("in_flight", [1, 2, 3])
def test_writes_in_flight_at_once_are_at_most_max_in_flight(in_flight: int) -> None:
    """A writer with ``max_in_flight`` n gets up to n writes at once (and n = 1, or none
    said, one at a time, in order); every record arrives once."""
    writer = Parallel(in_flight, 0.02)
    pipe = pipeline(writer, batch_size=10)
    log = pipe.get_logger("t")
    for i in range(300):
        log.info("r", i=i)
    assert pipe.flush(30).complete
    assert in_flight == writer.most
    delivered = numbers(writer.delivered)
    assert list(range(300)) == sorted(delivered)
    if in_flight == 1:
        assert list(range(300)) == delivered
    stats = pipe.stats()
    assert 300 == stats["messages_written"]
    assert balanced(stats)
    pipe.shutdown(5)


def test_writes_in_flight_at_once_keep_the_books() -> None:
    """Three writes at once, each refusing some records (to retry, or dropped for good):
    every record is delivered or counted as dropped, exactly once overall."""
    tried: set[int] = set()
    guard = threading.Lock()

    def answer(items: list[Any]) -> None:
        with guard:
            fresh = {item["i"] for item in items if "i" in item} - tried
            tried.update(fresh)
        index = {item.get("i"): k for k, item in enumerate(items)}
        retry = [index[i] for i in fresh if i % 7 == 0]
        dropped = {index[i]: "refused" for i in fresh if i % 11 == 0 and i % 7}
        if retry or dropped:
            raise DeliveryError("bulk", retry=retry, dropped=dropped)

    writer = Parallel(3, 0.005, answer)
    pipe = pipeline(writer, batch_size=10)
    log = pipe.get_logger("t")
    for i in range(1000):
        log.info("r", i=i)
    assert pipe.flush(30).complete
    refused = {i for i in range(1000) if i % 11 == 0 and i % 7}
    delivered = numbers(writer.delivered)
    assert sorted(delivered) == sorted(set(range(1000)) - refused)  # none twice
    stats = pipe.stats()
    assert len(refused) == stats["messages_dropped"]
    assert {"refused": len(refused)} == stats["write_error_by_reason"]
    assert 3 == writer.most
    assert balanced(stats)
    pipe.shutdown(5)


def test_shutdown_waits_for_every_write_in_flight() -> None:
    """A shutdown with writes on several threads waits for all of them: nothing is left
    pending, everything was delivered."""
    writer = Parallel(2, 0.05)
    pipe = pipeline(writer, batch_size=10)
    log = pipe.get_logger("t")
    for i in range(100):
        log.info("r", i=i)
    assert pipe.shutdown(30)
    stats = pipe.stats()
    assert 0 == stats["pending"]
    assert 100 == stats["messages_written"]
    assert list(range(100)) == sorted(numbers(writer.delivered))


def test_an_unusable_max_in_flight_is_reported_and_writes_go_one_at_a_time(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A ``max_in_flight`` that is no int >= 0 is said; the lane writes one at a time."""
    writer = Parallel("two", 0.01)
    pipe = pipeline(writer, batch_size=10)
    log = pipe.get_logger("t")
    for i in range(100):
        log.info("r", i=i)
    assert pipe.flush(30).complete
    assert 1 == writer.most
    assert list(range(100)) == numbers(writer.delivered)
    assert "max_in_flight" in capfd.readouterr().err
    pipe.shutdown(5)


def test_http_writers_say_how_many_requests_may_be_in_flight() -> None:
    """Every HTTP writer sends one request at a time (its batches in order) unless told
    otherwise (an int >= 1)."""
    from kakashi.writers.clickhouse import ClickHouseWriter
    from kakashi.writers.stores import ElasticsearchWriter, LokiWriter

    url = "http://127.0.0.1:9"
    assert 1 == HttpWriter(url).max_in_flight
    assert 1 == LokiWriter(url).max_in_flight
    assert 1 == ClickHouseWriter(url, "logs").max_in_flight
    assert 1 == ElasticsearchWriter(url).max_in_flight
    assert 2 == ElasticsearchWriter(url, max_in_flight=2).max_in_flight
    assert 4 == ClickHouseWriter(url, "logs", max_in_flight=4).max_in_flight
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ValueError, match="max_in_flight"):
            HttpWriter(url, max_in_flight=bad)


def test_a_fault_inside_a_joined_write_settles_each_batch_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Should the lane's own code fail while it settles a joined write (here: splitting
    its outcome), every batch is still settled exactly once: the books balance and the
    lane goes on with what comes next."""
    from kakashi.core import async_backend

    def broken(*args: Any) -> Any:
        raise RuntimeError("splitting failed")

    writer = Held(100)
    pipe = pipeline(writer, batch_size=10)
    fall_behind(pipe, writer, 3)
    monkeypatch.setattr(async_backend, "_shares", broken)
    writer.release.set()
    assert pipe.flush(10).complete
    monkeypatch.undo()
    pipe.get_logger("t").info("r", i=31)
    assert pipe.flush(10).complete
    stats = pipe.stats()
    assert 30 == stats["messages_dropped"]  # counted as not delivered (the writer had them)
    assert 2 == stats["messages_written"]
    assert 31 in numbers(writer.delivered)
    assert balanced(stats)
    pipe.shutdown(5)


def test_the_backends_retry_settings_are_not_reported_as_a_writers(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A writer without retry settings of its own takes the backend's, whatever their
    size (a count of retries has no upper bound): nothing is reported. A writer's own
    count is checked as a count, its own seconds as seconds (at most a day)."""

    class Bare:
        concurrent = True

        def write(self, batch: Sequence[bytes]) -> None:
            pass

        def flush(self) -> None:
            pass

        def close(self) -> None:
            pass

    writer: Any = Bare()
    pipe = pipeline(writer, max_error_retries=1_000_000)
    pipe.get_logger("t").info("r")
    assert pipe.flush(10).complete
    (lane,) = pipe.backend._lanes.values()
    assert 1_000_000 == lane.retries
    pipe.shutdown(5)
    assert "usable" not in capfd.readouterr().err
    writer.max_error_retries = 500_000
    writer.max_delay = 90_000.0  # over a day: the default (30 s) is used, and said
    pipe = pipeline(writer)
    pipe.get_logger("t").info("r")
    assert pipe.flush(10).complete
    (lane,) = pipe.backend._lanes.values()
    assert (500_000, 30.0) == (lane.retries, lane.max_delay)
    pipe.shutdown(5)
    err = capfd.readouterr().err
    assert "max_delay" in err
    assert "max_error_retries" not in err
