"""Review of #12 (the worker under faults): writer lanes, exit, fork, accounting.

Each test is a defect found in review; it failed before its fix (or is marked xfail)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from typing import Any

import pytest

from kakashi.core.async_backend import AsyncConfig
from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
from kakashi.core.pipeline import PipelineConfig
from tests.conftest import Keeper, balanced
from tests.conftest import keeping_pipeline as pipeline


def run_child(source: str, *args: str) -> tuple[str, str]:
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )  # a hang fails the test (TimeoutExpired), the child killed
    assert 0 == child.returncode, child.stderr
    return child.stdout, child.stderr


# -- a lane writer that logs, at exit ---------------------------------------------------------

LANE_LOGS_AT_EXIT = """
    import atexit, json

    def report():  # registered before kakashi's drain: runs after it
        stats = pipe.stats()
        app = [m for m in writer.lines if m.startswith("x")]
        lost = stats["dropped_by_reason"]["shutdown_timeout"]
        print(len(app), stats["messages_written"], stats["pending"], lost, flush=True)

    atexit.register(report)

    from kakashi.core.async_backend import AsyncConfig
    from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
    from kakashi.core.pipeline import PipelineConfig

    class Remote:
        concurrent = True  # written on its lane
        def __init__(self):
            self.lines = []
        def write(self, batch):
            self.lines.extend(json.loads(line)["message"] for line in batch)
            log.debug("sent", n=len(batch))  # a network writer that logs what it sent
        def flush(self):
            pass
        def close(self):
            pass

    writer = Remote()
    pipe = AsyncPipeline(AsyncPipelineConfig(
        pipeline_config=PipelineConfig(min_level="DEBUG", writers=(writer,)),
        async_config=AsyncConfig(batch_size=10, batch_timeout=5, shutdown_timeout=10)))
    log = pipe.get_logger("app")
    for i in range(25):
        log.info(f"x{i}")
    # exit: the worker has not drained yet (batch_timeout), so the lane's thread starts
    # during the exit drain
"""


def test_a_lane_writer_that_logs_does_not_stall_the_exit_drain() -> None:
    """A concurrent writer that logs from write(): its lane thread, started after the exit
    drain held late callers, was not exempt, so its log call waited for the drain that
    waited for it: exit took the whole shutdown_timeout (10 s), reported "shutdown
    failed (25 records not written ...)" and counted the writer's own record as dropped
    (shutdown_timeout); with a shorter timeout the 25 were still pending at exit."""
    out, err = run_child(LANE_LOGS_AT_EXIT)
    app, written, pending, lost = map(int, out.split())
    assert "not written after" not in err
    assert (25, 0, 0) == (app, pending, lost)
    assert written >= 25


# -- drop notices with two writers --------------------------------------------------------------


def test_a_notice_one_writer_wrote_is_not_repeated_when_another_loses_the_run() -> None:
    """Pipeline (healthy, down), no retries, one record per batch: every run is lost for
    the down writer, and the counts of the notice the healthy writer had just written were
    restored each time, so its notices grew 1, 2, 3, 4, 5: it was told of 15 drops while
    6 were counted."""

    class Down(Keeper):
        def write(self, batch: Any) -> Any:
            raise OSError("down")

    good = Keeper()
    pipe = pipeline(good, Down(), max_error_retries=0, error_retry_delay=0)
    log = pipe.get_logger("notices")
    for i in range(6):
        log.info("x", i=i)
        pipe.flush(20)
    stats = pipe.stats()
    pipe.shutdown(10)
    notices = [line["dropped"] for line in good.lines if "dropped" in line]
    assert 6 == stats["messages_dropped"]
    assert [1, 1, 1, 1, 1] == notices
    assert balanced(stats)


# -- a writer whose __repr__ raises ---------------------------------------------------------------


@pytest.mark.parametrize("concurrent", [False, True])
def test_a_writer_whose_repr_raises_still_gets_its_records(concurrent: bool) -> None:
    """The backend named writers with repr() in its stats and reports. A raising
    __repr__ cost an ordered writer every record (10 logged, 0 written, 10 dropped) and
    ended a concurrent writer's lane thread: 10 pending for ever, flush and shutdown
    incomplete after their whole timeout."""

    class Unprintable(Keeper):
        def __repr__(self) -> str:
            raise RuntimeError("closed")

    writer = Unprintable()
    writer.concurrent = concurrent
    pipe = pipeline(writer)
    log = pipe.get_logger("repr")
    for i in range(10):
        log.info("x", i=i)
    flushed = pipe.flush(20)
    stats = pipe.stats()
    pipe.shutdown(10)
    assert flushed.complete
    assert list(range(10)) == [line["i"] for line in writer.lines]
    assert (10, 0, 0) == (stats["messages_written"], stats["messages_dropped"], stats["pending"])


# -- a writer whose flush hangs holds the workers' turn --------------------------------------------


def test_a_hanging_flush_does_not_hold_up_another_pipelines_records() -> None:
    """Two pipelines on one backend; pipeline A's writer hangs in flush(). During
    backend.flush(10), pipeline B's record waited the whole 10 s (the flush's timeout)
    before its writer got it."""
    never = threading.Event()
    entered = threading.Event()
    got = threading.Event()

    class HangingFlush(Keeper):
        def flush(self) -> None:
            entered.set()
            never.wait(120)

    class Signalling(Keeper):
        def write(self, batch: Any) -> Any:
            super().write(batch)
            got.set()

    first = pipeline(HangingFlush(), batch_timeout=0.01)
    other = Signalling()
    second = AsyncPipeline(
        AsyncPipelineConfig(
            pipeline_config=PipelineConfig(min_level="DEBUG", writers=(other,)),
            async_config=AsyncConfig(),
        ),
        backend=first.backend,
    )
    first.get_logger("a").info("one")
    flusher = threading.Thread(target=first.flush, args=(10,))
    flusher.start()
    try:
        assert entered.wait(60)
        second.get_logger("b").info("two")
        assert got.wait(60)
        # Written while the flush still waits for the hung writer, not after it gave up.
        assert flusher.is_alive()
    finally:
        flusher.join(60)
        never.set()
        first.shutdown(10)


# -- no thread for a lane -------------------------------------------------------------------------


def test_a_lane_whose_thread_cannot_start_does_not_end_the_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Starting a lane's thread can fail ("can't start new thread": no thread left, or
    at interpreter exit from Python 3.12 on, where the exit drain runs). The error went
    out of the worker's turn and ended the worker; the lane kept a thread that never ran.
    10 logged, 0 written, 10 pending for ever, 0 active workers."""
    start = threading.Thread.start

    def no_lane_threads(thread: threading.Thread) -> None:
        if thread.name == "kakashi-lane":
            raise RuntimeError("can't start new thread")
        start(thread)

    writer = Keeper()
    writer.concurrent = True  # type: ignore[misc]
    pipe = pipeline(writer)
    monkeypatch.setattr(threading.Thread, "start", no_lane_threads)
    log = pipe.get_logger("threads")
    for i in range(10):
        log.info("x", i=i)
    flushed = pipe.flush(20)
    stats = pipe.stats()
    monkeypatch.undo()
    pipe.shutdown(10)
    assert flushed.complete
    assert 1 == stats["active_workers"]
    assert list(range(10)) == [line["i"] for line in writer.lines]
    assert balanced(stats)


# -- a writer attribute that shares a name with a retry setting -----------------------------------


def test_a_writer_attribute_named_like_a_retry_setting_costs_no_records() -> None:
    """A lane reads a writer's own max_error_retries, error_retry_delay and max_delay. A
    concurrent writer with ``max_delay = None`` (its own meaning) raised TypeError in the
    worker's turn, every batch: the healthy writer beside it had all 10 records yet they
    counted as dropped (10 dropped, 0 written), the concurrent one got none."""

    class Remote(Keeper):
        concurrent = True
        max_delay = None

    good, remote = Keeper(), Remote()
    pipe = pipeline(good, remote)
    log = pipe.get_logger("attributes")
    for i in range(10):
        log.info("x", i=i)
    flushed = pipe.flush(20)
    stats = pipe.stats()
    pipe.shutdown(10)
    assert flushed.complete
    assert list(range(10)) == [line["i"] for line in remote.lines]
    assert list(range(10)) == [line["i"] for line in good.lines]
    assert (10, 0) == (stats["messages_written"], stats["messages_dropped"])
