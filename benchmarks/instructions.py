"""Instructions per call under callgrind: stable where wall-clock time is noisy.

Usage: ``python benchmarks/instructions.py [--record] [--note TEXT] [--pure] [--check]
[--tolerance 0.1]``
(needs valgrind). Each workload runs in a child process twice, with 20,000 and 60,000
iterations; the difference divided by 40,000 is the cost of one iteration, start-up
cancelled out. Children run in parallel (instruction counts do not depend on load) with
a fixed hash seed. Workloads:

- ``empty``: an empty Python method with the benchmark's arguments (the floor);
- ``enabled``: ``info(...)`` on an async logger whose worker waits (capture + enqueue);
- ``disabled``: ``debug(...)`` on that INFO logger;
- ``format``: ``format_json`` of one captured record;
- ``handloop``: a hand-written ``orjson.dumps`` of the same event;
- ``e2e``: ``info(...)`` into a file through the async backend, until ``flush()``.

``--pure`` also measures the pure-Python twin (``KAKASHI_NO_EXTENSIONS=1``) and prints its
counts beside the compiled ones (recorded under ``"pure"``; the check is the compiled
build's).

History: ``--record`` appends the counts, with the commit, date, interpreter and
``--note`` (why they moved), to ``benchmarks/instructions-history.jsonl``; every run
prints the change against the last entry. ``--check`` exits 1 when a tracked ratio (each
workload over the empty method in the same run, and end to end over the hand loop) grew
by more than ``--tolerance`` since that entry: ratios carry across machines better than
raw counts do.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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


def instructions(workload: str, iterations: int, pure: bool = False) -> int:
    """Instructions executed by one child process running *workload* (*pure*: on the
    pure-Python twin)."""
    env = {**os.environ, "PYTHONHASHSEED": "0", "KAKASHI_NO_EXTENSIONS": "1" if pure else "0"}
    with tempfile.TemporaryDirectory() as directory:
        result = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
             sys.executable, "-c", CHILD, workload, str(iterations), directory],
            capture_output=True, text=True, check=True, env=env,
        )  # fmt: skip
    match = re.search(r"Collected : (\d+)", result.stderr)
    if match is None:
        raise RuntimeError(f"no callgrind total for {workload}: {result.stderr[-500:]}")
    return int(match.group(1))


HISTORY = Path(__file__).with_name("instructions-history.jsonl")


def measure(pure: bool = False) -> dict[str, int]:
    """Instructions per iteration of every workload (*pure*: the pure-Python twin's)."""
    jobs = [(workload, n) for workload in WORKLOADS for n in (20_000, 60_000)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        totals = dict(zip(jobs, pool.map(lambda job: instructions(*job, pure), jobs), strict=True))
    return {w: (totals[w, 60_000] - totals[w, 20_000]) // 40_000 for w in WORKLOADS}


def ratios(counts: dict[str, int]) -> dict[str, float]:
    """The tracked ratios: each workload over the empty method, end to end over the loop."""
    tracked = {f"{w}/empty": counts[w] / counts["empty"] for w in WORKLOADS if w != "empty"}
    tracked["e2e/handloop"] = counts["e2e"] / counts["handloop"]
    return tracked


def last_entry() -> dict[str, object] | None:
    """The newest entry of the history, or None."""
    if not HISTORY.exists():
        return None
    lines = HISTORY.read_text().splitlines()
    return json.loads(lines[-1]) if lines else None


def commit() -> str:
    """The current commit (with ``+`` if the work tree has changes), or ``unknown``."""
    here = Path(__file__).parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=here).returncode
    except OSError:
        return "unknown"
    return (head or "unknown") + ("+" if dirty else "")


def main() -> int:
    """Print instructions per iteration, the change since the last entry; record/check."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--record", action="store_true", help="append to the history")
    parser.add_argument("--check", action="store_true", help="exit 1 on a regression")
    parser.add_argument("--tolerance", type=float, default=0.10)
    parser.add_argument("--note", default="", help="why the counts moved (recorded)")
    parser.add_argument("--pure", action="store_true", help="also the pure-Python twin")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is not installed")
        return 1
    counts = measure()
    pure = measure(pure=True) if args.pure else None
    now = ratios(counts)
    previous = last_entry()
    before = ratios(previous["counts"]) if previous else {}  # type: ignore[arg-type]
    header = f"{'workload':<10} {'instr/iter':>10}  vs empty"
    print(header + ("   pure twin  vs empty" if pure else ""))
    for workload, cost in counts.items():
        line = f"{workload:<10} {cost:>10,}  {cost / counts['empty']:5.2f}x"
        if pure:
            line += f"  {pure[workload]:>10,}  {pure[workload] / pure['empty']:5.2f}x"
        print(line)
    regressions = []
    if previous:
        print(f"\nagainst {previous['commit']} ({previous['date']}):")
        for key, value in now.items():
            change = value / before[key] - 1 if key in before else 0.0
            flag = ""
            if change > args.tolerance:
                flag = "  REGRESSION"
                regressions.append(key)
            print(f"  {key:<16} {before.get(key, float('nan')):6.3f} -> {value:6.3f} "
                  f"({change:+.1%}){flag}")  # fmt: skip
    if args.record:
        entry: dict[str, object] = {
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
            "commit": commit(),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "counts": counts,
        }
        if pure:
            entry["pure"] = pure
        if args.note:
            entry["note"] = args.note
        with HISTORY.open("a") as history:
            history.write(json.dumps(entry) + "\n")
        print(f"\nrecorded in {HISTORY.name}")
    if args.check and regressions:
        print(f"\ninstruction ratios grew more than {args.tolerance:.0%}: {', '.join(regressions)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
