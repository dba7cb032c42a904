"""Kakashi against the loggers people would otherwise pick, on one workload, in one run.

Usage::

    kakashi bench [--quick] [--records N] [--runs R] [--peers a,b,...] [--json F]
                  [--install-peers] [--plot DIR]
    kakashi bench --from-json F [--plot DIR]    (the table and charts of a saved run)
    python benchmarks/compare_peers.py ...      (the same, from a source checkout)

Workload: ``info("order filled", order_id=i, price=101.25, qty=3, side="buy")`` producing
one JSON line per record (timestamp, level, logger, message, the four fields) in a file.
Each library runs in its own subprocess, ``--runs`` times (default 5); figures are
medians. Every run counts the lines written: a library that loses records is reported
with its loss and gets no throughput figure. Measured per run: caller ns per enabled
call, p50/p99/p99.9 caller latency (every 16th call timed alone), disabled-call ns,
end-to-end records/s from the first call until everything is on disk, the same with 4
and 16 producer threads (with the ratio to one thread), and peak RSS. Peers that are not
installed, or fail to import, are reported in their row and skipped (``pip install
.[bench]``, or ``--install-peers`` to install them one at a time).

``--plot DIR`` also writes charts of the figures there as SVG (:mod:`kakashi.cli.charts`,
matplotlib from the ``bench`` extra): throughput with 1, 4 and 16 threads, caller latency
percentiles and the disabled call. ``--from-json F`` prints the table (and draws the
charts) of figures an earlier ``--json F`` saved, without measuring again.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kakashi._wording import plural

# Each peer defines setup(path) -> (info, debug, finish): the enabled and disabled calls
# with the workload's signature, and what makes everything durable in the file.
_STDLIB_JSON = """
import logging, orjson
class Json(logging.Formatter):
    def format(self, record):
        return orjson.dumps({"timestamp": self.formatTime(record), "level": record.levelname,
                             "logger": record.name, "message": record.getMessage(),
                             **record.fields}).decode()
def calls(handler):
    # The "bench" logger writing through *handler*: its enabled and disabled calls.
    log = logging.getLogger("bench")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    return (lambda msg, **f: log.info(msg, extra={"fields": f}),
            lambda msg, **f: log.debug(msg, extra={"fields": f}))
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
    return *calls(handler), handler.close
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
    info, debug = calls(logging.handlers.QueueHandler(q))
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
    "loguru enqueue": "",
    "logust": """
from logust import logger
def setup(path, enqueue=False):
    logger.remove()
    logger.add(path, serialize=True, level="INFO", enqueue=enqueue)
    def finish():
        logger.complete()
        logger.remove()
    return logger.info, logger.debug, finish
""",
    "logust enqueue": "",
    "rapidlog (throughput)": """
import sys, rapidlog
def setup(path):
    # rapidlog writes only to sys.stdout.buffer, and has no logger names.
    stream = open(path, "w")
    sys.stdout = stream
    log = rapidlog.get_logger(level="INFO", preset="throughput")
    def finish():
        log.close()
        stream.close()
    return log.info, log.debug, finish
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
PEERS["loguru enqueue"] = PEERS["loguru"].replace("enqueue=False", "enqueue=True")
PEERS["logust enqueue"] = PEERS["logust"].replace("enqueue=False", "enqueue=True")
FLOORS = ("empty method (floor)",)  # no file: no line count, no throughput

# The pip requirement behind each peer (``--install-peers``); Kakashi and the floors need none.
PACKAGES: dict[str, str] = {
    "picologging": "picologging",
    "structlog (orjson + bytes)": "structlog",
    "loguru": "loguru",
    "loguru enqueue": "loguru",
    "logust": "logust",
    "logust enqueue": "logust",
    "rapidlog (throughput)": "rapidlog",
}
THREADS = (4, 16)  # producer threads for the scaling columns
STALL_S = 2.0  # a child that uses almost no CPU this long is deadlocked
TIMEOUT_S = 600.0

# The figures go to a file named by argv[4]: a peer may take over standard output.
CHILD = r"""
import json, resource, sys, threading, time
path, records, threads, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def report(figures):
    with open(out, "w") as f:
        json.dump(figures, f)
if threads > 0:  # end to end with *threads* producer threads, nothing else
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
    report({"e2e_s": (time.perf_counter_ns() - start) / 1e9, "records": share * threads})
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
report({
    "caller_ns": (calls_done - start) / records,
    "p50_ns": pick(0.5), "p99_ns": pick(0.99), "p999_ns": pick(0.999),
    "max_ns": samples[-1] if samples else 0,
    "disabled_ns": disabled,
    "e2e_s": (durable - start) / 1e9,
    "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
})
"""


def cpu_seconds(pid: int) -> float | None:
    """CPU time used so far by every thread of *pid* (Linux ``/proc``), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_child(name: str, records: int, threads: int, path: Path) -> dict[str, Any]:
    """Run *name* once in a fresh interpreter: the single-thread figures if *threads* is
    0, else end to end only with that many producer threads. Counts the file's lines.

    A child that uses under 5% of a CPU for :data:`STALL_S` seconds is deadlocked (picologging
    with several threads, for one: microsoft/picologging#207); it is killed and
    reported, as is one that runs past :data:`TIMEOUT_S`.
    """
    out = path.with_suffix(".figures")
    for stale in (path, out):
        stale.unlink(missing_ok=True)
    command = [sys.executable, "-c", PEERS[name] + CHILD, str(path), str(records)]
    with tempfile.TemporaryFile("w+") as stderr:
        child = subprocess.Popen(
            [*command, str(threads), str(out)], stdout=subprocess.DEVNULL, stderr=stderr
        )
        started = window = time.monotonic()
        cpu = cpu_seconds(child.pid)
        error = None
        while child.poll() is None:
            time.sleep(0.1)
            now = time.monotonic()
            if now - window >= STALL_S:
                used = cpu_seconds(child.pid)
                if used is not None and cpu is not None and used - cpu < 0.05 * STALL_S:
                    error = f"hung: under 5% CPU for {STALL_S:.0f} s (deadlock)"
                cpu, window = used, now
            if now - started > TIMEOUT_S:
                error = f"did not finish within {TIMEOUT_S:.0f} s"
            if error is not None:
                child.kill()
                child.wait()
                return {"error": error}
        stderr.seek(0)
        lines = stderr.read().strip().splitlines()
    if child.returncode != 0 or not out.exists():
        return {"error": (lines or [f"exit status {child.returncode}"])[-1]}
    figures: dict[str, Any] = json.loads(out.read_text())
    figures["lines"] = sum(1 for _ in path.open("rb")) if path.exists() else 0
    return figures


def run_peer(name: str, records: int, directory: Path) -> dict[str, Any]:
    """One run of *name*: single-thread figures, then end to end with each of
    :data:`THREADS` producer threads. Each part runs in a fresh interpreter, and the
    lines of its file are counted. A threaded part that fails is recorded as
    ``error_<threads>`` beside the single-thread figures."""
    path = directory / f"{abs(hash(name))}.log"
    figures = run_child(name, records, 0, path)
    if "error" in figures:
        return figures
    for threads in THREADS:
        hung = [n for n in THREADS if str(figures.get(f"error_{n}", "")).startswith("hung")]
        if hung:  # more threads would hang the same way: do not wait for it again
            figures[f"error_{threads}"] = f"hung (as with {hung[0]} threads)"
            continue
        threaded = run_child(name, records, threads, path)
        if "error" in threaded:
            figures[f"error_{threads}"] = threaded["error"]
            continue
        figures[f"e2e_s_{threads}"] = threaded["e2e_s"]
        figures[f"lines_{threads}"] = threaded["lines"]
        figures[f"records_{threads}"] = threaded["records"]
    return figures


def measure(names: list[str], records: int, runs: int, progress: Any = None) -> dict[str, Any]:
    """Median figures per peer over *runs* runs, with the loss of the worst run of
    each part (single thread, each thread count); ``lost`` is their sum.

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
            row: dict[str, Any] = {
                key: statistics.median(r[key] for r in results)
                for key in results[0]
                if not key.startswith(("error_", "e2e_s_", "lines_", "records_"))
            }
            # Loss is judged per part: a part that lost records gets no throughput.
            floor = name in FLOORS
            lost = 0 if floor else max(records - r["lines"] for r in results)
            row["records_per_s"] = records / row["e2e_s"] if not (floor or lost) else None
            row["lost"] = lost
            for threads in THREADS:
                failed = [r[f"error_{threads}"] for r in results if f"error_{threads}" in r]
                lost_n = (
                    0
                    if floor or failed
                    else max(r[f"records_{threads}"] - r[f"lines_{threads}"] for r in results)
                )
                rate = None
                if not (floor or failed or lost_n):
                    rate = statistics.median(
                        r[f"records_{threads}"] / r[f"e2e_s_{threads}"] for r in results
                    )
                row[f"records_per_s_{threads}_threads"] = rate
                row[f"lost_{threads}_threads"] = lost_n
                row[f"error_{threads}_threads"] = failed[0] if failed else None
                row["lost"] += lost_n
            table[name] = row
    return table


def markdown(table: dict[str, Any], baseline: str = "stdlib logging") -> str:
    """The table with ratios to *baseline* (lower is better for times); the thread
    columns carry their ratio to the same library's single-thread throughput."""
    base = table.get(baseline, {})
    threads = "".join(f" {n} threads rec/s (vs 1) |" for n in THREADS)
    head = (
        "| library | caller ns | vs stdlib | p50 / p99 / p99.9 µs | disabled ns | "
        f"end-to-end rec/s | vs stdlib |{threads} lost | peak RSS MB |\n"
        "|---|---|---|---|---|---|---|" + "---|" * len(THREADS) + "---|---|"
    )
    rows = [head]
    for name, row in table.items():
        if "error" in row:
            why = row["error"]
            if why.startswith("ModuleNotFoundError"):
                why += " (pip install 'kakashi[bench]', or run with --install-peers)"
            rows.append(f"| {name} | not run: {why} |" + " |" * (8 + len(THREADS)))
            continue
        ratio = f"{row['caller_ns'] / base['caller_ns']:.2f}x" if "caller_ns" in base else ""
        rate = row["records_per_s"]
        base_rate = base.get("records_per_s")
        speed = f"{rate / base_rate:.1f}x" if rate and base_rate else ""
        scaling = ""
        for n in THREADS:
            rate_n, error = row[f"records_per_s_{n}_threads"], row[f"error_{n}_threads"]
            lost_n = row[f"lost_{n}_threads"]
            if error:
                scaling += f" {error} |"
            elif lost_n:
                scaling += f" lost {lost_n:,} |"
            elif rate_n:
                versus = f" ({rate_n / rate:.2f}x)" if rate else ""
                scaling += f" {rate_n:,.0f}{versus} |"
            else:
                scaling += " - |"
        rows.append(
            f"| {name} | {row['caller_ns']:,.0f} | {ratio} | "
            f"{row['p50_ns'] / 1000:.2f} / {row['p99_ns'] / 1000:.2f} / "
            f"{row['p999_ns'] / 1000:.2f} | {row['disabled_ns']:,.0f} | "
            f"{f'{rate:,.0f}' if rate else '-'} | {speed} |{scaling} "
            f"{row['lost']:,} | {row['rss_mb']:.0f} |"
        )
    return "\n".join(rows)


def install_peers(names: list[str]) -> dict[str, str]:
    """``pip install`` each named peer's package on its own, so one that cannot be
    installed here (no wheel for this platform, say) does not stop the others.

    Returns the failures: peer name -> the last line pip printed.
    """
    failures: dict[str, str] = {}
    for package in sorted({PACKAGES[name] for name in names if name in PACKAGES}):
        result = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", package],
            capture_output=True, text=True,
        )  # fmt: skip
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["pip failed"])[-1]
            for name in names:
                if PACKAGES.get(name) == package:
                    failures[name] = f"pip install {package} failed: {last}"
    return failures


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the comparison's arguments to *parser*."""
    parser.add_argument("--records", type=int, default=100_000, help="records per run")
    parser.add_argument("--runs", type=int, default=5, help="runs per library (median)")
    parser.add_argument(
        "--quick", action="store_true", help="10,000 records, 1 run: about 30 seconds"
    )
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated names")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--install-peers",
        action="store_true",
        help="pip install each peer first (one at a time; a failure is reported in its row)",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write throughput.svg, latency.svg and disabled.svg there (matplotlib)",
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        default=None,
        metavar="F",
        help="do not measure: show the figures a --json run saved in F (and plot them)",
    )


def _saved(path: Path, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The figures a ``--json`` run wrote to *path*; a usage error if it holds none."""
    try:
        table = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        parser.error(f"--from-json {path}: not JSON ({error})")
    if not isinstance(table, dict) or not all(
        isinstance(row, dict) and ("error" in row or "caller_ns" in row) for row in table.values()
    ):
        parser.error(f"--from-json {path}: not the figures of kakashi bench --json")
    return table


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run the comparison with parsed *args* (or load a saved one); print the table,
    write JSON and charts if asked."""
    from kakashi.cli.progress import ProgressBar

    if args.plot is not None:  # fail now, not after minutes of measuring
        from kakashi.cli.charts import check_plot_option

        check_plot_option(parser)
        args.plot.mkdir(parents=True, exist_ok=True)
    if args.from_json is not None:
        if args.json is not None or args.install_peers:
            parser.error("--from-json shows saved figures: it takes no --json or --install-peers")
        table = _saved(args.from_json, parser)
        print(f"figures from {args.from_json}\n")
        return _report(table, args)
    if args.quick:
        args.records, args.runs = 10_000, 1
    if args.records < 1 or args.runs < 1:
        parser.error("--records and --runs must be at least 1")
    names = [name.strip() for name in args.peers.split(",") if name.strip()]
    unknown = [name for name in names if name not in PEERS]
    if unknown:
        parser.error(f"unknown peers {unknown}; known: {', '.join(PEERS)}")
    if args.json is not None:  # fail now, not after minutes of measuring
        args.json.open("a").close()
    failures = install_peers(names) if args.install_peers else {}
    runnable = [name for name in names if name not in failures]
    bar = ProgressBar(len(runnable) * args.runs, sys.stderr)
    measured = measure(runnable, args.records, args.runs, progress=bar.update)
    bar.finish()
    table = {name: measured.get(name) or {"error": failures[name]} for name in names}
    print(
        f"{plural(args.records, 'record')}, median of {plural(args.runs, 'run')}, python "
        f"{sys.version.split()[0]}, {os.cpu_count()} cpus\n"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(table, indent=2) + "\n")
    return _report(table, args)


def _report(table: dict[str, Any], args: argparse.Namespace) -> int:
    """Print *table*, and draw its charts if ``--plot`` asked for them."""
    print(markdown(table))
    if args.plot is not None:
        from kakashi.cli.charts import peer_charts

        for path in peer_charts(table, args.plot):
            print(f"wrote {path}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m kakashi.cli.bench`` / ``benchmarks/compare_peers.py``."""
    parser = argparse.ArgumentParser(prog="kakashi bench", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv), parser)


if __name__ == "__main__":
    raise SystemExit(main())
