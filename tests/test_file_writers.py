"""File writers: zstd frames, the reader, external rotation, rotation, retention, crashes."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest
import zstandard

from kakashi.writers import FileWriter, RotatingFileWriter, ZstdFileWriter, read_lines
from tests.conftest import wait_or_kill


def lines(prefix: str, count: int, width: int = 20) -> list[bytes]:
    return [f"{prefix}-{i:0{width - len(prefix) - 1}d}".encode() for i in range(count)]


class TestZstd:
    def test_every_batch_is_a_decodable_frame(self, tmp_path: Path) -> None:
        """Each batch is one complete frame: the file decodes as a whole at any time."""
        path = tmp_path / "app.log.zst"
        writer = ZstdFileWriter(path)
        writer.write(lines("a", 100))
        with path.open("rb") as stream:
            decoded_now = zstandard.ZstdDecompressor().stream_reader(stream).read()
        writer.write(lines("b", 50))
        writer.close()

        assert b"\n".join(lines("a", 100)) + b"\n" == decoded_now
        assert lines("a", 100) + lines("b", 50) == list(read_lines(path))

    def test_reopening_appends_frames(self, tmp_path: Path) -> None:
        """A second writer on the same file appends; both parts read back in order."""
        path = tmp_path / "app.log.zst"
        for prefix in ("first", "second"):
            writer = ZstdFileWriter(path, level=5)
            writer.write(lines(prefix, 10))
            writer.close()

        assert lines("first", 10) + lines("second", 10) == list(read_lines(path))

    @pytest.mark.skipif(shutil.which("zstd") is None, reason="the zstd command is not installed")
    def test_zstd_command_reads_it(self, tmp_path: Path) -> None:
        """``zstd -dc`` decodes a file of several frames."""
        path = tmp_path / "app.log.zst"
        writer = ZstdFileWriter(path)
        writer.write(lines("x", 5))
        writer.write(lines("y", 5))
        writer.close()
        out = subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True).stdout

        assert b"\n".join(lines("x", 5) + lines("y", 5)) + b"\n" == out

    def test_torn_final_frame_is_skipped_with_a_warning(self, tmp_path: Path) -> None:
        """A frame cut short by a crash is skipped; every complete frame before it reads."""
        path = tmp_path / "torn.log.zst"
        writer = ZstdFileWriter(path)
        writer.write(lines("kept", 20))
        writer.write(lines("torn", 20))
        writer.close()
        with path.open("r+b") as stream:
            stream.truncate(path.stat().st_size - 5)

        with pytest.warns(RuntimeWarning, match="torn or corrupt zstd frame"):
            read = list(read_lines(path))
        assert lines("kept", 20) == read[:20]
        assert all(line in lines("torn", 20) for line in read[20:])

    def test_plain_file_unterminated_last_line(self, tmp_path: Path) -> None:
        """The reader yields complete lines of a plain file and warns about a cut last one."""
        path = tmp_path / "plain.log"
        path.write_bytes(b"one\ntwo\nthr")

        with pytest.warns(RuntimeWarning, match="unterminated last line"):
            assert [b"one", b"two"] == list(read_lines(path))

    def test_bad_level(self, tmp_path: Path) -> None:
        """A zstd level outside 1..22 fails at construction."""
        with pytest.raises(ValueError, match=r"level must be an int within 1\.\.22"):
            ZstdFileWriter(tmp_path / "x.zst", level=0)


class TestExternalRotation:
    def test_moved_file_is_noticed_and_reopened(self, tmp_path: Path) -> None:
        """After logrotate moves the file away, the next batch goes to a new file."""
        path = tmp_path / "app.log"
        writer = FileWriter(path)
        writer.write([b"before"])
        path.rename(tmp_path / "app.log.1")
        writer.write([b"after"])
        writer.close()

        assert (b"before\n", b"after\n") == (
            (tmp_path / "app.log.1").read_bytes(),
            path.read_bytes(),
        )

    def test_deleted_file_is_recreated(self, tmp_path: Path) -> None:
        """A deleted log file comes back with the next batch."""
        path = tmp_path / "app.log"
        writer = FileWriter(path)
        writer.write([b"one"])
        path.unlink()
        writer.write([b"two"])
        writer.close()

        assert b"two\n" == path.read_bytes()

    def test_copytruncate_leaves_no_nul_padding(self, tmp_path: Path) -> None:
        """After the file is copied and truncated, writes continue at its start."""
        path = tmp_path / "app.log"
        writer = FileWriter(path)
        writer.write([b"x" * 1000])
        shutil.copy(path, tmp_path / "app.log.1")
        with path.open("r+b") as stream:
            stream.truncate(0)
        writer.write([b"fresh"])
        writer.close()

        assert b"fresh\n" == path.read_bytes()


class Clock:
    """A settable clock for time-based rotation."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class TestRotation:
    def test_size_rotation_never_splits_a_record(self, tmp_path: Path) -> None:
        """Files stay within max_bytes, every record whole, none lost, numbered newest-first."""
        path = tmp_path / "app.log"
        writer = RotatingFileWriter(path, max_bytes=100, compression=None)
        records = lines("r", 30)  # 21 bytes each with the newline: 4 per file
        writer.write(records[:7])
        writer.write(records[7:])
        writer.close()
        numbered = sorted(writer.rotated_files(), key=lambda p: int(p.name.rsplit(".", 1)[1]))
        files = [path, *numbered]

        assert all(p.stat().st_size <= 100 for p in files)
        read_back = [line for p in reversed(files) for line in p.read_bytes().splitlines()]
        assert records == read_back
        assert 7 == writer.rotations

    def test_oversized_record_goes_alone(self, tmp_path: Path) -> None:
        """A record larger than max_bytes is written whole into a fresh file."""
        path = tmp_path / "app.log"
        writer = RotatingFileWriter(path, max_bytes=50, compression=None)
        writer.write([b"small", b"x" * 200, b"after"])
        writer.close()

        assert b"after\n" == path.read_bytes()
        assert {b"small\n", b"x" * 200 + b"\n"} == {p.read_bytes() for p in writer.rotated_files()}

    @pytest.mark.parametrize("compression", ["zstd", "gzip"])
    def test_rotated_files_are_compressed_in_the_background(
        self, tmp_path: Path, compression: str
    ) -> None:
        """Rotated files become .zst or .gz off the write path and decode to their lines."""
        path = tmp_path / "app.log"
        writer = RotatingFileWriter(path, max_bytes=64, compression=compression)
        writer.write(lines("c", 3))
        writer.write(lines("d", 3))
        assert writer.wait_for_compression(30)
        writer.close()
        (rotated,) = writer.rotated_files()
        data = rotated.read_bytes()
        decoded = (
            zstandard.ZstdDecompressor().decompressobj().decompress(data)
            if compression == "zstd"
            else gzip.decompress(data)
        )

        assert rotated.name == "app.log.1" + (".zst" if compression == "zstd" else ".gz")
        assert b"\n".join(lines("c", 3)) + b"\n" == decoded

    def test_backup_count_retention(self, tmp_path: Path) -> None:
        """Only backup_count rotated files are kept, the newest ones."""
        path = tmp_path / "app.log"
        writer = RotatingFileWriter(path, max_bytes=30, backup_count=2, compression=None)
        for batch in range(10):  # two records per file: four rotations
            writer.write([f"batch-{batch}".encode() * 2])
        assert writer.wait_for_compression(30)
        writer.close()

        names = sorted(p.name for p in writer.rotated_files())
        assert ["app.log.1", "app.log.2"] == names
        assert b"batch-6batch-6\nbatch-7batch-7\n" == (tmp_path / "app.log.1").read_bytes()
        assert 4 == writer.rotations

    def test_hourly_rotation_with_timestamped_names(self, tmp_path: Path) -> None:
        """when='hourly' rotates at the hour; timestamped names carry the hour (UTC)."""
        clock = Clock(1_795_795_200.0 + 59 * 60)  # 2026-11-27T16:59:00Z
        path = tmp_path / "app.log"
        writer = RotatingFileWriter(
            path, when="hourly", naming="timestamped", compression=None, clock=clock
        )
        writer.write([b"16:59"])
        clock.now += 120  # 17:01
        writer.write([b"17:01"])
        writer.close()

        (rotated,) = writer.rotated_files()
        assert "app.2026-11-27T16.log" == rotated.name  # the hour the file holds
        assert (b"16:59\n", b"17:01\n") == (rotated.read_bytes(), path.read_bytes())

    def test_daily_at_a_time(self, tmp_path: Path) -> None:
        """when='daily@03:30' rotates once a day, at 03:30 (UTC)."""
        clock = Clock(1_795_747_000.0)  # 2026-11-27T02:36:40Z
        path = tmp_path / "app.log"
        writer = RotatingFileWriter(path, when="daily@03:30", compression=None, clock=clock)
        writer.write([b"day one"])
        clock.now += 600  # 02:46: not yet
        writer.write([b"still day one"])
        clock.now += 3600  # 03:46
        writer.write([b"day two"])
        clock.now += 3600  # 04:46: same day
        writer.write([b"still day two"])
        writer.close()

        (rotated,) = writer.rotated_files()
        assert b"day one\nstill day one\n" == rotated.read_bytes()
        assert b"day two\nstill day two\n" == path.read_bytes()

    @pytest.mark.parametrize(("when", "rotates_at_day"), [("w4", 7), ("weekly", 3)])
    def test_weekly(self, tmp_path: Path, when: str, rotates_at_day: int) -> None:
        """'w4' rotates next Friday at 00:00 (today is Friday); 'weekly' on Monday."""
        friday = 1_795_795_200.0 + 59 * 60  # Friday 2026-11-27T16:59:00Z
        clock = Clock(friday)
        writer = RotatingFileWriter(tmp_path / "w.log", when=when, compression=None, clock=clock)
        writer.write([b"friday"])
        for day in range(1, 8):
            clock.now = friday + day * 86_400 - 17 * 3600 + 60  # 00:01 on each later day
            writer.write([f"day {day}".encode()])
            if writer.rotations:
                break
        writer.close()

        assert (1, rotates_at_day) == (writer.rotations, day)

    def test_max_age_retention(self, tmp_path: Path) -> None:
        """Rotated files older than max_age are deleted after the next rotation."""
        path = tmp_path / "app.log"
        writer = RotatingFileWriter(path, max_bytes=10, compression=None, max_age=3600)
        writer.write([b"0123456789", b"abcdefghij"])  # one rotation
        assert writer.wait_for_compression(30)
        (old,) = writer.rotated_files()
        two_hours_ago = old.stat().st_mtime - 7200
        os.utime(old, (two_hours_ago, two_hours_ago))
        writer.write([b"klmnopqrst"])  # rotates again: the old file is shifted and expires
        assert writer.wait_for_compression(30)
        writer.close()

        assert [b"abcdefghij\n"] == [p.read_bytes() for p in writer.rotated_files()]

    def test_zst_active_file_rotates(self, tmp_path: Path) -> None:
        """A .zst path is written as frames and rotates whole frames."""
        path = tmp_path / "app.log.zst"
        writer = RotatingFileWriter(path, max_bytes=10)  # one frame already exceeds it
        writer.write(lines("z", 5))
        writer.write(lines("w", 5))
        writer.close()

        (rotated,) = writer.rotated_files()
        assert lines("z", 5) == list(read_lines(rotated))
        assert lines("w", 5) == list(read_lines(path))

    def test_should_rollover_is_the_seam(self, tmp_path: Path) -> None:
        """A subclass's should_rollover decides when files rotate, as in logging.handlers."""

        class OnMarker(RotatingFileWriter):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                self.marker_next = False
                super().__init__(*args, **kwargs)

            def should_rollover(self, size: int) -> bool:
                return self.marker_next

        path = tmp_path / "app.log"
        writer = OnMarker(path, compression=None)
        writer.write([b"one"])
        writer.marker_next = True
        writer.write([b"two"])
        writer.close()

        assert (b"one\n", b"two\n") == ((tmp_path / "app.log.1").read_bytes(), path.read_bytes())

    def test_namer_and_rotator_hooks(self, tmp_path: Path) -> None:
        """namer renames and rotator moves, as in logging.handlers."""
        moves: list[tuple[str, str]] = []

        def rotator(source: str, dest: str) -> None:
            moves.append((Path(source).name, Path(dest).name))
            os.rename(source, dest)

        path = tmp_path / "app.log"
        writer = RotatingFileWriter(
            path, max_bytes=10, compression=None,
            namer=lambda name: name + ".old", rotator=rotator,
        )  # fmt: skip
        writer.write([b"0123456789", b"next"])
        writer.close()

        assert [("app.log", "app.log.1.old")] == moves

    @pytest.mark.parametrize(
        ("options", "error", "message"),
        [
            ({"max_bytes": 0}, ValueError, "max_bytes must be a positive int"),
            ({"max_bytes": -10}, ValueError, "max_bytes must be a positive int"),
            ({"when": "fortnightly"}, ValueError, "when must be 'hourly'"),
            ({"naming": "random"}, ValueError, "naming must be"),
            ({"backup_count": -1}, ValueError, "backup_count must be"),
            ({"max_age": 0}, ValueError, "max_age must be positive"),
            ({"compression": "lz4"}, ValueError, "compression must be"),
            ({"namer": "x"}, TypeError, "namer must be callable"),
        ],
    )
    def test_bad_options(
        self, tmp_path: Path, options: dict[str, Any], error: type, message: str
    ) -> None:
        """Negative sizes and unknown options fail at construction, naming the parameter."""
        with pytest.raises(error, match=message):
            RotatingFileWriter(tmp_path / "x.log", **options)


def test_kill_9_leaves_every_complete_frame_readable(tmp_path: Path) -> None:
    """SIGKILL mid-stream: both files read back as a gap-free prefix of what was logged."""
    script = textwrap.dedent(
        f"""
        import sys
        from kakashi.core.async_backend import AsyncConfig
        from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
        from kakashi.core.pipeline import PipelineConfig
        from kakashi.writers import FileWriter, ZstdFileWriter
        pipeline = AsyncPipeline(AsyncPipelineConfig(
            pipeline_config=PipelineConfig(writers=(
                FileWriter({str(tmp_path / "plain.log")!r}),
                ZstdFileWriter({str(tmp_path / "app.log.zst")!r}),
            )),
            async_config=AsyncConfig(batch_size=100, batch_timeout=0.05),
        ))
        log = pipeline.get_logger("crash")
        i = 0
        while True:
            log.info("r", seq=i)
            i += 1
            if i == 2000:
                assert pipeline.flush(30)
                print("ready", flush=True)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert "ready" == process.stdout.readline().strip()
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    process.stdout.close()

    for name in ("plain.log", "app.log.zst"):
        with warnings.catch_warnings(record=True) as caught:  # a torn tail: reported, not raised
            warnings.simplefilter("always")
            sequence = [json.loads(line)["seq"] for line in read_lines(tmp_path / name)]
        assert all(issubclass(w.category, RuntimeWarning) for w in caught)
        assert len(sequence) >= 2000
        assert list(range(len(sequence))) == sequence


def test_several_processes_share_one_rotating_file(tmp_path: Path) -> None:
    """Four processes append and rotate one file: every line once, whole, none lost."""
    script = textwrap.dedent(
        f"""
        import sys
        from kakashi.writers import RotatingFileWriter
        writer = RotatingFileWriter({str(tmp_path / "shared.log")!r}, max_bytes=20_000,
                                    compression=None)
        worker = sys.argv[1]
        for batch in range(100):
            writer.write([f"{{worker}}-{{batch}}-{{n}}-".encode() + b"x" * 40 for n in range(10)])
        writer.close()
        """
    )
    workers = [subprocess.Popen([sys.executable, "-c", script, str(n)]) for n in range(4)]
    assert [0, 0, 0, 0] == [process.wait(120) for process in workers]
    files = sorted(tmp_path.glob("shared.log*"))
    lines = [
        line for file in files if not file.name.endswith(".lock")
        for line in file.read_bytes().splitlines()
    ]  # fmt: skip

    expected = {
        f"{w}-{b}-{n}-".encode() + b"x" * 40
        for w in range(4)
        for b in range(100)
        for n in range(10)
    }
    assert 4000 == len(lines)
    assert expected == set(lines)
    rotated = [f for f in files if f.name.startswith("shared.log.") and f.suffix != ".lock"]
    # Rotating twice for one threshold would leave a nearly empty file behind.
    assert len(rotated) >= 5
    assert all(f.stat().st_size > 10_000 for f in rotated)


def test_kill_9_loses_nothing_older_than_batch_timeout(tmp_path: Path) -> None:
    """Without any flush, records older than batch_timeout are on disk when killed."""
    script = textwrap.dedent(
        f"""
        import time
        from kakashi.core.async_backend import AsyncConfig
        from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
        from kakashi.core.pipeline import PipelineConfig
        from kakashi.writers import ZstdFileWriter
        pipeline = AsyncPipeline(AsyncPipelineConfig(
            pipeline_config=PipelineConfig(writers=(ZstdFileWriter({str(tmp_path / "k.zst")!r}),)),
            async_config=AsyncConfig(batch_size=1000, batch_timeout=0.1),
        ))
        log = pipeline.get_logger("crash")
        for i in range(2500):  # two full batches and a partial one that only the timeout writes
            log.info("r", seq=i)
        time.sleep(2.0)  # twenty batch_timeouts, and no flush
        print("idle", flush=True)
        time.sleep(60)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert "idle" == process.stdout.readline().strip()
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    process.stdout.close()

    assert list(range(2500)) == [json.loads(x)["seq"] for x in read_lines(tmp_path / "k.zst")]


def test_unopenable_path_is_counted_and_recovers(tmp_path: Path, capfd: Any) -> None:
    """A path that cannot be reopened fails the batch (reported once); writing resumes."""
    from kakashi.core.async_backend import AsyncConfig
    from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
    from kakashi.core.pipeline import PipelineConfig

    path = tmp_path / "app.log"
    pipeline = AsyncPipeline(
        AsyncPipelineConfig(
            pipeline_config=PipelineConfig(writers=(FileWriter(path),)),
            async_config=AsyncConfig(max_error_retries=1, error_retry_delay=0.001),
        )
    )
    log = pipeline.get_logger("reopen")
    log.info("first")
    assert pipeline.flush(10)
    path.rename(tmp_path / "app.log.1")  # rotated away...
    path.mkdir()  # ...and something unwritable took its place
    log.info("lost, counted")
    assert pipeline.flush(10)
    stats = pipeline.stats()
    path.rmdir()
    log.info("after")
    assert pipeline.flush(10)
    pipeline.shutdown(10)

    assert 1 == stats["dropped_by_reason"]["write_error"]
    assert 1 == capfd.readouterr().err.count("IsADirectoryError")
    assert ["dropped 1 records (1 write_error)", "after"] == [
        json.loads(line)["message"] for line in path.read_bytes().splitlines()
    ]  # the loss is told in the file too


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_fork_during_compression(tmp_path: Path) -> None:
    """Forked while the parent compresses (its lock held): the child compresses its own."""
    import threading

    path = tmp_path / "app.log"
    writer = RotatingFileWriter(path, max_bytes=20)
    held = threading.Event()
    release = threading.Event()

    def busy_compressor() -> None:  # stands for the parent's compressor, mid-job
        with writer._jobs_lock:
            held.set()
            release.wait(30)

    compressor = threading.Thread(target=busy_compressor)
    writer._compressor = compressor
    compressor.start()
    held.wait(10)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            writer.write([b"child--0123456789", b"child--abcdefghij"])  # rotates once
            code = 0 if writer.wait_for_compression(10) else 2
        finally:
            os._exit(code)
    status = wait_or_kill(pid, 30)  # a deadlocked child fails the test, not the run
    release.set()
    compressor.join(10)
    writer._compressor = None
    writer.close()

    assert 0 == os.waitstatus_to_exitcode(status)
    assert ["app.log.1.zst"] == sorted(p.name for p in tmp_path.glob("app.log.*.zst"))
