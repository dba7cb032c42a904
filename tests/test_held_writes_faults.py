"""Faults against the synchronous path's write that keeps the interpreter lock (hold_gil).

A synchronous pipeline's record is one ``write`` of the file, made (compiled build, local
filesystem or ``hold_gil=True``) without letting the GIL go. These tests break it the
way production does: several processes of several threads on one file, ``os.fork`` at
random moments, a signal handler that logs in the middle of a log call, a file size limit
and a full tmpfs. Each one counts: the records logged, the lines on disk, duplicates, and
what the pipeline says it wrote or failed to write (``Pipeline.stats()``), and they must
add up. Real files, threads and processes; a deadlock fails a bounded wait, never hangs.
The pure build (``KAKASHI_NO_EXTENSIONS=1``) runs the same tests, never holding the lock.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import os
import random
import shutil
import stat
import struct
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kakashi import USING_SPEEDUPS, _errors
from kakashi._speedups import gil_held_writes
from kakashi.core.pipeline import Pipeline, PipelineConfig
from kakashi.writers import FileWriter, ZstdFileWriter, read_lines
from kakashi.writers import file as file_module
from tests.conftest import child_report

pytestmark = pytest.mark.skipif(
    not file_module.ATOMIC_APPEND, reason="the lock-free path needs atomic appends"
)

# The longest a child process or a thread of a test may take before the test fails as
# deadlocked (generous: the machine is shared, and the pure build is slower).
DEADLOCK = 120.0

# What every child script starts with: the record's text is a function of its tag and
# number alone, so a line on disk is whole exactly when it is one of the expected texts.
# Every 500th record is over 64 KiB, written with the lock released even when held.
PRELUDE = textwrap.dedent(
    """
    import itertools, json, signal, sys, threading
    from kakashi import USING_SPEEDUPS, _errors
    from kakashi.core.pipeline import Pipeline, PipelineConfig
    from kakashi.writers import FileWriter

    def text(tag, n):
        pad = 70_000 if n % 500 == 499 else (n % 97) * 7
        return f"{tag} {n:06d} " + "x" * pad + " end"

    def sync_pipeline(writer):
        return Pipeline(PipelineConfig(writers=(writer,), formatter=lambda r: r.message))

    def report(**fields):
        print(json.dumps(fields), flush=True)
    """
)


def text(tag: str, n: int) -> str:
    """The text of record *n* of *tag* (the same as the child scripts' ``text``)."""
    pad = 70_000 if n % 500 == 499 else (n % 97) * 7
    return f"{tag} {n:06d} " + "x" * pad + " end"


def run_child(script: str, *args: Any) -> dict[str, Any]:
    """Run *script* (after :data:`PRELUDE`) in a new interpreter with *args*; return the
    JSON it reported on its last line. Fails if it does not end within :data:`DEADLOCK`
    seconds (killed) or exits with an error."""
    done = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(script), *map(str, args)],
        capture_output=True,
        timeout=DEADLOCK,
        check=False,
    )
    assert 0 == done.returncode, done.stderr.decode(errors="replace")
    report: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    report["stderr"] = done.stderr.decode(errors="replace")
    return report


def lines_on_disk(path: Path) -> list[str]:
    """The file's lines; it must end with a newline (no record left half written)."""
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return data.decode().split("\n")[:-1]


def assert_each_once(lines: list[str], expected: list[str]) -> None:
    """Every expected record is on disk once, whole, and nothing else is."""
    counts = collections.Counter(lines)
    duplicates = {line[:40]: count for line, count in counts.items() if count > 1}
    assert {} == duplicates
    unexpected = [line[:40] for line in counts.keys() - set(expected)]
    assert [] == unexpected  # a torn or interleaved line is not an expected text
    assert len(expected) == len(lines)
    assert set(expected) == set(lines)


def join_all(threads: list[threading.Thread]) -> None:
    """Join *threads*; fail (as a deadlock) if one is still running after the bound."""
    for thread in threads:
        thread.join(DEADLOCK)
    assert [] == [thread.name for thread in threads if thread.is_alive()]


def log_from_threads(log: Any, tags: list[str], records: int) -> None:
    """One thread per tag logs ``text(tag, n)`` for each n below *records*, all at once;
    joined within the deadlock bound."""
    workers = [
        threading.Thread(target=lambda tag=tag: [log.info(text(tag, n)) for n in range(records)])
        for tag in tags
    ]
    for worker in workers:
        worker.start()
    join_all(workers)


def sync_pipeline(writer: FileWriter) -> Pipeline:
    """A synchronous pipeline writing each record's message to *writer*."""
    return Pipeline(PipelineConfig(writers=(writer,), formatter=lambda r: r.message))


# -- 1. several processes of several threads, one file ----------------------------------------

MANY_WRITERS = """
    path, tag, threads, records = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    # A check every few milliseconds: the checked (locked) way mixes with the held one.
    writer = FileWriter(path, hold_gil=True, reopen_check_interval=0.003)
    pipeline = sync_pipeline(writer)
    log = pipeline.get_logger("many")
    sys.stdin.readline()  # every process starts together
    start = threading.Barrier(threads)

    def produce(thread):
        start.wait()
        for n in range(records):
            log.info(text(f"{tag}t{thread}", n))

    workers = [threading.Thread(target=produce, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    holds = writer.holds_gil
    pipeline.close()
    report(stats=pipeline.stats(), holds=holds, speedups=USING_SPEEDUPS,
           short_writes=writer.short_writes, errors=_errors.error_counts())
"""


def test_processes_of_threads_holding_the_lock_write_every_record_once(tmp_path: Path) -> None:
    """3 processes of 4 threads each log synchronously, with held writes, into one file
    (some records over 64 KiB, written with the lock released): each process counts
    every record written and none failed; the file holds every record once, whole, in
    each thread's order, and nothing else."""
    path = tmp_path / "shared.log"
    processes, threads, records = 3, 4, 1200
    script = PRELUDE + textwrap.dedent(MANY_WRITERS)
    children = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(path), f"p{p}", str(threads), str(records)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for p in range(processes)
    ]
    try:
        for child in children:
            assert child.stdin is not None
            child.stdin.write(b"go\n")
            child.stdin.flush()
        outputs = [child.communicate(timeout=DEADLOCK) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert [0] * processes == [child.returncode for child in children], outputs
    reports = [json.loads(out.splitlines()[-1]) for out, _ in outputs]

    lines = lines_on_disk(path)
    expected = [
        text(f"p{p}t{t}", n)
        for p in range(processes)
        for t in range(threads)
        for n in range(records)
    ]
    assert_each_once(lines, expected)
    for p in range(processes):
        for t in range(threads):
            tag = f"p{p}t{t} "
            own = [int(line.split(" ", 2)[1]) for line in lines if line.startswith(tag)]
            assert list(range(records)) == own  # O_APPEND keeps a thread's order

    per_process = threads * records
    for report in reports:
        assert report["speedups"] is USING_SPEEDUPS
        assert report["holds"] is USING_SPEEDUPS  # hold_gil=True: any regular file
        assert {"emitted": per_process, "written": per_process, "filtered": 0, "errors": 0} == (
            report["stats"]
        )
        # A checking writer may see another process's large record half copied in: it
        # neither cuts nor reports it (see tests/test_torn_tail.py); nothing is reported.
        assert (0, {}) == (report["short_writes"], report["errors"])


# -- 2. fork at random moments ---------------------------------------------------------------


def lines_of(path: Path, make: type[FileWriter]) -> list[str]:
    """The records in *path*, written by a writer of class *make* (plain or zstd; a
    torn frame warns, which fails the test)."""
    if make is ZstdFileWriter:
        return [line.decode() for line in read_lines(path)]
    return lines_on_disk(path)


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
@pytest.mark.parametrize("make", [FileWriter, ZstdFileWriter], ids=["plain", "zstd"])
def test_fork_at_random_moments_while_threads_log_with_held_writes(
    tmp_path: Path, make: type[FileWriter]
) -> None:
    """One thread forks 16 times at random moments while 3 threads log synchronously,
    with held writes, to one file. Each child logs 30 records from the forking thread
    and 30 from a thread of its own, then _exits: no child deadlocks (each is waited for
    with a bound, then killed, which fails the test), no thread of the parent does, and
    the file holds every record of the parent and of each child once, whole."""
    path = tmp_path / "forked.log"
    writer = make(path, hold_gil=True, reopen_check_interval=0.003)
    pipeline = sync_pipeline(writer)
    log = pipeline.get_logger("fork")
    assert writer.holds_gil is USING_SPEEDUPS
    forks, child_records = 16, 30
    stop = threading.Event()
    logged = [0, 0, 0]
    seeds = random.Random(os.getpid())

    # A zstd writer's first write to a file it opened (each child's) walks every frame of
    # the file from the start, one per record here, under the flock: the file is kept
    # small enough for 16 children to do that in a few seconds.
    most = 4000 if make is ZstdFileWriter else sys.maxsize

    def produce(thread: int) -> None:
        n = 0
        while (not stop.is_set() or n < 200) and n < most:
            log.info(text(f"parent{thread}", n))
            n += 1
        logged[thread] = n

    def in_child(index: int, answer: int) -> None:
        before = pipeline.stats()
        other = threading.Thread(
            target=lambda: [log.info(text(f"child{index}b", k)) for k in range(child_records)]
        )
        other.start()
        for k in range(child_records):
            log.info(text(f"child{index}a", k))
        other.join(DEADLOCK)
        after = pipeline.stats()
        pipeline.close()
        delta = {key: after[key] - before[key] for key in after}
        os.write(answer, json.dumps({"delta": delta, "alive": other.is_alive()}).encode())

    reports: list[tuple[int, Any]] = []

    def fork_repeatedly() -> None:
        for index in range(forks):
            threading.Event().wait(seeds.uniform(0, 0.004))  # a random moment
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: never returns into the test
                code = 1
                try:
                    os.close(read)
                    in_child(index, write)
                    code = 0
                finally:
                    os._exit(code)
            reports.append(child_report(pid, read, write))
        stop.set()

    producers = [threading.Thread(target=produce, args=(t,), daemon=True) for t in range(3)]
    forker = threading.Thread(target=fork_repeatedly, daemon=True)
    for thread in [*producers, forker]:
        thread.start()
    try:
        join_all([forker, *producers])
    finally:
        stop.set()
    pipeline.close()

    child = {"emitted": 2 * child_records, "written": 2 * child_records, "filtered": 0}
    assert [(0, {"delta": {**child, "errors": 0}, "alive": False})] * forks == reports
    total = sum(logged)
    assert {"emitted": total, "written": total, "filtered": 0, "errors": 0} == pipeline.stats()
    expected = [text(f"parent{t}", n) for t in range(3) for n in range(logged[t])] + [
        text(f"child{index}{side}", k)
        for index in range(forks)
        for side in "ab"
        for k in range(child_records)
    ]
    assert_each_once(lines_of(path, make), expected)


# -- 3. a signal handler that logs during a log call -----------------------------------------

SIGNAL_LOGGER = """
    path, interval, records = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    writer = FileWriter(path, hold_gil=True, reopen_check_interval=interval)
    pipeline = sync_pipeline(writer)
    log = pipeline.get_logger("signals")
    numbers = itertools.count()  # one number per handler call, even if handlers nest

    def on_alarm(signum, frame):
        log.info(text("handler", next(numbers)))

    def other():
        for n in range(records // 4):
            log.info(text("other", n))

    signal.signal(signal.SIGALRM, on_alarm)
    thread = threading.Thread(target=other)
    thread.start()
    signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.0002)
    for n in range(records):
        log.info(text("main", n))
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    thread.join()
    holds = writer.holds_gil
    pipeline.close()
    report(stats=pipeline.stats(), holds=holds, handled=next(numbers),
           errors=_errors.error_counts())
"""


@pytest.mark.parametrize(
    "interval", [3600.0, 0.001, 0.0], ids=["held", "held-and-checked", "checked"]
)
def test_a_signal_handler_logging_during_log_calls(tmp_path: Path, interval: float) -> None:
    """A SIGALRM handler that logs to the writer fires every 200 µs while the main
    thread (and another) log with held writes (and, with a short check interval, through
    the locked way, where the handler's record is set aside): no deadlock (the process
    ends within the bound), every record of the main thread, the other thread and every
    handler call is on disk once, the main thread's in order, and the counts add up."""
    path = tmp_path / "signals.log"
    records = 6000
    report = run_child(SIGNAL_LOGGER, path, interval, records)
    handled = report["handled"]
    assert handled > 0  # the handler did run during the loop
    total = records + records // 4 + handled
    assert {"emitted": total, "written": total, "filtered": 0, "errors": 0} == report["stats"]
    assert {} == report["errors"]
    assert report["holds"] is USING_SPEEDUPS  # where a record goes the unlocked way

    lines = lines_on_disk(path)
    expected = (
        [text("main", n) for n in range(records)]
        + [text("other", n) for n in range(records // 4)]
        + [text("handler", n) for n in range(handled)]
    )
    assert_each_once(lines, expected)
    assert [text("main", n) for n in range(records)] == [
        line for line in lines if line.startswith("main ")
    ]


# -- 4. a full disk ---------------------------------------------------------------------------

FILE_SIZE_LIMIT = """
    import resource

    path, limit, full, after = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
    writer = FileWriter(path, hold_gil=True, reopen_check_interval=3600)
    pipeline = sync_pipeline(writer)
    log = pipeline.get_logger("full")
    log.info(text("rec", 0))  # the checked way, before the limit: the rest are held
    holds = writer.holds_gil
    raised = 0
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    for n in range(1, full):
        try:
            log.info(text("rec", n))
        except BaseException:
            raised += 1
    while_full = pipeline.stats()
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    for n in range(full, full + after):
        try:
            log.info(text("rec", n))
        except BaseException:
            raised += 1
    pipeline.close()
    report(while_full=while_full, stats=pipeline.stats(), holds=holds, raised=raised,
           short_writes=writer.short_writes, errors=_errors.error_counts())
"""


def record_size(n: int) -> int:
    """The bytes record *n* takes on disk (its text and a newline)."""
    return len(text("rec", n)) + 1


@pytest.mark.parametrize("cut", [0, 37], ids=["at-a-record-end", "inside-a-record"])
def test_a_file_size_limit_is_counted_and_logging_resumes(tmp_path: Path, cut: int) -> None:
    """RLIMIT_FSIZE (SIGXFSZ ignored) makes the held writes fail with EFBIG, at a record's
    end or inside one (a short write): no log call raises, the pipeline counts every
    record that did not fit as an error, the records that fit are whole, the part of the
    cut one is a line of its own, and once the limit is lifted every record is written."""
    path = tmp_path / "limited.log"
    fitting, full, after = 40, 200, 50  # records logged while limited: full
    limit = sum(record_size(n) for n in range(fitting)) + cut
    report = run_child(FILE_SIZE_LIMIT, path, limit, full, after)

    assert report["holds"] is USING_SPEEDUPS
    assert 0 == report["raised"]
    failed = full - fitting
    assert {"emitted": full, "written": fitting, "filtered": 0, "errors": failed} == (
        report["while_full"]
    )
    assert {
        "emitted": full + after,
        "written": fitting + after,
        "filtered": 0,
        "errors": failed,
    } == report["stats"]
    assert (1 if cut else 0) == report["short_writes"]
    writer_errors = sum(
        count for kind, count in report["errors"].items() if kind.startswith("writer ")
    )
    assert failed == writer_errors
    assert "File too large" in report["stderr"]

    lines = lines_on_disk(path)
    whole = [text("rec", n) for n in range(fitting)] + [
        text("rec", n) for n in range(full, full + after)
    ]
    part = [text("rec", fitting)[:cut]] if cut else []
    assert whole[:fitting] + part + whole[fitting:] == lines


@contextlib.contextmanager
def mounted_tmpfs(mount: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at *mount* with *options* for the block (skips the test where it
    cannot be: not root, no mount(8), a container that forbids it); unmounted after."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "kakashi-test", str(mount)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace')}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30, check=False)


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 128 KiB tmpfs mounted for the test."""
    with mounted_tmpfs(tmp_path / "tmpfs", "size=128k") as mount:
        yield mount


def small(tag: str, n: int) -> str:
    """A record of 100 bytes with its newline (a full tmpfs cuts one inside a page)."""
    return f"{tag} {n:06d} ".ljust(95, "y") + " end"


def test_a_full_tmpfs_is_counted_and_logging_resumes_once_space_is_freed(
    small_tmpfs: Path,
) -> None:
    """Two threads log synchronously into a file on a 128 KiB tmpfs (where the default
    holds the lock) until it is full, then a ballast file is deleted and they log again:
    no log call raises; the pipeline counts as written exactly the records that are on
    disk whole (each once, in each thread's order) and the rest as errors; what is not a
    whole record is the part of one the full disk cut (a line of its own, counted as a
    short write); every record logged after the space was freed is there."""
    ballast = small_tmpfs / "ballast"
    ballast.write_bytes(b"b" * 32 * 1024)
    path = small_tmpfs / "app.log"
    writer = FileWriter(path, reopen_check_interval=0.002)
    pipeline = sync_pipeline(writer)
    log = pipeline.get_logger("tmpfs")
    log.info(small("first", 0))
    assert writer.holds_gil is USING_SPEEDUPS  # tmpfs is a local filesystem
    raised = [0, 0]
    tags = ("t0", "t1")

    def produce(thread: int, numbers: range) -> None:
        for n in numbers:
            try:
                log.info(small(tags[thread], n))
            except BaseException:
                raised[thread] += 1

    def phase(numbers: range) -> None:
        threads = [threading.Thread(target=produce, args=(t, numbers)) for t in (0, 1)]
        for thread in threads:
            thread.start()
        join_all(threads)

    phase(range(800))  # 160 KB of records for 96 KiB of room: the disk fills
    while_full = pipeline.stats()
    ballast.unlink()
    phase(range(800, 900))  # 20 KB for 32 KiB freed
    pipeline.close()

    assert [0, 0] == raised
    stats = pipeline.stats()
    assert 1601 == while_full["written"] + while_full["errors"]
    assert while_full["errors"] > 0  # the disk did fill
    assert {
        "emitted": 1801,
        "written": while_full["written"] + 200,
        "filtered": 0,
        "errors": while_full["errors"],
    } == stats

    lines = lines_on_disk(path)
    expected = {small(tag, n) for tag in tags for n in range(900)} | {small("first", 0)}
    whole = [line for line in lines if line in expected]
    parts = [line for line in lines if line not in expected]
    assert stats["written"] == len(whole) == len(set(whole))
    for tag in tags:
        own = [int(line.split(" ")[1]) for line in whole if line.startswith(tag + " ")]
        assert sorted(own) == own
        assert list(range(800, 900)) == own[-100:]  # logging resumed: all of them
    assert len(parts) <= writer.short_writes
    missing = expected - set(whole)
    for part in parts:  # the start of a record that did not make it whole
        assert any(text.startswith(part) for text in missing), part


# -- not a regular file; tmpfs ------------------------------------------------------------------


def test_hold_gil_true_on_a_fifo_does_not_hold_and_keeps_records_whole(tmp_path: Path) -> None:
    """hold_gil=True on a FIFO: not a regular file, so the lock is not held; 3 threads
    log records of 20 KB (over PIPE_BUF, which a pipe writes whole only below) at once,
    and the reader gets every record once, whole, none interleaved with another."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = FileWriter(fifo, hold_gil=True)
    assert (True, False) == (writer.hold_gil, writer.holds_gil)
    pipeline = sync_pipeline(writer)
    log = pipeline.get_logger("fifo")
    received = bytearray()

    def read() -> None:
        with open(fifo, "rb") as source:
            while chunk := source.read(65536):
                received.extend(chunk)

    def produce(tag: str) -> None:
        for n in range(200):
            log.info(f"{tag} {n:06d} ".ljust(20_000, tag[0]))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    tags = ("a", "b", "c")
    producers = [threading.Thread(target=produce, args=(tag,), daemon=True) for tag in tags]
    for producer in producers:
        producer.start()
    join_all(producers)
    writer.close()  # the reader sees the end of the stream
    join_all([reader])

    assert {"emitted": 600, "written": 600, "filtered": 0, "errors": 0} == pipeline.stats()
    expected = [f"{tag} {n:06d} ".ljust(20_000, tag[0]) for tag in tags for n in range(200)]
    assert_each_once(received.decode().split("\n")[:-1], expected)
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_hold_gil_true_on_dev_null_does_not_hold_and_works() -> None:
    """hold_gil=True on /dev/null (a device): not held; every record counts as written."""
    writer = FileWriter(os.devnull, hold_gil=True)
    assert (True, False) == (writer.hold_gil, writer.holds_gil)
    pipeline = sync_pipeline(writer)
    log_from_threads(pipeline.get_logger("null"), ["null"] * 3, 1000)
    pipeline.close()
    assert {"emitted": 3000, "written": 3000, "filtered": 0, "errors": 0} == pipeline.stats()
    assert {} == _errors.error_counts()
    assert "/dev/null" == os.devnull and stat.S_ISCHR(os.stat(os.devnull).st_mode)


@pytest.fixture
def shm_path() -> Iterator[Path]:
    """A file name on /dev/shm (a tmpfs on Linux), removed after the test."""
    folder = Path("/dev/shm")
    if not folder.is_dir():
        pytest.skip("no /dev/shm here")
    path = folder / f"kakashi-held-{uuid.uuid4().hex}.log"
    yield path
    path.unlink(missing_ok=True)


def test_a_file_on_dev_shm_holds_the_lock_and_keeps_every_record(shm_path: Path) -> None:
    """/dev/shm is tmpfs, a local filesystem: the default holds the lock (compiled
    build); 4 threads log there and every record is on disk once, whole."""
    writer = FileWriter(shm_path, reopen_check_interval=0.003)
    assert (None, USING_SPEEDUPS) == (writer.hold_gil, writer.holds_gil)
    pipeline = sync_pipeline(writer)
    log_from_threads(pipeline.get_logger("shm"), [f"shm{t}" for t in range(4)], 1000)
    pipeline.close()
    assert {"emitted": 4000, "written": 4000, "filtered": 0, "errors": 0} == pipeline.stats()
    expected = [text(f"shm{t}", n) for t in range(4) for n in range(1000)]
    assert_each_once(lines_on_disk(shm_path), expected)


# -- writes that wait for the disk --------------------------------------------------------------

# linux/fs.h: _IOR('f', 1, long), _IOW('f', 2, long) (the kernel reads an int), and the
# attribute chattr +S sets.
_LONG = struct.calcsize("l") << 16
FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, FS_SYNC_FL = 0x80006601 | _LONG, 0x40006602 | _LONG, 0x8


def log_to_both(default: FileWriter, forced: FileWriter, path: Path) -> None:
    """Log 100 records through each writer (both on *path*): all of them land, counted."""
    for writer, tag in ((default, "default"), (forced, "forced")):
        pipeline = sync_pipeline(writer)
        log = pipeline.get_logger(tag)
        for n in range(100):
            log.info(text(tag, n))
        pipeline.close()
        assert {"emitted": 100, "written": 100, "filtered": 0, "errors": 0} == pipeline.stats()
    expected = [text(tag, n) for tag in ("default", "forced") for n in range(100)]
    assert_each_once(lines_on_disk(path), expected)


def test_a_file_with_the_sync_attribute_does_not_hold_by_default(tmp_path: Path) -> None:
    """chattr +S makes every write of the file wait for the disk (hundreds of
    microseconds on an SSD, with every other thread waiting too if the lock were held):
    the default releases the lock there; hold_gil=True still holds; records land."""
    path = tmp_path / "synced.log"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        attributes = struct.pack("i", 0)
        try:
            attributes = fcntl.ioctl(fd, FS_IOC_GETFLAGS, attributes)
            flags = struct.unpack("i", attributes)[0] | FS_SYNC_FL
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("i", flags))
        except OSError as exc:
            pytest.skip(f"no sync attribute on this filesystem: {exc}")
        assert not gil_held_writes(fd)
        assert gil_held_writes(fd, True) is USING_SPEEDUPS
    finally:
        os.close(fd)
    default, forced = FileWriter(path), FileWriter(path, hold_gil=True)
    assert (False, USING_SPEEDUPS) == (default.holds_gil, forced.holds_gil)
    log_to_both(default, forced, path)


def test_a_filesystem_mounted_sync_does_not_hold_by_default(tmp_path: Path) -> None:
    """A tmpfs mounted ``sync`` (the mount option that makes every write synchronous on
    a disk filesystem): the default releases the lock; hold_gil=True holds; records land."""
    with mounted_tmpfs(tmp_path / "synced", "sync,size=1m") as mount:
        path = mount / "app.log"
        default, forced = FileWriter(path), FileWriter(path, hold_gil=True)
        assert (False, USING_SPEEDUPS) == (default.holds_gil, forced.holds_gil)
        log_to_both(default, forced, path)


@pytest.mark.parametrize("flag", ["O_SYNC", "O_DSYNC"])
def test_a_descriptor_opened_for_synchronous_writes_does_not_hold(
    tmp_path: Path, flag: str
) -> None:
    """A descriptor opened O_SYNC or O_DSYNC waits for the disk at every write: not
    held, unless on any filesystem; the same file opened without it is, on /dev/shm."""
    folder = Path("/dev/shm") if Path("/dev/shm").is_dir() else tmp_path
    path = folder / f"kakashi-sync-{uuid.uuid4().hex}"
    synced = os.open(path, os.O_WRONLY | os.O_CREAT | getattr(os, flag))
    plain = os.open(path, os.O_WRONLY)
    try:
        assert (False, USING_SPEEDUPS) == (gil_held_writes(synced), gil_held_writes(synced, True))
        if folder != tmp_path:
            assert gil_held_writes(plain) is USING_SPEEDUPS
    finally:
        os.close(synced)
        os.close(plain)
        path.unlink()
