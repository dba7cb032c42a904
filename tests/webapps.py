"""What the tests of the web integrations share: reading what was logged, raw ASGI
scopes and a server's side of an ASGI exchange, and Django's test settings.

It imports no framework at module level (Django is imported inside its helpers), so a
test file that needs only one framework skips cleanly when the others are missing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

import kakashi

#: The dotted path Django's MIDDLEWARE setting names Kakashi's middleware by.
DJANGO_MIDDLEWARE = "kakashi.integrations.django.KakashiMiddleware"

Logs = list[dict[str, Any]]


def app_log() -> Any:
    """The application's logger, looked up per call (each test has a fresh registry)."""
    return kakashi.get_logger("app")


def messages(logs: Logs, message: str) -> Logs:
    """The records of *logs* (from ``capture_logs``) whose message is *message*."""
    return [entry for entry in logs if entry["message"] == message]


def access_records(logs: Logs) -> Logs:
    """The access records (message ``"request"``) of *logs*."""
    return messages(logs, "request")


def only(logs: Logs, message: str) -> dict[str, Any]:
    """The one record of *logs* with *message* (an assertion error names them all
    when there is not exactly one)."""
    found = messages(logs, message)
    assert 1 == len(found), logs
    return found[0]


def assert_access_fields(access: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """*access* has the *expected* values, and a float ``duration_ms``."""
    assert dict(expected) == {key: access.get(key) for key in expected}
    assert isinstance(access["duration_ms"], float)


def record_calls(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[Any]:
    """Wrap the one-argument function *owner.name* for the test: the list it returns
    gets each call's argument (to count the work a hostile input causes)."""
    calls: list[Any] = []
    real = getattr(owner, name)

    def recording(argument: Any) -> Any:
        calls.append(argument)
        return real(argument)

    monkeypatch.setattr(owner, name, recording)
    return calls


# -- ASGI, as a server drives it ---------------------------------------------------------


def asgi_scope(path: str = "/items/7", kind: str = "http", **extra: Any) -> dict[str, Any]:
    """A connection's scope as a server makes it (ASGI spec 2.4); *extra* replaces keys."""
    scope: dict[str, Any] = {
        "type": kind,
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test")],
        "client": ("192.0.2.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    scope.update(extra)
    return scope


def serve_asgi(
    app: Callable[..., Any], scope: dict[str, Any], *body: bytes
) -> list[dict[str, Any]]:
    """Run *app* on *scope* to the end, as a server whose client sends the request body
    in the chunks *body* (one empty chunk when none) and waits: the messages it sent."""
    pending = [
        {"type": "http.request", "body": chunk, "more_body": n < len(body) - 1}
        for n, chunk in enumerate(body or (b"",))
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return pending.pop(0) if len(pending) > 1 else pending[0]

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


# -- Django -----------------------------------------------------------------------------


def configure_django() -> None:
    """Configure Django once per process, with nothing a test relies on (every test runs
    inside ``django_site``). ``LOGGING_CONFIG=None`` keeps Django from re-running
    ``dictConfig`` over the process's stdlib logging."""
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="kakashi-tests",
            INSTALLED_APPS=[],
            DATABASES={},
            LOGGING_CONFIG=None,
            USE_TZ=True,
        )
        django.setup()


@contextlib.contextmanager
def django_site(
    urls: Any,
    middleware: list[str] | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    **kakashi_settings: Any,
) -> Iterator[None]:
    """The URLconf *urls* (a module object), *middleware* (Kakashi's alone by default)
    and ``KAKASHI`` = *kakashi_settings*, plus Django *overrides*, for the block only."""
    from django.test.utils import override_settings

    with override_settings(
        DEBUG=False,
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF=urls,
        MIDDLEWARE=middleware or [DJANGO_MIDDLEWARE],
        KAKASHI=kakashi_settings,
        **(overrides or {}),
    ):
        yield


class PassingMiddleware:
    """A Django middleware that passes every request on (what the ones below add to)."""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        return self.get_response(request)


class ErrorPageMiddleware(PassingMiddleware):
    """The application's own error page: answers a view's exception with a response of
    its own, of status ``status``."""

    status = 500

    def process_exception(self, request: Any, exception: Exception) -> Any:
        from django.http import HttpResponse

        return HttpResponse("sorry", status=self.status)
