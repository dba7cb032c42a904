"""A forked child keeps no copy of a descriptor the writers opened (kakashi._descriptors).

Real forks, real files and threads. Each child lists, through /proc/self/fd, the
descriptors it has on the test's files right after the fork hooks ran, sends that list
to the parent through a pipe and exits. A copy of a writer's descriptor that a child
kept stayed open for its whole life (a rotated or deleted file's space, and the locks
on a shared open file description, held while it ran) whenever another thread of the
parent held the descriptor at the fork: a write in progress, the compressor, an open
or a close under way.
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import random
import signal
import stat
import threading
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import pytest

from kakashi import _descriptors
from kakashi._speedups import USING_SPEEDUPS, open_holding_gil
from kakashi.writers.file import FileWriter
from kakashi.writers.rotating import RotatingFileWriter
from tests.conftest import wait_or_kill

pytestmark = pytest.mark.skipif(
    not hasattr(os, "fork") or not os.path.isdir("/proc/self/fd"),
    reason="needs os.fork and /proc/self/fd",
)


def open_under(folder: Path, but: Collection[int] = ()) -> list[str]:
    """The files (not folders) this process's descriptors name under *folder*.

    Folders are left out: a thread inside ``os.listdir`` or ``os.scandir`` of the log
    folder at the fork (rotation lists the rotated files) leaves the child a copy of
    that folder's descriptor, opened inside Python, which Kakashi cannot know of. It
    holds no space and no lock.
    """
    names = []
    for name in os.listdir("/proc/self/fd"):
        if int(name) in but:  # the test's own
            continue
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
            if stat.S_ISDIR(os.fstat(int(name)).st_mode):
                continue
        except OSError:  # the listing's own descriptor, closed by now
            continue
        if target.startswith(str(folder)):
            names.append(target)
    return sorted(names)


def in_child(work: Callable[[], Any]) -> Any:
    """Fork; the child runs *work* and sends back what it returned (as JSON)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read)
            answer = json.dumps(work()).encode()
            with open(write, "wb") as pipe:
                pipe.write(answer)
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with open(read, "rb") as pipe:
        answer = pipe.read()
    status = wait_or_kill(pid, timeout=30.0)
    assert 0 == os.waitstatus_to_exitcode(status)
    return json.loads(answer)


_NEW = os.O_WRONLY | os.O_CREAT


def open_at(number: int, opening: Callable[[], int]) -> int:
    """Call *opening* until it gives *number* (each open takes the lowest free number;
    the ones below it are left open) or a higher one; return the last it gave."""
    for _ in range(1000):
        fd = opening()
        if fd >= number:
            return fd
    raise AssertionError(f"no open reached descriptor {number}")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return Path(os.path.realpath(tmp_path))  # as /proc names it


def test_a_descriptor_another_thread_holds_is_closed_in_the_child(folder: Path) -> None:
    """A descriptor held only by another thread's frame (a write in progress, the
    compressor's files): that thread does not exist in the child."""
    path = folder / "held.log"
    opened = threading.Event()
    done = threading.Event()

    def hold() -> None:
        fd = _descriptors.open_owned(path, os.O_WRONLY | os.O_CREAT, 0o600)
        opened.set()
        done.wait(30)
        _descriptors.close_owned(fd)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert opened.wait(30)
        assert [str(path)] == open_under(folder)
        assert [] == in_child(lambda: open_under(folder))
        assert [str(path)] == open_under(folder)  # the parent's stays open
    finally:
        done.set()
        thread.join(30)
    assert [] == open_under(folder)


def test_a_number_closed_and_taken_again_is_left_alone(folder: Path) -> None:
    """Forked once close(2) took effect and the number went to another file: the child
    keeps that file's descriptor."""
    path = folder / "closed.log"
    other = folder / "other.log"
    fd = _descriptors.open_owned(path, os.O_WRONLY | os.O_CREAT, 0o600)
    closed = threading.Event()
    go_on = threading.Event()

    def close_then_wait(number: int) -> None:
        os.close(number)
        closed.set()
        go_on.wait(30)

    thread = threading.Thread(
        target=_descriptors.close_owned, args=(fd,), kwargs={"_close": close_then_wait}
    )
    thread.start()
    try:
        assert closed.wait(30)
        again = open_at(fd, lambda: os.open(other, _NEW, 0o600))
        try:
            assert fd == again  # the case that matters happened
            assert [str(other)] == in_child(lambda: open_under(folder))
        finally:
            os.close(again)
    finally:
        go_on.set()
        thread.join(30)


def test_a_handle_dropped_in_the_child_closes_nothing_of_the_childs(folder: Path) -> None:
    """A writer's handle made in the parent and let go in the child (after the child
    opened a file that got the same number) does not close the child's file."""
    path = folder / "app.log"
    writer = FileWriter(path)
    kept = [writer._handle]
    number = writer._fd

    def child() -> list[Any]:
        mine = open_at(number, lambda: _descriptors.open_owned(folder / "child.log", _NEW))
        kept.clear()  # the parent's handle goes: its __del__ runs here
        return [mine == number, os.readlink(f"/proc/self/fd/{mine}")]

    try:
        same, target = in_child(child)
    finally:
        kept.clear()
        writer.close()
    assert same  # the case that matters happened
    assert str(folder / "child.log") == target


def test_a_write_in_progress_at_the_fork(folder: Path) -> None:
    """A thread inside a write (blocked on a full pipe) holds the writer's descriptor:
    the child has no copy of it, and the parent's write completes."""
    fifo = folder / "pipe.log"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    writer = FileWriter(fifo)
    line = b"x" * 1023
    batch = [line] * 256  # 256 KiB: more than the pipe holds
    thread = threading.Thread(target=writer.write, args=(batch,))
    thread.start()
    received = bytearray()
    try:
        deadline = time.monotonic() + 30
        while not received and time.monotonic() < deadline:
            time.sleep(0.01)
            received += read_some(reader)
        time.sleep(0.05)  # the writer fills the pipe again and waits in write(2)
        assert thread.is_alive()

        def child() -> list[str]:
            os.close(reader)  # the test's own
            return open_under(folder)

        assert [] == in_child(child)
    finally:
        deadline = time.monotonic() + 30
        while thread.is_alive() and time.monotonic() < deadline:
            received += read_some(reader)
            time.sleep(0.001)
        thread.join(30)
        received += read_some(reader)
        writer.close()
        os.close(reader)
    assert b"".join(entry + b"\n" for entry in batch) == bytes(received)


def read_some(fd: int) -> bytes:
    try:
        return os.read(fd, 1 << 20)
    except BlockingIOError:
        return b""


def test_opening_and_closing_holding_the_gil(folder: Path) -> None:
    """open_owned(hold=True) notes the descriptor (close-on-exec, blocking, as os.open
    makes it) and close_owned forgets and closes it; a FIFO nobody reads is opened the
    usual way once a reader comes (the compiled open answers ENXIO rather than wait
    with the GIL held)."""
    path = folder / "held.log"
    fd = _descriptors.open_owned(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600, hold=True)
    assert fd in _descriptors._owned
    assert not os.get_inheritable(fd)
    assert os.get_blocking(fd)
    os.write(fd, b"one\n")
    _descriptors.close_owned(fd)
    assert fd not in _descriptors._owned
    with pytest.raises(OSError):
        os.fstat(fd)
    _descriptors.close_owned(fd)  # closed already: nothing
    assert b"one\n" == path.read_bytes()
    deleted = _descriptors.open_owned(path, os.O_RDONLY, hold=True)
    path.unlink()  # (closed with the GIL let go: freeing its blocks may take long)
    _descriptors.close_owned(deleted)
    assert deleted not in _descriptors._owned
    with pytest.raises(OSError):
        os.fstat(deleted)

    fifo = folder / "pipe"
    os.mkfifo(fifo)
    if USING_SPEEDUPS:
        with pytest.raises(OSError) as raised:
            open_holding_gil(fifo, os.O_WRONLY, 0, {})
        assert errno.ENXIO == raised.value.errno
    got: list[int] = []
    thread = threading.Thread(
        target=lambda: got.append(_descriptors.open_owned(fifo, os.O_WRONLY, hold=True))
    )
    thread.start()  # waits for a reader, the GIL let go
    time.sleep(0.05)
    reader = os.open(fifo, os.O_RDONLY)
    thread.join(30)
    try:
        assert os.get_blocking(got[0])
        os.write(got[0], b"two")
        assert b"two" == os.read(reader, 16)
    finally:
        _descriptors.close_owned(got[0])
        os.close(reader)


def hold_a_lease(path: str, ready: Any) -> None:
    """(In a child process.) Hold a read lease on *path* (as Samba or an NFS server's
    delegations do); let it go 0.2 s after the kernel asks (SIGIO)."""
    import fcntl

    fd = os.open(path, os.O_RDONLY)

    def let_go(*_: Any) -> None:
        time.sleep(0.2)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)

    signal.signal(signal.SIGIO, let_go)
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError:  # no leases here (the filesystem, or not the file's owner)
        os._exit(3)
    ready.set()
    time.sleep(30)


def test_opening_holding_the_gil_waits_for_a_lease(folder: Path) -> None:
    """Another process's lease on the file makes an open wait for the holder to let go:
    opening holding the GIL answers EAGAIN instead (O_NONBLOCK), and the file is then
    opened the usual way, the GIL let go (found by review: the compiled build raised
    BlockingIOError, and a writer reopening its file lost the record)."""
    path = folder / "leased.log"
    path.write_bytes(b"")
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    holder = context.Process(target=hold_a_lease, args=(str(path), ready))
    holder.start()
    try:
        deadline = time.monotonic() + 30
        while not ready.wait(0.05) and holder.is_alive() and time.monotonic() < deadline:
            pass
        if holder.exitcode == 3:
            pytest.skip("no file leases here")
        assert ready.is_set()
        started = time.monotonic()
        fd = _descriptors.open_owned(path, os.O_WRONLY | os.O_APPEND, hold=True)
        waited = time.monotonic() - started
        _descriptors.close_owned(fd)
    finally:
        holder.terminate()
        holder.join(30)
    assert waited >= 0.1  # the holder was asked, and let go


def writing(writers: list[Any], stop: threading.Event) -> Iterator[threading.Thread]:
    """Threads writing to *writers* until *stop* (records of 200 bytes)."""
    line = b"y" * 199

    def run(writer: Any) -> None:
        while not stop.is_set():
            writer.write([line] * 8)

    for writer in writers:
        thread = threading.Thread(target=run, args=(writer,))
        thread.start()
        yield thread


@pytest.mark.skipif(
    not USING_SPEEDUPS,
    reason="the pure twin's open releases the GIL: a fork can come before the note",
)
@pytest.mark.parametrize("compression", [None, "zstd"])
def test_forks_at_random_moments_keep_no_copy(folder: Path, compression: str | None) -> None:
    """Threads write a plain file and a rotating one (a rotation every few batches,
    compressed or not) while the main thread forks 40 times at random moments: no
    child has a descriptor on any of the files, and every descriptor of the
    application's own on them (the active file for reading, another file of the same
    name and flags, the folder) is still open in the child, on the same file.

    Before kakashi._descriptors, children kept copies (a write in progress, the
    compressor's files, a rotation's reopen); a first version of it, which guessed the
    copies of a file being opened or closed by name, flags or inode, closed some of the
    application's descriptors instead."""
    plain = FileWriter(folder / "plain.log")
    rotating = RotatingFileWriter(
        folder / "rotating.log", max_bytes=20_000, backup_count=3, compression=compression
    )
    plain.write([b"first"])
    rotating.write([b"first"])
    mine = [
        os.open(folder / "rotating.log", os.O_RDONLY),
        os.open(folder / "rotating.log.audit", os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600),
        os.open(folder, os.O_RDONLY),
    ]
    identities = [identity(fd) for fd in mine]

    def child() -> list[Any]:
        return [open_under(folder, but=mine), [identity(fd) for fd in mine]]

    stop = threading.Event()
    threads = list(writing([plain, rotating, rotating], stop))
    kept: list[list[str]] = []
    theirs: list[list[Any]] = []
    try:
        rng = random.Random(7)
        for _ in range(40):
            time.sleep(rng.random() / 200)
            copies, still = in_child(child)
            kept.append(copies)
            theirs.append(still)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        rotating.wait_for_compression(30)
        plain.close()
        rotating.close()
        for fd in mine:
            os.close(fd)
    assert rotating.rotations > 10  # the forks met rotations
    assert [[]] * 40 == kept
    assert [identities] * 40 == theirs


def identity(fd: int) -> list[int] | None:
    """The device and inode *fd* is open on (None: not open)."""
    try:
        info = os.fstat(fd)
    except OSError:
        return None
    return [info.st_dev, info.st_ino]
