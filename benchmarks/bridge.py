"""The stdlib bridge's cost against stdlib's own FileHandler, in one run.

Each variant makes the same stdlib call::

    logger.info("order %s filled", i, extra={"order_id": i, "price": 101.25, "side": "buy"})

and writes one JSON line per call to a file of its own:

- ``stdlib``: a ``logging.FileHandler`` with a JSON formatter (``json.dumps`` of the
  usual fields: timestamp, level, logger, message, module, function, line, thread,
  process and the ``extra=`` keys). The baseline every ratio is taken against.
- ``bridge``: a :class:`~kakashi.integrations.logging.KakashiHandler` into an
  :class:`~kakashi.core.async_pipeline.AsyncPipeline` writing a file, its worker
  draining in the background.
- ``bridge-lean``: the same, with the logger made lean (``capture_stdlib(lean=True)``
  does this to every logger): no caller frame walk, no process-name or asyncio task
  lookups (see docs/stdlib.md).
- ``kakashi``: Kakashi's own logger into the same kind of async pipeline, for scale.

Per call, the time of the calls alone (``call``), and separately the time until the file
holds every line (``drain``: the worker finishing and the flush; for ``stdlib`` the
handler's flush). The median of ``--repeats`` repeats of ``--calls`` calls each is
reported, with the ratio of each variant against ``stdlib`` (call time, and call plus
drain time). Every line is counted in every file at the end.

Run: ``python3 benchmarks/bridge.py`` (``--calls 20000 --repeats 7`` by default).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kakashi
from kakashi._speedups import SELECTION
from kakashi.core.async_backend import AsyncConfig
from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
from kakashi.core.pipeline import PipelineConfig, file_writer
from kakashi.integrations import logging as _bridge
from kakashi.integrations.logging import KakashiHandler

# Absent from versions before lean loggers: then that variant is left out, so this script
# also measures an older checkout (PYTHONPATH=that checkout) for a before/after.
make_lean = getattr(_bridge, "make_lean", None)

#: The ``LogRecord`` attributes the JSON formatter of the baseline does not write as fields.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """What a stdlib user writes: ``json.dumps`` of the usual fields and the extras."""

    def format(self, record: logging.LogRecord) -> str:
        """One JSON line for *record*."""
        event = {
            "timestamp": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "module": record.module,
            "function": record.funcName,
            "line": record.lineno,
            "thread": record.threadName,
            "process": record.process,
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                event[key] = value
        return json.dumps(event, default=repr)


def _calls(logger: logging.Logger, n: int) -> None:
    for i in range(n):
        logger.info("order %s filled", i, extra={"order_id": i, "price": 101.25, "side": "buy"})


def _native_calls(logger: Any, n: int) -> None:
    for i in range(n):
        logger.info("order %s filled", i, order_id=i, price=101.25, side="buy")


def _count_lines(path: Path) -> int:
    with path.open("rb") as stream:
        return sum(1 for _ in stream)


class Variant:
    """One way of logging the workload into *path*: ``run(n)`` calls, ``drain()`` waits."""

    def __init__(
        self, name: str, path: Path, run: Callable[[int], None], drain: Callable[[], None]
    ) -> None:
        self.name = name
        self.path = path
        self.run = run
        self.drain = drain
        self.calls: list[float] = []  # seconds per call, one per repeat
        self.drains: list[float] = []
        self.cpu: list[float] = []  # CPU seconds of the process (every thread) per call
        self.logged = 0

    def measure(self, n: int) -> None:
        """Make *n* calls and wait until they are in the file; note both times."""
        cpu = time.process_time()
        start = time.perf_counter()
        self.run(n)
        called = time.perf_counter()
        self.drain()
        drained = time.perf_counter()
        self.cpu.append((time.process_time() - cpu) / n)
        self.logged += n
        self.calls.append((called - start) / n)
        self.drains.append((drained - called) / n)


def _stdlib_logger(name: str, handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def _async_pipeline(path: Path) -> AsyncPipeline:
    return AsyncPipeline(
        AsyncPipelineConfig(
            PipelineConfig(writers=(file_writer(path),)),
            AsyncConfig(max_queue_size=100_000, batch_size=1000),
        )
    )


def _flushing(pipeline: AsyncPipeline) -> Callable[[], None]:
    def drain() -> None:
        if not pipeline.flush(60):
            raise RuntimeError(f"flush timed out: {pipeline.stats()}")

    return drain


def variants(directory: Path) -> tuple[list[Variant], list[AsyncPipeline]]:
    """The variants, each with a file in *directory*, and the pipelines to shut down."""
    made: list[Variant] = []
    pipelines: list[AsyncPipeline] = []

    path = directory / "stdlib.log"
    file_handler = logging.FileHandler(path)
    file_handler.setFormatter(JsonFormatter())
    stdlib = _stdlib_logger("bench.stdlib", file_handler)
    made.append(Variant("stdlib", path, lambda n: _calls(stdlib, n), file_handler.flush))

    for name, lean in (("bridge", False), ("bridge-lean", True)):
        if lean and make_lean is None:
            continue
        path = directory / f"{name}.log"
        pipeline = _async_pipeline(path)
        pipelines.append(pipeline)
        logger = _stdlib_logger(f"bench.{name}", KakashiHandler(pipeline=pipeline))
        if lean and make_lean is not None:
            make_lean(logger)
        made.append(Variant(name, path, lambda n, log=logger: _calls(log, n), _flushing(pipeline)))

    path = directory / "kakashi.log"
    pipeline = _async_pipeline(path)
    pipelines.append(pipeline)
    native = pipeline.get_logger("bench.kakashi")
    made.append(Variant("kakashi", path, lambda n: _native_calls(native, n), _flushing(pipeline)))
    return made, pipelines


def _child(name: str, n: int) -> None:
    """Under callgrind: make *n* calls of the variant *name* and drain, then count lines."""
    with tempfile.TemporaryDirectory(prefix="kakashi-bridge-") as tmp:
        made, _ = variants(Path(tmp))
        (variant,) = [v for v in made if v.name == name]
        variant.run(n)
        variant.drain()
        if _count_lines(variant.path) != n:
            raise SystemExit(f"{name}: {_count_lines(variant.path)} lines, not {n}")
    os._exit(0)  # no interpreter teardown: the same for every variant


def _instructions(name: str, n: int) -> int:
    result = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, __file__, "--child", name, str(n)],
        capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"},
    )  # fmt: skip
    match = re.search(r"Collected : (\d+)", result.stderr)
    if result.returncode or match is None:
        raise RuntimeError(f"{name}: callgrind failed: {result.stderr[-800:]}")
    return int(match.group(1))


def instructions(names: list[str], small: int, large: int) -> dict[str, int]:
    """Instructions per call of each variant, every thread counted (the caller, the
    worker, the writes): a child process under callgrind makes *small* calls, another
    *large*; the difference over ``large - small`` cancels the start-up."""
    jobs = [(name, n) for name in names for n in (small, large)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        totals = dict(zip(jobs, pool.map(lambda job: _instructions(*job), jobs), strict=True))
    return {name: (totals[name, large] - totals[name, small]) // (large - small) for name in names}


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:7.2f}"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table; exit 1 if a file misses a line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20_000, help="calls per repeat")
    parser.add_argument("--repeats", type=int, default=7, help="repeats (median reported)")
    parser.add_argument("--only", nargs="*", help="run only these variants (and stdlib)")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="also count instructions per call under callgrind (stable under load)",
    )
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.child:
        _child(options.child[0], int(options.child[1]))
    if options.repeats < 1 or options.calls < 1:
        parser.error("--calls and --repeats must be at least 1")
    if options.instructions and shutil.which("valgrind") is None:
        parser.error("--instructions needs valgrind")

    with tempfile.TemporaryDirectory(prefix="kakashi-bridge-") as tmp:
        made, pipelines = variants(Path(tmp))
        if options.only:
            made = [v for v in made if v.name == "stdlib" or v.name in options.only]
        for variant in made:  # warm up: caches, the first file writes, the workers
            variant.measure(min(options.calls, 2000))
            variant.calls.clear()
            variant.drains.clear()
            variant.cpu.clear()
        # Interleaved, so a slow spell of the machine touches every variant alike.
        for _ in range(options.repeats):
            for variant in made:
                gc.collect()
                variant.measure(options.calls)
        for pipeline in pipelines:
            pipeline.shutdown(30)
        logging.getLogger("bench.stdlib").handlers[0].close()
        counts = {v.name: _count_lines(v.path) for v in made}

    print(
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cpus; "
        f"kakashi {kakashi.__version__}, {SELECTION}"
    )
    print(f"{options.calls} calls x {options.repeats} repeats, medians in microseconds per call")
    print(
        f"{'variant':<12} {'call':>7} {'drain':>7} {'total':>7} {'cpu':>7}"
        "   call/stdlib total/stdlib cpu/stdlib  lines"
    )
    base = made[0]
    base_call = statistics.median(base.calls)
    base_total = statistics.median(c + d for c, d in zip(base.calls, base.drains, strict=True))
    base_cpu = statistics.median(base.cpu)
    failed = False
    for variant in made:
        call = statistics.median(variant.calls)
        drain = statistics.median(variant.drains)
        total = statistics.median(c + d for c, d in zip(variant.calls, variant.drains, strict=True))
        cpu = statistics.median(variant.cpu)
        lines = counts[variant.name]
        ok = lines == variant.logged
        failed |= not ok
        print(
            f"{variant.name:<12} {_us(call)} {_us(drain)} {_us(total)} {_us(cpu)}   "
            f"{call / base_call:10.2f} {total / base_total:12.2f} {cpu / base_cpu:10.2f}  "
            f"{lines}/{variant.logged}{'' if ok else '  MISSING LINES'}"
        )
    if options.instructions:
        names = [v.name for v in made]
        counts = instructions(names, 2000, 6000)
        print("\ninstructions per call under callgrind (every thread), 6000 - 2000 calls")
        for name in names:
            ratio = counts[name] / counts["stdlib"]
            print(f"{name:<12} {counts[name]:>10,}   {ratio:5.2f} of stdlib")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
