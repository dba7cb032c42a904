"""The synchronous hot path against stdlib logging, measured in the same run.

Run with ``python benchmarks/ratios.py`` for a table of ratios, or
``pytest benchmarks`` for pytest-benchmark's own report. Workload as in the async
backend issue: ``info("order filled", order_id=i, price=101.25, qty=3, side="buy")``.
Each group has a stdlib or empty-method baseline measured in the same run.
"""

from __future__ import annotations

import io
import json
import logging
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from kakashi.writers import null_writer

ROUNDS = {"min_rounds": 20, "warmup": True}


class Empty:
    """The floor: an empty Python method taking the same arguments."""

    def info(self, msg: str, *args: Any, **fields: Any) -> None:
        pass


def _null_pipeline_logger(impl: SimpleNamespace, level: int) -> Any:
    """A logger of *impl* whose route formats JSON and writes to the null writer."""
    format_json = impl.format.format_json

    class Sink:
        def emit(self, record: Any) -> None:
            null_writer.write((format_json(record),))

    return impl.capture.Logger("bench", impl.capture.Route(Sink(), level))


def _stdlib_logger(level: int, stream: Any) -> logging.Logger:
    logger = logging.getLogger(f"bench.stdlib.{level}")
    logger.handlers[:] = []
    handler = logging.StreamHandler(stream)

    class JsonFormatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return orjson.dumps(
                {
                    "timestamp": self.formatTime(record),
                    "level": record.levelname,
                    "logger": record.name,
                    "message": record.getMessage(),
                    **record.__dict__.get("fields", {}),
                }
            ).decode()

    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger


def _calls(log: Any, n: int = 1000) -> None:
    for i in range(n):
        log.info("order filled", order_id=i, price=101.25, qty=3, side="buy")


@pytest.mark.benchmark(group="disabled call")
def test_disabled_kakashi(benchmark: Any, impl: SimpleNamespace) -> None:
    """debug() on an INFO logger: the level gate alone."""
    log = _null_pipeline_logger(impl, 20)

    def run() -> None:
        for i in range(1000):
            log.debug("order filled", order_id=i, price=101.25, qty=3, side="buy")

    benchmark.pedantic(run, rounds=50, warmup_rounds=2)


@pytest.mark.benchmark(group="disabled call")
def test_disabled_stdlib(benchmark: Any) -> None:
    """Baseline: stdlib debug() on an INFO logger (stdlib has no keyword fields)."""
    log = _stdlib_logger(logging.INFO, io.StringIO())

    def run() -> None:
        for i in range(1000):
            log.debug("order filled", extra={"fields": {"order_id": i}})

    benchmark.pedantic(run, rounds=50, warmup_rounds=2)


@pytest.mark.benchmark(group="disabled call")
def test_disabled_empty_method(benchmark: Any) -> None:
    """Floor: an empty Python method with the same arguments."""
    benchmark.pedantic(_calls, args=(Empty(),), rounds=50, warmup_rounds=2)


@pytest.mark.benchmark(group="enabled call, JSON to a null writer")
def test_enabled_kakashi(benchmark: Any, impl: SimpleNamespace) -> None:
    """info(): capture, JSON formatting and a write to the null writer, all on the caller."""
    benchmark.pedantic(_calls, args=(_null_pipeline_logger(impl, 20),), rounds=20, warmup_rounds=2)


@pytest.mark.benchmark(group="enabled call, JSON to a null writer")
def test_enabled_stdlib(benchmark: Any) -> None:
    """Baseline: stdlib info() with an orjson formatter into a StringIO."""
    log = _stdlib_logger(logging.INFO, io.StringIO())

    def run() -> None:
        for i in range(1000):
            log.info(
                "order filled",
                extra={"fields": {"order_id": i, "price": 101.25, "qty": 3, "side": "buy"}},
            )

    benchmark.pedantic(run, rounds=20, warmup_rounds=2)


@pytest.mark.benchmark(group="JSON formatting of one record")
def test_format_kakashi(benchmark: Any, impl: SimpleNamespace) -> None:
    """format_json on a captured record."""
    captured: list[Any] = []

    class Sink:
        emit = captured.append

    log = impl.capture.Logger("bench", impl.capture.Route(Sink(), 20))
    log.info("order filled", order_id=1, price=101.25, qty=3, side="buy")
    record = captured[0]
    format_json = impl.format.format_json

    def run() -> None:
        for _ in range(1000):
            format_json(record)

    benchmark.pedantic(run, rounds=20, warmup_rounds=2)


@pytest.mark.benchmark(group="JSON formatting of one record")
def test_format_stdlib(benchmark: Any) -> None:
    """Baseline: stdlib logging.Formatter + json.dumps of the same event."""
    record = logging.LogRecord("bench", logging.INFO, __file__, 1, "order filled", None, None)
    record.fields = {"order_id": 1, "price": 101.25, "qty": 3, "side": "buy"}
    formatter = logging.Formatter()

    def run() -> None:
        for _ in range(1000):
            json.dumps(
                {
                    "timestamp": formatter.formatTime(record),
                    "level": record.levelname,
                    "logger": record.name,
                    "message": record.getMessage(),
                    **record.fields,
                }
            )

    benchmark.pedantic(run, rounds=20, warmup_rounds=2)


@pytest.mark.benchmark(group="enabled call, JSON into a file")
def test_file_kakashi(benchmark: Any, tmp_path: Any) -> None:
    """info() through a synchronous Pipeline into file_writer: one lock-free write a record."""
    from kakashi.core.pipeline import Pipeline, PipelineConfig, file_writer

    pipeline = Pipeline(PipelineConfig(writers=(file_writer(tmp_path / "kakashi.log"),)))
    benchmark.pedantic(_calls, args=(pipeline.get_logger("bench"),), rounds=20, warmup_rounds=2)
    pipeline.close()


@pytest.mark.benchmark(group="enabled call, JSON into a file")
def test_file_stdlib(benchmark: Any, tmp_path: Any) -> None:
    """Baseline: stdlib info() with an orjson formatter through a FileHandler."""
    with (tmp_path / "stdlib.log").open("a") as stream:
        log = _stdlib_logger(logging.INFO, stream)

        def run() -> None:
            for i in range(1000):
                log.info(
                    "order filled",
                    extra={"fields": {"order_id": i, "price": 101.25, "qty": 3, "side": "buy"}},
                )  # StreamHandler flushes every record: one write each, as FileHandler

        benchmark.pedantic(run, rounds=20, warmup_rounds=2)
