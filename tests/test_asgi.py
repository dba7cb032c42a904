"""The ASGI middleware (kakashi.integrations.asgi) with real Starlette and FastAPI apps,
their own test clients, httpx's ASGITransport and a real uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import ClientDisconnect, Request  # noqa: E402
from starlette.responses import PlainTextResponse, StreamingResponse  # noqa: E402
from starlette.routing import Mount, Route, WebSocketRoute  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402
from starlette.websockets import WebSocket, WebSocketDisconnect  # noqa: E402

import kakashi  # noqa: E402
from kakashi.concurrency import run_in_executor  # noqa: E402
from kakashi.integrations.asgi import KakashiMiddleware  # noqa: E402
from kakashi.integrations.web import REDACTED, RequestLogging  # noqa: E402
from kakashi.testing import capture_logs  # noqa: E402
from tests.conftest import HeldPort, keeping_pipeline  # noqa: E402
from tests.webapps import (  # noqa: E402
    access_records,
    app_log,
    asgi_scope,
    assert_access_fields,
    messages,
    serve_asgi,
)

ROOT = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("no_request_id_left")


# -- the applications -----------------------------------------------------------------


async def item(request: Request) -> PlainTextResponse:
    app_log().info("inside", n=request.path_params["n"])
    return PlainTextResponse(f"item {request.path_params['n']}")


async def boom(request: Request) -> PlainTextResponse:
    raise ValueError("boom")


async def stream(request: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for n in range(5):
            app_log().info("chunk", n=n)
            yield b"x" * (n + 1)

    return StreamingResponse(chunks())


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    app_log().info("socket open")
    try:
        while True:
            text = await websocket.receive_text()
            await websocket.send_text(text.upper())
    except WebSocketDisconnect:
        pass


async def refuse(websocket: WebSocket) -> None:
    await websocket.close(code=1008)


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def starlette_app(*, middleware: bool = True, **options: Any) -> Starlette:
    app = Starlette(
        routes=[
            Route("/items/{n}", item),
            Route("/boom", boom),
            Route("/stream", stream),
            Route("/health", health),
            WebSocketRoute("/ws", echo),
            WebSocketRoute("/refused", refuse),
            Mount("/m/{k}", routes=[Route("/b/{z}", health)]),
        ]
    )
    if middleware:
        app.add_middleware(KakashiMiddleware, **options)
    return app


def fastapi_app(**options: Any) -> FastAPI:
    app = FastAPI()

    async def user(request: Request) -> str:
        kakashi.bind_context(user="u-7")  # an async dependency binds for the request
        return "u-7"

    @app.middleware("http")
    async def tenant(request: Request, call_next: Any) -> Any:
        kakashi.bind_context(tenant="acme")
        return await call_next(request)

    @app.get("/items/{item_id}")
    async def read_item(item_id: int) -> dict[str, int]:
        app_log().info("reading", item_id=item_id)
        return {"item_id": item_id}

    @app.get("/sync")
    def sync_endpoint(who: str = Depends(user)) -> dict[str, Any]:
        app_log().info("in the threadpool", thread=threading.current_thread().name)
        return {"who": who, "thread": threading.current_thread().name}

    @app.get("/executor")
    async def executor_endpoint() -> dict[str, str]:
        def work(label: str) -> str:
            app_log().info("in the executor", label=label)
            return threading.current_thread().name

        carried = await run_in_executor(None, work, "carried")
        plain = await asyncio.get_running_loop().run_in_executor(None, work, "plain")
        return {"carried": carried, "plain": plain}

    @app.get("/fail")
    async def fail() -> None:
        raise RuntimeError("endpoint failed")

    @app.get("/teapot")
    async def teapot() -> None:
        raise HTTPException(status_code=418, detail="short and stout")

    @app.get("/later")
    async def later(tasks: BackgroundTasks) -> dict[str, bool]:
        tasks.add_task(lambda: app_log().info("background work"))
        return {"queued": True}

    sub = FastAPI()

    @sub.get("/x/{y}")
    async def sub_route(y: str) -> str:
        return y

    app.mount("/sub", sub)
    app.add_middleware(KakashiMiddleware, **options)
    return app


# -- HTTP ------------------------------------------------------------------------------


def test_starlette_testclient_one_access_record_with_the_shared_fields() -> None:
    """One access record per request with the names.md fields, the route template, the
    request id echoed in the response and bound for the view's own records."""
    with capture_logs() as logs:
        client = TestClient(starlette_app())
        response = client.get("/items/7?page=2", headers={"User-Agent": "probe/1"})
    assert 200 == response.status_code
    inside, access = logs
    request_id = response.headers["x-request-id"]
    assert re.fullmatch("[0-9a-f]{32}", request_id)
    assert request_id == inside["request_id"] == access["request_id"]
    expected = {
        "level": "INFO",
        "logger": "kakashi.access",
        "message": "request",
        "request_id": request_id,
        "method": "GET",
        "path": "/items/7",
        "route": "/items/{n}",
        "query": "page=2",
        "status": 200,
        "response_size": len(b"item 7"),
        "client_ip": "testclient",
        "client_port": 50000,
        "user_agent": "probe/1",
        "http_version": "1.1",
        "scheme": "http",
    }
    assert_access_fields(access, expected)
    shared = [k for k in access if k in expected or k == "duration_ms"][3:]
    assert [
        "request_id", "method", "path", "route", "query", "status", "duration_ms",
        "response_size", "client_ip", "client_port", "user_agent", "http_version", "scheme",
    ] == shared  # fmt: skip


def test_starlette_through_httpx_asgitransport_and_no_context_left_behind() -> None:
    """The same through httpx's ASGITransport, which runs the app in the caller's own
    task: after the response the caller's context has no request id."""

    async def main() -> tuple[Any, dict[str, Any]]:
        transport = httpx.ASGITransport(app=starlette_app(), client=("198.51.100.4", 4711))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/items/3")
        return response, kakashi.get_context()

    with capture_logs() as logs:
        response, context_after = asyncio.run(main())
    inside, access = logs
    assert "request_id" not in context_after
    assert response.headers["x-request-id"] == inside["request_id"] == access["request_id"]
    assert ("/items/{n}", 200, 6) == (access["route"], access["status"], access["response_size"])
    assert ("198.51.100.4", 4711) == (access["client_ip"], access["client_port"])


def test_fastapi_route_template_404_and_handled_http_exception() -> None:
    """FastAPI's path-parameter route gives its template; a 404 and an HTTPException the
    framework turns into a response are WARNING access records, with no "request failed"."""
    with capture_logs() as logs:
        client = TestClient(fastapi_app())
        assert 200 == client.get("/items/42").status_code
        assert 404 == client.get("/nowhere").status_code
        assert 418 == client.get("/teapot").status_code
    ok, missing, teapot = access_records(logs)
    assert ("/items/{item_id}", 200, "INFO") == (ok["route"], ok["status"], ok["level"])
    assert 42 == messages(logs, "reading")[0]["item_id"]
    assert "route" not in missing
    assert (404, "WARNING") == (missing["status"], missing["level"])
    assert ("/teapot", 418, "WARNING") == (teapot["route"], teapot["status"], teapot["level"])
    assert [] == messages(logs, "request failed")


@pytest.mark.parametrize("raise_server_exceptions", [True, False])
def test_fastapi_500_logged_once_and_propagated(raise_server_exceptions: bool) -> None:
    """An exception in an endpoint: one "request failed" with its traceback, one access
    record with status 500 at ERROR, and the exception reaches the server (TestClient
    raises it) or, told not to raise, the client gets Starlette's 500."""
    with capture_logs() as logs:
        client = TestClient(fastapi_app(), raise_server_exceptions=raise_server_exceptions)
        if raise_server_exceptions:
            with pytest.raises(RuntimeError, match="endpoint failed"):
                client.get("/fail")
        else:
            assert 500 == client.get("/fail").status_code
    (failed,) = messages(logs, "request failed")
    (access,) = access_records(logs)
    assert "ERROR" == failed["level"]
    assert "RuntimeError" == failed["exception"]["type"]
    assert "raise RuntimeError" in failed["exception"]["traceback"]
    assert failed["request_id"] == access["request_id"]
    assert ("/fail", 500, "ERROR") == (access["route"], access["status"], access["level"])
    assert "exception" not in access  # the traceback is written once


def test_an_app_wrapped_whole_sees_starlettes_500_and_logs_the_exception_once() -> None:
    """Wrapped around the whole app (outside Starlette's error middleware), the 500
    response passes through the middleware, which carries the request id; still one
    "request failed"."""
    app = KakashiMiddleware(Starlette(routes=[Route("/boom", boom)]))
    with capture_logs() as logs:
        response = TestClient(app, raise_server_exceptions=False).get("/boom")
    assert 500 == response.status_code
    (failed,) = messages(logs, "request failed")
    (access,) = access_records(logs)
    assert response.headers["x-request-id"] == access["request_id"] == failed["request_id"]
    assert (500, "/boom") == (access["status"], access["route"])
    assert "exception" not in access  # though Starlette sent the 500 from its except block


def test_exception_handlers_one_failure_record_or_none() -> None:
    """Starlette's handler for 500 (it renders the page, then re-raises): one "request
    failed". A handler for one exception class makes it a response: no "request failed"."""

    async def page(request: Request, exc: Exception) -> PlainTextResponse:
        return PlainTextResponse("sorry", status_code=500)

    async def bad_input(request: Request, exc: Exception) -> PlainTextResponse:
        return PlainTextResponse("bad input", status_code=400)

    async def invalid(request: Request) -> PlainTextResponse:
        raise LookupError("no such thing")

    for handlers in ({500: page}, {LookupError: bad_input}):
        app = Starlette(
            routes=[Route("/boom", boom), Route("/invalid", invalid)],
            exception_handlers=handlers,  # type: ignore[arg-type]
        )
        app.add_middleware(KakashiMiddleware)
        with capture_logs() as logs:
            client = TestClient(app, raise_server_exceptions=False)
            client.get("/boom" if 500 in handlers else "/invalid")
        (access,) = access_records(logs)
        if 500 in handlers:
            assert ["ValueError"] == [
                e["exception"]["type"] for e in messages(logs, "request failed")
            ]
            assert 500 == access["status"]
        else:
            assert [] == messages(logs, "request failed")
            assert (400, "WARNING") == (access["status"], access["level"])


def test_streaming_response_size_counts_every_chunk() -> None:
    """A StreamingResponse: response_size is the sum of all chunks and the access
    record is written when the stream ends, after the records logged while streaming."""
    with capture_logs() as logs:
        response = TestClient(starlette_app()).get("/stream")
    assert b"x" * 15 == response.content
    assert ["chunk"] * 5 + ["request"] == [entry["message"] for entry in logs]
    access = logs[-1]
    assert (200, 1 + 2 + 3 + 4 + 5, "/stream") == (
        access["status"],
        access["response_size"],
        access["route"],
    )
    assert "disconnected" not in access
    assert {access["request_id"]} == {entry["request_id"] for entry in logs}


@pytest.mark.parametrize("gone", [OSError("connection reset by peer"), ClientDisconnect()])
def test_client_disconnect_mid_stream_send_raises(gone: Exception) -> None:
    """The client goes away mid-stream and the server's send raises (OSError, as ASGI
    spec 2.4 and uvicorn do, or Starlette's ClientDisconnect): the access record says
    disconnected, with the status as sent and the bytes actually sent; no "request
    failed"."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(3600)  # the client never sends anything more
        raise AssertionError("not reached")

    async def send(message: dict[str, Any]) -> None:
        if len(sent) == 3:
            raise gone
        sent.append(message)

    with capture_logs() as logs, contextlib.suppress(Exception):
        asyncio.run(starlette_app()(asgi_scope("/stream"), receive, send))
    (access,) = access_records(logs)
    assert (200, 1 + 2, True) == (
        access["status"],
        access["response_size"],
        access["disconnected"],
    )
    assert [] == messages(logs, "request failed")


def test_client_disconnect_mid_stream_seen_by_receive() -> None:
    """Before ASGI spec 2.4 Starlette watches receive() for http.disconnect and stops
    the stream; the app returns normally and the record still says disconnected."""
    sent: list[dict[str, Any]] = []

    async def main() -> None:
        disconnect = asyncio.Event()

        async def receive() -> dict[str, Any]:
            await disconnect.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if len(sent) == 3:
                disconnect.set()
            await asyncio.sleep(0)

        await starlette_app()(
            asgi_scope("/stream", asgi={"version": "3.0", "spec_version": "2.3"}), receive, send
        )

    with capture_logs() as logs:
        asyncio.run(main())
    (access,) = access_records(logs)
    assert access["disconnected"] is True
    assert 200 == access["status"]
    assert access["response_size"] < 15
    assert [] == messages(logs, "request failed")


def test_a_client_gone_before_the_response_is_499() -> None:
    """A client that disconnects before any response (the app gives up) gets nginx's
    499, at WARNING, with disconnected."""

    async def waits(scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        assert "http.disconnect" == message["type"]

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        raise AssertionError("nothing is sent")

    with capture_logs() as logs:
        asyncio.run(KakashiMiddleware(waits)(asgi_scope("/slow"), receive, send))
    (access,) = access_records(logs)
    assert (499, "WARNING", True) == (access["status"], access["level"], access["disconnected"])


def test_a_request_cancelled_by_the_server_says_so() -> None:
    """uvicorn cancels requests still running when its graceful-shutdown timeout runs
    out: the access record says cancelled (500: nothing was sent) and the cancellation
    goes on up; it is not an application failure."""
    entered = asyncio.Event()

    async def slow(request: Request) -> PlainTextResponse:
        entered.set()
        await asyncio.sleep(3600)
        raise AssertionError("not reached")

    app = Starlette(routes=[Route("/slow", slow)])
    app.add_middleware(KakashiMiddleware)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        raise AssertionError("nothing is sent")

    async def main() -> None:
        task = asyncio.ensure_future(app(asgi_scope("/slow"), receive, send))
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with capture_logs() as logs:
        asyncio.run(main())
    (access,) = access_records(logs)
    assert (500, True, "/slow") == (access["status"], access["cancelled"], access["route"])
    assert [] == messages(logs, "request failed")


def test_pathsend_and_trailers_complete_the_response(tmp_path: Path) -> None:
    """Responses that end other ways than a last body chunk: Starlette's FileResponse
    through the http.response.pathsend extension (the size is the file's), and a
    response with trailers (it ends with the last trailers message)."""
    file = tmp_path / "report.csv"
    file.write_bytes(b"a,b\n" * 100)

    async def download(request: Request) -> Any:
        from starlette.responses import FileResponse

        return FileResponse(file)

    async def with_trailers(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "trailers": True})
        await send({"type": "http.response.body", "body": b"data", "more_body": False})
        app_log().info("body sent, trailers next")
        await send({"type": "http.response.trailers", "headers": [], "more_trailers": False})

    files = Starlette(routes=[Route("/report", download)])
    files.add_middleware(KakashiMiddleware)
    scope = asgi_scope("/report", extensions={"http.response.pathsend": {}})
    with capture_logs() as logs:
        sent = serve_asgi(files, scope)
        serve_asgi(KakashiMiddleware(with_trailers), asgi_scope("/t"))
    assert "http.response.pathsend" == sent[1]["type"]
    report, trailed = access_records(logs)
    assert (200, 400) == (report["status"], report["response_size"])
    assert ["body sent, trailers next", "request"] == [e["message"] for e in logs[1:]]
    assert 4 == trailed["response_size"]


def test_an_exception_mid_stream_keeps_the_status_sent() -> None:
    """An exception raised after the response started: "request failed" once and the
    access record keeps the status the client saw."""

    async def broken(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"part"
            raise KeyError("gone")

        return StreamingResponse(chunks())

    app = Starlette(routes=[Route("/broken", broken)])
    app.add_middleware(KakashiMiddleware)
    with capture_logs() as logs, pytest.raises(KeyError):
        TestClient(app).get("/broken")
    (failed,) = messages(logs, "request failed")
    (access,) = access_records(logs)
    assert "KeyError" == failed["exception"]["type"]
    assert (200, 4) == (access["status"], access["response_size"])


def test_background_tasks_keep_the_request_id_and_log_after_the_access_record() -> None:
    """The access record is written when the response is complete; background tasks
    that run afterwards (in the same task, in Starlette, or behind FastAPI's HTTP
    middleware) still carry the request id."""

    async def later(request: Request) -> PlainTextResponse:
        from starlette.background import BackgroundTask

        return PlainTextResponse("ok", background=BackgroundTask(app_log().info, "background work"))

    app = Starlette(routes=[Route("/later", later)])
    app.add_middleware(KakashiMiddleware)
    with capture_logs() as logs:
        responses = [TestClient(app).get("/later"), TestClient(fastapi_app()).get("/later")]
    assert ["request", "background work"] * 2 == [entry["message"] for entry in logs]
    assert [r.headers["x-request-id"] for r in responses] == [e["request_id"] for e in logs[1::2]]


def test_mounted_apps_give_the_whole_template() -> None:
    """Inside a Starlette Mount and a mounted FastAPI sub-app, the route is the whole
    template: the mount's path and then the inner route's."""
    with capture_logs() as logs:
        TestClient(starlette_app()).get("/m/k1/b/2")
        TestClient(starlette_app()).get("/m/k2/b/3")  # another middleware: no cache
        TestClient(fastapi_app()).get("/sub/x/9")
    assert ["/m/{k}/b/{z}", "/m/{k}/b/{z}", "/sub/x/{y}"] == [
        entry["route"] for entry in access_records(logs)
    ]


# -- context in FastAPI's threadpool (issue #13, section 2) ---------------------------


def test_sync_endpoint_in_the_threadpool_carries_request_id_and_bound_values() -> None:
    """A `def` endpoint runs in FastAPI's threadpool; its records carry the request id
    and what an async dependency and an HTTP middleware bound with bind_context."""
    with capture_logs() as logs:
        response = TestClient(fastapi_app()).get("/sync")
    (record,) = messages(logs, "in the threadpool")
    assert threading.main_thread().name != response.json()["thread"]
    expected = {"request_id": response.headers["x-request-id"], "user": "u-7", "tenant": "acme"}
    assert expected == {key: record[key] for key in expected}


def test_run_in_executor_from_an_async_endpoint_carries_the_context() -> None:
    """kakashi.concurrency.run_in_executor carries the request id into the executor's
    thread; the loop's own run_in_executor does not (why the helper exists)."""
    with capture_logs() as logs:
        response = TestClient(fastapi_app()).get("/executor")
    carried, plain = messages(logs, "in the executor")
    assert ("carried", response.headers["x-request-id"]) == (
        carried["label"],
        carried["request_id"],
    )
    assert "plain" == plain["label"]
    assert "request_id" not in plain


# -- websockets ------------------------------------------------------------------------


def test_websocket_session_one_access_record() -> None:
    """A websocket session: one access record when it ends, method WEBSOCKET, status 101,
    the client's close code, bytes sent; records inside carry the request id."""
    with capture_logs() as logs:
        client = TestClient(starlette_app())
        with client.websocket_connect("/ws") as ws:
            ws.send_text("hello")
            assert "HELLO" == ws.receive_text()
            ws.send_text("abc")
            assert "ABC" == ws.receive_text()
            ws.close(code=1001)
    opened, access = logs
    assert opened["request_id"] == access["request_id"]
    expected = {
        "method": "WEBSOCKET",
        "path": "/ws",
        "route": "/ws",
        "status": 101,
        "response_size": 8,
        "close_code": 1001,
        "scheme": "ws",
        "level": "INFO",
    }
    assert_access_fields(access, expected)


def test_websocket_refused_before_accept_is_403() -> None:
    """A websocket closed by the app before accepting: status 403 (what the server
    answers the handshake) and the app's close code."""
    with capture_logs() as logs:
        client = TestClient(starlette_app())
        with pytest.raises(WebSocketDisconnect), client.websocket_connect("/refused") as ws:
            ws.receive_text()
    (access,) = access_records(logs)
    assert (403, 1008, "WARNING") == (access["status"], access["close_code"], access["level"])


# -- settings --------------------------------------------------------------------------


def test_excluded_path_has_no_record_but_keeps_the_id() -> None:
    """An excluded path (health check) writes no access record; the id is still echoed."""
    with capture_logs() as logs:
        client = TestClient(starlette_app(exclude_paths=["/health"]))
        response = client.get("/health")
        client.get("/items/1")
    assert re.fullmatch("[0-9a-f]{32}", response.headers["x-request-id"])
    assert ["/items/1"] == [entry["path"] for entry in access_records(logs)]


def test_redaction_of_query_parameters_and_headers() -> None:
    """Secret query parameters and headers are masked; look-alike keys are not."""
    with capture_logs() as logs:
        TestClient(starlette_app(log_headers=True)).get(
            "/items/1?token=abc&monkey=1&api_key=k",
            headers={"Authorization": "Bearer s3cret", "Author": "me", "Cookie": "sid=1"},
        )
    (access,) = access_records(logs)
    assert f"token={REDACTED}&monkey=1&api_key={REDACTED}" == access["query"]
    headers = access["request_headers"]
    assert REDACTED == headers["authorization"] == headers["cookie"]
    assert "me" == headers["author"]
    assert "s3cret" not in json.dumps(logs)


@pytest.mark.parametrize(
    ("peer", "expected_ip", "has_port"),
    [("10.0.0.5", "1.2.3.4", False), ("203.0.113.9", "203.0.113.9", True)],
)
def test_forwarded_for_trusted_only_from_proxies(
    peer: str, expected_ip: str, has_port: bool
) -> None:
    """X-Forwarded-For is believed from a trusted proxy and ignored from anyone else."""

    async def main() -> None:
        app = starlette_app(trusted_proxies=["10.0.0.0/8"])
        transport = httpx.ASGITransport(app=app, client=(peer, 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            await client.get("/items/1", headers={"X-Forwarded-For": "1.2.3.4"})

    with capture_logs() as logs:
        asyncio.run(main())
    (access,) = access_records(logs)
    assert expected_ip == access["client_ip"]
    assert has_port == ("client_port" in access)


def test_request_id_from_the_header_only_when_trusted() -> None:
    """An incoming X-Request-ID is used (and echoed) only with trust_request_id."""
    with capture_logs() as logs:
        plain = TestClient(starlette_app()).get("/items/1", headers={"X-Request-ID": "up-1"})
        trusted = TestClient(starlette_app(trust_request_id=True)).get(
            "/items/1", headers={"X-Request-ID": "up-1"}
        )
    first, second = access_records(logs)
    assert "up-1" != plain.headers["x-request-id"] == first["request_id"]
    assert "up-1" == first["upstream_request_id"]
    assert "up-1" == trusted.headers["x-request-id"] == second["request_id"]
    assert ["up-1"] == trusted.headers.get_list("x-request-id")


def test_request_body_only_when_asked_and_capped() -> None:
    """Bodies are not logged unless asked; then capped at body_limit bytes."""

    async def upload(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(len(await request.body())))

    def app(**options: Any) -> Starlette:
        made = Starlette(routes=[Route("/upload", upload, methods=["POST"])])
        made.add_middleware(KakashiMiddleware, **options)
        return made

    with capture_logs() as logs:
        TestClient(app()).post("/upload", content=b"a" * 40)
        TestClient(app(log_request_body=True, log_response_body=True, body_limit=16)).post(
            "/upload", content=b"a" * 40
        )
    plain, asked = access_records(logs)
    assert "request_body" not in plain
    assert ("a" * 16, True, "40") == (
        asked["request_body"],
        asked["request_body_truncated"],
        asked["response_body"],
    )


def test_hostile_headers_and_paths_are_capped_and_kept_in_one_line() -> None:
    """What a client may send that the test clients refuse (CRLF, latin-1 bytes, huge
    values) straight in the scope: capped, and the JSON line stays one line."""
    scope = asgi_scope(
        "/items/" + "é" * 300,
        headers=[
            (b"user-agent", b'evil\r\n{"level":"CRITICAL"}' + b"\xff" * 500),
            (b"x-request-id", b"forged\r\nid"),
        ],
    )
    lines: list[str] = []
    pipeline = kakashi.Pipeline(
        kakashi.PipelineConfig(writers=(kakashi.callable_writer(lines.append),))
    )
    app = starlette_app(max_value_length=64, trust_request_id=True, pipeline=pipeline)
    sent = serve_asgi(app, scope)
    (line,) = lines
    assert "\n" not in line.rstrip("\n")
    access = json.loads(line)
    assert access["path"].endswith("…[+243 chars]")
    assert access["user_agent"].startswith("evil\r\n")
    assert len(access["user_agent"]) < 100
    assert re.fullmatch("[0-9a-f]{32}", access["request_id"])
    headers = dict(sent[0]["headers"])
    assert access["request_id"].encode() == headers[b"x-request-id"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"settings": RequestLogging(), "exclude_paths": ["/h"]}, "not both"),
        ({"settings": {"logger": "x"}}, "RequestLogging"),
        ({"drain_timeout": -1}, "drain_timeout"),
        ({"drain_timeout": float("nan")}, "drain_timeout"),
        ({"drain_timeout": True}, "drain_timeout"),
        ({"slow_request_ms": -5}, "slow_request_ms"),
        ({"no_such_setting": 1}, "no_such_setting"),
    ],
)
def test_bad_settings_are_refused_when_the_middleware_is_made(
    options: dict[str, Any], message: str
) -> None:
    """Configuration mistakes raise at construction, naming the setting."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("never called")

    with pytest.raises((TypeError, ValueError), match=message):
        KakashiMiddleware(app, **options)


def test_the_same_settings_object_or_keywords() -> None:
    """A RequestLogging given as settings= is used as is."""
    settings = RequestLogging(request_id_header="X-Trace")
    middleware = KakashiMiddleware(starlette_app(middleware=False), settings=settings)
    assert settings is middleware.settings
    with capture_logs() as logs:
        response = TestClient(middleware).get("/items/1")
    (access,) = access_records(logs)
    assert response.headers["x-trace"] == access["request_id"]
    assert "x-request-id" not in response.headers


# -- the drain at shutdown -------------------------------------------------------------


@pytest.mark.parametrize("drain_on_shutdown", [True, False])
def test_lifespan_shutdown_drains_after_the_apps_own_shutdown(
    tmp_path: Path, drain_on_shutdown: bool
) -> None:
    """At the lifespan's shutdown (TestClient runs it on leaving its with-block) the
    middleware drains the backend after the app's own shutdown logged: everything is in
    the file; without the drain the queued records are still waiting (a batch_timeout of
    ten minutes keeps them queued)."""
    path = tmp_path / "app.log"
    pipeline = keeping_pipeline(kakashi.file_writer(str(path)), batch_timeout=600.0)
    app_log = kakashi.get_logger("lifespan", pipeline)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        app_log.info("app shut down")

    app = Starlette(routes=[Route("/items/{n}", item)], lifespan=lifespan)
    app.add_middleware(KakashiMiddleware, pipeline=pipeline, drain_on_shutdown=drain_on_shutdown)
    with TestClient(app) as client:
        for n in range(20):
            client.get(f"/items/{n}")
    written = [json.loads(line) for line in path.read_text().splitlines()]
    if drain_on_shutdown:
        assert 20 == sum(entry["message"] == "request" for entry in written)
        assert "app shut down" == written[-1]["message"]
    else:
        assert [] == written
    pipeline.shutdown()


SERVER_APP = """
import asyncio
import os

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

import kakashi
from kakashi.core.async_interface import setup_async_logging
from kakashi.integrations.asgi import KakashiMiddleware

setup_async_logging(
    environment="production",
    log_directory=os.environ["KAKASHI_TEST_LOGS"],
    batch_timeout=float(os.environ["KAKASHI_TEST_BATCH_TIMEOUT"]),
    batch_size=int(os.environ["KAKASHI_TEST_BATCH_SIZE"]),
)
log = kakashi.get_logger("app")


async def hello(request):
    log.debug("not written: the production preset logs INFO and up")
    return PlainTextResponse("hello")


async def forever(request):
    async def chunks():
        while True:
            yield b"x" * 1000
            await asyncio.sleep(0.001)

    return StreamingResponse(chunks())


app = KakashiMiddleware(
    Starlette(routes=[Route("/hello", hello), Route("/forever", forever)]),
    drain_on_shutdown=os.environ["KAKASHI_TEST_DRAIN"] == "1",
)
"""


class KeepAliveClient(threading.Thread):
    """Sends GET /hello over keep-alive connections as fast as it can, until the server
    is gone; keeps the request id of every response received in full."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.received: list[str] = []

    def run(self) -> None:
        while True:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                while True:
                    connection.request("GET", "/hello")
                    response = connection.getresponse()
                    body = response.read()
                    if response.status != 200 or body != b"hello":
                        raise AssertionError(f"unexpected response {response.status} {body!r}")
                    self.received.append(response.headers["x-request-id"])
                    if response.will_close:
                        break
            except ConnectionRefusedError:
                return  # the server is gone
            except (OSError, http.client.HTTPException):
                pass  # the server closed this connection at shutdown: try a new one
            finally:
                connection.close()


class Uvicorn:
    """A real uvicorn serving SERVER_APP on a free loopback port, in a subprocess. The
    port is held (:class:`HeldPort`; uvicorn binds with ``SO_REUSEADDR`` beside the
    hold) until the harness exits, so no other process listens there meanwhile: the
    readiness probe and the client reach this uvicorn or are refused."""

    def __init__(self, tmp_path: Path, drain: bool, batch_timeout: float) -> None:
        (tmp_path / "served_app.py").write_text(SERVER_APP)
        self.log_file = tmp_path / "logs" / "app.log"
        self.held = HeldPort()
        self.port = self.held.port
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)]),
            "KAKASHI_TEST_LOGS": str(self.log_file.parent),
            "KAKASHI_TEST_BATCH_TIMEOUT": str(batch_timeout),
            "KAKASHI_TEST_BATCH_SIZE": "10000",
            "KAKASHI_TEST_DRAIN": "1" if drain else "0",
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "served_app:app", "--host", "127.0.0.1",
             "--port", str(self.port), "--no-access-log", "--timeout-graceful-shutdown", "30"],
            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.output = ""

    def __enter__(self) -> Uvicorn:
        deadline = time.monotonic() + 60
        while True:  # wait until it listens
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return self
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                self.held.close()
                raise AssertionError(f"uvicorn did not start: {self.process.communicate()[0]!r}")
            time.sleep(0.05)

    def terminate(self) -> int:
        """SIGTERM, then wait for the exit; returns the exit status."""
        self.process.send_signal(signal.SIGTERM)
        self.output = self.process.communicate(timeout=120)[0].decode()
        return self.process.returncode

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_file.read_text().splitlines()]

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.held.close()


def _serve_and_terminate(tmp_path: Path, drain: bool, batch_timeout: float) -> dict[str, Any]:
    """Run a real uvicorn with the middleware, load it from a keep-alive client, SIGTERM
    it after 200 responses; return what the client received and what is on disk."""
    with Uvicorn(tmp_path, drain, batch_timeout) as server:
        client = KeepAliveClient(server.port)
        client.start()
        while len(client.received) < 200 and client.is_alive():
            time.sleep(0.005)
        returncode = server.terminate()
        client.join(timeout=120)
    records = server.records()
    return {
        "returncode": returncode,
        "output": server.output,
        "received": client.received,
        "logged": [entry["request_id"] for entry in records if entry["message"] == "request"],
        "records": records,
    }


@pytest.mark.parametrize("batch_timeout", [0.1, 600.0], ids=["default-batching", "slow-batching"])
def test_uvicorn_sigterm_under_load_every_completed_request_is_on_disk(
    tmp_path: Path, batch_timeout: float
) -> None:
    """A real uvicorn serving the wrapped app, SIGTERMed under keep-alive load after 200
    responses: it dies by the signal (no exit hooks run), yet the file holds exactly one
    access record per response the client received, thanks to the lifespan drain."""
    run = _serve_and_terminate(tmp_path, drain=True, batch_timeout=batch_timeout)
    assert -signal.SIGTERM == run["returncode"], run["output"]
    assert len(run["received"]) >= 200
    assert len(run["logged"]) == len(set(run["logged"]))  # no duplicates
    assert sorted(run["received"]) == sorted(run["logged"])
    assert {"kakashi.access"} == {entry["logger"] for entry in run["records"]}


def test_uvicorn_sigterm_without_the_drain_loses_the_queued_records(tmp_path: Path) -> None:
    """The same with drain_on_shutdown=False: the records still queued when uvicorn
    re-raises SIGTERM are lost (a batch_timeout of ten minutes keeps them queued, as the
    last tenth of a second of records is with the default)."""
    run = _serve_and_terminate(tmp_path, drain=False, batch_timeout=600.0)
    assert -signal.SIGTERM == run["returncode"], run["output"]
    assert len(run["received"]) >= 200
    assert len(run["logged"]) < len(run["received"])


def test_uvicorn_client_gone_mid_stream(tmp_path: Path) -> None:
    """A real client reads part of an endless stream from uvicorn and hangs up: the
    access record says disconnected, with status 200 and at least the bytes the client
    read; no "request failed"."""
    with Uvicorn(tmp_path, drain=True, batch_timeout=0.1) as server:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"GET /forever HTTP/1.1\r\nHost: test\r\n\r\n")
            read = b""
            while len(read) < 20_000:
                read += sock.recv(65536)
        head = read.split(b"\r\n\r\n", 1)[0].decode()
        request_id = re.search(r"x-request-id: (\w+)", head, re.IGNORECASE)
        assert request_id is not None, head
        deadline = time.monotonic() + 60
        while not (server.log_file.exists() and "disconnected" in server.log_file.read_text()):
            assert time.monotonic() < deadline, "no access record after the client left"
            time.sleep(0.05)
        assert -signal.SIGTERM == server.terminate()
    (access,) = [entry for entry in server.records() if entry["message"] == "request"]
    assert (request_id.group(1), "/forever", 200, True) == (
        access["request_id"],
        access["path"],
        access["status"],
        access["disconnected"],
    )
    assert access["response_size"] >= 15_000
    assert [] == [entry for entry in server.records() if entry["message"] == "request failed"]


# -- packaging -------------------------------------------------------------------------


def test_importing_kakashi_loads_no_framework() -> None:
    """`import kakashi` (and its integrations package) imports none of the web stack;
    importing the ASGI module itself does not either: it speaks plain ASGI dicts."""
    code = (
        "import sys, kakashi, kakashi.integrations, kakashi.integrations.asgi;"
        "print(sorted(m for m in ('starlette', 'fastapi', 'uvicorn', 'httpx', 'anyio')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "[]" == out.stdout.strip()
