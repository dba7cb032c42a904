"""Shipping to a local ClickHouse against the plain file writer, in the same run.

Usage: ``python benchmarks/shipping.py [--records 50000] [--repeats 5] [--batch-size 1000]``.

Starts a clickhouse-server of its own (loopback ports, data in a temporary directory; the
launcher is the test suite's ``ClickHouseServer``), then, for each repeat, logs
``--records`` records through the async backend into (a) a :class:`FileWriter` and (b) a
:class:`ClickHouseWriter` on the recommended table, each in a fresh pipeline with the same
settings. Two figures per target, medians over the repeats:

- the caller's cost: the time of the logging loop divided by the records (microseconds
  per call; delivery is off the caller, so the two should match);
- end-to-end throughput: records per second from the first call until ``flush()``
  returns with everything in the file, or stored by ClickHouse.

Then the ratios ClickHouse / file. Exits 1 if a target did not take every record (the
accounting must balance: for ClickHouse, the table's row count).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kakashi
from kakashi.core.async_backend import AsyncConfig
from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
from kakashi.core.pipeline import PipelineConfig
from kakashi.writers import FileWriter
from kakashi.writers.clickhouse import ClickHouseWriter, create_table

# The server launcher is the test suite's (one definition of a throwaway server).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import ClickHouseServer


def run_once(writer: Any, records: int, batch_size: int) -> tuple[float, float]:
    """Log *records* into *writer* on a fresh backend; (caller seconds, end-to-end
    seconds)."""
    pipeline = AsyncPipeline(
        AsyncPipelineConfig(
            PipelineConfig(writers=(writer,)),
            AsyncConfig(max_queue_size=max(100_000, records), batch_size=batch_size),
        )
    )
    log = kakashi.get_logger("bench.shipping", pipeline)
    log.info("warm up")  # starts the worker, connects
    if not pipeline.flush(30.0).complete:
        raise RuntimeError("the warm-up record was not delivered")
    start = time.perf_counter()
    for i in range(records):
        log.info("order placed", seq=i, user_id=i % 1000, path="/cart", amount=9.5)
    called = time.perf_counter()
    result = pipeline.flush(300.0)
    done = time.perf_counter()
    stats = pipeline.stats()
    pipeline.shutdown()
    if not result.complete or stats["messages_dropped"]:
        raise RuntimeError(f"not everything was delivered: {stats}")
    return called - start, done - start


def measure(
    make: Callable[[int], Any], count: Callable[[int], int], args: argparse.Namespace
) -> tuple[float, float]:
    """Median caller cost (us per call) and end-to-end rate (records/s) over the repeats."""
    costs, rates = [], []
    for repeat in range(args.repeats):
        caller, total = run_once(make(repeat), args.records, args.batch_size)
        stored = count(repeat)
        if stored != args.records + 1:  # the warm-up record too
            raise RuntimeError(f"{stored} records stored, {args.records + 1} logged")
        costs.append(caller / args.records * 1e6)
        rates.append(args.records / total)
    return statistics.median(costs), statistics.median(rates)


def main() -> int:
    """Measure and print; exit 1 when a record went missing."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args()
    binary = shutil.which("clickhouse-server")
    if binary is None:
        print("clickhouse-server is not installed (apt-get install clickhouse-server)")
        return 1
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        server = ClickHouseServer(root / "clickhouse", binary)
        server.start()
        try:
            for repeat in range(args.repeats):
                create_table(server.url, f"logs_{repeat}", columns={"user_id": "UInt64"})

            def file_writer(repeat: int) -> FileWriter:
                return FileWriter(str(root / f"run{repeat}.log"))

            def file_count(repeat: int) -> int:
                return len((root / f"run{repeat}.log").read_bytes().splitlines())

            def clickhouse_writer(repeat: int) -> ClickHouseWriter:
                return ClickHouseWriter(server.url, f"logs_{repeat}")

            def clickhouse_count(repeat: int) -> int:
                return int(server.query(f"SELECT count() FROM logs_{repeat}"))

            results = {
                "file": measure(file_writer, file_count, args),
                "clickhouse": measure(clickhouse_writer, clickhouse_count, args),
            }
        finally:
            server.stop()
    print(
        f"{args.records} records, batch_size {args.batch_size}, median of {args.repeats}; "
        f"speedups: {kakashi._speedups.USING_SPEEDUPS}"
    )
    print(f"{'target':<12}{'caller us/call':>16}{'end-to-end rec/s':>20}")
    for name, (cost, rate) in results.items():
        print(f"{name:<12}{cost:>16.3f}{rate:>20,.0f}")
    (file_cost, file_rate), (ch_cost, ch_rate) = results["file"], results["clickhouse"]
    print(
        f"ratio clickhouse/file: caller cost {ch_cost / file_cost:.2f}x, "
        f"end-to-end throughput {ch_rate / file_rate:.2f}x"
    )
    print("elasticsearch framing: not measured (no Elasticsearch writer on this branch)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
