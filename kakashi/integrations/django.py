"""Django middleware: one access record per request, and the request id bound for the view.

Put :class:`KakashiMiddleware` first in ``MIDDLEWARE`` (it then times and sees everything
the others do) and, optionally, its settings in ``KAKASHI``, a dict of the keyword
settings of ``kakashi.integrations.web.RequestLogging``::

    MIDDLEWARE = ["kakashi.integrations.django.KakashiMiddleware", ...]
    KAKASHI = {"trusted_proxies": ["10.0.0.0/8"], "exclude_paths": ["/health"]}

The middleware is both sync and async capable, as Django documents for hybrid
middleware: under WSGI it runs synchronously, under ASGI as a coroutine, so it never
costs a thread switch of its own. What it logs is described in
``kakashi.integrations.web``; the Django specifics are:

- the route is ``"/"`` + ``request.resolver_match.route`` (``/items/<int:pk>/``; a
  ``re_path`` gives its regular expression without the leading ``^``); a request the
  resolver could not match (a 404) has none;
- an exception escaping a view is logged once as ``"request failed"`` from
  ``process_exception``, which then returns ``None`` so Django's own handling goes on
  (``handler500``); the access record says the status Django answered. Client errors
  Django turns into 4xx responses (``Http404``, ``PermissionDenied``, ``BadRequest``,
  ``SuspiciousOperation``) are not failures: their access record says 4xx. An exception
  raised below this middleware but outside a view (another middleware) is logged once
  too, from Django's ``got_request_exception`` signal;
- a ``StreamingHttpResponse`` (sync or async iterator, ``FileResponse`` too) is counted
  chunk by chunk and logged when it is exhausted, or when Django closes it before the
  end (``"disconnected": true``, the status as sent). A ``FileResponse`` a WSGI server
  sends with ``wsgi.file_wrapper`` never passes through Python: its size is the
  ``Content-Length``. A client that disconnects from an ASGI server while the view still
  runs gets status 499 (nginx's "client closed request") and ``"disconnected": true``;
- the client's address is ``REMOTE_ADDR`` (``X-Forwarded-For`` only from
  ``trusted_proxies``), its port ``REMOTE_PORT`` when the server gives one;
  ``http_version`` comes from ``SERVER_PROTOCOL`` (under ASGI from the scope), the
  query from ``QUERY_STRING``;
- with ``log_request_body`` a body of at most 1 MB (by its ``Content-Length``) is read
  before the view (Django keeps it for the view); a bigger one, one without a length and
  a ``multipart/`` one are never read here, so uploads keep streaming to the view;
- listed twice in ``MIDDLEWARE``, or inside a request another Kakashi adapter logs
  (Django's ASGI app mounted in Starlette with the ASGI middleware), the middleware lets
  the request through and only logs an exception into that request's log: one access
  record, one id.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any, Final, cast

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings as django_settings
from django.core.exceptions import (
    BadRequest,
    ImproperlyConfigured,
    PermissionDenied,
    SuspiciousOperation,
)
from django.core.signals import got_request_exception
from django.http import Http404
from django.http.multipartparser import MultiPartParserError

from kakashi import _errors
from kakashi.integrations.web import RequestLog, RequestLogging, drain

__all__ = ["KakashiMiddleware", "drain_at_shutdown"]

#: The keys ``KAKASHI`` may hold: the keyword settings of RequestLogging.
SETTING_NAMES: Final = frozenset(inspect.signature(RequestLogging).parameters)
#: What Django answers with a 4xx (django.core.handlers.exception.response_for_exception).
_CLIENT_ERRORS: Final = (
    Http404,
    PermissionDenied,
    BadRequest,
    SuspiciousOperation,
    MultiPartParserError,
)
#: The request's attribute holding its RequestLog (for process_exception and the signal).
_REQUEST_LOG: Final = "_kakashi_request_log"
#: The status of a request whose client went away before the view answered.
CLIENT_CLOSED: Final = 499
#: A request body up to this size is read to log its start (Django keeps it for the
#: view, as request.body would); a bigger one is left to the view, which may stream it.
#: The Flask extension uses the same limit.
_READ_BODY_LIMIT: Final = 1 << 20


def _settings(settings: RequestLogging | None, options: Mapping[str, Any]) -> RequestLogging:
    """The middleware's settings: given, as keywords, or from Django's ``KAKASHI``."""
    if settings is not None:
        if options:
            raise TypeError("give either settings=RequestLogging(...) or keyword settings")
        if not isinstance(settings, RequestLogging):
            raise TypeError(f"settings must be a RequestLogging, got {settings!r}")
        return settings
    if options:
        return RequestLogging(**options)
    configured = getattr(django_settings, "KAKASHI", None)
    if configured is None:
        return RequestLogging()
    if isinstance(configured, RequestLogging):
        return configured
    if not isinstance(configured, Mapping):
        raise ImproperlyConfigured(
            "KAKASHI must be a dict of kakashi.integrations.web.RequestLogging settings "
            f"(or a RequestLogging), got {type(configured).__name__}"
        )
    unknown = sorted(str(key) for key in configured if key not in SETTING_NAMES)
    if unknown:
        raise ImproperlyConfigured(
            f"KAKASHI: unknown setting(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(SETTING_NAMES))}"
        )
    try:
        return RequestLogging(**configured)
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(f"KAKASHI: {exc}") from exc


def _route(request: Any) -> str | None:
    route = getattr(getattr(request, "resolver_match", None), "route", None)
    if not isinstance(route, str):
        return None
    return "/" + route.removeprefix("^")


def _port(value: Any) -> int | None:
    if type(value) is int:
        return value
    if isinstance(value, str) and value.isdigit() and len(value) <= 5:
        return int(value)
    return None


def _length(meta: Mapping[str, Any]) -> int | None:
    """The request body's ``Content-Length``, when the client sent a valid one."""
    value = str(meta.get("CONTENT_LENGTH") or "").strip()
    return int(value) if value.isdigit() and len(value) <= 18 else None


def _scheme(request: Any) -> str | None:
    try:
        return str(request.scheme)
    except Exception:
        return None  # a broken SECURE_PROXY_SSL_HEADER: Django reports it to the view


def _log_uncaught(sender: Any, request: Any = None, **kwargs: Any) -> None:
    """``got_request_exception``: log an exception Django turns into its 500, once."""
    try:
        log = getattr(request, _REQUEST_LOG, None)
        exc = sys.exc_info()[1]
        if isinstance(log, RequestLog) and exc is not None:
            log.set_route(_route(request))
            log.log_exception(exc)
    except Exception as error:
        _errors.report("django: uncaught exception", error)


class _Stream:
    """The body of a streaming response, counted chunk by chunk; finishes the log.
    Django tells a sync body from an async one by the methods it has, so each kind is
    a subclass with only its iterator protocol: the rest is here."""

    def __init__(self, log: RequestLog, response: Any, chunks: Any) -> None:
        self._log = log
        self._response = response
        self._chunks = chunks
        self._started = False

    def close(self) -> None:
        """Django closed the response: the end, whether the body was all sent or not."""
        log = self._log  # finish() after the end (or a failure) does nothing
        if self._started:
            log.finish(disconnected=True)
            return
        # Never iterated: a HEAD answer, or a FileResponse a WSGI server sent itself
        # (wsgi.file_wrapper), whose size is what Content-Length promised.
        length = str(self._response.get("Content-Length") or "")
        if length.isdigit():
            log.response_size = int(length)
        log.finish()

    def _sent(self, chunk: bytes) -> bytes:
        self._log.add_response_body(chunk)
        return chunk

    def _stopped(self, exc: BaseException) -> None:
        """The body's iterator raised *exc*: its end, the server cancelling the
        response (the client left), or a failure, logged once."""
        log = self._log
        if isinstance(exc, StopIteration | StopAsyncIteration):
            log.finish()
        elif isinstance(exc, asyncio.CancelledError):
            log.finish(disconnected=True)
        else:
            log.log_exception(exc)
            log.finish()


class _SyncStream(_Stream):
    _chunks: Iterator[bytes]

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        self._started = True
        try:
            chunk = next(self._chunks)
        except BaseException as exc:
            self._stopped(exc)
            raise
        return self._sent(chunk)


class _AsyncStream(_Stream):
    _chunks: AsyncIterator[bytes]

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        self._started = True
        try:
            chunk = await self._chunks.__anext__()
        except BaseException as exc:
            self._stopped(exc)
            raise
        return self._sent(chunk)


class KakashiMiddleware:
    """Django middleware writing one access record per request (see the module).

    Django builds it with *get_response* only; the settings then come from the
    ``KAKASHI`` setting, read once here. Built by hand (a subclass, a test), it also
    takes *settings*, a ``kakashi.integrations.web.RequestLogging``, or the same keyword
    settings as *options*.

    Raises:
        django.core.exceptions.ImproperlyConfigured: ``KAKASHI`` is not a dict of valid
            settings (an unknown key, a value RequestLogging refuses).
        TypeError, ValueError: the same for *settings* or keyword settings given here.
    """

    sync_capable = True
    async_capable = True

    def __init__(
        self,
        get_response: Callable[[Any], Any],
        settings: RequestLogging | None = None,
        **options: Any,
    ) -> None:
        self.get_response = get_response
        self.settings = _settings(settings, options)
        # Django gives an async get_response under ASGI: answer as a coroutine function
        # then, so the request never crosses into a thread on our account.
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)
        got_request_exception.connect(
            _log_uncaught, weak=False, dispatch_uid="kakashi.integrations.django"
        )

    def __call__(self, request: Any) -> Any:
        """Log *request* around the rest of the middleware chain and the view."""
        if self.async_mode:
            return self.__acall__(request)
        log = self._start(request)
        if log is None:
            return self.get_response(request)
        try:
            response = self.get_response(request)
        except BaseException as exc:
            self._failed(request, log, exc)
            raise
        return self._respond(request, log, response)

    async def __acall__(self, request: Any) -> Any:
        """The same as :meth:`__call__`, for an async middleware chain (ASGI)."""
        log = self._start(request)
        if log is None:
            return await self.get_response(request)
        try:
            response = await self.get_response(request)
        except BaseException as exc:
            self._failed(request, log, exc)
            raise
        return self._respond(request, log, response)

    @staticmethod
    def _failed(request: Any, log: RequestLog, exc: BaseException) -> None:
        """The rest of the chain raised *exc*: 499 when the server cancelled the request
        (the client went away under ASGI), else the failure logged once and 500."""
        log.set_route(_route(request))
        if isinstance(exc, asyncio.CancelledError):
            log.finish(CLIENT_CLOSED, disconnected=True)
        else:
            log.log_exception(exc)
            log.finish(500)

    def process_exception(self, request: Any, exception: Exception) -> None:
        """Log an *exception* escaping the view of *request* once; ``None`` lets Django
        handle it."""
        try:
            log = getattr(request, _REQUEST_LOG, None)
            if isinstance(log, RequestLog) and not isinstance(exception, _CLIENT_ERRORS):
                log.set_route(_route(request))
                log.log_exception(exception)
        except Exception as error:
            _errors.report("django: process_exception", error)
        return None

    def _start(self, request: Any) -> RequestLog | None:
        settings = self.settings
        outer = getattr(request, _REQUEST_LOG, None)  # listed twice in MIDDLEWARE
        if outer is None:  # or inside another adapter's request (Django mounted in Starlette)
            outer = settings.enclosing(str(request.method or ""), str(request.path))
        if outer is not None:
            # The outer one logs this request; an exception is still logged, into it.
            setattr(request, _REQUEST_LOG, outer)
            return None
        try:
            meta = request.META
            peer = meta.get("REMOTE_ADDR") or None
            client = None if peer is None else (str(peer), _port(meta.get("REMOTE_PORT")))
            protocol = str(meta.get("SERVER_PROTOCOL") or "")  # WSGI: "HTTP/1.1"
            version = protocol[5:] if protocol.upper().startswith("HTTP/") else protocol
            if not version:  # ASGI: Django's request has no SERVER_PROTOCOL, the scope has it
                version = str(getattr(request, "scope", {}).get("http_version") or "")
            log = settings.start(
                str(request.method or ""),
                str(request.path),
                query=str(meta.get("QUERY_STRING") or ""),
                headers=request.headers.items(),
                # web.py omits a port that is not an int: a WSGI server may give none.
                client=cast("tuple[str, int] | None", client),
                http_version=version or None,
                scheme=_scheme(request),
            )
            setattr(request, _REQUEST_LOG, log)
        except Exception as exc:
            _errors.report("django: request", exc)
            return None  # the request goes on, unlogged: it must never fail on our account
        if settings.log_request_body:
            content_type = str(meta.get("CONTENT_TYPE") or "")
            length = _length(meta)
            if (
                not content_type.lower().startswith("multipart/")
                and length is not None
                and 0 < length <= _READ_BODY_LIMIT
            ):
                try:
                    log.add_request_body(request.body)
                except Exception:
                    pass  # too big or unreadable: the view meets the same error itself
        return log

    def _respond(self, request: Any, log: RequestLog, response: Any) -> Any:
        try:
            log.set_route(_route(request))
            log.set_status(response.status_code)
            for name, value in log.response_headers():
                response[name] = value
            if getattr(response, "streaming", False):
                content = response.streaming_content
                if response.is_async:
                    response.streaming_content = _AsyncStream(log, response, content)
                else:
                    response.streaming_content = _SyncStream(log, response, iter(content))
                return response  # finished when the stream ends or is closed
            log.add_response_body(response.content)
        except Exception as exc:
            _errors.report("django: response", exc)
        log.finish()
        return response


ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


def drain_at_shutdown(application: ASGIApp, *, timeout: float = 5.0) -> ASGIApp:
    """Wrap Django's ASGI *application* so the server's shutdown drains Kakashi.

    Django's ``ASGIHandler`` refuses the ASGI lifespan protocol, so an ASGI server
    (uvicorn, daphne, hypercorn) has no shutdown to tell it about; and uvicorn dies by
    the SIGTERM it stopped on, so interpreter-exit hooks never run and whatever is
    still queued would be lost. The wrapper answers the lifespan messages itself and, at
    ``lifespan.shutdown`` (after the server finished its requests), writes out
    everything logged, within *timeout* seconds (``kakashi.integrations.web.drain``).
    Every other scope goes to *application* unchanged.

    Raises:
        ValueError: *timeout* is not a positive number of seconds.
    """
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    limit = float(timeout)

    async def application_with_drain(scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "lifespan":
            await application(scope, receive, send)
            return
        while True:
            message = await receive()
            if message.get("type") == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message.get("type") == "lifespan.shutdown":
                # The server has stopped serving: blocking its loop for the drain is what
                # shutdown is for, and a thread here could outlive the loop.
                drain(limit)
                await send({"type": "lifespan.shutdown.complete"})
                return

    return application_with_drain
