"""The Flask extension (kakashi.integrations.flask), through Flask's own test client."""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

flask = pytest.importorskip("flask")

import kakashi  # noqa: E402
from kakashi.integrations.flask import KakashiFlask  # noqa: E402
from kakashi.integrations.web import REDACTED, RequestLogging  # noqa: E402
from kakashi.testing import capture_logs  # noqa: E402
from tests.webapps import access_records, app_log, assert_access_fields, messages  # noqa: E402


class Conflict(Exception):
    """An application error that the app's errorhandler answers with 409."""


def make_app(name: str = "shop", **options: Any) -> Any:
    """A small Flask app with the extension, PROPAGATE_EXCEPTIONS off (as in production)."""
    app = flask.Flask(name)
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> Any:
        app_log().info("looking up", item_id=item_id)
        return {"id": item_id}

    @app.get("/health")
    def health() -> str:
        return "ok"

    @app.get("/fail")
    def fail() -> str:
        raise ValueError("broken view")

    @app.get("/conflict")
    def conflict() -> str:
        raise Conflict("taken")

    @app.errorhandler(Conflict)
    def on_conflict(exc: Conflict) -> Any:
        return {"error": str(exc)}, 409

    @app.get("/gone")
    def gone() -> str:
        flask.abort(503)

    @app.post("/form")
    def form() -> Any:
        return {"name": flask.request.form["name"]}

    @app.get("/stream")
    def stream() -> Any:
        count = int(flask.request.args.get("n", "3"))

        def chunks() -> Iterator[str]:
            for i in range(count):
                app_log().info("chunk", i=i)
                yield f"chunk {i}\n"
            if flask.request.args.get("raise"):
                raise RuntimeError("stream broke")

        return flask.Response(flask.stream_with_context(chunks()), mimetype="text/plain")

    @app.get("/file")
    def file() -> Any:
        return flask.send_file(app.config["FILE"], mimetype="text/plain")

    KakashiFlask(app, **options)
    return app


@contextlib.contextmanager
def keeping(logger: logging.Logger) -> Iterator[list[logging.LogRecord]]:
    """The stdlib records *logger* emits inside the block (after its filters)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def test_one_access_record_with_the_shared_fields() -> None:
    """One access record with route, status, size, client, agent, version and scheme;
    the id is echoed, carried by a record logged in the view, and unbound afterwards."""
    client = make_app().test_client()
    with capture_logs() as logs:
        response = client.get("/items/7?page=2&token=abc", headers={"User-Agent": "curl/8"})
        app_log().info("after")
    inside, access, after = logs
    request_id = response.headers["X-Request-ID"]
    assert re.fullmatch("[0-9a-f]{32}", request_id)
    assert ("looking up", request_id) == (inside["message"], inside["request_id"])
    assert "request_id" not in after
    assert "request_id" not in kakashi.get_context()
    expected = {
        "level": "INFO",
        "request_id": request_id,
        "method": "GET",
        "path": "/items/7",
        "route": "/items/<int:item_id>",
        "query": f"page=2&token={REDACTED}",
        "status": 200,
        "response_size": len(response.data),
        "client_ip": "127.0.0.1",
        "user_agent": "curl/8",
        "http_version": "1.1",
        "scheme": "http",
    }
    assert_access_fields(access, expected)
    fields = [k for k in access if k in expected or k in ("duration_ms", "client_port")]
    order = ["request_id", "method", "path", "route", "query", "status", "duration_ms"]
    assert order == fields[1:8]


def test_settings_as_object_or_keywords() -> None:
    """The settings come as a RequestLogging or as its keywords, not both; bad ones fail
    at construction, and a second extension on one app is refused."""
    settings = RequestLogging(request_id_header="X-Trace")
    assert settings is KakashiFlask(settings=settings).settings
    assert "X-Trace" == KakashiFlask(request_id_header="X-Trace").settings.request_id_header
    with pytest.raises(TypeError, match="not both"):
        KakashiFlask(settings=settings, slow_request_ms=5)
    with pytest.raises(TypeError, match="RequestLogging"):
        KakashiFlask(settings={"slow_request_ms": 5})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="slow_request_ms"):
        KakashiFlask(slow_request_ms=-1)
    app = flask.Flask("factory")
    extension = KakashiFlask()
    extension.init_app(app)
    assert extension is app.extensions["kakashi"]
    with pytest.raises(ValueError, match="already has"):
        KakashiFlask(app)


def test_request_id_from_the_header_only_when_trusted() -> None:
    """A client's X-Request-ID is used only with trust_request_id; otherwise it is kept
    as upstream_request_id and a fresh id is generated."""
    headers = {"X-Request-ID": "edge-42"}
    with capture_logs() as logs:
        untrusted = make_app().test_client().get("/health", headers=headers)
        trusted = make_app(trust_request_id=True).test_client().get("/health", headers=headers)
    first, second = access_records(logs)
    assert "edge-42" != untrusted.headers["X-Request-ID"] == first["request_id"]
    assert "edge-42" == first["upstream_request_id"]
    assert "edge-42" == trusted.headers["X-Request-ID"] == second["request_id"]


def test_level_by_status_and_no_route_for_a_404() -> None:
    """2xx INFO, 4xx WARNING, 5xx ERROR; an unmatched path has no route."""
    client = make_app().test_client()
    with capture_logs() as logs:
        client.get("/health")
        client.get("/nowhere")
        client.get("/gone")
    records = access_records(logs)
    assert [(200, "INFO"), (404, "WARNING"), (503, "ERROR")] == [
        (e["status"], e["level"]) for e in records
    ]
    assert "route" not in records[1]


def test_excluded_paths_and_the_slow_warning() -> None:
    """An excluded path writes nothing but still echoes its id; slow_request_ms=0 makes
    every other request slow."""
    client = make_app(exclude_paths=["/health"], slow_request_ms=0).test_client()
    with capture_logs() as logs:
        response = client.get("/health")
        client.get("/items/1")
    assert "X-Request-ID" in response.headers
    assert ["looking up", "request", "slow request"] == [e["message"] for e in logs]
    assert "/items/1" == logs[2]["path"]


def test_an_unhandled_exception_is_logged_once_with_a_500() -> None:
    """An exception no errorhandler takes: one "request failed" with the traceback, the
    access record says 500, and Flask's own duplicate on app.logger is dropped."""
    app = make_app("shop-dropping")
    with keeping(app.logger) as flask_records, capture_logs() as logs:
        response = app.test_client().get("/fail")
    assert 500 == response.status_code
    (failed,) = messages(logs, "request failed")
    assert "ValueError" == failed["exception"]["type"]
    assert "broken view" in failed["exception"]["traceback"]
    assert response.headers["X-Request-ID"] == failed["request_id"]
    (access,) = access_records(logs)
    assert (500, "ERROR") == (access["status"], access["level"])
    assert [] == flask_records
    assert "request_id" not in kakashi.get_context()


def test_flask_exception_log_kept_when_asked() -> None:
    """flask_exception_log=True keeps Flask's "Exception on ..." record."""
    app = make_app("shop-keeping", flask_exception_log=True)
    with keeping(app.logger) as flask_records, capture_logs() as logs:
        app.test_client().get("/fail")
    assert 1 == len(messages(logs, "request failed"))
    assert ["Exception on /fail [GET]"] == [r.getMessage() for r in flask_records]


def test_an_exception_propagated_in_testing_mode() -> None:
    """With PROPAGATE_EXCEPTIONS (testing) the exception reaches the caller; it is
    logged once and the access record says 500; the context is clean afterwards."""
    app = make_app()
    app.config["PROPAGATE_EXCEPTIONS"] = True
    with capture_logs() as logs, pytest.raises(ValueError, match="broken view"):
        app.test_client().get("/fail")
    assert 1 == len(messages(logs, "request failed"))
    assert [500] == [e["status"] for e in access_records(logs)]
    assert "request_id" not in kakashi.get_context()


def test_an_exception_the_app_handles_is_not_a_failure() -> None:
    """An errorhandler that answers 409: no "request failed", the access record says 409."""
    with capture_logs() as logs:
        response = make_app().test_client().get("/conflict")
    assert 409 == response.status_code
    assert [] == messages(logs, "request failed")
    assert [(409, "WARNING")] == [(e["status"], e["level"]) for e in access_records(logs)]


def test_an_errorhandler_for_500_still_one_failure() -> None:
    """Flask turns an unhandled exception into the errorhandler(500)'s page: the
    exception is logged once and the access record has the page's status."""
    app = make_app()

    @app.errorhandler(500)
    def page(exc: Exception) -> Any:
        return "sorry", 502

    with capture_logs() as logs:
        assert 502 == app.test_client().get("/fail").status_code
    assert 1 == len(messages(logs, "request failed"))
    assert [502] == [e["status"] for e in access_records(logs)]


def test_an_early_answer_from_another_before_request_is_logged() -> None:
    """A before_request registered before the extension that answers 401 still gets its
    access record (the extension's hook runs first)."""
    app = flask.Flask("guarded")

    @app.before_request
    def guard() -> Any:
        return "no", 401

    @app.get("/secret")
    def secret() -> str:
        return "s"

    KakashiFlask(app)
    with capture_logs() as logs:
        app.test_client().get("/secret")
    assert [(401, "/secret")] == [(e["status"], e["route"]) for e in access_records(logs)]


def test_a_stream_is_counted_and_logged_when_closed() -> None:
    """A streamed response: the access record comes when the server closes the body,
    with the size of every chunk; records logged by the generator carry the id."""
    client = make_app().test_client()
    with capture_logs() as logs:
        response = client.get("/stream?n=3", buffered=False)
        assert [] == access_records(logs)
        body = b"".join(response.response)
        response.close()
    chunk_logs = [e for e in logs if e["message"] == "chunk"]
    assert 3 == len(chunk_logs)
    request_id = response.headers["X-Request-ID"]
    assert {request_id} == {e["request_id"] for e in chunk_logs}
    (access,) = access_records(logs)
    assert (200, len(body)) == (access["status"], access["response_size"])
    assert "disconnected" not in access
    assert "request_id" not in kakashi.get_context()


def test_a_client_leaving_mid_stream() -> None:
    """A client that leaves after the first chunk: the access record says what was sent
    and ``disconnected``; the context is clean."""
    client = make_app().test_client()
    with capture_logs() as logs:
        response = client.get("/stream?n=100", buffered=False)
        chunks = iter(response.response)
        first = next(chunks)
        next(chunks)
        response.close()
    (access,) = access_records(logs)
    assert 200 == access["status"]
    assert access["disconnected"] is True
    assert len(first) <= access["response_size"] < 100 * len(first)
    assert "request_id" not in kakashi.get_context()


def test_an_exception_in_a_stream_is_logged_once() -> None:
    """A generator that raises after its chunks: one "request failed", the access record
    has the status that was sent and the size of the chunks sent."""
    client = make_app().test_client()
    with capture_logs() as logs:
        response = client.get("/stream?n=2&raise=1", buffered=False)
        with pytest.raises(RuntimeError, match="stream broke"):
            b"".join(response.response)
        response.close()
    (failed,) = messages(logs, "request failed")
    assert "RuntimeError" == failed["exception"]["type"]
    (access,) = access_records(logs)
    assert (200, len(b"chunk 0\nchunk 1\n")) == (access["status"], access["response_size"])
    assert "disconnected" not in access


def test_send_file_keeps_the_file_wrapper(tmp_path: Path) -> None:
    """send_file's response keeps the server's file wrapper (sendfile); its size is the
    file's, and the record is written when the server closes it."""
    path = tmp_path / "data.txt"
    path.write_bytes(b"x" * 5000)
    app = make_app()
    app.config["FILE"] = str(path)
    with capture_logs() as logs:
        response = app.test_client().get("/file", buffered=False)
        assert [] == access_records(logs)
        assert 5000 == len(b"".join(response.response))
        response.close()
        app.test_client().head("/file").close()
    full, head = access_records(logs)
    assert (200, 5000) == (full["status"], full["response_size"])
    assert ("HEAD", 0) == (head["method"], head["response_size"])


def test_head_has_no_body() -> None:
    """A HEAD request's access record has response_size 0."""
    with capture_logs() as logs:
        make_app().test_client().head("/items/3")
    assert [("HEAD", 0)] == [(e["method"], e["response_size"]) for e in access_records(logs)]


def test_bodies_only_when_asked_and_capped() -> None:
    """No bodies by default; with log_request_body/log_response_body they are capped at
    body_limit, and the view still reads the form the extension logged."""
    with capture_logs() as logs:
        plain = make_app().test_client().post("/form", data={"name": "a" * 40})
        asked = make_app(log_request_body=True, log_response_body=True, body_limit=16)
        response = asked.test_client().post("/form", data={"name": "b" * 40})
    assert 200 == plain.status_code
    assert {"name": "b" * 40} == response.json
    first, second = access_records(logs)
    assert "request_body" not in first and "response_body" not in first
    assert "name=" + "b" * 11 == second["request_body"]
    assert second["request_body_truncated"] is True
    assert response.data[:16].decode() == second["response_body"]


def test_redacted_headers_and_forwarded_for_from_trusted_proxies() -> None:
    """Secret headers are masked; X-Forwarded-For counts only from a trusted proxy."""
    app = make_app(log_headers=True, trusted_proxies=["10.0.0.0/8"])
    client = app.test_client()
    headers = {"Authorization": "Bearer s3cret", "Author": "me", "X-Forwarded-For": "1.2.3.4"}
    with capture_logs() as logs:
        client.get("/health", headers=headers)
        client.get("/health", headers=headers, environ_base={"REMOTE_ADDR": "10.0.0.5"})
    direct, proxied = access_records(logs)
    assert REDACTED == direct["request_headers"]["authorization"]
    assert "me" == direct["request_headers"]["author"]
    assert "s3cret" not in str(logs)
    assert ("127.0.0.1", "1.2.3.4") == (direct["client_ip"], proxied["client_ip"])


def test_hostile_paths_and_headers_are_capped_and_kept_on_one_line(tmp_path: Path) -> None:
    """Non-ASCII, CRLF and oversized values arrive capped; the JSON line stays one line."""
    path = tmp_path / "access.log"
    writer = kakashi.file_writer(str(path))
    pipeline = kakashi.Pipeline(kakashi.PipelineConfig(min_level="DEBUG", writers=[writer]))
    settings = RequestLogging(pipeline=pipeline, max_value_length=64)
    app = make_app(settings=settings)
    agent = "é\x1b[31m" + "A" * 500
    app.test_client().get("/caf%C3%A9%0d%0aX-Injected:%201", headers={"User-Agent": agent})
    pipeline.flush()
    (line,) = path.read_text(encoding="utf-8").splitlines()
    access = json.loads(line)
    assert "/café\r\nX-Injected: 1" == access["path"]
    assert access["user_agent"].endswith("…[+442 chars]")
    assert 404 == access["status"]


def test_importing_kakashi_loads_no_framework() -> None:
    """``import kakashi`` and ``import kakashi.integrations`` load neither Flask nor
    gunicorn; importing the extension loads Flask."""
    code = (
        "import sys, kakashi, kakashi.integrations;"
        "print(sorted(m for m in ('flask','werkzeug','gunicorn') if m in sys.modules));"
        "import kakashi.integrations.flask, kakashi.integrations.gunicorn;"
        "print('flask' in sys.modules, 'gunicorn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert ["[]", "True False"] == out.stdout.split("\n")[:2]


def test_concurrent_requests_on_a_threaded_server_keep_their_own_ids() -> None:
    """Werkzeug's threaded server, four requests in flight at once (a barrier in the
    view): each view record carries its own request's id, and every id is unbound after."""
    from werkzeug.serving import make_server

    barrier = threading.Barrier(4, timeout=30)
    app = flask.Flask("threaded")

    @app.get("/work/<int:n>")
    def work(n: int) -> Any:
        barrier.wait()
        app_log().info("working", n=n)
        return {"n": n, "context": kakashi.get_context().get("request_id")}

    KakashiFlask(app)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    replies: dict[int, tuple[str, str]] = {}

    def fetch(n: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        connection.request("GET", f"/work/{n}")
        response = connection.getresponse()
        replies[n] = (response.headers["X-Request-ID"], json.loads(response.read())["context"])
        connection.close()

    with capture_logs() as logs:
        serving.start()
        clients = [threading.Thread(target=fetch, args=(n,)) for n in range(8)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(timeout=60)
        server.shutdown()
        serving.join(timeout=30)
    assert 8 == len(replies)
    assert all(header == bound for header, bound in replies.values())
    working = {e["n"]: e["request_id"] for e in logs if e["message"] == "working"}
    assert {n: header for n, (header, _bound) in replies.items()} == working
    by_path = {e["path"]: e["request_id"] for e in access_records(logs)}
    assert {f"/work/{n}": working[n] for n in range(8)} == by_path


def test_a_body_over_max_content_length_is_left_to_the_view() -> None:
    """With log_request_body, a body over Flask's MAX_CONTENT_LENGTH is not read by the
    extension (no error reported); the view's own read answers 413 as Flask does."""
    app = make_app(log_request_body=True)
    app.config["MAX_CONTENT_LENGTH"] = 32
    errors = dict(kakashi.error_counts())
    with capture_logs() as logs:
        response = app.test_client().post("/form", data={"name": "x" * 100})
    assert 413 == response.status_code
    (access,) = access_records(logs)
    assert (413, False) == (access["status"], "request_body" in access)
    assert errors == kakashi.error_counts()
