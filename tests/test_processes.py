"""Processes: multiprocessing children lose no record, and no lock survives a fork held.

The multiprocessing tests run a real program in a fresh interpreter (``python main.py``)
whose children are started with each start method: a child started by fork or
forkserver ends with ``os._exit`` and never runs ``atexit``, so only the library's own
hook into multiprocessing's exit path can drain its queue. Every program, child and
forked process has a deadline: a process still running at its deadline is killed and
the test fails, so a regression never hangs the run.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import kakashi
from kakashi import _errors, _locks
from kakashi.core import async_backend, async_interface
from kakashi.core.async_backend import AsyncConfig, get_async_backend
from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
from kakashi.core.pipeline import Pipeline, PipelineConfig, file_writer
from kakashi.formatters import json_formatter
from kakashi.writers import StreamWriter
from tests.conftest import read_json_lines, wait_or_kill

ROOT = Path(kakashi.__file__).resolve().parent.parent
#: The longest one program may run (it waits for its own children with shorter deadlines).
PROGRAM_DEADLINE = 120.0
START_METHODS = ["fork", "forkserver", "spawn"]

pytestmark = pytest.mark.skipif(
    not hasattr(os, "fork"), reason="the start methods fork and forkserver need os.fork"
)

# Imported by the parent and by every child that needs it, never by the forkserver
# process itself: in spawn and forkserver children, importing it (to unpickle the
# target) configures logging and logs a first record before multiprocessing bootstraps
# the child.
APP = """
import json
import os
from multiprocessing import util

import kakashi
from kakashi.core.async_interface import get_async_stats, setup_async_logging

setup_async_logging(
    "testing", log_directory=os.environ["KAKASHI_TEST_DIR"], log_file="app.log"
)
log = kakashi.get_logger("app")
log.info("imported", pid=os.getpid())


def dump_stats(path):
    with open(path, "w") as stream:
        json.dump(get_async_stats(), stream)


def child(index, count, fail):
    # Priority 0 runs after the library's own drain at process exit (priority 20).
    path = os.path.join(os.environ["KAKASHI_TEST_DIR"], f"stats-{index}.json")
    util.Finalize(None, dump_stats, args=(path,), exitpriority=0)
    for seq in range(count):
        log.info("record", child=index, seq=seq, pid=os.getpid())
    if fail:
        raise RuntimeError("the target raises")


def task(index, count, flush):
    for seq in range(count):
        log.info("task", task=index, seq=seq, pid=os.getpid())
    if flush:
        assert kakashi.flush(30)
    return os.getpid()
"""

PROCESSES = """
import json
import multiprocessing
import sys

if __name__ == "__main__":
    import app

    method, fail, children, count, deadline = sys.argv[1:]
    context = multiprocessing.get_context(method)
    processes = [
        context.Process(target=app.child, args=(i, int(count), fail == "raises"))
        for i in range(int(children))
    ]
    for process in processes:
        process.start()
    summary = {"parent": __import__("os").getpid(), "children": []}
    for process in processes:
        process.join(float(deadline))
        if process.exitcode is None:
            process.kill()
            process.join()
            code = "killed at its deadline"
        else:
            code = process.exitcode
        summary["children"].append({"pid": process.pid, "exitcode": code})
    print(json.dumps(summary))
"""

POOL = """
import json
import multiprocessing
import os
import sys

if __name__ == "__main__":
    import app

    method, ending, tasks, count = sys.argv[1:]
    context = multiprocessing.get_context(method)
    pool = context.Pool(4)
    flush = ending == "terminate"  # what the documentation advises before terminate()
    pids = pool.starmap(app.task, [(i, int(count), flush) for i in range(int(tasks))])
    if ending == "terminate":
        pool.terminate()
    else:
        pool.close()
    pool.join()
    print(json.dumps({"parent": os.getpid(), "workers": sorted(set(pids))}))
"""


STRESS = """
import faulthandler
import json
import os
import random
import sys
import threading
import time

import kakashi
from kakashi.core.async_backend import get_async_backend
from kakashi.core.async_interface import setup_async_logging

# A small queue: producers block in turn, so the queue's condition is held often too.
setup_async_logging(
    "testing",
    log_directory=os.environ["KAKASHI_TEST_DIR"],
    log_file="app.log",
    max_queue_size=1_000,
    batch_size=50,
)
log = kakashi.get_logger("stress")
forks, per_child, producers, deadline = map(int, sys.argv[1:])
stop = threading.Event()
counts = [0] * producers


def produce(thread):
    seq = 0
    while not stop.is_set() and seq < 500_000:
        log.info("parent", producer=thread, seq=seq)
        seq += 1
    counts[thread] = seq


threads = [threading.Thread(target=produce, args=(t,)) for t in range(producers)]
for thread in threads:
    thread.start()
children = []
for index in range(forks):
    time.sleep(random.random() / 100)  # fork at a random moment of the producers' work
    pid = os.fork()
    if pid == 0:  # the child logs, then ends normally (atexit drains it)
        faulthandler.dump_traceback_later(deadline - 5, exit=True)  # say where it hangs
        for seq in range(per_child):
            log.info("child", child=index, seq=seq)
        sys.exit(0)
    children.append(pid)
statuses = {}
end = time.monotonic() + deadline
while len(statuses) < len(children) and time.monotonic() < end:
    for index, pid in enumerate(children):
        if index not in statuses:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                statuses[index] = os.waitstatus_to_exitcode(status)
    time.sleep(0.01)
for index, pid in enumerate(children):
    if index not in statuses:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        statuses[index] = "killed at its deadline"
stop.set()
for thread in threads:
    thread.join()
flushed = bool(kakashi.flush(60))
stats = get_async_backend().get_stats()
print(json.dumps({"statuses": statuses, "counts": counts, "flushed": flushed, "stats": stats}))
"""


def run_program(tmp_path: Path, main: str, *args: object) -> tuple[dict[str, Any], str]:
    """Run *main* (with ``app.py`` beside it) in a fresh interpreter; its summary, stderr.

    The program runs in its own session: at its deadline the whole group (program and
    children) is killed and the test fails.
    """
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "main.py").write_text(textwrap.dedent(main))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(tmp_path)])
    env["KAKASHI_TEST_DIR"] = str(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-X", "faulthandler", "main.py", *map(str, args)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=PROGRAM_DEADLINE)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"the program did not end within {PROGRAM_DEADLINE}s; stderr:\n{err}")
    assert 0 == process.returncode, err
    return json.loads(out.strip().splitlines()[-1]), err


def library_reports(stderr: str) -> list[str]:
    """The lines the library wrote on stderr (a drop, an abandoned shutdown, a failure)."""
    return [line for line in stderr.splitlines() if line.startswith("kakashi:")]


class TestMultiprocessingChildren:
    CHILDREN = 4
    RECORDS = 5_000

    @pytest.mark.parametrize("fail", ["returns", "raises"])
    @pytest.mark.parametrize("method", START_METHODS)
    def test_every_record_of_every_child_is_written_once(
        self, tmp_path: Path, method: str, fail: str
    ) -> None:
        """A child whose target returns or raises has every record on disk, exactly once.

        No flush and no shutdown call in the program: the library drains each child as
        multiprocessing ends it, and each child's own counters balance (nothing dropped,
        nothing pending).
        """
        summary, stderr = run_program(
            tmp_path, PROCESSES, method, fail, self.CHILDREN, self.RECORDS, 60
        )
        expected_code = 1 if fail == "raises" else 0
        assert [expected_code] * self.CHILDREN == [c["exitcode"] for c in summary["children"]]
        entries = read_json_lines(tmp_path / "app.log")
        records = Counter(
            (e["child"], e["seq"], e["pid"]) for e in entries if e["message"] == "record"
        )
        expected = Counter(
            (index, seq, child["pid"])
            for index, child in enumerate(summary["children"])
            for seq in range(self.RECORDS)
        )
        assert expected == records
        # Every process that imported the app logged one record at import, written once:
        # a forked child never writes the parent's pending records.
        importers = [summary["parent"]]
        if method != "fork":
            importers += [child["pid"] for child in summary["children"]]
        imported = [e["pid"] for e in entries if e["message"] == "imported"]
        assert sorted(importers) == sorted(imported)
        assert [] == [e for e in entries if e["logger"] == "kakashi"]  # no drop notice
        assert [] == library_reports(stderr)
        for index in range(self.CHILDREN):
            stats = json.loads((tmp_path / f"stats-{index}.json").read_text())
            own = self.RECORDS + (method != "fork")  # its own "imported" record
            assert (own, own, 0, 0) == (
                stats["messages_enqueued"],
                stats["messages_written"],
                stats["messages_dropped"],
                stats["pending"],
            )


class TestPool:
    TASKS = 8
    RECORDS = 1_000

    @pytest.mark.parametrize("ending", ["close", "terminate"])
    @pytest.mark.parametrize("method", START_METHODS)
    def test_every_record_of_every_task_is_written_once(
        self, tmp_path: Path, method: str, ending: str
    ) -> None:
        """A Pool's workers leave every record of every task on disk, exactly once.

        ``close(); join()`` ends the workers through multiprocessing's exit path, which
        drains them. ``terminate()`` (and leaving a ``with Pool()`` block) kills them
        with SIGTERM, which skips that path: a task that ends with ``kakashi.flush()``, as
        the documentation advises, has its records written before its result is sent.
        """
        summary, stderr = run_program(tmp_path, POOL, method, ending, self.TASKS, self.RECORDS)
        entries = read_json_lines(tmp_path / "app.log")
        tasks = Counter((e["task"], e["seq"]) for e in entries if e["message"] == "task")
        expected = Counter((t, s) for t in range(self.TASKS) for s in range(self.RECORDS))
        assert expected == tasks
        assert set(summary["workers"]) >= {e["pid"] for e in entries if e["message"] == "task"}
        assert [] == [e for e in entries if e["logger"] == "kakashi"]
        assert [] == library_reports(stderr)


# -- a lock held by another thread at the moment of os.fork() ----------------------------


@contextlib.contextmanager
def held(acquire: Callable[[], object], release: Callable[[], object]) -> Iterator[None]:
    """Hold a lock in another thread for the duration (the state a fork must survive)."""
    taken = threading.Event()
    done = threading.Event()

    def hold() -> None:
        acquire()
        taken.set()
        done.wait(60)
        release()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert taken.wait(60)
    try:
        yield
    finally:
        done.set()
        thread.join(60)


def fork_and_check(tmp_path: Path, child: Callable[[], bool]) -> None:
    """Fork; the child runs *child* and must exit 0 before its deadline (else it is killed)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 0 if child() else 2
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    status = wait_or_kill(pid, timeout=30.0)
    assert (True, 0) == exit_of(status)


def exit_of(status: int) -> tuple[bool, int]:
    """(exited normally, exit code), from a wait status (a killed child did not exit)."""
    exited = os.WIFEXITED(status)
    return exited, os.WEXITSTATUS(status) if exited else -os.WTERMSIG(status)


def async_file_pipeline(path: Path) -> AsyncPipeline:
    """An async pipeline of its own backend, writing JSON lines to *path*."""
    config = AsyncPipelineConfig(
        pipeline_config=PipelineConfig(min_level="DEBUG", writers=(file_writer(path),)),
        async_config=AsyncConfig(max_queue_size=1_000, overflow_strategy="block"),
    )
    return AsyncPipeline(config)


def messages(path: Path) -> list[str]:
    """The messages written to *path*, in order."""
    return [entry["message"] for entry in read_json_lines(path)] if path.exists() else []


def _lock_cases() -> list[Any]:
    """(lock getter, what the child must be able to do) for every lock of the library."""

    def log_async_and_flush(tmp_path: Path, pipeline: AsyncPipeline) -> bool:
        pipeline.get_logger("child").info("from child")
        return bool(pipeline.backend.flush(20)) and ["from child"] == messages(
            tmp_path / "child.log"
        )

    def log_async_as_mp_child(tmp_path: Path, pipeline: AsyncPipeline) -> bool:
        import multiprocessing.util  # a backend starting now hooks into its exit path

        return log_async_and_flush(tmp_path, pipeline) and multiprocessing.util is not None

    def report_in_child(_t: Path, _p: AsyncPipeline) -> bool:
        _errors.stream = io.StringIO()  # the child's own copy: the parent's stays as it was
        _errors.report("child test")
        return {"child test": 1} == _errors.error_counts() and bool(_errors.stream.getvalue())

    def cases() -> Iterator[tuple[str, Any, Any]]:
        yield ("errors", lambda _t, _p: _errors._lock, report_in_child)
        yield (
            "logger registry",
            lambda _t, _p: kakashi.logger._lock,
            lambda _t, _p: kakashi.get_logger("made in child").name == "made in child",
        )
        yield (
            "async presets",
            lambda _t, _p: async_interface._lock,
            lambda t, _p: (
                async_interface.get_high_performance_logger("fast", log_file=t / "fast.log").name
                == "fast"
            ),
        )
        yield (
            "global backend",
            lambda _t, _p: async_backend._global_lock,
            lambda _t, _p: (
                async_backend.configure_async_backend(worker_count=1) is get_async_backend()
            ),
        )
        yield ("backend state", lambda _t, p: p.backend._state_lock, log_async_and_flush)
        yield ("backend settled", lambda _t, p: p.backend._settled, log_async_and_flush)
        yield ("backend turn", lambda _t, p: p.backend._turn, log_async_and_flush)
        yield ("backend wake", lambda _t, p: p.backend._wake._cond, log_async_and_flush)
        yield ("queue full", lambda _t, p: p.backend.queue.not_full, log_async_and_flush)
        yield ("exit drain", lambda _t, _p: async_backend._exit_lock, log_async_as_mp_child)

    params = [pytest.param(getter, check, id=name) for name, getter, check in cases()]
    # The pure queue has a lock of its own around every put.
    params.append(
        pytest.param(
            lambda _t, p: getattr(p.backend.queue, "_lock", p.backend.queue.not_full),
            log_async_and_flush,
            id="queue",
        )
    )
    return params


class TestForkSafeLocks:
    @pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
    @pytest.mark.parametrize(("lock_of", "works_in_child"), _lock_cases())
    def test_child_works_though_the_lock_was_held_at_fork(
        self, tmp_path: Path, lock_of: Any, works_in_child: Any
    ) -> None:
        """A child forked while another thread holds one of the library's locks can do
        what needs that lock (make a logger, report, log, configure, flush) and exit."""
        pipeline = async_file_pipeline(tmp_path / "child.log")
        lock = lock_of(tmp_path, pipeline)
        with held(lock.acquire, lock.release):
            fork_and_check(tmp_path, lambda: works_in_child(tmp_path, pipeline))
        pipeline.backend.shutdown(10)

    @pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
    def test_sync_pipeline_writes_though_its_writer_lock_was_held(self, tmp_path: Path) -> None:
        """A synchronous pipeline's writer lock held at the fork is free in the child."""
        with open(tmp_path / "sync.log", "w") as stream:
            writer = StreamWriter(stream)
            pipeline = Pipeline(
                PipelineConfig(min_level="DEBUG", formatter=json_formatter, writers=(writer,))
            )

            def child() -> bool:
                pipeline.get_logger("made in child").info("from child")
                return ["from child"] == messages(tmp_path / "sync.log")

            with held(writer._lock.acquire, writer._lock.release):
                fork_and_check(tmp_path, child)

    @pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
    def test_every_kind_of_fork_safe_lock_is_free_in_the_child(self, tmp_path: Path) -> None:
        """Each kind of fork-safe lock, held by another thread at the fork, is free in the
        child (an event's inner lock included)."""
        event = _locks.fork_safe_event()
        made = [
            _locks.fork_safe_lock(),
            _locks.fork_safe_rlock(),
            _locks.fork_safe_condition(),
            event._cond,  # type: ignore[attr-defined]
        ]
        with contextlib.ExitStack() as stack:
            for lock in made:
                stack.enter_context(held(lock.acquire, lock.release))
            fork_and_check(tmp_path, lambda: all(lock.acquire(timeout=5) for lock in made))


class TestForkStress:
    FORKS = 20
    RECORDS = 500
    PRODUCERS = 4

    @pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
    def test_forks_at_random_moments_lose_and_repeat_nothing(self, tmp_path: Path) -> None:
        """Threads log hard while the main thread forks 20 times; each child logs and
        ends normally within its deadline, with every record on disk exactly once, and
        every parent record is on disk exactly once or counted as dropped."""
        summary, stderr = run_program(
            tmp_path, STRESS, self.FORKS, self.RECORDS, self.PRODUCERS, 60
        )
        assert {str(i): 0 for i in range(self.FORKS)} == summary["statuses"], stderr
        entries = read_json_lines(tmp_path / "app.log")
        children = Counter((e["child"], e["seq"]) for e in entries if e["message"] == "child")
        expected = Counter((c, s) for c in range(self.FORKS) for s in range(self.RECORDS))
        assert expected == children
        parent = Counter((e["producer"], e["seq"]) for e in entries if e["message"] == "parent")
        assert [] == [key for key, n in parent.items() if n > 1]  # nothing twice
        counts = summary["counts"]
        assert set(parent) <= {(t, s) for t, n in enumerate(counts) for s in range(n)}
        stats = summary["stats"]
        assert summary["flushed"]
        assert (sum(counts), sum(counts) - stats["messages_dropped"], 0) == (
            stats["messages_enqueued"],
            len(parent),
            stats["pending"],
        )


class TestSignals:
    def test_workers_leave_termination_signals_to_the_main_thread(self) -> None:
        """A worker thread blocks SIGTERM, SIGINT and SIGHUP, so the kernel hands them to
        the main thread: a main thread blocked in a system call (a Pool worker waiting for
        a task) is then interrupted and runs the Python handler, instead of hanging."""
        masks: list[set[int]] = []

        class MaskWriter:
            def write(self, batch: Any) -> None:
                masks.append(set(signal.pthread_sigmask(signal.SIG_BLOCK, [])))

            def flush(self) -> None:
                pass

            def close(self) -> None:
                pass

        config = AsyncPipelineConfig(
            pipeline_config=PipelineConfig(min_level="DEBUG", writers=(MaskWriter(),)),
            async_config=AsyncConfig(),
        )
        pipeline = AsyncPipeline(config)
        pipeline.get_logger("signals").info("on a worker")
        assert pipeline.backend.flush(30)
        pipeline.backend.shutdown(10)
        wanted = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
        assert [wanted] == [mask & wanted for mask in masks]
        assert wanted.isdisjoint(signal.pthread_sigmask(signal.SIG_BLOCK, []))  # main: free
