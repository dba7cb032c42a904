"""Server access records through the stdlib bridge: uvicorn's (a real server) and gunicorn's."""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import kakashi
from kakashi.integrations import logging as bridge
from kakashi.integrations.logging import KakashiHandler, capture_stdlib, to_record


class Lines:
    """A writer that keeps every line it is given, parsed."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def write(self, batch: Any) -> None:
        self.events.extend(json.loads(line) for line in batch)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


UVICORN_FORMAT = '%s - "%s %s HTTP/%s" %d'


def event_of(name: str, msg: str, args: Any) -> dict[str, Any]:
    """The event the bridge writes for a LogRecord of *name* with *msg* and *args*."""
    lines = Lines()
    pipeline = kakashi.Pipeline(min_level=0, formatter=kakashi.default_json_formatter)
    record = logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, None)
    lines.write([pipeline.render(to_record(record))])
    return lines.events[0]


ACCESS_KEYS = ("method", "path", "status", "client_ip", "client_port", "http_version")


@pytest.mark.parametrize(
    ("client", "expected"),
    [
        ("127.0.0.1:53211", {"client_ip": "127.0.0.1", "client_port": 53211}),
        ("::1:8080", {"client_ip": "::1", "client_port": 8080}),
        ("", {}),
        ("unix-socket", {"client_ip": "unix-socket"}),
    ],
)
def test_uvicorn_access_args_become_fields(client: str, expected: dict[str, Any]) -> None:
    """uvicorn.access's five arguments are the access fields, in names.md's order; the
    message is rendered as uvicorn renders it; no msg_template or msg_args."""
    args = (client, "GET", "/items/7?q=1", "1.1", 200)
    event = event_of("uvicorn.access", UVICORN_FORMAT, args)

    assert {
        "method": "GET",
        "path": "/items/7?q=1",
        "status": 200,
        **expected,
        "http_version": "1.1",
    } == {key: event[key] for key in ACCESS_KEYS if key in event}
    assert [key for key in ACCESS_KEYS if key in event] == [
        key for key in event if key in ACCESS_KEYS
    ]
    assert UVICORN_FORMAT % args == event["message"]
    assert "msg_args" not in event and "msg_template" not in event


@pytest.mark.parametrize(
    "args",
    [
        ("127.0.0.1:1", "GET", "/", "1.1"),  # four arguments
        ("127.0.0.1:1", "GET", "/", "1.1", "200"),  # status as text
        (None, "GET", "/", "1.1", 200),
        ({"not": "a tuple"},),
    ],
)
def test_uvicorn_access_of_another_shape_is_left_as_is(args: tuple[Any, ...]) -> None:
    """Arguments of another shape are written as any record's: template and arguments."""
    event = event_of("uvicorn.access", "%s %s", args)

    assert "%s %s" == event["msg_template"]
    assert "status" not in event and "method" not in event


def test_gunicorn_access_atoms_become_fields() -> None:
    """gunicorn.access's single dict argument (its atoms) gives the access fields."""
    atoms = {
        "h": "10.0.0.5",
        "l": "-",
        "u": "-",
        "t": "[01/Dec/2026:17:00:00 +0000]",
        "r": "GET /items/7?q=1 HTTP/1.1",
        "m": "GET",
        "U": "/items/7",
        "q": "q=1",
        "H": "HTTP/1.1",
        "s": "404",
        "B": 22,
        "b": "22",
        "f": "-",
        "a": "curl/8.0",
        "T": 0,
        "D": 1534,
        "M": 1,
        "L": "0.001534",
        "p": "<1234>",
    }
    event = event_of("gunicorn.access", '%(h)s "%(r)s" %(s)s', (atoms,))

    assert {
        "method": "GET",
        "path": "/items/7?q=1",
        "status": 404,
        "duration_ms": 1.534,
        "response_size": 22,
        "client_ip": "10.0.0.5",
        "user_agent": "curl/8.0",
        "http_version": "1.1",
    } == {key: event[key] for key in list(event)[list(event).index("method") :][:8]}
    assert '10.0.0.5 "GET /items/7?q=1 HTTP/1.1" 404' == event["message"]


def test_gunicorn_access_of_another_shape_is_left_as_is() -> None:
    """A dict without gunicorn's atoms is written as arguments, as for any logger."""
    event = event_of("gunicorn.access", "%(x)s", ({"x": "y"},))

    assert ("y", {"x": "y"}) == (event["message"], event["msg_args"])


def test_access_record_whose_arguments_fail_is_written() -> None:
    """An argument that raises when looked at never raises into the server."""

    class Hostile(dict[str, Any]):
        def __getitem__(self, key: str) -> Any:
            raise RuntimeError("no")

    event = event_of("gunicorn.access", "static", (Hostile(m=1),))

    assert "static" == event["message"]
    assert "status" not in event


# -- a real uvicorn ---------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """uvicorn serving a Starlette app on a free loopback port, in a thread, with
    capture_stdlib installed and the default pipeline writing a file."""
    uvicorn = pytest.importorskip("uvicorn")
    pytest.importorskip("starlette")
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def item(request: Any) -> PlainTextResponse:
        return PlainTextResponse(f"item {request.path_params['id']}")

    async def boom(request: Any) -> PlainTextResponse:
        raise ZeroDivisionError("boom in the endpoint")

    app = Starlette(routes=[Route("/items/{id}", item), Route("/boom", boom)])
    path = tmp_path / "server.log"
    kakashi.configure(
        kakashi.Pipeline(
            min_level=0,
            formatter=kakashi.default_json_formatter,
            writers=(kakashi.file_writer(path),),
        )
    )
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    # log_config=None: uvicorn's own dictConfig would replace the handlers of its loggers.
    config = uvicorn.Config(app, log_config=None, log_level="info", lifespan="on")
    capture = capture_stdlib()
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]})
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.started, "uvicorn did not start"
        yield port, path
    finally:
        server.should_exit = True
        thread.join(30)
        listener.close()
        capture.uninstall()
        kakashi.configure()


def get(port: int, path: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path, headers={"User-Agent": "bridge-test"})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def read_events(path: Path) -> list[dict[str, Any]]:
    kakashi.get_default_pipeline().flush()
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_real_uvicorn_access_error_and_startup_records(served: tuple[int, Path]) -> None:
    """Through a real uvicorn: startup records arrive; each request's access record
    carries the access fields; an endpoint that raises gives uvicorn.error's
    "Exception in ASGI application" with the traceback in exception."""
    port, path = served
    assert 200 == get(port, "/items/7?q=1")
    assert 500 == get(port, "/boom")
    assert 404 == get(port, "/missing")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # uvicorn logs the access record as it responds
        events = read_events(path)
        if sum(e["logger"] == "uvicorn.access" for e in events) == 3:
            break
        time.sleep(0.01)

    messages = [e["message"] for e in events if e["logger"] == "uvicorn.error"]
    assert {"Waiting for application startup.", "Application startup complete."} <= set(messages)
    assert f"Started server process [{os.getpid()}]" in messages
    access = [e for e in events if e["logger"] == "uvicorn.access"]
    assert [("GET", "/items/7?q=1", 200), ("GET", "/boom", 500), ("GET", "/missing", 404)] == [
        (e["method"], e["path"], e["status"]) for e in access
    ]
    for event in access:
        assert ("127.0.0.1", "1.1", "INFO") == (
            event["client_ip"],
            event["http_version"],
            event["level"],
        )
        assert isinstance(event["client_port"], int) and event["client_port"] > 0
    (error,) = [e for e in events if e.get("exception")]
    assert ("uvicorn.error", "ERROR", "Exception in ASGI application\n") == (
        error["logger"],
        error["level"],
        error["message"],
    )
    assert "ZeroDivisionError" == error["exception"]["type"]
    assert "boom in the endpoint" in error["exception"]["traceback"]
    assert 'raise ZeroDivisionError("boom in the endpoint")' in error["exception"]["traceback"]


def test_importing_kakashi_imports_no_server() -> None:
    """The bridge needs no server library: importing kakashi imports none."""
    code = (
        "import sys, kakashi, kakashi.integrations.logging; "
        "print(sorted(m for m in ('uvicorn', 'starlette', 'gunicorn', 'httpx') "
        "if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "[]" == result.stdout.strip()


def test_handler_on_access_logger_keeps_structured_fields_with_lean(tmp_path: Path) -> None:
    """A lean uvicorn.access logger writes the same access fields (no LogRecord made)."""
    lines = Lines()
    logger = logging.getLogger("uvicorn.access")
    handler = KakashiHandler(
        pipeline=kakashi.Pipeline(
            min_level=0, formatter=kakashi.default_json_formatter, writers=(lines,)
        )
    )
    before = (logger.handlers[:], logger.propagate, logger.level)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        bridge.make_lean(logger)
        logger.info(UVICORN_FORMAT, "127.0.0.1:4000", "POST", "/orders", "1.1", 201)
    finally:
        bridge._unlean(logger)
        logger.handlers[:], logger.propagate = before[0], before[1]
        logger.setLevel(before[2])

    (event,) = lines.events
    assert ("POST", "/orders", 201, "127.0.0.1", 4000, "1.1") == tuple(
        event[key] for key in ACCESS_KEYS
    )
