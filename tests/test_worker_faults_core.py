"""The worker under faults: writers that hang, raise anything, log through their own
pipeline, or run concurrently; every record written or counted, no caller blocked."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from typing import Any

import pytest

from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
from kakashi.core.pipeline import PipelineConfig
from tests.conftest import Keeper, balanced
from tests.conftest import keeping_pipeline as pipeline

# -- item 4: anything a writer or enricher raises -------------------------------------------


@pytest.mark.parametrize("error", [SystemExit(3), KeyboardInterrupt(), GeneratorExit()])
def test_a_writer_raising_a_base_exception_does_not_end_the_worker(error: BaseException) -> None:
    """A writer's ``SystemExit`` (a callback calling sys.exit) killed the worker: state
    stayed "running" with no worker alive, nothing was written again and the record stayed
    in flight for ever. The worker counts it and goes on."""

    class Once(Keeper):
        def write(self, batch: Any) -> Any:
            if not self.lines and not getattr(self, "raised", False):
                self.raised = True
                raise error
            return super().write(batch)

    writer = Once()
    pipe = pipeline(writer, max_error_retries=0, batch_size=1)
    log = pipe.get_logger("faults")
    log.info("lost")
    assert pipe.flush(10).complete
    for i in range(5):
        log.info("kept", i=i)
    assert pipe.flush(10).complete
    stats = pipe.stats()
    pipe.shutdown(10)
    assert list(range(5)) == [line["i"] for line in writer.lines if "i" in line]
    assert (1, 0, 0, 1) == (
        stats["active_workers"],
        stats["in_flight"],
        stats["pending"],
        stats["dropped_by_reason"]["write_error"],
    )
    assert balanced(stats)


BASE_EXCEPTIONS = [SystemExit("stage"), KeyboardInterrupt(), GeneratorExit()]


@pytest.mark.parametrize("error", BASE_EXCEPTIONS, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("stage", ["enricher", "formatter"])
def test_a_stage_raising_a_base_exception_costs_its_record_only(
    stage: str, error: BaseException
) -> None:
    """An enricher or formatter that raises ``SystemExit``, ``KeyboardInterrupt`` (on a
    worker, where no Ctrl-C arrives) or ``GeneratorExit`` for one record: that record is
    written in the minimal form, marked, and the rest of its batch as usual. The whole
    batch (other threads' records too) used to be dropped as ``pipeline_error``."""
    from kakashi.formatters import default_json_formatter

    def fails_on_7(record: Any) -> Any:
        if record.fields and record.fields.get("i") == 7:
            raise error
        return record if stage == "enricher" else default_json_formatter(record)

    writer = Keeper()
    if stage == "enricher":
        pipe = pipeline(writer, enrichers=(fails_on_7,), batch_size=64)
    else:
        pipe = pipeline(writer, formatter=fails_on_7, batch_size=64)
    log = pipe.get_logger("faults")
    for i in range(20):
        log.info("record", i=i)
    assert pipe.flush(10).complete
    stats = pipe.stats()
    pipe.shutdown(10)
    lines = [line for line in writer.lines if line["logger"] == "faults"]
    assert 20 == len(lines)
    marked = [n for n, line in enumerate(lines) if "kakashi_error" in line]
    assert [7] == marked
    assert type(error).__name__ in lines[7]["kakashi_error"]
    assert list(range(20)) == [line.get("i", 7) for line in lines]
    assert (1, 0, 20) == (
        stats["active_workers"],
        stats["messages_dropped"],
        stats["messages_written"],
    )
    assert balanced(stats)


# -- item 9: every drop reason gives the notice -------------------------------------------


def test_records_lost_to_failed_writes_get_a_notice() -> None:
    """3,000 records dropped after failed writes produced no "dropped N records" notice;
    the next batch written now starts with one."""

    class Failing(Keeper):
        failing = True

        def write(self, batch: Any) -> Any:
            if self.failing:
                raise OSError(28, "No space left on device")
            return super().write(batch)

    writer = Failing()
    pipe = pipeline(writer, max_error_retries=0, error_retry_delay=0)
    log = pipe.get_logger("faults")
    for i in range(300):
        log.info("lost", i=i)
    assert pipe.flush(10).complete
    writer.failing = False
    log.info("after")
    assert pipe.flush(10).complete
    pipe.shutdown(10)
    notices = [line for line in writer.lines if line["logger"] == "kakashi"]
    assert 1 == len(notices), writer.lines
    assert (300, 300) == (notices[0]["dropped"], notices[0]["write_error"])
    assert "after" == writer.lines[-1]["message"]


# -- item 5: concurrent writers keep the same books ---------------------------------------


def test_a_concurrent_writer_that_always_raises_is_counted() -> None:
    """A concurrent writer that always raised ended with messages_written=1000 and
    messages_dropped=0, and no drop notice."""

    class Down(Keeper):
        concurrent = True

        def write(self, batch: Any) -> Any:
            raise ConnectionError("collector down")

    pipe = pipeline(Down(), max_error_retries=0, error_retry_delay=0)
    log = pipe.get_logger("faults")
    for i in range(1000):
        log.info("x", i=i)
    assert pipe.flush(20).complete
    stats = pipe.stats()
    pipe.shutdown(10)
    assert (0, 1000) == (stats["messages_written"], stats["messages_dropped"])
    assert balanced(stats)


def test_flush_waits_for_a_slow_concurrent_writer() -> None:
    """A slow concurrent writer made flush() return complete after 0.00 s with 0 of 100
    delivered: the flush barrier now covers concurrent writers too."""
    gate = threading.Event()

    class Slow(Keeper):
        concurrent = True

        def write(self, batch: Any) -> Any:
            gate.wait(30)
            return super().write(batch)

    writer = Slow()
    pipe = pipeline(writer)
    log = pipe.get_logger("faults")
    for i in range(100):
        log.info("x", i=i)
    early = pipe.flush(0.2)
    gate.set()
    late = pipe.flush(20)
    pipe.shutdown(10)
    assert (False, True) == (early.complete, late.complete)
    assert list(range(100)) == [line["i"] for line in writer.lines]


# -- item 3: records logged from inside the worker --------------------------------------------


def test_a_writer_logging_through_its_own_pipeline_never_waits() -> None:
    """A writer that logs "write was slow" through its own pipeline under "block" with a
    full queue made the only worker wait for the queue it drains (1 s per call). Its
    records are now written after the batch or counted at once."""
    holder: dict[str, Any] = {}

    class SelfLogging(Keeper):
        def write(self, batch: Any) -> Any:
            super().write(batch)
            holder["log"].warning("write was slow", size=len(batch))

    writer = SelfLogging()
    pipe = pipeline(writer, max_queue_size=10, batch_size=5, block_timeout=30)
    holder["log"] = pipe.get_logger("self")
    log = pipe.get_logger("app")
    for i in range(200):
        log.info("x", i=i)
    assert pipe.flush(60).complete
    stats = pipe.stats()
    pipe.shutdown(10)
    assert list(range(200)) == [line["i"] for line in writer.lines if line["logger"] == "app"]
    # A self-log that found the queue full was counted at once, not after block_timeout
    # (30 s: the flush above would not have completed).
    assert balanced(stats)


SELF_LOG_AT_SHUTDOWN = textwrap.dedent(
    """
    import sys
    from kakashi.core.async_backend import AsyncConfig
    from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
    from kakashi.core.pipeline import PipelineConfig

    class Chatty:
        def __init__(self):
            self.lines = 0
        def write(self, batch):
            self.lines += len(batch)
            log.info("wrote", n=len(batch))  # every write logs
        def flush(self):
            pass
        def close(self):
            pass

    writer = Chatty()
    pipe = AsyncPipeline(AsyncPipelineConfig(
        pipeline_config=PipelineConfig(min_level="DEBUG", writers=(writer,)),
        async_config=AsyncConfig()))
    log = pipe.get_logger("chatty")
    for i in range(20):
        log.info("x", i=i)
    pipe.shutdown(5)
    log.info("after shutdown")  # the synchronous fallback: the writer logs again
    stats = pipe.stats()
    print(writer.lines, stats["messages_dropped"], stats["dropped_by_reason"]["closed"])
    """
)


def test_a_writer_logging_from_the_fallback_does_not_recurse() -> None:
    """After shutdown, a writer that logs on every write recursed through the synchronous
    fallback (3.8 million lines, then RecursionError). Its own record is counted instead."""
    child = subprocess.run(
        [sys.executable, "-c", SELF_LOG_AT_SHUTDOWN], capture_output=True, text=True, timeout=120
    )  # a hang fails the test (TimeoutExpired), the child killed
    out, err = child.stdout, child.stderr
    assert 0 == child.returncode, err
    assert "RecursionError" not in err
    lines, dropped, closed = map(int, out.split())
    assert lines < 1_000
    assert closed >= 1
    assert dropped >= closed


FINALIZERS_THAT_LOG = textwrap.dedent(
    """
    import faulthandler, gc, json, sys, threading, time
    from kakashi.core.async_backend import AsyncConfig
    from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
    from kakashi.core.pipeline import PipelineConfig

    faulthandler.dump_traceback_later(60, exit=True)  # a deadlock: the stacks, then out
    strategy = sys.argv[1]
    lines = []

    class Slow:
        def write(self, batch):
            time.sleep(0.001)  # slower than the caller: the queue fills
            lines.extend(bytes(line) for line in batch)
        def flush(self): pass
        def close(self): pass

    pipe = AsyncPipeline(AsyncPipelineConfig(
        pipeline_config=PipelineConfig(min_level="DEBUG", writers=(Slow(),)),
        async_config=AsyncConfig(max_queue_size=64, batch_size=16, overflow_strategy=strategy,
                                 block_timeout=5.0)))
    log = pipe.get_logger("app")
    finalized = []

    class Logs:
        # Kept by the record that carries it, so freed where the record is freed: by a
        # later log call (a put frees a finished batch's records), by the worker, or by
        # the garbage collector (the cycle) on whichever thread it runs.
        def __init__(self, n):
            self.n, self.cycle = n, self
        def __del__(self):
            finalized.append(self.n)
            log.warning("finalized", n=self.n)

    def produce(first):
        for i in range(first, first + 1500):
            log.info("carrying", n=i, payload=Logs(i))
            if i % 100 == 0:
                gc.collect()

    threads = [threading.Thread(target=produce, args=(k * 1500,)) for k in range(2)]
    for t in threads: t.start()
    for t in threads: t.join()
    gc.collect()
    done = pipe.shutdown(30.0)
    stats = pipe.stats()
    written = [json.loads(line) for line in lines]
    print(json.dumps({
        "complete": done.complete,
        "books": stats["messages_enqueued"] == stats["messages_written"]
            + stats["messages_filtered"] + stats["messages_dropped"] + stats["pending"],
        "finalized": len(finalized),
        "carrying": sum(r["message"] == "carrying" for r in written),
        "finalized_written": sum(r["message"] == "finalized" for r in written),
        "enqueued": stats["messages_enqueued"],
        "written": stats["messages_written"],
        "dropped": stats["dropped_by_reason"],
    }))
    """
)


@pytest.mark.parametrize("strategy", ["block", "drop_newest", "drop_oldest"])
def test_a_finalizer_that_logs_never_deadlocks_blocks_or_recurses(strategy: str) -> None:
    """ARCHITECTURE guarantee 10, from ``__del__``: 3,000 records from two threads each
    carry an object whose finalizer logs, into a queue of 64 that a slow writer keeps
    full. The finalizers run wherever the records are freed: inside later log calls
    (a put frees a finished batch's records), on the worker, in the garbage collector.
    Nothing deadlocks (a hang fails the test), no nested call waits for room or
    recurses, and every record, the finalizers' included, is written or counted; under
    ``block`` the callers' records are all written."""
    child = subprocess.run(
        [sys.executable, "-c", FINALIZERS_THAT_LOG, strategy],
        capture_output=True,
        text=True,
        timeout=120,
    )  # a hang fails the test (TimeoutExpired), the child killed
    assert 0 == child.returncode, child.stderr
    result = json.loads(child.stdout)
    assert result["complete"] and result["books"], result
    assert (3000, 6000) == (result["finalized"], result["enqueued"]), result
    assert result["written"] == result["carrying"] + result["finalized_written"], result
    assert 6000 == result["written"] + sum(result["dropped"].values()), result
    if strategy == "block":
        # The callers waited for room: none of their records is lost. A finalizer's call
        # that runs inside a log call (a put freeing a finished batch's records) may not
        # wait: when the queue is full at that moment its record is dropped, as
        # `reentrant`, and counted; nothing else drops it (a loaded machine shows it).
        dropped = {reason: n for reason, n in result["dropped"].items() if n}
        assert 3000 == result["carrying"], result
        assert set(dropped) <= {"reentrant"}, dropped
        assert 3000 == result["finalized_written"] + dropped.get("reentrant", 0), result


# -- item 1: writers whose flush, close or write hangs -------------------------------------

HUNG = textwrap.dedent(
    """
    import sys, threading, time
    from kakashi.core.async_backend import AsyncConfig
    from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
    from kakashi.core.pipeline import PipelineConfig

    where = sys.argv[1]
    never = threading.Event()

    class Hanging:
        def write(self, batch):
            if where == "write":
                never.wait()
        def flush(self):
            if where == "flush":
                never.wait()
        def close(self):
            if where == "close":
                never.wait()

    pipe = AsyncPipeline(AsyncPipelineConfig(
        pipeline_config=PipelineConfig(min_level="DEBUG", writers=(Hanging(),)),
        async_config=AsyncConfig(shutdown_timeout=1)))
    log = pipe.get_logger("hung")
    log.info("one")
    started = time.monotonic()
    flushed = pipe.flush(1)
    down = pipe.shutdown(2)
    log.info("after shutdown")  # the fallback must not block on the hung writer
    log.info("again")
    stats = pipe.stats()
    print(flushed.complete, down.complete, stats["dropped_by_reason"]["closed"], flush=True)
    # interpreter exit must not hang either
    """
)


@pytest.mark.parametrize("where", ["flush", "close", "write"])
def test_a_hung_writer_never_holds_up_flush_shutdown_exit_or_callers(where: str) -> None:
    """flush(1), shutdown(2), interpreter exit and the log calls after shutdown each
    return although the writer's flush, close or write never returns (a hung NFS mount):
    they hung for ever before. Records logged after shutdown are counted, not blocked on."""
    child = subprocess.run(
        [sys.executable, "-c", HUNG, where], capture_output=True, text=True, timeout=60
    )  # a hang fails the test (TimeoutExpired), the child killed
    out, err = child.stdout, child.stderr
    assert 0 == child.returncode, err
    flushed, down, closed = out.split()
    assert "False" == down
    if where != "close":
        assert "False" == flushed
        assert 2 == int(closed)  # the two records after shutdown, counted
    assert "did not return in time" in err or "not written after" in err


def test_records_after_shutdown_still_written_synchronously_by_a_healthy_writer() -> None:
    """The fallback is kept for writers that are not hung."""
    writer = Keeper()
    pipe = pipeline(writer)
    log = pipe.get_logger("late")
    log.info("before")
    pipe.shutdown(10)
    log.info("after")
    assert ["before", "after"] == [line["message"] for line in writer.lines]


def test_no_thread_left_behind_by_bounded_calls() -> None:
    """Flushes run writers' flush on short-lived threads: none is left once they return."""
    writer = Keeper()
    pipe = pipeline(writer)
    log = pipe.get_logger("threads")
    before = threading.active_count()
    for _ in range(20):
        log.info("x")
        assert pipe.flush(10).complete
    pipe.shutdown(10)
    assert threading.active_count() <= before


# -- item 6: slow, failing and dead writers are isolated ---------------------------------


def test_a_failing_writer_does_not_delay_another_pipelines_records() -> None:
    """Backoff slept while the worker held its turn: with a writer failing on one pipeline,
    the records of another pipeline on the same backend waited for every retry. Now the
    retries wait on the failing writer's own lane; the other records are written at once
    (here the backoff is an hour: before, they would not have come within the deadline)."""

    class Down(Keeper):
        def write(self, batch: Any) -> Any:
            raise OSError("collector down")

    down_pipe = pipeline(Down(), max_error_retries=3, error_retry_delay=3600)
    file = Keeper()
    config = AsyncPipelineConfig(
        pipeline_config=PipelineConfig(min_level="DEBUG", writers=(file,)),
        async_config=down_pipe.config.async_config,
    )
    file_pipe = AsyncPipeline(config, backend=down_pipe.backend)
    down_pipe.get_logger("remote").info("to a dead collector")
    log = file_pipe.get_logger("local")
    for i in range(100):
        log.info("x", i=i)
    arrived = threading.Event()

    def watch() -> None:
        while len(file.lines) < 100:
            threading.Event().wait(0.01)
        arrived.set()

    threading.Thread(target=watch, daemon=True).start()
    assert arrived.wait(30), f"{len(file.lines)} of 100 written"
    stats = down_pipe.stats()
    result = down_pipe.shutdown(10)  # stops the hour-long wait: tries what is left, counts
    final = down_pipe.stats()
    assert (1, 1) == (stats["pending"], stats["in_flight"])  # the dead writer's record
    assert result.complete
    assert (1, 100) == (final["dropped_by_reason"]["write_error"], final["messages_written"])
    assert balanced(final)


@pytest.mark.parametrize("remote", [True, False])
def test_a_writer_failing_again_and_again_is_skipped_fast(remote: bool) -> None:
    """After three batches lost in a row, the circuit opens: a remote (concurrent)
    writer's records are counted at once instead of being tried, a local one's are tried
    once each, with no retries (100 tries before for 50 batches)."""
    tries = []

    class Down(Keeper):
        concurrent = remote

        def write(self, batch: Any) -> Any:
            tries.append(len(batch))
            raise OSError("collector down")

    pipe = pipeline(Down(), max_error_retries=1, error_retry_delay=0, batch_size=1)
    log = pipe.get_logger("remote")
    for i in range(50):
        log.info("x", i=i)
        assert pipe.flush(10).complete
    stats = pipe.stats()
    pipe.shutdown(10)
    assert len(tries) <= (10 if remote else 3 * 2 + 47)
    assert 50 == stats["dropped_by_reason"]["write_error"] == stats["messages_dropped"]
    assert stats["writers"][0]["dropped"] >= 50  # lines: drop notices included
    assert balanced(stats)


def test_the_circuit_closes_when_the_writer_recovers() -> None:
    """A writer that fails for a while, then works: once its cool-down ends, one write
    closes the circuit and its records are written again, the loss reported in a notice."""
    state = {"down": True}

    class Flaky(Keeper):
        error_retry_delay = 0.0
        max_error_retries = 0

        def write(self, batch: Any) -> Any:
            if state["down"]:
                raise OSError("collector down")
            return super().write(batch)

    writer = Flaky()
    pipe = pipeline(writer, batch_size=1)
    log = pipe.get_logger("remote")
    for i in range(5):
        log.info("lost", i=i)
        assert pipe.flush(10).complete
    state["down"] = False
    lane = pipe.backend._lanes[id(writer)]
    lane.open_until = 0.0  # the cool-down is over (instead of waiting a second)
    log.info("back")
    assert pipe.flush(10).complete
    stats = pipe.stats()
    pipe.shutdown(10)
    assert ["kakashi", "remote"] == [line["logger"] for line in writer.lines]
    assert 5 == writer.lines[0]["dropped"]
    assert (5, 1) == (stats["messages_dropped"], stats["messages_written"])


NETWORK_DOWN = textwrap.dedent(
    """
    import threading
    import kakashi
    from kakashi.core.async_backend import configure_async_backend
    from kakashi.core.async_interface import get_async_stats, get_network_logger

    configure_async_backend(max_queue_size=100, block_timeout=3600)
    hung = threading.Event()
    logger = get_network_logger("remote", lambda message: hung.wait())  # a hung collector
    for i in range(5_000):
        logger.info("x", i=i)
    stats = get_async_stats()
    hung.set()
    kakashi.flush(30)
    print(stats["dropped_by_reason"]["queue_full_block_timeout"], stats["messages_enqueued"])
    """
)


def test_the_network_preset_never_blocks_callers_on_a_down_collector() -> None:
    """With the collector hung, callers waited for room (block) behind the worker stuck in
    ``send``: 300 calls blocked 150 s. Now the collector's backlog waits on its own lane
    (bounded, the oldest counted as dropped), the queue keeps draining and no caller
    waits (here a wait would be an hour)."""
    child = subprocess.run(
        [sys.executable, "-c", NETWORK_DOWN], capture_output=True, text=True, timeout=120
    )  # a blocked caller fails the test (TimeoutExpired)
    assert 0 == child.returncode, child.stderr
    blocked, enqueued = map(int, child.stdout.split())
    assert (0, 5_000) == (blocked, enqueued)
