"""The ``kakashi`` command: ``kakashi demo``, ``kakashi view`` and ``kakashi bench``.

``kakashi demo`` pushes a realistic burst of web-service logs (request context, bound
fields, some errors with tracebacks) through the async backend into a rotating,
zstd-compressed JSON-lines log, shows a progress bar, then prints throughput, caller
latency percentiles, the backend's statistics and the loss accounting: every record
logged is either on disk or counted.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import kakashi
from kakashi.core.async_backend import AsyncConfig, configure_async_backend
from kakashi.core.async_interface import get_async_stats, shutdown_async_backend
from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
from kakashi.core.pipeline import PipelineConfig
from kakashi.enrichers import context_enricher, exception_enricher, service_enricher
from kakashi.writers import RotatingFileWriter, read_lines

__all__ = ["main"]

_ENDPOINTS = ("/api/orders", "/api/users/{id}", "/api/cart", "/health", "/api/search")
_SAMPLE_EVERY = 8  # time one call in 8: timing every call would double its cost
_STATS_SHOWN = (
    "state", "worker_count", "max_queue_size", "overflow_strategy", "queue_size",
    "messages_enqueued", "messages_written", "messages_filtered", "messages_dropped",
    "dropped_by_reason", "pending", "batches_written", "internal_errors",
)  # fmt: skip


class ProgressBar:
    """A one-line progress bar on a stream (only redrawn when the percentage moves)."""

    def __init__(self, total: int, stream: TextIO, width: int = 30) -> None:
        self.total = max(total, 1)
        self.stream = stream
        self.width = width
        self.shown = -1
        try:
            self.live = stream.isatty()
        except Exception:
            self.live = False
        # Redrawn in place on a terminal; elsewhere (CI logs, pipes) one line per quarter.
        self.step = 1 if self.live else 25

    def update(self, done: int) -> None:
        """Redraw if the percentage moved by a step."""
        percent = done * 100 // self.total
        if percent // self.step == self.shown // self.step and self.shown >= 0:
            return
        self.shown = percent
        filled = self.width * percent // 100
        bar = f"  [{'#' * filled}{'.' * (self.width - filled)}] {percent:3d}%"
        self.stream.write(f"\r{bar}" if self.live else f"{bar}\n")
        self.stream.flush()

    def finish(self) -> None:
        """Complete the bar and end its line."""
        if self.shown < 100:
            self.shown = 99 if self.live else 75
            self.update(self.total)
        if self.live:
            self.stream.write("\n")


def _percentile(sorted_values: Sequence[int], fraction: float) -> int:
    if not sorted_values:
        return 0
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]


def run_demo(count: int, directory: Path, out: TextIO) -> int:
    """Run the demo burst; return 0 when every record is accounted for, 1 otherwise."""
    path = directory / "demo.log.zst"
    for old in directory.glob("demo.log.zst*"):
        old.unlink()
    writer = RotatingFileWriter(path, max_bytes=1_000_000, backup_count=50)
    settings = AsyncConfig(max_queue_size=50_000, batch_size=500, worker_count=1)
    backend = configure_async_backend(  # the process-wide backend, as get_async_stats reads
        settings.max_queue_size, settings.worker_count, settings.batch_size,
        overflow_strategy=settings.overflow_strategy,
    )  # fmt: skip
    pipeline = AsyncPipeline(
        AsyncPipelineConfig(
            pipeline_config=PipelineConfig(
                min_level="INFO",
                enrichers=(
                    exception_enricher,
                    context_enricher,
                    service_enricher("shop-api", version="1.4.2", environment="demo"),
                ),
                writers=(writer,),
            ),
            async_config=settings,
        ),
        backend=backend,
    )
    log = pipeline.get_logger("shop.http")
    rng = random.Random(42)
    samples: list[int] = []
    bar = ProgressBar(count, out)
    clock = time.perf_counter_ns
    expected = 0
    out.write(f"kakashi demo: {count:,} records into {path} ")
    out.write(
        f"({'compiled' if kakashi.USING_SPEEDUPS else 'pure-Python'} hot path, async backend)\n"
    )
    started = time.perf_counter()
    for i in range(count):
        endpoint = rng.choice(_ENDPOINTS)
        status = 500 if i % 97 == 0 else rng.choice((200, 200, 200, 201, 204, 304, 404))
        with kakashi.context_scope(request_id=f"req-{i:08x}", user_id=rng.randrange(1, 5000)):
            request_log = log.bind(endpoint=endpoint, method="GET" if i % 3 else "POST")
            if status == 500:
                try:
                    raise ConnectionError(f"upstream timed out after {rng.randrange(1, 30)}s")
                except ConnectionError:
                    request_log.error("request failed", status=status, attempt=1)
            elif i % _SAMPLE_EVERY == 0:
                before = clock()
                request_log.info("request served", status=status, duration_ms=i % 250)
                samples.append(clock() - before)
            else:
                request_log.info("request served", status=status, duration_ms=i % 250)
            expected += 1
        if i % 512 == 0:
            bar.update(i)
    flushed = pipeline.flush(timeout=60)
    elapsed = time.perf_counter() - started
    bar.finish()
    stats = get_async_stats()
    shutdown_async_backend(timeout=10)

    files = [*reversed(writer.rotated_files()), path]  # oldest first
    on_disk = sum(sum(1 for _ in read_lines(file)) for file in files)
    samples.sort()
    notices = stats["messages_dropped"] and 1  # a drop adds one WARNING notice line
    accounted = (
        stats["messages_written"]
        + stats["messages_filtered"]
        + stats["messages_dropped"]
        + stats["pending"]
    )
    lost = expected - accounted + (on_disk - notices - stats["messages_written"])
    out.write(f"  throughput      {expected / elapsed:>12,.0f} records/s until flush() returned")
    out.write(f" ({elapsed:.2f} s, {'complete' if flushed else 'INCOMPLETE'};")
    out.write(" the demo's own request handling included)\n")
    out.write(
        "  caller latency  "
        f"p50 {_percentile(samples, 0.50) / 1000:.1f} us   "
        f"p99 {_percentile(samples, 0.99) / 1000:.1f} us   "
        f"p99.9 {_percentile(samples, 0.999) / 1000:.1f} us   (1 call in {_SAMPLE_EVERY})\n"
    )
    out.write("  get_async_stats()\n")
    for key in _STATS_SHOWN:
        out.write(f"    {key:<20} {stats[key]}\n")
    for figures in stats["writers"]:
        out.write(f"    writer               {figures}\n")
    out.write(
        f"  accounting      logged {expected:,} = on disk {on_disk - notices:,}"
        f" + filtered {stats['messages_filtered']:,} + dropped {stats['messages_dropped']:,}"
        f" + pending {stats['pending']:,} + unaccounted {lost:,}\n"
    )
    size = sum(file.stat().st_size for file in files)
    out.write(
        f"  files           {len(files)} zstd files ({writer.rotations} rotations), "
        f"{size / 1e6:.1f} MB on disk\n  last records:\n"
    )
    _show_tail(path, out)
    return 0 if lost == 0 else 1


def _show_tail(path: Path, out: TextIO, count: int = 3) -> None:
    """The last records, as ``kakashi view`` shows them."""
    import orjson

    from kakashi.formatters import colour_wanted
    from kakashi.view import render

    colours = colour_wanted(out)
    for line in list(read_lines(path))[-count:]:
        out.write("    " + render(orjson.loads(line), colours).replace("\n", "\n    ") + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kakashi`` command."""
    parser = argparse.ArgumentParser(prog="kakashi", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"kakashi {kakashi.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="log a realistic burst and report on it")
    demo.add_argument("--count", type=int, default=200_000, help="records to log (200,000)")
    demo.add_argument("--dir", type=Path, default=None, help="directory for the log file")
    from kakashi import view

    viewer = commands.add_parser("view", help="show JSON-lines logs (plain, .zst, .gz)")
    view.add_arguments(viewer)
    from kakashi import bench

    benchmark = commands.add_parser("bench", help="compare with stdlib and other loggers")
    bench.add_arguments(benchmark)
    args = parser.parse_args(argv)
    if args.command == "view":
        return view.run(args, viewer)
    if args.command == "bench":
        return bench.run(args, benchmark)

    if args.command == "demo":
        if args.count < 1:
            parser.error("--count must be at least 1")
        if args.dir is not None:
            args.dir.mkdir(parents=True, exist_ok=True)
            return run_demo(args.count, args.dir, sys.stdout)
        with tempfile.TemporaryDirectory(prefix="kakashi-demo-") as directory:
            return run_demo(args.count, Path(directory), sys.stdout)
    return 2  # pragma: no cover - argparse enforces a command


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
