"""A sustained run at the maximum rate: resident memory must stay flat.

Usage: ``python benchmarks/sustained.py [--seconds 60] [--writer file|zstd] [--json F]
[--plot DIR]``, or ``--from-json F [--plot DIR]`` for the report and chart of a saved run.

One producer logs as fast as it can through the async backend into a rotating file
(64 MiB per file, two kept, rotated files compressed in the background; ``zstd`` writes
the active file as zstd frames) for ``--seconds``. Resident memory is sampled once a
second from ``/proc/self/statm``. Printed: the rate, RSS at 10 s / the middle / the end,
the maximum, and the least-squares slope after the first 10 s in MiB per minute (flat is
about zero; a leak of one byte per record would show as ~20 MiB/min at this rate). The
accounting must balance: every record written, dropped-and-counted or none lost.
``--json F`` saves the samples (seconds, RSS MiB, records sent so far) and the accounting;
``--plot DIR`` draws ``sustained.svg`` there: records/s and RSS over time (matplotlib,
the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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


def run(seconds: float, writer_kind: str) -> dict[str, Any]:
    """Log at full rate for *seconds*; the samples and the accounting of the run."""
    with tempfile.TemporaryDirectory() as directory:
        name = "sustained.log" + (".zst" if writer_kind == "zstd" else "")
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
        samples: list[tuple[float, float, int]] = []
        start = time.monotonic()
        next_sample = start
        sent = 0
        while True:
            for _ in range(1000):
                log.info("order filled", order_id=sent, price=101.25, qty=3, side="buy")
                sent += 1
            now = time.monotonic()
            if now >= next_sample:
                samples.append((now - start, rss_mib(), sent))
                next_sample += 1.0
                if now - start >= seconds:
                    break
        assert pipeline.flush(120)
        elapsed = time.monotonic() - start
        pipeline.shutdown(60)
        stats = pipeline.stats()
    return {
        "writer": writer_kind,
        "sent": sent,
        "elapsed_s": elapsed,
        "samples": samples,
        "written": stats["messages_written"],
        "dropped": stats["messages_dropped"],
        "enqueued": stats["messages_enqueued"],
    }


def report(figures: dict[str, Any]) -> bool:
    """Print the run's figures; True if every record is accounted for."""
    samples = [(t, rss) for t, rss, _ in figures["samples"]]
    sent, elapsed = figures["sent"], figures["elapsed_s"]
    settled = [sample for sample in samples if sample[0] >= 10.0] or samples
    middle = samples[len(samples) // 2][1]
    print(
        f"{sent:,} records in {elapsed:.1f} s ({sent / elapsed:,.0f} records/s), "
        f"{figures['writer']}"
    )
    print(
        f"RSS MiB: at 10 s {settled[0][1]:.1f}, middle {middle:.1f}, end {samples[-1][1]:.1f}, "
        f"max {max(m for _, m in samples):.1f}; slope after 10 s "
        f"{slope_per_minute(settled):+.2f} MiB/min"
    )
    print(
        f"written {figures['written']:,}, dropped (counted) "
        f"{figures['dropped']:,}, enqueued {figures['enqueued']:,}"
    )
    accounted = figures["written"] + figures["dropped"]
    return bool(accounted == figures["enqueued"] == sent)


def main() -> int:
    """Run (or load), print the figures; exit 1 if records went missing from the
    accounting."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--writer", choices=("file", "zstd"), default="file")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--plot", type=Path, default=None, metavar="DIR", help="sustained.svg")
    parser.add_argument("--from-json", type=Path, default=None, metavar="F")
    args = parser.parse_args()
    if args.plot is not None:  # before the run: a missing matplotlib is said at once
        from kakashi.cli.charts import check_plot_option

        check_plot_option(parser)
    if args.from_json is not None:
        figures = json.loads(args.from_json.read_text())
    else:
        figures = run(args.seconds, args.writer)
        if args.json is not None:
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
    balanced = report(figures)
    if args.plot is not None:
        from kakashi.cli.charts import sustained_chart

        args.plot.mkdir(parents=True, exist_ok=True)
        sustained_chart(figures["samples"], args.plot / "sustained.svg")
    return 0 if balanced else 1


if __name__ == "__main__":
    sys.exit(main())
