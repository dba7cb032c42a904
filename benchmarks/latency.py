"""Caller latency percentiles of an enabled async call, the queue never full, beside two
floors measured in the same run.

Usage: ``python benchmarks/latency.py [calls]``. Each call is timed on its own with
``perf_counter_ns`` (whose own cost, measured on an empty call, is subtracted), while the
worker drains concurrently into the null writer, so the percentiles include what the
worker's share of the interpreter lock costs the caller. The two floors are an empty
Python method with the same arguments, and the same method keeping, per call, an object
of about the size a queued record holds (released in batches of 1,000, as a worker does):
what memory that is still in use costs a caller on this machine, whoever allocates it.

Each row also gives the calling thread's minor page faults per call (Linux: from
``/proc/thread-self/stat``): a first touch of a fresh page of memory, which the kernel
fills with zeros. On a virtual machine one costs microseconds (measure it with
``--fault-cost``), so where a queue grows, or freed memory goes back to the system and
is taken again, they set p99 and p99.9 rather than anything the logger does.
"""

from __future__ import annotations

import argparse
import mmap
import time
from collections.abc import Callable
from typing import Any

import kakashi
from kakashi.core.async_backend import AsyncConfig
from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
from kakashi.core.pipeline import PipelineConfig

_clock = time.perf_counter_ns


def percentiles(samples: list[int]) -> dict[str, float]:
    """p50, p99 and p99.9 of *samples* in nanoseconds."""
    samples.sort()
    last = len(samples) - 1
    return {p: samples[round(q * last)] for p, q in (("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999))}


def minor_faults() -> int:
    """Minor page faults of the calling thread so far (0 where /proc does not say)."""
    try:
        with open("/proc/thread-self/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[7])
    except OSError:
        return 0


def fault_cost(pages: int = 4096) -> float:
    """Median nanoseconds of a first touch of a fresh page (one mapping of *pages*)."""
    size = mmap.PAGESIZE
    area = mmap.mmap(-1, pages * size)
    costs = []
    for page in range(pages):
        start = _clock()
        area[page * size] = 1
        costs.append(_clock() - start)
    area.close()
    return float(sorted(costs)[pages // 2])


class Empty:
    """The floor: a method that does nothing with what it is given."""

    def info(self, msg: str, **fields: Any) -> None:
        """Nothing."""


class Keeping:
    """The second floor: a method that keeps, per call, as many bytes as a queued record
    holds (about 220, in an object the garbage collector does not track, as a record),
    released 1,000 calls at a time."""

    def __init__(self) -> None:
        self.kept: list[Any] = []

    def info(self, msg: str, **fields: Any) -> None:
        """Keep a record-sized object."""
        kept = self.kept
        kept.append(bytearray(160))
        if len(kept) >= 1000:
            self.kept = []


def timed(call: Callable[..., Any], calls: int, floor: int) -> tuple[list[int], float]:
    """Time each of *calls* calls of *call*; (the samples less *floor*, page faults per
    call)."""
    samples = [0] * calls
    faults = minor_faults()
    for i in range(calls):
        start = _clock()
        call("order filled", order_id=i, price=101.25, qty=3, side="buy")
        samples[i] = _clock() - start - floor
    return samples, (minor_faults() - faults) / calls


def main() -> int:
    """Measure and print the percentiles."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("calls", nargs="?", type=int, default=200_000)
    parser.add_argument(
        "--fault-cost", action="store_true", help="also time a first touch of a fresh page"
    )
    args = parser.parse_args()
    overhead = []
    for _ in range(10_000):
        start = _clock()
        overhead.append(_clock() - start)
    floor = int(percentiles(overhead)["p50"])

    rows: list[tuple[str, list[int], float, str]] = []
    samples, faults = timed(Empty().info, args.calls, floor)
    rows.append(("empty method (floor)", samples, faults, ""))
    samples, faults = timed(Keeping().info, args.calls, floor)
    rows.append(("empty method keeping memory", samples, faults, ""))

    pipeline = AsyncPipeline(
        AsyncPipelineConfig(
            PipelineConfig(writers=(kakashi.null_writer,)),
            AsyncConfig(max_queue_size=1_000_000, batch_size=1000),
        )
    )
    samples, faults = timed(pipeline.get_logger("latency").info, args.calls, floor)
    stats = pipeline.stats()
    pipeline.shutdown(30)
    build = "compiled" if kakashi.USING_SPEEDUPS else "pure-Python"
    dropped = f"dropped {stats['messages_dropped']}"
    rows.append((f"kakashi async ({build})", samples, faults, dropped))

    print(f"{args.calls:,} calls each; timer cost {floor} ns subtracted")
    for name, samples, faults, note in rows:
        figures = ", ".join(f"{p} {v / 1000:.2f} us" for p, v in percentiles(samples).items())
        print(f"{name:<30} {figures}; page faults per call {faults:.3f} {note}".rstrip())
    if args.fault_cost:
        print(f"a first touch of a fresh page: {fault_cost() / 1000:.2f} us (median)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
