"""A formatted batch (``Lines``): the lines of ``format_batch`` kept as one buffer.

Both twins: the same lines as ``format_json`` record by record, the sequence behaviour
writers rely on (length, items, slices on the same buffer, ``joined``), and the writers
that append a batch writing ``joined`` as it is. The compiled twin writes the bytes with
the GIL released: another thread runs meanwhile.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from kakashi.writers.file import FileWriter, newline_joined
from kakashi.writers.rotating import RotatingFileWriter
from tests.conftest import Implementation, file_lines

TIME_NS = 1_795_798_641_123_456_789


def plain(impl: Implementation, i: int, **fields: Any) -> Any:
    return impl.capture.Record(
        TIME_NS + i * 1000, 20, "app", "order filled", fields={"order_id": i, **fields}
    )


def mixed(impl: Implementation) -> list[Any]:
    """Records the direct encoder writes, between ones it leaves to the general path."""
    capture = impl.capture

    class Odd:
        def __repr__(self) -> str:
            return "<odd>"

    try:
        raise ValueError("boom")
    except ValueError:
        exc_info = sys.exc_info()
    return [
        plain(impl, 0, price=101.25, qty=3, side="buy"),
        capture.Record(TIME_NS, 40, "app", "failed", exc_info=exc_info),  # an exception
        plain(impl, 1, big=2**64 + 1),  # beyond 64 bits
        plain(impl, 2, text="lone \ud800 surrogate"),  # not UTF-8
        plain(impl, 3, ratio=0.30000000000000004, tiny=1e-7, huge=1e300, nan=float("nan")),
        capture.Record(TIME_NS, 20, "app", "%s and %d", args=("args", 7)),  # made now
        plain(impl, 4, obj=Odd(), nested={"a": {"b": {"c": 1}}}),
        plain(impl, 5, quote='say "hi"\n\tand \\ \x01', unicode="é 日本 🎉"),
        capture.Record(TIME_NS, 99, "app", "unnamed level"),
        capture.Record(TIME_NS, 20, "app", "extra", extra={"service": "api"}),
        plain(impl, 6, message="a reserved key"),
    ]


class TestLines:
    @pytest.mark.parametrize("count", [0, 1, 7, 8, 1000])
    def test_the_lines_of_format_json(self, impl: Implementation, count: int) -> None:
        """Below and above the size a batch is written without the GIL."""
        records = [plain(impl, i, price=i / 7, side="buy") for i in range(count)]
        lines = impl.format.format_batch(records)

        assert type(lines).__name__ == "Lines"
        assert len(lines) == count
        assert list(lines) == [impl.format.format_json(record) for record in records]
        assert lines.joined == b"".join(line + b"\n" for line in lines)

    def test_records_of_the_general_path_in_between(self, impl: Implementation) -> None:
        records = mixed(impl) * 3  # more than the GIL-free threshold
        lines = impl.format.format_batch(records)

        expected = [impl.format.format_json(record) for record in records]
        assert list(lines) == expected
        assert lines.joined == b"\n".join(expected) + b"\n"
        assert b'"kakashi_error"' not in lines.joined  # all written, none as a fallback

    def test_a_message_made_from_args_outlives_its_record_s_attribute(
        self, impl: Implementation
    ) -> None:
        """The formatted message is a new str only the batch holds while it is written."""
        records = [
            impl.capture.Record(TIME_NS, 20, "app", "n=%d %s", args=(i, "x" * (i % 50)))
            for i in range(2000)
        ]
        lines = impl.format.format_batch(records)

        assert [line.split(b'"message":')[1] for line in lines] == [
            b'"n=%d %s"}' % (i, b"x" * (i % 50)) for i in range(2000)
        ]

    def test_sequence(self, impl: Implementation) -> None:
        records = [plain(impl, i) for i in range(10)]
        lines = impl.format.format_batch(records)
        items = list(lines)

        assert lines[0] == items[0] and lines[-1] == items[-1] and lines[-10] == items[0]
        for index in (10, -11):
            with pytest.raises(IndexError):
                lines[index]
        assert lines == items and lines == tuple(items) and lines != items[1:]
        assert repr(lines).startswith("Lines([b'{")
        with pytest.raises(TypeError):
            lines[0] = b"{}"  # type: ignore[index]
        with pytest.raises(TypeError):
            type(lines)()

    @pytest.mark.parametrize(
        "where",
        [slice(2, 5), slice(0, 10), slice(7, None), slice(-3, -1), slice(5, 2), slice(None)],
    )
    def test_a_slice_is_lines_on_the_same_buffer(self, impl: Implementation, where: slice) -> None:
        lines = impl.format.format_batch([plain(impl, i) for i in range(10)])
        items = list(lines)
        part = lines[where]

        assert type(part) is type(lines)
        assert list(part) == items[where]
        assert part.joined == b"".join(line + b"\n" for line in items[where])
        assert list(part[1:]) == items[where][1:]  # a slice of a slice
        assert part[1:].joined == b"".join(line + b"\n" for line in items[where][1:])

    def test_a_line_is_the_same_object_each_time(self, impl: Implementation) -> None:
        """Writers remember lines by identity (the store writers' retries)."""
        lines = impl.format.format_batch([plain(impl, i) for i in range(10)])
        assert lines[3] is lines[3] is list(lines)[3] is lines[2:5][1] is lines[2:][1:][0]
        assert all(a is b for a, b in zip(lines[::2], list(lines)[::2], strict=True))

    def test_a_slice_with_a_step_is_a_list(self, impl: Implementation) -> None:
        lines = impl.format.format_batch([plain(impl, i) for i in range(10)])
        assert lines[::3] == list(lines)[::3]
        assert type(lines[::3]) is list

    def test_a_slice_outlives_the_batch(self, impl: Implementation) -> None:
        lines = impl.format.format_batch([plain(impl, i) for i in range(10)])
        expected = list(lines)[3:6]
        part = lines[3:6]
        del lines
        assert list(part) == expected and part.joined == b"\n".join(expected) + b"\n"


def test_the_compiled_twin_writes_a_batch_without_the_gil(impl: Implementation) -> None:
    """While one thread formats a large batch, another runs: with the GIL held for the
    whole call (the pure twin, or a compiled encoder that never released it), the other
    thread could not take a single step, since no bytecode runs to switch on."""
    if impl.pure:
        pytest.skip("the pure twin holds the GIL, as Python code does")
    records = [plain(impl, i, price=i / 7, side="buy", note="x" * 200) for i in range(200_000)]
    steps = 0
    started = threading.Event()
    running = True

    def count() -> None:
        nonlocal steps
        started.set()
        while running:
            steps += 1
            time.sleep(0)  # lets the GIL go at once, so the formatting thread gets it back

    interval = sys.getswitchinterval()
    sys.setswitchinterval(100.0)  # no switch between bytecodes during the call
    thread = threading.Thread(target=count)
    thread.start()
    try:
        started.wait()
        time.sleep(0.01)  # the thread now waits for the GIL in sleep(0)'s return
        before = steps
        lines = impl.format.format_batch(records)
        during = steps - before
    finally:
        running = False
        sys.setswitchinterval(interval)
        thread.join()
    assert len(lines) == len(records)
    assert during > 0


class TestWriters:
    def test_newline_joined(self, impl: Implementation) -> None:
        lines = impl.format.format_batch([plain(impl, i) for i in range(3)])
        assert newline_joined(lines) is lines.joined or newline_joined(lines) == lines.joined
        assert newline_joined(list(lines)) == lines.joined
        assert newline_joined((b"a", b"b")) == b"a\nb\n"

    def test_a_file_writer_writes_the_buffer(self, impl: Implementation, tmp_path: Path) -> None:
        lines = impl.format.format_batch(mixed(impl))
        writer = FileWriter(tmp_path / "app.log")
        try:
            writer.write(lines)
            writer.write(lines[2:4])
        finally:
            writer.close()
        assert (tmp_path / "app.log").read_bytes() == lines.joined + lines[2:4].joined

    def test_a_rotating_writer_splits_a_batch_between_files(
        self, impl: Implementation, tmp_path: Path
    ) -> None:
        lines = impl.format.format_batch([plain(impl, i, pad="p" * 40) for i in range(50)])
        limit = (max(len(line) for line in lines) + 1) * 7
        writer = RotatingFileWriter(tmp_path / "app.log", max_bytes=limit, backup_count=20)
        try:
            writer.write(lines)
        finally:
            writer.close()
        files = file_lines(tmp_path)
        assert sorted(line for found in files.values() for line in found) == sorted(
            line.decode() for line in lines
        )
        assert len(files) > 7  # split: at most 7 records to a file
        assert all(sum(len(line) + 1 for line in found) <= limit for found in files.values())
