"""End-to-end throughput and caller tail of the async backend for several
``gil_handover_depth`` settings, beside the hand-written ``orjson`` loop, in one run.

Usage: ``python benchmarks/handover.py [--records 500000] [--runs 8] [--depths 0,0.25,none]
[--dir DIR]``. Each run of each setting is a process of its own, and the settings take
turns (loop, then each depth, then the loop again...), so a machine that slows down
slows them all. One producer thread logs the benchmark workload
(``info("order filled", order_id=i, price=101.25, qty=3, side="buy")``) into a JSON-lines
file in *DIR* (default: the system's temporary directory; ``/dev/shm`` leaves the disk
out), through ``AsyncConfig(max_queue_size=100_000, batch_size=1000)``; one call in 16 is
timed on its own. Printed per setting: the median records/s from the first call until
everything is in the file, its ratio to the loop's median, and the median p99 / p99.9 of
the timed calls. Every file's lines are counted: a run that lost records fails.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, os, sys, time
path, records, depth = sys.argv[1], int(sys.argv[2]), sys.argv[3]
clock = time.perf_counter_ns
if depth == "loop":
    import orjson
    stream = open(path, "ab")
    dumps, now = orjson.dumps, time.time_ns
    def info(msg, **fields):
        stream.write(dumps({"timestamp": now(), "level": "INFO", "logger": "bench",
                            "message": msg, **fields}) + b"\n")
    def finish():
        stream.close()
else:
    from kakashi.core.async_backend import AsyncConfig
    from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
    from kakashi.core.pipeline import PipelineConfig, file_writer
    pipeline = AsyncPipeline(AsyncPipelineConfig(
        PipelineConfig(writers=(file_writer(path),)),
        AsyncConfig(max_queue_size=100_000, batch_size=1000,
                    gil_handover_depth=None if depth == "none" else float(depth))))
    info = pipeline.get_logger("bench").info
    def finish():
        assert pipeline.flush(300)
        pipeline.shutdown(30)
samples = []
start = clock()
for i in range(records):
    if i % 16:
        info("order filled", order_id=i, price=101.25, qty=3, side="buy")
    else:
        before = clock()
        info("order filled", order_id=i, price=101.25, qty=3, side="buy")
        samples.append(clock() - before)
finish()
seconds = (clock() - start) / 1e9
samples.sort()
pick = lambda q: samples[round(q * (len(samples) - 1))] / 1000
print(json.dumps({"rate": records / seconds, "p99": pick(0.99), "p999": pick(0.999)}))
"""


def run_one(setting: str, records: int, directory: Path) -> dict[str, float]:
    """One process logging *records* with *setting* ("loop" or a depth); its figures."""
    path = directory / f"{setting}.log"
    try:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(path), str(records), setting],
            check=True, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        with open(path, "rb") as written:
            lines = sum(chunk.count(b"\n") for chunk in iter(lambda: written.read(1 << 20), b""))
    finally:
        path.unlink(missing_ok=True)
    if lines != records:
        raise SystemExit(f"{setting}: {lines:,} of {records:,} records in the file")
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def main() -> int:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--depths", default="0,0.25,none", help="comma-separated, or none")
    parser.add_argument("--dir", type=Path, default=None, help="where the files go")
    args = parser.parse_args()
    settings = ["loop", *args.depths.split(",")]
    results: dict[str, list[dict[str, float]]] = {setting: [] for setting in settings}
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        for run in range(args.runs):
            for setting in settings:
                results[setting].append(run_one(setting, args.records, Path(directory)))
            print(f"  run {run + 1} of {args.runs} done", file=sys.stderr)
    loop = statistics.median(figures["rate"] for figures in results["loop"])
    print(f"{args.records:,} records, median of {args.runs} runs, {os.cpu_count()} cpus")
    print("| setting | records/s | vs the loop | p99 / p99.9 us |")
    print("|---|---|---|---|")
    for setting, runs in results.items():
        rate = statistics.median(figures["rate"] for figures in runs)
        p99 = statistics.median(figures["p99"] for figures in runs)
        p999 = statistics.median(figures["p999"] for figures in runs)
        name = "orjson loop" if setting == "loop" else f"gil_handover_depth={setting}"
        print(f"| {name} | {rate:,.0f} | {rate / loop:.2f}x | {p99:.2f} / {p999:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
