"""Memory stays bounded: by ``max_queue_size`` under a burst, and flat over a long run.

Measured with :mod:`tracemalloc`, which sees every allocation the interpreter makes
(records, their values, batches, formatted bytes), so the figures do not depend on how
busy the machine is. ``benchmarks/memory.py`` and ``benchmarks/sustained.py`` measure the
same properties as resident memory, at full size. The pipeline uses whichever hot path
is loaded; CI runs this file with each.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kakashi.core.async_backend import AsyncConfig
from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
from kakashi.core.pipeline import PipelineConfig, file_writer

ROOT = Path(__file__).resolve().parents[1]
QUEUE = 400
PAYLOAD = 256  # bytes of unique text per record, so each queued record weighs ~0.5 KiB


class CountingWriter:
    """Slower than the producer (it sleeps per batch), and keeps only a count."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.lines = 0

    def write(self, batch: Any) -> None:
        time.sleep(self.delay)
        self.lines += len(batch)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def kakashi_bytes() -> int:
    """Traced bytes allocated by kakashi's code or this file's (other tests' leftovers and
    pytest's own bookkeeping do not count).

    A full collection first empties the interpreter's free lists (tuples, floats, dicts):
    the blocks they keep are attributed to the line that first allocated them, the log
    call, and how many they keep depends on how many records were in flight at the
    peak, which varied by 90 KB between rounds."""
    gc.collect()
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(True, "*/kakashi/*"), tracemalloc.Filter(True, __file__)]
    )
    return sum(stat.size for stat in snapshot.statistics("filename"))


@pytest.fixture(name="traced")
def _traced() -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def burst_peak(strategy: str, records: int, gated: bool = False) -> tuple[int, dict[str, Any]]:
    """Peak traced bytes above the starting point while *records* are logged at once
    into a queue of :data:`QUEUE` and drained; and the pipeline's final stats.

    *gated* holds the writer shut until every record is logged, so the queue is
    certainly full at the peak: the most memory a full queue can take.
    """
    writer = CountingWriter(delay=0.002)
    gate = threading.Event()
    if not gated:
        gate.set()
    write = writer.write
    writer.write = lambda batch: (gate.wait(), write(batch))  # type: ignore[method-assign]
    pipeline = AsyncPipeline(
        AsyncPipelineConfig(
            PipelineConfig(writers=(writer,)),
            AsyncConfig(
                max_queue_size=QUEUE,
                batch_size=50,
                overflow_strategy=strategy,
                block_timeout=5.0,
            ),
        )
    )
    log = pipeline.get_logger("burst")
    gate.set()
    log.info("warm-up", payload="x" * PAYLOAD)
    assert pipeline.flush(10)
    if gated:
        gate.clear()
    tracemalloc.reset_peak()
    start = tracemalloc.get_traced_memory()[0]
    for i in range(records):
        log.info("burst", n=i, payload=f"{i:08d}" + "x" * PAYLOAD)
    gate.set()
    assert pipeline.flush(30)
    peak = tracemalloc.get_traced_memory()[1] - start
    pipeline.shutdown(10)
    return peak, pipeline.stats()


@pytest.mark.usefixtures("traced")
@pytest.mark.parametrize("strategy", ["block", "drop_oldest", "drop_newest"])
def test_a_burst_ten_times_the_queue_costs_no_more_than_one_queue(strategy: str) -> None:
    """Peak memory for a burst of 10x ``max_queue_size`` is within 1.5x of the memory
    of one full queue, under every overflow strategy (unbounded, it would be ~10x)."""
    full, _ = burst_peak("drop_newest", QUEUE - 50, gated=True)  # fills it, drops none
    ten, stats = burst_peak(strategy, 10 * QUEUE)

    assert full > QUEUE * PAYLOAD // 2  # the queue really filled: the measure can see it
    assert ten < 1.5 * full, (full, ten)
    assert stats["messages_enqueued"] == 10 * QUEUE + 1
    if strategy != "block":
        assert stats["messages_dropped"] > 0  # the queue overflowed and said so


def long_run(path: Path) -> tuple[list[int], int]:
    """Traced bytes after each of six rounds of 20,000 records into a real file, and the
    records written."""
    pipeline = AsyncPipeline(
        AsyncPipelineConfig(
            PipelineConfig(writers=(file_writer(path),)),
            # A caller blocks for room as long as it takes: the test counts every record
            # written, and a loaded machine can stall the worker past the default wait.
            AsyncConfig(max_queue_size=5_000, batch_size=500, block_timeout=300.0),
        )
    )
    log = pipeline.get_logger("long")
    after: list[int] = []
    for _ in range(6):
        for i in range(20_000):
            log.info("order filled", order_id=i, price=101.25, qty=3, side="buy")
        assert pipeline.flush(60)
        after.append(kakashi_bytes())
    pipeline.shutdown(10)
    return after, pipeline.stats()["messages_written"]


def many_threads(path: Path) -> tuple[list[int], int]:
    """Traced bytes after each of five rounds of sixteen producer threads logging 1,000
    records each, and the records written."""
    pipeline = AsyncPipeline(
        AsyncPipelineConfig(
            PipelineConfig(writers=(file_writer(path),)),
            AsyncConfig(max_queue_size=5_000, batch_size=500, block_timeout=300.0),
        )
    )
    log = pipeline.get_logger("threads")

    def produce() -> None:
        for i in range(1_000):
            log.info("order filled", order_id=i)

    after: list[int] = []
    for _ in range(5):
        threads = [threading.Thread(target=produce) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert pipeline.flush(60)
        after.append(kakashi_bytes())
    pipeline.shutdown(10)
    return after, pipeline.stats()["messages_written"]


RUNS = {"long_run": long_run, "many_threads": many_threads}


def traced_in_a_child(run: str, path: Path) -> tuple[list[int], int]:
    """:data:`RUNS` [*run*] in a fresh interpreter (this file run as a script), so that
    threads other tests left running (a hung writer's abandoned call, a server's handler)
    allocate nothing the measure sees. The child uses the same build as this process."""
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    done = subprocess.run(
        [sys.executable, __file__, run, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    after, written = json.loads(done.stdout.splitlines()[-1])
    return after, written


def test_memory_is_flat_over_a_long_run(tmp_path: Path) -> None:
    """Traced memory after each round of 20,000 records into a real file stops growing
    once the first rounds have warmed every cache (a leak of even 4 bytes a record
    would add 80 KB a round)."""
    after, written = traced_in_a_child("long_run", tmp_path / "long.log")
    assert written == 120_000
    assert after[-1] - after[2] < 40_000, after


def test_memory_is_flat_with_many_threads(tmp_path: Path) -> None:
    """Sixteen producers: per-thread state (thread names, context) does not accumulate."""
    after, written = traced_in_a_child("many_threads", tmp_path / "threads.log")
    assert written == 80_000
    assert after[-1] - after[1] < 40_000, after


if __name__ == "__main__":
    tracemalloc.start()
    print(json.dumps(RUNS[sys.argv[1]](Path(sys.argv[2]))))
