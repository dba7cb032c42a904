"""ASGI middleware for Starlette, FastAPI and any other ASGI application.

:class:`KakashiMiddleware` is a pure ASGI middleware (not Starlette's
``BaseHTTPMiddleware``, which runs the application in another task: context bound
there does not come back, and it buffers streaming responses)::

    app = FastAPI()
    app.add_middleware(KakashiMiddleware, trusted_proxies=["10.0.0.0/8"])

Per HTTP request it logs what :mod:`kakashi.integrations.web` describes: a request id
bound for every record logged while the request runs (sync endpoints run in the
threadpool included) and echoed in the response, one access record when the last body
chunk has been sent (with the route template Starlette matched, ``/items/{item_id}``),
and an exception escaping the application logged once, then re-raised. A response cut
short by the client gets ``disconnected: true``. A websocket session gets one access
record too, with method ``WEBSOCKET``, status 101 once accepted (403 when closed before
that, a denial response's own status) and the ``close_code``.

At the lifespan's shutdown, once the application's own shutdown is done, the middleware
drains the logging backend (:func:`kakashi.integrations.web.drain`): uvicorn and
gunicorn's workers die by the SIGTERM they re-raise, and exit hooks never run.

The module imports no framework: it speaks ASGI's dicts.
"""

from __future__ import annotations

import abc
import math
import os
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

from kakashi import _errors
from kakashi.integrations.web import RequestLog, RequestLogging, drain

__all__ = ["KakashiMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: nginx's status for a request whose client went away before any response.
CLIENT_CLOSED: Final = 499
#: The route templates of mounted applications, worked out once per route object.
_TEMPLATE_CACHE_SIZE: Final = 4096
#: Deepest nesting of mounts searched for a route's template.
_MOUNT_DEPTH: Final = 8
#: The scope key naming the request's log: a second KakashiMiddleware further in (added
#: twice, or around a mounted sub-application; Mount copies the scope with its keys)
#: passes the connection through instead of logging it again under another id.
_SCOPE_KEY: Final = "kakashi.request_log"


def _is_disconnect(exc: BaseException) -> bool:
    """Whether *exc* is how the application reports that its client went away."""
    if isinstance(exc, OSError):
        return True
    # Starlette's, without importing Starlette: it is loaded if it could be raised.
    requests = sys.modules.get("starlette.requests")
    kind = getattr(requests, "ClientDisconnect", None)
    return kind is not None and isinstance(exc, kind)


def _find_route(routes: Any, target: object, prefix: str, depth: int) -> str | None:
    """The template of *target* inside *routes*, mount paths prefixed (depth first)."""
    for candidate in routes:
        if candidate is target:
            return prefix + str(getattr(target, "path", ""))
        children = getattr(candidate, "routes", None)
        if children and depth < _MOUNT_DEPTH:
            found = _find_route(
                children, target, prefix + str(getattr(candidate, "path", "")), depth + 1
            )
            if found is not None:
                return found
    return None


class _Exchange(abc.ABC):
    """What one connection's messages tell its request's log. The HTTP request and the
    websocket session differ only in the methods a subclass gives; none raises into
    the application (the middleware reports what one raises)."""

    __slots__ = ("disconnected", "log", "middleware", "root_path", "scope")
    #: What an error in these methods is reported as.
    failure: str = "asgi"

    def __init__(self, middleware: KakashiMiddleware, scope: Scope, log: RequestLog) -> None:
        self.middleware = middleware
        self.scope = scope
        self.log = log
        self.root_path = scope.get("root_path", "")
        self.disconnected = False

    @staticmethod
    @abc.abstractmethod
    def method(scope: Scope) -> Any:
        """The access record's method for a connection of this kind."""

    @abc.abstractmethod
    def received(self, message: Message) -> None:
        """The application received *message* from the client."""

    @abc.abstractmethod
    def sending(self, message: Message) -> Message:
        """The message to send instead of *message* (one with the request id added)."""

    @abc.abstractmethod
    def sent(self, message: Message) -> None:
        """*message* went out to the client."""

    @abc.abstractmethod
    def outcome(self, error: BaseException | None) -> tuple[int | None, dict[str, Any]] | None:
        """The status and the fields of the access record of a connection the
        application is done with (*error* escaped it), or ``None`` when the record was
        written already."""

    def set_route(self) -> None:
        """Give the log the matched route's template, if any. Never raises."""
        self.middleware._set_route(self.log, self.scope, self.root_path)

    def end(self, error: BaseException | None) -> None:
        """Write the access record, unless written already (finish() logs only once)."""
        outcome = self.outcome(error)
        if outcome is not None:
            status, fields = outcome
            self.set_route()
            self.log.finish(status, disconnected=self.disconnected, unbind=False, **fields)


class _HttpExchange(_Exchange):
    """An HTTP request: the record is written once the last body chunk (or trailer)
    has been sent, else when the application is done (a response cut short)."""

    __slots__ = ("complete", "log_body", "started", "trailers")
    failure = "asgi: response"

    def __init__(self, middleware: KakashiMiddleware, scope: Scope, log: RequestLog) -> None:
        super().__init__(middleware, scope, log)
        self.log_body = middleware.settings.log_request_body
        self.started = self.complete = self.trailers = False

    @staticmethod
    def method(scope: Scope) -> Any:
        """The request's method."""
        return scope.get("method", "GET")

    def received(self, message: Message) -> None:
        """Keep the request body's start (when asked to); note a disconnect."""
        kind = message.get("type")
        if kind == "http.request":
            if self.log_body:
                self.log.add_request_body(message.get("body", b""))
        elif kind == "http.disconnect" and not self.complete:
            self.disconnected = True

    def sending(self, message: Message) -> Message:
        """Take the status from the response's start and add the request id to it."""
        if message.get("type") == "http.response.start":
            self.started = True
            self.trailers = bool(message.get("trailers", False))
            self.log.set_status(message["status"])
            message = self.middleware._with_request_id(message, self.log)
        return message

    def sent(self, message: Message) -> None:
        """Count the body; write the record once the response is complete."""
        if self.complete:
            return
        log = self.log
        kind = message.get("type")
        if kind == "http.response.body":
            log.add_response_body(message.get("body", b""))
            done = not message.get("more_body", False) and not self.trailers
        elif kind == "http.response.trailers":
            done = not message.get("more_trailers", False)
        elif kind == "http.response.pathsend":
            log.response_size += os.stat(message["path"]).st_size
            done = True
        else:
            done = False
        if done:
            self.complete = True
            log.set_route(self.middleware._route(self.scope, self.root_path))
            log.finish(unbind=False)

    def outcome(self, error: BaseException | None) -> tuple[int | None, dict[str, Any]] | None:
        """A response that never completed: 499 when the client left before it
        started, ``cancelled`` when the server gave up on it (shutdown timeout)."""
        if self.complete:
            return None
        fields: dict[str, Any] = {}
        status = None  # as sent; 500 when nothing was
        if self.disconnected and not self.started:
            status = CLIENT_CLOSED
        elif not self.disconnected and error is not None and not isinstance(error, Exception):
            fields["cancelled"] = True
        return status, fields


class _WebsocketExchange(_Exchange):
    """A websocket session: the record is written when the application is done."""

    __slots__ = ("accepted", "close_code")
    failure = "asgi: websocket"

    def __init__(self, middleware: KakashiMiddleware, scope: Scope, log: RequestLog) -> None:
        super().__init__(middleware, scope, log)
        self.accepted = False
        self.close_code: int | None = None

    @staticmethod
    def method(scope: Scope) -> Any:
        """``WEBSOCKET``: the session's record has no HTTP method of its own."""
        return "WEBSOCKET"

    def received(self, message: Message) -> None:
        """Note the close code of a client that disconnected first."""
        if message.get("type") == "websocket.disconnect" and self.close_code is None:
            self.close_code = message.get("code", 1005)  # 1005: no code given

    def sending(self, message: Message) -> Message:
        """Take the status from the accept (101), a denial response or a close before
        the accept (403), and add the request id to the handshake's answer."""
        log = self.log
        kind = message.get("type")
        if kind == "websocket.accept":
            self.accepted = True
            log.set_status(101)
            log.set_route(self.middleware._route(self.scope, self.root_path))
            message = self.middleware._with_request_id(message, log)
        elif kind == "websocket.http.response.start":  # a denial response
            log.set_status(message["status"])
            message = self.middleware._with_request_id(message, log)
        elif kind == "websocket.close" and self.close_code is None:
            self.close_code = message.get("code", 1000)
            if not self.accepted:
                log.set_status(403)  # what the server answers the handshake
        return message

    def sent(self, message: Message) -> None:
        """Count what the application sent (messages, or a denial response's body)."""
        kind = message.get("type")
        if kind == "websocket.send":
            data = message.get("bytes")
            if data is None:
                data = (message.get("text") or "").encode()
            self.log.response_size += len(data)
        elif kind == "websocket.http.response.body":
            self.log.add_response_body(message.get("body", b""))

    def outcome(self, error: BaseException | None) -> tuple[int | None, dict[str, Any]]:
        """The close code; 403 when the application ended without accepting (500, as
        finish() says, when it failed before answering)."""
        fields: dict[str, Any] = {}
        if self.close_code is not None:
            fields["close_code"] = self.close_code
        status = 403 if self.log.status is None and error is None else None
        return status, fields


class KakashiMiddleware:
    """Log every HTTP request and websocket session of an ASGI application.

    Args:
        app: the ASGI application.
        settings: a :class:`~kakashi.integrations.web.RequestLogging`; or give its
            keyword settings here instead (``trusted_proxies=...``), not both.
        drain_on_shutdown: drain the logging backend when the lifespan shuts down.
        drain_timeout: the longest the drain waits, in seconds (0 to 3600; it blocks
            the event loop, which has nothing left to do by then). Keep uvicorn's
            ``--timeout-graceful-shutdown`` plus this within the time your process
            manager allows between SIGTERM and SIGKILL.
        **options: :class:`~kakashi.integrations.web.RequestLogging`'s settings.

    Raises:
        ValueError, TypeError: a setting that cannot work, with the setting's name.
    """

    def __init__(
        self,
        app: ASGIApp,
        settings: RequestLogging | None = None,
        *,
        drain_on_shutdown: bool = True,
        drain_timeout: float = 5.0,
        **options: Any,
    ) -> None:
        if not callable(app):
            raise TypeError(f"app must be an ASGI application, got {app!r}")
        if settings is None:
            settings = RequestLogging(**options)
        elif not isinstance(settings, RequestLogging):
            raise TypeError(f"settings must be a RequestLogging, got {settings!r}")
        elif options:
            raise TypeError(
                f"give either settings= or keyword settings, not both (got {sorted(options)})"
            )
        if (
            isinstance(drain_timeout, bool)
            or not isinstance(drain_timeout, int | float)
            or math.isnan(drain_timeout)
            or not 0 <= drain_timeout <= 3600
        ):
            raise ValueError(
                f"drain_timeout must be a number of seconds from 0 to 3600, got {drain_timeout!r}"
            )
        self.app = app
        self.settings = settings
        self.drain_on_shutdown = bool(drain_on_shutdown)
        self.drain_timeout = float(drain_timeout)
        self._id_header = settings.request_id_header.lower().encode("latin-1")
        self._templates: dict[int, tuple[object, str]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection (the ASGI 3 interface)."""
        kind = scope.get("type")
        if _SCOPE_KEY in scope:
            await self.app(scope, receive, send)  # an outer KakashiMiddleware logs it
        elif kind == "http":
            await self._serve(scope, receive, send, _HttpExchange)
        elif kind == "websocket":
            await self._serve(scope, receive, send, _WebsocketExchange)
        elif kind == "lifespan" and self.drain_on_shutdown:
            await self._lifespan(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, kind: type[_Exchange]
    ) -> None:
        """Run the application on one HTTP request or websocket session, its messages
        told to an exchange of *kind* (what differs between the two)."""
        log = self._start(scope, kind.method(scope))
        if log is None:
            await self.app(scope, receive, send)
            return
        exchange = kind(self, scope, log)

        async def receive_logged() -> Message:
            message = await receive()
            try:
                exchange.received(message)
            except Exception as exc:
                _errors.report(kind.failure, exc)
            return message

        async def send_logged(message: Message) -> None:
            try:
                message = exchange.sending(message)
            except Exception as exc:
                _errors.report(kind.failure, exc)
            try:
                await send(message)
            except Exception as exc:
                if _is_disconnect(exc):
                    exchange.disconnected = True
                raise
            try:
                exchange.sent(message)
            except Exception as exc:
                _errors.report(kind.failure, exc)

        try:
            await self.app(scope, receive_logged, send_logged)
        except BaseException as exc:
            if isinstance(exc, Exception) and not (exchange.disconnected and _is_disconnect(exc)):
                exchange.set_route()
                log.log_exception(exc)
            exchange.end(exc)
            raise
        else:
            exchange.end(None)
        finally:
            log.unbind()  # after the response: background tasks kept the id till here

    # -- lifespan -----------------------------------------------------------------------

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_drained(message: Message) -> None:
            if message.get("type") in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                self.drain()
            await send(message)

        await self.app(scope, receive, send_drained)

    def drain(self) -> bool:
        """Write out everything logged so far, within ``drain_timeout`` seconds (called
        at the lifespan's shutdown). Returns whether all of it was written. Never raises."""
        done = drain(self.drain_timeout)
        if not done:
            _errors.report("asgi: drain at shutdown", detail=f"{self.drain_timeout} s ran out")
        return done

    # -- helpers ------------------------------------------------------------------------

    def _start(self, scope: Scope, method: Any) -> RequestLog | None:
        try:
            query = scope.get("query_string", b"")
            client = scope.get("client")
            request = self.settings.start(
                str(method),
                str(scope.get("path", "")),
                query=query.decode("latin-1") if isinstance(query, bytes) else str(query),
                headers=(
                    (name.decode("latin-1"), value.decode("latin-1"))
                    for name, value in scope.get("headers", ())
                ),
                client=(str(client[0]), client[1]) if client else None,
                http_version=scope.get("http_version"),
                scheme=scope.get("scheme"),
            )
            scope[_SCOPE_KEY] = request
            return request
        except Exception as exc:
            _errors.report("asgi: request start", exc)
            return None

    def _set_route(self, request: RequestLog, scope: Scope, root_path: str) -> None:
        """Give *request* the matched route's template, if any. Never raises."""
        try:
            request.set_route(self._route(scope, root_path))
        except Exception as exc:
            _errors.report("asgi: route", exc)

    def _with_request_id(self, message: Message, request: RequestLog) -> Message:
        """A copy of *message* whose headers carry the request id (replacing one the
        application set, so the response and the logs agree)."""
        added = request.response_headers()
        if not added:
            return message
        own = self._id_header
        headers = [
            (name, value)
            for name, value in message.get("headers", ())
            if bytes(name).lower() != own
        ]
        headers.extend(
            (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in added
        )
        return {**message, "headers": headers}

    def _route(self, scope: Scope, root_path: str) -> str | None:
        """The template of the route the router matched (Starlette's routers put it in
        the scope they were given, which is this middleware's scope dict)."""
        route = scope.get("route")
        path = getattr(route, "path", None)
        if not isinstance(path, str):
            return None
        if scope.get("root_path", "") == root_path:
            return path  # not inside a mount
        cached = self._templates.get(id(route))
        if cached is not None and cached[0] is route:
            return cached[1]
        router = scope.get("router")
        template = _find_route(getattr(router, "routes", ()), route, "", 0)
        if template is None:  # not found: the mount's concrete path, then the template
            template = str(scope.get("root_path", ""))[len(root_path) :] + path
        if len(self._templates) < _TEMPLATE_CACHE_SIZE:
            self._templates[id(route)] = (route, template)  # the route kept: ids stay unique
        return template

    def __repr__(self) -> str:
        return f"<KakashiMiddleware app={self.app!r} settings={self.settings!r}>"
