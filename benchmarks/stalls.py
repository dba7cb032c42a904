"""Where the async caller's tail comes from: every call timed, the slow ones counted.

Usage: ``python benchmarks/stalls.py [--records 200000] [--batch-size 1000]
[--depth 0|0.25|none] [--dir DIR]``. One thread logs the benchmark workload
(``info("order filled", order_id=i, price=101.25, qty=3, side="buy")``) into a JSON-lines
file through ``AsyncConfig(max_queue_size=100_000)`` with the given batch size and
``gil_handover_depth``, timing every call (``time.perf_counter_ns`` around it, so each
figure includes the timer). Printed: records/s until everything is in the file; how
many calls took 5-10, 10-20, 20-50, 50-100, 100-200 and over 200 µs; how many calls
handed the interpreter lock to the worker (``claim_counts``, compiled build) and how
many of those it waited out; p99 / p99.9 / p99.99 / the slowest call; and the lines in
the file (a run that lost records fails). Compare the count of slow calls with the count
of hand-overs: a call that hands over waits while the worker holds the lock.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import tempfile
import time
from pathlib import Path

from kakashi._speedups import claim_counts
from kakashi.core.async_backend import AsyncConfig
from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
from kakashi.core.pipeline import PipelineConfig, file_writer

EDGES_US = (5, 10, 20, 50, 100, 200)


def main() -> int:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--depth", default="0", help="gil_handover_depth, or none")
    parser.add_argument("--dir", type=Path, default=None, help="where the file goes")
    args = parser.parse_args()
    depth = None if args.depth == "none" else float(args.depth)
    count = args.records
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        path = Path(directory) / "stalls.log"
        pipeline = AsyncPipeline(
            AsyncPipelineConfig(
                PipelineConfig(writers=(file_writer(path),)),
                AsyncConfig(
                    max_queue_size=100_000, batch_size=args.batch_size, gil_handover_depth=depth
                ),
            )
        )
        info = pipeline.get_logger("bench").info
        clock = time.perf_counter_ns
        took = [0] * count
        handed, waited = claim_counts()
        start = clock()
        for i in range(count):
            before = clock()
            info("order filled", order_id=i, price=101.25, qty=3, side="buy")
            took[i] = clock() - before
        if not pipeline.flush(300):
            raise SystemExit("the flush timed out")
        durable = clock()
        handed_after, waited_after = claim_counts()
        pipeline.shutdown(30)
        with path.open("rb") as file:
            lines = sum(1 for _ in file)
    if lines != count:
        raise SystemExit(f"{lines:,} of {count:,} records in the file")
    took.sort()
    bounds = [bisect.bisect_left(took, edge * 1000) for edge in EDGES_US] + [count]
    ranges = [f"{a}-{b}" for a, b in itertools.pairwise(EDGES_US)]
    ranges.append(f">{EDGES_US[-1]}")
    slow = ", ".join(
        f"{name} µs: {high - low:,}"
        for name, (low, high) in zip(ranges, itertools.pairwise(bounds), strict=True)
    )
    over_10 = count - bounds[1]

    def pick(q: float) -> float:
        return took[min(count - 1, int(q * count))] / 1000

    print(
        f"{count:,} records, batch_size={args.batch_size}, gil_handover_depth={depth}: "
        f"{count / ((durable - start) / 1e9):,.0f} records/s"
    )
    print(f"slow calls: {slow} (over 10 µs: {over_10 * 1000 / count:.2f} per 1,000 calls)")
    print(
        f"hand-overs: {handed_after - handed:,} (waited out: {waited_after - waited:,}); "
        f"p99 / p99.9 / p99.99 / slowest µs: {pick(0.99):.2f} / {pick(0.999):.2f} / "
        f"{pick(0.9999):.1f} / {took[-1] / 1000:.1f}"
    )
    print(f"lines in the file: {lines:,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
