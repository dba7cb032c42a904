"""The torn-tail check of a file shared by writers that append without the lock.

A writer that opens a file looks at its tail: a line without its newline is either a
record torn by a crash or, while other writers append without the flock, a large record
still on its way in (Linux makes a write's bytes visible page by page). These tests pin
what it does in each case, with real processes and files: it reports a torn record
only once its own next write proves it torn, cuts one only when nobody appends without
the lock, and never cuts (or reports) a record on its way in.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from kakashi import _errors
from kakashi.writers import FileWriter
from kakashi.writers import file as file_module

pytestmark = pytest.mark.skipif(
    not file_module.ATOMIC_APPEND, reason="writers append without the lock only on Linux"
)

DEADLOCK = 120.0  # the longest a child may take before the test fails (a hang, not a time)


#: A record larger than a page: another writer's, still on its way in (no newline).
BIG = b'{"big": "' + b"x" * 10_000 + b'"}'


def join_while_arriving(path: Path, after_first_look: Any) -> list[int]:
    """A writer appends "1" and another descriptor the first page of :data:`BIG`; a
    joining writer then writes "2", and right after its first look at the tail
    ``after_first_look(arriving, present)`` runs (the descriptor, the first writer).
    Returns where each of its looks found the whole records to end."""
    present = FileWriter(path)
    present.write_record(b"1")
    arriving = os.open(path, os.O_WRONLY | os.O_APPEND)
    os.write(arriving, BIG[:4096])
    joining = FileWriter(path)
    looked: list[int] = []

    def clean_end(fd: int, size: int, start: int) -> int:
        """The real tail check, then the test's events after the first."""
        looked.append(file_module.clean_end(fd, size, start))
        if len(looked) == 1:
            after_first_look(arriving, present)
        return looked[-1]

    joining._clean_end = clean_end  # type: ignore[method-assign]
    try:
        joining.write_record(b"2")
    finally:
        joining.close()
        present.close()
        with contextlib.suppress(OSError):
            os.close(arriving)
    return looked


def test_a_record_still_arriving_is_neither_cut_nor_reported(tmp_path: Path) -> None:
    """A writer opening the file sees part of another writer's large record (the rest
    arrives before its own write, as when the kernel copies it in page by page): the
    record stays whole, the new record follows it, and nothing is reported."""
    path = tmp_path / "app.log"

    def the_rest_lands(arriving: int, present: FileWriter) -> None:
        os.write(arriving, BIG[4096:] + b"\n")

    assert [2] == join_while_arriving(path, the_rest_lands)  # torn, just after "1\n"
    assert b"1\n" + BIG + b"\n2\n" == path.read_bytes()
    assert {} == _errors.error_counts()


def test_a_tail_completed_before_the_cut_is_judged_again(tmp_path: Path) -> None:
    """The joining writer sees a record on its way in; before it asks whether anyone
    appends without the lock, the record lands, another follows, and their writer
    closes. Nobody appends any more, so cutting is allowed: but the tail is whole now,
    and cutting where it looked torn would remove two records."""
    path = tmp_path / "app.log"

    def landed_and_gone(arriving: int, present: FileWriter) -> None:
        os.write(arriving, BIG[4096:] + b"\n")
        os.close(arriving)
        present.write_record(b"3")
        present.close()

    looked = join_while_arriving(path, landed_and_gone)
    assert 2 == looked[0]  # it saw the record torn, just after "1\n"
    assert b"1\n" + BIG + b"\n3\n2\n" == path.read_bytes()
    assert {} == _errors.error_counts()


BIG_WRITER = """
    import sys, threading
    from kakashi.writers import FileWriter

    path, tag, records = sys.argv[1], sys.argv[2], int(sys.argv[3])
    writer = FileWriter(path, reopen_check_interval=0.001)
    writer.write_record(f"{tag} ready".encode())
    print("ready", flush=True)

    def produce(thread):
        for n in range(records):
            size = 300_000 if n % 2 else 70_000
            writer.write_record(f"{tag}{thread} {n} ".encode() + b"x" * size)

    workers = [threading.Thread(target=produce, args=(t,)) for t in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    writer.close()
    from kakashi import _errors
    print(sorted(_errors.error_counts()), flush=True)
"""


def test_writers_joining_while_large_records_arrive_report_nothing(tmp_path: Path) -> None:
    """Two processes append 70 KB and 300 KB records without the lock while this one
    keeps opening new writers, each of which looks at the tail before its first record
    (where it often finds part of a large record): no writer reports or cuts anything,
    and every record is on disk once, whole."""
    path = tmp_path / "shared.log"
    records = 40
    children = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(BIG_WRITER), str(path), tag, str(records)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for tag in ("a", "b")
    ]
    try:
        for child in children:
            assert child.stdout is not None
            assert b"ready\n" == child.stdout.readline()
        joins = 0
        hung = time.monotonic() + DEADLOCK
        while any(child.poll() is None for child in children) and time.monotonic() < hung:
            writer = FileWriter(path)
            writer.write_record(f"joined {joins}".encode())
            writer.close()
            joins += 1
        outputs = []
        for child in children:  # ended (or killed below): read on through the same files
            child.wait(timeout=1)  # raises if it is still running: a hang, not a time
            assert child.stdout is not None and child.stderr is not None
            outputs.append((child.stdout.read(), child.stderr.read()))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
            for stream in (child.stdout, child.stderr):
                if stream is not None:
                    stream.close()
    assert [0, 0] == [child.returncode for child in children], outputs

    data = path.read_bytes()
    assert data.endswith(b"\n")
    lines = data.split(b"\n")[:-1]
    expected = {f"joined {n}".encode() for n in range(joins)} | {b"a ready", b"b ready"}
    expected |= {
        f"{tag}{thread} {n} ".encode() + b"x" * (300_000 if n % 2 else 70_000)
        for tag in "ab"
        for thread in range(2)
        for n in range(records)
    }
    assert len(expected) == len(lines)
    assert expected == set(lines)
    assert {} == _errors.error_counts()
    assert [b"[]\n", b"[]\n"] == [out for out, _ in outputs]  # the children reported nothing


KILLED_MID_WRITE = """
    import os, resource, signal, sys
    from kakashi.writers import FileWriter

    path, torn = sys.argv[1], int(sys.argv[2])
    writer = FileWriter(path)
    writer.write_record(b"first")
    # Python ignores SIGXFSZ; by default it kills the process, which the kernel makes
    # at the limit, in the middle of the next record's write.
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    limit = os.fstat(writer._fd).st_size + torn
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    writer.write_record(b"{" + b"x" * (4 * torn))
"""


def kill_mid_write(path: Path, torn: int) -> None:
    """A process appends a record to *path* without the lock and dies (SIGXFSZ) after
    writing its first *torn* bytes."""
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILLED_MID_WRITE), str(path), str(torn)],
        capture_output=True,
        timeout=DEADLOCK,
        check=False,
    )
    assert -signal.SIGXFSZ == child.returncode, child.stderr


def test_a_record_torn_by_a_killed_process_is_cut_by_a_writer_alone(tmp_path: Path) -> None:
    """A process dies in the middle of a record; the next writer, alone on the file,
    cuts the torn part off before its first record and says how much it removed."""
    path = tmp_path / "app.log"
    kill_mid_write(path, 1000)
    assert b"first\n{" + b"x" * 999 == path.read_bytes()

    writer = FileWriter(path)
    writer.write_record(b"2")
    writer.close()

    assert b"first\n2\n" == path.read_bytes()
    assert {f"{path}: removed a record torn by a crash (1000 bytes at the end)": 1} == (
        _errors.error_counts()
    )


def test_a_record_torn_by_a_killed_process_is_reported_while_others_append(
    tmp_path: Path,
) -> None:
    """The same with another writer appending without the lock: the torn part may not
    be cut (it could have been a record on its way in), but the next record lands right
    where it stops, which proves it torn: it is reported, once, and left for readers."""
    path = tmp_path / "app.log"
    present = FileWriter(path)
    present.write_record(b"0")
    kill_mid_write(path, 1000)

    writer = FileWriter(path)
    writer.write_record(b"2")
    writer.write_record(b"3")
    present.write_record(b"4")
    writer.close()
    present.close()

    assert b"0\nfirst\n{" + b"x" * 999 + b"2\n3\n4\n" == path.read_bytes()
    assert {f"{path}: a record torn by a crash": 1} == _errors.error_counts()


class NoSharedOfdLocks:
    """The fcntl module, but a shared OFD lock is refused as on a file system without
    them (``ENOLCK``), so a writer's records take the flock; exclusive ones work."""

    def __getattr__(self, name: str) -> Any:
        return getattr(fcntl, name)

    def fcntl(self, fd: int, command: int, *args: Any) -> Any:
        if command == fcntl.F_OFD_SETLK:
            kind = struct.unpack(file_module._FLOCK_STRUCT, args[0])[0]
            if kind == fcntl.F_RDLCK:
                raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
        return fcntl.fcntl(fd, command, *args)


def test_a_writer_taking_the_lock_does_not_cut_a_record_of_one_appending_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer whose own records take the flock (here: its shared OFD lock was
    refused) still leaves a tail that may be another writer's record on its way in:
    that writer appends without the flock, so holding the flock proves nothing."""
    path = tmp_path / "app.log"
    present = FileWriter(path)
    present.write_record(b"1")
    arriving = os.open(path, os.O_WRONLY | os.O_APPEND)
    os.write(arriving, b'{"arriving')  # the first page of present's next record
    monkeypatch.setattr(file_module, "_fcntl", NoSharedOfdLocks())
    locked = FileWriter(path)
    locked.write_record(b"2")
    monkeypatch.undo()
    os.close(arriving)
    locked.close()
    present.close()

    assert not locked._lock_free  # its records took the flock
    assert b'1\n{"arriving2\n' == path.read_bytes()


def test_a_writer_whose_presence_is_refused_does_not_append_without_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the shared presence lock is refused (someone holds the byte exclusively),
    the writer cannot be seen by a writer deciding whether to cut: its record takes
    the flock, and the next record checks again."""
    path = tmp_path / "app.log"
    writer = FileWriter(path, reopen_check_interval=3600)
    holder = os.open(path, os.O_RDWR)
    assert file_module._presence(holder, fcntl.F_WRLCK)
    locked: list[bytes] = []
    real_write_now = writer._write_now

    def write_now(data: bytes) -> None:
        """The write under the flock, noted."""
        locked.append(data)
        real_write_now(data)

    monkeypatch.setattr(writer, "_write_now", write_now)
    writer.write_record(b"1")
    assert ([b"1\n"], False) == (locked, writer._present)
    assert 0.0 == writer._check_at  # the next record checks again
    file_module._presence(holder, fcntl.F_UNLCK)
    os.close(holder)
    writer.write_record(b"2")
    writer.close()

    assert b"1\n2\n" == path.read_bytes()


class OneFailedExclusiveLock:
    """The fcntl module, but the first exclusive OFD lock request fails with ``ENOLCK``,
    as when the kernel cannot allocate a lock (memory pressure) on a file system that
    has them."""

    def __init__(self) -> None:
        self.failed = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(fcntl, name)

    def fcntl(self, fd: int, command: int, *args: Any) -> Any:
        exclusive = command == fcntl.F_OFD_SETLK and (
            struct.unpack(file_module._FLOCK_STRUCT, args[0])[0] == fcntl.F_WRLCK
        )
        if exclusive and not self.failed:
            self.failed += 1
            raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
        return fcntl.fcntl(fd, command, *args)


def test_a_lock_the_kernel_could_not_allocate_does_not_let_a_writer_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exclusive presence request fails (``ENOLCK``) on a file system whose other
    writers hold their shared locks: that says nothing about who appends, so the tail
    (here another writer's record on its way in) is left, and the writer goes on
    appending without the lock."""
    path = tmp_path / "app.log"
    present = FileWriter(path)
    present.write_record(b"1")
    arriving = os.open(path, os.O_WRONLY | os.O_APPEND)
    os.write(arriving, b'{"arriving')
    locks = OneFailedExclusiveLock()
    monkeypatch.setattr(file_module, "_fcntl", locks)
    joining = FileWriter(path)
    joining.write_record(b"2")
    monkeypatch.undo()
    os.close(arriving)
    joining.close()
    present.close()

    assert 1 == locks.failed
    assert joining._lock_free
    assert b'1\n{"arriving2\n' == path.read_bytes()
