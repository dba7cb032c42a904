"""kakashi.testing: capture what code logs, as dicts."""

from __future__ import annotations

from typing import Any

import pytest

import kakashi
from kakashi.core.async_backend import AsyncConfig
from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
from kakashi.core.pipeline import PipelineConfig
from kakashi.testing import LogCapture, capture_logs


@pytest.fixture
def module_log() -> Any:
    """A logger made before the capture starts, as a module-level one is (the suite
    forgets cached loggers between tests)."""
    return kakashi.get_logger("tests.module")


def test_module_level_loggers_are_captured_with_fields_context_and_levels(module_log: Any) -> None:
    """A logger made before the block logs into it; fields, bound fields, the context
    and the level come out as the JSON formatter's dict, with levelno."""
    with capture_logs() as logs:
        module_log.debug("debugging", step=1)
        with kakashi.context_scope(request_id="r-1"):
            module_log.bind(user="ada").warning("careful", attempt=2)
    assert [
        {"logger": "tests.module", "message": "debugging", "level": "DEBUG", "levelno": 10,
         "step": 1},
        {"logger": "tests.module", "message": "careful", "level": "WARNING", "levelno": 30,
         "request_id": "r-1", "user": "ada", "attempt": 2},
    ] == [{k: v for k, v in entry.items() if k != "timestamp"} for entry in logs]  # fmt: skip


def test_a_capture_keeps_its_level_and_the_levels_set_before_it(module_log: Any) -> None:
    """``capture_logs("WARNING")`` keeps warnings and above, even from a logger given a
    lower level of its own; leaving the block puts back the levels ``set_level`` gave,
    with and without a name, for loggers got before the block and inside it."""
    kakashi.set_level("DEBUG", "chatty")
    with capture_logs("WARNING") as logs:
        kakashi.get_logger("chatty").debug("not kept")
        kakashi.get_logger("chatty").warning("kept")
    assert ["kept"] == [entry["message"] for entry in logs]

    kakashi.set_level("DEBUG")
    with capture_logs("ERROR"):
        inside = kakashi.get_logger("tests.inside")
    kakashi.set_level("WARNING", "tests.named")
    with capture_logs():
        kakashi.set_level("ERROR", "tests.made.inside")  # undone too, as if never made
    assert kakashi.get_logger("tests.made.inside").is_enabled_for(kakashi.LogLevel.DEBUG)
    assert module_log.is_enabled_for(kakashi.LogLevel.DEBUG)
    assert inside.is_enabled_for(kakashi.LogLevel.DEBUG)
    assert not kakashi.get_logger("tests.named").is_enabled_for(kakashi.LogLevel.INFO)


def test_exceptions_are_captured(module_log: Any) -> None:
    with capture_logs() as logs:
        try:
            raise ValueError("bad input")
        except ValueError:
            module_log.exception("failed")
    (entry,) = logs
    assert ("ValueError", "bad input") == (
        entry["exception"]["type"],
        entry["exception"]["message"],
    )


def test_level_filters_and_the_previous_default_comes_back(module_log: Any) -> None:
    """Only records at the level or above are kept; after the block the pipeline that
    was the default gets the records again, and got none of those in the block."""
    lines: list[str] = []
    kakashi.configure(writers=(kakashi.callable_writer(lines.append),))
    module_log.info("before")
    with capture_logs("WARNING") as logs:
        module_log.info("hidden")
        module_log.error("kept")
    module_log.info("after")
    assert ["kept"] == [entry["message"] for entry in logs]
    assert [["before"], ["after"]] == [
        [msg for msg in ("before", "after") if msg in line] for line in lines
    ]


def test_loggers_with_their_own_pipeline_are_not_captured() -> None:
    written: list[Any] = []

    class Keep:
        def write(self, batch: Any) -> None:
            written.extend(batch)

        def flush(self) -> None:
            pass

        def close(self) -> None:
            pass

    own = AsyncPipeline(
        AsyncPipelineConfig(
            pipeline_config=PipelineConfig(writers=(Keep(),)), async_config=AsyncConfig()
        )
    )
    with capture_logs() as logs:
        own.get_logger("own").info("elsewhere")
        assert own.flush(10)
    own.shutdown(10)
    assert ([], 1) == (logs, len(written))


def test_the_fixture(module_log: Any, kakashi_logs: list[dict[str, Any]]) -> None:
    """``pytest_plugins = ["kakashi.testing"]`` gives the kakashi_logs fixture."""
    module_log.info("from a test", n=3)
    assert [("from a test", 3)] == [(entry["message"], entry["n"]) for entry in kakashi_logs]


def test_a_bad_level_fails_when_asked() -> None:
    with pytest.raises(ValueError, match="level"):
        LogCapture("LOUD")


def test_nested_values_come_back_as_plain_data() -> None:
    with capture_logs() as logs:
        kakashi.get_logger("app").info("order", order={"id": 7, "tags": ["a"]}, ids=(1, 2))
    assert {"id": 7, "tags": ["a"]} == logs[0]["order"]
    assert [1, 2] == logs[0]["ids"]


def test_stdlib_records_through_the_bridge_are_captured() -> None:
    """A ``logging`` call routed by ``KakashiHandler`` into the default pipeline lands in
    the capture (the bridge hands records to ``process``)."""
    import logging

    from kakashi.integrations.logging import KakashiHandler

    stdlib = logging.getLogger("tests.testing.bridge")
    stdlib.propagate = False
    stdlib.setLevel(logging.INFO)
    handler = KakashiHandler()
    stdlib.addHandler(handler)
    try:
        with capture_logs() as logs:
            stdlib.warning("from %s", "stdlib", extra={"order": 7})
    finally:
        stdlib.removeHandler(handler)
    assert [("tests.testing.bridge", "from stdlib", "WARNING", 7)] == [
        (entry["logger"], entry["message"], entry["level"], entry["order"]) for entry in logs
    ]
