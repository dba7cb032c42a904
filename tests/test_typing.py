"""The written-down contracts (kakashi.typing): both pipelines satisfy them."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest

import kakashi
from kakashi.core.async_backend import AsyncBackend
from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
from kakashi.core.pipeline import Pipeline, PipelineConfig, file_writer
from kakashi.typing import AsyncSink, LoggerSource, Sink, Writer, is_concurrent
from tests.conftest import read_json_lines

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
