"""``kakashi view``: rotated sets in order, filters, JSON pass-through, skips, follow."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from kakashi.cli.view import Query, rotated_set, view
from kakashi.writers import RotatingFileWriter, ZstdFileWriter


def event(n: int, level: str = "INFO", logger: str = "app", **fields: Any) -> bytes:
    stamp = f"2026-11-27T10:00:{n:02d}.000000Z"
    return json.dumps(
        {"timestamp": stamp, "level": level, "logger": logger, "message": f"m{n}", **fields}
    ).encode()


def run_view(paths: list[Path], query: Query | None = None, **options: Any) -> list[str]:
    out = io.StringIO()
    view(paths, query or Query(), out, as_json=options.pop("as_json", True), follow=False)
    return out.getvalue().splitlines()


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
        assert path == rotated_set(path)[-1]

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
        assert "skipped 2 line(s) that are not JSON objects (first at" in capsys.readouterr().err

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
    out = io.StringIO()
    stop = threading.Event()
    follower = threading.Thread(
        target=view,
        args=([path], Query(), out),
        kwargs={"as_json": True, "follow": True, "interval": 0.02, "stop": stop},
    )
    follower.start()

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
