"""kakashi.writers.spool.SpoolingWriter: real files, real threads, real processes, and an
HttpWriter delivering to the local ``collector`` server."""

from __future__ import annotations

import contextlib
import errno
import gc
import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

import kakashi
from kakashi.writers.delivery import DeliveryError
from kakashi.writers.http import HttpWriter, Response
from kakashi.writers.spool import SpoolingWriter, SpoolInUseError
from tests.conftest import balanced, keeping_pipeline, patch_os_write, refusing_port, wait_or_kill

pytest.importorskip("urllib3")

ROOT = Path(kakashi.__file__).resolve().parent.parent


def closed_url() -> str:
    """The URL of a loopback port nothing listens on (connections are refused), held for
    the whole run so that no other process starts listening there."""
    return f"http://127.0.0.1:{refusing_port()}/"


class Always(list):  # type: ignore[type-arg]
    """The collector's answer list, never used up: every request gets *answer*."""

    def __init__(self, answer: Any) -> None:
        super().__init__([answer])
        self.answer = answer

    def pop(self, index: Any = -1) -> Any:
        return self.answer


class Switch:
    """A collector answer: 503 while ``down``, else 200."""

    def __init__(self) -> None:
        self.down = True

    def __call__(self, path: str, headers: Any, body: bytes) -> Any:
        return (503, {}, b"down") if self.down else (200, {}, b"{}")


def delivered(collector: Any, only: str | None = None) -> list[int]:
    """The ``i`` of every record the collector took (answered 200), in arrival order
    (only those POSTed to the path *only*, if given)."""
    ids = []
    for path, headers, body, status in list(collector.received):
        if status != 200 or (only is not None and path != only):
            continue
        if headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        ids.extend(json.loads(line)["i"] for line in body.splitlines())
    return ids


def lines(start: int, stop: int, pad: int = 0) -> list[bytes]:
    """Records ``{"i": n}`` for n in [start, stop), padded to a size if asked."""
    return [json.dumps({"i": n, "pad": "x" * pad}).encode() for n in range(start, stop)]


def until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll *predicate* until true; fail after *timeout* seconds (a liveness bound)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def books_balance(stats: dict[str, int]) -> bool:
    """Every record the spool was given is replayed, dropped or still held."""
    return bool(
        stats["recovered"] + stats["spooled"]
        == stats["replayed"] + stats["spool_dropped"] + stats["spool_records"]
    )


def spooling(url: str, directory: Path, **options: Any) -> SpoolingWriter:
    """A SpoolingWriter over an HttpWriter to *url*, retrying fast (tests)."""
    inner = HttpWriter(url, timeout=5, connect_timeout=2)
    options = {"retry_delay": 0.02, "max_delay": 0.2, **options}
    return SpoolingWriter(inner, directory, **options)


def segments(directory: Path) -> list[str]:
    """The spool's segment files."""
    return sorted(path.name for path in directory.glob("*.spool"))


# -- straight through, spooled, replayed ------------------------------------------------------


def test_a_batch_goes_straight_through_while_the_spool_is_empty(
    collector: Any, tmp_path: Path
) -> None:
    """With the collector up and nothing spooled, a batch is one request and no file."""
    writer = spooling(collector.url, tmp_path)
    writer.write(lines(0, 3))
    stats = writer.delivery_stats()
    writer.close()
    assert [0, 1, 2] == delivered(collector)
    assert (3, 0, 0) == (stats["delivered"], stats["spooled"], stats["spool_bytes"])
    assert [] == segments(tmp_path)


def test_a_down_collector_s_records_are_spooled_then_delivered_in_order_once(
    collector: Any, tmp_path: Path
) -> None:
    """Collector down: records go to disk (no drop, no error in the backend); collector up:
    all delivered, in order, none twice; later records go straight through again."""
    switch = Switch()
    collector.answers = Always(switch)
    writer = spooling(collector.url, tmp_path)
    pipeline = keeping_pipeline(writer, batch_size=50)
    log = pipeline.get_logger("spool")
    for i in range(300):
        log.info("r", i=i)
    assert pipeline.flush(10)
    down = writer.delivery_stats()
    switch.down = False
    until(lambda: writer.delivery_stats()["spool_records"] == 0)
    for i in range(300, 400):
        log.info("r", i=i)
    assert pipeline.flush(10)
    stats = pipeline.stats()
    after = writer.delivery_stats()
    pipeline.shutdown(10)

    assert list(range(400)) == delivered(collector)
    assert (0, 300, 300) == (down["delivered"], down["spooled"], down["spool_records"])
    assert down["spool_bytes"] > 0
    assert (300, 100, 0) == (after["replayed"], after["delivered"], after["spool_dropped"])
    assert books_balance(after)
    assert balanced(stats)
    assert 0 == stats["messages_dropped"]
    assert [] == segments(tmp_path)  # a replayed spool leaves no file behind


def test_records_the_collector_rejects_stay_dropped_with_their_reason(
    collector: Any, tmp_path: Path
) -> None:
    """A 400 is no reason to spool: the inner writer's verdict is raised for the backend."""
    collector.answers.append((400, {}, b"bad"))
    writer = spooling(collector.url, tmp_path)
    with pytest.raises(DeliveryError) as caught:
        writer.write(lines(0, 2))
    stats = writer.delivery_stats()
    writer.close()
    assert {0: "http_400", 1: "http_400"} == caught.value.dropped
    assert () == caught.value.retry
    assert (0, 0) == (stats["spooled"], stats["spool_records"])


class Bulk(HttpWriter):
    """A bulk API: its first answer says item 1 is worth retrying and item 2 is bad."""

    answered = 0

    def check(self, batch: Sequence[bytes], response: Response) -> None:
        self.answered += 1
        if self.answered == 1:
            raise DeliveryError("bulk", retry=[1], dropped={2: "mapping"})


def test_a_partial_bulk_failure_spools_only_the_records_worth_retrying(
    collector: Any, tmp_path: Path
) -> None:
    """Item 0 delivered, item 1 spooled and replayed, item 2 raised as dropped."""
    writer = SpoolingWriter(Bulk(collector.url), tmp_path, retry_delay=0.02)
    with pytest.raises(DeliveryError) as caught:
        writer.write(lines(0, 3))
    until(lambda: writer.delivery_stats()["spool_records"] == 0)
    stats = writer.delivery_stats()
    writer.close()
    assert {2: "mapping"} == caught.value.dropped
    assert "mapping" == caught.value.reason
    assert [0, 1, 2, 1] == delivered(collector)  # the server saw 2 and refused it
    assert (1, 1, 1) == (stats["delivered"], stats["spooled"], stats["replayed"])


def test_flush_replays_now_and_close_keeps_the_files(collector: Any, tmp_path: Path) -> None:
    """A flush skips the replay's backoff; a closed writer leaves its spool on disk."""
    switch = Switch()
    collector.answers = Always(switch)
    writer = spooling(
        collector.url, tmp_path, retry_delay=3600.0, max_delay=3600.0, flush_timeout=60.0
    )
    writer.write(lines(0, 5))
    writer.write(lines(5, 10))
    switch.down = False
    writer.flush()  # the backoff is an hour: only a flush can have it tried now
    assert list(range(10)) == delivered(collector)
    writer.write(lines(10, 11))
    switch.down = True
    writer.write(lines(11, 13))
    writer.close()
    held = segments(tmp_path)
    assert 1 == len(held)
    reopened = spooling(collector.url, tmp_path)
    assert 2 == reopened.delivery_stats()["recovered"]
    reopened.close()


# -- across processes -------------------------------------------------------------------------

CHILD = """
import json, sys, time
from kakashi.core.async_backend import AsyncConfig
from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
from kakashi.core.pipeline import PipelineConfig
from kakashi.writers.http import HttpWriter
from kakashi.writers.spool import SpoolingWriter

url, directory, mode, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
writer = SpoolingWriter(
    HttpWriter(url, timeout=5, connect_timeout=2), directory,
    replay_batch=100, retry_delay=0.02, max_delay=0.2,
)
pipeline = AsyncPipeline(AsyncPipelineConfig(
    pipeline_config=PipelineConfig(min_level="DEBUG", writers=(writer,)),
    async_config=AsyncConfig(batch_size=100),
))
log = pipeline.get_logger("child")
if mode.startswith("spool"):
    for i in range(count):
        log.info("r", i=i)
    assert pipeline.flush(30)
    print("spooled", writer.delivery_stats()["spooled"], flush=True)
    i = count
    while mode == "spool-forever":  # until killed, spooling all the while
        log.info("r", i=i)
        i += 1
else:  # replay what the spool holds, until done or killed
    print("started", json.dumps(writer.delivery_stats()), flush=True)
    while writer.delivery_stats()["spool_records"]:
        time.sleep(0.01)
pipeline.shutdown(10)
print("done", json.dumps(writer.delivery_stats()), flush=True)
"""


def child(tmp_path: Path, url: str, directory: Path, mode: str, count: int = 0) -> Any:
    """Start the child script: it logs through an AsyncPipeline with a spooling writer."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, str(script), url, str(directory), mode, str(count)]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)


def finish(process: Any) -> dict[str, int]:
    """Wait for a child to end well; return its writer's delivery stats."""
    out, _ = process.communicate(timeout=60)
    assert 0 == process.returncode, out
    last = out.strip().splitlines()[-1]
    assert last.startswith("done ")
    stats: dict[str, int] = json.loads(last[5:])
    return stats


def test_a_new_process_replays_what_the_last_one_spooled(collector: Any, tmp_path: Path) -> None:
    """Spooled here (collector down), replayed by another process (collector up)."""
    spool = tmp_path / "spool"
    writer = spooling(closed_url(), spool)
    for start in range(0, 500, 100):
        writer.write(lines(start, start + 100))
    assert 500 == writer.delivery_stats()["spool_records"]
    writer.close()
    stats = finish(child(tmp_path, collector.url, spool, "replay"))
    assert list(range(500)) == delivered(collector)
    assert (500, 500, 0) == (stats["recovered"], stats["replayed"], stats["spool_dropped"])
    assert [] == segments(spool)


def test_kill_9_while_spooling_loses_no_spooled_record(collector: Any, tmp_path: Path) -> None:
    """A process spooling (collector down) is killed; the next one delivers every record
    the first had spooled, each once, in order, with nothing lost in between."""
    spool = tmp_path / "spool"
    first = child(tmp_path, closed_url(), spool, "spool-forever", 1000)
    assert first.stdout is not None
    assert "spooled 1000" == first.stdout.readline().strip()
    until(lambda: sum(path.stat().st_size for path in spool.glob("*.spool")) > 100_000)
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    first.stdout.close()
    stats = finish(child(tmp_path, collector.url, spool, "replay"))
    ids = delivered(collector)

    assert len(ids) >= 1000  # at least what it said was spooled, more if it got further
    assert list(range(len(ids))) == ids  # in order, none twice, none missing
    assert (len(ids), len(ids), 0) == (
        stats["recovered"],
        stats["replayed"],
        stats["spool_dropped"],
    )


def test_kill_9_between_a_delivery_and_its_commit_replays_one_batch_twice(
    collector: Any, tmp_path: Path
) -> None:
    """The worst moment to die: the collector has taken a replay batch, the process is
    killed before it commits it. The next process delivers that batch again (exactly one
    batch twice, the stated bound) and everything after it once; nothing is lost."""
    spool = tmp_path / "spool"
    finish(child(tmp_path, closed_url(), spool, "spool", 2000))
    arrived = threading.Event()

    def taken_then_killed(path: str, headers: Any, body: bytes) -> Any:
        arrived.set()
        return (200, {}, b"{}", 2.0)  # stored once the sender is dead (see below)

    collector.answers = [(200, {}, b"{}")] * 5 + [taken_then_killed]
    replaying = child(tmp_path, collector.url, spool, "replay")
    assert arrived.wait(60)  # the sixth replay batch is at the collector
    replaying.send_signal(signal.SIGKILL)
    replaying.wait(30)
    assert replaying.stdout is not None
    replaying.stdout.close()
    until(lambda: len(delivered(collector)) == 600)  # the collector stored it
    stats = finish(child(tmp_path, f"{collector.url}/next", spool, "replay"))
    ids = delivered(collector)

    assert list(range(600)) == delivered(collector, only="/")
    assert list(range(500, 2000)) == delivered(collector, only="/next")
    assert 2100 == len(ids)  # records 500 to 599 twice: one replay batch
    assert (1500, 1500, 0) == (stats["recovered"], stats["replayed"], stats["spool_dropped"])
    assert [] == segments(spool)


def test_a_second_writer_on_a_spool_directory_is_refused(tmp_path: Path) -> None:
    """One owner per directory, in this process and in another one; released on close."""
    writer = spooling(closed_url(), tmp_path)
    with pytest.raises(SpoolInUseError, match=f"process {os.getpid()}"):
        spooling(closed_url(), tmp_path)
    probe = (
        "import sys\nfrom kakashi.writers.spool import SpoolingWriter, SpoolInUseError\n"
        "from kakashi.writers.basic import NullWriter\n"
        "try:\n    SpoolingWriter(NullWriter(), sys.argv[1])\n"
        "except SpoolInUseError as exc:\n    print('refused', exc)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    other = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path)], env=env, capture_output=True, text=True
    )
    writer.close()
    assert other.stdout.startswith("refused"), other.stderr
    spooling(closed_url(), tmp_path).close()  # free again


def test_a_writer_dropped_without_close_lets_the_directory_go(tmp_path: Path) -> None:
    """A SpoolingWriter let go without close() (nothing spooled, so no replay thread
    keeps it) closes its descriptors, its lock with them: another writer of this
    process takes the directory. (They stayed open, and the directory was refused as
    "in use by another SpoolingWriter (process <this one>)".)"""
    inner = Stub()
    writer = SpoolingWriter(inner, tmp_path)
    writer.write(lines(0, 5))  # straight through
    lock = os.path.realpath(tmp_path / "lock")

    def open_on_the_lock() -> int:
        found = 0
        for name in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                found += os.readlink(f"/proc/self/fd/{name}") == lock
        return found

    assert 1 == open_on_the_lock()
    del writer
    gc.collect()
    assert 0 == open_on_the_lock()
    again = SpoolingWriter(inner, tmp_path)  # not refused
    again.write(lines(5, 10))
    again.close()
    assert lines(0, 10) == inner.received


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_a_forked_child_does_not_touch_its_parent_s_spool(collector: Any, tmp_path: Path) -> None:
    """The child starts with fresh counts, delivers straight through (its failures are
    its backend's to retry or count) and never replays or appends to the parent's spool;
    the parent replays its own records afterwards."""
    switch = Switch()
    collector.answers = Always(switch)
    writer = spooling(
        collector.url, tmp_path, retry_delay=3600.0, max_delay=3600.0, flush_timeout=60.0
    )
    writer.write(lines(0, 10))
    before = {name: (tmp_path / name).read_bytes() for name in segments(tmp_path)}
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            stats = writer.delivery_stats()
            if stats["spooled"] or stats["spool_records"]:
                code = 2
            try:
                writer.write(lines(100, 101))
                code = code or 3  # 503: the child's failure must reach its backend
            except DeliveryError:
                pass
            switch.down = False  # the child's copy of the switch: the parent's stays down
            writer.flush()
            writer.close()
        except BaseException:
            code = 4
        os._exit(code)
    status = wait_or_kill(pid)
    after = {name: (tmp_path / name).read_bytes() for name in segments(tmp_path)}
    switch.down = False
    writer.flush()
    ids = delivered(collector)
    writer.close()
    assert 0 == os.waitstatus_to_exitcode(status)
    assert before == after
    assert list(range(10)) == ids


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_a_forked_child_s_records_left_at_shutdown_are_counted_dropped(tmp_path: Path) -> None:
    """A forked child cannot keep records in its parent's spool: what its backend still
    holds at shutdown (the collector is down) is counted as dropped by the backend, not
    as spooled, and as ``spool_dropped:forked_child`` by the writer."""
    writer = spooling(f"http://127.0.0.1:{refusing_port()}/ingest", tmp_path, flush_timeout=5.0)
    pipeline = keeping_pipeline(writer, batch_size=10, shutdown_timeout=1.0)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            log = pipeline.get_logger("child")
            for i in range(5):
                log.info("r", i=i)
            pipeline.shutdown(1.0)
            stats = pipeline.stats()
            (entry,) = stats["writers"]
            if (stats["messages_dropped"], entry["spooled_at_shutdown"]) != (5, 0):
                code = 2
            elif not balanced(stats):
                code = 3
            elif 5 != writer.delivery_stats().get("spool_dropped:forked_child"):
                code = 4
        except BaseException:
            code = 5
        os._exit(code)
    status = wait_or_kill(pid)
    pipeline.shutdown(5.0)
    assert 0 == os.waitstatus_to_exitcode(status)


# -- the size cap and the disk --------------------------------------------------------------


def test_a_full_spool_drops_its_oldest_records_and_counts_them(
    collector: Any, tmp_path: Path
) -> None:
    """The spool files never exceed max_bytes; whole oldest segments go, counted as
    spool_full; what is left is delivered in order, and the counts add up."""
    writer = spooling(closed_url(), tmp_path, max_bytes=4096, segment_bytes=1024)
    sizes = []
    for start in range(0, 1000, 10):
        writer.write(lines(start, start + 10, pad=20))
        sizes.append(writer.delivery_stats()["spool_bytes"])
    writer.write(lines(1000, 1200, pad=20))  # one batch larger than the whole spool
    sizes.append(writer.delivery_stats()["spool_bytes"])
    full = writer.delivery_stats()
    writer.inner.url = collector.url  # type: ignore[attr-defined]
    until(lambda: writer.delivery_stats()["spool_records"] == 0)
    stats = writer.delivery_stats()
    writer.close()
    ids = delivered(collector)

    assert max(sizes) <= 4096
    assert 1200 == stats["spooled"]
    assert stats["spool_dropped:spool_full"] == stats["spool_dropped"] > 1000
    assert sorted(set(ids)) == ids  # in order, none twice
    assert 1199 == ids[-1]
    assert 1200 == len(ids) + stats["spool_dropped"]
    assert books_balance(full) and books_balance(stats)


def test_a_failing_disk_counts_the_records_and_raises_nothing(
    collector: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: Any
) -> None:
    """ENOSPC on a spool file: the batch is counted (spool_write_failed), reported once,
    no torn record is left; spooling resumes when the disk does."""
    writer = spooling(closed_url(), tmp_path)
    writer.write(lines(0, 10))
    real_write = os.write
    full = True

    def write(fd: int, data: Any) -> int:
        if full and os.readlink(f"/proc/self/fd/{fd}").endswith(".spool"):
            real_write(fd, bytes(data)[:7])  # a torn start, as a full disk leaves it
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    patch_os_write(monkeypatch, write)
    for start in range(10, 40, 10):
        assert writer.write(lines(start, start + 10)) is None
    full = False
    writer.write(lines(40, 50))
    writer.inner.url = collector.url  # type: ignore[attr-defined]
    until(lambda: writer.delivery_stats()["spool_records"] == 0)
    stats = writer.delivery_stats()
    writer.close()
    assert [*range(10), *range(40, 50)] == delivered(collector)
    assert 30 == stats["spool_dropped:spool_write_failed"] == stats["spool_dropped"]
    assert books_balance(stats)
    assert 1 == capfd.readouterr().err.count("No space left on device")


@pytest.fixture(name="small_fs")
def _small_fs(tmp_path: Path) -> Any:
    """A 64 KiB tmpfs mounted for the test (skips where mounting is not allowed)."""
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
        capture_output=True, text=True,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip() or result.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_filesystem_under_the_spool(collector: Any, small_fs: Path) -> None:
    """A real full disk (a 64 KiB tmpfs): the records that did not fit are counted, the
    ones that did are all delivered; logged == delivered + spool_dropped."""
    writer = spooling(closed_url(), small_fs, max_bytes=1 << 20, segment_bytes=16 * 1024)
    for start in range(0, 2000, 50):
        writer.write(lines(start, start + 50, pad=40))
    full = writer.delivery_stats()
    writer.inner.url = collector.url  # type: ignore[attr-defined]
    until(lambda: writer.delivery_stats()["spool_records"] == 0)
    stats = writer.delivery_stats()
    writer.close()
    ids = delivered(collector)
    assert full["spool_dropped:spool_write_failed"] > 0
    assert 2000 == len(ids) + stats["spool_dropped"]
    assert sorted(set(ids)) == ids
    assert books_balance(stats)


def test_a_damaged_tail_is_cut_off_and_counted(collector: Any, tmp_path: Path) -> None:
    """Garbage after the last whole record (a torn write) is cut off and counted once;
    every whole record is still delivered."""
    writer = spooling(closed_url(), tmp_path)
    writer.write(lines(0, 20))
    writer.close()
    (name,) = segments(tmp_path)
    with open(tmp_path / name, "ab") as file:
        file.write(b"\x00\x00\x01\x00torn")
    reopened = spooling(collector.url, tmp_path)
    until(lambda: reopened.delivery_stats()["spool_records"] == 0)
    stats = reopened.delivery_stats()
    reopened.close()
    assert list(range(20)) == delivered(collector)
    assert (20, 1) == (stats["recovered"], stats["spool_dropped:spool_corrupt"])


def test_records_may_hold_any_bytes(collector: Any, tmp_path: Path) -> None:
    """Newlines and non-ASCII in a record survive the spool unchanged (frames, not lines)."""
    collector.answers.append((503, {}, b""))
    inner = HttpWriter(collector.url, compression=None)
    writer = SpoolingWriter(inner, tmp_path, retry_delay=0.02)
    record = '{"i":0,"m":"a\\nb"}\n{"i":1,"m":"é"}'.encode()
    writer.write([record])
    until(lambda: writer.delivery_stats()["spool_records"] == 0)
    writer.close()
    assert record + b"\n" == collector.received[-1][2]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_bytes": 100}, "max_bytes must be an int >= 1024"),
        ({"segment_bytes": 10}, "segment_bytes must be an int >= 64"),
        ({"max_bytes": 4096, "segment_bytes": 8192}, "segment_bytes must be at most max_bytes"),
        ({"replay_batch": 0}, "replay_batch must be an int >= 1"),
        ({"retry_delay": -1}, "retry_delay must be"),
        ({"flush_timeout": float("nan")}, "flush_timeout must be"),
    ],
)
def test_bad_configuration_is_refused_at_construction(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    """Each bad option is a ValueError that names it."""
    with pytest.raises(ValueError, match=message):
        SpoolingWriter(HttpWriter(closed_url()), tmp_path, **options)


def test_inner_must_be_a_writer(tmp_path: Path) -> None:
    """Something without write/flush/close is a TypeError."""
    with pytest.raises(TypeError, match="inner must be a writer"):
        SpoolingWriter(object(), tmp_path)  # type: ignore[arg-type]


def test_many_batches_counted_exactly(collector: Any, tmp_path: Path) -> None:
    """Batches arriving while a replay is failing and succeeding by turns: each record
    is delivered once, in order (no record overtakes the spool)."""
    answers = Counter[str]()

    def flaky(path: str, headers: Any, body: bytes) -> Any:
        answers["n"] += 1
        return (503, {}, b"") if answers["n"] % 3 == 0 else (200, {}, b"{}")

    collector.answers = Always(flaky)
    writer = spooling(collector.url, tmp_path, replay_batch=7, max_delay=0.04)
    for start in range(0, 360, 12):
        writer.write(lines(start, start + 12))
    until(lambda: writer.delivery_stats()["spool_records"] == 0)
    stats = writer.delivery_stats()
    writer.close()
    assert list(range(360)) == delivered(collector)
    assert 360 == stats["delivered"] + stats["replayed"]
    assert books_balance(stats)


def test_the_cap_deleting_the_file_being_replayed_loses_nothing_uncounted(
    collector: Any, tmp_path: Path
) -> None:
    """A slow collector and a tiny spool: files are deleted for room while the replay
    delivers from them; what the replay holds is still delivered, the rest counted, in
    order, none twice."""
    collector.answers = [(503, {}, b"")]  # the first batch is spooled; then slow answers
    slow = (200, {}, b"{}", 0.01)
    collector.answers.extend([slow] * 2000)
    writer = spooling(collector.url, tmp_path, max_bytes=4096, segment_bytes=1024, replay_batch=5)
    for start in range(0, 1000, 5):
        writer.write(lines(start, start + 5, pad=20))
    until(lambda: writer.delivery_stats()["spool_records"] == 0)
    stats = writer.delivery_stats()
    writer.close()
    ids = delivered(collector)
    assert sorted(set(ids)) == ids
    assert 999 == ids[-1]
    assert 1000 == len(ids) + stats["spool_dropped:spool_full"]
    assert stats["spool_dropped"] == stats["spool_dropped:spool_full"] > 0
    assert books_balance(stats)


def test_a_flush_while_the_collector_is_down_returns_after_one_failed_attempt(
    tmp_path: Path,
) -> None:
    """flush() does not wait out its (here: hour-long) bound when the attempt it asked
    for failed: the collector is down, waiting would not help."""
    writer = spooling(closed_url(), tmp_path, retry_delay=3600.0, flush_timeout=3600.0)
    writer.write(lines(0, 3))
    flushing = threading.Thread(target=writer.flush)
    flushing.start()
    flushing.join(60)
    returned = not flushing.is_alive()
    writer.close()
    flushing.join()
    assert returned
    assert 3 == writer.delivery_stats()["spool_records"]


def test_the_spool_benchmark_delivers_every_record_once(tmp_path: Path) -> None:
    """benchmarks/spool.py runs; each of its runs delivered every record, once."""
    script = ROOT / "benchmarks" / "spool.py"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, str(script), "--records", "2000", "--directory", str(tmp_path)]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert 0 == result.returncode, result.stderr
    rows = [line.split("|") for line in result.stdout.splitlines() if line.startswith("| ")]
    counts = {row[1].strip(): row[3].strip() for row in rows[2:]}
    assert "2,000" == counts["replay (fsync=False)"] == counts["replay (fsync=True)"]
    assert "2,000" == counts["direct, HttpWriter"] == counts["direct, SpoolingWriter"]


class Stub:
    """An inner writer without a network: refuses while ``down``; when up, gives up on
    the last ``give_up`` records of a batch by returning their count (the Writer
    contract's int)."""

    concurrent = True

    def __init__(self) -> None:
        self.down = False
        self.give_up = 0
        self.received: list[bytes] = []

    def write(self, batch: Sequence[bytes]) -> int | None:
        if self.down:
            raise ConnectionRefusedError("down")
        kept = len(batch) - self.give_up
        self.received.extend(batch[:kept])
        return self.give_up or None

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_spool_keeps_what_the_backend_hands_it_at_shutdown(tmp_path: Path) -> None:
    """spool(lines) queues behind the spool and is replayed; after close it counts the
    lines it can no longer keep (spool_closed) instead of raising."""
    stub = Stub()
    writer = SpoolingWriter(stub, tmp_path, retry_delay=0.02, flush_timeout=60.0)
    writer.spool([b"a", b"b"])
    writer.flush()
    writer.close()
    writer.spool([b"c"])
    stats = writer.delivery_stats()
    assert [b"a", b"b"] == stub.received
    assert (3, 2, 1) == (stats["spooled"], stats["replayed"], stats["spool_dropped:spool_closed"])
    assert books_balance(stats)


def test_a_plain_exception_spools_from_written_on_and_an_int_counts_as_given_up(
    tmp_path: Path,
) -> None:
    """Any exception from the inner writer spools the batch from its ``written`` on; on
    replay, an int returned by the inner writer is counted (writer_dropped)."""
    stub = Stub()
    stub.down = True
    writer = SpoolingWriter(stub, tmp_path, retry_delay=3600.0, flush_timeout=60.0)
    assert writer.write([b"a", b"b", b"c"]) is None
    stub.down = False
    stub.give_up = 1
    writer.flush()
    stats = writer.delivery_stats()
    writer.close()
    assert [b"a", b"b"] == stub.received
    assert (3, 2, 1) == (stats["spooled"], stats["replayed"], stats["spool_dropped:writer_dropped"])
    assert books_balance(stats)


def test_a_spooled_writer_gets_waiting_batches_joined_as_the_wrapped_one_would(
    tmp_path: Path,
) -> None:
    """SpoolingWriter passes on the wrapped writer's ``max_batch_records`` (not its
    ``max_in_flight``): batches waiting behind a slow write reach the wrapped writer
    joined, in order, every record once."""
    from tests.test_delivery_join import Held, fall_behind, numbers, packed

    http = SpoolingWriter(HttpWriter("http://127.0.0.1:9/"), tmp_path / "a")
    assert 10_000 == http.max_batch_records
    http.close()
    inner = Held(25)
    inner.max_in_flight = 2  # type: ignore[attr-defined]
    spool = SpoolingWriter(inner, tmp_path / "b")
    assert 25 == spool.max_batch_records
    assert not hasattr(spool, "max_in_flight")
    pipe = keeping_pipeline(spool, batch_size=10)
    sizes = fall_behind(pipe, inner, 5)
    inner.release.set()
    assert pipe.flush(10).complete
    assert [1, *packed(sizes, 25)] == [len(call) for call in inner.calls]
    assert list(range(51)) == numbers(inner.delivered)
    assert balanced(pipe.stats())
    pipe.shutdown(5)
    plain = SpoolingWriter(Held(None), tmp_path / "c")
    assert 0 == plain.max_batch_records
    plain.close()


def test_the_replay_backoff_stays_within_max_delay(tmp_path: Path) -> None:
    """The wait between replay attempts doubles from ``retry_delay``, is capped at
    ``max_delay`` and then spread over its upper half (so processes that failed together
    do not all retry together), unless the server's ``Retry-After`` asks for longer."""
    writer = SpoolingWriter(Stub(), tmp_path, retry_delay=1.0, max_delay=30.0)
    try:
        waits = [writer._backoff(tries, None) for tries in range(1, 12) for _ in range(200)]
        assert max(waits) <= 30.0
        assert min(writer._backoff(1, None) for _ in range(200)) >= 0.5
        capped = {round(writer._backoff(20, None), 3) for _ in range(200)}
        assert len(capped) > 100 and min(capped) >= 15.0  # spread out, not all at the cap
        late = DeliveryError("busy", retry_after=120.0)
        assert 120.0 == writer._backoff(20, late)
    finally:
        writer.close()


class _Down:
    """An inner writer whose collector is down."""

    def write(self, batch: Any) -> None:
        raise ConnectionRefusedError("collector down")

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_an_oversize_batch_at_shutdown_is_counted_as_far_as_the_spool_kept_it(
    tmp_path: Path,
) -> None:
    """A batch larger than the whole spool, handed over at shutdown: the spool keeps its
    newest records and says how many; the backend counts those as spooled and the rest
    as dropped (it counted all of them as spooled)."""
    from kakashi.core.async_backend import _Lane

    spool = SpoolingWriter(_Down(), tmp_path, max_bytes=1024, segment_bytes=1024)
    pipe = keeping_pipeline(spool)
    try:
        batch = [b'{"n":%03d,"pad":"%s"}' % (i, b"x" * 80) for i in range(30)]
        lane = _Lane(pipe.backend, spool)
        pipe.backend._stopping.set()  # what a shutdown's lane sees
        lost = lane.left_over(batch, "shutdown")
        kept = spool.delivery_stats()["spool_records"]
        assert 0 < kept < 30
        assert {"shutdown": 30 - kept} == lost
        assert kept == pipe.backend._stats(spool)["spooled_at_shutdown"]
        assert 30 - kept == spool.delivery_stats()["spool_dropped:spool_full"]
    finally:
        pipe.backend._stopping.clear()
        pipe.shutdown(2.0)
        spool.close()


def test_an_interrupt_in_a_spool_write_leaves_no_torn_frame_and_counts_the_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ctrl-C (or a signal handler's SystemExit) between two writes of one batch: the
    part written is cut off, the batch counted as dropped, the interrupt goes on up; the
    books of the spool balance, and a record spooled afterwards survives a restart."""
    import kakashi.writers.spool as spool_module

    writer = SpoolingWriter(_Down(), tmp_path, retry_delay=3600.0, max_delay=3600.0)
    writer.spool([b'{"n":0}'])
    real_write = os.write
    calls = []

    def short_then_interrupted(fd: int, data: Any) -> int:
        calls.append(fd)
        if len(calls) == 1:
            return real_write(fd, bytes(data)[:5])  # a short write, as a signal causes
        raise KeyboardInterrupt

    monkeypatch.setattr(spool_module.os, "write", short_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        writer.spool([b'{"n":1}', b'{"n":2}'])
    monkeypatch.setattr(spool_module.os, "write", real_write)
    assert 1 == writer.spool([b'{"n":3}'])
    stats = writer.delivery_stats()
    assert (2, 2) == (stats["spool_records"], stats["spool_dropped:spool_write_failed"])
    assert books_balance(stats)
    writer.close()
    again = SpoolingWriter(_Down(), tmp_path, retry_delay=3600.0, max_delay=3600.0)
    try:
        stats = again.delivery_stats()
        assert (2, 0) == (stats["recovered"], stats["spool_dropped"])
    finally:
        again.close()
