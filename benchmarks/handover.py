"""End-to-end throughput and caller tail of the async backend for several
``gil_handover_depth`` settings, beside the hand-written ``orjson`` loop, in one run.

Usage: ``python benchmarks/handover.py [--records 500000] [--runs 8] [--depths 0,0.25,none]
[--batch-sizes 1000] [--dir DIR]``. Each run of each setting is a process of its own, and
the settings take turns (loop, then each setting, then the loop again...), so a machine
that slows down slows them all. One producer thread logs the benchmark workload
(``info("order filled", order_id=i, price=101.25, qty=3, side="buy")``) into a JSON-lines
file in *DIR* (default: the system's temporary directory; ``/dev/shm`` leaves the disk
out), through ``AsyncConfig(max_queue_size=100_000, batch_size=1000)`` (each of
``--batch-sizes`` with each depth, when more than one is given), in the child process of
``kakashi bench`` (one call in 16 timed on its own). Printed per setting: the median
records/s from the first call until everything is in the file, its ratio to the loop's
median, and the median p99 / p99.9 / slowest of the timed calls. A call waits for the
worker once per batch or so, for about as long as the worker takes a batch: larger
batches make those waits rarer (p99.9 counts one call in a thousand) and longer (the
slowest). Every file's lines are counted: a run that lost records fails.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from kakashi.cli import bench

LOOP = "orjson loop (floor)"
# The async peer of `kakashi bench`, with the setting under test.
ASYNC = """
from kakashi.core.async_backend import AsyncConfig
from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
from kakashi.core.pipeline import PipelineConfig, file_writer
def setup(path):
    pipeline = AsyncPipeline(AsyncPipelineConfig(
        PipelineConfig(writers=(file_writer(path),)),
        AsyncConfig(max_queue_size=100_000, batch_size=BATCH, gil_handover_depth=DEPTH)))
    log = pipeline.get_logger("bench")
    def finish():
        assert pipeline.flush(300)
        pipeline.shutdown(30)
    return log.info, log.debug, finish
"""


def run_one(name: str, records: int, directory: Path) -> dict[str, float]:
    """One process logging *records* as *name* (a peer of ``kakashi bench``, the
    comparison's own child: its timing, its stall detection); its figures."""
    path = directory / "handover.log"
    try:
        figures = bench.run_child(name, records, 0, path)
    finally:
        path.unlink(missing_ok=True)
        path.with_suffix(".figures").unlink(missing_ok=True)
    if "error" in figures:
        raise SystemExit(f"{name}: {figures['error']}")
    if figures["lines"] != records:
        raise SystemExit(f"{name}: {figures['lines']:,} of {records:,} records in the file")
    return {
        "rate": records / figures["e2e_s"],
        "p99": figures["p99_ns"] / 1000,
        "p999": figures["p999_ns"] / 1000,
        "max": figures["max_ns"] / 1000,
    }


def main() -> int:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--depths", default="0,0.25,none", help="comma-separated, or none")
    parser.add_argument("--batch-sizes", default="1000", help="comma-separated batch sizes")
    parser.add_argument("--dir", type=Path, default=None, help="where the files go")
    args = parser.parse_args()
    settings = [LOOP]
    sizes = [int(size) for size in args.batch_sizes.split(",")]
    for size in sizes:
        for depth in args.depths.split(","):
            name = f"gil_handover_depth={depth}"
            if len(sizes) > 1:
                name += f", batch_size={size}"
            value = "None" if depth == "none" else repr(float(depth))
            bench.PEERS[name] = ASYNC.replace("DEPTH", value).replace("BATCH", str(size))
            settings.append(name)
    results: dict[str, list[dict[str, float]]] = {setting: [] for setting in settings}
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        for run in range(args.runs):
            for setting in settings:
                results[setting].append(run_one(setting, args.records, Path(directory)))
            print(f"  run {run + 1} of {args.runs} done", file=sys.stderr)
    loop = statistics.median(figures["rate"] for figures in results[LOOP])
    print(f"{args.records:,} records, median of {args.runs} runs, {os.cpu_count()} cpus")
    print("| setting | records/s | vs the loop | p99 / p99.9 / slowest us |")
    print("|---|---|---|---|")
    for setting, runs in results.items():
        rate = statistics.median(figures["rate"] for figures in runs)
        tail = " / ".join(
            f"{statistics.median(figures[key] for figures in runs):.2f}"
            for key in ("p99", "p999", "max")
        )
        print(f"| {setting} | {rate:,.0f} | {rate / loop:.2f}x | {tail} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
