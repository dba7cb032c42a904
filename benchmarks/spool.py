"""The disk spool's costs: spooling, replaying, and the straight-through path.

Usage: ``python benchmarks/spool.py [--records 200000] [--batch 200] [--replay-batch 500]
[--directory DIR]``.

A local HTTP server (the standard library's, answering 200) stands for the collector.
Printed, in records per second, with what each run delivered so that nothing is lost or
doubled unseen:

- ``spool``: batches appended to the spool while the collector is down (``fsync`` off, then on);
- ``replay``: the spool delivered once the collector is up (one fsynced offset commit per
  replay batch);
- ``direct``: batches POSTed by an ``HttpWriter`` alone, then through a
  ``SpoolingWriter`` whose spool is empty (the wrapper's cost).

Put ``--directory`` on the disk the spool will live on: the replay rate follows its
fsync latency.
"""

from __future__ import annotations

import argparse
import gzip
import http.server
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kakashi.writers.delivery import DeliveryError
from kakashi.writers.http import HttpWriter
from kakashi.writers.spool import SpoolingWriter


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The status line and the body are two writes: without TCP_NODELAY the second waits
    # for the client's delayed ACK (40 ms a request), and that is all one would measure.
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        server: Any = self.server
        with server.lock:
            server.records += body.count(b"\n")
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


def serve() -> Any:
    """A collector on a loopback port, counting the records it receives."""
    server: Any = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.lock = threading.Lock()
    server.records = 0
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class Outage:
    """An HttpWriter behind a switch: while ``down``, every batch fails as a refused
    connection would (no time spent on the network)."""

    concurrent = True

    def __init__(self, inner: HttpWriter) -> None:
        self.inner = inner
        self.down = True

    def write(self, batch: Sequence[bytes]) -> None:
        if self.down:
            raise DeliveryError.whole(len(batch), "connect", retryable=True)
        self.inner.write(batch)

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:
        self.inner.close()


def batches(records: int, size: int) -> list[list[bytes]]:
    line = b'{"timestamp":"2026-01-01T00:00:00.000000Z","level":"INFO","logger":"bench",'
    return [
        [line + b'"message":"request served","i":%d}' % i for i in range(start, start + size)]
        for start in range(0, records, size)
    ]


def rate(records: int, seconds: float) -> str:
    return f"{records / seconds:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--replay-batch", type=int, default=500)
    parser.add_argument("--directory", default=None)
    options = parser.parse_args()
    work = batches(options.records, options.batch)
    total = sum(map(len, work))
    server = serve()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    rows = []
    with tempfile.TemporaryDirectory(dir=options.directory) as root:
        for fsync in (False, True):
            directory = Path(root) / f"spool-{fsync}"
            inner = Outage(HttpWriter(url))
            writer = SpoolingWriter(
                inner,
                directory,
                max_bytes=1 << 30,
                replay_batch=options.replay_batch,
                retry_delay=3600.0,  # no replay attempt while spooling
                fsync=fsync,
            )
            writer.write(work[0])  # the failure that starts the spool
            began = time.perf_counter()
            for batch in work[1:]:
                writer.write(batch)
            spooled = time.perf_counter() - began
            rows.append((f"spool (fsync={fsync})", rate(total - len(work[0]), spooled), "-"))
            inner.down = False
            before = server.records
            began = time.perf_counter()
            writer.flush_timeout = 3600.0
            while writer.delivery_stats()["spool_records"]:
                writer.flush()
            replayed = time.perf_counter() - began
            delivered = server.records - before
            stats = writer.delivery_stats()
            writer.close()
            rows.append((f"replay (fsync={fsync})", rate(total, replayed), f"{delivered:,}"))
            assert stats["replayed"] == total == delivered, stats
        plain = HttpWriter(url)
        before = server.records
        began = time.perf_counter()
        for batch in work:
            plain.write(batch)
        seconds = time.perf_counter() - began
        rows.append(("direct, HttpWriter", rate(total, seconds), f"{server.records - before:,}"))
        plain.close()
        wrapped = SpoolingWriter(HttpWriter(url), Path(root) / "direct")
        before = server.records
        began = time.perf_counter()
        for batch in work:
            wrapped.write(batch)
        seconds = time.perf_counter() - began
        rows.append(
            ("direct, SpoolingWriter", rate(total, seconds), f"{server.records - before:,}")
        )
        wrapped.close()
    server.shutdown()
    print(f"{total:,} records, batches of {options.batch}, replay of {options.replay_batch}")
    print("| run | records/s | delivered |")
    print("| --- | ---: | ---: |")
    for row in rows:
        print(f"| {row[0]} | {row[1]} | {row[2]} |")


if __name__ == "__main__":
    main()
