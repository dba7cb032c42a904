"""Caller latency percentiles of an enabled async call, the queue never full.

Usage: ``python benchmarks/latency.py [calls]``. Each call is timed on its own with
``perf_counter_ns`` (whose own cost, measured on an empty call, is subtracted), while the
worker drains concurrently into the null writer, so the percentiles include what the
worker's share of the interpreter lock costs the caller.
"""

from __future__ import annotations

import sys
import time

import kakashi
from kakashi.core.async_backend import AsyncConfig
from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
from kakashi.core.pipeline import PipelineConfig


def percentiles(samples: list[int]) -> dict[str, float]:
    """p50, p99 and p99.9 of *samples* in nanoseconds."""
    samples.sort()
    last = len(samples) - 1
    return {p: samples[round(q * last)] for p, q in (("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999))}


def main() -> int:
    """Measure and print the percentiles."""
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    pipeline = AsyncPipeline(
        AsyncPipelineConfig(
            PipelineConfig(writers=(kakashi.null_writer,)),
            AsyncConfig(max_queue_size=1_000_000, batch_size=1000),
        )
    )
    log = pipeline.get_logger("latency")
    clock = time.perf_counter_ns
    overhead = []
    for _ in range(10_000):
        start = clock()
        overhead.append(clock() - start)
    floor = percentiles(overhead)["p50"]
    samples = []
    for i in range(calls):
        start = clock()
        log.info("order filled", order_id=i, price=101.25, qty=3, side="buy")
        samples.append(clock() - start - floor)
    stats = pipeline.stats()
    pipeline.shutdown(30)
    result = percentiles(samples)
    print(
        f"{'compiled' if kakashi.USING_SPEEDUPS else 'pure-Python'}: {calls:,} calls, "
        + ", ".join(f"{name} {value / 1000:.2f} us" for name, value in result.items())
        + f" (timer cost {floor} ns subtracted; dropped {stats['messages_dropped']})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
