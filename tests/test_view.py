"""``kakashi view``: rotated sets in order, folders, stdin, filters, JSON pass-through,
skips, misuse, follow."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import zstandard

from kakashi.cli.view import Query, view
from kakashi.writers import RotatingFileWriter, ZstdFileWriter
from kakashi.writers.naming import rotated_files


def event(n: int, level: str = "INFO", logger: str = "app", **fields: Any) -> bytes:
    stamp = f"2026-11-27T10:00:{n:02d}.000000Z"
    return json.dumps(
        {"timestamp": stamp, "level": level, "logger": logger, "message": f"m{n}", **fields}
    ).encode()


def run_view(paths: list[Path], query: Query | None = None, **options: Any) -> list[str]:
    out = io.StringIO()
    view(paths, query or Query(), out, as_json=options.pop("as_json", True), follow=False)
    return out.getvalue().splitlines()


def start_following(
    path: Path, interval: float, as_json: bool = True
) -> tuple[io.StringIO, threading.Event, threading.Thread]:
    """Run ``view --follow`` on *path* in a thread; return its output, its stop and the thread."""
    out = io.StringIO()
    stop = threading.Event()
    follower = threading.Thread(
        target=view,
        args=([path], Query(), out),
        kwargs={"as_json": as_json, "follow": True, "interval": interval, "stop": stop},
    )
    follower.start()
    return out, stop, follower


class TestReading:
    def test_rotated_set_oldest_first(self, tmp_path: Path) -> None:
        """The active file comes last, after its rotated files from oldest to newest."""
        path = tmp_path / "app.log.zst"
        writer = RotatingFileWriter(path, max_bytes=10)
        for n in range(4):
            writer.write([event(n)])
        writer.close()
        messages = [json.loads(line)["message"] for line in run_view([path])]

        assert ["m0", "m1", "m2", "m3"] == messages
        assert [tmp_path / f"app.log.zst.{n}" for n in (3, 2, 1)] == rotated_files(
            tmp_path, path.name
        )

    def test_timestamped_and_gzip_files(self, tmp_path: Path) -> None:
        """Timestamped names sort by date; .gz files are read too."""
        (tmp_path / "app.2026-11-25.log.gz").write_bytes(gzip.compress(event(1) + b"\n"))
        (tmp_path / "app.2026-11-26.log").write_bytes(event(2) + b"\n")
        (tmp_path / "app.log").write_bytes(event(3) + b"\n")

        messages = [json.loads(line)["message"] for line in run_view([tmp_path / "app.log"])]
        assert ["m1", "m2", "m3"] == messages

    def test_foreign_lines_are_skipped_and_reported(self, tmp_path: Path, capsys: Any) -> None:
        """Lines that are not JSON objects are skipped and counted on stderr."""
        path = tmp_path / "other.log"
        path.write_bytes(b"plain text\n" + event(1) + b"\n[1, 2]\n")

        assert 1 == len(run_view([path]))
        assert "skipped 2 lines that are not JSON objects (first at" in capsys.readouterr().err

    def test_a_torn_record_glued_to_the_next_gives_up_only_its_own_part(
        self, tmp_path: Path, capsys: Any
    ) -> None:
        """A record cut by a crash, followed on its line by a whole record another writer
        appended (lock-free writers leave it there): the whole one is read and shown, the
        torn part is counted among the skipped lines, and the message says so."""
        path = tmp_path / "app.log"
        torn = event(1, user={"id": 7, "roles": ["a"]})[:-9]  # inside a nested object
        path.write_bytes(event(0) + b"\n" + torn + event(2) + b"\n" + event(3) + b"\n")
        lines = run_view([path])
        assert ["m0", "m2", "m3"] == [json.loads(line)["message"] for line in lines]
        assert event(2).decode() == lines[1]
        err = capsys.readouterr().err
        assert "skipped 1 line that is not a JSON object" in err
        assert "1 of them held a torn record glued to a whole one" in err

    def test_a_record_cut_just_before_its_newline_is_read_with_the_next(
        self, tmp_path: Path
    ) -> None:
        """A write cut just before the newline leaves a whole record glued to the next one:
        both are read."""
        path = tmp_path / "app.log"
        path.write_bytes(event(1) + event(2) + b"\n")
        assert ["m1", "m2"] == [json.loads(line)["message"] for line in run_view([path])]

    def test_torn_zstd_tail_is_reported(self, tmp_path: Path, capsys: Any) -> None:
        """A torn last frame is reported on stderr; earlier records are shown."""
        path = tmp_path / "app.log.zst"
        writer = ZstdFileWriter(path)
        writer.write([event(1)])
        writer.write([event(2)])
        writer.close()
        with path.open("r+b") as stream:
            stream.truncate(path.stat().st_size - 3)

        assert 1 == len(run_view([path]))
        assert "torn or corrupt zstd frame" in capsys.readouterr().err


class TestFilters:
    @pytest.fixture(name="log")
    def _log(self, tmp_path: Path) -> Path:
        path = tmp_path / "app.log"
        path.write_bytes(
            b"\n".join(
                [
                    event(1, "DEBUG", "app.db", user_id=42),
                    event(2, "INFO", "app", user_id=42, ok=True),
                    event(3, "ERROR", "apple", user_id=7, req={"id": "r1"}),
                    event(4, "WARNING", "app.http", user_id=None),
                ]
            )
            + b"\n"
        )
        return path

    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            (Query(min_level=30), ["m3", "m4"]),
            (Query(loggers=("app",)), ["m1", "m2", "m4"]),
            (Query(where={"user_id": "42"}), ["m1", "m2"]),
            (Query(where={"req.id": "r1"}), ["m3"]),
            (Query(where={"ok": "true"}), ["m2"]),
            (Query(where={"user_id": "null"}), ["m4"]),
        ],
    )
    def test_filters(self, log: Path, query: Query, expected: list[str]) -> None:
        """Level, logger prefix and field filters (dotted keys, true, null)."""
        assert expected == [json.loads(line)["message"] for line in run_view([log], query)]

    def test_time_range_on_the_command_line(self, log: Path) -> None:
        """--since and --until bound the timestamps (UTC when no zone is given)."""
        result = subprocess.run(
            [sys.executable, "-m", "kakashi", "view", str(log), "--json",
             "--since", "2026-11-27T10:00:02", "--until", "2026-11-27T10:00:03Z"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip

        assert ["m2", "m3"] == [json.loads(x)["message"] for x in result.stdout.splitlines()]

    def test_text_output(self, log: Path) -> None:
        """Without --json, records are readable lines with their fields."""
        lines = run_view([log], Query(min_level=40), as_json=False)

        assert ['2026-11-27T10:00:03.000000Z ERROR    apple: m3 user_id=7 req={"id":"r1"}'] == lines

    def test_bad_arguments(self, log: Path) -> None:
        """An unknown level or a --where without '=' is a usage error."""
        for extra in (["--level", "loud"], ["--where", "novalue"]):
            result = subprocess.run(
                [sys.executable, "-m", "kakashi", "view", str(log), *extra],
                capture_output=True, text=True,
            )  # fmt: skip
            assert 2 == result.returncode


def test_follow_across_rotation(tmp_path: Path) -> None:
    """--follow shows records appended later, also after the file is rotated."""
    path = tmp_path / "app.log.zst"
    writer = RotatingFileWriter(path, max_bytes=10)
    writer.write([event(0)])
    out, stop, follower = start_following(path, 0.02)

    def seen() -> list[str]:
        return [json.loads(line)["message"] for line in out.getvalue().splitlines()]

    def wait_for(count: int) -> None:
        deadline = time.monotonic() + 20
        while len(seen()) < count and time.monotonic() < deadline:
            time.sleep(0.01)

    wait_for(1)
    writer.write([event(1)])  # rotates: m0 moves to app.log.zst.1
    wait_for(2)
    writer.write([event(2)])
    wait_for(3)
    stop.set()
    follower.join(10)
    writer.close()

    assert ["m0", "m1", "m2"] == seen()


def kakashi_view(*args: str, **options: Any) -> subprocess.CompletedProcess[str]:
    """Run ``kakashi view`` in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "kakashi", "view", *args],
        capture_output=True, text=True, timeout=120, **options,
    )  # fmt: skip


@pytest.fixture(name="logs")
def _logs(tmp_path: Path) -> Path:
    """A folder with two rotated logs sharing a prefix, a log whose active file is gone,
    and files that are not logs."""
    for name, compression, first in (("app.log", "zstd", 0), ("app.access.log", "gzip", 20)):
        writer = RotatingFileWriter(tmp_path / name, max_bytes=150, compression=compression)
        for n in range(first, first + 6):
            writer.write([event(n, logger=name)])
        assert writer.wait_for_compression(30)
        writer.close()
    (tmp_path / "old.log.1").write_bytes(event(40, logger="old") + b"\n")
    (tmp_path / ".hidden.log").write_bytes(b"not shown\n")
    (tmp_path / "app.log.9.zst.partial").write_bytes(b"half")
    (tmp_path / "archive").mkdir()
    return tmp_path


class TestDirectory:
    def test_every_log_with_a_header_each(self, logs: Path) -> None:
        """A folder shows each log in turn, rotated files first, under a tail-style header."""
        lines = run_view([logs], as_json=False)
        headers = [line for line in lines if line.startswith("==> ")]

        assert [
            f"==> {logs / 'app.access.log'} <==",
            f"==> {logs / 'app.log'} <==",
            f"==> {logs / 'old.log'} <==",
        ] == headers
        assert 3 + 2 + 13 == len(lines)  # headers, blank lines between logs, records
        assert "" == lines[lines.index(headers[1]) - 1]
        messages = [line.split(": ", 1)[1] for line in lines if ": m" in line]
        assert [f"m{n}" for n in [*range(20, 26), *range(6), 40]] == messages

    def test_json_has_no_headers(self, logs: Path) -> None:
        """With --json every line is a record."""
        messages = [json.loads(line)["message"] for line in run_view([logs])]

        assert [f"m{n}" for n in [*range(20, 26), *range(6), 40]] == messages

    def test_one_log_has_no_header(self, logs: Path) -> None:
        """A single log is shown without a header, as tail does for one file."""
        assert not any(
            line.startswith("==>") for line in run_view([logs / "app.log"], as_json=False)
        )

    def test_a_rotated_file_alone(self, logs: Path) -> None:
        """Naming a rotated file reads that file only."""
        newest = rotated_files(logs, "app.log")[-1]  # one record per file

        assert (logs / "app.log.1.zst", ["m4"]) == (
            newest,
            [json.loads(line)["message"] for line in run_view([newest])],
        )

    def test_a_folder_without_logs(self, tmp_path: Path) -> None:
        """A folder with nothing to read is a one-line error."""
        (tmp_path / "app.log.lock").write_bytes(b"")
        result = kakashi_view(str(tmp_path))

        assert (1, "") == (result.returncode, result.stdout)
        assert [f"kakashi view: {tmp_path}: no logs in this directory"] == (
            result.stderr.splitlines()
        )

    def test_closed_output(self, logs: Path) -> None:
        """``kakashi view dir | head -1``: ends quietly (status 141), no traceback. The
        log is larger than a pipe holds, so the reader closes it while view still
        writes, however the two are scheduled."""
        (logs / "big.log").write_bytes(b"".join(event(n) + b"\n" for n in range(20_000)))
        process = subprocess.Popen(
            [sys.executable, "-m", "kakashi", "view", str(logs)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert process.stdout is not None and process.stderr is not None
        try:
            first = process.stdout.readline()
        finally:
            process.stdout.close()
        status = process.wait(60)
        with process.stderr:
            errors = process.stderr.read()

        assert first.startswith(b"==> ")
        assert (141, b"") == (status, errors)


class TestStdin:
    @pytest.mark.parametrize(
        "encode",
        [lambda data: data, gzip.compress, lambda data: zstandard.ZstdCompressor().compress(data)],
        ids=["plain", "gzip", "zstd"],
    )
    def test_formats(self, encode: Any) -> None:
        """- reads standard input, plain or compressed, told by its first bytes."""
        data = encode(event(1) + b"\n" + event(2) + b"\n")
        out = io.StringIO()
        status = view([Path("-")], Query(), out, as_json=True, follow=False, stdin=io.BytesIO(data))

        assert 0 == status
        assert ["m1", "m2"] == [json.loads(line)["message"] for line in out.getvalue().splitlines()]

    def test_empty_and_garbage(self) -> None:
        """Empty input shows nothing; binary garbage is counted as skipped lines."""
        empty = kakashi_view("-", input="")
        garbage = subprocess.run(
            [sys.executable, "-m", "kakashi", "view", "-"],
            input=bytes(range(256)) * 40 + b"\n", capture_output=True, timeout=120,
        )  # fmt: skip

        assert (0, "", "") == (empty.returncode, empty.stdout, empty.stderr)
        assert (0, b"") == (garbage.returncode, garbage.stdout)
        assert garbage.stderr.decode().startswith("kakashi view: skipped 41 lines that are not")
        assert b"Traceback" not in garbage.stderr

    def test_records_show_as_they_arrive(self) -> None:
        """`tail -f app.log | kakashi view -`: each record shows before the input ends."""
        process = subprocess.Popen(
            [sys.executable, "-m", "kakashi", "view", "-", "--json"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        assert process.stdin is not None and process.stdout is not None
        shown = []
        for n in range(3):
            process.stdin.write(event(n) + b"\n")
            process.stdin.flush()
            shown.append(json.loads(process.stdout.readline())["message"])  # input still open
        process.stdin.close()
        process.stdout.close()

        assert (["m0", "m1", "m2"], 0) == (shown, process.wait(60))


class TestMisuse:
    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing file is a one-line message and status 1; other paths are still shown."""
        good = tmp_path / "app.log"
        good.write_bytes(event(1) + b"\n")
        result = kakashi_view(str(tmp_path / "nope.log"), str(good), "--json")

        assert (1, [f"kakashi view: {tmp_path / 'nope.log'}: no such file"]) == (
            result.returncode,
            result.stderr.splitlines(),
        )
        assert ["m1"] == [json.loads(line)["message"] for line in result.stdout.splitlines()]

    def test_missing_file_is_followed_until_it_appears(self, tmp_path: Path, capsys: Any) -> None:
        """With --follow, a missing file is reported, then read once it is written."""
        path = tmp_path / "later.log"
        out = io.StringIO()
        stop = threading.Event()
        status: list[int] = []
        follower = threading.Thread(
            target=lambda: status.append(
                view([path], Query(), out, as_json=True, follow=True, interval=0.02, stop=stop)
            )
        )
        follower.start()
        deadline = time.monotonic() + 60  # a guard against a hang, not a timing
        reported = ""
        while "no such file" not in reported and time.monotonic() < deadline:
            reported += capsys.readouterr().err
            time.sleep(0.01)
        path.write_bytes(event(1) + b"\n")
        while not out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.set()
        follower.join(30)

        assert (f"kakashi view: {path}: no such file\n", ["m1"], [1]) == (
            reported,
            [json.loads(line)["message"] for line in out.getvalue().splitlines()],
            status,
        )

    @pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
    def test_unreadable_file(self, tmp_path: Path) -> None:
        """A file that cannot be read is a one-line message and status 1."""
        path = tmp_path / "app.log"
        path.write_bytes(event(1) + b"\n")
        path.chmod(0)
        try:
            result = kakashi_view(str(path))
        finally:
            path.chmod(0o600)

        assert (1, [f"kakashi view: {path}: Permission denied"]) == (
            result.returncode,
            result.stderr.splitlines(),
        )

    @pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc")
    def test_file_failing_to_read(self) -> None:
        """A read error (/proc/self/mem at offset 0) is a one-line message and status 1."""
        result = kakashi_view("/proc/self/mem")

        assert (1, ["kakashi view: /proc/self/mem: Input/output error"]) == (
            result.returncode,
            result.stderr.splitlines(),
        )

    def test_one_skipped_line_is_singular(self, tmp_path: Path, capsys: Any) -> None:
        """Plurals agree: "skipped 1 line that is not a JSON object"."""
        path = tmp_path / "app.log"
        path.write_bytes(b"plain text\n" + event(1) + b"\n")
        run_view([path])

        assert (
            f"kakashi view: skipped 1 line that is not a JSON object (first at {path}:1)\n"
            == capsys.readouterr().err
        )


@pytest.mark.parametrize(
    ("name", "compression"),
    [("app.log", "zstd"), ("app.log", "gzip"), ("app.log", None), ("app.log.zst", None)],
)
def test_follow_rotations_faster_than_polls(
    tmp_path: Path, name: str, compression: str | None
) -> None:
    """--follow with a writer rotating dozens of times between two looks shows every
    record exactly once, in order."""
    path = tmp_path / name
    writer = RotatingFileWriter(path, max_bytes=2_000, compression=compression)
    out, stop, follower = start_following(path, 0.2)
    for n in range(3000):  # about 100 rotations
        writer.write([json.dumps({"seq": n, "pad": "x" * 40}).encode()])
    writer.close()  # waits for compression
    deadline = time.monotonic() + 60  # a guard against a hang, not a timing
    while out.getvalue().count("\n") < 3000 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    follower.join(30)

    assert list(range(3000)) == [json.loads(line)["seq"] for line in out.getvalue().splitlines()]
    assert writer.rotations > 50


def test_follow_a_folder(logs: Path) -> None:
    """Following a folder follows each log; a header marks each switch between logs."""
    out, stop, follower = start_following(logs, 0.02, as_json=False)
    deadline = time.monotonic() + 60
    while out.getvalue().count(": m") < 13 and time.monotonic() < deadline:
        time.sleep(0.01)
    for name, n in (("app.log", 50), ("app.access.log", 51), ("app.log", 52)):
        with (logs / name).open("ab") as stream:
            stream.write(event(n, logger=name) + b"\n")
        while f": m{n}" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
    stop.set()
    follower.join(30)
    lines = out.getvalue().splitlines()

    assert [
        f"==> {logs / 'app.log'} <==",
        lines[-7],
        "",
        f"==> {logs / 'app.access.log'} <==",
        lines[-4],
        "",
        f"==> {logs / 'app.log'} <==",
        lines[-1],
    ] == lines[-8:]
    assert [": m50", ": m51", ": m52"] == [line[-5:] for line in (lines[-7], lines[-4], lines[-1])]
