"""``import kakashi`` without POSIX: what needs POSIX says so when it is configured."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

# Run before kakashi is imported: the platform has neither fcntl nor fork hooks, as on
# Windows (the other POSIX-only modules go too, so a new top-level import of one fails here).
_WITHOUT_POSIX = """
import os, sys
for name in ("fcntl", "resource", "termios", "pty", "tty", "grp", "pwd", "syslog"):
    sys.modules[name] = None
for name in ("register_at_fork", "fork", "forkpty", "pread", "pwrite"):
    if hasattr(os, name):
        delattr(os, name)
"""


def run_without_posix(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = _WITHOUT_POSIX + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script], cwd=str(tmp_path), capture_output=True, text=True
    )


def test_every_module_imports_without_posix(tmp_path: Path) -> None:
    """Every module of the package imports where fcntl and fork hooks do not exist."""
    result = run_without_posix(
        """
        import pkgutil, importlib, kakashi
        names = [m.name for m in pkgutil.walk_packages(kakashi.__path__, "kakashi.")
                 if not m.name.startswith("kakashi._speedups._") and m.name != "kakashi.__main__"]
        for name in names:
            importlib.import_module(name)
        print(len(names), "modules")
        """,
        tmp_path,
    )

    assert 0 == result.returncode, result.stderr
    assert "modules" in result.stdout


def test_logging_works_without_posix(tmp_path: Path) -> None:
    """Plain, zstd and async file logging work without any POSIX-only module."""
    result = run_without_posix(
        """
        import kakashi
        from kakashi.core.async_interface import get_high_performance_logger
        from kakashi.writers import ZstdFileWriter, read_lines
        pipeline = kakashi.Pipeline(writers=(kakashi.file_writer("sync.log"),))
        pipeline.get_logger("app").info("sync", n=1)
        zstd = ZstdFileWriter("app.log.zst")
        kakashi.Pipeline(writers=(zstd,)).get_logger("app").info("zstd", n=2)
        log = get_high_performance_logger("app", "async.log")
        log.info("async", n=3)
        assert kakashi.flush(5)
        print(sum(1 for _ in read_lines("app.log.zst")), open("async.log").read().count("async"))
        """,
        tmp_path,
    )

    assert 0 == result.returncode, result.stderr
    assert "1 1" == result.stdout.strip()


def test_rotation_names_what_it_needs(tmp_path: Path) -> None:
    """Configuring a rotating writer without fcntl fails at once, naming the feature."""
    result = run_without_posix(
        """
        import kakashi
        from kakashi.writers import RotatingFileWriter
        try:
            RotatingFileWriter("app.log", max_bytes=1000)
        except kakashi.UnsupportedPlatformError as exc:
            print(exc)
        """,
        tmp_path,
    )

    assert 0 == result.returncode, result.stderr
    assert "RotatingFileWriter" in result.stdout
    assert "'fcntl'" in result.stdout and sys.platform in result.stdout


def test_command_line_without_posix(tmp_path: Path) -> None:
    """view --follow works without POSIX; demo, which rotates, says in one line why not."""
    (tmp_path / "app.log").write_text('{"level": "INFO", "message": "hello"}\n')
    result = run_without_posix(
        """
        import sys
        from kakashi.cli import main
        print("view", main(["view", "--follow", "--follow-for", "0.3", "app.log"]))
        print("demo", main(["demo", "--count", "10", "--dir", "demo"]))
        """,
        tmp_path,
    )

    assert 0 == result.returncode, result.stderr
    assert "hello" in result.stdout and "view 0" in result.stdout
    assert "demo 1" in result.stdout
    assert "Traceback" not in result.stderr
    assert "kakashi demo: RotatingFileWriter" in result.stderr and "'fcntl'" in result.stderr
