"""Faults: a full disk on a real small filesystem, and a read-only directory."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kakashi.core.async_backend import AsyncConfig
from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
from kakashi.core.pipeline import PipelineConfig
from kakashi.writers import FileWriter, RotatingFileWriter
from tests.conftest import patch_os_write


@pytest.fixture(name="small_fs")
def _small_fs(tmp_path: Path) -> Any:
    """A 256 KiB tmpfs mounted for the test (skips where mounting is not allowed)."""
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
        capture_output=True, text=True,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip() or result.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> Path:
    """Fill *directory*'s filesystem to the last byte; return the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (4096, 1):  # pages, then the last bytes
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return filler


def test_full_disk_no_partial_line_and_resume(small_fs: Path, capfd: Any) -> None:
    """ENOSPC: counted, reported once, no torn line; writing resumes once space returns."""
    path = small_fs / "app.log"
    pipeline = AsyncPipeline(
        AsyncPipelineConfig(
            pipeline_config=PipelineConfig(writers=(FileWriter(path),)),
            async_config=AsyncConfig(batch_size=50, max_error_retries=2, error_retry_delay=0.01),
        )
    )
    log = pipeline.get_logger("disk")
    for i in range(100):
        log.info("before", i=i, pad="x" * 100)
    assert pipeline.flush(10)
    filler = fill(small_fs)
    for i in range(200):
        log.info("while full", i=i, pad="x" * 100)
    assert pipeline.flush(10)
    full_stats = pipeline.stats()
    filler.unlink()  # space returns
    for i in range(100):
        log.info("after", i=i)
    assert pipeline.flush(10)
    pipeline.shutdown(10)
    events = [json.loads(line) for line in path.read_bytes().splitlines()]

    assert path.read_bytes().endswith(b"\n")
    assert [e["i"] for e in events if e["message"] == "before"] == list(range(100))
    assert [e["i"] for e in events if e["message"] == "after"] == list(range(100))
    assert full_stats["dropped_by_reason"]["write_error"] > 0
    assert 1 == capfd.readouterr().err.count("No space left on device")


def test_failed_write_deletes_no_rotated_file(small_fs: Path) -> None:
    """A write failing on a full disk never rotates away or deletes existing files."""
    path = small_fs / "app.log"
    writer = RotatingFileWriter(path, max_bytes=20_000, backup_count=1, compression=None)
    writer.write([b"x" * 100] * 250)  # rotates once: one backup
    backups = writer.rotated_files()
    filler = fill(small_fs)
    with pytest.raises(OSError):
        writer.write([b"y" * 100] * 50)
    filler.unlink()
    writer.close()

    assert backups == writer.rotated_files()
    assert all(line in (b"x" * 100,) for line in path.read_bytes().splitlines())


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory_fails_at_configuration(tmp_path: Path) -> None:
    """A directory that cannot be written fails when the writer is made."""
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(PermissionError):
            FileWriter(tmp_path / "app.log")
    finally:
        tmp_path.chmod(0o700)


def fill_leaving(directory: Path, room: int) -> Path:
    """Fill *directory*'s filesystem until about *room* bytes are left; return the filler."""
    filler = directory / "filler"
    info = os.statvfs(directory)
    free = info.f_bavail * info.f_frsize
    with filler.open("wb") as stream:
        stream.write(b"\0" * max(0, free - room))
    return filler


class _FreesSpaceOnFailure:
    """A writer that passes batches on and, the first time one fails, frees the disk (so
    the backend's retry succeeds)."""

    def __init__(self, writer: Any, filler: Path) -> None:
        self.writer, self.filler, self.failures = writer, filler, 0

    def write(self, batch: Any) -> Any:
        try:
            return self.writer.write(batch)
        except OSError:
            self.failures += 1
            self.filler.unlink(missing_ok=True)
            raise

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def test_full_disk_in_a_batch_that_crosses_a_rotation(small_fs: Path) -> None:
    """The disk fills after the part of a batch before a rotation was written: the retry
    writes only the rest, so each record is on disk once (300 logged, 360 lines before)."""
    path = small_fs / "app.log"
    writer = RotatingFileWriter(path, max_bytes=20_000, compression=None)
    filler = fill_leaving(small_fs, 24 * 1024)  # room for the first file, not the second
    freeing = _FreesSpaceOnFailure(writer, filler)
    pipeline = AsyncPipeline(
        AsyncPipelineConfig(
            pipeline_config=PipelineConfig(writers=(freeing,)),
            async_config=AsyncConfig(
                batch_size=300, batch_timeout=5, max_error_retries=3, error_retry_delay=0.01
            ),
        )
    )
    log = pipeline.get_logger("disk")
    for i in range(300):
        log.info("r", i=i, pad="x" * 60)
    assert pipeline.flush(30)
    stats = pipeline.stats()
    pipeline.shutdown(10)
    files = [*writer.rotated_files()[::-1], path]
    found = [json.loads(line)["i"] for file in files for line in file.read_bytes().splitlines()]

    assert 1 == freeing.failures
    assert writer.rotations >= 1
    assert list(range(300)) == found
    assert 300 == stats["messages_written"]
    assert 0 == stats["messages_dropped"]
    assert [300] == [w["records"] for w in stats["writers"]]


def test_failed_write_cuts_off_only_its_own_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails part-way is cut off; another writer of the file cannot append
    in between (it waits for the lock), so its record is never cut (it was before)."""
    import threading

    path = tmp_path / "app.log"
    failing, other = FileWriter(path), FileWriter(path)
    failing.write([b"before"])
    real_write = os.write
    calls = 0
    other_done = threading.Event()

    def short_then_full(fd: int, data: Any) -> int:
        nonlocal calls
        if fd != failing._fd:
            return real_write(fd, data)
        calls += 1
        if calls == 1:
            return real_write(fd, bytes(data[:5]))  # the kernel took 5 bytes...
        # ...meanwhile another writer tries to append...
        threading.Thread(
            target=lambda: (other.write([b"other"]), other_done.set()), daemon=True
        ).start()
        other_done.wait(0.5)
        raise OSError(errno.ENOSPC, "No space left on device")  # ...then the disk is full

    patch_os_write(monkeypatch, short_then_full)
    with pytest.raises(OSError, match="No space"):
        failing.write([b"lost-record"])
    patch_os_write(monkeypatch, real_write)
    assert other_done.wait(10)
    failing.close()
    other.close()

    assert b"before\nother\n" == path.read_bytes()


def test_a_batch_formatted_as_it_is_written_that_fills_the_disk(small_fs: Path) -> None:
    """The async backend's file writer formats a batch and writes it in one release of
    the GIL (PendingLines, compiled build). A disk with room for part of a batch: the
    kernel takes part of it, then ENOSPC; the part is cut off, the batch is retried and
    counted as dropped, no torn line is left, and writing resumes once there is room."""
    from kakashi._speedups import USING_SPEEDUPS

    path = small_fs / "app.log"
    writer = FileWriter(path)
    pipeline = AsyncPipeline(
        AsyncPipelineConfig(
            pipeline_config=PipelineConfig(writers=(writer,)),
            async_config=AsyncConfig(batch_size=100, max_error_retries=1, error_retry_delay=0.01),
        )
    )
    log = pipeline.get_logger("disk")
    for i in range(100):
        log.info("before", i=i, pad="x" * 100)
    assert pipeline.flush(10)
    fused_before = writer.fused_writes
    filler = fill(small_fs)
    os.truncate(filler, filler.stat().st_size - 3 * 4096)  # room for part of a batch
    for i in range(100):
        log.info("during", i=i, pad="y" * 100)
    assert pipeline.flush(10)
    during = pipeline.stats()
    fused_during = writer.fused_writes  # the part of the batch the kernel took
    filler.unlink()
    for i in range(100):
        log.info("after", i=i)
    assert pipeline.flush(10)
    pipeline.shutdown(10)
    data = path.read_bytes()
    events = [json.loads(line) for line in data.splitlines()]

    assert data.endswith(b"\n")
    assert [e["i"] for e in events if e["message"] == "before"] == list(range(100))
    assert [e["i"] for e in events if e["message"] == "after"] == list(range(100))
    written_during = [e["i"] for e in events if e["message"] == "during"]
    assert written_during == []  # the part that landed was cut off
    assert during["dropped_by_reason"]["write_error"] == 100
    assert (fused_before, fused_during) == ((1, 2) if USING_SPEEDUPS else (0, 0))
