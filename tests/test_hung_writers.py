"""A writer that hangs in the workers' turn holds up no other writer (ARCHITECTURE,
guarantee 9): after ``writer_hang_threshold`` a new worker takes the turn and the batch
from the next writer on, the hung writer's batches wait for it in a lane, in order, and
its write is settled there when it returns. Real threads, real files; every record
counted, none duplicated."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from kakashi.core.async_backend import AsyncBackend, AsyncConfig
from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
from kakashi.core.pipeline import PipelineConfig, file_writer
from kakashi.writers.file import FileWriter
from tests.conftest import balanced, read_json_lines, script_report, wait_or_kill

THRESHOLD = 0.2


class Gate:
    """A writer whose writes wait while its gate is shut (the first one it is shut for:
    ``hang_first``), keeping every line it took and the thread that wrote it; ``fail``:
    the write that waited raises ``OSError`` once let go (a disk that came back broken)."""

    def __init__(self, hang_first: bool = True, fail: bool = False) -> None:
        self.gate = threading.Event()
        if not hang_first:
            self.gate.set()
        self.fail = fail
        self.entered = threading.Event()
        self.lines: list[dict[str, Any]] = []
        self.threads: list[str] = []
        self.writes = 0

    def write(self, batch: Any) -> None:
        self.writes += 1
        self.entered.set()
        if not self.gate.is_set():
            self.gate.wait(30)
            if self.fail:
                self.fail = False
                raise OSError(5, "I/O error (the disk came back broken)")
        self.threads.append(threading.current_thread().name)
        self.lines.extend(json.loads(line) for line in batch)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class HungFile(FileWriter):
    """A file writer on storage that stops answering (an NFS server gone) until let go."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def write(self, batch: Any) -> None:
        self.entered.set()
        self.gate.wait(30)
        super().write(batch)


def backend(workers: int = 1, **options: Any) -> AsyncBackend:
    return AsyncBackend(
        AsyncConfig(
            max_queue_size=20_000,
            batch_size=100,
            batch_timeout=0.01,
            worker_count=workers,
            writer_hang_threshold=THRESHOLD,
            **options,
        )
    )


def pipeline(shared: AsyncBackend, *writers: Any) -> AsyncPipeline:
    config = AsyncPipelineConfig(PipelineConfig(min_level="DEBUG", writers=writers))
    return AsyncPipeline(config, backend=shared)


def field(line: dict[str, Any], key: str) -> Any:
    return line.get(key, line.get("fields", {}).get(key))


def ids(lines: list[dict[str, Any]]) -> list[int]:
    return [field(line, "i") for line in lines if field(line, "i") is not None]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_hung_writer_holds_up_no_other_pipeline(tmp_path: Path, capfd: Any, workers: int) -> None:
    """One pipeline's writer hangs in the turn; another pipeline on the same backend
    writes every record, in order, while it hangs; once let go, the hung writer gets
    each of its records once, in order; the books add up all along."""
    shared = backend(workers)
    hung = Gate()
    path = tmp_path / "good.log"
    bad = pipeline(shared, hung).get_logger("hung")
    good = pipeline(shared, file_writer(path)).get_logger("good")
    try:
        bad.info("first", i=-1)
        assert hung.entered.wait(10)
        for i in range(3000):
            good.info("g", i=i)
            if i % 10 == 0:
                bad.info("h", i=i)
        result = shared.flush(5)
        assert not result.complete  # the hung write and the 300 behind it
        assert list(range(3000)) == ids(read_json_lines(path))
        stats = shared.get_stats()
        assert balanced(stats)
        assert stats["pending"] == 301

        hung.gate.set()
        assert shared.flush(10).complete
        assert [-1, *range(0, 3000, 10)] == ids(hung.lines)
        stats = shared.get_stats()
        assert balanced(stats)
        assert (stats["messages_written"], stats["messages_dropped"]) == (3301, 0)
    finally:
        hung.gate.set()
        shared.shutdown(10)
    err = capfd.readouterr().err
    assert f"its write has not returned after {THRESHOLD:g}s" in err


def test_the_other_writers_of_the_same_pipeline_go_on(tmp_path: Path) -> None:
    """A sink with two writers, the first hung: the second gets the run that was being
    written and every later one; the hung one gets them all once it returns."""
    shared = backend()
    hung = Gate()
    path = tmp_path / "second.log"
    log = pipeline(shared, hung, file_writer(path)).get_logger("both")
    try:
        log.info("first", i=0)
        assert hung.entered.wait(10)
        for i in range(1, 1000):
            log.info("next", i=i)
        deadline = time.monotonic() + 10
        while len(path.read_bytes().splitlines()) < 1000 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert list(range(1000)) == ids(read_json_lines(path))
        assert [] == hung.lines

        hung.gate.set()
        assert shared.flush(10).complete
        assert list(range(1000)) == ids(hung.lines)
        stats = shared.get_stats()
        assert balanced(stats)
        assert (stats["messages_written"], stats["messages_dropped"]) == (1000, 0)
    finally:
        hung.gate.set()
        shared.shutdown(10)


def test_a_late_write_that_failed_is_retried_before_the_batches_behind_it(
    tmp_path: Path,
) -> None:
    """The hung write comes back with an error: its records are retried first, then the
    batches that queued behind it, each record once, in order."""
    shared = backend(error_retry_delay=0.01)
    hung = Gate(fail=True)
    path = tmp_path / "other.log"
    bad = pipeline(shared, hung).get_logger("hung")
    good = pipeline(shared, file_writer(path)).get_logger("good")
    try:
        for i in range(50):
            bad.info("early", i=i)
        assert hung.entered.wait(10)
        for i in range(50, 500):
            bad.info("later", i=i)
            good.info("good", i=i)
        assert shared.flush(5).complete is False
        hung.gate.set()
        assert shared.flush(10).complete
        assert list(range(500)) == ids(hung.lines)
        assert list(range(50, 500)) == ids(read_json_lines(path))
        stats = shared.get_stats()
        assert balanced(stats)
        assert (stats["messages_written"], stats["messages_dropped"]) == (950, 0)
    finally:
        hung.gate.set()
        shared.shutdown(10)


def test_a_second_writer_that_hangs_after_the_take_over(tmp_path: Path) -> None:
    """The worker that took over meets another hung writer: the turn passes on again,
    and the third pipeline still gets everything; the workers left inside the writes
    end once those return."""
    shared = backend()
    first, second = Gate(), Gate()
    path = tmp_path / "third.log"
    one = pipeline(shared, first).get_logger("one")
    two = pipeline(shared, second).get_logger("two")
    three = pipeline(shared, file_writer(path)).get_logger("three")
    try:
        one.info("a", i=0)
        assert first.entered.wait(10)
        two.info("b", i=0)
        assert second.entered.wait(10)
        for i in range(2000):
            three.info("c", i=i)
            if i % 100 == 0:
                one.info("a", i=i + 1)
                two.info("b", i=i + 1)
        shared.flush(5)
        assert list(range(2000)) == ids(read_json_lines(path))

        first.gate.set()
        second.gate.set()
        assert shared.flush(10).complete
        expected = [0, *(i + 1 for i in range(0, 2000, 100))]
        assert expected == ids(first.lines) == ids(second.lines)
        assert balanced(shared.get_stats())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(_workers_alive()) > 1:
            time.sleep(0.01)
        assert 1 == len(_workers_alive())
    finally:
        first.gate.set()
        second.gate.set()
        shared.shutdown(10)


def _workers_alive() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("kakashi-worker")]


def test_a_file_on_storage_that_stops_answering(tmp_path: Path) -> None:
    """A file writer whose storage hangs (its write does not return) holds up neither
    another file's pipeline nor the log calls; its records land, in order, when the
    storage answers again."""
    shared = backend()
    stuck = HungFile(tmp_path / "nfs.log")
    path = tmp_path / "local.log"
    far = pipeline(shared, stuck).get_logger("far")
    near = pipeline(shared, file_writer(path)).get_logger("near")
    try:
        far.info("x", i=0)
        assert stuck.entered.wait(10)
        started = time.monotonic()
        for i in range(1, 2001):
            near.info("y", i=i)
            far.info("x", i=i)
        calls = time.monotonic() - started
        shared.flush(5)
        assert list(range(1, 2001)) == ids(read_json_lines(path))
        assert calls < 5  # the calls never waited for the hung storage

        stuck.gate.set()
        assert shared.flush(10).complete
        assert list(range(2001)) == ids(read_json_lines(tmp_path / "nfs.log"))
        assert balanced(shared.get_stats())
    finally:
        stuck.gate.set()
        shared.shutdown(10)


def test_a_writer_slow_once_is_written_in_the_turn_again(tmp_path: Path) -> None:
    """A writer that was slow once (past the threshold) is written by its lane while
    its batches wait there, then in the workers' turn again."""
    shared = backend()
    slow = Gate()
    log = pipeline(shared, slow).get_logger("slow")
    try:
        log.info("first", i=0)
        assert slow.entered.wait(10)
        time.sleep(THRESHOLD * 3)
        log.info("behind", i=1)
        time.sleep(THRESHOLD)  # taken from the queue and handed to the writer's lane
        slow.gate.set()
        assert shared.flush(10).complete
        for i in range(2, 5):
            log.info("later", i=i)
            assert shared.flush(10).complete
        assert list(range(5)) == ids(slow.lines)
        assert slow.threads[-1].startswith("kakashi-worker")
        assert "kakashi-lane" in slow.threads[:2]
    finally:
        slow.gate.set()
        shared.shutdown(10)


def test_shutdown_returns_in_time_with_a_write_hung_in_the_turn(tmp_path: Path) -> None:
    """The shutdown's timeout holds with a write hung in the turn; what the hung writer
    still holds is reported pending or dropped, the other pipeline's records are all
    written."""
    shared = backend()
    hung = Gate()
    path = tmp_path / "good.log"
    bad = pipeline(shared, hung).get_logger("hung")
    good = pipeline(shared, file_writer(path)).get_logger("good")
    bad.info("first", i=0)
    assert hung.entered.wait(10)
    for i in range(500):
        good.info("g", i=i)
        bad.info("h", i=i + 1)
    started = time.monotonic()
    result = shared.shutdown(1.0)
    took = time.monotonic() - started
    try:
        assert took < 3
        assert not result.complete
        assert list(range(500)) == ids(read_json_lines(path))
        stats = shared.get_stats()
        assert balanced(stats)
        assert stats["messages_written"] == 500
        assert stats["messages_dropped"] + stats["pending"] == 501
    finally:
        hung.gate.set()


def test_a_child_forked_while_a_write_hangs_in_the_turn(tmp_path: Path) -> None:
    """Forked while a writer's write hangs and the turn went on without it: the child
    holds no turn, watch or lane of the parent's; its own workers write every record it
    logs, in order, and its books count only its own."""
    shared = backend()
    hung = Gate()
    path = tmp_path / "forked.log"
    bad = pipeline(shared, hung).get_logger("hung")
    good = pipeline(shared, file_writer(path)).get_logger("good")
    try:
        bad.info("first", i=0)
        assert hung.entered.wait(10)
        for i in range(100):
            good.info("parent", i=i)
        deadline = time.monotonic() + 10
        while len(read_json_lines(path)) < 100 and time.monotonic() < deadline:
            time.sleep(0.01)  # written past the hung write: the turn went on
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                hung.gate.set()  # the child's copy of the writer answers
                for i in range(1000):
                    good.info("child", i=i)
                    if i % 100 == 0:
                        bad.info("child", i=i)  # behind nothing of the parent's
                result = shared.flush(10)
                stats = shared.get_stats()
                counts = (stats["messages_enqueued"], stats["messages_written"])
                got = ids([x for x in hung.lines if x["message"] == "child"])
                ok = result.complete and counts == (1010, 1010) and balanced(stats)
                code = 0 if ok and got == list(range(0, 1000, 100)) else 2
            finally:
                os._exit(code)
        status = wait_or_kill(pid)
        assert os.WIFEXITED(status) and 0 == os.WEXITSTATUS(status)
        lines = read_json_lines(path)
        assert list(range(100)) == ids([x for x in lines if x["message"] == "parent"])
        assert list(range(1000)) == ids([x for x in lines if x["message"] == "child"])

        hung.gate.set()
        assert shared.flush(10).complete
        assert [0] == ids(hung.lines)  # the child's records went to the child's copy
        assert balanced(shared.get_stats())
    finally:
        hung.gate.set()
        shared.shutdown(10)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (0, ValueError),
        (-1.0, ValueError),
        (float("nan"), ValueError),
        ("1", TypeError),
        (True, TypeError),
    ],
)
def test_a_bad_threshold_is_refused(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="writer_hang_threshold"):
        AsyncConfig(writer_hang_threshold=value)


@pytest.mark.parametrize("ending", ["logging", "shutdown"])
def test_a_file_lock_held_past_the_hang_threshold_loses_nothing_under_block(
    tmp_path: Path, ending: str
) -> None:
    """Another process holds the file's flock for 2.5 s while an async pipeline logs at
    full speed with ``overflow_strategy="block"``: the write waiting for the lock counts
    as hung after 1 s and the turn goes on, the writer's batches queue in its lane, and
    the lane, full, makes the worker wait for room (as a full queue makes callers wait)
    instead of dropping its oldest batches: every record logged is in the file, none
    dropped. (Before, a lane beyond max_queue_size dropped them: hundreds of thousands.)
    *ending* "shutdown": the records are logged at once and the pipeline shut down while
    the lock is still held; the drain waits for the lane too (within the shutdown's
    deadline) rather than dropping what is beyond its bound."""
    import subprocess
    import sys

    path = tmp_path / "app.log"
    path.touch()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "print('held', flush=True)\n"
            "time.sleep(2.5)\n",
            str(path),
        ],
        stdout=subprocess.PIPE,
    )
    pipeline = None
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        pipeline = AsyncPipeline(
            AsyncPipelineConfig(
                PipelineConfig(writers=(FileWriter(path),)),
                AsyncConfig(
                    batch_size=500,
                    max_queue_size=20_000,
                    overflow_strategy="block",
                    block_timeout=10.0,
                ),
            )
        )
        log = pipeline.get_logger("app")
        logged = 0
        started = time.monotonic()
        while time.monotonic() - started < 3.5 if ending == "logging" else logged < 35_000:
            log.info("record", n=logged)
            logged += 1
        if ending == "shutdown":
            assert pipeline.shutdown(30)
        assert pipeline.flush(30)
        stats = pipeline.stats()
    finally:
        if pipeline is not None:
            pipeline.shutdown(30)
        holder.wait(timeout=30)
        assert holder.stdout is not None
        holder.stdout.close()
    dropped = {reason: n for reason, n in stats["dropped_by_reason"].items() if n}
    assert stats["messages_dropped"] == 0, dropped
    events = [json.loads(line) for line in path.read_bytes().splitlines()]
    assert [event.get("n") for event in events] == list(range(logged))


FAILING_FILE = """
    import json, os, resource, signal, sys
    from kakashi.core.async_backend import AsyncConfig
    from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
    from kakashi.core.pipeline import PipelineConfig
    from kakashi.writers.file import FileWriter

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes fail with EFBIG instead
    path = sys.argv[1]
    pipeline = AsyncPipeline(AsyncPipelineConfig(
        PipelineConfig(writers=(FileWriter(path),)),
        AsyncConfig(batch_size=200, max_queue_size=2000, overflow_strategy="block",
                    block_timeout=0.2)))
    log = pipeline.get_logger("app")
    log.info("first")
    pipeline.flush(10)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(path), hard))  # full
    for n in range(60_000):
        log.info("record", n=n)
    pipeline.flush(30)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    pipeline.shutdown(30)
    stats = pipeline.stats()
    print(json.dumps({"dropped": stats["messages_dropped"],
                      "reasons": stats["dropped_by_reason"],
                      "written": stats["messages_written"]}))
"""


def test_a_failing_file_writer_under_block_does_not_make_callers_wait(tmp_path: Path) -> None:
    """A file that cannot grow (RLIMIT_FSIZE, a child process) under ``"block"``: the
    writer's lane fills with batches it fails to write, and drops the oldest, counted,
    rather than making the worker wait for room (only a late writer that is not failing
    does): the queue never stays full, so no caller's wait runs out
    (``queue_full_block_timeout`` 0), and every record is written or counted."""
    path = tmp_path / "app.log"
    report = script_report(FAILING_FILE, path)
    assert report["reasons"]["queue_full_block_timeout"] == 0, report
    assert report["dropped"] > 0
    assert report["written"] + report["dropped"] == 60_001
