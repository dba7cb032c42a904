"""The gate of ``format_batch``: a file writer's locked append made in the release of the
GIL that formats the batch, only when the file is as the writer left it.

The compiled twin checks the writer's conditions (the path names the file, the flock is
free, nobody waits for it, the file ends where the writer's last write did) and appends
under the flock; anything else leaves the batch, unwritten and unlocked, to the writer's
own way. The pure twin tries no write. Real files, real locks, a real file size limit in
a child process.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kakashi._turns import WAITING_BYTE
from kakashi.writers.file import (
    GATE_CLOSED,
    GATE_LOCKED,
    GATE_WRITTEN,
    FileWriter,
    PendingLines,
)
from tests.conftest import Implementation, script_report

TIME_NS = 1_795_798_641_123_456_789
BATCH = 40  # planned without the GIL (the compiled twin's NOGIL_RECORDS is 8)


def records(impl: Implementation, start: int, count: int = BATCH) -> list[Any]:
    return [
        impl.capture.Record(
            TIME_NS + i, 20, "app", "order filled", fields={"order_id": i, "side": "buy"}
        )
        for i in range(start, start + count)
    ]


def gate_of(path: Path, fd: int, end: int | None = None) -> tuple[bytes, int, int, int, int]:
    info = os.fstat(fd)
    size = info.st_size if end is None else end
    return (os.fsencode(path), info.st_dev, info.st_ino, size, WAITING_BYTE)


def flock_free(path: Path) -> bool:
    """Whether another open file description of *path* can take the exclusive flock."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def say_waiting(fd: int) -> None:
    """What a process waiting for the flock sets (kakashi._turns)."""
    request = struct.pack("@hhqqi4x", fcntl.F_RDLCK, os.SEEK_SET, WAITING_BYTE, 1, 0)
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, request)


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A file holding one line, open for appending."""
    path = tmp_path / "app.log"
    path.write_bytes(b"first\n")
    fd = os.open(path, os.O_RDWR | os.O_APPEND)
    try:
        yield path, fd
    finally:
        os.close(fd)


def test_the_gate_opens_on_a_file_as_it_was_left(
    impl: Implementation, log_file: tuple[Path, int]
) -> None:
    """Everything as the writer left it: the compiled twin appends the batch and
    releases the flock (gate 2); the pure twin writes nothing (gate 0)."""
    path, fd = log_file
    lines = impl.format.format_batch(records(impl, 0), fd=fd, gate=gate_of(path, fd))
    if impl.pure:
        assert (lines.gate, lines.written) == (0, 0)
        assert path.read_bytes() == b"first\n"
    else:
        assert (lines.gate, lines.written, lines.write_error) == (
            GATE_WRITTEN,
            len(lines.joined),
            0,
        )
        assert path.read_bytes() == b"first\n" + lines.joined
    assert flock_free(path)


def close_the_gate(how: str, path: Path, fd: int, hold: list[int]) -> int | None:
    """Change what the gate checks, as *how* says; the end to expect (None: the file's)."""
    if how == "renamed":  # logrotate's move
        os.rename(path, path.with_suffix(".1"))
    elif how == "replaced":  # a new file at the path
        os.rename(path, path.with_suffix(".1"))
        path.write_bytes(b"")
    elif how == "locked":  # another writer's batch under way
        other = os.open(path, os.O_RDONLY)
        hold.append(other)
        fcntl.flock(other, fcntl.LOCK_EX)
    elif how == "waited-for":  # another process waits for the flock
        other = os.open(path, os.O_RDONLY)
        hold.append(other)
        say_waiting(other)
    elif how == "appended":  # another writer appended since
        os.write(fd, b"theirs\n")
        return os.fstat(fd).st_size - 7
    elif how == "torn":  # a writer died in the middle of a record
        os.write(fd, b'{"torn')
        return os.fstat(fd).st_size - 6
    return None


@pytest.mark.parametrize("how", ["renamed", "replaced", "locked", "waited-for", "appended", "torn"])
def test_each_condition_keeps_the_gate_closed(
    compiled: Implementation, log_file: tuple[Path, int], how: str
) -> None:
    """A moved or replaced path, a held flock, a waiter, a file that grew since: the
    lines are formatted, nothing is written and no lock is left held (gate 1)."""
    path, fd = log_file
    gate = gate_of(path, fd)
    hold: list[int] = []
    try:
        end = close_the_gate(how, path, fd, hold)
        if end is not None:
            gate = gate_of(path, fd, end)  # the same descriptor: the file's own inode
        before = os.pread(fd, 1 << 20, 0)
        lines = compiled.format.format_batch(records(compiled, 0), fd=fd, gate=gate)
        assert (lines.gate, lines.written, lines.write_error) == (GATE_CLOSED, 0, 0)
        assert lines.joined.count(b"\n") == BATCH
        assert os.pread(fd, 1 << 20, 0) == before
    finally:
        for other in hold:
            os.close(other)
    assert flock_free(path.with_suffix(".1") if how in ("renamed", "replaced") else path)


def test_a_waiter_is_not_asked_about_when_waiting_is_minus_one(
    compiled: Implementation, log_file: tuple[Path, int]
) -> None:
    """*waiting* -1 (the writer lets nobody go first now: _turns' pause after giving up
    on a waiter): a waiter does not keep the gate closed."""
    path, fd = log_file
    other = os.open(path, os.O_RDONLY)
    try:
        say_waiting(other)
        gate = (*gate_of(path, fd)[:4], -1)
        lines = compiled.format.format_batch(records(compiled, 0), fd=fd, gate=gate)
        assert lines.gate == GATE_WRITTEN
        assert path.read_bytes() == b"first\n" + lines.joined
    finally:
        os.close(other)


def test_a_file_writer_asks_about_waiters_as_take_exclusive_would(
    compiled: Implementation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While take_exclusive lets nobody go first (it gave up on a waiter lately), the
    writer's gate does not ask either: a waiter that never takes the flock does not
    keep every batch off the gate."""
    from kakashi import _turns

    outcomes = Outcomes(monkeypatch)
    path = tmp_path / "app.log"
    writer = FileWriter(path)
    other = -1
    try:
        writer.write(pending(compiled, 0))
        other = os.open(path, os.O_RDONLY)
        say_waiting(other)
        monkeypatch.setattr(_turns, "_defer_from", time.monotonic() + 60)
        writer.write(pending(compiled, 100))
        assert outcomes.take() == {GATE_WRITTEN: 1}
        monkeypatch.setattr(_turns, "_defer_from", 0.0)
        monkeypatch.setattr(_turns, "_DEFER_LIMIT", 0.05)  # let it go first, briefly
        writer.write(pending(compiled, 200))
        assert outcomes.take() == {GATE_CLOSED: 1}
    finally:
        if other >= 0:
            os.close(other)
        writer.close()
    assert ids(path) == [*range(0, 40), *range(100, 140), *range(200, 240)]


def test_a_write_that_fails_keeps_the_flock_for_the_caller(
    compiled: Implementation, tmp_path: Path
) -> None:
    """The append fails (here EBADF: a descriptor open for reading): gate 3, the errno
    and the bytes that went are said, and the flock stays held for the caller, who
    finishes (or undoes) the append and releases it."""
    path = tmp_path / "app.log"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDONLY)
    try:
        lines = compiled.format.format_batch(records(compiled, 0), fd=fd, gate=gate_of(path, fd))
        assert (lines.gate, lines.written, lines.write_error) == (GATE_LOCKED, 0, errno.EBADF)
        assert not flock_free(path)
        fcntl.flock(fd, fcntl.LOCK_UN)
        assert flock_free(path)
    finally:
        os.close(fd)


def test_a_batch_planned_holding_the_gil_tries_no_write(
    compiled: Implementation, log_file: tuple[Path, int]
) -> None:
    """Too few records to plan without the GIL: no write is tried (gate 0), the caller
    writes the lines."""
    path, fd = log_file
    lines = compiled.format.format_batch(records(compiled, 0, 3), fd=fd, gate=gate_of(path, fd))
    assert (lines.gate, lines.written) == (0, 0)
    assert path.read_bytes() == b"first\n"


class Outcomes:
    """PendingLines.write_to spied on: what became of each gate."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: Counter[int] = Counter()
        original = PendingLines.write_to

        def write_to(pending: PendingLines, fd: int, gate: Any = None) -> Any:
            answer = original(pending, fd, gate)
            if gate is not None:
                self.seen[answer[3]] += 1
            return answer

        monkeypatch.setattr(PendingLines, "write_to", write_to)

    def take(self) -> dict[int, int]:
        seen = dict(self.seen)
        self.seen.clear()
        return seen


def pending(impl: Implementation, start: int) -> PendingLines:
    batch = records(impl, start)
    return PendingLines(
        len(batch), lambda fd, gate: impl.format.format_batch(batch, fd=fd, gate=gate)
    )


def ids(path: Path) -> list[Any]:
    return [
        json.loads(line).get("order_id", line) if line.startswith("{") else line
        for line in path.read_text().splitlines()
    ]


def test_a_file_writer_takes_the_gate_until_the_file_changes(
    impl: Implementation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A FileWriter appends batch after batch through the gate (compiled); a batch
    after the file changed (another writer's line, a torn tail, a rotation, a flock held
    for a while) goes the writer's own way, which deals with it: every record once, in
    order, the torn bytes cut off, the rotated file keeping what it had."""
    outcomes = Outcomes(monkeypatch)
    path = tmp_path / "app.log"
    writer = FileWriter(path)

    def want(compiled: dict[int, int]) -> dict[int, int]:
        # the pure twin's format_batch is given the gate too, and tries no write (0)
        return {0: sum(compiled.values())} if impl.pure else compiled

    try:
        writer.write(pending(impl, 0))  # the end is not known yet: the usual way
        assert outcomes.take() == {}
        writer.write(pending(impl, 100))
        assert outcomes.take() == want({GATE_WRITTEN: 1})

        with open(path, "ab") as other:  # a line of another writer, then a torn one
            other.write(b"theirs\n")
        writer.write(pending(impl, 200))
        with open(path, "ab") as other:
            other.write(b'{"torn')
        writer.write(pending(impl, 300))
        assert outcomes.take() == want({GATE_CLOSED: 2})
        writer.write(pending(impl, 400))
        assert outcomes.take() == want({GATE_WRITTEN: 1})

        holder = os.open(path, os.O_RDONLY)  # a batch of another process, 0.2 s long
        fcntl.flock(holder, fcntl.LOCK_EX)
        freed = threading.Timer(0.2, os.close, (holder,))
        freed.start()
        try:
            writer.write(pending(impl, 500))
        finally:
            freed.join()
        assert outcomes.take() == want({GATE_CLOSED: 1})

        os.rename(path, tmp_path / "app.log.1")
        writer.write(pending(impl, 600))
        writer.write(pending(impl, 700))
        assert outcomes.take() == want({GATE_CLOSED: 1, GATE_WRITTEN: 1})
    finally:
        writer.close()

    def batch(start: int) -> list[int]:
        return list(range(start, start + BATCH))

    assert ids(tmp_path / "app.log.1") == [
        *batch(0), *batch(100), "theirs", *batch(200), *batch(300), *batch(400), *batch(500),
    ]  # fmt: skip
    assert ids(path) == [*batch(600), *batch(700)]
    # the batches through the gate and the first (the usual way, formatted as written);
    # a batch the gate turned back was formatted already, and is written as bytes
    assert writer.fused_writes == (0 if impl.pure else 4)


FILE_SIZE_LIMIT = """
    import json, os, resource, signal, sys
    from pathlib import Path
    from kakashi._speedups import _capture_c, _format_c
    from kakashi.writers.file import FileWriter, PendingLines

    seen = []
    original = PendingLines.write_to
    def write_to(pending, fd, gate=None):
        answer = original(pending, fd, gate)
        seen.append(answer[3] if gate is not None else None)
        return answer
    PendingLines.write_to = write_to

    def pending(start):
        batch = [_capture_c.Record(1, 20, "app", "order filled", fields={"order_id": i})
                 for i in range(start, start + 40)]
        return PendingLines(40, lambda fd, gate: _format_c.format_batch(batch, fd=fd, gate=gate))

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
    path = Path(sys.argv[1])
    writer = FileWriter(path)
    writer.write(pending(0))
    writer.write(pending(100))
    size = path.stat().st_size
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 500, hard))  # part of a batch fits
    try:
        writer.write(pending(200))
        failed = None
    except OSError as exc:
        failed = exc.errno
    after_failure = path.stat().st_size
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    writer.write(pending(300))
    writer.write(pending(400))
    writer.close()
    print(json.dumps({"seen": seen, "failed": failed, "size": size,
                      "after_failure": after_failure, "fused": writer.fused_writes}))
"""


def test_a_write_through_the_gate_that_fills_the_file_is_undone(
    compiled: Implementation, tmp_path: Path
) -> None:
    """RLIMIT_FSIZE lets part of a batch in, then EFBIG (a child process; SIGXFSZ
    ignored): the gate hands the held flock back (gate 3), the writer cuts off the part
    and raises, releasing the flock; the next batch goes the usual way (the end is
    checked again), the one after through the gate. No partial line is left."""
    path = tmp_path / "app.log"
    report = script_report(FILE_SIZE_LIMIT, path)
    assert report["failed"] == errno.EFBIG
    assert report["after_failure"] == report["size"]  # the part was cut off
    assert report["seen"] == [None, GATE_WRITTEN, GATE_LOCKED, None, GATE_WRITTEN]
    assert report["fused"] == 5  # the part counted too
    assert ids(path) == [
        *range(0, 40), *range(100, 140), *range(300, 340), *range(400, 440),
    ]  # fmt: skip
    assert flock_free(path)


def test_processes_appending_through_the_gate_and_without_the_lock(tmp_path: Path) -> None:
    """Three processes log into one file through async pipelines (their batches through
    the gate, compiled) while a fourth appends records without the lock (a synchronous
    pipeline): every record is on disk once, whole, in each process's order."""
    path = tmp_path / "shared.log"
    script = textwrap.dedent(
        """
        import sys
        from kakashi.core.async_backend import AsyncConfig
        from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
        from kakashi.core.pipeline import Pipeline, PipelineConfig, file_writer

        path, tag, mode = sys.argv[1], sys.argv[2], sys.argv[3]
        config = PipelineConfig(writers=(file_writer(path),))
        if mode == "async":
            pipeline = AsyncPipeline(AsyncPipelineConfig(
                config, AsyncConfig(batch_size=200, max_queue_size=100_000)))
        else:
            pipeline = Pipeline(config)
        log = pipeline.get_logger(tag)
        for n in range(20_000):
            log.info("record", tag=tag, n=n)
        pipeline.shutdown(30) if mode == "async" else pipeline.close()
        """
    )
    children = [
        subprocess.Popen([sys.executable, "-c", script, str(path), tag, mode])
        for tag, mode in (("a", "async"), ("b", "async"), ("c", "async"), ("s", "sync"))
    ]
    deadline = time.monotonic() + 240
    for child in children:
        assert child.wait(timeout=max(1.0, deadline - time.monotonic())) == 0
    by_tag: dict[str, list[int]] = {}
    for line in path.read_bytes().splitlines():
        event = json.loads(line)  # every line whole
        by_tag.setdefault(event["tag"], []).append(event["n"])
    assert {tag: numbers == list(range(20_000)) for tag, numbers in by_tag.items()} == {
        "a": True,
        "b": True,
        "c": True,
        "s": True,
    }


MIXED_WRITER = """
    import json, sys
    from kakashi.core.async_backend import AsyncConfig
    from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
    from kakashi.core.pipeline import PipelineConfig, file_writer
    from kakashi.writers import RotatingFileWriter

    path, tag, kind, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    if kind == "rotating":
        writer = RotatingFileWriter(path, max_bytes=300_000, backup_count=None,
                                    compression="zstd")
    else:
        writer = file_writer(path)
    pipeline = AsyncPipeline(AsyncPipelineConfig(
        PipelineConfig(writers=(writer,)), AsyncConfig(batch_size=100, max_queue_size=100_000)))
    log = pipeline.get_logger(tag)
    for n in range(count):
        log.info("record", tag=tag, n=n, pad="x" * 60)
    pipeline.shutdown(60)
    if kind == "rotating":
        writer.wait_for_compression(60)
    print(json.dumps({"tag": tag, "dropped": pipeline.stats()["messages_dropped"]}))
"""


def test_plain_and_rotating_writers_of_one_path_keep_every_record(tmp_path: Path) -> None:
    """Two processes append through plain file writers (their batches through the gate)
    while a third writes through a rotating writer of the same path that rotates every
    300 KB and compresses what it moves away: every record of each process is once in
    the files (active, rotated, compressed), whole, in order, and none is dropped. (The
    rotating writer locks its directory and lock file; a plain writer locks the file: the
    rotating one holds that flock too, or a plain writer's batch on its way in was cut off
    by its tail check, and a batch could land in a file it was compressing.)"""
    from kakashi.writers import read_lines

    path = tmp_path / "app.log"
    count = 50_000
    children = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(MIXED_WRITER), str(path), tag, kind, str(count)],
            stdout=subprocess.PIPE,
        )
        for tag, kind in (("a", "plain"), ("b", "plain"), ("r", "rotating"))
    ]
    reports = []
    for child in children:
        out, _ = child.communicate(timeout=240)
        assert child.returncode == 0
        reports.append(json.loads(out.splitlines()[-1]))
    assert [r["dropped"] for r in reports] == [0, 0, 0]
    files = sorted(
        p
        for p in tmp_path.iterdir()
        if p.name.startswith("app.log") and not p.name.endswith(".lock")
    )
    assert any(p.name.endswith(".zst") for p in files)  # it did rotate and compress
    by_tag: dict[str, list[int]] = {}
    for file in files:
        for line in read_lines(file):
            event = json.loads(line)
            by_tag.setdefault(event["tag"], []).append(event["n"])
    assert {tag: sorted(numbers) == list(range(count)) for tag, numbers in by_tag.items()} == {
        "a": True,
        "b": True,
        "r": True,
    }


RECOVERY = """
    import json, os, resource, signal, sys, time
    from kakashi.core.async_backend import AsyncConfig
    from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
    from kakashi.core.pipeline import PipelineConfig, file_writer
    from kakashi.writers.file import PendingLines

    seen = []
    original = PendingLines.write_to
    def write_to(pending, fd, gate=None):
        answer = original(pending, fd, gate)
        if gate is not None:
            seen.append(answer[3])
        return answer
    PendingLines.write_to = write_to

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
    path = sys.argv[1]
    writer = file_writer(path)
    pipeline = AsyncPipeline(AsyncPipelineConfig(
        PipelineConfig(writers=(writer,)),
        AsyncConfig(batch_size=100, max_queue_size=100_000, max_error_retries=1,
                    error_retry_delay=0.01)))
    log = pipeline.get_logger("app")
    def burst(first, count):
        for n in range(first, first + count):
            log.info("record", n=n)
            if n % 100 == 99:
                time.sleep(0.002)
        pipeline.flush(30)
    burst(0, 1000)
    before = list(seen); seen.clear()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(path) + 5000, hard))
    burst(1000, 500)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    seen.clear()
    time.sleep(2.5)  # past the circuit's cool-down
    burst(2000, 1000)
    after = list(seen)
    pipeline.shutdown(30)
    print(json.dumps({"before": before, "after": after,
                      "dropped": pipeline.stats()["messages_dropped"]}))
"""


def test_the_gate_is_taken_again_once_a_failed_writer_is_well(
    compiled: Implementation, tmp_path: Path
) -> None:
    """A write that failed (RLIMIT_FSIZE, in a child process) gives the writer a lane
    for its retries; once that lane holds nothing and its circuit is closed again, the
    writer's batches are formatted as they are written, through the gate, as before
    (they were not, for the rest of the process, while any lane existed)."""
    import kakashi

    if not kakashi.USING_SPEEDUPS:  # the child's pipeline: the build under test
        pytest.skip("a pipeline formats batches as they are written in the compiled build")
    path = tmp_path / "app.log"
    report = script_report(RECOVERY, path)
    assert GATE_WRITTEN in report["before"]
    assert report["dropped"] > 0  # the limit did fail writes
    assert report["after"].count(GATE_WRITTEN) >= len(report["after"]) - 1 > 0
    events = [json.loads(line) for line in path.read_bytes().splitlines()]
    numbers = [event["n"] for event in events if "n" in event]  # (and a drop notice)
    assert numbers[-1000:] == list(range(2000, 3000))
