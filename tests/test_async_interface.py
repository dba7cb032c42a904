"""The Async Backends page's presets and examples, run as written."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

import kakashi
import kakashi.core.async_interface
from kakashi.core.async_backend import AsyncConfig
from kakashi.core.async_interface import (
    get_async_stats,
    get_async_structured_logger,
    get_high_performance_logger,
    get_network_logger,
    setup_async_logging,
    shutdown_async_backend,
)
from tests.conftest import read_json_lines

PAGE_STATS_KEYS = {
    "queue_size",
    "max_queue_size",
    "worker_count",
    "messages_enqueued",
    "messages_dropped",
    "messages_written",
    "active_workers",
    "state",
}


class TestSetup:
    def test_basic_async_setup(self, tmp_path: Path) -> None:
        """After the page's setup_async_logging call, get_logger logs via the workers."""
        setup_async_logging(
            environment="production",
            service_name="my-api",
            version="1.0.0",
            max_queue_size=25000,
            worker_count=2,
            batch_size=200,
            log_directory=tmp_path / "logs",
        )
        log = kakashi.get_logger("my_api.orders")
        log.info("order placed", order_id=7)
        log.debug("below production's INFO")
        assert kakashi.flush(10)
        stats = get_async_stats()
        workers = [t.name for t in threading.enumerate() if t.name.startswith("kakashi-worker")]

        (event,) = read_json_lines(tmp_path / "logs" / "app.log")
        assert ("order placed", 7, "my-api", "1.0.0", "production") == (
            event["message"],
            event["order_id"],
            event["service"],
            event["version"],
            event["environment"],
        )
        assert 2 == len(workers) == stats["active_workers"]
        assert (25000, 2, 1) == (
            stats["max_queue_size"],
            stats["worker_count"],
            stats["messages_written"],
        )

    def test_default_log_directory_is_created_here(self, tmp_path: Path, monkeypatch: Any) -> None:
        """Without log_directory, ./logs is created (never a root-only path)."""
        monkeypatch.chdir(tmp_path)
        setup_async_logging(environment="development")
        kakashi.get_logger("dev").debug("visible in development")
        kakashi.flush(10)

        assert (
            "visible in development" == read_json_lines(tmp_path / "logs" / "app.log")[0]["message"]
        )

    def test_unknown_environment(self) -> None:
        """An unknown environment fails at configuration time."""
        with pytest.raises(ValueError, match="environment must be one of development"):
            setup_async_logging(environment="staging")

    @pytest.mark.parametrize("spelling", ["PRODUCTION", "Prod", " development "])
    def test_environment_names_ignore_case(self, spelling: str, tmp_path: Path) -> None:
        """Environment names are read like level names: case and spaces do not matter."""
        pipeline = setup_async_logging(environment=spelling, log_directory=tmp_path)

        expected = "development" if "dev" in spelling else "production"
        assert kakashi.core.async_interface.ENVIRONMENTS[expected][0] == pipeline.min_level

    @pytest.mark.parametrize(
        ("options", "error", "message"),
        [
            ({"log_file": None}, TypeError, "log_file must be a file path .*, got None"),
            ({"log_directory": 3}, TypeError, "log_directory must be a file path .*, got 3"),
            ({"environment": None}, TypeError, "environment must be a str, got None"),
        ],
    )
    def test_bad_arguments_name_the_parameter(
        self, options: dict[str, Any], error: type, message: str
    ) -> None:
        """Each bad argument fails at once with a message naming it and its value."""
        with pytest.raises(error, match=message):
            setup_async_logging(**options)

    def test_paths_through_a_file_name_the_parameter(self, tmp_path: Path) -> None:
        """A log folder or file under an existing file names the parameter and the file."""
        blocker = tmp_path / "passwd"
        blocker.write_text("")

        with pytest.raises(NotADirectoryError, match=f"log_directory=.*{blocker} is a file"):
            setup_async_logging(log_directory=blocker / "logs")
        with pytest.raises(NotADirectoryError, match=f"log_file=.*{blocker} is a file"):
            setup_async_logging(log_directory=tmp_path, log_file=str(blocker / "app.log"))
        with pytest.raises(NotADirectoryError, match=f"log_file=.*{blocker} is a file"):
            get_high_performance_logger("app", blocker / "x.log")
        with pytest.raises(TypeError, match=r"log_file must be a file path .*, got None"):
            get_high_performance_logger("app", None)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="network_writer_func must be callable, got 5"):
            get_network_logger("app", 5)  # type: ignore[arg-type]

    def test_web_server_example(self, tmp_path: Path, monkeypatch: Any) -> None:
        """The page's high-throughput web server configuration runs as written."""
        monkeypatch.chdir(tmp_path)

        def setup_web_server_logging() -> None:
            """Optimized for web servers with high request volume."""
            setup_async_logging(
                environment="production",
                service_name="web-api",
                version="2.1.0",
                max_queue_size=100000,
                worker_count=8,
                batch_size=1000,
            )

        setup_web_server_logging()
        stats = get_async_stats()

        # The overflow strategy is AsyncConfig's, the same in every environment.
        assert (100000, 8, AsyncConfig.overflow_strategy) == (
            stats["max_queue_size"],
            stats["worker_count"],
            stats["overflow_strategy"],
        )


class TestPresets:
    def test_trading_loop(self, tmp_path: Path, monkeypatch: Any) -> None:
        """get_high_performance_logger: the page's trading loop, every trade on disk."""
        monkeypatch.chdir(tmp_path)

        class Trade:
            def __init__(self, n: int) -> None:
                self.n = n

            def to_dict(self) -> dict[str, Any]:
                return {"trade_id": self.n, "symbol": "AAPL", "qty": 100, "price": 189.5}

        trades = [Trade(n) for n in range(5000)]
        logger = get_high_performance_logger(
            name="trading",
            log_file="trades.log",
            max_queue_size=100000,
            worker_count=8,
            batch_size=1000,
        )
        for trade in trades:
            logger.info("Trade executed", **trade.to_dict())  # Microsecond latency
        assert kakashi.flush(30)

        events = read_json_lines(tmp_path / "trades.log")
        assert list(range(5000)) == [event["trade_id"] for event in events]
        assert 8 == get_async_stats()["worker_count"]

    def test_network_logger(self) -> None:
        """get_network_logger: send runs on a worker thread with each JSON message."""
        received: list[dict[str, Any]] = []
        threads: set[str] = set()

        class EsClient:
            def index(self, index: str, body: dict[str, Any]) -> None:
                threads.add(threading.current_thread().name)
                received.append({"index": index, **body})

        es_client = EsClient()

        def send_to_elasticsearch(message: str) -> None:
            # Your Elasticsearch client code
            es_client.index(index="logs", body=json.loads(message))

        logger = get_network_logger("api", send_to_elasticsearch)
        logger.info("API call", endpoint="/users", response_time=45)
        assert kakashi.flush(10)

        assert [("logs", "API call", "/users", 45)] == [
            (r["index"], r["message"], r["endpoint"], r["response_time"]) for r in received
        ]
        assert threads and threading.current_thread().name not in threads

    def test_network_logger_retries_then_counts(self, capfd: Any) -> None:
        """A send that keeps failing is retried with backoff, then counted as dropped."""
        attempts: list[str] = []

        def flaky(message: str) -> None:
            attempts.append(message)
            if len(attempts) < 3 or "never" in message:
                raise ConnectionError("collector unreachable")

        logger = get_network_logger("api", flaky, max_retries=3, error_retry_delay=0.001)
        logger.info("eventually sent")
        logger.info("never sent")
        assert kakashi.flush(10)
        stats = get_async_stats()

        assert 3 + 4 == len(attempts)
        assert 1 == stats["dropped_by_reason"]["write_error"]
        assert 1 == stats["messages_written"]
        assert 1 == capfd.readouterr().err.count("collector unreachable")

    def test_analytics_structured_logger(self) -> None:
        """get_async_structured_logger binds default fields and logs asynchronously."""
        lines: list[str] = []
        kakashi.configure(writers=(kakashi.callable_writer(lines.append),))

        def setup_analytics_logging() -> Any:
            """Logger for real-time analytics with low latency."""
            logger = get_async_structured_logger(
                "analytics", service="user-analytics", version="1.0.0"
            )
            return logger

        logger = setup_analytics_logging()
        logger.info("page view", page="/home")
        assert kakashi.flush(10)

        event = json.loads(lines[0])
        assert ("user-analytics", "1.0.0", "/home") == (
            event["service"],
            event["version"],
            event["page"],
        )
        assert get_async_stats()["messages_written"] == 1

    def test_stats_example(self, capsys: Any) -> None:
        """The page's monitoring snippet prints, and every key it reads exists."""
        stats = get_async_stats()
        print(f"Queue size: {stats['queue_size']}")
        print(f"Messages processed: {stats['messages_enqueued']}")
        print(f"Active workers: {stats['active_workers']}")

        assert PAGE_STATS_KEYS <= set(stats)
        assert "Queue size: 0" in capsys.readouterr().out


class TestShutdown:
    def test_graceful_shutdown_example(self, tmp_path: Path, capsys: Any) -> None:
        """The page's graceful_shutdown drains everything and prints its message."""
        logger = get_high_performance_logger("s", tmp_path / "s.log", max_queue_size=1000)
        for i in range(300):
            logger.info("r", i=i)

        def graceful_shutdown() -> None:
            """Gracefully shutdown the async logging backend."""
            try:
                shutdown_async_backend(timeout=10.0)
                print("Async logging shutdown complete")
            except Exception as e:
                print(f"Error during shutdown: {e}")

        graceful_shutdown()

        assert "Async logging shutdown complete" in capsys.readouterr().out
        assert 300 == len(read_json_lines(tmp_path / "s.log"))

    def test_atexit_registration(self, tmp_path: Path) -> None:
        """atexit.register(shutdown_async_backend) as on the page: nothing is lost at exit."""
        script = textwrap.dedent(
            f"""
            import atexit
            from kakashi.core.async_interface import (
                get_high_performance_logger, shutdown_async_backend,
            )
            atexit.register(shutdown_async_backend)
            logger = get_high_performance_logger("exit", {str(tmp_path / "exit.log")!r})
            for i in range(10_000):
                logger.info("r", i=i)
            """
        )
        subprocess.run([sys.executable, "-c", script], check=True, timeout=120)

        assert 10_000 == len(read_json_lines(tmp_path / "exit.log"))
