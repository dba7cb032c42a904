"""Reading logs back: plain, zstd and gzip, from a path or a stream, streaming."""

from __future__ import annotations

import gzip
import io
import os
import random
import tracemalloc
import warnings
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard

from kakashi.writers import read_lines, reading
from kakashi.writers.reading import Decoder, LineSplitter, glued_record, read_batches

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

    with pytest.warns(RuntimeWarning, match="skipped 1 torn or corrupt zstd frame") as caught:
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


# Torn and corrupt zstd frames anywhere in a file. A writer killed in the middle of a write
# leaves part of a frame; a writer started later appends whole frames after it.


def records(tag: str, count: int = 12) -> list[bytes]:
    """*count* distinct JSON lines tagged *tag*."""
    return [f'{{"tag":"{tag}","n":{n},"msg":"some words"}}'.encode() for n in range(count)]


def frame(lines: list[bytes], *, checksum: bool = False) -> bytes:
    """*lines* as one zstd frame, as a writer writes a batch (with a content checksum, as
    writers do from now on, or without, as older ones did)."""
    compressor = zstandard.ZstdCompressor(write_checksum=checksum)
    return bytes(compressor.compress(b"\n".join(lines) + b"\n"))


def incompressible(tag: str, size: int = 400) -> list[bytes]:
    """One line of *size* random bytes (no newline in them), tagged *tag*: zstd stores it
    as a raw block, its bytes as they are."""
    noise = random.Random(tag).randbytes(size).replace(b"\n", b"")
    return [tag.encode() + b":" + noise]


def read_all(data: bytes, chunk: int = 0) -> tuple[list[bytes], list[str]]:
    """The lines of *data* and the RuntimeWarnings raised reading it, read from a stream or,
    given a *chunk* size, fed to a Decoder in pieces of that size."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if chunk:
            decoder, splitter = Decoder("t"), LineSplitter("t")
            lines: list[bytes] = []
            for start in range(0, len(data), chunk):
                lines += splitter.feed(decoder.feed(data[start : start + chunk]))
            lines += splitter.feed(decoder.finish())
            splitter.finish(torn=decoder.torn)
        else:
            lines = list(read_lines(io.BytesIO(data)))
    return lines, [str(w.message) for w in caught if w.category is RuntimeWarning]


@pytest.mark.parametrize("checksum", [False, True], ids=["no-checksum", "checksum"])
@pytest.mark.parametrize("torn_kind", ["text", "incompressible"])
def test_a_frame_torn_anywhere_loses_only_itself(checksum: bool, torn_kind: str) -> None:
    """Cut at every byte, a frame in the middle of a file costs only its own records: every
    record of the frames after it reads exactly once, nothing else comes out, and one
    warning says what was skipped."""
    torn_lines = records("torn") if torn_kind == "text" else incompressible("torn")
    before = [frame(records(f"before{n}"), checksum=checksum) for n in range(2)]
    after = [
        frame(records("after0"), checksum=checksum),
        frame(incompressible("after1"), checksum=checksum),
        frame(records("after2"), checksum=checksum),
    ]
    torn = frame(torn_lines, checksum=checksum)
    expected = [line for part in before + after for line in read_all(part)[0]]

    for cut in range(1, len(torn)):
        data = b"".join(before) + torn[:cut] + b"".join(after)
        for chunk in (0, 5):  # read from a stream; fed in pieces shorter than a frame
            lines, caught = read_all(data, chunk)

            assert expected == lines, (cut, chunk)
            assert 1 == len(caught), (cut, chunk, caught)
            assert "torn or corrupt zstd frame" in caught[0], (cut, chunk)


@pytest.mark.parametrize("checksum", [False, True], ids=["no-checksum", "checksum"])
def test_a_torn_first_frame(checksum: bool) -> None:
    """A file that starts with a torn frame (a writer killed in its first write) reads the
    frames appended after it, however short the torn piece."""
    torn = frame(records("torn"), checksum=checksum)
    after = frame(records("a"), checksum=checksum) + frame(records("b"), checksum=checksum)

    for cut in range(1, len(torn)):
        lines, caught = read_all(torn[:cut] + after)

        assert records("a") + records("b") == lines, cut
        assert 1 == len(caught), (cut, caught)


@pytest.mark.parametrize("chunk", [1, 7, 100])
def test_several_torn_frames_fed_in_small_pieces(chunk: int) -> None:
    """Torn frames next to each other are one skipped stretch (one warning), another torn
    frame further on is another; fed a byte at a time or in pieces shorter than a frame,
    the decoder finds every whole frame."""
    whole = {tag: frame(records(tag)) for tag in "abcde"}
    torn = {tag: frame(records(tag))[:cut] for tag, cut in [("x", 30), ("y", 9), ("z", 41)]}
    raw = frame(incompressible("raw"))
    data = whole["a"] + torn["x"] + torn["y"] + whole["b"] + raw + torn["z"] + whole["c"]

    lines, caught = read_all(data, chunk)

    assert records("a") + records("b") + incompressible("raw") + records("c") == lines
    assert 2 == len(caught), caught


def test_a_torn_frame_at_the_end_after_others() -> None:
    """A torn frame at the end is skipped with a warning that says so, after the torn one in
    the middle was reported."""
    data = frame(records("a")) + frame(records("x"))[:20] + frame(records("b"))
    data += frame(records("y"))[:25]

    lines, caught = read_all(data)

    assert records("a") + records("b") == lines
    assert 2 == len(caught), caught
    assert "at the end" in caught[1]


def test_a_checksum_mismatch_is_a_corrupt_frame() -> None:
    """A frame whose content decodes but does not match its checksum is skipped."""
    bad = bytearray(frame(incompressible("bad"), checksum=True))
    bad[len(bad) // 2] ^= 0x01  # a raw block: the flipped bit decodes, the checksum fails
    data = frame(records("a"), checksum=True) + bytes(bad) + frame(records("b"), checksum=True)

    lines, caught = read_all(data)

    assert records("a") + records("b") == lines
    assert 1 == len(caught), caught


def test_a_wrong_content_size_is_a_corrupt_frame() -> None:
    """A frame whose content is not the size its header declares is skipped: zstd itself
    checks the size a writer's frame declares (``compress`` writes it)."""
    bad = bytearray(frame(records("bad")))
    assert 0x20 == bad[4] & 0x20  # single segment: byte 5 is the content size
    bad[5] += 1
    data = frame(records("a")) + bytes(bad) + frame(records("b"))

    lines, caught = read_all(data)

    assert records("a") + records("b") == lines
    assert 1 == len(caught), caught


def test_bytes_between_frames_are_skipped() -> None:
    """Bytes that are no frame between two frames are skipped with a warning."""
    data = frame(records("a")) + b"not a frame\n" * 3 + frame(records("b"))

    lines, caught = read_all(data)

    assert records("a") + records("b") == lines
    assert 1 == len(caught), caught


def test_a_torn_frame_too_long_to_keep(monkeypatch: Any) -> None:
    """A frame longer than the decoder keeps (a rotated file compressed whole) is passed on
    as it decodes; torn, it gives its whole lines, not its cut last one, and the warning
    says frames right after the torn piece may be lost: the frames further on read."""
    monkeypatch.setattr(reading, "_HOLD", 2000)
    long_lines = records("long", 8000)  # three blocks of zstd's 128 KiB
    long = frame(long_lines)
    later = [records(f"later{n}") for n in range(20)]
    data = frame(records("a")) + long[: len(long) * 4 // 5] + b"".join(map(frame, later))

    lines, caught = read_all(data, 100)

    assert records("a") == lines[:12]
    assert records("later19") == lines[-12:]
    given = [line for line in lines if b'"tag":"long"' in line]
    assert 1000 < len(given) < 8000
    assert long_lines[: len(given)] == given
    assert set(lines) <= {*records("a"), *given, *(line for part in later for line in part)}
    assert len(set(lines)) == len(lines)
    assert 1 == len(caught), caught
    assert "too long to keep" in caught[0]


# What was skipped, counted for a program and reported once per stretch.


def test_skips_are_counted_and_add_up() -> None:
    """A ReadStats given to read_lines counts the frames and bytes skipped; given to a second
    read, it adds that read's skips; warnings say the counts of their stretch."""
    cuts = {"x": 30, "y": 9, "z": 41}
    torn = {tag: frame(records(tag))[:cut] for tag, cut in cuts.items()}
    data = frame(records("a")) + torn["x"] + torn["y"] + frame(records("b")) + torn["z"]
    stats = reading.ReadStats()

    with pytest.warns(RuntimeWarning) as caught:
        list(read_lines(io.BytesIO(data), stats=stats))
    assert reading.ReadStats(skipped_frames=3, skipped_bytes=80) == stats
    assert [
        "<stream>: skipped 2 torn or corrupt zstd frames (39 bytes): "
        "zstd decompressor error: Data corruption detected",
        "<stream>: skipped 1 torn or corrupt zstd frame at the end (41 bytes): "
        "it runs past the end of the log",
    ] == [str(warning.message) for warning in caught]

    with pytest.warns(RuntimeWarning, match=r"unterminated last line \(3 bytes\)"):
        list(read_lines(io.BytesIO(b"one\nthr"), stats=stats))
    assert reading.ReadStats(3, 80, skipped_lines=1, skipped_line_bytes=3) == stats


def test_the_decoder_and_the_splitter_count() -> None:
    """Used alone, a Decoder and a LineSplitter count what they skipped in their stats."""
    decoder, splitter = Decoder("t"), LineSplitter("t")
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        splitter.feed(decoder.feed(frame(records("a")) + frame(records("x"))[:20] + b"tail"))
        splitter.feed(decoder.finish())
        splitter.finish(torn=decoder.torn)

    assert reading.ReadStats(skipped_frames=1, skipped_bytes=24) == decoder.stats
    assert reading.ReadStats() == splitter.stats  # the torn frame's content never came out
    assert decoder.torn


def test_a_long_corrupt_stretch_is_one_warning() -> None:
    """Two hundred torn frames in a row and garbage around them: one warning, all counted."""
    stretch = b"".join(frame(records(f"t{n}"))[: 10 + n % 50] for n in range(200))
    garbage = b"\x00garbage\xff" * 1000
    data = frame(records("a")) + garbage + stretch + garbage + frame(records("b"))
    stats = reading.ReadStats()

    with pytest.warns(RuntimeWarning) as caught:
        lines = list(read_lines(io.BytesIO(data), stats=stats))

    assert records("a") + records("b") == lines
    assert 1 == len(caught)
    assert reading.ReadStats(200, len(stretch) + 2 * len(garbage)) == stats


def test_gzip_skips_are_counted() -> None:
    """A torn last gzip member counts as a skipped frame with its bytes."""
    data = gzip.compress(b"a\n") + gzip.compress(b"b\n" * 1000)[:-9]
    stats = reading.ReadStats()

    with pytest.warns(RuntimeWarning, match="torn gzip member"):
        lines = list(read_lines(io.BytesIO(data), stats=stats))

    assert [b"a"] == lines[:1]
    assert (1, len(data) - len(gzip.compress(b"a\n"))) == (
        stats.skipped_frames,
        stats.skipped_bytes,
    )


def test_corrupt_gzip_skips_the_rest_once() -> None:
    """Corrupt gzip data ends the reading, with one warning saying how much was left."""
    member = gzip.compress(b"b\n" * 1000)
    broken = member[:20] + b"\xff" * 30 + member[50:]
    data = gzip.compress(b"a\n") + broken + gzip.compress(b"c\n")
    stats = reading.ReadStats()

    with pytest.warns(RuntimeWarning, match="skipped the rest") as caught:
        lines = list(read_lines(io.BytesIO(data), stats=stats))

    assert b"c" not in lines
    assert [b"a"] == lines[:1]
    assert 1 == len(caught)
    assert 1 == stats.skipped_frames
    assert len(broken) + len(gzip.compress(b"c\n")) == stats.skipped_bytes


# A plain log torn by a crash.


def test_plain_unterminated_last_line_is_counted() -> None:
    """A plain log cut in the middle of its last line gives the lines before it; the cut
    line is skipped with a warning and counted."""
    data = b'{"a":1}\n{"a":2,"msg":"hel'
    stats = reading.ReadStats()

    with pytest.warns(RuntimeWarning, match=r"skipped an unterminated last line \(17 bytes\)"):
        assert [b'{"a":1}'] == list(read_lines(io.BytesIO(data), stats=stats))
    assert reading.ReadStats(skipped_lines=1, skipped_line_bytes=17) == stats


def test_a_glued_line_is_not_split() -> None:
    """A line cut by a crash and glued to the next one by a later writer cannot be told
    from a line: it comes out whole, not guessed apart, and the lines after it read."""
    data = b'{"a":1,"msg":"hel{"a":2}\n{"a":3}\n'

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [b'{"a":1,"msg":"hel{"a":2}', b'{"a":3}'] == list(read_lines(io.BytesIO(data)))


def test_an_overlong_line_is_counted(monkeypatch: Any) -> None:
    """A line over MAX_LINE counts as a skipped line with all its bytes."""
    monkeypatch.setattr(reading, "MAX_LINE", 100_000)
    stats = reading.ReadStats()

    with pytest.warns(RuntimeWarning, match=r"longer than 100,000 bytes \(300,000 bytes\)"):
        lines = list(read_lines(io.BytesIO(b"a\n" + b"z" * 300_000 + b"\nb\n"), stats=stats))

    assert [b"a", b"b"] == lines
    assert reading.ReadStats(skipped_lines=1, skipped_line_bytes=300_000) == stats


# Linear time, bounded memory.


def test_a_hundred_thousand_frames_read_once_each(tmp_path: Path, monkeypatch: Any) -> None:
    """100,000 one-record frames: every record comes out once, in order; each frame is
    decoded once and fed at most what one read holds after its start (work per frame does
    not grow with the file: linear time); memory stays far under the decoded size."""
    count = 100_000
    path = tmp_path / "many.log.zst"
    compressor = zstandard.ZstdCompressor()
    with path.open("wb") as stream:
        for n in range(count):
            stream.write(compressor.compress(b'{"n":%d,"msg":"%s"}\n' % (n, b"w" * 80)))
    decoded_size = count * 96

    real = zstandard.ZstdDecompressor
    work = {"frames": 0, "fed": 0}

    class CountingFrame:
        def __init__(self, frame: Any) -> None:
            self._frame = frame

        def decompress(self, data: bytes) -> bytes:
            work["fed"] += len(data)
            return bytes(self._frame.decompress(data))

        def __getattr__(self, name: str) -> Any:
            return getattr(self._frame, name)

    class CountingDecompressor:
        def decompressobj(self) -> CountingFrame:
            work["frames"] += 1
            return CountingFrame(real().decompressobj())

    monkeypatch.setattr(reading.zstandard, "ZstdDecompressor", CountingDecompressor)
    tracemalloc.start()
    try:
        expected = 0
        for line in read_lines(path):
            assert b'{"n":%d,' % expected == line[: len(b'{"n":%d,' % expected)]
            expected += 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert count == expected
    assert count == work["frames"]
    assert work["fed"] <= count * (reading._COMPRESSED_CHUNK + 100), work
    assert peak < decoded_size // 10, peak


def test_a_frame_ending_like_a_magic_number_waits_for_the_next_bytes() -> None:
    """A frame without a checksum that ends with the first byte of a magic number may be a
    torn one that ran into the next frame: its content comes out once the bytes after it
    show a frame's start, or at the end of the input. With a checksum it comes out at once."""
    ends_like_magic = zstandard.ZstdCompressor().compress(b"abc(")  # stored as it is
    assert 0x28 == ends_like_magic[-1]

    decoder = Decoder("t")
    assert b"" == decoder.feed(ends_like_magic)
    assert b"abc(def\n" == decoder.feed(frame([b"def"]))

    decoder = Decoder("t")
    assert b"" == decoder.feed(ends_like_magic)
    assert b"abc(" == decoder.finish()

    checked = zstandard.ZstdCompressor(write_checksum=True).compress(b"abc(")
    assert b"abc(" == Decoder("t").feed(checked)


@pytest.mark.parametrize(
    "torn",
    [
        b'{"timestamp":"2026-11-27T10:00:00Z","mess',  # inside a key
        b'{"a":1,"b":{"c":2}',  # right after a whole nested object
        b'{"a":"{\\"x\\":1}","b":[{"c":',  # a string that looks like an object
    ],
)
def test_glued_record_finds_the_whole_record_after_a_torn_one(torn: bytes) -> None:
    """The record glued after a torn one is found whatever the torn part holds, and the
    offset splits the line between them."""
    whole = b'{"timestamp":"2026-11-27T10:00:01Z","message":"m","user":{"id":7}}'
    found = glued_record(torn + whole)
    assert found is not None
    offset, record = found
    assert (torn, orjson.loads(whole)) == ((torn + whole)[:offset], record)


@pytest.mark.parametrize(
    "line",
    [b'{"timestamp":"2026-11-27T10:00:00Z","mess', b'plain text {"a": 1}', b"{[1, 2]", b""],
)
def test_glued_record_is_none_without_a_whole_record(line: bytes) -> None:
    """A torn record alone, a line of text that ends in JSON (it does not start as a
    record does), or no object at the end, gives nothing."""
    assert glued_record(line) is None
