"""Reading logs back: plain, zstd and gzip, from a path or a stream, streaming."""

from __future__ import annotations

import gzip
import io
import os
import tracemalloc
import warnings
from pathlib import Path
from typing import Any

import pytest
import zstandard

from kakashi.writers import read_lines, reading
from kakashi.writers.reading import Decoder, LineSplitter, read_batches

LINES = [f'{{"n":{n},"pad":"{"x" * (n % 50)}"}}'.encode() for n in range(2000)]
TEXT = b"".join(line + b"\n" for line in LINES)


def zstd_frames(data: bytes, size: int = 10_000) -> bytes:
    """*data* as zstd frames of about *size* bytes each, cut between lines."""
    compressor = zstandard.ZstdCompressor()
    frames, start = [], 0
    while start < len(data):
        end = data.find(b"\n", start + size)
        end = len(data) if end < 0 else end + 1
        frames.append(compressor.compress(data[start:end]))
        start = end
    return b"".join(frames)


ENCODINGS = {
    "plain": lambda data: data,
    "zstd": zstd_frames,
    "zstd-one-frame": lambda data: zstandard.ZstdCompressor().compress(data),
    "gzip": gzip.compress,
    "gzip-members": lambda data: gzip.compress(data[:5000]) + gzip.compress(data[5000:]),
}


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_every_format_from_a_path_and_a_stream(tmp_path: Path, encoding: str) -> None:
    """Plain, zstd (several frames or one) and gzip (one member or several) read the same,
    whatever the file is called, from a path or an open binary stream."""
    data = ENCODINGS[encoding](TEXT)
    path = tmp_path / "misnamed.log"
    path.write_bytes(data)

    assert LINES == list(read_lines(path))
    assert LINES == list(read_lines(io.BytesIO(data)))


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_any_chunking_gives_the_same_lines(encoding: str) -> None:
    """Fed a byte at a time or in odd pieces, the decoder gives the same lines."""
    text = TEXT[: TEXT.index(b"\n", 3000) + 1]
    data = ENCODINGS[encoding](text)
    for size in (1, 3, 4097):
        decoder, splitter = Decoder("t"), LineSplitter("t")
        lines: list[bytes] = []
        for start in range(0, len(data), size):
            lines += splitter.feed(decoder.feed(data[start : start + size]))
        lines += splitter.feed(decoder.finish())

        assert text.splitlines() == lines, size


def test_gzip_is_decoded() -> None:
    """A .gz log gives its lines, not its compressed bytes."""
    assert [b"one", b"two"] == list(read_lines(io.BytesIO(gzip.compress(b"one\ntwo\n"))))


@pytest.mark.parametrize(("encoding", "message"), [
    ("zstd", "torn or corrupt zstd frame at the end"),
    ("gzip", "torn gzip member at the end"),
])  # fmt: skip
def test_torn_end_is_skipped_with_a_warning(encoding: str, message: str) -> None:
    """A log cut inside its last frame or member gives what came before, and a warning."""
    data = ENCODINGS[encoding](TEXT)

    with pytest.warns(RuntimeWarning, match=message):
        read = list(read_lines(io.BytesIO(data[: len(data) - 9])))
    assert LINES[: len(read)] == read
    assert len(read) >= 1500


def test_corrupt_frame_in_the_middle_is_skipped() -> None:
    """Reading resumes at the frame after a corrupt one, with one warning."""
    compressor = zstandard.ZstdCompressor()
    frames = [compressor.compress(f"f{n}\n".encode()) for n in range(4)]
    broken = frames[1][:6] + b"\xff" * 10 + frames[1][16:]

    with pytest.warns(RuntimeWarning, match="skipped a corrupt zstd frame") as caught:
        read = list(read_lines(io.BytesIO(frames[0] + broken + frames[2] + frames[3])))
    assert [b"f0", b"f2", b"f3"] == read
    assert 1 == len(caught)


@pytest.mark.parametrize(
    "data", [b"", b"\n\n", b"\x28\xb5", b"\x1f"], ids=["empty", "blank", "zstd-ish", "one"]
)
def test_short_input(data: bytes) -> None:
    """Empty input, blank lines and fewer bytes than a magic number read without error."""
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        read = list(read_lines(io.BytesIO(data)))

    assert data.split(b"\n")[:-1] == read


def test_binary_garbage_gives_lines_not_errors() -> None:
    """Random bytes are cut into lines like any other text; nothing raises."""
    garbage = os.urandom(200_000)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        read = list(read_lines(io.BytesIO(garbage)))

    assert garbage.count(b"\n") == len(read)


def test_a_long_line_across_many_chunks() -> None:
    """A line of 5 MB arrives whole, joined once from its pieces."""
    line = b"y" * 5_000_000

    assert [b"a", line, b"b"] == list(read_lines(io.BytesIO(b"a\n" + line + b"\nb\n")))


def test_overlong_line_is_skipped(monkeypatch: Any) -> None:
    """A line longer than MAX_LINE is dropped up to its newline, with a warning."""
    monkeypatch.setattr(reading, "MAX_LINE", 100_000)
    data = b"a\n" + b"z" * 300_000 + b"\nb\n"

    with pytest.warns(RuntimeWarning, match="longer than 100,000 bytes"):
        assert [b"a", b"b"] == list(read_lines(io.BytesIO(data)))


def test_memory_stays_bounded_for_a_large_log(tmp_path: Path) -> None:
    """Reading 40 MB of zstd-compressed lines keeps a few chunks in memory, not the file."""
    path = tmp_path / "big.log.zst"
    block = b"".join(b'{"n":%d,"text":"some words to compress"}\n' % n for n in range(10_000))
    with path.open("wb") as stream:
        compressor = zstandard.ZstdCompressor()
        for _ in range(100):
            stream.write(compressor.compress(block))
    tracemalloc.start()
    try:
        count = sum(1 for _ in read_lines(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert 1_000_000 == count
    assert peak < 8_000_000, peak  # the decompressed log is 44 MB


def test_batches_come_as_the_stream_delivers() -> None:
    """read_batches yields a list per chunk read, so a pipe's lines are not held back."""

    class Trickle(io.RawIOBase):
        def __init__(self) -> None:
            self.pieces = [b'{"a":1}\n', b'{"b":2}\n{"c"', b":3}\n"]

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            return self.pieces.pop(0) if self.pieces else b""

    assert [[b'{"a":1}'], [b'{"b":2}'], [b'{"c":3}']] == list(read_batches(Trickle()))
