"""The kakashi command: ``kakashi demo`` and ``python -m kakashi``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import kakashi
from kakashi.cli import main
from kakashi.writers import read_lines


def test_demo_accounts_for_every_record(tmp_path: Path) -> None:
    """The demo logs N records, finds N lines on disk and says nothing is unaccounted."""
    out = subprocess.run(
        [sys.executable, "-m", "kakashi", "demo", "--count", "3000", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    files = sorted(tmp_path.glob("demo.log.zst*"), key=lambda p: p.stat().st_mtime_ns)
    events = [json.loads(line) for file in files for line in read_lines(file)]

    assert 3000 == len(events)
    assert (
        "logged 3,000 = on disk 3,000 + filtered 0 + dropped 0 + pending 0 + unaccounted 0" in out
    )
    assert "complete" in out and "1 zstd file (0 rotations)" in out
    assert "get_async_stats()" in out and "messages_written     3000" in out
    assert "messages_dropped     0" in out and "pending              0" in out
    assert "records/s" in out and "p99" in out and "100%" in out
    errors = [event for event in events if event["level"] == "ERROR"]
    assert errors and all(e["exception"]["type"] == "ConnectionError" for e in errors)
    assert all(event["request_id"].startswith("req-") for event in events)


def test_version(capsys: object) -> None:
    """kakashi --version prints the package version."""
    try:
        main(["--version"])
    except SystemExit as exit_:
        assert 0 == exit_.code

    assert f"kakashi {kakashi.__version__}" in capsys.readouterr().out  # type: ignore[attr-defined]


def test_bad_count_is_rejected() -> None:
    """--count below 1 is a usage error."""
    result = subprocess.run(
        [sys.executable, "-m", "kakashi", "demo", "--count", "0"], capture_output=True, text=True
    )

    assert 2 == result.returncode
    assert "--count must be at least 1" in result.stderr
