"""The async backend: queue, accounting, order, flush, shutdown, fork, faults."""

from __future__ import annotations

import gc
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import pytest

import kakashi
from kakashi.core.async_backend import (
    AsyncBackend,
    AsyncConfig,
    configure_async_backend,
    get_async_backend,
)
from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
from kakashi.core.pipeline import (
    LogLevel,
    PipelineConfig,
    default_json_formatter,
    exception_enricher,
    file_writer,
    thread_enricher,
)
from tests.conftest import Implementation, Keeper, balanced, read_json_lines, wait_or_kill


class SlowWriter:
    """A writer that sleeps per batch and keeps every line (decoded JSON)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.lines: list[dict[str, Any]] = []
        self.gate = threading.Event()
        self.gate.set()

    def write(self, batch: Any) -> None:
        self.gate.wait()
        if self.delay:
            time.sleep(self.delay)
        self.lines.extend(json.loads(line) for line in batch)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class CallsWriter(SlowWriter):
    """A :class:`SlowWriter` that also notes each flush and close, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def flush(self) -> None:
        self.calls.append("flush")

    def close(self) -> None:
        self.calls.append("close")


def overflow(
    pipeline: Any, writer: SlowWriter, burst: int = 10, after: int = 1, level: str = "info"
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Log *burst* records while *writer* holds the (small) queue full, then *after* more,
    each flushed, once it writes again; shut down. The stats, and the drop notices
    written."""
    writer.gate.clear()
    log = getattr(pipeline.get_logger("n"), level)
    for i in range(burst):
        log("r", n=i)
    writer.gate.set()
    pipeline.flush(5)
    for i in range(after):
        log("after", n=i)
        pipeline.flush(5)
    pipeline.shutdown(5)
    return pipeline.stats(), [line for line in writer.lines if line["logger"] == "kakashi"]


def async_pipeline(writer: Any, **async_options: Any) -> AsyncPipeline:
    config = AsyncPipelineConfig(
        pipeline_config=PipelineConfig(min_level="DEBUG", writers=(writer,)),
        async_config=AsyncConfig(**async_options),
    )
    return AsyncPipeline(config)


def ctrl_c_during(call: Any) -> None:
    """Run *call*, which waits, while a real SIGINT arrives 0.2 s in; the
    KeyboardInterrupt must come out of it."""
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
    # Python's own handler: a process started in the background (CI) ignores SIGINT.
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            call()
    finally:
        timer.join()
        signal.signal(signal.SIGINT, before)


class TestQueue:
    def make(
        self, impl: Implementation, capacity: int, strategy: int, block_timeout: float = 0.05
    ) -> tuple[Any, list[Any]]:
        events: list[Any] = []
        queue = impl.queue.RecordQueue(
            capacity,
            strategy,
            block_timeout,
            lambda: events.append("wake"),
            lambda record, reason: events.append((record, impl.queue.REASONS[reason])),
            lambda record: False,
        )
        return queue, events

    def test_drop_newest(self, impl: Implementation) -> None:
        """A full drop_newest queue refuses the new record and counts it."""
        queue, events = self.make(impl, 2, impl.queue.DROP_NEWEST)
        for item in "abcd":
            queue.put(item)

        assert ("a", "b") == queue.drain(10)
        assert [("c", "queue_full_drop_newest"), ("d", "queue_full_drop_newest")] == events

    def test_drop_oldest(self, impl: Implementation) -> None:
        """A full drop_oldest queue evicts the oldest record and counts it."""
        queue, events = self.make(impl, 2, impl.queue.DROP_OLDEST)
        for item in "abcd":
            queue.put(item)

        assert ("c", "d") == queue.drain(10)
        assert [("a", "queue_full_drop_oldest"), ("b", "queue_full_drop_oldest")] == events

    def test_refuse_counts_a_record_it_never_takes(self, impl: Implementation) -> None:
        """``refuse`` counts one record offered and dropped for the reason, leaves the
        queue and on_drop alone (its caller reports it); a reason that is not one is a
        ValueError, and counts nothing."""
        queue, events = self.make(impl, 2, impl.queue.BLOCK)
        queue.put("a")
        loop = impl.queue.REASONS.index("stdlib_loop")
        queue.refuse(loop)
        for bad in (-1, len(impl.queue.REASONS)):
            with pytest.raises(ValueError, match="index of REASONS"):
                queue.refuse(bad)
        c = queue.counters()
        assert (c["offered"], c["size"], c["dropped"]["stdlib_loop"]) == (2, 1, 1)
        assert sum(c["dropped"].values()) == 1
        assert ([], ("a",)) == (events, queue.drain(10))

    def test_refuse_from_inside_the_queue_counts_once_out(self, impl: Implementation) -> None:
        """A thread inside the queue (a finalizer the garbage collector runs on a worker
        that holds the pure queue's lock) never waits for itself: the refusal is counted
        once the thread is out of the queue's region, not before the books can take it."""
        from kakashi._locks import run_in_region

        queue, _ = self.make(impl, 2, impl.queue.BLOCK)
        loop = impl.queue.REASONS.index("stdlib_loop")

        def refuse_inside() -> None:
            if impl.pure:
                with queue._lock:  # what a worker in drain() holds
                    queue.refuse(loop)
            else:
                queue.refuse(loop)

        run_in_region(refuse_inside)
        c = queue.counters()
        assert (c["offered"], c["dropped"]["stdlib_loop"]) == (1, 1)

    def test_a_ctrl_c_while_waiting_for_room_counts_the_record(self, impl: Implementation) -> None:
        """A KeyboardInterrupt (a real SIGINT) while a caller waits for room under block
        goes on up, and its record is counted as dropped first: the books kept it as
        blocked for ever (pure) or lost it from them (compiled)."""
        queue, events = self.make(impl, 1, impl.queue.BLOCK, block_timeout=30.0)
        queue.put("a")
        ctrl_c_during(lambda: queue.put("b"))
        c = queue.counters()
        assert (c["offered"], c["size"], c["blocked"]) == (2, 1, 0)
        assert 1 == c["dropped"]["queue_full_block_timeout"]
        assert [("b", "queue_full_block_timeout")] == events

    def test_a_ctrl_c_while_held_at_shutdown_counts_the_record(self, impl: Implementation) -> None:
        """A record offered while a shutdown holds the closed queue waits for the drain; a
        KeyboardInterrupt (a real SIGINT) meanwhile goes on up, and the record is counted
        as dropped (``shutdown_timeout``) first, not left in fallback for ever."""
        queue, events = self.make(impl, 4, impl.queue.BLOCK)
        queue.hold(timeout=30.0)
        queue.close()
        ctrl_c_during(lambda: queue.put("late"))
        c = queue.counters()
        assert (c["offered"], c["in_fallback"], c["dropped"]["shutdown_timeout"]) == (1, 0, 1)
        assert [("late", "shutdown_timeout")] == events

    @pytest.mark.parametrize("count", [0, -1, -1000])
    def test_draining_less_than_one_takes_nothing(self, impl: Implementation, count: int) -> None:
        """A count below 1 takes no record, in both builds, and the counters still add up
        (the pure twin's in_flight went negative, the compiled one raised SystemError)."""
        queue, _ = self.make(impl, 4, impl.queue.DROP_OLDEST)
        queue.put("a")

        assert () == queue.drain(count)
        c = queue.counters()
        assert (c["size"], c["in_flight"], c["offered"]) == (1, 0, 1)
        assert ("a",) == queue.drain(10)

    def test_block_times_out_and_counts(self, impl: Implementation) -> None:
        """Under block, a caller waits for room; with none, the record is dropped, counted."""
        queue, events = self.make(impl, 1, impl.queue.BLOCK)
        queue.put("a")
        queue.put("b")

        assert ("b", "queue_full_block_timeout") == events[-1]
        assert 1 == queue.counters()["dropped"]["queue_full_block_timeout"]

    def test_block_resumes_when_drained(self, impl: Implementation) -> None:
        """A blocked caller proceeds as soon as a worker drains."""
        queue, _ = self.make(impl, 1, impl.queue.BLOCK, block_timeout=30.0)
        queue.put("a")
        producer = threading.Thread(target=queue.put, args=("b",))
        producer.start()
        while queue.waiters == 0:
            time.sleep(0.001)
        drained = queue.drain(1)
        producer.join()

        assert (("a",), ("b",)) == (drained, queue.drain(1))

    def test_wakes_only_a_sleeping_worker(self, impl: Implementation) -> None:
        """wake runs for the first record after the worker said it sleeps, and only then."""
        queue, events = self.make(impl, 10, impl.queue.BLOCK)
        assert queue.sleep()
        for item in "abc":
            queue.put(item)
        assert not queue.sleep()  # records wait: the worker must not sleep
        queue.drain(10)
        queue.put("d")  # the worker is awake (draining): no wake-up needed
        queue.drain(10)
        assert queue.sleep()
        queue.put("e")
        assert queue.sleep(3)  # waiting for a batch of three
        queue.put("f")
        queue.put("g")

        assert ["wake", "wake", "wake"] == events

    def test_counters_balance(self, impl: Implementation) -> None:
        """offered == written + filtered + dropped + size + in_flight (+ fallback), step by step."""
        queue, _ = self.make(impl, 3, impl.queue.DROP_OLDEST)

        def check() -> None:
            c = queue.counters()
            settled = c["written"] + c["written_sync"] + c["filtered"] + sum(c["dropped"].values())
            assert c["offered"] == settled + c["size"] + c["in_flight"] + c["in_fallback"]

        for item in range(5):
            queue.put(item)
            check()
        batch = queue.drain(2)
        check()
        queue.done(1, 1, 0)
        check()
        queue.abandon()
        check()
        assert 2 == len(batch)

    def test_closed_queue_hands_records_to_on_closed(self, impl: Implementation) -> None:
        """After close, offers go to on_closed; refused ones count as dropped."""
        queue, events = self.make(impl, 3, impl.queue.BLOCK)
        queue.close()
        queue.put("late")

        assert ("late", "closed") == events[-1]
        assert 1 == queue.counters()["dropped"]["closed"]


class Payload:
    """A record stand-in whose freeing can be watched (a weak reference) and whose
    finalizer can run code (*on_free*)."""

    def __init__(self, name: str, on_free: Any = None) -> None:
        self.name = name
        self.on_free = on_free

    def __del__(self) -> None:
        if self.on_free is not None:
            self.on_free(self)


class TestRetiredBatches:
    """The worker hands a finished batch back (``retire``): the compiled queue has the next
    puts free its records, one a put, so the worker's stretch with the GIL does not
    include freeing a thousand records; the pure twin lets it go at once. Either way
    every record is freed, none too early, and the counters do not move."""

    def make(self, impl: Implementation, capacity: int = 64) -> Any:
        return impl.queue.RecordQueue(
            capacity, impl.queue.DROP_NEWEST, 0.0, lambda: None, lambda r, i: None, bool
        )

    def retired_batch(self, queue: Any, count: int) -> list[weakref.ref[Payload]]:
        for i in range(count):
            queue.put(Payload(f"r{i}"))
        batch = queue.drain(count)
        queue.done(count, 0, 0)
        refs = [weakref.ref(item) for item in batch]
        queue.retire(batch)
        return refs

    def test_puts_free_the_records_of_a_retired_batch(self, impl: Implementation) -> None:
        """Ten records retired: the compiled queue keeps them until ten puts free them
        (one a put, the last record first) and the next one lets the empty batch go (as
        it frees a record of the next batch, if there is one: see the steady-state test);
        the pure twin frees them as soon as the worker's reference goes. The counters are
        those of the records."""
        queue = self.make(impl)
        refs = self.retired_batch(queue, 10)
        alive = sum(ref() is not None for ref in refs)
        assert (0 if impl.pure else 10) == alive
        assert (0 if impl.pure else 1) == queue.retired

        for i in range(4):
            queue.put(f"n{i}")
        alive_after_four = [ref() is not None for ref in refs]
        assert ([False] * 10 if impl.pure else [True] * 6 + [False] * 4) == alive_after_four
        for i in range(4, 10):
            queue.put(f"n{i}")
        assert [None] * 10 == [ref() for ref in refs]
        queue.put("n10")
        assert 0 == queue.retired
        c = queue.counters()
        assert (c["offered"], c["written"], c["size"], c["in_flight"]) == (21, 10, 11, 0)

    def test_the_puts_keep_pace_with_a_batch_retired_every_batch_of_puts(
        self, compiled: Implementation
    ) -> None:
        """A worker that retires a batch of B records every B puts (the steady state of a
        burst) finds one batch retired at most at each retire: B puts free its B records,
        and letting the emptied batch go costs no put a record. (When it cost one, the
        ring filled up to eight batches, and eight batches of records stayed alive.)"""
        queue = self.make(compiled, capacity=64)
        seen = []
        for i in range(10):
            queue.put(Payload(f"r{i}"))
        for cycle in range(60):
            batch = queue.drain(10)
            queue.done(10, 0, 0)
            queue.retire(batch)
            del batch
            for i in range(10):
                queue.put(Payload(f"c{cycle}-{i}"))
            seen.append(queue.retired)
        assert max(seen) <= 2
        assert 1 == seen[-1]

    def test_a_batch_still_referenced_is_not_freed(self, compiled: Implementation) -> None:
        """A batch someone else still holds (the worker's variable, a lane retrying it)
        is left whole: every put skips it, and it is freed once only the queue has it."""
        queue = self.make(compiled)
        for i in range(6):
            queue.put(Payload(f"r{i}"))
        batch = queue.drain(6)
        queue.retire(batch)
        for i in range(10):
            queue.put(f"n{i}")
        assert ["r0", "r1", "r2", "r3", "r4", "r5"] == [item.name for item in batch]
        assert 1 == queue.retired

        refs = [weakref.ref(item) for item in batch]
        del batch
        for i in range(7):  # six records, then the empty batch
            queue.put(f"m{i}")
        assert [None] * 6 == [ref() for ref in refs]
        assert 0 == queue.retired

    def test_a_half_freed_batch_is_out_of_the_collector_s_reach(
        self, compiled: Implementation
    ) -> None:
        """Once its first record is freed, the batch (a tuple with empty slots) is no
        longer tracked by the collector: gc.get_objects never gives it to Python code,
        which would read a slot that holds nothing."""
        queue = self.make(compiled)
        for i in range(10):
            queue.put(Payload(f"r{i}"))
        batch = queue.drain(10)
        assert gc.is_tracked(batch)  # as drained: the collector sees it
        where = id(batch)
        refs = [weakref.ref(item) for item in batch]
        queue.retire(batch)
        del batch
        queue.put("n0")  # frees one of the ten
        assert 9 == sum(ref() is not None for ref in refs)

        # (Only addresses compared: reading the batch's slots would crash if it were here.)
        assert where not in {id(o) for o in gc.get_objects()}

    def test_free_retired_lets_every_batch_go(self, impl: Implementation) -> None:
        """What a worker does before it idles: every retired record is freed now."""
        queue = self.make(impl)
        for i in range(12):
            queue.put(Payload(f"r{i}"))
        refs = []
        for count in (5, 7):  # two batches retired with no put in between
            batch = queue.drain(count)
            refs += [weakref.ref(item) for item in batch]
            queue.retire(batch)
            del batch
        assert (0 if impl.pure else 2) == queue.free_retired()
        assert [None] * 12 == [ref() for ref in refs]
        assert 0 == queue.retired

    def test_no_more_than_eight_batches_are_kept(self, compiled: Implementation) -> None:
        """Without puts, a ninth retired batch makes the queue let the oldest go."""
        queue = self.make(compiled)
        for i in range(27):
            queue.put(Payload(f"r{i}"))
        batches = [queue.drain(3) for _ in range(9)]
        first, *rest = [[weakref.ref(item) for item in batch] for batch in batches]
        for batch in batches[:8]:
            queue.retire(batch)
        del batch
        ninth = batches[8]
        del batches
        assert 8 == queue.retired
        assert all(ref() is not None for ref in first)

        queue.retire(ninth)
        assert 8 == queue.retired
        assert [None] * 3 == [ref() for ref in first]
        assert all(ref() is not None for refs in rest for ref in refs)

    def test_a_finalizer_that_logs_while_its_record_is_freed(self, impl: Implementation) -> None:
        """A record's finalizer that puts a record (a ``__del__`` that logs) runs in the
        put that frees it: its record is taken, it frees nothing itself (no recursion
        through a thousand finalizers), and every record is counted."""
        queue = self.make(impl, capacity=256)
        seen: list[str] = []

        def log_from_del(payload: Payload) -> None:
            seen.append(payload.name)
            queue.put(f"from-del-{payload.name}")

        for i in range(20):
            queue.put(Payload(f"r{i}", log_from_del))
        batch = queue.drain(20)
        queue.done(20, 0, 0)
        queue.retire(batch)
        del batch
        for i in range(11):
            queue.put(f"n{i}")
        queue.free_retired()

        assert 20 == len(seen)
        assert 20 == len(set(seen))
        c = queue.counters()
        assert c["offered"] == 20 + 20 + 11
        assert c["size"] == 31
        assert c["offered"] == c["written"] + c["size"] + c["in_flight"]

    def test_the_worker_frees_what_it_retired_before_it_idles(
        self, impl: Implementation, tmp_path: Path
    ) -> None:
        """Through the backend: after a burst, the records' values are freed once the
        worker goes idle, with no further log call to free them."""
        pipeline = async_pipeline(
            file_writer(tmp_path / "retired.log"), batch_size=100, batch_timeout=0.01
        )
        try:
            log = pipeline.get_logger("retired")
            values = [Payload(f"v{i}") for i in range(500)]
            refs = [weakref.ref(v) for v in values]
            for value in values:
                log.info("burst", value=value)
            del values, value
            assert pipeline.flush(30)
            deadline = time.monotonic() + 30
            while any(ref() is not None for ref in refs) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert [None] * 500 == [ref() for ref in refs]
            assert 0 == pipeline.backend.queue.retired
        finally:
            pipeline.shutdown(10)
        assert 500 == len(read_json_lines(tmp_path / "retired.log"))


class TestConfig:
    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"max_queue_size": 0}, "max_queue_size must be at least 1"),
            ({"worker_count": 0}, "worker_count must be at least 1"),
            ({"batch_size": -5}, "batch_size must be at least 1"),
            ({"batch_timeout": 0}, "batch_timeout must be greater than 0"),
            ({"shutdown_timeout": -1}, "shutdown_timeout must be greater than 0"),
            ({"overflow_strategy": "spill"}, "overflow_strategy must be one of block"),
        ],
    )
    def test_invalid_values_name_the_field(self, options: dict[str, Any], message: str) -> None:
        """Zero or negative sizes, no workers and unknown strategies fail at construction."""
        with pytest.raises(ValueError, match=message):
            AsyncConfig(**options)

    def test_original_spelling_of_the_strategy(self) -> None:
        """queue_overflow_strategy is accepted as the original library spelled it."""
        assert "drop_newest" == AsyncConfig(queue_overflow_strategy="drop_newest").overflow_strategy

    def test_wrong_types(self) -> None:
        """A non-int size is a TypeError naming the field."""
        with pytest.raises(TypeError, match="max_queue_size must be an int"):
            AsyncConfig(max_queue_size="big")  # type: ignore[arg-type]


class TestAccounting:
    def test_stats_while_writers_first_write(self) -> None:
        """Stats read on another thread while the worker meets writers for the first time
        (each adds its entry): never an error, and every writer's entry in the end.

        Regression: the worker added an entry without the lock that the stats walk held
        ("dictionary changed size during iteration" on the monitoring thread)."""
        previous = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)  # threads take turns often: the window is hit
        errors: list[BaseException] = []
        try:
            for _ in range(15):
                writers = tuple(SlowWriter() for _ in range(200))
                config = AsyncPipelineConfig(
                    pipeline_config=PipelineConfig(min_level="DEBUG", writers=writers),
                    async_config=AsyncConfig(),
                )
                pipeline = AsyncPipeline(config)
                stop = threading.Event()

                def monitor(
                    pipeline: AsyncPipeline = pipeline, stop: threading.Event = stop
                ) -> None:
                    while not stop.is_set():
                        try:
                            pipeline.stats()
                        except BaseException as exc:
                            errors.append(exc)
                            return

                watcher = threading.Thread(target=monitor)
                watcher.start()
                pipeline.get_logger("first").info("one")
                result = pipeline.shutdown(10)
                stop.set()
                watcher.join()
                assert result.complete
                assert 200 == len(pipeline.stats()["writers"])
                assert all(1 == len(writer.lines) for writer in writers)
        finally:
            sys.setswitchinterval(previous)
        assert [] == errors

    @pytest.mark.parametrize("strategy", ["block", "drop_oldest", "drop_newest"])
    def test_exact_under_overflow(self, strategy: str) -> None:
        """With a slow writer, the counters balance at every instant and after shutdown."""
        writer = SlowWriter(delay=0.02)  # slower than the producer: the queue overflows
        pipeline = async_pipeline(
            writer, max_queue_size=20, batch_size=5, overflow_strategy=strategy, block_timeout=0.005
        )
        log = pipeline.get_logger("acct")
        unbalanced: list[dict[str, Any]] = []
        stop = threading.Event()

        def monitor() -> None:
            while not stop.is_set():
                stats = pipeline.stats()
                if not balanced(stats):
                    unbalanced.append(stats)

        watcher = threading.Thread(target=monitor)
        watcher.start()
        for i in range(300):
            log.info("record", n=i)
        result = pipeline.shutdown(10)
        stop.set()
        watcher.join()
        stats = pipeline.stats()

        assert [] == unbalanced
        assert result.complete
        assert 0 == stats["pending"]
        assert 300 == stats["messages_enqueued"]
        assert stats["messages_dropped"] > 0
        notices = [line for line in writer.lines if line["logger"] == "kakashi"]
        records = [line for line in writer.lines if line["logger"] == "acct"]
        assert stats["messages_written"] == len(records)
        assert notices and all(n["level"] == "WARNING" for n in notices)
        assert stats["messages_dropped"] == sum(n["dropped"] for n in notices)

    def test_notice_says_why(self) -> None:
        """The drop notice names the reason and the count."""
        writer = SlowWriter()
        pipeline = async_pipeline(writer, max_queue_size=2, overflow_strategy="drop_newest")
        _, (notice, *_) = overflow(pipeline, writer)

        assert notice["message"].startswith("dropped ")
        assert "queue_full_drop_newest" in notice["message"]

    @pytest.mark.parametrize("refusing", ["logger_name", "level"])
    def test_no_filter_hides_the_notice(self, refusing: str) -> None:
        """The notice is the library's, not the application's: a pipeline whose filters
        would refuse it (one that keeps only its own logger, one above WARNING) still
        writes it, enriched and formatted, and the counts it carries add up."""
        writer = SlowWriter()
        keep = (
            kakashi.logger_name_filter(["n"])
            if refusing == "logger_name"
            else kakashi.level_filter("ERROR")
        )
        config = AsyncPipelineConfig(
            pipeline_config=PipelineConfig(
                min_level="DEBUG",
                enrichers=(kakashi.fields_enricher(app="shop"),),
                filters=(keep,),
                writers=(writer,),
            ),
            async_config=AsyncConfig(max_queue_size=2, overflow_strategy="drop_newest"),
        )
        stats, notices = overflow(AsyncPipeline(config), writer, level="error")

        assert stats["messages_dropped"] > 0
        assert stats["messages_dropped"] == sum(n["dropped"] for n in notices)
        assert {"shop"} == {n["app"] for n in notices}

    @pytest.mark.parametrize("render", ["filters_it_out", "raises", "returns_str"])
    def test_a_sink_of_another_kind_still_tells(self, render: str) -> None:
        """A sink without ``render_notice`` whose ``render`` filters the notice out,
        raises on it or returns no bytes: the notice is still written as a JSON line
        with its counts, later batches go on, and the books balance."""

        class Foreign(AsyncPipeline):
            render_notice = None  # type: ignore[assignment]  # a sink of another kind

            def render(self, record: Any, **options: Any) -> Any:
                if record.logger == "kakashi":
                    if render == "raises":
                        raise RuntimeError("this render cannot do the notice")
                    return None if render == "filters_it_out" else "not bytes"
                return super().render(record)

        writer = SlowWriter()
        pipeline = Foreign(
            AsyncPipelineConfig(
                pipeline_config=PipelineConfig(min_level="DEBUG", writers=(writer,)),
                async_config=AsyncConfig(
                    max_queue_size=2, batch_size=1, overflow_strategy="drop_newest"
                ),
            )
        )
        stats, notices = overflow(pipeline, writer, burst=20, after=3)

        assert stats["messages_dropped"] > 0
        assert stats["messages_dropped"] == sum(n["dropped"] for n in notices)
        assert 3 == sum(line["message"] == "after" for line in writer.lines)
        assert balanced(stats)


class TestOrder:
    def test_file_receives_enqueue_order_with_many_workers(self, tmp_path: Path) -> None:
        """Several producers and four workers: the file holds the enqueue order."""
        path = tmp_path / "order.log"
        pipeline = async_pipeline(file_writer(path), worker_count=4, batch_size=7)
        log = pipeline.get_logger("order")
        sequence = iter(range(10**9))
        lock = threading.Lock()

        def produce(thread_index: int) -> None:
            for i in range(500):
                with lock:  # the global sequence is the enqueue order
                    log.info("r", seq=next(sequence), thread=thread_index, i=i)

        threads = [threading.Thread(target=produce, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert pipeline.flush(10)
        pipeline.shutdown(5)
        events = read_json_lines(path)

        assert list(range(2000)) == [event["seq"] for event in events]

    def test_each_thread_in_order_without_a_global_lock(self, tmp_path: Path) -> None:
        """Without coordination, every producer's records keep their order."""
        path = tmp_path / "threads.log"
        pipeline = async_pipeline(file_writer(path), worker_count=3, batch_size=13)
        log = pipeline.get_logger("order")

        def produce(thread_index: int) -> None:
            for i in range(400):
                log.info("r", t=thread_index, i=i)

        threads = [threading.Thread(target=produce, args=(n,)) for n in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        pipeline.shutdown(10)
        events = read_json_lines(path)

        for thread_index in range(5):
            assert list(range(400)) == [e["i"] for e in events if e["t"] == thread_index]


class TestFlushAndShutdown:
    def test_flush_is_a_barrier(self) -> None:
        """flush returns only once every earlier record reached the writer."""
        writer = SlowWriter(delay=0.01)
        pipeline = async_pipeline(writer, batch_size=10)
        log = pipeline.get_logger("f")
        for i in range(100):
            log.info("r", i=i)
        result = pipeline.flush(30)

        assert result.complete
        assert 100 == len(writer.lines)
        pipeline.shutdown(5)

    def test_flush_reports_pending_on_timeout(self) -> None:
        """A flush that cannot finish in time says how much is pending."""
        writer = SlowWriter()
        writer.gate.clear()
        pipeline = async_pipeline(writer)
        log = pipeline.get_logger("f")
        for i in range(5):
            log.info("r", i=i)
        result = pipeline.flush(0.05)
        writer.gate.set()
        pipeline.shutdown(5)

        assert (False, 5) == (result.complete, result.pending)

    def test_shutdown_returns_despite_a_hung_writer(self) -> None:
        """shutdown returns within its timeout with a hung writer, reporting what it left."""
        writer = SlowWriter()
        writer.gate.clear()  # the writer hangs until released below
        pipeline = async_pipeline(writer, batch_size=1)
        log = pipeline.get_logger("s")
        for i in range(10):
            log.info("r", i=i)
        result = pipeline.shutdown(0.2)
        stats = pipeline.stats()
        writer.gate.set()  # only now: had shutdown waited for the writer, we'd never get here

        assert not result.complete
        assert 10 == result.pending + stats["messages_written"]
        assert result.pending >= 9

    def test_shutdown_closes_the_writers_when_an_idle_worker_wakes_too_late(self) -> None:
        """The worker, idle, has not run since the shutdown woke it when the deadline
        comes (a loaded machine; or the drain used all the time, waiting for a lane's
        hung write): it is in no write, so the writers are flushed and closed all the
        same, in the time kept for them, and the shutdown is complete. It was taken for
        hung, and no writer was closed (a spool's directory stayed locked), while the
        shutdown said it was complete."""

        class Stalled:
            """The worker's wake event; a wait after ``stall`` is set does not return
            until ``go`` is, whatever ``set`` says (the worker is not scheduled)."""

            def __init__(self, event: threading.Event) -> None:
                self.event = event
                self.stall = threading.Event()
                self.stalled = threading.Event()
                self.go = threading.Event()

            def wait(self, timeout: float | None = None) -> bool:
                if self.stall.is_set():
                    self.stalled.set()
                    self.go.wait(30)
                return self.event.wait(timeout)

            def set(self) -> None:
                self.event.set()

            def clear(self) -> None:
                self.event.clear()

        writer = CallsWriter()
        pipeline = async_pipeline(writer, batch_size=5, batch_timeout=0.01)
        backend = pipeline.backend
        wake = backend._wake = Stalled(backend._wake)  # type: ignore[assignment]
        log = pipeline.get_logger("s")
        for i in range(7):
            log.info("r", i=i)
        assert pipeline.flush(10).complete
        workers = list(backend._workers)
        wake.stall.set()
        assert wake.stalled.wait(10)
        try:
            result = pipeline.shutdown(1.0)
            worker_alive = any(thread.is_alive() for thread in workers)
            stats = pipeline.stats()
        finally:
            wake.go.set()

        assert worker_alive  # the case under test: the worker had not run
        assert (True, 0) == (result.complete, result.pending)
        assert ["flush", "flush", "close"] == writer.calls
        assert list(range(7)) == [line["i"] for line in writer.lines]
        assert balanced(stats)
        for thread in workers:
            thread.join(10)
            assert not thread.is_alive()
        # Closed once: a second shutdown has nothing left to do.
        assert pipeline.shutdown(1.0).complete
        assert ["flush", "flush", "close"] == writer.calls

    def test_a_flush_that_raises_systemexit_still_closes_the_writer(self, capfd: Any) -> None:
        """The shutdown's flush raises ``SystemExit``: the writer is closed all the same,
        the failure reported, and the shutdown incomplete (it was never closed, and the
        shutdown said complete)."""

        class Exiting(CallsWriter):
            def flush(self) -> None:
                super().flush()
                raise SystemExit(3)

        writer = Exiting()
        pipeline = async_pipeline(writer, batch_size=5)
        pipeline.get_logger("s").info("r", i=0)
        result = pipeline.shutdown(5)

        assert (False, 0) == (result.complete, result.pending)
        assert ["flush", "close"] == writer.calls
        assert [0] == [line["i"] for line in writer.lines]
        assert "flush failed: SystemExit: 3" in capfd.readouterr().err

    def test_an_interrupted_shutdown_gives_the_turn_back(self) -> None:
        """A Ctrl-C while the shutdown holds the workers' turn to close the writers: the
        interrupt reaches the caller, the turn is free again (it stayed taken, and the
        workers with it), and a second shutdown closes the writers and completes."""

        class Interrupting(CallsWriter):
            def flush(self) -> None:
                super().flush()
                if self.calls.count("flush") == 1:
                    os.kill(os.getpid(), signal.SIGINT)  # to the main thread, in its wait
                    time.sleep(0.5)

        writer = Interrupting()
        pipeline = async_pipeline(writer, batch_size=5)
        pipeline.get_logger("s").info("r", i=0)
        # Python's own handler: a process started in the background (CI) ignores SIGINT.
        before = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            with pytest.raises(KeyboardInterrupt):
                pipeline.shutdown(5)
        finally:
            signal.signal(signal.SIGINT, before)

        assert not pipeline.backend._turn.locked()
        assert pipeline.shutdown(5).complete
        assert "close" in writer.calls
        assert balanced(pipeline.stats())

    def test_a_hung_lane_leaves_the_closes_their_time(self, tmp_path: Path) -> None:
        """A lane's write never returns, so the drain runs out of time: the other writer
        is still closed with time left (a close taking a timeout is given a positive one;
        it was given 0)."""

        class Hanging:
            concurrent = True  # its writes are made on a lane of its own

            def __init__(self) -> None:
                self.gate = threading.Event()
                self.entered = threading.Event()

            def write(self, batch: Any) -> None:
                self.entered.set()
                self.gate.wait(30)

            def flush(self) -> None:
                pass

            def close(self) -> None:
                pass

        class Timed(SlowWriter):
            def __init__(self) -> None:
                super().__init__()
                self.given: list[float] = []

            def close(self, timeout: float = 5.0) -> None:
                self.given.append(timeout)

        hanging, timed = Hanging(), Timed()
        config = AsyncPipelineConfig(
            pipeline_config=PipelineConfig(min_level="DEBUG", writers=(hanging, timed)),
            async_config=AsyncConfig(batch_size=5),
        )
        pipeline = AsyncPipeline(config)
        log = pipeline.get_logger("s")
        for i in range(5):
            log.info("r", i=i)
        assert hanging.entered.wait(10)
        try:
            result = pipeline.shutdown(2.0)
        finally:
            hanging.gate.set()

        assert not result.complete  # the lane's write never returned in time
        assert len(timed.given) == 1 and timed.given[0] > 0
        assert [0, 1, 2, 3, 4] == [line["i"] for line in timed.lines]

    def test_shutdown_report_counts_only_records_not_written(self, capfd: Any) -> None:
        """The report gives the time spent and counts what it abandoned: the record whose
        write has not returned. A record logged during the drain is kept behind it, never
        written ahead of it (nor while its write runs): when the drain runs out of time
        it is dropped and counted (``shutdown_timeout``), and its caller never waited."""
        worker_gate, fallback_gate = threading.Event(), threading.Event()
        lines: list[bytes] = []

        class Writer:
            def write(self, batch: Any) -> None:
                on_worker = threading.current_thread().name.startswith("kakashi-worker")
                (worker_gate if on_worker else fallback_gate).wait(30)
                lines.extend(batch)

            def flush(self) -> None:
                pass

            def close(self) -> None:
                pass

        pipeline = async_pipeline(Writer(), batch_size=1)
        log = pipeline.get_logger("s")
        log.info("held by the worker")
        while not pipeline.stats()["in_flight"]:
            time.sleep(0.001)
        results: list[Any] = []
        shutting = threading.Thread(target=lambda: results.append(pipeline.shutdown(0.5)))
        shutting.start()
        while not pipeline.backend.queue.closed:
            time.sleep(0.001)
        late = threading.Thread(target=log.info, args=("kept behind the held batch",))
        late.start()  # kept (in fallback) until the drain ends
        while not pipeline.stats()["in_fallback"]:
            time.sleep(0.001)
        late.join(30)
        assert not late.is_alive()  # its caller did not wait for the drain
        shutting.join(30)
        fallback_gate.set()
        worker_gate.set()
        report = capfd.readouterr().err
        took = float(re.search(r"not written after (\d+\.\d\d)s \(allowed 0.5s\)", report)[1])

        assert (False, 1) == (results[0].complete, results[0].pending)
        assert "1 record not written" in report
        assert "1 in batches whose write has not returned" in report
        assert "left in the queue" not in report
        assert took >= 0.5  # it waited for its whole timeout, and says how long it took
        stats = pipeline.stats()
        assert 0 == stats["messages_written_sync"]
        assert 1 == stats["dropped_by_reason"]["shutdown_timeout"]
        assert not [line for line in lines if b"kept behind" in line]

    def test_fallback_to_sync_after_shutdown(self) -> None:
        """After shutdown, fallback_to_sync writes records synchronously instead of losing them."""
        writer = SlowWriter()
        pipeline = async_pipeline(writer)
        log = pipeline.get_logger("late")
        pipeline.shutdown(5)
        log.info("after shutdown")

        assert ["after shutdown"] == [line["message"] for line in writer.lines]
        assert 1 == pipeline.stats()["messages_written_sync"]

    def test_a_record_logged_during_the_drain_is_written_after_the_queued_ones(self) -> None:
        """Logged once intake closed but while the shutdown still drains: kept (pending,
        in fallback) and written by the shutdown behind the records queued before it,
        never ahead of them; the caller does not wait."""
        writer = SlowWriter()
        writer.gate.clear()
        gate_wait = writer.gate.wait
        writer.gate.wait = lambda: gate_wait(10)  # type: ignore[method-assign]
        pipeline = async_pipeline(writer)
        log = pipeline.get_logger("order")
        for i in range(5):
            log.info("queued", i=i)
        result: list[Any] = []
        stopper = threading.Thread(target=lambda: result.append(pipeline.shutdown(10)))
        stopper.start()
        deadline = time.monotonic() + 10
        while pipeline.backend.queue.closed is False and time.monotonic() < deadline:
            time.sleep(0.001)
        started = time.monotonic()
        log.info("during the drain", i=5)
        assert time.monotonic() - started < 5  # not the writer's gate (10 s): no wait
        assert 1 == pipeline.stats()["pending"] - pipeline.backend.queue.size - (
            pipeline.backend.queue.in_flight
        )
        writer.gate.set()
        stopper.join(10)

        assert [0, 1, 2, 3, 4, 5] == [line["i"] for line in writer.lines]
        assert result[0].complete
        stats = pipeline.stats()
        assert (stats["messages_written_sync"], stats["pending"]) == (1, 0)
        assert balanced(stats)

    @pytest.mark.parametrize("strategy", ["block", "drop_newest"])
    def test_threads_logging_through_a_shutdown_keep_their_order(
        self, tmp_path: Path, strategy: str
    ) -> None:
        """Three threads log without pause while the backend shuts down: each thread's
        records are in the file in the order it logged them, none twice, and every one
        is counted (written, through the fallback or not, or dropped)."""
        path = tmp_path / "through.log"
        pipeline = async_pipeline(
            file_writer(path), max_queue_size=5_000, batch_size=500, overflow_strategy=strategy
        )
        log = pipeline.get_logger("through")
        stop = threading.Event()
        counts = [0, 0, 0]

        def produce(t: int) -> None:
            i = 0
            while not stop.is_set():
                log.info("m", t=t, i=i)
                i += 1
            counts[t] = i

        threads = [threading.Thread(target=produce, args=(t,)) for t in range(3)]
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        result = pipeline.shutdown(10)
        time.sleep(0.1)  # logged after the shutdown: written at once
        stop.set()
        for thread in threads:
            thread.join(30)

        lines = [line for line in read_json_lines(path) if line.get("logger") == "through"]
        per: dict[int, list[int]] = {0: [], 1: [], 2: []}
        for line in lines:
            per[line["t"]].append(line["i"])
        for t in range(3):
            assert per[t] == sorted(set(per[t]))  # in order, none twice
        stats = pipeline.stats()
        assert balanced(stats)
        assert stats["messages_enqueued"] == sum(counts)
        assert stats["messages_written"] == len(lines)
        assert stats["pending"] == 0
        assert result.complete
        if strategy == "block":
            assert stats["messages_dropped"] == 0

    def test_no_fallback_counts_a_drop(self) -> None:
        """With fallback_to_sync=False, a record after shutdown is dropped and counted."""
        writer = SlowWriter()
        config = AsyncPipelineConfig(
            pipeline_config=PipelineConfig(writers=(writer,)), fallback_to_sync=False
        )
        pipeline = AsyncPipeline(config)
        log = pipeline.get_logger("late")
        pipeline.shutdown(5)
        log.info("lost but counted")

        assert [] == writer.lines
        assert 1 == pipeline.stats()["dropped_by_reason"]["closed"]

    def test_interpreter_exit_drains(self, tmp_path: Path) -> None:
        """A process that logs N records and exits without shutdown leaves N lines."""
        path = tmp_path / "exit.log"
        script = textwrap.dedent(
            f"""
            from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
            from kakashi.core.async_backend import AsyncConfig
            from kakashi.core.pipeline import PipelineConfig, file_writer
            pipeline = AsyncPipeline(AsyncPipelineConfig(
                pipeline_config=PipelineConfig(writers=(file_writer({str(path)!r}),)),
                async_config=AsyncConfig(max_queue_size=100_000, batch_size=500),
            ))
            log = pipeline.get_logger("exit")
            for i in range(20_000):
                log.info("r", i=i)
            """
        )
        subprocess.run([sys.executable, "-c", script], check=True, timeout=120)

        assert list(range(20_000)) == [event["i"] for event in read_json_lines(path)]


class TestFaults:
    @staticmethod
    def start_threads_with(monkeypatch: pytest.MonkeyPatch, start: Any) -> None:
        """Make the backend's threads start through ``start(n, real_start)``, *n* counting
        the starts from 1 (``real_start()`` starts the thread)."""
        from kakashi.core import async_backend

        count = [0]
        real = threading.Thread

        class Patched(real):  # type: ignore[misc, valid-type]
            def start(self) -> None:
                count[0] += 1
                start(count[0], lambda: real.start(self))

        monkeypatch.setattr(async_backend.threading, "Thread", Patched)

    def test_a_start_that_cannot_make_a_thread_leaves_the_next_record_to_try(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The first record starts the workers; when no thread can be started (the
        system's limit), that record is queued all the same, the backend stays stopped,
        and the next record tries again. A failed start used to leave the backend
        "running" with no worker, or "stopped" with no one left to start it."""
        from kakashi import _errors

        writer = Keeper()
        pipeline = async_pipeline(writer)
        refuse = [True]

        def start(n: int, real_start: Any) -> None:
            if refuse[0]:
                raise RuntimeError("can't start new thread")
            real_start()

        self.start_threads_with(monkeypatch, start)
        log = pipeline.get_logger("s")
        log.info("first")
        assert ("stopped", 1) == (pipeline.backend.state, pipeline.stats()["queue_size"])
        assert 1 == _errors.error_counts()["async backend start: RuntimeError"]
        refuse[0] = False
        log.info("second")
        assert pipeline.flush(10).complete
        pipeline.shutdown(10)
        assert ["first", "second"] == [line["message"] for line in writer.lines]
        assert balanced(pipeline.stats())

    def test_a_start_that_makes_some_threads_runs_with_them(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Two workers asked, the second thread refused: the failure is reported and the
        backend runs with the one it has."""
        from kakashi import _errors

        def start(n: int, real_start: Any) -> None:
            if n == 2:
                raise RuntimeError("can't start new thread")
            real_start()

        writer = Keeper()
        pipeline = async_pipeline(writer, worker_count=2)
        self.start_threads_with(monkeypatch, start)
        log = pipeline.get_logger("s")
        log.info("first")
        assert "running" == pipeline.backend.state
        assert 1 == pipeline.stats()["active_workers"]
        assert 1 == _errors.error_counts()["async backend start: RuntimeError"]
        assert pipeline.flush(10).complete
        pipeline.shutdown(10)
        assert ["first"] == [line["message"] for line in writer.lines]

    def test_a_ctrl_c_during_a_partial_start_goes_on_up_and_keeps_the_thread(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A KeyboardInterrupt that lands in the second worker's start once that thread
        runs (Thread.start waits for it to begin): the interrupt reaches the caller (it
        was reported and swallowed), and the thread is one of the backend's workers (it
        ran unlisted)."""

        def start(n: int, real_start: Any) -> None:
            real_start()
            if n == 2:
                raise KeyboardInterrupt

        writer = Keeper()
        pipeline = async_pipeline(writer, worker_count=2)
        self.start_threads_with(monkeypatch, start)
        log = pipeline.get_logger("s")
        with pytest.raises(KeyboardInterrupt):
            log.info("interrupted")
        assert "running" == pipeline.backend.state
        assert 2 == pipeline.stats()["active_workers"]
        log.info("next")
        assert pipeline.flush(10).complete
        pipeline.shutdown(10)
        assert ["next"] == [line["message"] for line in writer.lines]
        assert balanced(pipeline.stats())

    def test_raising_writer_never_reaches_the_caller(self, capfd: Any) -> None:
        """A writer that raises is retried, counted, reported once; the worker survives."""

        class Broken(SlowWriter):
            def write(self, batch: Any) -> None:
                raise OSError("collector down")

        good = SlowWriter()
        config = AsyncPipelineConfig(
            pipeline_config=PipelineConfig(writers=(Broken(), good)),
            async_config=AsyncConfig(max_error_retries=2, error_retry_delay=0.001),
        )
        pipeline = AsyncPipeline(config)
        log = pipeline.get_logger("faulty")
        for i in range(20):
            log.info("r", i=i)
        assert pipeline.flush(10)
        stats = pipeline.stats()
        pipeline.shutdown(5)

        assert 20 == len(good.lines)
        assert 20 == stats["messages_dropped"] == stats["dropped_by_reason"]["write_error"]
        broken = next(w for w in stats["writers"] if "Broken" in w["writer"])
        assert 20 == broken["dropped"]
        assert 1 == capfd.readouterr().err.count("collector down")
        assert 1 == stats["active_workers"]

    @pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
    def test_a_child_forked_after_shutdown_writes_through_the_fallback(
        self, tmp_path: Path
    ) -> None:
        """Shut down in the parent, so in the child: its records are written by the
        synchronous fallback, as the parent's would be. They used to wait in a reopened
        queue that no worker would ever start for, and the child's shutdown said
        complete."""
        path = tmp_path / "after.log"
        pipeline = AsyncPipeline(
            AsyncPipelineConfig(pipeline_config=PipelineConfig(writers=(file_writer(path),)))
        )
        log = pipeline.get_logger("fork")
        log.info("parent")
        assert pipeline.shutdown(5).complete
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for i in range(5):
                    log.info("child", i=i)
                stats = pipeline.stats()
                ok = pipeline.shutdown(5).complete and balanced(stats) and stats["pending"] == 0
                code = 0 if ok and stats["messages_written_sync"] == 5 else 2
            finally:
                os._exit(code)
        status = wait_or_kill(pid)
        messages = [event["message"] for event in read_json_lines(path)]
        assert 0 == os.waitstatus_to_exitcode(status)
        assert ["parent"] + ["child"] * 5 == messages

    @pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
    def test_fork_child_logs_through_the_same_logger(self, tmp_path: Path) -> None:
        """A forked child gets its own queue and workers; its records land, parent's stay."""
        path = tmp_path / "fork.log"
        writer = SlowWriter()
        writer.gate.clear()  # the parent's worker is stuck mid-write while we fork
        pipeline = AsyncPipeline(
            AsyncPipelineConfig(pipeline_config=PipelineConfig(writers=(file_writer(path),)))
        )
        blocked = async_pipeline(writer)
        blocked.get_logger("busy").info("parent, held")
        log = pipeline.get_logger("fork")
        log.info("parent before fork")
        assert pipeline.flush(5)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for i in range(50):
                    log.info("child", i=i)
                code = 0 if pipeline.flush(10) else 2
            finally:
                os._exit(code)
        status = wait_or_kill(pid)
        log.info("parent after fork")
        writer.gate.set()
        pipeline.shutdown(5)
        blocked.shutdown(5)
        messages = [event["message"] for event in read_json_lines(path)]

        assert 0 == os.waitstatus_to_exitcode(status)
        assert 50 == messages.count("child")
        assert ["parent before fork", "parent after fork"] == [
            m for m in messages if m.startswith("parent")
        ]


class TestPageExamples:
    def test_async_pipeline_example(self, tmp_path: Path, monkeypatch: Any) -> None:
        """The page's AsyncPipeline example runs as written and logs asynchronously."""
        monkeypatch.chdir(tmp_path)
        pipeline_config = PipelineConfig(
            min_level=LogLevel.INFO,
            enrichers=(thread_enricher, exception_enricher),
            filters=(),
            formatter=default_json_formatter,
            writers=(file_writer("app.log"),),
        )
        async_config = AsyncConfig(
            max_queue_size=25000, worker_count=2, batch_size=200, batch_timeout=0.1,
            enable_batching=True,
        )  # fmt: skip
        async_pipeline_config = AsyncPipelineConfig(
            pipeline_config=pipeline_config,
            async_config=async_config,
            enable_async=True,
            fallback_to_sync=True,
        )
        pipeline = AsyncPipeline(async_pipeline_config)
        log = pipeline.get_logger("api")
        log.info("handled", status=200)
        names = {t.name for t in threading.enumerate()}
        pipeline.shutdown(5)

        assert {"kakashi-worker-0", "kakashi-worker-1"} <= names
        assert "handled" == read_json_lines(tmp_path / "app.log")[0]["message"]

    def test_configure_async_backend_replaces_and_drains(self) -> None:
        """configure_async_backend really replaces the global backend; the old one drains."""
        writer = SlowWriter(delay=0.001)
        first = configure_async_backend(max_queue_size=1000, worker_count=1, batch_size=10)
        config = AsyncPipelineConfig(pipeline_config=PipelineConfig(writers=(writer,)))
        pipeline = AsyncPipeline(config, backend=first)
        log = pipeline.get_logger("swap")
        for i in range(200):
            log.info("r", i=i)
        second = configure_async_backend(
            max_queue_size=50000, worker_count=4, batch_size=500, overflow_strategy="drop_oldest"
        )
        for i in range(200, 300):
            log.info("r", i=i)
        assert pipeline.flush(10)

        assert second is get_async_backend() and second is not first
        assert (50000, 4) == (second.config.max_queue_size, second.config.worker_count)
        assert "stopped" == first.state
        assert list(range(300)) == [line["i"] for line in writer.lines]
        second.shutdown(5)


def test_backend_alone() -> None:
    """An AsyncBackend can be made, started and stopped on its own."""
    backend = AsyncBackend(AsyncConfig(worker_count=2))
    backend.start()
    assert backend.is_running()
    assert backend.shutdown(5).complete
    assert "stopped" == backend.get_stats()["state"]


class TestUnderLoad:
    def test_reconfigure_and_shutdown_while_threads_log(self, tmp_path: Path) -> None:
        """Replacing the backend twice and shutting down mid-burst loses nothing accepted."""
        path = tmp_path / "load.log"
        block = {"overflow_strategy": "block", "block_timeout": 30.0}  # nothing may be dropped
        first = configure_async_backend(max_queue_size=500, worker_count=1, batch_size=50, **block)
        pipeline = AsyncPipeline(
            AsyncPipelineConfig(pipeline_config=PipelineConfig(writers=(file_writer(path),))),
            backend=first,
        )
        log = pipeline.get_logger("load")
        counts = [0] * 4
        go = threading.Event()

        def produce(index: int) -> None:
            go.wait()
            for i in range(1500):
                log.info("r", t=index, i=i)
                counts[index] += 1

        threads = [threading.Thread(target=produce, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        go.set()
        configure_async_backend(max_queue_size=100, worker_count=2, batch_size=10, **block)
        configure_async_backend(max_queue_size=1000, worker_count=3, batch_size=100, **block)
        for thread in threads:
            thread.join()
        get_async_backend().shutdown(30)
        events = read_json_lines(path)

        assert 6000 == sum(counts) == len(events)
        for index in range(4):
            assert list(range(1500)) == sorted(e["i"] for e in events if e["t"] == index)

    @pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
    def test_fork_while_the_same_writer_is_mid_write(self, tmp_path: Path) -> None:
        """Forking while this pipeline's worker is inside a write does not hang the child."""
        path = tmp_path / "mid.log"
        parent = os.getpid()
        entered = threading.Event()
        release = threading.Event()

        class StallInParent:
            def write(self, batch: Any) -> None:
                if os.getpid() == parent:
                    entered.set()
                    release.wait(30)

            def flush(self) -> None:
                pass

            def close(self) -> None:
                pass

        pipeline = AsyncPipeline(
            AsyncPipelineConfig(
                pipeline_config=PipelineConfig(writers=(file_writer(path), StallInParent()))
            )
        )
        log = pipeline.get_logger("mid")
        log.info("parent")
        assert pipeline.flush(0.01).complete is False
        assert entered.wait(10)  # the parent's worker now holds its turn, inside a write
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for i in range(20):
                    log.info("child", i=i)
                code = 0 if pipeline.flush(10) else 2
            finally:
                os._exit(code)
        status = wait_or_kill(pid)
        release.set()
        pipeline.shutdown(10)
        messages = [event["message"] for event in read_json_lines(path)]

        assert 0 == os.waitstatus_to_exitcode(status)
        assert (20, 1) == (messages.count("child"), messages.count("parent"))

    def test_concurrent_writer_gets_every_batch_in_batch_order(self) -> None:
        """A concurrent writer is fed outside the workers' turns; within a batch, in order."""
        batches: list[list[int]] = []
        lock = threading.Lock()

        class Concurrent(SlowWriter):
            concurrent = True

            def write(self, batch: Any) -> None:
                time.sleep(0.002)
                with lock:
                    batches.append([json.loads(line)["i"] for line in batch])

        pipeline = async_pipeline(Concurrent(), worker_count=3, batch_size=25)
        log = pipeline.get_logger("c")
        for i in range(500):
            log.info("r", i=i)
        pipeline.shutdown(30)

        assert list(range(500)) == sorted(i for batch in batches for i in batch)
        assert all(batch == sorted(batch) for batch in batches)


@pytest.mark.parametrize("opt_in", [True, False])
def test_sigterm_drains_only_when_asked(tmp_path: Path, opt_in: bool) -> None:
    """With install_sigterm_handler, SIGTERM drains the queue first; without, it is lost."""
    import signal

    path = tmp_path / "term.log"
    script = textwrap.dedent(
        f"""
        import time
        from kakashi.core.async_backend import AsyncConfig, install_sigterm_handler
        from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
        from kakashi.core.pipeline import PipelineConfig, file_writer
        if {opt_in}:
            install_sigterm_handler(timeout=10)
        pipeline = AsyncPipeline(AsyncPipelineConfig(
            pipeline_config=PipelineConfig(writers=(file_writer({str(path)!r}),)),
            # the worker waits for 100,000 records or 60 s: everything is still queued
            async_config=AsyncConfig(max_queue_size=100_000, batch_size=100_000,
                                     batch_timeout=60),
        ))
        log = pipeline.get_logger("term")
        for i in range(5000):
            log.info("r", i=i)
        print("ready", flush=True)
        time.sleep(60)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert "ready" == process.stdout.readline().strip()
    process.send_signal(signal.SIGTERM)
    returncode = process.wait(60)
    process.stdout.close()
    lines = path.read_bytes().splitlines() if path.exists() else []

    assert -signal.SIGTERM == returncode  # the process still ends as SIGTERM says
    assert (5000 if opt_in else 0) == len(lines)


def test_sigterm_handler_chains_the_previous_one() -> None:
    """A handler installed before is still called after the drain."""
    import signal

    called: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: called.append(signum))
    try:
        from kakashi.core.async_backend import install_sigterm_handler

        install_sigterm_handler(timeout=1)
        os.kill(os.getpid(), signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)

    assert [signal.SIGTERM] == called
