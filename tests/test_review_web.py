"""Review of the three web integrations (#13 section 3): attacks on where they disagree
with each other or with docs/web.md (the contract), or break the way production breaks them.

Each test sends the same kind of request through the adapters' own test clients (Flask's
``test_client``, Starlette's ``TestClient`` and ``httpx.ASGITransport``, Django's
``Client``/``AsyncClient``) or, for input a client would refuse to send, a raw ASGI scope.
What cannot be fixed inside the adapters is marked ``xfail(strict=True)`` with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

flask = pytest.importorskip("flask")
django = pytest.importorskip("django")
starlette = pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")

from django.http import HttpResponse, StreamingHttpResponse  # noqa: E402
from django.test import AsyncClient, Client  # noqa: E402
from django.urls import path as django_path  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import PlainTextResponse, Response  # noqa: E402
from starlette.routing import Mount, Route  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

import kakashi  # noqa: E402
from kakashi.formatters import LogfmtFormatter, TextFormatter  # noqa: E402
from kakashi.integrations import web  # noqa: E402
from kakashi.integrations.asgi import KakashiMiddleware as AsgiMiddleware  # noqa: E402
from kakashi.integrations.django import KakashiMiddleware as DjangoMiddleware  # noqa: E402
from kakashi.integrations.flask import KakashiFlask  # noqa: E402
from kakashi.integrations.web import RequestLogging  # noqa: E402
from kakashi.testing import capture_logs  # noqa: E402
from tests import webapps  # noqa: E402
from tests.conftest import balanced, keeping_pipeline  # noqa: E402
from tests.webapps import (  # noqa: E402
    DJANGO_MIDDLEWARE,
    app_log,
    asgi_scope,
    messages,
    only,
    record_calls,
    serve_asgi,
)

BODY = b"item body"
pytestmark = pytest.mark.usefixtures("django_configured", "no_request_id_left")


# -- the same site in the three frameworks ----------------------------------------------


def flask_site(**options: Any) -> Any:
    """A Flask app with the site's routes, PROPAGATE_EXCEPTIONS off (as in production)."""
    app = flask.Flask("review")
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.route("/items/<int:n>", methods=["GET", "HEAD"])
    def item(n: int) -> Any:
        app_log().info("in view")
        return BODY

    @app.get("/empty")
    def empty() -> Any:
        return "", 204

    @app.get("/unchanged")
    def unchanged() -> Any:
        return "", 304

    @app.get("/moved")
    def moved() -> Any:
        return flask.redirect("/items/1")

    @app.get("/boom")
    def boom() -> Any:
        raise RuntimeError("boom")

    @app.get("/health")
    def health() -> Any:
        return "ok"

    @app.get("/down")
    def down() -> Any:
        return "down", 503

    @app.post("/read")
    def read() -> Any:
        return str(len(flask.request.stream.read()))

    KakashiFlask(app, **options)
    return app


async def s_item(request: Request) -> Response:
    app_log().info("in view")
    return PlainTextResponse(BODY)


async def s_empty(request: Request) -> Response:
    return Response(status_code=204)


async def s_unchanged(request: Request) -> Response:
    return Response(status_code=304)


async def s_moved(request: Request) -> Response:
    return Response(status_code=302, headers={"location": "/items/1"})


async def s_boom(request: Request) -> Response:
    raise RuntimeError("boom")


async def s_health(request: Request) -> Response:
    return PlainTextResponse("ok")


async def s_down(request: Request) -> Response:
    return PlainTextResponse("down", status_code=503)


STARLETTE_ROUTES = [
    Route("/items/{n:int}", s_item, methods=["GET", "HEAD"]),
    Route("/empty", s_empty),
    Route("/unchanged", s_unchanged),
    Route("/moved", s_moved),
    Route("/boom", s_boom),
    Route("/health", s_health),
    Route("/down", s_down),
]


def starlette_site(**options: Any) -> Starlette:
    return Starlette(routes=STARLETTE_ROUTES, middleware=[Middleware(AsgiMiddleware, **options)])


def d_item(request: Any, n: int) -> HttpResponse:
    app_log().info("in view")
    return HttpResponse(BODY)


def d_boom(request: Any) -> HttpResponse:
    raise RuntimeError("boom")


def d_read(request: Any) -> HttpResponse:
    read_by_middleware = hasattr(request, "_body")
    total = 0
    while chunk := request.read(65536):
        total += len(chunk)
    return HttpResponse(f"{total} {read_by_middleware}")


def d_stream(request: Any) -> StreamingHttpResponse:
    def chunks() -> Iterator[bytes]:
        yield b"a"
        yield b"b"

    return StreamingHttpResponse(chunks())


#: The URLconf: a module object (Django accepts one for ROOT_URLCONF).
urls = types.ModuleType("kakashi_review_urls")
urls.urlpatterns = [
    django_path("items/<int:n>", d_item),
    django_path("empty", lambda request: HttpResponse(status=204)),
    django_path("unchanged", lambda request: HttpResponse(status=304)),
    django_path("moved", lambda request: HttpResponse(status=302, headers={"Location": "/"})),
    django_path("boom", d_boom),
    django_path("health", lambda request: HttpResponse("ok")),
    django_path("down", lambda request: HttpResponse("down", status=503)),
    django_path("read", d_read),
    django_path("stream", d_stream),
]


class SyncOnlyMiddleware(webapps.PassingMiddleware):
    """A middleware that cannot run async: Django then runs everything below it (Kakashi's
    too) in sync mode, in a thread, even under ASGI."""

    sync_capable = True
    async_capable = False


#: This file's URLs, with no cap on an upload's size (a test sends 2 MB).
django_site = functools.partial(
    webapps.django_site, urls, overrides={"DATA_UPLOAD_MAX_MEMORY_SIZE": None}
)


def through(
    framework: str, method: str, url: str, headers: dict[str, str] | None = None, **options: Any
) -> tuple[int, dict[str, str], list[dict[str, Any]]]:
    """Send one request through *framework*'s adapter and test client: its status, its
    headers (names lowercased) and what was logged."""
    headers = headers or {}
    with capture_logs() as logs:
        if framework == "flask":
            client = flask_site(**options).test_client()
            response = client.open(
                url,
                method=method,
                headers=headers,
                environ_base={"REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "5555"},
            )
            status, got = response.status_code, dict(response.headers)
        elif framework == "starlette":
            client = TestClient(
                starlette_site(**options), raise_server_exceptions=False, client=("127.0.0.1", 5555)
            )
            response = client.request(method, url, headers=headers, follow_redirects=False)
            status, got = response.status_code, dict(response.headers)
        else:
            with django_site(**options):
                django_client = Client(
                    REMOTE_ADDR="127.0.0.1", REMOTE_PORT="5555", raise_request_exception=False
                )
                response = django_client.generic(method, url, headers=headers)
            status, got = response.status_code, dict(response.headers)
    return status, {key.lower(): value for key, value in got.items()}, logs


FRAMEWORKS = ["flask", "starlette", "django"]


# -- consistency: the same request, the same record ------------------------------------


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize(
    ("method", "url", "status", "level"),
    [
        ("GET", "/items/7", 200, "INFO"),
        ("GET", "/empty", 204, "INFO"),
        ("GET", "/unchanged", 304, "INFO"),
        ("GET", "/moved", 302, "INFO"),
        ("GET", "/nowhere", 404, "WARNING"),
        ("GET", "/boom", 500, "ERROR"),
    ],
)
def test_the_same_request_gives_the_same_record_types_and_level(
    framework: str, method: str, url: str, status: int, level: str
) -> None:
    """Every adapter writes one access record with the same field types (status int,
    duration_ms float, client_port int, response_size int) and the level by status."""
    got_status, headers, logs = through(framework, method, url)
    access = only(logs, "request")
    assert (status, status, level) == (got_status, access["status"], access["level"])
    if not (framework == "starlette" and status == 500):
        # docs/asgi.md: Starlette's own 500 page is sent by ServerErrorMiddleware, outside
        # the user middleware stack, so it carries no id unless the app is wrapped whole.
        assert headers["x-request-id"] == access["request_id"]
    types_seen = {
        key: type(access[key])
        for key in ("status", "duration_ms", "client_port", "response_size", "method", "path")
    }
    assert {
        "status": int,
        "duration_ms": float,
        "client_port": int,
        "response_size": int,
        "method": str,
        "path": str,
    } == types_seen
    assert (url, "127.0.0.1", 5555) == (access["path"], access["client_ip"], access["client_port"])
    if status in (204, 304):
        assert 0 == access["response_size"]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_head_request_sends_no_body_so_its_size_is_zero(framework: str) -> None:
    """docs/web.md: response_size is the bytes of response body sent. A HEAD response has
    none on the wire (the server drops what the app wrote), in every framework."""
    status, _headers, logs = through(framework, "HEAD", "/items/7")
    access = only(logs, "request")
    assert (200, "HEAD", 0) == (status, access["method"], access["response_size"])


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_an_excluded_path_has_no_record_and_still_echoes_an_id(framework: str) -> None:
    """Excluded paths: no access record, but the id is still made and echoed."""
    status, headers, logs = through(framework, "GET", "/health", exclude_paths=["/health"])
    assert 200 == status
    assert 32 == len(headers["x-request-id"])
    assert [] == messages(logs, "request")


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_trusted_id_and_forwarded_for_the_same_everywhere(framework: str) -> None:
    """A trusted request id is used and echoed; X-Forwarded-For from a trusted peer gives
    the client, and no port (the port is the proxy's)."""
    _status, headers, logs = through(
        framework,
        "GET",
        "/items/7",
        {"X-Request-ID": "edge-1", "X-Forwarded-For": "198.51.100.7, 127.0.0.1"},
        trust_request_id=True,
        trusted_proxies=["127.0.0.1"],
    )
    access = only(logs, "request")
    assert ("edge-1", "edge-1", "edge-1") == (
        headers["x-request-id"],
        access["request_id"],
        only(logs, "in view")["request_id"],
    )
    assert "198.51.100.7" == access["client_ip"]
    assert "client_port" not in access


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_broken_enricher_never_breaks_the_request(framework: str) -> None:
    """An enricher that raises: the response is unharmed, the access record says so."""

    def broken(request: object) -> dict[str, object]:
        raise RuntimeError("enricher bug")

    status, _headers, logs = through(framework, "GET", "/items/7", enrichers=[broken])
    access = only(logs, "request")
    assert (200, len(BODY)) == (status, access["response_size"])
    assert "RuntimeError: enricher bug" == access["kakashi_enricher_error"]


# -- exceptions: one "request failed", the traceback once --------------------------------


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_failure_is_logged_once_with_the_route_and_the_access_record_has_no_traceback(
    framework: str,
) -> None:
    """One "request failed" with its traceback and the route; the 500 access record does
    not repeat the traceback (ERROR records take the exception being handled)."""
    status, _headers, logs = through(framework, "GET", "/boom")
    failed, access = only(logs, "request failed"), only(logs, "request")
    assert 500 == status == access["status"]
    assert "RuntimeError" == failed["exception"]["type"]
    assert "exception" not in access
    assert "/boom" == failed["route"] == access["route"]


def test_flask_propagating_exception_access_record_has_no_traceback() -> None:
    """With PROPAGATE_EXCEPTIONS (on in testing and debug) the exception leaves Flask and
    teardown runs while it propagates; the access record still does not repeat the
    traceback that "request failed" carries, and nothing stays bound."""
    app = flask_site()
    app.config["PROPAGATE_EXCEPTIONS"] = True
    with capture_logs() as logs, pytest.raises(RuntimeError):
        app.test_client().get("/boom")
    assert "exception" in only(logs, "request failed")
    assert (500, False) == (only(logs, "request")["status"], "exception" in only(logs, "request"))
    # The test client keeping the request context (``with client:``): teardown runs when
    # the block ends, out of the request; the record is still written once.
    with capture_logs() as kept, pytest.raises(RuntimeError), app.test_client() as client:
        client.get("/boom")
    assert 500 == only(kept, "request")["status"]


def test_django_an_exception_escaping_the_chain_is_logged_once_not_twice() -> None:
    """What escapes get_response (a BaseException such as gunicorn's SystemExit, or any
    exception when the middleware is used by hand) is logged once; the access record,
    written while it is being handled, does not carry the traceback again."""

    def failing(request: Any) -> Any:
        app_log().info("in view")
        raise RuntimeError("below the middleware")

    middleware = DjangoMiddleware(failing, RequestLogging())
    request = django_request("/boom")
    with capture_logs() as logs, pytest.raises(RuntimeError):
        middleware(request)
    assert "RuntimeError" == only(logs, "request failed")["exception"]["type"]
    access = only(logs, "request")
    assert (500, False) == (access["status"], "exception" in access)


def django_request(url: str) -> Any:
    from django.test import RequestFactory

    with django_site():
        return RequestFactory().get(url)


def handled_500(framework: str) -> list[dict[str, Any]]:
    """GET /boom where the application's own error handler answers the exception with a
    500 of its own, the handler inside the logging (what each framework's docs show)."""
    with capture_logs() as logs:
        if framework == "flask":
            app = flask_site()
            app.register_error_handler(Exception, lambda exc: ("sorry", 500))
            status = app.test_client().get("/boom").status_code
        elif framework == "starlette":
            fastapi = pytest.importorskip("fastapi")
            api = fastapi.FastAPI()

            @api.get("/boom")
            async def boom() -> None:
                raise RuntimeError("boom")

            @api.exception_handler(RuntimeError)
            async def sorry(request: Request, exc: Exception) -> Response:
                return PlainTextResponse("sorry", status_code=500)

            api.add_middleware(AsgiMiddleware)
            status = TestClient(api).get("/boom").status_code
        else:
            # Kakashi's first in MIDDLEWARE, as documented: Django asks the error page's
            # process_exception (below it) first, and stops at its answer.
            below = [DJANGO_MIDDLEWARE, "tests.webapps.ErrorPageMiddleware"]
            with django_site(below):
                status = Client().get("/boom").status_code
    assert 500 == status
    return logs


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_an_error_handlers_own_500_is_the_applications_answer_in_every_framework(
    framework: str,
) -> None:
    """An exception the application's error handler answers (here with a 500) is that
    answer: an ERROR access record, no "request failed" (the handler has the exception;
    the adapter never sees it). The same in the three frameworks (docs/web.md)."""
    logs = handled_500(framework)
    assert [] == messages(logs, "request failed")
    access = only(logs, "request")
    assert (500, "ERROR", False) == (access["status"], access["level"], "exception" in access)


class Unrelated(Exception):
    """An exception being handled above the adapter: not the request's."""


class HandlingUnrelatedMiddleware(webapps.PassingMiddleware):
    """A Django middleware above Kakashi's that runs the rest of the chain inside an
    ``except`` block (a retry or fallback written that way)."""

    def __call__(self, request: Any) -> Any:
        try:
            raise Unrelated("not the request's")
        except Unrelated:
            return self.get_response(request)


def inside_unrelated_except(framework: str, url: str) -> list[dict[str, Any]]:
    """GET *url* with the adapter run inside an ``except Unrelated`` block of a
    middleware above it (WSGI, ASGI or Django's): what was logged."""
    with capture_logs() as logs:
        if framework == "flask":
            app = flask_site()
            wsgi_app = app.wsgi_app

            def handling(environ: Any, start_response: Any) -> Any:
                try:
                    raise Unrelated("not the request's")
                except Unrelated:
                    return wsgi_app(environ, start_response)

            app.wsgi_app = handling  # type: ignore[method-assign]
            status = app.test_client().get(url).status_code
        elif framework == "starlette":
            site = starlette_site()

            async def handling_asgi(scope: Any, receive: Any, send: Any) -> None:
                try:
                    raise Unrelated("not the request's")
                except Unrelated:
                    await site(scope, receive, send)

            client = TestClient(handling_asgi, raise_server_exceptions=False)
            status = client.get(url).status_code
        else:
            above = [f"{__name__}.HandlingUnrelatedMiddleware", DJANGO_MIDDLEWARE]
            with django_site(above):
                status = Client(raise_request_exception=False).get(url).status_code
    assert status in (500, 503)
    return logs


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize(("url", "own"), [("/down", None), ("/boom", "RuntimeError")])
def test_a_record_written_while_an_unrelated_exception_is_handled_carries_none(
    framework: str, url: str, own: str | None
) -> None:
    """The adapter runs inside an ``except`` block of a middleware above it: the ERROR
    access record carries no exception (not the one being handled there, which an ERROR
    record would otherwise take), and "request failed" carries the request's own."""
    logs = inside_unrelated_except(framework, url)
    access = only(logs, "request")
    assert ("ERROR", None) == (access["level"], access.get("exception"))
    failed = messages(logs, "request failed")
    assert ([own] if own else []) == [entry["exception"]["type"] for entry in failed]


SHARED_FAILURE = RuntimeError("one instance, raised by every request")


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_an_exception_constant_raised_by_two_requests_is_logged_for_both(
    framework: str,
) -> None:
    """A view raising a module-level exception instance: each request that raises it
    gets its "request failed" (a mark left on the instance by the first must not
    silence the second)."""

    def raise_shared(*args: Any) -> Any:
        raise SHARED_FAILURE

    with capture_logs() as logs:
        if framework == "flask":
            app = flask_site()
            app.add_url_rule("/shared", "shared", raise_shared)
            client = app.test_client()
            statuses = [client.get("/shared").status_code for _ in range(2)]
        elif framework == "starlette":
            app = Starlette(
                routes=[Route("/shared", raise_shared)], middleware=[Middleware(AsgiMiddleware)]
            )
            client = TestClient(app, raise_server_exceptions=False)
            statuses = [client.get("/shared").status_code for _ in range(2)]
        else:
            urls.urlpatterns.append(django_path("shared", raise_shared))
            try:
                with django_site():
                    django_client = Client(raise_request_exception=False)
                    statuses = [django_client.get("/shared").status_code for _ in range(2)]
            finally:
                urls.urlpatterns.pop()
    assert [500, 500] == statuses
    failed = messages(logs, "request failed")
    assert 2 == len(failed)
    assert failed[0]["request_id"] != failed[1]["request_id"]


def d_stream_500(request: Any) -> StreamingHttpResponse:
    def chunks() -> Iterator[bytes]:
        yield b"partial error page"
        raise RuntimeError("error page broke")

    return StreamingHttpResponse(chunks(), status=503)


def test_django_a_streamed_5xx_that_fails_has_its_traceback_once() -> None:
    """A streamed 503 whose generator fails: "request failed" carries the traceback, the
    ERROR access record (written as the failure leaves the stream) does not."""
    urls.urlpatterns.append(django_path("stream500", d_stream_500))
    try:
        with django_site(), capture_logs() as logs:
            response = Client().get("/stream500")
            with pytest.raises(RuntimeError):
                b"".join(response.streaming_content)
    finally:
        urls.urlpatterns.pop()
    assert "RuntimeError" == only(logs, "request failed")["exception"]["type"]
    access = only(logs, "request")
    assert (503, "ERROR", False) == (access["status"], access["level"], "exception" in access)


# -- nesting: an adapter twice in one request ---------------------------------------------


def test_asgi_middleware_added_twice_logs_once_with_one_id() -> None:
    """app.add_middleware twice (or a library adding it again): one access record, and the
    id echoed is the one the view's records carry."""
    app = Starlette(routes=STARLETTE_ROUTES)
    app.add_middleware(AsgiMiddleware)
    app.add_middleware(AsgiMiddleware)
    with capture_logs() as logs:
        response = TestClient(app).get("/items/7")
    access, inside = only(logs, "request"), only(logs, "in view")
    assert response.headers["x-request-id"] == access["request_id"] == inside["request_id"]


def test_asgi_a_mounted_app_with_its_own_middleware_logs_once() -> None:
    """A sub-application with the middleware, mounted in an application with it: one
    access record per request, one id, one "request failed"."""
    inner = Starlette(routes=STARLETTE_ROUTES, middleware=[Middleware(AsgiMiddleware)])
    outer = Starlette(routes=[Mount("/sub", inner)], middleware=[Middleware(AsgiMiddleware)])
    client = TestClient(outer, raise_server_exceptions=False)
    with capture_logs() as logs:
        response = client.get("/sub/items/7")
        failed = client.get("/sub/boom")
    ok, broken = messages(logs, "request")
    assert response.headers["x-request-id"] == ok["request_id"]
    assert ok["request_id"] == only(logs, "in view")["request_id"]
    assert "/sub/items/{n:int}" == ok["route"]
    assert (500, 500) == (failed.status_code, broken["status"])
    assert broken["request_id"] == only(logs, "request failed")["request_id"]


def test_django_middleware_listed_twice_logs_once_with_one_id() -> None:
    """The middleware twice in MIDDLEWARE (a settings mix-up): one access record, one id."""
    with django_site([DJANGO_MIDDLEWARE, DJANGO_MIDDLEWARE]), capture_logs() as logs:
        response = Client().get("/items/7")
    access, inside = only(logs, "request"), only(logs, "in view")
    assert response.headers["X-Request-ID"] == access["request_id"] == inside["request_id"]


def wsgi_bridge(kind: str, app: Any) -> Any:
    """*app* behind a WSGI-to-ASGI bridge: Starlette's WSGIMiddleware (deprecated there,
    the one FastAPI's docs long showed) or a2wsgi's (its replacement)."""
    if kind == "a2wsgi":
        a2wsgi = pytest.importorskip("a2wsgi")
        return a2wsgi.WSGIMiddleware(app)
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="starlette.middleware.wsgi is deprecated")
        from starlette.middleware.wsgi import WSGIMiddleware

        return WSGIMiddleware(app)


@pytest.mark.parametrize("bridge", ["starlette", "a2wsgi"])
def test_a_flask_app_mounted_in_fastapi_is_logged_once_under_the_outer_id(bridge: str) -> None:
    """FastAPI with the middleware mounting a Flask app with the extension (FastAPI's
    recipe for migrating): one access record, and the id echoed is the one the Flask
    view's records carry; a failure in the Flask view is logged once, under that id."""
    fastapi = pytest.importorskip("fastapi")
    legacy = flask_site()
    api = fastapi.FastAPI()
    api.mount("/legacy", wsgi_bridge(bridge, legacy))
    api.add_middleware(AsgiMiddleware)
    client = TestClient(api, raise_server_exceptions=False)
    with capture_logs() as logs:
        response = client.get("/legacy/items/7")
        failed = client.get("/legacy/boom")
    ok, broken = messages(logs, "request")
    assert response.headers["x-request-id"] == ok["request_id"]
    assert ok["request_id"] == only(logs, "in view")["request_id"]
    assert ("/legacy/items/7", 200, len(BODY)) == (ok["path"], ok["status"], ok["response_size"])
    assert (500, 500) == (failed.status_code, broken["status"])
    assert failed.headers["x-request-id"] == only(logs, "request failed")["request_id"]


def test_django_mounted_in_starlette_is_logged_once_under_the_outer_id() -> None:
    """Django's ASGI handler mounted in a Starlette app with the middleware, Django's
    middleware on too: one access record per request, one id."""
    from django.core.handlers.asgi import ASGIHandler

    with django_site(), capture_logs() as logs:
        django_app = ASGIHandler()  # loads MIDDLEWARE now: Kakashi's is in it
        app = Starlette(routes=[Mount("/dj", django_app)], middleware=[Middleware(AsgiMiddleware)])
        response = TestClient(app).get("/dj/items/7")
    assert 200 == response.status_code
    access, inside = only(logs, "request"), only(logs, "in view")
    assert response.headers["x-request-id"] == access["request_id"] == inside["request_id"]


def test_a_leftover_finished_request_does_not_silence_the_next() -> None:
    """A finished request still bound in a context (finish(unbind=False)) is not taken for
    an enclosing one: the next request in that context is logged."""
    settings = RequestLogging()
    with capture_logs() as logs:
        first = settings.start("GET", "/x")
        first.finish(200, unbind=False)
        assert None is settings.enclosing("GET", "/x")
        second = settings.start("GET", "/x")
        assert second is settings.enclosing("GET", "/x")
        assert None is settings.enclosing("POST", "/x")
        second.finish(200)
        first.unbind()
    assert 2 == len(messages(logs, "request"))


# -- context leakage ---------------------------------------------------------------------


def test_django_sync_mode_under_asgi_streaming_leaves_no_id_behind() -> None:
    """Below a sync-only middleware Django runs Kakashi's in a thread (sync_to_async copies
    the context back to the caller); a streamed response then finishes in another context.
    The request id must not stay bound in the caller's context afterwards."""

    async def fetch(url: str) -> dict[str, Any]:
        response = await AsyncClient().get(url)
        with pytest.warns(Warning, match="synchronous iterators"):  # Django's own warning
            body = b"".join([chunk async for chunk in response])  # as ASGIHandler does
        assert b"ab" == body
        return kakashi.get_context()

    sync_only = [f"{__name__}.SyncOnlyMiddleware", DJANGO_MIDDLEWARE]
    with django_site(sync_only), capture_logs() as logs:
        context = asyncio.run(fetch("/stream"))
    assert 2 == only(logs, "request")["response_size"]
    assert "request_id" not in context


async def raw_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A bare ASGI app: /fail raises, /stream waits for a disconnect mid-body, /ws is a
    websocket that accepts and closes, anything else answers 200."""
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})
        return
    if scope["path"] == "/fail":
        raise RuntimeError("raw failure")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    if scope["path"] == "/stream":
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        while (await receive())["type"] != "http.disconnect":
            pass
        raise OSError("client gone")
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize("path", ["/ok", "/fail", "/stream"])
def test_asgi_nothing_stays_bound_in_the_servers_task(path: str) -> None:
    """The server calls the middleware in its own task: after a normal request, a failing
    one and one whose client left mid-stream, nothing of the request stays bound there."""
    middleware = AsgiMiddleware(raw_app)
    messages_in = [{"type": "http.request", "body": b""}, {"type": "http.disconnect"}]

    async def serve() -> dict[str, Any]:
        async def receive() -> dict[str, Any]:
            return messages_in.pop(0) if messages_in else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            pass

        with contextlib.suppress(RuntimeError, OSError):
            await middleware(asgi_scope(path), receive, send)
        return kakashi.get_context()

    with capture_logs() as logs:
        context = asyncio.run(serve())
    assert "request_id" not in context
    assert 1 == len(messages(logs, "request"))


def test_asgi_a_websocket_session_leaves_nothing_bound() -> None:
    """A websocket session's id is unbound when it ends, in the server's task."""
    middleware = AsgiMiddleware(raw_app)

    async def serve() -> dict[str, Any]:
        async def receive() -> dict[str, Any]:
            return {"type": "websocket.connect"}

        async def send(message: dict[str, Any]) -> None:
            pass

        await middleware(asgi_scope("/ws", "websocket"), receive, send)
        return kakashi.get_context()

    with capture_logs() as logs:
        context = asyncio.run(serve())
    assert "request_id" not in context
    assert (101, "WEBSOCKET") == (only(logs, "request")["status"], only(logs, "request")["method"])


def test_asgi_fifty_concurrent_requests_never_see_each_others_id() -> None:
    """50 requests in flight at once in one event loop: each view sees its own id, which is
    the one echoed and logged."""

    async def view(request: Request) -> Response:
        seen = kakashi.get_context()["request_id"]
        await asyncio.sleep(0.001)  # every other request runs in between
        app_log().info("in view", seen=seen)
        return PlainTextResponse(seen)

    app = Starlette(routes=[Route("/v", view)], middleware=[Middleware(AsgiMiddleware)])

    async def run() -> list[Any]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await asyncio.gather(*(client.get("/v") for _ in range(50)))

    with capture_logs() as logs:
        responses = asyncio.run(run())
    assert 50 == len({response.text for response in responses})
    assert all(response.text == response.headers["x-request-id"] for response in responses)
    assert all(entry["seen"] == entry["request_id"] for entry in messages(logs, "in view"))
    assert sorted(r.text for r in responses) == sorted(
        e["request_id"] for e in messages(logs, "request")
    )


@pytest.mark.parametrize("framework", ["flask", "django"])
def test_wsgi_worker_threads_reused_for_fifty_requests_keep_nothing_bound(
    framework: str,
) -> None:
    """A WSGI server with a pool of reused threads (gunicorn's gthread): 50 requests,
    normal, failing and streamed, over 4 threads. Each request starts on a thread with no
    id bound (none left by the one before), its view sees the id echoed, and none is left
    after."""
    from concurrent.futures import ThreadPoolExecutor

    urls = ["/items/1", "/boom", "/items/2", "/nowhere"]
    flask_client = flask_site().test_client() if framework == "flask" else None

    def one(n: int) -> tuple[Any, ...]:
        before = kakashi.get_context().get("request_id")
        url = urls[n % len(urls)]
        if flask_client is not None:
            response = flask_client.get(url)
            echoed = response.headers["X-Request-ID"]
        else:
            response = Client(raise_request_exception=False).get(url)
            echoed = response.headers["X-Request-ID"]
        after = kakashi.get_context().get("request_id")
        return before, after, echoed

    with django_site(), capture_logs() as logs, ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, range(50)))
    assert [(None, None)] * 50 == [(before, after) for before, after, _ in results]
    echoed = sorted(result[2] for result in results)
    assert echoed == sorted(entry["request_id"] for entry in messages(logs, "request"))
    assert 50 == len(set(echoed))
    assert all(entry["request_id"] in echoed for entry in messages(logs, "in view"))


def test_django_fifty_concurrent_async_requests_never_see_each_others_id() -> None:
    """50 requests to an async view in flight at once under ASGI: each sees its own id."""

    async def run() -> list[Any]:
        return await asyncio.gather(*(AsyncClient().get("/items/7") for _ in range(50)))

    with django_site(), capture_logs() as logs:
        responses = asyncio.run(run())
    echoed = sorted(response.headers["X-Request-ID"] for response in responses)
    assert 50 == len(set(echoed))
    assert echoed == sorted(entry["request_id"] for entry in messages(logs, "in view"))
    assert echoed == sorted(entry["request_id"] for entry in messages(logs, "request"))


def test_fastapi_sync_endpoints_reuse_threadpool_threads_without_a_stale_id() -> None:
    """A sync endpoint runs on a reused threadpool thread: each call sees its own id, and
    a request without one bound (outside any middleware) finds none left there."""
    fastapi = pytest.importorskip("fastapi")
    app = fastapi.FastAPI()
    seen: list[tuple[str | None, str]] = []

    @app.get("/sync")
    def sync_endpoint() -> str:
        seen.append((kakashi.get_context().get("request_id"), threading.current_thread().name))
        return "ok"

    wrapped = AsgiMiddleware(app)
    with TestClient(wrapped) as client:
        ids = [client.get("/sync").headers["x-request-id"] for _ in range(20)]
    with TestClient(app) as bare:
        bare.get("/sync")
    assert ids == [request_id for request_id, _thread in seen[:20]]
    assert None is seen[20][0]


# -- hostile input ------------------------------------------------------------------------


def test_forwarded_for_with_a_hundred_thousand_entries_is_walked_a_bounded_number_of_hops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """X-Forwarded-For of 100,000 trusted-looking hops (900 KB): the walk parses a bounded
    number of them, not every one (the request's cost must not grow with the header)."""
    parsed = record_calls(monkeypatch, web, "_address")
    settings = RequestLogging(trusted_proxies=["10.0.0.0/8"])
    header = ",".join(["10.0.0.1"] * 100_000)
    client = settings.client_ip("10.0.0.2", header)
    assert client is not None and client.startswith("10.")
    assert len(parsed) <= 64


def test_a_query_of_a_hundred_thousand_parameters_costs_what_is_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 1 MB query string of 100,000 redacted parameters: only what fits in
    max_value_length is looked at; the kept part is still redacted and marked as cut."""
    decoded = record_calls(monkeypatch, web, "unquote_plus")
    settings = RequestLogging()
    query = "&".join(f"token=secret{i}" for i in range(100_000))
    kept = settings.redact_query(query)
    assert len(decoded) <= settings.max_value_length
    assert kept.startswith("token=[REDACTED]&token=[REDACTED]")
    assert "secret" not in kept
    assert kept.endswith(" chars]")
    assert len(kept) <= settings.max_value_length + 32


@pytest.mark.parametrize(
    "formatter", [None, LogfmtFormatter(), TextFormatter()], ids=["json", "logfmt", "text"]
)
def test_hostile_raw_asgi_request_is_one_capped_line_on_disk(
    tmp_path: Path, formatter: Any
) -> None:
    """CR/LF, NUL, U+2028, NEL, invalid UTF-8 and latin-1 bytes in the method, path, query
    and headers, a 1 MB user agent and a repeated request id header: the app is answered,
    the file holds exactly one line per record, capped."""
    from kakashi.core.pipeline import Pipeline, PipelineConfig
    from kakashi.writers import FileWriter

    file = tmp_path / "access.log"
    writer = FileWriter(str(file))
    pipeline = Pipeline(PipelineConfig(min_level="DEBUG", formatter=formatter, writers=[writer]))
    settings = RequestLogging(pipeline=pipeline, log_headers=True, trust_request_id=True)
    middleware = AsgiMiddleware(raw_app, settings=settings)
    scope = asgi_scope(
        '/a\r\n{"level":"CRITICAL"}\u2028\x85\udcff',
        method="GET\r\nX",
        query_string=b"q=\xff\xfe\r\n&token=\r\nleak",
        headers=[
            (b"user-agent", b"ua\r\nforged=1 " + b"x" * (1 << 20)),
            (b"x-request-id", b"edge-a"),
            (b"x-request-id", b"edge-b"),
            (b"x\r\nname", b"\xff\xfe\x00"),
            (b"x-forwarded-for", b"1.2.3.4\r\n"),
        ],
    )
    sent = serve_asgi(middleware, scope)
    writer.flush()
    writer.close()
    data = file.read_bytes()
    assert 200 == sent[0]["status"]
    echoed = dict(sent[0]["headers"])[b"x-request-id"].decode()
    assert echoed not in ("edge-a", "edge-b", "edge-a, edge-b")  # two values: not trusted
    assert 1 == data.count(b"\n") and data.endswith(b"\n")
    assert b"leak" not in data
    assert len(data) < 3 * settings.max_value_length + 4096


@pytest.mark.parametrize("framework", ["flask", "django"])
def test_a_request_id_header_sent_twice_is_not_trusted(framework: str) -> None:
    """Two X-Request-ID headers (merged by the server as "a,b" or kept apart) are not one
    plain token: even with trust_request_id, a new id is made and echoed."""
    with capture_logs() as logs:
        if framework == "flask":
            client = flask_site(trust_request_id=True).test_client()
            twice = [("X-Request-ID", "edge-a"), ("X-Request-ID", "edge-b")]
            echoed = client.get("/items/7", headers=twice).headers["X-Request-ID"]
        else:
            with django_site(trust_request_id=True):
                response = Client().get("/items/7", HTTP_X_REQUEST_ID="edge-a,edge-b")
            echoed = response.headers["X-Request-ID"]
    access = only(logs, "request")
    assert 32 == len(echoed) and echoed == access["request_id"]
    assert access["upstream_request_id"] in ("edge-a, edge-b", "edge-a,edge-b")


@pytest.mark.parametrize("framework", ["flask", "django"])
def test_hostile_wsgi_request_is_one_capped_line_on_disk(tmp_path: Path, framework: str) -> None:
    """CR/LF and a forged JSON record in the (percent-decoded) path, a 1 MB user agent
    (with CR/LF where the test client lets it through): through each WSGI adapter into a
    real file, one line, capped."""
    from kakashi.core.pipeline import Pipeline, PipelineConfig
    from kakashi.writers import FileWriter

    file = tmp_path / "access.log"
    writer = FileWriter(str(file))
    pipeline = Pipeline(PipelineConfig(min_level="DEBUG", writers=[writer]))
    url = "/x%0D%0A%7B%22level%22%3A%22CRITICAL%22%7D%E2%80%A8"
    agent = "ua\r\nforged=1 " + "x" * (1 << 20)
    if framework == "flask":
        client = flask_site(pipeline=pipeline).test_client()
        # Werkzeug's client refuses CR/LF in a header value: send the rest.
        headers = {"User-Agent": agent.replace("\r\n", " ")}
        status = client.get(url, headers=headers).status_code
    else:
        with django_site(pipeline=pipeline):
            status = Client(HTTP_USER_AGENT=agent).get(url).status_code
    writer.flush()
    writer.close()
    data = file.read_bytes()
    assert 404 == status
    assert 1 == data.count(b"\n") and data.endswith(b"\n")
    assert b'\\r\\n{\\"level\\":\\"CRITICAL\\"}' in data  # escaped, inside the value
    assert len(data) < 3 * 2048 + 2048


# -- accounting under load ------------------------------------------------------------------


class HeldKeeper:
    """A writer held shut until :attr:`release` is set, so a small queue overflows; then
    it keeps the lines."""

    concurrent = False

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.release = threading.Event()

    def write(self, batch: Any) -> None:
        self.release.wait(30.0)
        self.lines.extend(batch)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_access_records_dropped_by_a_full_queue_are_counted_not_lost_silently() -> None:
    """300 requests through Flask into an AsyncPipeline with a queue of 8 that drops the
    newest, its writer held: every access record is either written or counted dropped."""
    keeper = HeldKeeper()
    pipeline = keeping_pipeline(
        keeper, max_queue_size=8, batch_size=4, overflow_strategy="drop_newest"
    )
    try:
        client = flask_site(pipeline=pipeline).test_client()
        for n in range(300):
            assert 200 == client.get(f"/items/{n}").status_code
        keeper.release.set()
        assert pipeline.backend.flush(10.0).complete
        stats = pipeline.backend.get_stats()
    finally:
        keeper.release.set()
        pipeline.backend.shutdown(5.0)
    written = [line for line in keeper.lines if b'"message":"request"' in line]
    assert 300 == stats["messages_enqueued"]
    assert stats["dropped_by_reason"]["queue_full_drop_newest"] > 0  # it did overflow
    assert 300 == len(written) + stats["dropped_by_reason"]["queue_full_drop_newest"]
    assert balanced(stats)


# -- bodies ---------------------------------------------------------------------------------


def test_flask_logging_the_request_body_leaves_the_stream_readable() -> None:
    """With log_request_body the view still reads the whole body from request.stream."""
    client = flask_site(log_request_body=True).test_client()
    with capture_logs() as logs:
        response = client.post("/read", data=b"z" * 1000, content_type="application/octet-stream")
    assert b"1000" == response.data
    assert "z" * 16 == only(logs, "request")["request_body"][:16]


def test_django_a_large_body_is_not_read_into_memory_to_log_its_start() -> None:
    """A 2 MB upload with log_request_body: the middleware leaves it to the view (as
    Flask does above 1 MB) instead of reading all of it to keep body_limit bytes."""
    with django_site(log_request_body=True), capture_logs() as logs:
        response = Client().post(
            "/read", data=b"z" * (2 << 20), content_type="application/octet-stream"
        )
    assert f"{2 << 20} False".encode() == response.content
    assert "request_body" not in only(logs, "request")


def test_django_a_small_body_is_logged_and_still_read_by_the_view() -> None:
    """Under the cap the body is logged (its start) and the view reads all of it."""
    with django_site(log_request_body=True), capture_logs() as logs:
        response = Client().post("/read", data=b"y" * 5000, content_type="application/octet-stream")
    assert b"5000 True" == response.content
    access = only(logs, "request")
    assert ("y" * 4096, True) == (access["request_body"], access["request_body_truncated"])


def test_asgi_a_streamed_upload_reaches_the_app_whole_while_logged() -> None:
    """An upload in chunks: the app receives every chunk unchanged; the log keeps the
    start, capped."""
    got: list[bytes] = []

    async def upload(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            got.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    chunks = [bytes([65 + n]) * 3000 for n in range(5)]
    middleware = AsgiMiddleware(upload, log_request_body=True)
    with capture_logs() as logs:
        serve_asgi(middleware, asgi_scope("/up", method="POST"), *chunks)
    assert chunks == got
    access = only(logs, "request")
    assert (b"".join(chunks)[:4096].decode(), True) == (
        access["request_body"],
        access["request_body_truncated"],
    )
