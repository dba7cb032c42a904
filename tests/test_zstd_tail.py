"""The zstd tail check reads the end of a file, not all of it, and answers as the walk of
every frame header from the start does (kakashi.writers.zstd.tail_frames_end)."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import zstandard

from kakashi.writers.reading import ZSTD_MAGIC, read_lines
from kakashi.writers.rotating import RotatingFileWriter
from kakashi.writers.zstd import ZstdFileWriter, clean_frames_end, tail_frames_end

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SKIPPABLE = [bytes([0x50 + n]) + b"\x2a\x4d\x18" for n in range(16)]


def _frame_lookalike(body: bytes, checksum: bytes | None) -> bytes:
    """What a frame's walk takes for a whole frame: a one-segment header declaring
    *body*'s size, one raw last block holding it, and *checksum* (4 bytes, not *body*'s
    XXH64: wrong but for once in 2**32) if given. It decodes only without a checksum,
    and then cannot prove itself."""
    descriptor = 0x20 | (0x04 if checksum is not None else 0)  # one segment, checksum flag
    block = (len(body) << 3 | 1).to_bytes(3, "little")  # raw, last
    return ZSTD_MAGIC + bytes([descriptor, len(body)]) + block + body + (checksum or b"")


# Pieces of records: short random bytes, the zstd and skippable magic numbers (so that
# records hold them, stored raw or compressed), bytes a frame's walk takes for a whole
# frame, a JSON line, and incompressible random bytes (stored raw at any level, so the
# magic bytes inside them reach the file as they are).
pieces = st.one_of(
    st.binary(max_size=24),
    st.just(ZSTD_MAGIC),
    st.sampled_from(SKIPPABLE),
    st.builds(
        _frame_lookalike,
        st.binary(max_size=200),
        st.one_of(st.none(), st.binary(min_size=4, max_size=4)),
    ),
    st.just(b'{"message": "trade executed", "n": 1}'),
    st.builds(
        lambda seed, n: random.Random(seed).randbytes(n), st.integers(0, 2**32), st.integers(1, 900)
    ),
)
records = st.lists(pieces, max_size=6).map(b"".join)


@st.composite
def frames(draw: Any) -> bytes:
    """One frame: a batch compressed as the writers do (level 1 or 3, with a checksum),
    now and then one without a checksum, or a skippable frame (any payload)."""
    kind = draw(st.sampled_from(["zstd", "zstd", "zstd", "zstd", "no checksum", "skippable"]))
    if kind == "skippable":
        payload = draw(records)
        return draw(st.sampled_from(SKIPPABLE)) + len(payload).to_bytes(4, "little") + payload
    batch = draw(st.lists(records, min_size=1, max_size=4))
    level = draw(st.sampled_from([1, 3]))
    compressor = zstandard.ZstdCompressor(level=level, write_checksum=kind == "zstd")
    return bytes(compressor.compress(b"\n".join(batch) + b"\n"))


def ends(data: bytes, start: int, window: int) -> tuple[int, int]:
    """(the full walk's answer, the tail check's) for a file holding *data*."""
    with tempfile.TemporaryFile() as file:
        file.write(data)
        file.flush()
        fd = file.fileno()
        return (
            clean_frames_end(fd, len(data), start),
            tail_frames_end(fd, len(data), start, window=window),
        )


def lines(data: bytes) -> list[bytes]:
    """What a reader gets back from *data* (skipping what it cannot read, as it does)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return list(read_lines(io.BytesIO(data)))


@settings(max_examples=400, deadline=None)
@given(
    whole=st.lists(frames(), min_size=1, max_size=12),
    cut=st.one_of(st.none(), st.integers(min_value=0)),
    garbage=st.one_of(st.just(b""), st.binary(min_size=1, max_size=300)),
    window=st.one_of(st.integers(1, 400), st.just(16 * 1024)),
    start_frame=st.integers(min_value=0),
)
def test_agrees_with_the_full_walk(
    whole: list[bytes], cut: int | None, garbage: bytes, window: int, start_frame: int
) -> None:
    """On frames as writers leave them (cut at any byte: a torn tail; then perhaps bytes
    that are not frames), the tail check's answer is the full walk's, from the first
    frame or from any later boundary, whatever the window."""
    data = b"".join(whole)
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    data += garbage
    boundaries = [0]
    for frame in whole:
        if boundaries[-1] + len(frame) > len(data):
            break
        boundaries.append(boundaries[-1] + len(frame))
    start = boundaries[start_frame % len(boundaries)]
    full, tail = ends(data, start, window)
    assert full == tail


@settings(max_examples=200, deadline=None)
@given(
    before=st.lists(frames(), min_size=1, max_size=6),
    torn=frames(),
    keep=st.integers(min_value=1),
    after=st.lists(frames(), min_size=1, max_size=6),
    cut=st.integers(min_value=0),
    window=st.integers(1, 400),
)
def test_damage_in_the_middle_never_costs_a_readable_record(
    before: list[bytes], torn: bytes, keep: int, after: list[bytes], cut: int, window: int
) -> None:
    """A torn frame left in the middle (another writer's, while writers appended without
    the lock) stops the full walk, which then leaves the file alone; the tail check judges
    the tail on its own, and whatever it cuts off holds nothing a reader could read
    (a reader may get more: a frame without a checksum followed by a torn one is taken
    whole once nothing follows it)."""
    first = bytes(zstandard.ZstdCompressor(write_checksum=True).compress(b'{"n": 0}\n'))
    data = first + b"".join(before) + torn[: keep % len(torn)] + b"".join(after)
    data = data[: max(len(first), cut % (len(data) + 1))]
    _, tail = ends(data, 0, window)
    assert tail <= len(data)
    assert Counter() == Counter(lines(data)) - Counter(lines(data[:tail]))


def test_a_frame_inside_a_record_is_not_taken_for_a_frame_start(tmp_path: Path) -> None:
    """A record holding, as raw bytes, a whole zstd frame and then what reads as a torn
    frame: the frame that holds the record starts in the window and proves itself first,
    so the walk steps over the record, and nothing is cut (as the full walk says)."""
    inner = bytes(zstandard.ZstdCompressor(write_checksum=True).compress(b"inner\n"))
    # One-segment header, content size 0, then a raw block of 1 MiB: runs past the end.
    fake_torn = ZSTD_MAGIC + b"\x20\x00" + ((1 << 20) << 3).to_bytes(3, "little")
    record = random.Random(7).randbytes(2000) + inner + fake_torn + b"tail"
    encoder = ZstdFileWriter(tmp_path / "encoder.zst")
    frames_ = [encoder.encode_record(b'{"n": %d}' % n) for n in range(20)]
    outer = bytes(zstandard.ZstdCompressor(level=1, write_checksum=True).compress(record + b"\n"))
    assert inner in outer  # incompressible: the record is stored as it is
    data = b"".join(frames_) + outer
    for window in (len(outer) + 1, len(outer) + 100, 16 * 1024):
        assert (len(data), len(data)) == ends(data, 0, window)


class _CountedReads:
    """Replaces os.pread: keeps the size of each read (the bytes it returned)."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self._pread = os.pread

    def __call__(self, fd: int, count: int, offset: int) -> bytes:
        data = self._pread(fd, count, offset)
        self.sizes.append(len(data))
        return data

    @property
    def bytes(self) -> int:
        """All the bytes read."""
        return sum(self.sizes)

    @property
    def windows(self) -> list[int]:
        """The reads of more than a frame header (18 bytes) or a block header (3)."""
        return [size for size in self.sizes if size > 18]


def _one_record_frames(path: Path, megabytes: float) -> int:
    """Fill *path* with one-record frames (a synchronous pipeline's) up to *megabytes*;
    return how many."""
    encoder = ZstdFileWriter(path.with_name("encoder.zst"))
    frames_, size = [], 0
    while size < megabytes * 1_000_000:
        frames_.append(encoder.encode_record(b'{"message": "trade", "n": %d}' % len(frames_)))
        size += len(frames_[-1])
    encoder.close()
    path.write_bytes(b"".join(frames_))
    return len(frames_)


@pytest.mark.parametrize("torn", [False, True], ids=["whole", "torn"])
@pytest.mark.parametrize("kind", ["zstd", "rotating"])
def test_first_write_of_a_big_file_reads_only_its_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, torn: bool
) -> None:
    """A fresh writer's first write to a 2 MB file of 40,000 frames reads the first window
    (16 KiB) and the first frame's header to check the tail, where the full walk reads
    every frame header (hundreds of kilobytes); a torn last frame is cut off all the same."""
    path = tmp_path / "app.log.zst"
    count = _one_record_frames(path, 2)
    last = ZstdFileWriter(tmp_path / "encoder.zst").encode_record(
        b'{"message": "torn"}' + b"x" * 200
    )
    if torn:
        with path.open("ab") as file:
            file.write(last[: len(last) // 2])
    size = path.stat().st_size
    full = _CountedReads()
    monkeypatch.setattr(os, "pread", full)
    with path.open("rb") as file:
        clean = clean_frames_end(file.fileno(), size)
    assert full.bytes > 400_000  # what the first write cost before
    writer: Any = (
        ZstdFileWriter(path)
        if kind == "zstd"
        else RotatingFileWriter(path, max_bytes=10**9, compression=None)
    )
    counted = _CountedReads()
    monkeypatch.setattr(os, "pread", counted)
    writer.write([b'{"message": "first"}'])
    monkeypatch.undo()
    writer.close()
    assert [16 * 1024] == counted.windows  # and the first frame's header (it is a frame)
    assert counted.bytes <= 16 * 1024 + 64
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the torn frame is gone, not skipped
        read = [json.loads(line) for line in read_lines(path)]
    assert clean == (size - len(last) // 2 if torn else size)
    assert count + 1 == len(read)
    assert {"message": "first"} == read[-1]


def test_a_batch_writer_reads_only_the_tail_of_what_others_appended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer whose last batch was followed by 2 MB of other processes' frames checks
    the last 16 KiB before its next batch, where it walked every frame they appended."""
    path = tmp_path / "app.log.zst"
    writer = ZstdFileWriter(path)
    writer.write([b'{"message": "before"}'])
    others = tmp_path / "others.zst"
    count = _one_record_frames(others, 2)
    with path.open("ab") as file:
        file.write(others.read_bytes())
    counted = _CountedReads()
    monkeypatch.setattr(os, "pread", counted)
    writer.write([b'{"message": "after"}'])
    monkeypatch.undo()
    writer.close()
    assert [16 * 1024] == counted.windows
    assert counted.bytes <= 16 * 1024 + 64
    read = [json.loads(line) for line in read_lines(path)]
    assert count + 2 == len(read)
    assert [{"message": "before"}, {"message": "after"}] == [read[0], read[-1]]


def test_a_torn_frame_longer_than_the_window_is_found_by_widening(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A torn batch of about 300 KB: no frame in the last 16 KiB or 128 KiB proves itself, the
    third window (1 MiB) holds the frames before it; the torn frame is cut there, reading
    about 1.2 MB of a 3 MB file."""
    path = tmp_path / "app.log.zst"
    _one_record_frames(path, 3)
    pads = [random.Random(n).randbytes(3000).hex().encode() for n in range(100)]
    big = ZstdFileWriter(tmp_path / "encoder.zst").encode(pads)
    assert 128 * 1024 < len(big) - 1000 < 1024 * 1024 - 1000
    whole = path.stat().st_size
    with path.open("ab") as file:
        file.write(big[: len(big) - 1000])
    counted = _CountedReads()
    monkeypatch.setattr(os, "pread", counted)
    with path.open("rb") as file:
        end = tail_frames_end(file.fileno(), path.stat().st_size)
    monkeypatch.undo()
    assert whole == end
    assert [16 * 1024, 128 * 1024, 1024 * 1024] == counted.windows


def test_frames_without_a_checksum_are_walked_from_the_start() -> None:
    """Frames that cannot prove themselves (no checksum: another tool's) leave the tail
    unresolved in every window; the window reaches the start and the answer is still the
    full walk's: the torn frame is cut."""
    compressor = zstandard.ZstdCompressor(write_checksum=False)
    frames_ = [bytes(compressor.compress(b'{"n": %d}\n' % n)) for n in range(3000)]
    data = b"".join(frames_)
    data_torn = data + frames_[5][:-3]
    assert (len(data), len(data)) == ends(data_torn, 0, 64)
    assert (len(data), len(data)) == ends(data, 0, 64)


def test_a_file_that_is_not_frames_is_judged_at_its_first_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain log named .zst is left as it is, as the full walk leaves it, after reading
    its first bytes only (no window to widen to 16 MiB looking for a frame)."""
    path = tmp_path / "plain.zst"
    path.write_bytes(b'{"message": "plain"}\n' * 50_000)
    counted = _CountedReads()
    monkeypatch.setattr(os, "pread", counted)
    with path.open("rb") as file:
        end = tail_frames_end(file.fileno(), path.stat().st_size)
    monkeypatch.undo()
    assert path.stat().st_size == end
    assert counted.bytes <= 64


@pytest.mark.parametrize("window", [0, -1, 1.5, True, None])
def test_a_window_that_is_not_a_positive_int_is_refused(window: Any) -> None:
    """The window is a number of bytes >= 1; anything else is refused, naming it."""
    with pytest.raises(ValueError, match="window must be a positive int"):
        tail_frames_end(0, 0, 0, window=window)


_WORKER = textwrap.dedent(
    """
    import base64, json, os, sys, time
    from kakashi.writers.zstd import ZstdFileWriter
    path, name, stop, giant_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    writer = ZstdFileWriter(path)
    i = after_stop = 0
    while after_stop < 3:
        if i == giant_at:  # one batch of 48 MB, random (about 36 MB compressed)
            pads = [base64.b64encode(os.urandom(750_000)).decode() for _ in range(48)]
            batch = [json.dumps({"p": name, "i": i, "j": j, "pad": pad}).encode()
                     for j, pad in enumerate(pads)]
            print("giant", flush=True)
            writer.write(batch)
            print("survived", flush=True)
            sys.exit(3)
        writer.write([json.dumps({"p": name, "i": i, "j": j}).encode() for j in range(20)])
        print(i, flush=True)
        i += 1
        if os.path.exists(stop):
            after_stop += 1
        time.sleep(0.002)
    writer.close()
    """
)


def _kill_mid_write(tmp_path: Path) -> tuple[bool, int, dict[str, list[int]]]:
    """Three processes append batches to one .zst file; the third is killed with SIGKILL
    while its big batch is being written (the file has grown by 1 to 6 MB of its 36); the
    other two append after it. Returns whether a survivor cut a torn frame off, which batch
    was the big one, and each process's acknowledged batches (those whose write returned)."""
    path, stop = tmp_path / "app.log.zst", tmp_path / "stop"
    rng = random.Random()
    giant_at = rng.randint(3, 30)
    processes = {}
    for name, at in (("a", -1), ("b", -1), ("victim", giant_at)):
        command = [sys.executable, "-c", _WORKER, str(path), name, str(stop), str(at)]
        if name == "victim":
            processes[name] = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            continue
        # The survivors' acknowledgements go to files: nobody reads them until the end.
        with (
            (tmp_path / f"{name}.out").open("w") as out,
            (tmp_path / f"{name}.err").open("w") as err,
        ):
            processes[name] = subprocess.Popen(command, stdout=out, stderr=err)
    victim = processes["victim"]
    assert victim.stdout is not None
    acked: dict[str, list[int]] = {"victim": []}
    for line in victim.stdout:
        if line.strip() == "giant":
            break
        acked["victim"].append(int(line))
    threshold = path.stat().st_size + rng.randint(1, 6) * 1_000_000
    deadline = time.monotonic() + 120
    while path.stat().st_size < threshold and time.monotonic() < deadline:
        pass
    victim.send_signal(signal.SIGKILL)
    rest = victim.communicate(timeout=60)[0].split()
    assert -signal.SIGKILL == victim.returncode
    acked["victim"] += [int(line) for line in rest if line not in ("giant", "survived")]
    stop.touch()
    cut = 0
    for name in ("a", "b"):
        processes[name].wait(120)
        err = (tmp_path / f"{name}.err").read_text()
        assert 0 == processes[name].returncode, err
        acked[name] = [int(line) for line in (tmp_path / f"{name}.out").read_text().split()]
        cut += err.count("removed a record torn by a crash")
    assert cut <= 1
    return cut == 1, giant_at, acked


@pytest.mark.skipif(sys.platform != "linux", reason="kill -9 of a writer mid-write: Linux")
def test_kill_9_mid_write_next_writer_cuts_the_torn_frame(tmp_path: Path) -> None:
    """Three processes share a .zst file; one is killed mid-write (a 36 MB frame, at a
    random moment); the next writer cuts the torn frame off, from its tail. Every record
    whose write returned is on disk exactly once; records logged = on disk + the one batch
    the kill tore; nothing twice; the file reads with no warning (nothing torn is left)."""
    for attempt in range(3):  # the kill may land after the write ended: not torn, retried
        directory = tmp_path / str(attempt)
        directory.mkdir()
        torn, giant_at, acked = _kill_mid_write(directory)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            on_disk = Counter(
                (record["p"], record["i"], record["j"])
                for record in map(json.loads, read_lines(directory / "app.log.zst"))
            )
        assert [] == [key for key, count in on_disk.items() if count > 1]  # nothing twice
        written = {(p, i, j) for p, batches in acked.items() for i in batches for j in range(20)}
        assert written <= set(on_disk)
        big = {("victim", giant_at, j) for j in range(48)}
        in_flight = set(on_disk) - written  # the big batch, whole, if its write ended
        assert in_flight in (set(), big)
        logged = len(written) + len(big)
        lost = len(big) - len(in_flight)
        assert logged == len(on_disk) + lost
        assert not torn or lost == len(big)
        if torn:
            return
    pytest.fail("the kill never landed in the middle of the write in 3 attempts")
