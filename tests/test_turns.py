"""Turns at the writers' exclusive flock (kakashi._turns), with real processes.

A process that takes the lock while another waits for it lets the waiter go first; a
waiter that says it waits but never takes the lock holds nobody up for longer than the
defer limit; a waiter's mark is gone once it holds the lock.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from kakashi import _turns

ROOT = Path(__file__).resolve().parent.parent
BOUND = 60.0  # seconds: a deadline for a hung test, never a measure

WAITER = textwrap.dedent(
    """
    import fcntl, os, sys
    from kakashi._turns import take_exclusive, _say_waiting
    fd = os.open(sys.argv[1], os.O_RDWR)
    if sys.argv[2] == "take":
        take_exclusive(fd, 60.0, fcntl.flock, sys.argv[1])
        print("got", flush=True)
        sys.stdin.readline()  # holds the lock until told
        fcntl.flock(fd, fcntl.LOCK_UN)
    else:  # says it waits, and never tries
        _say_waiting(fd, fcntl.F_RDLCK)
        print("waiting", flush=True)
        sys.stdin.readline()
    """
)


def start(path: Path, how: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WAITER, str(path), how],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )


def stop(process: subprocess.Popen[str]) -> None:
    """Kill *process* and close its pipes."""
    process.kill()
    process.communicate()


def until(condition: object) -> None:
    """Wait for *condition* () to be true (failing the test after :data:`BOUND`)."""
    deadline = time.monotonic() + BOUND
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "the other process never got there"
        time.sleep(0.001)


pytestmark = pytest.mark.skipif(not _turns._OFD, reason="needs open-file-description locks")


def test_a_process_that_comes_back_lets_the_waiter_go_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This process holds the lock; another waits for it. Released and taken again at
    once, the lock goes to the waiter first (before, the process that had just let go
    took it again, batch after batch, and the waiter waited for seconds)."""
    monkeypatch.setattr(_turns, "_DEFER_LIMIT", BOUND)  # a slow machine still keeps turns
    monkeypatch.setattr(_turns, "_defer_from", 0.0)
    path = tmp_path / "app.log"
    path.touch()
    fd = os.open(path, os.O_RDWR)
    _turns.take_exclusive(fd, 10.0, fcntl.flock, str(path))
    waiter = start(path, "take")
    order: list[str] = []
    try:
        until(lambda: _turns._another_waits(fd))
        fcntl.flock(fd, fcntl.LOCK_UN)

        def again() -> None:
            _turns.take_exclusive(fd, BOUND, fcntl.flock, str(path))
            order.append("this process")
            fcntl.flock(fd, fcntl.LOCK_UN)

        thread = threading.Thread(target=again)
        thread.start()
        assert waiter.stdout is not None and "got\n" == waiter.stdout.readline()
        order.append("the waiter")
        assert waiter.stdin is not None
        waiter.stdin.write("release\n")
        waiter.stdin.flush()
        thread.join(BOUND)
        assert ["the waiter", "this process"] == order
        assert not _turns._another_waits(fd)  # its mark went with its wait
    finally:
        stop(waiter)
        os.close(fd)


def test_a_waiter_that_never_takes_the_lock_holds_nobody_up_past_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that says it waits and then stops (a debugger) does not keep the lock
    from others: they take it after the defer limit, and then, for a while, at once."""
    monkeypatch.setattr(_turns, "_DEFER_LIMIT", 0.05)
    monkeypatch.setattr(_turns, "_defer_from", 0.0)
    path = tmp_path / "app.log"
    path.touch()
    stuck = start(path, "stuck")
    fd = os.open(path, os.O_RDWR)
    try:
        assert stuck.stdout is not None and "waiting\n" == stuck.stdout.readline()
        assert _turns._another_waits(fd)
        _turns.take_exclusive(fd, BOUND, fcntl.flock, str(path))  # returns: it is held
        fcntl.flock(fd, fcntl.LOCK_UN)
        # Having given up on that waiter, this process lets nobody go first for a while:
        # it takes the lock at once, even with the stopped waiter's mark still there.
        monkeypatch.setattr(_turns, "_DEFER_LIMIT", BOUND)
        assert _turns._another_waits(fd)
        _turns.take_exclusive(fd, BOUND, fcntl.flock, str(path))
        other = os.open(path, os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        stop(stuck)
        os.close(fd)
    try:
        assert not _turns._another_waits(other)  # gone with the process
    finally:
        os.close(other)


def test_a_waiter_times_out_and_drops_its_mark(tmp_path: Path) -> None:
    """Held by another process all the time: TimeoutError naming the file, and the
    waiter's mark is gone afterwards."""
    path = tmp_path / "app.log"
    path.touch()
    holder = start(path, "take")
    fd = os.open(path, os.O_RDWR)
    other = os.open(path, os.O_RDWR)
    try:
        assert holder.stdout is not None and "got\n" == holder.stdout.readline()
        with pytest.raises(TimeoutError, match=r"app\.log: another process held the lock"):
            _turns.take_exclusive(fd, 0.05, fcntl.flock, str(path))
        assert not _turns._another_waits(other)
    finally:
        stop(holder)
        os.close(fd)
        os.close(other)
