"""kakashi.writers.http.HttpWriter against a real local HTTP server."""

from __future__ import annotations

import gzip
import http.server
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import zstandard

from kakashi.writers.delivery import DeliveryError, parse_retry_after
from kakashi.writers.http import HttpWriter

pytest.importorskip("urllib3")


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        server: Any = self.server
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server.received.append((self.path, dict(self.headers), body))
        server.connections.add(self.client_address)
        status, headers, answer = server.answers.pop(0) if server.answers else (200, {}, b"{}")
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Any]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.received = []  # type: ignore[attr-defined]
    httpd.answers = []  # type: ignore[attr-defined]
    httpd.connections = set()  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _url(server: Any) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/ingest"


def test_a_batch_is_one_compressed_request_on_a_kept_connection(server: Any) -> None:
    writer = HttpWriter(_url(server), headers={"X-Tenant": "a"})
    writer.write([b'{"n":1}', b'{"n":2}'])
    writer.write([b'{"n":3}'])
    (path, headers, body), second = server.received
    assert "/ingest" == path
    assert "gzip" == headers["Content-Encoding"]
    assert "a" == headers["X-Tenant"]
    assert b'{"n":1}\n{"n":2}\n' == gzip.decompress(body)
    assert b'{"n":3}\n' == gzip.decompress(second[2])
    assert 1 == len(server.connections)  # the connection was reused
    assert 2 == writer.requests
    writer.close()


def test_zstd_and_no_compression(server: Any) -> None:
    HttpWriter(_url(server), compression="zstd").write([b"a"])
    HttpWriter(_url(server), compression=None).write([b"b"])
    assert b"a\n" == zstandard.ZstdDecompressor().decompressobj().decompress(server.received[0][2])
    assert b"b\n" == server.received[1][2]


def test_a_retryable_status_retries_everything_after_retry_after(server: Any) -> None:
    server.answers.append((429, {"Retry-After": "7"}, b"slow down"))
    with pytest.raises(DeliveryError) as caught:
        HttpWriter(_url(server)).write([b"a", b"b", b"c"])
    error = caught.value
    assert ("http_429", (0, 1, 2), {}, 7.0) == (
        error.reason,
        error.retry,
        error.dropped,
        error.retry_after,
    )
    assert "slow down" in str(error)


def test_a_client_error_drops_the_batch(server: Any) -> None:
    server.answers.append((400, {}, b"bad entry"))
    with pytest.raises(DeliveryError) as caught:
        HttpWriter(_url(server)).write([b"a", b"b"])
    assert () == caught.value.retry
    assert {0: "http_400", 1: "http_400"} == caught.value.dropped


def test_connection_refused_is_retryable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DeliveryError) as caught:
        HttpWriter(f"http://127.0.0.1:{port}/", timeout=2).write([b"a"])
    assert "connect" == caught.value.reason
    assert (0,) == caught.value.retry


def test_a_server_that_never_answers_times_out() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        with pytest.raises(DeliveryError) as caught:
            HttpWriter(url, timeout=0.3).write([b"a"])
    assert "timeout" == caught.value.reason


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"url": "ftp://x"}, "url"),
        ({"url": "http://x", "compression": "br"}, "compression"),
        ({"url": "http://x", "timeout": 0}, "timeout"),
        ({"url": "http://x", "pool_size": 0}, "pool_size"),
        ({"url": "http://x", "max_error_retries": -1}, "max_error_retries"),
    ],
)
def test_bad_settings_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HttpWriter(**options)


def test_delivery_error_shapes() -> None:
    error = DeliveryError("bulk", retry=[3, 1], dropped={2: "mapper_parsing_exception"})
    assert (1, 3) == error.retry
    assert 1 == error.written
    with pytest.raises(ValueError, match="both"):
        DeliveryError("x", retry=[1], dropped={1: "y"})
    assert 5.0 == parse_retry_after("5")
    assert 0.0 == parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT")
    assert 3600.0 == parse_retry_after("99999")
    assert parse_retry_after("soon") is None
