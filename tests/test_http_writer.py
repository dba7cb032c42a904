"""kakashi.writers.http.HttpWriter against a real local HTTP server."""

from __future__ import annotations

import gzip
import socket
from typing import Any

import pytest
import zstandard

from kakashi.writers.delivery import DeliveryError, parse_retry_after
from kakashi.writers.http import HttpWriter

pytest.importorskip("urllib3")


def _url(server: Any) -> str:
    return f"{server.url}/ingest"


def test_a_batch_is_one_compressed_request_on_a_kept_connection(collector: Any) -> None:
    writer = HttpWriter(_url(collector), headers={"X-Tenant": "a"})
    writer.write([b'{"n":1}', b'{"n":2}'])
    writer.write([b'{"n":3}'])
    (path, headers, body, _), second = collector.received
    assert "/ingest" == path
    assert "gzip" == headers["Content-Encoding"]
    assert "a" == headers["X-Tenant"]
    assert b'{"n":1}\n{"n":2}\n' == gzip.decompress(body)
    assert b'{"n":3}\n' == gzip.decompress(second[2])
    assert 1 == len(collector.connections)  # the connection was reused
    assert 2 == writer.requests
    writer.close()


def test_zstd_and_no_compression(collector: Any) -> None:
    HttpWriter(_url(collector), compression="zstd").write([b"a"])
    HttpWriter(_url(collector), compression=None).write([b"b"])
    assert b"a\n" == zstandard.ZstdDecompressor().decompressobj().decompress(
        collector.received[0][2]
    )
    assert b"b\n" == collector.received[1][2]


def test_a_retryable_status_retries_everything_after_retry_after(collector: Any) -> None:
    collector.answers.append((429, {"Retry-After": "7"}, b"slow down"))
    with pytest.raises(DeliveryError) as caught:
        HttpWriter(_url(collector)).write([b"a", b"b", b"c"])
    error = caught.value
    assert ("http_429", (0, 1, 2), {}, 7.0) == (
        error.reason,
        error.retry,
        error.dropped,
        error.retry_after,
    )
    assert "slow down" in str(error)


def test_a_client_error_drops_the_batch(collector: Any) -> None:
    collector.answers.append((400, {}, b"bad entry"))
    with pytest.raises(DeliveryError) as caught:
        HttpWriter(_url(collector)).write([b"a", b"b"])
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
