"""The synchronous path into a file: one lock-free ``O_APPEND`` write per record.

A synchronous pipeline hands each record to ``FileWriter.write_record``: one ``write``
system call, no thread lock, no ``flock``, where the platform makes appends atomic. The
logrotate and torn-tail checks run at most once per ``reopen_check_interval`` (under the
locks); a short write is completed or cut off under the ``flock`` and counted. Real
files, threads and processes throughout.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from kakashi import USING_SPEEDUPS, _errors
from kakashi._speedups import gil_held_writes, write_holding_gil, write_releasing_gil
from kakashi.core.pipeline import Pipeline, PipelineConfig
from kakashi.writers import FileWriter, RotatingFileWriter, ZstdFileWriter, file_writer, read_lines
from kakashi.writers import file as file_module
from kakashi.writers.zstd import zstd_file_writer
from tests.conftest import patch_os_write

pytestmark = pytest.mark.skipif(
    not file_module.ATOMIC_APPEND, reason="the lock-free path needs atomic appends"
)


class FakeClock:
    """A monotonic clock the test moves by hand (replaces the writer's)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The clock of ``reopen_check_interval``, under the test's control."""
    fake = FakeClock()
    monkeypatch.setattr(file_module, "_monotonic", fake)
    return fake


patch_write = patch_os_write


# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1, -0.5, float("nan"), float("inf"), True, "1", None])
@pytest.mark.parametrize("make", [FileWriter, file_writer, ZstdFileWriter, zstd_file_writer])
def test_bad_reopen_check_interval_is_rejected_at_configuration(
    tmp_path: Path, make: Any, bad: Any
) -> None:
    """A negative, infinite, NaN or non-number interval fails when the writer is made,
    with a message naming the parameter and the value."""
    with pytest.raises(ValueError, match=r"reopen_check_interval must be a number of seconds"):
        make(tmp_path / "app.log", reopen_check_interval=bad)
    assert not (tmp_path / "app.log").exists()


def test_reopen_check_interval_is_kept_as_seconds(tmp_path: Path) -> None:
    """An int is taken as seconds; 0 is allowed; the default is one second."""
    assert 0.0 == FileWriter(tmp_path / "a.log", reopen_check_interval=0).reopen_check_interval
    assert 2.0 == FileWriter(tmp_path / "b.log", reopen_check_interval=2).reopen_check_interval
    assert 1.0 == FileWriter(tmp_path / "c.log").reopen_check_interval


# -- the logrotate window -------------------------------------------------------------------


def test_records_go_to_the_moved_file_until_the_next_check(
    tmp_path: Path, clock: FakeClock
) -> None:
    """logrotate's ``create`` mode moves the file: records written before the next check
    land in the moved file, the first record after the interval reopens the path."""
    path = tmp_path / "app.log"
    writer = FileWriter(path, reopen_check_interval=5)
    writer.write_record(b"1")  # checks (a new file) and starts the interval
    os.rename(path, tmp_path / "app.log.1")
    clock.now += 4.9
    writer.write_record(b"2")  # within the interval: the open (moved) file
    clock.now += 0.1
    writer.write_record(b"3")  # the interval is over: the path is reopened
    writer.write_record(b"4")
    writer.close()

    assert b"1\n2\n" == (tmp_path / "app.log.1").read_bytes()
    assert b"3\n4\n" == path.read_bytes()


def test_zero_interval_checks_before_every_record(tmp_path: Path, clock: FakeClock) -> None:
    """``reopen_check_interval=0``: the first record after a move is in the new file,
    and a deleted file is made again, with the clock standing still."""
    path = tmp_path / "app.log"
    writer = FileWriter(path, reopen_check_interval=0)
    writer.write_record(b"1")
    os.rename(path, tmp_path / "app.log.1")
    writer.write_record(b"2")
    path.unlink()
    writer.write_record(b"3")
    writer.close()

    assert b"1\n" == (tmp_path / "app.log.1").read_bytes()
    assert b"3\n" == path.read_bytes()


def test_batches_still_check_the_path_every_time(tmp_path: Path, clock: FakeClock) -> None:
    """``write`` (a batch: the async backend's) checks the path before every batch,
    whatever the interval."""
    path = tmp_path / "app.log"
    writer = FileWriter(path, reopen_check_interval=3600)
    writer.write([b"1"])
    os.rename(path, tmp_path / "app.log.1")
    writer.write([b"2"])
    writer.close()

    assert b"1\n" == (tmp_path / "app.log.1").read_bytes()
    assert b"2\n" == path.read_bytes()


def test_close_then_record_reopens(tmp_path: Path, clock: FakeClock) -> None:
    """A record after ``close`` reopens the file at once, whatever the interval."""
    path = tmp_path / "app.log"
    writer = FileWriter(path, reopen_check_interval=3600)
    writer.write_record(b"1")
    writer.close()
    os.rename(path, tmp_path / "app.log.1")
    writer.write_record(b"2")
    writer.close()

    assert b"2\n" == path.read_bytes()


# -- no lock on the way ---------------------------------------------------------------------------


def test_a_record_does_not_wait_for_the_flock(tmp_path: Path, clock: FakeClock) -> None:
    """Between checks a record takes no ``flock``: another process holding it does not
    delay it, while a batch (``write``) waits for the lock and times out."""
    path = tmp_path / "app.log"
    writer = FileWriter(path, lock_timeout=0.2)
    writer.write_record(b"1")  # the check, made now: the lock is free
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(path)!r}, os.O_RDWR)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert "locked\n" == holder.stdout.readline()  # type: ignore[union-attr]
        writer.write_record(b"2")
        with pytest.raises(TimeoutError):
            writer.write([b"batch"])
    finally:
        holder.communicate("", timeout=30)
    writer.close()

    assert b"1\n2\n" == path.read_bytes()


def test_the_synchronous_pipeline_uses_write_record(tmp_path: Path, clock: FakeClock) -> None:
    """``Pipeline.emit`` hands a file writer each record through ``write_record``: with
    the lock held by another open description of the file, records still land."""
    path = tmp_path / "app.log"
    writer = file_writer(path, lock_timeout=0.2)
    pipeline = Pipeline(PipelineConfig(writers=(writer,)))
    log = pipeline.get_logger("sync")
    log.info("first")  # the check
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        for n in range(3):
            log.info("held", n=n)
    finally:
        os.close(fd)
    pipeline.close()

    assert ["first", "held", "held", "held"] == [
        json.loads(line)["message"] for line in path.read_bytes().splitlines()
    ]
    assert {"emitted": 4, "written": 4, "filtered": 0, "errors": 0} == pipeline.stats()


def test_rotating_writer_records_take_the_lock(tmp_path: Path) -> None:
    """A rotating writer's records go through ``write``: rotation sees each one."""
    path = tmp_path / "app.log"
    writer = RotatingFileWriter(path, max_bytes=4, compression=None)
    for n in range(3):
        writer.write_record(b"r%d" % n)
    writer.close()

    assert b"r2\n" == path.read_bytes()
    assert [b"r1\n", b"r0\n"] == [p.read_bytes() for p in writer.rotated_files()]


def test_zstd_record_is_one_frame(tmp_path: Path) -> None:
    """A zstd writer's record is one complete frame, appended without a lock."""
    path = tmp_path / "app.log.zst"
    writer = ZstdFileWriter(path)
    for n in range(3):
        writer.write_record(b"z%d" % n)
    writer.close()

    assert [b"z0", b"z1", b"z2"] == list(read_lines(path))


# -- torn tails ---------------------------------------------------------------------------------


def test_a_writer_alone_cuts_a_torn_tail_before_its_first_record(tmp_path: Path) -> None:
    """A process died in the middle of a record; the writer that opens the file next,
    with nobody else appending, cuts the torn part off before its first record."""
    path = tmp_path / "app.log"
    path.write_bytes(b'{"n": 1}\n{"n": 2, "message": "cut sh')
    writer = FileWriter(path)
    writer.write_record(b'{"n": 3}')
    writer.close()

    assert b'{"n": 1}\n{"n": 3}\n' == path.read_bytes()


def test_a_zstd_writer_alone_cuts_a_torn_frame(tmp_path: Path) -> None:
    """The same for a zstd file: ``zstd -dc`` reads it whole afterwards."""
    import zstandard

    path = tmp_path / "app.log.zst"
    frame = zstandard.ZstdCompressor(write_checksum=True).compress(b"a\n" * 50)
    path.write_bytes(frame + frame[:-7])
    writer = ZstdFileWriter(path)
    writer.write_record(b"b")
    writer.close()

    with path.open("rb") as stream:
        reader = zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True)
        assert [b"a"] * 50 + [b"b"] == reader.read().splitlines()


def test_a_torn_tail_is_left_while_others_append_without_the_lock(
    tmp_path: Path, clock: FakeClock, capfd: Any
) -> None:
    """Another writer appends records without the lock: what looks torn may be its
    record on the way in, so a writer opening the file leaves it; the next record lands
    right after it (which shows it torn: reported), on its line, which readers skip."""
    path = tmp_path / "app.log"
    present = FileWriter(path)
    present.write_record(b"1")
    with path.open("ab") as stream:
        stream.write(b'{"torn')
    writer = FileWriter(path)
    writer.write_record(b"2")
    present.write_record(b"3")
    writer.close()
    present.close()

    assert b'1\n{"torn2\n3\n' == path.read_bytes()
    err = capfd.readouterr().err
    assert "a record torn by a crash (left before the next record: other" in err


def test_a_tail_torn_between_checks_glues_one_line(tmp_path: Path, clock: FakeClock) -> None:
    """A writer already appending does not look at the tail again (others may be
    appending): a record that lands after a torn part shares its line, which readers
    skip; the records after it are whole."""
    path = tmp_path / "app.log"
    writer = FileWriter(path, reopen_check_interval=1)
    writer.write_record(b"1")
    with path.open("ab") as stream:
        stream.write(b'{"torn')
    writer.write_record(b"2")
    clock.now += 1
    writer.write_record(b"3")
    writer.close()

    assert b'1\n{"torn2\n3\n' == path.read_bytes()


def test_a_batch_writer_leaves_the_tail_while_others_append_without_the_lock(
    tmp_path: Path,
) -> None:
    """``write`` (a batch) cuts a torn tail only when no writer of the file appends
    without the lock; with one present, it leaves it."""
    path = tmp_path / "app.log"
    present = FileWriter(path)
    present.write_record(b"1")
    with path.open("ab") as stream:
        stream.write(b"torn")
    batches = FileWriter(path)
    batches.write([b"2"])
    present.close()  # the last lock-free writer leaves: the next batch may cut
    with path.open("ab") as stream:
        stream.write(b"torn")
    batches.write([b"3"])
    batches.close()

    assert b"1\ntorn2\n3\n" == path.read_bytes()


def test_close_leaves_the_file_to_others(tmp_path: Path) -> None:
    """A writer that wrote records lock-free and closed is no longer counted as
    present: the next writer alone cuts a torn tail again."""
    path = tmp_path / "app.log"
    first = FileWriter(path)
    first.write_record(b"1")
    first.close()
    with path.open("ab") as stream:
        stream.write(b"torn")
    second = FileWriter(path)
    second.write_record(b"2")
    second.close()

    assert b"1\n2\n" == path.read_bytes()


# -- short writes ---------------------------------------------------------------------------------


class ShortWrites:
    """``os.write`` that gives the writer's descriptor only *taken* bytes the first time,
    then runs *meanwhile*; later calls fail with *error* or pass."""

    def __init__(
        self, writer: FileWriter, taken: int, error: int | None = None, meanwhile: Any = None
    ) -> None:
        self.writer, self.taken, self.error, self.meanwhile = writer, taken, error, meanwhile
        self.real = os.write
        self.calls = 0

    def __call__(self, fd: int, data: Any) -> int:
        if fd != self.writer._fd:
            return self.real(fd, data)
        self.calls += 1
        if self.calls == 1:
            written = self.real(fd, bytes(data[: self.taken]))
            if self.meanwhile is not None:
                self.meanwhile()
            return written
        if self.error is not None:
            raise OSError(self.error, os.strerror(self.error))
        return self.real(fd, data)


def test_short_write_leaves_the_part_on_a_line_and_writes_the_record_again(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, capfd: Any
) -> None:
    """The kernel took part of a record: the part becomes a line of its own (readers
    skip it) and the record is written whole after it; counted and reported once."""
    path = tmp_path / "app.log"
    writer = FileWriter(path)
    writer.write_record(b"before")
    patch_write(monkeypatch, ShortWrites(writer, taken=4))
    writer.write_record(b"the record")
    writer.write_record(b"after")
    monkeypatch.undo()
    writer.close()

    assert b"before\nthe \nthe record\nafter\n" == path.read_bytes()
    assert 1 == writer.short_writes
    assert "a short write (4 of 11 bytes;" in capfd.readouterr().err


def test_short_write_on_a_full_disk(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writing the record again fails too (the disk is still full): the pipeline counts
    an error, and the next record first ends the part's line."""
    path = tmp_path / "app.log"
    writer = FileWriter(path)
    pipeline = Pipeline(PipelineConfig(writers=(writer,), formatter=lambda r: r.message))
    log = pipeline.get_logger("sync")
    log.info("before")
    patch_write(monkeypatch, ShortWrites(writer, taken=3, error=errno.ENOSPC))
    log.info("lost to the full disk")
    monkeypatch.undo()
    log.info("after")
    pipeline.close()

    assert b"before\nlos\nafter\n" == path.read_bytes()
    assert 1 == writer.short_writes
    assert {"emitted": 3, "written": 2, "filtered": 0, "errors": 1} == pipeline.stats()


def test_short_write_with_a_record_appended_after_it(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer appended after the part first: the part and its record share a
    line (readers skip it), the newline makes an empty line, the record follows whole."""
    path = tmp_path / "app.log"
    writer, other = FileWriter(path), FileWriter(path)
    writer.write_record(b"before")
    shorts = ShortWrites(writer, taken=4, meanwhile=lambda: other.write_record(b"other"))
    patch_write(monkeypatch, shorts)
    writer.write_record(b"the record")
    monkeypatch.undo()
    writer.close()
    other.close()

    assert b"before\nthe other\n\nthe record\n" == path.read_bytes()
    assert 1 == writer.short_writes
    assert any("a short write" in kind for kind in _errors.error_counts())


# -- many threads, several processes ------------------------------------------------------


CHILD = textwrap.dedent(
    """
    import sys, threading
    from kakashi.core.pipeline import Pipeline, PipelineConfig, file_writer

    path, tag, threads, records = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    pipeline = Pipeline(PipelineConfig(writers=(file_writer(path, reopen_check_interval=0.001),)))
    log = pipeline.get_logger("many")
    start = threading.Barrier(threads)

    def produce(thread):
        start.wait()
        for n in range(records):
            log.info("record", tag=tag, worker=thread, n=n, pad="x" * (n % 97) * 50)

    workers = [threading.Thread(target=produce, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    pipeline.close()
    assert pipeline.stats()["written"] == threads * records, pipeline.stats()
    """
)


def test_many_threads_in_several_processes_write_every_record_once(tmp_path: Path) -> None:
    """4 processes of 8 threads each log through synchronous pipelines into one file,
    some records over a page long (so a write spans pages): every line is one whole
    record, and each record is there exactly once."""
    path = tmp_path / "shared.log"
    processes, threads, records = 4, 8, 300
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), f"p{p}", str(threads), str(records)]
        )
        for p in range(processes)
    ]
    codes = [child.wait(timeout=240) for child in children]
    assert [0] * processes == codes

    seen = [
        (event["tag"], event["worker"], event["n"], len(event["pad"]))
        for event in map(json.loads, path.read_bytes().splitlines())
    ]
    expected = {
        (f"p{p}", t, n, (n % 97) * 50)
        for p in range(processes)
        for t in range(threads)
        for n in range(records)
    }
    assert processes * threads * records == len(seen)
    assert expected == set(seen)
    assert path.read_bytes().endswith(b"\n")


def test_threads_and_checks_in_one_process_lose_nothing(tmp_path: Path) -> None:
    """Threads writing lock-free while others check (interval 0) and the file is moved
    away under them: every record is in one of the two files, once."""
    path = tmp_path / "app.log"
    lock_free = FileWriter(path, reopen_check_interval=3600)
    checking = FileWriter(path, reopen_check_interval=0)
    moved = threading.Event()

    def produce(writer: FileWriter, tag: bytes) -> None:
        for n in range(2000):
            writer.write_record(b"%s-%d" % (tag, n))
            if n == 1000 and tag == b"c0":
                os.rename(path, tmp_path / "app.log.1")
                moved.set()

    workers = [
        threading.Thread(target=produce, args=(writer, b"%s%d" % (tag, t)))
        for t in range(3)
        for writer, tag in ((lock_free, b"f"), (checking, b"c"))
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    lock_free.close()
    checking.close()

    assert moved.is_set()
    lines = (tmp_path / "app.log.1").read_bytes().splitlines() + path.read_bytes().splitlines()
    expected = {
        b"%s%d-%d" % (tag, t, n) for tag in (b"f", b"c") for t in range(3) for n in range(2000)
    }
    assert len(expected) == len(lines)
    assert expected == set(lines)


def test_a_failed_batch_keeps_its_whole_records_while_others_append_without_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch the disk cuts short is not truncated while a lock-free writer is present
    (its record could be cut with it): the whole records that landed stay, and
    ``PartialWriteError`` says how many, so only the rest is retried."""
    from kakashi.writers import PartialWriteError

    path = tmp_path / "app.log"
    present, batches = FileWriter(path), FileWriter(path)
    present.write_record(b"lock-free")
    real_write = os.write

    def two_and_a_half_records(fd: int, data: Any) -> int:
        if fd != batches._fd:
            return real_write(fd, data)
        if bytes(data).startswith(b"a\n"):
            return real_write(fd, b"a\nb\nc")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    patch_write(monkeypatch, two_and_a_half_records)
    with pytest.raises(PartialWriteError) as caught:
        batches.write([b"a", b"b", b"cde"])
    monkeypatch.undo()
    present.close()
    batches.close()

    assert 2 == caught.value.written
    assert b"lock-free\na\nb\nc" == path.read_bytes()


def test_a_record_logged_inside_a_checked_write_follows_it(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record written on the same thread while a record's checked write is under way
    (a signal handler that logs) does not wait for the thread lock it holds: it is set
    aside and written right after, in order."""
    path = tmp_path / "app.log"
    writer = FileWriter(path)
    real_write = os.write
    handled = []

    def handler_logs_first(fd: int, data: Any) -> int:
        if fd == writer._fd and not handled:
            handled.append(True)
            writer.write_record(b"from the handler")
        return real_write(fd, data)

    patch_write(monkeypatch, handler_logs_first)
    writer.write_record(b"outer")  # the first record: the checked way
    monkeypatch.undo()
    writer.close()

    assert b"outer\nfrom the handler\n" == path.read_bytes()


def test_a_zstd_batch_cut_short_claims_no_whole_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A zstd batch the disk cuts short while a lock-free writer is present is a torn
    frame: no record of it is whole, so the whole batch is retried (a plain ``OSError``,
    not ``PartialWriteError``), whatever bytes the compressed part holds."""
    from kakashi.writers import PartialWriteError

    path = tmp_path / "app.log.zst"
    present, batches = ZstdFileWriter(path), ZstdFileWriter(path)
    present.write_record(b"lock-free")
    real_write = os.write

    def most_of_a_frame(fd: int, data: Any) -> int:
        if fd != batches._fd:
            return real_write(fd, data)
        if len(data) > 8:
            return real_write(fd, bytes(data[:-8]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    batch = [b"\n\n\n%d" % n for n in range(200)]
    assert b"\n" in batches.encode(batch)[:-8]  # a newline byte that counts nothing
    patch_write(monkeypatch, most_of_a_frame)
    with pytest.raises(OSError) as caught:
        batches.write(batch)
    monkeypatch.undo()
    present.close()
    batches.close()

    assert not isinstance(caught.value, PartialWriteError)
    with pytest.warns(RuntimeWarning):
        assert [b"lock-free"] == list(read_lines(path))


def test_without_ofd_locks_records_take_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: Any
) -> None:
    """A file system without open-file-description locks (``ENOLCK``): nobody could tell
    that a writer appends without the flock, so records take the lock, as batches do
    (reported once), and a torn tail is still cut off."""

    class NoOfdLocks:
        """The fcntl module, but OFD lock requests fail as on such a file system."""

        def __getattr__(self, name: str) -> Any:
            return getattr(fcntl, name)

        def fcntl(self, fd: int, command: int, *args: Any) -> Any:
            if command == fcntl.F_OFD_SETLK:
                raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
            return fcntl.fcntl(fd, command, *args)

    monkeypatch.setattr(file_module, "_fcntl", NoOfdLocks())
    path = tmp_path / "app.log"
    path.write_bytes(b"1\ntorn")
    writer = FileWriter(path, lock_timeout=0.2)
    # Through a pipeline, which takes the writer's way in for one record when it is
    # made: the switch to the lock must reach it (not only the writer's attribute).
    pipeline = Pipeline(PipelineConfig(writers=(writer,), formatter=lambda r: r.message))
    log = pipeline.get_logger("sync")
    log.info("2")
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(TimeoutError):  # the record waits for the flock now
            writer.write_record(b"3")
        log.info("3b")  # waits too, times out: counted and reported, not written
    finally:
        os.close(fd)
    log.info("4")
    writer.close()

    assert b"1\n2\n4\n" == path.read_bytes()
    assert 1 == pipeline.stats()["errors"]
    err = capfd.readouterr().err
    assert "records take the lock (no OFD locks here) failed" in err
    assert "TimeoutError" in err


# -- the interpreter lock during a record's write -----------------------------------------------


def steps_while_writing(writer: FileWriter, records: int = 2000, until_a_step: bool = False) -> int:
    """How many steps another thread took while this one wrote *records* records (with
    *until_a_step*, stopping at the first record during which it took one).

    The other thread takes a step each time it gets the interpreter lock, and gives it
    back at once (``time.sleep(0)``). The switch interval is 100 s meanwhile, so it gets
    the lock only when this thread releases it of its own accord, and then only if the
    system runs it before this thread's write ends and takes the lock back: on a loaded
    machine that can take many releases.
    """
    steps = 0
    stop = False
    started = threading.Event()

    def other() -> None:
        nonlocal steps
        started.set()
        while not stop:
            steps += 1
            time.sleep(0)

    writer.write_record(b"first")  # the checked way, which may release the lock
    interval = sys.getswitchinterval()
    thread = threading.Thread(target=other)
    thread.start()
    started.wait()
    sys.setswitchinterval(100)
    try:
        time.sleep(0.01)  # the other thread is now waiting for the lock
        before = steps
        for index in range(records):
            writer.write_record(b"record %d" % index)
            if until_a_step and steps > before:
                break
        taken = steps - before
    finally:
        sys.setswitchinterval(interval)
        stop = True
        thread.join()
    return taken


def local_filesystem(path: Path) -> bool:
    """Whether the tests' own folder is on a filesystem the compiled build calls local."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return gil_held_writes(fd)
    finally:
        os.close(fd)


@pytest.mark.skipif(not USING_SPEEDUPS, reason="the compiled build keeps the lock")
def test_a_record_on_a_local_filesystem_keeps_the_lock(tmp_path: Path) -> None:
    """On a local filesystem a record's write keeps the interpreter lock: another thread
    that wants it takes no step while 2,000 records are written; with hold_gil=False it
    takes steps (at some of the writes: within 200,000 of them even on a loaded machine,
    where the other thread may not be run in the moment a write leaves the lock free)."""
    path = tmp_path / "app.log"
    path.touch()
    if not local_filesystem(path):
        pytest.skip("the tests' folder is not on a filesystem listed as local")
    held = FileWriter(path, reopen_check_interval=3600)
    released = FileWriter(tmp_path / "released.log", reopen_check_interval=3600, hold_gil=False)
    assert held.holds_gil and not released.holds_gil

    assert 0 == steps_while_writing(held)
    assert steps_while_writing(released, 200_000, until_a_step=True) > 0  # it sees a release
    held.close()
    released.close()
    assert 2001 == len(path.read_bytes().splitlines())


def test_hold_gil_is_checked_and_passed_on(tmp_path: Path) -> None:
    """hold_gil is None, True or False (anything else fails at configuration); the file
    and zstd writers and their factories take it; the pure-Python build never holds."""
    for bad in (1, "yes", 0.0):
        with pytest.raises(ValueError, match="hold_gil must be None, True or False"):
            FileWriter(tmp_path / "bad.log", hold_gil=bad)
    for make in (FileWriter, file_writer, ZstdFileWriter, zstd_file_writer):
        off = make(tmp_path / f"{make.__name__}-off.log", hold_gil=False)
        on = make(tmp_path / f"{make.__name__}-on.log", hold_gil=True)
        assert (off.hold_gil, off.holds_gil) == (False, False)
        assert (on.hold_gil, on.holds_gil) == (True, USING_SPEEDUPS)
        off.close()
        on.close()
    rotating = RotatingFileWriter(tmp_path / "rotating.log", max_bytes=1000)
    assert not rotating.holds_gil  # its records take the lock: see RotatingFileWriter
    rotating.close()


def test_which_descriptors_keep_the_lock(tmp_path: Path) -> None:
    """Only regular files, and only on a filesystem of the machine's own (procfs is not
    one): a pipe, a device or /proc never; any regular file with any_filesystem."""
    read, write = os.pipe()
    null = os.open(os.devnull, os.O_WRONLY)
    proc = os.open("/proc/self/status", os.O_RDONLY)
    try:
        for fd in (read, write, null):
            assert not gil_held_writes(fd) and not gil_held_writes(fd, True)
        assert not gil_held_writes(proc)
        assert gil_held_writes(proc, True) is USING_SPEEDUPS
    finally:
        for fd in (read, write, null, proc):
            os.close(fd)


@pytest.mark.parametrize("write_data", [write_holding_gil, write_releasing_gil])
def test_the_compiled_writes_write_like_os_write(tmp_path: Path, write_data: Any) -> None:
    """Small and large (over 64 KiB: released by both) writes land whole; anything but
    bytes is refused by both twins; a failure is the OSError that os.write raises (a
    descriptor open for reading only)."""
    path = tmp_path / "raw"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    large = bytes(range(256)) * 1024  # 256 KiB
    try:
        assert 6 == write_data(fd, b"small\n")
        assert len(large) == write_data(fd, large)
    finally:
        os.close(fd)
    assert b"small\n" + large == path.read_bytes()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        for other in (bytearray(b"x"), memoryview(b"x"), type("Sub", (bytes,), {})(b"x")):
            with pytest.raises(TypeError, match="expected bytes"):
                write_data(fd, other)  # both twins: exactly bytes, nothing written
    finally:
        os.close(fd)
    assert b"small\n" + large == path.read_bytes()
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(OSError) as failure:
            write_data(fd, b"x")
        assert errno.EBADF == failure.value.errno
    finally:
        os.close(fd)


@pytest.mark.parametrize("write_data", [write_holding_gil, write_releasing_gil])
def test_a_signal_during_a_compiled_write_runs_its_handler(tmp_path: Path, write_data: Any) -> None:
    """A write that blocks (a full pipe), the lock held or released, is interrupted by a
    signal: the handler runs; when it returns, the write is made again (the handler
    emptied the pipe), and when it raises, the exception comes out of the write, as with
    os.write."""
    read, write = os.pipe()
    os.set_blocking(write, False)
    try:
        while True:
            os.write(write, b"x" * 65536)
    except BlockingIOError:
        pass
    os.set_blocking(write, True)

    def drain(signum: int, frame: Any) -> None:
        os.set_blocking(read, False)
        try:
            while os.read(read, 65536):
                pass
        except BlockingIOError:
            pass

    def refuse(signum: int, frame: Any) -> None:
        raise RuntimeError("interrupted")

    previous = signal.signal(signal.SIGALRM, drain)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        assert 5 == write_data(write, b"after")
        try:
            while True:  # full again, then interrupted for good
                os.set_blocking(write, False)
                os.write(write, b"x" * 65536)
        except BlockingIOError:
            os.set_blocking(write, True)
        signal.signal(signal.SIGALRM, refuse)
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(RuntimeError, match="interrupted"):
            write_data(write, b"never")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        os.close(read)
        os.close(write)
