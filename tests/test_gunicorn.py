"""gunicorn hooks (kakashi.integrations.gunicorn), and a real gunicorn serving the Flask
extension stopped mid-load: every completed request's access record is on disk."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import kakashi
from kakashi.integrations.gunicorn import DRAIN_TIMEOUT, drain_timeout, on_exit, worker_exit
from tests.conftest import HeldPort, keeping_pipeline

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = [sys.executable, "-m", "gunicorn", "-c", "gunicorn_conf.py"]


def test_worker_exit_writes_what_the_backend_holds(tmp_path: Path) -> None:
    """worker_exit drains: records a backend holds (a batch that would wait a minute to
    fill) are in the file when the hook returns; on_exit does the same."""
    path = tmp_path / "app.log"
    pipeline = keeping_pipeline(
        kakashi.file_writer(str(path)), batch_size=100_000, batch_timeout=60.0
    )
    log = kakashi.get_logger("held", pipeline)
    for i in range(300):
        log.info("r", i=i)
    worker_exit(None, SimpleNamespace(cfg=SimpleNamespace(graceful_timeout=30)))
    assert 300 == len(path.read_text().splitlines())
    log.info("r", i=300)
    on_exit(SimpleNamespace(cfg=SimpleNamespace(graceful_timeout=30)))
    assert 301 == len(path.read_text().splitlines())
    pipeline.shutdown()


@pytest.mark.parametrize(
    ("graceful", "expected"),
    [(30, DRAIN_TIMEOUT), (4, 2.0), (0, DRAIN_TIMEOUT), (None, DRAIN_TIMEOUT), (True, 5.0)],
)
def test_drain_timeout_leaves_room_in_the_graceful_timeout(graceful: Any, expected: float) -> None:
    """A hook drains for at most half of gunicorn's graceful_timeout, and at most
    DRAIN_TIMEOUT (also when the setting is missing or not a number)."""
    assert expected == drain_timeout(SimpleNamespace(graceful_timeout=graceful))


APP = """
import os

import flask

import kakashi
from kakashi.core.async_backend import AsyncConfig
from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
from kakashi.core.pipeline import PipelineConfig
from kakashi.integrations.flask import KakashiFlask

# A batch waits up to 2 s to fill: at SIGTERM the last requests' records are still queued.
pipeline = AsyncPipeline(
    AsyncPipelineConfig(
        pipeline_config=PipelineConfig(
            min_level="DEBUG", writers=[kakashi.file_writer(os.environ["ACCESS_LOG"])]
        ),
        async_config=AsyncConfig(batch_size=100_000, batch_timeout=2.0),
    )
)
log = kakashi.get_logger("served", pipeline)
app = flask.Flask("served")
KakashiFlask(app, pipeline=pipeline)


@app.get("/items/<int:item_id>")
def item(item_id):
    log.info("serving", item_id=item_id, pid=os.getpid())
    return {"id": item_id}
"""

CONF = """
from kakashi.integrations.gunicorn import on_exit, worker_exit  # noqa: F401

workers = 2
worker_class = "sync"
graceful_timeout = 20
preload_app = {preload}
"""


class Client(threading.Thread):
    """Requests one after another, each on a new connection (no keep-alive), keeping
    the request id of every response received in full, until the server is gone."""

    def __init__(self, port: int) -> None:
        super().__init__(name="gunicorn-client", daemon=True)
        self.port = port
        self.received: list[str] = []
        self.stopping = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        index = 0
        refused = 0
        while refused < 50:
            index += 1
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                connection.request("GET", f"/items/{index}", headers={"Connection": "close"})
                response = connection.getresponse()
                body = response.read()
                length = int(response.headers["Content-Length"])
                if response.status == 200 and len(body) == length:
                    self.received.append(response.headers["X-Request-ID"])
                refused = 0
            except (OSError, http.client.HTTPException) as exc:
                self.errors.append(repr(exc))
                if self.stopping.is_set():
                    refused += 1  # the server is going: stop once it stays gone
                time.sleep(0.02)
            finally:
                connection.close()


@pytest.mark.parametrize(
    ("stop", "preload"),
    [
        (signal.SIGTERM, True),
        (signal.SIGTERM, False),
        (signal.SIGQUIT, True),
        (signal.SIGINT, False),
    ],
    ids=[
        "SIGTERM-preload",
        "SIGTERM-import-in-worker",
        "SIGQUIT-preload",
        "SIGINT-import-in-worker",
    ],
)
def test_a_stop_mid_load_loses_no_access_record(
    tmp_path: Path, held_port: HeldPort, stop: signal.Signals, preload: bool
) -> None:
    """gunicorn (2 sync workers, forked; the app and its async file pipeline made in the
    master before the fork, or in each worker) serving the Flask extension, stopped
    after 200 responses while a client keeps requesting. SIGTERM (graceful): the access
    records on disk are exactly the responses received in full. SIGQUIT and SIGINT (at
    once): every response received has its record; a request cut off in a worker may
    have one too (at most one per worker). Never a record twice (by request id)."""
    pytest.importorskip("gunicorn")
    pytest.importorskip("flask")
    (tmp_path / "served_app.py").write_text(APP)
    (tmp_path / "gunicorn_conf.py").write_text(CONF.format(preload=preload))
    access_log = tmp_path / "access.log"
    errors = tmp_path / "gunicorn.err"
    port = held_port.port  # gunicorn binds with SO_REUSEADDR beside the hold
    env = dict(os.environ, ACCESS_LOG=str(access_log))
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT), env.get("PYTHONPATH", "")])
    with errors.open("wb") as stderr:
        server = subprocess.Popen(
            [*GUNICORN, "-b", f"127.0.0.1:{port}", "served_app:app"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    client = Client(port)
    try:
        client.start()
        deadline = time.monotonic() + 120
        while len(client.received) < 200 and time.monotonic() < deadline:
            assert server.poll() is None, errors.read_text()
            time.sleep(0.05)
        assert len(client.received) >= 200, client.errors[-5:]
        server.send_signal(stop)
        client.stopping.set()
        server.wait(timeout=60)
        client.join(timeout=60)
        assert not client.is_alive()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    records = [json.loads(line) for line in access_log.read_text().splitlines()]
    logged = [r["request_id"] for r in records if r["message"] == "request"]
    assert len(set(logged)) == len(logged), "an access record written twice"
    if stop == signal.SIGTERM:
        assert 0 == server.returncode, errors.read_text()
        assert sorted(client.received) == sorted(logged)
    else:
        assert set(client.received) <= set(logged)
        assert len(logged) - len(client.received) <= 2
    served = [r for r in records if r["message"] == "serving"]
    assert len(served) >= len(logged) - 2
    assert server.pid not in {r["pid"] for r in served}, "the forked workers served"
