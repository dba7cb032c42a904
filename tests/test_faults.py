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
