"""Benchmark fixtures: both implementations of the hot path, and stdlib baselines."""

from __future__ import annotations

from importlib import import_module
from types import SimpleNamespace

import pytest


def _implementation(name: str) -> SimpleNamespace:
    try:
        return SimpleNamespace(
            name=name,
            capture=import_module(f"kakashi._speedups._capture_{name}"),
            format=import_module(f"kakashi._speedups._format_{name}"),
        )
    except ImportError:
        pytest.skip(f"the {name} implementation is not available")


@pytest.fixture(params=["py", "c"], name="impl")
def _impl(request: pytest.FixtureRequest) -> SimpleNamespace:
    """The pure-Python twin, then the compiled one."""
    return _implementation(request.param)
