"""The synchronous path with 1, 4 and 16 threads, the record's write keeping the
interpreter lock (``hold_gil=None``, the default on a local filesystem) or letting it go
(``hold_gil=False``), interleaved in one run.

Usage: ``python benchmarks/sync_threads.py [--records 200000] [--runs 3]``. Each run is
a fresh interpreter: one ``Pipeline`` with a ``file_writer`` in a temporary directory,
the records shared by the threads; records per second from the first call until the
threads are done, the file's lines counted. Prints medians and each count's ratio to
one thread of the same setting.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

COUNTS = (1, 4, 16)
SETTINGS = {"hold_gil=None": "None", "hold_gil=False": "False"}

CHILD = r"""
import json, os, sys, threading, time
from kakashi.core.pipeline import Pipeline, PipelineConfig, file_writer
path, records, threads, hold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
writer = file_writer(path, hold_gil={"None": None, "False": False}[hold])
pipeline = Pipeline(PipelineConfig(writers=(writer,)))
log = pipeline.get_logger("bench")
share = records // threads
def produce():
    info = log.info
    for i in range(share):
        info("order filled", order_id=i, price=101.25, qty=3, side="buy")
workers = [threading.Thread(target=produce) for _ in range(threads)]
start = time.perf_counter()
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
elapsed = time.perf_counter() - start
held = writer.holds_gil
pipeline.close()
with open(path, "rb") as stream:
    lines = sum(1 for _ in stream)
print(json.dumps({"rate": share * threads / elapsed, "lines": lines,
                  "expected": share * threads, "held": held}))
"""


def run(records: int, threads: int, hold: str, directory: Path) -> dict[str, float]:
    """One run in a fresh interpreter; its figures."""
    path = directory / f"sync-{threads}-{hold}.log"
    path.unlink(missing_ok=True)
    command = [sys.executable, "-c", CHILD, str(path), str(records), str(threads), hold]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    figures: dict[str, float] = json.loads(out)
    if figures["lines"] != figures["expected"]:
        raise RuntimeError(f"{figures['lines']} lines for {figures['expected']} records")
    return figures


def main() -> int:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rates: dict[tuple[str, int], list[float]] = {}
    held: dict[str, bool] = {}
    with tempfile.TemporaryDirectory() as directory:
        for _ in range(args.runs):
            for name, hold in SETTINGS.items():
                for threads in COUNTS:
                    figures = run(args.records, threads, hold, Path(directory))
                    rates.setdefault((name, threads), []).append(figures["rate"])
                    held[name] = bool(figures["held"])
    print(f"{args.records:,} records, median of {args.runs} runs (interleaved)\n")
    print("| setting | holds the lock | 1 thread rec/s | 4 threads rec/s | 16 threads rec/s |")
    print("|---|---|---|---|---|")
    for name in SETTINGS:
        one = statistics.median(rates[name, 1])
        cells = [f"{one:,.0f}"]
        for threads in COUNTS[1:]:
            rate = statistics.median(rates[name, threads])
            cells.append(f"{rate:,.0f} ({rate / one:.2f}x)")
        print(f"| {name} | {'yes' if held[name] else 'no'} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
