"""The rotating writers' lock on their directory, which nobody can delete: processes that
rotate one path while something deletes its lock file, two logs in one directory, a child
forked while the lock is held, a directory replaced under its name. Real processes, real
files; each test counts the records logged and on disk."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from kakashi import _errors
from kakashi.writers import RotatingFileWriter, read_lines
from tests.conftest import child_report, file_lines, wait_or_kill

ROTATE = """
import json, sys, threading
from kakashi.writers import RotatingFileWriter
path, worker = sys.argv[1], int(sys.argv[2])
writer = RotatingFileWriter(path, max_bytes=2_000, compression=None, lock_timeout=60)

def run(thread):
    for b in range(100):
        writer.write([json.dumps({"w": worker, "t": thread, "b": b, "i": i}).encode()
                      for i in range(10)])

threads = [threading.Thread(target=run, args=(t,)) for t in range(2)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
writer.close()
"""

DELETE_LOCK_FILE = """
import os, sys, time
lock, stop = sys.argv[1], sys.argv[2]
while not os.path.exists(stop):
    try:
        os.unlink(lock)
    except FileNotFoundError:
        pass
    time.sleep(0.001)
"""


def records(directory: Path) -> Counter[tuple[int, int, int, int]]:
    """How many times each record ``(w, t, b, i)`` is on disk in *directory*."""
    seen: Counter[tuple[int, int, int, int]] = Counter()
    for lines in file_lines(directory).values():
        for line in lines:
            record = json.loads(line)
            seen[(record["w"], record["t"], record["b"], record["i"])] += 1
    return seen


def test_deleting_the_lock_file_all_along_loses_nothing(tmp_path: Path) -> None:
    """4 processes x 2 threads rotate one path (8,000 records, about 200 rotations) while
    another process deletes ``app.log.lock`` every millisecond: every record is on disk
    exactly once (with the lock file alone, writers rotated at once: 5,105 and 5,227 of
    8,000 on disk in two runs, no error)."""
    path = tmp_path / "logs" / "app.log"
    path.parent.mkdir()
    stop = tmp_path / "stop"
    deleter = subprocess.Popen([sys.executable, "-c", DELETE_LOCK_FILE, f"{path}.lock", str(stop)])
    writers = [
        subprocess.Popen([sys.executable, "-c", ROTATE, str(path), str(worker)])
        for worker in range(4)
    ]
    try:
        for writer in writers:
            assert 0 == writer.wait(timeout=240)
    finally:
        stop.touch()
        for process in (*writers, deleter):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:  # a hung writer fails the test, not the run
                process.kill()
                process.wait()
    seen = records(path.parent)

    assert 8_000 == len(seen)
    assert {} == {key: times for key, times in seen.items() if times != 1}
    assert len(file_lines(path.parent)) > 20  # it did rotate, many times


def test_a_lock_file_replaced_faster_than_checked_costs_the_check_not_the_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lock file that never stays the one just locked (here every check sees another
    inode, as when something deletes it faster than a loaded machine checks) is given up
    after ``lock_timeout``: the writer, holding the directory's lock, which keeps the
    other writers out, writes, and says so once; it does not raise and lose the batch."""
    from kakashi.writers import rotating

    path = tmp_path / "app.log"
    writer = RotatingFileWriter(path, lock_timeout=0.05)
    inodes = iter(range(10**9))
    monkeypatch.setattr(rotating, "_inode", lambda info: (-1, next(inodes)))
    writer.write([b'{"n": 1}'])
    writer.write([b'{"n": 2}'])
    monkeypatch.undo()
    writer.close()

    assert [b'{"n": 1}', b'{"n": 2}'] == path.read_bytes().splitlines()
    # Said once on stderr, counted at each write.
    assert {f"{path}: its lock file keeps being replaced": 2} == _errors.error_counts()


def test_a_hook_may_log_to_another_file_of_the_directory(tmp_path: Path) -> None:
    """The writers of one directory share its lock in a process, and the thread holding it
    may take it again: a rotator that logs to ``audit.log`` beside ``app.log`` (under the
    lock of the rotation) writes at once, rather than waiting for itself until its
    lock_timeout."""
    _errors.reset()
    audit = RotatingFileWriter(tmp_path / "audit.log", compression=None, lock_timeout=1)

    def rotator(source: str, destination: str) -> None:
        audit.write([f"rotated {Path(source).name}".encode()])
        os.rename(source, destination)

    app = RotatingFileWriter(
        tmp_path / "app.log", max_bytes=10, compression=None, rotator=rotator, lock_timeout=1
    )
    for i in range(3):
        app.write([f"record {i}".encode()])
    app.close()
    audit.close()

    assert {} == _errors.error_counts()
    assert {
        "app.log": ["record 2"], "app.log.1": ["record 1"], "app.log.2": ["record 0"],
        "audit.log": ["rotated app.log", "rotated app.log"],
    } == file_lines(tmp_path)  # fmt: skip


def test_a_child_forked_under_the_lock_waits_for_its_parent_then_writes(tmp_path: Path) -> None:
    """A child forked while its parent's thread holds the directory's lock (inside the
    rotator) does not inherit it: its first write waits until the parent's rotation is
    over (it would otherwise rotate beside it), then goes into the new file; each record
    once."""
    path = tmp_path / "app.log"
    children: list[int] = []
    parent = os.getpid()

    def rotator(source: str, destination: str) -> None:
        if not children and os.getpid() == parent:
            pid = os.fork()
            if pid == 0:  # the child: write, then leave without running the parent's code
                code = 1
                try:
                    writer.write([b"child"])
                    writer.close()
                    code = 0
                finally:
                    os._exit(code)
            children.append(pid)
        os.rename(source, destination)

    # 13 bytes a parent's record, 6 the child's: the second record rotates, the child's fits.
    writer = RotatingFileWriter(path, max_bytes=20, compression=None, rotator=rotator)
    writer.write([b"parent 0 ..."])
    writer.write([b"parent 1 ..."])  # rotates: forks under the lock
    status = wait_or_kill(children[0])
    writer.close()

    assert 0 == os.waitstatus_to_exitcode(status)
    # The child found the file the parent's rotation had opened, not the one it moved.
    assert {"app.log": ["parent 1 ...", "child"], "app.log.1": ["parent 0 ..."]} == file_lines(
        tmp_path
    )


@pytest.mark.parametrize("how", ["renamed", "deleted"])
def test_a_directory_replaced_under_its_name_is_locked_again(tmp_path: Path, how: str) -> None:
    """The log's directory renamed away (or deleted) between two writes: the writer locks
    the directory the name names now (made again if it is gone), which is the one the
    next process locks, and writes its file there."""
    directory = tmp_path / "logs"
    writer = RotatingFileWriter(directory / "app.log", max_bytes=1_000, compression=None)
    writer.write([b"before"])
    if how == "renamed":
        directory.rename(tmp_path / "logs.old")
    else:
        (directory / "app.log").unlink()
        (directory / "app.log.lock").unlink()
        directory.rmdir()
    writer.write([b"after"])
    writer.close()

    assert [b"after"] == list(read_lines(directory / "app.log"))
    if how == "renamed":
        assert [b"before"] == list(read_lines(tmp_path / "logs.old" / "app.log"))


def test_a_directory_it_may_not_read_falls_back_to_the_lock_file() -> None:
    """A process that may write in its log's directory but not read it (mode 0o333; a
    forked child that became user nobody) cannot lock the directory: it writes under
    ``<path>.lock`` alone, counts and reports that once, and loses nothing."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to become another user")
    base = Path(tempfile.mkdtemp(prefix="kakashi-unreadable-"))
    try:
        base.chmod(0o711)  # nobody may pass through
        directory = base / "logs"
        directory.mkdir()
        os.chown(directory, 65534, 65534)
        directory.chmod(0o333)  # write and search, no read
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: become nobody, write twice, report the counts
            code = 1
            try:
                os.close(read)
                os.setgid(65534)
                os.setuid(65534)
                _errors.reset()
                writer = RotatingFileWriter(directory / "app.log", compression=None)
                writer.write([b"one"])
                writer.write([b"two"])
                writer.close()
                counts = _errors.error_counts()
                os.write(write, json.dumps(counts).encode())
                code = 0
            finally:
                os._exit(code)
        code, counts = child_report(pid, read, write)
        assert 0 == code
        assert ["DirectoryLockUnsupported"] == [
            kind.rpartition(": ")[2] for kind in counts if "locking its directory" in kind
        ]
        assert [1] == list(counts.values())
        assert [b"one", b"two"] == list(read_lines(directory / "app.log"))
    finally:
        shutil.rmtree(base)
