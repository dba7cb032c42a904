"""A worker's claim on the GIL (kakashi._speedups claim_gil), with real threads and a
real fork.

In the compiled build a thread that puts a record while a claiming worker waits for the
GIL hands it over; never to itself, never for a claim gone stale (the worker waits on
something else), never in a forked child for a parent's worker. The pure twin only
counts claims. Both builds: claims nest, ``unclaimed`` pauses and restores one.
(``write_releasing_gil`` is tested beside ``write_holding_gil``, in test_sync_file_path.)
"""

from __future__ import annotations

import ast
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kakashi import USING_SPEEDUPS
from kakashi._speedups import (
    BLOCK,
    DROP_OLDEST,
    Record,
    RecordQueue,
    claim_counts,
    claim_gil,
    claiming,
    handed_over_here,
    park_counts,
    unclaim_gil,
    unclaimed,
    write_releasing_gil,
    yield_gil,
)
from tests.conftest import Keeper, keeping_pipeline

BOUND = 60.0  # seconds: a deadline for a hung test, never a measure
compiled = pytest.mark.skipif(not USING_SPEEDUPS, reason="claims act in the compiled build")


def queue(capacity: int = 1_000_000, hand_over_at: int = 0) -> RecordQueue:
    """A queue whose puts hand the GIL over from *hand_over_at* records on."""
    q = RecordQueue(
        capacity, BLOCK, 1.0, lambda: None, lambda record, reason: None, lambda record: True
    )
    q.hand_over_at = hand_over_at
    return q


class ClaimingWorker:
    """A thread that claims the GIL and makes long releases in a loop (256 KiB writes to
    a file, as a worker renders and writes), until stopped or *enough* says so."""

    def __init__(self, path: Path, enough: Callable[[], bool] = lambda: False) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        self.enough = enough
        self.writes = 0
        self.stop = threading.Event()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        claim_gil()
        try:
            deadline = time.monotonic() + BOUND
            while not (self.stop.is_set() or self.enough()) and time.monotonic() < deadline:
                write_releasing_gil(self.fd, b"x" * 262_144)
                os.lseek(self.fd, 0, os.SEEK_SET)
                self.writes += 1
        finally:
            unclaim_gil()
            self.done.set()

    def __enter__(self) -> ClaimingWorker:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(BOUND)
        os.close(self.fd)


class HungClaim:
    """A thread that claims the GIL and then waits on an event without pausing its claim,
    as a worker whose write hung (in Python: the turn passes on, the claim stays)."""

    def __init__(self) -> None:
        self.claimed = threading.Event()
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        claim_gil()
        try:
            self.claimed.set()
            self.release.wait(BOUND)
        finally:
            unclaim_gil()

    def __enter__(self) -> HungClaim:
        self.thread.start()
        assert self.claimed.wait(BOUND)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.thread.join(BOUND)


def test_claims_nest_and_unclaimed_restores_the_claim() -> None:
    assert not claiming()
    claim_gil()
    try:
        claim_gil()
        assert claiming()
        unclaim_gil()
        assert claiming()  # the outer claim stands
        assert 3 == unclaimed(max, 1, 3, 2)
        assert claiming()
        with pytest.raises(ZeroDivisionError):
            unclaimed(lambda: 1 / 0)
        assert claiming()  # restored when the call raises too
    finally:
        unclaim_gil()
    assert not claiming()
    unclaim_gil()  # one too many: nothing to end, nothing goes negative
    assert not claiming()


def test_without_a_claim_nobody_hands_over() -> None:
    before = claim_counts()
    q = queue()
    for i in range(10_000):
        q.put(i)
    assert before == claim_counts()
    assert 10_000 == q.size


def test_a_claiming_thread_never_hands_over_to_itself() -> None:
    """A worker whose writer or enricher logs puts records while it claims the GIL."""
    before = claim_counts()
    q = queue()
    claim_gil()
    try:
        for i in range(10_000):
            q.put(i)
    finally:
        unclaim_gil()
    assert before == claim_counts()


@compiled
def test_a_caller_hands_the_gil_to_a_worker_that_takes_it_back(tmp_path: Path) -> None:
    """The worker claims the GIL and makes long releases in a loop; the main thread,
    logging meanwhile, takes the GIL in those releases and hands it back when the worker
    wants it. (Whether a hand-over outlasts the claim's 0.5 ms depends on the machine's
    load: a worker descheduled meanwhile. It is not asserted.)"""
    handed, _ = claim_counts()
    q = queue(capacity=100)
    with ClaimingWorker(tmp_path / "data", lambda: claim_counts()[0] > handed) as worker:
        while not worker.done.is_set():
            q.put(None)
            if q.size == 100:
                q.drain(100)
    assert claim_counts()[0] > handed


@compiled
def test_a_stale_claim_is_handed_over_once_at_most() -> None:
    """A claiming worker that waits on something else (here an event; in production a
    lock another process holds, a hung disk) is not waited for: a caller hands over at
    most once, until the claim is 0.5 ms old, then logs on."""
    handed, waited = claim_counts()
    q = queue()
    with HungClaim():
        for i in range(20_000):
            q.put(i)
    assert claim_counts()[0] - handed <= 1
    # A hand-over, if any, ended because the claim went stale, not because the worker
    # let go (it is released only after the puts).
    assert claim_counts()[0] - handed == claim_counts()[1] - waited
    assert 20_000 == q.size


@compiled
def test_a_worker_a_put_woke_is_handed_the_gil_at_the_depth_once_at_most() -> None:
    """A put that wakes a sleeping worker for its batch marks it as wanting the GIL
    before it claims anything: a caller at the hand-over depth hands the GIL over
    (without that, the woken worker waited for the switch interval while the queue grew
    by thousands). Nobody takes it here: the hand-over is waited out, once, and the
    puts after it keep the GIL."""
    q = queue(hand_over_at=10)
    assert q.sleep(5)
    handed, waited = claim_counts()
    for i in range(9):
        q.put(i)  # the fifth wakes the worker; below the depth nobody hands over
    assert (handed, waited) == claim_counts()
    for i in range(1_000):
        q.put(i)
    assert (handed + 1, waited + 1) == claim_counts()


@compiled
def test_a_worker_gone_back_to_sleep_is_not_handed_the_gil() -> None:
    """The woken worker found too few records and sleeps again: a caller at the depth
    keeps the GIL."""
    q = queue(hand_over_at=10)
    assert q.sleep(5)
    for i in range(5):
        q.put(i)  # wakes it
    assert q.sleep(1_000)
    handed = claim_counts()
    for i in range(900):
        q.put(i)  # past the depth, short of the next wake
    assert handed == claim_counts()


@compiled
def test_a_queue_that_never_hands_over_does_not_for_a_woken_worker() -> None:
    q = queue(capacity=100)
    q.hand_over_at = 101  # gil_handover_depth=None
    assert q.sleep(5)
    handed = claim_counts()
    for i in range(100):
        q.put(i)
    assert handed == claim_counts()


@compiled
def test_a_flush_does_not_leave_the_worker_parked(tmp_path: Path) -> None:
    """A thread in ``flush`` waits for the worker and hands nothing over: a worker that
    parked for a hand-over at the end of each batch would sleep 2 ms out at each of the
    last batches (the flush of a 100,000-record burst took 5 ms instead of 1). No park
    times out during a flush. Every record lands once."""
    from kakashi.core.async_backend import AsyncConfig
    from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
    from kakashi.core.pipeline import PipelineConfig, file_writer

    path = tmp_path / "a.log"
    pipeline = AsyncPipeline(
        AsyncPipelineConfig(
            PipelineConfig(writers=(file_writer(path),)),
            AsyncConfig(max_queue_size=100_000, batch_size=1000),
        )
    )
    log = pipeline.get_logger("flush")
    timed_out = 0
    try:
        for burst in range(3):
            for i in range(30_000):
                log.info("m", burst=burst, i=i)
            before = park_counts()[1]
            assert pipeline.flush(BOUND)
            timed_out += park_counts()[1] - before
    finally:
        pipeline.shutdown(BOUND)
    assert 90_000 == len(path.read_bytes().splitlines())
    # (A park that began before the flush could time out before the flush says it waits.)
    assert timed_out <= 1, timed_out


@compiled
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_has_no_claims_of_its_parent(tmp_path: Path) -> None:
    """A fork, from a thread that claims the GIL, while a parent's worker keeps its claim
    fresh: in the child that worker does not exist, and its records are put without
    handing over to it; nor is the forking thread's claim the child's (its unclaim would
    count the child's claims below zero)."""
    read, write = os.pipe()
    try:
        with ClaimingWorker(tmp_path / "data") as worker:
            until = time.monotonic() + BOUND
            while worker.writes == 0 and time.monotonic() < until:
                time.sleep(0.001)
            claim_gil()
            try:
                pid = os.fork()
            except BaseException:
                unclaim_gil()
                raise
            if pid == 0:  # the child: no worker, no claim
                code = 1
                try:
                    inherited = claiming()
                    unclaim_gil()  # as the forking code goes on to do
                    q = queue()
                    before = claim_counts()
                    # A claim made and ended here: a fresh claim time, the count back to
                    # what the fork left, which must be none (else the puts hand over).
                    claim_gil()
                    unclaim_gil()
                    for i in range(1_000):
                        q.put(i)
                    os.write(write, repr((before, claim_counts(), inherited)).encode())
                    code = 0
                finally:
                    os._exit(code)
            unclaim_gil()
        os.close(write)
        write = -1
        answer = b""
        while chunk := os.read(read, 4096):
            answer += chunk
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(read)
        if write >= 0:
            os.close(write)
    assert 0 == os.waitstatus_to_exitcode(status)
    before, after, child_claiming = ast.literal_eval(answer.decode())
    assert before == after
    assert not child_claiming


@compiled
def test_below_the_depth_a_caller_never_hands_over(tmp_path: Path) -> None:
    """The same claiming worker, but the queue holds fewer records than its hand-over
    depth: the caller keeps the GIL (a call never waits for the worker)."""
    handed, _ = claim_counts()
    q = queue(capacity=100, hand_over_at=100)
    with ClaimingWorker(tmp_path / "data") as worker:
        deadline = time.monotonic() + BOUND
        while worker.writes < 200 and time.monotonic() < deadline:
            q.put(None)
            if q.size == 99:
                q.drain(99)
    assert worker.writes >= 200
    assert handed == claim_counts()[0]


@pytest.mark.parametrize(
    ("depth", "error"),
    [
        (-0.1, ValueError),
        (1.5, ValueError),
        (float("nan"), ValueError),
        (True, TypeError),
        ("0.5", TypeError),
    ],
)
def test_gil_handover_depth_is_checked(depth: Any, error: type[Exception]) -> None:
    from kakashi.core.async_backend import AsyncConfig

    with pytest.raises(error, match="gil_handover_depth"):
        AsyncConfig(gil_handover_depth=depth)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"gil_handover_depth": 0.25, "batch_size": 100}, 250),
        ({"gil_handover_depth": 0.25}, 400),  # never below two batches (of 200)
        ({}, 400),  # the default, 0: two batches
        ({"gil_handover_depth": 0, "batch_size": 100}, 200),
        ({"gil_handover_depth": 0.1, "batch_size": 10}, 100),  # the depth, above two batches
        ({"gil_handover_depth": 0, "batch_size": 800}, 1000),  # two batches: the whole queue
        ({"gil_handover_depth": 0, "enable_batching": False}, 2),  # batches of one record
        ({"gil_handover_depth": 1}, 1000),
        ({"gil_handover_depth": None}, 1001),  # never: more than the queue holds
    ],
)
def test_the_backend_sets_the_queue_depth(settings: dict[str, Any], expected: int) -> None:
    from kakashi.core.async_backend import AsyncBackend, AsyncConfig

    config = AsyncConfig(max_queue_size=1000, **settings)
    assert (None if expected == 1001 else expected) == config.handover_threshold
    backend = AsyncBackend(config)
    try:
        assert expected == backend.queue.hand_over_at
    finally:
        backend.shutdown(5)


def test_handing_over_from_two_batches_loses_nothing(tmp_path: Path) -> None:
    """Calls hand over from two batches on (depth 0: half this queue), with a file
    writer, a small queue that fills (callers block) and batches that split: every
    record lands once, in order."""
    from kakashi.core.async_backend import AsyncConfig
    from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
    from kakashi.core.pipeline import PipelineConfig, file_writer

    path = tmp_path / "out.log"
    pipeline = AsyncPipeline(
        AsyncPipelineConfig(
            PipelineConfig(writers=(file_writer(path),)),
            AsyncConfig(max_queue_size=2_000, batch_size=500, gil_handover_depth=0),
        )
    )
    log = pipeline.get_logger("claims")
    for i in range(50_000):
        log.info("order filled", order_id=i, price=101.25, qty=3, side="buy")
    assert pipeline.flush(BOUND)
    stats = pipeline.stats()
    pipeline.shutdown(BOUND)
    ids = [
        int(line.split(b'"order_id":')[1].split(b",")[0]) for line in path.read_bytes().splitlines()
    ]
    assert list(range(50_000)) == ids
    assert 0 == stats["messages_dropped"]


def test_batches_taken_one_after_another_are_one_claim(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker claims the GIL once for the batches it takes one after the other: no
    gap between two batches' claims, in which a caller handing the GIL over would stop
    waiting for the worker's next long release and sleep on the GIL the worker holds
    (to wake up tens of microseconds after the worker let it go)."""
    from kakashi.core import async_backend

    written: list[int] = []
    claims: list[int] = []  # the batches written when each claim began

    def counted_claim() -> None:
        claims.append(len(written))
        claim_gil()

    monkeypatch.setattr(async_backend, "claim_gil", counted_claim)
    release = threading.Event()

    class Gate(Keeper):
        """Holds the worker in its first batch's write until the others wait."""

        def write(self, batch: Any) -> None:
            release.wait(BOUND)
            written.append(len(batch))

    pipeline = keeping_pipeline(Gate(), max_queue_size=10_000, batch_size=100)
    log = pipeline.get_logger("claims")
    try:
        log.info("first")
        deadline = time.monotonic() + BOUND
        while not claims and time.monotonic() < deadline:  # the worker is in its turn
            time.sleep(0.001)
        for i in range(1_000):
            log.info("queued", i=i)
        release.set()
        assert pipeline.flush(BOUND)
    finally:
        pipeline.shutdown(BOUND)
    assert 1_001 == sum(written)
    assert len(written) >= 11  # ten batches and more, taken one after the other
    # Every batch was written in the first claim (a later one, when the flush wakes the
    # worker, finds the queue empty).
    assert [0, len(written)] == [*claims, len(written)][:2], claims


def record(sink: object) -> Record:
    made = Record(0, 20, "sinks", "m")
    made.sink = sink
    return made


def test_the_queue_knows_when_a_batch_goes_to_one_sink() -> None:
    """The compiled queue notes where sinks change as records are put, so the worker
    need not read each record of a batch to split it into runs; the pure twin never
    claims to know. Known is always true: a batch said to be of one sink is."""
    a, b = object(), object()
    q = queue()
    knows = USING_SPEEDUPS

    def drained(count: int) -> tuple[bool, list[object]]:
        batch = q.drain(count)
        return q.drained_one_sink, [getattr(r, "sink", r) for r in batch]

    for _ in range(5):
        q.put(record(a))
    assert (knows, [a] * 3) == drained(3)
    assert (knows, [a] * 2) == drained(5)
    for sink in (a, a, b, b):
        q.put(record(sink))
    assert (False, [a, a]) == drained(2)  # a change waits behind: not known
    assert (knows, [b, b]) == drained(2)  # from the change on
    for sink in (b, a, b):
        q.put(record(sink))
    assert (False, [b, a, b]) == drained(3)
    q.put("not a record")  # anything else queued is a sink of its own
    q.put(record(b))
    assert (False, ["not a record", b]) == drained(2)
    q.drain(10)
    # A dropped oldest record does not count: the change it held is gone with it.
    full = RecordQueue(3, DROP_OLDEST, 1.0, lambda: None, lambda r, why: None, lambda r: True)
    for sink in (a, b, b, b):
        full.put(record(sink))
    batch = full.drain(3)
    assert [b, b, b] == [r.sink for r in batch]
    assert knows == full.drained_one_sink


def test_records_of_two_sinks_in_one_backend_land_in_their_files(tmp_path: Path) -> None:
    """Two pipelines on one backend, logging in turn and in runs: batches mix sinks, and
    each record lands in its own pipeline's file once, in order."""
    from kakashi.core.async_backend import AsyncBackend, AsyncConfig
    from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
    from kakashi.core.pipeline import PipelineConfig, file_writer

    backend = AsyncBackend(AsyncConfig(max_queue_size=5_000, batch_size=300))
    paths = [tmp_path / "a.log", tmp_path / "b.log"]
    pipelines = [
        AsyncPipeline(AsyncPipelineConfig(PipelineConfig(writers=(file_writer(path),))), backend)
        for path in paths
    ]
    logs = [pipeline.get_logger("two") for pipeline in pipelines]
    sent: list[list[int]] = [[], []]
    try:
        for i in range(20_000):
            which = (i // 7) % 2 if i < 10_000 else i % 2  # runs of 7, then alternating
            logs[which].info("order filled", order_id=i)
            sent[which].append(i)
        assert backend.flush(BOUND)
    finally:
        backend.shutdown(BOUND)
    for path, ids in zip(paths, sent, strict=True):
        got = [
            int(line.split(b'"order_id":')[1].split(b"}")[0].split(b",")[0])
            for line in path.read_bytes().splitlines()
        ]
        assert ids == got


def test_yield_gil_without_a_caller_waiting_keeps_the_gil() -> None:
    """With no caller inside a hand-over, yield_gil lets the GIL go to nobody: a thread
    that wants it meanwhile (the switch interval set to a second, so only a release
    would let it in) does not run until the claiming thread lets go itself."""
    import sys

    go, done = threading.Event(), threading.Event()
    ran: list[float] = []

    def other() -> None:
        go.wait(BOUND)
        ran.append(time.perf_counter())  # needs the GIL
        done.wait(BOUND)

    thread = threading.Thread(target=other)
    thread.start()
    yield_gil()  # no claim: nothing to do
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1.0)
    claim_gil()
    try:
        before = claim_counts()
        go.set()  # the other thread wants the GIL from now on
        until = time.perf_counter() + 0.02
        while time.perf_counter() < until:
            yield_gil()  # a claim, nobody handing over
        held_until = time.perf_counter()
        assert before == claim_counts()
        assert claiming()
    finally:
        unclaim_gil()
        sys.setswitchinterval(previous)
        done.set()
        thread.join(BOUND)
    assert ran and ran[0] >= held_until


@compiled
def test_a_worker_that_yields_lets_a_waiting_caller_log_between_its_pieces(
    tmp_path: Path,
) -> None:
    """A claiming worker that, after each long release (a write), holds the GIL in
    Python code for a while (the interpreter's switch interval set to a second, so it
    never has to let go) and calls yield_gil between pieces of it: a caller that handed
    it over logs a record at each yield and hands it back, instead of waiting for all
    of it."""
    import sys

    q = queue(hand_over_at=0)
    started = threading.Event()
    advanced: list[int] = []
    stop = threading.Event()
    puts = kept = 0
    fd = os.open(tmp_path / "data", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)

    def worker() -> None:
        claim_gil()
        try:
            started.set()
            until = time.monotonic() + BOUND
            while len(advanced) < 300 and time.monotonic() < until:
                write_releasing_gil(fd, b"x" * 65_536)  # the claim is fresh again
                for _ in range(3):
                    deadline = time.perf_counter() + 20e-6  # a piece, the GIL held
                    while time.perf_counter() < deadline:
                        pass
                    before = puts
                    yield_gil()
                    advanced.append(puts - before)
        finally:
            unclaim_gil()
            stop.set()

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1.0)
    thread = threading.Thread(target=worker)
    try:
        thread.start()
        assert started.wait(BOUND)
        while not stop.is_set():
            q.put(puts)
            puts += 1
            if q.size == 10_000:
                kept += len(q.drain(10_000))
    finally:
        sys.setswitchinterval(previous)
        thread.join(BOUND)
        os.close(fd)
    assert puts == kept + q.size
    # Records went in while the worker was between two pieces of its stretch.
    assert sum(1 for n in advanced if n > 0) >= 10, advanced


def test_a_queue_that_never_hands_over_does_not_while_another_worker_yields(
    tmp_path: Path,
) -> None:
    """Backend A hands over (depth 0, its callers flood it: its worker yields between
    pieces of its stretch); backend B never does (``gil_handover_depth=None``): no call
    into B hands the GIL over, whatever A's worker is doing (found by review: a yield
    pending anywhere made every queue hand over)."""
    import sys

    from kakashi.core.async_backend import AsyncBackend, AsyncConfig
    from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
    from kakashi.core.pipeline import PipelineConfig, file_writer

    def pipeline(name: str, depth: float | None) -> tuple[AsyncBackend, AsyncPipeline]:
        backend = AsyncBackend(
            AsyncConfig(max_queue_size=20_000, batch_size=1000, gil_handover_depth=depth)
        )
        config = PipelineConfig(writers=(file_writer(tmp_path / f"{name}.log"),))
        return backend, AsyncPipeline(AsyncPipelineConfig(config), backend)

    backend_a, pipeline_a = pipeline("a", 0.0)
    backend_b, pipeline_b = pipeline("b", None)
    log_a, log_b = pipeline_a.get_logger("a"), pipeline_b.get_logger("b")
    stop = threading.Event()

    def flood() -> None:
        i = 0
        while not stop.is_set():
            log_a.info("a", i=i)
            i += 1
            if i % 3000 == 0:
                time.sleep(0)

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1.0)  # the GIL changes threads in hand-overs, yields, sleeps
    thread = threading.Thread(target=flood)
    handed_in_b = 0
    try:
        thread.start()
        for i in range(50_000):
            # This thread's: in a call that waits for a lock (waking B's worker), the
            # flooding thread may take the GIL and hand it over to A's worker.
            before = handed_over_here()
            log_b.info("b", i=i)
            handed_in_b += handed_over_here() != before
            if i % 100 == 0:
                time.sleep(0)
    finally:
        stop.set()
        sys.setswitchinterval(previous)
        thread.join(BOUND)
        for backend in (backend_a, backend_b):
            backend.flush(BOUND)
            backend.shutdown(BOUND)
    assert 0 == handed_in_b
    assert 50_000 == len((tmp_path / "b.log").read_bytes().splitlines())


@compiled
def test_a_claim_let_go_is_not_kept_fresh_by_a_hung_threads_claim() -> None:
    """A hung worker keeps its claim; a new worker claims the GIL and pauses its claim
    for a long release: a caller at the depth does not hand the GIL over meanwhile (it
    did, and waited 0.5 ms for a worker that no longer wanted it, each time: the claims
    were one count and one time for all threads; found while looking into a CI
    failure)."""
    q = queue()
    paused = threading.Event()
    done = threading.Event()

    def worker() -> None:
        claim_gil()
        try:

            def long_release() -> None:
                paused.set()
                done.wait(BOUND)

            unclaimed(long_release)
        finally:
            unclaim_gil()

    with HungClaim():
        thread = threading.Thread(target=worker)
        before = claim_counts()
        thread.start()
        try:
            assert paused.wait(BOUND)
            for i in range(1_000):
                q.put(i)
            after = claim_counts()
        finally:
            done.set()
            thread.join(BOUND)
    assert before == after


@compiled
def test_a_caller_that_hands_over_after_a_yield_finds_the_worker_awake(tmp_path: Path) -> None:
    """The worker yields the GIL to a caller for a record; the caller does other work
    first, then logs one record into a queue far below its depth: it hands over (a
    yield is pending), and the worker, which waits for that hand-back awake, never parks
    in a yield (found by review: it had parked where nothing woke it, and the caller waited
    for the claim to go stale, 197 times of 200). Parks are counted, not times: whether
    the worker then runs within the claim's 0.5 ms is the machine's (with another
    process busy on a 2-core machine, a woken thread may wait for its core for
    milliseconds, and every hand-over then reads waited out)."""
    q = queue(hand_over_at=1000)
    stop = threading.Event()
    fd = os.open(tmp_path / "data", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    parked = [0]  # parks that began inside the worker's yields

    def worker() -> None:
        claim_gil()
        try:
            while not stop.is_set():
                write_releasing_gil(fd, b"x" * 65_536)  # (may park after it: not counted)
                os.lseek(fd, 0, os.SEEK_SET)
                for _ in range(3):
                    deadline = time.perf_counter() + 20e-6
                    while time.perf_counter() < deadline:
                        pass
                    before = park_counts()[0]
                    yield_gil()
                    parked[0] += park_counts()[0] - before
        finally:
            unclaim_gil()

    thread = threading.Thread(target=worker)
    thread.start()
    second: list[int] = []  # waited out, for each second hand-over
    try:
        until = time.monotonic() + BOUND
        while len(second) < 100 and time.monotonic() < until:
            handed = claim_counts()[0]
            while claim_counts()[0] == handed and time.monotonic() < until:
                q.put(None)  # until a put hands over
            q.drain(q.size)
            deadline = time.perf_counter() + 50e-6  # the caller's own work
            while time.perf_counter() < deadline:
                pass
            before = claim_counts()
            q.put(None)
            after = claim_counts()
            if after[0] > before[0]:
                second.append(after[1] - before[1])
    finally:
        stop.set()
        thread.join(BOUND)
        os.close(fd)
    assert len(second) == 100
    assert parked == [0], f"waited out {sum(second)} of 100"


@compiled
def test_callers_blocked_on_a_full_queue_do_not_leave_the_worker_parked(
    tmp_path: Path,
) -> None:
    """Four threads fill a small queue with the block strategy: they wait for room and
    hand nothing over, so a worker that parked for their hand-over would sleep its 2 ms
    out at every batch (found by review: 1.7 s instead of 0.15 s for 80,000 records).
    A caller that blocks wakes a parked worker, and no worker parks while one waits:
    parks that time out stay rare. Every record lands once."""
    from kakashi.core.async_backend import AsyncBackend, AsyncConfig
    from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
    from kakashi.core.pipeline import PipelineConfig, file_writer

    backend = AsyncBackend(
        AsyncConfig(max_queue_size=2_000, batch_size=300, overflow_strategy="block")
    )
    paths = [tmp_path / "a.log", tmp_path / "b.log"]
    logs = [
        AsyncPipeline(
            AsyncPipelineConfig(PipelineConfig(writers=(file_writer(path),))), backend
        ).get_logger("full")
        for path in paths
    ]
    parks, timed_out = park_counts()

    def run(thread: int) -> None:
        for i in range(20_000):
            logs[(i // 25) % 2].info("m", t=thread, i=i)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(BOUND)
        assert backend.flush(BOUND)
    finally:
        backend.shutdown(BOUND)
    parks, timed_out = park_counts()[0] - parks, park_counts()[1] - timed_out
    assert 80_000 == sum(len(path.read_bytes().splitlines()) for path in paths)
    batches = 80_000 // 300
    assert timed_out <= batches // 10, (parks, timed_out)
