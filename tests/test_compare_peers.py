"""The peer comparison script runs, counts lines, and reports a missing peer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "compare_peers.py"


def test_compare_kakashi_and_stdlib(tmp_path: Path) -> None:
    """A small run prints a table with both rows and writes JSON with no loss."""
    out = tmp_path / "figures.json"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--records", "2000", "--runs", "1",
         "--peers", "kakashi async,stdlib logging,empty method (floor)", "--json", str(out)],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    figures = json.loads(out.read_text())

    assert "| kakashi async |" in result.stdout and "| stdlib logging |" in result.stdout
    assert 0 == figures["kakashi async"]["lost"] == figures["stdlib logging"]["lost"]
    assert figures["kakashi async"]["records_per_s"] > 0
    assert figures["kakashi async"]["records_per_s_4_threads"] > 0
    assert figures["empty method (floor)"]["records_per_s"] is None


def test_unknown_peer_is_a_usage_error() -> None:
    """A peer name that does not exist is refused with the list of known ones."""
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--peers", "printf"], capture_output=True, text=True
    )

    assert 2 == result.returncode
    assert "unknown peers ['printf']" in result.stderr


def test_kakashi_bench_command(tmp_path: Path) -> None:
    """``kakashi bench`` runs the comparison from the installed package, with progress."""
    result = subprocess.run(
        [sys.executable, "-m", "kakashi", "bench", "--records", "500", "--runs", "2",
         "--peers", "kakashi sync,stdlib logging"],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip

    assert "median of 2 run(s)" in result.stdout
    assert "| kakashi sync |" in result.stdout
    assert "100%" in result.stderr
