"""The Django middleware (kakashi.integrations.django), through Django's own test clients.

Django is configured once per process (``settings.configure`` can run only once), with
neutral settings (``tests/webapps.py``, shared with test_review_web.py); every test
then runs inside ``override_settings`` giving this file's URLs, the middleware and its
``KAKASHI`` settings, all restored afterwards, so nothing leaks into other test files.
``LOGGING_CONFIG=None`` keeps Django from re-running ``dictConfig`` over the process's
stdlib logging. No pytest-django plugin is needed.

Sync views run under the test ``Client`` (WSGI, the middleware in sync mode), async views
under ``AsyncClient`` (ASGI, the middleware as a coroutine); each also the other way
round, which makes Django cross threads (``async_to_sync``/``sync_to_async``) where the
request id must still be bound.
"""

from __future__ import annotations

import asyncio
import functools
import re
import subprocess
import sys
import types
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

django = pytest.importorskip("django")

from django.core.exceptions import ImproperlyConfigured, PermissionDenied  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402
from django.http import HttpResponse, StreamingHttpResponse  # noqa: E402
from django.test import AsyncClient, Client  # noqa: E402
from django.test.utils import override_settings  # noqa: E402
from django.urls import path, re_path  # noqa: E402

import kakashi  # noqa: E402
from kakashi.integrations.django import KakashiMiddleware, drain_at_shutdown  # noqa: E402
from kakashi.integrations.web import REDACTED, RequestLogging  # noqa: E402
from kakashi.testing import capture_logs  # noqa: E402
from tests import webapps  # noqa: E402
from tests.conftest import keeping_pipeline  # noqa: E402
from tests.webapps import (  # noqa: E402
    DJANGO_MIDDLEWARE,
    app_log,
    asgi_scope,
    assert_access_fields,
    only,
)

pytestmark = pytest.mark.usefixtures("django_configured")


# -- the site under test ---------------------------------------------------------------


def item(request: Any, pk: int) -> HttpResponse:
    app_log().info("in view", pk=pk)
    return HttpResponse(f"item {pk}")


async def item_async(request: Any, pk: int) -> HttpResponse:
    app_log().info("in view", pk=pk)
    return HttpResponse(f"item {pk}")


def boom(request: Any) -> HttpResponse:
    raise RuntimeError("boom")


async def boom_async(request: Any) -> HttpResponse:
    raise RuntimeError("boom")


def forbidden(request: Any) -> HttpResponse:
    raise PermissionDenied("no")


def echo(request: Any) -> HttpResponse:
    return HttpResponse(request.body)


def upload(request: Any) -> HttpResponse:
    return HttpResponse(request.FILES["f"].read())


CHUNKS = [b"alpha,", b"beta,", b"gamma"]


def stream(request: Any) -> StreamingHttpResponse:
    def chunks() -> Iterator[bytes]:
        for chunk in CHUNKS:
            app_log().info("chunk")
            yield chunk

    return StreamingHttpResponse(chunks())


def stream_broken(request: Any) -> StreamingHttpResponse:
    def chunks() -> Iterator[bytes]:
        yield CHUNKS[0]
        raise RuntimeError("stream broke")

    return StreamingHttpResponse(chunks())


async def stream_async(request: Any) -> StreamingHttpResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for chunk in CHUNKS:
            app_log().info("chunk")
            yield chunk

    return StreamingHttpResponse(chunks())


async def stream_forever(request: Any) -> StreamingHttpResponse:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"first"
        await asyncio.Event().wait()  # until the server cancels us
        yield b"never"

    return StreamingHttpResponse(chunks())


async def slow_view(request: Any) -> HttpResponse:
    await asyncio.Event().wait()  # until the server cancels us
    return HttpResponse("never")


def health(request: Any) -> HttpResponse:
    return HttpResponse("ok")


#: The URLconf: a module object (Django accepts one for ROOT_URLCONF), never imported by name.
urls = types.ModuleType("kakashi_test_urls")
urls.urlpatterns = [
    path("items/<int:pk>/", item),
    path("async/items/<int:pk>/", item_async),
    re_path(r"^re/(?P<pk>[0-9]+)/$", item),
    path("boom/", boom),
    path("async/boom/", boom_async),
    path("forbidden/", forbidden),
    path("echo/", echo),
    path("upload/", upload),
    path("stream/", stream),
    path("stream/broken/", stream_broken),
    path("async/stream/", stream_async),
    path("async/forever/", stream_forever),
    path("async/slow/", slow_view),
    path("health/", health),
]


class FailingMiddleware:
    """A middleware below Kakashi's that fails outside any view."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        if request.path == "/middleware-boom/":
            raise ValueError("middleware broke")
        return self.get_response(request)


class ErrorPageMiddleware(webapps.ErrorPageMiddleware):
    """The application's own error handling: turns a view's exception into a 503 page."""

    status = 503


#: This file's URLs, Kakashi's middleware (or *middleware*) and ``KAKASHI``, for a block.
site = functools.partial(webapps.django_site, urls)


def get(url: str, *, asgi: bool, **options: Any) -> Any:
    """GET *url* through the test client of the mode asked for, in a fresh context."""
    client_options = {
        key: options.pop(key) for key in ("raise_request_exception",) if key in options
    }
    if asgi:

        async def fetch() -> Any:
            response = await AsyncClient(**client_options).get(url, **options)
            assert "request_id" not in kakashi.get_context()
            return response

        return asyncio.run(fetch())
    response = Client(**client_options).get(url, **options)
    assert "request_id" not in kakashi.get_context()
    return response


MODES = [
    pytest.param(False, "/items/7/", id="wsgi-sync-view"),
    pytest.param(False, "/async/items/7/", id="wsgi-async-view"),
    pytest.param(True, "/async/items/7/", id="asgi-async-view"),
    pytest.param(True, "/items/7/", id="asgi-sync-view"),
]


# -- the access record -----------------------------------------------------------------


@pytest.mark.parametrize(("asgi", "url"), MODES)
def test_one_access_record_and_the_id_bound_in_the_view(asgi: bool, url: str) -> None:
    """One access record with the shared fields; the view's record carries the same id,
    which the response echoes; nothing stays bound after the request."""
    with site(), capture_logs() as logs:
        response = get(url + "?page=2&token=abc", asgi=asgi, headers={"User-Agent": "probe/1"})
        app_log().info("after")
    assert 200 == response.status_code
    in_view, after = only(logs, "in view"), only(logs, "after")
    access = only(logs, "request")
    request_id = response.headers["X-Request-ID"]
    assert re.fullmatch("[0-9a-f]{32}", request_id)
    assert request_id == in_view["request_id"] == access["request_id"]
    assert "request_id" not in after
    assert "INFO" == access["level"]
    assert "kakashi.access" == access["logger"]
    expected = {
        "method": "GET",
        "path": url,
        "route": "/" + url.strip("/").replace("7", "<int:pk>") + "/",
        "query": f"page=2&token={REDACTED}",
        "status": 200,
        "response_size": len(b"item 7"),
        "client_ip": "127.0.0.1",
        "user_agent": "probe/1",
        "http_version": "1.1",
        "scheme": "http",
    }
    assert_access_fields(access, expected)
    if asgi:
        assert 0 == access["client_port"]  # AsyncClient's scope says ("127.0.0.1", 0)
    else:
        assert "client_port" not in access  # the WSGI test client gives no REMOTE_PORT
    assert ["in view", "request", "after"] == [entry["message"] for entry in logs]


def test_a_re_path_route_is_its_pattern() -> None:
    """A ``re_path`` route is written as its regular expression, without the ``^``."""
    with site(), capture_logs() as logs:
        assert 200 == Client().get("/re/5/").status_code
    assert "/re/(?P<pk>[0-9]+)/$" == only(logs, "request")["route"]


@pytest.mark.parametrize("asgi", [False, True], ids=["wsgi", "asgi"])
def test_a_404_from_the_resolver_has_no_route(asgi: bool) -> None:
    """An unmatched URL: a WARNING access record with status 404 and no route; no failure."""
    with site(), capture_logs() as logs:
        assert 404 == get("/nowhere/", asgi=asgi).status_code
    access = only(logs, "request")
    assert (404, "WARNING") == (access["status"], access["level"])
    assert "route" not in access
    assert [] == [entry for entry in logs if entry["message"] == "request failed"]


def test_permission_denied_is_a_client_error_not_a_failure() -> None:
    """PermissionDenied from a view becomes Django's 403: logged at WARNING, no "request failed"."""
    with site(), capture_logs() as logs:
        assert 403 == Client().get("/forbidden/").status_code
    access = only(logs, "request")
    assert (403, "WARNING", "/forbidden/") == (access["status"], access["level"], access["route"])
    assert ["request"] == [entry["message"] for entry in logs]


def test_the_request_id_is_trusted_only_when_configured() -> None:
    """An incoming X-Request-ID is kept only with trust_request_id; else it is upstream."""
    headers = {"X-Request-ID": "edge-42"}
    with site(), capture_logs() as logs:
        plain = Client().get("/health/", headers=headers)
    assert "edge-42" != plain.headers["X-Request-ID"]
    assert "edge-42" == only(logs, "request")["upstream_request_id"]
    with site(trust_request_id=True), capture_logs() as logs:
        trusted = Client().get("/health/", headers=headers)
    assert "edge-42" == trusted.headers["X-Request-ID"] == only(logs, "request")["request_id"]


def test_forwarded_for_only_from_trusted_proxies() -> None:
    """X-Forwarded-For is believed from a trusted REMOTE_ADDR only."""
    headers = {"X-Forwarded-For": "198.51.100.7"}
    with site(trusted_proxies=["10.0.0.0/8"]), capture_logs() as logs:
        Client(REMOTE_ADDR="10.0.0.5").get("/health/", headers=headers)
        Client(REMOTE_ADDR="203.0.113.9").get("/health/", headers=headers)
    assert ["198.51.100.7", "203.0.113.9"] == [entry["client_ip"] for entry in logs]


def test_excluded_paths_and_the_slow_warning() -> None:
    """An excluded path has no access record but still an id; slow requests warn."""
    with site(exclude_paths=["/health/"], slow_request_ms=0), capture_logs() as logs:
        health = Client().get("/health/")
        Client().get("/items/1/")
    assert re.fullmatch("[0-9a-f]{32}", health.headers["X-Request-ID"])
    assert ["in view", "request", "slow request"] == [entry["message"] for entry in logs]
    assert "WARNING" == logs[-1]["level"]
    assert "/items/1/" == logs[-1]["path"]


def test_levels_are_configurable() -> None:
    """``levels`` from KAKASHI applies: a 404 logged at INFO."""
    with site(levels={404: "INFO"}), capture_logs() as logs:
        Client().get("/nowhere/")
    assert "INFO" == only(logs, "request")["level"]


# -- exceptions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("asgi", "url"),
    [
        pytest.param(False, "/boom/", id="wsgi-sync-view"),
        pytest.param(False, "/async/boom/", id="wsgi-async-view"),
        pytest.param(True, "/async/boom/", id="asgi-async-view"),
        pytest.param(True, "/boom/", id="asgi-sync-view"),
    ],
)
def test_an_exception_in_a_view_is_logged_once(asgi: bool, url: str) -> None:
    """One "request failed" with the traceback and the route; Django answers its 500
    (DEBUG off) and the access record says 500 at ERROR."""
    with site(), capture_logs() as logs:
        response = get(url, asgi=asgi, raise_request_exception=False)
    assert 500 == response.status_code
    failed = only(logs, "request failed")
    assert "RuntimeError" == failed["exception"]["type"]
    assert "boom" == failed["exception"]["message"]
    assert "raise RuntimeError" in failed["exception"]["traceback"]
    assert url == failed["route"]
    access = only(logs, "request")
    assert (500, "ERROR") == (access["status"], access["level"])
    assert failed["request_id"] == access["request_id"] == response.headers["X-Request-ID"]


def test_the_exception_still_reaches_the_test_client() -> None:
    """process_exception returns None: Django's handling goes on, and the test client
    re-raises the view's exception as it does without the middleware."""
    with site(), capture_logs() as logs, pytest.raises(RuntimeError, match="boom"):
        Client().get("/boom/")
    assert 1 == len([entry for entry in logs if entry["message"] == "request failed"])
    assert 500 == only(logs, "request")["status"]


def test_an_exception_in_a_lower_middleware_is_logged_once() -> None:
    """A middleware below Kakashi's fails outside any view: Django's got_request_exception
    signal gets it logged once; the access record says Django's 500."""
    lower = f"{__name__}.FailingMiddleware"  # pytest put this module in sys.modules
    with site([DJANGO_MIDDLEWARE, lower]), capture_logs() as logs:
        response = Client(raise_request_exception=False).get("/middleware-boom/")
    assert 500 == response.status_code
    assert "ValueError" == only(logs, "request failed")["exception"]["type"]
    assert 500 == only(logs, "request")["status"]


def test_an_exception_the_application_answers_is_logged_once() -> None:
    """A middleware's process_exception (listed above Kakashi's) answers the view's
    exception itself: Django's 500 handling and its signal never run, Kakashi's
    process_exception still logs it once, and the access record has the page's status."""
    pages = f"{__name__}.ErrorPageMiddleware"
    with site([pages, DJANGO_MIDDLEWARE]), capture_logs() as logs:
        response = Client().get("/boom/")
    assert (503, b"sorry") == (response.status_code, response.content)
    assert "RuntimeError" == only(logs, "request failed")["exception"]["type"]
    assert (503, "ERROR") == (only(logs, "request")["status"], only(logs, "request")["level"])


# -- streaming -------------------------------------------------------------------------


def test_a_sync_stream_is_counted_and_logged_at_its_end() -> None:
    """No access record until the body is consumed; then one with every chunk counted,
    and the records logged by the generator carry the request id."""
    with site(), capture_logs() as logs:
        response = Client().get("/stream/")
        assert [] == [entry for entry in logs if entry["message"] == "request"]
        assert b"".join(CHUNKS) == b"".join(response.streaming_content)
    access = only(logs, "request")
    assert (200, len(b"".join(CHUNKS))) == (access["status"], access["response_size"])
    assert "disconnected" not in access
    chunk_ids = {entry["request_id"] for entry in logs if entry["message"] == "chunk"}
    assert {access["request_id"]} == chunk_ids
    assert "request_id" not in kakashi.get_context()


def test_an_async_stream_is_counted_and_logged_at_its_end() -> None:
    """The same for an async iterator under AsyncClient."""

    async def fetch() -> tuple[bytes, bool]:
        response = await AsyncClient().get("/async/stream/")
        before = any(entry["message"] == "request" for entry in logs)
        body = b"".join([chunk async for chunk in response.streaming_content])
        return body, before

    with site(), capture_logs() as logs:
        body, logged_before = asyncio.run(fetch())
    assert logged_before is False
    assert b"".join(CHUNKS) == body
    access = only(logs, "request")
    assert len(body) == access["response_size"]
    chunk_ids = {entry["request_id"] for entry in logs if entry["message"] == "chunk"}
    assert {access["request_id"]} == chunk_ids


def test_a_stream_closed_early_says_disconnected() -> None:
    """The server closes the response after one chunk (the client went away): the access
    record is written then, with the size sent and ``"disconnected": true``."""
    with site(), capture_logs() as logs:
        response = Client().get("/stream/")
        chunks = iter(response.streaming_content)
        assert CHUNKS[0] == next(chunks)
        response.close()
    access = only(logs, "request")
    assert (200, len(CHUNKS[0]), True) == (
        access["status"],
        access["response_size"],
        access["disconnected"],
    )
    assert "request_id" not in kakashi.get_context()


def test_a_stream_that_fails_midway_is_logged_once() -> None:
    """The iterator raises after one chunk: one "request failed", then the access record
    with the status and size as sent; the exception goes on to the server."""
    with site(), capture_logs() as logs:
        response = Client().get("/stream/broken/")
        with pytest.raises(RuntimeError, match="stream broke"):
            b"".join(response.streaming_content)
    failed = only(logs, "request failed")
    assert "RuntimeError" == failed["exception"]["type"]
    access = only(logs, "request")
    assert (200, len(CHUNKS[0])) == (access["status"], access["response_size"])
    assert ["request failed", "request"] == [entry["message"] for entry in logs]


def _asgi_call(
    url: str, *, disconnect_after_body: bool, application: Any = None
) -> list[dict[str, Any]]:
    """Serve *url* with Django's real ASGIHandler; the client disconnects after the first
    body chunk (or at once, while the view runs). Returns the messages sent."""
    sent: list[dict[str, Any]] = []

    async def run() -> None:
        gone = asyncio.Event()
        if not disconnect_after_body:
            gone.set()
        requested = False

        async def receive() -> dict[str, Any]:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body":
                gone.set()

        scope = asgi_scope(
            url,
            headers=[(b"host", b"testserver")],
            client=("192.0.2.1", 50000),
            server=("testserver", 80),
        )
        await (application or ASGIHandler())(scope, receive, send)

    asyncio.run(run())
    return sent


#: Django 5.0 made ASGIHandler watch for the client's disconnect while it answers.
watches_disconnect = pytest.mark.skipif(
    django.VERSION < (5, 0), reason="Django < 5.0 does not notice ASGI disconnects"
)


@watches_disconnect
def test_a_real_asgi_disconnect_mid_stream() -> None:
    """Django's ASGIHandler cancels the response when the client disconnects mid-stream:
    one access record with status 200, the first chunk's size and disconnected."""
    with site(), capture_logs() as logs:
        sent = _asgi_call("/async/forever/", disconnect_after_body=True)
    assert [b"first"] == [m["body"] for m in sent if m["type"] == "http.response.body"]
    access = only(logs, "request")
    assert (200, 5, True) == (access["status"], access["response_size"], access["disconnected"])
    assert 50000 == access["client_port"]


@watches_disconnect
def test_a_real_asgi_disconnect_while_the_view_runs() -> None:
    """The client goes away before the view answers: status 499, disconnected, no failure."""
    with site(), capture_logs() as logs:
        sent = _asgi_call("/async/slow/", disconnect_after_body=False)
    assert [] == sent
    access = only(logs, "request")
    assert (499, True, "/async/slow/") == (
        access["status"],
        access["disconnected"],
        access["route"],
    )
    assert ["request"] == [entry["message"] for entry in logs]


# -- bodies, redaction, hostile input, enrichers ---------------------------------------


def post(url: str, payload: bytes, *, asgi: bool) -> Any:
    """POST *payload* as text/plain through the test client of the mode asked for."""
    if asgi:
        return asyncio.run(AsyncClient().post(url, data=payload, content_type="text/plain"))
    return Client().post(url, data=payload, content_type="text/plain")


@pytest.mark.parametrize("asgi", [False, True], ids=["wsgi", "asgi"])
def test_bodies_only_when_asked_and_capped(asgi: bool) -> None:
    """No bodies by default; with the settings on, both bodies capped at body_limit, and
    the view still reads the whole request body."""
    payload = b"0123456789abcdefghij"  # 20 bytes, over the cap of 16
    with site(), capture_logs() as logs:
        post("/echo/", payload, asgi=asgi)
    access = only(logs, "request")
    assert "request_body" not in access and "response_body" not in access
    settings = {"log_request_body": True, "log_response_body": True, "body_limit": 16}
    with site(**settings), capture_logs() as logs:
        response = post("/echo/", payload, asgi=asgi)
    assert payload == response.content
    access = only(logs, "request")
    assert ("0123456789abcdef", True) == (access["request_body"], access["request_body_truncated"])
    assert ("0123456789abcdef", True) == (
        access["response_body"],
        access["response_body_truncated"],
    )


def test_a_multipart_body_is_left_to_the_upload_handlers() -> None:
    """log_request_body never reads a multipart body (uploads keep streaming to their
    handlers): no request_body, and the view gets the file."""
    import io

    upload_file = io.BytesIO(b"file content")
    upload_file.name = "notes.txt"
    with site(log_request_body=True), capture_logs() as logs:
        response = Client().post("/upload/", {"f": upload_file})
    assert b"file content" == response.content
    assert "request_body" not in only(logs, "request")


def test_headers_redacted_by_exact_key() -> None:
    """With log_headers, Authorization and Cookie are masked; Author and Keyboard stay."""
    headers = {"Authorization": "Bearer s3cret", "Author": "ada", "Keyboard": "qwerty"}
    with site(log_headers=True), capture_logs() as logs:
        Client().get("/health/?password=p&monkey=1", headers=headers)
    access = only(logs, "request")
    logged = access["request_headers"]
    assert REDACTED == logged["authorization"]
    assert ("ada", "qwerty") == (logged["author"], logged["keyboard"])
    assert f"password={REDACTED}&monkey=1" == access["query"]
    assert "s3cret" not in str(access)


def test_hostile_input_is_capped_and_kept_as_data() -> None:
    """An oversized user agent with CRLF and escapes, and a long non-ASCII path: capped
    and kept as data (the formatters escape control characters), the request answered."""
    agent = "evil\r\nX-Injected: 1\x1b[31m" * 200
    with site(max_value_length=64), capture_logs() as logs:
        response = Client().get("/" + "é" * 300 + "/", headers={"User-Agent": agent})
    assert 404 == response.status_code
    access = only(logs, "request")
    assert access["user_agent"].startswith("evil\r\nX-Injected: 1")
    assert access["user_agent"].endswith(f"…[+{len(agent) - 64} chars]")
    assert access["path"].endswith("…[+238 chars]")


def test_a_broken_enricher_never_breaks_the_request() -> None:
    """An enricher that raises: the response is the view's, the record says what broke."""

    def broken(log: Any) -> dict[str, Any]:
        raise KeyError("nope")

    with site(enrichers=[broken]), capture_logs() as logs:
        response = Client().get("/items/3/")
    assert (200, b"item 3") == (response.status_code, response.content)
    assert "KeyError: 'nope'" == only(logs, "request")["kakashi_enricher_error"]


# -- settings and construction ---------------------------------------------------------


@pytest.mark.parametrize(
    ("kakashi_setting", "message"),
    [
        ({"bogus": 1}, "unknown setting.*bogus"),
        ({"slow_request_ms": -5}, "KAKASHI: slow_request_ms"),
        ({"trusted_proxies": ["not-an-ip"]}, "KAKASHI: trusted_proxies"),
        (["trust_request_id"], "KAKASHI must be a dict"),
    ],
)
def test_bad_kakashi_settings_are_improperly_configured(kakashi_setting: Any, message: str) -> None:
    """A bad KAKASHI fails when Django builds the middleware, naming the setting."""
    with (
        override_settings(KAKASHI=kakashi_setting),
        pytest.raises(ImproperlyConfigured, match=message),
    ):
        KakashiMiddleware(lambda request: HttpResponse())


def test_bad_kakashi_fails_at_the_first_request_of_a_client() -> None:
    """Through the test client: the error surfaces when the handler loads the middleware."""
    with site(bogus=True), pytest.raises(ImproperlyConfigured, match="bogus"):
        Client().get("/health/")


def test_settings_given_directly() -> None:
    """Built by hand it takes a RequestLogging or keyword settings, not both; KAKASHI
    may be a RequestLogging too."""
    settings = RequestLogging(slow_request_ms=5)
    assert settings is KakashiMiddleware(lambda r: None, settings).settings
    assert 7.0 == KakashiMiddleware(lambda r: None, slow_request_ms=7).settings.slow_request_ms
    with pytest.raises(TypeError, match="either"):
        KakashiMiddleware(lambda r: None, settings, slow_request_ms=7)
    with pytest.raises(ValueError, match="slow_request_ms"):
        KakashiMiddleware(lambda r: None, slow_request_ms=-1)
    with override_settings(KAKASHI=settings):  # KAKASHI may hold the object itself
        assert settings is KakashiMiddleware(lambda r: None).settings


def test_hybrid_sync_and_async() -> None:
    """Sync and async capable; a coroutine function exactly when get_response is one."""
    from asgiref.sync import iscoroutinefunction

    async def async_response(request: Any) -> HttpResponse:
        return HttpResponse()

    assert KakashiMiddleware.sync_capable and KakashiMiddleware.async_capable
    assert iscoroutinefunction(KakashiMiddleware(async_response)) is True
    assert iscoroutinefunction(KakashiMiddleware(lambda r: HttpResponse())) is False


def test_importing_kakashi_loads_no_django() -> None:
    """``import kakashi`` and ``import kakashi.integrations`` leave Django unimported."""
    code = (
        "import sys, kakashi, kakashi.integrations, kakashi.integrations.web;"
        "print(sorted(m for m in ('django', 'asgiref') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "[]" == out.stdout.strip()


# -- shutdown --------------------------------------------------------------------------


def test_drain_at_shutdown_writes_what_is_queued(tmp_path: Path) -> None:
    """The wrapper answers the lifespan protocol Django refuses; at shutdown everything
    queued in the async backend is on disk before it says complete. HTTP passes through."""
    path = tmp_path / "app.log"
    pipeline = keeping_pipeline(kakashi.file_writer(str(path)))
    log = kakashi.get_logger("queued", pipeline)
    application = drain_at_shutdown(ASGIHandler())
    sent: list[dict[str, Any]] = []
    lines_at_shutdown: list[int] = []

    async def lifespan() -> None:
        messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

        async def receive() -> dict[str, Any]:
            message = next(messages)
            if message["type"] == "lifespan.shutdown":
                for i in range(500):
                    log.info("r", i=i)
            return message

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "lifespan.shutdown.complete":
                lines_at_shutdown.append(len(path.read_text().splitlines()))

        await application({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)

    asyncio.run(lifespan())
    assert ["lifespan.startup.complete", "lifespan.shutdown.complete"] == [
        message["type"] for message in sent
    ]
    assert [500] == lines_at_shutdown
    pipeline.shutdown()
    with site(), capture_logs() as logs:  # the handler loads MIDDLEWARE when it is made
        served = drain_at_shutdown(ASGIHandler())
        answer = _asgi_call("/health/", disconnect_after_body=True, application=served)
    assert 200 == answer[0]["status"]
    assert "/health/" == only(logs, "request")["path"]
    with pytest.raises(ValueError, match="timeout"):
        drain_at_shutdown(ASGIHandler(), timeout=0)


# -- the LOGGING of docs/django.md ------------------------------------------------------

#: The settings file docs/django.md shows (its LOGGING part).
SETTINGS = Path(__file__).resolve().parent.parent / "docs" / "examples" / "django_settings.py"

LOGGING_PROBE = """
import json, logging, sys, types
import django
from django.conf import settings
from django.http import HttpResponse
from django.test import Client
from django.urls import path
import kakashi

lines = []
kakashi.configure(
    formatter=kakashi.default_json_formatter,
    writers=(kakashi.callable_writer(lines.append),),
)

def boom(request):
    raise RuntimeError("boom")

def ok(request):
    logging.getLogger("django.db.backends").info("a query")
    logging.getLogger("payments").warning("card declined")
    return HttpResponse("ok")

boom.__module__ = ok.__module__ = "probe"
urls = types.ModuleType("probe_urls")
urls.urlpatterns = [path("boom/", boom), path("ok/", ok)]
LOGGING = json.loads(sys.argv[1])
settings.configure(
    ROOT_URLCONF=urls,
    ALLOWED_HOSTS=["testserver"],
    MIDDLEWARE=["kakashi.integrations.django.KakashiMiddleware"],
    LOGGING=LOGGING,
)
django.setup()
client = Client(raise_request_exception=False)
client.get("/ok/")
client.get("/boom/")
client.get("/nowhere/")
logging.getLogger("django.server").info('"GET /ok/ HTTP/1.1" 200 2')
for line in lines:
    event = json.loads(line)
    print(event["logger"], event["message"], event.get("status", ""))
"""


def test_the_documented_logging_settings(tmp_path: Path) -> None:
    """docs/django.md's LOGGING (docs/examples/django_settings.py), applied by Django in a
    fresh process: Django's and the application's stdlib records arrive in Kakashi;
    runserver's access lines and django.request's twins of the access record are gone,
    and nothing goes to stderr."""
    import ast
    import json

    (logging_settings,) = [
        ast.literal_eval(node.value)
        for node in ast.parse(SETTINGS.read_text()).body
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "LOGGING"
    ]
    out = subprocess.run(
        [sys.executable, "-c", LOGGING_PROBE, json.dumps(logging_settings)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "" == out.stderr
    assert [
        "django.db.backends a query ",
        "payments card declined ",
        "kakashi.access request 200",
        "kakashi.access request failed ",
        "kakashi.access request 500",
        "kakashi.access request 404",
    ] == out.stdout.splitlines()
