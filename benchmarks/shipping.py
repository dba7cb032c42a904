"""Shipping throughput against the plain file writer, in the same run (#14 section 6).

Usage: ``python benchmarks/shipping.py [--records 50000] [--repeats 3] [--batch-size 1000]
[--targets file,clickhouse,clickhouse-tsv,elasticsearch,loki,otlp] [--compression gzip|none]
[--in-flight N] [--no-prepare-ahead] [--clickhouse-dir DIR]``.

Each repeat logs ``--records`` records, as fast as one thread can, through a fresh
AsyncPipeline (JSON lines, the same settings) into each target in turn:

- ``file``: a :class:`FileWriter` on a temporary file;
- ``clickhouse``: a :class:`ClickHouseWriter` on the recommended table of a
  clickhouse-server the script starts (loopback ports, data in a temporary directory;
  the launcher is the test suite's ``ClickHouseServer``); skipped, and said so, when
  clickhouse-server is not installed;
- ``clickhouse-tsv``: the same, with ``insert_format="TabSeparated"``;
- ``elasticsearch``, ``loki``, ``otlp``: the store writers against a stand-in server in
  another process (Python's threading HTTP server with Nagle off, as a real store's: it
  decompresses and frames every request, counts its records and answers as the store
  would; its cost is in the figures where a real store's would be).

Per target, medians over the repeats: the caller's cost (the logging loop's time per
call) and, in brackets, the CPU time the calling thread used per call (delivery is off the
caller, so this should match the file writer's; the time can differ where the writer's
threads and the server take the cores or the GIL meanwhile), the end-to-end
throughput (records per second from the first call until ``flush()`` returns with every
record in the file, stored by ClickHouse or counted by the stand-in) and its ratio to the
file writer's, and the writer's own cost per record (preparing one batch, ``prepare``:
encoding and compressing, timed alone), and the CPU time per record of this process
(every thread: the caller, the worker, the lane) and of the server (ClickHouse, or the
stand-in), read from ``/proc``: on a machine the server shares, their sum per record
against the cores there are bounds the throughput. Exits 1 if a target did not get every
record.
"""

from __future__ import annotations

import argparse
import gzip
import http.server
import json
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kakashi
from kakashi.cli.bench import cpu_seconds
from kakashi.core.async_backend import AsyncConfig
from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
from kakashi.core.pipeline import PipelineConfig
from kakashi.writers import FileWriter

# The server launcher is the test suite's (one definition of a throwaway server).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TARGETS = ("file", "clickhouse", "clickhouse-tsv", "elasticsearch", "loki", "otlp")


class StandIn(http.server.BaseHTTPRequestHandler):
    """Answers ``/_bulk``, Loki and OTLP requests as the stores do; counts the records."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # as real stores: no 40 ms delayed-ACK stall per answer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server: Any = self.server
        if server.delay:  # a store on another machine: the way there, a queue, a cluster
            time.sleep(server.delay)
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if self.path.startswith("/_bulk"):
            count = body.count(b"\n") // 2
            items = [{"create": {"status": 201}}] * count
            status, answer = 200, json.dumps({"errors": False, "items": items}).encode()
        elif self.path.startswith("/loki"):
            streams = json.loads(body)["streams"]
            count = sum(len(stream["values"]) for stream in streams)
            status, answer = 204, b""
        elif self.path == "/v1/logs":
            request = json.loads(body)["resourceLogs"]
            count = sum(
                len(scope["logRecords"]) for entry in request for scope in entry["scopeLogs"]
            )
            status, answer = 200, b"{}"
        else:
            count, status, answer = 0, 404, b""
        with server.count.get_lock():
            server.count.value += count
        self.send_response(status)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        """Quiet."""


def serve(port: Any, count: Any, delay: float = 0.0) -> None:
    """The stand-in's process: serve until terminated, each answer *delay* seconds late."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    server.count = count  # type: ignore[attr-defined]
    server.delay = delay  # type: ignore[attr-defined]
    port.value = server.server_address[1]
    server.serve_forever()


def run_once(writer: Any, records: int, batch_size: int) -> tuple[float, float, float]:
    """Log *records* into *writer* on a fresh backend; (caller seconds, the caller
    thread's CPU seconds meanwhile, end-to-end seconds)."""
    pipeline = AsyncPipeline(
        AsyncPipelineConfig(
            PipelineConfig(writers=(writer,)),
            AsyncConfig(max_queue_size=max(100_000, records + 1), batch_size=batch_size),
        )
    )
    log = kakashi.get_logger("bench.shipping", pipeline)
    log.info("warm up")  # starts the worker and the lane, connects
    if not pipeline.flush(30.0).complete:
        raise RuntimeError("the warm-up record was not delivered")
    start, start_cpu = time.perf_counter(), time.thread_time()
    for i in range(records):
        log.info("order placed", seq=i, user_id=i % 1000, path="/cart", amount=9.5)
    called, called_cpu = time.perf_counter(), time.thread_time()
    result = pipeline.flush(600.0)
    done = time.perf_counter()
    stats = pipeline.stats()
    pipeline.shutdown()
    if not result.complete or stats["messages_dropped"]:
        raise RuntimeError(f"not everything was delivered: {stats}")
    return called - start, called_cpu - start_cpu, done - start


def writer_cost(writer: Any, lines: list[bytes], rounds: int = 5) -> float:
    """The writer's own seconds per record: preparing a batch of *lines* (``prepare``:
    encoding and compressing; best of *rounds*; no request)."""

    def encode(batch: list[bytes]) -> Any:
        return writer.prepare(batch)

    encode(lines)
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        encode(lines)
        best = min(best, time.perf_counter() - start)
    return best / len(lines)


class Target:
    """How to make a target's writer for a repeat, and count what it received."""

    def __init__(
        self,
        make: Callable[[int], Any],
        count: Callable[[int], int],
        server_pid: Callable[[], int | None] = lambda: None,
    ) -> None:
        self.make = make
        self.count = count
        self.server_pid = server_pid
        self.costs: list[float] = []  # the caller's µs per call
        self.cpu_costs: list[float] = []  # the caller thread's CPU µs per call
        self.rates: list[float] = []
        self.own_cpu: list[float] = []  # this process's CPU seconds per record
        self.server_cpu: list[float] = []  # the server's
        self.writer_cost: float | None = None


def process_cpu(pid: int | None) -> float:
    """CPU seconds (user and system, every thread) that process *pid* has used so far;
    0.0 for None or where /proc does not say (the comparison's reader)."""
    used = None if pid is None else cpu_seconds(pid)
    return 0.0 if used is None else used


def main() -> int:
    """Measure and print; exit 1 when a record went missing."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument(
        "--compression",
        choices=("gzip", "none"),
        default="gzip",
        help="the HTTP writers' request compression (default gzip, their default; on "
        "loopback it only costs CPU, which the server shares here; ClickHouse 18.16 "
        "takes gzip only)",
    )
    parser.add_argument(
        "--in-flight",
        type=int,
        default=1,
        help="the ClickHouse and Elasticsearch writers' max_in_flight (default 1, their "
        "default: batches in order; 2 overlaps encoding with the server's work)",
    )
    parser.add_argument(
        "--no-prepare-ahead",
        action="store_true",
        help="the HTTP writers' prepare_ahead=False: each batch encoded after the answer "
        "to the one before (default: encoded while that answer is awaited)",
    )
    parser.add_argument(
        "--clickhouse-dir",
        default=None,
        help="where the ClickHouse server keeps its data (default: a temporary directory; "
        "every insert makes a part of several files, so the file system's speed shows)",
    )
    args = parser.parse_args()
    compression = None if args.compression == "none" else args.compression
    in_flight = args.in_flight
    ahead = not args.no_prepare_ahead
    wanted = [name.strip() for name in args.targets.split(",") if name.strip()]
    unknown = set(wanted) - set(TARGETS)
    if unknown or "file" not in wanted:
        parser.error(f"--targets: file and any of {', '.join(TARGETS[1:])}; got {args.targets}")

    context = multiprocessing.get_context("spawn")
    port, received = context.Value("i", 0), context.Value("q", 0)
    stand_in = context.Process(target=serve, args=(port, received), daemon=True)
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        server: Any = None
        targets: dict[str, Target] = {}
        try:
            targets["file"] = Target(
                lambda repeat: FileWriter(str(root / f"run{repeat}.log")),
                lambda repeat: len((root / f"run{repeat}.log").read_bytes().splitlines()),
            )
            if {"clickhouse", "clickhouse-tsv"} & set(wanted):
                binary = shutil.which("clickhouse-server")
                if binary is None:
                    notes.append("clickhouse: not measured, clickhouse-server is not installed")
                else:
                    from kakashi.writers.clickhouse import ClickHouseWriter, create_table
                    from tests.conftest import ClickHouseServer

                    data = (
                        Path(tempfile.mkdtemp(dir=args.clickhouse_dir))
                        if args.clickhouse_dir
                        else root
                    )
                    server = ClickHouseServer(data / "clickhouse", binary)
                    server.start()
                    for name, insert_format in (
                        ("clickhouse", "JSONEachRow"),
                        ("clickhouse-tsv", "TabSeparated"),
                    ):
                        if name not in wanted:
                            continue
                        prefix = f"logs_{insert_format}"
                        for repeat in range(args.repeats):
                            create_table(
                                server.url, f"{prefix}_{repeat}", columns={"user_id": "UInt64"}
                            )
                        targets[name] = Target(
                            lambda repeat, prefix=prefix, insert_format=insert_format: (
                                ClickHouseWriter(
                                    server.url,
                                    f"{prefix}_{repeat}",
                                    compression=compression,
                                    max_in_flight=in_flight,
                                    prepare_ahead=ahead,
                                    insert_format=insert_format,
                                )
                            ),
                            lambda repeat, prefix=prefix: int(
                                server.query(f"SELECT count() FROM {prefix}_{repeat}")
                            ),
                            lambda: server.process.pid,
                        )
            if {"elasticsearch", "loki", "otlp"} & set(wanted):
                from kakashi.writers.stores import ElasticsearchWriter, LokiWriter, OtlpHttpWriter

                stand_in.start()
                while not port.value:
                    time.sleep(0.01)
                url = f"http://127.0.0.1:{port.value}"
                makers = {
                    "elasticsearch": lambda repeat: ElasticsearchWriter(
                        url,
                        "logs-%Y.%m.%d",
                        compression=compression,
                        max_in_flight=in_flight,
                        prepare_ahead=ahead,
                    ),
                    "loki": lambda repeat: LokiWriter(
                        url,
                        labels={"service": "bench"},
                        compression=compression,
                        prepare_ahead=ahead,
                    ),
                    "otlp": lambda repeat: OtlpHttpWriter(
                        url, service_name="bench", compression=compression, prepare_ahead=ahead
                    ),
                }

                def counted(repeat: int) -> int:
                    return int(received.value)

                for name in ("elasticsearch", "loki", "otlp"):
                    if name in wanted:
                        targets[name] = Target(makers[name], counted, lambda: stand_in.pid)
            sample: list[bytes] = []
            for repeat in range(args.repeats):
                for name, target in targets.items():
                    received.value = 0  # the stand-in counts each run from zero
                    writer = target.make(repeat)
                    pid = target.server_pid()
                    own, theirs = time.process_time(), process_cpu(pid)
                    caller, caller_cpu, total = run_once(writer, args.records, args.batch_size)
                    target.own_cpu.append((time.process_time() - own) / args.records)
                    target.server_cpu.append((process_cpu(pid) - theirs) / args.records)
                    stored = target.count(repeat)
                    if stored != args.records + 1:  # the warm-up record too
                        raise RuntimeError(
                            f"{name}: {stored} records received, {args.records + 1} logged"
                        )
                    target.costs.append(caller / args.records * 1e6)
                    target.cpu_costs.append(caller_cpu / args.records * 1e6)
                    target.rates.append(args.records / total)
                    if name == "file" and not sample:
                        lines = (root / f"run{repeat}.log").read_bytes().splitlines()
                        sample = lines[1 : 1 + args.batch_size]  # after the warm-up record
                    elif name != "file" and target.writer_cost is None:
                        target.writer_cost = writer_cost(writer, sample)
        finally:
            if server is not None:
                server.stop()
                if args.clickhouse_dir:
                    shutil.rmtree(server.root.parent, ignore_errors=True)
            if stand_in.is_alive():
                stand_in.terminate()
                stand_in.join()
    print(
        f"{args.records} records, batch_size {args.batch_size}, median of {args.repeats}, "
        f"compression {args.compression}, in flight {in_flight}, prepare ahead {ahead}; "
        f"speedups: {kakashi._speedups.USING_SPEEDUPS}; Python {sys.version.split()[0]}"
    )
    print(
        f"{'target':<15}{'caller us/call':>15}{'(CPU)':>7}{'end-to-end rec/s':>18}{'vs file':>9}"
        f"{'writer us/rec':>15}{'CPU us/rec: ours':>18}{'server':>8}"
    )
    file_rate = statistics.median(targets["file"].rates)
    file_cost = statistics.median(targets["file"].costs)
    file_cpu = statistics.median(targets["file"].cpu_costs)
    for name, target in targets.items():
        cost, rate = statistics.median(target.costs), statistics.median(target.rates)
        cpu = statistics.median(target.cpu_costs)
        own = "-" if target.writer_cost is None else f"{target.writer_cost * 1e6:.2f}"
        ours = statistics.median(target.own_cpu) * 1e6
        theirs = statistics.median(target.server_cpu) * 1e6
        print(
            f"{name:<15}{cost:>15.3f}{cpu:>7.3f}{rate:>18,.0f}{rate / file_rate:>9.2f}{own:>15}"
            f"{ours:>18.2f}{theirs:>8.2f}"
        )
    for name, target in targets.items():
        if name != "file":
            cost, rate = statistics.median(target.costs), statistics.median(target.rates)
            cpu = statistics.median(target.cpu_costs)
            print(
                f"ratio {name}/file: caller cost {cost / file_cost:.2f}x "
                f"(its CPU {cpu / file_cpu:.2f}x), "
                f"end-to-end throughput {rate / file_rate:.2f}x"
            )
    if server is not None:
        print(f"clickhouse data in {args.clickhouse_dir or tempfile.gettempdir()}")
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
