"""Review of #11 (rotation as logging.handlers and loguru users expect it): the cases that
broke. Local-time cases run in a child process under ``TZ``; time is the writer's clock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kakashi import _errors
from kakashi.writers import RotatingFileWriter
from tests.conftest import Clock
from tests.conftest import file_lines as contents

T0 = 1_795_737_600.0  # 2026-11-27T00:00:00Z


# A child under TZ: one writer, a record at each local time of *steps*; prints each file's
# records, oldest file first, as the writer lists them.
LOCAL = textwrap.dedent(
    """
    import datetime as dt, json, sys
    from pathlib import Path
    from kakashi.writers import RotatingFileWriter, read_lines

    directory, options, steps = Path(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
    now = [dt.datetime.fromisoformat(steps[0]).timestamp()]
    writer = RotatingFileWriter(directory / "app.log", utc=False, compression=None,
                                clock=lambda: now[0], **options)
    for step in steps:
        now[0] = dt.datetime.fromisoformat(step).timestamp()
        writer.write([step.encode()])
    writer.close()
    files = [*writer.rotated_files()[::-1], writer.path]
    print(json.dumps([[line.decode() for line in read_lines(f)] for f in files]))
    """
)


def local_files(tmp_path: Path, zone: str, options: dict[str, object], steps: list[str]) -> object:
    if not Path("/usr/share/zoneinfo", zone).exists():
        pytest.fail(f"the zone database lacks {zone} (ci/test.sh installs tzdata)")
    child = subprocess.run(
        [sys.executable, "-c", LOCAL, str(tmp_path), json.dumps(options), json.dumps(steps)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "TZ": zone},
    )  # fmt: skip
    assert 0 == child.returncode, child.stderr
    return json.loads(child.stdout)


# -- hourly in a zone whose clocks move by half an hour ---------------------------------------


def test_hourly_lord_howe_repeated_half_hour_is_one_file(tmp_path: Path) -> None:
    """Lord Howe goes back from 02:00 +11:00 to 01:30 +10:30. The repeated half hour is a
    file of its own, not a file per record: the end of its hour was computed as 02:00
    +11:00, the moment it began, so every write in it rotated (3 records, 3 files)."""
    day = "2026-04-05"
    steps = [
        f"{day}T00:50:00+11:00",
        f"{day}T01:10:00+11:00",
        f"{day}T01:40:00+11:00",
        f"{day}T01:35:00+10:30",  # the second time round
        f"{day}T01:40:00+10:30",
        f"{day}T01:50:00+10:30",
        f"{day}T02:10:00+10:30",
    ]
    assert [[steps[0]], steps[1:3], steps[3:6], [steps[6]]] == local_files(
        tmp_path, "Australia/Lord_Howe", {"when": "hourly"}, steps
    )


def test_hourly_lord_howe_after_the_half_hour_gap(tmp_path: Path) -> None:
    """Lord Howe goes forward from 02:00 +10:30 to 02:30 +11:00. A file begun at 02:40
    ends at 03:00, not at 03:30 (03:10 landed in the file of hour 2)."""
    day = "2026-10-04"
    steps = [
        f"{day}T01:50:00+10:30",
        f"{day}T02:40:00+11:00",
        f"{day}T02:50:00+11:00",
        f"{day}T03:10:00+11:00",
        f"{day}T03:40:00+11:00",
    ]
    assert [[steps[0]], steps[1:3], steps[3:]] == local_files(
        tmp_path, "Australia/Lord_Howe", {"when": "hourly"}, steps
    )


@pytest.mark.parametrize("zone", ["Asia/Kolkata", "America/New_York", "Europe/Berlin"])
def test_hourly_local_ordinary_day(tmp_path: Path, zone: str) -> None:
    """On an ordinary day a local hourly file holds one wall-clock hour (half-hour offset
    included)."""
    offset = {"Asia/Kolkata": "+05:30", "America/New_York": "-05:00", "Europe/Berlin": "+01:00"}
    steps = [
        f"2026-11-27T{t}{offset[zone]}" for t in ("10:10:00", "10:59:59", "11:00:00", "12:30:00")
    ]
    assert [steps[:2], [steps[2]], [steps[3]]] == local_files(
        tmp_path, zone, {"when": "hourly"}, steps
    )


# -- namers -----------------------------------------------------------------------------------


def test_a_namer_may_return_a_path(tmp_path: Path) -> None:
    """A namer returning a pathlib.Path (logging.handlers accepts one: os.rename takes it)
    made every rotation fail with a TypeError (``Path + str``): 4 records, 0 rotations,
    3 failures counted, one file growing past max_bytes."""
    _errors.reset()

    def namer(name: str) -> Path:
        path = Path(name)
        return path.with_name(path.name.replace(".log", "") + ".log")

    path = tmp_path / "app.log"
    writer = RotatingFileWriter(path, max_bytes=10, namer=namer, compression=None)
    for i in range(4):
        writer.write([f"record-{i}".encode()])
    writer.close()
    assert {} == {kind: n for kind, n in _errors.error_counts().items() if "rotating" in kind}
    assert {
        "app.log": ["record-3"], "app.1.log": ["record-2"], "app.2.log": ["record-1"],
        "app.3.log": ["record-0"],
    } == contents(tmp_path)  # fmt: skip


# -- local stamps on the night the clocks go back (see tests/test_local_stamps.py) ------------


def test_local_timestamped_names_sort_in_real_order_when_the_clocks_go_back(
    tmp_path: Path,
) -> None:
    """Size rotation, timestamped names in local time (``%Y-%m-%dT%H-%M-%S``), New York's
    repeated hour: ``T01-05-00`` (EST, later) sorted before ``T01-40-00`` (EDT, earlier).
    With backup_count=2 the file of 01:05 EST was deleted and the older one of 01:40 EDT
    kept (5 records logged, 3 on disk, the wrong 3). The stamps now carry the offset and
    files are ordered by the moment they name: the newest 2 are kept."""
    day = "2026-11-01"
    steps = [
        f"{day}T00:50:00-04:00",
        f"{day}T01:40:00-04:00",
        f"{day}T01:05:00-05:00",  # the second time round: later than 01:40 EDT
        f"{day}T01:45:00-05:00",
        f"{day}T02:10:00-05:00",
    ]
    options = {"max_bytes": 10, "naming": "timestamped", "backup_count": 2}
    assert [[steps[2]], [steps[3]], [steps[4]]] == local_files(
        tmp_path, "America/New_York", options, steps
    )


def test_an_interval_counts_from_the_files_start_across_restarts(tmp_path: Path) -> None:
    """when=3600 and a short process every 10 minutes (a cron job): each run sees a file
    10 minutes old, so its period ends 50 minutes later, after the run has ended. Two
    hours of runs, 13 records, one file, no rotation; loguru counts from the creation."""
    path = tmp_path / "app.log"
    clock = Clock(T0 + 7 * 60)
    for run in range(13):
        writer = RotatingFileWriter(path, when=3600, compression=None, clock=clock)
        writer.write([f"run {run}".encode()])
        writer.close()
        ten_minutes_ago = time.time() - 600  # the file's age when the next run starts
        os.utime(path, (ten_minutes_ago, ten_minutes_ago))
        clock.now += 600
    rotated = [name for name in contents(tmp_path) if name != "app.log"]
    assert len(rotated) >= 1


def test_a_test_clock_on_a_boundary_does_not_rotate_on_reopening(tmp_path: Path) -> None:
    """The docs: "a test clock sees a file it just wrote as new". A clock frozen at
    midnight (the natural test value): three short runs make three files, two of them
    named after the day before (``app.2026-11-26.log``, ``app.2026-11-26.1.log``); the
    same with several processes sharing the path."""
    path = tmp_path / "app.log"
    for run in range(3):
        writer = RotatingFileWriter(
            path, when="daily", naming="timestamped", compression=None, clock=Clock(T0)
        )
        writer.write([f"run {run}".encode()])
        writer.close()
        moment_ago = time.time() - 0.5  # the next run starts half a second later
        os.utime(path, (moment_ago, moment_ago))
    assert {"app.log": ["run 0", "run 1", "run 2"]} == contents(tmp_path)


# -- kakashi view --namer ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    ['raise RuntimeError("no config")\n', "def namer(name:\n", "import not_there_at_all\n"],
)
def test_view_namer_module_failing_at_import_is_a_usage_error(tmp_path: Path, source: str) -> None:
    """A --namer module that raises at import (RuntimeError, SyntaxError) printed a
    traceback; it is a usage error like a missing module (exit 2, the spec named)."""
    (tmp_path / "lognames.py").write_text(source)
    (tmp_path / "app.log").write_text('{"event": "x"}\n')
    shown = subprocess.run(
        [sys.executable, "-m", "kakashi", "view", "app.log", "--namer", "lognames:namer"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )  # fmt: skip
    assert 2 == shown.returncode, shown.stderr
    assert "--namer lognames:namer" in shown.stderr
    assert "Traceback" not in shown.stderr


def test_a_padding_namer_is_shifted_through_the_namer(tmp_path: Path) -> None:
    """Three rotations with ``app.log.1 -> app.log.001``: the files are app.log.001,
    app.log.2 and app.log.3 (nothing lost, but not the names the namer gives)."""

    def padded(name: str) -> str:
        head, _, number = name.rpartition(".")
        return f"{head}.{int(number):03d}"

    path = tmp_path / "app.log"
    writer = RotatingFileWriter(path, max_bytes=10, namer=padded, compression=None)
    for i in range(4):
        writer.write([f"record-{i}".encode()])
    writer.close()
    assert {
        "app.log": ["record-3"], "app.log.001": ["record-2"], "app.log.002": ["record-1"],
        "app.log.003": ["record-0"],
    } == contents(tmp_path)  # fmt: skip


def test_a_dead_compressors_partial_of_a_named_file_is_removed(tmp_path: Path) -> None:
    """A compression of ``app.1.log`` (cookbook namer) killed mid-way leaves
    ``app.1.log.zst.<pid>-0.partial``; the next retention pass should remove it as it
    removes ``app.log.1.zst.<pid>-0.partial``."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    pid = int(dead.stdout)
    (tmp_path / f"app.1.log.zst.{pid}-0.partial").write_bytes(b"torn")
    (tmp_path / f"app.log.1.zst.{pid}-0.partial").write_bytes(b"torn")

    def cookbook(name: str) -> str:
        return name.replace(".log", "") + ".log"

    writer = RotatingFileWriter(tmp_path / "app.log", max_bytes=10, namer=cookbook, backup_count=5)
    for i in range(3):
        writer.write([f"record-{i}".encode()])
    assert writer.wait_for_compression(30)
    writer.close()
    assert [] == sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".partial"))
