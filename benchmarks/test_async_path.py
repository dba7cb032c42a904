"""The async backend: caller cost and end-to-end throughput, with baselines in the same run.

Workload of the async backend issue: ``info("order filled", order_id=i, price=101.25,
qty=3, side="buy")``. Caller cost is measured in bursts that fit the queue while the
worker waits for a full batch (so the queue is never full); end-to-end throughput runs
from the first call until ``flush()`` returns, and the lines on disk are counted.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

import kakashi
from kakashi.core.async_backend import AsyncConfig
from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
from kakashi.core.pipeline import PipelineConfig, file_writer

BURST = 1000
TOTAL = 20_000


class Empty:
    """The floor: an empty Python method taking the same arguments."""

    def info(self, msg: str, *args: Any, **fields: Any) -> None:
        pass


def _calls(log: Any, n: int = BURST) -> None:
    for i in range(n):
        log.info("order filled", order_id=i, price=101.25, qty=3, side="buy")


@pytest.fixture(name="quiet_pipeline")
def _quiet_pipeline() -> Any:
    """An async pipeline whose worker waits for 1,000,000 records: it stays asleep."""
    config = AsyncConfig(max_queue_size=2_000_000, batch_size=1_000_000, batch_timeout=60)
    pipeline = AsyncPipeline(
        AsyncPipelineConfig(PipelineConfig(writers=(kakashi.null_writer,)), config)
    )
    yield pipeline
    pipeline.shutdown(30)


@pytest.mark.benchmark(group="async caller cost (queue not full)")
def test_caller_kakashi(benchmark: Any, quiet_pipeline: AsyncPipeline) -> None:
    """info() on an async logger: capture and enqueue only.

    Between rounds (not timed) the queue is drained, as a running worker keeps it, so
    memory is reused as in a live service instead of piling up.
    """
    log = quiet_pipeline.get_logger("b")

    def drain() -> None:
        quiet_pipeline.flush(30)

    benchmark.pedantic(_calls, args=(log,), setup=drain, rounds=200, warmup_rounds=5)


@pytest.mark.benchmark(group="async caller cost (queue not full)")
def test_caller_disabled_kakashi(benchmark: Any, quiet_pipeline: AsyncPipeline) -> None:
    """debug() on an INFO async logger."""
    log = quiet_pipeline.get_logger("b")

    def run() -> None:
        for i in range(BURST):
            log.debug("order filled", order_id=i, price=101.25, qty=3, side="buy")

    benchmark.pedantic(run, rounds=200, warmup_rounds=5)


@pytest.mark.benchmark(group="async caller cost (queue not full)")
def test_caller_disabled_picologging(benchmark: Any) -> None:
    """Peer: picologging's debug() on an INFO logger (its keyword arguments go to extra)."""
    picologging = pytest.importorskip("picologging")
    log = picologging.getLogger("bench.pico")
    log.setLevel(picologging.INFO)

    def run() -> None:
        for i in range(BURST):
            log.debug("order filled", extra={"order_id": i, "price": 101.25, "qty": 3})

    benchmark.pedantic(run, rounds=200, warmup_rounds=5)


@pytest.mark.benchmark(group="async caller cost (queue not full)")
def test_caller_empty_method(benchmark: Any) -> None:
    """Floor: an empty Python method with the same arguments."""
    benchmark.pedantic(_calls, args=(Empty(),), rounds=200, warmup_rounds=5)


def _line_count(path: Path) -> int:
    with path.open("rb") as stream:
        return sum(1 for _ in stream)


def _e2e_kakashi(benchmark: Any, writer: Any, count_lines: Any) -> None:
    """Async backend into *writer*, from the first call until flush(); lines counted."""
    pipeline = AsyncPipeline(
        AsyncPipelineConfig(
            PipelineConfig(writers=(writer,)),
            AsyncConfig(max_queue_size=100_000, batch_size=1000),
        )
    )
    log = pipeline.get_logger("b")
    rounds: list[int] = []

    def run() -> None:
        rounds.append(1)
        _calls(log, TOTAL)
        assert pipeline.flush(60)

    benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    pipeline.shutdown(30)
    assert len(rounds) * TOTAL == count_lines()


@pytest.mark.benchmark(group="end to end into a JSON-lines file")
def test_e2e_kakashi(benchmark: Any, tmp_path: Path) -> None:
    """Async backend into a plain file."""
    path = tmp_path / "k.log"
    _e2e_kakashi(benchmark, file_writer(path), lambda: _line_count(path))


@pytest.mark.benchmark(group="end to end into a JSON-lines file")
def test_e2e_kakashi_zstd(benchmark: Any, tmp_path: Path) -> None:
    """Async backend into a .zst file (one frame per batch)."""
    from kakashi.writers import ZstdFileWriter, read_lines

    path = tmp_path / "k.log.zst"
    _e2e_kakashi(benchmark, ZstdFileWriter(path), lambda: sum(1 for _ in read_lines(path)))


@pytest.mark.benchmark(group="end to end into a JSON-lines file")
def test_e2e_stdlib(benchmark: Any, tmp_path: Path) -> None:
    """Baseline: stdlib logging, FileHandler and an orjson formatter."""
    path = tmp_path / "s.log"
    logger = logging.getLogger("bench.e2e.stdlib")
    logger.handlers[:] = []
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.FileHandler(path)

    class JsonFormatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            event = {
                "timestamp": self.formatTime(record),
                "level": record.levelname,
                "logger": record.name,
                "message": record.getMessage(),
                **record.__dict__["fields"],
            }
            return orjson.dumps(event).decode()

    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    rounds: list[int] = []

    def run() -> None:
        rounds.append(1)
        for i in range(TOTAL):
            logger.info(
                "order filled",
                extra={"fields": {"order_id": i, "price": 101.25, "qty": 3, "side": "buy"}},
            )
        handler.flush()

    benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    handler.close()
    assert len(rounds) * TOTAL == _line_count(path)


@pytest.mark.benchmark(group="end to end into a JSON-lines file")
def test_e2e_handloop(benchmark: Any, tmp_path: Path) -> None:
    """Baseline: a minimal hand-written orjson.dumps + file.write loop."""
    path = tmp_path / "h.log"
    stream = path.open("ab")
    dumps = orjson.dumps
    now = time.time_ns
    rounds: list[int] = []

    def run() -> None:
        rounds.append(1)
        for i in range(TOTAL):
            event = {
                "timestamp": now(),
                "level": "INFO",
                "logger": "b",
                "message": "order filled",
                "order_id": i,
                "price": 101.25,
                "qty": 3,
                "side": "buy",
            }
            stream.write(dumps(event) + b"\n")
        stream.flush()

    benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    stream.close()
    assert len(rounds) * TOTAL == _line_count(path)
