"""Following a log across rotations: every record exactly once, however fast it rotates."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kakashi.cli.follow import Follower
from kakashi.writers import RotatingFileWriter, read_lines


def record(seq: int, worker: int = 0) -> bytes:
    """One JSON line carrying a sequence number."""
    return json.dumps({"message": "tick", "worker": worker, "seq": seq}).encode()


def sequence(lines: list[bytes]) -> list[int]:
    """The sequence numbers of *lines*, in order."""
    return [json.loads(line)["seq"] for line in lines]


class Clock:
    """A settable clock for time-based rotation."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("naming", ["numbered", "timestamped"])
@pytest.mark.parametrize(
    ("name", "compression"),
    [("app.log", "zstd"), ("app.log", "gzip"), ("app.log", None), ("app.log.zst", None)],
)
def test_many_rotations_between_two_polls(
    tmp_path: Path, name: str, compression: str | None, naming: str
) -> None:
    """Dozens of rotations between two looks (compression finished, running or not
    started): every record is read once, in order, and nothing is reported missing."""
    path = tmp_path / name
    writer = RotatingFileWriter(path, max_bytes=1_000, compression=compression, naming=naming)
    reports: list[str] = []
    follower = Follower(path, reports.append)
    seen = follower.poll()
    seq = 0
    for burst in range(12):
        for _ in range(200):  # about 20 rotations
            writer.write([record(seq)])
            seq += 1
        if burst % 3 == 0:
            assert writer.wait_for_compression(30)
        seen += follower.poll()
    writer.close()
    seen += follower.poll()
    follower.close()

    assert list(range(seq)) == sequence(seen)
    assert [] == reports
    assert writer.rotations > 100


def test_reading_starts_with_the_rotated_files(tmp_path: Path) -> None:
    """The first poll reads the whole log, oldest file first, then follows it."""
    path = tmp_path / "app.log"
    writer = RotatingFileWriter(path, max_bytes=500, compression="gzip")
    writer.write([record(n) for n in range(30)])
    assert writer.wait_for_compression(30)
    follower = Follower(path, [].append)
    first = follower.poll()
    writer.write([record(30)])
    writer.close()

    assert list(range(30)) == sequence(first)
    assert [30] == sequence(follower.poll())
    follower.close()


def test_retention_outrunning_the_follower_is_reported(tmp_path: Path) -> None:
    """When retention deleted files before they were read, the follower says so; what it
    shows is still in order and never repeated."""
    path = tmp_path / "app.log"
    writer = RotatingFileWriter(path, max_bytes=300, backup_count=2, compression=None)
    reports: list[str] = []
    follower = Follower(path, reports.append)
    seen = follower.poll()
    for seq in range(400):
        writer.write([record(seq)])
    assert writer.wait_for_compression(30)
    seen += follower.poll()
    writer.close()
    follower.close()
    shown = sequence(seen)

    assert sorted(set(shown)) == shown
    assert 399 == shown[-1]
    assert len(shown) < 400
    assert 1 == len(reports)
    assert "deleted before they could be read" in reports[0]


def test_empty_files_rotated_and_compressed(tmp_path: Path) -> None:
    """Empty files rotated (through do_rollover; the schedule starts an empty file afresh
    instead) and compressed carry no content to know them by; they neither stop the
    follower nor make it repeat."""
    clock = Clock(1_795_795_200.0)  # 2026-11-27T16:00:00Z
    path = tmp_path / "app.log"
    writer = RotatingFileWriter(path, when="hourly", clock=clock)
    follower = Follower(path, [].append)
    seen = follower.poll()
    for seq in range(8):
        clock.now += 3600
        writer.write([record(seq)])  # the schedule rotates the file (empty: it starts afresh)
        writer.do_rollover()  # the file holding the record
        writer.do_rollover()  # the empty file opened just now
        if seq % 3 == 0:
            assert writer.wait_for_compression(30)
        seen += follower.poll()
    writer.close()
    seen += follower.poll()
    follower.close()
    empty = [file for file in writer.rotated_files() if not list(read_lines(file))]

    assert list(range(8)) == sequence(seen)
    assert len(empty) >= 8


def test_late_record_in_a_rotated_file(tmp_path: Path) -> None:
    """A record appended to a file after it was rotated (by a process that had not noticed
    yet) is read once, and before what was read from newer files in the same look."""
    path = tmp_path / "app.log"
    path.write_bytes(record(0) + b"\n")
    follower = Follower(path, [].append)
    seen = follower.poll()
    os.rename(path, tmp_path / "app.log.1")
    path.write_bytes(record(2) + b"\n")
    seen += follower.poll()
    with (tmp_path / "app.log.1").open("ab") as late:
        late.write(record(1) + b"\n")
    with path.open("ab") as active:
        active.write(record(3) + b"\n")
    seen += follower.poll()
    follower.close()

    assert [0, 2, 1, 3] == sequence(seen)


def test_late_record_in_a_compressed_copy(tmp_path: Path) -> None:
    """A file that got a late record after it was read, then was compressed, is known by
    content: only the late record is read from the copy."""
    path = tmp_path / "app.log"
    writer = RotatingFileWriter(path, compression=None)
    writer.write([record(0)])
    follower = Follower(path, [].append)
    seen = follower.poll()
    for seq in range(1, 6):  # five more files: the first is no longer kept open
        writer.do_rollover()
        writer.write([record(seq)])
        seen += follower.poll()
    first = tmp_path / "app.log.5"
    with first.open("ab") as late:
        late.write(record(100) + b"\n")
    (tmp_path / "app.log.5.gz").write_bytes(gzip.compress(first.read_bytes()))
    first.unlink()
    writer.do_rollover()
    writer.write([record(6)])
    seen += follower.poll()
    writer.close()
    follower.close()

    assert [0, 1, 2, 3, 4, 5, 100, 6] == sequence(seen)


def test_copytruncate_starts_again(tmp_path: Path) -> None:
    """A file truncated in place is read again from its start."""
    path = tmp_path / "app.log"
    path.write_bytes(record(0) + b"\n" + record(1) + b"\n")
    follower = Follower(path, [].append)
    seen = follower.poll()
    path.write_bytes(record(2) + b"\n")  # shorter than what was read: truncated
    seen += follower.poll()
    follower.close()

    assert [0, 1, 2] == sequence(seen)


@pytest.mark.parametrize("name", ["app.log", "app.log.zst"])
def test_several_processes_rotating_while_followed(tmp_path: Path, name: str) -> None:
    """Three processes write and rotate one log while it is followed: every record of
    every process once."""
    path = tmp_path / name
    script = textwrap.dedent(
        f"""
        import json, sys
        from kakashi.writers import RotatingFileWriter
        writer = RotatingFileWriter({str(path)!r}, max_bytes=2_000, compression=None)
        worker = int(sys.argv[1])
        for seq in range(1500):
            writer.write([json.dumps({{"worker": worker, "seq": seq}}).encode()])
        writer.close()
        """
    )
    follower = Follower(path, [].append)
    workers = [subprocess.Popen([sys.executable, "-c", script, str(n)]) for n in range(3)]
    seen: list[bytes] = []
    while any(worker.poll() is None for worker in workers):
        seen += follower.poll()
        time.sleep(0.05)
    seen += follower.poll()
    follower.close()
    pairs = [(json.loads(line)["worker"], json.loads(line)["seq"]) for line in seen]

    assert [0, 0, 0] == [worker.returncode for worker in workers]
    assert sorted(pairs) == sorted(set(pairs))
    assert {(w, s) for w in range(3) for s in range(1500)} == set(pairs)
    for worker in range(3):  # each process's records in its order
        assert list(range(1500)) == [s for w, s in pairs if w == worker]


def test_a_missing_path_is_waited_for(tmp_path: Path) -> None:
    """Following a log that does not exist yet reads it once it appears."""
    path = tmp_path / "later.log"
    follower = Follower(path, [].append)
    assert [] == follower.poll()
    writer = RotatingFileWriter(path, max_bytes=200, compression="zstd")
    writer.write([record(n) for n in range(10)])
    writer.close()

    assert list(range(10)) == sequence(follower.poll())
    follower.close()


def test_what_it_reads_matches_the_files(tmp_path: Path) -> None:
    """After following, the records shown are the records in the log's files."""
    path = tmp_path / "app.log"
    writer = RotatingFileWriter(path, max_bytes=700, compression="zstd")
    follower = Follower(path, [].append)
    seen = follower.poll()
    for seq in range(300):
        writer.write([record(seq)])
        if seq % 50 == 0:
            seen += follower.poll()
    writer.close()
    seen += follower.poll()
    follower.close()
    on_disk = [
        line for file in [*reversed(writer.rotated_files()), path] for line in read_lines(file)
    ]

    assert on_disk == seen
