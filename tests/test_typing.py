"""The written-down contracts (kakashi.typing) and the logger cache the pipelines share."""

from __future__ import annotations

import os
import textwrap
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

import kakashi
from kakashi._speedups import Logger, Record
from kakashi.core.async_backend import AsyncBackend, AsyncConfig
from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
from kakashi.core.logger_cache import LoggerCache
from kakashi.core.pipeline import Pipeline, PipelineConfig, file_writer
from kakashi.typing import AsyncSink, LoggerSource, Sink, Writer, is_concurrent
from tests.conftest import read_json_lines, wait_or_kill

ROOT = Path(kakashi.__file__).resolve().parent.parent


class ListWriter:
    """A writer that keeps every line it is given."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def write(self, batch: Sequence[bytes]) -> None:
        self.lines.extend(batch)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def async_pipeline(writer: Writer, backend: AsyncBackend | None = None) -> AsyncPipeline:
    config = AsyncPipelineConfig(pipeline_config=PipelineConfig(writers=(writer,)))
    return AsyncPipeline(config, backend)


class TestProtocols:
    def test_both_pipelines_are_sinks_and_logger_sources(self) -> None:
        """Pipeline and AsyncPipeline satisfy Sink and LoggerSource at run time."""
        pipeline = Pipeline(writers=(ListWriter(),))
        moving = async_pipeline(ListWriter())

        assert [True] * 4 == [
            isinstance(pipeline, Sink),
            isinstance(pipeline, LoggerSource),
            isinstance(moving, Sink),
            isinstance(moving, LoggerSource),
        ]
        moving.shutdown(5)

    def test_only_the_async_pipeline_is_an_async_sink(self) -> None:
        """An AsyncPipeline can be moved between backends (use_backend); a Pipeline cannot."""
        moving = async_pipeline(ListWriter())

        assert (True, False) == (
            isinstance(moving, AsyncSink),
            isinstance(Pipeline(writers=(ListWriter(),)), AsyncSink),
        )
        moving.shutdown(5)

    def test_an_object_missing_a_writer_method_is_not_a_writer(self) -> None:
        """isinstance(x, Writer) tells a writer from an object without close()."""

        class NoClose:
            def write(self, batch: Sequence[bytes]) -> None:
                pass

            def flush(self) -> None:
                pass

        assert (True, False) == (isinstance(ListWriter(), Writer), isinstance(NoClose(), Writer))

    def test_concurrent_is_optional_and_read_as_false_when_absent(self) -> None:
        """is_concurrent is False without the attribute, True for a class or instance flag."""

        class Concurrent(ListWriter):
            concurrent = True

        flagged = ListWriter()
        flagged.concurrent = True  # type: ignore[attr-defined]

        assert (False, True, True, True) == (
            is_concurrent(ListWriter()),
            is_concurrent(Concurrent()),
            is_concurrent(flagged),
            isinstance(Concurrent(), Writer),
        )

    def test_get_logger_accepts_an_async_pipeline(self, tmp_path: Path) -> None:
        """kakashi.get_logger(name, pipeline=async_pipeline) logs through that pipeline."""
        path = tmp_path / "async.log"
        moving = async_pipeline(file_writer(path))
        log = kakashi.get_logger("via.get_logger", pipeline=moving)
        log.info("hello")
        assert moving.flush(10)

        assert log is moving.get_logger("via.get_logger")
        assert ["hello"] == [e["message"] for e in read_json_lines(path)]
        moving.shutdown(5)


class TestTypeCheck:
    def test_mypy_accepts_the_pipelines_where_the_protocols_are_asked_for(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """mypy --strict accepts both pipelines for get_logger and the protocols; it
        rejects what does not satisfy them (so the check cannot pass by not looking)."""
        from mypy import api

        snippet = textwrap.dedent(
            """
            import kakashi
            from kakashi.core.async_pipeline import AsyncPipeline
            from kakashi.core.pipeline import Pipeline
            from kakashi.typing import AsyncSink, LoggerSource, Sink, Writer
            from kakashi.writers import FileWriter, SendWriter, ZstdFileWriter


            def accepted(
                pipeline: Pipeline, moving: AsyncPipeline, files: FileWriter, zstd: ZstdFileWriter,
                send: SendWriter,
            ) -> None:
                kakashi.get_logger("sync", pipeline=pipeline).info("x")
                kakashi.get_logger("async", pipeline=moving).info("x")
                sources: list[LoggerSource] = [pipeline, moving]
                sinks: list[Sink] = [pipeline, moving]
                registered: AsyncSink = moving
                writers: list[Writer] = [files, zstd, send, kakashi.null_writer]


            def rejected(pipeline: Pipeline) -> None:
                kakashi.get_logger("x", pipeline=42)  # rejected: arg-type
                registered: AsyncSink = pipeline  # rejected: assignment
                writer: Writer = object()  # rejected: assignment
            """
        )
        path = tmp_path / "uses_protocols.py"
        path.write_text(snippet, encoding="utf-8")
        expected = [
            (number, line.split("# rejected: ")[1])
            for number, line in enumerate(snippet.splitlines(), 1)
            if "# rejected: " in line
        ]
        monkeypatch.setenv("MYPYPATH", str(ROOT))  # this checkout, not another installed one
        report, errors, _ = api.run(
            [
                "--config-file",
                str(ROOT / "pyproject.toml"),
                "--no-incremental",
                "--cache-dir",
                os.devnull,
                "--show-error-codes",
                "--no-pretty",
                str(path),
            ]
        )
        actual = [
            (int(line.split(":")[1]), line.rsplit("[", 1)[1].rstrip("]"))
            for line in report.splitlines()
            if ": error: " in line
        ]

        assert ("", expected) == (errors, actual), report


class TestLoggerCache:
    def test_one_logger_per_name_under_concurrent_first_calls(self) -> None:
        """Threads asking for the same new name at once get one logger; all() lists it once."""
        pipeline = Pipeline(writers=(ListWriter(),))
        results: list[Logger] = []
        barrier = threading.Barrier(8)

        def get(name: str) -> None:
            barrier.wait()
            results.append(pipeline.loggers.get(name))

        threads = [threading.Thread(target=get, args=(f"n{i % 2}",)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert 2 == len({id(logger) for logger in results})
        assert ["n0", "n1"] == sorted(logger.name for logger in pipeline.loggers.all())
        assert pipeline.get_logger("n0") is pipeline.loggers.get("n0")

    def test_a_name_must_be_a_str(self) -> None:
        """get() with a name that is not a str raises TypeError naming the parameter."""
        with pytest.raises(TypeError, match="name must be a str, got int"):
            Pipeline(writers=(ListWriter(),)).loggers.get(42)  # type: ignore[arg-type]

    def test_use_backend_moves_loggers_made_before_and_after(self, tmp_path: Path) -> None:
        """After use_backend, loggers already handed out and new ones enqueue on the new backend."""
        path = tmp_path / "moved.log"
        first = AsyncBackend(AsyncConfig())
        second = AsyncBackend(AsyncConfig())
        moving = async_pipeline(file_writer(path), first)
        early = moving.get_logger("early")
        bound = early.bind(k=1)
        moving.use_backend(second)
        late = moving.get_logger("late")
        for log in (early, bound, late):
            log.info("moved")
        assert second.flush(10)

        assert (0, 3) == (
            first.get_stats()["messages_enqueued"],
            second.get_stats()["messages_enqueued"],
        )
        assert ["early", "early", "late"] == [e["logger"] for e in read_json_lines(path)]
        first.shutdown(5)
        second.shutdown(5)

    @pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
    def test_fork_child_can_make_loggers(self) -> None:
        """A child forked while another thread is making a logger can make its own."""

        class HeldSource:
            """A LoggerSource whose first min_level read waits: the cache's lock stays held."""

            capture_flags = 0
            writers: Sequence[Writer] = ()
            fallback_to_sync = False

            def __init__(self) -> None:
                self.held = threading.Event()
                self.release = threading.Event()
                self.route_emit: Callable[[Record], None] = self.emit

            @property
            def min_level(self) -> int:
                if not self.held.is_set():
                    self.held.set()
                    self.release.wait(60)
                return 20

            def emit(self, record: Record) -> None:
                pass

            def render(self, record: Record) -> bytes | None:
                return None

            def render_batch(self, records: list[Record]) -> tuple[list[bytes], int]:
                return [], len(records)

            def get_logger(self, name: str) -> Logger:
                return cache.get(name)

        source = HeldSource()
        cache = LoggerCache(source)
        holder = threading.Thread(target=cache.get, args=("parent",))
        holder.start()
        source.held.wait(60)
        pid = os.fork()
        if pid == 0:  # child: the lock the holder thread took must be free here
            code = 1
            try:
                code = 0 if "child" == cache.get("child").name else 1
            finally:
                os._exit(code)
        status = wait_or_kill(pid)
        source.release.set()
        holder.join()

        assert 0 == os.waitstatus_to_exitcode(status)
        assert ["parent"] == [logger.name for logger in cache.all()]


class TestComposition:
    def test_the_async_pipeline_renders_with_the_pipeline_it_composes(self) -> None:
        """AsyncPipeline renders, gates and writes with the pipeline it composes."""
        writer = ListWriter()
        moving = AsyncPipeline(
            AsyncPipelineConfig(
                pipeline_config=PipelineConfig(
                    min_level="WARNING",
                    filters=(lambda record: record.level >= 40,),
                    writers=(writer,),
                )
            )
        )
        records = [Record(0, 30, "x", "filtered out"), Record(0, 40, "x", "kept")]
        lines, filtered = moving.render_batch(records)

        assert moving.pipeline.render_batch(records) == (lines, filtered)
        assert (1, 1) == (len(lines), filtered)
        assert moving.pipeline.render(records[1]) == moving.render(records[1]) == lines[0]
        assert (30, (writer,)) == (moving.min_level, tuple(moving.writers))
        moving.shutdown(5)
