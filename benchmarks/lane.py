"""A delivery lane alone: how fast it empties, with the next write prepared ahead or not.

Usage: ``python benchmarks/lane.py [--records 200000] [--repeats 5] [--batch-size 1000]
[--targets clickhouse,elasticsearch] [--delay SECONDS]``.

``benchmarks/shipping.py`` measures the whole way, from the first log call until every
record is stored, with the application's thread, the worker and the lane sharing the
interpreter; this measures the lane's part alone. Per repeat and target: a writer
(``ClickHouseWriter`` on the recommended table of a clickhouse-server the script starts,
``ElasticsearchWriter`` on the stand-in of ``shipping.py``) whose first request is held
while ``--records`` records are logged and wait in its lane, as behind a slow collector;
then the request is let go and the time until ``flush()`` returns (every record stored)
is the lane's. ``--delay`` makes the stand-in wait that long before it reads a request,
as a store on another machine is further away (here its work shares the writer's
cores). Once with ``prepare_ahead=False`` (each request encoded after the answer to the
one before), once with ``prepare_ahead=True`` (encoded while the answer to the one
before is awaited), in turn. Printed: the medians, records per second, and the ratio
of the two. Exits 1 if a record went missing.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import kakashi
from kakashi.core.async_backend import AsyncConfig
from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
from kakashi.core.pipeline import PipelineConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from shipping import serve  # the stand-in server: one definition


def held(cls: type) -> type:
    """*cls* with a ``release`` event that its sends (and writes) wait for, and an
    ``entered`` event set when one does."""

    class Held(cls):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **options: Any) -> None:
            super().__init__(*args, **options)
            self.release = threading.Event()
            self.release.set()
            self.entered = threading.Event()

        def send(self, batch: Sequence[bytes], prepared: Any, meanwhile: Any = None) -> Any:
            self.entered.set()
            self.release.wait()
            return super().send(batch, prepared, meanwhile)

        def write(self, batch: Sequence[bytes]) -> Any:
            self.entered.set()
            self.release.wait()
            return super().write(batch)

    return Held


def run_once(writer: Any, records: int, batch_size: int) -> float:
    """Seconds the lane of *writer* takes to deliver *records* records waiting in it."""
    pipeline = AsyncPipeline(
        AsyncPipelineConfig(
            PipelineConfig(writers=(writer,)),
            AsyncConfig(max_queue_size=max(100_000, records + 2), batch_size=batch_size),
        )
    )
    log = kakashi.get_logger("bench.lane", pipeline)
    log.info("warm up")  # starts the worker and the lane, connects
    if not pipeline.flush(30.0).complete:
        raise RuntimeError("the warm-up record was not delivered")
    writer.release.clear()
    writer.entered.clear()
    log.info("held")  # its request waits for release; the rest queue behind it
    if not writer.entered.wait(30):
        raise RuntimeError("the held record's write did not start")
    (lane,) = pipeline.backend._lanes.values()
    for i in range(records):
        log.info("order placed", seq=i, user_id=i % 1000, path="/cart", amount=9.5)
    deadline = time.monotonic() + 600
    while lane.records < records and time.monotonic() < deadline:
        time.sleep(0.001)
    start = time.perf_counter()
    writer.release.set()
    result = pipeline.flush(600.0)
    took = time.perf_counter() - start
    stats = pipeline.stats()
    pipeline.shutdown()
    if not result.complete or stats["messages_dropped"]:
        raise RuntimeError(f"not everything was delivered: {stats}")
    return took


def main() -> int:
    """Measure and print; exit 1 when a record went missing."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--targets", default="clickhouse,elasticsearch")
    parser.add_argument(
        "--delay", type=float, default=0.0, help="seconds the stand-in waits before answering"
    )
    args = parser.parse_args()
    wanted = [name.strip() for name in args.targets.split(",") if name.strip()]
    if not wanted or set(wanted) - {"clickhouse", "elasticsearch"}:
        parser.error(f"--targets: clickhouse and/or elasticsearch; got {args.targets}")
    context = multiprocessing.get_context("spawn")
    port, received = context.Value("i", 0), context.Value("q", 0)
    stand_in = context.Process(target=serve, args=(port, received, args.delay), daemon=True)
    makers: dict[str, Callable[[int, bool], Any]] = {}
    counts: dict[str, Callable[[int, bool], int]] = {}
    notes: list[str] = []
    rates: dict[tuple[str, bool], list[float]] = {}
    server: Any = None
    with tempfile.TemporaryDirectory() as directory:
        try:
            if "clickhouse" in wanted:
                binary = shutil.which("clickhouse-server")
                if binary is None:
                    notes.append("clickhouse: not measured, clickhouse-server is not installed")
                else:
                    from kakashi.writers.clickhouse import ClickHouseWriter, create_table
                    from tests.conftest import ClickHouseServer

                    server = ClickHouseServer(Path(directory) / "clickhouse", binary)
                    server.start()

                    def table(repeat: int, ahead: bool) -> str:
                        return f"lane_{repeat}_{int(ahead)}"

                    for repeat in range(args.repeats):
                        for ahead in (False, True):
                            create_table(server.url, table(repeat, ahead))
                    makers["clickhouse"] = lambda repeat, ahead: held(ClickHouseWriter)(
                        server.url, table(repeat, ahead), prepare_ahead=ahead
                    )
                    counts["clickhouse"] = lambda repeat, ahead: int(
                        server.query(f"SELECT count() FROM {table(repeat, ahead)}")
                    )
            if "elasticsearch" in wanted:
                from kakashi.writers.stores import ElasticsearchWriter

                stand_in.start()
                while not port.value:
                    time.sleep(0.01)
                url = f"http://127.0.0.1:{port.value}"
                makers["elasticsearch"] = lambda repeat, ahead: held(ElasticsearchWriter)(
                    url, "logs-%Y.%m.%d", prepare_ahead=ahead
                )
                counts["elasticsearch"] = lambda repeat, ahead: int(received.value)
            for repeat in range(args.repeats):
                for name, make in makers.items():
                    for ahead in (False, True):
                        received.value = 0
                        took = run_once(make(repeat, ahead), args.records, args.batch_size)
                        stored = counts[name](repeat, ahead)
                        logged = args.records + 2  # the warm-up and held records too
                        if stored != logged:
                            raise RuntimeError(f"{name}: {stored} stored, {logged} logged")
                        rates.setdefault((name, ahead), []).append(args.records / took)
        finally:
            if server is not None:
                server.stop()
            if stand_in.is_alive():
                stand_in.terminate()
                stand_in.join()
    print(
        f"{args.records} records waiting in the lane, batch_size {args.batch_size}, median "
        f"of {args.repeats}, stand-in delay {args.delay:g}s; "
        f"speedups: {kakashi._speedups.USING_SPEEDUPS}; "
        f"Python {sys.version.split()[0]}"
    )
    print(f"{'target':<15}{'in turn rec/s':>16}{'ahead rec/s':>16}{'ahead/in turn':>15}")
    for name in makers:
        plain = statistics.median(rates[(name, False)])
        ahead = statistics.median(rates[(name, True)])
        print(f"{name:<15}{plain:>16,.0f}{ahead:>16,.0f}{ahead / plain:>15.2f}")
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
