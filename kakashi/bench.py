"""Kakashi against the loggers people would otherwise pick, on one workload, in one run.

Usage::

    kakashi bench [--quick] [--records N] [--runs R] [--peers a,b,...] [--json F]
    python benchmarks/compare_peers.py ...      (the same, from a source checkout)

Workload: ``info("order filled", order_id=i, price=101.25, qty=3, side="buy")`` producing
one JSON line per record (timestamp, level, logger, message, the four fields) in a file.
Each library runs in its own subprocess, ``--runs`` times (default 5); figures are
medians. Every run counts the lines written: a library that loses records is reported
with its loss and gets no throughput figure. Measured per run: caller ns per enabled
call, p50/p99/p99.9 caller latency (every 16th call timed alone), disabled-call ns,
end-to-end records/s from the first call until everything is on disk, and peak RSS.
Peers that are not installed are reported and skipped (``pip install .[bench]``).
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
from typing import Any

# Each peer defines setup(path) -> (info, debug, finish): the enabled and disabled calls
# with the workload's signature, and what makes everything durable in the file.
_STDLIB_JSON = """
import logging, orjson
class Json(logging.Formatter):
    def format(self, record):
        return orjson.dumps({"timestamp": self.formatTime(record), "level": record.levelname,
                             "logger": record.name, "message": record.getMessage(),
                             **record.fields}).decode()
"""

PEERS: dict[str, str] = {
    "empty method (floor)": """
def setup(path):
    class Empty:
        def info(self, msg, *args, **fields):
            pass
    e = Empty()
    return e.info, e.info, lambda: None
""",
    "orjson loop (floor)": """
import orjson, time
def setup(path):
    stream = open(path, "ab")
    dumps, now = orjson.dumps, time.time_ns
    def info(msg, **fields):
        stream.write(dumps({"timestamp": now(), "level": "INFO", "logger": "bench",
                            "message": msg, **fields}) + b"\\n")
    def debug(msg, **fields):
        pass
    return info, debug, lambda: stream.close()
""",
    "stdlib logging": _STDLIB_JSON
    + """
def setup(path):
    handler = logging.FileHandler(path)
    handler.setFormatter(Json())
    log = logging.getLogger("bench")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    info = lambda msg, **f: log.info(msg, extra={"fields": f})
    debug = lambda msg, **f: log.debug(msg, extra={"fields": f})
    return info, debug, handler.close
""",
    "stdlib QueueHandler": _STDLIB_JSON
    + """
import logging.handlers, queue
def setup(path):
    handler = logging.FileHandler(path)
    handler.setFormatter(Json())
    q = queue.Queue()
    listener = logging.handlers.QueueListener(q, handler)
    listener.start()
    log = logging.getLogger("bench")
    log.addHandler(logging.handlers.QueueHandler(q))
    log.setLevel(logging.INFO)
    log.propagate = False
    info = lambda msg, **f: log.info(msg, extra={"fields": f})
    debug = lambda msg, **f: log.debug(msg, extra={"fields": f})
    def finish():
        listener.stop()
        handler.close()
    return info, debug, finish
""",
    "picologging": """
import picologging, orjson
class Json(picologging.Formatter):
    # picologging records take no extra attributes: the fields travel as the one
    # mapping argument, which a message without %-placeholders leaves untouched.
    def format(self, record):
        return orjson.dumps({"timestamp": record.created, "level": record.levelname,
                             "logger": record.name, "message": record.msg,
                             **record.args}).decode()
def setup(path):
    handler = picologging.FileHandler(path)
    handler.setFormatter(Json())
    log = picologging.getLogger("bench")
    log.addHandler(handler)
    log.setLevel(picologging.INFO)
    info = lambda msg, **f: log.info(msg, f)
    debug = lambda msg, **f: log.debug(msg, f)
    return info, debug, handler.close
""",
    "structlog (orjson + bytes)": """
import logging, orjson, structlog
def setup(path):
    stream = open(path, "wb")
    structlog.configure(
        processors=[structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                    structlog.processors.JSONRenderer(serializer=orjson.dumps)],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.BytesLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )
    log = structlog.get_logger().bind(logger="bench")
    return log.info, log.debug, stream.close
""",
    "loguru": """
import orjson
from loguru import logger
def _json(record):
    record["extra"]["json"] = orjson.dumps({
        "timestamp": record["time"].isoformat(), "level": record["level"].name,
        "logger": "bench", "message": record["message"],
        **{k: v for k, v in record["extra"].items() if k != "json"}}).decode()
def setup(path, enqueue=False):
    logger.remove()
    logger.add(path, format="{extra[json]}", level="INFO", enqueue=enqueue)
    log = logger.patch(_json)
    return log.info, log.debug, logger.remove
""",
    "loguru enqueue": """
LOGURU_ENQUEUE = True
""",
    "kakashi sync": """
from kakashi.core.pipeline import Pipeline, PipelineConfig, file_writer
def setup(path):
    pipeline = Pipeline(PipelineConfig(writers=(file_writer(path),)))
    log = pipeline.get_logger("bench")
    return log.info, log.debug, pipeline.close
""",
    "kakashi async": """
from kakashi.core.async_backend import AsyncConfig
from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
from kakashi.core.pipeline import PipelineConfig, file_writer
def setup(path):
    pipeline = AsyncPipeline(AsyncPipelineConfig(
        PipelineConfig(writers=(file_writer(path),)),
        AsyncConfig(max_queue_size=100_000, batch_size=1000)))
    log = pipeline.get_logger("bench")
    def finish():
        assert pipeline.flush(120)
        pipeline.shutdown(30)
    return log.info, log.debug, finish
""",
}
_LOGURU_ENQUEUE = PEERS["loguru"].replace("enqueue=False", "enqueue=True")
PEERS["loguru enqueue"] = _LOGURU_ENQUEUE
FLOORS = ("empty method (floor)",)  # no file: no line count, no throughput

CHILD = r"""
import json, resource, sys, threading, time
path, records, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if threads > 1:  # end to end with several producer threads, nothing else
    info, debug, finish = setup(path)
    share = records // threads
    def produce(first):
        for i in range(first, first + share):
            info("order filled", order_id=i, price=101.25, qty=3, side="buy")
    workers = [threading.Thread(target=produce, args=(n * share,)) for n in range(threads)]
    start = time.perf_counter_ns()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    finish()
    print(json.dumps({"e2e_s": (time.perf_counter_ns() - start) / 1e9, "records": share * threads}))
    sys.exit(0)
info, debug, finish = setup(path)
clock = time.perf_counter_ns
start = clock()
samples = []
for i in range(records):
    if i % 16:
        info("order filled", order_id=i, price=101.25, qty=3, side="buy")
    else:
        before = clock()
        info("order filled", order_id=i, price=101.25, qty=3, side="buy")
        samples.append(clock() - before)
calls_done = clock()
finish()
durable = clock()
t = clock()
for i in range(records):
    debug("order filled", order_id=i, price=101.25, qty=3, side="buy")
disabled = (clock() - t) / records
samples.sort()
pick = lambda q: samples[min(len(samples) - 1, round(q * (len(samples) - 1)))]
print(json.dumps({
    "caller_ns": (calls_done - start) / records,
    "p50_ns": pick(0.5), "p99_ns": pick(0.99), "p999_ns": pick(0.999),
    "disabled_ns": disabled,
    "e2e_s": (durable - start) / 1e9,
    "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
"""


def _child(name: str, records: int, threads: int, path: Path) -> dict[str, Any]:
    if path.exists():
        path.unlink()
    result = subprocess.run(
        [sys.executable, "-c", PEERS[name] + CHILD, str(path), str(records), str(threads)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["failed"])[-1]
        return {"error": last}
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    figures["lines"] = sum(1 for _ in path.open("rb")) if path.exists() else 0
    return figures


def run_peer(name: str, records: int, directory: Path) -> dict[str, Any]:
    """One run of *name*: single-thread figures, then 4 producer threads end to end.

    Each part runs in a fresh interpreter, and the lines of its file are counted.
    """
    path = directory / f"{abs(hash(name))}.log"
    figures = _child(name, records, 1, path)
    if "error" in figures:
        return figures
    threaded = _child(name, records, 4, path)
    if "error" in threaded:
        return threaded
    figures["e2e4_s"] = threaded["e2e_s"]
    figures["lines4"] = threaded["lines"]
    figures["records4"] = threaded["records"]
    return figures


def measure(names: list[str], records: int, runs: int, progress: Any = None) -> dict[str, Any]:
    """Median figures per peer over *runs* runs, with the loss of the worst run.

    *progress*, if given, is called with the number of runs done so far.
    """
    table: dict[str, Any] = {}
    done = 0
    with tempfile.TemporaryDirectory() as directory:
        for name in names:
            results = []
            for _ in range(runs):
                results.append(run_peer(name, records, Path(directory)))
                done += 1
                if progress is not None:
                    progress(done)
            errors = [r["error"] for r in results if "error" in r]
            if errors:
                table[name] = {"error": errors[0]}
                continue
            row = {key: statistics.median(r[key] for r in results) for key in results[0]}
            lost = [records - r["lines"] for r in results]
            lost += [r["records4"] - r["lines4"] for r in results]
            row["lost"] = 0 if name in FLOORS else max(lost)
            clean = name not in FLOORS and not row["lost"]
            row["records_per_s"] = records / row["e2e_s"] if clean else None
            row["records_per_s_4_threads"] = row["records4"] / row["e2e4_s"] if clean else None
            table[name] = row
    return table


def markdown(table: dict[str, Any], baseline: str = "stdlib logging") -> str:
    """The table with ratios to *baseline* (lower is better for times)."""
    base = table.get(baseline, {})
    head = (
        "| library | caller ns | vs stdlib | p50 / p99 / p99.9 µs | disabled ns | "
        "end-to-end rec/s | vs stdlib | 4 threads rec/s | lost | peak RSS MB |\n"
        "|---|---|---|---|---|---|---|---|---|---|"
    )
    rows = [head]
    for name, row in table.items():
        if "error" in row:
            rows.append(f"| {name} | not run: {row['error']} | | | | | | | | |")
            continue
        ratio = f"{row['caller_ns'] / base['caller_ns']:.2f}x" if "caller_ns" in base else ""
        rate = row["records_per_s"]
        base_rate = base.get("records_per_s")
        speed = f"{rate / base_rate:.1f}x" if rate and base_rate else ""
        rate4 = row["records_per_s_4_threads"]
        rows.append(
            f"| {name} | {row['caller_ns']:,.0f} | {ratio} | "
            f"{row['p50_ns'] / 1000:.2f} / {row['p99_ns'] / 1000:.2f} / "
            f"{row['p999_ns'] / 1000:.2f} | {row['disabled_ns']:,.0f} | "
            f"{f'{rate:,.0f}' if rate else '-'} | {speed} | "
            f"{f'{rate4:,.0f}' if rate4 else '-'} | {row['lost']:,} | {row['rss_mb']:.0f} |"
        )
    return "\n".join(rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the comparison's arguments to *parser*."""
    parser.add_argument("--records", type=int, default=100_000, help="records per run")
    parser.add_argument("--runs", type=int, default=5, help="runs per library (median)")
    parser.add_argument(
        "--quick", action="store_true", help="20,000 records, 1 run: about 20 seconds"
    )
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated names")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run the comparison with parsed *args*; print the table, write JSON if asked."""
    from kakashi.cli import ProgressBar

    if args.quick:
        args.records, args.runs = 20_000, 1
    if args.records < 1 or args.runs < 1:
        parser.error("--records and --runs must be at least 1")
    names = [name.strip() for name in args.peers.split(",") if name.strip()]
    unknown = [name for name in names if name not in PEERS]
    if unknown:
        parser.error(f"unknown peers {unknown}; known: {', '.join(PEERS)}")
    bar = ProgressBar(len(names) * args.runs, sys.stderr)
    table = measure(names, args.records, args.runs, progress=bar.update)
    bar.finish()
    print(
        f"{args.records:,} records, median of {args.runs} run(s), python "
        f"{sys.version.split()[0]}, {os.cpu_count()} cpus\n"
    )
    print(markdown(table))
    if args.json is not None:
        args.json.write_text(json.dumps(table, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m kakashi.bench`` / ``benchmarks/compare_peers.py``."""
    parser = argparse.ArgumentParser(prog="kakashi bench", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv), parser)


if __name__ == "__main__":
    raise SystemExit(main())
