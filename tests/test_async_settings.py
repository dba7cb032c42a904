"""Async settings: durations checked where configured, the final figures kept after a
shutdown, presets that never replace the process-wide backend, one set of defaults."""

from __future__ import annotations

import gc
import inspect
import json
import signal
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import kakashi
import kakashi.core.async_interface as async_interface
from kakashi.core.async_backend import (
    AsyncConfig,
    configure_async_backend,
    get_async_backend,
    install_sigterm_handler,
    shutdown_all,
    shutdown_async_logging,
)
from kakashi.core.async_interface import (
    get_async_stats,
    get_async_structured_logger,
    get_high_performance_logger,
    get_network_logger,
    setup_async_logging,
    shutdown_async_backend,
)
from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
from kakashi.core.pipeline import PipelineConfig
from kakashi.logger import reset_registry
from kakashi.writers import SendWriter
from tests.conftest import read_json_lines

INF = float("inf")
NAN = float("nan")
DAY = "86400 seconds \\(one day\\)"
HOUR = "3600 seconds \\(one hour\\)"


class Lines:
    """A writer that keeps every line it is given."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def write(self, batch: Any) -> None:
        self.lines.extend(batch)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def pipeline_with(writer: Any, **async_options: Any) -> AsyncPipeline:
    return AsyncPipeline(
        AsyncPipelineConfig(
            pipeline_config=PipelineConfig(writers=(writer,)),
            async_config=AsyncConfig(**async_options),
        )
    )


# -- item 7: every duration is checked where it is configured ---------------------------


class TestDurations:
    @pytest.mark.parametrize("field", ["batch_timeout", "block_timeout", "error_retry_delay"])
    @pytest.mark.parametrize("value", [INF, -INF, NAN, 9.3e9, 86_400.5, -1])
    def test_waits_and_delays_out_of_range(self, field: str, value: float) -> None:
        """A wait or delay that is infinite, NaN, negative or over a day fails at
        construction with a message naming the field, the value and the range."""
        with pytest.raises(ValueError, match=f"^{field} must be .*{DAY}, got {value!r}$"):
            AsyncConfig(**{field: value})

    @pytest.mark.parametrize("value", [INF, NAN, 3_600.5, 0, -1])
    def test_shutdown_timeout_out_of_range(self, value: float) -> None:
        """shutdown_timeout must be more than 0 and at most an hour."""
        with pytest.raises(ValueError, match=f"^shutdown_timeout must be .*{HOUR}, got"):
            AsyncConfig(shutdown_timeout=value)

    def test_the_documented_limits_are_accepted(self) -> None:
        """The ends of each documented range are valid settings."""
        config = AsyncConfig(
            batch_timeout=86_400, block_timeout=86_400, error_retry_delay=0, shutdown_timeout=3_600
        )

        assert (86_400, 86_400, 0, 3_600) == (
            config.batch_timeout,
            config.block_timeout,
            config.error_retry_delay,
            config.shutdown_timeout,
        )

    def test_a_worker_with_the_longest_batch_timeout_writes(self) -> None:
        """The longest allowed batch_timeout is a wait the worker can make: nothing dies,
        a flush still writes every record."""
        writer = Lines()
        pipeline = pipeline_with(writer, batch_timeout=86_400, batch_size=1000)
        log = pipeline.get_logger("day")
        for i in range(20):
            log.info("r", i=i)

        assert pipeline.flush(30)
        assert 20 == len(writer.lines)
        assert 1 == pipeline.stats()["active_workers"]
        assert pipeline.shutdown(30)

    @pytest.mark.parametrize(
        "call",
        [
            lambda: configure_async_backend(batch_timeout=INF),
            lambda: configure_async_backend(block_timeout=1e12),
            lambda: configure_async_backend(error_retry_delay=NAN),
            lambda: setup_async_logging(batch_timeout=INF),
            lambda: get_network_logger("n", print, error_retry_delay=INF),
            lambda: get_network_logger("n", print, error_retry_delay=NAN),
        ],
        ids=[
            "configure-batch",
            "configure-block",
            "configure-retry",
            "setup",
            "net-inf",
            "net-nan",
        ],
    )
    def test_entry_points_refuse_bad_durations(self, call: Callable[[], Any]) -> None:
        """configure_async_backend and the presets refuse a bad duration before any
        backend is made or changed."""
        with pytest.raises(ValueError, match=r"(batch_timeout|block_timeout|error_retry_delay) "):
            call()

        assert 0 == get_async_stats()["active_workers"]

    @pytest.mark.parametrize("value", [INF, NAN, -1, 3_600.5, 1e300])
    def test_timeouts_of_flush_and_shutdown(self, value: float) -> None:
        """flush, shutdown and the SIGTERM drain refuse a timeout that is not between 0
        and an hour, with a ValueError naming it (not an OverflowError from a wait)."""
        pipeline = pipeline_with(Lines())
        pipeline.get_logger("t").info("queued")
        before = signal.getsignal(signal.SIGTERM)
        calls: list[Callable[[], Any]] = [
            lambda: pipeline.flush(value),
            lambda: pipeline.backend.flush(value),
            lambda: kakashi.flush(value),
            lambda: install_sigterm_handler(value),
            lambda: pipeline.shutdown(value),
            lambda: pipeline.backend.shutdown(value),
            lambda: shutdown_async_backend(value),
            lambda: shutdown_async_logging(value),
            lambda: shutdown_all(value),
        ]
        for call in calls:
            with pytest.raises(ValueError, match=f"^timeout must be between 0 and {HOUR}, got"):
                call()

        assert before == signal.getsignal(signal.SIGTERM)
        assert pipeline.flush(10)  # still running: no refused call shut anything down
        assert pipeline.backend.is_running()
        pipeline.shutdown(10)

    def test_send_writer_delays(self) -> None:
        """The network writer checks its delays as the backend does."""
        with pytest.raises(ValueError, match=f"^error_retry_delay must be .*{DAY}, got nan"):
            SendWriter(print, error_retry_delay=NAN)
        with pytest.raises(ValueError, match=f"^max_delay must be .*{DAY}, got inf"):
            SendWriter(print, max_delay=INF)


# -- item 10: final figures after a shutdown; the backend is never replaced by a preset --


class TestFinalFigures:
    @pytest.mark.parametrize("shutdown", [shutdown_async_backend, shutdown_async_logging])
    def test_readable_after_shutdown(
        self, shutdown: Callable[[float], Any], tmp_path: Path
    ) -> None:
        """After a shutdown, get_async_stats reports the figures of the backend that was
        shut down, with state "stopped", not a fresh backend's zeros."""
        log = get_high_performance_logger("final", tmp_path / "final.log")
        for i in range(50):
            log.info("r", i=i)
        assert shutdown(10)

        stats = get_async_stats()

        assert ("stopped", 50, 50, 0, 0) == (
            stats["state"],
            stats["messages_enqueued"],
            stats["messages_written"],
            stats["messages_dropped"],
            stats["pending"],
        )
        assert 50 == len(read_json_lines(tmp_path / "final.log"))

    def test_kept_until_a_new_backend_takes_a_record(self, tmp_path: Path) -> None:
        """A preset called after the shutdown makes a new backend; its figures replace
        the final ones only once it logs."""
        first = get_high_performance_logger("a", tmp_path / "a.log")
        for i in range(7):
            first.info("r", i=i)
        shutdown_async_backend(10)

        second = get_high_performance_logger("b", tmp_path / "b.log")
        before_logging = get_async_stats()
        second.info("on the new backend")
        assert kakashi.flush(10)
        after_logging = get_async_stats()

        assert ("stopped", 7) == (before_logging["state"], before_logging["messages_written"])
        assert ("running", 1, 1) == (
            after_logging["state"],
            after_logging["messages_enqueued"],
            after_logging["messages_written"],
        )

    def test_stats_make_no_backend(self, tmp_path: Path, capfd: Any) -> None:
        """get_async_stats before any backend exists makes none: a preset called next
        still gets the settings it asks for, without a notice."""
        fresh = get_async_stats()
        get_high_performance_logger("hp", tmp_path / "hp.log", max_queue_size=1234)

        assert ("stopped", 0, AsyncConfig.max_queue_size) == (
            fresh["state"],
            fresh["messages_enqueued"],
            fresh["max_queue_size"],
        )
        assert 1234 == get_async_backend().config.max_queue_size
        assert "" == capfd.readouterr().err

    def test_presets_keep_the_running_backend_and_say_so_once(
        self, tmp_path: Path, capfd: Any
    ) -> None:
        """A preset asked for other settings than the running backend's keeps that
        backend and its counters, and says so once on stderr."""
        log = get_high_performance_logger("hp", tmp_path / "hp.log", max_queue_size=1000)
        for i in range(10):
            log.info("r", i=i)
        backend = get_async_backend()
        sent: list[str] = []

        net = get_network_logger("net", sent.append, max_queue_size=2000)
        again = get_network_logger("net", sent.append, max_queue_size=2000)
        setup_async_logging(log_directory=tmp_path, worker_count=3)
        net.info("sent")
        assert kakashi.flush(10)
        err = capfd.readouterr().err
        stats = get_async_stats()

        assert backend is get_async_backend() and net is again
        assert (1000, 1) == (backend.config.max_queue_size, backend.config.worker_count)
        assert (11, 11, 1) == (stats["messages_enqueued"], stats["messages_written"], len(sent))
        assert 1 == err.count("get_network_logger(max_queue_size=2000)")
        assert 1 == err.count("already runs with max_queue_size=1000 and is kept")
        assert 1 == err.count("setup_async_logging(worker_count=3)")

    def test_configure_async_backend_is_the_way_to_change_it(self, capfd: Any) -> None:
        """configure_async_backend replaces the backend; presets then join the new one."""
        first = configure_async_backend(max_queue_size=1000)
        second = configure_async_backend(max_queue_size=3000)
        get_network_logger("n", print)

        assert second is get_async_backend() and first is not second
        assert "stopped" == first.state
        assert "" == capfd.readouterr().err


# -- item 11: one set of defaults, one name per parameter, no growing caches --------------


def _fresh() -> None:
    """Back to a process with no backend and no default pipeline."""
    shutdown_all(10)
    reset_registry()


class TestDefaults:
    def test_configure_takes_asyncconfig_defaults(self) -> None:
        """configure_async_backend's defaults are AsyncConfig's."""
        assert AsyncConfig() == configure_async_backend().config

    def test_every_preset_makes_the_same_backend(self, tmp_path: Path) -> None:
        """Each preset, called with no queue settings in a fresh process, makes a backend
        with AsyncConfig's defaults, whatever the environment."""
        made: dict[str, AsyncConfig] = {}
        presets: dict[str, Callable[[], Any]] = {
            "production": lambda: setup_async_logging("production", log_directory=tmp_path),
            "development": lambda: setup_async_logging("development", log_directory=tmp_path),
            "testing": lambda: setup_async_logging("testing", log_directory=tmp_path),
            "high_performance": lambda: get_high_performance_logger("h", tmp_path / "h.log"),
            "network": lambda: get_network_logger("n", print),
            "structured": lambda: get_async_structured_logger("s"),
        }
        for name, preset in presets.items():
            _fresh()
            preset()
            made[name] = get_async_backend().config

        assert {name: AsyncConfig() for name in presets} == made

    @pytest.mark.parametrize(
        "orders",
        [
            ("high_performance", "production"),
            ("production", "high_performance"),
            ("network", "production"),
            ("production", "network"),
        ],
    )
    def test_policy_does_not_depend_on_call_order(
        self, orders: tuple[str, str], tmp_path: Path
    ) -> None:
        """The overflow policy a preset's logger runs under is the same whichever preset
        came first: presets never change another preset's policy."""
        calls: dict[str, Callable[[], Any]] = {
            "production": lambda: setup_async_logging("production", log_directory=tmp_path),
            "high_performance": lambda: get_high_performance_logger("h", tmp_path / "h.log"),
            "network": lambda: get_network_logger("n", print),
        }
        for name in orders:
            calls[name]()

        assert AsyncConfig.overflow_strategy == get_async_stats()["overflow_strategy"]

    def test_one_name_per_parameter(self) -> None:
        """A preset parameter for an AsyncConfig setting has the field's name; the only
        other spelling is the original's max_retries, accepted as an alias."""
        fields = set(inspect.signature(AsyncConfig).parameters)
        aliases = {"max_retries": "max_error_retries"}
        own = {"name", "log_file", "network_writer_func", "min_level", "environment"}
        own |= {"service_name", "version", "log_directory", "options", "default_fields"}
        for preset in (
            setup_async_logging,
            get_high_performance_logger,
            get_network_logger,
            configure_async_backend,
        ):
            names = set(inspect.signature(preset).parameters) - own - set(aliases)
            assert set() == names - fields, preset.__name__

    def test_retry_names_and_alias(self) -> None:
        """get_network_logger takes max_error_retries and error_retry_delay (the
        original's max_retries too, but not both at once)."""
        attempts: list[str] = []

        def down(message: str) -> None:
            attempts.append(message)
            raise ConnectionError("collector down")

        log = get_network_logger("n", down, max_error_retries=2, error_retry_delay=0.001)
        log.info("lost")
        assert kakashi.flush(10)
        with pytest.raises(TypeError, match="max_error_retries or its alias max_retries"):
            get_network_logger("n", down, max_error_retries=2, max_retries=2)

        assert 3 == len(attempts)
        assert 1 == get_async_stats()["dropped_by_reason"]["write_error"]

    def test_send_writer_defaults_are_asyncconfig_defaults(self) -> None:
        """SendWriter's retry defaults are AsyncConfig's."""
        writer = SendWriter(print)

        assert (AsyncConfig.max_error_retries, AsyncConfig.error_retry_delay) == (
            writer.max_error_retries,
            writer.error_retry_delay,
        )


def _module_sizes() -> dict[str, int]:
    """The size of every container held at module level by the presets' module."""
    sizes = {}
    for name, value in vars(async_interface).items():
        container = hasattr(value, "__len__") and not isinstance(value, str)
        if container and not name.startswith("__") and not inspect.isclass(value):
            sizes[name] = len(value)
    return sizes


class TestNetworkLoggersAreNotKept:
    def test_unreferenced_loggers_are_collected(self) -> None:
        """Network loggers made with distinct names and callables are not kept by the
        module: once unreferenced they are collected and its structures do not grow."""
        get_network_logger("warm-up", print)  # the backend and any lazy state exist
        gc.collect()
        before = _module_sizes()
        received: list[str] = []
        refs = []
        for n in range(200):

            def send(message: str, n: int = n) -> None:
                received.append(message)

            logger = get_network_logger(f"net-{n}", send)
            logger.info("hello", n=n)
            refs.append((weakref.ref(logger), weakref.ref(send)))
        del logger, send
        assert kakashi.flush(10)
        gc.collect()
        after = _module_sizes()

        assert 200 == len(received)
        assert [] == [n for n, (log, send) in enumerate(refs) if log() or send()]
        assert before == after

    def test_a_referenced_logger_keeps_working(self) -> None:
        """A network logger still referenced is the same logger when asked again and
        keeps sending after the others were collected."""
        received: list[dict[str, Any]] = []

        def send(message: str) -> None:
            received.append(json.loads(message))

        kept = get_network_logger("kept", send)
        for n in range(50):
            get_network_logger(f"other-{n}", lambda message: None)
        gc.collect()
        kept.info("still here")
        assert kakashi.flush(10)

        assert kept is get_network_logger("kept", send)
        assert ["still here"] == [event["message"] for event in received]
