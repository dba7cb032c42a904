"""Delivery throughput of the store writers against the plain file writer, in one run.

Usage: ``python benchmarks/shipping_stores.py [--records 100000] [--batch-size 1000]``.

Each row logs ``--records`` records as fast as one thread can through an AsyncPipeline
(JSON lines) and waits for the flush: the file writer into a temporary file, then each
store writer to a stand-in server in another process (Python's threading HTTP server:
it decompresses and parses every request and answers as the store would, so its cost
is in the figures as a real store's would not be). Printed per writer: the caller's
cost (the logging loop's time per record), the end-to-end rate (first call to flush
done) and its ratio to the file writer's, the writer's encoding cost alone per record,
and the accounting (records the server got, dropped; must be all and none).
"""

from __future__ import annotations

import argparse
import gzip
import http.server
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kakashi.core.async_backend import AsyncConfig
from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
from kakashi.core.pipeline import PipelineConfig
from kakashi.writers.file import FileWriter
from kakashi.writers.stores import ElasticsearchWriter, LokiWriter, OtlpHttpWriter


class StandIn(http.server.BaseHTTPRequestHandler):
    """Answers /_bulk, Loki and OTLP requests; counts the records it was sent."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        server: Any = self.server
        if self.path.startswith("/_bulk"):
            count = body.count(b"\n") // 2
            items = [{"create": {"status": 201}}] * count
            status, answer = 200, json.dumps({"errors": False, "items": items}).encode()
        elif self.path.startswith("/loki"):
            streams = json.loads(body)["streams"]
            count = sum(len(stream["values"]) for stream in streams)
            status, answer = 204, b""
        elif self.path == "/count":
            count, status, answer = 0, 200, str(server.count.value).encode()
        else:
            request = json.loads(body)["resourceLogs"]
            count = sum(
                len(scope["logRecords"]) for entry in request for scope in entry["scopeLogs"]
            )
            status, answer = 200, b"{}"
        with server.count.get_lock():
            server.count.value += count
        self.send_response(status)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


def serve(port: Any, count: Any) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    server.count = count  # type: ignore[attr-defined]
    port.value = server.server_address[1]
    server.serve_forever()


def run(writer: Any, records: int, batch_size: int) -> tuple[float, float, dict[str, Any]]:
    """Log *records* through *writer*: (caller seconds, end-to-end seconds, stats)."""
    pipeline = AsyncPipeline(
        AsyncPipelineConfig(
            pipeline_config=PipelineConfig(min_level="INFO", writers=(writer,)),
            async_config=AsyncConfig(batch_size=batch_size, max_queue_size=records + 1),
        )
    )
    log = pipeline.get_logger("bench")
    start = time.perf_counter()
    for n in range(records):
        log.info("order placed", order_id=n, total=9.5, customer="c-42")
    logged = time.perf_counter()
    result = pipeline.flush(timeout=600.0)
    done = time.perf_counter()
    stats = pipeline.backend.get_stats()
    pipeline.shutdown()
    assert result.complete, result
    return logged - start, done - start, stats


def encoding_cost(writer: Any, lines: list[bytes], rounds: int = 20) -> float:
    """Seconds per record of the writer's body encoding (compression included)."""
    keys = [None] * len(lines)
    start = time.perf_counter()
    for _ in range(rounds):
        writer._compress(writer.encode_batch(lines, keys))
    return (time.perf_counter() - start) / (rounds * len(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    options = parser.parse_args()
    records, batch_size = options.records, options.batch_size

    context = multiprocessing.get_context("spawn")
    port, count = context.Value("i", 0), context.Value("q", 0)
    server = context.Process(target=serve, args=(port, count), daemon=True)
    server.start()
    while not port.value:
        time.sleep(0.01)
    url = f"http://127.0.0.1:{port.value}"

    sample: list[bytes] = []
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "bench.log"
        caller, total, stats = run(FileWriter(str(path)), records, batch_size)
        sample = path.read_bytes().splitlines()[:batch_size]
        written = len(path.read_bytes().splitlines())
    file_rate = records / total
    print(f"{records} records, batch_size {batch_size}, Python {sys.version.split()[0]}")
    print(f"{'writer':<22}{'caller us/rec':>14}{'e2e rec/s':>12}{'vs file':>9}"
          f"{'encode us/rec':>15}{'received':>10}{'dropped':>9}")  # fmt: skip
    print(f"{'FileWriter':<22}{caller / records * 1e6:>14.2f}{file_rate:>12,.0f}{1:>9.2f}"
          f"{'-':>15}{written:>10}{stats['messages_dropped']:>9}")  # fmt: skip
    writers = [
        ElasticsearchWriter(url, "logs-%Y.%m.%d"),
        LokiWriter(url, labels={"service": "bench"}),
        OtlpHttpWriter(url, service_name="bench"),
    ]
    for writer in writers:
        count.value = 0
        caller, total, stats = run(writer, records, batch_size)
        cost = encoding_cost(writer, sample)
        print(f"{type(writer).__name__:<22}{caller / records * 1e6:>14.2f}"
              f"{records / total:>12,.0f}{records / total / file_rate:>9.2f}"
              f"{cost * 1e6:>15.2f}{count.value:>10}{stats['messages_dropped']:>9}")  # fmt: skip
    server.terminate()
    server.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
