"""Writers: file (append, one system call per batch, permissions, fsync), stream, callable."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path
from typing import Any

import pytest

import kakashi
from kakashi.writers import CallableWriter, FileWriter, StreamWriter, file_writer
from tests.conftest import patch_os_write, wait_or_kill


class TestFileWriter:
    def test_appends_and_creates_directories(self, tmp_path: Path) -> None:
        """The writer creates parent directories and appends to an existing file."""
        path = tmp_path / "deep" / "dir" / "app.log"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"existing\n")
        writer = file_writer(path)
        writer.write([b"one", b"two"])
        writer.write([b"three"])
        writer.close()

        assert b"existing\none\ntwo\nthree\n" == path.read_bytes()

    def test_one_system_call_per_batch(self, tmp_path: Path, monkeypatch: Any) -> None:
        """A whole batch goes to the kernel in a single write()."""
        calls: list[int] = []
        real_write = os.write

        def counting_write(fd: int, data: Any) -> int:
            calls.append(len(data))
            return real_write(fd, data)

        writer = FileWriter(tmp_path / "app.log")
        patch_os_write(monkeypatch, counting_write)
        writer.write([b"x" * 100] * 1000)
        monkeypatch.undo()
        writer.close()

        assert [101 * 1000] == calls

    def test_partial_writes_are_completed(self, tmp_path: Path, monkeypatch: Any) -> None:
        """If the kernel takes part of a batch, the rest is written, nothing is lost."""
        real_write = os.write

        def short_write(fd: int, data: Any) -> int:
            return real_write(fd, bytes(data[:7]))

        writer = FileWriter(tmp_path / "app.log")
        patch_os_write(monkeypatch, short_write)
        writer.write([b"abcdefghij", b"klmnop"])
        monkeypatch.undo()
        writer.close()

        assert b"abcdefghij\nklmnop\n" == (tmp_path / "app.log").read_bytes()

    def test_file_mode(self, tmp_path: Path) -> None:
        """New files get the requested permission bits (under the umask)."""
        old = os.umask(0)
        try:
            FileWriter(tmp_path / "audit.log", mode=0o600).close()
        finally:
            os.umask(old)

        assert 0o600 == stat.S_IMODE((tmp_path / "audit.log").stat().st_mode)

    def test_fsync_on_flush(self, tmp_path: Path, monkeypatch: Any) -> None:
        """fsync=True makes flush() force the data to disk."""
        synced: list[int] = []
        writer = FileWriter(tmp_path / "audit.log", fsync=True)
        monkeypatch.setattr(os, "fsync", synced.append)
        writer.write([b"entry"])
        writer.flush()
        monkeypatch.undo()
        writer.close()

        assert 1 == len(synced)

    def test_reopens_after_close(self, tmp_path: Path) -> None:
        """A write after close reopens the file instead of failing."""
        writer = FileWriter(tmp_path / "app.log")
        writer.close()
        writer.write([b"late"])
        writer.close()

        assert b"late\n" == (tmp_path / "app.log").read_bytes()

    @pytest.mark.parametrize(
        ("kwargs", "error", "message"),
        [
            ({"path": 42}, TypeError, r"path must be a file path \(str or os.PathLike\), got 42"),
            ({"path": None}, TypeError, "path must be a file path .*, got None"),
            ({"path": ""}, ValueError, "path must be a file path, got an empty one"),
            ({"path": "x.log", "mode": -1}, ValueError, "mode must be permission bits"),
            ({"path": "x.log", "mode": 0o10000}, ValueError, "mode must be permission bits"),
        ],
    )
    def test_bad_arguments(
        self, tmp_path: Path, monkeypatch: Any, kwargs: dict[str, Any], error: type, message: str
    ) -> None:
        """Bad paths and modes fail at construction, naming the parameter."""
        monkeypatch.chdir(tmp_path)
        with pytest.raises(error, match=message):
            FileWriter(**kwargs)

    def test_path_through_a_file_names_the_file(self, tmp_path: Path) -> None:
        """A path under an existing file fails when the writer is made, naming that file."""
        blocker = tmp_path / "file"
        blocker.write_text("")
        with pytest.raises(NotADirectoryError, match=f"{blocker} is a file, not a folder"):
            FileWriter(blocker / "deeper" / "app.log")

    def test_folder_as_path_says_so(self, tmp_path: Path) -> None:
        """A path naming a folder fails at once with a message saying it is a folder."""
        with pytest.raises(IsADirectoryError, match="is a folder, not a file"):
            FileWriter(tmp_path)


class TestStreamWriter:
    def test_follows_the_current_stdout(self, capsys: Any) -> None:
        """stdout_writer writes to whatever sys.stdout is at the time of the write."""
        kakashi.stdout_writer.write([b"first", "sn\u00f6".encode()])

        assert "first\nsn\u00f6\n" == capsys.readouterr().out

    def test_explicit_stream(self) -> None:
        """A given stream is written and flushed."""
        stream = io.StringIO()
        StreamWriter(stream).write([b"a", b"b"])

        assert "a\nb\n" == stream.getvalue()

    def test_bad_arguments(self) -> None:
        """A stream without write, or an unknown name, fails at construction."""
        with pytest.raises(TypeError, match="stream must have a write"):
            StreamWriter(object())  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="name must be 'stdout' or 'stderr'"):
            StreamWriter(name="stdlog")

    def test_stderr_writer(self, capsys: Any) -> None:
        """stderr_writer writes to sys.stderr."""
        kakashi.stderr_writer.write([b"oops"])

        assert "oops\n" == capsys.readouterr().err


class TestOtherWriters:
    def test_callable_writer(self) -> None:
        """callable_writer calls the function once per record, with a str."""
        seen: list[str] = []
        writer = kakashi.callable_writer(seen.append)
        writer.write([b'{"a":1}', "\u00e9".encode()])

        assert ['{"a":1}', "\u00e9"] == seen
        with pytest.raises(TypeError, match="function must be callable"):
            CallableWriter(42)  # type: ignore[arg-type]

    def test_null_writer(self) -> None:
        """null_writer accepts everything and writes nothing."""
        kakashi.null_writer.write([b"x"])
        kakashi.null_writer.flush()
        kakashi.null_writer.close()

    def test_every_writer_meets_the_contract(self, tmp_path: Path) -> None:
        """Each standard writer satisfies the Writer protocol."""
        from kakashi.typing import Writer

        writers = [
            FileWriter(tmp_path / "x.log"),
            kakashi.stdout_writer,
            kakashi.null_writer,
            kakashi.callable_writer(print),
        ]

        assert all(isinstance(writer, Writer) for writer in writers)
        writers[0].close()


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_fork_child_can_write(tmp_path: Path) -> None:
    """A child forked while another thread holds the writer's lock can still write."""
    import threading

    writer = FileWriter(tmp_path / "fork.log")
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with writer._lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    pid = os.fork()
    if pid == 0:  # child: the lock must be free here
        try:
            writer.write([b"from child"])
        finally:
            os._exit(0)
    status = wait_or_kill(pid)
    release.set()
    holder.join()
    writer.close()

    assert 0 == status
    assert b"from child\n" == (tmp_path / "fork.log").read_bytes()
