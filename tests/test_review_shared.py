"""Adversarial review of the shared-file writers: each test counts the records logged, on
disk, duplicated and reported dropped, with real files (and real processes where the
defect needs them). Every child has a deadline."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kakashi.core.async_backend import AsyncConfig
from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
from kakashi.core.pipeline import PipelineConfig
from kakashi.writers import RotatingFileWriter, read_lines


@pytest.fixture(name="few_inodes")
def _few_inodes(tmp_path: Path) -> Any:
    """A tmpfs with room for bytes but only a handful of inodes (skips where mounting is
    not allowed): creating a file fails with ENOSPC once they are used up."""
    mount = tmp_path / "few"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,nr_inodes=16", "tmpfs", str(mount)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip() or result.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, timeout=30)


def use_up_inodes(directory: Path) -> list[Path]:
    """Create empty files until the filesystem has no inode left; return them."""
    made = []
    while True:
        filler = directory / f"filler{len(made)}"
        try:
            filler.touch()
        except OSError:
            return made
        made.append(filler)


class _FreesInodesOnFailure:
    """Passes batches on; the first time one fails, frees the inodes (so a retry works)."""

    def __init__(self, writer: RotatingFileWriter, fillers: list[Path]) -> None:
        self.writer, self.fillers, self.failures = writer, fillers, 0

    def write(self, batch: Any) -> Any:
        try:
            return self.writer.write(batch)
        except OSError:
            self.failures += 1
            for filler in self.fillers:
                filler.unlink(missing_ok=True)
            raise

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def test_new_file_cannot_be_created_after_a_rotation_mid_batch(few_inodes: Path) -> None:
    """A batch crosses a rotation: the first records go into the file that is rotated,
    then the fresh active file cannot be created (no inode left: ENOSPC). The writer must
    say how many records are written (PartialWriteError), so the retry writes only the
    rest. It raised a plain OSError: the backend wrote the whole batch again (101 logged,
    113 lines on disk, 12 twice)."""
    path = few_inodes / "app.log"
    writer = RotatingFileWriter(path, max_bytes=2_000, compression=None)
    writer.write([b'{"i": -1}'])  # the lock file exists from now on
    freeing = _FreesInodesOnFailure(writer, use_up_inodes(few_inodes))
    pipeline = AsyncPipeline(
        AsyncPipelineConfig(
            pipeline_config=PipelineConfig(writers=(freeing,)),
            async_config=AsyncConfig(
                batch_size=100, batch_timeout=5, max_error_retries=3, error_retry_delay=0.01
            ),
        )
    )
    log = pipeline.get_logger("disk")
    for i in range(100):
        log.info("r", i=i, pad="x" * 60)
    assert pipeline.flush(30)
    stats = pipeline.stats()
    pipeline.shutdown(10)
    files = [*writer.rotated_files()[::-1], path]
    found = [json.loads(line)["i"] for file in files for line in read_lines(file)]

    assert 1 == freeing.failures
    assert writer.rotations >= 1
    assert [-1, *range(100)] == found
    assert 100 == stats["messages_written"]
    assert 0 == stats["messages_dropped"]
    assert os.path.exists(path)
