"""The benchmark tools run and report what they claim (small sizes: no timing asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_sustained_run_balances_its_accounting() -> None:
    """A short sustained run samples RSS, prints a slope and accounts for every record."""
    result = run("sustained.py", "--seconds", "2")

    assert result.returncode == 0, result.stderr
    assert re.search(r"slope after 10 s [+-]\d+\.\d\d MiB/min", result.stdout)
    assert "dropped (counted) 0" in result.stdout


def test_memory_table_has_every_strategy() -> None:
    """One row per overflow strategy, each with both bursts and the accounting."""
    result = run("memory.py", "--queue", "500", "--factor", "4")

    assert result.returncode == 0, result.stderr
    for strategy in ("block", "drop_oldest", "drop_newest"):
        row = next(
            line for line in result.stdout.splitlines() if line.startswith(f"| {strategy} |")
        )
        written, dropped = (int(n.replace(",", "")) for n in row.split("|")[5].split("/"))
        assert written + dropped == 2_001  # the 4x burst and the warm-up, all accounted
        assert (dropped == 0) == (strategy == "block")


def test_scaling_prints_ratios_to_one_thread() -> None:
    """The scaling table has 1, 4 and 16 thread figures with ratios, no records lost.

    The script exits 1 when the async ratios miss their target; at this size that is
    noise, so only a crash (any other status) fails here.
    """
    result = run("scaling.py", "--records", "3200", "--runs", "1", "--peers", "kakashi async")

    assert result.returncode in (0, 1), result.stderr
    cell = r" [\d,]+ \(\d\.\d\dx\) \|"
    assert re.search(r"\| kakashi async \| [\d,]+ \|" + cell + cell, result.stdout)


def test_sync_threads_compares_both_settings() -> None:
    """Both hold_gil settings get a row with 1, 4 and 16 thread figures (the script
    fails if a line is missing); the compiled build holds the lock on the default row
    where the temporary directory is on a local filesystem, the pure one never."""
    result = run("sync_threads.py", "--records", "3200", "--runs", "1")

    assert result.returncode == 0, result.stderr
    cell = r" [\d,]+ \(\d\.\d\dx\) \|"
    assert re.search(r"\| hold_gil=None \| (yes|no) \| [\d,]+ \|" + cell + cell, result.stdout)
    assert re.search(r"\| hold_gil=False \| no \| [\d,]+ \|" + cell + cell, result.stdout)


def test_latency_measures_the_floors_beside_the_logger() -> None:
    """Three rows in one run (the two floors and the async call), each with its
    percentiles and page faults per call, and nothing dropped."""
    result = run("latency.py", "5000")

    assert result.returncode == 0, result.stderr
    figures = r" p50 [\d.]+ us, p99 [\d.]+ us, p99\.9 [\d.]+ us; page faults per call [\d.]+"
    for row in ("empty method (floor)", "empty method keeping memory", "kakashi async"):
        assert re.search(re.escape(row) + r".*" + figures, result.stdout), row
    assert "dropped 0" in result.stdout


def test_handover_compares_each_setting_with_the_loop(tmp_path: Path) -> None:
    """One row per setting and one for the loop, each with its ratio to the loop; every
    run's file held every record (the script fails otherwise)."""
    result = run("handover.py", "--records", "3000", "--runs", "1", "--dir", str(tmp_path))

    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")][1:]
    names = [row.split("|")[1].strip() for row in rows]
    assert ["orjson loop (floor)", "gil_handover_depth=0", "gil_handover_depth=0.25",
            "gil_handover_depth=none"] == names  # fmt: skip
    assert "| 1.00x |" in rows[0]
    assert all(re.search(r"\| \d+\.\d\dx \|", row) for row in rows)
    assert not list(tmp_path.iterdir())  # its temporary directory is gone


def test_handover_crosses_depths_with_batch_sizes(tmp_path: Path) -> None:
    """With several batch sizes, each depth is run with each (the rows say which); each
    row has p99 / p99.9 / the slowest call, in that order."""
    result = run(
        "handover.py", "--records", "3000", "--runs", "1", "--dir", str(tmp_path),
        "--depths", "0.25", "--batch-sizes", "500,2000",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")][1:]
    names = [row.split("|")[1].strip() for row in rows]
    assert names == [
        "orjson loop (floor)",
        "gil_handover_depth=0.25, batch_size=500",
        "gil_handover_depth=0.25, batch_size=2000",
    ]
    for row in rows:
        p99, p999, slowest = (float(x) for x in row.split("|")[4].split(" / "))
        assert 0 < p99 <= p999 <= slowest


def test_stalls_counts_the_slow_calls_and_every_line(tmp_path: Path) -> None:
    """Every call is in one range or under 5 µs, the hand-overs are counted, and the
    file holds every record (the script fails otherwise)."""
    result = run("stalls.py", "--records", "5000", "--batch-size", "500", "--dir", str(tmp_path))

    assert result.returncode == 0, result.stderr
    assert "lines in the file: 5,000" in result.stdout
    slow_line = next(line for line in result.stdout.splitlines() if line.startswith("slow calls"))
    counts = [
        int(n.replace(",", "")) for n in re.findall(r"(?:\d+-\d+|>\d+) µs: ([\d,]+)", slow_line)
    ]
    assert len(counts) == 6 and sum(counts) <= 5000
    assert re.search(r"hand-overs: [\d,]+ \(waited out: [\d,]+\)", result.stdout)
    p99, p999, p9999, slowest = (
        float(x) for x in result.stdout.split("slowest µs: ")[1].split()[0:7:2]
    )
    assert 0 < p99 <= p999 <= p9999 <= slowest
    assert not list(tmp_path.iterdir())
