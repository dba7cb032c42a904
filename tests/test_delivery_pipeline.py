"""A lane with one write at a time prepares the next while it waits for the answer
(``prepare_ahead``, the HTTP writers' default): the writer's ``prepare`` (encoding,
compressing) of batch N+1 runs on the lane's thread between sending the request of
batch N and reading its answer, and the requests still go one at a time, in order.
Every guarantee of the lane holds: each record delivered once or counted once by
reason, retries, the circuit, the shutdown's deadline, a full backlog, a ``prepare``
that raises, a spooling writer, a fork.

The tests are real threads against a local HTTP server (and the real ClickHouse server
where the writer's own preparing matters); the server holds each answer until the
writer has prepared what comes next, so the order of the events, not the time they
took, shows the overlap."""

from __future__ import annotations

import gzip
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("urllib3")

from kakashi.writers.clickhouse import ClickHouseWriter, create_table
from kakashi.writers.delivery import DeliveryError
from kakashi.writers.http import HttpWriter
from kakashi.writers.spool import SpoolingWriter
from kakashi.writers.stores import ElasticsearchWriter
from tests.conftest import (
    ClickHouseServer,
    HttpCollector,
    balanced,
    child_report,
    keeping_pipeline,
)
from tests.test_stores import FakeElasticsearch

#: Records per batch the workers format in these tests.
SIZE = 10
#: The longest any wait of these tests may take (a bound against hanging, never a timing).
BOUND = 15.0


def numbers(batch: Sequence[bytes]) -> tuple[int, ...]:
    """The ``n`` of each logged record of *batch* (the backend's notices left out)."""
    return tuple(n for n in (json.loads(line).get("n") for line in batch) if n is not None)


class Noting:
    """Notes each ``prepare`` and ``send`` of the writer it is mixed into, in order:
    ``(event, the records' n, thread name)``; events ``prepare``/``prepared`` and
    ``send``/``sent``. A batch with a record whose ``n`` is in ``bad`` makes prepare
    raise (a record the encoding cannot take)."""

    bad: frozenset[int] = frozenset()

    def start_noting(self, gate: threading.Event | None = None) -> None:
        """Start with no events; a *gate* holds the first send until it is set."""
        self.events: list[tuple[str, tuple[int, ...], str]] = []
        self.changed = threading.Condition()
        self.gate = gate

    def note(self, event: str, batch: Sequence[bytes]) -> None:
        with self.changed:
            self.events.append((event, numbers(batch), threading.current_thread().name))
            self.changed.notify_all()

    def prepare(self, batch: Sequence[bytes]) -> Any:
        self.note("prepare", batch)
        try:
            if self.bad.intersection(numbers(batch)):
                raise ValueError("a record this writer cannot encode")
            return super().prepare(batch)  # type: ignore[misc]
        finally:
            self.note("prepared", batch)

    def send(self, batch: Sequence[bytes], prepared: Any, meanwhile: Any = None) -> Any:
        self.note("send", batch)
        try:
            if self.gate is not None:
                assert self.gate.wait(BOUND)
            return super().send(batch, prepared, meanwhile)  # type: ignore[misc]
        finally:
            self.note("sent", batch)

    def of(self, kind: str) -> list[tuple[int, ...]]:
        """The records of each event of *kind*, in order."""
        with self.changed:
            return [numbers for event, numbers, _ in self.events if event == kind]

    def wait_prepared_after(self, last: int) -> bool:
        """Wait until a batch of records logged after record *last* is prepared."""

        def done() -> bool:
            return any(
                event == "prepared" and numbers and numbers[0] > last
                for event, numbers, _ in self.events
            )

        with self.changed:
            return self.changed.wait_for(done, BOUND)


class Elasticsearch(Noting, ElasticsearchWriter):
    """An ElasticsearchWriter whose prepares and sends are noted."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, "logs", **options)
        self.start_noting()


class Plain(Noting, HttpWriter):
    """An HttpWriter (NDJSON) whose prepares and sends are noted."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.start_noting()


class ClickHouse(Noting, ClickHouseWriter):
    """A ClickHouseWriter whose prepares and sends are noted; its sends wait for
    ``release`` (the batches after the first wait in the lane meanwhile)."""

    def __init__(self, url: str, table: str, **options: Any) -> None:
        super().__init__(url, table, **options)
        self.release = threading.Event()
        self.start_noting(self.release)


def documents(headers: dict[str, str], body: bytes) -> list[dict[str, Any]]:
    """The documents of a bulk request (every second line)."""
    if headers.get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    return [json.loads(line) for line in body.splitlines()[1::2]]


class Store:
    """The collector's answers: Elasticsearch (a FakeElasticsearch storing by ``_id``,
    in the order taken), answering the first request only once ``release`` is set, and
    each later one only once the writer has prepared records logged after it (unless
    it holds the last record, *last*). ``refuse(documents)`` may give another answer
    (a tuple, as the collector takes) before the store sees the request."""

    def __init__(
        self,
        writer: Noting,
        last: int,
        rule: Callable[[dict[str, Any], int], int | None] = lambda d, a: None,
        refuse: Callable[[list[dict[str, Any]]], Any] = lambda docs: None,
    ) -> None:
        self.writer = writer
        self.last = last
        self.store = FakeElasticsearch(rule)
        self.refuse = refuse
        self.release = threading.Event()
        self.first = True
        self.requests: list[tuple[int, ...]] = []  # the records of each request, answered

    def __call__(self, path: str, headers: dict[str, str], body: bytes) -> Any:
        docs = [doc for doc in documents(headers, body) if "n" in doc]
        if self.first:
            self.first = False
            assert self.release.wait(BOUND)
        elif docs and docs[-1]["n"] < self.last:
            self.writer.wait_prepared_after(docs[-1]["n"])
        self.requests.append(tuple(doc["n"] for doc in docs))
        refused = self.refuse(docs)
        return refused if refused is not None else self.store(path, headers, body)

    def stored(self) -> list[int]:
        """The ``n`` of each record stored, in the order stored."""
        return [doc["n"] for doc in self.store.stored.values() if "n" in doc]


def answered_by(collector: HttpCollector, store: Store) -> None:
    """Every request to *collector* is answered by *store*."""
    collector.answers.extend([store] * 500)


def fall_behind(pipe: Any, writer: Noting, batches: int) -> list[tuple[int, ...]]:
    """Log record 0 and wait until *writer* sends it (its request is held), then log
    *batches* batches of ``SIZE`` records, each waiting in the writer's lane before the
    next is logged; return the records of each batch the workers formatted of them (a
    worker may take a batch in two turns)."""
    log = pipe.get_logger("t")
    log.info("r", n=0)
    with writer.changed:
        assert writer.changed.wait_for(lambda: writer.of("send"), BOUND)
    deadline = time.monotonic() + BOUND
    (lane,) = pipe.backend._lanes.values()
    for batch in range(batches):
        for k in range(SIZE):
            log.info("r", n=1 + batch * SIZE + k)
        while lane.records < (batch + 1) * SIZE and time.monotonic() < deadline:
            time.sleep(0.001)
        assert lane.records == (batch + 1) * SIZE
    return [numbers(item.lines) for item in lane._items]


def packed(batches: list[tuple[int, ...]], limit: int) -> list[tuple[int, ...]]:
    """The records of each write joining *batches* in order, none over *limit* records
    (0: no joining)."""
    writes: list[tuple[int, ...]] = []
    for batch in batches:
        if limit and writes and len(writes[-1]) + len(batch) <= limit:
            writes[-1] += batch
        else:
            writes.append(batch)
    return writes


def writer_stats(pipe: Any, writer: Any) -> dict[str, Any]:
    """The backend's stats of *writer*, after checking that its books balance."""
    stats = pipe.backend.get_stats()
    assert balanced(stats)
    (mine,) = [entry for entry in stats["writers"] if entry["writer"] == repr(writer)]
    return dict(mine)


def reasons(stats: dict[str, Any]) -> dict[str, int]:
    """A writer's drops by reason, those that are not 0."""
    return {reason: count for reason, count in stats["dropped_by_reason"].items() if count}


def overlapping(events: list[tuple[str, tuple[int, ...], str]]) -> list[bool]:
    """For each send but the last: whether the next send's records were prepared, on
    the lane's thread, after it started and before it ended."""
    sends = [numbers for event, numbers, _ in events if event == "send"]
    result = []
    for current, following in itertools.pairwise(sends):
        start = events.index(("send", current, "kakashi-lane"))
        end = events.index(("sent", current, "kakashi-lane"))
        result.append(("prepared", following, "kakashi-lane") in events[start:end])
    return result


# -- order and overlap ----------------------------------------------------------------------


@pytest.mark.parametrize("limit", [0, 25])
def test_the_next_batch_is_prepared_while_one_is_sent_and_all_land_in_order(
    collector: HttpCollector, limit: int
) -> None:
    """Eight batches wait behind a held request; the server answers each request only
    once the writer has prepared what follows it: every request but the first has the
    next one's prepare inside it, on the lane's thread, the requests go one at a
    time in the order logged (joined by two with a limit of 25 records), and every
    record lands once."""
    writer = Elasticsearch(collector.url, max_batch_records=limit)
    store = Store(writer, last=8 * SIZE)
    answered_by(collector, store)
    pipe = keeping_pipeline(writer, batch_size=SIZE)
    batches = fall_behind(pipe, writer, 8)
    store.release.set()
    assert pipe.flush(BOUND).complete
    assert list(range(8 * SIZE + 1)) == store.stored()
    sends = writer.of("send")
    assert [(0,), *packed(batches, limit)] == sends
    assert sends == store.requests  # one at a time: each answered before the next is sent
    assert [True] * (len(sends) - 2) == overlapping(writer.events)[1:]
    stats = writer_stats(pipe, writer)
    assert (8 * SIZE + 1, 0) == (stats["records"], stats["dropped"])
    pipe.shutdown(5)


def test_turned_off_each_batch_is_prepared_after_the_answer_before(
    collector: HttpCollector,
) -> None:
    """``prepare_ahead=False``: the lane writes with ``write``, each batch prepared
    after the previous request is answered."""
    writer = Elasticsearch(collector.url, max_batch_records=0, prepare_ahead=False)
    store = Store(writer, last=0)  # answers without waiting for a prepare
    answered_by(collector, store)
    pipe = keeping_pipeline(writer, batch_size=SIZE)
    batches = fall_behind(pipe, writer, 3)
    store.release.set()
    assert pipe.flush(BOUND).complete
    assert list(range(3 * SIZE + 1)) == store.stored()
    assert {"kakashi-lane"} == {thread for _, _, thread in writer.events}
    kinds = [event for event, _, _ in writer.events]
    assert ["prepare", "prepared", "send", "sent"] * (1 + len(batches)) == kinds
    pipe.shutdown(5)


def test_prepare_ahead_must_be_a_bool() -> None:
    """A ``prepare_ahead`` that is not a bool is refused when the writer is made."""
    with pytest.raises(TypeError, match="prepare_ahead must be True or False, got 1"):
        HttpWriter("http://127.0.0.1:9", prepare_ahead=1)  # type: ignore[arg-type]


# -- retries --------------------------------------------------------------------------------


def test_a_batch_retried_whole_sends_the_body_it_was_prepared_with(
    collector: HttpCollector,
) -> None:
    """A 503 then a 200: the retry sends the very body prepared for the first try
    (prepared once, the same bytes, the same ``_id``s); the records land once and the
    writer remembers nothing of them after."""
    writer = Elasticsearch(collector.url)
    store = FakeElasticsearch()
    collector.answers.extend([(503, {}, b"busy"), store])
    pipe = keeping_pipeline(writer, batch_size=SIZE, batch_timeout=30, error_retry_delay=0.01)
    log = pipe.get_logger("t")
    for n in range(SIZE):
        log.info("r", n=n)
    assert pipe.flush(BOUND).complete
    assert [tuple(range(SIZE))] == writer.of("prepare")
    assert [tuple(range(SIZE))] * 2 == writer.of("send")
    (_, _, first, status), (_, _, second, _) = collector.received
    assert (503, first) == (status, second)
    assert list(range(SIZE)) == sorted(doc["n"] for doc in store.stored.values())
    assert not writer._memory
    stats = writer_stats(pipe, writer)
    assert (SIZE, 0, 1) == (stats["records"], stats["dropped"], stats["errors"])
    pipe.shutdown(5)


def test_a_partial_bulk_failure_prepares_only_the_rest(collector: HttpCollector) -> None:
    """Records 3 and 7 answered 429 and record 5 refused (400) in a bulk answer: the
    retry prepares a body of records 3 and 7 only, with the ``_id``s they had; record 5
    is dropped under its reason; the counts add up."""

    def rule(document: dict[str, Any], attempt: int) -> int | None:
        if document["n"] == 5:
            return 400
        return 429 if document["n"] in (3, 7) and attempt == 1 else None

    writer = Elasticsearch(collector.url)
    store = FakeElasticsearch(rule)
    collector.answers.extend([store, store])
    pipe = keeping_pipeline(writer, batch_size=SIZE, batch_timeout=30, error_retry_delay=0.01)
    log = pipe.get_logger("t")
    for n in range(SIZE):
        log.info("r", n=n)
    assert pipe.flush(BOUND).complete
    assert [tuple(range(SIZE)), (3, 7)] == writer.of("prepare")
    first, second = store.requests
    ids = {document["n"]: action["create"]["_id"] for action, document in first}
    assert [(ids[3], 3), (ids[7], 7)] == [(a["create"]["_id"], d["n"]) for a, d in second]
    assert [0, 1, 2, 3, 4, 6, 7, 8, 9] == sorted(d["n"] for d in store.stored.values())
    stats = writer_stats(pipe, writer)
    assert (9, 1) == (stats["records"], stats["dropped"])
    assert {"mapper_parsing_exception": 1} == reasons(stats)
    pipe.shutdown(5)


def test_a_joined_write_refused_as_too_large_goes_again_batch_by_batch_in_order(
    collector: HttpCollector,
) -> None:
    """Batches joined by two (prepared ahead) meet a 413: the two are sent again one by
    one, each prepared for itself, before the next joined write, already prepared; every
    record lands once, in order, and none counts as dropped."""
    refused: list[int] = []

    def too_large(docs: list[dict[str, Any]]) -> Any:
        if len(docs) > SIZE and not refused:
            refused.append(len(docs))
            return 413, {}, b"request entity too large"
        return None

    writer = Elasticsearch(collector.url, max_batch_records=2 * SIZE)
    store = Store(writer, last=6 * SIZE, refuse=too_large)
    answered_by(collector, store)
    pipe = keeping_pipeline(writer, batch_size=SIZE)
    batches = fall_behind(pipe, writer, 6)
    store.release.set()
    assert pipe.flush(BOUND).complete
    writes = packed(batches, 2 * SIZE)
    assert [len(writes[0])] == refused
    first = [batch for batch in batches if batch[0] in writes[0]]
    assert [(0,), writes[0], *first, *writes[1:]] == store.requests
    assert list(range(6 * SIZE + 1)) == store.stored()
    stats = writer_stats(pipe, writer)
    assert (6 * SIZE + 1, 0) == (stats["records"], stats["dropped"])
    pipe.shutdown(5)


# -- the circuit, the shutdown, a prepare that raises ------------------------------------------


def test_a_prepared_batch_that_meets_an_open_circuit_is_counted_not_sent(
    collector: HttpCollector,
) -> None:
    """Every request fails (500) with no retries: after three batches lost the circuit
    opens; the batch prepared meanwhile is counted ``circuit_open`` with those behind it,
    never sent."""
    writer = Elasticsearch(collector.url, max_batch_records=0, max_error_retries=0)

    def failing(docs: list[dict[str, Any]]) -> Any:
        return 500, {}, b"down"

    store = Store(writer, last=5 * SIZE, refuse=failing)
    answered_by(collector, store)
    pipe = keeping_pipeline(writer, batch_size=SIZE, error_retry_delay=0.01)
    batches = fall_behind(pipe, writer, 5)
    store.release.set()
    assert pipe.flush(BOUND).complete
    assert [(0,), batches[0], batches[1]] == writer.of("send") == store.requests
    assert batches[2] in writer.of("prepared")  # made ahead, then not sent
    stats = writer_stats(pipe, writer)
    assert "open" == stats["circuit"]
    assert (0, 5 * SIZE + 1) == (stats["records"], stats["dropped"])
    failed = 1 + len(batches[0]) + len(batches[1])
    expected = {"http_500": failed, "circuit_open": 5 * SIZE + 1 - failed}
    assert expected == reasons(stats)
    pipe.shutdown(5)


def test_a_prepared_batch_left_at_the_shutdown_deadline_is_counted_shutdown(
    collector: HttpCollector,
) -> None:
    """A request never answered, the next batch prepared behind it: the shutdown's
    deadline counts the prepared batch and the one after as ``shutdown`` (never sent);
    the hung request's records are counted once it fails; the books balance."""
    writer = Elasticsearch(collector.url, max_batch_records=0)
    store = FakeElasticsearch()
    release = threading.Event()

    def held(path: str, headers: dict[str, str], body: bytes) -> Any:
        assert release.wait(BOUND)
        return store(path, headers, body)

    collector.answers.extend([held, (200, {}, b"", "never")])
    pipe = keeping_pipeline(writer, batch_size=SIZE)
    batches = fall_behind(pipe, writer, 3)
    release.set()
    assert writer.wait_prepared_after(batches[0][-1])  # prepared while batch 1 hangs
    result = pipe.shutdown(0.5)
    assert not result.complete
    stats = writer_stats(pipe, writer)
    assert {"shutdown": 3 * SIZE - len(batches[0])} == reasons(stats)
    collector.kill()  # the hung request fails: too late to retry, counted
    deadline = time.monotonic() + BOUND
    while pipe.backend.get_stats()["pending"] and time.monotonic() < deadline:
        time.sleep(0.01)
    stats = writer_stats(pipe, writer)
    assert (1, 3 * SIZE) == (stats["records"], stats["dropped"])
    assert {"shutdown": 3 * SIZE} == reasons(stats)
    assert [(0,), batches[0]] == writer.of("send")
    assert batches[1] in writer.of("prepared")
    assert 0 == pipe.backend.get_stats()["pending"]


def test_a_prepared_batch_pushed_out_of_a_full_lane_is_counted_backlog_full(
    collector: HttpCollector,
) -> None:
    """Batch 2 is prepared ahead while batch 1's request is held; two more batches
    arrive and the lane, over ``max_queue_size``, drops its oldest waiting batch, the
    prepared one: counted ``backlog_full``, never sent; the batches after it are sent
    in order."""
    writer = Elasticsearch(collector.url, max_batch_records=0)
    store = FakeElasticsearch()
    gates = [threading.Event(), threading.Event()]

    def held(gate: threading.Event) -> Callable[[str, dict[str, str], bytes], Any]:
        def answer(path: str, headers: dict[str, str], body: bytes) -> Any:
            assert gate.wait(BOUND)
            return store(path, headers, body)

        return answer

    collector.answers.extend([held(gates[0]), held(gates[1]), *[store] * 10])
    pipe = keeping_pipeline(writer, batch_size=SIZE, max_queue_size=25)
    first, second = fall_behind(pipe, writer, 2)
    gates[0].set()  # record 0 answered; batch 1 sent (held), batch 2 prepared meanwhile
    assert writer.wait_prepared_after(first[-1])
    (lane,) = pipe.backend._lanes.values()
    log = pipe.get_logger("t")
    for n in range(1 + 2 * SIZE, 1 + 3 * SIZE):
        log.info("r", n=n)
    deadline = time.monotonic() + BOUND
    while lane.records < 2 * SIZE and time.monotonic() < deadline:
        time.sleep(0.001)
    for n in range(1 + 3 * SIZE, 1 + 4 * SIZE):  # over 25 records: the oldest goes
        log.info("r", n=n)
    while not writer_stats(pipe, writer)["dropped"] and time.monotonic() < deadline:
        time.sleep(0.001)
    gates[1].set()
    assert pipe.flush(BOUND).complete
    assert second in writer.of("prepared")
    sends = writer.of("send")
    assert [(0,), first] == sends[:2]
    assert [n for n in range(1 + 4 * SIZE) if n not in second] == [
        n for numbers in sends for n in numbers
    ]
    stats = writer_stats(pipe, writer)
    assert (4 * SIZE + 1 - len(second), len(second)) == (stats["records"], stats["dropped"])
    assert {"backlog_full": len(second)} == reasons(stats)
    pipe.shutdown(5)


@pytest.mark.parametrize("ahead", [True, False])
def test_a_prepare_that_raises_counts_the_batch_and_the_lane_goes_on(
    collector: HttpCollector, ahead: bool
) -> None:
    """A batch whose prepare raises (made ahead, or in its turn by ``write``) fails as a
    write raising does: tried again (prepared again), then counted ``write_error``,
    never sent; the batches before and after land, in order. The same counts with
    ``prepare_ahead`` on and off."""
    writer = Elasticsearch(
        collector.url, max_batch_records=0, max_error_retries=1, prepare_ahead=ahead
    )
    writer.bad = frozenset({15})
    store = Store(writer, last=3 * SIZE if ahead else 0)
    answered_by(collector, store)
    pipe = keeping_pipeline(writer, batch_size=SIZE, error_retry_delay=0.01)
    batches = fall_behind(pipe, writer, 3)
    store.release.set()
    assert pipe.flush(BOUND).complete
    (bad,) = [batch for batch in batches if 15 in batch]
    assert 2 == writer.of("prepare").count(bad)
    assert bad not in writer.of("send")
    assert [n for n in range(3 * SIZE + 1) if n not in bad] == store.stored()
    stats = writer_stats(pipe, writer)
    good = 3 * SIZE + 1 - len(bad)
    assert (good, len(bad), 2) == (stats["records"], stats["dropped"], stats["errors"])
    assert {"write_error": len(bad)} == reasons(stats)
    assert "closed" == stats["circuit"]
    pipe.shutdown(5)


# -- writers that wrap, processes -------------------------------------------------------------


def test_a_spooling_writer_prepares_ahead_through_the_writer_it_wraps(
    collector: HttpCollector, tmp_path: Path
) -> None:
    """A SpoolingWriter around an HTTP writer prepares ahead as that writer would (its
    ``prepare``, then its ``send``), in order; around one with ``prepare_ahead=False``
    it does not."""
    inner = Elasticsearch(collector.url, max_batch_records=0)
    spooled = SpoolingWriter(inner, tmp_path / "spool")
    assert spooled.prepare_ahead
    plain = SpoolingWriter(Plain(collector.url, prepare_ahead=False), tmp_path / "plain")
    assert not plain.prepare_ahead
    plain.close()
    store = Store(inner, last=4 * SIZE)
    answered_by(collector, store)
    pipe = keeping_pipeline(spooled, batch_size=SIZE)
    batches = fall_behind(pipe, inner, 4)
    store.release.set()
    assert pipe.flush(BOUND).complete
    assert list(range(4 * SIZE + 1)) == store.stored()
    assert [True] * (len(batches) - 1) == overlapping(inner.events)[1:]
    stats = writer_stats(pipe, spooled)
    assert (4 * SIZE + 1, 0) == (stats["records"], stats["dropped"])
    assert 0 == spooled.delivery_stats()["spooled"]
    pipe.shutdown(5)


def test_a_forked_child_delivers_its_own_records_not_the_parents_prepared_batch(
    collector: HttpCollector,
) -> None:
    """The parent's request hangs with the next batch prepared behind it; a child forked
    then starts with fresh delivery state: its record goes out in a request of its own
    (prepared and sent by its own lane), the parent's batches never."""
    writer = Plain(collector.url, max_batch_records=0)
    release = threading.Event()

    def held(path: str, headers: dict[str, str], body: bytes) -> Any:
        assert release.wait(BOUND)
        return 200, {}, b""

    collector.answers.extend([held, (200, {}, b"", "never")])
    pipe = keeping_pipeline(writer, batch_size=SIZE)
    batches = fall_behind(pipe, writer, 2)
    release.set()
    assert writer.wait_prepared_after(batches[0][-1])
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            pipe.get_logger("t").info("child", n=1000)
            flushed = pipe.flush(BOUND).complete
            report = {"flushed": flushed, "sent": writer.of("send")[2:]}
            os.write(write, json.dumps(report).encode())
            code = 0
        finally:
            os._exit(code)
    code, report = child_report(pid, read, write)
    assert 0 == code
    assert {"flushed": True, "sent": [[1000]]} == report
    bodies = [gzip.decompress(body) for _, _, body, _ in collector.received]
    assert [[0], [1000]] == [[json.loads(line)["n"] for line in b.splitlines()] for b in bodies]
    pipe.shutdown(0.5)


# -- ClickHouse -------------------------------------------------------------------------------


def test_clickhouse_rows_prepared_ahead_land_once(clickhouse: ClickHouseServer) -> None:
    """Through the real server: with the first insert held, the batches behind it are
    each prepared (made into rows and compressed) while the insert before waits for its
    answer, the inserts go in the order logged, and each row lands once."""
    create_table(clickhouse.url, "pipelined", columns={"n": "UInt64"})
    writer = ClickHouse(clickhouse.url, "pipelined", max_batch_records=0)
    pipe = keeping_pipeline(writer, batch_size=SIZE)
    batches = fall_behind(pipe, writer, 6)
    writer.release.set()
    assert pipe.flush(BOUND).complete
    sends = writer.of("send")
    assert [(0,), *batches] == sends
    assert [True] * len(batches[1:]) == overlapping(writer.events)[1:]
    rows = clickhouse.rows("SELECT n, count() AS c FROM pipelined GROUP BY n ORDER BY n")
    assert [(n, 1) for n in range(6 * SIZE + 1)] == [(int(r["n"]), int(r["c"])) for r in rows]
    stats = writer_stats(pipe, writer)
    assert (6 * SIZE + 1, 0) == (stats["records"], stats["dropped"])
    pipe.shutdown(5)


def test_clickhouse_a_batch_prepared_for_columns_since_dropped_is_made_again(
    clickhouse: ClickHouseServer,
) -> None:
    """Two batches prepared for the columns known then; a column is dropped: the first
    insert fails (``clickhouse_117``) and its retry, re-using its prepared insert, asks
    for the columns and makes the rows again; the second, prepared for the old columns
    too, is made again before it is sent. Every row lands once."""
    create_table(clickhouse.url, "reshaped", columns={"path": "String"})
    writer = ClickHouseWriter(clickhouse.url, "reshaped")
    line = '{{"timestamp":"2026-11-27T18:06:00.123456Z","message":"m","n":{},"path":"/p"}}'
    first, second, third = ([line.format(n).encode()] for n in range(3))
    writer.write(first)  # the columns are learnt
    prepared = [writer.prepare(second), writer.prepare(third)]
    clickhouse.query("ALTER TABLE reshaped DROP COLUMN path")
    with pytest.raises(DeliveryError) as caught:
        writer.send(second, prepared[0])
    assert "clickhouse_117" == caught.value.reason
    writer.send(second, prepared[0])
    writer.send(third, prepared[1])
    rows = clickhouse.rows("SELECT fields FROM reshaped")
    assert [0, 1, 2] == sorted(json.loads(row["fields"])["n"] for row in rows)


# -- the writer's side --------------------------------------------------------------------------


def test_meanwhile_runs_once_the_request_is_sent_and_before_its_answer_is_read(
    collector: HttpCollector,
) -> None:
    """``HttpWriter.send(..., meanwhile=f)`` calls ``f`` once, with the whole request at
    the server and its answer not read yet: the server here answers only after ``f`` has
    run. A request that cannot be sent (nothing listens) never calls it."""
    ran = threading.Event()

    def after_meanwhile(path: str, headers: dict[str, str], body: bytes) -> Any:
        assert ran.wait(BOUND)
        return 200, {}, b""

    collector.answers.append(after_meanwhile)
    writer = HttpWriter(collector.url)
    calls: list[bool] = []

    def meanwhile() -> None:
        calls.append(ran.is_set())
        ran.set()

    assert writer.send([b'{"n":1}'], writer.prepare([b'{"n":1}']), meanwhile) is None
    assert [False] == calls
    ((_, headers, body, status),) = collector.received
    assert (200, str(len(body))) == (status, headers["Content-Length"])
    assert b'{"n":1}\n' == gzip.decompress(body)
    collector.kill()
    with pytest.raises(DeliveryError):
        writer.send([b'{"n":2}'], writer.prepare([b'{"n":2}']), meanwhile)
    assert [False] == calls


class Unsplit(Plain):
    """A writer with ``prepare`` and a ``send`` that takes no ``meanwhile``."""

    def send(self, batch: Sequence[bytes], prepared: Any) -> Any:  # type: ignore[override]
        return HttpWriter.send(self, batch, prepared)


def test_a_send_without_meanwhile_is_reported_and_written_in_turn(
    collector: HttpCollector,
) -> None:
    """A writer asking to prepare ahead whose ``send`` takes no ``meanwhile`` is reported
    once and written with ``write``, in order; nothing is lost."""
    writer = Unsplit(collector.url, max_batch_records=0)
    pipe = keeping_pipeline(writer, batch_size=SIZE)
    log = pipe.get_logger("t")
    for n in range(3 * SIZE):
        log.info("r", n=n)
    assert pipe.flush(BOUND).complete
    bodies = [gzip.decompress(body) for _, _, body, _ in collector.received]
    assert list(range(3 * SIZE)) == [json.loads(x)["n"] for b in bodies for x in b.splitlines()]
    stats = writer_stats(pipe, writer)
    assert (3 * SIZE, 0) == (stats["records"], stats["dropped"])
    errors = pipe.backend.get_stats()["internal_errors"]
    assert 1 == sum(count for name, count in errors.items() if "prepare_ahead" in name)
    pipe.shutdown(5)


def test_the_lane_benchmark_runs_and_prints_the_ratios(clickhouse: ClickHouseServer) -> None:
    """benchmarks/lane.py (a ClickHouse server and a stand-in of its own, every record
    counted, each writer in turn and ahead) runs to the end with tiny figures; the
    numbers themselves are not judged here."""
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "lane.py"
    result = subprocess.run(
        [sys.executable, str(script), "--records", "2000", "--repeats", "1", "--delay", "0.001"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert 0 == result.returncode, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "ahead/in turn" in lines[1]
    assert ["clickhouse", "elasticsearch"] == [line.split()[0] for line in lines[2:4]]
