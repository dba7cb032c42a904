"""A sustained run at the maximum rate: resident memory must stay flat.

Usage: ``python benchmarks/sustained.py [--seconds 60] [--writer file|zstd]``.

One producer logs as fast as it can through the async backend into a rotating file
(64 MiB per file, two kept, rotated files compressed in the background; ``zstd`` writes
the active file as zstd frames) for ``--seconds``. Resident memory is sampled once a
second from ``/proc/self/statm``. Printed: the rate, RSS at 10 s / the middle / the end,
the maximum, and the least-squares slope after the first 10 s in MiB per minute (flat is
about zero; a leak of one byte per record would show as ~20 MiB/min at this rate). The
accounting must balance: every record written, dropped-and-counted or none lost.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from kakashi.core.async_backend import AsyncConfig
from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
from kakashi.core.pipeline import PipelineConfig
from kakashi.writers.rotating import RotatingFileWriter

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mib() -> float:
    """Current resident set size of this process in MiB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE / 2**20


def slope_per_minute(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) samples, in MiB per minute."""
    times = [t for t, _ in samples]
    sizes = [m for _, m in samples]
    return statistics.linear_regression(times, sizes).slope * 60


def main() -> int:
    """Run, print the figures; exit 1 if records went missing from the accounting."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--writer", choices=("file", "zstd"), default="file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        name = "sustained.log" + (".zst" if args.writer == "zstd" else "")
        writer = RotatingFileWriter(
            Path(directory) / name, max_bytes=64 * 2**20, backup_count=2, compression="zstd"
        )
        pipeline = AsyncPipeline(
            AsyncPipelineConfig(
                PipelineConfig(writers=(writer,)),
                AsyncConfig(max_queue_size=100_000, batch_size=1000),
            )
        )
        log = pipeline.get_logger("sustained")
        samples: list[tuple[float, float]] = []
        start = time.monotonic()
        next_sample = start
        sent = 0
        while True:
            for _ in range(1000):
                log.info("order filled", order_id=sent, price=101.25, qty=3, side="buy")
                sent += 1
            now = time.monotonic()
            if now >= next_sample:
                samples.append((now - start, rss_mib()))
                next_sample += 1.0
                if now - start >= args.seconds:
                    break
        assert pipeline.flush(120)
        elapsed = time.monotonic() - start
        pipeline.shutdown(60)
        stats = pipeline.stats()
    settled = [sample for sample in samples if sample[0] >= 10.0] or samples
    middle = samples[len(samples) // 2][1]
    print(f"{sent:,} records in {elapsed:.1f} s ({sent / elapsed:,.0f} records/s), {args.writer}")
    print(
        f"RSS MiB: at 10 s {settled[0][1]:.1f}, middle {middle:.1f}, end {samples[-1][1]:.1f}, "
        f"max {max(m for _, m in samples):.1f}; slope after 10 s "
        f"{slope_per_minute(settled):+.2f} MiB/min"
    )
    accounted = stats["messages_written"] + stats["messages_dropped"]
    print(
        f"written {stats['messages_written']:,}, dropped (counted) "
        f"{stats['messages_dropped']:,}, enqueued {stats['messages_enqueued']:,}"
    )
    return 0 if accounted == stats["messages_enqueued"] == sent else 1


if __name__ == "__main__":
    sys.exit(main())
