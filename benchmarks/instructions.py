"""Instructions per call under callgrind: stable where wall-clock time is noisy.

Usage: ``python benchmarks/instructions.py`` (needs valgrind). Each workload runs in a
child process twice, with 20,000 and 60,000 iterations; the difference divided by 40,000
is the cost of one iteration, start-up cancelled out. Workloads:

- ``empty``: an empty Python method with the benchmark's arguments (the floor);
- ``enabled``: ``info(...)`` on an async logger whose worker waits (capture + enqueue);
- ``disabled``: ``debug(...)`` on that INFO logger;
- ``format``: compiled ``format_json`` of one captured record;
- ``handloop``: a hand-written ``orjson.dumps`` of the same event;
- ``e2e``: ``info(...)`` into a file through the async backend, until ``flush()``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile

CHILD = r"""
import os, sys, time, orjson, kakashi
from kakashi._speedups import Logger, Route, format_json
from kakashi.core.async_backend import AsyncConfig
from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
from kakashi.core.pipeline import PipelineConfig, file_writer
which, n, directory = sys.argv[1], int(sys.argv[2]), sys.argv[3]
class Empty:
    def info(self, msg, *args, **fields):
        pass
if which == "format":
    kept = []
    class Sink:
        emit = kept.append
    Logger("b", Route(Sink(), 20)).info("order filled", order_id=1, price=101.25, qty=3, side="buy")
    record = kept[0]
    for _ in range(n):
        format_json(record)
elif which == "handloop":
    dumps, now = orjson.dumps, time.time_ns
    for i in range(n):
        dumps({"timestamp": now(), "level": "INFO", "logger": "b", "message": "order filled",
               "order_id": i, "price": 101.25, "qty": 3, "side": "buy"})
else:
    to_file = which == "e2e"
    writer = file_writer(os.path.join(directory, "e2e.log")) if to_file else kakashi.null_writer
    size = 1000 if which == "e2e" else 1_000_000
    pipeline = AsyncPipeline(AsyncPipelineConfig(
        PipelineConfig(writers=(writer,)),
        AsyncConfig(max_queue_size=1_000_000, batch_size=size, batch_timeout=300),
    ))
    log = pipeline.get_logger("b")
    calls = {"empty": Empty().info, "enabled": log.info, "disabled": log.debug, "e2e": log.info}
    call = calls[which]
    for i in range(n):
        call("order filled", order_id=i, price=101.25, qty=3, side="buy")
    if which == "e2e":
        assert pipeline.flush(300)
os._exit(0)
"""
WORKLOADS = ("empty", "enabled", "disabled", "format", "handloop", "e2e")


def instructions(workload: str, iterations: int) -> int:
    """Instructions executed by one child process running *workload*."""
    with tempfile.TemporaryDirectory() as directory:
        result = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
             sys.executable, "-c", CHILD, workload, str(iterations), directory],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    match = re.search(r"Collected : (\d+)", result.stderr)
    if match is None:
        raise RuntimeError(f"no callgrind total for {workload}: {result.stderr[-500:]}")
    return int(match.group(1))


def main() -> int:
    """Print instructions per iteration of every workload."""
    if shutil.which("valgrind") is None:
        print("valgrind is not installed")
        return 1
    costs = {}
    for workload in WORKLOADS:
        costs[workload] = (
            instructions(workload, 60_000) - instructions(workload, 20_000)
        ) // 40_000
    floor = costs["empty"]
    for workload, cost in costs.items():
        print(
            f"{workload:<10} {cost:>7,} instructions/iteration  {cost / floor:5.2f}x empty method"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
