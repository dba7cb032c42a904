"""Timestamped names in local time: a stamp with a time of day carries its UTC offset, and a
log's rotated files are listed, kept, pruned and read in the order of the moments their
stamps name, also on the nights the clocks change. Each test sets ``TZ`` in this process."""

from __future__ import annotations

import datetime as dt
import io
import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kakashi.cli.view import Query, view
from kakashi.writers import RotatingFileWriter
from kakashi.writers.naming import log_sets, parse, rotated_files, stamp_instant
from tests.conftest import file_lines as contents


@pytest.fixture(name="zone")
def _zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """``zone(name)`` makes *name* the local time of this process until the test ends."""

    def use(name: str) -> None:
        if not Path("/usr/share/zoneinfo", name).exists():
            pytest.fail(f"the zone database lacks {name} (ci/test.sh installs tzdata)")
        monkeypatch.setenv("TZ", name)
        time.tzset()

    yield use
    monkeypatch.undo()
    time.tzset()


def at(text: str) -> float:
    """Seconds since the epoch of an ISO 8601 time with an offset."""
    return dt.datetime.fromisoformat(text).timestamp()


def stamped(tmp_path: Path, stamps: list[str]) -> None:
    """Create an empty rotated file of ``app.log`` for each stamp (and the active file)."""
    (tmp_path / "app.log").write_bytes(b"")
    for stamp in stamps:
        (tmp_path / f"app.{stamp}.log").write_bytes(b"")


@pytest.mark.parametrize(
    ("name", "stamp", "counter", "compression"),
    [
        ("app.2026-11-01T01-05-00-0500.log", "2026-11-01T01-05-00-0500", 0, ""),
        ("app.2026-11-01T01-0400.2.log.zst", "2026-11-01T01-0400", 2, ".zst"),
        ("app.2026-11-27T16-59-00+0530.log.gz", "2026-11-27T16-59-00+0530", 0, ".gz"),
        ("app.2026-11-27T16-59-00+0000.access.log", "2026-11-27T16-59-00+0000", 0, ""),
    ],
)
def test_stamps_with_an_offset_parse(name: str, stamp: str, counter: int, compression: str) -> None:
    """A stamp's offset is part of the stamp; counter, suffix and compression follow it."""
    parsed = parse(name)

    assert parsed is not None
    assert (stamp, counter, compression) == (parsed.stamp, parsed.counter, parsed.compression)
    assert ("app.access.log" if "access" in name else "app.log") == parsed.log


def test_a_stamp_with_an_offset_names_one_moment(zone: Callable[[str], None]) -> None:
    """Whatever the zone that reads it; a stamp that is no date sorts first and never raises."""
    zone("Asia/Tokyo")

    assert at("2026-11-01T01:05:00-05:00") == stamp_instant("2026-11-01T01-05-00-0500")
    assert at("2026-11-27T16:59:00+05:30") == stamp_instant("2026-11-27T16-59-00+0530")
    assert at("2026-11-01T01:00:00-04:00") == stamp_instant("2026-11-01T01-0400")
    assert -math.inf == stamp_instant("2026-13-45")
    assert -math.inf == stamp_instant("0000-01-01T00")


@pytest.mark.parametrize(
    ("name", "days"),
    [
        ("America/New_York", ("2026-03-08", "2026-11-01")),
        ("Europe/Berlin", ("2026-03-29", "2026-10-25")),
        ("Australia/Lord_Howe", ("2026-04-05", "2026-10-04")),  # the clocks move half an hour
        ("UTC", ("2026-03-08", "2026-11-01")),
    ],
)
def test_stamps_without_an_offset_keep_the_order_of_their_letters(
    zone: Callable[[str], None], name: str, days: tuple[str, str]
) -> None:
    """Read in local time, every minute of the days the clocks change (the skipped hour, the
    repeated one) names a moment no earlier than the minute before: names without an offset
    (UTC ones, or local ones made before offsets were written) keep their order."""
    zone(name)
    for day in days:
        start = dt.datetime.fromisoformat(day)
        moments = [
            stamp_instant((start + dt.timedelta(minutes=m)).strftime("%Y-%m-%dT%H-%M-%S"))
            for m in range(24 * 60)
        ]
        assert [] == [m for m in range(1, len(moments)) if moments[m] < moments[m - 1]]


def test_names_without_an_offset_list_as_before(
    tmp_path: Path, zone: Callable[[str], None]
) -> None:
    """UTC names around New York's skipped and repeated hours, read in New York: listed in the
    order of their letters, days, hours and seconds mixed."""
    zone("America/New_York")
    stamps = [
        "2026-03-08", "2026-03-08T01-59-59", "2026-03-08T02", "2026-03-08T02-00-00",
        "2026-03-08T02-30-00", "2026-03-08T03-00-00", "2026-03-08T03-10-00",
        "2026-11-01T01-05-00", "2026-11-01T01-40-00", "2026-11-01T02-00-00",
    ]  # fmt: skip
    stamped(tmp_path, stamps[::-1])

    assert [f"app.{stamp}.log" for stamp in stamps] == [
        path.name for path in rotated_files(tmp_path, "app.log")
    ]


def test_the_repeated_hour_lists_in_real_order(tmp_path: Path, zone: Callable[[str], None]) -> None:
    """01:05 of the second pass (EST) is later than 01:40 of the first (EDT): the listing of
    the writer and of ``kakashi view`` (log sets) say so, whatever zone reads them."""
    zone("Europe/Berlin")
    stamps = [
        "2026-11-01T00-50-00-0400",
        "2026-11-01T01-40-00-0400",
        "2026-11-01T01-05-00-0500",
        "2026-11-01T01-45-00-0500",
    ]
    stamped(tmp_path, stamps)
    expected = [tmp_path / f"app.{stamp}.log" for stamp in stamps]

    assert expected == rotated_files(tmp_path, "app.log")
    assert [*expected, tmp_path / "app.log"] == log_sets(tmp_path)[0].files


def test_a_local_writer_stamps_the_offset_on_the_hour_it_goes_through_twice(
    tmp_path: Path, zone: Callable[[str], None]
) -> None:
    """Hourly in New York across the night the clocks go back: the two 01:00 hours are two
    files with two names (no counter needed), each holding its own records; a daily local
    stamp needs no offset, and carries none."""
    zone("America/New_York")
    steps = [
        "2026-11-01T00:30:00-04:00",
        "2026-11-01T01:30:00-04:00",
        "2026-11-01T01:30:00-05:00",
        "2026-11-01T02:30:00-05:00",
        "2026-11-02T00:10:00-05:00",
    ]
    now = [at(steps[0])]
    writer = RotatingFileWriter(
        tmp_path / "app.log", when="hourly", utc=False, naming="timestamped",
        compression=None, clock=lambda: now[0],
    )  # fmt: skip
    for step in steps:
        now[0] = at(step)
        writer.write([step.encode()])
    writer.close()
    daily = RotatingFileWriter(
        tmp_path / "day.log", when="daily", utc=False, naming="timestamped",
        compression=None, clock=lambda: now[0],
    )  # fmt: skip
    daily.write([b"monday"])
    now[0] = at("2026-11-03T00:10:00-05:00")
    daily.write([b"tuesday"])
    daily.close()

    assert {
        "app.2026-11-01T00-0400.log": [steps[0]],
        "app.2026-11-01T01-0400.log": [steps[1]],
        "app.2026-11-01T01-0500.log": [steps[2]],
        "app.2026-11-01T02-0500.log": [steps[3]],
        "app.log": [steps[4]],
        "day.2026-11-02.log": ["monday"],
        "day.log": ["tuesday"],
    } == contents(tmp_path)
    assert [f"app.2026-11-01T{h}.log" for h in ("02-0500", "01-0500", "01-0400", "00-0400")] == [
        path.name for path in writer.rotated_files()
    ]


def test_files_named_before_offsets_are_pruned_first(
    tmp_path: Path, zone: Callable[[str], None]
) -> None:
    """An upgrade east of UTC (Berlin, +01:00): the local names made before offsets were
    written (``T09-00-00``, ``T10-00-00``) are older than the first ones made after
    (``T10-30-00+0100``, 09:30 UTC), so backup_count=3 deletes them and keeps the 3 new ones
    (read as UTC, ``T10-00-00`` would have looked newer, and a new file would have gone)."""
    zone("Europe/Berlin")
    for stamp in ("2026-11-27T09-00-00", "2026-11-27T10-00-00"):
        (tmp_path / f"app.{stamp}.log").write_text(f"old {stamp}\n")
    steps = ["10:30", "10:40", "10:50", "11:00"]
    now = [at(f"2026-11-27T{steps[0]}:00+01:00")]
    writer = RotatingFileWriter(
        tmp_path / "app.log", max_bytes=10, utc=False, naming="timestamped", backup_count=3,
        compression=None, clock=lambda: now[0],
    )  # fmt: skip
    for step in steps:
        now[0] = at(f"2026-11-27T{step}:00+01:00")
        writer.write([f"record {step}".encode()])
    writer.close()
    assert writer.wait_for_compression(30)

    assert {
        "app.2026-11-27T10-30-00+0100.log": ["record 10:30"],
        "app.2026-11-27T10-40-00+0100.log": ["record 10:40"],
        "app.2026-11-27T10-50-00+0100.log": ["record 10:50"],
        "app.log": ["record 11:00"],
    } == contents(tmp_path)


def test_view_reads_the_night_the_clocks_go_back_in_the_order_written(
    tmp_path: Path, zone: Callable[[str], None]
) -> None:
    """Rotation by size in local time through New York's repeated hour, then ``kakashi view``
    of the log: every record once, in the order logged (the second pass's files used to be
    read before the first's)."""
    zone("America/New_York")
    times = [f"2026-11-01T0{h}:{m:02d}:00-04:00" for h in (0, 1) for m in range(0, 60, 10)]
    times += [f"2026-11-01T0{h}:{m:02d}:00-05:00" for h in (1, 2) for m in range(5, 60, 10)]
    now = [at(times[0])]
    writer = RotatingFileWriter(
        tmp_path / "app.log", max_bytes=60, utc=False, naming="timestamped",
        compression=None, clock=lambda: now[0],
    )  # fmt: skip
    for moment in times:
        now[0] = at(moment)
        writer.write([json.dumps({"message": moment}).encode()])
    writer.close()
    out = io.StringIO()
    view([tmp_path / "app.log"], Query(), out, as_json=True, follow=False)

    assert len(writer.rotated_files()) >= 20  # 24 records, 2 a file or fewer
    assert times == [json.loads(line)["message"] for line in out.getvalue().splitlines()]
