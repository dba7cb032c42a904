"""The peer comparison script runs, counts lines, and reports a missing peer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kakashi.cli import bench

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
    assert figures["kakashi async"]["records_per_s_16_threads"] > 0
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

    assert "500 records, median of 2 runs" in result.stdout
    assert "| kakashi sync |" in result.stdout
    assert "100%" in result.stderr


# A stand-in for loguru, shadowing the real one: it writes one line per call from the
# main thread, and deadlocks (blocks forever on a lock it holds) from any other thread.
FAKE_LOGURU = """
import threading
_held = threading.Lock()
_held.acquire()
class _Logger:
    def add(self, path, **options):
        self.stream = open(path, "a")
    def remove(self):
        if hasattr(self, "stream"):
            self.stream.close()
    def patch(self, patcher):
        return self
    def info(self, msg, **fields):
        if threading.current_thread() is not threading.main_thread():
            _held.acquire()
        self.stream.write(msg + "\\n")
    def debug(self, msg, **fields):
        pass
logger = _Logger()
"""


def _shadowed(tmp_path: Path, package: str, source: str) -> dict[str, str]:
    """An environment whose PYTHONPATH puts a fake *package* before the real one."""
    (tmp_path / "shadow" / package).mkdir(parents=True)
    (tmp_path / "shadow" / package / "__init__.py").write_text(source)
    return {**os.environ, "PYTHONPATH": str(tmp_path / "shadow")}


def test_a_peer_that_fails_to_import_is_reported_in_its_row(tmp_path: Path) -> None:
    """A broken install is a row saying why, and the other libraries still run."""
    env = _shadowed(tmp_path, "structlog", "raise ImportError('simulated broken install')")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--records", "500", "--runs", "1",
         "--peers", "structlog (orjson + bytes),kakashi sync"],
        capture_output=True, text=True, env=env, check=True, timeout=300,
    )  # fmt: skip

    assert "| structlog (orjson + bytes) | not run: ImportError: simulated broken install" in (
        result.stdout
    )
    assert "| kakashi sync | " in result.stdout


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="stall detection reads /proc")
def test_a_peer_that_deadlocks_with_threads_is_killed_and_reported(tmp_path: Path) -> None:
    """The single-thread figures stand; the threaded cells say the library hung."""
    out = tmp_path / "figures.json"
    env = _shadowed(tmp_path, "loguru", FAKE_LOGURU)
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--records", "300", "--runs", "1",
         "--peers", "loguru", "--json", str(out)],
        capture_output=True, text=True, env=env, check=True, timeout=300,
    )  # fmt: skip
    row = json.loads(out.read_text())["loguru"]

    assert row["records_per_s"] > 0 and row["lost"] == 0
    assert row["error_4_threads"].startswith("hung: under 5% CPU")
    assert row["error_16_threads"] == "hung (as with 4 threads)"
    assert "hung: under 5% CPU" in result.stdout


def test_install_peers_reports_a_package_that_cannot_be_installed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``--install-peers`` installs one package at a time; a failure names pip's reason."""
    missing = tmp_path / "no-such-project"
    monkeypatch.setitem(bench.PACKAGES, "loguru", str(missing))

    failures = bench.install_peers(["loguru", "kakashi sync"])

    assert list(failures) == ["loguru"]
    assert failures["loguru"].startswith(f"pip install {missing} failed: ")


def test_a_missing_peer_row_says_how_to_install_it() -> None:
    """A peer that is not installed is a row with the way to install the peers."""
    table = bench.markdown({"loguru": {"error": "ModuleNotFoundError: No module named 'loguru'"}})

    assert "| loguru | not run: ModuleNotFoundError: No module named 'loguru' (pip install" in table
    assert "--install-peers" in table
