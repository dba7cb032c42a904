"""Resident memory under a burst, for every overflow strategy: bounded by the queue.

Usage: ``python benchmarks/memory.py [--queue N] [--factor F]``.

For each strategy a fresh interpreter sets up the async backend with ``max_queue_size``
= ``--queue`` and a writer slower than the producer (it sleeps 2 ms per batch of 500), then
logs a burst of ``--factor`` times the queue (default 10x) at full speed, each record
carrying 200 bytes of unique text. It prints the peak resident memory (``ru_maxrss``)
above what the interpreter held before the burst, next to the same for a burst of exactly
one queue. Bounded means the two are close; unbounded, the 10x burst would cost ~10x.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
from kakashi.core.async_backend import AsyncConfig
from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
from kakashi.core.pipeline import PipelineConfig

class Slow:
    lines = 0
    def write(self, batch):
        time.sleep(0.002)
        self.lines += len(batch)
    def flush(self): pass
    def close(self): pass

strategy, queue, records = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
writer = Slow()
pipeline = AsyncPipeline(AsyncPipelineConfig(PipelineConfig(writers=(writer,)), AsyncConfig(
    max_queue_size=queue, batch_size=500, overflow_strategy=strategy, block_timeout=30.0)))
log = pipeline.get_logger("burst")
log.info("warm-up", payload="x" * 200)
pipeline.flush(30)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for i in range(records):
    log.info("burst", n=i, payload=f"{i:010d}" + "x" * 190)
pipeline.flush(300)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
pipeline.shutdown(30)
stats = pipeline.stats()
print(json.dumps({"growth_kb": peak - before, "written": stats["messages_written"],
                  "dropped": stats["messages_dropped"]}))
"""


def burst(strategy: str, queue: int, records: int) -> dict[str, int]:
    """One burst in a fresh interpreter: peak RSS growth in KiB and the loss accounting."""
    result = subprocess.run(
        [sys.executable, "-c", CHILD, strategy, str(queue), str(records)],
        capture_output=True, text=True, check=True, timeout=900,
    )  # fmt: skip
    figures: dict[str, int] = json.loads(result.stdout)
    return figures


def main() -> int:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queue", type=int, default=20_000)
    parser.add_argument("--factor", type=int, default=10)
    args = parser.parse_args()
    big = args.queue * args.factor
    print(f"max_queue_size={args.queue:,}; bursts of {args.queue:,} and {big:,} records\n")
    print(f"| strategy | RSS growth, 1x burst | RSS growth, {args.factor}x burst | ratio | "
          f"written / dropped ({args.factor}x) |")  # fmt: skip
    print("|---|---|---|---|---|")
    for strategy in ("block", "drop_oldest", "drop_newest"):
        one = burst(strategy, args.queue, args.queue)
        many = burst(strategy, args.queue, big)
        ratio = many["growth_kb"] / max(one["growth_kb"], 1)
        print(
            f"| {strategy} | {one['growth_kb'] / 1024:.1f} MiB | "
            f"{many['growth_kb'] / 1024:.1f} MiB | {ratio:.2f}x | "
            f"{many['written']:,} / {many['dropped']:,} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
