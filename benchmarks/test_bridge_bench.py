"""The stdlib bridge against stdlib's FileHandler with a JSON formatter, in the same run.

Workload: ``logger.info("order %s filled", i, extra={"order_id": i, "price": 101.25,
"side": "buy"})``, from the first call until every line is in the file (the async
backend's worker drains in the background; the flush is part of the round). Each
round's lines are counted. ``python benchmarks/bridge.py`` prints the same comparison as
a table of ratios, with the call and drain times apart and instruction counts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from importlib.util import module_from_spec, spec_from_file_location
from pathlib import Path
from typing import Any

import pytest

from kakashi.integrations.logging import LeanLogger

# benchmarks/ is no package: the script next to this file, loaded by its path.
_spec = spec_from_file_location("kakashi_bridge_benchmark", Path(__file__).with_name("bridge.py"))
assert _spec is not None and _spec.loader is not None
bridge = module_from_spec(_spec)
_spec.loader.exec_module(bridge)

CALLS = 2000


@pytest.fixture(name="made")
def _made(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The variants of benchmarks/bridge.py, each writing a file in *tmp_path*."""
    made, pipelines = bridge.variants(tmp_path)
    yield {variant.name: variant for variant in made}
    for pipeline in pipelines:
        pipeline.shutdown(30)
    for name in ("bench.stdlib", "bench.bridge", "bench.bridge-lean"):
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            handler.close()
        logger.handlers.clear()
        if type(logger) is LeanLogger:
            logger.__class__ = logging.Logger


def _bench(benchmark: Any, variant: Any) -> None:
    rounds: list[int] = []

    def run() -> None:
        rounds.append(1)
        variant.run(CALLS)
        variant.drain()

    benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    with variant.path.open("rb") as stream:
        assert len(rounds) * CALLS == sum(1 for _ in stream)


@pytest.mark.benchmark(group="stdlib call into a JSON-lines file")
def test_stdlib_file_handler(benchmark: Any, made: dict[str, Any]) -> None:
    """Baseline: a FileHandler with a json.dumps formatter."""
    _bench(benchmark, made["stdlib"])


@pytest.mark.benchmark(group="stdlib call into a JSON-lines file")
def test_bridge(benchmark: Any, made: dict[str, Any]) -> None:
    """KakashiHandler into an async pipeline writing a file."""
    _bench(benchmark, made["bridge"])


@pytest.mark.benchmark(group="stdlib call into a JSON-lines file")
def test_bridge_lean(benchmark: Any, made: dict[str, Any]) -> None:
    """The same with a lean logger (no LogRecord made)."""
    _bench(benchmark, made["bridge-lean"])


@pytest.mark.benchmark(group="stdlib call into a JSON-lines file")
def test_kakashi_native(benchmark: Any, made: dict[str, Any]) -> None:
    """For scale: Kakashi's own logger into the same kind of pipeline."""
    _bench(benchmark, made["kakashi"])
