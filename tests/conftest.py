"""Shared fixtures: both implementations of the hot path, and a clean registry per test."""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from importlib import import_module
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import kakashi
from kakashi import _errors
from kakashi._switch import env_switch
from kakashi.core.async_backend import shutdown_all
from kakashi.logger import reset_registry

#: The kakashi_logs fixture (kakashi.testing), as users get it.
pytest_plugins = ["kakashi.testing"]

NO_EXTENSIONS = env_switch("KAKASHI_NO_EXTENSIONS")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--c-extensions",
        action=__import__("argparse").BooleanOptionalAction,
        default=True,
        help="also run the tests of the compiled twin (default: yes)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--c-extensions"):
        return
    skip = pytest.mark.skip(reason="--no-c-extensions given")
    for item in items:
        if "c_extension" in item.keywords:
            item.add_marker(skip)


@dataclasses.dataclass(frozen=True)
class Implementation:
    """One implementation of the hot path: the compiled twin or the pure-Python one."""

    pure: bool

    def __str__(self) -> str:
        return "py" if self.pure else "c"

    def module(self, name: str) -> ModuleType:
        return import_module(f"kakashi._speedups._{name}_{self}")

    @property
    def capture(self) -> ModuleType:
        return self.module("capture")

    @property
    def format(self) -> ModuleType:
        return self.module("format")

    @property
    def queue(self) -> ModuleType:
        return self.module("queue")

    def load(self) -> Implementation:
        """Import every module now (ImportError if this implementation is not built)."""
        for name in ("capture", "format", "queue", "bridge"):
            self.module(name)
        return self


def why_left(records: Any) -> str:
    """What the compiled planner without the GIL would find about the first of
    *records*, for the message of a failed count of records it planned: whether it is
    on, how the last batch was planned and why it left records (by reason), the record's
    exception, call site and arguments, and which of its keys (call fields, bound
    fields, context) the key cache does not hold."""
    fmt = import_module("kakashi._speedups._format_c")
    mode, left = fmt._left_in_last_batch()  # first: nothing below formats a batch
    on = fmt._use_fast_plan(True)
    fmt._use_fast_plan(on)
    last = f"last batch planned {mode}, left by reason {left}"
    if not records:
        return f"fast plan {on}; {last}; no records"
    record = records[0]
    keys = list(record.fields or ())  # (builds the record's dict: call it after the batch)
    bound = getattr(getattr(record, "bound", None), "fields", None) or {}
    context = record.context if isinstance(record.context, dict) else {}
    missing = [k for k in [*keys, *bound, *context] if not fmt._key_cached(k)]
    return (
        f"fast plan {on}; {last}; {type(record).__name__}: active_exc {record.active_exc!r}, "
        f"exc_info {record.exc_info!r}, source {record.source!r}, args {record.args!r}; "
        f"keys not in the key cache: {missing} of {[*keys, *bound, *context]}"
    )


def _implementation_params() -> list[Any]:
    return [
        pytest.param(Implementation(pure=True), id="py"),
        pytest.param(Implementation(pure=False), id="c", marks=pytest.mark.c_extension),
    ]


@pytest.fixture(params=_implementation_params(), name="impl")
def _impl(request: pytest.FixtureRequest) -> Implementation:
    """Each implementation of the hot path in turn (skips ``c`` where it is not built)."""
    implementation: Implementation = request.param
    if not implementation.pure:
        try:
            implementation.load()
        except ImportError:
            pytest.skip("the compiled extension is not built here")
    return implementation


@pytest.fixture
def compiled() -> Implementation:
    """The compiled implementation (the test is skipped where it is not built)."""
    try:
        return Implementation(pure=False).load()
    except ImportError:
        pytest.skip("the compiled extension is not built here")


@pytest.fixture
def pure() -> Implementation:
    """The pure-Python implementation."""
    return Implementation(pure=True)


class Collector:
    """A pipeline sink for the twin tests: keeps every record it is given."""

    def __init__(self) -> None:
        self.records: list[Any] = []
        self.emit = self.records.append


@pytest.fixture(autouse=True)
def _clean_state() -> Any:
    """Every test starts with no cached loggers, no context and no error counts."""
    reset_registry()
    token = kakashi.clear_context()
    _errors.reset()
    yield
    kakashi.reset_context(token)
    reset_registry()
    shutdown_all(timeout=5.0)
    # A thread the test let go at its end (a writer's flush or close it held) may still be
    # ending: waited for, bounded; one that never ends is still reported.
    # A thread an earlier test was already failed for is not counted again: one leak
    # fails one test, not (after 10 s each) every test after it.
    deadline = time.monotonic() + 10
    while (leftover := _kakashi_threads()) and time.monotonic() < deadline:
        time.sleep(0.01)
    _blamed.update(leftover)
    assert [thread.name for thread in leftover] == []


# The threads a test was failed for leaving behind (see _clean_state).
_blamed: set[threading.Thread] = set()


@pytest.fixture
def no_request_id_left() -> Any:
    """Fails the test if it leaves a request id bound in the test's own context (the
    web integrations unbind it when a request ends)."""
    yield
    assert "request_id" not in kakashi.get_context()


@pytest.fixture(scope="module")
def django_configured() -> None:
    """Django configured for the web integration tests (once per process; see
    ``tests/webapps.py``)."""
    from tests.webapps import configure_django

    configure_django()


def _kakashi_threads() -> list[threading.Thread]:
    return [
        thread
        for thread in threading.enumerate()
        if thread.name.startswith("kakashi-") and thread not in _blamed
    ]


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    """Parse a JSON-lines file, failing on any line that is not one JSON object."""
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"", "the file must end with a newline"
    return [json.loads(line) for line in lines[:-1]]


def wait_or_kill(pid: int, timeout: float = 60.0) -> int:
    """A forked child's wait status; a child still running after *timeout* is killed.

    Fork tests use it so that a deadlocked child fails its test instead of hanging the run.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    return os.waitpid(pid, 0)[1]


def script_report(script: str, *args: object, timeout: float = 120) -> dict[str, Any]:
    """Run *script* (dedented) in a new interpreter with *args*; return the JSON object it
    printed on its last line. Fails, with its stderr, if it exits with an error."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    report: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return report


def child_report(pid: int, read: int, write: int) -> tuple[int, Any]:
    """The parent's side of a fork test: close *write*, wait for the child (killed after
    a timeout, see :func:`wait_or_kill`), return its exit code and the JSON it wrote to
    the pipe (``{}`` when it wrote nothing)."""
    os.close(write)
    status = wait_or_kill(pid)
    with os.fdopen(read, "rb") as answer:
        report = json.loads(answer.read() or b"{}")
    return os.waitstatus_to_exitcode(status), report


class Keeper:
    """A writer that keeps every line (decoded JSON)."""

    concurrent = False

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def write(self, batch: Any) -> Any:
        self.lines.extend(json.loads(line) for line in batch)
        return None

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def keeping_pipeline(
    *writers: Any, enrichers: Any = (), formatter: Any = None, **options: Any
) -> Any:
    """An AsyncPipeline at DEBUG with *writers*, *enrichers* and *formatter* (the JSON one
    if ``None``), on a backend of its own built from the AsyncConfig *options*."""
    from kakashi.core.async_backend import AsyncConfig
    from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
    from kakashi.core.pipeline import PipelineConfig

    config = AsyncPipelineConfig(
        pipeline_config=PipelineConfig(
            min_level="DEBUG",
            writers=writers,
            enrichers=enrichers,
            **({} if formatter is None else {"formatter": formatter}),
        ),
        async_config=AsyncConfig(**options),
    )
    return AsyncPipeline(config)


def balanced(stats: dict[str, Any]) -> bool:
    """Whether the async backend's books add up (ARCHITECTURE: nothing lost uncounted)."""
    return bool(
        stats["messages_enqueued"]
        == stats["messages_written"]
        + stats["messages_filtered"]
        + stats["messages_dropped"]
        + stats["pending"]
    )


class Clock:
    """A settable clock for writers' ``clock=`` (seconds since the epoch)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def file_lines(directory: Path) -> dict[str, list[str]]:
    """Every log file's lines in *directory* (plain, zstd or gzip), by name; lock files
    left out."""
    from kakashi.writers import read_lines

    return {
        file.name: [line.decode() for line in read_lines(file)]
        for file in sorted(directory.iterdir())
        if file.is_file() and not file.name.endswith(".lock")
    }


class _CollectorHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # answers go out at once, not after a delayed ACK

    def do_POST(self) -> None:
        server: Any = self.server
        with server.lock:
            server.sockets.add(self.connection)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        arrived = time.monotonic()
        with server.lock:
            server.connections.add(self.client_address)
            answer = server.answers.pop(0) if server.answers else None
        if callable(answer):
            answer = answer(self.path, dict(self.headers), body)
        status, headers, content, delay = (*(answer or (200, {}, b"{}")), 0.0)[:4]
        if delay == "never":
            with server.lock:
                server.unanswered.append((self.path, dict(self.headers), body))
            server.hung.wait()  # accept the request and never answer
            return
        if delay:
            time.sleep(delay)
        with server.lock:
            server.received.append((self.path, dict(self.headers), body, status))
            server.received_at.append(arrived)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, *args: Any) -> None:
        pass


class HttpCollector(http.server.ThreadingHTTPServer):
    """A local HTTP server for writer tests (the ``collector`` fixture).

    ``answers`` is a list consumed one per request: ``(status, headers, body)``, or
    ``(status, headers, body, delay)`` with *delay* seconds before answering or
    ``"never"`` (the request is read and never answered), or a callable given
    ``(path, headers, body)`` returning such a tuple. With none left, 200 ``{}``.
    ``received`` holds ``(path, headers, body, status)`` of every answered request and
    ``received_at`` when each arrived (``time.monotonic()``); ``unanswered`` holds
    ``(path, headers, body)`` of the requests never answered.
    *port* 0 takes a free one; another (a collector coming back) is bound as given.
    """

    daemon_threads = True

    def __init__(self, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _CollectorHandler)
        self.lock = threading.Lock()
        self.answers: list[Any] = []
        self.received: list[tuple[str, dict[str, str], bytes, int]] = []
        self.received_at: list[float] = []
        self.unanswered: list[tuple[str, dict[str, str], bytes]] = []
        self.connections: set[Any] = set()
        self.sockets: set[Any] = set()
        self.hung = threading.Event()

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self.server_address[1])

    def start(self) -> HttpCollector:
        """Serve on a daemon thread; return self."""
        thread = threading.Thread(target=self.serve_forever, name="test-collector", daemon=True)
        thread.start()
        return self

    def kill(self) -> None:
        """Die as a collector process does: stop listening and cut every open connection
        (kept-alive ones too), leaving requests that hang unanswered."""
        self.hung.set()
        self.shutdown()
        self.server_close()
        with self.lock:
            sockets, self.sockets = list(self.sockets), set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def collector() -> Any:
    """A running :class:`HttpCollector` on a loopback port, stopped after the test."""
    server = HttpCollector().start()
    yield server
    server.kill()


# -- a real ClickHouse server (Debian's clickhouse-server, 18.16) ----------------------------

_CLICKHOUSE_CONFIG = """<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>{root}/server.log</log>
        <errorlog>{root}/server.err.log</errorlog>
        <console>0</console>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>{http_port}</http_port>
    <tcp_port>{tcp_port}</tcp_port>
    <path>{root}/data/</path>
    <tmp_path>{root}/tmp/</tmp_path>
    <user_files_path>{root}/user_files/</user_files_path>
    <format_schema_path>{root}/format_schemas/</format_schema_path>
    <users_config>{root}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mark_cache_size>268435456</mark_cache_size>
</yandex>
"""

_CLICKHOUSE_USERS = """<?xml version="1.0"?>
<yandex>
    <profiles><default></default></profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
        <writer>
            <password>s3cret</password>
            <networks><ip>127.0.0.1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </writer>
    </users>
    <quotas><default></default></quotas>
</yandex>
"""


def free_ports(count: int, kind: socket.SocketKind = socket.SOCK_STREAM) -> list[int]:
    """*count* distinct loopback ports of *kind* that were free a moment ago (the probes are
    held open together, so the kernel cannot hand the same port out twice)."""
    probes = [socket.socket(socket.AF_INET, kind) for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]
    finally:
        for probe in probes:
            probe.close()


class HeldPort:
    """A loopback TCP port held for the life of this object: bound, with ``SO_REUSEADDR``,
    and never listening. Connections to it are refused, as to a collector that is down,
    and no other process can take it meanwhile (a probe closed right after ``bind`` hands
    the port back, and another suite on the machine may get it before the test uses it).
    A server of the test started on the port (:class:`HttpCollector` binds with
    ``SO_REUSEADDR``) shares the bind and gets the connections; killed, it can be bound
    again, since the hold never let the port go. A context manager; ``close()`` frees it."""

    def __init__(self) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))  # before SO_REUSEADDR: a port no one shares
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.port = int(self._socket.getsockname()[1])

    def close(self) -> None:
        """Let the port go."""
        self._socket.close()

    def __enter__(self) -> HeldPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def held_port() -> Any:
    """A :class:`HeldPort` for the test, let go after it."""
    with HeldPort() as held:
        yield held


@functools.cache
def _refusing_hold() -> HeldPort:
    held = HeldPort()  # cached: the hold lives as long as the test run
    atexit.register(held.close)
    return held


def refusing_port() -> int:
    """One loopback port, held for the whole test run, where every connection is refused
    (nothing ever listens on it): the address of a collector that is down."""
    return _refusing_hold().port


class _PortTaken(RuntimeError):
    """clickhouse-server could not bind a port that was free when it was chosen."""


class ClickHouseServer:
    """A clickhouse-server on loopback ports, with its data, logs and configuration in
    *root* (written here: nothing system-wide is read or touched). It runs fine as root.
    ``stop(restart=True)`` and ``start()`` again keep the ports and the data (a restart).
    Its ports are held (:class:`HeldPort`: clickhouse-server binds with ``SO_REUSEADDR``
    beside the hold) from the moment they are chosen until ``stop()``, so no other
    process takes them between the choice and the start, or while a restart is down."""

    def __init__(self, root: Path, binary: str = "clickhouse-server") -> None:
        self.root = root
        self.binary = binary
        root.mkdir(parents=True, exist_ok=True)
        (root / "users.xml").write_text(_CLICKHOUSE_USERS)
        self._holds: list[HeldPort] = []
        self._choose_ports()
        self.process: subprocess.Popen[bytes] | None = None
        self._started = False

    def _choose_ports(self) -> None:
        self._release_ports()
        self._holds = [HeldPort(), HeldPort()]
        self.http_port, tcp_port = (held.port for held in self._holds)
        config = _CLICKHOUSE_CONFIG.format(
            root=self.root, http_port=self.http_port, tcp_port=tcp_port
        )
        (self.root / "config.xml").write_text(config)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<http port>``."""
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait (bounded) until ``/ping`` answers ``Ok.``.

        The ports are held, but a process binding with ``SO_REUSEADDR`` can still listen on
        one first (the machine runs other suites): on a first start that fails with
        "Address already in use" the server gets fresh ports and tries again, up to five
        times. A restart keeps its ports, as clients already point at them."""
        for _ in range(4 if not self._started else 0):
            try:
                self._start_once(timeout)
            except _PortTaken:
                self._choose_ports()
                continue
            return
        self._start_once(timeout)

    def _start_once(self, timeout: float) -> None:
        log_size = self._err_log_size()
        with open(self.root / "stdout.log", "ab") as out:
            self.process = subprocess.Popen(
                [self.binary, f"--config-file={self.root / 'config.xml'}"],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.root,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                if "Address already in use" in self._err_log_since(log_size):
                    raise _PortTaken(self.log_tail())
                raise RuntimeError(f"clickhouse-server exited: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=1) as answer:
                    if answer.read() == b"Ok.\n":
                        self._started = True
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"clickhouse-server not ready after {timeout}s: {self.log_tail()}")

    def stop(self, restart: bool = False) -> None:
        """Kill the server (SIGKILL: a crash, and quick; a SIGTERM makes 18.16 wait 10 s
        for its connections) and wait for it. What it acknowledged is already on disk.
        The ports are let go, unless *restart* (they stay held for the next start)."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        if not restart:
            self._release_ports()

    def _release_ports(self) -> None:
        for held in self._holds:
            held.close()
        self._holds = []

    def query(self, sql: str) -> str:
        """Run *sql* over HTTP; the answer's text (``RuntimeError`` with the server's
        message when it refuses)."""
        request = urllib.request.Request(f"{self.url}/", data=sql.encode())
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return str(answer.read().decode())
        except urllib.error.HTTPError as error:
            raise RuntimeError(error.read().decode()) from None

    def rows(self, sql: str) -> list[dict[str, Any]]:
        """The rows of a SELECT, as dicts (``FORMAT JSONEachRow`` is added)."""
        text = self.query(f"{sql} FORMAT JSONEachRow")
        return [json.loads(line) for line in text.splitlines() if line]

    def _err_log_size(self) -> int:
        try:
            return (self.root / "server.err.log").stat().st_size
        except FileNotFoundError:
            return 0

    def _err_log_since(self, offset: int) -> str:
        try:
            with open(self.root / "server.err.log", "rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self) -> str:
        """The end of the server's own logs, for error messages."""
        parts = []
        for name in ("stdout.log", "server.err.log"):
            path = self.root / name
            if path.exists():
                parts.append(path.read_text(errors="replace")[-2000:])
        return "\n".join(parts)


@pytest.fixture(scope="session")
def clickhouse(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One real ClickHouse server for the test session (it takes about a second to
    start); tests make tables of their own. Skipped only when the binary is absent
    (``apt-get install clickhouse-server``; CI installs it)."""
    binary = shutil.which("clickhouse-server")
    if binary is None:
        pytest.skip("clickhouse-server is not installed (Debian package clickhouse-server)")
    server = ClickHouseServer(tmp_path_factory.mktemp("clickhouse"), binary)
    server.start()
    try:
        yield server
    finally:
        server.stop()


#: Field values of every JSON type, for the OTLP mapping's tests (test_otel, test_stores).
OTLP_FIELD_VALUES: dict[str, Any] = {
    "text": "café ☕",
    "empty": "",
    "count": 3,
    "zero": 0,
    "negative": -(2**63),
    "ratio": 0.25,
    "flag": False,
    "nothing": None,
    "items": [1, "two", 3.5, None, [True]],
    "nested": {"a": {"b": [1.5, {"c": "d"}]}, "e": {}},
    "no_items": [],
}


def without_observed_time(document: dict[str, Any]) -> dict[str, Any]:
    """*document* with each record's ``observedTimeUnixNano`` removed, after checking it
    is a decimal string: the one value that must differ (when each side saw the record)."""
    for resource in document["resourceLogs"]:
        for scope in resource["scopeLogs"]:
            for record in scope["logRecords"]:
                observed = record.pop("observedTimeUnixNano")
                assert isinstance(observed, str) and observed.isdigit(), observed
    return document


def patch_os_write(monkeypatch: pytest.MonkeyPatch, fake: Any) -> None:
    """Make *fake* every ``write`` system call the file writers make: ``os.write``, and
    the compiled build's entries to ``write(2)`` (a batch's write, which pauses the
    worker's claim on the GIL; a record's, which keeps the GIL on a local filesystem)."""
    from kakashi.writers import file as file_module

    monkeypatch.setattr(os, "write", fake)
    monkeypatch.setattr(file_module, "write_releasing_gil", fake)
    monkeypatch.setattr(file_module, "write_holding_gil", fake)
