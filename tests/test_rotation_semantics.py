"""Rotation the way users of logging.handlers and loguru expect it: names, retention, restarts,
schedules.

The scenarios come from CPython's tests of RotatingFileHandler and TimedRotatingFileHandler
(namer and rotator, computeRollover, getFilesToDelete, DST) and loguru's of rotation and
retention, translated to RotatingFileWriter. Time is the writer's clock; local-time cases run
in a child process under ``TZ``.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from kakashi.cli.view import sources
from kakashi.writers import RotatingFileWriter, read_lines
from tests.conftest import Clock
from tests.conftest import file_lines as contents

T0 = 1_795_737_600.0  # 2026-11-27T00:00:00Z, a Friday


def cookbook_namer(name: str) -> str:
    """The logging cookbook's namer: app.log.1 becomes app.1.log."""
    return name.replace(".log", "") + ".log"


# -- names: a writer's own files, and only those --------------------------------------------


@pytest.mark.parametrize("naming_kind", ["numbered", "timestamped"])
@pytest.mark.parametrize("compression", [None, "gzip"])
def test_neighbours_sharing_a_prefix_keep_their_files(
    tmp_path: Path, naming_kind: str, compression: str | None
) -> None:
    """a.log's backup_count deletes none of a.b.log's or a.b.c.log's rotated files, each
    writer lists only its own, and ``kakashi view a.log`` reads only a.log's."""
    clock = Clock(T0)
    options: dict[str, Any] = {"max_bytes": 30, "naming": naming_kind, "clock": clock}
    writers = {
        name: RotatingFileWriter(
            tmp_path / name,
            compression=compression,
            backup_count=2 if name == "a.log" else None,
            **options,
        )
        for name in ("a.log", "a.b.log", "a.b.c.log")
    }
    for i in range(6):  # a record is more than half of max_bytes: every write rotates
        for name, writer in writers.items():
            writer.write([f"{name}-{i}".ljust(20, "x").encode()])
            clock.now += 1
    for writer in writers.values():
        assert writer.wait_for_compression(30)
        writer.close()

    for name, writer in writers.items():
        files = writer.rotated_files()
        assert (2 if name == "a.log" else 5) == len(files)
        lines = [line.decode() for path in [*files[::-1], writer.path] for line in read_lines(path)]
        first = 3 if name == "a.log" else 0
        assert [f"{name}-{i}".ljust(20, "x") for i in range(first, 6)] == lines
        (source,), _ = sources([writer.path])
        assert [*files[::-1], writer.path] == source.files


def test_names_with_glob_characters_are_matched_literally(tmp_path: Path) -> None:
    """svc[1].log rotating beside svc1.log: no rotated file of either is overwritten or
    deleted (a glob reads [1] as a character class)."""
    neighbour = RotatingFileWriter(tmp_path / "svc1.log", max_bytes=10, compression=None)
    for i in range(3):
        neighbour.write([f"n{i}".ljust(8, "-").encode()])
    neighbour.close()
    writer = RotatingFileWriter(tmp_path / "svc[1].log", max_bytes=10, compression=None)
    for i in range(4):
        writer.write([f"s{i}".ljust(8, "-").encode()])
    writer.close()

    found = contents(tmp_path)
    assert ["s0------"] == found["svc[1].log.3"]
    assert ["n0------", "n1------", "n2------"] == [
        line for name in ("svc1.log.2", "svc1.log.1", "svc1.log") for line in found[name]
    ]
    assert 3 == len(writer.rotated_files())


def test_counters_read_in_numeric_order(tmp_path: Path) -> None:
    """Twelve rotations within one stamp: .10 and .11 come after .2, in the writer's list
    and in what ``kakashi view`` reads."""
    path = tmp_path / "app.log"
    writer = RotatingFileWriter(
        path, max_bytes=10, naming="timestamped", compression=None, clock=Clock(T0)
    )
    for i in range(13):
        writer.write([f"r{i:02d}".ljust(9, ".").encode()])
    writer.close()

    (source,), _ = sources([path])
    read = [line for file in source.files for line in read_lines(file)]
    assert [f"r{i:02d}".ljust(9, ".").encode() for i in range(13)] == read
    assert "app.2026-11-27T00-00-00.11.log" == writer.rotated_files()[0].name


def test_schedule_names_ignore_case(tmp_path: Path) -> None:
    """when="HOURLY" names files by the hour, as "hourly" does."""
    clock = Clock(T0 + 16 * 3600 + 59 * 60)
    path = tmp_path / "app.log"
    writer = RotatingFileWriter(
        path, when="HOURLY", naming="timestamped", compression=None, clock=clock
    )
    writer.write([b"16:59"])
    clock.now += 120
    writer.write([b"17:01"])
    writer.close()
    assert ["app.2026-11-27T16.log"] == [file.name for file in writer.rotated_files()]


def test_gzip_files_decode_and_carry_no_temporary_name(tmp_path: Path) -> None:
    """read_lines decodes a rotated .gz; its header names no temporary file (gunzip -N
    would restore that name) and keeps the original's time."""
    path = tmp_path / "app.log"
    writer = RotatingFileWriter(path, max_bytes=10, compression="gzip")
    writer.write([b"first....", b"second..."])
    assert writer.wait_for_compression(30)
    writer.close()
    (rotated,) = writer.rotated_files()
    header = rotated.read_bytes()[:10]

    assert [b"first...."] == list(read_lines(rotated))
    assert b"first....\n" == gzip.decompress(rotated.read_bytes())
    assert 0 == header[3] & 0x08  # FNAME: no name stored
    assert abs(int.from_bytes(header[4:8], "little") - time.time()) < 3600


# -- namers and rotators ----------------------------------------------------------------------


@pytest.mark.parametrize("compression", [None, "zstd"])
def test_cookbook_namer_keeps_every_file(tmp_path: Path, compression: str | None) -> None:
    """With the cookbook's namer (app.log.1 -> app.1.log) four records in four files all
    stay: the named files are shifted through the namer, as logging does. The writer lists
    them, and ``kakashi view`` given the namer reads them in order."""
    path = tmp_path / "app.log"
    writer = RotatingFileWriter(path, max_bytes=10, namer=cookbook_namer, compression=compression)
    for i in range(4):
        writer.write([f"record-{i}".encode()])
    assert writer.wait_for_compression(30)
    writer.close()

    suffix = ".zst" if compression else ""
    assert [f"app.{n}.log{suffix}" for n in (1, 2, 3)] == [
        file.name for file in writer.rotated_files()
    ]
    (source,), _ = sources([path], cookbook_namer)
    read = [line for file in source.files for line in read_lines(file)]
    assert [f"record-{i}".encode() for i in range(4)] == read


def test_backup_count_deletes_the_oldest_named_files(tmp_path: Path) -> None:
    """backup_count counts the files a namer named and deletes the oldest of them."""
    path = tmp_path / "app.log"
    writer = RotatingFileWriter(
        path, max_bytes=10, namer=cookbook_namer, compression=None, backup_count=2
    )
    for i in range(6):
        writer.write([f"record-{i}".encode()])
    assert writer.wait_for_compression(30)
    writer.close()
    assert {
        "app.log": ["record-5"], "app.1.log": ["record-4"], "app.2.log": ["record-3"]
    } == contents(tmp_path)  # fmt: skip


def test_timestamped_names_through_a_namer(tmp_path: Path) -> None:
    """A namer over timestamped names: counters go on past the names it gave, so none is
    replaced; the writer and backup_count see them."""
    clock = Clock(T0)

    def namer(name: str) -> str:
        directory, _, base = name.rpartition("/")
        return f"{directory}/archive-{base}"

    path = tmp_path / "app.log"
    writer = RotatingFileWriter(
        path, max_bytes=10, naming="timestamped", namer=namer, compression=None,
        backup_count=3, clock=clock,
    )  # fmt: skip
    for i in range(5):
        writer.write([f"record-{i}".encode()])
    assert writer.wait_for_compression(30)
    writer.close()
    stamp = "2026-11-27T00-00-00"
    assert {
        f"archive-app.{stamp}.1.log": ["record-1"],
        f"archive-app.{stamp}.2.log": ["record-2"],
        f"archive-app.{stamp}.3.log": ["record-3"],
        "app.log": ["record-4"],
    } == contents(tmp_path)


def test_namer_and_rotator_methods_of_a_subclass(tmp_path: Path) -> None:
    """A subclass that defines namer and rotator methods has them used (CPython's test of
    namer/rotator inheritance)."""
    moves: list[tuple[str, str]] = []

    class Cookbook(RotatingFileWriter):
        def namer(self, name: str) -> str:
            return cookbook_namer(name)

        def rotator(self, source: str, dest: str) -> None:
            moves.append((Path(source).name, Path(dest).name))
            os.rename(source, dest)

    path = tmp_path / "app.log"
    writer = Cookbook(path, max_bytes=10, compression=None)
    for i in range(3):
        writer.write([f"record-{i}".encode()])
    writer.close()
    assert [("app.log", "app.1.log")] * 2 == moves
    assert {"app.log": ["record-2"], "app.1.log": ["record-1"], "app.2.log": ["record-0"]} == (
        contents(tmp_path)
    )


def test_view_takes_the_namer_from_the_command_line(tmp_path: Path) -> None:
    """``kakashi view app.log --namer module:function`` reads the named files; a namer
    that cannot be loaded is a usage error."""
    (tmp_path / "lognames.py").write_text(
        'def namer(name):\n    return name.replace(".log", "") + ".log"\n'
    )
    path = tmp_path / "app.log"
    writer = RotatingFileWriter(path, max_bytes=10, namer=cookbook_namer, compression=None)
    for i in range(3):
        writer.write([json.dumps({"event": f"record-{i}"}).encode()])
    writer.close()
    command = [sys.executable, "-m", "kakashi", "view", "app.log", "--json"]
    shown = subprocess.run(
        [*command, "--namer", "lognames:namer"], cwd=tmp_path, capture_output=True,
        text=True, timeout=60, env={**os.environ, "PYTHONPATH": os.getcwd()},
    )  # fmt: skip
    assert 0 == shown.returncode, shown.stderr
    assert [f"record-{i}" for i in range(3)] == [
        json.loads(line)["event"] for line in shown.stdout.splitlines()
    ]
    for wrong, message in (
        (["app.log", ".", "--namer", "lognames:namer"], "not to directories"),
        (["app.log", "--namer", "os:getcwd"], "os:getcwd"),  # takes no file name
    ):
        refused = subprocess.run(
            [sys.executable, "-m", "kakashi", "view", *wrong], cwd=tmp_path,
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "PYTHONPATH": os.getcwd()},
        )  # fmt: skip
        assert (2, True) == (refused.returncode, message in refused.stderr), refused.stderr
    missing = subprocess.run(
        [*command, "--namer", "lognames:nothing"], cwd=tmp_path, capture_output=True,
        text=True, timeout=60, env={**os.environ, "PYTHONPATH": os.getcwd()},
    )  # fmt: skip
    assert 2 == missing.returncode
    assert "--namer lognames:nothing" in missing.stderr


# -- restarts and failed rotations --------------------------------------------------------


def age(path: Path, seconds: float) -> None:
    """Make *path* look last written *seconds* ago, on the real clock."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_short_process_rotates_yesterdays_file_first(tmp_path: Path) -> None:
    """A command that runs for a moment each day (when="midnight") finds yesterday's file
    and rotates it before writing today's first record; an empty file is not rotated."""
    path = tmp_path / "app.log"
    clock = Clock(T0 + 9 * 3600)
    for day in range(3):
        writer = RotatingFileWriter(path, when="midnight", compression=None, clock=clock)
        writer.write([f"day {day}".encode()])
        writer.close()
        age(path, 86_400)
        clock.now += 86_400
    assert {"app.log": ["day 2"], "app.log.1": ["day 1"], "app.log.2": ["day 0"]} == (
        contents(tmp_path)
    )
    path.write_bytes(b"")
    age(path, 86_400)
    writer = RotatingFileWriter(path, when="midnight", compression=None, clock=clock)
    writer.write([b"day 3"])
    writer.close()
    assert 0 == writer.rotations


def test_a_schedule_never_rotates_an_empty_file(tmp_path: Path) -> None:
    """A writer opened before the hour whose first record comes after it writes into its
    file: no empty rotated file (logging.handlers makes one)."""
    clock = Clock(T0 + 10 * 3600 + 59 * 60)
    writer = RotatingFileWriter(tmp_path / "app.log", when="hourly", compression=None, clock=clock)
    clock.now += 30 * 60
    writer.write([b"11:29"])
    clock.now += 40 * 60
    writer.write([b"12:09"])
    writer.close()
    assert {"app.log": ["12:09"], "app.log.1": ["11:29"]} == contents(tmp_path)


def test_writers_sharing_a_test_clock_do_not_rotate_on_reopening(tmp_path: Path) -> None:
    """The file's age is read on the real clock, so writers on a clock years away from it
    see a file just written as new: alternating writers rotate only at the hour."""
    clock = Clock(T0 + 4 * 365 * 86_400 + 10 * 3600 + 59 * 60)
    path = tmp_path / "app.log"
    writers = [
        RotatingFileWriter(path, when="hourly", compression=None, clock=clock) for _ in range(2)
    ]
    for i in range(10):
        writers[i % 2].write([f"r{i}".encode()])
        writers[i % 2].close()  # the next write reopens
    clock.now += 120
    writers[0].write([b"next hour"])
    for writer in writers:
        writer.close()
    assert {"app.log": ["next hour"], "app.log.1": [f"r{i}" for i in range(10)]} == (
        contents(tmp_path)
    )


def test_numbers_do_not_creep_while_rotations_fail(tmp_path: Path) -> None:
    """A rotation that fails after shifting (the rename of the active file refused) leaves
    .1 free; the next tries shift nothing more, so the files stay .1, .2 once one
    succeeds (they became .4, .5 with one shift per failed try)."""
    failures = [OSError("no"), OSError("no"), OSError("no")]

    def rotator(source: str, dest: str) -> None:
        if failures:
            raise failures.pop()
        os.rename(source, dest)

    path = tmp_path / "app.log"
    writer = RotatingFileWriter(path, max_bytes=10, compression=None)
    writer.write([b"record-0", b"record-1"])  # one rotation: app.log.1
    writer.rotator = rotator
    for i in range(2, 6):
        writer.write([f"record-{i}".encode()])
    writer.close()
    assert {
        "app.log": ["record-5"], "app.log.1": ["record-1", "record-2", "record-3", "record-4"],
        "app.log.2": ["record-0"],
    } == contents(tmp_path)  # fmt: skip


def test_a_failed_time_rotation_is_tried_again(tmp_path: Path) -> None:
    """A rotation at midnight that fails (the rename raised) is tried again at the next
    write, not put off to the next midnight (two days in one file)."""
    failures = [OSError("the disk said no")]

    def rotator(source: str, dest: str) -> None:
        if failures:
            raise failures.pop()
        os.rename(source, dest)

    clock = Clock(T0 + 86_400 - 60)
    path = tmp_path / "app.log"
    writer = RotatingFileWriter(
        path, when="midnight", compression=None, rotator=rotator, clock=clock
    )
    writer.write([b"day 1"])
    clock.now += 120
    writer.write([b"day 2, rotation failed"])
    clock.now += 60
    writer.write([b"day 2"])
    writer.close()
    assert {"app.log": ["day 2"], "app.log.1": ["day 1", "day 2, rotation failed"]} == (
        contents(tmp_path)
    )


# -- schedules people ask for, and retention at close ------------------------------------


def test_interval_and_monthly_schedules(tmp_path: Path) -> None:
    """when=timedelta rotates at the end of each period counted from the epoch (every
    half hour, at :00 and :30); "monthly" on the 1st."""
    clock = Clock(T0)
    every = RotatingFileWriter(
        tmp_path / "every.log", when=dt.timedelta(minutes=30), compression=None, clock=clock
    )
    monthly = RotatingFileWriter(
        tmp_path / "month.log", when="Monthly", naming="timestamped", compression=None,
        clock=clock,
    )  # fmt: skip
    for minutes in (0, 29, 31, 59, 62, 24 * 60 * 5):  # the last one: 2026-12-02
        clock.now = T0 + minutes * 60
        every.write([f"{minutes}".encode()])
        monthly.write([f"{minutes}".encode()])
    every.close()
    monthly.close()
    found = contents(tmp_path)
    assert ["0", "29"] == found["every.log.3"]
    assert ["31", "59"] == found["every.log.2"]
    assert ["62"] == found["every.log.1"]
    assert ["0", "29", "31", "59", "62"] == found["month.2026-11-27.log"]
    assert ["7200"] == found["month.log"]


def test_retention_runs_at_close_too(tmp_path: Path) -> None:
    """Rotated files past max_age are deleted when the writer closes, even when it never
    rotated (a short process over an old directory)."""
    path = tmp_path / "app.log"
    (tmp_path / "app.log.1").write_bytes(b"old\n")
    age(tmp_path / "app.log.1", 7200)
    (tmp_path / "app.log.2").write_bytes(b"older\n")
    age(tmp_path / "app.log.2", 9000)
    writer = RotatingFileWriter(path, max_age=3600, max_bytes=1000, compression=None)
    writer.write([b"new"])
    writer.close()
    assert {"app.log": ["new"]} == contents(tmp_path)


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ("daily@25:00", "no such time of day"),
        ("daily@12:60", "no such time of day"),
        (0, "positive interval"),
        (dt.timedelta(seconds=-5), "positive interval"),
        (True, "when must be"),
        ("every day", "when must be"),
    ],
)
def test_bad_schedules_fail_at_construction(tmp_path: Path, when: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RotatingFileWriter(tmp_path / "x.log", when=when)


# -- local time: the nights the clocks change ----------------------------------------------

LOCAL = textwrap.dedent(
    """
    import datetime as dt, json, sys
    from pathlib import Path
    from kakashi.writers import RotatingFileWriter, read_lines

    directory, when, script = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    now = [0.0]
    writer = None
    for step in script:
        if step == "reopen":
            writer.close()
            writer = None
            continue
        now[0] = dt.datetime.fromisoformat(step).timestamp()
        if writer is None:
            writer = RotatingFileWriter(directory / "app.log", when=when, utc=False,
                                        compression=None, clock=lambda: now[0])
        writer.write([json.dumps({"t": step, "utc": now[0]}).encode()])
    writer.close()
    files = [*writer.rotated_files()[::-1], writer.path]
    print(json.dumps([[json.loads(line)["t"] for line in read_lines(f)] for f in files]))
    """
)


def local_files(tmp_path: Path, zone: str, when: str, steps: list[str]) -> list[list[str]]:
    """Run *steps* (local ISO times with their offsets, or "reopen") in a child under
    TZ=*zone*; return each file's records, oldest file first."""
    if not Path("/usr/share/zoneinfo", zone).exists():
        pytest.fail(f"the zone database lacks {zone} (ci/test.sh installs tzdata)")
    child = subprocess.run(
        [sys.executable, "-c", LOCAL, str(tmp_path), when, json.dumps(steps)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "TZ": zone},
    )  # fmt: skip
    assert 0 == child.returncode, child.stderr
    return json.loads(child.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("zone", "day", "offsets"),
    [("America/New_York", "2026-11-01", ("-04:00", "-05:00")),
     ("Europe/Berlin", "2026-10-25", ("+02:00", "+01:00"))],
)  # fmt: skip
def test_hourly_local_rotation_is_every_real_hour(
    tmp_path: Path, zone: str, day: str, offsets: tuple[str, str]
) -> None:
    """Hourly in local time on the night the clocks go back: the repeated hour is a file
    of its own, so no file holds two real hours."""
    hour = 1 if zone == "America/New_York" else 2  # the hour that happens twice
    summer, winter = offsets
    steps = [
        f"{day}T{hour - 1:02d}:30:00{summer}",
        f"{day}T{hour:02d}:10:00{summer}",
        f"{day}T{hour:02d}:50:00{summer}",
        f"{day}T{hour:02d}:10:00{winter}",  # the second time round
        f"{day}T{hour:02d}:50:00{winter}",
        f"{day}T{hour + 1:02d}:10:00{winter}",
    ]
    assert [[steps[0]], steps[1:3], steps[3:5], [steps[5]]] == local_files(
        tmp_path, zone, "hourly", steps
    )


@pytest.mark.parametrize(
    ("zone", "day", "at", "offsets"),
    [("America/New_York", "2026-11-01", "01:30", ("-04:00", "-05:00")),
     ("Europe/Berlin", "2026-10-25", "02:30", ("+02:00", "+01:00"))],
)  # fmt: skip
def test_daily_time_in_the_repeated_hour_rotates_once(
    tmp_path: Path, zone: str, day: str, at: str, offsets: tuple[str, str]
) -> None:
    """daily@HH:MM inside the hour that happens twice rotates on its first pass only, even
    when a writer opens during the second (loguru's behaviour)."""
    summer, winter = offsets
    hour = at[:2]
    steps = [
        f"{day}T00:05:00{summer}",
        f"{day}T{hour}:40:00{summer}",  # past HH:30 the first time: rotates
        "reopen",
        f"{day}T{hour}:10:00{winter}",  # the second pass, a fresh writer
        f"{day}T{hour}:40:00{winter}",  # past HH:30 again: no second rotation
        f"{day}T23:00:00{winter}",
    ]
    assert [[steps[0]], [steps[1], *steps[3:]]] == local_files(tmp_path, zone, f"daily@{at}", steps)


@pytest.mark.parametrize(
    ("zone", "day", "offsets"),
    [("America/New_York", "2026-03-08", ("-05:00", "-04:00")),
     ("Europe/Berlin", "2026-03-29", ("+01:00", "+02:00"))],
)  # fmt: skip
def test_spring_forward_daily_and_hourly(
    tmp_path: Path, zone: str, day: str, offsets: tuple[str, str]
) -> None:
    """The night the clocks go forward: daily@02:30 (a time that does not exist that day)
    rotates once, at 02:30 read with the offset before the change (03:30 summer time);
    hourly skips the missing hour."""
    winter, summer = offsets
    steps = [f"{day}T01:50:00{winter}", f"{day}T03:10:00{summer}",
             f"{day}T03:40:00{summer}", f"{day}T23:00:00{summer}"]  # fmt: skip
    daily = local_files(tmp_path / "daily", zone, "daily@02:30", steps)
    hourly = local_files(tmp_path / "hourly", zone, "hourly", steps)
    assert [steps[:2], steps[2:]] == daily
    assert [[steps[0]], steps[1:3], [steps[3]]] == hourly
