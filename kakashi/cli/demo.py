"""``kakashi demo``: a realistic burst through the async backend, and the books kept on it.

It pushes web-service logs (request context, bound fields, some errors with tracebacks)
through the async backend into a rotating, zstd-compressed JSON-lines log, with a progress
bar, then prints throughput, caller latency percentiles, the backend's statistics and the
loss accounting: every record logged is either on disk or counted. The log is kept (in
``./kakashi-demo/`` unless ``--dir`` says otherwise) and the command that reads it is shown.
"""

from __future__ import annotations

import argparse
import random
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import kakashi
from kakashi._wording import plural
from kakashi.cli.progress import ProgressBar
from kakashi.core.async_backend import configure_async_backend
from kakashi.core.async_interface import get_async_stats, shutdown_async_backend
from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
from kakashi.core.pipeline import PipelineConfig
from kakashi.enrichers import context_enricher, exception_enricher, service_enricher
from kakashi.info import build_info
from kakashi.writers import RotatingFileWriter, read_lines

__all__ = ["add_arguments", "run", "run_demo"]

DEFAULT_DIRECTORY = Path("kakashi-demo")
_ENDPOINTS = ("/api/orders", "/api/users/{id}", "/api/cart", "/health", "/api/search")
_SAMPLE_EVERY = 8  # time one call in 8: timing every call would double its cost
_STATS_SHOWN = (
    "state", "worker_count", "max_queue_size", "overflow_strategy", "queue_size",
    "messages_enqueued", "messages_written", "messages_filtered", "messages_dropped",
    "dropped_by_reason", "pending", "batches_written", "internal_errors",
)  # fmt: skip


def _percentile(sorted_values: Sequence[int], fraction: float) -> int:
    if not sorted_values:
        return 0
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]


def _view_command(directory: Path) -> str:
    """How to read the demo's log again, spelled the way this program was started."""
    program = sys.argv[0] if sys.argv else ""
    command = "python3 -m kakashi" if program.endswith("__main__.py") else "kakashi"
    return f"{command} view {shlex.quote(str(directory))}"


def run_demo(count: int, directory: Path, out: TextIO) -> int:
    """Run the demo burst into *directory*; return 0 when every record is accounted for."""
    path = directory / "demo.log.zst"
    writer = RotatingFileWriter(path, max_bytes=1_000_000, backup_count=50)
    writer.close()  # reopened by its first write, after the previous run's log is gone
    for old in [*writer.rotated_files(), path]:  # that log only, not other files
        old.unlink(missing_ok=True)
    # The process-wide backend, which get_async_stats() reads.
    backend = configure_async_backend(
        max_queue_size=50_000, worker_count=1, batch_size=500, overflow_strategy="block"
    )
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
            async_config=backend.config,
        ),
        backend=backend,
    )
    log = pipeline.get_logger("shop.http")
    rng = random.Random(42)
    samples: list[int] = []
    bar = ProgressBar(count, out)
    clock = time.perf_counter_ns
    expected = 0
    out.write(f"kakashi demo: {plural(count, 'record')} into {path}\n")
    out.write(f"  hot path        {build_info()['selection']}\n")
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
        f"  files           {plural(len(files), 'zstd file')} "
        f"({plural(writer.rotations, 'rotation')}), {size / 1e6:.1f} MB on disk, "
        f"kept in {directory}/\n  last records:\n"
    )
    _show_tail(path, out)
    out.write(f"  read it all:    {_view_command(directory)}\n")
    return 0 if lost == 0 else 1


def _show_tail(path: Path, out: TextIO, count: int = 3) -> None:
    """The last records, as ``kakashi view`` shows them."""
    import collections

    import orjson

    from kakashi.formatters import colour_wanted, render_event

    colours = colour_wanted(out)
    for line in collections.deque(read_lines(path), maxlen=count):
        text = render_event(orjson.loads(line), colours=colours)
        out.write("    " + text.replace("\n", "\n    ") + "\n")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``kakashi demo``'s arguments to *parser*."""
    parser.add_argument("--count", type=int, default=200_000, help="records to log (200,000)")
    parser.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_DIRECTORY,
        help=f"folder for the log, kept afterwards (default: ./{DEFAULT_DIRECTORY})",
    )


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run ``kakashi demo`` with parsed *args*."""
    if args.count < 1:
        parser.error("--count must be at least 1")
    if args.dir.exists() and not args.dir.is_dir():
        parser.error(f"--dir {args.dir} is a file, not a folder")
    args.dir.mkdir(parents=True, exist_ok=True)
    return run_demo(args.count, args.dir, sys.stdout)
