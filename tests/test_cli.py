"""The ``kakashi`` command: demo, info, --version, and no traceback for ordinary misuse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import kakashi
from kakashi.writers import read_lines


def kakashi_command(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m kakashi ARGS`` as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "kakashi", *args], cwd=cwd, capture_output=True, text=True
    )


class TestDemo:
    def test_accounts_for_every_record(self, tmp_path: Path) -> None:
        """The demo logs N records, finds N lines on disk and says nothing is unaccounted."""
        result = kakashi_command("demo", "--count", "3000", "--dir", str(tmp_path))
        out = result.stdout
        files = sorted(tmp_path.glob("demo.log.zst*"), key=lambda p: p.stat().st_mtime_ns)
        events = [json.loads(line) for file in files for line in read_lines(file)]

        assert 0 == result.returncode, result.stderr
        assert 3000 == len(events)
        assert (
            "logged 3,000 = on disk 3,000 + filtered 0 + dropped 0 + pending 0 + unaccounted 0"
            in out
        )
        assert "complete" in out and "1 zstd file (0 rotations)" in out
        assert "get_async_stats()" in out and "messages_written     3000" in out
        assert "messages_dropped     0" in out and "pending              0" in out
        assert "records/s" in out and "p99" in out and "100%" in out
        errors = [event for event in events if event["level"] == "ERROR"]
        assert errors and all(e["exception"]["type"] == "ConnectionError" for e in errors)
        assert all(event["request_id"].startswith("req-") for event in events)

    def test_keeps_its_log_and_says_how_to_read_it(self, tmp_path: Path) -> None:
        """Without --dir the log is kept in ./kakashi-demo; the output names the view command."""
        result = kakashi_command("demo", "--count", "500", cwd=tmp_path)

        assert 0 == result.returncode, result.stderr
        assert (tmp_path / "kakashi-demo" / "demo.log.zst").exists()
        assert "kept in kakashi-demo/" in result.stdout
        assert "python3 -m kakashi view kakashi-demo" in result.stdout
        hot_path = "compiled" if kakashi.USING_SPEEDUPS else "pure-Python"
        assert f"hot path        {hot_path}" in result.stdout

    def test_a_new_run_replaces_only_its_own_files(self, tmp_path: Path) -> None:
        """Running again deletes the previous demo log, and nothing else in the folder."""
        (tmp_path / "notes.txt").write_text("mine")
        (tmp_path / "demo.log.zst.txt").write_text("mine too")
        kakashi_command("demo", "--count", "200000", "--dir", str(tmp_path))
        rotated = sorted(p.name for p in tmp_path.glob("demo.log.zst.*") if p.suffix != ".txt")
        result = kakashi_command("demo", "--count", "1000", "--dir", str(tmp_path))
        left = sorted(p.name for p in tmp_path.iterdir() if p.name != "demo.log.zst.lock")

        assert rotated, "200,000 records rotate at least once"
        assert 0 == result.returncode, result.stderr
        assert ["demo.log.zst", "demo.log.zst.txt", "notes.txt"] == left
        assert 1000 == sum(1 for _ in read_lines(tmp_path / "demo.log.zst"))

    def test_bad_arguments_are_usage_errors(self, tmp_path: Path) -> None:
        """--count below 1 and a --dir that is a file end with a usage message, no traceback."""
        (tmp_path / "file").write_text("")
        count = kakashi_command("demo", "--count", "0")
        folder = kakashi_command("demo", "--dir", str(tmp_path / "file"))

        assert (2, 2) == (count.returncode, folder.returncode)
        assert "--count must be at least 1" in count.stderr
        assert "is a file, not a folder" in folder.stderr
        assert "Traceback" not in count.stderr + folder.stderr


class TestInfo:
    def test_info_tells_which_build(self) -> None:
        """kakashi info prints the version, the hot path in use and why, Python and platform."""
        result = kakashi_command("info")
        rows = dict(line.split(None, 1) for line in result.stdout.splitlines() if " " in line)

        assert 0 == result.returncode, result.stderr
        assert kakashi.__version__ == rows["version"]
        assert (
            kakashi.build_info()["selection"]
            == result.stdout.split("hot path")[1].split("\n")[0].strip()
        )
        assert sys.version.split()[0] in result.stdout
        assert "platform" in rows and "location" in rows

    def test_info_json(self) -> None:
        """kakashi info --json is build_info() as JSON."""
        result = kakashi_command("info", "--json")
        info = json.loads(result.stdout)

        assert kakashi.build_info() == info

    def test_no_extensions_shows_in_the_version(self) -> None:
        """--version names the implementation and why: here the environment asked for pure."""
        env = dict(os.environ, KAKASHI_NO_EXTENSIONS="1")
        result = subprocess.run(
            [sys.executable, "-m", "kakashi", "--version"], env=env, capture_output=True,
            text=True, check=True,
        )  # fmt: skip

        assert result.stdout.startswith(f"kakashi {kakashi.__version__} (pure-Python: ")
        assert "KAKASHI_NO_EXTENSIONS=1 in the environment" in result.stdout
        assert sys.version.split()[0] in result.stdout


class TestClosedPipe:
    @pytest.mark.parametrize(
        "args", [["demo", "--count", "1000"], ["info"], ["--version"], ["--help"], ["view", "-h"]]
    )
    def test_no_traceback_into_a_closed_pipe(self, args: list[str], tmp_path: Path) -> None:
        """Output into a pipe nobody reads ends quietly with status 141, no traceback."""
        read_end, write_end = os.pipe()
        os.close(read_end)  # the reader is gone before the first line: as with `| head -0`
        try:
            result = subprocess.run(
                [sys.executable, "-m", "kakashi", *args], cwd=tmp_path, stdout=write_end,
                stderr=subprocess.PIPE, text=True, timeout=60,
            )  # fmt: skip
        finally:
            os.close(write_end)

        # argparse itself swallows write errors while printing help (and exits 0 then).
        expected = (0, 141) if args[-1] in ("-h", "--help") else (141,)
        assert result.returncode in expected
        assert "" == result.stderr

    def test_demo_piped_into_head(self, tmp_path: Path) -> None:
        """`kakashi demo | head -3` shows three lines and no traceback."""
        result = subprocess.run(
            f"{sys.executable} -m kakashi demo --count 20000 --dir {tmp_path} | head -3",
            shell=True, executable="/bin/bash", capture_output=True, text=True,
        )  # fmt: skip

        assert 3 == len(result.stdout.splitlines())
        assert "" == result.stderr


def test_only_the_cli_imports_the_cli() -> None:
    """No module below kakashi.cli imports it: the command line sits on top of the library."""
    import ast

    package = Path(kakashi.__file__).resolve().parent
    offenders = []
    for path in package.rglob("*.py"):
        if path.parent.name == "cli" or path.name == "__main__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            if any(name == "kakashi.cli" or name.startswith("kakashi.cli.") for name in names):
                offenders.append(str(path.relative_to(package)))

    assert [] == offenders


class TestAwkwardStreams:
    def test_closed_stdin_and_stdout(self, tmp_path: Path) -> None:
        """`view - <&-` reads nothing and `info >&-` writes nowhere, both without a traceback."""
        no_input = subprocess.run(
            f"{sys.executable} -m kakashi view - <&-", shell=True, capture_output=True, text=True
        )
        no_output = subprocess.run(
            f"{sys.executable} -m kakashi info >&-", shell=True, capture_output=True, text=True
        )

        assert (0, "") == (no_input.returncode, no_input.stderr)
        assert (0, "") == (no_output.returncode, no_output.stderr)

    def test_text_the_terminal_cannot_encode_is_escaped(self, tmp_path: Path) -> None:
        """A record with "é" shown on an ASCII terminal comes out escaped, not as an error."""
        log = tmp_path / "app.log"
        log.write_text('{"level": "INFO", "logger": "a", "message": "café"}\n', "utf-8")
        env = dict(os.environ, PYTHONIOENCODING="ascii")
        result = subprocess.run(
            [sys.executable, "-m", "kakashi", "view", str(log)], env=env, capture_output=True,
            text=True, encoding="ascii", errors="strict",
        )  # fmt: skip

        assert (0, "") == (result.returncode, result.stderr)
        assert "caf\\xe9" in result.stdout

    def test_an_output_error_is_not_blamed_on_the_input(self, tmp_path: Path) -> None:
        """A full output device ends the command with its error, not a message about the log."""
        log = tmp_path / "app.log"
        log.write_text('{"level": "INFO", "logger": "a", "message": "m"}\n' * 10_000)
        with open("/dev/full", "w") as full:
            result = subprocess.run(
                [sys.executable, "-m", "kakashi", "view", str(log)], stdout=full,
                stderr=subprocess.PIPE, text=True,
            )  # fmt: skip

        assert 1 == result.returncode
        assert "No space left on device" in result.stderr
        assert str(log) not in result.stderr and "Traceback" not in result.stderr
