"""A review of the shipping work (#14): each guarantee attacked the way production
breaks it. Every test counts records logged, delivered (what the server stored),
dropped (get_async_stats, by reason) and still spooled, and asserts they add up."""

from __future__ import annotations

import contextlib
import gzip
import http.server
import json
import os
import random
import ssl
import subprocess
import threading
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("urllib3")

import kakashi
from kakashi.core.async_backend import configure_async_backend
from kakashi.core.async_interface import get_async_stats, get_network_logger
from kakashi.writers import batched
from kakashi.writers.delivery import DeliveryError
from kakashi.writers.http import HttpWriter
from kakashi.writers.spool import SpoolingWriter, SpoolInUseError
from tests.conftest import HeldPort, HttpCollector, balanced, wait_or_kill
from tests.conftest import keeping_pipeline as pipeline


def stored(*collectors: HttpCollector) -> list[int]:
    """The ``i`` of every record the collectors answered 2xx for, in arrival order
    (drop notices left out), duplicates included."""
    ids = []
    for collector in collectors:
        with collector.lock:
            received = list(collector.received)
        for _path, headers, body, status in received:
            if headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if 200 <= status < 300:
                ids.extend(item["i"] for item in map(json.loads, body.splitlines()) if "i" in item)
    return ids


def writer_stats(stats: dict[str, Any], writer: object) -> dict[str, Any]:
    """The per-writer figures of *writer* in *stats*."""
    (entry,) = [entry for entry in stats["writers"] if entry["writer"] == repr(writer)]
    return entry


def books_balance(stats: dict[str, Any]) -> bool:
    """The totals add up, and the write errors by reason add up to ``write_error``."""
    return (
        balanced(stats)
        and sum(stats["write_error_by_reason"].values())
        == (stats["dropped_by_reason"]["write_error"])
    )


def wait_for(condition: Any, limit: float = 30.0, what: str = "condition") -> None:
    """Poll *condition* until true; fail after *limit* seconds (a hang, not a timing)."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.01)


# -- TLS that does not verify ------------------------------------------------------------


class HttpsCollector(HttpCollector):
    """:class:`HttpCollector` over TLS with *cert*; counts the handshakes tried."""

    def __init__(self, cert: Path, key: Path) -> None:
        super().__init__()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert), str(key))
        self.tls = context
        self.handshakes = 0
        self.cut = 0  # connections to close before their handshake (a restarting server)

    def get_request(self) -> tuple[Any, Any]:
        sock, address = self.socket.accept()
        with self.lock:
            self.handshakes += 1
            cut, self.cut = self.cut > 0, max(0, self.cut - 1)
        if cut:
            sock.close()
            raise OSError("cut before the handshake")  # socketserver skips this one
        sock.settimeout(10)
        return self.tls.wrap_socket(sock, server_side=True), address

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made by the openssl CLI."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def https_collector(self_signed: tuple[Path, Path]) -> Iterator[HttpsCollector]:
    """A running HTTPS collector with the self-signed certificate."""
    server = HttpsCollector(*self_signed).start()
    yield server
    server.kill()


def test_tls_that_does_not_verify_is_refused_counted_reported_once_never_retried(
    https_collector: HttpsCollector, capfd: pytest.CaptureFixture[str]
) -> None:
    """A self-signed collector with the default ``verify``: every record is refused,
    counted under ``tls`` at once (no retry: one handshake per batch), the failure
    reported once on stderr; nothing reaches the server."""
    writer = HttpWriter(f"{https_collector.url}/logs", timeout=5, error_retry_delay=0.01)
    pipe = pipeline(writer, batch_size=2)
    log = pipe.get_logger("t")
    for i in range(6):
        log.info("r", i=i)
        assert pipe.flush(30).complete
    stats = pipe.stats()
    assert [] == stored(https_collector)
    assert (6, 0) == (stats["messages_dropped"], stats["pending"])
    assert {"tls": 6} == stats["write_error_by_reason"]
    # Counted in lines by the writer: the 6 records and the 5 drop notices before them.
    assert {"tls": 11} == writer_stats(stats, writer)["dropped_by_reason"]
    assert 6 == https_collector.handshakes  # one per batch: never retried
    reports = [line for line in capfd.readouterr().err.splitlines() if "tls" in line]
    assert 1 == len(reports), reports
    assert "CERTIFICATE_VERIFY_FAILED" in reports[0]
    assert books_balance(stats)


def test_tls_with_the_collectors_ca_delivers(
    https_collector: HttpsCollector, self_signed: tuple[Path, Path]
) -> None:
    """With ``ca_certs=`` the certificate's CA, the same collector gets every record."""
    writer = HttpWriter(f"{https_collector.url}/logs", timeout=5, ca_certs=str(self_signed[0]))
    pipe = pipeline(writer, batch_size=3)
    log = pipe.get_logger("t")
    for i in range(9):
        log.info("r", i=i)
    assert pipe.flush(30).complete
    stats = pipe.stats()
    assert list(range(9)) == stored(https_collector)
    assert (0, 9) == (stats["messages_dropped"], stats["messages_written"])


def test_a_tls_connection_cut_during_the_handshake_is_retried(
    https_collector: HttpsCollector, self_signed: tuple[Path, Path]
) -> None:
    """A TLS collector (or the balancer in front of it) that closes connections during
    the handshake while it restarts: a transient failure, retried like a connection
    cut, not a certificate refused (it was counted ``tls`` and dropped at once)."""
    https_collector.cut = 2
    writer = HttpWriter(
        f"{https_collector.url}/logs",
        timeout=5,
        ca_certs=str(self_signed[0]),
        error_retry_delay=0.01,
    )
    pipe = pipeline(writer, batch_size=3)
    log = pipe.get_logger("t")
    for i in range(3):
        log.info("r", i=i)
    assert pipe.flush(30).complete
    stats = pipe.stats()
    assert [0, 1, 2] == stored(https_collector)
    assert (0, 3) == (stats["messages_dropped"], stats["messages_written"])
    assert 3 == https_collector.handshakes


# -- a flapping collector -----------------------------------------------------------------


class _AckHandler(http.server.BaseHTTPRequestHandler):
    """Stores each request, then answers 200; notes the requests whose answer could not
    be sent (the connection cut in between: the client cannot know they were stored)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        server: Any = self.server
        with server.lock:
            server.sockets.add(self.connection)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with server.lock:
            server.received.append((self.path, dict(self.headers), body, 200))
        try:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")
            self.wfile.flush()
        except OSError:
            with server.lock:
                server.unacked.append(body)
            self.close_connection = True

    def log_message(self, *args: Any) -> None:
        pass


class Flapping:
    """A collector on one port that is up, then down, every *period* seconds. The port
    is held from start to :meth:`kill`, so no other process takes it while it is down."""

    def __init__(self, period: float = 0.1) -> None:
        self.period = period
        self.held = HeldPort()
        self.port = self.held.port
        self.servers: list[HttpCollector] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._flap, name="test-flapping", daemon=True)

    def _flap(self) -> None:
        while not self.stop.is_set():
            server = self._up()
            self.stop.wait(self.period)
            server.kill()
            self.stop.wait(self.period)
        self._up()  # and up for good

    def _up(self) -> HttpCollector:
        server = HttpCollector(self.port)
        server.RequestHandlerClass = _AckHandler
        server.unacked = []  # type: ignore[attr-defined]
        threading.Thread(
            target=server.serve_forever, args=(0.01,), name="test-collector", daemon=True
        ).start()
        self.servers.append(server)
        return server

    def __enter__(self) -> Flapping:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)  # up for good from here

    def kill(self) -> None:
        """Stop every server it started, and let the port go."""
        for server in self.servers:
            with contextlib.suppress(Exception):
                server.kill()
        self.held.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.mark.parametrize("spooled", [False, True], ids=["memory", "spool"])
def test_counts_add_up_under_a_flapping_collector(spooled: bool, tmp_path: Path) -> None:
    """The collector goes up and down every 100 ms for 5 s while records are logged:
    logged == delivered (distinct) + dropped (by reason) + still spooled, after which the
    spool drains; a record is stored at most ``1 + max_error_retries`` times (only a
    request whose answer was lost is sent again)."""
    flapping = Flapping(0.1)
    inner = HttpWriter(
        f"{flapping.url}/logs",
        compression=None,
        timeout=2,
        connect_timeout=1,
        error_retry_delay=0.01,
        max_delay=0.05,
    )
    writer: Any = inner
    if spooled:
        writer = SpoolingWriter(inner, tmp_path / "spool", retry_delay=0.01, max_delay=0.05)
    pipe = pipeline(writer, batch_size=20, overflow_strategy="drop_newest")
    log = pipe.get_logger("t")
    logged = 0
    with flapping:
        end = time.monotonic() + 5.0
        while time.monotonic() < end:
            for _ in range(20):
                log.info("r", i=logged)
                logged += 1
            time.sleep(0.005)
    try:
        check_flapping_books(pipe, writer, flapping, logged, spooled)
    finally:
        pipe.shutdown(10)
        flapping.kill()


def check_flapping_books(
    pipe: Any, writer: Any, flapping: Flapping, logged: int, spooled: bool
) -> None:
    """The books of :func:`test_counts_add_up_under_a_flapping_collector`.

    A record whose request the collector stored but whose answer was cut off is, for
    the sender, not delivered: retried, and counted dropped if its retries fail. So
    ``dropped`` may exceed the records never stored by at most the records stored
    without an answer, and never fall short of them (nothing lost uncounted)."""
    assert pipe.flush(60).complete
    stats = pipe.stats()
    dropped = stats["messages_dropped"]
    assert 0 == stats["pending"]
    assert books_balance(stats)
    if spooled:
        figures = writer.delivery_stats()
        held = figures["spool_records"]
        assert figures["spooled"] + figures["recovered"] == (
            figures["replayed"] + figures["spool_dropped"] + held
        )
        assert figures["spooled"] <= stats["messages_written"]
        wait_for(lambda: writer.delivery_stats()["spool_records"] == 0, 60, "spool drained")
        dropped += writer.delivery_stats()["spool_dropped"]
    else:
        assert set(stats["write_error_by_reason"]) <= {
            "connect",
            "connection",
            "timeout",
            "circuit_open",
            "backlog_full",
        }
    delivered = stored(*flapping.servers)
    unanswered = set()
    for server in flapping.servers:
        for body in server.unacked:  # type: ignore[attr-defined]
            unanswered.update(
                item["i"] for item in map(json.loads, body.splitlines()) if "i" in item
            )
    never_stored = logged - len(set(delivered))
    assert never_stored <= dropped, "records lost uncounted"
    assert dropped - never_stored <= len(unanswered), "records counted dropped yet answered"
    copies = max(map(delivered.count, set(delivered)), default=1)
    if not spooled:  # the spool replays a batch whose answer was lost until one arrives
        assert copies <= 1 + 3, "a record stored more often than its retries allow"


# -- flush(timeout) with a lane stuck in a hung POST ------------------------------------


def test_flush_returns_within_its_timeout_while_a_post_hangs(collector: HttpCollector) -> None:
    """A collector that accepts the POST and never answers (the writer's timeout is far
    longer): ``flush(0.3)`` returns while the request still hangs, says incomplete, and
    its ``pending`` is the records really not delivered; later ones are not lost."""
    collector.answers = [(200, {}, b"", "never")]
    writer = HttpWriter(f"{collector.url}/logs", compression=None, timeout=120)
    pipe = pipeline(writer, batch_size=5)
    log = pipe.get_logger("t")
    for i in range(5):
        log.info("r", i=i)
    wait_for(lambda: collector.unanswered, what="the hung request")
    for i in range(5, 8):
        log.info("r", i=i)
    result = pipe.flush(0.3)
    assert collector.unanswered and not collector.hung.is_set()  # it still hangs
    assert (False, 8) == (result.complete, result.pending)
    stats = pipe.stats()
    assert (8, 0, 0) == (stats["pending"], stats["messages_written"], stats["messages_dropped"])
    assert books_balance(stats)
    collector.kill()  # the hung request is cut: retried, then refused (counted)
    result = pipe.flush(60)
    stats = pipe.stats()
    assert result.complete and 0 == stats["pending"]
    assert 8 == stats["messages_dropped"] + len(set(stored(collector)))
    assert books_balance(stats)


def test_a_flush_out_of_time_in_a_writers_flush_reports_the_records_pending() -> None:
    """Every record is written, but the writer's own ``flush`` outlasts the timeout (a
    spool waiting for a replay that hangs): the result is not complete, and ``pending``
    counts records (none), not the writers that hang (it said 1)."""
    gate = threading.Event()

    class SlowFlush(Raising):
        def flush(self) -> None:
            gate.wait(30)

    writer = SlowFlush()
    pipe = pipeline(writer, batch_size=3)
    log = pipe.get_logger("t")
    for i in range(3):
        log.info("r", i=i)
    try:
        result = pipe.flush(0.3)
        stats = pipe.stats()
        assert [0, 1, 2] == writer.kept
        assert (False, 0, 0) == (result.complete, result.pending, stats["pending"])
    finally:
        gate.set()


# -- shutdown with the collector down and a spool ---------------------------------------


def test_shutdown_with_the_collector_down_spools_and_a_restart_replays(
    tmp_path: Path, held_port: HeldPort
) -> None:
    """The collector is down for the whole run: a shutdown leaves every record in the
    spool (none dropped); a new writer on the directory, with the collector up, delivers
    each exactly once, in order."""
    port = held_port.port
    url = f"http://127.0.0.1:{port}/logs"
    writer = SpoolingWriter(
        HttpWriter(url, compression=None, timeout=2), tmp_path / "spool", retry_delay=30
    )
    pipe = pipeline(writer, batch_size=7)
    log = pipe.get_logger("t")
    for i in range(50):
        log.info("r", i=i)
    result = pipe.shutdown(10)
    stats = pipe.stats()
    figures = writer_stats(stats, writer)["delivery"]
    assert result.complete
    assert (0, 50) == (stats["messages_dropped"], stats["messages_written"])
    assert (50, 50, 0) == (figures["spooled"], figures["spool_records"], figures["spool_dropped"])
    collector = HttpCollector(port).start()
    try:
        again = SpoolingWriter(
            HttpWriter(url, compression=None, timeout=5), tmp_path / "spool", flush_timeout=30
        )
        assert 50 == again.recovered
        again.flush()
        assert list(range(50)) == stored(collector)
        again.close()
    finally:
        collector.kill()


def test_shutdown_while_a_post_hangs_spools_the_rest_and_reports_the_batch_pending(
    collector: HttpCollector, tmp_path: Path
) -> None:
    """The collector accepts a POST and never answers; the shutdown's deadline comes
    first. The records waiting behind that batch are spooled (not dropped); the batch
    inside the write is reported pending, as documented; a restart delivers what was
    spooled."""
    collector.answers = [(200, {}, b"", "never")] * 3
    writer = SpoolingWriter(
        HttpWriter(f"{collector.url}/logs", compression=None, timeout=60),
        tmp_path / "spool",
        retry_delay=30,
        flush_timeout=0.1,
    )
    pipe = pipeline(writer, batch_size=5)
    log = pipe.get_logger("t")
    for i in range(5):
        log.info("r", i=i)
    wait_for(lambda: collector.unanswered, what="the hung request")
    for i in range(5, 9):
        log.info("r", i=i)
    try:
        result = pipe.shutdown(0.5)
        stats = pipe.stats()
        entry = writer_stats(stats, writer)
        assert (False, 5) == (result.complete, result.pending)
        assert (0, 4) == (stats["messages_dropped"], entry["spooled_at_shutdown"])
        assert books_balance(stats)
        collector.answers.clear()
        again = reopen(tmp_path / "spool", f"{collector.url}/logs")
        again.flush()
        assert [5, 6, 7, 8] == stored(collector)
        again.close()
    finally:
        # The hung request fails: the old lane's thread ends (also when an assertion
        # failed, or every later test's teardown would find it left over).
        collector.kill()
        wait_for(lambda: not any(t.name == "kakashi-lane" for t in threading.enumerate()))


def reopen(directory: Path, url: str) -> SpoolingWriter:
    """A new writer on *directory*, once the old one's close (left running by a
    shutdown out of time) released it."""
    deadline = time.monotonic() + 30
    while True:
        try:
            inner = HttpWriter(url, compression=None, timeout=5)
            return SpoolingWriter(inner, directory, flush_timeout=30)
        except SpoolInUseError:
            assert time.monotonic() < deadline, "the old writer never released its spool"
            time.sleep(0.05)


# -- fork while a lane is mid-retry ------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_fork_while_a_lane_retries(collector: HttpCollector, seed: int) -> None:
    """The collector answers 503 to the first requests with the parent's records, so the
    lane is retrying when the process forks at a random moment: the child logs and
    delivers its own records, none of the parent's; the parent's are each stored once."""
    rng = random.Random(seed)
    busy = [6]

    def answer(path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict, bytes]:
        if b'"parent"' in body and busy[0]:
            busy[0] -= 1
            return (503, {}, b"busy")
        return (200, {}, b"{}")

    collector.answers = [answer] * 100
    writer = HttpWriter(
        f"{collector.url}/logs", compression=None, timeout=10, error_retry_delay=0.02
    )
    pipe = pipeline(writer, batch_size=4)
    log = pipe.get_logger("t")
    for i in range(12):
        log.info("parent", i=i)
    time.sleep(rng.uniform(0.0, 0.1))
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for i in range(1000, 1010):
                log.info("child", i=i)
            code = 0 if pipe.flush(30).complete else 2
        finally:
            os._exit(code)
    status = wait_or_kill(pid)
    assert 0 == os.waitstatus_to_exitcode(status)
    assert pipe.flush(60).complete
    ids = stored(collector)
    child = [i for i in ids if i >= 1000]
    parent = [i for i in ids if i < 1000]
    assert list(range(1000, 1010)) == child
    stats = pipe.stats()
    assert 12 == len(parent) + stats["messages_dropped"]
    assert len(parent) == len(set(parent)), "a parent's record was delivered twice"
    assert books_balance(stats)


# -- writers that raise what they should not --------------------------------------------


class Raising:
    """A concurrent writer that raises ``errors.pop(0)`` while any are left, keeping
    what it was given otherwise."""

    concurrent = True
    error_retry_delay = 0.0
    max_delay = 0.0

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.kept: list[int] = []

    def write(self, batch: Sequence[bytes]) -> None:
        if self.errors:
            raise self.errors.pop(0)
        self.kept.extend(json.loads(line)["i"] for line in batch if b'"i"' in line)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def _poked(error: DeliveryError, **changes: Any) -> DeliveryError:
    for name, value in changes.items():
        setattr(error, name, value)
    return error


@pytest.mark.parametrize(
    "error",
    [
        SystemExit(3),
        KeyboardInterrupt(),
        GeneratorExit(),
        DeliveryError("odd", retry=[7, 99], dropped={50: "x"}),
        DeliveryError("empty"),
        _poked(DeliveryError("bad", retry=[0]), retry=("zero",)),
        _poked(DeliveryError("bad"), dropped=[1, 2]),
        _poked(DeliveryError("neg"), retry=(-1,)),
        _poked(DeliveryError("neg"), dropped={-2: "x"}),
    ],
    ids=[
        "SystemExit",
        "KeyboardInterrupt",
        "GeneratorExit",
        "out-of-range",
        "empty",
        "retry-not-ints",
        "dropped-not-a-mapping",
        "negative-retry",
        "negative-dropped",
    ],
)
@pytest.mark.parametrize("concurrent", [True, False], ids=["lane", "turn"])
def test_a_writer_raising_nonsense_loses_nothing_uncounted(
    error: BaseException, concurrent: bool
) -> None:
    """Whatever a writer raises, once: the worker and the lane survive, every record is
    delivered or counted, and later batches are delivered."""
    writer = Raising(error)
    writer.concurrent = concurrent
    pipe = pipeline(writer, batch_size=3)
    log = pipe.get_logger("t")
    for i in range(3):
        log.info("r", i=i)
    assert pipe.flush(30).complete
    for i in range(3, 6):
        log.info("r", i=i)
    assert pipe.flush(30).complete
    stats = pipe.stats()
    assert [3, 4, 5] == writer.kept[-3:]
    assert 6 == len(writer.kept) + stats["messages_dropped"]
    assert len(writer.kept) == len(set(writer.kept))
    assert (0, 1) == (stats["pending"], stats["active_workers"])
    assert books_balance(stats)


def test_a_delivery_error_naming_records_outside_the_batch_counts_the_rest_delivered() -> None:
    """``retry=[0, 99]`` on a batch of 3: record 0 is retried, 1 and 2 are delivered (as
    the contract says), 99 is ignored; nothing is counted twice."""
    writer = Raising(DeliveryError("x", retry=[0, 99]))
    pipe = pipeline(writer, batch_size=3)
    log = pipe.get_logger("t")
    for i in range(3):
        log.info("r", i=i)
    assert pipe.flush(30).complete
    stats = pipe.stats()
    assert ([0], 3, 0) == (writer.kept, stats["messages_written"], stats["messages_dropped"])
    assert 3 == writer_stats(stats, writer)["records"]


# -- get_network_logger with a batched send that half works ----------------------------


def test_a_batched_send_that_returns_for_some_batches_and_raises_for_others() -> None:
    """A bulk client that takes some batches, raises a plain error for a batch holding a
    poison message (retried, then counted), and a DeliveryError naming single items for
    others: every message is sent once or counted, and ``sent`` is true."""
    taken: list[int] = []

    @batched
    def ship(messages: list[str]) -> str:
        items = [json.loads(m) for m in messages]
        ids = [item.get("i") for item in items]
        if any(item.get("poison") for item in items):
            raise RuntimeError("the bulk call failed")
        odd = {k: "odd" for k, i in enumerate(ids) if isinstance(i, int) and i % 7 == 3}
        taken.extend(i for k, i in enumerate(ids) if k not in odd and isinstance(i, int))
        if odd:
            raise DeliveryError("odd", dropped=odd)
        return "ok: a return value is not a count"

    configure_async_backend(batch_size=5)
    log = get_network_logger("half", ship, max_error_retries=1, error_retry_delay=0.0)
    for i in range(40):
        log.info("r", i=i, poison=(i == 21))
        if i % 5 == 4:
            assert kakashi.flush(30).complete
    stats = get_async_stats()
    (entry,) = stats["writers"]
    poisoned = {20, 21, 22, 23, 24}
    odd = {i for i in range(40) if i % 7 == 3} - poisoned
    assert sorted(set(range(40)) - poisoned - odd) == sorted(taken)
    assert len(taken) == len(set(taken))
    assert {"odd": len(odd), "write_error": 5} == stats["write_error_by_reason"]
    assert 40 == len(taken) + stats["messages_dropped"]
    assert books_balance(stats)
    assert entry["records"] >= len(taken)  # lines: drop notices too


def test_a_batched_send_naming_items_out_of_range_keeps_sent_true() -> None:
    """A bulk client's DeliveryError naming only indices beyond the list names no
    message: the batch is retried whole, and ``sent`` stays 0 (it went negative)."""
    from kakashi.writers import SendWriter

    @batched
    def ship(messages: list[str]) -> None:
        raise DeliveryError("odd", dropped={5: "x", 6: "x", 7: "x"})

    writer = SendWriter(ship)
    with pytest.raises(DeliveryError):
        writer.write([b"{}"])
    assert 0 == writer.sent


@pytest.mark.parametrize("error", [SystemExit(1), KeyboardInterrupt()], ids=["exit", "interrupt"])
def test_a_per_message_send_raising_base_exceptions_resends_nothing(error: BaseException) -> None:
    """``send(message)`` raises SystemExit (a library calling ``sys.exit``) on the third
    message: the two before it were sent and are not sent again; the rest are retried."""
    sent: list[int] = []
    raised = [error]

    def ship(message: str) -> None:
        item = json.loads(message)
        if item.get("i") == 2 and raised:
            raise raised.pop()
        if "i" in item:
            sent.append(item["i"])

    configure_async_backend(batch_size=5)
    log = get_network_logger("base", ship, error_retry_delay=0.0)
    for i in range(5):
        log.info("r", i=i)
    assert kakashi.flush(30).complete
    stats = get_async_stats()
    assert ([0, 1, 2, 3, 4], 0) == (sent, stats["messages_dropped"])
    assert books_balance(stats)


class Refusing:
    """An inner writer whose ``write`` raises ``errors.pop(0)`` while any are left and
    keeps the lines otherwise."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.kept: list[bytes] = []

    def write(self, batch: Sequence[bytes]) -> None:
        if self.errors:
            raise self.errors.pop(0)
        self.kept.extend(batch)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    "error",
    [DeliveryError("vague"), DeliveryError("odd", retry=[9], dropped={12: "x"})],
    ids=["names-nothing", "out-of-range"],
)
def test_a_spool_never_counts_delivered_what_a_vague_delivery_error_failed(
    error: DeliveryError, tmp_path: Path
) -> None:
    """A DeliveryError naming no record of the batch (straight through, then while
    replaying) means the batch failed: spooled and replayed, not counted delivered."""
    inner = Refusing(error, error)
    writer = SpoolingWriter(inner, tmp_path / "spool", retry_delay=0.01, flush_timeout=30)
    try:
        assert writer.write([b"a", b"b"]) is None
        figures = writer.delivery_stats()
        assert (0, 2, 2) == (figures["delivered"], figures["spooled"], figures["spool_records"])
        writer.flush()  # the first replay fails the same way (a flush stops waiting there)
        writer.flush()  # the next delivers
        figures = writer.delivery_stats()
        assert [b"a", b"b"] == inner.kept
        assert (2, 0, 0) == (
            figures["replayed"],
            figures["spool_dropped"],
            figures["spool_records"],
        )
    finally:
        writer.close()


# -- memory while the collector is dead for long -----------------------------------------


def test_a_dead_collector_for_long_keeps_memory_bounded(collector: HttpCollector) -> None:
    """A collector that never answers (long timeout) holds the lane on one request while
    ten times ``max_queue_size`` records are logged: once the worker has emptied the
    queue into the lane, the memory taken stops growing at the lane's bound, and the
    records beyond it are counted ``backlog_full``."""
    collector.answers = [(200, {}, b"", "never")]
    writer = HttpWriter(f"{collector.url}/logs", compression=None, timeout=600)
    limit = 2000
    pipe = pipeline(writer, batch_size=50, max_queue_size=limit, overflow_strategy="block")
    log = pipe.get_logger("t")
    pad = "x" * 200
    log.info("r", i=-1, pad=pad)
    wait_for(lambda: collector.unanswered, what="the hung request")
    tracemalloc.start()
    try:

        def log_some(start: int, count: int) -> int:
            for i in range(start, start + count):
                log.info("r", i=i, pad=pad)
            # Measured once the worker has moved every record from the queue to the lane
            # (its own bound): a queue still being emptied would add up to a queue's worth.
            wait_for(lambda: 0 == pipe.stats()["queue_size"], what="an empty queue")
            assert not pipe.flush(0.5).complete  # the lane still hangs
            return tracemalloc.get_traced_memory()[0]

        first = log_some(0, 4 * limit)
        last = log_some(4 * limit, 16 * limit)
    finally:
        tracemalloc.stop()
    stats = pipe.stats()
    by_reason = stats["write_error_by_reason"]
    # 16 * limit more records of ~300 bytes would be ~10 MB if kept.
    assert last - first < 16 * limit * 300 / 10, (first, last)
    assert by_reason["backlog_full"] >= 16 * limit
    assert stats["pending"] <= limit + 50 + 1
    assert books_balance(stats)
    collector.kill()
    assert pipe.flush(60).complete
    stats = pipe.stats()
    assert 1 + 20 * limit == stats["messages_dropped"] + len(set(stored(collector)))
